"""Estimated peak GPU memory per algorithm for the paper profile, from activation costs measured on the CPU.

`python bench/gpu_memory.py` (about 2 minutes on 2 cores) prints the table and writes bench/gpu_memory.json; the
method and the table are in bench/results.md, section 8.

Method. For every training step of every algorithm (the paper profile's networks: ResNet50, U-Net base 32 depth 4,
RDN G0 64 / D 16 / C 8 / G 64 with per-block checkpointing, decoder base 32) we run the step's forward pass on the
CPU at batch 1 and two or three small input sizes, and count the bytes of the distinct tensors autograd saves for
the backward pass (`torch.autograd.graph.saved_tensors_hooks`, deduplicated by storage, parameters excluded), plus,
for the checkpointed RDN, the block inputs that checkpointing keeps (forward pre-hooks) and the activations of one
block that the backward pass recomputes (the transient). Saved bytes are linear in the number of pixels (a conv net
saves per-pixel feature maps), so a least-squares line bytes = a + b * pixels, fitted on the small sizes, predicts
them at batch 4 x 768 x 384. The same is done under bf16 autocast (CPU autocast, whose op lists are close to, not
the same as, CUDA's). Parameters count 4x their fp32 size when trained with Adam (weights, gradients, two moments),
1x when frozen. The peak of a step is: all the run's parameter state + the step's saved activations + the transient
of the backward pass (the largest saved tensor twice, for the incoming and outgoing gradient; for the RDN also one
block's recomputed activations) + 1.5 GiB for the CUDA context and cuDNN workspaces. An algorithm's peak is its
largest step. TSBN frees the pretext step's graph before the downstream step, so its peak is the larger of its two
steps, not their sum; `pretext_micro_batch = k` divides the pretext step's activations by 4 / k.
"""
from __future__ import annotations
import json, sys, time
from contextlib import nullcontext
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GiB = 2 ** 30
B, H, W = 4, 768, 384
CUDA_RESERVE = 1.5 * GiB


def saved_bytes(fn, modules, amp=None):
    "(saved bytes, largest saved tensor, checkpointed-block input bytes, outputs) of one forward pass `fn()`."
    params = {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}
    seen, blk_in = {}, {}
    def pack(t):
        st = t.untyped_storage(); k = st.data_ptr()
        if k not in params and st.nbytes(): seen[k] = max(seen.get(k, 0), st.nbytes())
        return t
    hooks = []
    from tsbn_nb.nets import RDB
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, RDB):
                hooks.append(sub.register_forward_pre_hook(
                    lambda mod, inp: blk_in.__setitem__(inp[0].untyped_storage().data_ptr(), inp[0].untyped_storage().nbytes())))
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if amp else nullcontext()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            out = fn()
    finally:
        for h in hooks: h.remove()
    ckpt_in = sum(v for k, v in blk_in.items() if k not in seen)     # kept alive by checkpointing, not by autograd
    return sum(seen.values()), max(seen.values(), default=0), ckpt_in, out


def steps_of(algo, t, x):
    "The forward passes of `algo`'s training steps: {step name: (fn, modules trained, rdn or None)}."
    m = t.models
    clf = m['classifier']
    fwd_clf = lambda: clf(x)
    if algo == 'resnet': return {'finetune': (fwd_clf, [clf], None)}
    if algo == 'simclr':
        return {'pretext (2 views)': (lambda: m['proj'](clf.features(torch.cat([x, x]))), [clf, m['proj']], None),
                'finetune': (fwd_clf, [clf], None)}
    if algo in ('cr-f-resnet', 'gm-f-resnet'):
        return {'pretext': (lambda: m['encdec'](x), [m['encdec']], None), 'finetune': (fwd_clf, [clf], None)}
    if algo == 'gm-m-resnet': return {'multitask': (lambda: m['encdec'].forward_all(x), [m['encdec']], None)}
    net = t.net
    def down():                      # e(x) is a detached target: only the ResNet, its head and D save activations
        c = clf.features(x); return net.D(c), clf.head(c)
    rdn = net.pretext if algo == 'tsbn-r' else None
    return {'pretext': (lambda: net.pretext.forward_features(x), [net.pretext], rdn),
            'downstream': (down, [clf, net.transfer], None)}


def rdb_transient(rdn, h, w, amp):
    "Saved bytes of one residual dense block at batch 1, (h, w): what the backward pass recomputes at a time."
    blk = rdn.rdbs[0]
    x = torch.rand(1, blk.lff.out_channels, h, w)
    s, big, _, _ = saved_bytes(lambda: blk(x), [blk], amp)
    return s


def fit_line(pix, vals):
    b, a = np.polyfit(np.asarray(pix, float), np.asarray(vals, float), 1)
    return float(a), float(b)


