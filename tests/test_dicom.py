"""End-to-end checks of reading (`tsbn_nb.dicom`), preprocessing (`tsbn_nb.preprocess`) and the cache (`tsbn_nb.cache`) that are too slow or too process-heavy for the notebooks."""
import os, shutil, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
from pydicom.uid import RLELossless, JPEGLSLossless, JPEG2000Lossless
from tsbn_nb.core import TsbnError
from tsbn_nb.cache import HASH_STORE, build_cache, cache_key
from tsbn_nb.preprocess import PreprocParams, preprocess
from tsbn_nb.dicom import read_mammogram, save_dicom


def _breast(h, w, side, rng, level=9000, bits=14):
    "Stored values of a synthetic breast (half ellipse on `side`) with noise, uint16."
    yy, xx = np.ogrid[:h, :w]
    cx = w - 1 if side == 'right' else 0
    inside = (yy - h / 2) ** 2 / (0.45 * h) ** 2 + (xx - cx) ** 2 / (0.65 * w) ** 2 <= 1
    a = np.where(inside, level, 150).astype(np.int32) + rng.integers(0, 300, (h, w))
    return np.clip(a, 0, 2 ** bits - 1).astype(np.uint16)


def _dataset(d: Path, n=8, h=300, w=240, **kw):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        side = 'right' if i % 2 else 'left'
        out.append(str(save_dicom(d / f'{i}.dcm', _breast(h + 8 * i, w, side, rng), bits_stored=14,
                                  laterality='R' if side == 'right' else 'L', view='CC' if i % 3 else 'MLO', **kw)))
    return out


def test_full_size_image(tmp_path):
    "A 3328x4084 14-bit uncompressed DICOM (INbreast's larger size) decodes and preprocesses to 768x384, chest wall left."
    p = save_dicom(tmp_path / 'big.dcm', _breast(4084, 3328, 'right', np.random.default_rng(1)), bits_stored=14,
                   laterality='R', view='CC')
    pp = PreprocParams(768, 384)
    img, meta = read_mammogram(p)                            # its speed is measured in bench/ (results.md, section 3)
    assert img.shape == (4084, 3328) and meta['laterality'] == 'R'
    out = preprocess(img, meta['laterality'], pp, chest_wall=meta['chest_wall'])
    assert out.shape == (768, 384) and out.dtype == np.float32
    assert out[:, :20].mean() > out[:, -20:].mean()          # chest wall moved to the left


def test_monochrome1_and_compressed_match(tmp_path):
    "Inverted MONOCHROME1 storage and lossless compression give the same cached images as plain MONOCHROME2."
    rng = np.random.default_rng(2)
    raws = [_breast(200, 160, s, rng) for s in ('left', 'right', 'right')]
    sets = {}
    for name, kw, f in [('plain', {}, lambda a: a),
                        ('mono1', dict(photometric='MONOCHROME1'), lambda a: (2 ** 14 - 1 - a).astype(np.uint16)),
                        ('rle', dict(transfer_syntax=RLELossless), lambda a: a),
                        ('jls', dict(transfer_syntax=JPEGLSLossless), lambda a: a),
                        ('j2k', dict(transfer_syntax=JPEG2000Lossless), lambda a: a)]:
        sets[name] = [str(save_dicom(tmp_path / name / f'{i}.dcm', f(a), bits_stored=14, **kw))
                      for i, a in enumerate(raws)]
    pp = PreprocParams(48, 24)
    ref = np.asarray(build_cache(sets['plain'], ['L', 'R', 'R'], pp, tmp_path / 'c', workers=0).images)
    for name in ('mono1', 'rle', 'jls', 'j2k'):
        got = build_cache(sets[name], ['L', 'R', 'R'], pp, tmp_path / 'c', workers=2, progress=False)
        np.testing.assert_allclose(np.asarray(got.images, np.float32), ref.astype(np.float32), atol=2e-3, err_msg=name)


