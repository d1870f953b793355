#!/usr/bin/env bash
# test_provision.sh SOURCE_DIR [TIDEGATE_NODE_BIN [TIDEGATE_BIN]]
#
# scripts/tidegate-provision in a temporary --etc tree, unprivileged-capable, checked the way
# a user would see it:
#   - three devices are created; files and modes are right; neither stdout nor stderr ever
#     holds a password or key;
#   - the real Mosquitto (config/mosquitto.conf, moved onto a Unix socket) with the provisioned
#     password file and ACL (the shipped acl's patterns removed, so the provisioned lines are
#     what is tested) accepts each device on telemetry/<id>, refuses it on another's topic,
#     lets it read ack/<id> only, and refuses a wrong password;
#   - the node configs pass `tidegate-node --check-config`, and the gateway loads the keys file
#     (`tidegate --check-config` with validate.keys_file), when those binaries are given;
#   - an existing id is refused (exit 3, nothing changed); --rotate replaces the password and
#     key (the old password is then refused by the broker, the new one accepted);
#   - invalid ids are refused with exit 2 before anything is written;
#   - --no-key makes a device without an HMAC key on either side;
#   - --remove takes a device out of every file (the broker then refuses it), and an unknown
#     id is refused with exit 4.
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 SOURCE_DIR [TIDEGATE_NODE_BIN [TIDEGATE_BIN]]" >&2
  exit 2
