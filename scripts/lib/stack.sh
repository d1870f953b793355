# shellcheck shell=bash
# shellcheck disable=SC2317  # functions run from traps and wait_for look unreachable
# scripts/lib/stack.sh - the whole tidegate stack on loopback, for scripts/demo and
# scripts/quality: Mosquitto, a Kafka (tidegate-devkafka or a real broker), the gateway and
# the worker, each on a free port, started in the background and stopped in reverse order.
#
# The sourcing script sets, before calling anything here:
#   prog   its name, for messages ("demo")
#   root   the repository
#   keep   true to keep $tmp on success
# and after stack_build: bin (the build's bin dir); after stack_tmpdir: tmp.
# Every process started goes into pids/names; stop_all (run by the EXIT trap) stops them.

die() { echo "$prog: $*" >&2; exit 2; }
need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (--help)"; }

if [[ -t 1 ]]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi

tmp=""
pids=()   # every background process started, in start order
names=()

stop_all() {
  # Reverse start order: the simulator, audit and worker first, the gateway before the
  # brokers it talks to, so each can hand what it holds on before its peers go away.
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "$prog: ${names[i]} (pid $pid) did not stop on SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [[ -n $tmp && -d $tmp ]]; then
    if [[ $keep == true || $rc -ne 0 ]]; then
      echo "$prog: logs, configs and reports are in $tmp" >&2
    else
      rm -rf "$tmp"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'echo; echo "$prog: interrupted; stopping everything" >&2; exit 130' INT TERM

# start NAME COMMAND...: runs COMMAND in the background, stdout and stderr to $tmp/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$tmp/$name.log" 2>&1 </dev/null &
  pids+=($!)
  names+=("$name")
}

