#!/usr/bin/env bash
# The scaled-out topology of docs/SCALING.md on loopback, in a temporary
# directory: the authority service, InfluxDB 1.8, a 3-node NATS cluster with
# the JetStream stream OCKAM_METRICS (R3), three gateways (inputs.ockam_listener
# → outputs.nats) behind HAProxy in TCP mode, two consumers
# (inputs.nats_consumer → outputs.influxdb_v2) and two devices sending cpu and
# mem through HAProxy. Halfway through it kills (-9) the gateway of device-1,
# which reconnects to another one. After DEMO_SECONDS (default 30) it prints
# what InfluxDB holds, per verified device identity, and stops everything.
#
# Usage: scripts/scale-demo.sh   (make scale-demo builds what it needs first)
# Environment: OCKAM_BIN (default bin/), INFLUXD (default .tools/bin/influxd),
# NATS_SERVER (default .tools/bin/nats-server), HAPROXY (default haproxy),
# DEMO_SECONDS (default 30), DEMO_KEEP=1 keeps the temporary directory.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # "&" is literal in ${var//pat/rep}

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${OCKAM_BIN:-$root/bin}
influxd=${INFLUXD:-$root/.tools/bin/influxd}
nats_server=${NATS_SERVER:-$root/.tools/bin/nats-server}
haproxy=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
seconds=${DEMO_SECONDS:-30}
me=scale-demo
stop_tries=75
tools=("$bin/ockam" "$bin/telegraf" "$influxd" "$nats_server" "$haproxy")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

# free_port: a loopback port nothing listens on, below the ephemeral range
# (the NATS nodes must know each other's ports before they start).
declare -A taken
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		[[ -z ${taken[$p]:-} ]] || continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken[$p]=1
			echo "$p"
			return
		fi
	done
}

step "identities and credentials (in $work)"
cd "$work"
ockam identity create --vault authority >/dev/null
ockam identity export --vault authority --out authority.identity
declare -A id
for g in gateway-1 gateway-2 gateway-3; do
	id[$g]=$(ockam identity create --vault "$g")
	ockam identity export --vault "$g" --out "$g.identity"
	ockam credential issue --vault authority --subject "$g.identity" --attr role=listener --ttl 720h \
		--out "$g.cred" >/dev/null
	echo "$g  ${id[$g]}  role=listener"
done
for dev in device-1:plant-7 device-2:plant-9; do
	name=${dev%%:*}
	id[$name]=$(ockam identity create --vault "$name")
	ockam identity export --vault "$name" --out "$name.identity"
	ockam credential issue --vault authority --subject "$name.identity" --attr role=sensor \
		--attr "site=${dev#*:}" --ttl 720h --out "$name.cred" >/dev/null
	echo "$name  ${id[$name]}  role=sensor site=${dev#*:}"
done

step "the authority service: the gateways' one revocation source"
start authority "$bin/ockam" authority serve --vault authority --db authority.db --listen tcp://127.0.0.1:0
wait_for 30 "the authority service" grep -q '^listening on' authority.log
authority_addr=$(sed -n 's/^listening on \(tcp:\/\/[^ ]*\) as .*/\1/p' authority.log)
echo "$authority_addr"

step "InfluxDB 1.8 on loopback"
start_influxdb "$influxd"

step "three NATS nodes, JetStream, one cluster"
declare -a client cluster
routes=()
for i in 1 2 3; do
	client[i]=127.0.0.1:$(free_port)
	cluster[i]=127.0.0.1:$(free_port)
	routes+=("\"nats-route://${cluster[i]}\"")
done
route_list=$(IFS=,; echo "${routes[*]}")
servers=()
for i in 1 2 3; do
	mkdir "nats-$i"
	render scale/nats.conf.tmpl "nats-$i.conf" Name="nats-$i" ClientAddr="${client[i]}" ClusterAddr="${cluster[i]}" \
		Routes="$route_list" StoreDir="$work/nats-$i"
	start "nats-$i" "$nats_server" -c "nats-$i.conf"
	servers+=("\"nats://${client[i]}\"")
done
nats_servers="[$(IFS=,; echo "${servers[*]}")]"
for i in 1 2 3; do
	wait_for 30 "nats-$i to be ready" grep -q 'Server is ready' "nats-$i.log"
