# The two commands a new machine needs: `make run` and `make test`. Both set everything up on first use
# (virtualenv, Python packages, the Debian tools the tests use as independent oracles) and are idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kinoray-installed
DATA_DIR ?= ./data

.PHONY: run test setup system-deps bench-deps lint clean player dashboard compat-table

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# ffmpeg/ffprobe (Debian) are not used by the product: the tests use them as an independent decoder and the
# benchmarks as a peer. Chromium (Debian) runs the player's browser tests and the startup benchmark, driven by
# Playwright through executable_path (Playwright's own browser download is never used). Installed only when
# missing.
system-deps:
	@command -v ffprobe >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1 || { \
	  echo "installing Debian ffmpeg (independent oracle for tests and benchmarks)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian chromium (browser tests of the web player)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null; }

# The benchmarks' peers (benchmarks/delivery.py): Debian's nginx and wrk. Not needed by run or test.
bench-deps:
	@command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null; }

# Rebuilds the vendored hls.js/dash.js in kinoray/player/static/ from the pinned lockfile (needs node and npm;
# `make run` and `make test` do not: the built files are committed, and a test checks them against the lock).
player:
	cd kinoray/player && npm ci --ignore-scripts --no-audit --no-fund && node build.mjs

# Rebuilds the vendored uPlot (the dashboard's charts) in kinoray/dashboard/static/ from its pinned lockfile, the
# same way (the built files are committed; tests/test_dashboard.py checks them against the lock).
dashboard:
	cd kinoray/dashboard && npm ci --ignore-scripts --no-audit --no-fund && node build.mjs

run: setup
	$(BIN)/kinoray up --demo --data-dir $(DATA_DIR)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check kinoray tests benchmarks
	$(BIN)/mypy kinoray

# The Mux-compatibility table in docs/API.md, from fresh runs of the tests that drive Mux's SDKs (tests/compat.py).
COMPAT_TESTS ?= tests/test_mux_sdk.py tests/test_mux_node.py tests/test_clips.py tests/test_static_renditions.py \
	tests/test_playback_restrictions.py tests/test_delivery_usage.py tests/test_mux_live.py tests/test_data_api.py \
	tests/test_data_server_side.py tests/test_data_insights.py
compat-table: setup
	@mkdir -p out && rm -f out/compat.jsonl
	KINORAY_COMPAT_OUT=$(CURDIR)/out/compat.jsonl $(BIN)/python -m pytest -q -k 'not compatibility_table' \
	  $(COMPAT_TESTS)
	$(BIN)/python -m tests.compat out/compat.jsonl

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache
