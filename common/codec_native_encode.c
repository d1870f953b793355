/*
 * codec_native_encode.c - the native device payload: CBOR encoding and signing (the format
 * and the signature are defined in codec_native.h; decoding is in codec_native.c).
 *
 * This file is linked on its own by the sensor-node firmware (firmware/core), including a
 * Cortex-M build with no operating system. So it depends only on libcbor's *encoding*
 * functions (which write into caller buffers and never allocate), record.h and error.h: no
 * libm, no jansson, no decoder. The two rules the decoder shares with it (codec_rules.h) live
 * here for that reason.
 */
#include <cbor.h>
#include <float.h>
#include <math.h> /* isfinite and signbit only: macros over compiler builtins, no libm */
#include <string.h>

#include "codec_native.h"
#include "codec_rules.h"

/* Appends to a caller buffer, counting what does not fit so that the caller learns the size
 * it needs (pos > cap afterwards means the output was cut). */
struct sink {
    uint8_t *buf;
    size_t cap, pos;
};

static void put(struct sink *s, const void *data, size_t len)
{
    if (s->pos <= s->cap && len <= s->cap - s->pos)
        memcpy(s->buf + s->pos, data, len);
    s->pos += len;
}

static void put_text(struct sink *s, const char *text, size_t len)
{
    uint8_t header[9];
    put(s, header, cbor_encode_string_start(len, header, sizeof header));
    put(s, text, len);
}

static void put_uint(struct sink *s, uint64_t value)
{
    uint8_t item[9];
    put(s, item, cbor_encode_uint(value, item, sizeof item));
}

/* Shared with the decoder and the canonical record (codec_rules.h): the smallest exact CBOR
 * number. Integers between -2^63 and 2^64 as CBOR integers (except -0.0, which keeps its
 * sign as a float), else a single float when that is exact, else a double. Written without
 * libm functions (trunc, fabs) so that a bare-metal build needs none: the range checks come
 * first, so the integer casts below are defined. value is finite. */
size_t tg_codec_cbor_put_number(double value, uint8_t out[9])
{
    if (value >= 0 && value < 18446744073709551616.0) {
        uint64_t u = (uint64_t)value;
        if ((double)u == value && !signbit(value))
            return cbor_encode_uint(u, out, 9);
    } else if (value < 0 && value >= -9223372036854775808.0) {
        int64_t i = (int64_t)value;
        if ((double)i == value) /* CBOR negative integer n encodes -1 - n; -(i + 1) cannot overflow */
            return cbor_encode_negint((uint64_t)(-(i + 1)), out, 9);
    }
    if (value <= FLT_MAX && value >= -FLT_MAX && (double)(float)value == value)
        return cbor_encode_single((float)value, out, 9);
    return cbor_encode_double(value, out, 9);
}

static void put_number(struct sink *s, double value)
{
    uint8_t item[9];
    put(s, item, tg_codec_cbor_put_number(value, item));
}

/* Shared with the decoder (codec_rules.h): NULL when s[0..len) is a valid metric name or
 * unit: non-empty, at most max_bytes, well-formed UTF-8 (no overlong forms, surrogates or
 * code points beyond U+10FFFF), no C0/C1 control characters or DEL; else a short reason. */
const char *tg_codec_name_problem(const void *s, size_t len, size_t max_bytes)
{
    const uint8_t *p = s;
    if (len == 0)
        return "is empty";
    if (len > max_bytes)
        return "is too long";
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return "contains a control character";
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            cp = c & 0x07;
        } else {
            return "is not valid UTF-8";
        }
        if (len - i < n)
            return "is not valid UTF-8";
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return "is not valid UTF-8";
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return "is not valid UTF-8"; /* overlong, surrogate or beyond Unicode */
        if (cp <= 0x9f)
            return "contains a control character"; /* C1 controls U+0080..U+009F */
        i += n;
    }
    return NULL;
}

