#!/usr/bin/env bash
# test_gw_config_refusals.sh TIDEGATE_BIN
# The daemon refuses, before doing anything else and with file:line:key, the values issue 11
# found accepted: an empty journal.path (SQLite would use a temporary database), an
# mqtt.topic that makes the device id ambiguous, an mqtt.max_packet_bytes that cannot hold a
# payload, a malformed "$share/<group>/..." topic or a share_group that contradicts its
# group; and (the hygiene part) [kafka.rdkafka] properties that switch a guarantee off,
# empty brokers, dlq_topic = topic, qos 0, an unbindable metrics.listen, without echoing a
# credential. Both `--check-config` and a real start exit 1; a good config still passes.
set -uo pipefail
bin=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-refusals.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# expect_refused NAME EXPECTED_TEXT INI: both modes exit 1 and say EXPECTED_TEXT.
expect_refused() {
  local name=$1 want=$2
  printf '%b' "$3" >"$tmp/$name.ini"
  for mode in --check-config start; do
    # No metrics listener (no fixed port); the journal, when named, is under $tmp.
    local args=(-c "$tmp/$name.ini" --set metrics.listen=)
    [ "$mode" = --check-config ] && args+=(--check-config)
    # A real start that got past the checks would run: the timeout stops it (status 124).
    timeout 10 "$bin" "${args[@]}" >"$tmp/out" 2>"$tmp/err"
    local st=$?
    if [ $st -ne 1 ]; then
      fail "$name ($mode): exit status $st, expected 1"
    elif ! grep -qF -- "$want" "$tmp/err"; then
      fail "$name ($mode): stderr lacks \"$want\":"
      sed 's/^/    /' "$tmp/err" >&2
    else
      echo "ok: $name ($mode) refused"
    fi
  done
}

expect_refused empty_path "$tmp/empty_path.ini:3: [journal] path: must not be empty" \
  '[journal]\n; nothing\npath =\n'
expect_refused topic_hash "$tmp/topic_hash.ini:2: [mqtt] topic: \"telemetry/#\" makes the device id ambiguous" \
  "[mqtt]\ntopic = telemetry/#\n[journal]\npath = $tmp/j.db\n"
expect_refused topic_inner_plus "$tmp/topic_inner_plus.ini:2: [mqtt] topic: \"telemetry/+/data\" makes the device id ambiguous" \
  "[mqtt]\ntopic = telemetry/+/data\n[journal]\npath = $tmp/j.db\n"
# A shared subscription as the topic keeps its group (issue 14): another share_group
# contradicts it, a malformed one is refused.
expect_refused share_contradicted "$tmp/share_contradicted.ini:4: [mqtt] share_group: \"other\" contradicts the group \"mine\" of [mqtt] topic" \
  "[mqtt]\ntopic = \$share/mine/telemetry/+\nconnections = 2\nshare_group = other\n[journal]\npath = $tmp/j.db\n"
expect_refused share_no_group "$tmp/share_no_group.ini:2: [mqtt] topic: \"\$share//telemetry/+\" is not a valid shared subscription" \
  "[mqtt]\ntopic = \$share//telemetry/+\n[journal]\npath = $tmp/j.db\n"
expect_refused packet_too_small "$tmp/packet_too_small.ini:2: [mqtt] max_packet_bytes: expected at least" \
  "[mqtt]\nmax_packet_bytes = 64K\n[validate]\nmax_payload_bytes = 64K\n[journal]\npath = $tmp/j.db\n"

# [kafka.rdkafka] switching a guarantee off, and values that would fail at run time (the
# hygiene part of issue 11): refused before anything starts, acks=0 included.
expect_refused acks0 "$tmp/acks0.ini:4: [kafka.rdkafka] acks: must be all (-1)" \
  "[journal]\npath = $tmp/j.db\n[kafka.rdkafka]\nacks = 0\n"
expect_refused timeout "$tmp/timeout.ini:4: [kafka.rdkafka] message.timeout.ms: must be 0" \
  "[journal]\npath = $tmp/j.db\n[kafka.rdkafka]\nmessage.timeout.ms = 1500\n"
expect_refused idempotence "$tmp/idempotence.ini:4: [kafka.rdkafka] enable.idempotence: must be true" \
  "[journal]\npath = $tmp/j.db\n[kafka.rdkafka]\nenable.idempotence = false\n"
expect_refused dlq_is_topic "$tmp/dlq_is_topic.ini:5: [kafka] dlq_topic: must differ from [kafka] topic" \
  "[journal]\npath = $tmp/j.db\n[kafka]\ntopic = t\ndlq_topic = t\n"
expect_refused no_brokers "$tmp/no_brokers.ini:4: [kafka] brokers: expected host:port" \
  "[journal]\npath = $tmp/j.db\n[kafka]\nbrokers =\n"
expect_refused qos0 "$tmp/qos0.ini:4: [mqtt] qos: expected an integer between 1 and 2" \
  "[journal]\npath = $tmp/j.db\n[mqtt]\nqos = 0\n"
# a misspelt credential is named, its value never shown
expect_refused passwrd "$tmp/passwrd.ini:4: [kafka.rdkafka] sasl.passwrd: librdkafka refuses it" \
  "[journal]\npath = $tmp/j.db\n[kafka.rdkafka]\nsasl.passwrd = hunter2\n"
if grep -q hunter2 "$tmp/err"; then
  fail "passwrd: the value is shown:"
  sed 's/^/    /' "$tmp/err" >&2
fi
# metrics.listen is set on the command line here, as the cases above switch it off there
for listen in garbage 127.0.0.1:99999; do
  printf '[journal]\npath = %s/j.db\n' "$tmp" >"$tmp/listen.ini"
  "$bin" -c "$tmp/listen.ini" --set "metrics.listen=$listen" --check-config >"$tmp/out" 2>"$tmp/err"
  st=$?
  if [ $st -eq 1 ] && grep -qF -- "--set: [metrics] listen: metrics listen $listen" "$tmp/err"; then
    echo "ok: metrics.listen=$listen refused"
  else
    fail "metrics.listen=$listen: exit status $st"
    sed 's/^/    /' "$tmp/err" >&2
  fi
done

printf '[journal]\npath = %s/ok/journal.db\n[mqtt]\ntopic = site-1/telemetry/+\n' "$tmp" >"$tmp/ok.ini"
if "$bin" -c "$tmp/ok.ini" --check-config >"$tmp/out" 2>"$tmp/err"; then
  echo "ok: a good config passes"
else
  fail "a good config is refused:"
  sed 's/^/    /' "$tmp/err" >&2
fi
exit $((failures > 0))
