"""What an executed run notebook holds: plain progress (no TqdmWarning, no widget, with or without ipywidgets), the
summary as text as well as JSON, and the loss curves as a CSV next to the record (issue 21, items 2 and 9)."""
import json, os, subprocess, sys
import pandas as pd
import pytest
from tsbn_nb.sweep import find_notebook

NB = find_notebook('run_fold.ipynb')
WIDGET = 'application/vnd.jupyter.widget-view+json'


def _outputs(nb_path):
    nb = json.loads(nb_path.read_text())
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]


@pytest.mark.parametrize('widgets', ['installed', 'hidden'])
def test_run_notebook_has_plain_progress_text_summary_and_curves(widgets, phantom, tmp_path):
    env = dict(os.environ)
    if widgets == 'hidden':                        # a kernel without ipywidgets: tqdm.auto warned "IProgress not found"
        fake = tmp_path / 'no_widgets' / 'ipywidgets'; fake.mkdir(parents=True)
        (fake / '__init__.py').write_text("raise ImportError('ipywidgets hidden by the test')\n")
        env['PYTHONPATH'] = os.pathsep.join([str(fake.parent)] + [p for p in [env.get('PYTHONPATH')] if p])
    out, nb_out = tmp_path / 'res', tmp_path / 'out.ipynb'
    cmd = [sys.executable, '-m', 'papermill', str(NB), str(nb_out), '-k', 'python3', '--no-progress-bar',
           '-p', 'algorithm', 'gm-f-resnet', '-p', 'fold', '0', '-p', 'profile', 'smoke', '-p', 'data', str(phantom),
           '-p', 'out_dir', str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=NB.parent, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    outs = _outputs(nb_out)
    text = json.dumps(outs)
    assert 'TqdmWarning' not in text and 'IProgress' not in text, text[:2000]
    assert not any(WIDGET in o.get('data', {}) for o in outs)
    assert '\r' not in ''.join(''.join(o.get('text', '')) for o in outs if o['output_type'] == 'stream')
    # the training wrote plain epoch lines into the notebook
    assert 'gm-f-resnet fold 0 | finetune epoch 1/1' in text
    # the last output: the summary as JSON and as text (nbconvert's HTML and Markdown keep the text)
    last = outs[-1]['data']
    summary, plain = last['application/json'], ''.join(last['text/plain'])   # nbformat keeps text as a list of lines
    assert summary['healthy'] in (True, False) and 0 <= summary['auc'] <= 1
    assert plain.splitlines()[0] == f"record: {summary['record']}" and f"auc: {summary['auc']}" in plain
    # the curves: one row per epoch of every phase, the record's history as a table
    rec = json.loads((out / 'runs' / 'gm-f-resnet' / 'fold0.json').read_text())
    curves = pd.read_csv(summary['curves'])
    assert summary['curves'] == str((out / 'runs' / 'gm-f-resnet' / 'fold0.curves.csv').resolve())
    assert list(curves.phase) == ['pretext', 'finetune'] and list(curves.epoch) == [1, 1]
    assert curves.loc[0, 'mse'] == pytest.approx(rec['history'][0]['mse']) and curves.loc[1, 'bce'] == pytest.approx(rec['history'][1]['bce'])
