/*
 * codec_native.c - the native device payload: CBOR and JSON decoding. The format and the
 * signature are defined in codec_native.h; encoding and signing are in codec_native_encode.c,
 * which the firmware links without the decoder.
 */
#include <cbor.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "codec_read.h"
#include "codec_native.h"

enum field { F_SEQ, F_BOOT, F_TS, F_M, F_SIG, F__COUNT };

static const char *const field_names[F__COUNT] = {"seq", "boot", "ts", "m", "sig"};

static int field_lookup(const void *key, size_t len)
{
    for (int f = 0; f < F__COUNT; f++)
        if (strlen(field_names[f]) == len && memcmp(field_names[f], key, len) == 0)
            return f;
    return -1;
}

/* The fields of a native payload while it is being read. */
struct native {
    unsigned seen; /* bit per enum field */
    uint64_t seq, boot, ts;
    size_t n_metrics;
    const uint8_t *sig;
    size_t sig_key_start, sig_end; /* CBOR: the "sig" pair is buf[sig_key_start..sig_end) */
};

/* Names are compared after validation, so they hold no NUL. n is at most max_metrics. */
static bool name_seen(const struct tg_metric *metrics, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(metrics[i].name, name) == 0)
            return true;
    return false;
}

static tg_err check_value(struct tg_decoder *dec, const char *name, double value)
{
    if (isfinite(value))
        return TG_OK;
    char q[TG_CODEC_QUOTE_MAX];
    return tg_codec_fail(dec, TG_ERR_NON_FINITE, "metric %s: value is %s",
                         tg_codec_quote(q, name, strlen(name)),
                         isnan(value) ? "NaN" : "infinite");
}

static tg_err fill_reading(struct tg_decoder *dec, const struct native *nat, struct tg_decoded *out)
{
    static const enum field required[] = {F_SEQ, F_BOOT, F_TS, F_M};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(nat->seen & (1u << required[i])))
            return tg_codec_fail(dec, TG_ERR_MISSING_FIELD, "missing required field \"%s\"",
                                 field_names[required[i]]);
    struct tg_reading *rdg = &dec->readings[0];
    rdg->device = dec->device;
    rdg->has_seq = true;
    rdg->boot = nat->boot;
    rdg->seq = nat->seq;
    rdg->ts_ms = (int64_t)nat->ts;
    rdg->n_metrics = nat->n_metrics;
    rdg->metrics = dec->metrics;
    out->readings = dec->readings;
    out->n_readings = 1;
    return TG_OK;
}

/* --- CBOR ------------------------------------------------------------------------------- */

static tg_err cbor_uint_field(struct tg_decoder *dec, struct tg_cbor_reader *rd, enum field f,
                              uint64_t *value)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    if (rd->item.kind != TG_CBOR_UINT)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                             "field \"%s\": expected unsigned integer, got %s", field_names[f],
                             tg_codec_cbor_kind_name(&rd->item));
    *value = rd->item.u;
    return TG_OK;
}

static tg_err cbor_metrics(struct tg_decoder *dec, struct tg_cbor_reader *rd, struct native *nat)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    if (rd->item.kind != TG_CBOR_MAP)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "field \"m\": expected map, got %s",
                             tg_codec_cbor_kind_name(&rd->item));
    if (rd->item.u > dec->limits.max_metrics)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY,
                             "field \"m\": %llu metrics exceed the limit of %u",
                             (unsigned long long)rd->item.u, dec->limits.max_metrics);
    size_t n = (size_t)rd->item.u;
    char q[TG_CODEC_QUOTE_MAX];
    for (size_t i = 0; i < n; i++) {
        if ((err = tg_codec_cbor_next(dec, rd)) != TG_OK)
            return err;
        if (rd->item.kind != TG_CBOR_TEXT)
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                 "field \"m\": metric names must be text strings, got %s",
                                 tg_codec_cbor_kind_name(&rd->item));
        struct tg_metric *metric = &dec->metrics[i];
        const uint8_t *key = rd->item.str;
        size_t key_len = rd->item.len;
        if ((err = tg_codec_take_name(dec, "metric name", key, key_len, &metric->name)) != TG_OK)
            return err;
        if (name_seen(dec->metrics, i, metric->name))
            return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "metric %s appears twice",
                                 tg_codec_quote(q, key, key_len));
        metric->unit = NULL;
        if ((err = tg_codec_cbor_next(dec, rd)) != TG_OK)
            return err;
        if (!tg_codec_cbor_number(&rd->item, &metric->value))
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "metric %s: expected number, got %s",
                                 tg_codec_quote(q, key, key_len),
                                 tg_codec_cbor_kind_name(&rd->item));
        if ((err = check_value(dec, metric->name, metric->value)) != TG_OK)
            return err;
    }
    nat->n_metrics = n;
    return TG_OK;
}

