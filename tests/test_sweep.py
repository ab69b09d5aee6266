"""End-to-end: the papermill sweep on the smoke profile (resume, failures, Dask, report)."""
import json
import pytest
from tsbn_nb.sweep import reproduce, plan
from tsbn_nb.cli import main


def test_sweep_resumes_and_reports(phantom, tmp_path):
    out = tmp_path / 'res'
    s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet', 'gm-m-resnet'], folds=[0, 1],
                  workers=2, n_boot=50, log=lambda *a: None)
    assert not s['failed'] and s['ran'] == 4, s
    for spec in plan('smoke', phantom, out, ['resnet', 'gm-m-resnet'], [0, 1]):
        assert spec.notebook.exists() and spec.record.exists()
    for f in ('table2.csv', 'table2.md', 'table2.tex', 'fig4.png', 'fig4.pdf', 'manifest.json', 'table2_fig4.ipynb'):
        assert (out / f).stat().st_size > 0, f
    # a second call finds everything done and runs nothing
    s2 = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet', 'gm-m-resnet'], folds=[0, 1],
                   workers=2, report=False, log=lambda *a: None)
    assert s2['ran'] == 0 and not s2['failed']
    # a killed sweep: one record lost -> only that run is redone
    (out / 'runs' / 'resnet' / 'fold1.json').unlink()
    s3 = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet', 'gm-m-resnet'], folds=[0, 1],
                   workers=1, report=False, log=lambda *a: None)
    assert s3['ran'] == 1 and [r['name'] for r in [*s3['failed']]] == []


def test_failed_run_is_reported_and_others_finish(phantom, tmp_path):
    out = tmp_path / 'res'
    lines = []
    # a GSIM weight of 1e39 overflows the multi-task loss: gm-m-resnet stops with a NaN-loss error at its second
    # step; resnet does not use the weight and is unaffected
    s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet', 'gm-m-resnet'], folds=[0],
                  overrides={'mtl_weight': '1e39'}, workers=2, log=lines.append)
    assert [r['name'] for r in s['failed']] == ['gm-m-resnet/fold0']
    err = s['failed'][0]['error']
    assert 'gm-m-resnet' in err and 'fold 0' in err and 'epoch 1' in err, err
    assert (out / 'runs' / 'resnet' / 'fold0.json').exists()
    assert (out / 'runs' / 'gm-m-resnet' / 'fold0.ipynb').exists()      # the failing notebook is kept to read
    assert s['report'] is None and any('rerun the same command' in l for l in lines)


def test_dask_local_cluster(phantom, tmp_path):
    distributed = pytest.importorskip('distributed')
    out = tmp_path / 'res'
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
         distributed.Client(cl) as client:
        s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0, 1], scheduler=client,
                      report=False, log=lambda *a: None)
    assert s['ran'] == 2 and not s['failed']
    rec = json.loads((out / 'runs' / 'resnet' / 'fold1.json').read_text())
    assert rec['fold'] == 1 and len(rec['predictions']) == rec['n_test']


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(['reproduce', '--data', str(tmp_path / 'missing'), '--profile', 'smoke', '--no-report'])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('tsbn: error:') and 'missing' in err and 'Traceback' not in err


def test_ctrl_c_stops_the_sweep_and_it_resumes(phantom, tmp_path):
    "Issue 11: SIGINT to the foreground process group stops the sweep within seconds, kernels included; a rerun resumes."
    import os, signal, subprocess, sys, time
    import psutil
    out = tmp_path / 'res'
    cmd = [sys.executable, '-c', 'import sys; from tsbn_nb.cli import main; sys.exit(main())', 'reproduce',
           '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0', '1',
           '--workers', '2', '--out', str(out), '--no-report', '-p', 'epochs', '15']
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob('runs/*/*.ckpt/last.pt')):   # training has begun
        time.sleep(0.5)
    assert list(out.glob('runs/*/*.ckpt/last.pt')), 'no run started training'
    family = psutil.Process(proc.pid).children(recursive=True)
    servers = {p.pid for p in family if '_serve()' in ' '.join(p.cmdline())}          # the workers' kernel servers
    assert any(p.ppid() in servers for p in family)                 # and the kernels they forked are running
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)                      # what Ctrl-C in a terminal does
    text, _ = proc.communicate(timeout=60)
    assert time.time() - t0 < 20, time.time() - t0
    assert proc.returncode == 130, text
    assert 'interrupted' in text and 'Rerun the same command to resume' in text, text
    time.sleep(1)
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 'processes left running'
    assert list(out.glob('runs/*/*.ckpt/last.pt'))          # checkpoints kept for the resume
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(list(out.glob('runs/*/fold*.json'))) == 2


def test_settings_clash_is_refused_before_any_run(phantom, tmp_path):
    out = tmp_path / 'res'
    s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], report=False, log=lambda *a: None)
    assert s['ran'] == 1
    import pytest as _pt
    from tsbn_nb.core import TsbnError
    with _pt.raises(TsbnError, match=r'other settings \(epochs\).*--force'):
        reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], overrides={'epochs': 2},
                  report=False, log=lambda *a: None)
    s2 = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], overrides={'epochs': 2},
                   force=True, report=False, log=lambda *a: None)
    assert s2['ran'] == 1 and not s2['failed']


def test_dry_run_prints_the_plan_and_trains_nothing(phantom, tmp_path, capsys):
    out = tmp_path / 'res'
    reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0], report=False, log=lambda *a: None)
    (out / 'runs' / 'resnet' / 'fold1.ckpt').mkdir(parents=True)
    (out / 'runs' / 'resnet' / 'fold1.ckpt' / 'last.pt').write_bytes(b'x')
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', 'tsbn-u',
               '--folds', '0', '1', '--out', str(out), '--dry-run'])
    text = capsys.readouterr().out
    assert rc == 0 and '4 runs: 1 done, 3 to run' in text, text
    assert 'resnet/fold0' in text and 'done' in text and 'resume from its checkpoint' in text
    assert not (out / 'runs' / 'tsbn-u').exists()                 # nothing trained