fi
src=$1
node_bin=${2:-}
gw_bin=${3:-}
prov="$src/scripts/tidegate-provision"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-provision.XXXXXX") || exit 1
mq_pid=
cleanup() {
  if [ -n "$mq_pid" ] && kill -0 "$mq_pid" 2>/dev/null; then
    kill "$mq_pid" 2>/dev/null
    wait "$mq_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

etc="$tmp/etc"
ids=(node-01 node-02 sensor.b_3)
# run_prov ARGS...: runs the script with sh (POSIX, dash on Debian); output in $tmp/p.out/err.
run_prov() { sh "$prov" --etc "$etc" "$@" >"$tmp/p.out" 2>"$tmp/p.err"; }
mode_of() { stat -c %a "$1"; }
expect_mode() { [ "$(mode_of "$1")" = "$2" ] || fail "$1 has mode $(mode_of "$1"), expected $2"; }
pw_of() { sed -n 's/^password = //p' "$etc/tidegate/nodes/$1/tidegate-node.ini"; }
key_of() { tr -d '\n' <"$etc/tidegate/nodes/$1/node.key"; }
# no_secret_printed: no password or key of any device appears in the last run's output.
no_secret_printed() {
  local id s
  for id in "${ids[@]}"; do
    [ -f "$etc/tidegate/nodes/$id/node.key" ] || continue
    for s in "$(pw_of "$id")" "$(key_of "$id")"; do
      if [ -n "$s" ] && grep -qF -- "$s" "$tmp/p.out" "$tmp/p.err"; then
        fail "a secret of $id was printed ($1)"
      fi
    done
  done
}

# --- create ---------------------------------------------------------------------------------
for id in "${ids[@]}"; do
  # Each node's files live where its config says (so tidegate-node can check them here).
  if run_prov --host 127.0.0.1 --sensor sim --node-etc "$etc/tidegate/nodes/$id" \
       --node-state-dir "$tmp/state-$id" "$id"; then
    grep -q "^created $id:" "$tmp/p.out" || fail "no 'created $id' line: $(cat "$tmp/p.out")"
  else
    fail "provisioning $id exited non-zero: $(cat "$tmp/p.err")"
  fi
  no_secret_printed "create $id"
done
for id in "${ids[@]}"; do
  nd="$etc/tidegate/nodes/$id"
  expect_mode "$nd" 700
  expect_mode "$nd/tidegate-node.ini" 600
  expect_mode "$nd/node.key" 600
  [ "$(grep -c "^$id " "$etc/tidegate/device-keys")" = 1 ] || fail "device-keys: not one line for $id"
  grep -qF "$id $(key_of "$id")" "$etc/tidegate/device-keys" ||
    fail "device-keys does not hold the node's key for $id"
  grep -qF "$(pw_of "$id")" "$etc/mosquitto/passwd" && fail "passwd holds $id's password in clear"
  [ ${#id} -gt 0 ] && grep -q "^$id:[$]7[$]" "$etc/mosquitto/passwd" ||
    fail "passwd has no hashed entry for $id"
done
expect_mode "$etc/tidegate/device-keys" 600
case $(mode_of "$etc/mosquitto/passwd") in 600|640) ;; *) fail "passwd mode $(mode_of "$etc/mosquitto/passwd")" ;; esac
ok "three devices created with their files and modes, no secret printed"

# --- refusals ---------------------------------------------------------------------------------
sums() { find "$etc" -type f ! -name .provision.lock -exec sha256sum {} + | sort; }
sums >"$tmp/before"
run_prov node-04 node-02
st=$?
[ $st -eq 3 ] || fail "an existing id: exit $st, expected 3"
grep -q 'node-02.*exists' "$tmp/p.err" || fail "no 'exists' message: $(cat "$tmp/p.err")"
for bad in 'a/b' '' "$(printf 'x%.0s' {1..65})" tidegate '+' 'a b'; do
  run_prov "$bad"
  st=$?
  [ $st -eq 2 ] || fail "id [$bad]: exit $st, expected 2"
done
sums >"$tmp/after"
cmp -s "$tmp/before" "$tmp/after" && ok "existing and invalid ids refused, nothing written" ||
  fail "a refused run changed files"
[ -e "$etc/tidegate/nodes/node-04" ] && fail "node-04 was created although the run was refused"

# --- the gateway and the node read what was written ------------------------------------------
if [ -n "$node_bin" ]; then
  for id in "${ids[@]}"; do
    "$node_bin" -c "$etc/tidegate/nodes/$id/tidegate-node.ini" --check-config >"$tmp/nc.out" 2>&1 ||
      fail "tidegate-node --check-config on $id's config: $(cat "$tmp/nc.out")"
  done
  ok "tidegate-node accepts the generated configs (key file, credentials)"
fi
if [ -n "$gw_bin" ]; then
  "$gw_bin" --check-config -c "$src/config/tidegate-dev.ini" --set metrics.listen= \
    --set "validate.keys_file=$etc/tidegate/device-keys" >"$tmp/gw.out" 2>&1 ||
    fail "tidegate --check-config with the provisioned keys file: $(cat "$tmp/gw.out")"
  grep -q "readable by others" "$tmp/gw.out" && fail "the gateway warns about the keys file's mode"
  ok "the gateway loads the provisioned keys file"
fi

# --- the real broker --------------------------------------------------------------------------
sock="$tmp/mqtt.sock"
wait_mosquitto() {
  local deadline=$((SECONDS + 10))
  while [ $SECONDS -lt $deadline ]; do
    [ -S "$sock" ] && return 0
    kill -0 "$mq_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
start_broker() {
  mosquitto -c "$tmp/mosquitto.conf" >>"$tmp/mosquitto.log" 2>&1 &
  mq_pid=$!
  wait_mosquitto || { fail "mosquitto did not start: $(cat "$tmp/mosquitto.log")"; return 1; }
}
stop_broker() {
  kill "$mq_pid" 2>/dev/null
  wait "$mq_pid" 2>/dev/null
  mq_pid=
  rm -f "$sock"
}
mq() { "$@" --unix "$sock" -V 5 -q 1; }

# The gateway's account, as an administrator adds it; the shipped patterns are cut from the
# ACL so that only the provisioned per-device lines can allow a device anything.
printf 'tidegate:gwpass\n' >"$tmp/gwpw"
mosquitto_passwd -U "$tmp/gwpw"
cat "$tmp/gwpw" >>"$etc/mosquitto/passwd"
sed -i '/^pattern /d' "$etc/mosquitto/acl"
grep -q '^pattern' "$etc/mosquitto/acl" && fail "patterns still in the ACL"
printf '\nuser tidegate\ntopic read telemetry/+\ntopic write ack/+\n' >>"$etc/mosquitto/acl"
sed -e "s|^listener 1883\$|listener 0 $sock|" \
    -e "s|/etc/mosquitto/passwd|$etc/mosquitto/passwd|" \
    -e "s|/etc/mosquitto/acl|$etc/mosquitto/acl|" "$src/config/mosquitto.conf" >"$tmp/mosquitto.conf"
{
  echo "persistence false"
  echo "log_dest stderr"
  [ "$(id -u)" -eq 0 ] && echo "user root"
} >>"$tmp/mosquitto.conf"

# broker_check: every device publishes its own id's topic and a neighbour's; the gateway's
# persistent session must hold exactly the own-topic messages, in order. Each device may read
# ack/<id> and not ack/<other>.
broker_check() {
  local label=$1 want= i=0 n=${#ids[@]} id other
  mq mosquitto_sub -u tidegate -P gwpass -i gw-prov -c -x 600 -t 'telemetry/+' -E \
    >/dev/null 2>"$tmp/sub.err" || fail "$label: gateway cannot subscribe: $(cat "$tmp/sub.err")"
  for id in "${ids[@]}"; do
    other=${ids[$(((i + 1) % n))]}
    i=$((i + 1))
    mq mosquitto_pub -u "$id" -P "$(pw_of "$id")" -t "telemetry/$other" -m spoof 2>/dev/null
    mq mosquitto_pub -u "$id" -P "$(pw_of "$id")" -t "telemetry/$id" -m "own-$label" \
      2>"$tmp/pub.err" || fail "$label: $id cannot publish its own topic: $(cat "$tmp/pub.err")"
    want+="telemetry/$id own-$label"$'\n'
    # ack/<id>: the gateway publishes retained, the device must read it; ack/<other> not.
    mq mosquitto_pub -u tidegate -P gwpass -t "ack/$id" -r -m "ack-$id" ||
      fail "$label: gateway cannot publish ack/$id"
    got=$(mq mosquitto_sub -u "$id" -P "$(pw_of "$id")" -t "ack/$id" -C 1 -W 5 2>/dev/null)
    [ "$got" = "ack-$id" ] || fail "$label: $id cannot read ack/$id (got [$got])"
    got=$(mq mosquitto_sub -u "$id" -P "$(pw_of "$id")" -t "ack/$other" -C 1 -W 1 2>/dev/null)
    [ -z "$got" ] || fail "$label: $id read ack/$other"
  done
  got=$(mq mosquitto_sub -u tidegate -P gwpass -i gw-prov -c -x 600 -t 'telemetry/+' -v \
           -C "$n" -W 10 2>"$tmp/sub.err")
  # A spoofed message would have come first (it was published first); one more wait must not
  # bring one either (a QoS1 redelivery of an own message is allowed).
  extra=$(mq mosquitto_sub -u tidegate -P gwpass -i gw-prov -c -x 600 -t 'telemetry/+' -v \
             -C 1 -W 1 2>/dev/null)
  if [ "$got"$'\n' = "$want" ] && [[ $extra != *spoof* ]]; then
    ok "$label: broker accepts each device on its own topic only, ack/<id> readable by it only"
  else
    fail "$label: gateway got [$got] then [$extra], expected [$want]"
  fi
}

if ! command -v mosquitto >/dev/null 2>&1; then
  fail "mosquitto not found (scripts/install-deps installs it)"
else
  start_broker && broker_check created
  # A wrong password is refused.
  mq mosquitto_pub -u node-01 -P wrong -t telemetry/node-01 -m x 2>/dev/null &&
    fail "a wrong password was accepted"
  stop_broker

  # --- rotate -----------------------------------------------------------------------------------
  old_pw=$(pw_of node-01)
  old_key=$(key_of node-01)
  acl_before=$(sha256sum <"$etc/mosquitto/acl")
  if run_prov --rotate --host 127.0.0.1 --sensor sim --node-etc "$etc/tidegate/nodes/node-01" \
       --node-state-dir "$tmp/state-node-01" node-01; then
    grep -q '^rotated node-01:' "$tmp/p.out" || fail "no 'rotated' line: $(cat "$tmp/p.out")"
  else
    fail "--rotate exited non-zero: $(cat "$tmp/p.err")"
  fi
  no_secret_printed rotate
  [ "$(pw_of node-01)" != "$old_pw" ] || fail "rotate kept the password"
  [ "$(key_of node-01)" != "$old_key" ] || fail "rotate kept the HMAC key"
  [ "$(grep -c '^node-01[ :]' "$etc/tidegate/device-keys" "$etc/mosquitto/passwd" |
       awk -F: '{ s += $2 } END { print s }')" = 2 ] || fail "rotate left duplicate lines"
  grep -qF "node-01 $(key_of node-01)" "$etc/tidegate/device-keys" || fail "rotate: keys file not updated"
  [ "$(sha256sum <"$etc/mosquitto/acl")" = "$acl_before" ] || fail "rotate changed the ACL"
  start_broker && {
    mq mosquitto_pub -u node-01 -P "$old_pw" -t telemetry/node-01 -m x 2>/dev/null &&
      fail "the old password still works after --rotate"
    broker_check rotated
  }
  stop_broker

  # --- remove -----------------------------------------------------------------------------------
  gone_pw=$(pw_of node-02)
  if run_prov --remove node-02; then
    grep -q '^removed node-02:' "$tmp/p.out" || fail "no 'removed' line: $(cat "$tmp/p.out")"
    grep -q '^node-02[ :]' "$etc/tidegate/device-keys" "$etc/mosquitto/passwd" &&
      fail "--remove left node-02 in the keys or password file"
    grep -q 'node-02' "$etc/mosquitto/acl" && fail "--remove left node-02 in the ACL"
    [ -e "$etc/tidegate/nodes/node-02" ] && fail "--remove left node-02's node directory"
    grep -qx 'user node-01' "$etc/mosquitto/acl" || fail "--remove took node-01's ACL lines"
    start_broker && {
      mq mosquitto_pub -u node-02 -P "$gone_pw" -t telemetry/node-02 -m x 2>/dev/null &&
        fail "a removed device can still log in"
      mq mosquitto_pub -u node-01 -P "$(pw_of node-01)" -t telemetry/node-01 -m x ||
        fail "node-01 cannot publish after node-02 was removed"
      ok "--remove shuts the device out and leaves the others alone"
    }
    stop_broker
  else
    fail "--remove exited non-zero: $(cat "$tmp/p.err")"
  fi
  run_prov --remove node-02
  st=$?
  [ $st -eq 4 ] || fail "--remove of an unknown id: exit $st, expected 4"
  ids=(node-01 sensor.b_3)
fi

# --- certificates -----------------------------------------------------------------------------
if run_prov --rotate --cert --node-etc /etc/tidegate sensor.b_3; then
  nd="$etc/tidegate/nodes/sensor.b_3"
  expect_mode "$nd/client.key" 600
  expect_mode "$etc/tidegate/ca/ca.key" 600
  openssl verify -CAfile "$etc/tidegate/ca/ca.crt" "$nd/client.crt" >/dev/null 2>&1 ||
    fail "client certificate does not verify against the CA"
  openssl x509 -in "$nd/client.crt" -noout -subject | grep -q 'CN *= *sensor.b_3' ||
    fail "client certificate's CN is not sensor.b_3"
  grep -q '^port = 8883$' "$nd/tidegate-node.ini" && grep -q '^tls_cert = /etc/tidegate/client.crt$' \
    "$nd/tidegate-node.ini" || fail "node config does not use the certificate"
  ok "--cert issues a client certificate (CN = id) from the local CA"
else
  fail "--cert exited non-zero: $(cat "$tmp/p.err")"
fi
no_secret_printed cert

# --- --no-key: a device that publishes JSON (unsignable) ---------------------------------------
if run_prov --no-key --node-etc "$etc/tidegate/nodes/json-01" json-01; then
  grep -q '^json-01 ' "$etc/tidegate/device-keys" && fail "--no-key wrote a gateway key"
  [ -e "$etc/tidegate/nodes/json-01/node.key" ] && fail "--no-key wrote a node key"
  grep -q '^hmac_key_file = $' "$etc/tidegate/nodes/json-01/tidegate-node.ini" ||
    fail "--no-key node config names a key file"
  grep -q '^json-01:' "$etc/mosquitto/passwd" || fail "--no-key device has no password entry"
  if [ -n "$node_bin" ]; then
    "$node_bin" -c "$etc/tidegate/nodes/json-01/tidegate-node.ini" --check-config >"$tmp/nc.out" 2>&1 ||
      fail "tidegate-node --check-config on the --no-key config: $(cat "$tmp/nc.out")"
  fi
  ok "--no-key: password and ACL, no key on either side"
else
  fail "--no-key exited non-zero: $(cat "$tmp/p.err")"
fi

if [ $failures -gt 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all provisioning checks passed"
