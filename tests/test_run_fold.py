"""End-to-end: run_fold.ipynb under papermill for every algorithm (smoke profile) and the record it writes."""
import json, subprocess, sys
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, f1_score, accuracy_score
from tsbn_nb.train import ALGORITHMS, run_fold
from tsbn_nb.sweep import find_notebook

NB = find_notebook('run_fold.ipynb')


@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_run_fold_notebook(algorithm, phantom, tmp_path):
    out = tmp_path / 'res'
    cmd = [sys.executable, '-m', 'papermill', str(NB), str(tmp_path / 'out.ipynb'), '-k', 'python3',
           '--no-progress-bar', '-p', 'algorithm', algorithm, '-p', 'fold', '1', '-p', 'profile', 'smoke',
           '-p', 'data', str(phantom), '-p', 'out_dir', str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=NB.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / 'runs' / algorithm / 'fold1.json').read_text())
    folds = pd.read_csv(out / 'folds.csv', comment='#')
    held_out = set(folds.loc[folds['fold'] == 1, 'image_id'].astype(str))
    preds = pd.DataFrame(rec['predictions'])
    assert set(preds['image_id'].astype(str)) == held_out and len(preds) == len(held_out) == rec['n_test']
    p, y = preds['prob'].to_numpy(), preds['label'].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    m = rec['metrics']
    yhat = (p >= 0.5).astype(int)
    assert m['accuracy'] == pytest.approx(accuracy_score(y, yhat))
    assert m['f1'] == pytest.approx(f1_score(y, yhat, zero_division=0.0))
    assert m['sensitivity'] == pytest.approx(yhat[y == 1].mean())
    assert m['specificity'] == pytest.approx(1 - yhat[y == 0].mean())
    assert m['youden'] == pytest.approx(m['sensitivity'] + m['specificity'] - 1)
    assert m['auc'] == pytest.approx(roc_auc_score(y, p))
    assert rec['config']['profile'] == 'smoke' and rec['weights'] == 'from scratch'
    assert rec['history'] and all(k in rec['provenance'] for k in ('git_commit', 'data_fingerprint', 'device', 'wall_time_s'))
    assert not (out / 'runs' / algorithm / 'fold1.ckpt').exists()      # checkpoint removed once the record is written


def test_cpu_runs_are_deterministic(phantom, tmp_path):
    a = run_fold('tsbn-u', 0, profile='smoke', data=phantom, out_dir=tmp_path / 'a', progress=False, epochs=2)
    b = run_fold('tsbn-u', 0, profile='smoke', data=phantom, out_dir=tmp_path / 'b', progress=False, epochs=2)
    assert [r['prob'] for r in a['predictions']] == [r['prob'] for r in b['predictions']]
    assert a['history'][-1]['ct'] == b['history'][-1]['ct']
