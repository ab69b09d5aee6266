"""The final model end to end: train-final (library and CLI), predict, Grad-CAM, fold ensembles and bad input."""
import json, shutil, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

from tsbn_nb.cli import main
from tsbn_nb.core import TsbnError, get_config
from tsbn_nb.prepare import prepare_data
from tsbn_nb.preprocess import PreprocParams
from tsbn_nb.nets import ResNetClassifier, build_classifier
from tsbn_nb.predict import GradCAM, UnreadableFilesWarning, predict
from tsbn_nb.model import load_model, save_model_dir, train_final
from tsbn_nb.testing import cam_peak, toy_lesion_images, train_toy

torch.set_num_threads(1)


def _reference_probs(model_dir, data, cache_dir):
    "Probabilities of the saved classifier on the training cache's images, computed directly in Python: {abs path: p}."
    meta = json.loads((model_dir / 'model.json').read_text())
    cfg = get_config(meta['config']['profile'], **{k: v for k, v in meta['config'].items() if k != 'profile'})
    df, images = prepare_data(data, cfg, cache_dir=cache_dir, progress=False)
    clf = ResNetClassifier(meta['arch'], pretrained='none')
    clf.load_state_dict(torch.load(model_dir / 'model.pt', weights_only=True))
    clf.eval()
    with torch.no_grad():
        p = torch.sigmoid(clf(torch.from_numpy(np.asarray(images, np.float32))[:, None])).double().numpy()
    return dict(zip(df.path, p)), df


def _by_path(preds: pd.DataFrame) -> dict:
    return {str(Path(f).resolve()): p for f, p in zip(preds.file, preds.probability)}


def _fake_results(path):
    from tsbn_nb.report import make_report
    from tsbn_nb.testing import write_fake_runs
    write_fake_runs(path, algorithms=['resnet', 'tsbn-u'], n_folds=3, n_images=12)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        make_report(path, n_boot=50)
    return path


