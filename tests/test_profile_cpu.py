"""The `cpu` profile (real mammograms on a 2-core laptop): its settings, its ImageNet ResNet18 start (cache, download
plan, offline error; never the network), and the loud from-scratch warning of a real-data run's record and Table II."""
import urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
import torchvision
from tsbn_nb import nets
from tsbn_nb.core import PROFILES, TsbnError, get_config
from tsbn_nb.nets import ResNetClassifier, plan_weights, prepare_weights

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    "An empty TORCH_HOME, and a fetch that fails the test if anything tries to download."
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    def no_network(*a, **k): raise AssertionError('a test tried to download weights')
    monkeypatch.setattr(nets, '_fetch', no_network)
    return home


def test_cpu_profile_settings():
    c, d = get_config('cpu'), get_config('demo')
    assert list(PROFILES) == ['paper', 'demo', 'smoke', 'cpu']
    assert (c.backbone, c.pretrained, c.mask_outside, c.w_pos_rule) == ('resnet18', 'imagenet1k_v1', True, 'train_ratio')
    assert c.height * c.width > d.height * d.width and c.height == 2 * c.width      # larger than the demo, 2:1 like the paper
    assert c.epochs >= d.epochs and c.pretext_epochs >= d.pretext_epochs
    # the pretext networks stay small (the demo's widths), the U-Net one level deeper for the larger input
    assert (c.unet_base, c.rdn_G0, c.rdn_D, c.rdn_C, c.rdn_G, c.decoder_base) == (8, 8, 3, 3, 8, 8)
    assert c.height // 2 ** c.unet_depth >= 8


def test_cpu_profile_weights_same_rules_as_paper(torch_home, monkeypatch):
    "Empty cache: a download is planned (announced, hash-checked); offline: the error names file, folder, way out."
    cfg = get_config('cpu')
    plan = plan_weights(cfg.backbone, cfg.pretrained)
    assert plan.action == 'download' and plan.spec.file == 'resnet18-f37072fd.pth'
    assert plan.path == torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    def offline(*a, **k): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(nets, '_fetch', offline)
    with pytest.raises(TsbnError) as e:
        prepare_weights(cfg, progress=False, log=lambda s: None)
    for part in ('resnet18-f37072fd.pth', str(torch_home / 'hub' / 'checkpoints'), '-p pretrained none'):
        assert part in str(e.value)


def test_cpu_profile_uses_cached_resnet18(torch_home, monkeypatch):
    "A (synthetic) torchvision resnet18 state dict under the expected name is loaded, with the grey ImageNet normalisation."
    monkeypatch.setattr(nets, '_file_sha256', lambda p: 'f37072fd' + '0' * 56)   # the cache's hash check: take it as real
    path = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    cfg = get_config('cpu')
    clf = ResNetClassifier(cfg.backbone, cfg.pretrained)
    assert clf.weights_plan.action == 'cache'
    assert clf.weights_source.startswith('imagenet1k_v1 (torchvision resnet18-f37072fd.pth)')
    assert clf.weights_info['input_norm']['mean'] == pytest.approx(0.4488, abs=5e-4)


def _films(d: Path, n=20):
    "A manifest of n tiny 8-bit PGM films (real-data layout, not the phantom), half malignant."
    from PIL import Image
    (d / 'img').mkdir(parents=True)
    rng, rows = np.random.default_rng(0), ['path,label,patient_id,laterality,view']
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        a = np.where(((yy - 32) / 27) ** 2 + (xx / 38) ** 2 <= 1, 150, 20) + rng.integers(0, 30, (64, 64))
        a[8:12, 40:52] = 245                                    # a film label in the breast's box
        Image.fromarray(a.astype(np.uint8)).save(d / 'img' / f'f{i:02d}.pgm')
        rows.append(f'img/f{i:02d}.pgm,{i % 2},P{i // 2:02d},L,MLO')
    (d / 'manifest.csv').write_text('\n'.join(rows) + '\n')
    return d / 'manifest.csv'


def test_cpu_profile_from_scratch_on_real_data_warns(tmp_path):
    "A cpu-profile run on non-synthetic data with `-p pretrained none`: its record says from scratch, Table II shouts."
    from tsbn_nb.train import run_fold
    from tsbn_nb.report import load_runs, table2_caption
    man = _films(tmp_path / 'films')
    rec = run_fold('resnet', 0, profile='cpu', data=man, out_dir=tmp_path / 'res', cache_dir=tmp_path / 'c',
                   progress=False, save_model=False, pretrained='none', height=32, width=16, epochs=1, n_folds=2)
    assert rec['profile'] == 'cpu' and rec['weights'] == 'from scratch' and rec['config']['mask_outside'] is True
    assert 'phantom' not in rec['dataset']
    runs, _ = load_runs(tmp_path / 'res')
    cap = table2_caption(runs)
    assert 'Profile: cpu' in cap
    assert 'WARNING: real mammograms with models trained from random weights' in cap, cap
