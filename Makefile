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

.PHONY: install serve test clean

$(BIN)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[postgresql,mysql,test]' $(MLFLOW_SPEC)
	touch $@

install: $(BIN)/.installed

serve: install
	$(BIN)/mlflow server --app-name prompt-alias --backend-store-uri $(DATABASE_URL) \
		--registry-store-uri prompt-alias+$(DATABASE_URL) --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-oldest *.egg-info .pytest_cache
