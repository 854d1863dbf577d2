#!/usr/bin/env bash
# Runs the tests as a slow machine would: every package with -race
# -count=STRESS_COUNT (default 5; the e2e package -count=STRESS_E2E_COUNT,
# default 2) while a busy loop per core keeps the CPUs busy, then prints
# every failure and exits non-zero if there was one. Called by `make stress`,
# which sets the environment of `make test` (OCKAM_E2E, INFLUXD, OCKAM_BIN,
# OCKAM_MOSQUITTO, OCKAM_PKCS11_MODULE).
# Usage: scripts/stress.sh [PACKAGE...]   (default ./...; STRESS_PKGS in make)
set -uo pipefail
cd "$(dirname "$0")/.."
count=${STRESS_COUNT:-5}
e2e_count=${STRESS_E2E_COUNT:-2}
hogs=${STRESS_HOGS:-$(nproc)}
timeout=${STRESS_TIMEOUT:-90m}
log=${STRESS_LOG:-$(mktemp -t stress.XXXXXX.log)}

pkgs=$(go list "${@:-./...}") || exit 2
e2e=$(grep -x '.*/e2e' <<<"$pkgs" || true)
rest=$(grep -vx '.*/e2e' <<<"$pkgs" || true)

# The CPU hog: one busy loop per core, killed however this script ends.
pids=()
stop_hogs() {
	if [ ${#pids[@]} -gt 0 ]; then
		kill "${pids[@]}" 2>/dev/null
		wait "${pids[@]}" 2>/dev/null
	fi
	pids=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM
for _ in $(seq "$hogs"); do
	(while :; do :; done) &
	pids+=($!)
done
echo "stress: $hogs busy loops; -race -count=$count ($(wc -w <<<"$rest") packages), e2e -count=$e2e_count; log $log"

started=$(date +%s)
status=0
if [ -n "$rest" ]; then
	# shellcheck disable=SC2086 # one package per word
	go test -race -count="$count" -timeout "$timeout" $rest 2>&1 | tee "$log" || status=1
fi
if [ -n "$e2e" ]; then
	go test -race -count="$e2e_count" -timeout "$timeout" "$e2e" 2>&1 | tee -a "$log" || status=1
fi
stop_hogs
elapsed=$(($(date +%s) - started))

echo
echo "stress: $((elapsed / 60)) min $((elapsed % 60)) s with $hogs busy loops"
if [ "$status" -ne 0 ]; then
	echo "stress: FAILURES (full output in $log):"
	grep -E '^(--- FAIL|FAIL|panic:|fatal error:)|^\s+[a-z_]+_test\.go:[0-9]+:' "$log" | head -200
	exit 1
fi
echo "stress: no failure"
