#!/bin/sh
# The `init` service of docker-compose.yml: creates the identities and
# credentials of the demo fleet with the ockam command, once. Run again (every
# `docker compose up` does), it keeps every identity and re-issues only the
# credentials that no longer verify (expired, or not for the identity in the
# vault) or whose attributes are not the ones below (a demo from before the
# relay has a gateway credential without relay=...). deploy/compose_test.go
# runs it twice on loopback.
#
# Layout under $OCKAM_ROOT (default /ockam; one compose volume per directory,
# so that each service sees only its own private keys):
#   authority/vault           the authority's keys: only this script sees them
#   public/                   public files, mounted read-only by every service:
#     authority.identity        the authority's identity file (what everyone trusts)
#     <member>.identity         each member's identity file
#     gateway.id                the gateway's identifier, which devices pin
#     revoked.list              the revocation list, once something is revoked
#   <member>/vault            a member's keys (gateway, device-1, device-2)
#   <member>/<member>.cred    its credential
#
# Environment: OCKAM_ROOT; OCKAM_OWNER (uid:gid) hands the member and public
# directories to that user when the script runs as root (compose runs it as
# root and Telegraf as 65532).
set -eu
root=${OCKAM_ROOT:-/ockam}
public=$root/public
authority=$root/authority/vault
ttl=720h
mkdir -p "$public"

# identity DIR: creates the identity of the vault DIR unless it has one.
identity() {
	if ! ockam identity show --vault "$1" --identifier >/dev/null 2>&1; then
		ockam identity create --vault "$1" >/dev/null
	fi
}

# attributes FILE: the attributes of the credential FILE, KEY=VALUE sorted.
attributes() {
	ockam credential show "$1" | sed -n 's/^  \([^ ]*\) = "\(.*\)"$/\1=\2/p' | LC_ALL=C sort
}

# enroll NAME KEY=VALUE...: the identity of member NAME and a credential with
# these attributes, issued unless the current one still verifies and has
# exactly these attributes.
enroll() {
	name=$1
	shift
	want=$(printf '%s\n' "$@" | LC_ALL=C sort)
	for attr; do
		set -- "$@" --attr "$attr"
		shift
	done
	mkdir -p "$root/$name"
	identity "$root/$name/vault"
	ockam identity export --vault "$root/$name/vault" --out "$public/$name.identity" --force
	cred=$root/$name/$name.cred
	if ockam credential verify --authority "$public/authority.identity" --subject "$public/$name.identity" \
		"$cred" >/dev/null 2>&1 && [ "$(attributes "$cred")" = "$want" ]; then
		echo "init: $name: credential still valid"
	else
		ockam credential issue --vault "$authority" --subject "$public/$name.identity" "$@" --ttl "$ttl" \
			--out "$cred" --force >/dev/null
		echo "init: $name: credential issued ($*)"
	fi
}

identity "$authority"
ockam identity export --vault "$authority" --out "$public/authority.identity" --force
# relay=NAME lets the gateway register NAME at the relay (its relay_name).
enroll gateway role=listener relay=plant-7-gateway
enroll device-1 role=sensor site=plant-7
enroll device-2 role=sensor site=plant-9
ockam identity show --vault "$root/gateway/vault" --identifier >"$public/gateway.id"

if [ -n "${OCKAM_OWNER:-}" ] && [ "$(id -u)" = 0 ]; then
	chown -R "$OCKAM_OWNER" "$public" "$root/gateway" "$root/device-1" "$root/device-2"
fi
echo "init: authority $(ockam identity show --vault "$authority" --identifier)"
echo "init: gateway $(cat "$public/gateway.id")"
