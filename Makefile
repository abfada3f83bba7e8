# Two entry points for a fresh machine: `make demo` (install + a real grokking run) and
# `make test` (install + the test suite, which also executes the notebooks in examples/ and builds
# the docs site with warnings as errors).  Both build the virtual env .venv on first use.
PY ?= python3.11
VENV := .venv
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
OUT ?= runs/demo

$(VENV)/.base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install torch==2.13.0        # the CPU build, before anything can pull a CUDA one
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -e ".[test,all]"
	touch $@

$(VENV)/.docs: $(VENV)/.base
	$(PIP) install -e ".[docs]"
	touch $@

.PHONY: demo test docs bench
demo: $(VENV)/.base
	$(VENV)/bin/li2 train --out $(OUT)-$$(date +%Y%m%d-%H%M%S)

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

bench: $(VENV)/.base
	$(VENV)/bin/python benchmarks/train_step.py
