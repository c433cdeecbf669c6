# Every target installs what it needs first (uv, then the locked dependencies), so each works
# on a fresh machine. uv comes from PATH, else it is installed into .tools/ (no root needed).
SHELL := /bin/bash
PORT ?= 8000
export PORT
# Use the operating system's certificate store (works behind TLS-inspecting proxies too).
export UV_SYSTEM_CERTS ?= 1

UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)

.PHONY: run test lint migrate bench sync format

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv

sync: $(UV)
	$(UV) sync --locked

# The service alone: no development tools installed, and bytecode compiled once, for the
# libraries when the lock changes (compiling checks every file: half a second at each start
# otherwise) and for our own modules when they change (where PYTHONDONTWRITEBYTECODE is set,
# every start would otherwise compile every module again). Inexact: an extra installed apart
# (`uv sync --extra redis`) stays installed.
SOURCES := app database migrations notifications providers tasks utils
.venv/.bytecode: uv.lock | $(UV)
	$(UV) sync --locked --no-dev --inexact --compile-bytecode
	touch $@

run: .venv/.bytecode
	$(UV) sync --locked --no-dev --inexact
	$(UV) run --no-sync python -m compileall -q $(SOURCES)
	$(UV) run --no-sync python -m app serve --port $(PORT)

migrate: sync
	$(UV) run --locked python -m app migrate

test: sync
	$(UV) run --locked pytest

lint: sync
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy .
	$(UV) run --locked lint-imports
	$(UV) run --locked hadolint Dockerfile

format: sync
	$(UV) run --locked ruff check --fix .
	$(UV) run --locked ruff format .

bench: sync
	$(UV) run --locked python -m bench
