"""Bad input end to end: real (tiny) DICOM files decoded through `prepare_data` -> `build_cache`."""
import os, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import pydicom
from tsbn_nb.core import TsbnError, get_config
from tsbn_nb.prepare import prepare_data
from tsbn_nb.datasets import load_dataset
from tsbn_nb.folds import dataset_info, get_folds, make_folds, fold_table, patients_in_several_folds
from tsbn_nb.dicom import save_dicom


def write_dicom(path, lat='L', view='CC', h=96, w=48, pixels=True, seed=0):
    "A small 12-bit mammogram-like DICOM (the library's `save_dicom`): a bright half-disc against the chest wall on side `lat`; `pixels=False`: no Pixel Data."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    x0 = 0 if lat == 'L' else w - 1
    breast = (yy - h / 2) ** 2 / (h / 2.2) ** 2 + (xx - x0) ** 2 / (w * 0.8) ** 2 < 1
    arr = np.where(breast, 1500 + rng.integers(0, 800, (h, w)), 20).astype(np.uint16)
    save_dicom(path, arr, bits_stored=12, laterality=lat, view=view)
    if not pixels:                     # a header-only file, as some archives export
        ds = pydicom.dcmread(path)
        for k in ('PixelData', 'Rows', 'Columns', 'SamplesPerPixel', 'PhotometricInterpretation', 'BitsAllocated',
                  'BitsStored', 'HighBit', 'PixelRepresentation'): delattr(ds, k)
        ds.save_as(path, enforce_file_format=True)
    return path


def make_inbreast(root, n_patients=6):
    "An INbreast-layout folder: half the patients benign (BI-RADS 2), half malignant (4b), 2 images each, one BI-RADS 3."
    root = Path(root); (root / 'AllDICOMs').mkdir(parents=True)
    lines = ['Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads']
    iid = 5000
    for p in range(n_patients):
        pat = f'{p + 1:016x}'
        for view, fv in (('CC', 'CC'), ('MLO', 'ML')):
            iid += 1
            lat = 'L' if p % 2 else 'R'
            b = '2' if p < n_patients // 2 else '4b'
            if p == 0 and view == 'MLO': b = '3'
            lines.append(f'removed;removed;{lat};{view};201001;{iid};2;{b}')
            write_dicom(root / 'AllDICOMs' / f'{iid}_{pat}_MG_{lat}_{fv}_ANON.dcm', lat, view, seed=iid)
    (root / 'INbreast.csv').write_text('\n'.join(lines) + '\n')
    return root


def dicom_of(root, image_id):
    return next((Path(root) / 'AllDICOMs').glob(f'{image_id}_*.dcm'))


@pytest.fixture
def cfg():
    return get_config('smoke')


@pytest.fixture
def inb(tmp_path):
    return make_inbreast(tmp_path / 'inb')


