# Shardline: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
GO ?= go
export SHARDLINE_REQUIRE_EMULATORS ?= 1

.PHONY: all deps emulators emulators-stop test test-unit vet demo bench chaos cost clean dashtest

all: test

# Tools and servers: Node packages pinned by package-lock.json; Java only if absent.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps: node_modules/.installed
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	@command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
	$(GO) mod download

emulators: deps
	scripts/emulators.sh start

emulators-stop:
	scripts/emulators.sh stop

vet:
	$(GO) vet ./...

test-unit:
	$(GO) test -short -race ./...

# The full suite: unit and integration tests against the emulators, with the
# race detector, then the dashboard test (dashtest/). The emulators are
# stopped whatever the outcome.
test: deps vet
	scripts/emulators.sh restart
	set -o pipefail; status=0; \
	$(GO) test -race -count=1 -timeout 12m ./... 2>&1 | tee .run/test.log || status=$$?; \
	(cd dashtest && $(GO) test -count=1 -timeout 5m ./...) 2>&1 | tee -a .run/test.log || status=$$?; \
	scripts/emulators.sh stop; \
	exit $$status

# The long chaos runs (integration/): TestChaos, four worker processes on
# eight shards, a random SIGKILL or SIGTERM and restart every few seconds for
# CHAOS_DURATION, with AWS faults injected, then the delivery check and a
# table of figures (also in .run/chaos.txt); then TestDeliveryChaos, the same
# on four shards with 8 lanes per shard and a processor failing chosen
# records into a dead-letter stream (.run/chaos-delivery.txt). `make test`
# runs 40 s and 30 s variants.
CHAOS_DURATION ?= 4m
chaos: deps
	scripts/emulators.sh restart
	mkdir -p .run; status=0; \
	SHARDLINE_CHAOS_DURATION=$(CHAOS_DURATION) SHARDLINE_CHAOS_REPORT=$(CURDIR)/.run/chaos.txt \
	$(GO) test -count=1 -timeout 30m -run '^(TestChaos|TestDeliveryChaos)$$' -v ./integration || status=$$?; \
	scripts/emulators.sh stop; \
	exit $$status

# Benchmarks (BENCHMARKS.md): the worker's own cost against in-process Kinesis
# servers, lease cost and scale, and worker processes on the emulators side by
# side with vmware-go-kcl-v2 (bench/ is its own Go module). Prints one table
# (also in .run/bench.txt and, as Markdown, .run/bench.md); about 12 minutes.
# The emulators are started if needed, and stopped afterwards only if this
# target started them. Not part of `make test`. BENCH_FLAGS adds flags, e.g.
# BENCH_FLAGS='-sections overhead,deagg -count 2'.
BENCH_FLAGS ?=
bench: deps
	mkdir -p .run
	set -o pipefail; running=0; \
	for s in kinesis dynamodb; do \
		if [[ -f .run/$$s.pid ]] && kill -0 "$$(cat .run/$$s.pid)" 2>/dev/null; then running=1; fi; \
	done; \
	scripts/emulators.sh start; status=0; \
	(cd bench && $(GO) run ./cmd/bench -md $(CURDIR)/.run/bench.md $(BENCH_FLAGS)) | tee .run/bench.txt || status=$$?; \
	if [[ $$running == 0 ]]; then scripts/emulators.sh stop; fi; \
	exit $$status

# The dashboard test alone (dashtest/ is its own Go module): consumer
# processes on the emulators (started if needed, left running), scraped into
# an in-memory Prometheus; every query of dashboards/shardline.json is
# evaluated and checked, and the metrics docs against what is emitted.
# Without the race detector: the code under test runs in the consumer
# processes, and instrumenting Prometheus' packages costs minutes to build.
dashtest: deps
	scripts/emulators.sh start
	cd dashtest && $(GO) test -count=1 -timeout 5m ./...

# Lease-table cost (BENCHMARKS.md): fleets of 3 to 100 workers on 8 to
# 10,000 leases in virtual time over the in-memory store, every request
# charged as DynamoDB bills it; one line per size, then a table, with the
# Java KCL 2.x and 3.x models beside. No emulators; a few minutes.
cost:
	mkdir -p .run
	SHARDLINE_COST=all SHARDLINE_COST_OUT=$(CURDIR)/.run/cost.txt \
	$(GO) test -count=1 -timeout 20m -run '^TestCost$$' ./internal/costsim
	@cat .run/cost.txt

demo: deps
	scripts/emulators.sh restart
	status=0; $(GO) run ./internal/cmd/demo || status=$$?; scripts/emulators.sh stop; exit $$status

clean:
	scripts/emulators.sh stop || true
	rm -rf .run
