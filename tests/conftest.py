"""Shared fixtures: one small synthetic INbreast-like dataset per test session."""
import os
import pytest

os.environ.setdefault('OMP_NUM_THREADS', '1')


@pytest.fixture(scope='session')
def phantom(tmp_path_factory):
    "A small phantom (INbreast layout, real DICOM files) shared by the end-to-end tests."
    from tsbn_nb.phantom import make_phantom
    out = tmp_path_factory.mktemp('phantom') / 'inbreast'
    make_phantom(out, n_patients=24, seed=1, progress=False)
    return out
