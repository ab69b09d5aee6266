"""Packaging for tsbn_nb: every field comes from settings.ini (nbdev 2.x), nothing is typed twice."""
from configparser import ConfigParser
import shlex
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

for key in ('version', 'description', 'repo', 'user', 'author', 'author_email', 'license', 'git_url', 'min_python'):
    if key not in cfg: raise SystemExit(f"settings.ini is missing '{key}': add it under [DEFAULT]")

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
pys = ['3.10', '3.11', '3.12', '3.13']
min_py = cfg['min_python']

requirements = shlex.split(cfg.get('requirements', ''))
# every `<name>_requirements` of settings.ini is the extra [name] (dev, lab, dask); [all] is their union
extras = {k[:-len('_requirements')]: shlex.split(v) for k, v in cfg.items() if k.endswith('_requirements') and v.strip()}
extras['all'] = sorted({r for rs in extras.values() for r in rs})
scripts = [s.strip() for s in cfg.get('console_scripts', '').split() if s.strip()]

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    keywords=cfg.get('keywords', '').split(),
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=lic[0],
    url=cfg['git_url'],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ([f'License :: {lic[1]}'] if lic[1] else [])
      + [f'Programming Language :: Python :: {v}' for v in pys[pys.index(min_py):]],
    # The papermill notebooks of `tsbn reproduce` / `tsbn report` ship as package data: nbs/experiments/ is mapped to
    # tsbn_nb/experiments/ in the wheel (one source, nothing copied by hand that could drift), so an installed tsbn_nb
    # finds them without a checkout (tsbn_nb.sweep.find_notebook), on a laptop or on a Dask worker.
    packages=setuptools.find_packages(include=['tsbn_nb', 'tsbn_nb.*']) + ['tsbn_nb.experiments'],
    package_dir={'tsbn_nb.experiments': 'nbs/experiments'},
    package_data={'tsbn_nb.experiments': ['*.ipynb']},
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + min_py,
    zip_safe=False,
    entry_points={
        'console_scripts': scripts,
        'nbdev': [f"{cfg['lib_name']}={cfg['lib_name']}._modidx:d"],
    },
)
