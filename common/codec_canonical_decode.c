/*
 * codec_canonical_decode.c - the canonical record read back (codec_canonical_decode.h).
 *
 * Built on the payload decoder's internals (codec_internal.h): its arena holds the strings,
 * its detail text the reason of a rejection, and its CBOR pull reader walks the record
 * without building a tree, so nesting stays under this file's control.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec_canonical_decode.h"
#include "codec_internal.h"
#include "codec_read.h"

enum field { F_DEVICE, F_BOOT, F_SEQ, F_TS, F_GW_TS, F_GATEWAY, F_M, F_U, F__COUNT };

static const char *const field_names[F__COUNT] = {"device", "boot",    "seq", "ts",
                                                  "gw_ts",  "gateway", "m",   "u"};

/* A unit read from "u", matched with its metric once the whole record is read (the keys may
 * come in any order). name points into the payload or the JSON document. */
struct unit_ref {
    const char *name;
    size_t name_len;
    const char *unit; /* arena copy */
};

struct tg_canonical_decoder {
    struct tg_decoder *dec;
    struct tg_metric *metrics; /* limits.max_metrics */
    struct unit_ref *units;    /* limits.max_metrics */
};

/* The fields while a record is read. */
struct canon {
    unsigned seen; /* bit per enum field */
    uint64_t boot, seq;
    int64_t ts, gw_ts;
    const char *device, *gateway;
    size_t n_metrics, n_units;
};

static const uint8_t self_describe[3] = {0xd9, 0xd9, 0xf7};

static int field_lookup(const void *key, size_t len)
{
    for (int f = 0; f < F__COUNT; f++)
        if (strlen(field_names[f]) == len && memcmp(field_names[f], key, len) == 0)
            return f;
    return -1;
}

struct tg_canonical_decoder *tg_canonical_decoder_new(const struct tg_codec_limits *limits)
{
    struct tg_codec_limits lim = limits ? *limits : (struct tg_codec_limits){0};
    if (!lim.max_payload_bytes)
        lim.max_payload_bytes = TG_CANONICAL_DEFAULT_MAX_RECORD_BYTES;
    struct tg_canonical_decoder *cd = calloc(1, sizeof *cd);
    if (!cd)
        return NULL;
    cd->dec = tg_decoder_new(&lim);
    if (!cd->dec)
        goto fail;
    unsigned n = tg_decoder_limits(cd->dec)->max_metrics;
    cd->metrics = calloc(n, sizeof *cd->metrics);
    cd->units = calloc(n, sizeof *cd->units);
    if (!cd->metrics || !cd->units)
        goto fail;
    return cd;
fail:
    tg_canonical_decoder_destroy(cd);
    return NULL;
}

void tg_canonical_decoder_destroy(struct tg_canonical_decoder *cd)
{
    if (!cd)
        return;
    tg_decoder_destroy(cd->dec);
    free(cd->metrics);
    free(cd->units);
    free(cd);
}

const char *tg_canonical_decoder_error(const struct tg_canonical_decoder *cd)
{
    return tg_decoder_error(cd->dec);
}

int tg_canonical_content_type(const char *value, size_t len)
{
    if (!value)
        return -1;
    size_t end = 0;
    while (end < len && value[end] != ';')
        end++;
    while (end > 0 && (value[end - 1] == ' ' || value[end - 1] == '\t'))
        end--;
    size_t start = 0;
    while (start < end && (value[start] == ' ' || value[start] == '\t'))
        start++;
    size_t n = end - start;
    if (n == strlen("application/cbor") &&
        strncasecmp(value + start, "application/cbor", n) == 0)
        return 1;
    if (n == strlen("application/json") &&
        strncasecmp(value + start, "application/json", n) == 0)
        return 0;
    return -1;
}

/* --- checks shared by both encodings ---------------------------------------------------- */

static tg_err take_device(struct tg_decoder *dec, const void *s, size_t len, struct canon *c)
{
    if (!tg_device_id_valid(s, len)) {
        char q[TG_CODEC_QUOTE_MAX];
        return tg_codec_fail(dec, TG_ERR_BAD_NAME,
                             "field \"device\": %s is not a device id [A-Za-z0-9_.-]{1,%d}",
                             tg_codec_quote(q, s, len), TG_DEVICE_ID_MAX);
    }
    c->device = tg_codec_strndup(dec, s, len);
    return c->device ? TG_OK : tg_codec_fail(dec, TG_ERR_INTERNAL, "decoder arena exhausted");
}

