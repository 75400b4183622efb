# The two commands of modgap's README: `make lab` and `make test`.
# Both create .venv if it is missing and install modgap with its extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modgap-installed
LAB_ARGS ?=
# Jupyter refuses to start as root (containers, CI) without this flag
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?=

.PHONY: setup lab test test-lib test-benchmarks test-notebooks screenshots clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

test: test-lib test-notebooks

# tests/ includes test_benchmarks.py: every benchmarks/*.py in its --smoke mode
test-lib: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# the benchmarks' smoke runs alone
test-benchmarks: $(STAMP)
	$(PY) -m pytest tests/test_benchmarks.py $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(PY) -m pytest --nbmake --nbmake-timeout=600 notebooks $(PYTEST_ARGS); \
	else echo "no notebooks yet"; fi

# the browser test's screenshots, each notebook's key figure among them, into docs/screenshots/
screenshots: $(STAMP)
	MODGAP_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_browser.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
