#!/usr/bin/env bash
# The arm64 packages installed the way a user installs them, on a fresh Debian 12 arm64 root
# run through qemu-user binfmt (scripts/install-deps --arch arm64 registers it):
#   1. apt install ./tidegate_*_arm64.deb ./tidegate-node_*_arm64.deb
#      ./tidegate-worker_*_arm64.deb into a copy of a cached debootstrap root
#      (build/pkgroot/rootfs-arm64; made on first use, about 12 minutes);
#   2. Mosquitto with the packaged snippet and ACL, and the installed gateway started the way
#      its systemd unit does (ExecStart= and User= read from the installed unit: there is no
#      systemd in a chroot), against a native devkafka on the host;
#   3. 50 devices provisioned (tidegate-provision when the package has it, else the commands it
#      runs: a Mosquitto password and ACL lines per device), each publishing from the host
#      with its own credentials; a device's publish to another device's topic is refused;
#      audit: every reading reaches Kafka exactly once; the installed worker, started as its
#      unit does, consumes them all and stops cleanly on SIGTERM;
#   4. Kafka down, a backlog in the journal, the package upgraded to a newer version, the
#      gateway restarted, Kafka up: the backlog drains, nothing lost;
#   5. apt purge: the files, the state, the users the packages created are gone.
# Usage: test_install_arm64.sh <source dir> <native bin dir: tidegate-devkafka, tidegate-decode>
# Packages come from build/packages/arm64 (scripts/package --arch arm64 runs when missing).
# Needs root (chroot, mount). Loopback only; free ports; every wait has a deadline.
set -euo pipefail
src=$(cd "$1" && pwd)
native=$(cd "$2" && pwd)
build=$src/build
debs=$build/packages/arm64
base=$build/pkgroot/rootfs-arm64
per_device=20          # readings each device publishes before and during the outage
devices=50

say() { echo "install-test: $*"; }
fail() { echo "install-test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (chroot)"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
  fail "no qemu-aarch64 binfmt handler: run scripts/install-deps --arch arm64"
for cmd in mosquitto_pub kcat debootstrap python3; do
  command -v "$cmd" >/dev/null || fail "$cmd not found (scripts/install-deps --arch arm64)"
done

# --- the cached root: debootstrap once, from Debian's archive, through binfmt ---
if [ ! -x "$base/bin/sh" ]; then
  say "debootstrap bookworm arm64 into $base (first run only)"
  rm -rf "$base.tmp"
  mkdir -p "$(dirname "$base")"
  debootstrap --arch=arm64 --variant=minbase --include=mosquitto,ca-certificates \
    bookworm "$base.tmp" http://deb.debian.org/debian >"$base.log" 2>&1 ||
    { tail -20 "$base.log"; fail "debootstrap failed"; }
  cp /etc/resolv.conf "$base.tmp/etc/resolv.conf"
  chroot "$base.tmp" apt-get update -q >>"$base.log" 2>&1 || fail "apt-get update in the root failed"
  mv "$base.tmp" "$base"
fi
if ! compgen -G "$debs/tidegate_*_arm64.deb" >/dev/null; then
  "$src/scripts/package" --arch arm64 || fail "scripts/package --arch arm64 failed"
fi

# --- a fresh copy of the root for this run, and cleanup of everything this run starts ---
work=$(mktemp -d "$build/pkgroot/run.XXXXXX")
root=$work/root
pids=()
cleanup() {
  local p
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
  # Processes still inside the root (mosquitto forks none, but be sure) before unmounting.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  umount "$root/dev" 2>/dev/null || true
  umount "$root/proc" 2>/dev/null || true
  if [ -z "${TG_INSTALL_TEST_KEEP:-}" ]; then rm -rf "$work"; else say "kept $work"; fi
}
trap cleanup EXIT
cp -a "$base" "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# wait_for <seconds> <description> <command...>: polls the condition until the deadline.
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $end ] || fail "$what not within ${limit}s"
    sleep 0.2
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- 1. install ---
mkdir -p "$root/tmp/debs"
cp "$debs"/tidegate_*_arm64.deb "$debs"/tidegate-node_*_arm64.deb "$debs"/tidegate-worker_*_arm64.deb \
   "$root/tmp/debs/"
