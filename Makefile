# Every target bootstraps its own virtualenv from the package index; nothing else is assumed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed

.PHONY: demo test bench bench-diagnosis bench-http-instructions instructions valgrind soak lint screenshots system-packages clean ui-vendor

# Tests use real parts from Debian: Chromium for the UI, a PostgreSQL server for the SQL layer.
# Installed here if missing (no browser or database is downloaded at test time).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml setup.py src/tracebridge/collector/_span_scan.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tracebridge needs Python 3.11 or newer (set PYTHON=python3.x)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# make demo DEMO_ARGS="--stuck-behind logistics-worker": an order stuck behind a stopped consumer
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m tracebridge demo $(DEMO_ARGS)

system-packages:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  command -v apt-get >/dev/null || { echo "the tests need Debian packages:$$missing"; exit 1; }; \
	  echo "installing$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The mixed-language chain test runs stock OpenTelemetry JS: pinned in tests/node/package-lock.json.
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null || { echo "the tests need Node.js and npm (apt-get install nodejs npm)"; exit 1; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

test: $(STAMP) system-packages $(NODE_STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/kafka_overhead.py
	$(PY) bench/http_overhead.py
	$(PY) bench/http_overhead.py --export-process helper
	$(PY) bench/log_overhead.py
	$(PY) bench/collector.py
	$(PY) bench/eshop.py
	$(PY) bench/eshop.py --export-process helper
	$(PY) bench/diagnose_accuracy.py

# Counting instructions (callgrind) is repeatable on a noisy machine where CPU seconds are not.
valgrind:
	@command -v valgrind >/dev/null || { command -v apt-get >/dev/null || { echo "needs valgrind"; exit 1; }; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }

# Instructions per span of each step of the span path.
instructions: $(STAMP) valgrind
	$(PY) bench/instructions.py

# Instructions per HTTP request, server and client, each export mode (~10 min).
bench-http-instructions: $(STAMP) valgrind
	$(PY) bench/http_overhead.py --count instructions --requests 512 --rounds 1
	$(PY) bench/http_overhead.py --count instructions --requests 512 --rounds 1 --export-process helper

# How often the verdict names an injected fault's cause (12 runs of the whole stack, ~5 min).
bench-diagnosis: $(STAMP)
	$(PY) bench/diagnose_accuracy.py --rounds 2

# The long soak: 2 000 orders under every fault at once (tests/test_soak.py is the short form).
soak: $(STAMP)
	$(PY) -m tracebridge.demo.soak --orders 2000 --outage 30

screenshots: $(STAMP) system-packages
	TRACEBRIDGE_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_ui.py

# The UI's layout engine is committed as elkjs' built file (no build step in the UI); this
# copies it again from the version tests/node/package-lock.json pins (a test checks the copy).
ui-vendor: $(NODE_STAMP)
	cp tests/node/node_modules/elkjs/lib/elk.bundled.js src/tracebridge/collector/ui/vendor/elk.bundled.js
	cp tests/node/node_modules/elkjs/LICENSE.md src/tracebridge/collector/ui/vendor/elk.LICENSE.md

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info tests/node/node_modules
