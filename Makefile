# reelhouse: common tasks. `make run` starts the server, `make test` runs every test.

CARGO ?= cargo
BIND ?= 127.0.0.1:8080
DATA_DIR ?= ./data
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: run test bench build check lint deny fmt schema services-up services-down bootstrap web-demo test-web test-deploy fuzz chaos soak

## run: build the web app and the release binary, serve on $(BIND) with data in $(DATA_DIR)
run: bootstrap web-demo
	$(CARGO) build --release -p reelhouse
	$(TARGET_DIR)/release/reelhouse serve --bind $(BIND) --data-dir $(DATA_DIR)

## web-demo: build the browser app into web-demo/dist (Node 24 via scripts/node.sh; npm ci + GraphQL type check + vite; only when sources or schema.graphql changed)
web-demo:
	web-demo/build.sh

## test-web: only the browser end-to-end tests (headless Chromium; embedded and S3 servers)
test-web: bootstrap
	scripts/test-web.sh

## test-deploy: only the deployment checks (kustomize, Kubernetes schemas, dashboard/alert metrics, compose)
test-deploy:
	scripts/test-deploy.sh

## fuzz: the long fuzz run (scripts/test-fuzz.sh with REELHOUSE_FUZZ_SCALE=20: 200,000 GraphQL documents,
## 6,000 tus sequences, 60,000 /media and /storage requests on the embedded server; REELHOUSE_FUZZ_SEED replays)
fuzz: bootstrap
	REELHOUSE_FUZZ_SCALE=$${REELHOUSE_FUZZ_SCALE:-20} scripts/test-fuzz.sh

## chaos: the full fault matrix (scripts/test-chaos.sh with REELHOUSE_CHAOS=full: several serve/worker processes
## on PostgreSQL + Redis + S3, a workload through each fault, the table printed; `make test` runs the short one)
chaos: bootstrap
	REELHOUSE_CHAOS=$${REELHOUSE_CHAOS:-full} scripts/test-chaos.sh

## soak: the long soak (scripts/soak.sh: a release embedded server under `reelhouse-load --scenario soak`
## for SOAK_DURATION, default 2h; RSS sampled every 10 s and printed per 10 minutes; fails on any error/loss)
soak: bootstrap
	scripts/soak.sh

## test: every test (system packages, test services, Rust suite on sqlite and postgres)
test:
	scripts/test.sh

## bench: benchmarks (transcode, upload, fan-out, API, remote workers; ratios vs in-run baselines; figures in docs/bench/, never asserted)
bench: bootstrap
	scripts/bench.sh

build: bootstrap
	$(CARGO) build --release --workspace

check: bootstrap
	$(CARGO) check --workspace --all-targets

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/deny.sh

## deny: cargo-deny (licences, bans, sources; advisories when GitHub is reachable), installed if missing
deny:
	scripts/deny.sh

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
