# Everything a fresh machine needs: `make serve` runs the server, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
# The MLflow release to install: the newest of the tested range (docs/compatibility.md). CI
# also runs the suite on the oldest, and a subset on every minor in between.
MLFLOW ?= 3.18.0
# The oldest release of the tested range, which CI runs the whole suite on (setup.cfg has no
# floor: pip must never replace a user's older MLflow; the package refuses one at first use).
MLFLOW_OLDEST = 3.1.0
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
# The database. Tracking and MLflow's jobs use it as is (MLflow runs jobs only on a plain
# database URI); the model registry, where aliases live, goes through prompt-alias+.
DATABASE_URL ?= sqlite:///mlflow.db
PYTEST_ARGS ?=
# Which tests, as a pytest -m expression (CI: `MARKS="every_minor and not mysql"` on the minors).
MARKS ?=
# Most tests run on two workers (pytest-xdist; a module's tests stay on one worker, so its
# servers start once, and the long groups go first: tests/conftest.py); the few that time
# sub-second propagation (marked `alone`) then run by themselves. XDIST= runs everything in
# one process (the `alone` tests among the rest, one pytest run).
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder
# `make serve-auth`: MLflow's auth config, users' database and Flask secret (generated once).
AUTH_DIR ?= .mlflow-auth

.PHONY: install wheel serve serve-auth test test-quick coverage clean FORCE

# The dependencies, the test tools and MLflow $(MLFLOW), once per change of the package
# metadata or of the MLflow release (an environment holds one release: another's mark goes).
$(BIN)/.installed-$(MLFLOW): setup.cfg setup.py pyproject.toml scripts/install-deps
	rm -f $(BIN)/.installed-*
	flock .build.lock env PYTHON=$(PYTHON) scripts/install-deps $(VENV) $(MLFLOW)
	touch $@

# What the wheel is built from (README.md is its long description). Their list is kept in
# $(VENV)/.sources, rewritten only when a file is added or removed, so that a removal rebuilds
# the wheel too.
SOURCES := $(sort $(shell find mlflow_prompt_alias_store -type f ! -name '*.pyc' ! -path '*/__pycache__/*')) \
	setup.cfg setup.py pyproject.toml README.md

$(VENV)/.sources: FORCE
	@mkdir -p $(VENV)
	@echo '$(SOURCES)' > $@.new; if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

# Users install wheels, so this does too: a wheel built from the sources, installed
# non-editable (no stale build/ left to leak deleted files into it), again whenever a source,
# the list of sources or the environment changed, and only then. The build holds a lock: CI
# runs several environments' `make test` at once from one checkout.
$(VENV)/dist/.installed: $(BIN)/.installed-$(MLFLOW) $(VENV)/.sources $(SOURCES)
	rm -rf $(VENV)/dist
	flock .build.lock sh -c 'rm -rf build mlflow_prompt_alias_store.egg-info && \
		$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(VENV)/dist . && \
		rm -rf build mlflow_prompt_alias_store.egg-info'
	$(BIN)/pip install --quiet --no-deps --force-reinstall $(VENV)/dist/*.whl
	touch $@

wheel: $(VENV)/dist/.installed

install: wheel

# The server's worker processes: one per core, at most MLflow's default of 4.
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ "$$n" -gt 4 ] && n=4; echo $$n)

# PYTHONSAFEPATH: MLflow starts its workers with `python -m uvicorn`, which would put this
# checkout first on their sys.path and serve its sources rather than the installed wheel.
serve: install
	@$(BIN)/python scripts/port-free $(HOST) $(PORT)
	PYTHONSAFEPATH=1 $(BIN)/mlflow server --app-name prompt-alias --backend-store-uri $(DATABASE_URL) \
		--registry-store-uri prompt-alias+$(DATABASE_URL) --host $(HOST) --port $(PORT) --workers $(WORKERS)

# The same with MLflow's users and permissions (--app-name prompt-alias-auth); the first start
# generates the admin password and prints it.
serve-auth: install
	@$(BIN)/python scripts/port-free $(HOST) $(PORT)
	PYTHONSAFEPATH=1 scripts/serve-auth $(BIN) $(AUTH_DIR) $(DATABASE_URL) $(HOST) $(PORT) $(WORKERS)

# MARKS and a part's own selection, as one -m expression; pytest's exit code 5 (no test
# selected) is not a failure of a part.
marks = -m "$(if $(MARKS),($(MARKS)) and )$(1)"
pytest = $(BIN)/python -P -m pytest $(1) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# -P: the checkout is not put on sys.path, so the tests import the installed wheel. With
# XDIST= everything runs in one process, the `alone` tests in their turn (nothing runs beside
# them there): one collection, not two.
test: install
ifeq ($(strip $(XDIST)),)
	$(call pytest,$(if $(MARKS),-m "$(MARKS)"))
else
	$(call pytest,$(XDIST) $(call marks,not alone))
	$(call pytest,$(call marks,alone))
endif

# Branch coverage of the installed package over the whole suite (every process it starts),
# one pytest run per test module (scripts/coverage; PYTEST_ARGS as for `make test`).
coverage: install
	scripts/coverage $(VENV) $(PYTEST_ARGS)

# The inner loop, before every commit: every in-process test on SQLite; no server process,
# no PostgreSQL or MariaDB, no fresh environment (a test that starts a server here fails,
# saying to mark it).
QUICK = not server and not postgres and not mysql and not release
test-quick: install
	PROMPT_ALIAS_TEST_QUICK=1 $(call pytest,$(XDIST) $(call marks,$(QUICK) and not alone))
	PROMPT_ALIAS_TEST_QUICK=1 $(call pytest,$(call marks,$(QUICK) and alone))

clean:
	rm -rf $(VENV) .venv-* *.egg-info .pytest_cache build dist .build.lock
