"""Run health end to end: a dead run is flagged in its record, by `tsbn run` and `tsbn reproduce`, marked in Table II,
left out of the statistics and the noise floor, and listed by `tsbn verify`."""
import json, shutil
import pandas as pd
from tsbn_nb.cli import main
from tsbn_nb.report import make_report
from tsbn_nb.testing import write_fake_runs


def _collapse(path, p=0.52):
    "Make the record at `path` a dead run: every probability p ± 0.001, no stored health (as an old record)."
    rec = json.loads(path.read_text()); rec.pop('health', None); rec['metrics'] = {}
    for i, pr in enumerate(rec['predictions']): pr['prob'] = p + 0.001 * (i % 3 - 1)
    path.write_text(json.dumps(rec))


def test_a_collapsed_record_is_marked_in_the_report_and_listed_by_verify(tmp_path, capsys):
    ref, rerun = tmp_path / 'ref', tmp_path / 'rerun'
    write_fake_runs(ref, seeds=(0, 1, 2), n_images=20)
    _collapse(ref / 'runs' / 'gm-f-resnet' / 'fold2-seed1.json')
    ps = make_report(ref, n_boot=50)
    md = ps['table2_md'].read_text()
    assert '| GM-F-ResNet† |' in md and '| CR-F-ResNet |' in md, md
    assert 'GM-F-ResNet, 1 of 15 runs: gm-f-resnet/fold2-seed1: constant predictions (spread 0.0008' in md
    assert r'GM-F-ResNet\textsuperscript{\textdagger}' in ps['table2_tex'].read_text()
    par = ps['stats_paragraph'].read_text()
    assert 'Not compared, no claim made: GM-F-ResNet (1 unhealthy run).' in par and 'GM-F-ResNet 0.' not in par, par
    st = pd.read_csv(ps['stats_csv'], index_col='method')
    assert pd.isna(st.loc['GM-F-ResNet', 'auc_p']) and st.loc['TSBN-R', 'auc_p'] < 1
    nz = pd.read_csv(ps['noise_csv'], index_col='method')
    assert not nz.loc['GM-F-ResNet', 'compared'] and nz.loc['TSBN-R', 'compared']
    assert nz.loc['GM-F-ResNet', 'n_seeds_healthy'] == 2 and nz.loc['ResNet', 'df'] == 2
    assert 'with 13 degrees of freedom' in ps['evidence_md'].read_text()           # 6 algorithms × 2 + GM-F-ResNet's 1
    assert '| pooled (7 algorithms) |  | 13 |' in ps['noise_md'].read_text()
    # a rerun of seed 0 with a dead run of its own: verify lists both, each with its reason
    for f in ref.glob('runs/*/fold[0-9].json'):
        (rerun / 'runs' / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, rerun / 'runs' / f.parent.name / f.name)
    _collapse(rerun / 'runs' / 'cr-f-resnet' / 'fold1.json', p=0.3)
    capsys.readouterr()
    rc = main(['verify', str(rerun), str(ref)])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert 'Unhealthy runs in the rerun (1; ' in out and 'cr-f-resnet/fold1: constant predictions' in out, out
    assert 'Unhealthy runs in the reference (1; ' in out and 'gm-f-resnet/fold2-seed1: constant predictions' in out, out


def test_a_diverged_run_is_flagged_by_its_record_and_tsbn_run(phantom, tmp_path, capsys):
    "lr 1e6 on the smoke profile: BCE near 1e14 (finite: no NaN error), every probability 1.0, exit 0."
    out = tmp_path / 'res'
    rc = main(['run', '--data', str(phantom), '--profile', 'smoke', '--algorithm', 'resnet', '--fold', '0',
               '--out', str(out), '-p', 'lr', '1e6', '-p', 'epochs', '2'])
    printed = capsys.readouterr().out
    assert rc == 0
    rec = json.loads((out / 'runs' / 'resnet' / 'fold0.json').read_text())
    h = rec['health']
    assert not h['healthy'] and h['loss_exploded'] and h['constant'] and not h['nan'], h   # loss_flat: either way
    assert h['spread'] < 0.05 and rec['metrics']['auc'] == 0.5
    assert 'UNHEALTHY resnet/fold0: loss exploded (bce ' in printed and 'constant predictions (spread ' in printed, printed


def test_tsbn_reproduce_names_the_unhealthy_run(phantom, tmp_path, capsys):
    "The sweep: the run notebook prints the line, the summary prints one line per unhealthy run."
    out = tmp_path / 'res'
    rc = main(['reproduce', '--data', str(phantom), '--profile', 'smoke', '--algorithms', 'resnet', '--folds', '0',
               '--out', str(out), '-p', 'lr', '1e6', '--no-report'])
    printed = capsys.readouterr().out
    assert rc == 0
    lines = [l for l in printed.splitlines() if l.startswith('UNHEALTHY')]
    assert len(lines) == 1 and lines[0].startswith('UNHEALTHY resnet/fold0: loss exploded (bce '), printed
    nb = json.loads((out / 'runs' / 'resnet' / 'fold0.ipynb').read_text())
    streams = ''.join(''.join(o.get('text', '')) for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))
    assert 'UNHEALTHY resnet/fold0: loss exploded' in streams
