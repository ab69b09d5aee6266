"""Where the time of one demo run goes: `python bench/profile_run.py [--algorithms A ...] [--profile demo]`.

Measures, on the same machine and in the same invocation:
1. process start and imports: a bare interpreter, `import tsbn_nb.train`, the run notebook's import cell;
2. each algorithm's fold-0 run executed exactly as the sweep executes it (papermill in a subprocess, one thread),
   split into the time inside `run_fold` (the record's wall_time_s) and the papermill / kernel / notebook remainder;
3. a cProfile of `run_fold` in this process for the algorithms given with --profile-algorithms, grouped into
   data, forward, backward, optimiser, checkpoint writes, prediction, record and model writes.
Writes bench/profile_run.md (and .json). A measurement, not a test.
"""
from __future__ import annotations
import argparse, cProfile, json, os, pstats, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GROUPS = {   # (file fragment, function name) patterns -> group; cumulative time of the outermost match
    'data loading and augmentation': [('dataloader.py', '__next__')],
    'forward': [('module.py', '_call_impl')],
    'backward': [('__init__.py', 'backward'), ('_tensor.py', 'backward')],
    'optimiser step': [('optimizer.py', 'wrapper')],
    'checkpoint writes': [('train.py', 'save_checkpoint'), ('train.py', '_save_checkpoint')],
    'prediction (test fold)': [('train.py', '_predict'), ('train.py', 'predict')],
    'data preparation (cache, folds)': [('datasets.py', 'prepare_data')],
}


def wall(cmd, env=None, n=3):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); subprocess.run(cmd, check=True, capture_output=True, env=env); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def one_thread_env():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


def import_costs(n=3):
    env = one_thread_env()
    nb = json.loads((ROOT / 'nbs/experiments/run_fold.ipynb').read_text())
    imports = ''.join(next(c for c in nb['cells'] if c['cell_type'] == 'code')['source'])
    base = wall([PY, '-c', 'pass'], env, n)
    return {'python start': base,
            'import tsbn_nb.train (torch, torchvision, pandas, ...)': wall([PY, '-c', 'import tsbn_nb.train'], env, n) - base,
            'the run notebook\'s import cell': wall([PY, '-c', imports], env, n) - base}


def papermill_run(algorithm, profile, data, out):
    from tsbn_nb.sweep import find_notebook
    nb = find_notebook('run_fold.ipynb')
    params = dict(algorithm=algorithm, fold=0, seed=0, profile=profile, data=str(data), out_dir=str(out))
    pf = Path(out) / f'{algorithm}.params.json'; pf.parent.mkdir(parents=True, exist_ok=True); pf.write_text(json.dumps(params))
    t0 = time.perf_counter()
    subprocess.run([PY, '-m', 'papermill', str(nb), str(Path(out) / f'{algorithm}.ipynb'), '-f', str(pf), '-k', 'python3',
                    '--no-progress-bar', '--cwd', str(nb.parent)], check=True, capture_output=True, env=one_thread_env())
    total = time.perf_counter() - t0
    rec = json.loads(next(Path(out).glob(f'runs/{algorithm}/fold0*.json')).read_text())
    inside = float(rec['provenance']['wall_time_s'])
    phases = {}
    for h in rec.get('history', []): phases[h['phase']] = phases.get(h['phase'], 0.0) + float(h.get('time_s', 0))
    return dict(total=total, inside=inside, outside=total - inside, phases=phases)


def profile_in_process(algorithm, profile, data, out):
    import torch
    torch.set_num_threads(1)
    from tsbn_nb.train import run_fold
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.runcall(run_fold, algorithm, 0, profile=profile, data=str(data), out_dir=str(out), seed=0, progress='off')
    total = time.perf_counter() - t0
    st = pstats.Stats(pr).stats
    out_groups = {}
    for g, pats in GROUPS.items():
        ct = [v[3] for (f, _, fn), v in st.items() for pf, pn in pats if f.endswith(pf) and fn == pn]
        out_groups[g] = max(ct) if ct else 0.0       # cumulative time of the outermost call site
    return dict(total=total, groups=out_groups)


def main():
    from tsbn_nb.registry import ALGORITHMS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--algorithms', nargs='+', default=list(ALGORITHMS))
    ap.add_argument('--profile-algorithms', nargs='*', default=['resnet', 'tsbn-r'])
    ap.add_argument('--profile', default='demo')
    ap.add_argument('--data', default=str(ROOT / 'data' / 'phantom'))
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'profile_run.md'))
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='tsbn-profile-'))
    try:
        res = dict(load_before=os.getloadavg(), imports=import_costs(), runs={}, profiles={})
        for alg in a.algorithms:
            res['runs'][alg] = papermill_run(alg, a.profile, a.data, work / 'pm')
            print(alg, {k: (round(v, 1) if isinstance(v, float) else v) for k, v in res['runs'][alg].items()}, flush=True)
        for alg in a.profile_algorithms:
            res['profiles'][alg] = profile_in_process(alg, a.profile, a.data, work / 'prof')
            print(alg, res['profiles'][alg], flush=True)
        res['load_after'] = os.getloadavg()
    finally: shutil.rmtree(work, ignore_errors=True)
    lines = [f"# One {a.profile} run, profiled\n", f"Load average before/after: {res['load_before'][0]:.2f} / {res['load_after'][0]:.2f} "
             "(2 cores; above ~0.3 the numbers are inflated by other work).\n", "## Start-up\n", "| what | s |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in res['imports'].items()]
    lines += ["\n## Each algorithm's fold 0, as the sweep runs it (papermill subprocess, 1 thread)\n",
              "| algorithm | total s | inside run_fold s | papermill + kernel + imports + notebook s | share outside | phases (s) |",
              "|---|---|---|---|---|---|"]
    for alg, r in res['runs'].items():
        ph = ', '.join(f"{k} {v:.1f}" for k, v in r['phases'].items())
        lines.append(f"| {alg} | {r['total']:.1f} | {r['inside']:.1f} | {r['outside']:.1f} | {r['outside'] / r['total']:.0%} | {ph} |")
    tot = sum(r['total'] for r in res['runs'].values())
    if res['runs']:
        lines.append(f"\nSum over the {len(res['runs'])} runs: {tot:.0f} s, of which {sum(r['outside'] for r in res['runs'].values()):.0f} s "
                     "outside run_fold. A 5-fold sweep is 5x this work; with 2 workers the wall time is at least half of that.")
    for alg, p in res['profiles'].items():
        lines += [f"\n## Inside run_fold: {alg} (cProfile, in process; profiling adds overhead to Python-heavy parts)\n",
                  f"Total {p['total']:.1f} s.\n", "| part | s | share |", "|---|---|---|"]
        lines += [f"| {g} | {s:.1f} | {s / p['total']:.0%} |" for g, s in p['groups'].items()]
    Path(a.out).write_text('\n'.join(lines) + '\n')
    Path(a.out).with_suffix('.json').write_text(json.dumps(res, indent=1))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
