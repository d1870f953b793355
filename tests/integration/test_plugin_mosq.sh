#!/usr/bin/env bash
# test_plugin_mosq.sh PLUGIN_SO
# tidegate_mosq.so in a real Mosquitto (issue 14), for what the guarantee tests' plugin mode
# does not show:
#   - [mqtt] keys of the daemon's client connection, an unknown plugin_opt_* and a missing
#     plugin_opt_config are refused: the broker exits non-zero and says which key, where;
#     so is a "$share/<group>/..." [mqtt] topic, which no PUBLISH topic matches;
#   - plugin_opt_forward false (default) hides taken messages from a '#' subscriber, other
#     topics still pass, and plugin_opt_forward true lets telemetry through as well;
#   - SIGHUP to the broker reaches the plugin (MOSQ_EVT_RELOAD) and the broker goes on;
#   - the plugin does not link libmosquitto, the MQTT client library (it runs inside the
#     broker, which provides the mosquitto_* functions it calls);
#   - with [ack] enabled the durable ack is published from inside the broker
#     (mosquitto_broker_publish) on ack/<device id>, with Kafka unreachable: in durable mode
#     the journal commit alone makes a reading durable.
# No TCP port: the broker listens on a Unix socket; no metrics listener; Kafka is named at
# 127.0.0.1:1, which refuses, and is never needed here.
set -uo pipefail
so=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-plugin.XXXXXX") || exit 1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
sock=$tmp/mqtt.sock
# In a sanitizer build the plugin needs the ASan/UBSan runtimes preloaded into the (not
# instrumented) broker, and only there (TG_PLUGIN_PRELOAD, set by CMake).
broker_cmd=(mosquitto)
[ -n "${TG_PLUGIN_PRELOAD:-}" ] && broker_cmd=(env "LD_PRELOAD=$TG_PLUGIN_PRELOAD" mosquitto)

# write_conf NAME [plugin_opt lines...]: a broker config loading the plugin with NAME.ini.
write_conf() {
  local name=$1
  shift
  {
    echo "listener 0 $sock"
    echo "allow_anonymous true"
    echo "persistence false"
    echo "log_dest stderr"
    printf 'log_type %s\n' error warning notice information subscribe
    [ "$(id -u)" = 0 ] && echo "user root"
    echo "plugin $so"
    for line in "$@"; do echo "$line"; done
  } >"$tmp/$name.conf"
}

# ini NAME EXTRA: the gateway config for NAME (journal under $tmp, metrics off).
ini() {
  printf '[gateway]\nid = plugin-test\n[kafka]\nbrokers = 127.0.0.1:1\n[journal]\npath = %s/%s.db\ncommit_interval_ms = 100\n[metrics]\nlisten =\n%b' \
    "$tmp" "$1" "$2" >"$tmp/$1.ini"
}

# expect_refused NAME EXPECTED_TEXT: the broker must exit non-zero within 10 s saying it.
expect_refused() {
  local name=$1 want=$2
  timeout 10 "${broker_cmd[@]}" -c "$tmp/$name.conf" >"$tmp/$name.out" 2>&1
  local st=$?
  if [ $st -eq 0 ] || [ $st -eq 124 ]; then
    fail "$name: broker exit status $st, expected a refusal"
  elif ! grep -qF -- "$want" "$tmp/$name.out"; then
    fail "$name: log lacks \"$want\":"
    cat "$tmp/$name.out" >&2
  else
    echo "ok: $name refused ($want)"
  fi
}

# The dynamic section names no libmosquitto (ldd, from libc-bin, resolves what it names).
if ! deps=$(ldd "$so" 2>&1); then
  fail "ldd $so: $deps"
elif grep -q "libmosquitto" <<<"$deps"; then
  fail "the plugin links libmosquitto, the client library:"
  grep "libmosquitto" <<<"$deps" >&2
else
  echo "ok: the plugin does not link libmosquitto"
fi

ini host '[mqtt]\nhost = 10.0.0.1\n'
write_conf host "plugin_opt_config $tmp/host.ini"
expect_refused host "$tmp/host.ini:11: [mqtt] host: has no meaning in plugin mode"

# A shared subscription names no topic a PUBLISH has: the plugin would take nothing, silently.
ini share '[mqtt]\ntopic = $share/g/telemetry/+\n'
write_conf share "plugin_opt_config $tmp/share.ini"
expect_refused share "$tmp/share.ini:11: [mqtt] topic: \"\$share/g/telemetry/+\" is a shared subscription"

