#!/usr/bin/env bash
# check_config_files.sh TIDEGATE_BIN SOURCE_DIR
#
# Proves that the files shipped in boards/ and config/ stay valid as the code changes:
#   - every board file, under the dev and the example gateway config, passes
#     `tidegate --check-config`, and its values really are applied (their origin is the board
#     file); a board file with an out-of-range value fails (so this check can fail at all);
#   - board files set keys of the hardware sections only ([mqtt], [kafka], [journal]);
#   - the Prometheus scrape config and alert rules pass promtool (check config, check rules,
#     and the rule unit tests in config/tidegate.rules.test.yml);
#   - config/mosquitto.conf and config/acl load in the real Mosquitto, which then keeps QoS1
#     messages for the gateway's persistent session and refuses a node publishing under
#     another device's id (run on a Unix socket: no port is used);
#   - without -b, the daemon picks the board file whose match-model line fits a fake
#     device-tree model (TIDEGATE_DT_MODEL), or the generic file of its architecture;
#   - config/tidegate.service passes `systemd-analyze verify` where systemd-analyze exists, and
#     so does config/tidegate-worker.service (with WORKER_BIN, the third argument), which
#     must also carry every hardening line of the gateway's unit.
# Every failure is reported; the exit status is 1 if there was any. promtool is taken from
# TG_PROMTOOL or PATH, Mosquitto from PATH; a missing one is a failure (scripts/install-deps
# installs both).
set -uo pipefail

