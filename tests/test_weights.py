"""ImageNet weights for the downstream ResNet: cache, download, offline error, and the grey-folded normalisation.

No test reaches the network: downloads use a local file:// URL or a mocked fetch, and every test runs with a
temporary TORCH_HOME, so the user's real torch hub cache is never read or written.
"""
import dataclasses, hashlib, socket, urllib.error
from pathlib import Path
import pytest
import torch
import torch.nn as nn
import torchvision
from tsbn_nb import nets
from tsbn_nb.core import TsbnError, get_config
from tsbn_nb.nets import (ResNetClassifier, build_classifier, download_weights, plan_weights, prepare_weights,
                          weight_spec, weights_would_download, would_download)

torch.set_num_threads(1)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    "A fresh, empty TORCH_HOME, and a fetch that fails the test if anything tries to download."
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)           # so that torch.hub.get_dir() follows TORCH_HOME
    def no_network(*a, **k): raise AssertionError('a test tried to download weights')
    monkeypatch.setattr(nets, '_fetch', no_network)
    real = nets._file_sha256                                    # the fakes below carry torchvision's names, not its bytes:
    def sha256(path):                                           # the cache's hash check accepts them (and only them)
        got = real(path)
        return nets._HASH.search(Path(path).name).group(1).ljust(64, '0') if got in FAKES else got
    monkeypatch.setattr(nets, '_file_sha256', sha256)
    monkeypatch.setattr(nets, '_VERIFIED', set())
    return home


FAKES = set()   # SHA-256 of the fake weight files written by `fake_imagenet`


