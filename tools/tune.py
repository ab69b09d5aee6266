#!/usr/bin/env python3
"""Tune settings on data that are not reported: the same candidate settings, the same budget, for every algorithm.

    .venv/bin/tsbn phantom data/phantom-s1 --seed 1          # an independent phantom (the reported one is seed 0)
    .venv/bin/python tools/tune.py data/phantom-s1 --out results/tune/s1 \\
        --set lr=1e-3,3e-4 --set pretext_epochs=2,4 --workers 2
    .venv/bin/python tools/tune.py data/phantom-s1 --out results/tune/s1 --candidate "lr=3e-4 epochs=8" --dry-run

**The procedure.**

1. *Data.* Tune on data the reported table never sees: a phantom made with another generator seed
   (`tsbn phantom DIR --seed N`), or, on real data, only validation splits of the training folds (`--mode val`).
   `--mode cv` (the default) trains each algorithm on the independent data's training folds and scores its held-out
   folds; it refuses the built-in reported phantom (`data/phantom`), whose test folds are what Table II reports.
   `--mode val` carves a validation share of whole patients (`--val-fraction`, stratified as `val_fraction` is in
   `07_train`) from each run's training folds, trains on the rest and scores only the validation images: the held-out
   fold is never predicted, so this mode is the one allowed on the reported data.
2. *Candidates.* `--set KEY=V1,V2,...` (repeatable) gives a grid, the Cartesian product of the lists;
   `--candidate "KEY=V KEY=V"` (repeatable) adds one candidate; with neither, the profile's defaults are the one
   candidate. `-p KEY VALUE` applies to every candidate (e.g. `-p epochs 3` for a quick look). Every algorithm gets
   **every** candidate, on the same folds and seeds, so no algorithm is tuned harder than another (a candidate's setting
   that an algorithm does not use, e.g. `pretext_epochs` for ResNet, just repeats its run, which keeps the budget
   equal and shows the run-to-run noise). Settings that change the evaluation rather than the model (`n_folds`,
   `fold_seed`, `group_by_patient`, `val_fraction`, `seed`) cannot be candidates, nor `profile` (use `--profile`).
3. *Runs.* Each (candidate, algorithm, fold, seed) trains with `tsbn_nb.train.fit_run` on the split of
   `split_fold`, as `tsbn run` does, one thread per worker (`OMP_NUM_THREADS=1`); its probabilities are cached in
   `OUT/runs/<candidate>/<algorithm>/fold<k>-seed<s>.json`, so an interrupted tuning resumes (a cached run made with
   other settings is retrained).
4. *Table.* Per algorithm and candidate, `OUT/tune.csv` and `OUT/tune.md` give the pooled AUC (the predictions of all
   folds of one seed pooled, then averaged over seeds; in `--mode val` images can be pooled more than once, as one
   patient validates several folds), the mean ± sd of the per-run AUCs, the spread of the probabilities (their
   standard deviation within a run: median and minimum over runs) and the number of *flat* runs (spread < 0.05: a
   classifier that outputs a constant, whatever its AUC). `best` marks, per algorithm, the candidate with the highest
   pooled AUC among those without flat runs. `OUT/runs.csv` holds one row per run.
5. *Choosing.* Pick per algorithm (or one setting for all) from the table, then write the chosen values into the
   profile (`nbs/00_core.ipynb`) with a comment naming the tuning folder, and only then run the reported data. The
   differences between candidates are only meaningful beyond the run-to-run noise (compare with several seeds,
   `--seeds 0 1 2`).
"""
from __future__ import annotations
import argparse, concurrent.futures as cf, datetime, itertools, json, math, multiprocessing as mp, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_CANDIDATES = ('n_folds', 'fold_seed', 'group_by_patient', 'val_fraction', 'seed', 'profile')
FLAT = 0.05                      # a run whose probabilities vary less than this (std) outputs a constant