static tg_err take_gateway(struct tg_decoder *dec, const void *s, size_t len, struct canon *c)
{
    const char *problem = tg_codec_name_problem(s, len, TG_CANONICAL_GATEWAY_MAX);
    if (problem) {
        char q[TG_CODEC_QUOTE_MAX];
        if (len > TG_CANONICAL_GATEWAY_MAX)
            return tg_codec_fail(dec, TG_ERR_BAD_NAME,
                                 "field \"gateway\" is too long (%zu bytes, limit %d)", len,
                                 TG_CANONICAL_GATEWAY_MAX);
        return tg_codec_fail(dec, TG_ERR_BAD_NAME, "field \"gateway\": %s %s",
                             tg_codec_quote(q, s, len), problem);
    }
    c->gateway = tg_codec_strndup(dec, s, len);
    return c->gateway ? TG_OK : tg_codec_fail(dec, TG_ERR_INTERNAL, "decoder arena exhausted");
}

static tg_err take_metric(struct tg_canonical_decoder *cd, struct canon *c, const void *name,
                          size_t name_len, double value)
{
    struct tg_decoder *dec = cd->dec;
    char q[TG_CODEC_QUOTE_MAX];
    struct tg_metric *metric = &cd->metrics[c->n_metrics];
    tg_err err = tg_codec_take_name(dec, "metric name", name, name_len, &metric->name);
    if (err != TG_OK)
        return err;
    for (size_t i = 0; i < c->n_metrics; i++)
        if (strcmp(cd->metrics[i].name, metric->name) == 0)
            return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "metric %s appears twice",
                                 tg_codec_quote(q, name, name_len));
    if (!isfinite(value))
        return tg_codec_fail(dec, TG_ERR_NON_FINITE, "metric %s: value is %s",
                             tg_codec_quote(q, name, name_len), isnan(value) ? "NaN" : "infinite");
    metric->value = value;
    metric->unit = NULL;
    c->n_metrics++;
    return TG_OK;
}

static tg_err take_unit(struct tg_canonical_decoder *cd, struct canon *c, const char *name,
                        size_t name_len, const void *unit, size_t unit_len)
{
    struct tg_decoder *dec = cd->dec;
    char q[TG_CODEC_QUOTE_MAX];
    for (size_t i = 0; i < c->n_units; i++)
        if (cd->units[i].name_len == name_len && memcmp(cd->units[i].name, name, name_len) == 0)
            return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "field \"u\": metric %s twice",
                                 tg_codec_quote(q, name, name_len));
    struct unit_ref *u = &cd->units[c->n_units];
    tg_err err = tg_codec_take_name(dec, "unit", unit, unit_len, &u->unit);
    if (err != TG_OK)
        return err;
    u->name = name;
    u->name_len = name_len;
    c->n_units++;
    return TG_OK;
}

/* Every field present that must be, pairs complete, units matched with their metrics. */
static tg_err finish(struct tg_canonical_decoder *cd, const struct canon *c,
                     struct tg_reading *out, struct tg_canonical_extra *extra)
{
    struct tg_decoder *dec = cd->dec;
    static const enum field required[] = {F_DEVICE, F_TS, F_M};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(c->seen & (1u << required[i])))
            return tg_codec_fail(dec, TG_ERR_MISSING_FIELD, "missing required field \"%s\"",
                                 field_names[required[i]]);
    static const enum field pairs[][2] = {{F_BOOT, F_SEQ}, {F_GW_TS, F_GATEWAY}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        bool a = c->seen & (1u << pairs[i][0]), b = c->seen & (1u << pairs[i][1]);
        if (a != b)
            return tg_codec_fail(dec, TG_ERR_MISSING_FIELD,
                                 "field \"%s\" without field \"%s\"",
                                 field_names[pairs[i][a ? 0 : 1]],
                                 field_names[pairs[i][a ? 1 : 0]]);
    }
    for (size_t u = 0; u < c->n_units; u++) {
        const struct unit_ref *ur = &cd->units[u];
        size_t i;
        for (i = 0; i < c->n_metrics; i++)
            if (strlen(cd->metrics[i].name) == ur->name_len &&
                memcmp(cd->metrics[i].name, ur->name, ur->name_len) == 0)
                break;
        if (i == c->n_metrics) {
            char q[TG_CODEC_QUOTE_MAX];
            return tg_codec_fail(dec, TG_ERR_UNKNOWN_FIELD,
                                 "field \"u\": unit for %s, which is not a metric in \"m\"",
                                 tg_codec_quote(q, ur->name, ur->name_len));
        }
        cd->metrics[i].unit = ur->unit;
    }
    *out = (struct tg_reading){
        .device = c->device,
        .has_seq = (c->seen & (1u << F_SEQ)) != 0,
        .boot = c->boot,
        .seq = c->seq,
        .ts_ms = c->ts,
        .n_metrics = c->n_metrics,
        .metrics = cd->metrics,
    };
    if (extra)
        *extra = (struct tg_canonical_extra){.gateway = c->gateway, .gw_ts_ms = c->gw_ts};
    return TG_OK;
}

