# Context-Mixing in Speech Transformers -- the two commands a newcomer needs:
#
#   make run    build the offline data, execute every notebook (outputs/notebooks/, outputs/figures/)
#   make test   build the offline data, then the full test suite, then the widget browser tests
#               (JupyterLab 4; skipped with the install command when chromium is missing, failed under CI=true)
#
# Both create or reuse .venv (Python 3.10+; Debian/Ubuntu need python3-venv), install torch
# without CUDA when no GPU is present, install the course package with its extras, register the
# Jupyter kernel "ctxmix", and install the system packages (espeak-ng, MBROLA French voices) when
# run as root -- otherwise they print the exact apt commands and go on. A stamp file makes the
# install a quick no-op until pyproject.toml changes.
#
# Also: make lab (JupyterLab on the notebooks), make notebooks (after editing a notebook or its
#       source notebooks/src/NN_name.py: brings the other side up to date), make bench,
#       make clean, make help;
#       make colab-stack (Colab's pinned versions + the ipywidgets-7 front end, in .venv-colab),
#       make book (the static site of the executed course), make book-test, make ci-book;
#       .ci/run (CI) = make test, make ci-book, make colab-stack, timed into outputs/ci-times.txt.
#
# Variables (override on the command line, e.g. `make test PYTEST_ARGS="-k paths"`):
#   PYTHON           interpreter that creates the venv            (python3)
#   TORCH_SPEC       the torch to install when none is present    (torch==2.13.0)
#   TORCH_INDEX_URL  a wheel index for torch, e.g. a CUDA build   (empty: CPU build unless a GPU)
#   EXTRAS           package extras                               (offline,lab,dev)
#   WORKERS          pytest-xdist workers                         (2)
#   PYTEST_ARGS      more pytest arguments                        ()
#   BROWSER          0: make test leaves out the widget browser tests (make test-browser)   (1)
#   RUN_ARGS         more scripts/run_notebooks.py arguments      (e.g. "--only 03" or "--smoke")
#   NOTEBOOKS_ARGS   more scripts/sync_notebooks.py arguments     (e.g. "--only 03 --from py", "--check")
#   RECOMPUTE        1: notebooks 05-07 recompute the whole study instead of loading the shipped
#                    results in data/results/ (PRECOMPUTED=False; tens of minutes on 2 cores)   ()
#   LOCK             the exact versions to install (requirements/lock-pyXY.txt for the Python in
#                    use; `LOCK=` installs the newest releases within pyproject.toml's ranges)
#
# Locked installs: `make lock` re-writes the lock from the venv's tested versions;
# `make test-latest` tests the newest releases within the ranges in .venv-latest (drift check).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
EXTRAS ?= offline,lab,dev
WORKERS ?= 2
PYTEST_ARGS ?=
RUN_ARGS ?=
RECOMPUTE ?=
BROWSER ?= 1
KERNEL := ctxmix
STAMP := $(VENV)/.ctxmix-installed
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)
LOCK ?= requirements/lock-py$(PYVER).txt
LOCKED := $(if $(LOCK),$(wildcard $(LOCK)))
PIP_INSTALL_ARGS ?=
LATEST_VENV ?= .venv-latest
UV_SPEC ?= uv==0.13.9

export TORCH_SPEC TORCH_INDEX_URL

.DEFAULT_GOAL := help
.PHONY: help install system data run test shipped lab notebooks bench clean clean-all lock test-latest test-browser browser-deps colab-stack colab-env book book-env book-test ci-book

help:
	@echo "make run    build the offline data and execute every notebook (outputs/notebooks, outputs/figures)"
	@echo "make test   run the full test suite (notebooks included, smoke parameters), then the widget browser tests (BROWSER=0: without)"
	@echo "make run RECOMPUTE=1  notebooks 05-07 recompute the study instead of loading data/results/"
	@echo "make shipped  regenerate the shipped results in data/results/ (~1 h on 2 cores)"
	@echo "make test-latest  the test suite on the newest releases within pyproject's ranges (.venv-latest)"
	@echo "make lock   re-write requirements/lock-pyXY.txt from the versions installed in the venv"
	@echo "make lab    open JupyterLab on notebooks/"
	@echo "make notebooks  after editing a notebook (.ipynb) or its source (notebooks/src/NN_name.py): sync the other side"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make clean  remove outputs/, data/build/ and Python caches (keeps .venv; 'make clean-all' removes it too)"
	@echo "make test-browser the widget browser tests (chromium + Playwright, JupyterLab 4)"
	@echo "make colab-stack  notebooks + widget browser tests on Colab's pinned stack (ipywidgets 7, .venv-colab)"
	@echo "make book         the course as a static site from outputs/notebooks (after make run): outputs/book/_build/html"
	@echo "make book-test    browser test of the built site (every page, image and internal link)"

# ---- environment ---------------------------------------------------------------------------
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, this is " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) || { echo "Creating $(VENV) failed. On Debian/Ubuntu: sudo apt-get install -y python3-venv"; rm -rf $(VENV); exit 1; }
	$(PY) -m pip install --quiet --upgrade "pip>=23"

