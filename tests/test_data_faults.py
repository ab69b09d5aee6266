"""Issue 23 (reliability round 3), the data side: a full disk while the cache is written, a corrupted cache,
manifest values the tool does not know, and hints a command-line user can follow. Each test failed before the fix."""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
from tsbn_nb.core import TsbnError, get_config
from tsbn_nb.cli import main
from test_datasets import write_dicom


def _manifest(d, rows, header='path,label,patient_id'):
    "A manifest folder: 6 small DICOMs (3 benign, 3 malignant, one patient each) plus `rows` appended."
    (d / 'imgs').mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i in range(6):
        write_dicom(d / 'imgs' / f'{i}.dcm', lat='L' if i % 2 else 'R', seed=i)
        lines.append(f'imgs/{i}.dcm,{int(i >= 3)},P{i}')
    (d / 'manifest.csv').write_text('\n'.join(lines + rows) + '\n')
    return d


def _cli(capsys, *argv):
    "(exit code, stdout, stderr) of `tsbn ARGV` run in this process."
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err.strip()


# ---- case 16: hints the command line can follow ----------------------------------------------------------------

def test_data_info_advises_a_flag_it_accepts(tmp_path, capsys):
    "`tsbn data info` on a manifest with a missing file advises --skip-bad, and --skip-bad is accepted and works."
    d = _manifest(tmp_path / 'm', ['imgs/gone.dcm,1,P9'])
    rc, _, err = _cli(capsys, 'data', 'info', str(d), '--folds', '2')
    assert rc == 2 and '--skip-bad' in err and 'skip_bad=True' not in err and err.count('\n') == 0, err
    rc, out, err = _cli(capsys, 'data', 'info', str(d), '--folds', '2', '--skip-bad')
    assert rc == 0 and 'used:        6 images of 6 patients' in out, (out, err)
    assert 'TSBN_COMMAND' not in os.environ                       # the command's spelling does not leak out of main()


def test_cli_messages_name_flags_not_python_arguments(tmp_path, capsys):
    "From the command line a duplicate says --dedupe (not dedupe=True); from Python the argument is named."
    d = _manifest(tmp_path / 'm', ['./imgs/0.dcm,0,P0'])
    rc, _, err = _cli(capsys, 'data', 'info', str(d), '--folds', '2')
    assert rc == 2 and 'pass --dedupe to keep the first' in err and 'dedupe=True' not in err, err
    from tsbn_nb.datasets import load_dataset
    with pytest.raises(TsbnError, match='pass dedupe=True to keep the first'): load_dataset(d)


def test_fold_hints_for_a_single_malignant_patient(tmp_path, capsys):
    "All malignant images from one patient: no 'use fewer folds' (2 is the minimum); the image-level split is offered."
    d = tmp_path / 'one'; (d / 'imgs').mkdir(parents=True)
    lines = ['path,label,patient_id']
    for i in range(6):
        write_dicom(d / 'imgs' / f'{i}.dcm', seed=i)
        lines.append(f'imgs/{i}.dcm,{int(i >= 3)},' + ('P0' if i >= 3 else f'B{i}'))
    (d / 'manifest.csv').write_text('\n'.join(lines) + '\n')
    rc, out, _ = _cli(capsys, 'data', 'info', str(d), '--folds', '2')
    assert rc == 0 and 'cannot make the folds: only 1 patients have malignant images' in out, out
    hint = out.split('cannot make the folds:')[1]
    assert 'fewer folds' not in hint and 'at most 1' not in hint and '(--image-level)' in hint, hint
    rc, out, _ = _cli(capsys, 'data', 'info', str(d), '--folds', '2', '--image-level')
    assert rc == 0 and 'cannot make the folds' not in out and 'image-level' in out, out     # the advice works


# ---- case 18: manifest values ------------------------------------------------------------------------------------

@pytest.mark.parametrize('row, says', [
    ('imgs/x.dcm,1,P8,X,CC', "line 8: laterality 'X'"),
    ('imgs/x.dcm,1,P8,L,AP', "line 8: view 'AP'"),
])
def test_unknown_laterality_or_view_is_named(tmp_path, capsys, row, says):
    "Laterality X no longer vanishes from the counts, view AP is no longer accepted: one line naming row and value."
    d = _manifest(tmp_path / 'm', [row], header='path,label,patient_id,laterality,view')
    text = (d / 'manifest.csv').read_text().replace(',P0\n', ',P0,,\n')
    (d / 'manifest.csv').write_text(text)
    write_dicom(d / 'imgs' / 'x.dcm', seed=9)
    rc, _, err = _cli(capsys, 'data', 'info', str(d), '--folds', '2')
    assert rc == 2 and says in err and err.count('\n') == 0, err


def test_second_label_column_and_folder_rows(tmp_path, capsys):
    "Two 'label' columns are refused (neither silently wins); a row naming a folder is said to be a folder."
    d = _manifest(tmp_path / 'm', [])
    lines = (d / 'manifest.csv').read_text().splitlines()
    (d / 'two.csv').write_text('\n'.join([lines[0] + ',label'] + [l + ',' + str(1 - int(l.split(',')[1])) for l in lines[1:]]) + '\n')
    rc, _, err = _cli(capsys, 'data', 'info', str(d / 'two.csv'), '--folds', '2')
    assert rc == 2 and "2 columns that all mean 'label'" in err, err
    (d / 'dir.csv').write_text('\n'.join(lines + ['imgs,1,P7']) + '\n')
    rc, _, err = _cli(capsys, 'data', 'info', str(d / 'dir.csv'), '--folds', '2')
    assert rc == 2 and 'is a folder, not an image file' in err and 'does not exist' not in err, err


