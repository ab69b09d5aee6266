"""What a sweep's run costs besides its training, with a papermill process per run and with warm kernels; and Adam's step.

`python bench/startup.py [--reps 3] [--no-sweep]` measures, on the same machine, in the same invocation, back to back:
1. one run (ResNet, smoke profile, one thread) executed both ways, alternating which goes first: `run_notebook` without a
   server (`python -m papermill`: a new interpreter, papermill's import, a kernel that imports torch and tsbn_nb) and on a
   kernel forked from a warm `KernelServer`. CPU seconds of every process involved (this one, papermill, the kernel, the
   server) and wall seconds, split into what `run_fold` itself took (the kernel's CPU inside the run_fold cell, the
   record's wall_time_s) and the rest: the per-run overhead;
2. a smoke sweep (`tsbn reproduce`, ResNet, 5 folds, 2 workers) both ways, CPU and wall seconds of the whole command;
3. Adam's step on ResNet-18 at the demo size (96x48), one thread: `foreach=True` against `fused=True`, interleaved.
Writes bench/startup.md (and .json). A measurement, not a test: on a shared CPU, compare the CPU seconds and the ratios.
"""
from __future__ import annotations
import argparse, json, os, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MARK = 'TSBN_BENCH_FOLD_CPU'


def cpu_self_children() -> tuple[float, float]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def server_cpu(srv) -> float:
    "CPU seconds of the kernel server and of the kernels it has collected."
    import psutil
    t = psutil.Process(srv.proc.pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def instrumented(nb: Path, out: Path) -> Path:
    "A copy of the run notebook whose kernel prints its own CPU seconds spent in the run_fold cell."
    d = json.loads(nb.read_text())
    i = next(k for k, c in enumerate(d['cells']) if 'run_fold(' in ''.join(c['source']))
    cell = lambda src: {'cell_type': 'code', 'execution_count': None, 'id': f'bench{len(src)}', 'metadata': {},
                        'outputs': [], 'source': src}
    d['cells'][i:i + 1] = [cell('import resource as _r; _u = _r.getrusage(_r.RUSAGE_SELF)'), d['cells'][i],
                           cell(f"_v = _r.getrusage(_r.RUSAGE_SELF); print('{MARK}', _v.ru_utime + _v.ru_stime - _u.ru_utime - _u.ru_stime)")]
    out.write_text(json.dumps(d)); return out


def fold_cpu(executed: Path) -> float:
    for c in json.loads(executed.read_text())['cells']:
        for o in c.get('outputs', []):
            for line in ''.join(o.get('text', '')).splitlines():
                if line.startswith(MARK): return float(line.split()[1])
    raise RuntimeError(f'no {MARK} line in {executed}')


def one_run(mode, nb, spec, srv) -> dict:
    "Execute `spec` with `mode` ('process' or 'warm'); CPU and wall seconds, in total and inside run_fold."
    from tsbn_nb.sweep import run_notebook
    (s0, c0), k0, t0 = cpu_self_children(), server_cpu(srv), time.perf_counter()
    err = run_notebook(nb, spec.notebook, spec.parameters(), server=srv if mode == 'warm' else None, threads=1)
    wall = time.perf_counter() - t0
    time.sleep(0.5)                                        # the kernel's exit is collected (its CPU counted)
    (s1, c1), k1 = cpu_self_children(), server_cpu(srv)
    if err: raise RuntimeError(f'{mode} run failed: {err}')
    cpu = (s1 - s0) + (c1 - c0) + (k1 - k0 if mode == 'warm' else 0.0)
    rec = json.loads(spec.record.read_text())
    inside_cpu, inside_wall = fold_cpu(spec.notebook), float(rec['provenance']['wall_time_s'])
    return dict(cpu=cpu, wall=wall, fold_cpu=inside_cpu, fold_wall=inside_wall,
                overhead_cpu=cpu - inside_cpu, overhead_wall=wall - inside_wall)


def per_run(work: Path, data: Path, reps: int) -> dict:
    from tsbn_nb.core import get_config
    from tsbn_nb.prepare import prepare_data
    from tsbn_nb.sweep import KernelServer, find_notebook, plan
    nb = instrumented(find_notebook('run_fold.ipynb'), work / 'run_fold_bench.ipynb')
    cfg = get_config('smoke')
    prepare_data(data, cfg)                                # the cache, made once as `reproduce` does
    s0, _ = cpu_self_children(); t0 = time.perf_counter()
    import papermill  # noqa: F401  (once per sweep, in the sweep's process)
    pm_import = dict(cpu=cpu_self_children()[0] - s0, wall=time.perf_counter() - t0)
    rows = {'process': [], 'warm': []}
    with KernelServer(nb, threads=1) as srv:
        for r in range(reps):
            for mode in (('process', 'warm') if r % 2 == 0 else ('warm', 'process')):
                spec = plan('smoke', data, work / f'{mode}{r}', ['resnet'], [r % cfg.n_folds])[0]
                rows[mode].append(one_run(mode, nb, spec, srv)); print(mode, r, rows[mode][-1], flush=True)
        import psutil
        t = psutil.Process(srv.proc.pid).cpu_times()
        server_own = t.user + t.system                     # its imports, once per worker and sweep, and the forks
    med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in rows.items()}
    return dict(rows=rows, median=med, papermill_import=pm_import, server_own_cpu=server_own)