say "apt install ./tidegate_*_arm64.deb ./tidegate-node_*_arm64.deb ./tidegate-worker_*_arm64.deb"
in_root sh -c 'cd /tmp/debs && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  ./tidegate_*_arm64.deb ./tidegate-node_*_arm64.deb ./tidegate-worker_*_arm64.deb' \
  >"$work/apt-install.log" 2>&1 ||
  { tail -30 "$work/apt-install.log"; fail "apt install of the packages failed"; }
[ "$(in_root dpkg-query -W -f='${Status}' tidegate)" = "install ok installed" ] || fail "tidegate not installed"
file -L "$root/usr/bin/tidegate" 2>/dev/null | grep -q aarch64 || fail "/usr/bin/tidegate is not an arm64 program"
in_root getent passwd tidegate >/dev/null || fail "no tidegate system user"
[ "$(in_root stat -c %U /var/lib/tidegate)" = tidegate ] || fail "/var/lib/tidegate not owned by tidegate"
in_root dpkg-query --showformat='${Conffiles}\n' -W tidegate | grep -q /etc/tidegate/tidegate.ini ||
  fail "/etc/tidegate/tidegate.ini is not a conffile"
[ -f "$root/usr/share/tidegate/boards/generic-arm64.ini" ] || fail "board files missing"
# No systemd in a chroot, so the upgrade's restart is checked in the installed scripts: an
# upgrade restarts each unit (deb-systemd-invoke leaves a disabled, stopped one alone).
for u in tidegate tidegate-worker; do
  grep -q '_dh_action=restart' "$root/var/lib/dpkg/info/$u.postinst" &&
    grep -qF "deb-systemd-invoke \$_dh_action '$u.service'" "$root/var/lib/dpkg/info/$u.postinst" ||
    fail "$u's postinst does not restart $u.service after an upgrade"
done
# The worker: its own user, its config a conffile only that user's group may read (through
# /etc/tidegate, which the gateway's package shares with it).
file -L "$root/usr/bin/tidegate-worker" 2>/dev/null | grep -q aarch64 || fail "/usr/bin/tidegate-worker is not an arm64 program"
in_root getent passwd tidegate-worker >/dev/null || fail "no tidegate-worker system user"
in_root dpkg-query --showformat='${Conffiles}\n' -W tidegate-worker | grep -q /etc/tidegate/tidegate-worker.ini ||
  fail "/etc/tidegate/tidegate-worker.ini is not a conffile"
[ "$(in_root stat -c '%a %U:%G' /etc/tidegate/tidegate-worker.ini)" = "640 root:tidegate-worker" ] ||
  fail "/etc/tidegate/tidegate-worker.ini: $(in_root stat -c '%a %U:%G' /etc/tidegate/tidegate-worker.ini), want 640 root:tidegate-worker"

# --- 2. Kafka (native devkafka on the host), Mosquitto and the gateway in the root ---
mkfifo "$work/dk.in"
# devkafka's default topics, and the worker's state topic with as many partitions as telemetry
# (the worker refuses fewer; an auto-created topic would have 4).
"$native/tidegate-devkafka" --topic telemetry:12 --topic telemetry.dlq:3 --topic telemetry.anomalies:6 \
  --topic telemetry.agg.1m:6 --topic telemetry.worker.state:12 \
  --bootstrap-file "$work/bootstrap" <"$work/dk.in" >"$work/dk.out" 2>"$work/dk.err" &
dk_pid=$!; pids+=("$dk_pid")
exec 7>"$work/dk.in"   # keeps devkafka's stdin open, so commands can be sent to it
wait_for 30 "devkafka's bootstrap list" test -s "$work/bootstrap"
bootstrap=$(cat "$work/bootstrap")

