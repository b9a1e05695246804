# One place for the project's commands. `make test` is what CI runs (.ci/run).
PY := .venv/bin/python
UV_VERSION := 0.13.8
PYTEST_ARGS ?=

.PHONY: install services run test test-python test-node lint typecheck check bench clean

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on our machines) nothing ever writes
# .pyc files, and every process start (each worker, streamer, simulator a test spawns) compiled
# ccxt and SQLAlchemy from source again: ~9 s of CPU instead of ~2.
install:  ## create .venv from the lock file (installs uv first if needed)
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	python3 -m uv sync --frozen --compile-bytecode
	@if [ -f clients/node/package.json ]; then cd clients/node && npm ci --no-audit --no-fund --silent; fi

services:  ## start the local Postgres and Redis if they are installed but stopped
	@bash .ci/services

run: install  ## the whole system on the simulator (pms up; Ctrl-C stops it). Then: .venv/bin/pms demo
	.venv/bin/pms up

test: install services  ## the whole test suite (Python, then the Node client)
	$(MAKE) test-python test-node

test-python:
	.venv/bin/pytest $(PYTEST_ARGS)

test-node:
	@if [ -f clients/node/package.json ]; then cd clients/node && npm test; fi

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck:
	.venv/bin/mypy

check: install services lint typecheck  ## ruff, mypy (strict) and the tests
	$(MAKE) test-python test-node

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache clients/node/node_modules
