#!/usr/bin/env bash
# bench_payload_rss.sh [BUILD_BIN_DIR]   (default build/dev/bin)
# Peak RSS (VmHWM) of the tidegate daemon before and after one 100 MB payload is published
# to it, with a Mosquitto that sets no message size limit (issue 11: 233 MB). Starts its own
# Mosquitto and tidegate-devkafka on free loopback ports; prints one line, plus what the
# gateway or the broker logged about the payload. Not a test: it prints a figure.
set -u
bindir=${1:-build/dev/bin}
d=$(mktemp -d "${TMPDIR:-/tmp}/tg-rss.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$d/mq.conf"
mosquitto -c "$d/mq.conf" >"$d/mq.log" 2>&1 & pids+=($!)
"$bindir/tidegate-devkafka" --brokers 1 --bootstrap-file "$d/bs" >"$d/dk.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -s "$d/bs" ] && break; sleep 0.1; done
printf '[mqtt]\nport = %s\nclient_id = tg-rss\n[kafka]\nbrokers = %s\n[journal]\npath = %s/j.db\n[metrics]\nlisten =\n[log]\nlevel = warn\n' \
  "$port" "$(cat "$d/bs")" "$d" >"$d/gw.ini"
"$bindir/tidegate" -c "$d/gw.ini" >"$d/gw.log" 2>&1 & gw=$!; pids+=($gw)
sleep 2
before=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
head -c 100000000 /dev/urandom >"$d/big"
mosquitto_pub -p "$port" -t telemetry/dev-big -q 1 -f "$d/big"
mosquitto_pub -p "$port" -t telemetry/dev-small -q 1 \
  -m "{\"seq\":1,\"boot\":1,\"ts\":$(date +%s%3N),\"m\":{\"t\":1}}"
sleep 4
after=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
echo "tidegate peak RSS: $((before / 1024)) MB before, $((after / 1024)) MB after a 100 MB payload"
grep -h "too_large\|too large" "$d/gw.log" "$d/mq.log" | head -3