if [ $# -ne 2 ] && [ $# -ne 3 ]; then
  echo "usage: $0 TIDEGATE_BIN SOURCE_DIR [WORKER_BIN]" >&2
  exit 2
fi
# Absolute: the checks run from the source directory, and the unit file needs one.
bin=$(readlink -f -- "$1") || bin=$1
src=$2
worker_bin=
if [ $# -eq 3 ]; then worker_bin=$(readlink -f -- "$3") || worker_bin=$3; fi
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ok() { echo "ok: $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-check-config.XXXXXX") || exit 1
mq_pid=
cleanup() {
  if [ -n "$mq_pid" ] && kill -0 "$mq_pid" 2>/dev/null; then
    kill "$mq_pid" 2>/dev/null
    wait "$mq_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# check_config NAME ARGS...: tidegate --check-config ARGS must exit 0; output in $tmp/out.
check_config() {
  local name=$1
  shift
  if "$bin" --check-config "$@" >"$tmp/out" 2>"$tmp/err"; then
    return 0
  fi
  fail "$name: tidegate --check-config $* exited non-zero:"
  sed 's/^/    /' "$tmp/err" >&2
  return 1
}

# --- tidegate --check-config ------------------------------------------------------------------

if [ ! -x "$bin" ]; then
  fail "$bin is not an executable (build the tidegate target)"
  exit 1
fi

cd "$src" || exit 1
boards=(boards/*.ini)
if [ ${#boards[@]} -eq 0 ] || [ ! -e "${boards[0]}" ]; then
  fail "no board files in $src/boards"
fi

for board in "${boards[@]}"; do
  [ -e "$board" ] || continue
  for cfg in config/tidegate-dev.ini config/tidegate.ini; do
    if check_config "$board with $cfg" -c "$cfg" -b "$board"; then
      # The board file must have been applied, not just parsed: some value has it as origin,
      # unless the config file overrides every key the board sets.
      if grep -q "^# origin: $board:" "$tmp/out"; then
        ok "$board with $cfg"
      else
        fail "$board with $cfg: no value came from the board file"
      fi
    fi
  done
  # Board files hold hardware knobs only: no [gateway], [log], [validate], [metrics] or
  # pass-through sections, which belong to an installation's config file.
  bad_sections=$(grep -E '^[[:space:]]*\[' "$board" | sed 's/[[:space:]]//g' |
                 grep -vxE '\[(mqtt|kafka|journal)\]' | tr '\n' ' ')
  if [ -n "$bad_sections" ]; then
    fail "$board: sections other than [mqtt], [kafka], [journal]: $bad_sections"
  fi
done

for cfg in config/tidegate.ini config/tidegate-dev.ini; do
  check_config "$cfg alone" -c "$cfg" && ok "$cfg alone"
done

# Negative control: the same check must reject a board value outside the schema's bounds.
sed 's/^zstd_level = .*/zstd_level = 20/' boards/rpi4b.ini >"$tmp/bad-board.ini"
if "$bin" --check-config -c config/tidegate-dev.ini -b "$tmp/bad-board.ini" >/dev/null 2>"$tmp/err"; then
  fail "a board file with zstd_level = 20 passed --check-config"
elif ! grep -q "zstd_level" "$tmp/err"; then
  fail "the error for zstd_level = 20 does not name the key:"
  sed 's/^/    /' "$tmp/err" >&2
else
  ok "out-of-range board value rejected"
fi

# --- Prometheus ---------------------------------------------------------------------------------

promtool=${TG_PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ]; then
  fail "promtool not found (install the prometheus package, or set TG_PROMTOOL)"
else
  for args in "check rules config/tidegate.rules.yml" "check config config/prometheus.yml" \
              "test rules config/tidegate.rules.test.yml"; do
    # shellcheck disable=SC2086 # args is split on purpose
    if "$promtool" $args >"$tmp/out" 2>&1; then
      ok "promtool $args"
    else
      fail "promtool $args:"
      sed 's/^/    /' "$tmp/out" >&2
    fi
  done
fi

# --- Mosquitto ------------------------------------------------------------------------------

# Waits (up to 10 s) until the broker listens on its socket, or exited. 0 when listening.
# (The socket, not a log line: the shipped config logs only errors, warnings and notices.)
wait_mosquitto() {
  local deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ]; do
    [ -S "$sock" ] && return 0
    kill -0 "$mq_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

if ! command -v mosquitto >/dev/null 2>&1 || ! command -v mosquitto_passwd >/dev/null 2>&1; then
  fail "mosquitto or mosquitto_passwd not found (install mosquitto)"
else
  sock="$tmp/mqtt.sock"
  # The shipped file with its paths moved into $tmp, the TCP listener replaced by a Unix
  # socket, and what Debian's main mosquitto.conf would add (persistence_location, log_dest).
  sed -e "s|^listener 1883\$|listener 0 $sock|" \
      -e "s|/etc/mosquitto/passwd|$tmp/passwd|" \
      -e "s|/etc/mosquitto/acl|$tmp/acl|" config/mosquitto.conf >"$tmp/mosquitto.conf"
  {
    echo "persistence_location $tmp/"
    echo "log_dest stderr"
    # As root Mosquitto would switch to the mosquitto user, which cannot enter $tmp.
    [ "$(id -u)" -eq 0 ] && echo "user root"
  } >>"$tmp/mosquitto.conf"
  cp config/acl "$tmp/acl"
  : >"$tmp/passwd"
  chmod 600 "$tmp/passwd"
  for user in tidegate node-01 node-02; do
    mosquitto_passwd -b "$tmp/passwd" "$user" "pw-$user" || fail "mosquitto_passwd $user"
  done
  mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
  mq_pid=$!
  if ! wait_mosquitto; then
    fail "mosquitto did not start with config/mosquitto.conf and config/acl:"
    sed 's/^/    /' "$tmp/mosquitto.log" >&2
  else
    ok "mosquitto runs with config/mosquitto.conf and config/acl"
    mq() { "$@" --unix "$sock" -V 5 -q 1; }
    # The gateway's persistent session, subscribed and then away: the broker must queue for it.
    mq mosquitto_sub -u tidegate -P pw-tidegate -i gw-check -c -x 600 \
       -t 'telemetry/+' -E >/dev/null 2>"$tmp/sub.err" ||
      fail "gateway user cannot subscribe to telemetry/+: $(cat "$tmp/sub.err")"
    # node-01 publishes under node-02's id (refused by the ACL), then its own; node-02 its own.
    mq mosquitto_pub -u node-01 -P pw-node-01 -t telemetry/node-02 -m spoofed 2>/dev/null
    mq mosquitto_pub -u node-01 -P pw-node-01 -t telemetry/node-01 -m own ||
      fail "node-01 cannot publish to telemetry/node-01"
    mq mosquitto_pub -u node-02 -P pw-node-02 -t telemetry/node-02 -m sentinel ||
      fail "node-02 cannot publish to telemetry/node-02"
    # Back as the same session: exactly the two allowed messages, in order, were kept.
    got=$(mq mosquitto_sub -u tidegate -P pw-tidegate -i gw-check -c -x 600 \
             -t 'telemetry/+' -v -C 2 -W 10 2>"$tmp/sub.err")
    want=$'telemetry/node-01 own\ntelemetry/node-02 sentinel'
    if [ "$got" = "$want" ]; then
      ok "broker queued QoS1 messages for the gateway's session; ACL refused a spoofed topic"
    else
      fail "gateway session got [$got], expected [$want] ($(cat "$tmp/sub.err"))"
    fi
    # Durable acks: the gateway writes ack/<id>; a node reads only its own and forges none.
    # Retained, so that a later subscriber gets them at once, in the order of its filters.
    mq mosquitto_pub -u tidegate -P pw-tidegate -t ack/node-02 -r -m other ||
      fail "gateway user cannot publish to ack/node-02"
    mq mosquitto_pub -u tidegate -P pw-tidegate -t ack/node-01 -r -m mine ||
      fail "gateway user cannot publish to ack/node-01"
    mq mosquitto_pub -u node-01 -P pw-node-01 -t ack/node-02 -r -m forged 2>/dev/null
    got=$(mq mosquitto_sub -u node-01 -P pw-node-01 -t ack/node-02 -t ack/node-01 -v -C 1 \
             -W 10 2>"$tmp/sub.err")
    got2=$(mq mosquitto_sub -u node-02 -P pw-node-02 -t ack/node-02 -v -C 1 -W 10 \
              2>"$tmp/sub2.err")
    if [ "$got" = "ack/node-01 mine" ] && [ "$got2" = "ack/node-02 other" ]; then
      ok "ACL: a node reads only its own ack/<id> and cannot write another's"
    else
      fail "node-01 got [$got] (want [ack/node-01 mine]), node-02 got [$got2] (want" \
           "[ack/node-02 other]) ($(cat "$tmp/sub.err" "$tmp/sub2.err"))"
    fi
  fi
  kill "$mq_pid" 2>/dev/null
  wait "$mq_pid" 2>/dev/null
  mq_pid=
fi

# --- board autodetect (no -b) -----------------------------------------------------------------

# A fake /proc/device-tree/model: the daemon picks the board file that claims it, says so, and
# applies it; an unknown model falls back to the generic file of this machine's architecture.
printf 'Raspberry Pi 4 Model B Rev 1.4\0' >"$tmp/model"
if TIDEGATE_BOARDS_DIR="$src/boards" TIDEGATE_DT_MODEL="$tmp/model" \
     "$bin" --check-config -c config/tidegate-dev.ini >"$tmp/out" 2>"$tmp/err" &&
   grep -q 'board file .*/rpi4b.ini (model "Raspberry Pi 4 Model B Rev 1.4"' "$tmp/err" &&
   grep -q 'origin: .*boards/rpi4b.ini' "$tmp/out"; then
  ok "without -b, the model \"Raspberry Pi 4 Model B\" selects and applies boards/rpi4b.ini"
else
  fail "without -b, a Raspberry Pi 4 model did not select boards/rpi4b.ini:"
  sed 's/^/    /' "$tmp/err" >&2
fi
printf 'Unknown Vendor Board\0' >"$tmp/model"
arch_file=$(grep -l "^# match-arch:.*\b$(uname -m)\b" "$src"/boards/*.ini | head -1)
if [ -z "$arch_file" ]; then
  ok "no generic board file for $(uname -m): fallback not checked"
elif TIDEGATE_BOARDS_DIR="$src/boards" TIDEGATE_DT_MODEL="$tmp/model" \
       "$bin" --check-config -c config/tidegate-dev.ini >"$tmp/out" 2>"$tmp/err" &&
     grep -qF "board file $arch_file (no board file matches model" "$tmp/err"; then
  ok "an unknown model falls back to $(basename "$arch_file") ($(uname -m))"
else
  fail "an unknown model did not fall back to $arch_file:"
  sed 's/^/    /' "$tmp/err" >&2
fi

# --- systemd unit ---------------------------------------------------------------------------

verify_unit() { # unit file name in config/, installed binary path, binary under test
  local unit=$1
  # verify wants ExecStart to exist: point it at the binary under test.
  sed "s|$2 |$3 |" "config/$unit" >"$tmp/$unit"
  systemd-analyze verify "$tmp/$unit" >"$tmp/out" 2>&1
  if grep -q "$unit" "$tmp/out"; then
    fail "systemd-analyze verify config/$unit:"
    sed 's/^/    /' "$tmp/out" >&2
  else
    ok "systemd-analyze verify config/$unit"
  fi
}
if command -v systemd-analyze >/dev/null 2>&1; then
  verify_unit tidegate.service /usr/bin/tidegate "$bin"
  if [ -n "$worker_bin" ]; then verify_unit tidegate-worker.service /usr/bin/tidegate-worker "$worker_bin"; fi
else
  echo "skip: systemd-analyze not installed"
fi

# The worker's unit is hardened as the gateway's is: every sandboxing line after the
# gateway's "# Hardening" comment (bar ReadWritePaths=, the gateway's journal) is in it.
missing=$(sed -n '/^# Hardening/,/^\[Install\]/p' config/tidegate.service |
          grep -E '^[A-Za-z]+=' | grep -v '^ReadWritePaths=' |
          grep -vxF -f config/tidegate-worker.service)
if [ -z "$(sed -n '/^# Hardening/,/^\[Install\]/p' config/tidegate.service | grep -E '^[A-Za-z]+=')" ]; then
  fail "config/tidegate.service: no hardening lines found after '# Hardening'"
elif [ -n "$missing" ]; then
  fail "config/tidegate-worker.service lacks the gateway unit's hardening:"
  sed 's/^/    /' <<<"$missing" >&2
else
  ok "config/tidegate-worker.service carries the gateway unit's hardening"
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all config files valid"
