/*
 * codec_read.c - the readers the payload parsers share (see codec_read.h): the decoder's
 * arena and detail texts, metric names, a pull reader over libcbor's streaming decoder, and
 * the JSON helpers around jansson.
 */
#include "codec_read.h"

#include <cbor.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"

/* --- arena and detail texts ------------------------------------------------------------- */

uint8_t *tg_codec_alloc(struct tg_decoder *dec, size_t len)
{
    if (len > dec->arena_cap - dec->arena_used)
        return NULL;
    uint8_t *p = dec->arena + dec->arena_used;
    dec->arena_used += len;
    return p;
}

char *tg_codec_strndup(struct tg_decoder *dec, const void *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = (char *)tg_codec_alloc(dec, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

tg_err tg_codec_fail(struct tg_decoder *dec, tg_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dec->err, sizeof dec->err, fmt, ap);
    va_end(ap);
    return err;
}

const char *tg_codec_quote(char out[TG_CODEC_QUOTE_MAX], const void *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = s;
    size_t o = 0, i = 0;
    out[o++] = '"';
    /* leave room for the longest escape (4), the cut mark (3), the quote and the NUL */
    for (; i < len && o + 4 + 3 + 2 <= TG_CODEC_QUOTE_MAX; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o++] = '"';
    if (i < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* --- names ------------------------------------------------------------------------------ */

/* tg_codec_name_problem() is in codec_native_encode.c (codec_rules.h). */


tg_err tg_codec_take_name(struct tg_decoder *dec, const char *what, const void *s, size_t len,
                          const char **name)
{
    const char *problem = tg_codec_name_problem(s, len, dec->limits.max_name_bytes);
    if (problem) {
        char q[TG_CODEC_QUOTE_MAX];
        if (len > dec->limits.max_name_bytes)
            return tg_codec_fail(dec, TG_ERR_BAD_NAME, "%s %s is too long (%zu bytes, limit %u)",
                                 what, tg_codec_quote(q, s, len), len, dec->limits.max_name_bytes);
        return tg_codec_fail(dec, TG_ERR_BAD_NAME, "%s %s %s", what, tg_codec_quote(q, s, len),
                             problem);
    }
    *name = tg_codec_strndup(dec, s, len);
    if (!*name)
        return tg_codec_fail(dec, TG_ERR_INTERNAL, "decoder arena exhausted");
    return TG_OK;
}

/* --- CBOR pull reader ------------------------------------------------------------------- */

/* What one cbor_stream_decode() call saw. Besides complete items the streaming decoder
 * reports indefinite-length starts, breaks and tags, which the reader turns into errors. */
enum raw_kind { RAW_NONE, RAW_ITEM, RAW_INDEF, RAW_BREAK, RAW_TAG };

struct cb_state {
    struct tg_cbor_item *item;
    enum raw_kind raw;
};

static void set_uint(void *ctx, uint64_t v)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = TG_CBOR_UINT;
    st->item->u = v;
}
static void cb_uint8(void *ctx, uint8_t v) { set_uint(ctx, v); }
static void cb_uint16(void *ctx, uint16_t v) { set_uint(ctx, v); }
static void cb_uint32(void *ctx, uint32_t v) { set_uint(ctx, v); }
static void cb_uint64(void *ctx, uint64_t v) { set_uint(ctx, v); }

static void set_negint(void *ctx, uint64_t v)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = TG_CBOR_NEGINT;
    st->item->u = v;
}
static void cb_negint8(void *ctx, uint8_t v) { set_negint(ctx, v); }
static void cb_negint16(void *ctx, uint16_t v) { set_negint(ctx, v); }
static void cb_negint32(void *ctx, uint32_t v) { set_negint(ctx, v); }
static void cb_negint64(void *ctx, uint64_t v) { set_negint(ctx, v); }

static void set_string(void *ctx, enum tg_cbor_kind kind, cbor_data data, size_t len)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = kind;
    st->item->str = data;
    st->item->len = len;
}
static void cb_bytes(void *ctx, cbor_data data, size_t len)
{
    set_string(ctx, TG_CBOR_BYTES, data, len);
}
static void cb_text(void *ctx, cbor_data data, size_t len) { set_string(ctx, TG_CBOR_TEXT, data, len); }

static void set_collection(void *ctx, enum tg_cbor_kind kind, size_t n)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = kind;
    st->item->u = n;
}
static void cb_array(void *ctx, size_t n) { set_collection(ctx, TG_CBOR_ARRAY, n); }
static void cb_map(void *ctx, size_t n) { set_collection(ctx, TG_CBOR_MAP, n); }

static void set_float(void *ctx, double v)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = TG_CBOR_FLOAT;
    st->item->d = v;
}
static void cb_float(void *ctx, float v) { set_float(ctx, v); }
static void cb_double(void *ctx, double v) { set_float(ctx, v); }