def test_unreachable_scheduler_is_one_clear_error(phantom, tmp_path):
    pytest.importorskip('distributed')
    from tsbn_nb.core import TsbnError
    with pytest.raises(TsbnError, match=r'cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 10 s'):
        reproduce(phantom, 'smoke', out_dir=tmp_path / 'res', algorithms=['resnet'], folds=[0],
                  scheduler='tcp://127.0.0.1:9', report=False, log=lambda *a: None)


# --- Dask on a cluster (issue 14.4): scheduler file, the worker check, retries and per-run failures ---------------

def _scheduler_file(cluster, tmp_path):
    "What `dask scheduler --scheduler-file PATH` writes (its address is what a Client reads)."
    f = tmp_path / 'scheduler.json'
    f.write_text(json.dumps({'type': 'Scheduler', 'address': cluster.scheduler_address}))
    return f


def test_dask_refuses_at_once_without_gpu_workers(phantom, tmp_path, capsys):
    "The paper profile asks each run for resources={'GPU': 1}: workers without it would leave the sweep hanging."
    distributed = pytest.importorskip('distributed')
    import time
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        sf = _scheduler_file(cl, tmp_path)
        t0 = time.time()
        rc = main(['reproduce', '--data', str(phantom), '--profile', 'paper', '--algorithms', 'resnet', '--folds', '0',
                   '--scheduler-file', str(sf), '--out', str(tmp_path / 'res'), '--no-report'])
        err = capsys.readouterr().err
        assert time.time() - t0 < 30
    assert rc == 2 and err.startswith('tsbn: error:') and 'Traceback' not in err, err
    assert f'dask worker {cl.scheduler_address} --resources GPU=1' in err and 'offers a GPU' in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'res' / 'runs').exists()                  # nothing was submitted or trained


def test_dask_failing_task_is_reported_and_the_others_finish(phantom, tmp_path, monkeypatch):
    "A task that raises on its worker is retried, then reported for its run (with its notebook); the others finish."
    distributed = pytest.importorskip('distributed')
    import tsbn_nb.sweep as sweep
    real, calls = sweep.execute_run, []
    def flaky(spec, threads=None, **kw):
        calls.append((spec.name, threads))
        if spec.fold == 1: raise OSError(f'cannot read {spec.data} on this node')
        return real(spec, threads=threads, **kw)
    monkeypatch.setattr(sweep, 'execute_run', flaky)          # in-process workers call the patched function
    out, lines = tmp_path / 'res', []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cl:
        s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet'], folds=[0, 1, 2],
                      scheduler_file=_scheduler_file(cl, tmp_path), retries=1, log=lines.append)
    assert [r['name'] for r in s['failed']] == ['resnet/fold1'], s['failed']
    f = s['failed'][0]
    assert f['error'].startswith('OSError on a Dask worker: cannot read') and f['notebook'].endswith('runs/resnet/fold1.ipynb')
    assert [n for n, _ in calls].count('resnet/fold1') == 2                 # tried, then retried once
    assert {t for _, t in calls} == {1}                  # 3 threads, 3 CPU runs at once: one thread each
    assert (out / 'runs' / 'resnet' / 'fold0.json').exists() and (out / 'runs' / 'resnet' / 'fold2.json').exists()
    assert s['missing'] == ['resnet/fold1'] and s['report'] is None
    assert any('1 run(s) failed' in l for l in lines) and any('resnet/fold1: OSError' in l for l in lines), lines


def test_dask_scheduler_file_missing_is_one_clear_error(phantom, tmp_path):
    pytest.importorskip('distributed')
    from tsbn_nb.core import TsbnError
    with pytest.raises(TsbnError, match=r'scheduler file .*missing.json not found: start the scheduler with `dask scheduler --scheduler-file'):
        reproduce(phantom, 'smoke', out_dir=tmp_path / 'res', algorithms=['resnet'], folds=[0],
                  scheduler_file=tmp_path / 'missing.json', report=False, log=lambda *a: None)


def test_warm_kernels_train_bit_identical_to_a_process_per_run(phantom, tmp_path):
    "A run on a kernel forked from a warm `KernelServer`, after another run of that server, gives the record a papermill process of its own gives."
    from tsbn_nb.sweep import KernelServer, execute_run, find_notebook
    fresh = plan('smoke', phantom, tmp_path / 'fresh', ['resnet'], [0])[0]
    other, warm = sorted(plan('smoke', phantom, tmp_path / 'warm', ['gm-m-resnet', 'resnet'], [0]),
                         key=lambda s: s.algorithm != 'gm-m-resnet')
    assert execute_run(fresh, threads=1)['ok']
    with KernelServer(find_notebook('run_fold.ipynb'), threads=1) as srv:
        assert all(execute_run(s, threads=1, server=srv)['ok'] for s in (other, warm))   # gm-m-resnet, then resnet
    a, b = (json.loads(s.record.read_text()) for s in (fresh, warm))
    assert (a['algorithm'], b['algorithm']) == ('resnet', 'resnet')
    strip = lambda h: [{k: v for k, v in e.items() if k != 'time_s'} for e in h]
    assert a['predictions'] == b['predictions'] and a['metrics'] == b['metrics'], 'a warm kernel trained differently'
    assert strip(a['history']) == strip(b['history'])
    assert a['provenance']['numerics']['threads'] == b['provenance']['numerics']['threads'] == 1
