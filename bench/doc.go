// Package bench holds the side-by-side benchmarks that `make bench` runs
// and scripts/bench.sh turns into the table of docs/BENCHMARKS.md: the
// pipeline outputs.ockam → inputs.ockam_listener against outputs.influxdb_v2 →
// inputs.influxdb_v2_listener (plaintext and mutual TLS), ack latency, the
// listener's handshake cost beside its primitives, memory per idle channel,
// a run through the real binaries into influxd, and raw crypto ceilings.
//
// Everything is in _test.go files; this file only names the package. The
// per-message authorization and revocation benchmarks live in secure/.
package bench
