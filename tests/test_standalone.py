"""The project stands on its own: a LICENSE that is the one its metadata declares, a CITATION.cff that agrees with
settings.ini and with the README's reference of the paper, a CHANGELOG, and `python -m tsbn_nb` as the `tsbn` command."""
import configparser, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _settings():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']


def _citation() -> dict:
    yaml = pytest.importorskip('yaml')
    return yaml.safe_load((ROOT / 'CITATION.cff').read_text(encoding='utf-8'))


def test_license_file_is_the_declared_license():
    assert _settings()['license'] == 'apache2'
    text = (ROOT / 'LICENSE').read_text(encoding='utf-8')
    assert re.search(r'Apache License\s+Version 2\.0, January 2004', text)
    assert 'TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION' in text and 'END OF TERMS AND CONDITIONS' in text
    assert len(text) > 10_000                          # the whole text, not a pointer to it


def test_citation_agrees_with_the_metadata():
    s, cff = _settings(), _citation()
    assert cff['cff-version'] == '1.2.0' and cff['type'] == 'software'
    assert cff['version'] == s['version']
    assert cff['license'] == 'Apache-2.0'
    assert cff['repository-code'] == s['git_url']
    assert cff['url'] == s['doc_host'] + s['doc_baseurl']
    assert [a['name'] for a in cff['authors']] == [s['author']]
    for key in ('title', 'message', 'abstract'): assert cff[key].strip()


def test_citation_gives_the_papers_reference_as_the_readme_does():
    cff = _citation()
    paper = cff['preferred-citation']
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    bib = readme[readme.index('## Citation'):]
    title = re.search(r'title\s*=\s*\{(.+?)\},?\n', bib).group(1)
    authors = re.search(r'author\s*=\s*\{(.+?)\},?\n', bib).group(1).split(' and ')
    assert paper['title'] == title
    assert [f"{a['family-names']}, {a['given-names']}" for a in paper['authors']] == authors
    assert paper['type'] in {'generic', 'article', 'conference-paper'}


def test_changelog_covers_the_version():
    text = (ROOT / 'CHANGELOG.md').read_text(encoding='utf-8')
    assert text.startswith('# Changelog') and _settings()['version'] in text
    assert len(re.findall(r'^## ', text, re.M)) >= 3   # one section per phase


def test_python_m_tsbn_nb_is_the_tsbn_command(tmp_path):
    "From any folder, `python -m tsbn_nb` answers as the console script does: help, version, a refused command."
    def run(*args):
        return subprocess.run([sys.executable, '-m', 'tsbn_nb', *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    r = run('--version')
    assert (r.returncode, r.stdout.strip()) == (0, f"tsbn_nb {_settings()['version']}"), r.stderr
    r = run('--help')
    assert r.returncode == 0 and r.stdout.startswith('usage: tsbn ') and 'reproduce' in r.stdout
    r = run('reprodce')
    assert r.returncode == 2 and "invalid choice: 'reprodce'" in r.stderr and 'Traceback' not in r.stderr
