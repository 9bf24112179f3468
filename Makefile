# Two commands matter: `make run` and `make test`. Each bootstraps what it needs:
# a private uv in .tools/, then the locked dependencies in .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
LINT_PATHS := src tests $(wildcard bench)

.PHONY: run test lint fmt bench bench-alternatives soak chaos demo migrate lock clean

# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set (CI images, containers) every
# process would compile all it imports again, seconds of CPU at every start of a Keel process.
# `make run` and `make test` compile Keel's own sources the same way (a fraction of a second).
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	@touch $@

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# make run PORT=8001 HOST=0.0.0.0 DATA_DIR=.keel-2: another port, interface or data folder.
run: $(VENV)/.synced
	$(BIN)/python -m compileall -q src
	$(BIN)/keel up $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# Two pytest-xdist workers, each with its own PostgreSQL, Redis and broker; a module stays on one worker
# (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
test: $(VENV)/.synced
	$(BIN)/python -m compileall -q src
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(VENV)/.synced
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

fmt: $(VENV)/.synced
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

# Every hot path beside its limit, measured in one run (~6 min on 2 cores); table in bench/results/latest.md.
bench: $(VENV)/.synced
	$(BIN)/python -m bench.run

# Keel's HTTP server, cache and breaker beside the libraries that could replace them, added for
# the run only; bench/results/alternatives.md, quoted by docs/design-decisions.md.
ALTERNATIVES := cashews==7.6.0 aiobreaker==1.2.0 purgatory==3.0.1 httptools==0.9.0
bench-alternatives: $(VENV)/.synced
	$(UV) run --locked $(foreach p,$(ALTERNATIVES),--with $(p)) python -m bench.alternatives

# `keel up` under create load for 10 minutes: RSS growth from the post-warm-up level (≤ 10 %); bench/results/soak.md.
soak: $(VENV)/.synced
	$(BIN)/python -m bench.soak

# Against a running platform (`make run` in another terminal); DEMO_ARGS="--brokers host:9092" etc.
demo: $(VENV)/.synced
	$(BIN)/keel demo $(DEMO_ARGS)

# The fault, fuzz and abuse suites at full size (CI runs them small inside `make test`).
chaos: $(VENV)/.synced
	KEEL_CHAOS_SCALE=10 $(BIN)/pytest -m "chaos or cluster" tests/chaos tests/cluster tests/fuzz tests/security -s

migrate: $(VENV)/.synced
	$(BIN)/keel migrate

lock: | $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
