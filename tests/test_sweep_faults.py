"""Issue 23, the sweep and command-line side: unwritable or full results folders, foreign Dask addresses, a lost Dask
worker, stale reports, arguments refused up front, SIGTERM to a single run, and runs reported as they really ended."""
import http.server, json, os, signal, socket, subprocess, sys, threading, time
from pathlib import Path
import pytest
from tsbn_nb.cli import main
from tsbn_nb.core import TsbnError
import tsbn_nb.sweep as sweep
from tsbn_nb.sweep import reproduce, plan

QUIET = dict(log=lambda *a: None)


def _one_line_error(capsys, rc):
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('tsbn: error:') and 'Traceback' not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


# --- case 2: an unwritable --out is refused before any work, --dry-run too ------------------------------------------
@pytest.mark.parametrize('where', ['file', 'file/sub', '/proc/tsbn-x', 'runs-is-a-file'])
@pytest.mark.parametrize('dry', [False, True])
def test_unwritable_out_is_one_line_before_any_work(phantom, tmp_path, capsys, where, dry):
    (tmp_path / 'file').write_text('x')
    if where == 'runs-is-a-file':
        out = tmp_path / 'res'; out.mkdir(); (out / 'runs').write_text('x')
    else: out = Path(where) if where.startswith('/') else tmp_path / where
    t0 = time.time()
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(out), '--no-report', '--cache-dir', str(tmp_path / 'cache'), *(['--dry-run'] if dry else [])])
    err = _one_line_error(capsys, rc)
    assert 'choose a writable results folder (--out)' in err, err
    assert not (tmp_path / 'cache').exists()                      # refused before the data was even read
    assert time.time() - t0 < 30


def test_unwritable_cache_dir_is_refused_up_front(phantom, tmp_path, capsys):
    (tmp_path / 'file').write_text('x')
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '--cache-dir', str(tmp_path / 'file' / 'cache')])
    err = _one_line_error(capsys, rc)
    assert 'choose a writable cache folder (--cache-dir)' in err and not (tmp_path / 'res').exists()


# --- case 11: the free space of the whole sweep, before any kernel starts --------------------------------------------
def test_a_full_disk_is_said_before_any_run(phantom, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, '_free_bytes', lambda folder: 5 << 20)       # 5 MiB free
    out = tmp_path / 'res'
    with pytest.raises(TsbnError, match=r'res is full \(5 MiB free, \d+ MiB needed by the 2 run\(s\) to do, 2 at a time\)'):
        reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0, 1], workers=2, report=False, **QUIET)
    assert not list(out.glob('runs/*/*.ipynb'))                        # no notebook was started


def test_sweep_bytes_counts_each_run_and_the_checkpoints_at_once(tmp_path):
    specs = plan('smoke', tmp_path, tmp_path / 'res', ['resnet'], [0, 1, 2])
    nets, clf = sweep._model_bytes(specs[0])
    assert nets == clf and 40 << 20 < clf < 50 << 20                   # a ResNet-18: 11.2 M float32 parameters
    mib = 1 << 20
    assert sweep.sweep_bytes(specs, 1, report=False) == 3 * (clf + mib) + 4 * nets + 2 * mib
    assert sweep.sweep_bytes(specs, 2, report=True) == 3 * (clf + mib) + 2 * (4 * nets + 2 * mib) + 8 * mib
    assert sweep.sweep_bytes(specs, 9, report=False) == sweep.sweep_bytes(specs, 3, report=False)   # 3 runs at most
    assert sweep.sweep_bytes([], 2) == 0


# --- cases 3 and 4: addresses that are not a Dask scheduler's -------------------------------------------------------
def _silent_port():
    "A socket on 127.0.0.1 that accepts connections and never answers."
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8); held = []
    threading.Thread(target=lambda: [held.append(s.accept()) for _ in range(50)], daemon=True).start()
    return s, s.getsockname()[1]


def _http_port():
    srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_port


@pytest.mark.parametrize('kind', ['silent', 'http', 'banner'])
def test_a_port_that_is_not_a_dask_scheduler_is_one_line_not_a_hang(phantom, tmp_path, capsys, kind):
    pytest.importorskip('distributed')
    if kind == 'silent': keep, port = _silent_port()
    elif kind == 'http': keep, port = _http_port()
    else:                                                   # a service that greets first, as SSH does
        keep = socket.socket(); keep.bind(('127.0.0.1', 0)); keep.listen(8); port = keep.getsockname()[1]
        def greet():
            while True:
                c, _ = keep.accept(); c.sendall(b'SSH-2.0-OpenSSH_9.6\r\n')
        threading.Thread(target=greet, daemon=True).start()
    t0 = time.time()
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '--no-report', '--scheduler', f'tcp://127.0.0.1:{port}'])
    err = _one_line_error(capsys, rc)
    assert time.time() - t0 < 25, time.time() - t0                  # the connection's deadline (10 s), not a hang
    assert f'tcp://127.0.0.1:{port}' in err and ('said nothing within 10 s' in err or 'not as a Dask scheduler' in err), err
    assert not (tmp_path / 'res' / 'runs').exists()
    keep.shutdown() if kind == 'http' else keep.close()


