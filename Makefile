# The two commands: `make demo` (install, then run the demo) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install browser demo test bench clean

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

test: install browser
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	$(BIN)/modelwatch db stop || true
	rm -rf .modelwatch target logs
