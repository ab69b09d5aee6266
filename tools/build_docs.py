#!/usr/bin/env python3
"""Build the documentation site `_docs/`: every notebook as a static HTML page, with a sidebar of all pages.

    make docs                  # execute nbs/*.ipynb (in a temporary copy) and render them with their outputs
    make docs EXECUTE=0        # render the sources without executing anything (seconds)
    python tools/build_docs.py --execute 06_losses --out /tmp/site   # execute one notebook, render the rest as source

Quarto (what `nbdev_docs` needs) cannot be installed here, so the pages are rendered with nbconvert's `lab` template
and notebooks are executed with nbclient, at most `--workers` kernels at a time, each cell under `--timeout` seconds.
Figures are embedded in the pages as data URIs and equations are written as MathML when the site is built (with
latex2mathml; browsers draw MathML themselves), so the pages load no script at all, from a CDN or elsewhere: `_docs/`
is a self-contained folder that renders offline, opened from disk or served by any static host. The notebooks in
`nbs/` are never written to: they are copied to a temporary folder and executed there (their relative paths still
work, since the whole `nbs/` tree is copied).

nbdev's cell directives are honoured: `#| hide` and `#| default_exp` cells are dropped from the pages,
`#| echo: false` hides a cell's code, `#| output: false` its output, `#| eval: false` cells are not run. Exported code
(`#| export`) is shown, with the directive line removed: in this package the code *is* the method. Cells flagged with
one of `--skip-flags` (default `notest`: cells that cannot run here) are not run; `slow` cells are, because they are
the ones that draw the pictures (pass `--skip-flags "notest slow"` for a faster build).

The kernels run with the environment variable `TSBN_DOCS_BUILD=1` (DOCS_ENV below). A notebook whose check takes
minutes and draws nothing may read it to run a smaller setting when the docs are built, if it says so in its text and
the assertions keep their meaning (what is checked stays checked); `make test` runs the full setting.

A notebook that fails stops the build: the message names the notebook, the cell (its 0-based index in the notebook and
its first line) and the error, and the previous `_docs/` is left as it was (the site is built beside it and swapped
in only when every page succeeded).
"""
from __future__ import annotations
import argparse, base64, concurrent.futures as cf, datetime, hashlib, html, json, mimetypes, os, re, shutil, subprocess
import sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+:?)\s*(.*?)\s*$')
_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
_HIDE = {'hide', 'default_exp'}
KERNEL_NAME = 'tsbn-docs-python'
DOCS_ENV = {'TSBN_DOCS_BUILD': '1'}      # set in the kernels of the docs build: a notebook can tell it is being built


@dataclass
class Page:
    src: Path          # the notebook file
    key: str           # its path relative to its root (nbs/ or the reference results folder), for link rewriting
    out: str           # the HTML file name in the site
    section: str       # the sidebar heading it is listed under
    title: str         # the notebook's H1
    summary: str       # the notebook's one-line summary (the `> ...` line under the H1), may be empty
    execute: bool      # run it before rendering (otherwise render what is stored)
    stored: bool = False  # its stored outputs are the point (an executed reference notebook)


class DocsError(Exception):
    "A failure the build reports in one message (a notebook that does not execute, a missing folder)."


def _src(cell) -> str:
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


def directives(source:str) -> dict:
    "nbdev cell directives at the top of a code cell, e.g. {'export': '', 'eval:': 'false'}."
    out = {}
    for line in source.splitlines():
        if not line.strip(): continue
        m = _DIRECTIVE.match(line)
        if not m: break
        out[m.group(1).lower()] = m.group(2)
    return out


def strip_directives(source:str) -> str:
    "The source without its leading `#|` directive lines."
    lines = source.splitlines()
    i = 0
    while i < len(lines) and (not lines[i].strip() or _DIRECTIVE.match(lines[i])): i += 1
    return '\n'.join(lines[i:])


