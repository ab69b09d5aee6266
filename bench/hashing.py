"""Content-hashing cost (issue 11): hashing N INbreast-size DICOMs the first time, against the first preprocessing pass.

`python bench/hashing.py [--n 410] [--workers 2] [--quick]` writes or replaces the section "7. Content hashing" of
bench/results.md (the other sections are left as they are) and prints the table. `bench_hashing(quick)` has the
signature of bench/run.py's benchmarks, so `make bench` can include it.

What is measured, for N distinct 3328x2560 16-bit DICOMs (17 MB each; bytes differ between files, so nothing is shared
in the page cache), each pass with a fresh hash store and a fresh cache folder:

- before: the first preprocessing pass (`build_cache` at 768x384 with the given workers) without any hashing;
- now: a first `prepare_data` with an empty hash store: the workers hash each file right after decoding it,
  the entry is named by those hashes, then the loader's second look finds them in the store;
- the alternative design: a separate hashing pass (`file_hashes`, 4 threads), then the build keyed by it;
- the next run's hashing (hash store warm: one `stat` per file).

Both with the files evicted from the page cache first (`posix_fadvise(DONTNEED)`: the first run after copying the
data) and with the files in the page cache (a rerun after the data were read once). These are measurements, not tests: nothing here fails on a slow machine.
"""
from __future__ import annotations
import argparse, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / 'bench' / '_work' / 'hashing'
H, W = 3328, 2560                     # rows x columns of INbreast's smaller image size, 16-bit storage
SECTION = '7. Content hashing'


def make_files(n: int, d: Path) -> list[str]:
    "N distinct full-size DICOMs in `d` (written once, reused): a breast on a dark background plus shifted noise."
    import numpy as np
    from tsbn_nb.dicom import save_dicom
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f'{i:04d}.dcm' for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        rng = np.random.default_rng(0)
        yy, xx = np.ogrid[:H, :W]
        base = np.where((yy - H / 2) ** 2 / (0.45 * H) ** 2 + xx ** 2 / (0.8 * W) ** 2 <= 1, 9000, 150).astype(np.uint16)
        pool = rng.integers(0, 2000, (H + n, W), dtype=np.uint16)   # file i: rows i..i+H of the pool -> distinct bytes
        for i in todo:
            side = 'L' if i % 2 == 0 else 'R'
            img = base + pool[i:i + H]
            save_dicom(paths[i], img if side == 'L' else img[:, ::-1], bits_stored=14, laterality=side, view='CC')
    return [str(p) for p in paths]


def evict(paths):
    "Drop the files from the page cache (clean pages only: the files were written and synced long before)."
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try: os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally: os.close(fd)


def warm(paths):
    "Read every file once so that it is in the page cache."
    for p in paths:
        with open(p, 'rb', buffering=0) as f:
            while f.read(1 << 24): pass


