"""The documentation site (`make docs`, tools/build_docs.py): it builds, every page is reachable from the index, an
executed page embeds its figures, its equations are MathML written at build time and no page loads a script (from a CDN
or anywhere: the site renders offline), a notebook that fails is named with its cell, and README.md cannot be
overwritten."""
import configparser, hashlib, html, importlib.util, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / 'tools' / 'build_docs.py'
NBS = ROOT / 'nbs'
EXECUTED = ('04_pretext', '06_losses')   # the method notebooks: equations, code, figures (each well under a minute)


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
    "The site with every notebook rendered as source and the method notebooks executed (`make docs EXECUTE=0`, plus two)."
    out = tmp_path_factory.mktemp('docs') / '_docs'
    notebooks = sorted(NBS.glob('*.ipynb')) + sorted((NBS / 'experiments').glob('*.ipynb'))   # as the build saw them
    before = {n: _sha(NBS / f'{n}.ipynb') for n in EXECUTED}
    r = _run('--out', out, '--execute', *EXECUTED, timeout=1800)   # 2-3 min alone on 2 cores; far more on a busy machine
    assert r.returncode == 0, r.stdout + r.stderr
    assert {n: _sha(NBS / f'{n}.ipynb') for n in EXECUTED} == before, "executing for the docs wrote into nbs/"
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
    for name in EXECUTED:
        html = (site / f'{name}.html').read_text(encoding='utf-8')
        assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) >= 1, name
        assert 'Executed when the docs were built' in html
        assert '#| export' not in html and '#| default_exp' not in html  # directives stripped, hidden cells dropped
    assert 'def ct_loss(' in re.sub(r'<[^>]+>', '', html)               # exported code is shown: it is the method
    src = (site / '05_nets.html').read_text(encoding='utf-8')          # rendered without executing: no outputs
    assert 'Source only' in src and not re.search(r'<img[^>]*src="data:image/png', src)
    css = list(site.glob('lab-*.css'))                                   # one shared stylesheet, linked by every page
    assert len(css) == 1 and f'href="{css[0].name}"' in html


def _markdown_equations(nb:Path) -> list:
    "The equations of a notebook's markdown cells, as the builder finds them: [(kind, LaTeX)]."
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    return [(k, t) for c in cells if c['cell_type'] == 'markdown' for k, t in bd.split_math(''.join(c['source']))
            if k != 'text']


def test_no_page_loads_anything_from_the_network(site):
    "Offline, in ten years: no <script> at all (no MathJax, require.js, mermaid or widget manager), no remote style or font."
    site, _ = site
    files = sorted(site.glob('*.html')) + sorted(site.glob('*.css'))
    assert len(files) >= 19
    for f in files:
        text = f.read_text(encoding='utf-8')
        assert '<script' not in text, f"{f.name} has a script"
        remote = re.findall(r'<(?:link|img|iframe|source|video|audio|embed)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"', text)
        assert not remote, f"{f.name} loads {remote[:3]}"
        assert not re.search(r'@import|url\(\s*["\']?(?:https?:)?//', text), f"{f.name}: a stylesheet reaches out"
        low = text.lower()
        for cdn in ('cdnjs', 'jsdelivr', 'unpkg', 'mathjax', 'require.js', 'googleapis'):
            assert cdn not in low, f"{f.name} mentions {cdn}"


@pytest.mark.parametrize('name', ['index', *EXECUTED])
def test_every_equation_is_mathml(site, name):
    "Each `$...$` / `$$...$$` of the notebook is one <math> element of the page, block or inline as written; no raw LaTeX."
    site, _ = site
    eqs = _markdown_equations(NBS / f'{name}.ipynb')
    assert eqs and any(k == 'display' for k, _ in eqs)                 # these pages do have displayed equations
    page = (site / f'{name}.html').read_text(encoding='utf-8')
    maths = re.findall(r'<math\b[^>]*display="(block|inline)"', page)
    assert len(maths) >= len(eqs), (len(maths), len(eqs))             # markdown outputs of executed cells may add more
    assert maths.count('block') >= sum(k == 'display' for k, _ in eqs)
    assert 'TSBNMATH' not in page
    shown = re.sub(r'<annotation\b.*?</annotation>', '', page, flags=re.S)   # the LaTeX kept as annotation is not shown
    shown = html.unescape(re.sub(r'<[^>]+>', ' ', shown))
    for kind, tex in eqs:
        assert f'${tex}$' not in shown, f"{name}: ${tex}$ is shown as LaTeX"
    drawn = re.sub(r'<annotation\b.*?</annotation>', '', ''.join(re.findall(r'<math\b.*?</math>', page, re.S)), flags=re.S)
    assert not re.search(r'>\s*\\[A-Za-z|]+\s*<', drawn), f"{name}: a LaTeX command left as text in an equation"


def test_split_math():
    pieces = lambda s: [(k, t) for k, t in bd.split_math(s) if k != 'text']
    assert pieces('GSIM: $F(t) = t - d/2$ and\n$$\\sum_i x_i$$') == [('inline', 'F(t) = t - d/2'), ('display', '\\sum_i x_i')]
    assert pieces('costs $5 and $10.') == [] and pieces('\\$x$ and $ y $') == []   # prices, an escaped dollar, spaces
    assert pieces('`$HOME` and ``a $b$ c``') == []                      # code spans are code
    assert pieces('```bash\necho $x$\n```\nthen $y$') == [('inline', 'y')]   # so are fenced blocks
    assert pieces('$a$\n\n$b') == [('inline', 'a')]                     # inline math does not cross a paragraph
    assert ''.join(t for _, t in bd.split_math('no math here, `$x$`')) == 'no math here, `$x$`'


