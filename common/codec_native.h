/*
 * codec_native.h - the native device payload: encoder and signature definition.
 *
 * A native payload is a CBOR map with text keys (design.md section 4):
 *
 *   {"seq": uint, "boot": uint, "ts": uint ms since epoch, "m": {name: number, ...},
 *    "sig": bstr(32)}
 *
 * seq, boot, ts and m are required, sig is optional, no other key is allowed. Metric values
 * are CBOR integers or half/single/double floats and must be finite; ts must fit int64. The
 * same keys in a JSON object are accepted too (for mosquitto_pub), but a JSON payload cannot
 * be signed, and its integers are limited to 2^63-1 (jansson's integer type).
 *
 * Signature. sig = HMAC-SHA256(device key, M'), where M' is the payload map without its
 * "sig" entry:
 *
 *   M' = the shortest CBOR header of a map of N-1 entries
 *        || the bytes of every other key/value pair, in payload order, unchanged
 *
 * for a payload that is a definite-length map of N entries, one of which is "sig" (a leading
 * self-describe tag 55799, if present, is not covered). When sig is the last entry, M' is
 * exactly the payload as encoded before signing, which gives the firmware's flow:
 *
 *   tg_codec_native_encode()      -> bytes B (a map of N-1 entries, shortest header)
 *   sig = HMAC-SHA256(key, B)
 *   tg_codec_native_sign(B, sig)  -> header rewritten for N entries, "sig": h'..' appended
 *
 * or the same in one call with tg_codec_native_encode_signed() and a signing callback. The
 * decoder (codec.h) hands out sig and M' and leaves verification to the gateway.
 *
 * All functions here are pure: any thread, no allocation, the caller owns every buffer.
 */
#ifndef TG_CODEC_NATIVE_H
#define TG_CODEC_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "record.h"

/* Bytes tg_codec_native_sign() adds at most: "sig" key (4) + bstr(32) (34) + header growth (8). */
#define TG_CODEC_NATIVE_SIG_OVERHEAD 46

/*
 * Encodes rd (has_seq must be true; device and units are not part of the payload) as an
 * unsigned native CBOR payload: a map {"seq","boot","ts","m"} in that order. Integral values
 * are encoded as CBOR integers, others as single floats when that is exact, else doubles.
 * Returns TG_OK and *len; TG_ERR_FULL with *len = bytes needed when cap is too small;
 * TG_ERR_USAGE when has_seq is false; TG_ERR_OUT_OF_RANGE for a negative ts_ms;
 * TG_ERR_BAD_NAME for an empty or non-UTF-8 name; TG_ERR_NON_FINITE for NaN/inf values.
 */
tg_err tg_codec_native_encode(const struct tg_reading *rd, uint8_t *buf, size_t cap, size_t *len);

/*
 * Turns the unsigned native payload buf[0..len) (a definite-length CBOR map without "sig")
 * into the signed one, in place: the map header counts one more entry and "sig": h'<sig>' is
 * appended. Returns TG_OK and *signed_len; TG_ERR_FULL (*signed_len = bytes needed) when cap
 * is too small (len + TG_CODEC_NATIVE_SIG_OVERHEAD always suffices); TG_ERR_USAGE when buf
 * does not start with a definite-length map header.
 */
tg_err tg_codec_native_sign(uint8_t *buf, size_t len, size_t cap, const uint8_t sig[TG_SIG_LEN],
                            size_t *signed_len);

/* Computes sig = HMAC-SHA256(key, msg[0..len)) with the device key; returns TG_OK or an error
 * that tg_codec_native_encode_signed() passes back. */
typedef tg_err (*tg_codec_sign_fn)(void *ctx, const uint8_t *msg, size_t len,
                                   uint8_t sig[TG_SIG_LEN]);

/* tg_codec_native_encode(), then sign(ctx, bytes), then tg_codec_native_sign(). */
tg_err tg_codec_native_encode_signed(const struct tg_reading *rd, tg_codec_sign_fn sign,
                                     void *sign_ctx, uint8_t *buf, size_t cap, size_t *len);

#endif
