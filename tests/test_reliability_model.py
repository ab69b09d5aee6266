"""Issue 23, the model and training side: each case a one-line refusal or the right behaviour, through the command
line where a user meets it (smoke profile, the shared small phantom)."""
import json, shutil, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from tsbn_nb.cli import main
from tsbn_nb.core import TsbnError, get_config
from tsbn_nb.model import save_model_dir
from tsbn_nb.nets import build_classifier
from tsbn_nb.train import record_path, run_fold

torch.set_num_threads(1)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('tsbn: error: '), err      # one line, no traceback
    return err[0]


def _model_dir(path):
    cfg = get_config('smoke')
    torch.manual_seed(0)
    return save_model_dir(path, build_classifier(cfg).eval(), cfg, 'resnet',
                          dict(path='x', kind='manifest', fingerprint='0', n_images=0))


def test_6_amp_on_the_cpu_is_refused_and_records_say_what_ran(phantom, tmp_path, capsys):
    "fp16 on the CPU used to be ignored (predictions bit-identical to fp32) while the record said amp fp16."
    for amp in ('fp16', 'bf16'):
        rc = main(['run', '--data', str(phantom), '--profile', 'smoke', '--algorithm', 'resnet', '--fold', '0',
                   '--out', str(tmp_path / amp), '-p', 'amp', amp, '-p', 'device', 'cpu'])
        line = _error_line(capsys)
        assert rc == 2 and f'amp={amp} cannot run on cpu' in line and '-p amp none' in line, line
        assert not (tmp_path / amp / 'runs').exists()                          # refused before anything was done
    rec = run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=tmp_path / 'a', progress=False, device='cpu')
    assert rec['config']['amp'] == 'auto' and rec['provenance']['precision'] == 'fp32'


def test_8_an_edited_model_json_is_refused(phantom, tmp_path, capsys):
    "Input and preprocessing height 64 -> 128 by hand used to move the predictions without a warning."
    m = _model_dir(tmp_path / 'model')
    img = sorted((phantom / 'AllDICOMs').glob('*.dcm'))[0]
    assert main(['predict', str(m), str(img)]) == 0
    capsys.readouterr()
    meta = json.loads((m / 'model.json').read_text())
    meta['input']['height'] = meta['preprocessing']['height'] = 128
    (m / 'model.json').write_text(json.dumps(meta, indent=1))
    assert main(['predict', str(m), str(img)]) == 2
    line = _error_line(capsys)
    assert 'model.json was changed after the model was saved' in line and 'retrain' in line, line


def test_15_train_final_refuses_a_results_or_data_folder(phantom, tmp_path, capsys):
    res = tmp_path / 'results'
    run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=res, progress=False)
    for out, says in [(res, "is a reproduction's results folder"), (phantom, "is the training data's folder"),
                      (phantom / 'AllDICOMs', "is inside the training data's folder")]:
        before = sorted(p.name for p in out.iterdir())
        rc = main(['train-final', '--data', str(phantom), '--algorithm', 'resnet', '--profile', 'smoke', '--out', str(out)])
        assert rc == 2 and says in _error_line(capsys)
        assert sorted(p.name for p in out.iterdir()) == before                 # nothing written


def test_16_predict_gives_advice_it_can_follow(tmp_path, capsys):
    m = _model_dir(tmp_path / 'model')
    blank = tmp_path / 'blank.png'
    Image.fromarray(np.full((80, 40), 9, np.uint16)).save(blank)
    assert main(['predict', str(m), str(blank)]) == 2
    err = capsys.readouterr().err                                             # the list of the files that failed
    assert err.startswith('tsbn: error: none of the 1 files') and 'Traceback' not in err and 'no contrast' in err, err
    assert not any(s in err for s in ('skip_bad', '--skip-bad', 'DICOM viewer')), err
    rc = main(['predict', str(m), str(blank), '--explain', str(blank)])       # --explain names a file
    line = _error_line(capsys)
    assert rc == 2 and f'--explain {blank} is a file: give a folder' in line and 'File exists' not in line, line
    assert '(--out)' not in line


def test_17_a_corrupt_checkpoint_is_set_aside_and_kept(phantom, tmp_path):
    "A corrupt last.pt used to fail every rerun until deleted by hand; set-aside files were deleted at the end."
    out = tmp_path / 'res'
    ck = record_path(out, 'resnet', 0).with_suffix('.ckpt')
    ck.mkdir(parents=True)
    (ck / 'last.pt').write_bytes(b'PK\x03\x04 a checkpoint cut by a full disk')
    with pytest.warns(UserWarning, match=r'cannot be read .*moved to last\.unreadable\.pt, this run starts afresh'):
        rec = run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False)
    assert rec['n_test'] > 0 and record_path(out, 'resnet', 0).exists()
    assert sorted(p.name for p in ck.iterdir()) == ['last.unreadable.pt']     # kept for the user, not deleted
    # a checkpoint of other settings is set aside too, and also kept after the run finishes
    torch.save({'algorithm': 'resnet', 'fold': 0, 'config': get_config('smoke', lr=0.5).to_dict(), 'done': [0, 1],
                'history': [], 'scaler': {}, 'models': {}, 'opts': {}}, ck / 'last.pt')
    with pytest.warns(UserWarning, match=r'other settings \(epochs, lr\): moved to last\.other-settings\.pt'):
        run_fold('resnet', 0, profile='smoke', data=phantom, out_dir=out, progress=False, force=True, epochs=2)
    assert sorted(p.name for p in ck.iterdir()) == ['last.other-settings.pt', 'last.unreadable.pt']
