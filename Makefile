# qyzmet developer entry points. The services (RabbitMQ, PostgreSQL) come from
# scripts/services.sh: Docker Compose when a Docker engine runs, otherwise a
# private loopback-only broker and cluster from the Debian packages.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

WITH_SERVICES := scripts/with-services.sh

.PHONY: help test demo console check-deploy check-asyncapi services-up services-down services-status lint build

help:
	@echo 'make test             run all tests (starts/stops RabbitMQ + PostgreSQL as needed)'
	@echo 'make demo             run the end-to-end demo against local services'
	@echo 'make console          the demo, then keep the pipeline and operator console running (Ctrl-C stops)'
	@echo 'make check-deploy     promtool checks of the alert rules, scrape config and dashboard'
	@echo 'make check-asyncapi   validate docs/asyncapi.yaml (the message contract) with Node'
	@echo 'make services-up      start RabbitMQ + PostgreSQL and leave them running'
	@echo 'make services-down    stop them'
	@echo 'make services-status  show what runs'
	@echo 'make lint             rustfmt check + clippy with warnings denied'
	@echo 'make build            build all targets'

# Every check runs even if an earlier one fails; the first failure's status
# is the result. The file checks and doc tests go first so that nextest's
# summary line is the last test report in the output (CI reads the closing
# lines). with-services.sh stops the services afterwards only if it started them.
test:
	scripts/test-tools.sh
	$(WITH_SERVICES) bash -c 'rc=0; \
	  scripts/check-deploy.sh || rc=$$?; \
	  scripts/check-asyncapi.sh || { s=$$?; [ "$$rc" -ne 0 ] || rc=$$s; }; \
	  cargo test --doc || { s=$$?; [ "$$rc" -ne 0 ] || rc=$$s; }; \
	  cargo nextest run --no-fail-fast || { s=$$?; [ "$$rc" -ne 0 ] || rc=$$s; }; \
	  exit "$$rc"'

# The demo's upstream systems get broker users of their own (demo/systems.toml, passwords
# generated once under .qyzmet/secrets); qyzmet and every sender log in as themselves.
QYZMET_RELEASE := target/release/qyzmet
# `make console` is the demo with --keep-running: afterwards the pipeline and the console stay
# up (the console URL and the demo operator's password are printed) until Ctrl-C.
DEMO_FLAGS ?=
demo:
	$(WITH_SERVICES) bash -c 'set -euo pipefail; \
	  cargo build --release --features demo --bin qyzmet; \
	  $(QYZMET_RELEASE) systems definitions demo/systems.toml --passwords .qyzmet/secrets --generate \
	    --out .qyzmet/definitions.json; \
	  scripts/services.sh import-definitions .qyzmet/definitions.json; \
	  $(QYZMET_RELEASE) demo --systems-file demo/systems.toml --passwords .qyzmet/secrets $(DEMO_FLAGS)'

console:
	$(MAKE) demo DEMO_FLAGS=--keep-running

check-deploy:
	scripts/check-deploy.sh

check-asyncapi:
	scripts/check-asyncapi.sh

services-up:
	scripts/services.sh start

services-down:
	scripts/services.sh stop

services-status:
	scripts/services.sh status

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# The production build (no demo feature) too.
	cargo clippy --lib --bin qyzmet -- -D warnings

build:
	cargo build --all-targets