/* --- CBOR ------------------------------------------------------------------------------- */

static tg_err cbor_expect(struct tg_decoder *dec, struct tg_cbor_reader *rd, enum field f,
                          enum tg_cbor_kind kind, const char *want)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    if (rd->item.kind != kind)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "field \"%s\": expected %s, got %s",
                             field_names[f], want, tg_codec_cbor_kind_name(&rd->item));
    return TG_OK;
}

static tg_err cbor_int(struct tg_decoder *dec, struct tg_cbor_reader *rd, enum field f,
                       int64_t *out)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    if (rd->item.kind != TG_CBOR_UINT && rd->item.kind != TG_CBOR_NEGINT)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "field \"%s\": expected integer, got %s",
                             field_names[f], tg_codec_cbor_kind_name(&rd->item));
    if (rd->item.u > INT64_MAX)
        return tg_codec_fail(dec, TG_ERR_OUT_OF_RANGE,
                             "field \"%s\": integer outside the 64-bit signed range",
                             field_names[f]);
    *out = rd->item.kind == TG_CBOR_UINT ? (int64_t)rd->item.u : -1 - (int64_t)rd->item.u;
    return TG_OK;
}

static tg_err cbor_map_header(struct tg_canonical_decoder *cd, struct tg_cbor_reader *rd,
                              enum field f)
{
    struct tg_decoder *dec = cd->dec;
    tg_err err = cbor_expect(dec, rd, f, TG_CBOR_MAP, "map");
    if (err != TG_OK)
        return err;
    if (rd->item.u > dec->limits.max_metrics)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY, "field \"%s\": %llu entries exceed the limit "
                             "of %u metrics", field_names[f],
                             (unsigned long long)rd->item.u, dec->limits.max_metrics);
    return TG_OK;
}

static tg_err cbor_metrics(struct tg_canonical_decoder *cd, struct tg_cbor_reader *rd,
                           struct canon *c)
{
    struct tg_decoder *dec = cd->dec;
    tg_err err = cbor_map_header(cd, rd, F_M);
    if (err != TG_OK)
        return err;
    size_t n = (size_t)rd->item.u;
    char q[TG_CODEC_QUOTE_MAX];
    for (size_t i = 0; i < n; i++) {
        if ((err = cbor_expect(dec, rd, F_M, TG_CBOR_TEXT, "text metric names")) != TG_OK)
            return err;
        const uint8_t *name = rd->item.str;
        size_t name_len = rd->item.len;
        if ((err = tg_codec_cbor_next(dec, rd)) != TG_OK)
            return err;
        double value;
        if (!tg_codec_cbor_number(&rd->item, &value))
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "metric %s: expected number, got %s",
                                 tg_codec_quote(q, name, name_len),
                                 tg_codec_cbor_kind_name(&rd->item));
        if ((err = take_metric(cd, c, name, name_len, value)) != TG_OK)
            return err;
    }
    return TG_OK;
}

static tg_err cbor_units(struct tg_canonical_decoder *cd, struct tg_cbor_reader *rd,
                         struct canon *c)
{
    struct tg_decoder *dec = cd->dec;
    tg_err err = cbor_map_header(cd, rd, F_U);
    if (err != TG_OK)
        return err;
    size_t n = (size_t)rd->item.u;
    for (size_t i = 0; i < n; i++) {
        if ((err = cbor_expect(dec, rd, F_U, TG_CBOR_TEXT, "text metric names")) != TG_OK)
            return err;
        const char *name = (const char *)rd->item.str;
        size_t name_len = rd->item.len;
        if ((err = cbor_expect(dec, rd, F_U, TG_CBOR_TEXT, "text units")) != TG_OK)
            return err;
        if ((err = take_unit(cd, c, name, name_len, rd->item.str, rd->item.len)) != TG_OK)
            return err;
    }
    return TG_OK;
}