def _slow_build_in_child(files, cache, marker):
    "Start a build of `files` in another process, slowed to 0.3 s per image; return it once 2 images are done."
    child = textwrap.dedent(f"""
        import sys, time, tsbn_nb.cache as m
        real = m._cache_one
        def slow(job):
            r = real(job); open({str(marker)!r}, 'a').write('x'); time.sleep(0.3); return r
        m._cache_one = slow
        try: m.build_cache({files!r}, None, m.PreprocParams(32, 16), {str(cache)!r}, workers=0)
        except m.TsbnError as e: print(e, file=sys.stderr); sys.exit(2)
    """)
    proc = subprocess.Popen([sys.executable, '-c', child], stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (marker.exists() and len(marker.read_text()) >= 2):
        if proc.poll() is not None or time.time() - t0 > 30:
            proc.kill(); raise AssertionError('the child build did not start')
        time.sleep(0.05)
    return proc


def test_killed_build_leaves_no_half_cache(tmp_path):
    "SIGKILL in the middle of a build leaves no cache entry; the next build completes and ignores the leftovers."
    files = _dataset(tmp_path / 'd', n=6, h=120, w=90)
    cache = tmp_path / 'cache'
    proc = _slow_build_in_child(files, cache, tmp_path / 'started')
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None: proc.kill()
    key = cache_key(files, [None] * len(files), PreprocParams(32, 16))
    assert not (cache / key).exists()
    left = [p.name for p in cache.iterdir() if p.name != HASH_STORE]
    assert left and all(n.startswith('.tmp-') for n in left)
    c = build_cache(files, None, PreprocParams(32, 16), cache, workers=0)
    assert c.key == key and not c.reused and len(c) == 6
    assert build_cache(files, None, PreprocParams(32, 16), cache).reused
    # the next build removed the killed build's temporary folder (its process is gone)
    assert sorted(p.name for p in cache.iterdir() if p.name != HASH_STORE) == [key]


def test_cache_deleted_during_build(tmp_path):
    "`rm -r cache` while another process builds: that build stops with a message, publishes nothing; the next works."
    files = _dataset(tmp_path / 'd', n=6, h=120, w=90)
    cache = tmp_path / 'cache'
    proc = _slow_build_in_child(files, cache, tmp_path / 'started')
    try:
        shutil.rmtree(cache)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None: proc.kill()
    assert proc.returncode == 2 and 'was deleted while' in err, err
    assert not cache.exists() or not [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith('.')]
    c = build_cache(files, None, PreprocParams(32, 16), cache, workers=0)
    assert len(c) == 6 and not c.reused and build_cache(files, None, PreprocParams(32, 16), cache).reused


def test_concurrent_builders_agree(tmp_path):
    "Two processes building the same entry at once both succeed and leave one entry."
    files = _dataset(tmp_path / 'd', n=6, h=160, w=120)
    code = (f"import tsbn_nb.cache as m; c = m.build_cache({files!r}, None, m.PreprocParams(32, 16), "
            f"{str(tmp_path / 'cache')!r}, workers=0); print(c.key, float(c.images.astype('f4').sum()))")
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    assert [p.name for p in (tmp_path / 'cache').iterdir() if p.name != HASH_STORE] == [outs[0][0]]


def test_recovered_file_rebuilds(tmp_path, monkeypatch):
    "A cached failure is retried on reuse; when the file reads now the entry is rebuilt with it."
    files = _dataset(tmp_path / 'd', n=3, h=120, w=90)
    import tsbn_nb.cache as m
    real = m.read_mammogram
    def flaky(path, voi=True):
        if str(path) == files[1]: raise TsbnError(f'{path}: simulated missing decoder')
        return real(path, voi)
    monkeypatch.setattr(m, 'read_mammogram', flaky)
    with pytest.warns(UserWarning, match='simulated missing decoder'):
        c1 = build_cache(files, None, PreprocParams(32, 16), tmp_path / 'c', skip_bad=True, workers=0)
    assert c1.ok.tolist() == [True, False, True]
    monkeypatch.setattr(m, 'read_mammogram', real)           # "the decoder is installed now"
    c2 = build_cache(files, None, PreprocParams(32, 16), tmp_path / 'c', workers=0)
    assert c2.key == c1.key and not c2.reused and c2.ok.all() and len(c2) == 3
    assert [p.name for p in (tmp_path / 'c').iterdir() if p.name != HASH_STORE] == [c2.key]


def _film_pgm(path: Path, n=512, label=True):
    "An 8-bit binary PGM film scan (mini-MIAS style): a left breast on a grainy base, a bright label in its box's corner."
    from PIL import Image
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:n, :n]
    breast = ((yy - n / 2) / (0.42 * n)) ** 2 + (xx / (0.6 * n)) ** 2 <= 1
    a = np.where(breast, 150 + rng.integers(0, 40, (n, n)), 20 + rng.integers(0, 8, (n, n)))
    lab = np.zeros((n, n), bool)
    if label: lab[int(0.12 * n):int(0.17 * n), int(0.44 * n):int(0.57 * n)] = True
    a[lab] = 245
    Image.fromarray(a.astype(np.uint8)).save(path)
    assert path.read_bytes()[:2] == b'P5'
    return breast, lab


