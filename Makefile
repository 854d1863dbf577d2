# telegraf-ockam. `make test` is what CI runs; it installs what it needs.
GO       ?= go
BIN      := $(CURDIR)/bin
TOOLS    := $(CURDIR)/.tools/bin
INFLUXD  := $(TOOLS)/influxd
# SoftHSM2's PKCS#11 module on Debian (package libsofthsm2), for the pkcs11 vault tests.
PKCS11_MODULE := /usr/lib/softhsm/libsofthsm2.so
# mosquitto, the MQTT broker of the transport/mqtt tests: from PATH, else where Debian puts it.
MOSQUITTO := $(or $(shell command -v mosquitto 2>/dev/null),/usr/sbin/mosquitto)
# HAProxy and nats-server, for the scale-out tests: from PATH, else where Debian and `make nats-server` put them.
HAPROXY     := $(or $(shell command -v haproxy 2>/dev/null),/usr/sbin/haproxy)
NATS_SERVER := $(or $(shell command -v nats-server 2>/dev/null),$(TOOLS)/nats-server)
NATS_SERVER_VERSION := v2.15.3
# Installs Debian packages for the tests, with no service left enabled (needs root).
APT_INSTALL := $(CURDIR)/scripts/apt-install.sh
FUZZTIME ?= 30s
# telegraf-ockam's release in every binary (internal/version): HEAD's release tag, if it has one; otherwise
# the binaries fall back to internal/version.Default. `make build VERSION=v0.2.0` sets it by hand.
VERSION  ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null)
# Telegraf's own version string, so outputs send User-Agent Telegraf/1.39.3.
LDFLAGS  := -X github.com/influxdata/telegraf/internal.Version=1.39.3 \
	$(if $(VERSION),-X github.com/ockam-addons/telegraf-ockam/internal/version.release=$(VERSION))

.PHONY: all build tools test-tools softhsm mosquitto haproxy nats-server test stress unit fuzz fuzz-brief lint demo bench clean

all: build

## build: the ockam command (and, with the plugins, the custom Telegraf) into bin/
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## telegraf-custom: bin/telegraf with the stock plugins of PLUGINS instead of cmd/telegraf/plugins.txt
## (a list in the same format; ours are always in): make telegraf-custom PLUGINS=my-plugins.txt
.PHONY: telegraf-custom
telegraf-custom:
	@test -n "$(PLUGINS)" || (echo "make telegraf-custom PLUGINS=FILE: a plugin list as cmd/telegraf/plugins.txt"; exit 2)
	$(GO) run ./tools/pluginsgen -list "$(abspath $(PLUGINS))" -out cmd/telegraf/plugins_custom.go -tag custom -readme ''
	$(GO) build -tags custom -ldflags "$(LDFLAGS)" -o $(BIN)/telegraf ./cmd/telegraf

## tools: what the demo and the quick start need: influxd 1.8.10 (pure Go, built from source) into .tools/bin
tools: $(INFLUXD)

## test-tools: tools, and what only the tests use: SoftHSM2 and OpenSC, mosquitto, HAProxy, nats-server.
## Each is skipped when present; the Debian packages need root and leave no service enabled.
test-tools: tools softhsm mosquitto haproxy nats-server

## softhsm: SoftHSM2 and OpenSC (pkcs11-tool) from Debian, unless softhsm2-util is there
softhsm:
	@command -v softhsm2-util >/dev/null || $(APT_INSTALL) softhsm2 opensc
	@test -f $(PKCS11_MODULE) || (echo "$(PKCS11_MODULE) is missing: install libsofthsm2"; exit 1)

## mosquitto: the MQTT broker from Debian, unless it is in PATH or /usr/sbin (the tests start their own)
mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || $(APT_INSTALL) mosquitto

## haproxy: HAProxy from Debian, unless it is in PATH or /usr/sbin
haproxy:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || $(APT_INSTALL) haproxy

## nats-server: NATS_SERVER_VERSION into .tools/bin, unless a nats-server is in PATH or there already
nats-server:
	@command -v nats-server >/dev/null || test -x $(TOOLS)/nats-server || \
		GOBIN=$(TOOLS) $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