ini unknown ''
write_conf unknown "plugin_opt_config $tmp/unknown.ini" "plugin_opt_colour blue"
expect_refused unknown "plugin_opt_colour: unknown option"

write_conf noconfig "plugin_opt_forward true"
expect_refused noconfig "plugin_opt_config is required"

ini badset ''
write_conf badset "plugin_opt_config $tmp/badset.ini" "plugin_opt_set journal.mode=sometimes"
expect_refused badset "journal"

# start_broker NAME: runs it in the background until its socket accepts a client.
start_broker() {
  rm -f "$sock"
  "${broker_cmd[@]}" -c "$tmp/$1.conf" >"$tmp/$1.out" 2>&1 &
  broker=$!
  pids+=("$broker")
  for _ in $(seq 100); do
    [ -S "$sock" ] && mosquitto_pub --unix "$sock" -t probe/x -m x 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$1: broker did not start"
  cat "$tmp/$1.out" >&2
  return 1
}

stop_broker() {
  kill -TERM "$broker" 2>/dev/null
  wait "$broker"
  local st=$?
  [ $st -eq 0 ] || fail "$1: broker exit status $st after SIGTERM"
}

# wait_log NAME TEXT: until the broker's log says TEXT (a subscription is in place), 10 s.
wait_log() {
  for _ in $(seq 100); do
    grep -qF -- "$2" "$tmp/$1.out" && return 0
    sleep 0.1
  done
  fail "$1: the broker never logged \"$2\""
  return 1
}

reading() { printf '{"seq":%d,"boot":1,"ts":%d000,"m":{"temp":21.5}}' "$1" "$(date +%s)"; }

# --- forwarding and acks ---
ini fwd '[ack]\nenabled = true\nmin_interval_ms = 0\n'
write_conf fwd "plugin_opt_config $tmp/fwd.ini"
if start_broker fwd; then
  mosquitto_sub --unix "$sock" -t '#' -v -W 10 >"$tmp/all.txt" 2>/dev/null &
  pids+=($!)
  mosquitto_sub --unix "$sock" -t 'ack/dev-7' -C 1 -W 10 >"$tmp/ack.txt" 2>/dev/null &
  ack_sub=$!
  pids+=("$ack_sub")
  wait_log fwd " 0 ack/dev-7"
  wait_log fwd " 0 #"
  mosquitto_pub --unix "$sock" -q 1 -t telemetry/dev-7 -m "$(reading 1)"
  mosquitto_pub --unix "$sock" -q 1 -t other/topic -m passes
  wait "$ack_sub"
  if [ -s "$tmp/ack.txt" ]; then
    echo "ok: ack/dev-7 published from inside the broker ($(wc -c <"$tmp/ack.txt") bytes)"
  else
    fail "no ack on ack/dev-7 within 10 s"
    cat "$tmp/fwd.out" >&2
  fi
  # SIGHUP: MOSQ_EVT_RELOAD reaches the plugin, and the broker goes on.
  kill -HUP "$broker"
  if wait_log fwd "broker reload: reloading the device keys" &&
    mosquitto_pub --unix "$sock" -q 1 -t telemetry/dev-7 -m "$(reading 2)"; then
    echo "ok: SIGHUP reaches the plugin, the broker goes on"
  fi
  stop_broker fwd
  grep -q "^other/topic passes" "$tmp/all.txt" || fail "forward=false: other/topic did not pass"
  if grep -q "^telemetry/" "$tmp/all.txt"; then
    fail "forward=false: a '#' subscriber received telemetry"
  else
    echo "ok: forward=false hides telemetry, other topics pass"
  fi
fi

ini fwd2 ''
write_conf fwd2 "plugin_opt_config $tmp/fwd2.ini" "plugin_opt_forward true"
if start_broker fwd2; then
  mosquitto_sub --unix "$sock" -t 'telemetry/+' -C 1 -W 10 -v >"$tmp/tel.txt" 2>/dev/null &
  sub=$!
  pids+=("$sub")
  wait_log fwd2 " 0 telemetry/+"
  mosquitto_pub --unix "$sock" -q 1 -t telemetry/dev-8 -m "$(reading 1)"
  wait "$sub"
  if grep -q "^telemetry/dev-8 " "$tmp/tel.txt"; then
    echo "ok: forward=true delivers telemetry to subscribers"
  else
    fail "forward=true: the subscriber got nothing"
  fi
  stop_broker fwd2
fi

[ $failures -eq 0 ] && echo "all plugin checks passed"
exit $((failures > 0))