def test_an_unknown_address_scheme_is_one_line(phantom, tmp_path, capsys):
    pytest.importorskip('distributed')
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '--scheduler', 'nonsense://x'])
    err = _one_line_error(capsys, rc)
    assert "unknown address scheme 'nonsense'" in err and 'tcp://host:8786' in err, err


# --- case 5: a Dask worker lost mid-run ---------------------------------------------------------------------------
def test_a_lost_dask_worker_is_said_its_runs_stop_with_it_and_run_again(phantom, tmp_path):
    distributed = pytest.importorskip('distributed')
    import psutil
    out, lines = tmp_path / 'res', []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host='127.0.0.1') as cl, distributed.Client(cl) as client:
        worker_pid = list(client.run(os.getpid).values())[0]
        killed = {}
        def kill_when_training():
            deadline = time.time() + 240
            while time.time() < deadline:
                try: kids = psutil.Process(worker_pid).children(recursive=True)
                except psutil.NoSuchProcess: return
                if list(out.glob('runs/resnet/*.ckpt/last.pt')) or any('ipykernel' in ' '.join(k.cmdline()) for k in kids
                                                                       if k.is_running()):
                    time.sleep(1)
                    killed['family'] = psutil.Process(worker_pid).children(recursive=True)
                    os.kill(worker_pid, signal.SIGKILL); return          # the worker dies; its nanny starts another
                time.sleep(0.2)
        t = threading.Thread(target=kill_when_training, daemon=True); t.start()
        s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], scheduler=client, report=False,
                      log=lines.append, overrides={'epochs': 3})
        t.join()
    assert killed.get('family'), 'the run never started on the worker'
    time.sleep(3)
    alive = [p for p in killed['family'] if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f'processes of the lost worker still running: {[p.cmdline()[:3] for p in alive]}'
    assert any('Dask worker' in l and 'was lost while running resnet/fold0' in l for l in lines), lines
    assert s['ran'] == 1 and not s['failed'], s                      # run again on the restarted worker, and finished
    assert (out / 'runs' / 'resnet' / 'fold0.json').exists()


# --- case 9: a report made stale by a sweep ---------------------------------------------------------------------------
def test_a_report_is_marked_stale_when_a_sweep_adds_runs(phantom, tmp_path):
    out, lines = tmp_path / 'res', []
    reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], n_boot=20, **QUIET)
    t2 = (out / 'table2.md').read_text()
    assert not t2.startswith('> **Stale')
    reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0, 1], report=False, log=lines.append)
    text = (out / 'table2.md').read_text()
    assert text.startswith('> **Stale report:** run records changed since it was written (1 added); regenerate it with '
                           f'`tsbn report {out}`.'), text[:300]
    assert text.endswith(t2)
    assert any('is stale: run records changed since it was written (1 added)' in l for l in lines), lines
    said = []
    sweep.run_report(out, n_boot=20, log=said.append)                 # what `tsbn report` prints
    assert any('the previous report was stale (run records changed since it was written (1 added))' in l for l in said), said
    assert not (out / 'table2.md').read_text().startswith('> **Stale')


# --- case 12: arguments refused before the sweep --------------------------------------------------------------------
def test_verify_reference_is_checked_before_the_sweep(phantom, tmp_path, capsys):
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '--verify', str(tmp_path / 'nonexistent')])
    err = _one_line_error(capsys, rc)
    assert 'nonexistent: no such folder' in err and not (tmp_path / 'res').exists()


@pytest.mark.parametrize('seed, said', [('-1', 'seed=-1 is out of range'),
                                        ('99999999999999999999', 'seed=99999999999999999999 is out of range')])
def test_seeds_out_of_range_are_refused_up_front(phantom, tmp_path, capsys, seed, said):
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '--seeds', seed])
    assert said in _one_line_error(capsys, rc) and not (tmp_path / 'res').exists()


def test_a_fold_or_seed_given_twice_is_run_once(phantom, tmp_path):
    s = reproduce(phantom, 'smoke', out_dir=tmp_path / 'res', algorithms=['resnet'], folds=[0, 0], seeds=[0, 0],
                  report=False, **QUIET)
    assert s['runs'] == 1 and s['ran'] == 1 and not s['failed'], s


def test_cuda_on_a_machine_without_it_is_refused_up_front(phantom, tmp_path, capsys):
    torch = pytest.importorskip('torch')
    if torch.cuda.is_available(): pytest.skip('this machine has CUDA')
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(tmp_path / 'res'), '-p', 'device', 'cuda'])
    assert 'CUDA is not available here' in _one_line_error(capsys, rc)
    assert not list((tmp_path / 'res').glob('runs/*/*.ipynb'))


def test_infinite_learning_rate_is_refused(tmp_path, capsys):
    rc = main(['run', '--data', str(tmp_path), '--algorithm', 'resnet', '--fold', '0', '-p', 'lr', 'inf'])
    assert 'lr=inf is out of range' in _one_line_error(capsys, rc)


