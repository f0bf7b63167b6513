# `make help` lists the targets. `make test T=tests/integration/test_x.py` runs one file.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEV_ENV := set -a; . ./.env.dev; set +a; export PATH="$(CURDIR)/$(BIN):$$PATH"
T ?= tests
# Parallel test processes (pytest-xdist) of make test, and of its second run on RabbitMQ beside
# it; JOBS=0 runs the tests in pytest's own process.
JOBS ?= 4
RABBITMQ_JOBS ?= 1
# The chaos suite's broker: its own Redis, or its own three-node RabbitMQ cluster.
CHAOS_BROKER ?= redis
# What runs a second time with RabbitMQ as the broker: every path an event takes through it.
RABBITMQ_SUITE ?= tests/integration/test_end_to_end.py tests/integration/test_delivery_guarantees.py tests/integration/test_payment_lifecycle.py tests/integration/test_encryption_at_rest.py tests/integration/test_batched_ingest.py

.PHONY: help install services migrate run test test-rabbitmq test-example test-fast lint format clean chaos chaos-small lock bench bench-small bench-capacity bench-ledger

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

# Exactly the lock, never resolved (.ci/install-lock says why): what CI, make run and the image
# install is what was locked, whatever is released upstream meanwhile.
# A venv made afresh each time: a package the lock dropped must not stay installed.
$(BIN)/.installed: pyproject.toml requirements-dev.lock .ci/installer.lock .ci/install-lock
	rm -rf $(VENV)
	bash .ci/install-lock requirements-dev.lock $(VENV) $(PYTHON)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed ## create the virtualenv and install the project with its dev tools

services: ## start the machine's PostgreSQL and Redis if they are not answering
	@bash .ci/services

migrate: install services ## create and migrate the dev database
	@$(DEV_ENV); payments db upgrade

run: migrate ## run the whole stack (web, worker, flower, Stripe stand-in) with .env.dev
	@mkdir -p .run/metrics/web .run/metrics/worker; $(DEV_ENV); \
	honcho start -f Procfile & stack=$$!; \
	trap 'kill $$stack 2>/dev/null; wait $$stack' INT TERM EXIT; \
	payments dev bootstrap --web http://127.0.0.1:8000 || exit 1; \
	wait $$stack

test: install services lint ## lint, type-check and run the test suite on the real services, with coverage
	@# The suite runs in JOBS processes (pytest-xdist; each has its own database, Redis, RabbitMQ
	@# virtual host, stand-in, worker and ports) and, beside it, the end-to-end suite on RabbitMQ
	@# in RABBITMQ_JOBS more, then the example shop's tests: the tests mostly wait on processes,
	@# not on the CPU.
	@# Branch coverage, the processes the tests start included ([tool.coverage] in pyproject.toml),
	@# in a data directory of each run's own: runs at once never combine or erase each other's.
	@# The thresholds hold for the whole suite only (T=tests); they are printed even when a test
	@# failed, and either fails the target.
	@run="$(CURDIR)/test-artifacts/coverage/run-$$$$"; mkdir -p "$$run/redis" "$$run/rabbitmq" "$$run/alone"; \
	if [ "$(T)" != tests ]; then \
	  COVERAGE_FILE="$$run/.coverage" $(BIN)/pytest -n $(JOBS) --cov --cov-report=term:skip-covered $(T); \
	  status=$$?; echo "coverage thresholds skipped: T is not the whole suite"; exit $$status; \
	fi; \
	( TEST_ARTIFACTS="$(CURDIR)/test-artifacts/rabbitmq" COVERAGE_FILE="$$run/rabbitmq/.coverage" \
	  TEST_BROKER=rabbitmq $(BIN)/pytest -n $(RABBITMQ_JOBS) \
	  -q --cov --cov-report= $(RABBITMQ_SUITE) >"$$run/rabbitmq.log" 2>&1; done=$$?; \
	  $(MAKE) --no-print-directory test-example >"$$run/example.log" 2>&1 || done=1; \
	  exit $$done ) & rabbitmq=$$!; \
	COVERAGE_FILE="$$run/redis/.coverage" $(BIN)/pytest -n $(JOBS) -m "not alone" --cov --cov-report= \
	  --durations=10 tests; status=$$?; \
	wait $$rabbitmq || status=$$?; \
	echo; echo "The end-to-end suite again, on RabbitMQ (quorum queues, a virtual host of its own)"; \
	cat "$$run/rabbitmq.log"; \
	echo; echo "The example shop (examples/shop), installed beside the service, on the handler kit"; \
	cat "$$run/example.log"; \
	echo; echo "The tests with a latency bound, alone on the machine"; \
	COVERAGE_FILE="$$run/alone/.coverage" $(BIN)/pytest -q -m alone --cov --cov-report= tests \
	  || status=$$?; \
	export COVERAGE_FILE="$$run/.coverage"; \
	$(BIN)/coverage combine -q "$$run/redis/.coverage" "$$run/redis" \
	  "$$run/rabbitmq/.coverage" "$$run/rabbitmq" "$$run/alone/.coverage" "$$run/alone" || status=$$?; \
	$(BIN)/coverage report --skip-covered || status=$$?; \
	echo; echo "Ledger and payment logic (shared/ledger, shared/payments): at least 95%"; \
	$(BIN)/coverage report --include='shared/ledger/*,shared/payments/*' --fail-under=95 || status=$$?; \
	echo; echo "shared/ as a whole: at least 90%"; \
	$(BIN)/coverage report --include='shared/*' --fail-under=90 || status=$$?; \
	echo "coverage data: $${COVERAGE_FILE#$(CURDIR)/}"; \
	exit $$status