static void set_simple(void *ctx, enum tg_cbor_kind kind, bool b)
{
    struct cb_state *st = ctx;
    st->raw = RAW_ITEM;
    st->item->kind = kind;
    st->item->b = b;
}
static void cb_bool(void *ctx, bool b) { set_simple(ctx, TG_CBOR_BOOL, b); }
static void cb_null(void *ctx) { set_simple(ctx, TG_CBOR_NULL, false); }
static void cb_undefined(void *ctx) { set_simple(ctx, TG_CBOR_UNDEFINED, false); }

static void cb_indef(void *ctx) { ((struct cb_state *)ctx)->raw = RAW_INDEF; }
static void cb_break(void *ctx) { ((struct cb_state *)ctx)->raw = RAW_BREAK; }
static void cb_tag(void *ctx, uint64_t tag)
{
    (void)tag;
    ((struct cb_state *)ctx)->raw = RAW_TAG;
}

static const struct cbor_callbacks callbacks = {
    .uint8 = cb_uint8,
    .uint16 = cb_uint16,
    .uint32 = cb_uint32,
    .uint64 = cb_uint64,
    .negint8 = cb_negint8,
    .negint16 = cb_negint16,
    .negint32 = cb_negint32,
    .negint64 = cb_negint64,
    .byte_string_start = cb_indef,
    .byte_string = cb_bytes,
    .string = cb_text,
    .string_start = cb_indef,
    .indef_array_start = cb_indef,
    .array_start = cb_array,
    .indef_map_start = cb_indef,
    .map_start = cb_map,
    .tag = cb_tag,
    .float2 = cb_float,
    .float4 = cb_float,
    .float8 = cb_double,
    .undefined = cb_undefined,
    .null = cb_null,
    .boolean = cb_bool,
    .indef_break = cb_break,
};

/* The element count in the head of a definite-length array or map, as the wire says it.
 * libcbor's map_start/array_start callbacks pass it as size_t, which on a 32-bit board cuts a
 * count of 2^32 to 0 and 2^64-1 to 2^32-1: the same payload would then read as an empty map
 * on armhf and as 2^32 pairs on arm64. Reading the head here makes every architecture see
 * (and reject) the count that was sent. Called after libcbor finished the item, so the head's
 * argument bytes are present. */
static uint64_t head_count(const uint8_t *head)
{
    uint8_t info = head[0] & 0x1f;
    unsigned n_bytes;
    switch (info) {
    case 24: n_bytes = 1; break;
    case 25: n_bytes = 2; break;
    case 26: n_bytes = 4; break;
    case 27: n_bytes = 8; break;
    default: return info; /* 0-23: the count is the additional information itself */
    }
    uint64_t count = 0;
    for (unsigned i = 1; i <= n_bytes; i++)
        count = count << 8 | head[i];
    return count;
}

static const char *major_name(uint8_t initial)
{
    static const char *const names[8] = {"unsigned integer", "negative integer", "byte string",
                                         "text string",      "array",            "map",
                                         "tag",              "simple value"};
    return names[initial >> 5];
}

tg_err tg_codec_cbor_next(struct tg_decoder *dec, struct tg_cbor_reader *rd)
{
    if (rd->pos >= rd->len)
        return tg_codec_fail(dec, TG_ERR_MALFORMED,
                             "truncated CBOR: the payload ends at offset %zu inside an item",
                             rd->pos);
    struct cb_state st = {.item = &rd->item, .raw = RAW_NONE};
    uint8_t initial = rd->buf[rd->pos];
    rd->item.start = rd->pos;
    struct cbor_decoder_result res =
        cbor_stream_decode(rd->buf + rd->pos, rd->len - rd->pos, &callbacks, &st);
    switch (res.status) {
    case CBOR_DECODER_FINISHED:
        break;
    case CBOR_DECODER_NEDATA:
        return tg_codec_fail(dec, TG_ERR_MALFORMED,
                             "truncated CBOR: the %s at offset %zu runs past the payload's end",
                             major_name(initial), rd->pos);
    default:
        if ((initial >> 5) == 6)
            return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                                 "CBOR tags are not supported (tag at offset %zu)", rd->pos);
        if (initial >= 0xe0 && initial <= 0xf8)
            return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                                 "unassigned CBOR simple value at offset %zu is not supported",
                                 rd->pos);
        return tg_codec_fail(dec, TG_ERR_MALFORMED,
                             "not well-formed CBOR: reserved initial byte 0x%02x at offset %zu",
                             initial, rd->pos);
    }
    switch (st.raw) {
    case RAW_ITEM:
        break;
    case RAW_INDEF:
        return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                             "indefinite-length CBOR %s at offset %zu is not supported",
                             major_name(initial), rd->pos);
    case RAW_BREAK:
        return tg_codec_fail(dec, TG_ERR_MALFORMED,
                             "not well-formed CBOR: break byte 0xff at offset %zu outside an "
                             "indefinite-length item",
                             rd->pos);
    case RAW_TAG:
        return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                             "CBOR tags are not supported (tag at offset %zu)", rd->pos);
    case RAW_NONE:
    default:
        return tg_codec_fail(dec, TG_ERR_INTERNAL, "CBOR decoder reported no item at offset %zu",
                             rd->pos);
    }
    if (rd->item.kind == TG_CBOR_ARRAY || rd->item.kind == TG_CBOR_MAP)
        rd->item.u = head_count(rd->buf + rd->pos);
    rd->pos += res.read;
    return TG_OK;
}

