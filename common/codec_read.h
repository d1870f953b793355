/*
 * codec_read.h - the readers the payload parsers share (codec_native.c, codec_senml.c,
 * codec_canonical_decode.c); private to the codec files.
 *
 * The arena and detail-text helpers of a decoder, name checks, a pull reader over libcbor's
 * streaming decoder that yields one item header at a time (so the parsers are plain
 * recursive descent with nesting under their control), and jansson wrappers. They write into
 * the decoder (struct tg_decoder, codec_internal.h) but never call back into the dispatcher
 * or a parser: calls go decoder -> parsers -> readers, never in a circle.
 *
 * Threads: as the decoder they are given (one thread at a time per decoder).
 */
#ifndef TG_CODEC_READ_H
#define TG_CODEC_READ_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct tg_decoder;

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

#endif
