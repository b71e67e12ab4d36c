# Everything a fresh machine needs: `make serve` runs the server, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
# CI sets this to the oldest MLflow release of the range in setup.cfg.
MLFLOW_SPEC ?=
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
# The database. Tracking and MLflow's jobs use it as is (MLflow runs jobs only on a plain
# database URI); the model registry, where aliases live, goes through prompt-alias+.
DATABASE_URL ?= sqlite:///mlflow.db
PYTEST_ARGS ?=

.PHONY: install wheel serve test clean

# The dependencies and test tools, once per change of the package metadata.
$(BIN)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 'setuptools>=64' wheel
	$(BIN)/pip install --quiet '.[postgresql,mysql,test]' $(MLFLOW_SPEC)
	touch $@

# Users install wheels, so this does too: every run builds one from the current sources and
# installs it non-editable (no stale build/ left to leak deleted files into it).
wheel: $(BIN)/.installed
	rm -rf build dist mlflow_prompt_alias_store.egg-info
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .
	$(BIN)/pip install --quiet --no-deps --force-reinstall dist/*.whl
	rm -rf build mlflow_prompt_alias_store.egg-info

install: wheel

serve: install
	$(BIN)/mlflow server --app-name prompt-alias --backend-store-uri $(DATABASE_URL) \
		--registry-store-uri prompt-alias+$(DATABASE_URL) --host $(HOST) --port $(PORT)

# -P: the checkout is not put on sys.path, so the tests import the installed wheel.
test: install
	$(BIN)/python -P -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-oldest *.egg-info .pytest_cache build dist
