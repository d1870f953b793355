#!/usr/bin/env bash
# bench_restore_rss.sh [BUILD_BIN_DIR [WORKER_BIN]]   (default build/dev/bin, its tidegate-worker)
# Peak RSS (VmHWM) of a tidegate-worker that restores 6 state partitions of about 4.6 MB each
# (100 keys per partition, each written 140 times, as an uncompacted log of checkpoints holds
# them; one offset marker at the end) from its own tidegate-devkafka. A restore keeps one
# value per key (worker/state_fold.c), so the figure should barely exceed an idle worker's.
# Needs kcat and python3. Not a test: it prints a figure.
set -u
bindir=${1:-build/dev/bin}
worker=${2:-$bindir/tidegate-worker}
d=$(mktemp -d "${TMPDIR:-/tmp}/tg-restore-rss.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
"$bindir/tidegate-devkafka" --topic telemetry:6 --topic a.anomalies:3 --topic a.agg:3 \
  --topic a.state:6 --bootstrap-file "$d/bs" >"$d/dk.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -s "$d/bs" ] && break; sleep 0.1; done
bs=$(cat "$d/bs")
python3 - "$d/state.txt" <<'PY'
import sys
v = 'x' * 330
with open(sys.argv[1], 'w') as f:
    for p in range(6):
        for i in range(14000):
            f.write('%d/dev-%03d/temp\t%s\n' % (p, i % 100, v))
        f.write('%d/@offset\t0\n' % p)
PY
for p in 0 1 2 3 4 5; do
  grep "^$p/" "$d/state.txt" | kcat -P -b "$bs" -t a.state -p "$p" -K '\t' || exit 1
done
printf '[worker]\ninstance_id = rss\n[kafka]\nbrokers = %s\nalerts_topic = a.anomalies\naggregates_topic = a.agg\nstate_topic = a.state\n[metrics]\nlisten =\n' \
  "$bs" >"$d/w.ini"
"$worker" -c "$d/w.ini" >"$d/w.log" 2>&1 & w=$!; pids+=($w)
for _ in $(seq 300); do grep -q 'restored' "$d/w.log" && break; sleep 0.1; done
echo "state log: $(wc -c <"$d/state.txt") bytes in 6 partitions; $(grep -o 'restored.*' "$d/w.log");" \
  "worker peak RSS $(awk '/VmHWM/ {print $2}' "/proc/$w/status") kB"