def test_train_final_then_predict_reproduces_python(phantom, tmp_path):
    cache = None                                          # the default cache beside the data, shared with other tests
    out = train_final(phantom, 'tsbn-u', 'smoke', tmp_path / 'model', cache_dir=cache, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ['MODEL_CARD.md', 'model.json', 'model.pt']
    meta = json.loads((out / 'model.json').read_text())
    cfg = get_config('smoke')
    assert meta['preprocessing'] == PreprocParams.from_config(cfg).to_dict()
    assert meta['algorithm'] == 'tsbn-u' and meta['arch'] == 'resnet18' and meta['threshold'] == 0.5
    assert meta['config'] == cfg.to_dict() and meta['weights_source'] == 'from scratch'
    ref, df = _reference_probs(out, phantom, cache)
    td = meta['training_data']
    assert td['n_images'] == len(df) and td['fingerprint'] == df.attrs['fingerprint'] and td['synthetic']
    assert td['n_benign'] + td['n_malignant'] == len(df)
    assert not (out / '.checkpoint').exists()
    card = (out / 'MODEL_CARD.md').read_text()
    for s in ('not a medical device', 'BI-RADS is a proxy label', 'Synthetic-data models are demonstrations only',
              'No cross-validated performance'):
        assert s in card
    # predict over the phantom folder (INbreast.csv is skipped, the cache folder is hidden)
    preds = predict(out, [phantom])
    assert len(preds) == len(list((phantom / 'AllDICOMs').glob('*.dcm'))) and (preds.error == '').all()
    assert any(Path(s).name == 'INbreast.csv' for s in preds.attrs['skipped'])
    got = _by_path(preds)
    common = [p for p in ref if p in got]
    assert len(common) == len(ref)                        # every training image was predicted
    assert np.allclose([got[p] for p in common], [ref[p] for p in common], atol=1e-5, rtol=0)
    assert set(preds.predicted_class) <= {'benign', 'malignant'}
    assert ((preds.probability >= 0.5) == (preds.predicted_class == 'malignant')).all()
    # an existing model is not overwritten by accident
    with pytest.raises(TsbnError, match='already holds a model'):
        train_final(phantom, 'tsbn-u', 'smoke', out, cache_dir=cache, progress=False)


def test_cli_train_final_predict_and_explain(phantom, tmp_path, capsys):
    res = _fake_results(tmp_path / 'results')
    m, cache = tmp_path / 'm', None
    rc = main(['train-final', '--data', str(phantom), '--algorithm', 'resnet', '--profile', 'smoke', '--out', str(m),
               '--results', str(res), '-p', 'epochs', '2'])
    assert rc == 0 and 'model written to' in capsys.readouterr().out
    meta = json.loads((m / 'model.json').read_text())
    assert meta['config']['epochs'] == 2 and meta['cv_performance']['algorithm'] == 'resnet'
    t2 = pd.read_csv(res / 'table2.csv').set_index('algorithm')
    st = pd.read_csv(res / 'stats.csv').set_index('algorithm')
    card = (m / 'MODEL_CARD.md').read_text()
    assert f"{t2.loc['resnet', 'auc_mean']:.1f} ± {t2.loc['resnet', 'auc_std']:.1f}" in card
    assert f"{st.loc['resnet', 'auc']:.1f} [{st.loc['resnet', 'auc_lo']:.1f}, {st.loc['resnet', 'auc_hi']:.1f}]" in card
    assert 'measured on other data' in card               # the fake runs' fingerprint is not the phantom's
    csv, maps = tmp_path / 'preds.csv', tmp_path / 'maps'
    rc = main(['predict', str(m), str(phantom / 'AllDICOMs'), '--out', str(csv), '--explain', str(maps)])
    out = capsys.readouterr().out
    assert rc == 0 and 'predictions written to' in out and 'probability' in out
    table = pd.read_csv(csv, keep_default_na=False)
    assert list(table.columns[:5]) == ['file', 'laterality', 'view', 'probability', 'predicted_class']
    assert set(table.laterality) <= {'L', 'R'} and set(table.view) <= {'CC', 'MLO'}
    ref, _ = _reference_probs(m, phantom, cache)
    got = _by_path(table)
    assert np.allclose([got[p] for p in ref], list(ref.values()), atol=1e-5, rtol=0)
    pngs = sorted(maps.glob('*.png'))
    assert len(pngs) == len(table) and all(Path(h).exists() for h in table.heatmap)


def _random_model_dir(path, seed=0):
    cfg = get_config('smoke')
    torch.manual_seed(seed)
    clf = build_classifier(cfg).eval()
    return save_model_dir(path, clf, cfg, 'resnet', dict(path='x', kind='manifest', fingerprint='0', n_images=0)), clf


def test_fold_ensemble_averages_probabilities(phantom, tmp_path):
    runs = tmp_path / 'runs' / 'resnet'
    cfg = get_config('smoke')
    models = []
    for k in range(2):
        torch.manual_seed(k)
        clf = build_classifier(cfg).eval(); models.append(clf)
        runs.mkdir(parents=True, exist_ok=True)
        torch.save({'algorithm': 'resnet', 'fold': k, 'config': cfg.to_dict(), 'classifier': clf.state_dict()},
                   runs / f'fold{k}.pt')
    with pytest.raises(TsbnError, match='subfolders resnet; give one of them'):
        load_model(runs.parent)
    pr = load_model(runs)
    assert len(pr.models) == 2 and pr.params == PreprocParams.from_config(cfg) and pr.meta['files'] == ['fold0.pt', 'fold1.pt']
    files = sorted((phantom / 'AllDICOMs').glob('*.dcm'))[:3]
    preds = predict(pr, files, explain_dir=tmp_path / 'maps')
    from tsbn_nb.predict import load_image
    x = torch.from_numpy(np.stack([load_image(f, pr.params)[0] for f in files]))[:, None]
    with torch.no_grad(): want = torch.stack([torch.sigmoid(m(x)) for m in models]).mean(0).double().numpy()
    assert np.allclose(preds.probability, want, atol=1e-6)
    # fold models trained with other settings are not mixed
    torch.save({'algorithm': 'resnet', 'fold': 2, 'config': get_config('smoke', lr=0.1).to_dict(),
                'classifier': models[0].state_dict()}, runs / 'fold2.pt')
    with pytest.raises(TsbnError, match='lr differ'):
        load_model(runs)


def test_gradcam_peak_is_on_the_lesion():
    # layer4 has stride 32: at 128x128 its map is 4x4 (at 64x32 it would be 2x1, too coarse to localise)
    model = train_toy()
    x, y, centres = toy_lesion_images(30, seed=123)
    maps, logits = GradCAM(model)(torch.from_numpy(x))
    assert ((logits > 0).numpy() == y.astype(bool)).mean() >= 0.9
    pos = np.flatnonzero(y)
    radius, half_stride = 5, 16
    # the peak must fall inside the disc's bounding box dilated by half a layer4 cell
    hits = [np.abs(np.array(cam_peak(maps[i].numpy())) - centres[i]).max() <= radius + half_stride for i in pos]
    assert np.mean(hits) >= 0.7, f'peak on the lesion for only {np.mean(hits):.0%} of the malignant images'
    # chance level of the same criterion (a random peak) is far lower: the test measures localisation
    rng = np.random.default_rng(0)
    chance = np.mean([np.abs(rng.integers(0, 128, 2) - centres[i]).max() <= radius + half_stride for i in pos for _ in range(20)])
    assert chance < 0.25


def test_bad_inputs_are_named_errors(tmp_path):
    mdir, _ = _random_model_dir(tmp_path / 'model')
    txt = tmp_path / 'notes.txt'; txt.write_text('hello')
    with pytest.raises(TsbnError, match=r'notes\.txt: not a DICOM or an image file .*supported'):
        predict(mdir, [txt])
    bad = tmp_path / 'broken.dcm'; bad.write_bytes(b'\0' * 128 + b'DICM' + b'\x02\x00\x10\x00garbage')
    with pytest.raises(TsbnError, match=r'broken\.dcm.*(DICOM|Pixel Data).*'):
        predict(mdir, [bad])
    with pytest.raises(TsbnError, match=r'missing\.dcm: no such file or folder'):
        predict(mdir, [tmp_path / 'missing.dcm'])
    with pytest.raises(TsbnError, match='does not exist'):
        predict(tmp_path / 'no-model', [txt])
    # an output that cannot be written is refused before any image is read (issue 11)
    with pytest.raises(TsbnError, match='cannot write to /proc'):
        predict(mdir, [txt], out_csv='/proc/tsbn/predictions.csv')
    with pytest.raises(TsbnError, match='is a folder'):
        predict(mdir, [txt], out_csv=tmp_path)
    with pytest.raises(TsbnError, match='batch_size=0'):
        predict(mdir, [txt], batch_size=0)
    # model directories of another format version or with missing files
    for name, edit, msg in [
            ('v2', lambda d: (d / 'model.json').write_text(json.dumps({**json.loads((d / 'model.json').read_text()),
                                                                       'format_version': 2})), 'format version 2'),
            ('nopt', lambda d: (d / 'model.pt').unlink(), 'no model.pt'),
            ('nojson', lambda d: (d / 'model.json').unlink(), 'no model.json'),
            ('swapped', lambda d: shutil.copy(_random_model_dir(tmp_path / 'other', seed=5)[0] / 'model.pt', d / 'model.pt'),
             'SHA-256 differs')]:
        d = tmp_path / name
        shutil.copytree(mdir, d); edit(d)
        with pytest.raises(TsbnError, match=msg):
            load_model(d)


def test_folder_with_bad_files_predicts_the_rest(phantom, tmp_path, capsys):
    mdir, _ = _random_model_dir(tmp_path / 'model')
    folder = tmp_path / 'scans'; (folder / 'sub').mkdir(parents=True)
    good = sorted((phantom / 'AllDICOMs').glob('*.dcm'))[:2]
    for f in good: shutil.copy(f, folder / 'sub' / f.name)
    (folder / 'truncated.dcm').write_bytes(good[0].read_bytes()[:400])
    (folder / 'fake.png').write_bytes(b'not a png at all')
    (folder / 'readme.txt').write_text('not an image: skipped, not a failure')
    with pytest.warns(UnreadableFilesWarning, match='2 of 4 files could not be read'):
        preds = predict(mdir, [folder], out_csv=tmp_path / 'p.csv')
    assert len(preds) == 4 and (preds.error == '').sum() == 2
    failed = preds[preds.error != '']
    assert sorted(Path(f).name for f in failed.file) == ['fake.png', 'truncated.dcm']
    assert all(Path(f).name in e for f, e in zip(failed.file, failed.error)) and failed.probability.isna().all()
    table = pd.read_csv(tmp_path / 'p.csv', keep_default_na=False)
    assert (table.error != '').sum() == 2
    # the CLI prints the predictions, lists the failures and exits with 1
    rc = main(['predict', str(mdir), str(folder)])
    cap = capsys.readouterr()
    assert rc == 1 and 'failures: 2 file(s)' in cap.err and 'truncated.dcm' in cap.err and 'fake.png' in cap.err
    assert all(f.name in cap.out for f in good)
    rc = main(['predict', str(tmp_path / 'model'), str(tmp_path / 'nothing-here')])
    assert rc == 2 and 'nothing-here: no such file or folder' in capsys.readouterr().err


def test_results_must_hold_the_report(phantom, tmp_path):
    with pytest.raises(TsbnError, match='table2.csv not found'):
        train_final(phantom, 'resnet', 'smoke', tmp_path / 'm', results=tmp_path, progress=False)
    assert not (tmp_path / 'm').exists()                  # it failed before training
