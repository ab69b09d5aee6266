"""Packaging (issue 14.5-6): the runtime requirements are what the library imports, and a non-editable install
(a wheel, no checkout) carries the experiment notebooks and runs a smoke sweep from anywhere."""
import ast, configparser, json, os, shlex, shutil, subprocess, sys, zipfile
from importlib import metadata
from pathlib import Path
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# the files a wheel is built from (settings.ini feeds setup.py; MANIFEST.in names the notebooks for an sdist)
SOURCES = ['settings.ini', 'setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'tsbn_nb', 'nbs/experiments']
# lazily imported by the Dask path only, declared in the [dask] extra
OPTIONAL = {'distributed': 'dask', 'dask_jobqueue': 'dask'}


def _settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def _names(reqs: str) -> set:
    return {canonicalize_name(Requirement(r).name) for r in shlex.split(reqs)}


def _imports(sources) -> set:
    "Top-level names of every absolute import in `sources` (Python texts), stdlib and tsbn_nb left out."
    mods = set()
    for text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import): mods |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0: mods.add(node.module.split('.')[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ('tsbn_nb', '__future__')}


def _dists(module: str) -> set:
    return {canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])}


def _closure(names: set) -> set:
    "`names` and every distribution they require (no extras), recursively."
    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen: continue
        seen.add(n)
        try: reqs = metadata.requires(n) or []
        except metadata.PackageNotFoundError: continue
        todo += [canonicalize_name(r.name) for r in map(Requirement, reqs) if not r.marker or 'extra' not in str(r.marker)]
    return seen


def test_runtime_requirements_are_what_the_library_imports():
    s = _settings()
    runtime = _names(s['requirements'])
    extras = {k[:-len('_requirements')]: _names(v) for k, v in s.items() if k.endswith('_requirements')}
    assert {'dev', 'lab', 'dask'} <= set(extras), extras
    # every third-party module a library file imports (at the top or inside a function) is a direct requirement
    mods = _imports(p.read_text() for p in sorted((ROOT / 'tsbn_nb').glob('*.py')))
    undeclared = {}
    for m in sorted(mods):
        d = _dists(m)
        assert d, f'{m} is imported by tsbn_nb but not installed here'
        if m in OPTIONAL: assert d & extras[OPTIONAL[m]], (m, d); continue
        if not d & runtime: undeclared[m] = d
    assert not undeclared, f'imported by tsbn_nb/ but not in settings.ini requirements: {undeclared}'
    # the experiment notebooks run in a kernel of the same environment: their imports come with the runtime set
    cells = [''.join(c['source']) for nb in sorted((ROOT / 'nbs' / 'experiments').glob('*.ipynb'))
             for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    closure = _closure(runtime)
    missing = {m: _dists(m) for m in _imports(cells) if not _dists(m) & closure}
    assert not missing, f'imported by nbs/experiments but not installed with the runtime requirements: {missing}'
    # the development tools are not runtime requirements, and the runtime ones need no tool the tests don't use
    assert not runtime & ({'nbdev', 'fastcore', 'execnb', 'jupyterlab', 'dask', 'distributed', 'pytest'}), runtime
    assert {'papermill', 'ipykernel', 'psutil'} <= runtime
    assert 'pytest-xdist' not in extras['dev']
    # lower bounds: the code uses torch.amp.GradScaler('cuda'), new in torch 2.3 (torchvision 0.18)
    reqs = {canonicalize_name(r.name): r for r in map(Requirement, shlex.split(s['requirements']))}
    assert not reqs['torch'].specifier.contains('2.2.2') and reqs['torch'].specifier.contains('2.3.0')
    assert not reqs['torchvision'].specifier.contains('0.17.2') and reqs['torchvision'].specifier.contains('0.18.0')


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "A wheel built (no network: --no-build-isolation) from a copy of the sources, so the checkout stays untouched."
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    for rel in SOURCES:
        p = ROOT / rel
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir(): shutil.copytree(p, src / rel, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
        else: shutil.copy2(p, src / rel)
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                        '-w', str(tmp / 'dist'), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (tmp / 'dist').glob('tsbn_nb-*.whl')
    return whl


def test_wheel_carries_the_experiment_notebooks_unchanged(wheel):
    with zipfile.ZipFile(wheel) as z:
        shipped = {Path(n).name: z.read(n) for n in z.namelist() if n.startswith('tsbn_nb/experiments/')}
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    src = {p.name: p.read_bytes() for p in (ROOT / 'nbs' / 'experiments').glob('*.ipynb')}
    assert set(shipped) == set(src) >= {'run_fold.ipynb', 'table2_fig4.ipynb'}, sorted(shipped)
    assert all(shipped[n] == src[n] for n in src)                         # the same bytes: nothing can drift
    for extra in ('dev', 'lab', 'dask'): assert f'Provides-Extra: {extra}' in meta


def test_installed_wheel_runs_a_smoke_sweep_outside_the_checkout(wheel, phantom, tmp_path):
    "pip install (not editable) into a folder of its own; from a folder outside the checkout, `tsbn reproduce` works."
    site = tmp_path / 'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-compile', '-q', '--target',
                        str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (site / 'tsbn_nb' / 'experiments' / 'run_fold.ipynb').is_file()
    work = tmp_path / 'elsewhere'; work.mkdir()                            # no nbs/ here, no checkout above
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS='1')     # the installed copy first, kernel included
    out = tmp_path / 'res'
    tsbn = site / 'bin' / 'tsbn'                                           # the console script pip wrote
    r = subprocess.run([sys.executable, str(tsbn), 'reproduce', '--data', str(phantom), '--profile', 'smoke',
                        '--algorithms', 'resnet', '--folds', '0', '--no-report', '--out', str(out)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = json.loads((out / 'runs' / 'resnet' / 'fold0.json').read_text())
    assert rec['fold'] == 0 and len(rec['predictions']) == rec['n_test']
    nb = json.loads((out / 'runs' / 'resnet' / 'fold0.ipynb').read_text())
    used = Path(nb['metadata']['papermill']['input_path'])
    assert used.resolve() == (site / 'tsbn_nb' / 'experiments' / 'run_fold.ipynb').resolve(), used   # not nbs/
    assert rec['provenance']['git_commit'] == 'unknown'     # the kernel's tsbn_nb lives outside any git checkout