def title_and_summary(nb:dict) -> tuple[str, str]:
    "The first markdown H1 of a notebook and the `> summary` line that follows it (nbdev's convention)."
    for cell in nb.get('cells', []):
        if cell.get('cell_type') != 'markdown': continue
        lines = _src(cell).splitlines()
        for i, line in enumerate(lines):
            if line.startswith('# '):
                summary = next((l[1:].strip() for l in lines[i + 1:] if l.startswith('>')), '')
                return line[2:].strip(), summary
    return '', ''


def _read(path:Path):
    "A notebook as an nbformat v4 node (sources joined into strings)."
    import nbformat
    try: return nbformat.reads(path.read_text(encoding='utf-8'), as_version=4)
    except Exception as e: raise DocsError(f"{path}: cannot read the notebook ({e})") from None


def discover(nbs:Path, reference:Path|None) -> list[Page]:
    "Every page of the site in reading order: index, the numbered notebooks, experiment notebooks, executed references."
    pages = []
    def add(src, key, out, section, execute, stored=False):
        t, s = title_and_summary(_read(src))
        pages.append(Page(src, key, out, section, t or src.stem, s, execute, stored))
    if (nbs / 'index.ipynb').exists(): add(nbs / 'index.ipynb', 'index.ipynb', 'index.html', 'Overview', True)
    for p in sorted(nbs.glob('*.ipynb')):
        if p.name == 'index.ipynb' or p.name.startswith(('_', '.')): continue
        add(p, p.name, p.stem + '.html', 'The library, in reading order', True)
    for p in sorted((nbs / 'experiments').glob('*.ipynb')):
        add(p, f'experiments/{p.name}', f'experiments-{p.stem}.html', 'Experiment notebooks (papermill)', False)
    if reference and reference.is_dir():
        rep = reference / 'table2_fig4.ipynb'
        if rep.exists():
            add(rep, f'ref:{rep.name}', 'reference-table2_fig4.html', 'As executed for the committed reference', False, True)
        runs = sorted((reference / 'runs' / 'tsbn-u').glob('fold0*.ipynb'))
        if runs:
            add(runs[0], f'ref:runs/tsbn-u/{runs[0].name}', 'reference-run-tsbn-u-fold0.html',
                'As executed for the committed reference', False, True)
    if not any(p.out == 'index.html' for p in pages):
        raise DocsError(f"{nbs / 'index.ipynb'} is missing: the site needs it as its index page")
    return pages


def prepare_for_execution(nb:dict, skip_flags:set) -> dict:
    "Tag the cells that must not run (`eval: false`, a skip flag, nbdev_export calls) for nbclient to skip."
    for cell in nb['cells']:
        if cell.get('cell_type') != 'code': continue
        src, d = _src(cell), directives(_src(cell))
        skip = (d.get('eval:', '').lower() == 'false' or skip_flags & set(d) or 'nbdev_export(' in src)
        if skip:
            tags = cell.setdefault('metadata', {}).setdefault('tags', [])
            if 'skip-execution' not in tags: tags.append('skip-execution')
    return nb


def _error_message(key, nb, index, err, timeout) -> str:
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    cells = nb['cells']
    first = strip_directives(_src(cells[index])).strip().splitlines()[:1] if index is not None and index < len(cells) else []
    where = f"cell {index} ({first[0][:80]!r})" if first else f"cell {index}" if index is not None else "kernel start"
    if isinstance(err, CellTimeoutError):
        return (f"docs: {key}: {where} ran past the {timeout} s per-cell limit: raise --timeout, "
                f"or mark the cell `#| notest` if it cannot run when the docs are built")
    if isinstance(err, DeadKernelError):
        return f"docs: {key}: the kernel died in {where} (out of memory?): {err}"
    ename, evalue = getattr(err, 'ename', type(err).__name__), getattr(err, 'evalue', str(err))
    tb = getattr(err, 'traceback', None) or ''
    tb = [l for l in _ANSI.sub('', tb if isinstance(tb, str) else '\n'.join(tb)).splitlines() if l.strip(' -')]
    tail = ('\n    ' + '\n    '.join(tb[-6:])) if tb else ''
    return f"docs: {key}: {where} failed: {ename}: {str(evalue).strip()}{tail}"


