# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv and runs the main job on the embedded defaults: a request in
#               words, planned by the coordinator and run by agents on the local model (no API
#               key, no server, no network)
#   make test   installs into .venv (with test extras) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev

REQUEST ?= Build a restaurant website with booking

.PHONY: install run example test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'

run: install
	$(BIN)/parallel-agents run "$(REQUEST)"

example: install
	$(BIN)/parallel-agents run examples/restaurant.yaml

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/makespan.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
