# Two commands on a fresh machine: `make demo` and `make test` (each sets everything up first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench bench-peers check clean chromium airflow

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/d6tflow_workflow.py

# The report test renders a page in Debian's headless Chromium: installed when missing (root only).
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium could not be installed: the report rendering test will be skipped"

# A real Apache Airflow for the export test, in its own virtualenv (uv resolves it in seconds).
AIRFLOW_VENV ?= .venv-airflow
$(AIRFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet uv
	$(AIRFLOW_VENV)/bin/uv pip install --quiet --python $(AIRFLOW_VENV)/bin/python "apache-airflow==2.10.5"
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

test: install chromium airflow
	$(VENV)/bin/mypy --strict asyncflow tests/typing/user.py
	$(PY) -m pytest -q
	ASYNCFLOW_TEST_BACKEND=trio $(PY) -m pytest -q -m "not slow" tests

bench: install
	$(PY) -m benchmarks

bench-peers: install
	$(PY) -m pip install --quiet -e ".[bench-peers]"
	$(PY) -m benchmarks.peers 1000 10000

check: install
	$(VENV)/bin/ruff format --check asyncflow tests examples benchmarks
	$(VENV)/bin/ruff check asyncflow tests examples benchmarks
	$(MAKE) test

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) data .pytest_cache
