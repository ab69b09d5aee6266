"""End-to-end: run_fold.ipynb under papermill for every algorithm (smoke profile) and the record it writes."""
import json, subprocess, sys
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, f1_score, accuracy_score
from tsbn_nb.registry import ALGORITHMS
from tsbn_nb.train import run_fold
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


def test_guards_before_and_after_training(phantom, tmp_path):
    "Issue 11: leftovers of a killed process, records of other settings, locks, unwritable output, bad settings."
    import os, time
    from tsbn_nb.core import TsbnError
    from tsbn_nb.train import RunLock, record_path
    out = tmp_path / 'res'
    rec_p = record_path(out, 'resnet', 0)
    # a checkpoint temp file left by `kill -9` during a write: the run finishes and cleans it up
    (rec_p.with_suffix('.ckpt')).mkdir(parents=True)
    (rec_p.with_suffix('.ckpt') / '.last.pt.x1y2.tmp').write_bytes(b'partial')
    rec = run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False)
    assert rec_p.exists() and not rec_p.with_suffix('.ckpt').exists()
    # a finished record of other settings is not replaced without force, and the refusal comes before training
    t0 = time.perf_counter()
    with pytest.raises(TsbnError, match=r'other settings \(epochs\).*force=True'):
        run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False, epochs=2)
    assert time.perf_counter() - t0 < 5
    rec2 = run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False, epochs=2, force=True)
    assert rec2['config']['epochs'] == 2 and json.loads(rec_p.read_text())['config']['epochs'] == 2
    # two processes on the same run: the second stops at once, naming the holder
    with RunLock(rec_p.with_suffix('.lock')):
        with pytest.raises(TsbnError, match='being trained by pid'):
            run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False, epochs=2)
    # an unwritable output folder is found before training
    if os.geteuid() != 0:
        ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
        with pytest.raises(TsbnError, match='cannot write'):
            run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=ro, progress=False)
    with pytest.raises(TsbnError, match='cannot write'):
        run_fold('resnet', 0, profile='smoke', data=phantom, out_dir='/proc/tsbn-results', progress=False)
    for bad, msg in [({'epochs': 0}, 'epochs=0 is out of range'), ({'lr': -1}, 'lr=-1.0 is out of range'),
                     ({'epochs': 2.7}, 'give an integer'), ({'threshold': 2}, 'threshold=2.0 is out of range')]:
        with pytest.raises(TsbnError, match=msg):
            run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=tmp_path / 'x', progress=False, **bad)


def test_validation_split_is_grouped_and_evaluated(phantom, tmp_path):
    "Issue 10: val_fraction > 0 used to crash (all labels against the validation probabilities only)."
    rec = run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=tmp_path, progress=False, val_fraction=0.25)
    assert rec['n_val'] > 0
    folds = pd.read_csv(tmp_path / 'folds.csv', comment='#')
    assert rec['n_train'] + rec['n_val'] == int((folds['fold'] != 0).sum())     # carved from the training folds only
    assert 'val_auc' in rec['history'][-1] and 0 <= rec['history'][-1]['val_accuracy'] <= 1


def test_papermill_booleans_are_parsed_like_the_command_line(phantom, tmp_path):
    "Issue 11: `-p force false` used to mean True (bool('false')); it must refuse to replace another setting's record."
    out = tmp_path / 'res'
    run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False)
    cmd = [sys.executable, '-m', 'papermill', str(NB), str(tmp_path / 'o.ipynb'), '-k', 'python3', '--no-progress-bar',
           '-p', 'algorithm', 'resnet', '-p', 'fold', '0', '-p', 'profile', 'smoke', '-p', 'data', str(phantom),
           '-p', 'out_dir', str(out), '-p', 'force', 'false', '-y', 'overrides: {epochs: 2}']
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=NB.parent)
    assert r.returncode != 0 and 'other settings (epochs)' in r.stderr, r.stderr[-2000:]
    assert json.loads((out / 'runs' / 'resnet' / 'fold0.json').read_text())['config']['epochs'] == 1


def test_plain_progress_off_a_terminal(phantom, tmp_path):
    "Issue 14.3: `tsbn run` with stderr in a file or pipe (SLURM, nohup, CI) prints one plain line per epoch as it goes."
    import re
    cmd = [sys.executable, '-m', 'tsbn_nb.cli', 'run', '--data', str(phantom), '--profile', 'smoke', '--algorithm',
           'gm-f-resnet', '--fold', '0', '--out', str(tmp_path / 'res'), '-p', 'epochs', '2']
    r = subprocess.run(cmd, capture_output=True, text=True)           # stderr is a pipe: not a terminal
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith('gm-f-resnet fold 0 |')]
    assert [re.sub(r' \|.*', '', l.split('| ', 1)[1]) for l in lines] == \
        ['pretext epoch 1/1', 'finetune epoch 1/2', 'finetune epoch 2/2'], r.stderr[-2000:]
    assert re.search(r'\| mse \d+\.\d{4} \| \d+\.\d s$', lines[0]) and re.search(r'\| bce \d+\.\d{4} \| ', lines[1])
    assert '\r' not in r.stderr and '%|' not in r.stderr               # no progress bar in a log file