tg_err tg_codec_cbor_skip(struct tg_decoder *dec, struct tg_cbor_reader *rd, unsigned depth)
{
    enum tg_cbor_kind kind = rd->item.kind;
    if (kind != TG_CBOR_ARRAY && kind != TG_CBOR_MAP)
        return TG_OK;
    if (depth > dec->limits.max_depth)
        return tg_codec_fail(dec, TG_ERR_TOO_DEEP,
                             "CBOR %s at offset %zu nests deeper than the limit of %u",
                             kind == TG_CBOR_MAP ? "map" : "array", rd->item.start,
                             dec->limits.max_depth);
    uint64_t n = rd->item.u;
    unsigned per_entry = kind == TG_CBOR_MAP ? 2 : 1;
    /* Each element takes at least one byte, so the loop ends with the payload at the latest. */
    for (uint64_t i = 0; i < n; i++) {
        for (unsigned k = 0; k < per_entry; k++) {
            tg_err err = tg_codec_cbor_next(dec, rd);
            if (err == TG_OK)
                err = tg_codec_cbor_skip(dec, rd, depth + 1);
            if (err != TG_OK)
                return err;
        }
    }
    return TG_OK;
}

bool tg_codec_cbor_number(const struct tg_cbor_item *item, double *value)
{
    switch (item->kind) {
    case TG_CBOR_UINT:
        *value = (double)item->u;
        return true;
    case TG_CBOR_NEGINT:
        *value = -1.0 - (double)item->u;
        return true;
    case TG_CBOR_FLOAT:
        *value = item->d;
        return true;
    default:
        return false;
    }
}

const char *tg_codec_cbor_kind_name(const struct tg_cbor_item *item)
{
    switch (item->kind) {
    case TG_CBOR_UINT:
        return "unsigned integer";
    case TG_CBOR_NEGINT:
        return "negative integer";
    case TG_CBOR_BYTES:
        return "byte string";
    case TG_CBOR_TEXT:
        return "text string";
    case TG_CBOR_ARRAY:
        return "array";
    case TG_CBOR_MAP:
        return "map";
    case TG_CBOR_FLOAT:
        return "float";
    case TG_CBOR_BOOL:
        return "boolean";
    case TG_CBOR_NULL:
        return "null";
    case TG_CBOR_UNDEFINED:
        return "undefined";
    }
    return "unknown item";
}

/* --- JSON ------------------------------------------------------------------------------- */

tg_err tg_codec_json_load(struct tg_decoder *dec, const uint8_t *buf, size_t len, json_t **root)
{
    json_error_t jerr;
    *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*root)
        return TG_OK;
    tg_err err;
    const char *what;
    switch (json_error_code(&jerr)) {
    case json_error_duplicate_key:
        err = TG_ERR_DUPLICATE_FIELD;
        what = "duplicate key";
        break;
    case json_error_end_of_input_expected:
        err = TG_ERR_TRAILING_BYTES;
        what = "bytes follow the top-level value";
        break;
    case json_error_stack_overflow:
        err = TG_ERR_TOO_DEEP;
        what = "nested too deeply";
        break;
    case json_error_numeric_overflow:
        err = TG_ERR_OUT_OF_RANGE;
        what = "number out of range";
        break;
    case json_error_out_of_memory:
        err = TG_ERR_NOMEM;
        what = "out of memory";
        break;
    default:
        err = TG_ERR_MALFORMED;
        what = "not well-formed JSON";
        break;
    }
    /* jansson's text quotes a bit of the input; keep the detail printable ASCII. */
    char text[TG_CODEC_QUOTE_MAX];
    tg_codec_quote(text, jerr.text, strlen(jerr.text));
    return tg_codec_fail(dec, err, "JSON %s at byte %d: %s", what, jerr.position, text);
}

const char *tg_codec_json_type_name(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return json_integer_value(value) < 0 ? "negative integer" : "integer";
    case JSON_REAL:
        return "real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown value";
}

unsigned tg_codec_json_depth(const json_t *value, unsigned limit)
{
    if (!json_is_object(value) && !json_is_array(value))
        return 0;
    if (limit == 0)
        return 1; /* one level already exceeds the limit: no need to look further */
    unsigned deepest = 0;
    if (json_is_array(value)) {
        size_t i;
        json_t *elem;
        json_array_foreach(value, i, elem) {
            unsigned d = tg_codec_json_depth(elem, limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest >= limit)
                break;
        }
    } else {
        const char *key;
        json_t *elem;
        json_object_foreach((json_t *)value, key, elem) {
            unsigned d = tg_codec_json_depth(elem, limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest >= limit)
                break;
        }
    }
    return deepest + 1;
}
