# The README's two commands. Each does its own set-up (a .venv at the repository root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Exact versions from constraints.txt: a new Hydra candidate or final reaches the project through a
# commit (make lock), never by surprise in CI.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

.PHONY: install lock run test test-fast lint format bench server ui
install: $(STAMP)

# Re-resolve every dependency from pyproject.toml's bounds in a throw-away venv and write the exact
# versions to constraints.txt; review the diff, run make test, commit both files together.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[dev]'
	.venv-lock/bin/pip check
	{ echo "# Exact versions of everything 'make install' puts in .venv (pip install -c constraints.txt -e '.[dev]')."; \
	  echo "# Refresh with 'make lock' (a fresh venv resolved from pyproject.toml's bounds, then pip freeze)."; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-lock

# RUN_ARGS: more overrides, e.g. make run RUN_ARGS="epochs=1 data.train_stride=16" (tests/test_readme.py uses it).
RUN_ARGS ?=
run: $(STAMP)
	$(BIN)/python -m runner model=lstm lr=0.001 $(RUN_ARGS)

# PYTEST_ARGS: e.g. make test PYTEST_ARGS="-m 'not slow'" for the fast tests only. pytest's exit code 5
# ("no tests collected", e.g. a -k that matches nothing) is reported, not treated as a failure.
# TEST_WORKERS: test files run on this many pytest-xdist workers, each file whole on one worker (its
# module fixtures, such as a tracking server, are started once); much of a test's time is waiting on
# subprocesses and servers, so 2 workers also pay on 2 cores. TEST_WORKERS=0: one test at a time.
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || { code=$$?; \
		[ $$code -eq 5 ] && echo "pytest: no tests collected"; [ $$code -eq 5 ] || exit $$code; }

# The development loop: the tests not marked slow (no training beyond a few seconds) on every core
# (pytest-xdist). CI runs `make test`: everything, slow tests included.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n auto $(PYTEST_ARGS)

LINTED := runner models tests bench scripts/mlflow-server
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

bench: $(STAMP)
	$(BIN)/python -m bench

# A shared tracking server for a local trial: PostgreSQL on 127.0.0.1:5432 (database `mlflow`), artifacts
# served from outputs/server-artifacts. SERVER_ARGS: e.g. "--port 5001 --auth" (see scripts/mlflow-server -h).
SERVER_ARGS ?=
server: $(STAMP)
	$(BIN)/python scripts/mlflow-server $(SERVER_ARGS)

# The MLflow UI on the project's store: the tracking server when MLFLOW_TRACKING_URI is http(s), else the
# embedded store under outputs/ served at http://127.0.0.1:$(UI_PORT).
UI_PORT ?= 5050
ui: $(STAMP)
	@case "$${MLFLOW_TRACKING_URI:-}" in \
		http://*|https://*) echo "the UI is the tracking server itself: open $$MLFLOW_TRACKING_URI" ;; \
		*) $(BIN)/python scripts/mlflow-server --embedded outputs --port $(UI_PORT) --workers 1 ;; \
	esac