def bench_hashing(quick=False, n=None, workers=2):
    """First-run content hashing of INbreast-size DICOMs vs the first preprocessing pass (768x384)."""
    import statistics
    import tsbn_nb.cache as cache_mod
    from tsbn_nb.preprocess import PreprocParams
    from tsbn_nb.cache import build_cache, file_hashes, content_hash, HASH_STORE
    n = n or (40 if quick else 410)
    paths = make_files(n, WORK / 'files')
    time.sleep(2.5)                                   # every file older than the "racily clean" window
    mb = sum(os.path.getsize(p) for p in paths) / 2**20
    params = PreprocParams(768, 384)

    def run(tag, mode):
        "One first `prepare_data`-like pass on a fresh cache folder; seconds."
        cache = WORK / f'cache-{tag}'; shutil.rmtree(cache, ignore_errors=True); cache.mkdir(parents=True)
        store, real = cache / HASH_STORE, cache_mod.content_hash
        if mode == 'before': cache_mod.content_hash = lambda p: '0' * 32     # the old code: no hashing at all
        try:
            t0 = time.perf_counter()
            if mode == 'prepass': hs = file_hashes(paths, store)         # a separate hashing pass, then the build
            else: hs = file_hashes(paths, store, read=False)            # now: the store knows nothing yet ...
            c = build_cache(paths, None, params, cache, workers=workers, progress=False, hashes=hs)  # ... workers hash
            if mode == 'now': assert file_hashes(paths, store) == c.hashes   # the loader's second look: from the store
            t = time.perf_counter() - t0
        finally: cache_mod.content_hash = real
        assert len(c) == n and not c.reused and (mode == 'before' or len(set(c.hashes)) == n)
        del c; shutil.rmtree(cache, ignore_errors=True)
        return t

    res = {}
    for state in ('cold', 'warm'):
        prep = evict if state == 'cold' else warm
        for mode in ('before', 'now', 'prepass'):
            prep(paths); res[state, mode] = run(f'{state}-{mode}', mode)
        store = WORK / 'store.json'; store.unlink(missing_ok=True)
        prep(paths); t0 = time.perf_counter(); file_hashes(paths, store); res[state, 'hash'] = time.perf_counter() - t0
        t0 = time.perf_counter(); file_hashes(paths, store); res[state, 'rehash'] = time.perf_counter() - t0
    ts = []                                      # the hash in a worker, right after pydicom read the file
    for p in paths[:min(n, 100)]:
        warm([p]); t0 = time.perf_counter(); content_hash(p); ts.append(time.perf_counter() - t0)
    verify = statistics.median(ts)
    rows, md = [], ['| page cache at the start | before: no hashing | now: hashed by the workers | end to end '
                    '| hashing CPU / before | alternative: separate hashing pass, then the build | next run: hashing |',
                    '|---|---|---|---|---|---|---|']
    for state, label in (('cold', 'cold (files evicted)'), ('warm', 'warm (files cached)')):
        old, now, pre, h, rh = (res[state, k] for k in ('before', 'now', 'prepass', 'hash', 'rehash'))
        cpu = verify * n / workers / old
        rows.append(dict(state=state, n=n, before_s=old, now_s=now, end_to_end=now / old - 1, hashing_cpu=cpu,
                         prepass_total_s=pre, hash_pass_s=h, rehash_store_s=rh, hash_per_file_s=verify))
        md.append(f'| {label} | {old:.1f} s | {now:.1f} s | {100 * (now / old - 1):+.1f}% | **{100 * cpu:.1f}%** '
                  f'| {pre:.1f} s ({100 * (pre / old - 1):+.1f}%), of which hashing {h:.1f} s ({mb / h:.0f} MB/s) '
                  f'| {rh * 1e3:.0f} ms |')
    md += ['', f'{n} distinct DICOMs of {W}x{H} (columns x rows), 16-bit, {mb / n:.1f} MB each ({mb / 1024:.1f} GB); '
               f'preprocessing to 768x384 with {workers} worker processes. "Before": the first preprocessing pass with '
               'no hashing at all (the old code). "Now": what a first `prepare_data` does with an empty hash store: '
               'the workers hash each file with XXH3-128 right after decoding it, from the page cache, and the entry '
               'is named by those hashes; then the loader finds them in the store. "Hashing CPU / before": the hashing '
               f'work itself ({verify * 1e3:.2f} ms per file, median, file in the page cache) spread over the workers, '
               'as a fraction of the first pass (target: < 10%); "end to end" is the measured difference of two '
               '~1 min runs on a machine shared with other jobs, so it carries several % of noise either way. The '
               'alternative (a separate hashing pass by 4 threads before the build) reads every file twice on a '
               'cold disk. "Next run": the hash store answers, one `stat` per file.']
    return rows, md


def write_section(md, seconds, out: Path):
    "Put the section into `out`, replacing an earlier version of it and keeping every other section."
    from tsbn_nb.core import atomic_write_text
    text = out.read_text() if out.exists() else '# tsbn_nb benchmarks\n'
    body = '\n'.join([f'## {SECTION}', '', (bench_hashing.__doc__ or '').strip() + ' `python bench/hashing.py`.', '',
                      *md, '', f'({seconds:.0f} s, measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, '
                      f'load average before the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)', ''])
    pat = re.compile(rf'^## {re.escape(SECTION)}\n.*?(?=^## |\Z)', re.S | re.M)
    text = pat.sub(lambda m: body + '\n', text) if pat.search(text) else text.rstrip('\n') + '\n\n' + body
    atomic_write_text(out, text.rstrip('\n') + '\n')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=None, help='number of DICOMs (default 410; 40 with --quick)')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--keep', action='store_true', help='keep the generated DICOMs under bench/_work/hashing')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results.md'))
    a = ap.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    t0 = time.perf_counter()
    try:
        rows, md = bench_hashing(a.quick, a.n, a.workers)
    finally:
        if not a.keep: shutil.rmtree(WORK, ignore_errors=True)
    print('\n'.join(md))
    write_section(md, time.perf_counter() - t0, Path(a.out))
    print(f'written {a.out}')


if __name__ == '__main__':
    sys.exit(main())
