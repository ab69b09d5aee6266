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
    # gsim_d = nan makes the GSIM target NaN: gm-f-resnet stops with a NaN-loss error, resnet is unaffected
    s = reproduce(phantom, 'smoke', out_dir=out, algorithms=['resnet', 'gm-f-resnet'], folds=[0],
                  overrides={'gsim_d': 'nan'}, workers=2, log=lines.append)
    assert [r['name'] for r in s['failed']] == ['gm-f-resnet/fold0']
    err = s['failed'][0]['error']
    assert 'gm-f-resnet' in err and 'fold 0' in err and 'epoch 1' in err, err
    assert (out / 'runs' / 'resnet' / 'fold0.json').exists()
    assert (out / 'runs' / 'gm-f-resnet' / 'fold0.ipynb').exists()      # the failing notebook is kept to read
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