def parse_candidates(sets:list[str], candidates:list[str]) -> list[dict]:
    "The candidates: the product of the `--set KEY=V1,V2` lists, then each `--candidate \"KEY=V KEY=V\"`; [{}] if none."
    out = []
    if sets:
        keys, lists = [], []
        for s in sets:
            if '=' not in s: raise SystemExit(f"--set {s!r}: write KEY=V1,V2,...")
            k, v = s.split('=', 1); keys.append(k.strip()); lists.append([x.strip() for x in v.split(',') if x.strip()])
        out += [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    for c in candidates or []:
        d = {}
        for part in c.split():
            if '=' not in part: raise SystemExit(f"--candidate {c!r}: write \"KEY=V KEY=V\"")
            k, v = part.split('=', 1); d[k.strip()] = v.strip()
        out.append(d)
    out = out or [{}]
    seen, uniq = set(), []
    for d in out:
        key = tuple(sorted(d.items()))
        if key not in seen: seen.add(key); uniq.append(d)
    return uniq


def candidate_name(c:dict) -> str:
    "A folder-safe name of a candidate: 'default' or 'lr=0.001,pretext_epochs=4'."
    return ','.join(f'{k}={v}' for k, v in sorted(c.items())) or 'default'


def check_candidates(cands:list[dict], profile:str, base:dict):
    "Every candidate must build a valid Config and must not touch the evaluation's settings."
    from tsbn_nb.core import get_config
    for c in cands:
        if bad := [k for k in c if k in NOT_CANDIDATES]:
            raise SystemExit(f"{', '.join(bad)} change the evaluation, not the model: they cannot be candidates")
        get_config(profile, **{**base, **c})                 # unknown keys and bad values fail here, with a hint


def _worker_init():
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch
    torch.set_num_threads(1)


_DATA = {}
def _data(data, cfg):
    "(df, images, labels) of `data` at cfg's size, loaded once per worker process and size."
    from tsbn_nb.prepare import prepare_data
    key = (str(data), cfg.height, cfg.width, cfg.mask_outside, cfg.birads_map)
    if key not in _DATA:
        df, images = prepare_data(data, cfg, progress=False)
        _DATA[key] = (df, images, df['label'].to_numpy().astype('float32'))
    return _DATA[key]


def run_one(job:dict) -> dict:
    "Train one (candidate, algorithm, fold, seed) and cache its scored probabilities; returns the cached row."
    import numpy as np, torch, warnings
    from tsbn_nb.core import get_config, atomic_write_json
    from tsbn_nb.folds import get_folds
    from tsbn_nb.train import split_fold, fit_run
    from tsbn_nb.metrics import roc_auc
    torch.set_num_threads(1)
    path = Path(job['path'])
    cfg = get_config(job['profile'], seed=job['seed'], **job['overrides'])
    if path.exists():
        old = json.loads(path.read_text())
        if old.get('config') == cfg.to_dict(): return old
    t0 = time.perf_counter()
    df, images, labels = _data(job['data'], cfg)
    folds = get_folds(df, job['folds_csv'], n_folds=cfg.n_folds, seed=cfg.fold_seed, group_by_patient=cfg.group_by_patient)
    split = split_fold(df, folds, job['fold'], cfg)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer = fit_run(job['algorithm'], cfg, images, labels, split, fold=job['fold'], progress=False)
    _, val_ds, test_ds = split.datasets(images, labels, cfg)
    idx, ds = (split.val, val_ds) if job['mode'] == 'val' else (split.test, test_ds)
    prob = trainer.predict(ds); y = labels[idx].astype(int)
    row = dict(candidate=job['candidate'], algorithm=job['algorithm'], fold=job['fold'], seed=job['seed'],
               mode=job['mode'], n=int(len(idx)), auc=float(roc_auc(y, prob)) if 0 < y.sum() < len(y) else float('nan'),
               spread=float(np.std(prob)), mean_prob=float(np.mean(prob)),
               last_losses={k: v for k, v in trainer.history[-1].items() if k not in ('phase', 'epoch', 'time_s')},
               time_s=round(time.perf_counter() - t0, 1), image_id=df['image_id'].astype(str).to_numpy()[idx].tolist(),
               label=y.tolist(), prob=prob.tolist(), config=cfg.to_dict())
    atomic_write_json(path, row)
    return row


def summarise(rows:list[dict], cand_order:list[str], alg_order:list[str]):
    "(per-run table, per algorithm × candidate table) as pandas DataFrames."
    import numpy as np, pandas as pd
    from tsbn_nb.metrics import roc_auc
    runs = pd.DataFrame([{k: r[k] for k in ('candidate', 'algorithm', 'fold', 'seed', 'n', 'auc', 'spread', 'mean_prob', 'time_s')}
                         for r in rows])
    out = []
    for (a, c), g in itertools.groupby(sorted(rows, key=lambda r: (r['algorithm'], r['candidate'])),
                                       key=lambda r: (r['algorithm'], r['candidate'])):
        g = list(g)
        pooled = []
        for s in sorted({r['seed'] for r in g}):
            y = np.concatenate([r['label'] for r in g if r['seed'] == s]); p = np.concatenate([r['prob'] for r in g if r['seed'] == s])
            if 0 < y.sum() < len(y): pooled.append(roc_auc(y, p))
        aucs = np.array([r['auc'] for r in g], float); spreads = np.array([r['spread'] for r in g], float)
        out.append(dict(algorithm=a, candidate=c, runs=len(g), auc_pooled=float(np.mean(pooled)) if pooled else float('nan'),
                        auc_mean=float(np.nanmean(aucs)), auc_sd=float(np.nanstd(aucs, ddof=1)) if len(aucs) > 1 else float('nan'),
                        spread_median=float(np.median(spreads)), spread_min=float(spreads.min()),
                        flat_runs=int((spreads < FLAT).sum()), time_s=float(sum(r['time_s'] for r in g))))
    tab = pd.DataFrame(out)
    tab['algorithm'] = pd.Categorical(tab['algorithm'], alg_order, ordered=True)
    tab['candidate'] = pd.Categorical(tab['candidate'], cand_order, ordered=True)
    tab = tab.sort_values(['algorithm', 'candidate']).reset_index(drop=True)
    tab['best'] = False
    for a, g in tab.groupby('algorithm', observed=True):
        ok = g[g['flat_runs'] == 0]
        if len(ok) and ok['auc_pooled'].notna().any(): tab.loc[ok['auc_pooled'].idxmax(), 'best'] = True
    tab['algorithm'] = tab['algorithm'].astype(str); tab['candidate'] = tab['candidate'].astype(str)
    return runs, tab


def to_markdown(tab, header:str) -> str:
    f = lambda v, d=3: '–' if v != v else f'{v:.{d}f}'
    lines = [header, '', '| algorithm | candidate | runs | pooled AUC | AUC mean ± sd | spread median | spread min | flat runs | best |',
             '|---|---|:---:|:---:|:---:|:---:|:---:|:---:|:---:|']
    for r in tab.itertuples():
        lines.append(f"| {r.algorithm} | {r.candidate} | {r.runs} | {f(r.auc_pooled)} | {f(r.auc_mean)} ± {f(r.auc_sd)} | "
                     f"{f(r.spread_median)} | {f(r.spread_min)} | {r.flat_runs} | {'✓' if r.best else ''} |")
    return '\n'.join(lines) + '\n'


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog='See the module docstring for the procedure.',
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('data', help='an independent phantom folder (tsbn phantom DIR --seed N), or data for --mode val')
    ap.add_argument('--out', required=True, help='folder of the tuning (runs/, tune.csv, tune.md, runs.csv, folds.csv)')
    ap.add_argument('--profile', default='demo')
    ap.add_argument('--algorithms', nargs='+', default=None, help='default: all seven')
    ap.add_argument('--folds', nargs='+', type=int, default=None, help='default: all folds')
    ap.add_argument('--seeds', nargs='+', type=int, default=[0])
    ap.add_argument('--set', action='append', default=[], metavar='KEY=V1,V2', help='a grid axis (repeatable)')
    ap.add_argument('--candidate', action='append', default=[], metavar='"KEY=V KEY=V"', help='one candidate (repeatable)')
    ap.add_argument('-p', nargs=2, action='append', default=[], metavar=('KEY', 'VALUE'), dest='params',
                    help='a setting for every candidate')
    ap.add_argument('--mode', choices=('cv', 'val'), default='cv',
                    help='cv: score the held-out folds of independent data; val: score a validation split of the training folds')
    ap.add_argument('--val-fraction', type=float, default=0.2, help='--mode val: share of training patients validated on')
    ap.add_argument('--workers', type=int, default=1, help='runs at once, one thread each')
    ap.add_argument('--dry-run', action='store_true', help='list the candidates and the number of runs, train nothing')
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tsbn_nb.core import get_config, default_data_dir, atomic_write_text
    from tsbn_nb.registry import ALGORITHMS, get_algorithm
    algs = args.algorithms or list(ALGORITHMS)
    for a in algs: get_algorithm(a)
    base = dict(args.params)
    if args.mode == 'val': base['val_fraction'] = str(args.val_fraction)
    elif 'val_fraction' in base: raise SystemExit('-p val_fraction goes with --mode val')
    data = Path(args.data).resolve()
    if args.mode == 'cv' and data == Path(default_data_dir()).resolve():
        raise SystemExit(f"{args.data} is the reported phantom: tuning on its held-out folds would tune on Table II's test "
                         "data. Make an independent one (tsbn phantom DIR --seed 1) or use --mode val")
    cands = parse_candidates(args.set, args.candidate)
    check_candidates(cands, args.profile, base)
    cfg0 = get_config(args.profile, **base)
    folds = args.folds if args.folds is not None else list(range(cfg0.n_folds))
    out = Path(args.out); names = [candidate_name(c) for c in cands]
    jobs = [dict(path=str(out / 'runs' / n / a / f'fold{k}-seed{s}.json'), candidate=n, algorithm=a, fold=k, seed=s,
                 profile=args.profile, overrides={**base, **c}, data=str(data), folds_csv=str(out / 'folds.csv'), mode=args.mode)
            for c, n in zip(cands, names) for a in algs for k in folds for s in args.seeds]
    print(f"{len(cands)} candidate(s) × {len(algs)} algorithm(s) × {len(folds)} fold(s) × {len(args.seeds)} seed(s) = "
          f"{len(jobs)} runs; mode {args.mode}; profile {args.profile}" + (f"; for all: {base}" if base else ''))
    for n in names: print('  candidate', n)
    if args.dry_run: return 0
    out.mkdir(parents=True, exist_ok=True)
    from tsbn_nb.prepare import prepare_data
    from tsbn_nb.folds import get_folds
    df, _ = prepare_data(data, cfg0, progress=False)          # the folds, written once before the workers start
    get_folds(df, out / 'folds.csv', n_folds=cfg0.n_folds, seed=cfg0.fold_seed, group_by_patient=cfg0.group_by_patient)
    rows, t0 = [], time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=mp.get_context('spawn'),
                                initializer=_worker_init) as pool:
        futs = {pool.submit(run_one, j): j for j in jobs}
        for i, fu in enumerate(cf.as_completed(futs), 1):
            r = fu.result(); rows.append(r)
            print(f"[{i}/{len(jobs)}] {r['candidate']} {r['algorithm']} fold {r['fold']} seed {r['seed']}: "
                  f"AUC {r['auc']:.3f}, spread {r['spread']:.3f}, {r['time_s']:.0f} s", flush=True)
    runs, tab = summarise(rows, names, algs)
    runs.sort_values(['candidate', 'algorithm', 'fold', 'seed']).to_csv(out / 'runs.csv', index=False)
    tab.to_csv(out / 'tune.csv', index=False)
    when = datetime.datetime.now().isoformat(timespec='seconds')
    header = (f"# Tuning on {args.data} ({args.mode}: " + ('held-out folds of independent data' if args.mode == 'cv' else
              f'validation split of {args.val_fraction:.0%} of the training patients') + f")\n\nProfile {args.profile}"
              + (f", for every candidate {base}" if base else '') + f"; folds {folds}; seeds {args.seeds}; {when}; "
              f"{(time.perf_counter() - t0) / 60:.1f} min. Spread: the std of a run's probabilities; flat: spread < {FLAT}. "
              "best: the highest pooled AUC without flat runs, per algorithm.")
    atomic_write_text(out / 'tune.md', to_markdown(tab, header))
    print(to_markdown(tab, header))
    return 0


if __name__ == '__main__':
    try: sys.exit(main())
    except Exception as e:
        if type(e).__name__ != 'TsbnError': raise
        sys.exit(f'error: {e}')
