#include "sign.h"

#include <mbedtls/platform_util.h>
#include <string.h>

#define BLOCK 64 /* SHA-256 block size */

/* One of the two HMAC pad states: SHA-256 started and fed the block (key ^ pad). */
static int absorb_pad(mbedtls_sha256_context *sha, const uint8_t block_key[BLOCK], uint8_t pad)
{
    uint8_t block[BLOCK];
    for (size_t i = 0; i < BLOCK; i++)
        block[i] = block_key[i] ^ pad;
    mbedtls_sha256_init(sha);
    int rc = mbedtls_sha256_starts_ret(sha, 0);
    if (rc == 0)
        rc = mbedtls_sha256_update_ret(sha, block, BLOCK);
    mbedtls_platform_zeroize(block, sizeof block);
    return rc;
}

int tg_sign_init(struct tg_sign *sg, const uint8_t *key, size_t key_len)
{
    uint8_t block_key[BLOCK] = {0};
    int rc = 0;
    if (key_len > BLOCK)
        rc = mbedtls_sha256_ret(key, key_len, block_key, 0); /* 32 bytes, zero padded */
    else if (key_len > 0)
        memcpy(block_key, key, key_len);
    if (rc == 0)
        rc = absorb_pad(&sg->inner, block_key, 0x36);
    if (rc == 0)
        rc = absorb_pad(&sg->outer, block_key, 0x5c);
    mbedtls_platform_zeroize(block_key, sizeof block_key);
    if (rc != 0) {
        tg_sign_clear(sg);
        return -1;
    }
    return 0;
}

tg_err tg_sign_hmac(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    const struct tg_sign *sg = ctx;
    mbedtls_sha256_context sha;
    uint8_t inner_hash[32];
    /* inner = H((key ^ ipad) || msg); sig = H((key ^ opad) || inner) */
    mbedtls_sha256_clone(&sha, &sg->inner);
    int rc = mbedtls_sha256_update_ret(&sha, msg, len);
    if (rc == 0)
        rc = mbedtls_sha256_finish_ret(&sha, inner_hash);
    if (rc == 0) {
        mbedtls_sha256_clone(&sha, &sg->outer);
        rc = mbedtls_sha256_update_ret(&sha, inner_hash, sizeof inner_hash);
    }
    if (rc == 0)
        rc = mbedtls_sha256_finish_ret(&sha, sig);
    mbedtls_platform_zeroize(&sha, sizeof sha);
    mbedtls_platform_zeroize(inner_hash, sizeof inner_hash);
    return rc == 0 ? TG_OK : TG_ERR_INTERNAL;
}

void tg_sign_clear(struct tg_sign *sg)
{
    mbedtls_platform_zeroize(sg, sizeof *sg);
}
