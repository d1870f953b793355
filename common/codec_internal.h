/*
 * codec_internal.h - what the codec files share and nobody else uses: the decoder object
 * and its bump arena (reset per payload), the payload parsers the dispatcher calls, and the
 * output sink of the encoders. The readers the parsers use are in codec_read.h.
 */
#ifndef TG_CODEC_INTERNAL_H
#define TG_CODEC_INTERNAL_H

#include <cbor.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "codec_rules.h"

#define TG_CODEC_ERR_MAX 256

/* One decoded metric of a SenML pack before grouping by time. */
struct tg_codec_row {
    struct tg_metric metric;
    int64_t ts_ms;
    size_t reading; /* index into the decoder's readings */
};

struct tg_decoder {
    struct tg_codec_limits limits;
    uint8_t *arena; /* strings and signed bytes of the current payload */
    size_t arena_cap;
    size_t arena_used;
    struct tg_reading *readings; /* limits.max_readings */
    struct tg_metric *metrics;   /* rows_cap: the readings' metrics, grouped by reading */
    struct tg_codec_row *rows;   /* rows_cap: SenML records in pack order */
    size_t rows_cap;
    const char *device; /* arena copy of the current device id */
    char err[TG_CODEC_ERR_MAX];
};

/* --- the parsers (codec_native.c, codec_senml.c) -------------------------------------- */

/* Each fills dec->readings[0..) and *out (n_readings, readings, sig); buf[start..len) holds
 * the top-level item. */
tg_err tg_codec_native_cbor(struct tg_decoder *dec, const uint8_t *buf, size_t len, size_t start,
                            struct tg_decoded *out);
tg_err tg_codec_native_json(struct tg_decoder *dec, const uint8_t *buf, size_t len,
                            struct tg_decoded *out);
tg_err tg_codec_senml_cbor(struct tg_decoder *dec, const uint8_t *buf, size_t len, size_t start,
                           int64_t now_ms, struct tg_decoded *out);
tg_err tg_codec_senml_json(struct tg_decoder *dec, const uint8_t *buf, size_t len, int64_t now_ms,
                           struct tg_decoded *out);


/* Appends to a caller buffer, counting what does not fit so that the caller learns the size
 * it needs (pos > cap afterwards means the output was cut). */
struct sink {
    uint8_t *buf;
    size_t cap, pos;
};

static inline void put(struct sink *s, const void *data, size_t len)
{
    if (s->pos <= s->cap && len <= s->cap - s->pos)
        memcpy(s->buf + s->pos, data, len);
    s->pos += len;
}


/* A CBOR text string / unsigned integer appended to a sink. */
static inline void put_cbor_text(struct sink *s, const char *text, size_t len)
{
    uint8_t header[9];
    put(s, header, cbor_encode_string_start(len, header, sizeof header));
    put(s, text, len);
}

static inline void put_cbor_uint(struct sink *s, uint64_t value)
{
    uint8_t item[9];
    put(s, item, cbor_encode_uint(value, item, sizeof item));
}

#endif
