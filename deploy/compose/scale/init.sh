#!/bin/sh
# The `scale-init` service of the `scale` profile of docker-compose.yml: the
# identities and credentials of the three gateways and the device behind
# HAProxy, issued by the authority that `init` created. Run again, it keeps
# every identity and credential that still verifies.
# Environment: OCKAM_ROOT (default /ockam), OCKAM_OWNER (uid:gid, as init.sh).
set -eu
root=${OCKAM_ROOT:-/ockam}
public=$root/public
authority=$root/authority/vault

# enroll NAME KEY=VALUE...: the identity of member NAME and, unless its
# current one still verifies, a credential with these attributes.
enroll() {
	name=$1
	shift
	for attr; do
		set -- "$@" --attr "$attr"
		shift
	done
	mkdir -p "$root/$name"
	if ! ockam identity show --vault "$root/$name/vault" --identifier >/dev/null 2>&1; then
		ockam identity create --vault "$root/$name/vault" >/dev/null
	fi
	ockam identity export --vault "$root/$name/vault" --out "$public/$name.identity" --force
	cred=$root/$name/$name.cred
	if ockam credential verify --authority "$public/authority.identity" --subject "$public/$name.identity" \
		"$cred" >/dev/null 2>&1; then
		echo "scale-init: $name: credential still valid"
	else
		ockam credential issue --vault "$authority" --subject "$public/$name.identity" "$@" --ttl 720h \
			--out "$cred" --force >/dev/null
		echo "scale-init: $name: credential issued ($*)"
	fi
	if [ -n "${OCKAM_OWNER:-}" ] && [ "$(id -u)" = 0 ]; then
		chown -R "$OCKAM_OWNER" "$root/$name" "$public/$name.identity"
	fi
}

enroll scale-gateway-1 role=listener
enroll scale-gateway-2 role=listener
enroll scale-gateway-3 role=listener
enroll scale-device role=sensor site=plant-11
