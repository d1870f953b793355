/*
 * codec_rules.h - the two payload rules the encoder and the decoder must apply identically.
 *
 * Both live in codec_native_encode.c, which the sensor-node firmware links on its own (no
 * libm, no allocation), and which the decoder and the canonical record use too: so a node
 * can never encode a name or a number that the gateway would read differently.
 * Pure functions: any thread.
 */
#ifndef TG_CODEC_RULES_H
#define TG_CODEC_RULES_H

#include <stddef.h>
#include <stdint.h>

/* The longest metric name or unit (bytes of UTF-8) the gateway's decoder accepts by default;
 * the encoder refuses longer ones, so a node never sends a payload the gateway would
 * dead-letter for its names. */
#define TG_CODEC_DEFAULT_MAX_NAME_BYTES 64

/* NULL when s[0..len) is a valid metric name or unit (non-empty UTF-8, at most max_bytes,
 * no control characters), else a short reason ("is empty", "is not valid UTF-8", ...). */
const char *tg_codec_name_problem(const void *s, size_t len, size_t max_bytes);

/* Encodes value as the smallest exact CBOR number (integer, single or double) into out
 * (9 bytes); returns the bytes written. value must be finite. */
size_t tg_codec_cbor_put_number(double value, uint8_t out[9]);

#endif
