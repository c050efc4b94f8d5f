# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv and runs the example plan on the embedded defaults
#   make test   installs into .venv (with test extras) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'

run: install
	$(BIN)/parallel-agents run examples/restaurant.yaml

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/makespan.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