def test_mathml():
    m = bd.to_mathml('\\frac{a}{2}', display=True)
    assert m.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">') and '<mfrac>' in m
    assert '<annotation encoding="application/x-tex">\\frac{a}{2}</annotation>' in m
    m = bd.to_mathml('\\big\\lVert x \\big\\rVert', display=False)    # latex2mathml leaves these as text: fixed here
    assert 'lVert' not in m.split('<annotation')[0] and m.count('&#x02016;') == 2
    m = bd.to_mathml('x = 1 \\tag{2}', display=True)                 # an equation number keeps its distance
    assert '<mspace width="2em"' in m and '<mtext>(2)</mtext>' in m and '\\tag{2}</annotation>' in m
    box = bd.MathBox('nbs/99_x.ipynb')
    with pytest.raises(bd.DocsError, match=r"nbs/99_x.ipynb: cell 3: cannot render the equation \$\\foo x\$ .*unknown command"):
        box.protect('a $\\foo x$', 'cell 3')
    with pytest.raises(bd.DocsError, match=r"cell 4: cannot render the equation \$x\^\$"):
        box.protect('$x^$', 'cell 4')
    # a placeholder inside a tag (a heading's anchor id) becomes the LaTeX, in the text the MathML
    text = box.protect('## Eq. $a_1$', 'cell 5')
    assert '$' not in text
    mark = re.search(r'TSBNMATH\d{5}X', text).group(0)
    out = box.restore(f'<h2 id="Eq.-{mark}">Eq. {mark}</h2>')
    assert out.startswith('<h2 id="Eq.-a_1">Eq. <math ') and out.endswith('</math></h2>')


def test_a_bad_equation_is_named_and_leaves_the_site_alone(tmp_path):
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    cell = lambda i, s: {'cell_type': 'markdown', 'id': f'c{i}', 'metadata': {}, 'source': s}
    (nbs / 'index.ipynb').write_text(json.dumps({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [
        cell(0, '# Home'), cell(1, 'fine: $x^2$'), cell(2, 'broken: $\\left( x$')]}))
    out = tmp_path / 'site'; out.mkdir(); (out / 'index.html').write_text('previous build')
    r = _run('--nbs', nbs, '--out', out, '--reference', tmp_path / 'none', '--no-execute', timeout=300)
    assert r.returncode == 1
    assert "index.ipynb: cell 2: cannot render the equation $\\left( x$ as MathML" in r.stderr, r.stderr
    assert (out / 'index.html').read_text() == 'previous build' and not (tmp_path / 'site.partial').exists()


def test_a_failing_notebook_is_named_with_its_cell(tmp_path):
    nbs = tmp_path / 'nbs'; nbs.mkdir()
    def nb(*cells):
        return json.dumps({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [
            {'cell_type': t, 'id': f'c{i}', 'metadata': {}, 'source': s,
             **({'outputs': [], 'execution_count': None} if t == 'code' else {})} for i, (t, s) in enumerate(cells)]})
    (nbs / 'index.ipynb').write_text(nb(('markdown', '# Home'), ('code', 'x = 1')))
    (nbs / '00_env.ipynb').write_text(nb(('markdown', '# Env'),          # the kernels know they run for the docs
                                         ('code', "import os\nassert os.environ['TSBN_DOCS_BUILD'] == '1'")))
    (nbs / '01_bad.ipynb').write_text(nb(('markdown', '# Bad'), ('code', '#| eval: false\nraise SystemExit'),
                                         ('code', 'ratio = 1 / 0'), ('code', 'print("never")')))
    out = tmp_path / 'site'; out.mkdir(); (out / 'index.html').write_text('previous build')
    r = _run('--nbs', nbs, '--out', out, '--reference', tmp_path / 'none', '--workers', '1', timeout=300)
    assert r.returncode == 1
    assert "01_bad.ipynb: cell 2 ('ratio = 1 / 0') failed: ZeroDivisionError" in r.stderr, r.stderr
    assert '1 notebook(s) failed' in r.stderr and '00_env' not in r.stderr   # the environment check passed
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


def test_pages_workflow_publishes_the_site_from_main():
    "nbdev's convention: a GitHub Pages workflow builds the site (here with `make docs`) on pushes to main and deploys it."
    yaml = pytest.importorskip('yaml')
    wf = yaml.safe_load((ROOT / '.github' / 'workflows' / 'pages.yaml').read_text(encoding='utf-8'))
    on = wf.get('on', wf.get(True))                                   # YAML 1.1 reads a bare `on` as true
    assert on['push']['branches'] == ['main'] and 'workflow_dispatch' in on
    assert wf['permissions'] == {'contents': 'read', 'pages': 'write', 'id-token': 'write'}
    build = wf['jobs']['build']['steps']
    runs = '\n'.join(s.get('run', '') for s in build)
    assert 'make install' in runs and re.search(r'^\s*make docs$', runs, re.M)   # the full, executed site by default
    upload = next(s for s in build if s.get('uses', '').startswith('actions/upload-pages-artifact'))
    assert upload['with']['path'] == '_docs'
    assert any(s.get('uses', '').startswith('actions/deploy-pages') for s in wf['jobs']['deploy']['steps'])
    assert wf['jobs']['deploy']['needs'] == 'build'


def test_readme_links_the_published_site():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    url = cfg['DEFAULT']['doc_host'] + cfg['DEFAULT']['doc_baseurl']
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert f'<{url}>' in readme.split('## The two commands')[0]           # at the top, where a reader starts
    assert '## Documentation' in readme and 'pages.yaml' in readme
