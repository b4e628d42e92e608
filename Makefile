# pg_authaudit: build, test and benchmark entry points (see README.md).

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_DATA ?= /tmp/authaudit-pgrx-test
PGRX_PRIVATE_TREE ?= /tmp/authaudit-pgrx-tree
CARGO ?= cargo

.PHONY: demo demo-stop setup install install-release package test lint test-unit test-pgrx test-sql test-docs test-e2e bench bench-mirror

## The main job end to end: campaign, reconstruction, report, mirror (README).
demo:
	scripts/demo.sh

## Stop the demo and remove its files.
demo-stop:
	scripts/demo.sh stop

## Install what the build and tests need (idempotent).
setup:
	scripts/setup.sh

## Build the extension (debug) and install it into PostgreSQL 15: files are
## written beside their destinations and renamed (a running server keeps
## its library), with the upgrade scripts from every earlier release.
install: setup
	PG_CONFIG=$(PG_CONFIG) scripts/install-extension.sh

## Build the extension (release) and install it into PostgreSQL 15.
install-release: setup
	PG_CONFIG=$(PG_CONFIG) scripts/install-extension.sh --release

## Debian packages of the extension and of the sidecar (target/debian/).
package: setup
	PG_CONFIG=$(PG_CONFIG) scripts/package.sh

## Every test layer: lints, pure crates, #[pg_test], pgTAP, end to end.
test: setup lint test-unit test-pgrx install test-sql test-docs test-e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/import-cycles.py */src

test-unit:
	$(CARGO) test -p authaudit-core -p sidecar -p authaudit-mongowire -p authaudit-demo

# cargo pgrx test installs a build with test functions, writing the library
# in place: into a private copy of the PostgreSQL tree
# (scripts/private-pg-tree.sh), never into the one servers run from.
test-pgrx:
	rm -rf $(PGRX_TEST_DATA) && mkdir -p $(PGRX_TEST_DATA)
	if [ "$$(id -u)" = 0 ]; then chown postgres $(PGRX_TEST_DATA); fi
	scripts/private-pg-tree.sh $(PG_CONFIG) $(PGRX_PRIVATE_TREE)
	set -e; lib=$$($(PG_CONFIG) --pkglibdir)/pg_authaudit.so; \
	before=$$(stat -c '%i %Y %s' $$lib 2>/dev/null || echo absent); \
	cd pg_authaudit && PGRX_HOME=$(PGRX_PRIVATE_TREE)/pgrx-home $(CARGO) pgrx test pg15 --runas postgres --pgdata $(PGRX_TEST_DATA)/data; \
	after=$$(stat -c '%i %Y %s' $$lib 2>/dev/null || echo absent); \
	if [ "$$before" != "$$after" ]; then echo "test-pgrx: $$lib changed ($$before -> $$after): the test touched the system's tree" >&2; exit 1; fi

test-sql:
	scripts/sql-tests.sh

# Every ```sql example of README.md and docs/ runs as written.
test-docs:
	$(CARGO) build -p authaudit-api --bins
	tests/docs_examples.py

# The mirror tests run the sidecar binary, the operator tests the wire
# server as a process of its own, and the importer tests the demo
# binaries: build them first.
test-e2e:
	$(CARGO) build -p sidecar -p authaudit-demo -p authaudit-mongowire -p authaudit-api --bins
	$(CARGO) test -p authaudit-tests

## Benchmarks against a throwaway cluster with production settings.
bench: install-release
	bench/run.sh

## Mirror benchmarks (backlog drain vs pg_recvlogical, steady-load latency).
bench-mirror: install-release
	$(CARGO) build --release -p sidecar -p authaudit-mongowire
	bench/mirror.sh
