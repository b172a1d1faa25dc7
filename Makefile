# VoxCanvas — the two commands a newcomer needs are `make run` and `make test`.
#
# TORCH_PIP_ARGS is what `pip install` gets for PyTorch, before everything else. The default pin
# resolves to the CUDA build on a GPU machine and to a CPU wheel where one is provided locally, so
# the same command works on both. Pick another build explicitly, e.g.
#   make run TORCH_PIP_ARGS="torch==2.13.0 --index-url <your PyTorch wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_PIP_ARGS ?= torch==2.13.0
APT_PACKAGES ?= espeak-ng ffmpeg chromium
PY := $(VENV)/bin/python
STAMP := $(VENV)/.voxcanvas-installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test lint bench install system-deps clean help

help:
	@echo "make run    start VoxCanvas: the web playground (http://127.0.0.1:8080/), and the Discord bot when DISCORD_TOKEN is set in .env"
	@echo "make test   install everything into $(VENV) and run the test suite"
	@echo "make lint   ruff format check, ruff lint, mypy (part of make test)"
	@echo "make bench  run the benchmarks (CPU mode; BENCH_MODE=gpu on a GPU machine)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# Debian packages the tests need: espeak-ng speaks test voice notes, ffmpeg encodes them as
# OGG/Opus like Discord does (and decodes M4A for users), chromium (headless, driven by
# Playwright) tests the web playground.
system-deps:
	@missing=""; for tool in espeak-ng ffmpeg chromium; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

# ruff (format + lint) and mypy (strict on pipeline/, bot/, cogs/) first: seconds, and CI fails on them.
lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	@$(PY) -m bot

bench: $(STAMP) system-deps
	$(PY) -m bench --mode $(or $(BENCH_MODE),cpu)

clean:
	rm -rf $(VENV) .cache .pytest_cache
