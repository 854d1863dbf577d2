#!/usr/bin/env bash
# Runs every benchmark of docs/BENCHMARKS.md in one go and prints one table:
# the median of each figure over several rounds, ratios, and targets.
#
# Usage: scripts/bench.sh (make bench builds bin/ and influxd first and sets
# OCKAM_BIN and INFLUXD; without them the real-binary run is skipped).
#   BENCH_ROUNDS       rounds of the quick benchmarks (default 6). A round
#                      runs each of them once, so the pipelines compared are
#                      measured close together in time on a noisy machine.
#   BENCH_IDLE_ROUNDS  runs of the 10,000-idle-channel measurement (default 3)
#   BENCH_REAL_ROUNDS  runs through the real binaries into influxd (default 3):
#                      device Telegraf into a gateway Telegraf (ockam and
#                      influxdb_v2) or ockamd, at 0 and 50 ms each way, at
#                      batch 5000 and 50000 (about 1 min a run)
#   BENCH_STORM_ROUNDS reconnect storms of 10,000 devices against the real
#                      gateway (default 3)
#   BENCH_ENROLL_DEVICES devices enrolled against `ockam authority serve`
#                      (default 10000; make bench-enroll runs 50,000)
#   BENCH_OUT          where the raw results, benchstat's summary (with
#                      confidence intervals) and the table go (default: a
#                      new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${BENCH_ROUNDS:-6}
idle_rounds=${BENCH_IDLE_ROUNDS:-3}
real_rounds=${BENCH_REAL_ROUNDS:-3}
storm_rounds=${BENCH_STORM_ROUNDS:-3}
enroll_devices=${BENCH_ENROLL_DEVICES:-10000}
out=${BENCH_OUT:-$(mktemp -d -t ockam-bench.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
benchstat=(go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da)
raw="$out/raw.txt"
: >"$raw"
log() { echo "bench: $*" >&2; }

# run DIR ARGS...: runs a test binary in DIR (a package directory), adding
# its results to raw.txt (and all its output to log.txt); on failure, shows
# its output and stops. Only result and header lines go to raw.txt: any
# other "key: value" line would be taken by benchstat for a configuration.
run() {
	local dir=$1
	shift
	local part="$out/part.txt"
	if ! (cd "$dir" && "$@" -test.run='^$') >"$part" 2>&1; then
		cat "$part" >&2
		exit 1
	fi
	cat "$part" >>"$out/log.txt"
	grep -E '^(Benchmark|goos:|goarch:|pkg:|cpu:)' "$part" >>"$raw" || true
}

start=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)
log "building the benchmarks and benchstat"
go test -c -o "$out/bench.test" ./bench
go test -c -o "$out/secure.test" ./secure
go test -c -o "$out/inlet.test" ./inlet
go test -c -o "$out/ockam.test" ./cmd/ockam
"${benchstat[@]}" -h >/dev/null 2>&1 || true # download and build it now

for i in $(seq "$rounds"); do
	log "round $i of $rounds: authorization, crypto and handshakes, pipelines, ack latency"
	run secure "$out/secure.test" -test.bench='^Benchmark(Authorize|RevocationLookup)$' -test.benchtime=300ms
	run bench "$out/bench.test" -test.bench='^Benchmark(Crypto|Handshake)$' -test.cpu=1 -test.benchtime=500ms
	run bench "$out/bench.test" -test.bench='^BenchmarkHandshakeLatency$' -test.benchtime=500ms
	run bench "$out/bench.test" -test.bench='^BenchmarkPipeline$' -test.benchtime=2s
	run bench "$out/bench.test" -test.bench='^BenchmarkAckLatency$' -test.benchtime=200x
	run inlet "$out/inlet.test" -test.bench='^BenchmarkInlet$' -test.benchtime=1s
done
log "memory per idle channel, $idle_rounds runs"
run bench "$out/bench.test" -test.bench='^BenchmarkIdleChannels$' -test.benchtime=1x -test.count="$idle_rounds"
log "real binaries into influxd, $real_rounds runs"
run bench "$out/bench.test" -test.bench='^BenchmarkRealBinaries$' -test.benchtime="${real_rounds}x"
log "reconnect storm of 10,000 devices against the real gateway, $storm_rounds runs"
run bench "$out/bench.test" -test.bench='^BenchmarkReconnectStorm$' -test.benchtime="${storm_rounds}x" -test.timeout=30m
log "enrollment of $enroll_devices devices against ockam authority serve"
BENCH_DEVICES=$enroll_devices run cmd/ockam "$out/ockam.test" -test.bench='^BenchmarkEnrollFleet$' -test.benchtime=1x -test.timeout=30m

"${benchstat[@]}" "$raw" >"$out/benchstat.txt" 2>&1
"${benchstat[@]}" -format csv "$raw" >"$out/stats.csv" 2>/dev/null
{
	echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
		"$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(go version | cut -d' ' -f3-)."
	echo "Medians of $rounds rounds ($idle_rounds for idle channels, $real_rounds for the real binaries, $storm_rounds storms," \
		"one enrollment of $enroll_devices devices), $(date -u +%Y-%m-%d);" \
		"load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end."
	echo
	go run ./bench/benchtable "$out/stats.csv"
} | tee "$out/table.md"
log "done in $(($(date +%s) - start)) s; raw results, benchstat.txt and table.md are in $out"
