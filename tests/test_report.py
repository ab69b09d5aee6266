"""End-to-end: the Table II / Fig. 4 report notebook under papermill, on fake run records."""
import json
from pathlib import Path
import pandas as pd
import pytest
from tsbn_nb.core import TsbnError
from tsbn_nb.report import load_runs
from tsbn_nb.registry import ALGORITHMS, DISPLAY_NAMES
from tsbn_nb.testing import write_fake_runs

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / 'nbs' / 'experiments' / 'table2_fig4.ipynb'
OUTPUTS = ['table2.csv', 'table2.md', 'table2.tex', 'table2_vs_paper.csv', 'table2_vs_paper.md', 'table2_vs_paper.tex',
           'fig4.png', 'fig4.pdf', 'stats.csv', 'stats.md', 'stats_paragraph.md', 'manifest.json']


def _papermill(tmp_path, results, **params):
    papermill = pytest.importorskip('papermill')
    out = tmp_path / 'table2_fig4.ipynb'
    papermill.execute_notebook(str(NB), str(out), parameters=dict(results_dir=str(results), **params),
                               kernel_name='python3', progress_bar=False, cwd=str(NB.parent))
    return json.loads(out.read_text())


def test_notebook_is_parameterised_and_clean():
    nb = json.loads(NB.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    tagged = [c for c in code if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1
    src = ''.join(tagged[0]['source'])
    import re
    for name, typ in (('results_dir', 'str'), ('allow_mixed', 'bool'), ('n_boot', 'int')):
        assert re.search(rf'^{name}: {typ} = ', src, re.M), name         # typed: papermill --help-notebook shows it
    assert all(not c.get('outputs') and c.get('execution_count') is None for c in code)


def test_report_notebook_on_fake_records(tmp_path):
    res = tmp_path / 'results'
    write_fake_runs(res, n_folds=5, n_images=40)
    nb = _papermill(tmp_path, res, n_boot=200)
    for name in OUTPUTS:
        assert (res / name).exists() and (res / name).stat().st_size > 0, name
    assert (res / 'fig4.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (res / 'fig4.pdf').read_bytes()[:5] == b'%PDF-'
    t2 = pd.read_csv(res / 'table2.csv', index_col='method')
    assert list(t2.index) == [DISPLAY_NAMES[a] for a in ALGORITHMS]
    runs, _ = load_runs(res)                     # the table is the fold mean of the records' metrics, in %
    for a in ALGORITHMS:
        m = runs[runs.algorithm == a]
        assert t2.loc[DISPLAY_NAMES[a], 'accuracy_mean'] == pytest.approx(100 * m.accuracy.mean(), abs=1e-3)
        assert t2.loc[DISPLAY_NAMES[a], 'f1_std'] == pytest.approx(100 * m.f1.std(ddof=1), abs=1e-3)
    assert 'numbers are not expected to match the paper' in (res / 'table2.md').read_text()
    man = json.loads((res / 'manifest.json').read_text())
    assert man['n_runs'] == 35 and man['missing_algorithms'] == []
    # the executed notebook shows the tables (markdown) and Fig. 4 (png) inline
    outs = [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    md = ''.join(''.join(o.get('data', {}).get('text/markdown', '')) for o in outs)
    assert '| TSBN-R |' in md and 'ours / paper' in md and "DeLong's paired test" in md
    assert any('image/png' in o.get('data', {}) for o in outs)


def test_report_notebook_refuses_mixed_runs(tmp_path):
    res = tmp_path / 'results'
    write_fake_runs(res, n_folds=5, n_images=20)
    write_fake_runs(res, algorithms=['tsbn-u'], n_folds=5, n_images=20, epochs=9)
    papermill = pytest.importorskip('papermill')
    with pytest.raises(papermill.PapermillExecutionError, match='different settings'):
        _papermill(tmp_path, res, n_boot=50)
    assert not (res / 'table2.md').exists()
    with pytest.raises(TsbnError, match='config.epochs'): load_runs(res)
    _papermill(tmp_path, res, n_boot=50, allow_mixed=True)
    assert 'WARNING: runs with different settings (config.epochs)' in (res / 'table2.md').read_text()


def test_a_failing_report_leaves_the_previous_one_and_says_why(tmp_path):
    "Issue 11: --n-boot 0 and mixed settings fail before anything is written, with the whole message."
    from tsbn_nb.sweep import run_report
    res = tmp_path / 'results'
    write_fake_runs(res, algorithms=['resnet', 'tsbn-u'], n_folds=2, n_images=20)
    run_report(res, n_boot=20, log=lambda *a: None)
    before = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
    with pytest.raises(TsbnError, match='n_boot=0'):
        run_report(res, n_boot=0, log=lambda *a: None)
    write_fake_runs(res, algorithms=['simclr'], n_folds=2, n_images=20, epochs=9)      # other settings mixed in
    with pytest.raises(TsbnError) as e:
        run_report(res, n_boot=20, log=lambda *a: None)
    msg = str(e.value)
    assert 'different settings:' in msg and 'config.epochs' in msg and 'allow_mixed' in msg, msg   # every line
    after = {p.name: p.read_bytes() for p in res.iterdir() if p.is_file()}
    assert after == before                                         # the previous report is untouched