test-rabbitmq: install services ## the end-to-end suite with RabbitMQ as the broker (make test runs it beside the whole suite)
	TEST_BROKER=rabbitmq $(BIN)/pytest -q $(RABBITMQ_SUITE)

# The example shop is installed (without resolving: --no-deps, the locked build backend) into a
# directory of its own that only its test run puts on its path: the service's own suites never
# see its handlers.
EXAMPLE_SITE := .run/example-shop
test-example: install services ## the example shop's tests (examples/shop), on the handler kit
	@rm -rf $(EXAMPLE_SITE)
	$(BIN)/pip install -q --no-deps --no-build-isolation --target $(EXAMPLE_SITE) examples/shop
	@# setuptools builds in the source tree: leave it as it was.
	@rm -rf examples/shop/build examples/shop/*.egg-info
	PYTHONPATH=$(EXAMPLE_SITE) $(BIN)/pytest -q -p no:cacheprovider examples/shop/tests

test-fast: install services ## the fast layer only: ledger and payment logic, rolled back per test
	$(BIN)/pytest -q tests/fast

# The build backend (setuptools) is locked too: the image and make install build the project
# with --no-build-isolation, so nothing unpinned is fetched to build it. So is the installer:
# .ci/installer.lock pins the dev lock's own pip, and .ci/install-lock puts it in place first.
# A pin already in a lock is kept (pip-compile prefers it), so a second run writes the same files.
LOCK := $(BIN)/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock: install ## regenerate requirements.lock, requirements-dev.lock and .ci/installer.lock (with hashes)
	$(LOCK) --build-deps-for wheel -o requirements.lock pyproject.toml
	$(LOCK) --build-deps-for editable --extra dev -o requirements-dev.lock pyproject.toml
	$(LOCK) -o .ci/installer.lock .ci/installer.in

# Each broker's run keeps its report and its processes' logs in test-artifacts/chaos-<broker>/,
# so the two can run at once (CI does): each has its own PostgreSQL, broker and ports anyway.
CHAOS := TEST_ARTIFACTS="$(CURDIR)/test-artifacts/chaos-$(CHAOS_BROKER)" $(BIN)/python -m bench.chaos --broker $(CHAOS_BROKER) --out test-artifacts/chaos-$(CHAOS_BROKER)
chaos: install services ## fault-injection suite: 2,000+ events while worker, broker and PostgreSQL die (CHAOS_BROKER=rabbitmq: a 3-node cluster)
	$(CHAOS)

chaos-small: install services ## the same faults on a smaller load (what CI runs on RabbitMQ)
	$(CHAOS) --payments 60 --pairs 250 --poison 10 --disputes 30 --duration 60

bench: install services ## issue 12's figures, ours beside bare/naive comparators, one table (needs wrk; SOAK=600 adds a soak)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y -qq --no-install-recommends wrk" >&2; exit 1; }
	$(BIN)/python -m bench.perf --soak $(or $(SOAK),0) $(BENCH_ARGS)

bench-small: install services ## the same measurements at tiny sizes, about a minute (what CI runs; nothing asserted)
	@command -v wrk >/dev/null || { echo "make bench-small needs wrk: apt-get install -y -qq --no-install-recommends wrk" >&2; exit 1; }
	$(BIN)/python -m bench.perf --small $(BENCH_ARGS)
	$(BIN)/python -m bench.perf.ledger_scale --events 50000

bench-capacity: install services ## the capacity model's figures: one web and one worker process on Redis and on RabbitMQ, CPU per event of each part (about 2 minutes)
	$(BIN)/python -m bench.perf.capacity $(BENCH_ARGS)

bench-ledger: install services ## the sweeper, dead-letter, reconciler and retention queries at 10 million events (about 15 minutes)
	$(BIN)/python -m bench.perf.ledger_scale --events $(or $(EVENTS),10000000)

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts *.egg-info