# --- case 19: SIGTERM, papermill's overrides, runs never started, runs finished as they were stopped -----------------
def test_sigterm_to_a_single_run_says_so_and_releases_its_lock(phantom, tmp_path):
    out = tmp_path / 'res'
    cmd = [sys.executable, '-c', 'import sys; from tsbn_nb.cli import main; sys.exit(main())', 'run', '--data',
           str(phantom), '--profile', 'smoke', '--algorithm', 'resnet', '--fold', '0', '--out', str(out), '-p', 'epochs', '40']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = out / 'runs' / 'resnet' / 'fold0.lock'
    deadline = time.time() + 180
    while time.time() < deadline and not list(out.glob('runs/resnet/fold0.ckpt/last.pt')): time.sleep(0.3)
    assert lock.exists(), 'the run never started training'
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith('tsbn: terminated (SIGTERM)') and 'Traceback' not in err, err
    assert not lock.exists(), 'a stale lock was left'
    assert (out / 'runs' / 'resnet' / 'fold0.ckpt' / 'last.pt').exists()     # the checkpoint is kept for the rerun


def test_papermill_overrides_that_are_not_a_mapping_say_so(phantom, tmp_path):
    nb = sweep.find_notebook('run_fold.ipynb')
    r = subprocess.run([sys.executable, '-m', 'papermill', str(nb), str(tmp_path / 'out.ipynb'), '-p', 'data', str(phantom),
                        '-p', 'profile', 'smoke', '-p', 'out_dir', str(tmp_path / 'res'), '-p', 'overrides', '{bad',
                        '-k', 'python3', '--cwd', str(nb.parent)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "TsbnError: overrides='{bad' is not a mapping of settings" in r.stderr, r.stderr[-2000:]
    assert 'JSONDecodeError' not in r.stderr


def test_a_run_that_never_started_names_no_notebook(tmp_path):
    spec = plan('smoke', tmp_path, tmp_path / 'res', ['resnet'], [0])[0]
    lines = []
    never = {'name': spec.name, 'ok': False, 'wall_s': 0.0, 'notebook': str(spec.notebook), 'error': 'KilledWorker: ...',
             'auc': None, 'interrupted': False, 'skipped': False}
    sweep._summarise([spec], [never], tmp_path / 'res', time.perf_counter(), lines.append)
    assert any('resnet/fold0: KilledWorker' in l for l in lines) and not any('notebook:' in l for l in lines), lines
    seen = []
    orig = sweep._run_local
    try:
        sweep._run_local = lambda todo, workers, on_done: on_done(never)
        sweep._run_all([spec], None, 1, False, 0, seen.append)
    finally: sweep._run_local = orig
    assert seen and 'FAILED: KilledWorker' in seen[0] and 'see ' not in seen[0], seen
    spec.notebook.parent.mkdir(parents=True); spec.notebook.write_text('{}')     # one that started: its notebook is named
    sweep._summarise([spec], [never], tmp_path / 'res', time.perf_counter(), lines.append)
    assert any(f'notebook: {spec.notebook}' in l for l in lines)


def test_a_run_stopped_just_after_writing_its_record_is_not_failed(tmp_path, monkeypatch):
    from tsbn_nb.record import RunRecord
    spec = plan('smoke', tmp_path, tmp_path / 'res', ['resnet'], [0])[0]
    def finished_then_killed(nb, out, parameters, **kw):
        RunRecord(spec.algorithm, spec.fold, spec.seed, spec.config(), [], metrics={'auc': 0.75}).write(spec.record)
        return 'Kernel died before replying to kernel_info'          # what a stop at the very end looks like
    monkeypatch.setattr(sweep, 'run_notebook', finished_then_killed)
    r = sweep.execute_run(spec)
    assert r['ok'] and r['error'] is None and r['auc'] == 0.75, r
    # a record from before this run (an older attempt) does not make a failed run a success
    os.utime(spec.record, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setattr(sweep, 'run_notebook', lambda *a, **k: 'RuntimeError: boom')
    r = sweep.execute_run(spec)
    assert not r['ok'] and r['error'] == 'RuntimeError: boom', r


def test_a_run_failing_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    "The disk filled during the run (by something else): torch's 'unexpected pos' comes with 'X is full (…)'."
    spec = plan('smoke', tmp_path, tmp_path / 'res', ['resnet'], [0])[0]
    monkeypatch.setattr(sweep, 'run_notebook', lambda *a, **k: 'RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos 42')
    monkeypatch.setattr(sweep, '_free_bytes', lambda folder: 1 << 20)
    r = sweep.execute_run(spec)
    assert not r['ok'] and r['error'].startswith(f'{spec.record.parent} is full (1 MiB free, '), r
    assert r['error'].endswith('the run failed with: RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos 42')
    monkeypatch.setattr(sweep, '_free_bytes', lambda folder: 1 << 40)          # room enough: the error alone
    assert sweep.execute_run(spec)['error'] == 'RuntimeError: [enforce fail at inline_container.cc:672] unexpected pos 42'
