#!/usr/bin/env bash
# footprint.sh - compiles the firmware core for a Cortex-M4 and proves it needs no OS.
#
#   firmware/cortex-m/footprint.sh [--out DIR] [--slots N] [--payload-bytes N]
#
# Compiles firmware/core/*.c, common/codec_native_encode.c, common/record.c, common/ack_msg.c (and the
# BME280/SHT3x drivers when present) with Debian's arm-none-eabi-gcc (-mcpu=cortex-m4 -mthumb
# -Os, newlib-nano headers), links them into one relocatable object, prints flash
# (text + data) and RAM (data + bss) per object and in total, and the node storage size for
# a typical configuration (default 16 outbox slots x 256 B). Exits 1 when any symbol the
# code needs from outside is not on the allowlist below: libcbor's encoders, mbedtls's
# SHA-256 and zeroize, mem*/str*, and the compiler's runtime helpers. Anything else (malloc,
# printf, time, a syscall) would mean the core is not portable to a bare microcontroller.
#
# libcbor and mbedtls are not built for the target (Debian has no arm-none-eabi builds of
# them): only their headers are used, through a private include directory holding nothing
# else, so that no host header can leak into the build. The cross compiler comes from
# `scripts/install-deps --firmware`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=""
slots=16
payload_bytes=256
cbor_include=${TG_CBOR_INCLUDE:-/usr/include}
mbedtls_include=${TG_MBEDTLS_INCLUDE:-/usr/include}

usage() { echo "usage: $0 [--out DIR] [--slots N] [--payload-bytes N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?}; shift 2 ;;
    --slots) slots=${2:?}; shift 2 ;;
    --payload-bytes) payload_bytes=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ $slots =~ ^[1-9][0-9]*$ && $payload_bytes =~ ^[1-9][0-9]*$ ]] || usage

for tool in arm-none-eabi-gcc arm-none-eabi-ld arm-none-eabi-nm arm-none-eabi-size; do
  if ! command -v "$tool" >/dev/null; then
    echo "footprint: $tool not found; run scripts/install-deps --firmware" >&2
    exit 1
  fi
done

if [ -z "$out" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out/include" "$out/obj"
# The private include directory: libcbor's and mbedtls's headers and nothing else.
ln -sfn "$cbor_include/cbor.h" "$out/include/cbor.h"
ln -sfn "$cbor_include/cbor" "$out/include/cbor"
ln -sfn "$mbedtls_include/mbedtls" "$out/include/mbedtls"

cflags=(-mcpu=cortex-m4 -mthumb -Os --specs=nano.specs -std=c11 -ffunction-sections
        -fdata-sections -fstack-usage -Wall -Wextra -Werror -Wno-unused-parameter
        -I"$root/firmware/core" -I"$root/common" -I"$out/include")

sources=("$root"/firmware/core/*.c "$root/common/codec_native_encode.c" "$root/common/record.c"
         "$root/common/ack_msg.c")
for driver in bme280 sht3x; do
  if [ -f "$root/firmware/drivers/$driver.c" ]; then
    sources+=("$root/firmware/drivers/$driver.c")
    cflags+=(-I"$root/firmware/drivers")
  fi
done

objects=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(basename "${src%.c}").o"
  arm-none-eabi-gcc "${cflags[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done
arm-none-eabi-ld -r -o "$out/fwcore.o" "${objects[@]}"

arm-none-eabi-gcc "${cflags[@]}" -DFOOTPRINT_SLOTS="$slots" \
  -DFOOTPRINT_PAYLOAD_BYTES="$payload_bytes" -c "$here/storage_probe.c" -o "$out/probe.o"
symbol_size() { # the size nm reports for a symbol of the probe, in decimal
  local hex
  hex=$(arm-none-eabi-nm -S "$out/probe.o" | awk -v s="$1" '$4 == s { print $2 }')
  [ -n "$hex" ] || { echo "footprint: $1 missing from the probe" >&2; exit 1; }
  echo $((16#$hex))
}
storage=$(symbol_size tg_footprint_storage)
node_header=$(symbol_size tg_footprint_node_header)

echo "firmware core for Cortex-M4 (arm-none-eabi-gcc $(arm-none-eabi-gcc -dumpversion), -Os, newlib-nano)"
printf '%-24s %8s %8s %8s %8s %8s\n' object text data bss flash ram
arm-none-eabi-size -B "${objects[@]}" "$out/fwcore.o" | tail -n +2 |
  while read -r text data bss _dec _hex file; do
    name=$(basename "$file" .o)
    [ "$name" = fwcore ] && name="total (linked)"
    printf '%-24s %8d %8d %8d %8d %8d\n' "$name" "$text" "$data" "$bss" \
      $((text + data)) $((data + bss))
  done
echo "node storage (tg_node_storage_size), $slots outbox slots x $payload_bytes B: $storage bytes" \
     "(node $node_header + outbox $((storage - node_header)))"
echo "no heap and no static buffers: RAM is the caller's storage plus stack"
# Per-function frames from -fstack-usage (the deepest path adds the frames along it, plus
# libcbor's and mbedtls's own, which are not compiled here).
echo "largest stack frames (bytes):" $(cat "$out"/obj/*.su | sort -t$'\t' -k2 -n -r | head -5 |
  awk -F'\t' '{ n = split($1, part, ":"); printf "%s %s, ", part[n], $2 }' | sed 's/, $//')

# Everything the linked core still needs from outside must be on this list.
allow='^(cbor_encode_[a-z0-9_]+|mbedtls_sha256_[a-z0-9_]+|mbedtls_platform_zeroize'
allow+='|mem(cpy|move|set|cmp)|str(len|cmp|ncmp|chr|nlen)'
allow+='|__aeabi_[a-z0-9_]+|__gnu_[a-z0-9_]+|__(clz|ctz|popcount|ffs|bswap|parity)[sd]i2'
allow+='|__(fix|fixuns|float|floatun)[a-z]+|__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord)[sd]f[23])$'
undefined=$(arm-none-eabi-nm -u "$out/fwcore.o" | awk '{ print $2 }' | sort -u)
echo "external symbols: $(echo $undefined)"
bad=$(grep -Ev "$allow" <<<"$undefined" || true)
if [ -n "$bad" ]; then
  echo "footprint: FAIL: the core needs symbols outside the allowlist (no OS, no malloc):" >&2
  echo "$bad" | sed 's/^/  /' >&2
  exit 1
fi
echo "footprint: ok: no OS call, no allocation, no stdio"
