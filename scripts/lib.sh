# shellcheck shell=bash
# The helpers scripts/demo.sh and scripts/scale-demo.sh share. Each sources
# this file after setting me (its name in messages), root, bin, tools (the
# executables it needs) and stop_tries (how many 0.2 s waits for its
# processes to stop on TERM before KILL). Sourcing exits unless every one of
# tools is there, then makes the temporary directory $work and sets the traps
# that stop every process start started and remove $work (kept with
# DEMO_KEEP=1 or after a failure).

for b in "${tools[@]}"; do
	[[ -x $b ]] || { echo "$me: $b is missing; run make build tools (or make $me)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/telegraf-ockam-$me.XXXXXX")
pids=()
declare -A pid
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for _ in $(seq "$stop_tries"); do
			kill -0 "${pids[@]}" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	if [[ ${DEMO_KEEP:-} == 1 || $status != 0 ]]; then
		echo "$me: files and logs kept in $work"
	else
		rm -rf "$work"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }
die() { echo "$me: error: $*" >&2; exit 1; }
ockam() { "$bin/ockam" "$@"; }

# render TEMPLATE OUT KEY=VALUE...: fills the {{.KEY}} placeholders of
# deploy/TEMPLATE (the same files the e2e tests render with text/template).
render() {
	local text out=$2 kv
	text=$(<"$root/deploy/$1")
	for kv in "${@:3}"; do
		text=${text//"{{.${kv%%=*}}}"/"${kv#*=}"}
	done
	if [[ $text == *'{{'* ]]; then
		die "deploy/$1: placeholder left unfilled: $(grep -o '{{[^}]*}}' <<<"$text" | head -1)"
	fi
	printf '%s\n' "$text" >"$out"
}

# start NAME CMD...: runs CMD in the background with its output in NAME.log;
# the pid is in pid[NAME].
start() {
	local name=$1
	shift
	: >"$work/$name.log"
	"$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	pid[$name]=$!
}

# wait_for SECONDS WHAT CMD...: retries CMD every 0.2 s.
wait_for() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@"; do
		((SECONDS < deadline)) || die "timed out waiting for $what"
		sleep 0.2
	done
}

# start_influxdb INFLUXD: InfluxDB 1.8 on a loopback port with the database
# db, in the working directory; sets influx to its host:port.
start_influxdb() {
	mkdir influxdb
	render influxdb.conf.tmpl influxdb.conf Dir="$work/influxdb" HTTPBind=127.0.0.1:0
	start influxd "$1" -config influxdb.conf
	wait_for 60 "influxd to listen" grep -q 'msg="Listening on HTTP"' influxd.log
	influx=$(grep -o 'msg="Listening on HTTP".* addr=[^ ]*' influxd.log | sed 's/.*addr=//')
	wait_for 10 "influxd /ping" curl -sf -o /dev/null "http://$influx/ping"
	curl -sfS -o /dev/null -XPOST "http://$influx/query" --data-urlencode 'q=CREATE DATABASE db'
	echo "http://$influx, database db"
}

influx_query() { # prints the CSV result of an InfluxQL query
	curl -sfS -XPOST "http://$influx/query?db=db" -H 'Accept: application/csv' --data-urlencode "q=$1"
}

# collect_and_count: waits out the rest of $seconds since $started, then
# prints the cpu points InfluxDB holds per identity and site and keeps that
# result in result.
collect_and_count() {
	local left=$((seconds - (SECONDS - started)))
	if ((left > 0)); then
		step "collecting for $left more seconds"
		sleep "$left"
	fi
	step "what InfluxDB holds: SELECT count(usage_idle) FROM cpu GROUP BY ockam_identity, site"
	result=$(influx_query 'SELECT count(usage_idle) FROM cpu GROUP BY ockam_identity, site')
	echo "$result"
}