mqtt_port=$(free_port)
# The admin's edits of the packaged configuration, done as a user would (sed on the conffile):
# the broker's port (no fixed ports in tests), the gateway's MQTT password, the Kafka
# brokers without SASL (devkafka speaks plaintext).
gw_pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
sed -i "s/^listener 1883\$/listener $mqtt_port 127.0.0.1/" "$root/etc/mosquitto/conf.d/tidegate.conf"
sed -i -e "s/^password = .*/password = $gw_pw/" -e "s/^port = 1883/port = $mqtt_port/" \
       -e "s/^brokers = .*/brokers = $bootstrap/" \
       -e 's/^\(security.protocol\|sasl\.[a-z]*\|ssl\.ca\.location\) =/;&/' \
       "$root/etc/tidegate/tidegate.ini"
in_root mosquitto_passwd -b /etc/mosquitto/passwd tidegate "$gw_pw"

start_mosquitto() {
  # what mosquitto.service's ExecStartPre lines do
  in_root install -d -m 0740 -o mosquitto /run/mosquitto /var/log/mosquitto
  chroot "$root" mosquitto -c /etc/mosquitto/mosquitto.conf >"$work/mosquitto.out" 2>&1 &
  mq_pid=$!; pids+=("$mq_pid")
  wait_for 60 "Mosquitto listening on $mqtt_port" \
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port" 2>/dev/null
}

# The unit's ExecStart and User, read from the installed unit file.
unit=$root/lib/systemd/system/tidegate.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
unit_user=$(sed -n 's/^User=//p' "$unit")
[ -n "$exec_start" ] && [ -n "$unit_user" ] || fail "no ExecStart=/User= in the installed unit"
# Before board autodetection, the unit names /etc/tidegate/board.ini; the documented install
# step copies the board's file there.
case $exec_start in
  *"-b /etc/tidegate/board.ini"*)
    cp "$root/usr/share/tidegate/boards/generic-arm64.ini" "$root/etc/tidegate/board.ini" ;;
esac
metrics_port=
start_gateway() {
  metrics_port=$(free_port)
  sed -i "/^\[metrics\]/,/^\[/ s/^listen = .*/listen = 127.0.0.1:$metrics_port/" "$root/etc/tidegate/tidegate.ini"
  grep -q "^listen = 127.0.0.1:$metrics_port" "$root/etc/tidegate/tidegate.ini" ||
    printf '\n[metrics]\nlisten = 127.0.0.1:%s\n' "$metrics_port" >>"$root/etc/tidegate/tidegate.ini"
  # shellcheck disable=SC2086 # ExecStart is a command line, split as systemd splits it
  chroot --userspec="$unit_user:$unit_user" "$root" $exec_start >"$work/gateway.$1.log" 2>&1 &
  gw_pid=$!; pids+=("$gw_pid")
  wait_for 120 "the gateway's /healthz" curl -sf "http://127.0.0.1:$metrics_port/healthz" -o /dev/null
}
stop_gateway() {
  kill -TERM "$gw_pid"
  wait "$gw_pid" || fail "the gateway did not stop cleanly on SIGTERM (see $work/gateway.*.log)"
}

start_mosquitto
start_gateway 1
say "gateway up (arm64 under qemu-user), metrics on $metrics_port"

# --- 3. provision 50 devices and publish with their credentials ---
ids=()
for i in $(seq 1 $devices); do ids+=("$(printf 'dev-%03d' "$i")"); done
if [ -x "$root/usr/sbin/tidegate-provision" ]; then
  say "tidegate-provision ${#ids[@]} devices"
  in_root tidegate-provision --host 127.0.0.1 --port "$mqtt_port" --sensor sim "${ids[@]}" \
    >"$work/provision.log" 2>&1 || { cat "$work/provision.log"; fail "tidegate-provision failed"; }
  password_of() { sed -n 's/^password *= *//p' "$root/etc/tidegate/nodes/$1/tidegate-node.ini"; }
else
  say "no tidegate-provision in the package yet: provisioning with the commands it runs"
  for id in "${ids[@]}"; do
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    in_root mosquitto_passwd -b /etc/mosquitto/passwd "$id" "$pw"
    printf '\nuser %s\ntopic write telemetry/%s\ntopic read ack/%s\n' "$id" "$id" "$id" >>"$root/etc/mosquitto/acl"
    echo "$pw" >"$work/pw.$id"
  done
  password_of() { cat "$work/pw.$1"; }