def fake_imagenet(arch, path, seed=0, neutral=False):
    "A random RGB torchvision `arch` (non-trivial BatchNorm statistics) saved as a state dict at `path`; returned in eval mode."
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)(weights=None).eval()
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d): b.running_mean.uniform_(-.1, .1); b.running_var.uniform_(.5, 1.5)
    if neutral:   # the same filter on R, G and B
        with torch.no_grad(): m.conv1.weight.copy_(m.conv1.weight.mean(1, keepdim=True).expand_as(m.conv1.weight))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(m.state_dict(), path)
    FAKES.add(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return m


def test_hub_dir_follows_torch_home(torch_home):
    assert Path(torch.hub.get_dir()) == torch_home / 'hub'


def test_offline_message_names_file_folder_url_and_way_out(torch_home, monkeypatch):
    def offline(*a, **k): raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(nets, '_fetch', offline)
    with pytest.raises(TsbnError) as e:
        ResNetClassifier('resnet50', 'imagenet1k_v1')
    msg = str(e.value)
    for part in ('resnet50-0676ba61.pth', '97.8 MB', str(torch_home / 'hub' / 'checkpoints'),
                 'https://download.pytorch.org/models/resnet50-0676ba61.pth', '-p pretrained none', 'URLError'):
        assert part in msg, (part, msg)
    # nothing half-written is left in the cache, and the download's socket timeout is not left behind
    assert not any((torch_home / 'hub' / 'checkpoints').glob('*.pth'))
    assert socket.getdefaulttimeout() is None


def test_cache_hit_with_synthetic_state_dict(torch_home):
    fake_imagenet('resnet18', torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth')
    assert not would_download('resnet18', 'imagenet1k_v1')
    clf = ResNetClassifier('resnet18', 'IMAGENET1K_V1')          # the fetch would fail the test: the cache is used
    assert clf.weights_source == 'imagenet1k_v1 (torchvision resnet18-f37072fd.pth), grey-folded ImageNet normalisation'
    assert clf.weights_plan.action == 'cache'
    info = clf.weights_info
    assert info['name'] == 'imagenet1k_v1' and info['sha256_prefix'] == 'f37072fd'
    assert info['input_norm']['mean'] == pytest.approx(0.44880, abs=5e-5)
    assert info['input_norm']['std'] == pytest.approx(0.22598, abs=5e-5)


def test_grey_model_equals_rgb_model_on_replicated_image(torch_home):
    "The normalised 1-channel model equals torchvision's RGB model with the same state dict on a grey image replicated to RGB."
    path = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    rgb = fake_imagenet('resnet18', path)
    clf = ResNetClassifier('resnet18', 'imagenet1k_v1').eval()
    rgb.fc = nn.Identity()
    m, s = weight_spec('resnet18').grey
    g = torch.rand(3, 1, 64, 32)
    with torch.no_grad():
        # any weights: exactly the RGB network on the replicated image normalised with the folded (m, s)
        torch.testing.assert_close(clf.features(g), rgb(((g - m) / s).repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)
    # colour-neutral first-layer filters: exactly the RGB network with torchvision's own per-channel normalisation
    rgb = fake_imagenet('resnet18', path, seed=1, neutral=True)
    clf = ResNetClassifier('resnet18', 'imagenet1k_v1').eval()
    rgb.fc = nn.Identity()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf.features(g), rgb((g.repeat(1, 3, 1, 1) - mean) / std), atol=1e-5, rtol=1e-5)
        # and the whole classifier: the logit is the same linear head on those features
        torch.testing.assert_close(clf(g), clf.head(rgb((g.repeat(1, 3, 1, 1) - mean) / std)).squeeze(1), atol=1e-5, rtol=1e-5)


def test_download_from_file_url_with_hash_check(tmp_path, torch_home, monkeypatch):
    monkeypatch.setattr(nets, '_fetch', nets.fetch_url)     # the real download function, on a local file
    src = tmp_path / 'server' / 'tmp.pth'
    fake_imagenet('resnet18', src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    served = src.with_name(f'resnet18-{sha[:8]}.pth'); src.rename(served)
    spec = dataclasses.replace(weight_spec('resnet18'), url=served.as_uri())
    said = []
    got = download_weights(spec, progress=False, log=said.append)
    assert got == torch_home / 'hub' / 'checkpoints' / served.name and got.read_bytes() == served.read_bytes()
    assert served.name in said[0] and 'MB' in said[0] and str(got.parent) in said[0]
    # the real spec's hash prefix does not match the fake file: refused, nothing saved under the real name
    with pytest.raises(TsbnError, match='SHA-256'):
        download_weights(weight_spec('resnet18'), url=served.as_uri(), progress=False, log=said.append)
    assert not (got.parent / 'resnet18-f37072fd.pth').exists()


def test_classifier_downloads_once_then_uses_cache(tmp_path, torch_home, monkeypatch):
    src = tmp_path / 'resnet18.pth'
    fake_imagenet('resnet18', src)
    calls = []
    def fetch(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix)); Path(dst).write_bytes(src.read_bytes())
    monkeypatch.setattr(nets, '_fetch', fetch)
    cfg = get_config('smoke', pretrained='imagenet1k_v1')
    assert weights_would_download(cfg)
    assert prepare_weights(cfg, progress=False, log=lambda s: None).action == 'downloaded'
    assert calls == [('https://download.pytorch.org/models/resnet18-f37072fd.pth', 'f37072fd')]
    assert not weights_would_download(cfg)
    assert build_classifier(cfg).weights_plan.action == 'cache' and len(calls) == 1


@pytest.mark.parametrize('profile', ['demo', 'smoke'])
def test_demo_and_smoke_never_download(profile):
    cfg = get_config(profile)
    assert cfg.pretrained == 'none' and not weights_would_download(cfg)
    clf = build_classifier(cfg)                                     # the autouse fetch would fail the test
    assert clf.weights_source == 'from scratch'
    assert (float(clf.backbone.norm.mean), float(clf.backbone.norm.std)) == (0.0, 1.0)


def test_unknown_names_and_missing_files():
    with pytest.raises(TsbnError, match="'none'"):
        plan_weights('resnet18', 'imagenet1k_v3')
    with pytest.raises(TsbnError, match='imagenet1k_v1'):
        plan_weights('resnet34', 'imagenet1k_v2')                  # resnet34 has only V1
    with pytest.raises(TsbnError, match='nope.pth'):
        ResNetClassifier('resnet18', '/no/such/nope.pth')


def test_every_plan_describes_itself(tmp_path, monkeypatch):
    "Regression: describe() built every message eagerly and failed on plans without a file path."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    from tsbn_nb.nets import plan_weights
    assert 'from scratch' in plan_weights('resnet18', 'none').describe()
    assert 'no ImageNet file' in plan_weights('resnet18', 'auto').describe()


def test_junk_file_in_the_cache_is_refused_by_its_hash(torch_home):
    "Issue 23.13: a junk file under torchvision's name was announced as cached weights, then failed inside torch.load."
    junk = torch_home / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'
    junk.parent.mkdir(parents=True); junk.write_bytes(b'<html>captive portal</html>')
    said = []
    for call in (lambda: prepare_weights(get_config('cpu'), progress=False, log=said.append),
                 lambda: ResNetClassifier('resnet18', 'auto'), lambda: ResNetClassifier('resnet18', str(junk))):
        with pytest.raises(TsbnError) as e:
            call()
        msg = str(e.value)
        assert "is not torchvision's resnet18-f37072fd.pth" in msg and 'Delete it' in msg and '-p pretrained none' in msg, msg
        assert '\n' not in msg and 'Weights only load failed' not in msg
    assert said == []                                               # nothing announced
    fake_imagenet('resnet18', junk)                                 # a file that passes the check is used
    assert ResNetClassifier('resnet18', 'imagenet1k_v1').weights_plan.action == 'cache'
