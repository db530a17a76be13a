# reelhouse: common tasks. `make run` starts the server, `make test` runs every test.

CARGO ?= cargo
BIND ?= 127.0.0.1:8080
DATA_DIR ?= ./data
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: run test bench build check lint fmt schema services-up services-down bootstrap

## run: build the release binary and serve on $(BIND) with data in $(DATA_DIR)
run: bootstrap
	$(CARGO) build --release -p reelhouse
	$(TARGET_DIR)/release/reelhouse serve --bind $(BIND) --data-dir $(DATA_DIR)

## test: every test (system packages, test services, Rust suite on sqlite and postgres)
test:
	scripts/test.sh

## bench: benchmarks (transcode ladder vs ffmpeg; figures in docs/bench/, never asserted)
bench: bootstrap
	scripts/bench.sh

build: bootstrap
	$(CARGO) build --release --workspace

check: bootstrap
	$(CARGO) check --workspace --all-targets

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## schema: regenerate schema.graphql from the live schema
schema: bootstrap
	$(CARGO) run -q -p reelhouse -- export-schema > schema.graphql.tmp \
	  && mv -f schema.graphql.tmp schema.graphql \
	  || { rm -f schema.graphql.tmp; exit 1; }

## services-up / services-down: PostgreSQL, Redis and S3 for tests (.test-services/env)
services-up:
	scripts/test-services.sh start

services-down:
	scripts/test-services.sh stop

bootstrap:
	scripts/bootstrap.sh
