"""The GPU check of the paper profile: `make bench-gpu` (or `python bench/gpu.py [--steps N] [--out bench/gpu.md]`).

For each algorithm of Table I at the paper's size (768x384, ResNet50, U-Net base 32, RDN G0 64 / D 16 / C 8 / G 64,
batch 4): `--steps` training steps of its costliest phase in fp32 and with bf16 autocast, channels-last off and on;
step time (median after 3 warm-up steps), images/s, peak GPU memory (torch.cuda.max_memory_allocated), and the
resulting estimate of the whole paper sweep (7 algorithms x 5 folds, the paper profile's epochs) in GPU-hours.
Writes bench/gpu.md. Refuses to run without a CUDA GPU (exit status 2): CPU numbers would say nothing about a GPU.
"""
import argparse, math, platform, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def refuse(msg):
    print(f'bench/gpu.py: {msg}', file=sys.stderr)
    sys.exit(2)


def phase_step(t, name):
    "The step function of the phase named `name` (the costliest one of the algorithm)."
    return next(ph.step for ph in t.phases if ph.name == name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=20, help='timed training steps per setting (default 20)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'gpu.md'), help='the report to write')
    ap.add_argument('--algorithms', nargs='+', default=None, help='a subset of the seven algorithms')
    a = ap.parse_args(argv)
    try: import torch
    except ImportError: refuse('torch is not installed: run make install first')
    if not torch.cuda.is_available():
        refuse('no CUDA GPU is visible (torch.cuda.is_available() is False): this check measures a GPU and has nothing '
               'to say on a CPU. Run it on a machine with an NVIDIA GPU (make bench-gpu).')
    from tsbn_nb.core import get_config
    from tsbn_nb.train import Trainer
    from tsbn_nb.registry import ALGORITHMS
    algos = a.algorithms or list(ALGORITHMS)
    cost = {'resnet': 'finetune', 'simclr': 'pretext', 'cr-f-resnet': 'pretext', 'gm-f-resnet': 'pretext',
            'gm-m-resnet': 'multitask', 'tsbn-u': 'joint', 'tsbn-r': 'joint'}
    dev = torch.device('cuda')
    rows = []
    t_all = time.perf_counter()
    for algo in algos:
        for amp in ('none', 'bf16'):
            for cl in (False, True):
                cfg = get_config('paper', device='cuda', amp=amp, channels_last=cl, pretrained='none', num_workers=0)
                torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
                row = dict(algorithm=algo, amp=amp, channels_last=cl)
                try:
                    t = Trainer(algo, cfg, progress=False)
                    for m in t.models.values(): m.train()
                    step = phase_step(t, cost[algo])
                    g = torch.Generator().manual_seed(0)
                    x = (torch.rand(cfg.batch_size, 1, cfg.height, cfg.width, generator=g) * 0.8).to(dev)
                    if t.channels_last: x = x.contiguous(memory_format=torch.channels_last)
                    y = torch.tensor([0., 1., 1., 0.][:cfg.batch_size], device=dev)
                    ts = []
                    for i in range(3 + a.steps):
                        torch.cuda.synchronize(); t0 = time.perf_counter()
                        step(x, y, torch.Generator().manual_seed(i))
                        torch.cuda.synchronize(); ts.append(time.perf_counter() - t0)
                    s = statistics.median(ts[3:])
                    row |= dict(step_s=s, img_s=cfg.batch_size / s, peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                                micro=(t.net.micro if t.net is not None else 0) or cfg.batch_size)
                except torch.cuda.OutOfMemoryError:
                    row |= dict(step_s=float('nan'), img_s=float('nan'), peak_gib=float('nan'), micro=None, oom=True)
                finally:
                    t = None; torch.cuda.empty_cache()
                rows.append(row)
                print(row, flush=True)
    # the paper sweep: 5 folds, each run's phases over its ~310 training images at batch 4
    cfg = get_config('paper')
    steps_per_epoch = math.ceil(310 / cfg.batch_size)
    best = {}
    for r in rows:
        if r['step_s'] == r['step_s'] and (r['algorithm'] not in best or r['step_s'] < best[r['algorithm']]['step_s']):
            best[r['algorithm']] = r
    hours = 0.0
    for algo, r in best.items():
        epochs = cfg.epochs + (cfg.pretext_epochs if algo in ('simclr', 'cr-f-resnet', 'gm-f-resnet') else 0)
        hours += 5 * epochs * steps_per_epoch * r['step_s'] / 3600     # an upper bound: every epoch at the costliest phase
    name = torch.cuda.get_device_name(0)
    md = [f'# GPU check of the paper profile', '',
          f'GPU: {name}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; torch {torch.__version__}, '
          f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; host {platform.node()}; '
          f'{a.steps} timed steps after 3 warm-up steps; whole check {time.perf_counter() - t_all:.0f} s.', '',
          '| algorithm | precision | channels-last | step | images/s | peak memory | pretext micro-batch |',
          '|---|---|---|---|---|---|---|']
    for r in rows:
        if r.get('oom'): md.append(f"| {r['algorithm']} | {r['amp']} | {r['channels_last']} | out of memory | | | |"); continue
        md.append(f"| {r['algorithm']} | {'fp32' if r['amp'] == 'none' else r['amp']} | {'on' if r['channels_last'] else 'off'} "
                  f"| {r['step_s']:.3f} s | {r['img_s']:.1f} | {r['peak_gib']:.1f} GiB | {r['micro']} |")
    md += ['', f'Estimated whole paper sweep (7 algorithms x 5 folds, {cfg.epochs} epochs, +{cfg.pretext_epochs} '
           f'pre-training epochs for the fine-tuning baselines, {steps_per_epoch} steps per epoch, fastest setting of each '
           f'algorithm, every epoch at its costliest phase): **{hours:.1f} GPU-hours** on this GPU.', '']
    Path(a.out).write_text('\n'.join(md))
    print('\n'.join(md))


if __name__ == '__main__':
    main()