/* M' of codec_native.h: the map header for one entry fewer, then every pair but "sig". */
static tg_err build_signed_bytes(struct tg_decoder *dec, const uint8_t *buf, size_t entries_start,
                                 size_t end, uint64_t n_entries, const struct native *nat,
                                 struct tg_decoded *out)
{
    uint8_t header[9];
    size_t header_len = cbor_encode_map_start((size_t)(n_entries - 1), header, sizeof header);
    size_t before = nat->sig_key_start - entries_start, after = end - nat->sig_end;
    uint8_t *m = tg_codec_alloc(dec, header_len + before + after);
    if (!m || header_len == 0)
        return tg_codec_fail(dec, TG_ERR_INTERNAL, "decoder arena exhausted");
    memcpy(m, header, header_len);
    memcpy(m + header_len, buf + entries_start, before);
    memcpy(m + header_len + before, buf + nat->sig_end, after);
    out->sig = nat->sig;
    out->signed_bytes = m;
    out->signed_len = header_len + before + after;
    return TG_OK;
}

tg_err tg_codec_native_cbor(struct tg_decoder *dec, const uint8_t *buf, size_t len, size_t start,
                            struct tg_decoded *out)
{
    struct tg_cbor_reader rd = {.buf = buf, .len = len, .pos = start};
    struct native nat = {0};
    char q[TG_CODEC_QUOTE_MAX];
    tg_err err = tg_codec_cbor_next(dec, &rd);
    if (err != TG_OK)
        return err;
    if (rd.item.kind != TG_CBOR_MAP)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "native payload: expected a map, got %s",
                             tg_codec_cbor_kind_name(&rd.item));
    uint64_t n_entries = rd.item.u;
    size_t entries_start = rd.pos;
    for (uint64_t i = 0; i < n_entries; i++) {
        if ((err = tg_codec_cbor_next(dec, &rd)) != TG_OK)
            return err;
        if (rd.item.kind != TG_CBOR_TEXT)
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                 "native payload: keys must be text strings, got %s",
                                 tg_codec_cbor_kind_name(&rd.item));
        int f = field_lookup(rd.item.str, rd.item.len);
        if (f < 0)
            return tg_codec_fail(dec, TG_ERR_UNKNOWN_FIELD, "unknown field %s",
                                 tg_codec_quote(q, rd.item.str, rd.item.len));
        if (nat.seen & (1u << f))
            return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "field \"%s\" appears twice",
                                 field_names[f]);
        nat.seen |= 1u << f;
        size_t key_start = rd.item.start;
        switch ((enum field)f) {
        case F_SEQ:
            err = cbor_uint_field(dec, &rd, F_SEQ, &nat.seq);
            break;
        case F_BOOT:
            err = cbor_uint_field(dec, &rd, F_BOOT, &nat.boot);
            break;
        case F_TS:
            err = cbor_uint_field(dec, &rd, F_TS, &nat.ts);
            if (err == TG_OK && nat.ts > INT64_MAX)
                err = tg_codec_fail(dec, TG_ERR_OUT_OF_RANGE,
                                    "field \"ts\": %llu ms is beyond the year 292 million",
                                    (unsigned long long)nat.ts);
            break;
        case F_M:
            err = cbor_metrics(dec, &rd, &nat);
            break;
        case F_SIG:
            if ((err = tg_codec_cbor_next(dec, &rd)) != TG_OK)
                break;
            if (rd.item.kind != TG_CBOR_BYTES)
                err = tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                    "field \"sig\": expected byte string, got %s",
                                    tg_codec_cbor_kind_name(&rd.item));
            else if (rd.item.len != TG_SIG_LEN)
                err = tg_codec_fail(dec, TG_ERR_BAD_SIGNATURE,
                                    "field \"sig\": expected %d bytes (HMAC-SHA256), got %zu",
                                    TG_SIG_LEN, rd.item.len);
            nat.sig = rd.item.str;
            nat.sig_key_start = key_start;
            nat.sig_end = rd.pos;
            break;
        case F__COUNT:
            break;
        }
        if (err != TG_OK)
            return err;
    }
    if (rd.pos != len)
        return tg_codec_fail(dec, TG_ERR_TRAILING_BYTES,
                             "%zu bytes follow the payload's map (which ends at offset %zu)",
                             len - rd.pos, rd.pos);
    if ((err = fill_reading(dec, &nat, out)) != TG_OK)
        return err;
    if (nat.sig)
        return build_signed_bytes(dec, buf, entries_start, len, n_entries, &nat, out);
    return TG_OK;
}

