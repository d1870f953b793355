/*
 * sign.h - HMAC-SHA256 payload signatures (RFC 2104) over mbedtls's SHA-256.
 *
 * The key is absorbed once, at tg_sign_init(): the SHA-256 states after (key ^ ipad) and
 * (key ^ opad) are kept, so each signature costs the message plus two blocks and, above all,
 * allocates nothing. (mbedtls_md_hmac() would calloc its contexts on every call, and a
 * long-lived mbedtls_md context would need a free the node API has no place for.) The raw
 * key is not kept.
 *
 * A struct tg_sign lives inside the node's storage; it is used from the node's thread.
 */
#ifndef TG_SIGN_H
#define TG_SIGN_H

#include <mbedtls/sha256.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "record.h" /* TG_SIG_LEN */

struct tg_sign {
    mbedtls_sha256_context inner; /* state after the block key ^ ipad */
    mbedtls_sha256_context outer; /* state after the block key ^ opad */
};

/* Prepares sg for key[0..key_len) (any length; keys longer than 64 bytes are hashed first, as
 * RFC 2104 says). Returns 0, or -1 when mbedtls fails. */
int tg_sign_init(struct tg_sign *sg, const uint8_t *key, size_t key_len);

/* sig = HMAC-SHA256(key, msg[0..len)). ctx is a struct tg_sign: the signature matches
 * tg_codec_sign_fn (codec_native.h), so it plugs into tg_codec_native_encode_signed().
 * Returns TG_OK, or TG_ERR_INTERNAL when mbedtls fails. */
tg_err tg_sign_hmac(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN]);

/* Wipes the key material. */
void tg_sign_clear(struct tg_sign *sg);

#endif