alive() { kill -0 "${pids[$1]}" 2>/dev/null; }
last() { echo $((${#pids[@]} - 1)); }

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 100 ms until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "$prog: $what did not happen within $seconds s" >&2
      return 1
    fi
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A loopback port nobody listens on right now. Someone may take it before we bind it; the
# starters below check that their process came up on it.
free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    tcp_open "$port" || { echo "$port"; return 0; }
  done
  die "no free loopback port found"
}

# http_get PORT PATH: the response (status line, headers, body) of a GET on loopback, through
# bash's /dev/tcp so that no curl is needed.
http_get() {
  local port=$1 path=$2
  exec 4<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&4
  cat <&4
  exec 4<&-
}

healthy() { http_get "$1" /healthz 2>/dev/null | head -n1 | grep -q ' 200 '; }

metric() { # metric PORT NAME: the sum of a metric's samples
  http_get "$1" /metrics 2>/dev/null |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}

# ---- install, build, run directory ------------------------------------------------------------

# stack_build INSTALL BUILD_DIR TARGET...: scripts/install-deps (when INSTALL is true), then a
# RelWithDebInfo build of the targets without the tests; sets bin.
stack_build() {
  local install=$1 dir=$2
  shift 2
  if [[ $install == true ]]; then
    step "dependencies (scripts/install-deps)"
    "$root/scripts/install-deps" || die "installing dependencies failed"
  fi
  step "building in $dir"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTG_BUILD_TESTS=OFF \
    >/dev/null || die "cmake configure failed"
  cmake --build "$dir" --target "$@" -j"$(nproc 2>/dev/null || echo 2)" \
    >"$dir/$prog-build.log" 2>&1 ||
    { tail -30 "$dir/$prog-build.log" >&2; die "build failed (log: $dir/$prog-build.log)"; }
  bin="$dir/bin"
}

# stack_tmpdir PARENT: a fresh run directory under PARENT; sets tmp. A long run keeps it under
# the build directory rather than /tmp, where test cleanups may sweep tidegate-* away.
stack_tmpdir() {
  mkdir -p "$1"
  tmp=$(mktemp -d "$1/tidegate-$prog-XXXXXX")
  mkdir -p "$tmp/var"
}

# stack_fd_limit DEVICES: every device is an open connection in the simulator and in
# Mosquitto: both need that many file descriptors. The simulator raises its own limit;
# Mosquitto inherits ours.
stack_fd_limit() {
  local need=$(($1 + 1024)) hard
  hard=$(ulimit -Hn)
  if [[ $hard != unlimited ]] && ((hard < need)); then
    die "the open-files hard limit is $hard, $1 devices need $need: raise it" \
      "(ulimit -Hn as root, or /etc/security/limits.conf) or use fewer --devices"
  fi
  ulimit -n "$need" 2>/dev/null || ulimit -n "$hard"
}

# ---- the components ---------------------------------------------------------------------------

# stack_mosquitto: Mosquitto on a free port, no persistence; sets mqtt_port.
stack_mosquitto() {
  step "starting Mosquitto"
  local mosquitto_bin port mq
  mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  [[ -x $mosquitto_bin ]] || die "mosquitto not found (scripts/install-deps installs it)"
  mqtt_port=""
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    {
      echo "listener $port 127.0.0.1"
      echo "allow_anonymous true"
      echo "max_connections -1"
      # The gateway may pause taking messages (journal backpressure): the broker holds them.
      echo "max_queued_messages 1000000"
      echo "persistence false"
      echo "log_dest stderr"
      echo "log_type error"
      echo "log_type warning"
      echo "connection_messages false"
      # As root Mosquitto would switch to the mosquitto user, which cannot read our 0700 dir.
      if [[ $(id -u) -eq 0 ]]; then echo "user root"; fi
    } >"$tmp/mosquitto.conf"
    start mosquitto "$mosquitto_bin" -c "$tmp/mosquitto.conf"
    mq=$(last)
    if wait_for 10 "Mosquitto listening on $port" tcp_open "$port" && alive "$mq"; then
      mqtt_port=$port
      break
    fi
    stop_all
  done
  [[ -n $mqtt_port ]] || { cat "$tmp/mosquitto.log" >&2; die "Mosquitto did not start"; }
  echo "Mosquitto on 127.0.0.1:$mqtt_port (pid ${pids[mq]})"
}

# stack_devkafka: tidegate-devkafka (3 brokers) with every topic of the gateway and the worker;
# the worker's state topic has as many partitions as telemetry. Sets brokers.
stack_devkafka() {
  step "starting tidegate-devkafka (3 brokers; telemetry: 12 partitions)"
  start devkafka "$bin/tidegate-devkafka" --bootstrap-file "$tmp/bootstrap" \
    --topic telemetry:12 --topic telemetry.dlq:3 --topic telemetry.anomalies:6 \
    --topic telemetry.agg.1m:6 --topic telemetry.worker.state:12
  local dk
  dk=$(last)
  bootstrap_ready() { [[ -s $tmp/bootstrap ]] || ! alive "$dk"; }
  wait_for 30 "devkafka ready" bootstrap_ready || true
  if ! alive "$dk" || [[ ! -s $tmp/bootstrap ]]; then
    cat "$tmp/devkafka.log" >&2
    die "devkafka did not start"
  fi
  brokers=$(head -n1 "$tmp/bootstrap")
  echo "devkafka at $brokers (pid ${pids[dk]})"
}

# stack_kafka_real: one KRaft node with the tests' launcher and properties (harness_kafka.c),
# and tidegate's topics created by tidegate-topics (telemetry: 6 partitions). Sets brokers.
stack_kafka_real() {
  step "starting Apache Kafka (tests/kafka/kafka-broker: one KRaft node)"
  "$root/tests/kafka/kafka-broker" check || die "the real Kafka broker cannot start (above)"
  local kport cport kf
  brokers=""
  for _ in 1 2 3; do
    kport=$(free_port)
    cport=$(free_port)
    [[ $kport != "$cport" ]] || continue
    rm -rf "$tmp/kafka"
    start kafka "$root/tests/kafka/kafka-broker" run "$tmp/kafka" "$kport" "$cport"
    kf=$(last)
    kafka_listening() { tcp_open "$kport" || ! alive "$kf"; }
    wait_for 120 "Kafka listening on $kport" kafka_listening || true
    if alive "$kf" && tcp_open "$kport"; then
      brokers=127.0.0.1:$kport
      break
    fi
    grep -q "Address already in use" "$tmp/kafka.log" || break
    # A port was taken before the broker bound it: forget this one and try other ports.
    kill -TERM "${pids[kf]}" 2>/dev/null || true
    wait "${pids[kf]}" 2>/dev/null || true
    unset 'pids[kf]' 'names[kf]'
    pids=("${pids[@]}")
    names=("${names[@]}")
  done
  [[ -n $brokers ]] || { tail -40 "$tmp/kafka.log" >&2; die "Kafka did not start"; }
  echo "Kafka at $brokers (pid ${pids[kf]}, log $tmp/kafka.log)"
  "$bin/tidegate-topics" --brokers "$brokers" --partitions 6 --timeout-ms 60000 ||
    die "creating the topics failed"
}

# stack_gateway: the gateway with config/tidegate-dev.ini on mqtt_port and brokers, its
# journal in the run directory; sets gw_metrics (its metrics port).
stack_gateway() {
  step "starting the tidegate gateway"
  gw_metrics=$(free_port)
  # zstd batches: devkafka keeps ~5 MiB per partition, which holds 600,000 readings only
  # compressed (README, tidegate-devkafka).
  (cd "$tmp" && exec "$bin/tidegate" -c "$root/config/tidegate-dev.ini" \
    -b "$root/boards/x86_64-dev.ini" \
    --set "mqtt.port=$mqtt_port" --set "kafka.brokers=$brokers" \
    --set "kafka.compression=zstd" --set "journal.path=$tmp/var/journal.db" \
    --set "metrics.listen=127.0.0.1:$gw_metrics") >"$tmp/tidegate.log" 2>&1 </dev/null &
  pids+=($!)
  names+=(tidegate)
  local gw
  gw=$(last)
  gw_ready() { ! alive "$gw" || healthy "$gw_metrics"; }
  wait_for 30 "gateway ready" gw_ready || true
  if ! alive "$gw" || ! healthy "$gw_metrics"; then
    tail -30 "$tmp/tidegate.log" >&2
    die "the gateway did not start"
  fi
  echo "gateway ready (pid ${pids[gw]}), metrics on http://127.0.0.1:$gw_metrics/metrics"
}

# stack_worker CONFIG: one tidegate-worker (CONFIG, or its defaults when empty) reading what
# the gateway delivers; sets wk_metrics.
stack_worker() {
  step "starting tidegate-worker"
  local config=$1 wk
  wk_metrics=$(free_port)
  if [[ -z $config ]]; then
    config="$tmp/worker.ini"
    : >"$config"
  fi
  start worker "$bin/tidegate-worker" -c "$config" \
    --set "kafka.brokers=$brokers" --set "worker.instance_id=$prog" \
    --set "metrics.listen=127.0.0.1:$wk_metrics"
  wk=$(last)
  wk_ready() { ! alive "$wk" || healthy "$wk_metrics"; }
  wait_for 60 "worker ready" wk_ready || true
  if ! alive "$wk" || ! healthy "$wk_metrics"; then
    tail -30 "$tmp/worker.log" >&2
    die "the worker did not start"
  fi
  echo "worker ready (pid ${pids[wk]}), metrics on http://127.0.0.1:$wk_metrics/metrics"
}

# stack_worker_settle SECONDS: waits until the worker has consumed every reading the gateway
# delivered, then until its transaction commits stop for a second: what it consumed last is
# committed within kafka.commit_interval_ms (100 ms by default), and an idle worker does not
# commit. Returns 1 if it did not catch up.
stack_worker_settle() {
  caught_up() {
    local delivered consumed
    delivered=$(metric "$gw_metrics" tidegate_messages_delivered_total)
    consumed=$(metric "$wk_metrics" tidegate_worker_records_consumed_total)
    [[ -n $delivered && -n $consumed ]] && ((delivered > 0 && consumed >= delivered))
  }
  wait_for "$1" "the worker catching up" caught_up || return 1
  local before after
  after=$(metric "$wk_metrics" tidegate_worker_transaction_commits_total)
  for _ in $(seq 1 30); do
    before=$after
    sleep 1
    after=$(metric "$wk_metrics" tidegate_worker_transaction_commits_total)
    [[ $after == "$before" ]] && break
  done
}

# The one-line summaries printed at the end of a run.
stack_gateway_summary() {
  echo "gateway: received $(metric "$gw_metrics" tidegate_messages_received_total)," \
    "delivered $(metric "$gw_metrics" tidegate_messages_delivered_total)," \
    "duplicates removed $(metric "$gw_metrics" tidegate_messages_duplicate_total)," \
    "invalid $(metric "$gw_metrics" tidegate_messages_invalid_total)," \
    "dropped $(metric "$gw_metrics" tidegate_messages_dropped_total)"
}

stack_worker_summary() {
  echo "worker: consumed $(metric "$wk_metrics" tidegate_worker_records_consumed_total)," \
    "alerts $(metric "$wk_metrics" tidegate_worker_alerts_total)," \
    "late $(metric "$wk_metrics" tidegate_worker_late_records_total)," \
    "commits $(metric "$wk_metrics" tidegate_worker_transaction_commits_total)," \
    "aborts $(metric "$wk_metrics" tidegate_worker_transaction_aborts_total)"
}
