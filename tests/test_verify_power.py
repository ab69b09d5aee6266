"""`tsbn verify` on copies of the committed reference: a copy of seed 0 reads REPRODUCED EXACTLY, each injected fault
fails for every algorithm, each reference seed judged against the other two is no false alarm, and a subset says which
part it judged. Records only (no training); the reference itself is never modified."""
import shutil
import pytest
from tsbn_nb.core import project_dir
from tsbn_nb.cli import main
from tsbn_nb.registry import ALGORITHMS
from tsbn_nb.report import RUN_FILE
from tsbn_nb.verify import FAULTS, inject_fault, load_results, verify

REF = project_dir() / 'results' / 'demo'
pytestmark = pytest.mark.skipif(not (REF / 'runs').is_dir(), reason='no committed demo reference')


def _copy(dst, keep):
    "The reference's records whose seed passes `keep`, copied to `dst`."
    for f in REF.glob('runs/*/fold*.json'):
        if keep(int(RUN_FILE.match(f.name).group(2) or 0)):
            (dst / 'runs' / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst / 'runs' / f.parent.name / f.name)
    return dst


@pytest.fixture(scope='module')
def reference():
    return load_results(REF)


def test_a_copy_of_seed_0_reads_reproduced_exactly(tmp_path, reference, capsys):
    out = _copy(tmp_path / 'rerun', lambda s: s == 0)
    v = verify(out, reference)
    assert v['verdict'] == 'identical' and v['n_identical'] == 35, v['text']
    assert "the reference's seeds 1, 2: not rerun, so not judged" in v['text']
    assert main(['verify', str(out), str(REF)]) == 0
    assert 'VERDICT: REPRODUCED EXACTLY' in capsys.readouterr().out


@pytest.mark.parametrize('fault', FAULTS)
def test_every_fault_fails_for_every_algorithm(tmp_path, reference, fault):
    missed = []
    for i, a in enumerate(ALGORITHMS):
        out = inject_fault(REF, tmp_path / a, fault, a, fold=i % 5, rng=i)
        v = verify(out, reference)
        if v['verdict'] in ('identical', 'consistent'): missed.append(f"{a}: {v['text']}")
    assert not missed, '\n'.join(missed)


def test_a_swap_fails_for_every_pair(tmp_path, reference):
    for i, a in enumerate(ALGORITHMS):
        for b in ALGORITHMS[i + 1:]:
            v = verify(inject_fault(REF, tmp_path / f'{a}-{b}', 'swap', a, partner=b), reference)
            assert v['verdict'] == 'failed' and len(v['problems']) == 10, (a, b, v['text'])


def test_no_false_alarm_on_the_references_own_seeds(tmp_path):
    "Each reference seed is a genuine draw: judged against the other two it must read CONSISTENT (3 of 3)."
    alarms = []
    for s in (0, 1, 2):
        v = verify(_copy(tmp_path / f'seed{s}', lambda t: t == s), _copy(tmp_path / f'without{s}', lambda t: t != s))
        assert v['n_identical'] == 0 and not v['problems'] and len(v['tests']) > 300, v['text']
        if v['verdict'] != 'consistent': alarms.append(v['text'])
    assert not alarms, '\n\n'.join(alarms)


def test_a_subset_says_what_it_judged_and_is_not_reproduced(tmp_path, reference, capsys):
    out = tmp_path / 'one'
    (out / 'runs' / 'resnet').mkdir(parents=True)
    shutil.copy(REF / 'runs' / 'resnet' / 'fold0.json', out / 'runs' / 'resnet')
    v = verify(out, reference)
    assert v['verdict'] == 'failed' and len(v['missing']) == 34 and 'REPRODUCED' not in v['text'], v['text']
    assert v['text'].splitlines()[1].startswith('Judged: seed 0 × 7 algorithms × 5 folds (35 runs expected, 1 found)')
    assert main(['verify', str(out), str(REF)]) == 1
    assert "VERDICT: FAILED: NOT THE REFERENCE'S EXPERIMENT" in capsys.readouterr().out