def measure(algorithms=None, quick=False):
    from tsbn_nb.core import get_config
    from tsbn_nb.train import Trainer
    from tsbn_nb.registry import ALGORITHMS
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = get_config('paper', device='cpu', pretrained='none')
    sizes = {'default': [(64, 32), (128, 64), (192, 96)], 'rdn': [(32, 16), (48, 24), (64, 32)]}
    out = {}
    for algo in algorithms or ALGORITHMS:
        torch.manual_seed(0)
        t = Trainer(algo, cfg, progress=False)
        for mm in t.models.values(): mm.train()
        trained = {id(p) for o in t.opts.values() for g in o.param_groups for p in g['params']}
        allp = {id(p): p for mm in t.models.values() for p in mm.parameters()}
        bufs = sum(b.numel() * b.element_size() for mm in t.models.values() for b in mm.buffers())
        static = sum(p.numel() * p.element_size() * (4 if i in trained else 1) for i, p in allp.items()) + bufs
        rec = {'static_bytes': static, 'n_params': sum(p.numel() for p in allp.values()), 'steps': {}}
        for amp in (None, 'bf16'):
            for name, _ in steps_of(algo, t, torch.zeros(1, 1, 32, 16)).items():
                pts = []
                rdn_step = algo == 'tsbn-r' and name == 'pretext'    # the paper RDN is slow on a CPU: smaller sizes
                szs = sizes['rdn'][:2 if amp else 3] if rdn_step else sizes['default']
                for (h, w) in szs:
                    x = torch.rand(1, 1, h, w)
                    fn, mods, rdn = steps_of(algo, t, x)[name]
                    t0 = time.perf_counter()
                    s, big, ck, o = saved_bytes(fn, mods, amp); del o
                    tr = rdb_transient(rdn, h, w, amp) if rdn is not None else 0
                    pts.append(dict(pixels=h * w, saved=s + ck, largest=big, transient=tr, s=time.perf_counter() - t0))
                pix = [p['pixels'] for p in pts]
                lines = {k: fit_line(pix, [p[k] for p in pts]) for k in ('saved', 'largest', 'transient')}
                at = {k: a + b * B * H * W for k, (a, b) in lines.items()}
                rec['steps'].setdefault(name, {})[amp or 'fp32'] = dict(points=pts, fit=lines,
                    bytes_per_pixel=lines['saved'][1], act_paper=at['saved'], largest_paper=at['largest'],
                    transient_paper=at['transient'])
                print(f"{algo:12s} {name:18s} {amp or 'fp32':5s} {lines['saved'][1]:9.0f} B/pixel -> "
                      f"{at['saved'] / GiB:6.1f} GiB activations at {B}x{H}x{W}", flush=True)
        out[algo] = rec
        del t
    return out


def peak(rec, amp='fp32', micro=4):
    "Estimated peak bytes of an algorithm (largest step), with the pretext step in micro-batches of `micro`."
    best = 0
    for name, by in rec['steps'].items():
        s = by[amp]
        act = s['act_paper'] * (micro / B if name == 'pretext' and 'tsbn' in rec.get('algo', '') else 1)
        trans = 2 * s['largest_paper'] + s['transient_paper']
        if name == 'pretext' and 'tsbn' in rec.get('algo', ''): trans *= micro / B
        best = max(best, act + trans)
    return rec['static_bytes'] + best + CUDA_RESERVE


def table(res):
    "Markdown rows: the estimated peak of each algorithm and the first setting (in order of preference) that fits."
    rows = ['| algorithm | parameters | parameter state (Adam) | largest step (fp32 activations) | peak fp32 | '
            'peak bf16 | TSBN: fp32, micro-batch 2 / 1 | 24 GB | 40 GB | 80 GB |', '|---|---|---|---|---|---|---|---|---|---|']
    # preference: exact fp32 first; micro-batching is exact for the RDN (no BatchNorm), bf16 changes the numerics
    options = [('fp32', 4, 'fp32, no change'), ('fp32', 2, '`pretext_micro_batch 2`'), ('fp32', 1, '`pretext_micro_batch 1`'),
               ('bf16', 4, '`amp bf16`'), ('bf16', 2, '`amp bf16` + `pretext_micro_batch 2`'),
               ('bf16', 1, '`amp bf16` + `pretext_micro_batch 1`')]
    for algo, rec in res.items():
        rec['algo'] = algo
        step = max(rec['steps'], key=lambda n: rec['steps'][n]['fp32']['act_paper'])
        act = rec['steps'][step]['fp32']['act_paper']
        tsbn = 'tsbn' in algo
        def fits(gb):
            cap = gb * 1e9 * 0.95                       # 5% of the card kept free
            for amp, k, say in options:
                if (k == 4 or tsbn) and peak(rec, amp, k) <= cap: return say
            return '**no**'
        micro = f"{peak(rec, 'fp32', 2) / GiB:.1f} / {peak(rec, 'fp32', 1) / GiB:.1f} GiB" if tsbn else '–'
        rows.append(f"| {algo} | {rec['n_params'] / 1e6:.1f} M | {rec['static_bytes'] / GiB:.2f} GiB | {step} "
                    f"({act / GiB:.1f} GiB) | {peak(rec, 'fp32') / GiB:.1f} GiB | {peak(rec, 'bf16') / GiB:.1f} GiB | {micro} | "
                    f"{fits(24)} | {fits(40)} | {fits(80)} |")
    return rows


if __name__ == '__main__':
    if sys.argv[1:] == ['--table']: res = json.loads((ROOT / 'bench' / 'gpu_memory.json').read_text())   # no remeasuring
    else:
        res = measure(sys.argv[1:] or None)
        (ROOT / 'bench' / 'gpu_memory.json').write_text(json.dumps(res, indent=1) + '\n')
    print('\n'.join(table(res)))
    # the per-algorithm peaks `tsbn reproduce --dry-run` shows for GPU runs of the paper profile (GB = 1e9 bytes)
    peaks = {algo: {f'{amp}_micro{k}': round(peak(dict(rec, algo=algo), amp, k) / 1e9, 2) for amp in ('fp32', 'bf16')
                    for k in (1, 2, 3, 4)} for algo, rec in res.items()}
    (ROOT / 'bench' / 'gpu_peaks.json').write_text(json.dumps(dict(
        what='estimated peak GPU memory (GB) per algorithm, paper profile, batch 4, by precision and TSBN pretext '
             'micro-batch; made by bench/gpu_memory.py from activation costs measured on the CPU, not on a GPU',
        batch=B, peaks=peaks), indent=1) + '\n')
