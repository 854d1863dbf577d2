# telegraf-ockam. `make test` is what CI runs; it installs what it needs.
GO       ?= go
BIN      := $(CURDIR)/bin
TOOLS    := $(CURDIR)/.tools/bin
INFLUXD  := $(TOOLS)/influxd
FUZZTIME ?= 30s
# Telegraf's own version string, so outputs send User-Agent Telegraf/1.39.3.
LDFLAGS  := -X github.com/influxdata/telegraf/internal.Version=1.39.3

.PHONY: all build tools test unit fuzz fuzz-brief lint demo clean

all: build

## build: the ockam command (and, with the plugins, the custom Telegraf) into bin/
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## tools: influxd 1.8.10 (pure Go) into .tools/bin, for the end-to-end tests and the demo
tools: $(INFLUXD)

$(INFLUXD):
	GOBIN=$(TOOLS) $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10

## test: every test of the project with -race (e2e included), then each fuzz target briefly
test: build tools
	$(GO) vet ./...
	OCKAM_E2E=1 INFLUXD=$(INFLUXD) OCKAM_BIN=$(BIN) $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz-brief

## unit: only the Go tests
unit:
	$(GO) test -race -count=1 ./...

## fuzz: every fuzz target for FUZZTIME (default 30s; make fuzz FUZZTIME=5m)
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

fuzz-brief:
	scripts/fuzz.sh 3s

## lint: gofmt, vet, staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

## demo: an authority, a listener, two devices and an impostor on loopback (DEMO_SECONDS=20)
demo: build tools
	OCKAM_BIN=$(BIN) INFLUXD=$(INFLUXD) scripts/demo.sh

clean:
	rm -rf $(BIN)
