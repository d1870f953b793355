/*
 * codec_internal.h - what the codec files share and nobody else uses.
 *
 * The decoder object, its bump arena (reset per payload), detail-text helpers, name checks,
 * and a pull reader over libcbor's streaming decoder that yields one item header at a time,
 * so the payload parsers are plain recursive descent with nesting under their control.
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

/* Copies len bytes into the arena and NUL-terminates them; NULL when the arena is full
 * (it is sized so that a payload within the limits cannot fill it). */
char *tg_codec_strndup(struct tg_decoder *dec, const void *s, size_t len);
uint8_t *tg_codec_alloc(struct tg_decoder *dec, size_t len);

/* Records the detail text and returns err, so parsers can `return tg_codec_fail(...)`. */
tg_err tg_codec_fail(struct tg_decoder *dec, tg_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quotes untrusted bytes for a detail text: "abc", non-printables as \xNN, cut with "..."
 * beyond a few dozen bytes. Returns out. */
#define TG_CODEC_QUOTE_MAX 64
const char *tg_codec_quote(char out[TG_CODEC_QUOTE_MAX], const void *s, size_t len);


/* Checks a metric name, copies it into the arena; TG_ERR_BAD_NAME with text otherwise. */
tg_err tg_codec_take_name(struct tg_decoder *dec, const char *what, const void *s, size_t len,
                          const char **name);

/* --- CBOR pull reader ------------------------------------------------------------------ */

enum tg_cbor_kind {
    TG_CBOR_UINT,
    TG_CBOR_NEGINT, /* value is -1 - u */
    TG_CBOR_BYTES,
    TG_CBOR_TEXT,
    TG_CBOR_ARRAY,
    TG_CBOR_MAP,
    TG_CBOR_FLOAT,
    TG_CBOR_BOOL,
    TG_CBOR_NULL,
    TG_CBOR_UNDEFINED,
};

struct tg_cbor_item {
    enum tg_cbor_kind kind;
    uint64_t u;          /* UINT, NEGINT; ARRAY and MAP: number of elements / pairs */
    double d;            /* FLOAT */
    bool b;              /* BOOL */
    const uint8_t *str;  /* BYTES, TEXT: the content, inside the payload */
    size_t len;          /* BYTES, TEXT */
    size_t start;        /* payload offset of the item's first byte */
};

struct tg_cbor_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos; /* offset of the next item */
    struct tg_cbor_item item;
};

/* Reads the next item header (a whole string for BYTES/TEXT) into rd->item. Truncation and
 * reserved bytes are TG_ERR_MALFORMED; indefinite lengths, tags and unassigned simple values
 * TG_ERR_UNSUPPORTED. */
tg_err tg_codec_cbor_next(struct tg_decoder *dec, struct tg_cbor_reader *rd);

/* Skips the contents of rd->item (the elements of an array or map), depth being the item's
 * own nesting level: TG_ERR_TOO_DEEP beyond limits.max_depth. */
tg_err tg_codec_cbor_skip(struct tg_decoder *dec, struct tg_cbor_reader *rd, unsigned depth);

/* True, with *value, when the item is a number (integer or float). */
bool tg_codec_cbor_number(const struct tg_cbor_item *item, double *value);

/* "unsigned integer", "text string", ...: for detail texts. */
const char *tg_codec_cbor_kind_name(const struct tg_cbor_item *item);


/* --- JSON ----------------------------------------------------------------------------- */

/* Parses buf with jansson (duplicate keys rejected, nothing after the top-level value).
 * Maps jansson's errors to codes: duplicate key -> DUPLICATE_FIELD, trailing data ->
 * TRAILING_BYTES, too deep -> TOO_DEEP, number overflow -> OUT_OF_RANGE, else MALFORMED. */
tg_err tg_codec_json_load(struct tg_decoder *dec, const uint8_t *buf, size_t len, json_t **root);

/* "object", "string", "negative integer", ...: for detail texts. */
const char *tg_codec_json_type_name(const json_t *value);

/* Levels of arrays/objects in value (a scalar is 0, [] is 1, [[1]] is 2), counting no
 * further than limit + 1. */
unsigned tg_codec_json_depth(const json_t *value, unsigned limit);

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
