/*
 * codec_canonical_decode.h - reading the canonical record (codec_canonical.h) back: what a
 * consumer of the telemetry topic (the upstream worker, `tidegate-sim audit`) makes of one
 * Kafka value.
 *
 * The decoder is strict, like the device payload decoder (codec.h): every rejection is a
 * permanent tg_err and a detail text (tg_canonical_decoder_error()) naming the field, e.g.
 * `field "seq": expected unsigned integer, got text string`. What it accepts:
 *
 *   device   required, a device id [A-Za-z0-9_.-]{1,64}               (TG_ERR_BAD_NAME)
 *   boot,seq unsigned integers, both or neither (SenML readings have none)
 *   ts       required, integer ms (may be negative)
 *   gw_ts,   integer ms and a non-empty text of at most TG_CANONICAL_GATEWAY_MAX bytes,
 *   gateway  both or neither
 *   m        required, {name: finite number}: names and count under the codec limits
 *   u        optional, {name: unit}: every name one of m's, units checked like names
 *
 * Any other key is TG_ERR_UNKNOWN_FIELD, a key twice TG_ERR_DUPLICATE_FIELD, a missing one
 * TG_ERR_MISSING_FIELD, a wrong type TG_ERR_WRONG_TYPE; keys may come in any order. CBOR:
 * definite lengths only, no tags except a leading self-describe tag (55799), nothing after
 * the map (TG_ERR_TRAILING_BYTES). JSON: jansson's integers are 64-bit signed, so a JSON
 * boot or seq above 2^63-1 is TG_ERR_OUT_OF_RANGE (the gateway's CBOR records carry any).
 *
 * Memory: the decoder allocates everything in _new (sized by the limits); a decode then
 * allocates nothing for CBOR, and for JSON only jansson's document, freed before returning.
 * The strings and metrics a decode returns belong to the decoder and stay valid until its
 * next decode or its destruction.
 *
 * Threads: a decoder is used by one thread at a time; distinct decoders are independent.
 */
#ifndef TG_CODEC_CANONICAL_DECODE_H
#define TG_CODEC_CANONICAL_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "error.h"
#include "record.h"

/* The longest gateway name accepted (the gateway writes at most 255 bytes). */
#define TG_CANONICAL_GATEWAY_MAX 255

/* Canonical records hold one reading of a device payload plus a few fields: the default
 * size limit is larger than a device payload's. */
#define TG_CANONICAL_DEFAULT_MAX_RECORD_BYTES 65536

/* What the gateway added to the reading. */
struct tg_canonical_extra {
    const char *gateway; /* NUL-terminated, or NULL when the record has none */
    int64_t gw_ts_ms;    /* when the gateway received the reading; 0 when gateway is NULL */
};

struct tg_canonical_decoder;

/* limits: NULL or zero fields for the defaults (max_payload_bytes then defaults to
 * TG_CANONICAL_DEFAULT_MAX_RECORD_BYTES). NULL when out of memory. Any thread. */
struct tg_canonical_decoder *tg_canonical_decoder_new(const struct tg_codec_limits *limits);

/* Frees the decoder and everything its results point to. NULL is a no-op. */
void tg_canonical_decoder_destroy(struct tg_canonical_decoder *cd);

/* Which encoding a record's `content-type` header names: 1 for "application/cbor", 0 for
 * "application/json" (parameters after ';' ignored, case-insensitive), -1 for anything else
 * or no header (value NULL): then tg_canonical_decode() sniffs. */
int tg_canonical_content_type(const char *value, size_t len);

/*
 * Decodes one canonical record of len bytes. cbor: 1 CBOR, 0 JSON, -1 sniff (JSON when the
 * first byte after JSON whitespace is '{', else CBOR). On TG_OK *out is the reading (device,
 * metrics and units point into the decoder) and *extra (may be NULL) what the gateway added.
 * On error *out and *extra are zeroed and tg_canonical_decoder_error() says why.
 */
tg_err tg_canonical_decode(struct tg_canonical_decoder *cd, const uint8_t *buf, size_t len,
                           int cbor, struct tg_reading *out, struct tg_canonical_extra *extra);

/* Detail text of the last failed decode ("" after a success): printable ASCII, valid until
 * the next call. */
const char *tg_canonical_decoder_error(const struct tg_canonical_decoder *cd);

#endif