SWEEP = ("import sys, tsbn_nb.sweep as s\n"
         "if sys.argv[1] == 'process': s._kernel_servers = lambda todo, workers, threads: [None] * workers\n"
         "from tsbn_nb.cli import main; sys.exit(main(sys.argv[2:]))")


def sweep(work: Path, data: Path) -> dict:
    "The same smoke sweep with a papermill process per run (as before) and with warm kernels, alternating."
    out = {}
    for mode in ('process', 'warm'):
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([PY, '-c', SWEEP, mode, 'reproduce', '--data', str(data), '--profile', 'smoke', '--workers', '2',
                        '--algorithms', 'resnet', '--out', str(work / f'sweep-{mode}'), '--no-report'],
                       check=True, capture_output=True, text=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out[mode] = dict(wall=time.perf_counter() - t0, cpu=r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        print('sweep', mode, out[mode], flush=True)
    recs = lambda m: sorted((work / f'sweep-{m}' / 'runs').glob('*/*.json'))
    same = all(json.loads(a.read_text())['predictions'] == json.loads(b.read_text())['predictions']
               for a, b in zip(recs('process'), recs('warm'))) and len(recs('warm')) == 5
    return out | {'bit_identical': same}


def adam_steps(n: int = 40) -> dict:
    "Median CPU seconds of one Adam step over ResNet-18's parameters at the demo size, multi-tensor vs fused, interleaved."
    import torch
    from tsbn_nb.core import get_config
    from tsbn_nb.nets import build_classifier
    torch.set_num_threads(1)
    cfg = get_config('demo')
    opts, models = {}, {}
    for kind in ('foreach', 'fused'):
        torch.manual_seed(0); m = models[kind] = build_classifier(cfg)
        m(torch.rand(cfg.batch_size, 1, cfg.height, cfg.width)).float().pow(2).mean().backward()
        opts[kind] = torch.optim.Adam(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **{kind: True})
        opts[kind].step()                                  # state allocated
    ts, whole = {k: [] for k in opts}, {k: [] for k in opts}
    x = torch.rand(cfg.batch_size, 1, cfg.height, cfg.width)
    for _ in range(n):
        for k, o in opts.items():
            t0 = time.process_time(); o.step(); ts[k].append(time.process_time() - t0)
    for _ in range(max(5, n // 4)):                        # a whole training step: forward, backward, Adam
        for k, o in opts.items():
            m = models[k]; t0 = time.process_time()
            o.zero_grad(); m(x).float().pow(2).mean().backward(); o.step(); whole[k].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in ts.items()}
    step = {k: statistics.median(v) for k, v in whole.items()}
    n_params = sum(p.numel() for g in opts['fused'].param_groups for p in g['params'])
    return dict(median_s=med, ratio=med['foreach'] / med['fused'], params=n_params, steps=n, size=(cfg.height, cfg.width),
                batch=cfg.batch_size, train_step_s=step, train_step_ratio=step['fused'] / step['foreach'])


def write(res: dict, path: Path):
    pr, md = res['per_run'], []
    m = pr['median']
    md += ['# What a run costs besides its training: warm kernels', '',
           f"Load average before/after: {res['load'][0]:.2f} / {res['load'][1]:.2f} (2 cores shared with other work: "
           "compare CPU seconds and ratios, not wall seconds). Made by `bench/startup.py`.", '',
           "Method: a 12-woman phantom at 1/16 of INbreast's size; each run executes a copy of `run_fold.ipynb` with two "
           "cells around its `run_fold` call that print the kernel's own CPU seconds inside it. CPU seconds count every "
           "process of the run: this one (papermill, for warm kernels), `python -m papermill` and its kernel (collected "
           "children), or the kernel server and the kernels it collected. The per-run overhead is the run's total minus "
           "what `run_fold` took (CPU: inside its cell; wall: the record's `wall_time_s`).", '',
           f"## One run, both ways (ResNet, smoke profile, one thread; medians of {len(pr['rows']['warm'])} runs each, alternating)", '',
           '| | papermill process per run (before) | warm kernel (after) | after / before |', '|---|---|---|---|']
    for k, label in (('cpu', 'CPU s, whole run'), ('fold_cpu', 'CPU s inside run_fold'),
                     ('overhead_cpu', '**CPU s outside run_fold (per-run overhead)**'),
                     ('wall', 'wall s, whole run'), ('fold_wall', 'wall s inside run_fold'),
                     ('overhead_wall', '**wall s outside run_fold**')):
        a, b = m['process'][k], m['warm'][k]
        md.append(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    md += ['', f"Once per sweep instead of once per run: papermill's import in the sweep's process "
           f"({pr['papermill_import']['cpu']:.2f} CPU s) and each worker's kernel server, which imports what the run "
           f"notebook imports ({pr['server_own_cpu']:.2f} CPU s, forks included)."]
    if 'sweep' in res:
        s = res['sweep']
        md += ['', '## A smoke sweep, both ways (`tsbn reproduce`, ResNet, 5 folds, `--workers 2`)', '',
               '| | process per run | warm kernels | after / before |', '|---|---|---|---|',
               f"| CPU s | {s['process']['cpu']:.1f} | {s['warm']['cpu']:.1f} | {s['warm']['cpu'] / s['process']['cpu']:.2f} |",
               f"| wall s | {s['process']['wall']:.1f} | {s['warm']['wall']:.1f} | {s['warm']['wall'] / s['process']['wall']:.2f} |",
               '', "Before: the same command with `_kernel_servers` giving no server (a papermill process per run, the code "
               "before warm kernels); CPU seconds of the command and all its processes. Records bit-identical between the "
               f"two sweeps: {'yes' if s['bit_identical'] else 'NO'}."]
    a = res['adam']
    md += ['', f"## Adam's step on ResNet-18 at the demo size ({a['size'][0]}x{a['size'][1]}, {a['params'] / 1e6:.1f} M parameters, one thread)", '',
           f"Median CPU time of one step over {a['steps']} interleaved steps each: `foreach=True` "
           f"{a['median_s']['foreach'] * 1e3:.1f} ms, `fused=True` {a['median_s']['fused'] * 1e3:.1f} ms: "
           f"**{a['ratio']:.1f}x** faster. A whole training step (forward, backward and Adam, batch {a['batch']}): "
           f"{a['train_step_s']['foreach'] * 1e3:.0f} ms with the multi-tensor step, {a['train_step_s']['fused'] * 1e3:.0f} ms "
           f"with the fused one ({a['train_step_ratio']:.2f} of it)."]
    path.with_suffix('.md').write_text('\n'.join(md) + '\n')
    path.with_suffix('.json').write_text(json.dumps(res, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=3, help='runs of each kind (alternating)')
    ap.add_argument('--no-sweep', action='store_true', help='skip the whole-sweep comparison')
    ap.add_argument('--adam-only', action='store_true', help="only Adam's step (prints it, writes nothing)")
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'startup'), help='bench/startup[.md|.json]')
    a = ap.parse_args()
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
    if a.adam_only: return print(adam_steps())
    from tsbn_nb.phantom import make_phantom
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        data = make_phantom(work / 'ph', n_patients=12, scale=0.0625, progress=False)
        res = dict(per_run=per_run(work, data, a.reps))
        if not a.no_sweep: res['sweep'] = sweep(work, data)
    res['adam'] = adam_steps()
    res['load'] = (load0, os.getloadavg()[0])
    write(res, Path(a.out))
    print(Path(a.out).with_suffix('.md').read_text())


if __name__ == '__main__':
    main()
