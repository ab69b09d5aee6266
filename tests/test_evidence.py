"""The committed demo reference (results/demo) as evidence: no global shortcut, the ResNet learns, noise measured,
provenance complete, and a rerun can be verified against it."""
import json, shutil
import pytest
from sklearn.metrics import roc_auc_score
from tsbn_nb.core import project_dir
from tsbn_nb.report import load_runs, PROBE_FILE
from tsbn_nb.verify import verify

REF = project_dir() / 'results' / 'demo'
pytestmark = pytest.mark.skipif(not (REF / 'runs').is_dir(), reason='no committed demo reference')


@pytest.fixture(scope='module')
def reference():
    return load_runs(REF)


def test_the_phantom_has_no_global_shortcut_and_the_resnet_learns(reference):
    probe = json.loads((REF / PROBE_FILE).read_text())
    assert probe['passes'] and abs(probe['auc'] - 0.5) <= 0.06, probe['auc']
    assert probe['n_images'] == 387 and probe['n_malignant'] == 100
    runs, pooled = reference
    res = pooled[pooled.algorithm == 'resnet']
    for seed, d in res.groupby('seed'):                 # every seed's ResNet, pooled over its 5 folds
        assert roc_auc_score(d.label, d.prob) >= 0.70, (seed, roc_auc_score(d.label, d.prob))


def test_three_seeds_of_every_run_with_the_numerics_that_move_results(reference):
    runs, _ = reference
    assert len(runs) == 7 * 5 * 3 and sorted(set(runs.seed)) == [0, 1, 2]
    for f in REF.glob('runs/*/fold*.json'):
        num = json.loads(f.read_text())['provenance']['numerics']
        assert {'cpu_capability', 'torch', 'onednn', 'threads', 'deterministic'} <= set(num), f
    assert (REF / 'evidence.md').read_text().count('seed') >= 3
    noise = (REF / 'noise.csv').read_text()
    assert 'auc_floor' in noise


def test_a_copy_of_the_reference_verifies_exactly(tmp_path):
    out = tmp_path / 'rerun'
    for f in REF.glob('runs/*/fold[0-9].json'):          # the seed-0 runs, as `make reproduce` makes them
        (out / 'runs' / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out / 'runs' / f.parent.name / f.name)
    v = verify(out, REF)
    assert v['verdict'] == 'identical' and v['n_identical'] == 35, v['text']


def test_every_run_of_the_reference_is_healthy(reference):
    runs, pooled = reference
    sick = runs[~runs.healthy]
    assert sick.empty, sick[['algorithm', 'fold', 'seed', 'spread']].to_string()
    for (algo, fold, seed), d in pooled.groupby(['algorithm', 'fold', 'seed']):   # every run tells images apart
        assert d.prob.std(ddof=0) >= 0.05, (algo, fold, seed, d.prob.std(ddof=0))