def execute_notebook(src:str, key:str, cwd:str, timeout:int, skip_flags:list, env:dict) -> tuple:
    "Execute one notebook in `cwd`; ('ok', notebook dict, seconds) or ('error', message, seconds). Runs in a worker."
    import nbformat
    from nbclient import NotebookClient
    os.environ.update(env)
    t0 = time.time()
    nb = _read(Path(src))
    prepare_for_execution(nb, set(skip_flags))
    state = {'index': None}
    def started(cell, cell_index, **kw): state['index'] = cell_index
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME, resources={'metadata': {'path': cwd}},
                            on_cell_start=started, record_timing=False)
    klog = Path(cwd).parent / f'{Path(src).stem}.kernel.log'      # the kernel's own stderr (its start-up chatter)
    try:
        with open(klog, 'w') as err: client.execute(stderr=err)
    except Exception as e:          # CellExecutionError, CellTimeoutError, DeadKernelError, a kernel that won't start
        msg = _error_message(key, nb, state['index'], e, timeout)
        if not hasattr(e, 'ename'):  # not an exception raised by the cell's code: the kernel's log may say why
            tail = [l for l in klog.read_text(errors='replace').splitlines() if l.strip()][-5:] if klog.exists() else []
            msg += ''.join(f'\n    kernel: {l}' for l in tail)
        return 'error', msg, time.time() - t0
    return 'ok', nb, time.time() - t0


def _md(text:str):
    from nbformat.v4 import new_markdown_cell
    return new_markdown_cell(text)


def for_rendering(nb, page:Page, executed:bool, skip_flags:set, note:str) -> dict:
    "Apply nbdev's directives for display: drop hidden cells, strip `#|` lines, say which cells were not run."
    cells = []
    for cell in nb['cells']:
        if cell.get('cell_type') != 'code':
            cells.append(cell); continue
        src = _src(cell); d = directives(src)
        if _HIDE & set(d): continue
        tags = set(cell.get('metadata', {}).get('tags', []))
        if d.get('echo:', '').lower() == 'false': tags.add('tsbn-hide-input')
        if d.get('output:', '').lower() == 'false': tags.add('tsbn-hide-output')
        cell = dict(cell, source=strip_directives(src), metadata=dict(cell.get('metadata', {}), tags=sorted(tags)))
        if executed and 'skip-execution' in tags:
            why = ', '.join(f'<code>#| {k} {d[k]}</code>'.replace(' </code>', '</code>') for k in d
                            if k in skip_flags or k == 'eval:') or 'it calls nbdev_export'
            cells.append(_md(f'<p class="tsbn-skipped">The next cell is not run when the docs are built ({why}).</p>'))
        cells.append(cell)
    if note:
        cells.insert(0, _md(f'<div class="tsbn-note">{note}</div>'))
    return dict(nb, cells=cells)


# ---- equations: LaTeX turned into MathML when the site is built, so pages need no script and no network ----------
# nbconvert's pages load MathJax (and require.js) from a CDN, which leaves every `$...$` as raw LaTeX offline. Here the
# math of markdown cells and markdown outputs is cut out before nbconvert sees it (a placeholder stands in), converted
# with latex2mathml, and put back into the page as <math> elements, which browsers render natively (MathML Core).
_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
_MATH_MARK = re.compile(r'TSBNMATH(\d{5})X')


