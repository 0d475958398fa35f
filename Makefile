# The two commands: `make demo` (install, then run the demo) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install browser demo test test-pg15 test-pg15-server test-load wheel-check bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/modelwatch demo

# Headless Chromium (Debian's package) opens the HTML reports in the tests.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium package to run the browser tests"; exit 1; fi; }

# TEST_WORKERS=N runs the suite in N processes (pytest-xdist, a file to each in turn,
# each with an embedded server of its own). One by default: the suite is bound by CPU
# in dbt, and on 2 cores two processes took longer than one (docs/testing.md).
TEST_WORKERS ?= 0
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
test: install browser
	$(BIN)/pytest $(XDIST)

# The suite once more against another server (this machine's PostgreSQL 15),
# but for the tests marked `once` (Prefect, the notebook, the compose
# entrypoint, a project of one's own, lost servers and full disks on servers
# of their own: the server makes no difference to them); `make test` uses the
# embedded PostgreSQL 18.
PG15_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
test-pg15: install browser
	MODELWATCH_TEST_DATABASE_URL=$(PG15_URL) $(BIN)/pytest $(XDIST) \
	  -m 'not load and not once and not unsettled'

# What CI runs against PostgreSQL 15: the files whose outcome depends on the
# server's version (roles and privileges, the marts' SQL and its arithmetic,
# the panels' SQL as the reader, migrations, views, non-finite values), so
# that CI stays well under 30 minutes; `make test-pg15` is the whole suite.
PG15_SERVER_FILES := $(addprefix python/tests/,test_security.py test_performance_metrics.py \
  test_quality_crosscheck.py test_dbt_project.py test_migration.py test_views.py test_non_finite.py \
  test_grafana.py test_estimation.py)
test-pg15-server: install browser
	MODELWATCH_TEST_DATABASE_URL=$(PG15_URL) $(BIN)/pytest $(XDIST) \
	  -m 'not load and not once and not unsettled' $(PG15_SERVER_FILES)

# A year of daily batches through one backfill process: passes, row counts,
# memory, file descriptors and connections flat (about 2 minutes; CI runs it).
test-load: install
	$(BIN)/pytest -m load -s python/tests/test_load.py

# The wheel as a user gets it: built, installed (not editable) into a fresh venv, then
# --version, the demo (28 passed batches) and status --json from an empty folder (CI runs it).
wheel-check:
	bash .ci/wheel-check $(PYTHON)

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	$(BIN)/modelwatch db stop || true
	rm -rf .modelwatch target logs