static bool name_valid(const char *name, size_t len)
{
    return tg_codec_name_problem(name, len, TG_CODEC_DEFAULT_MAX_NAME_BYTES) == NULL;
}

tg_err tg_codec_native_encode(const struct tg_reading *rd, uint8_t *buf, size_t cap, size_t *len)
{
    if (!rd->has_seq)
        return TG_ERR_USAGE;
    if (rd->ts_ms < 0)
        return TG_ERR_OUT_OF_RANGE;
    struct sink s = {.buf = buf, .cap = cap};
    uint8_t item[9];
    put(&s, item, cbor_encode_map_start(4, item, sizeof item));
    put_text(&s, "seq", 3);
    put_uint(&s, rd->seq);
    put_text(&s, "boot", 4);
    put_uint(&s, rd->boot);
    put_text(&s, "ts", 2);
    put_uint(&s, (uint64_t)rd->ts_ms);
    put_text(&s, "m", 1);
    put(&s, item, cbor_encode_map_start(rd->n_metrics, item, sizeof item));
    for (size_t i = 0; i < rd->n_metrics; i++) {
        const struct tg_metric *metric = &rd->metrics[i];
        size_t name_len = strlen(metric->name);
        if (!name_valid(metric->name, name_len))
            return TG_ERR_BAD_NAME;
        if (!isfinite(metric->value))
            return TG_ERR_NON_FINITE;
        put_text(&s, metric->name, name_len);
        put_number(&s, metric->value);
    }
    *len = s.pos;
    return s.pos <= cap ? TG_OK : TG_ERR_FULL;
}

tg_err tg_codec_native_sign(uint8_t *buf, size_t len, size_t cap, const uint8_t sig[TG_SIG_LEN],
                            size_t *signed_len)
{
    static const uint8_t sig_key[] = {0x63, 's', 'i', 'g', 0x58, TG_SIG_LEN};
    if (len == 0 || (buf[0] >> 5) != 5)
        return TG_ERR_USAGE;
    unsigned info = buf[0] & 0x1f;
    size_t header_len;
    uint64_t n = 0;
    if (info < 24) {
        header_len = 1;
        n = info;
    } else if (info <= 27) {
        header_len = 1 + ((size_t)1 << (info - 24));
        if (len < header_len)
            return TG_ERR_USAGE;
        for (size_t i = 1; i < header_len; i++)
            n = (n << 8) | buf[i];
    } else {
        return TG_ERR_USAGE; /* indefinite length or reserved */
    }
    if (n >= SIZE_MAX)
        return TG_ERR_USAGE;
    uint8_t header[9];
    size_t new_header_len = cbor_encode_map_start((size_t)n + 1, header, sizeof header);
    size_t body_len = len - header_len;
    size_t need = new_header_len + body_len + sizeof sig_key + TG_SIG_LEN;
    *signed_len = need;
    if (need > cap)
        return TG_ERR_FULL;
    memmove(buf + new_header_len, buf + header_len, body_len);
    memcpy(buf, header, new_header_len);
    memcpy(buf + new_header_len + body_len, sig_key, sizeof sig_key);
    memcpy(buf + new_header_len + body_len + sizeof sig_key, sig, TG_SIG_LEN);
    return TG_OK;
}

tg_err tg_codec_native_encode_signed(const struct tg_reading *rd, tg_codec_sign_fn sign,
                                     void *sign_ctx, uint8_t *buf, size_t cap, size_t *len)
{
    size_t unsigned_len;
    tg_err err = tg_codec_native_encode(rd, buf, cap, &unsigned_len);
    if (err == TG_ERR_FULL)
        *len = unsigned_len + TG_CODEC_NATIVE_SIG_OVERHEAD;
    if (err != TG_OK)
        return err;
    uint8_t sig[TG_SIG_LEN];
    if ((err = sign(sign_ctx, buf, unsigned_len, sig)) != TG_OK)
        return err;
    return tg_codec_native_sign(buf, unsigned_len, cap, sig, len);
}