def split_math(text:str) -> list[tuple[str, str]]:
    """Markdown as pieces ('text'|'inline'|'display', content): `$$...$$` is display math, `$...$` inline math (no
    space just inside the dollars, none followed by a digit: `$5 and $10` stay text), `\\$` a dollar sign; code spans
    and fenced code blocks are text."""
    out, buf, i, n, line_start = [], [], 0, len(text), True
    def flush():
        if buf: out.append(('text', ''.join(buf))); buf.clear()
    while i < n:
        if line_start and (m := _FENCE.match(text, i)):
            fence = m.group(1)
            close = re.compile(r'^ {0,3}' + re.escape(fence[0]) + '{%d,}[ \t]*$' % len(fence), re.M)
            eol = text.find('\n', i)
            c = close.search(text, eol + 1) if eol >= 0 else None
            end = n if c is None else c.end()
            buf.append(text[i:end]); i, line_start = end, False
            continue
        ch = text[i]
        line_start = ch == '\n'
        if ch == '\\' and i + 1 < n:                                        # an escape: `\$` is a dollar sign
            buf.append(text[i:i + 2]); i += 2; continue
        if ch == '`':                                                       # a code span: up to the same run of backticks
            j = i
            while j < n and text[j] == '`': j += 1
            m = re.compile(r'(?<!`)' + text[i:j] + r'(?!`)').search(text, j)
            end = m.end() if m else j
            buf.append(text[i:end]); i = end; continue
        if text.startswith('$$', i):
            j = text.find('$$', i + 2)
            if j > i + 2 and text[i + 2:j].strip():
                flush(); out.append(('display', text[i + 2:j])); i = j + 2; continue
        elif ch == '$' and i + 1 < n and not text[i + 1].isspace():
            j = i + 1
            while (j := text.find('$', j)) > 0 and '\n\n' not in text[i:j]:
                if text[j - 1] != '\\' and not text[j - 1].isspace() and not text[j + 1:j + 2].isdigit(): break
                j += 1
            else: j = -1
            if j > i + 1:
                flush(); out.append(('inline', text[i + 1:j])); i = j + 1; continue
        buf.append(ch); i += 1
    flush()
    return out


_DELIMS = {'\\lVert': '&#x02016;', '\\rVert': '&#x02016;', '\\Vert': '&#x02016;', '\\|': '&#x02016;', '\\lvert': '|',
           '\\rvert': '|', '\\vert': '|', '\\langle': '&#x027E8;', '\\rangle': '&#x027E9;', '\\lceil': '&#x02308;',
           '\\rceil': '&#x02309;', '\\lfloor': '&#x0230A;', '\\rfloor': '&#x0230B;', '\\{': '{', '\\}': '}'}


def to_mathml(tex:str, display:bool) -> str:
    "One equation as a MathML element; its LaTeX kept as an annotation (copyable, searchable)."
    try: from latex2mathml.converter import convert
    except ImportError:
        raise DocsError("docs: latex2mathml is not installed (it writes the equations as MathML): run `make install`, "
                        "or pip install 'tsbn_nb[dev]'") from None
    shown = re.sub(r'\\tag\{([^{}]*)\}', r'\\qquad\\text{(\1)}', tex.strip())   # latex2mathml glues \tag{2} to the equation
    mathml = convert(shown, display='block' if display else 'inline')
    # latex2mathml leaves a delimiter command after \big, \Big, \bigl... as text (`\big\lVert`): put the character in
    mathml = re.sub(r'(<mo\b[^>]*>)(\\[A-Za-z|{}]+)(</mo>)',
                    lambda m: m.group(1) + _DELIMS.get(m.group(2), m.group(2)) + m.group(3), mathml)
    unknown = re.findall(r'>(\\[A-Za-z]+)<', mathml)          # a command latex2mathml does not know is shown as text
    if unknown: raise ValueError(f"unknown command {unknown[0]}")
    note = f'<annotation encoding="application/x-tex">{html.escape(tex.strip())}</annotation>'
    # wrap the rendering and its source in <semantics>, as MathML does for an annotated expression
    head, sep, rest = mathml.partition('>')
    body = rest[:rest.rindex('</math>')]
    return f'{head}{sep}<semantics><mrow>{body}</mrow>{note}</semantics></math>'


