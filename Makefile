# One verb per job. Everything runs from the project's own virtualenv in .venv/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch that pip finds locally; installed before anything that depends on torch
# so that DeepSpeed does not pull a multi-GB CUDA build. Override on GPU hosts: make setup TORCH=...
TORCH  ?= torch==2.13.0
EXTRAS ?= data,train,edge,search,sim,postgres,monitor,dev

.PHONY: setup redis-server postgresql demo test test-unit test-integration lint format bench clean

setup: $(VENV)/.installed redis-server postgresql

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $@

# redis-server >= 7 with TLS: through the system package manager when missing and allowed
# (root, or passwordless sudo); otherwise say what to install.
redis-server:
	@command -v redis-server >/dev/null 2>&1 && exit 0; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	else \
	  echo "redis-server not found: install redis-server >= 7.0 (built with TLS) and rerun"; exit 1; \
	fi

# PostgreSQL (initdb, postgres) for the measurement store's tests, which start a server of their
# own on a free port: found on PATH, by pg_config or in Debian's /usr/lib/postgresql/*/bin (off
# PATH); otherwise installed like redis-server, or say what to install.
postgresql:
	@for bin in "$$(command -v initdb 2>/dev/null | xargs -r dirname)" \
	  "$$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do \
	  [ -n "$$bin" ] && [ -x "$$bin/initdb" ] && [ -x "$$bin/postgres" ] && exit 0; \
	done; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
	  echo "PostgreSQL not found: install it (initdb and postgres, >= 13) and rerun"; exit 1; \
	fi

# The whole mission on this machine: synthetic data, the local stack, a search, the front, down.
demo: setup
	$(VENV)/bin/hpc2edge demo

test: setup
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest -m unit

test-integration: setup
	$(PY) -m pytest -m integration

lint: setup
	$(VENV)/bin/ruff check hpc2edge tests bench
	$(VENV)/bin/ruff format --check hpc2edge tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: setup
	$(VENV)/bin/ruff format hpc2edge tests bench
	$(VENV)/bin/ruff check --fix hpc2edge tests bench

bench: setup
	$(PY) bench/dispatch.py --n 500
	$(PY) bench/repeatability.py --runs 5
	$(PY) bench/loader.py
	$(PY) bench/models.py --repeats 3

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
