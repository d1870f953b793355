#!/usr/bin/env bash
# tidegate-decode as a user sees it: stdout, stderr and exit status for good and bad payloads.
#   test_codec_decode_tool.sh <path to tidegate-decode> <tests/unit/data/codec>
set -u
decode=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run <stdin file> <args...>: sets status, out, err
run() {
  local input=$1; shift
  "$decode" "$@" <"$input" >"$work/out" 2>"$work/err"
  status=$?
  out=$(cat "$work/out")
  err=$(cat "$work/err")
}

expect_status() { [ "$status" -eq "$1" ] || fail "$2: exit $status, want $1 (stderr: $err)"; }
expect_out() { [ "$out" = "$1" ] || fail "$2: stdout '$out', want '$1'"; }
expect_err_prefix() {
  case $err in "$1"*) ;; *) fail "$2: stderr '$err', want it to start with '$1'" ;; esac
}

# 1. a native JSON payload on stdin
printf '{"seq":42,"boot":3,"ts":1700000000123,"m":{"temp":21.3,"hum":40}}' >"$work/good.json"
run "$work/good.json"
expect_status 0 "native JSON"
expect_out '{"device":"cli","boot":3,"seq":42,"ts":1700000000123,"m":{"temp":21.3,"hum":40}}' \
  "native JSON"
[ -z "$err" ] || fail "native JSON: unexpected stderr '$err'"

# 2. the same from a file, with a device id and a gateway
run /dev/null --device node-7 --gateway gw-1 --now 1700000000999 "$work/good.json"
expect_status 0 "file argument"
expect_out '{"device":"node-7","boot":3,"seq":42,"ts":1700000000123,"gw_ts":1700000000999,"gateway":"gw-1","m":{"temp":21.3,"hum":40}}' \
  "file argument"

# 3. a SenML pack: one line per resolved time, units in "u"
printf '[{"bn":"urn:dev:x:","bt":1700000000,"bu":"A","n":"current","v":1.5},{"n":"current","t":-1,"v":1.25},{"n":"voltage","u":"V","v":230}]' \
  >"$work/senml.json"
run "$work/senml.json" --now 1
expect_status 0 "SenML"
expect_out '{"device":"cli","ts":1700000000000,"m":{"current":1.5,"voltage":230},"u":{"current":"A","voltage":"V"}}
{"device":"cli","ts":1699999999000,"m":{"current":1.25},"u":{"current":"A"}}' "SenML"
run "$work/senml.json" --format native
expect_status 1 "SenML forced native"
expect_err_prefix "error: wrong_type: native payload: expected an object, got array" \
  "SenML forced native"

# 4. rejected payloads: reason code and detail on stderr, nothing on stdout, exit 1
printf '{"seq":42,"boot":3,"ts":"soon","m":{}}' >"$work/bad.json"
run "$work/bad.json"
expect_status 1 "bad payload"
expect_out "" "bad payload"
expect_err_prefix 'error: wrong_type: field "ts": expected unsigned integer, got string' "bad payload"

printf '\xa1\x61\x78\x01' >"$work/unknown.cbor"
run "$work/unknown.cbor"
expect_status 1 "unknown field"
expect_err_prefix 'error: unknown_field: unknown field "x"' "unknown field"

printf 'hello' >"$work/text"
run "$work/text"
expect_status 1 "not a payload"
expect_err_prefix "error: unknown_format:" "not a payload"

head -c 5000 /dev/zero | tr '\0' ' ' >"$work/big"
run "$work/big"
expect_status 1 "too large"
expect_err_prefix "error: too_large: payload of 5000 bytes exceeds the limit of 4096" "too large"
run "$work/big" --max-bytes 6000
expect_err_prefix "error: unknown_format:" "raised limit"

run "$work/good.json" --device 'bad/id'
expect_status 1 "bad device"
expect_err_prefix "error: bad_name: device id" "bad device"

# 5. a signed native CBOR payload (tests/unit/data/codec/sig_vector.txt)
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
run "$data/native_signed.cbor"
expect_status 0 "signed"
expect_out '{"device":"cli","boot":3,"seq":42,"ts":1700000000123,"m":{"temp":21.5,"hum":40}}' "signed"
expect_err_prefix "note: signed: sig=e1b07f5bf3769d6d123c51a537ba7633201b49e0cb04f9403337544ec22664ad, 44 signed bytes (not verified" \
  "signed"
run "$data/native_signed.cbor" --key "$key"
expect_status 0 "signed, right key"
expect_err_prefix "note: signed: sig=" "signed, right key"
case $err in *"signature verified"*) ;; *) fail "signed, right key: stderr '$err'" ;; esac
run "$data/native_signed.cbor" --key "ff$key"
expect_status 1 "signed, wrong key"
expect_out "" "signed, wrong key"
expect_err_prefix "error: bad_signature:" "signed, wrong key"
run "$work/good.json" --key "$key"
expect_status 1 "unsigned, key given"
expect_err_prefix "error: unsigned:" "unsigned, key given"

# 6. usage errors exit 2
run /dev/null --format xml
expect_status 2 "bad --format"
run /dev/null --bogus
expect_status 2 "unknown option"
run /dev/null a b
expect_status 2 "two files"
run /dev/null "$work/does-not-exist"
expect_status 2 "missing file"
run /dev/null --key xyz
expect_status 2 "bad key"
run /dev/null --help
expect_status 0 "--help"
case $out in "usage: tidegate-decode"*) ;; *) fail "--help: stdout '$out'" ;; esac

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "tidegate-decode: all checks passed"
