#!/usr/bin/env bash
# common/mqtt_nopair.c defines socketpair(), replacing libc's in any program it is linked
# into. It must live in its own library (tidegate_mqtt_nopair), linked only by the MQTT
# clients that need it (issue 11): not in libtidegate_common, not in programs without such a
# client. And it must still be in the gateway, or its ingress pays a write(2) per PUBACK.
# Usage: test_nopair_confined.sh <libtidegate_common.a> <binary that needs it> -- <binaries that must not have it>...
set -euo pipefail
defines() { local syms; syms=$(nm "$1" 2>/dev/null || true); grep -qE '^[0-9a-f]* T socketpair$' <<<"$syms"; }
common=$1 needs=$2
shift 3
fail=0
if defines "$common"; then
  echo "FAIL: $common defines socketpair(): every binary linking tidegate_common may get it"
  fail=1
fi
if ! defines "$needs"; then
  echo "FAIL: $needs lacks the socketpair() override its MQTT client relies on"
  fail=1
fi
for bin in "$@"; do
  if defines "$bin"; then
    echo "FAIL: $bin defines socketpair() but has no libmosquitto client that needs it"
    fail=1
  fi
done
[ $fail -eq 0 ] && echo "ok: socketpair() replaced only where needed"
exit $fail