$(INFLUXD):
	GOBIN=$(TOOLS) $(GO) install github.com/influxdata/influxdb/cmd/influxd@v1.8.10

## test: lint (gofmt, vet, staticcheck), every test of the project with -race (e2e included), then each fuzz
## target briefly
test: build test-tools lint
	OCKAM_E2E=1 OCKAM_PKCS11_MODULE=$(PKCS11_MODULE) OCKAM_MOSQUITTO=$(MOSQUITTO) INFLUXD=$(INFLUXD) OCKAM_BIN=$(BIN) \
		HAPROXY=$(HAPROXY) NATS_SERVER=$(NATS_SERVER) \
		$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz-brief

## stress: every package's tests -race -count=5 (e2e -count=2) with a busy loop per core; prints the failures
## (STRESS_PKGS narrows it, e.g. make stress STRESS_PKGS=./secure/...; STRESS_COUNT, STRESS_E2E_COUNT)
stress: build test-tools
	OCKAM_E2E=1 OCKAM_PKCS11_MODULE=$(PKCS11_MODULE) OCKAM_MOSQUITTO=$(MOSQUITTO) INFLUXD=$(INFLUXD) OCKAM_BIN=$(BIN) \
		HAPROXY=$(HAPROXY) NATS_SERVER=$(NATS_SERVER) scripts/stress.sh $(STRESS_PKGS)

## unit: only the Go tests
unit:
	$(GO) test -race -count=1 ./...

## fuzz: every fuzz target for FUZZTIME (default 30s; make fuzz FUZZTIME=5m)
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

fuzz-brief:
	scripts/fuzz.sh 3s

## bench-inlet: metrics/s through `ockam inlet influxdb` (gzip and plain) against outputs.ockam direct, in one run
.PHONY: bench-inlet
bench-inlet:
	$(GO) test -run '^$$' -bench '^BenchmarkInlet$$' -benchtime 3s -count 1 ./inlet/

## bench-enroll: 50,000 devices enrolled against a running `ockam authority serve` (BENCH_DEVICES, BENCH_CLIENTS)
.PHONY: bench-enroll
bench-enroll: build
	OCKAM_BIN=$(BIN) $(GO) test -run '^$$' -bench '^BenchmarkEnrollFleet$$' -benchtime 1x -count 1 -timeout 30m ./cmd/ockam/

## lint: gofmt, vet, staticcheck (pinned: a release that knows this Go version)
STATICCHECK_VERSION ?= v0.8.2
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## bench: every benchmark side by side (pipelines, real binaries, handshakes, a reconnect storm of 10,000 devices, the
## inlet, enrollment of BENCH_ENROLL_DEVICES), one table of medians and ratios (docs/BENCHMARKS.md)
bench: build tools
	OCKAM_BIN=$(BIN) INFLUXD=$(INFLUXD) scripts/bench.sh

## demo: an authority, a listener, two devices and an impostor on loopback (DEMO_SECONDS=20)
demo: build tools
	OCKAM_BIN=$(BIN) INFLUXD=$(INFLUXD) scripts/demo.sh

## scale-demo: HAProxy, 3 gateways, a NATS JetStream R3 stream, 2 consumers, InfluxDB, 2 devices on loopback;
## kills one gateway halfway (DEMO_SECONDS=30, docs/SCALING.md)
.PHONY: scale-demo
scale-demo: build tools haproxy nats-server
	OCKAM_BIN=$(BIN) INFLUXD=$(INFLUXD) NATS_SERVER=$(NATS_SERVER) HAPROXY=$(HAPROXY) scripts/scale-demo.sh

## scale-figures: metrics/s, CPU per metric, ack latency of the scaled-out topology (docs/SCALING.md, about 70 s)
.PHONY: scale-figures
scale-figures: build test-tools
	OCKAM_E2E=1 OCKAM_SCALE_FIGURES=1 OCKAM_BIN=$(BIN) INFLUXD=$(INFLUXD) HAPROXY=$(HAPROXY) NATS_SERVER=$(NATS_SERVER) \
		$(GO) test -count=1 -run '^TestScaleFigures$$' -v ./e2e/

clean:
	rm -rf $(BIN)
