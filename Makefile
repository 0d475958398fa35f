# The two commands: `make demo` (install, then run the demo) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install demo test bench docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/modelwatch demo

test: install
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	$(BIN)/modelwatch db stop || true
	rm -rf .modelwatch target logs
