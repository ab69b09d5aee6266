"""The GPU check refuses, loudly and at once, to run where there is no GPU."""
import os, subprocess, sys
from pathlib import Path

GPU = Path(__file__).resolve().parents[1] / 'bench' / 'gpu.py'


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    r = subprocess.run([sys.executable, str(GPU), '--out', str(tmp_path / 'gpu.md')], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert 'no CUDA GPU' in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path / 'gpu.md').exists()