def test_film_label_masked_through_the_cache(tmp_path):
    "A PGM film's label inside the crop box: kept by default, the background level with mask_outside; breast untouched."
    p = tmp_path / 'mdb001.pgm'
    breast, lab = _film_pgm(p)
    img = read_mammogram(p)[0]
    box = build_cache([p], ['L'], PreprocParams(128, 64), tmp_path / 'c').meta[0]['box']
    r0, r1, c0, c1 = box
    assert lab[r0:r1, c0:c1].sum() == lab.sum()     # the crop keeps the whole label
    size = (r1 - r0, c1 - c0)                                                     # the resize is then the identity
    plain = build_cache([p], ['L'], PreprocParams(*size), tmp_path / 'c')
    masked = build_cache([p], ['L'], PreprocParams(*size, mask_outside=True), tmp_path / 'c')
    assert masked.key != plain.key and tuple(masked.meta[0]["box"]) == tuple(box)
    L, B = lab[r0:r1, c0:c1], breast[r0:r1, c0:c1]
    a0, a1 = np.asarray(plain.images[0], np.float32), np.asarray(masked.images[0], np.float32)
    bg = masked.meta[0]['background']
    assert abs(bg - 24 / 255) < 3 / 255                                          # the film base, not 0
    assert a0[L].min() > 0.9                                                      # label there without the mask
    np.testing.assert_array_equal(a1[L], np.float16(bg).astype(np.float32))      # all of it background with it
    np.testing.assert_array_equal(a1[B], a0[B])                                   # every breast pixel as read
    np.testing.assert_array_equal(a0, np.asarray(img[r0:r1, c0:c1], np.float16).astype(np.float32))


@pytest.mark.parametrize('progress', [True, None, False])
def test_progress_lines_off_a_terminal(tmp_path, capsys, progress):
    "stderr not a terminal (pytest captures it): a start line and one line per quarter, no carriage returns."
    files = _dataset(tmp_path / 'd', n=8, h=60, w=48)
    build_cache(files, None, PreprocParams(32, 16), tmp_path / 'c', workers=2, progress=progress)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith('preprocessing mammograms')]
    if progress is False:
        assert lines == []
        return
    assert '\r' not in err and lines[0] == 'preprocessing mammograms: 8 images'
    import re
    got = [re.fullmatch(r'preprocessing mammograms: (\d+)/8 \((\d+)%\), \d+\.\d s', l).groups() for l in lines[1:]]
    assert got == [('2', '25'), ('4', '50'), ('6', '75'), ('8', '100')]
    capsys.readouterr()
    build_cache(files, None, PreprocParams(32, 16), tmp_path / 'c', workers=2, progress=progress)   # reused: silent
    assert 'preprocessing mammograms' not in capsys.readouterr().err


def test_bad_display_window_through_the_cache(tmp_path, monkeypatch):
    "WindowWidth 0 / WindowCenter 'abcd' in a dataset: the build's error lists each file with its value (no 'unexpected "
    "ValueError/TypeError'), names the command line's flag to leave them out, and skip_bad leaves them out."
    files = _dataset(tmp_path / 'd', n=4)
    zero = str(save_dicom(tmp_path / 'd' / 'zero.dcm', _breast(300, 240, 'left', np.random.default_rng(1)), bits_stored=14,
                          WindowCenter=8000, WindowWidth=0))
    text = save_dicom(tmp_path / 'd' / 'text.dcm', _breast(300, 240, 'left', np.random.default_rng(2)), bits_stored=14,
                      WindowCenter=1234, WindowWidth=4000)
    text.write_bytes(text.read_bytes().replace(b'1234.0', b'abcd  '))
    monkeypatch.setenv('TSBN_COMMAND', 'run')
    with pytest.raises(TsbnError) as e:
        build_cache(files + [zero, str(text)], None, PreprocParams(64, 32), tmp_path / 'c', workers=2, progress=False)
    msg = str(e.value)
    assert f"{zero}: WindowWidth 0 is not a display window" in msg and f"{text}: WindowCenter 'abcd' is not a number" in msg, msg
    assert 'unexpected' not in msg and '--skip-bad' in msg and 'skip_bad=True' not in msg, msg
    with pytest.warns(UserWarning, match='WindowWidth 0'):
        c = build_cache(files + [zero, str(text)], None, PreprocParams(64, 32), tmp_path / 'c', workers=0, progress=False, skip_bad=True)
    assert len(c) == 4 and c.ok.tolist() == [True] * 4 + [False, False]