/* --- JSON ------------------------------------------------------------------------------- */

static tg_err json_uint_field(struct tg_decoder *dec, const json_t *value, enum field f,
                              uint64_t *out)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                             "field \"%s\": expected unsigned integer, got %s", field_names[f],
                             tg_codec_json_type_name(value));
    *out = (uint64_t)json_integer_value(value);
    return TG_OK;
}

static tg_err json_metrics(struct tg_decoder *dec, const json_t *m, struct native *nat)
{
    if (!json_is_object(m))
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "field \"m\": expected object, got %s",
                             tg_codec_json_type_name(m));
    if (json_object_size(m) > dec->limits.max_metrics)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY, "field \"m\": %zu metrics exceed the limit of %u",
                             json_object_size(m), dec->limits.max_metrics);
    const char *key;
    size_t key_len, i = 0;
    json_t *value;
    char q[TG_CODEC_QUOTE_MAX];
    /* jansson keeps object keys in document order, and has rejected duplicates already */
    json_object_keylen_foreach((json_t *)m, key, key_len, value) {
        struct tg_metric *metric = &dec->metrics[i];
        tg_err err = tg_codec_take_name(dec, "metric name", key, key_len, &metric->name);
        if (err != TG_OK)
            return err;
        metric->unit = NULL;
        if (!json_is_number(value))
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "metric %s: expected number, got %s",
                                 tg_codec_quote(q, key, key_len), tg_codec_json_type_name(value));
        metric->value = json_number_value(value);
        if ((err = check_value(dec, metric->name, metric->value)) != TG_OK)
            return err;
        i++;
    }
    nat->n_metrics = i;
    return TG_OK;
}

static tg_err native_json_root(struct tg_decoder *dec, const json_t *root, struct native *nat)
{
    if (!json_is_object(root))
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "native payload: expected an object, got %s",
                             tg_codec_json_type_name(root));
    if (json_object_get(root, "sig"))
        return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                             "field \"sig\": signed payloads must be CBOR (a JSON payload cannot "
                             "carry a signature)");
    const char *key;
    size_t key_len;
    json_t *value;
    char q[TG_CODEC_QUOTE_MAX];
    json_object_keylen_foreach((json_t *)root, key, key_len, value) {
        int f = field_lookup(key, key_len);
        if (f < 0)
            return tg_codec_fail(dec, TG_ERR_UNKNOWN_FIELD, "unknown field %s",
                                 tg_codec_quote(q, key, key_len));
        tg_err err = TG_OK;
        switch ((enum field)f) {
        case F_SEQ:
            err = json_uint_field(dec, value, F_SEQ, &nat->seq);
            break;
        case F_BOOT:
            err = json_uint_field(dec, value, F_BOOT, &nat->boot);
            break;
        case F_TS: /* jansson integers are int64: a JSON ts is always within range */
            err = json_uint_field(dec, value, F_TS, &nat->ts);
            break;
        case F_M:
            err = json_metrics(dec, value, nat);
            break;
        case F_SIG: /* refused above */
        case F__COUNT:
            err = tg_codec_fail(dec, TG_ERR_INTERNAL, "unexpected field");
            break;
        }
        if (err != TG_OK)
            return err;
        nat->seen |= 1u << f;
    }
    return TG_OK;
}

tg_err tg_codec_native_json(struct tg_decoder *dec, const uint8_t *buf, size_t len,
                            struct tg_decoded *out)
{
    json_t *root;
    tg_err err = tg_codec_json_load(dec, buf, len, &root);
    if (err != TG_OK)
        return err;
    struct native nat = {0};
    err = native_json_root(dec, root, &nat);
    if (err == TG_OK)
        err = fill_reading(dec, &nat, out);
    json_decref(root);
    return err;
}

