#!/usr/bin/env bash
# The whole picture on loopback, in a temporary directory: an authority, a
# listener (gateway Telegraf → InfluxDB 1.8), two devices sending cpu and mem
# through outputs.ockam, an impostor whose credential comes from another
# authority, and an intruder (bin/ockam-intruder: plaintext and forged
# handshakes). After DEMO_SECONDS (default 20) it prints what InfluxDB holds,
# per verified device identity and site, and stops everything it started.
#
# Usage: scripts/demo.sh   (make demo builds what it needs first)
# Environment: OCKAM_BIN (default bin/), INFLUXD (default .tools/bin/influxd),
# DEMO_SECONDS (default 20), DEMO_KEEP=1 keeps the temporary directory.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # "&" is literal in ${var//pat/rep}

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${OCKAM_BIN:-$root/bin}
influxd=${INFLUXD:-$root/.tools/bin/influxd}
seconds=${DEMO_SECONDS:-20}
me=demo
stop_tries=50
tools=("$bin/ockam" "$bin/telegraf" "$bin/ockam-intruder" "$influxd")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

step "identities and credentials (in $work)"
cd "$work"
# Every vault is encrypted; Telegraf reads the passphrase from the
# environment ("${OCKAM_VAULT_PASSPHRASE}" in the configurations).
OCKAM_VAULT_PASSPHRASE=demo-$RANDOM$RANDOM
export OCKAM_VAULT_PASSPHRASE
passphrase_ref='${OCKAM_VAULT_PASSPHRASE}'
ockam identity create --vault authority >/dev/null
ockam identity export --vault authority --out authority.identity
listener_id=$(ockam identity create --vault listener)
ockam identity export --vault listener --out listener.identity
ockam credential issue --vault authority --subject listener.identity --attr role=listener --ttl 720h \
	--out listener.cred >/dev/null
declare -A id
for dev in device-1:plant-7 device-2:plant-9; do
	name=${dev%%:*}
	id[$name]=$(ockam identity create --vault "$name")
	ockam identity export --vault "$name" --out "$name.identity"
	ockam credential issue --vault authority --subject "$name.identity" --attr role=sensor \
		--attr "site=${dev#*:}" --ttl 720h --out "$name.cred" >/dev/null
	echo "$name  ${id[$name]}  role=sensor site=${dev#*:}"
done
# The impostor has a credential just as good, from an authority nobody trusts.
ockam identity create --vault rogue-authority >/dev/null
id[impostor]=$(ockam identity create --vault impostor)
ockam identity export --vault impostor --out impostor.identity
ockam credential issue --vault rogue-authority --subject impostor.identity --attr role=sensor \
	--attr site=plant-7 --ttl 720h --out impostor.cred >/dev/null
echo "impostor  ${id[impostor]}  role=sensor site=plant-7, issued by rogue-authority"
echo "listener  $listener_id  role=listener"

step "InfluxDB 1.8 on loopback"
start_influxdb "$influxd"

step "the listener: inputs.ockam_listener → outputs.influxdb_v2"
render listener.conf.tmpl listener.conf ListenAddress=127.0.0.1:0 VaultPath="$work/listener" VaultPassphrase="$passphrase_ref" \
	CredentialPath="$work/listener.cred" AuthorityPath="$work/authority.identity" \
	RevocationList= AllowMeasurements='["cpu", "mem"]' InfluxURL="http://$influx"
start listener "$bin/telegraf" --config listener.conf
wait_for 30 "the listener to listen" grep -q '\[inputs.ockam_listener\] Listening on' listener.log
listen=$(grep -o '\[inputs.ockam_listener\] Listening on [^ ]*' listener.log | sed 's/.* //')
echo "listening on $listen"

device_inputs='[[inputs.cpu]]
  percpu = false
  totalcpu = true

[[inputs.mem]]'
start_device() { # NAME
	render device.conf.tmpl "$1.conf" Interval=2s Inputs="$device_inputs" ListenerAddress="$listen" \
		ListenerIdentity="$listener_id" VaultPath="$work/$1" VaultPassphrase="$passphrase_ref" CredentialPath="$work/$1.cred" \
		AuthorityPath="$work/authority.identity"
	start "$1" "$bin/telegraf" --config "$1.conf"
}

step "two devices: inputs.cpu, inputs.mem → outputs.ockam"
start_device device-1
start_device device-2
started=$SECONDS
echo "device-1 and device-2 running"

step "an impostor: a credential from another authority"
# A stock Telegraf checks its own credential first and will not even start.
start_device impostor
impostor_pid=${pids[-1]}
for _ in $(seq 50); do
	kill -0 "$impostor_pid" 2>/dev/null || break
	sleep 0.2
done
if kill -0 "$impostor_pid" 2>/dev/null; then
	kill -TERM "$impostor_pid"
	wait "$impostor_pid" || true
	die "the impostor's Telegraf kept running; see $work/impostor.log"
fi
wait "$impostor_pid" || true
echo "impostor.log (the impostor's own Telegraf):"
grep -E 'E! .*outputs\.ockam' impostor.log | sed 's/^/  /' || die "no refusal in impostor.log"
# A modified client skips that check and presents the credential anyway:
# the listener refuses the handshake.
(cd "$root" && go build -o "$work/unchecked" ./e2e/cmd/unchecked)
echo "a modified client presenting the same credential:"
status=0
out=$("$work/unchecked" -address "$listen" -vault "$work/impostor" -credential "$work/impostor.cred" \
	-authority "$work/authority.identity" 2>&1) || status=$?
sed 's/^/  /' <<<"$out"
((status == 1)) || die "the listener should have refused the modified client (exit status $status)"
refused() { grep -q 'Handshake from .* failed (unknown_issuer)' listener.log; }
wait_for 10 "the listener to refuse the impostor" refused
echo "listener.log:"
grep 'Handshake from .* failed (unknown_issuer)' listener.log | sed 's/^/  /'

step "an intruder: plaintext and forged handshakes (bin/ockam-intruder)"
"$bin/ockam-intruder" --address "$listen" --authority "$work/authority.identity" | sed 's/^/  /' ||
	die "the listener did not refuse every attempt of the intruder"

collect_and_count
echo
echo "SHOW TAG VALUES FROM cpu WITH KEY = ockam_identity"
influx_query 'SHOW TAG VALUES FROM cpu WITH KEY = ockam_identity'

ok=1
for name in device-1 device-2; do
	grep -q "ockam_identity=${id[$name]}" <<<"$result" || { echo "demo: nothing from $name" >&2; ok=0; }
done
if grep -q "${id[impostor]}" <<<"$result"; then
	echo "demo: the impostor's metrics reached InfluxDB" >&2
	ok=0
fi
((ok)) || die "the demo did not show what it should; logs are in $work"
step "both devices arrived with their verified identity and site; the impostor did not. Stopping."