$(STAMP): pyproject.toml $(LOCKED) | $(PY)
	@echo "== torch"
	$(if $(LOCKED),PIP_CONSTRAINT=$(abspath $(LOCKED))) $(PY) scripts/install_torch.py
	@echo "== the course package with extras $(EXTRAS), $(if $(LOCKED),the exact versions of $(LOCKED),the newest releases within pyproject.toml's ranges$(if $(LOCK), (no $(LOCK) for this Python)))"
	@$(PY) -c 'import torch; print("torch==" + torch.__version__)' > $(VENV)/.torch-pin.txt
	$(PY) -m pip install --quiet $(PIP_INSTALL_ARGS) -c $(VENV)/.torch-pin.txt $(if $(LOCKED),-c $(LOCKED)) -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (ctxmix)"
	@touch $@

install: $(STAMP)

# Quick when everything is there; as root installs with apt, otherwise prints the commands
# (espeak-ng + MBROLA voices for the data, Debian's chromium for the browser tests).
system: install
	@$(PY) -m ctxmix_lite.course.colab --install-system
	@sh ci/install-chromium.sh

# ---- the two commands ----------------------------------------------------------------------
data: system
	$(PY) scripts/build_data.py

run: data
	$(PY) scripts/run_notebooks.py $(if $(filter 1 yes true,$(RECOMPUTE)),-p PRECOMPUTED False) $(RUN_ARGS)

# The full offline data set is built first: the shipped-results tests and notebooks 05-07
# (PRECOMPUTED) re-check the committed results on its items. Then (BROWSER=1, the default) the
# widget browser tests on JupyterLab 4 + ipywidgets 8, one at a time: both parts always run and
# make test fails when either fails. Without chromium (not root, so `make system` could only print
# the apt command) they are skipped with that command; with CI=true that is a failure.
BROWSER_PYTEST = CTXMIX_STRICT_CHECKS=1 MPLBACKEND=Agg $(PY) -m pytest -n 0 -ra -m browser tests/browser/test_widgets_browser.py $(PYTEST_ARGS)
test: data
	@rc=0; \
	CTXMIX_STRICT_CHECKS=1 MPLBACKEND=Agg $(PY) -m pytest -n $(WORKERS) --dist loadgroup -ra --durations=15 -m "not browser" $(PYTEST_ARGS) || rc=$$?; \
	if [ "$(BROWSER)" = 1 ]; then \
	  echo "== the widget browser tests (JupyterLab 4 + ipywidgets 8; make test BROWSER=0 leaves them out)"; \
	  $(BROWSER_PYTEST) || { r=$$?; [ $$r -eq 5 ] || rc=$$r; }; \
	fi; \
	exit $$rc

# The widget browser tests alone (tests/browser/, JupyterLab 4 + ipywidgets 8 in .venv).
test-browser: browser-deps
	$(BROWSER_PYTEST)

# Re-write the lock from the versions installed in $(VENV) (after testing them), e.g. after
# `make test-latest`: `make lock VENV=.venv-latest`. Resolved by uv on this Python only.
lock: | $(PY)
	$(PY) -m pip install --quiet "$(UV_SPEC)"
	$(PY) scripts/make_lock.py --uv $(VENV)/bin/uv -o requirements/lock-py$(PYVER).txt

# Drift check: the newest releases within pyproject.toml's ranges (no lock; torch stays the one
# scripts/install_torch.py installed: .torch-pin.txt keeps `--upgrade` from swapping it for the
# default CUDA wheel), re-resolved on every call, then the whole test suite.
test-latest:
	rm -f $(LATEST_VENV)/.ctxmix-installed
	$(MAKE) test VENV=$(LATEST_VENV) LOCK= PIP_INSTALL_ARGS="--upgrade --upgrade-strategy eager"

# Re-compute the shipped results (data/results/) at the notebooks' default parameters: after the
# data, the models or the study's definitions change. Resumes from the study cache.
shipped: data
	$(PY) -m ctxmix_lite.study.shipped

# ---- extras --------------------------------------------------------------------------------
lab: system
	$(VENV)/bin/jupyter lab notebooks/

# Each notebook NN_name.ipynb is written as the jupytext py:percent source notebooks/src/NN_name.py.
# After an edit of either side (in Jupyter or an editor): the more recently modified side wins, the
# other is rewritten, and the .ipynb is committed clean (no outputs, counts or widget state). Stops
# without writing when both sides were edited since the last commit and disagree: add
# NOTEBOOKS_ARGS="--from py" (or "--from ipynb"). `make test` fails while a pair is out of sync.
NOTEBOOKS_ARGS ?=
notebooks: install
	$(PY) scripts/sync_notebooks.py $(NOTEBOOKS_ARGS)

