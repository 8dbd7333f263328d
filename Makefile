# Parley: `make run` starts a node (server dependencies only), `make test` runs every check. Both set up what
# they need from nothing but Python 3.11+ (uv is installed into the user's pip).
export UV_PYTHON_DOWNLOADS := never
# uv, if on PATH; else the one pip installs for this Python (`python3 -m uv`).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTEST_ARGS ?=

.PHONY: uv setup run test lint typecheck unit bench clean browser

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
	  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv || \
	  python3 -m pip install --quiet --user --break-system-packages uv

setup: uv
	$(UV) sync --locked

# Only what the server needs (~90 MB, not the ~490 MB of the test and benchmark
# tools); an inexact sync, so a development .venv keeps its tools.
run: uv
	$(UV) run --locked --no-dev parley serve

browser:
	@command -v chromium >/dev/null 2>&1 || ( [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ) || echo "chromium not installed: browser tests will skip"

lint: setup
	$(UV) run ruff check src tests bench
	$(UV) run ruff format --check src tests bench

typecheck: setup
	$(UV) run mypy

unit: setup
	$(UV) run pytest tests/unit -q

test: setup browser lint typecheck
	$(UV) run pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup
	$(UV) sync --locked --extra bench
	$(UV) run python bench/rest_sends.py

clean:
	rm -rf .venv parley-data .pytest_cache .mypy_cache .ruff_cache