fi
kill -HUP "$mq_pid"   # Mosquitto re-reads its password file and ACL, as systemctl reload does

publish() { # id, first seq, last seq, boot
  local id=$1 pw s now
  pw=$(password_of "$id")
  now=$(($(date +%s) * 1000))
  for s in $(seq "$2" "$3"); do
    printf '{"seq":%d,"boot":%d,"ts":%d,"m":{"t":%d.5}}\n' "$s" "$4" "$now" "$s"
  done | mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -u "$id" -P "$pw" -i "$id" -q 1 \
           -t "telemetry/$id" -l || fail "publish as $id refused"
}
# Records in Kafka's telemetry topic: "<device> <seq>" lines, read from the beginning.
kafka_records() {
  kcat -C -b "$bootstrap" -t telemetry -o beginning -e -q -f '%s\n' 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if l: r=json.loads(l); print(r["device"], r["boot"], r["seq"])'
}
audit() { # expected readings per device; prints the problems, returns non-zero on any
  kafka_records >"$work/records"
  python3 - "$work/records" "$1" "${ids[@]}" <<'EOF'
import sys, collections
path, want, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
seen = collections.Counter(tuple(l.split()) for l in open(path))
bad = 0
for i in ids:
    got = {(b, s) for (d, b, s) in seen if d == i}
    exp = {("1", str(s)) for s in range(1, want + 1)}
    if got != exp:
        bad += 1
        if bad <= 5: print(f"{i}: {len(exp - got)} lost, {len(got - exp)} unexpected")
dups = sum(c - 1 for c in seen.values() if c > 1)
if dups: print(f"{dups} duplicates"); bad += 1
sys.exit(1 if bad else 0)
EOF
}
audit_until() { # expected per device, deadline
  local end=$((SECONDS + $2))
  until audit "$1" >"$work/audit.out"; do
    [ $SECONDS -lt $end ] || { cat "$work/audit.out"; fail "audit: readings missing after ${2}s"; }
    sleep 1
  done
}

half=$((per_device / 2))
for id in "${ids[@]}"; do publish "$id" 1 "$half" 1; done
say "published $((devices * half)) readings from ${#ids[@]} devices"
audit_until "$half" 120
say "audit: all $((devices * half)) readings in Kafka, once each"

# The worker, as its unit starts it (ExecStart=, User= from the installed unit), on the
# packaged config with the admin's edits: the brokers, and a free metrics port.
wunit=$root/lib/systemd/system/tidegate-worker.service
w_exec=$(sed -n 's/^ExecStart=//p' "$wunit")
w_user=$(sed -n 's/^User=//p' "$wunit")
[ -n "$w_exec" ] && [ -n "$w_user" ] || fail "no ExecStart=/User= in the installed worker unit"
w_metrics=$(free_port)
sed -i -e "s/^brokers = .*/brokers = $bootstrap/" -e "s/^listen = .*/listen = 127.0.0.1:$w_metrics/" \
       -e "s/^instance_id =.*/instance_id = board-test/" "$root/etc/tidegate/tidegate-worker.ini"
# shellcheck disable=SC2086 # ExecStart is a command line, split as systemd splits it
chroot --userspec="$w_user:$w_user" "$root" $w_exec >"$work/worker.log" 2>&1 &
wk_pid=$!; pids+=("$wk_pid")
worker_up() {
  kill -0 "$wk_pid" 2>/dev/null || { tail -5 "$work/worker.log"; fail "the worker exited at start"; }
  curl -sf "http://127.0.0.1:$w_metrics/healthz" -o /dev/null
}
wait_for 120 "the worker's /healthz" worker_up
worker_consumed() { curl -sf "http://127.0.0.1:$w_metrics/metrics" | awk '/^tidegate_worker_records_consumed_total /{n += $2} END {print int(n)}'; }
wait_for 180 "the worker consuming $((devices * half)) readings" \
  bash -c "[ \"\$(curl -sf http://127.0.0.1:$w_metrics/metrics | awk '/^tidegate_worker_records_consumed_total /{n += \$2} END {print int(n)}')\" -ge $((devices * half)) ]"
