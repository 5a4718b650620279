#!/usr/bin/env bash
# Install a Debian package whose binaries the tests start themselves on loopback ports:
#   bash scripts/install_debian.sh prometheus prometheus promtool    # tests/deploy (a real Prometheus, promtool)
#   bash scripts/install_debian.sh redis-server redis-server          # the feedback store's Redis tests
# Usage: install_debian.sh PACKAGE COMMAND... Idempotent and quiet: does nothing when every COMMAND is already on
# PATH, prints apt's log only when it fails. Needs root (CI and the dev machines run as root). The package's own
# service is never used: a policy-rc.d that forbids service starts is put in place for the install if none exists.
set -euo pipefail

package=$1
shift
on_path() {
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || return 1; done
}
if on_path "$@"; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_debian.sh: root is needed to apt-get install $package (or put $* on PATH)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
fi
cleanup() {
  if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi
  rm -f "$log"
}
trap cleanup EXIT

if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$package"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_debian.sh: apt-get install $package failed" >&2
  exit 1
fi
on_path "$@"
