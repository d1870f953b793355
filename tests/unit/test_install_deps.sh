#!/usr/bin/env bash
# Every external command the tests run must come from a package scripts/install-deps installs,
# or a fresh Debian 12 minimal root fails scripts/test (issue 11: openssl was missing).
# Usage: test_install_deps.sh <source dir>
set -euo pipefail
src=$1
deps=$src/scripts/install-deps

# The package list: the words of the `packages=( ... )` array, comments dropped.
listed=" $(sed -n '/^packages=(/,/^)/p' "$deps" | sed -e 's/#.*//' -e 's/packages=(//' -e 's/)//' | tr -s ' \n' ' ') "

# command the tests run -> Debian package that provides it
needs=(
  openssl:openssl            # tg_harness_tls_make: CA and certificates (test_gw_tls, test_node_posix)
  mosquitto:mosquitto        # every integration test's broker
  mosquitto_pub:mosquitto-clients
  mosquitto_passwd:mosquitto
  kcat:kcat
  promtool:prometheus
  curl:curl
  python3:python3
  sqlite3:sqlite3            # test_journal_tool and corruption tests
  pkill:procps
)
fail=0
for pair in "${needs[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  # Only commands that some test actually runs are required.
  if ! grep -rqs -- "\"$cmd\"\|\\b$cmd " "$src/tests" "$src/scripts/test"; then
    continue
  fi
  case $listed in
    *" $pkg "*) ;;
    *) echo "FAIL: the tests run '$cmd' but scripts/install-deps does not install '$pkg'"; fail=1 ;;
  esac
done
[ $fail -eq 0 ] && echo "ok: every command the tests run comes from an installed package"
exit $fail