# ---- case 1: a build killed by a signal leaves no worker behind ---------------------------------------------------

_KILLED_BUILD = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    import tsbn_nb.cache as C
    from tsbn_nb.preprocess import PreprocParams
    seen = Path(sys.argv[1])
    def slow(job):                        # a worker that would decode for two minutes
        (seen / str(os.getpid())).write_text('')
        time.sleep(120)
    C._cache_one = slow                   # the pool forks: its workers run this
    C.build_cache(sys.argv[2:], None, PreprocParams(32, 16), seen.parent / 'cache', workers=2, progress=False)
''')


def _running(pid) -> bool:
    "Whether `pid` is a live process (a zombie waiting for its reaper is not)."
    try: state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError): return False
    return state not in ('Z', 'X')


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads process states from /proc')
def test_workers_do_not_outlive_a_killed_build(tmp_path):
    "SIGKILL (as SIGBUS did) to a process building the cache with 2 workers: both workers are gone within seconds."
    seen = tmp_path / 'pids'; seen.mkdir()
    files = [str(write_dicom(tmp_path / f'{i}.dcm', seed=i)) for i in range(4)]
    p = subprocess.Popen([sys.executable, '-c', _KILLED_BUILD, str(seen), *files], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        t0 = time.time()
        while len(list(seen.iterdir())) < 2 and time.time() - t0 < 60 and p.poll() is None: time.sleep(0.1)
        workers = [int(f.name) for f in seen.iterdir()]
        assert len(workers) == 2, (workers, p.poll(), p.stderr.read().decode() if p.poll() is not None else '')
        os.kill(p.pid, signal.SIGKILL); p.wait()
        t0 = time.time()
        while any(_running(w) for w in workers) and time.time() - t0 < 10: time.sleep(0.1)
        assert not any(_running(w) for w in workers), f"workers {workers} outlived their parent"
    finally:
        for w in [int(f.name) for f in seen.iterdir()] + [p.pid]:
            if _running(w):
                try: os.kill(w, signal.SIGKILL)
                except ProcessLookupError: pass


# ---- case 7: a corrupted cache is found and rebuilt ---------------------------------------------------------------

@pytest.mark.parametrize('settled', [True, False])
def test_corrupted_cache_is_rebuilt_end_to_end(tmp_path, settled):
    "Every cached image flipped with size and mtime kept: prepare_data warns naming the entry and serves the true images."
    from tsbn_nb.prepare import prepare_data
    from test_datasets import make_inbreast
    d, cfg = make_inbreast(tmp_path / 'inb'), get_config('smoke')
    # settled: the files are old enough for the hash store to remember them, so the entry is found without decoding
    # (its checksum checked on reuse); else the images are decoded again and the entry found damaged when published
    if settled: time.sleep(2.2)
    df, images = prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    good = np.asarray(images).copy()
    f = tmp_path / 'c' / df.attrs['cache_key'] / 'images.npy'; st = f.stat(); del images
    a = np.load(f, mmap_mode='r+'); a[:] = a[:, :, ::-1]; a.flush(); del a
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.warns(UserWarning, match='does not match the checksum stored') as w:
        df2, images2 = prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    said = [str(x.message) for x in w if 'checksum' in str(x.message)]
    assert len(said) == 1 and df.attrs['cache_key'] in said[0], said
    assert ('rebuilding it' if settled else 'replacing it with the one just built') in said[0], said
    assert np.array_equal(np.asarray(images2), good) and df2.attrs['fingerprint'] == df.attrs['fingerprint']


def test_full_cache_disk_from_the_command_line(tmp_path, capsys, monkeypatch):
    "`tsbn run --cache-dir C` with 300 KB free on C's disk: one line 'C is full (N MiB free, M MiB needed …)' naming "
    "--cache-dir, exit 2, nothing left in C (the results folder's own space check is not involved: it has room)."
    import shutil
    from test_datasets import make_inbreast
    d, cache = make_inbreast(tmp_path / 'inb'), tmp_path / 'tiny_disk'
    real = shutil.disk_usage
    def usage(p):
        u = real(p)
        return type(u)(u.total, u.total - 300_000, 300_000) if str(p).startswith(str(cache)) else u
    monkeypatch.setattr(shutil, 'disk_usage', usage)
    rc, _, err = _cli(capsys, 'run', '--data', str(d), '--profile', 'smoke', '--algorithm', 'resnet', '--fold', '0',
                      '--out', str(tmp_path / 'res'), '--cache-dir', str(cache), '-p', 'height', '512', '-p', 'width', '256')
    assert rc == 2 and f'{cache} is full (0.3 MiB free, ' in err and '--cache-dir DIR' in err, err
    assert err.count('\n') == 0 and 'cache_dir=' not in err, err
    assert sorted(p.name for p in cache.iterdir() if p.name != 'file-hashes.json') == []