say "worker (arm64, user $w_user) consumed $(worker_consumed) readings"
kill -TERM "$wk_pid"
wait "$wk_pid" || { tail -20 "$work/worker.log"; fail "the worker did not stop cleanly on SIGTERM"; }
# The ACL holds: dev-001 may not speak for dev-002 (Mosquitto drops it silently at QoS1).
echo '{"seq":999,"boot":1,"ts":1,"m":{"t":1}}' |
  mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -u dev-001 -P "$(password_of dev-001)" -q 1 \
    -t telemetry/dev-002 -l || true

# --- 4. upgrade over a backlog ---
echo "down all" >&7
for id in "${ids[@]}"; do publish "$id" $((half + 1)) "$per_device" 1; done
backlog() { curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk '/^tidegate_journal_records /{print int($2)}'; }
wait_for 60 "a journal backlog of $((devices * (per_device - half))) readings" \
  bash -c "[ \"\$(curl -sf http://127.0.0.1:$metrics_port/metrics | awk '/^tidegate_journal_records /{print int(\$2)}')\" -ge $((devices * (per_device - half))) ]"
say "Kafka down, backlog $(backlog) readings in the journal; upgrading the package"
stop_gateway
# The upgrade: the same packages with a higher version, as a new release would be.
new=$work/upgrade; mkdir -p "$new"
for deb in "$debs"/tidegate_*_arm64.deb "$debs"/tidegate-node_*_arm64.deb "$debs"/tidegate-worker_*_arm64.deb; do
  rm -rf "$new/x"; dpkg-deb -R "$deb" "$new/x"
  sed -i 's/^Version: \(.*\)$/Version: \1+upgradetest1/' "$new/x/DEBIAN/control"
  dpkg-deb -b "$new/x" "$root/tmp/debs/up-$(basename "$deb")" >/dev/null
done
in_root sh -c 'cd /tmp/debs && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  -o Dpkg::Options::=--force-confold ./up-tidegate_*_arm64.deb ./up-tidegate-node_*_arm64.deb \
  ./up-tidegate-worker_*_arm64.deb' \
  >"$work/apt-upgrade.log" 2>&1 || { tail -30 "$work/apt-upgrade.log"; fail "upgrade failed"; }
in_root dpkg-query -W -f='${Version}' tidegate | grep -q upgradetest1 || fail "version not upgraded"
[ -s "$root/var/lib/tidegate/journal.db" ] || fail "the upgrade lost the journal"
[ "$(in_root stat -c '%a %U:%G' /etc/tidegate/tidegate-worker.ini)" = "640 root:tidegate-worker" ] &&
  grep -q '^instance_id = board-test' "$root/etc/tidegate/tidegate-worker.ini" ||
  fail "the upgrade changed the worker's edited config or its mode"
start_gateway 2
echo "up all" >&7
audit_until "$per_device" 180
say "after the upgrade the backlog drained: all $((devices * per_device)) readings in Kafka, once each"
grep -q '"device":"dev-001","boot":1,"seq":999' "$work/records" 2>/dev/null &&
  fail "dev-001 published into dev-002's topic"
stop_gateway
kill -TERM "$mq_pid"; wait "$mq_pid" || true

# --- 5. purge ---
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q tidegate tidegate-node tidegate-worker' \
  >"$work/apt-purge.log" 2>&1 || { tail -30 "$work/apt-purge.log"; fail "purge failed"; }
for f in /usr/bin/tidegate /usr/bin/tidegate-node /etc/tidegate /var/lib/tidegate \
         /etc/mosquitto/conf.d/tidegate.conf /etc/mosquitto/acl /etc/mosquitto/passwd \
         /lib/systemd/system/tidegate.service /usr/share/tidegate \
         /usr/bin/tidegate-worker /lib/systemd/system/tidegate-worker.service; do
  [ ! -e "$root$f" ] || fail "purge left $f"
done
! in_root getent passwd tidegate >/dev/null || fail "purge left the tidegate user"
! in_root getent passwd tidegate-worker >/dev/null || fail "purge left the tidegate-worker user"
say "purge removed the packages' files, state and users"
echo "install-test: 1 passed, 0 failed"