bench: install
	@set -e; for f in bench/*.py; do [ -e "$$f" ] || { echo "no benchmarks in bench/"; break; }; echo "== $$f"; $(PY) "$$f"; done

clean:
	rm -rf outputs data/build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find notebooks -name .ipynb_checkpoints -type d -exec rm -rf {} +

clean-all: clean
	rm -rf $(VENV) $(COLAB_VENV) $(BOOK_VENV)

# ---- where learners meet the course: browsers, Colab's stack, the site ---------------------
# The browser tests (tests/browser/) need Playwright (the `browser` extra, part of `dev`) and
# Debian's chromium (`make system` installs it as root, else prints the command).
browser-deps: system
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet -e ".[browser]"

# Colab's stack: a separate venv with the versions pinned in ci/colab-stack.txt (dated), the course
# installed exactly as the Colab set-up cell does it (pip install -e ".[offline]", no lab extra),
# then only what the test runner needs. The same venv is the ipywidgets-7 front end (Colab's
# ipywidgets 7.7.1 + the classic notebook 6.5), so the widget browser tests run there too.
COLAB_VENV ?= .venv-colab
COLAB_PY := $(COLAB_VENV)/bin/python
COLAB_PINS := ci/colab-stack.txt
COLAB_STAMP := $(COLAB_VENV)/.ctxmix-colab-installed
COLAB_TESTS ?= tests/test_notebooks.py tests/test_widgets.py tests/test_colab.py tests/browser/test_widgets_browser.py

$(COLAB_STAMP): $(COLAB_PINS) pyproject.toml
	@rm -rf $(COLAB_VENV)
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_PY) -m pip install --quiet --upgrade "pip>=23"
	@echo "== Colab's stack ($(COLAB_PINS))"
	TORCH_SPEC="$$(sed -n 's/^# *TORCH_SPEC: *//p' $(COLAB_PINS))" $(COLAB_PY) scripts/install_torch.py
	$(COLAB_PY) -m pip install --quiet -r $(COLAB_PINS)
	@echo "== the course, as Colab's set-up cell installs it"
	$(COLAB_PY) -m pip install --quiet -e ".[offline]"
	$(COLAB_PY) ci/check_colab_stack.py $(COLAB_PINS)
	@echo "== the test runner only"
	$(COLAB_PY) -m pip install --quiet "pytest>=8" "pytest-xdist>=3.5" "papermill>=2.5" "nbformat>=5.9" "ipykernel>=6.25" \
	    "jupytext>=1.19,<2" "pyflakes>=3.2" \
	    $$($(PYTHON) ci/extra.py browser)
	$(COLAB_PY) ci/check_colab_stack.py $(COLAB_PINS)
	$(COLAB_PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (ctxmix, Colab stack)"
	@touch $@

colab-env: $(COLAB_STAMP)

colab-stack: colab-env system
	$(COLAB_PY) ci/check_colab_stack.py $(COLAB_PINS)
	CTXMIX_STRICT_CHECKS=1 MPLBACKEND=Agg $(COLAB_PY) -m pytest -n $(WORKERS) --dist loadgroup -ra --durations=10 \
	    -p no:cacheprovider $(COLAB_TESTS) $(PYTEST_ARGS)

# The course as a static site (Jupyter Book 1.x, in its own venv: it pins older Sphinx/markdown
# packages than the course's .venv holds). Built from outputs/notebooks (make run first);
# BOOK_NOTEBOOKS picks other executed notebooks (CI: the smoke runs of the test suite).
BOOK_VENV ?= .venv-book
BOOK_PY := $(BOOK_VENV)/bin/python
BOOK_STAMP := $(BOOK_VENV)/.ctxmix-book-installed
BOOK_NOTEBOOKS ?= outputs/notebooks
BOOK_FIGURES ?= $(dir $(BOOK_NOTEBOOKS:/=))figures
BOOK_OUT ?= outputs/book

$(BOOK_STAMP): pyproject.toml
	@test -x $(BOOK_PY) || $(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_PY) -m pip install --quiet --upgrade "pip>=23"
	$(BOOK_PY) -m pip install --quiet $$($(PYTHON) ci/extra.py book)
	@touch $@

book-env: $(BOOK_STAMP)

book: book-env
	@test -n "$$(ls $(BOOK_NOTEBOOKS)/[0-9][0-9]_*.ipynb 2>/dev/null)" || { echo "No executed notebooks in $(BOOK_NOTEBOOKS): run 'make run' first."; exit 1; }
	$(BOOK_PY) scripts/build_book.py --notebooks $(BOOK_NOTEBOOKS) --figures $(BOOK_FIGURES) --out $(BOOK_OUT)

book-test: browser-deps
	CTXMIX_BOOK_HTML=$(BOOK_OUT)/_build/html $(PY) -m pytest -n 0 -ra -p no:cacheprovider tests/browser/test_book_browser.py $(PYTEST_ARGS)

# CI: the site from the notebooks the test suite executed (make test keeps them in outputs/ci-run).
ci-book:
	$(MAKE) --no-print-directory book BOOK_NOTEBOOKS=outputs/ci-run/notebooks BOOK_FIGURES=outputs/ci-run/figures BOOK_OUT=outputs/ci-book
	$(MAKE) --no-print-directory book-test BOOK_OUT=outputs/ci-book
