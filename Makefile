# tsbn_nb: the two commands of the README are `make reproduce` and `make test`.
# Both create the virtual environment when it is absent (a fresh machine needs only python3.11).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tsbn-installed
DEV_STAMP := $(VENV)/.tsbn-dev-installed
PROFILE ?= demo
DATA ?= data/phantom
WORKERS ?= 2
# `make reproduce` trains afresh into RERUN (never into the committed reference), then verifies against REFERENCE.
SEEDS ?= 0
RERUN ?= results/rerun/$(PROFILE)
REFERENCE ?= results/$(PROFILE)
# Exact builds used for the committed results; settings.ini keeps looser ranges for other CUDA set-ups.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: install reproduce test export clean-nbs check-sync check-clean nbtest pytest bench bench-gpu phantom

install: $(DEV_STAMP)

# Runtime only (make reproduce, make phantom): the package, what it imports and the kernel its notebooks run in.
$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e . $(TORCH_PIN)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# What make test and the notebook tools need on top: the extras [dev] (nbdev, execnb, pytest), [lab] (jupyterlab,
# ipywidgets: notebook progress bars) and [dask] (distributed, dask-jobqueue), all covered by the tests.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lab,dask]' $(TORCH_PIN)
	$(BIN)/python -m pip check
	touch $(DEV_STAMP)

# The built-in synthetic INbreast-like dataset (deterministic: same seed, same bytes). Checked on every call:
# a no-op when the folder holds this phantom, rewritten when it holds an older generator's.
phantom: $(STAMP)
	$(BIN)/tsbn phantom $(DATA) --overwrite

reproduce: $(STAMP) phantom
	$(BIN)/tsbn reproduce --data $(DATA) --profile $(PROFILE) --workers $(WORKERS) --seeds $(SEEDS) \
	  --out $(RERUN) --verify $(REFERENCE)

export: $(DEV_STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(DEV_STAMP)
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_clean --fname nbs/experiments

# tsbn_nb/ must be exactly what nbdev_export makes of nbs/.
check-sync: $(DEV_STAMP)
	$(BIN)/nbdev_export
	@if [ -n "$$(git status --porcelain -- tsbn_nb)" ]; then \
	  git status --short -- tsbn_nb; \
	  echo "tsbn_nb/ is out of sync with nbs/: run 'make export' and commit both."; exit 1; fi

# Notebooks in nbs/ carry no outputs (executed copies live under results/).
check-clean: $(DEV_STAMP)
	$(BIN)/python tests/check_clean.py nbs

# Cells flagged `#| slow` (long training or rendering checks) are skipped by a plain `nbdev_test`, for a quick
# look while editing; make test runs them too, since they guard results (e.g. the phantom's shortcut probe).
nbtest: $(DEV_STAMP)
	$(BIN)/nbdev_test --n_workers 2 --flags slow

pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest -q tests

test: check-sync check-clean nbtest pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The GPU check of the paper profile (under 5 minutes on one GPU); refuses to run without one.
bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu.py

# The documentation site: every notebook of nbs/ executed in a temporary copy (nbs/ is never written) and rendered
# with its outputs and figures into _docs/ (open _docs/index.html); a notebook that fails is named with its cell.
# Equations are MathML written at build time and the pages load no script, so _docs/ renders offline; the GitHub Pages
# workflow (.github/workflows/pages.yaml) publishes the same build from main.
# `make docs EXECUTE=0` renders the sources without executing (seconds); DOCS_FLAGS passes more options, e.g.
# DOCS_FLAGS="--execute 04_pretext 06_losses", "--timeout 1200", or "--skip-flags 'notest slow'" (the long `#| slow`
# checks not run: faster). The kernels see TSBN_DOCS_BUILD=1, so a notebook may choose a smaller, documented setting for
# the docs. Not part of `make test`, whose tests/test_docs.py builds every page unexecuted plus the method notebooks
# 04_pretext and 06_losses executed.
EXECUTE ?= 1
DOCS_FLAGS ?=
.PHONY: docs
docs: $(DEV_STAMP)
	$(BIN)/python tools/build_docs.py --out _docs $(if $(filter 0,$(EXECUTE)),--no-execute,) $(DOCS_FLAGS)
