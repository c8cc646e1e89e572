# The README's two commands. Each does its own set-up (a .venv at the repository root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.PHONY: install run test lint bench server ui
install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m runner model=lstm lr=0.001

# PYTEST_ARGS: e.g. make test PYTEST_ARGS="-m 'not slow'" for the fast tests only. pytest's exit code 5
# ("no tests collected", e.g. a -k that matches nothing) is reported, not treated as a failure.
PYTEST_ARGS ?=
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) || { code=$$?; [ $$code -eq 5 ] && echo "pytest: no tests collected"; \
		[ $$code -eq 5 ] || exit $$code; }

lint: $(STAMP)
	$(BIN)/ruff check runner models tests bench scripts

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
