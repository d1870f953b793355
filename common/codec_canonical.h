/*
 * codec_canonical.h - the canonical record: what the gateway writes to Kafka for one reading.
 *
 *   {"device": text, "boot": uint, "seq": uint, "ts": int ms, "gw_ts": int ms,
 *    "gateway": text, "m": {name: number, ...}, "u": {name: unit, ...}}
 *
 * in that key order. boot and seq are left out when the reading has none (SenML); "u" is
 * present only when some metric has a unit and lists only those metrics; gw_ts and gateway
 * are left out when gateway is NULL (tidegate-decode shows the device's view that way).
 *
 * JSON (the default Kafka value): compact, strings escaped per RFC 8259 (UTF-8 passed
 * through), numbers in the shortest form that reads back to the same double (21.3, not
 * 21.300000000000001; 5, not 5.0), laid out like JavaScript's JSON.stringify except that
 * exponent form starts at 1e15 rather than 1e21 (see tg_codec_format_double). CBOR: the same
 * keys and order, integers where a value is integral, else single floats when exact, else
 * doubles.
 *
 * Both write into the caller's buffer and allocate nothing: they return TG_OK with *len the
 * bytes written (no NUL is added), or TG_ERR_FULL with *len the bytes needed, so a caller can
 * grow its buffer once and retry. TG_ERR_NON_FINITE when a value is NaN or infinite.
 * Pure functions: any thread. Decimal output assumes the "C" numeric locale.
 */
#ifndef TG_CODEC_CANONICAL_H
#define TG_CODEC_CANONICAL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "record.h"

tg_err tg_codec_canonical_json(const struct tg_reading *rd, const char *gateway, int64_t gw_ts_ms,
                               char *buf, size_t cap, size_t *len);

tg_err tg_codec_canonical_cbor(const struct tg_reading *rd, const char *gateway, int64_t gw_ts_ms,
                               uint8_t *buf, size_t cap, size_t *len);

/* Writes the shortest decimal text that strtod() reads back as value (finite), NUL-terminated,
 * into out (at least TG_CODEC_DOUBLE_MAX bytes); returns its length. Valid JSON: integers up
 * to 2^53 as plain digits ("5", "-0"), other values below 1e15 in plain decimals down to
 * 1e-6 ("21.3", "0.0000015"), the rest with an exponent ("1e+300", "5e-324"), so a plain
 * integer literal never exceeds 2^53 (parsers with 64-bit integers read every number). */
#define TG_CODEC_DOUBLE_MAX 32
size_t tg_codec_format_double(double value, char *out);

#endif