done
wait_for 60 "a JetStream metadata leader" grep -qE 'metadata leader' nats-1.log nats-2.log nats-3.log
echo "$nats_servers"

step "three gateways: inputs.ockam_listener → outputs.nats (stream OCKAM_METRICS, 3 replicas)"
declare -a gw_addr
for i in 1 2 3; do
	gw_addr[i]=127.0.0.1:$(free_port)
	render scale/gateway.conf.tmpl "gateway-$i.conf" ListenAddress="${gw_addr[i]}" VaultPath="$work/gateway-$i" \
		VaultPassphrase= CredentialPath="$work/gateway-$i.cred" AuthorityPath="$work/authority.identity" \
		RevocationSource="$authority_addr" AllowMeasurements='["cpu", "mem"]' NatsServers="$nats_servers" \
		FlushInterval=1s
	start "gateway-$i" "$bin/telegraf" --config "gateway-$i.conf"
done
for i in 1 2 3; do
	wait_for 60 "gateway-$i to listen" grep -q '\[inputs.ockam_listener\] Listening on' "gateway-$i.log"
	echo "gateway-$i on ${gw_addr[i]}"
done

step "HAProxy in TCP mode in front of them"
proxy=127.0.0.1:$(free_port)
render scale/haproxy.cfg.tmpl haproxy.cfg Bind="$proxy" Gateway1="${gw_addr[1]}" Gateway2="${gw_addr[2]}" \
	Gateway3="${gw_addr[3]}"
start haproxy "$haproxy" -db -f haproxy.cfg
wait_for 30 "HAProxy to listen" bash -c "exec 3<>/dev/tcp/${proxy%:*}/${proxy#*:}" 2>/dev/null
echo "devices dial $proxy"

step "two consumers: inputs.nats_consumer (JetStream, tracking) → outputs.influxdb_v2"
render scale/consumer.conf.tmpl consumer.conf NatsServers="$nats_servers" InfluxURL="http://$influx" Bucket=db/autogen
# One after the other: the first creates the durable consumer (named after
# queue_group); two creating it at once can fail one of them at start.
for i in 1 2; do
	start "consumer-$i" "$bin/telegraf" --config consumer.conf
	wait_for 60 "consumer-$i" grep -q 'Started the NATS consumer service' "consumer-$i.log"
done
echo "queue group influxdb_writers"

step "two devices: inputs.cpu, inputs.mem → outputs.ockam → HAProxy"
device_inputs='[[inputs.cpu]]
  percpu = false
  totalcpu = true

[[inputs.mem]]'
for name in device-1 device-2; do
	render scale/device.conf.tmpl "$name.conf" Interval=1s Inputs="$device_inputs" ProxyAddress="$proxy" \
		VaultPath="$work/$name" VaultPassphrase= CredentialPath="$work/$name.cred" AuthorityPath="$work/authority.identity"
	start "$name" "$bin/telegraf" --config "$name.conf"
done
started=$SECONDS
opened() { grep -o 'Channel open to listener I[0-9a-f]*' device-1.log | tail -1 | sed 's/.* //'; }
for name in device-1 device-2; do
	wait_for 60 "$name's channel" grep -q 'Channel open to listener' "$name.log"
	echo "$name: $(grep -o 'Channel open to listener .*' "$name.log" | tail -1)"
done

sleep $((seconds / 2))
victim=
for g in gateway-1 gateway-2 gateway-3; do
	[[ ${id[$g]} == "$(opened)"* ]] && victim=$g
done
[[ -n $victim ]] || die "device-1's gateway $(opened) is none of the three"
step "kill -9 $victim, the gateway of device-1"
opens=$(grep -c 'Channel open to listener' device-1.log)
reopened() { (($(grep -c 'Channel open to listener' device-1.log) > opens)); }
{ kill -KILL "${pid[$victim]}" && wait "${pid[$victim]}"; } 2>/dev/null || true
wait_for 60 "device-1 to reconnect" reopened
echo "device-1: $(grep -o 'Channel to listener .*' device-1.log | tail -1)"
echo "device-1: $(grep -o 'Channel open to listener .*' device-1.log | tail -1)"

collect_and_count
for name in device-1 device-2; do
	grep -q "ockam_identity=${id[$name]}" <<<"$result" || die "nothing from $name; logs are in $work"
done
step "both devices arrived through HAProxy, the gateways and JetStream, with their verified identity. Stopping."
