# Everything a fresh machine needs: `make serve` runs the server, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
# The MLflow release to install: the newest of the tested range (docs/compatibility.md). CI
# also runs the suite on the oldest, and a subset on every minor in between.
MLFLOW ?= 3.18.0
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
# The database. Tracking and MLflow's jobs use it as is (MLflow runs jobs only on a plain
# database URI); the model registry, where aliases live, goes through prompt-alias+.
DATABASE_URL ?= sqlite:///mlflow.db
PYTEST_ARGS ?=
# `make serve-auth`: MLflow's auth config, users' database and Flask secret (generated once).
AUTH_DIR ?= .mlflow-auth

.PHONY: install wheel serve serve-auth test clean

# The dependencies, the test tools and MLflow $(MLFLOW), once per change of the package
# metadata or of the MLflow release.
$(BIN)/.installed-$(MLFLOW): setup.cfg setup.py pyproject.toml scripts/install-deps
	flock .build.lock env PYTHON=$(PYTHON) scripts/install-deps $(VENV) $(MLFLOW)
	touch $@

# Users install wheels, so this does too: every run builds one from the current sources and
# installs it non-editable (no stale build/ left to leak deleted files into it). The build
# holds a lock: CI runs several environments' `make test` at once from one checkout.
wheel: $(BIN)/.installed-$(MLFLOW)
	rm -rf $(VENV)/dist
	flock .build.lock sh -c 'rm -rf build mlflow_prompt_alias_store.egg-info && \
		$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(VENV)/dist . && \
		rm -rf build mlflow_prompt_alias_store.egg-info'
	$(BIN)/pip install --quiet --no-deps --force-reinstall $(VENV)/dist/*.whl

install: wheel

serve: install
	$(BIN)/mlflow server --app-name prompt-alias --backend-store-uri $(DATABASE_URL) \
		--registry-store-uri prompt-alias+$(DATABASE_URL) --host $(HOST) --port $(PORT)

# The same with MLflow's users and permissions (--app-name prompt-alias-auth); the first start
# generates the admin password and prints it.
serve-auth: install
	scripts/serve-auth $(BIN) $(AUTH_DIR) $(DATABASE_URL) $(HOST) $(PORT)

# -P: the checkout is not put on sys.path, so the tests import the installed wheel.
test: install
	$(BIN)/python -P -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-* *.egg-info .pytest_cache build dist .build.lock
