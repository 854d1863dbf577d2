// Package e2e holds the end-to-end tests of telegraf-ockam: real processes
// (InfluxDB 1.8, the custom Telegraf on devices and on a gateway, the ockam
// command) on loopback, with the results read back from InfluxDB.
//
// The tests run only with OCKAM_E2E=1, which `make test` sets together with
// OCKAM_BIN (the directory holding the ockam and telegraf binaries) and
// INFLUXD (the influxd 1.8 binary). Without OCKAM_E2E a plain `go test ./...`
// skips them; with it, a missing binary fails the test. TestPKCS11Device also
// needs OCKAM_PKCS11_MODULE, SoftHSM2's library, which make test sets after
// installing softhsm2 (it fails without it when OCKAM_E2E=1). The scaled-out
// topology's tests (scale_*_test.go, docs/SCALING.md) also need HAPROXY and
// NATS_SERVER (default: haproxy in PATH or /usr/sbin, ../.tools/bin/nats-server),
// which make test sets after `make haproxy nats-server`; TestScaleFigures runs
// only with OCKAM_SCALE_FIGURES=1. A failed test prints
// the end of every process log; E2E_LOGS=1 prints them always.
//
// The Telegraf and InfluxDB configurations are rendered from the templates in
// deploy/, which scripts/demo.sh uses too (deploy/scale/ for the scaled-out
// topology and scripts/scale-demo.sh). The package's one non-test type,
// Unchecked, plays a modified device that skips outputs.ockam's checks of its
// own credential; cmd/unchecked wraps it for the demo.
package e2e
