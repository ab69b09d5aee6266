"""The documentation site (`make docs`, tools/build_docs.py): it builds, every page is reachable from the index, an
executed page embeds its figures, a notebook that fails is named with its cell, and README.md cannot be overwritten."""
import configparser, hashlib, importlib.util, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / 'tools' / 'build_docs.py'
NBS = ROOT / 'nbs'
EXECUTED = '06_losses'        # a small notebook with figures (~15 s to execute)


def _load_tool():
    spec = importlib.util.spec_from_file_location('build_docs', TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod

bd = _load_tool()


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _hrefs(page:Path) -> set:
    return set(re.findall(r'href="([^"#]+)', page.read_text(encoding='utf-8')))


def _sha(p:Path) -> str: return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site with every notebook rendered as source and one executed (the fast path of `make docs EXECUTE=0`, plus one)."
    out = tmp_path_factory.mktemp('docs') / '_docs'
    notebooks = sorted(NBS.glob('*.ipynb')) + sorted((NBS / 'experiments').glob('*.ipynb'))   # as the build saw them
    before = _sha(NBS / f'{EXECUTED}.ipynb')
    r = _run('--out', out, '--execute', EXECUTED)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _sha(NBS / f'{EXECUTED}.ipynb') == before, "executing for the docs wrote into nbs/"
    return out, notebooks


def test_every_notebook_has_a_page(site):
    site, notebooks = site
    expected = {('experiments-' if p.parent.name == 'experiments' else '') + p.stem + '.html' for p in notebooks}
    pages = {p.name for p in site.glob('*.html')}
    assert expected <= pages, sorted(expected - pages)
    assert not list(site.parent.glob('*.partial')), "the staging folder was left behind"


def test_index_and_every_page_link_to_every_page(site):
    site, _ = site
    pages = {p.name for p in site.glob('*.html')}
    assert len(pages) >= 18
    for page in sorted(site.glob('*.html')):
        missing = pages - _hrefs(page)
        assert not missing, f"{page.name} does not link to {sorted(missing)}"
    # the index's own links to notebooks (`[04_pretext](04_pretext.ipynb)`) point at the pages, not at .ipynb files
    index = (site / 'index.html').read_text(encoding='utf-8')
    assert 'href="04_pretext.html"' in index and 'href="experiments-run_fold.html"' in index
    assert not re.search(r'href="[^"]*\.ipynb', index)
    # a markdown image of a notebook (the index shows results/demo/fig4.png) is embedded, not linked to a file
    assert re.search(r'<img[^>]*src="data:image/png;base64,', index) and 'fig4.png"' not in index


def test_executed_page_embeds_its_figures(site):
    site, _ = site
    html = (site / f'{EXECUTED}.html').read_text(encoding='utf-8')
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) >= 1
    assert 'Executed when the docs were built' in html
    assert '#| export' not in html and '#| default_exp' not in html      # directives stripped, hidden cells dropped
    assert 'def ct_loss(' in re.sub(r'<[^>]+>', '', html)               # exported code is shown: it is the method
    src = (site / '04_pretext.html').read_text(encoding='utf-8')       # rendered without executing: no outputs
    assert 'Source only' in src and not re.search(r'<img[^>]*src="data:image/png', src)
    css = list(site.glob('lab-*.css'))                                   # one shared stylesheet, linked by every page
    assert len(css) == 1 and f'href="{css[0].name}"' in html


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    def nb(*cells):
        return json.dumps({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [
            {'cell_type': t, 'id': f'c{i}', 'metadata': {}, 'source': s,
             **({'outputs': [], 'execution_count': None} if t == 'code' else {})} for i, (t, s) in enumerate(cells)]})
    (nbs / 'index.ipynb').write_text(nb(('markdown', '# Home'), ('code', 'x = 1')))
    (nbs / '01_bad.ipynb').write_text(nb(('markdown', '# Bad'), ('code', '#| eval: false\nraise SystemExit'),
                                         ('code', 'ratio = 1 / 0'), ('code', 'print("never")')))
    out = tmp_path / 'site'; out.mkdir(); (out / 'index.html').write_text('previous build')
    r = _run('--nbs', nbs, '--out', out, '--reference', tmp_path / 'none', '--workers', '1', timeout=300)
    assert r.returncode == 1
    assert "01_bad.ipynb: cell 2 ('ratio = 1 / 0') failed: ZeroDivisionError" in r.stderr, r.stderr
    assert (out / 'index.html').read_text() == 'previous build'          # the previous site is left as it was
    assert not (tmp_path / 'site.partial').exists()


def test_unknown_notebook_to_execute_is_refused():
    with pytest.raises(bd.DocsError, match="no such notebook in nbs/; choose from"):
        bd.select_execution(bd.discover(NBS, None), ['06_loses'])


def test_directives():
    src = '#| export\n#| eval: false\n\ndef f(): pass\n#| not a directive any more'
    assert bd.directives(src) == {'export': '', 'eval:': 'false'}
    assert bd.strip_directives(src) == 'def f(): pass\n#| not a directive any more'
    assert bd.title_and_summary({'cells': [{'cell_type': 'markdown', 'source': '# Title\n\n> One line.'}]}) == \
        ('Title', 'One line.')


def test_make_docs_target():
    fast = subprocess.run(['make', '-n', 'docs', 'EXECUTE=0'], capture_output=True, text=True, cwd=ROOT).stdout
    full = subprocess.run(['make', '-n', 'docs'], capture_output=True, text=True, cwd=ROOT).stdout
    assert 'tools/build_docs.py' in fast and '--no-execute' in fast
    assert 'tools/build_docs.py' in full and '--no-execute' not in full


def test_readme_cannot_be_overwritten_and_agrees_with_the_index():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    readme_nb = cfg['DEFAULT'].get('readme_nb', 'index.ipynb')           # nbdev's default when the key is absent
    assert not (NBS / readme_nb).exists(), f"nbdev_readme would overwrite README.md with nbs/{readme_nb}"
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    index = '\n'.join(''.join(c['source']) for c in json.loads((NBS / 'index.ipynb').read_text())['cells'])
    commands = re.findall(r'^make (?:reproduce|test) +#.*$', readme, re.M)
    assert len(commands) == 2 and all(c in index for c in commands)    # the two commands, word for word