static tg_err decode_cbor(struct tg_canonical_decoder *cd, const uint8_t *buf, size_t len,
                          struct canon *c)
{
    struct tg_decoder *dec = cd->dec;
    size_t start = 0;
    if (len > sizeof self_describe && memcmp(buf, self_describe, sizeof self_describe) == 0)
        start = sizeof self_describe;
    struct tg_cbor_reader rd = {.buf = buf, .len = len, .pos = start};
    char q[TG_CODEC_QUOTE_MAX];
    tg_err err = tg_codec_cbor_next(dec, &rd);
    if (err != TG_OK)
        return err;
    if (rd.item.kind != TG_CBOR_MAP)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "canonical record: expected a map, got %s",
                             tg_codec_cbor_kind_name(&rd.item));
    uint64_t n_entries = rd.item.u;
    for (uint64_t i = 0; i < n_entries; i++) {
        if ((err = tg_codec_cbor_next(dec, &rd)) != TG_OK)
            return err;
        if (rd.item.kind != TG_CBOR_TEXT)
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                 "canonical record: keys must be text strings, got %s",
                                 tg_codec_cbor_kind_name(&rd.item));
        int f = field_lookup(rd.item.str, rd.item.len);
        if (f < 0)
            return tg_codec_fail(dec, TG_ERR_UNKNOWN_FIELD, "unknown field %s",
                                 tg_codec_quote(q, rd.item.str, rd.item.len));
        if (c->seen & (1u << f))
            return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "field \"%s\" appears twice",
                                 field_names[f]);
        c->seen |= 1u << f;
        switch ((enum field)f) {
        case F_DEVICE:
            err = cbor_expect(dec, &rd, F_DEVICE, TG_CBOR_TEXT, "text string");
            if (err == TG_OK)
                err = take_device(dec, rd.item.str, rd.item.len, c);
            break;
        case F_BOOT:
        case F_SEQ:
            err = cbor_expect(dec, &rd, (enum field)f, TG_CBOR_UINT, "unsigned integer");
            if (err == TG_OK)
                *(f == F_BOOT ? &c->boot : &c->seq) = rd.item.u;
            break;
        case F_TS:
            err = cbor_int(dec, &rd, F_TS, &c->ts);
            break;
        case F_GW_TS:
            err = cbor_int(dec, &rd, F_GW_TS, &c->gw_ts);
            break;
        case F_GATEWAY:
            err = cbor_expect(dec, &rd, F_GATEWAY, TG_CBOR_TEXT, "text string");
            if (err == TG_OK)
                err = take_gateway(dec, rd.item.str, rd.item.len, c);
            break;
        case F_M:
            err = cbor_metrics(cd, &rd, c);
            break;
        case F_U:
            err = cbor_units(cd, &rd, c);
            break;
        case F__COUNT:
            err = tg_codec_fail(dec, TG_ERR_INTERNAL, "unexpected field");
            break;
        }
        if (err != TG_OK)
            return err;
    }
    if (rd.pos != len)
        return tg_codec_fail(dec, TG_ERR_TRAILING_BYTES,
                             "%zu bytes follow the record's map (which ends at offset %zu)",
                             len - rd.pos, rd.pos);
    return TG_OK;
}

/* --- JSON ------------------------------------------------------------------------------- */

static tg_err json_wrong(struct tg_decoder *dec, enum field f, const char *want,
                         const json_t *value)
{
    return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "field \"%s\": expected %s, got %s",
                         field_names[f], want, tg_codec_json_type_name(value));
}

static tg_err json_object_field(struct tg_decoder *dec, enum field f, const json_t *value)
{
    if (!json_is_object(value))
        return json_wrong(dec, f, "object", value);
    if (json_object_size(value) > dec->limits.max_metrics)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY,
                             "field \"%s\": %zu entries exceed the limit of %u metrics",
                             field_names[f], json_object_size(value), dec->limits.max_metrics);
    return TG_OK;
}