class MathBox:
    "The equations cut out of one page, by placeholder."
    def __init__(self, key:str): self.key, self.items = key, []

    def protect(self, text:str, where:str) -> str:
        "`text` (markdown) with each equation replaced by a placeholder; an equation that cannot be converted is an error."
        parts = []
        for kind, s in split_math(text):
            if kind == 'text': parts.append(s); continue
            try: mathml = to_mathml(s, kind == 'display')
            except Exception as e:
                why = type(e).__name__ + (f': {e}' if str(e) else '')
                raise DocsError(f"docs: {self.key}: {where}: cannot render the equation ${s.strip()[:80]}$ as MathML "
                                f"({why}); write it with commands latex2mathml knows") from None
            parts.append(f'TSBNMATH{len(self.items):05d}X')
            self.items.append((s.strip(), mathml))
        return ''.join(parts)

    def restore(self, page_html:str) -> str:
        "Placeholders inside a tag (an anchor id from a heading) become the LaTeX text, the others the MathML."
        tex = lambda m: html.escape(self.items[int(m.group(1))][0], quote=True)
        page_html = re.sub(r'<[^<>]*TSBNMATH\d{5}X[^<>]*>', lambda t: _MATH_MARK.sub(tex, t.group(0)), page_html)
        return _MATH_MARK.sub(lambda m: self.items[int(m.group(1))][1], page_html)


def protect_math(nb:dict, key:str) -> tuple[dict, MathBox]:
    "The notebook with the equations of its markdown cells and markdown outputs replaced by placeholders."
    box, cells = MathBox(key), []
    for k, cell in enumerate(nb['cells']):
        if cell.get('cell_type') == 'markdown':
            cell = dict(cell, source=box.protect(_src(cell), f'cell {k}'))
        elif cell.get('cell_type') == 'code' and cell.get('outputs'):
            outs = []
            for o in cell['outputs']:
                md = o.get('data', {}).get('text/markdown')
                if md is not None:
                    md = ''.join(md) if isinstance(md, list) else md
                    o = dict(o, data=dict(o['data'], **{'text/markdown': box.protect(md, f'cell {k} (output)')}))
                outs.append(o)
            cell = dict(cell, outputs=outs)
        cells.append(cell)
    return dict(nb, cells=cells), box


_CSS = """
body.jp-Notebook { margin: 0; }
nav.tsbn-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 17rem; overflow-y: auto; padding: 1rem 0.9rem;
  background: #f6f7f9; border-right: 1px solid #dde1e6; font: 14px/1.35 system-ui, sans-serif; box-sizing: border-box; }
nav.tsbn-nav .tsbn-home { display: block; font-weight: 700; font-size: 1.15rem; margin-bottom: .2rem; color: #111; }
nav.tsbn-nav .tsbn-sub { color: #555; font-size: 12px; margin: 0 0 .8rem; }
nav.tsbn-nav h2 { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: #666; margin: 1rem 0 .3rem; }
nav.tsbn-nav ol { list-style: none; margin: 0; padding: 0; }
nav.tsbn-nav li a { display: block; padding: .25rem .4rem; border-radius: 4px; color: #1a4d8f; text-decoration: none; }
nav.tsbn-nav li a:hover { background: #e6ecf5; }
nav.tsbn-nav li a.current { background: #1a4d8f; color: #fff; }
main.tsbn-main { margin-left: 17rem; padding: 1rem 2rem 3rem; max-width: 72rem; }
.tsbn-note { border-left: 4px solid #1a4d8f; background: #eef3fa; padding: .5rem .8rem; font-size: 13px; color: #333; }
.tsbn-skipped { color: #8a5a00; font-size: 12px; margin: 0; }
math { font-size: 1.08em; }
math[display="block"] { margin: .7em 0; overflow-x: auto; }
@media (max-width: 900px) { nav.tsbn-nav { position: static; width: auto; border-right: 0; }
  main.tsbn-main { margin-left: 0; } }
"""

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block notebook_css %}<!--tsbn-css-->{{ super() }}<!--/tsbn-css-->{% endblock notebook_css %}
{% block html_head_css %}{{ super() }}<style>{{ resources.tsbn_css }}</style>{% endblock html_head_css %}
{#- nothing from the network: equations are MathML written at build time (no MathJax), no require.js, no mermaid,
    no widget manager (the pages hold no widgets) -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.tsbn_nav }}
