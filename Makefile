# hookline — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
# End-to-end tests mostly wait on the broker and the database: run more of them than cores.
TEST_THREADS ?= 6
# Seconds each fuzz target runs after its seeds replay: in `make fuzz`, and in `make test` (a
# short bounded run; 0 replays the seeds only).
FUZZ_SECONDS ?= 120
FUZZ_TEST_SECONDS ?= 8

.PHONY: run test test-console lint services tools build build-release bench bench-api bench-console soak profile chaos demo fuzz clean-dev

## run: ensure PostgreSQL and RabbitMQ, migrate, create a demo source, start the ingress
run: services build
	@bash deploy/dev/run.sh

## test: formatting, lints, then every unit and end-to-end test against real services
test: tools lint
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast --test-threads $(TEST_THREADS)
	FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) bash fuzz/run.sh

## fuzz: every verifier and parser under libFuzzer, FUZZ_SECONDS per target; fails on a crash
fuzz: tools
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

## test-console: only the operator console's tests (browser ones in chromium; part of `make test`)
test-console: tools
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run -p hookline-tests --no-fail-fast -E 'binary(console)'

lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

services:
	@bash deploy/dev/services.sh

## tools: what the tests need besides Rust (promtool and validators for deploy/, chromium and
## tests/console's node packages for the console's browser tests, cargo-fuzz)
tools:
	@bash deploy/dev/tools.sh

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

## bench: load generator against the real ingress, broker and database (release build)
bench: services build-release
	@bash deploy/dev/bench.sh

## soak: the ingress at 2,000/s for 10 minutes with a worker storing; RSS series, stored-once check
soak: services build-release
	@bash deploy/dev/soak.sh

## profile: instructions per request of the release ingress under callgrind (load-independent)
profile: services build-release
	@bash deploy/dev/callgrind.sh

## bench-api: the management API's event search on a million events (release build)
bench-api: services build-release
	@bash deploy/dev/bench-api.sh

## bench-console: the operator console's page loads with 1 million events (release build, chromium)
bench-console: services build-release
	@HOOKLINE_PROFILE=release bash deploy/dev/console-bench.sh

## chaos: the crash/fault suite at 1,000/s and 2,000/s on its own broker cluster and database
chaos: services build-release
	$(CARGO) build --workspace --bins
	@bash deploy/dev/chaos.sh

## demo: send a signed webhook to the demo source started by `make run`
demo:
	@bash deploy/dev/send-demo-webhook.sh

## clean-dev: drop the development database and key (.hookline), so the next `make run` starts clean
clean-dev:
	@bash deploy/dev/clean.sh