static tg_err json_field(struct tg_canonical_decoder *cd, enum field f, json_t *value,
                         struct canon *c)
{
    struct tg_decoder *dec = cd->dec;
    char q[TG_CODEC_QUOTE_MAX];
    const char *key;
    size_t key_len;
    json_t *v;
    tg_err err;
    switch (f) {
    case F_DEVICE:
        if (!json_is_string(value))
            return json_wrong(dec, f, "string", value);
        return take_device(dec, json_string_value(value), json_string_length(value), c);
    case F_BOOT:
    case F_SEQ:
        if (!json_is_integer(value) || json_integer_value(value) < 0)
            return json_wrong(dec, f, "unsigned integer", value);
        *(f == F_BOOT ? &c->boot : &c->seq) = (uint64_t)json_integer_value(value);
        return TG_OK;
    case F_TS:
    case F_GW_TS:
        if (!json_is_integer(value))
            return json_wrong(dec, f, "integer", value);
        *(f == F_TS ? &c->ts : &c->gw_ts) = json_integer_value(value);
        return TG_OK;
    case F_GATEWAY:
        if (!json_is_string(value))
            return json_wrong(dec, f, "string", value);
        return take_gateway(dec, json_string_value(value), json_string_length(value), c);
    case F_M:
        if ((err = json_object_field(dec, f, value)) != TG_OK)
            return err;
        json_object_keylen_foreach(value, key, key_len, v) {
            if (!json_is_number(v))
                return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                     "metric %s: expected number, got %s",
                                     tg_codec_quote(q, key, key_len), tg_codec_json_type_name(v));
            if ((err = take_metric(cd, c, key, key_len, json_number_value(v))) != TG_OK)
                return err;
        }
        return TG_OK;
    case F_U:
        if ((err = json_object_field(dec, f, value)) != TG_OK)
            return err;
        json_object_keylen_foreach(value, key, key_len, v) {
            if (!json_is_string(v))
                return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                     "field \"u\": unit of %s: expected string, got %s",
                                     tg_codec_quote(q, key, key_len), tg_codec_json_type_name(v));
            err = take_unit(cd, c, key, key_len, json_string_value(v), json_string_length(v));
            if (err != TG_OK)
                return err;
        }
        return TG_OK;
    case F__COUNT:
        break;
    }
    return tg_codec_fail(dec, TG_ERR_INTERNAL, "unexpected field");
}

/* The units' names point into the document: finish() must run before it is freed. */
static tg_err decode_json(struct tg_canonical_decoder *cd, const uint8_t *buf, size_t len,
                          struct canon *c, struct tg_reading *out,
                          struct tg_canonical_extra *extra)
{
    struct tg_decoder *dec = cd->dec;
    json_t *root;
    tg_err err = tg_codec_json_load(dec, buf, len, &root);
    if (err != TG_OK)
        return err;
    char q[TG_CODEC_QUOTE_MAX];
    const char *key;
    size_t key_len;
    json_t *value;
    if (!json_is_object(root)) {
        err = tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "canonical record: expected an object, got %s",
                            tg_codec_json_type_name(root));
        goto cleanup;
    }
    /* jansson has rejected duplicate keys already */
    json_object_keylen_foreach(root, key, key_len, value) {
        int f = field_lookup(key, key_len);
        if (f < 0) {
            err = tg_codec_fail(dec, TG_ERR_UNKNOWN_FIELD, "unknown field %s",
                                tg_codec_quote(q, key, key_len));
            goto cleanup;
        }
        c->seen |= 1u << f;
        if ((err = json_field(cd, (enum field)f, value, c)) != TG_OK)
            goto cleanup;
    }
    err = finish(cd, c, out, extra);
cleanup:
    json_decref(root);
    return err;
}

/* --- entry point ------------------------------------------------------------------------ */

static bool is_json_space(uint8_t b)
{
    return b == ' ' || b == '\t' || b == '\n' || b == '\r';
}

tg_err tg_canonical_decode(struct tg_canonical_decoder *cd, const uint8_t *buf, size_t len,
                           int cbor, struct tg_reading *out, struct tg_canonical_extra *extra)
{
    struct tg_decoder *dec = cd->dec;
    memset(out, 0, sizeof *out);
    if (extra)
        memset(extra, 0, sizeof *extra);
    dec->err[0] = '\0';
    dec->arena_used = 0;
    tg_err err;
    struct canon c = {0};
    if (len > dec->limits.max_payload_bytes) {
        err = tg_codec_fail(dec, TG_ERR_TOO_LARGE, "record of %zu bytes exceeds the limit of %zu",
                            len, dec->limits.max_payload_bytes);
    } else if (len == 0) {
        err = tg_codec_fail(dec, TG_ERR_MALFORMED, "empty record");
    } else {
        if (cbor < 0) {
            size_t i = 0;
            while (i < len && is_json_space(buf[i]))
                i++;
            cbor = !(i < len && buf[i] == '{');
        }
        if (cbor) {
            err = decode_cbor(cd, buf, len, &c);
            if (err == TG_OK)
                err = finish(cd, &c, out, extra);
        } else {
            err = decode_json(cd, buf, len, &c, out, extra);
        }
    }
    if (err != TG_OK) {
        memset(out, 0, sizeof *out);
        if (extra)
            memset(extra, 0, sizeof *extra);
        if (!dec->err[0])
            tg_codec_fail(dec, err, "%s", tg_strerror(err));
    }
    return err;
}