def test_prepare_data_aligned(inb, cfg, tmp_path):
    df, images = prepare_data(inb, cfg, cache_dir=tmp_path / 'cache', progress=False, workers=1)
    assert len(df) == 11 and images.shape == (11, cfg.height, cfg.width)     # 12 images, one BI-RADS 3 excluded
    assert df.label.tolist() == [0] * 5 + [1] * 6 and df.attrs['n_failed'] == 0
    im = np.asarray(images, dtype=np.float32)
    assert im.min() >= 0 and im.max() <= 1 and (im.reshape(11, -1).max(1) > 0.5).all()
    # the preprocessing turns every breast chest-wall-left: more tissue in the left half than in the right
    assert (im[:, :, : cfg.width // 2].mean((1, 2)) > im[:, :, cfg.width // 2:].mean((1, 2))).all()
    df2, images2 = prepare_data(inb, cfg, cache_dir=tmp_path / 'cache', progress=False, workers=1)   # from the cache
    assert df2.image_id.tolist() == df.image_id.tolist() and np.array_equal(np.asarray(images2), np.asarray(images))


def test_default_cache_dir_and_env(inb, cfg, tmp_path, monkeypatch):
    monkeypatch.delenv('TSBN_CACHE', raising=False)
    df, _ = prepare_data(inb, cfg, progress=False, workers=1)
    assert Path(df.attrs['cache_dir']) == inb / '.tsbn_cache' and any((inb / '.tsbn_cache').iterdir())
    monkeypatch.setenv('TSBN_CACHE', str(tmp_path / 'envcache'))
    df, _ = prepare_data(inb, cfg, progress=False, workers=1)
    assert Path(df.attrs['cache_dir']) == tmp_path / 'envcache' and any((tmp_path / 'envcache').iterdir())


def _corrupt(kind, path):
    if kind == 'truncated':
        b = path.read_bytes(); path.write_bytes(b[: len(b) // 2])
    elif kind == 'no-pixel-data':
        write_dicom(path, pixels=False)
    elif kind == 'not-dicom':
        path.write_bytes(f'{path.name} is not a DICOM file at all'.encode() * 10)
    elif kind == 'empty':
        path.write_bytes(b'')


@pytest.mark.parametrize('kind', ['truncated', 'no-pixel-data', 'not-dicom', 'empty'])
def test_bad_dicom_error_and_skip(kind, inb, cfg, tmp_path):
    bad = dicom_of(inb, 5004)
    _corrupt(kind, bad)
    with pytest.raises(TsbnError) as e:
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c1', progress=False, workers=1)
    assert bad.name in str(e.value), str(e.value)
    with pytest.warns(UserWarning, match=bad.name):
        df, images = prepare_data(inb, cfg, cache_dir=tmp_path / 'c2', skip_bad=True, progress=False, workers=1)
    assert '5004' not in df.image_id.tolist() and len(df) == len(images) == 10
    assert df.attrs['n_failed'] == 1 and bad.name in df.attrs['failed'][0][0]


def test_missing_dicom_error_and_skip(inb, cfg, tmp_path):
    dicom_of(inb, 5009).unlink()
    with pytest.raises(TsbnError, match='File Name 5009'):
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    with pytest.warns(UserWarning, match='5009'):
        df, images = prepare_data(inb, cfg, cache_dir=tmp_path / 'c', skip_bad=True, progress=False, workers=1)
    assert len(df) == len(images) == 10 and df.attrs['missing'] == ['5009']


def test_missing_metadata_file(inb, cfg, tmp_path):
    (inb / 'INbreast.csv').unlink()
    with pytest.raises(TsbnError, match='neither INbreast.csv / INbreast.xls nor manifest.csv'):
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)


def test_unknown_birads(inb, cfg, tmp_path):
    t = inb / 'INbreast.csv'; t.write_text(t.read_text().replace(';5007;2;4b', ';5007;2;0'))
    with pytest.raises(TsbnError, match=r"row 8 \(File Name 5007\): BI-RADS value '0'"):
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)


def test_class_missing_after_skipping(tmp_path, cfg):
    root = make_inbreast(tmp_path / 'inb', n_patients=2)     # malignant: only patient 2's two images
    for iid in (5003, 5004): _corrupt('not-dicom', dicom_of(root, iid))
    with pytest.warns(UserWarning), pytest.raises(TsbnError, match='0 malignant'):
        prepare_data(root, cfg, cache_dir=tmp_path / 'c', skip_bad=True, progress=False, workers=1)


def test_manifest_end_to_end(tmp_path, cfg):
    d = tmp_path / 'man'; (d / 'img').mkdir(parents=True)
    rows = ['path,label,patient_id']
    for i in range(6):
        write_dicom(d / 'img' / f'{i}.dcm', lat='L' if i % 2 else 'R', seed=i)
        rows.append(f'img/{i}.dcm,{"malignant" if i >= 3 else "benign"},P{i // 2}')
    (d / 'manifest.csv').write_text('\n'.join(rows) + '\n')
    df, images = prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    assert df.label.tolist() == [0, 0, 0, 1, 1, 1] and images.shape == (6, cfg.height, cfg.width)
    (d / 'manifest.csv').write_text('path,label\nimg/0.dcm,0\nimg/1.dcm,yes\n')
    with pytest.raises(TsbnError, match="line 3: 'yes'"):
        prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)


def test_phantom_info_and_folds(phantom, tmp_path):
    df = load_dataset(phantom)
    info = dataset_info(phantom)
    assert f"images:      {df.attrs['n_total']}" in info and 'no patient in two folds: yes' in info
    folds = get_folds(df, tmp_path / 'folds.csv')
    assert patients_in_several_folds(df, folds) == []
    t = pd.read_csv(tmp_path / 'folds.csv', comment='#')
    assert len(t) == len(df) and set(t.fold) == set(range(5))


@pytest.mark.skipif(os.environ.get('TSBN_FAST_TESTS') == '1', reason='full-size phantom skipped (TSBN_FAST_TESTS=1)')
def test_full_phantom_matches_paper_counts(tmp_path):
    "The default phantom has INbreast's composition: 410 images, 115 patients, 287 / 100, 23 BI-RADS 3."
    from tsbn_nb.phantom import make_phantom
    out = make_phantom(tmp_path / 'full', progress=False, workers=1)
    info = dataset_info(out)
    for s in ('images:      410', 'patients:    115', 'benign:      287', 'malignant:   100',
              'excluded:    23 (BI-RADS 3: 23)', 'no patient in two folds: yes'):
        assert s in info, info
    df = load_dataset(out)
    t = fold_table(df, make_folds(df))
    assert (abs(t.malignant - 20) <= 2).all() and (abs(t.benign - 287 / 5) <= 3).all(), t


def test_rewritten_pixels_same_size_and_mtime_are_not_stale(inb, cfg, tmp_path):
    "Pixels rewritten at the same size with the mtime put back (cp -p, rsync -a): new fingerprint, new entry, new pixels."
    df0, im0 = prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    f = dicom_of(inb, 5004); st = os.stat(f)
    ds = pydicom.dcmread(f); a = ds.pixel_array.copy(); a[a > 100] = 4000; ds.PixelData = a.tobytes(); ds.save_as(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(f).st_size, os.stat(f).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    df1, im1 = prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    assert df1.attrs['fingerprint'] != df0.attrs['fingerprint'] and df1.attrs['cache_key'] != df0.attrs['cache_key']
    i = df1.image_id.tolist().index('5004')
    ref = df1.drop(index=i).index
    assert np.abs(np.asarray(im1[i], np.float32) - np.asarray(im0[i], np.float32)).max() > 0.1
    assert np.array_equal(np.asarray(im1)[ref], np.asarray(im0)[ref])
    # and a dataset copied elsewhere (same bytes) keeps its fingerprint
    import shutil
    copy = shutil.copytree(inb, tmp_path / 'copy', ignore=shutil.ignore_patterns('.tsbn_cache'))
    assert load_dataset(copy).attrs['fingerprint'] == df1.attrs['fingerprint']


def test_duplicate_manifest_rows(tmp_path, cfg):
    "imgs/x.dcm, ./imgs/x.dcm and the absolute path are one image: an error naming the lines, or --dedupe keeps one."
    d = tmp_path / 'man'; (d / 'imgs').mkdir(parents=True)
    rows = ['path,label']
    for i in range(6):
        write_dicom(d / 'imgs' / f'{i}.dcm', lat='L' if i % 2 else 'R', seed=i)
        rows.append(f'imgs/{i}.dcm,{int(i >= 3)}')
    rows += ['./imgs/0.dcm,0', f'{d}/imgs/4.dcm,1']
    (d / 'manifest.csv').write_text('\n'.join(rows) + '\n')
    with pytest.raises(TsbnError) as e:
        prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    msg = str(e.value)
    assert 'line 8 (./imgs/0.dcm) is the same file as line 2 (imgs/0.dcm)' in msg and 'dedupe=True' in msg, msg
    assert f'line 9 ({d}/imgs/4.dcm) is the same file as line 6 (imgs/4.dcm)' in msg, msg
    with pytest.warns(UserWarning, match='keeping the first'):
        df, images = prepare_data(d, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1, dedupe=True)
    assert len(df) == len(images) == 6 and df.path.nunique() == 6 and df.attrs['n_duplicates'] == 2
    with pytest.warns(UserWarning, match='keeping the first'):
        assert 'duplicates:  2' in dataset_info(d, n_folds=2, dedupe=True)
    # a byte-identical copy, seen for the first time (not in the hash store: found by the cache build)
    import shutil
    shutil.copy(d / 'imgs' / '5.dcm', d / 'imgs' / 'copy5.dcm')
    (d / 'copy.csv').write_text('\n'.join(rows[:7] + ['imgs/copy5.dcm,1']) + '\n')
    with pytest.raises(TsbnError, match=r'line 8 \(imgs/copy5.dcm\) is an identical copy of line 7 \(imgs/5.dcm\)'):
        prepare_data(d / 'copy.csv', cfg, cache_dir=tmp_path / 'c2', progress=False, workers=1)
    with pytest.warns(UserWarning, match='keeping the first'):
        df2, images2 = prepare_data(d / 'copy.csv', cfg, cache_dir=tmp_path / 'c3', progress=False, workers=1, dedupe=True)
    assert df2.path.tolist() == df.path.tolist() and np.array_equal(np.asarray(images2), np.asarray(images))


def test_data_info_on_a_binary_file_is_one_line(inb, tmp_path, capsys):
    "`tsbn data info one.dcm` (or any binary file): one line saying what to give, no _csv.Error traceback."
    from tsbn_nb.cli import main
    for f in (dicom_of(inb, 5001), tmp_path / 'blob.bin'):
        if f.suffix == '.bin': f.write_bytes(bytes(range(256)) * 4)
        assert main(['data', 'info', str(f)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count('\n') == 0 and 'is not a CSV manifest' in err and 'Traceback' not in err, err
        assert 'give an INbreast folder, a folder with manifest.csv, or a .csv file' in err, err


def test_fake_jpeg2000_is_diagnosed(inb, cfg, tmp_path):
    "A header saying JPEG 2000 over pixel data that is not: diagnosed as such (not 'truncated'); the skip warning names the file once."
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless
    f = dicom_of(inb, 5004)
    ds = pydicom.dcmread(f)
    ds.PixelData = encapsulate([b'\x00\x00garbage, not a codestream' * 20]); ds['PixelData'].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(f, enforce_file_format=True)
    with pytest.raises(TsbnError) as e:
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=False, workers=1)
    assert 'not a JPEG 2000 stream' in str(e.value) and 'truncated' not in str(e.value), str(e.value)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        prepare_data(inb, cfg, cache_dir=tmp_path / 'c', skip_bad=True, progress=False, workers=1)
    msgs = [str(x.message) for x in w if f.name in str(x.message)]
    assert len(msgs) == 1 and msgs[0].count(f.name) == 1, msgs


def test_unknown_hashes_are_not_duplicates(tmp_path):
    "Regression: hashes not known yet arrive as None or as pandas' NaN; two of them are not 'identical copies'."
    import numpy as np
    from tsbn_nb.datasets import _drop_duplicates
    files = []
    for i in range(3):
        f = tmp_path / f'{i}.dcm'; f.write_bytes(bytes([i]) * 10); files.append(str(f))
    df = pd.DataFrame(dict(path=files, label=[0, 1, 0], content_hash=[np.nan, None, np.nan]))
    out = _drop_duplicates(df, lambda i: f'row {i}', 'test', dedupe=False)
    assert len(out) == 3


def test_run_fold_path_shows_preprocessing_off_a_terminal(inb, cfg, tmp_path, capsys):
    "run_fold passes progress=None: preprocessing (11 images: BI-RADS 3 is excluded) is reported in a few plain stderr lines when stderr is a log."
    prepare_data(inb, cfg, cache_dir=tmp_path / 'c', progress=None, workers=1)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith('preprocessing mammograms')]
    assert lines[0] == 'preprocessing mammograms: 11 images' and lines[-1].startswith('preprocessing mammograms: 11/11 (100%), ')
    assert len(lines) == 5 and '\r' not in err


def test_mask_outside_reaches_the_cache(inb, tmp_path):
    "The Config's mask_outside is part of the preprocessing: its own cache entry and key; off keeps the old key."
    from tsbn_nb.preprocess import PreprocParams
    off = prepare_data(inb, get_config('smoke'), cache_dir=tmp_path / 'c', progress=False, workers=1)[0]
    on = prepare_data(inb, get_config('smoke', mask_outside=True), cache_dir=tmp_path / 'c', progress=False, workers=1)[0]
    assert off.attrs['preproc'] == PreprocParams(64, 32).key() == '931b0c012f907832'    # the key before the field existed
    assert on.attrs['preproc'] == PreprocParams(64, 32, mask_outside=True).key() != off.attrs['preproc']
    assert on.attrs['cache_key'] != off.attrs['cache_key'] and on.attrs['fingerprint'] == off.attrs['fingerprint']
