#!/usr/bin/env bash
# Install a real Redis server (Debian's `redis-server` package) for the feedback store's Redis tests
# (tests/service/test_feedback_store.py). Idempotent and quiet: does nothing when `redis-server` is already on
# PATH, prints apt's log only when it fails. Needs root (CI and the dev machines run as root).
# The tests start their own redis-server on a free loopback port with no persistence; the Debian service is never
# used, and a policy-rc.d that forbids service starts is put in place for the install if none exists.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_redis.sh: root is needed to apt-get install redis-server (or put redis-server on PATH)" >&2
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

if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install_redis.sh: apt-get install redis-server failed" >&2
  exit 1
fi
command -v redis-server >/dev/null
