#!/bin/sh
# apt-install.sh PACKAGE...: installs Debian packages that the tests use as
# programs (mosquitto, softhsm2, haproxy, ...), and leaves none of their
# services running or enabled: the tests start their own. Needs root.
#
# - It waits up to 10 minutes for another apt or dpkg to finish
#   (DPkg::Lock::Timeout) rather than fail on the lock.
# - No recommended packages (opensc would bring pcscd and its socket).
# - While it installs, a policy-rc.d refuses every service start (unless the
#   machine has one already, as Docker images do); afterwards each systemd
#   unit of every package it installed is disabled, and stopped where
#   systemd runs. Without systemd, the enablement symlinks are removed.
set -eu

[ $# -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then
	echo "apt-install: installing $* needs root (or install them yourself)" >&2
	exit 1
fi

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }

policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# apt-install.sh: no service starts while it installs\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	ours=1
fi
tmp=$(mktemp -d)
cleanup() {
	rm -rf "$tmp"
	[ -z "$ours" ] || rm -f "$policy"
}
trap cleanup EXIT

installed() { dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" { print $2 }' | sort; }
installed >"$tmp/before"
apt_get update -qq
apt_get install -y -qq --no-install-recommends "$@"
installed >"$tmp/after"

# The packages this run installed, and their systemd units.
new=$(comm -13 "$tmp/before" "$tmp/after")
units=$(for pkg in $new; do dpkg -L "$pkg"; done |
	grep -E '^/(usr/)?lib/systemd/system/[^/]+\.(service|socket|timer|path)$' | sed 's,.*/,,' | sort -u || true)
for unit in $units; do
	if [ -d /run/systemd/system ]; then
		disable="systemctl disable --now $unit"
	elif command -v systemctl >/dev/null; then
		disable="systemctl disable $unit" # offline: removes the symlinks
	else
		continue
	fi
	if $disable >/dev/null 2>&1; then
		echo "apt-install: $unit: disabled"
	else
		echo "apt-install: warning: $disable failed; disable $unit yourself" >&2
	fi
done