<main class="tsbn-main">
{%- endblock body_header -%}
"""
_SHARED_CSS = re.compile(r'<!--tsbn-css-->(.*?)<!--/tsbn-css-->', re.S)


def share_css(page_html:str, folder:Path) -> str:
    "Move the JupyterLab stylesheet (the same ~300 kB on every page) into one file the pages link to."
    m = _SHARED_CSS.search(page_html)
    if not m: return page_html
    css = '\n'.join(re.findall(r'<style[^>]*>(.*?)</style>', m.group(1), re.S))
    name = f"lab-{hashlib.sha256(css.encode()).hexdigest()[:10]}.css"
    if not (folder / name).exists(): (folder / name).write_text(css, encoding='utf-8')
    return page_html[:m.start()] + f'<link rel="stylesheet" href="{name}">' + page_html[m.end():]


def nav_html(pages:list[Page], current:Page, subtitle:str) -> str:
    "The sidebar: every page of the site, grouped by section, the current one highlighted."
    out = ['<nav class="tsbn-nav" aria-label="pages">', '<a class="tsbn-home" href="index.html">tsbn_nb</a>',
           f'<p class="tsbn-sub">{html.escape(subtitle)}</p>']
    section = None
    for p in pages:
        if p.section != section:
            if section is not None: out.append('</ol>')
            out += [f'<h2>{html.escape(p.section)}</h2>', '<ol>']
            section = p.section
        label = p.title if p.out == 'index.html' else f'{Path(p.key.split(":")[-1]).stem} · {p.title}'
        cls = ' class="current"' if p is current else ''
        tip = f' title="{html.escape(p.summary)}"' if p.summary else ''
        out.append(f'<li><a href="{p.out}"{cls}{tip}>{html.escape(label)}</a></li>')
    out += ['</ol>', '</nav>']
    return '\n'.join(out)


_HREF = re.compile(r'href="([^"#?:]+\.ipynb)(#[^"]*)?"')

def rewrite_links(body:str, page:Page, pages:list[Page]) -> str:
    "Links between notebooks (`07_train.ipynb`, `experiments/run_fold.ipynb`) point at their pages."
    by_src = {p.src.resolve(): p.out for p in pages}
    def sub(m):
        target = (page.src.parent / html.unescape(m.group(1))).resolve()
        out = by_src.get(target)
        return f'href="{out}{m.group(2) or ""}"' if out else m.group(0)
    return _HREF.sub(sub, body)


_IMG = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')

def embed_local_images(body:str, page:Page, root:Path=ROOT) -> str:
    "Images a notebook's markdown takes from the repository (`../results/demo/fig4.png`) as data URIs in the page."
    def sub(m):
        src = html.unescape(m.group(2))
        if re.match(r'^(data|https?|file):', src): return m.group(0)
        f = (page.src.parent / src).resolve()
        mime = mimetypes.guess_type(f.name)[0]
        if not (f.is_relative_to(root) and f.is_file() and mime and mime.startswith('image/')): return m.group(0)
        return f'{m.group(1)}data:{mime};base64,{base64.b64encode(f.read_bytes()).decode()}{m.group(3)}'
    return _IMG.sub(sub, body)


def make_exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    ex = HTMLExporter(template_name='lab', extra_loaders=[DictLoader({'tsbn_page.html.j2': _TEMPLATE})],
                      template_file='tsbn_page.html.j2', embed_images=True,
                      exclude_input_prompt=True, exclude_output_prompt=True)
    ex.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'tsbn-hide-input'},
                                                   remove_all_outputs_tags={'tsbn-hide-output'}), enabled=True)
    return ex


def render(exporter, nb:dict, page:Page, pages:list[Page], subtitle:str, maths:MathBox|None=None) -> str:
    "One page's HTML; `maths`: the equations already cut out of `nb` by `protect_math` (done here when not given)."
    import nbformat
    if maths is None: nb, maths = protect_math(nb, _shown(page.src))
    node = nbformat.from_dict(nb)
    resources = {'metadata': {'path': str(page.src.parent), 'name': page.title},
                 'tsbn_nav': nav_html(pages, page, subtitle), 'tsbn_css': _CSS}
    body, _ = exporter.from_notebook_node(node, resources=resources)
    return maths.restore(embed_local_images(rewrite_links(body, page, pages), page))


def _shown(path:Path) -> str:
    "A path as the user knows it: relative to the repository when inside it."
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _git_commit() -> str:
    try:
        rev = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'nbs', 'tsbn_nb'], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + (' with uncommitted changes' if dirty else '')) if rev else 'unknown'
    except (OSError, subprocess.SubprocessError): return 'unknown'


def _version() -> str:
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", (ROOT / 'tsbn_nb' / '__init__.py').read_text())
    return m.group(1) if m else '?'


def _kernel_env(tmp:Path) -> dict:
    "A private kernelspec for this interpreter (whatever kernels the user has installed) and this checkout first on sys.path."
    kdir = tmp / 'jupyter' / 'kernels' / KERNEL_NAME
    kdir.mkdir(parents=True)
    (kdir / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-Xfrozen_modules=off', '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'Python 3 (tsbn docs)', 'language': 'python'}))
    pp = os.pathsep.join(p for p in (str(ROOT), os.environ.get('PYTHONPATH', '')) if p)
    return {'JUPYTER_PATH': os.pathsep.join(p for p in (str(tmp / 'jupyter'), os.environ.get('JUPYTER_PATH', '')) if p),
            'PYTHONPATH': pp, **DOCS_ENV}


def select_execution(pages:list[Page], execute:list[str]|None):
    "`None` or ['all']: every literate notebook; []/['none']: nothing; else the notebooks named (stem or file name)."
    if execute is None or execute == ['all']: return
    names = set(execute) - {'none'}
    known = {Path(p.key).stem for p in pages if p.execute}
    unknown = sorted(n for n in names if Path(n).stem not in known)
    if unknown:
        raise DocsError(f"--execute {' '.join(unknown)}: no such notebook in nbs/; choose from {', '.join(sorted(known))}")
    for p in pages:
        if p.execute and Path(p.key).stem not in {Path(n).stem for n in names}: p.execute = False


def build(out:Path, nbs:Path=ROOT / 'nbs', reference:Path|None=ROOT / 'results' / 'demo', execute:list[str]|None=None,
          workers:int=2, timeout:int=600, skip_flags=('notest',), log=print) -> list[Page]:
    "Build the site into `out` (replaced only on success); the pages built."
    if workers < 1: raise DocsError(f"--workers {workers}: give at least 1")
    pages = discover(nbs, reference)
    select_execution(pages, execute)
    todo = [p for p in pages if p.execute]
    executed, failures = {}, []
    commit, version, stamp = _git_commit(), _version(), datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    with tempfile.TemporaryDirectory(prefix='tsbn-docs-') as tmp:
        tmp = Path(tmp)
        if todo:
            shutil.copytree(nbs, tmp / 'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
            env = _kernel_env(tmp)
            log(f"docs: executing {len(todo)} notebook(s), {min(workers, len(todo))} at a time, "
                f"cells limited to {timeout} s")
            jobs = [(str(tmp / 'nbs' / p.key), _shown(p.src), str((tmp / 'nbs' / p.key).parent), timeout, list(skip_flags), env)
                    for p in todo]
            if workers == 1 or len(todo) == 1:
                results = (execute_notebook(*j) for j in jobs)
                pairs = zip(todo, results)
            else:
                pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)))
                futs = {pool.submit(execute_notebook, *j): p for j, p in zip(jobs, todo)}
                pairs = ((futs[f], f.result()) for f in cf.as_completed(futs))
            try:
                for p, (status, res, secs) in pairs:
                    if status == 'ok': executed[p.key] = res; log(f"docs:   {p.key} executed in {secs:.0f} s")
                    else: failures.append(res); log(f"docs:   {p.key} FAILED after {secs:.0f} s")
            finally:
                if workers > 1 and len(todo) > 1: pool.shutdown(cancel_futures=True)
        if failures:
            raise DocsError(f"docs: {len(failures)} notebook(s) failed to execute; {out} was not changed:\n"
                            + '\n'.join(failures))
        staging = out.with_name(out.name + '.partial')
        shutil.rmtree(staging, ignore_errors=True); staging.mkdir(parents=True)
        subtitle = f"built {stamp} from {commit}, tsbn_nb {version}"
        try: _render_all(pages, executed, skip_flags, staging, stamp, commit, subtitle)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True); raise          # an equation that cannot be drawn: nothing half-built
        (staging / '.nojekyll').write_text('')
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    log(f"docs: {len(pages)} pages ({len(executed)} executed) written to {out}")
    return pages


def _render_all(pages, executed, skip_flags, staging, stamp, commit, subtitle):
    "Every page into `staging`: executed notebooks with their outputs, the others as stored."
    exporter = make_exporter()
    for p in pages:
        nb = executed.get(p.key)
        if nb is not None:
            note = f"Executed when the docs were built ({stamp}, git {html.escape(commit)})."
        elif p.stored:
            nb = _read(p.src)
            note = (f"This notebook is shown as it was executed for the committed reference "
                    f"(<code>{html.escape(_shown(p.src))}</code>).")
        else:
            nb = _read(p.src)
            note = ("Source only: papermill runs this notebook once per (algorithm, fold, seed); executed copies "
                    "are written under <code>results/</code>." if p.key.startswith('experiments/') else
                    "Source only: this page was rendered without executing the notebook "
                    "(<code>make docs EXECUTE=0</code>); <code>make docs</code> shows its outputs and figures.")
        nb, maths = protect_math(nb, _shown(p.src))      # before the directives are applied: cell numbers as in the file
        nb = for_rendering(nb, p, p.key in executed, set(skip_flags), note)
        page_html = render(exporter, nb, p, pages, subtitle, maths)
        (staging / p.out).write_text(share_css(page_html, staging), encoding='utf-8')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--out', type=Path, default=ROOT / '_docs', help='the site folder (replaced on success)')
    ap.add_argument('--nbs', type=Path, default=ROOT / 'nbs', help='the notebooks folder')
    ap.add_argument('--reference', type=Path, default=ROOT / 'results' / 'demo',
                    help='a results folder whose executed report and one run are added as pages (skipped if absent)')
    ap.add_argument('--execute', nargs='*', default=None, metavar='NOTEBOOK',
                    help="execute only these notebooks (e.g. 06_losses); default: all of nbs/*.ipynb")
    ap.add_argument('--no-execute', action='store_true', help='render every notebook without executing it')
    ap.add_argument('--workers', type=int, default=2, help='notebooks executed at the same time')
    ap.add_argument('--timeout', type=int, default=600, help='seconds each cell may run')
    ap.add_argument('--skip-flags', default='notest', help='cells with these nbdev flags are not run (space-separated)')
    a = ap.parse_args(argv)
    t0 = time.time()
    try:
        build(a.out, a.nbs, a.reference, [] if a.no_execute else a.execute, a.workers, a.timeout, a.skip_flags.split())
    except DocsError as e:
        print(e, file=sys.stderr); return 1
    print(f"docs: done in {time.time() - t0:.0f} s; open {a.out / 'index.html'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
