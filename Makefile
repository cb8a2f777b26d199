# Context-Mixing in Speech Transformers -- the two commands a newcomer needs:
#
#   make run    build the offline data, execute every notebook (outputs/notebooks/, outputs/figures/)
#   make test   the full test suite (what CI runs through .ci/run)
#
# Both create or reuse .venv (Python 3.10+; Debian/Ubuntu need python3-venv), install torch
# without CUDA when no GPU is present, install the course package with its extras, register the
# Jupyter kernel "ctxmix", and install the system packages (espeak-ng, MBROLA French voices) when
# run as root -- otherwise they print the exact apt commands and go on. A stamp file makes the
# install a quick no-op until pyproject.toml changes.
#
# Also: make lab (JupyterLab on the notebooks), make bench, make clean, make help.
#
# Variables (override on the command line, e.g. `make test PYTEST_ARGS="-k paths"`):
#   PYTHON           interpreter that creates the venv            (python3)
#   TORCH_SPEC       the torch to install when none is present    (torch==2.13.0)
#   TORCH_INDEX_URL  a wheel index for torch, e.g. a CUDA build   (empty: CPU build unless a GPU)
#   EXTRAS           package extras                               (offline,lab,dev)
#   WORKERS          pytest-xdist workers                         (2)
#   PYTEST_ARGS      more pytest arguments                        ()
#   RUN_ARGS         more scripts/run_notebooks.py arguments      (e.g. "--only 03" or "--smoke")
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
.PHONY: help install system data run test lab bench clean clean-all lock test-latest

help:
	@echo "make run    build the offline data and execute every notebook (outputs/notebooks, outputs/figures)"
	@echo "make test   run the full test suite (notebooks included, smoke parameters)"
	@echo "make test-latest  the test suite on the newest releases within pyproject's ranges (.venv-latest)"
	@echo "make lock   re-write requirements/lock-pyXY.txt from the versions installed in the venv"
	@echo "make lab    open JupyterLab on notebooks/"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make clean  remove outputs/, data/build/ and Python caches (keeps .venv; 'make clean-all' removes it too)"

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

# Quick when everything is there; as root installs with apt, otherwise prints the commands.
system: install
	@$(PY) -m ctxmix_lite.colab --install-system

# ---- the two commands ----------------------------------------------------------------------
data: system
	$(PY) scripts/build_data.py

run: data
	$(PY) scripts/run_notebooks.py $(RUN_ARGS)

test: system
	CTXMIX_STRICT_CHECKS=1 MPLBACKEND=Agg $(PY) -m pytest -n $(WORKERS) --dist loadgroup -ra --durations=15 $(PYTEST_ARGS)

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

# ---- extras --------------------------------------------------------------------------------
lab: system
	$(VENV)/bin/jupyter lab notebooks/

bench: install
	@set -e; for f in bench/*.py; do [ -e "$$f" ] || { echo "no benchmarks in bench/"; break; }; echo "== $$f"; $(PY) "$$f"; done

clean:
	rm -rf outputs data/build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find notebooks -name .ipynb_checkpoints -type d -exec rm -rf {} +

clean-all: clean
	rm -rf $(VENV)
