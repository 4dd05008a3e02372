# Two commands: `make run` starts the whole platform, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-any-hour lint format install bench clean assets assets-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py dev

test: $(STAMP)
	$(BIN)/python -m pytest

# The non-browser suite with the clock of the whole process tree shifted by Debian's
# faketime (libfaketime), so no test passes only at the hour it happens to run. Each
# run gets its own data dir and embedded servers (never DATABASE_URL's or
# CELERY_BROKER_URL's): its PostgreSQL and Valkey start inside the shifted tree and
# share its clock. One run took 3 minutes here (2 cores shared with other work).
TEST_HOURS ?= +7h +13h +19h

test-any-hour: $(STAMP)
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install faketime"; exit 1; }
	@trap 'rm -rf "$$data"' EXIT; \
	for offset in $(TEST_HOURS); do \
		data=$$(mktemp -d); \
		echo "== the suite at now $$offset"; \
		env -u DATABASE_URL -u CELERY_BROKER_URL -u FAKETIME_DONT_FAKE_MONOTONIC \
			ORCHESTRATOR_DATA_DIR=$$data faketime -f $$offset \
			$(BIN)/python -m pytest -q -p no:cacheprovider -m "not browser"; \
		status=$$?; rm -rf "$$data"; \
		[ $$status -eq 0 ] || exit $$status; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.dispatch --messages 100000

# The journey canvas (frontend/canvas) is built with esbuild from npm into a committed,
# content-hashed bundle under journeys/static/, so `make run` and `make test` need no
# Node.js. `make assets` rebuilds it; `make assets-check` rebuilds into a temp dir and
# fails when the committed bundle is not what the sources build.
CANVAS := frontend/canvas

$(CANVAS)/node_modules/.package-lock.json: $(CANVAS)/package-lock.json
	cd $(CANVAS) && npm ci --no-audit --no-fund

assets: $(CANVAS)/node_modules/.package-lock.json
	cd $(CANVAS) && node build.mjs

assets-check: $(CANVAS)/node_modules/.package-lock.json
	@trap 'rm -rf "$$out"' EXIT; out=$$(mktemp -d); \
	(cd $(CANVAS) && node build.mjs --static-dir "$$out/static" --template "$$out/canvas_bundle.html") && \
	diff -r "$$out/static" journeys/static/journeys/canvas && \
	diff "$$out/canvas_bundle.html" templates/admin/journeys/journey/canvas_bundle.html && \
	echo "The committed canvas bundle is what the sources build." || \
	{ echo "The committed canvas bundle differs from a build of frontend/canvas: run make assets and commit it."; exit 1; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
