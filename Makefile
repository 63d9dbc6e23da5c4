# Two commands do everything: `make test` and `make demo`.
# Both create (or reuse, when neither pyproject.toml nor constraints.txt has changed) the virtual
# environment in .venv, with the exact package versions of constraints.txt.
PYTHON ?= python3
VENV   := .venv
READY  := $(VENV)/.ready
PY     := $(VENV)/bin/python

.PHONY: test demo venv clean

venv: $(READY)

$(READY): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	$(PY) -c "import ssl_ray, ray, ultralytics, torch, pyarrow, boto3"
	touch $(READY)

# The whole suite: lint and format checks, then every test. pytest exits non-zero (5) when it
# collects no test, so that fails too.
test: $(READY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The real multi-round job on the embedded default: local Ray, local disk, bundled synthetic data.
demo: $(READY)
	$(VENV)/bin/ssl-ray demo --out runs/demo

clean:
	rm -rf runs .pytest_cache
