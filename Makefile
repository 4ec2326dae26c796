# Two commands on a fresh machine: `make demo` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/d6tflow_workflow.py

test: install
	$(PY) -m pytest -q
	ASYNCFLOW_TEST_BACKEND=trio $(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) -m benchmarks

check: install
	$(VENV)/bin/ruff format --check asyncflow tests examples benchmarks
	$(VENV)/bin/ruff check asyncflow tests examples benchmarks
	$(MAKE) test

clean:
	rm -rf $(VENV) data .pytest_cache
