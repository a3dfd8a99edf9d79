# moat — two commands on a fresh Debian machine (as root): `make run` and `make test`.
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/moatsh/moat/internal/cli.Version=$(VERSION)
MOAT_HOME ?= $(HOME)/.local/share/moat
export MOAT_HOME

.PHONY: all build run test bench fuzz soak vet fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Builds and starts moatd (HTTP API) on embedded SQLite and the auto-detected backend.
run: build
	scripts/run.sh

# Installs what the tests need (apt), starts dockerd and Postgres, builds the test images,
# runs gofmt, go vet and every test.
test:
	scripts/test.sh

bench: build
	scripts/bench.sh

# Every fuzz target for FUZZTIME each (default 60s; CI runs 5s each inside `make test`).
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# A bounded soak against a real moatd on 127.0.0.1 (temp MOAT_HOME, docker or bwrap/host):
# 50 sandboxes, 200 concurrent execs and file traffic for SOAK_DURATION (default 2m). Fails
# on any error or when moatd's RSS grows by more than SOAK_RSS_GROWTH_MIB (default 64).
SOAK_DURATION ?= 2m
soak: build
	SOAK_DURATION=$(SOAK_DURATION) scripts/soak.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) build
