/*
 * codec_senml.c - SenML (RFC 8428) packs, JSON and CBOR, decoded into readings.
 *
 * Mapping onto the record model:
 *  - each record with a value becomes one metric, named by its "n" (the base name "bn" is
 *    not prepended: the device is already known from the topic); a record without "n" is
 *    named by the base name in force;
 *  - its time is resolved as bt + t seconds (fractions kept to the millisecond); a resolved
 *    time below 2^28 s is relative to now_ms (RFC 8428 4.5.3), so a missing t means "now";
 *  - records with the same resolved time form one reading, readings in order of first
 *    appearance, metrics within a reading in pack order; SenML readings have no boot/seq;
 *  - "v" plus the base value "bv" is the value; "vb" becomes 1 or 0; "vs", "vd" and the
 *    sum fields "s"/"bs" are rejected as unsupported, so nothing is silently dropped;
 *  - the unit is "u", else the base unit "bu" in force, kept in tg_metric.unit;
 *  - base fields carry forward to later records until replaced (RFC 8428 4.1);
 *  - a record with base fields only contributes nothing; any other record needs exactly one
 *    value; unknown labels are ignored unless they end in '_' (must-understand, 4.4).
 * CBOR packs use the integer labels of RFC 8428 Table 4; the JSON names are accepted as text
 * labels in CBOR too.
 */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "codec_read.h"

/* SenML times below 2^28 seconds are relative to the current time (RFC 8428 4.5.3). */
#define RELATIVE_TIME_LIMIT_S 268435456.0
/* The highest SenML version this decoder understands (RFC 8428 4.4). */
#define SENML_VERSION 10
/* Resolved times must land in [0, 2^62) ms: far beyond any clock, and safe from overflow. */
#define MAX_TIME_MS 4611686018427387904.0

enum label {
    L_BVER, L_BN, L_BT, L_BU, L_BV, L_BS, L_N, L_U, L_V, L_VS, L_VB, L_S, L_T, L_UT, L_VD,
    L__COUNT
};

enum label_type { T_TEXT, T_NUMBER, T_INTEGER, T_BOOL, T_DATA };

static const struct {
    const char *name;
    int cbor;
    enum label_type type;
} labels[L__COUNT] = {
    [L_BVER] = {"bver", -1, T_INTEGER}, [L_BN] = {"bn", -2, T_TEXT},
    [L_BT] = {"bt", -3, T_NUMBER},      [L_BU] = {"bu", -4, T_TEXT},
    [L_BV] = {"bv", -5, T_NUMBER},      [L_BS] = {"bs", -6, T_NUMBER},
    [L_N] = {"n", 0, T_TEXT},           [L_U] = {"u", 1, T_TEXT},
    [L_V] = {"v", 2, T_NUMBER},         [L_VS] = {"vs", 3, T_TEXT},
    [L_VB] = {"vb", 4, T_BOOL},         [L_S] = {"s", 5, T_NUMBER},
    [L_T] = {"t", 6, T_NUMBER},         [L_UT] = {"ut", 7, T_NUMBER},
    [L_VD] = {"vd", 8, T_DATA},
};

static const char *const type_names[] = {
    [T_TEXT] = "text string", [T_NUMBER] = "number", [T_INTEGER] = "integer",
    [T_BOOL] = "boolean",     [T_DATA] = "byte string",
};

#define BIT(l) (1u << (l))
#define BASE_LABELS (BIT(L_BVER) | BIT(L_BN) | BIT(L_BT) | BIT(L_BU) | BIT(L_BV) | BIT(L_BS))
#define VALUE_LABELS (BIT(L_V) | BIT(L_VS) | BIT(L_VB) | BIT(L_VD) | BIT(L_S))

struct text {
    const char *s; /* inside the payload or the JSON document: not NUL-terminated */
    size_t len;
};

/* One record's fields as read, before base values are applied. */
struct record {
    unsigned present; /* BIT(label) */
    struct text bn, bu, n, u;
    double bt, bv, t, v;
    bool vb;
    int64_t bver;
};

/* Base values in force (RFC 8428 4.1), carried from record to record. */
struct base {
    struct text bn, bu;
    const char *bn_copy, *bu_copy; /* arena copies, made once when first needed */
    double bt, bv;
};

static int label_by_name(const void *name, size_t len)
{
    for (int l = 0; l < L__COUNT; l++)
        if (strlen(labels[l].name) == len && memcmp(labels[l].name, name, len) == 0)
            return l;
    return -1;
}

static int label_by_number(int64_t number)
{
    for (int l = 0; l < L__COUNT; l++)
        if (labels[l].cbor == number)
            return l;
    return -1;
}

/* Labels the pack uses that this decoder does not: an error for must-understand ones. */
static tg_err unknown_label(struct tg_decoder *dec, size_t index, const void *name, size_t len)
{
    if (len == 0 || ((const char *)name)[len - 1] != '_')
        return TG_OK;
    char q[TG_CODEC_QUOTE_MAX];
    return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                         "record %zu: must-understand label %s is not supported", index,
                         tg_codec_quote(q, name, len));
}

static tg_err unsupported_value(struct tg_decoder *dec, size_t index, enum label label)
{
    const char *what = label == L_VS   ? "string values (vs)"
                       : label == L_VD ? "data values (vd)"
                       : label == L_S  ? "sums (s)"
                                       : "base sums (bs)";
    return tg_codec_fail(dec, TG_ERR_UNSUPPORTED, "record %zu: SenML %s are not supported", index,
                         what);
}

static tg_err finite_number(struct tg_decoder *dec, size_t index, enum label label, double value,
                            double *out)
{
    if (!isfinite(value))
        return tg_codec_fail(dec, TG_ERR_NON_FINITE, "record %zu: label \"%s\" is %s", index,
                             labels[label].name, isnan(value) ? "NaN" : "infinite");
    *out = value;
    return TG_OK;
}

/* Takes a string copied once into the arena, keeping the copy for the records that follow. */
static tg_err cached_name(struct tg_decoder *dec, const char *what, const struct text *text,
                          const char **copy)
{
    if (*copy)
        return TG_OK;
    return tg_codec_take_name(dec, what, text->s, text->len, copy);
}

/* Applies one record to the base values and, when it carries a value, adds its row. */
/* Stores a text field (bn, bu, n or u) of a record, from either encoding. */
static void set_text(struct record *rec, enum label label, struct text text)
{
    if (label == L_BN)
        rec->bn = text;
    else if (label == L_BU)
        rec->bu = text;
    else if (label == L_N)
        rec->n = text;
    else if (label == L_U)
        rec->u = text;
}

static tg_err apply_record(struct tg_decoder *dec, struct base *base, const struct record *rec,
                           size_t index, int64_t now_ms, size_t *n_rows)
{
    unsigned p = rec->present;
    if ((p & BIT(L_BVER)) && rec->bver > SENML_VERSION)
        return tg_codec_fail(dec, TG_ERR_UNSUPPORTED,
                             "record %zu: SenML version %lld is not supported (highest is %d)",
                             index, (long long)rec->bver, SENML_VERSION);
    if (p & BIT(L_BN)) {
        base->bn = rec->bn;
        base->bn_copy = NULL;
    }
    if (p & BIT(L_BU)) {
        base->bu = rec->bu;
        base->bu_copy = NULL;
    }
    if (p & BIT(L_BT))
        base->bt = rec->bt;
    if (p & BIT(L_BV))
        base->bv = rec->bv;

    unsigned values = p & VALUE_LABELS;
    if (values == 0) {
        if (p & ~BASE_LABELS)
            return tg_codec_fail(dec, TG_ERR_MISSING_FIELD,
                                 "record %zu: no value (\"v\" or \"vb\")", index);
        return TG_OK; /* base fields only */
    }
    if (values & (values - 1))
        return tg_codec_fail(dec, TG_ERR_MALFORMED, "record %zu: more than one value field",
                             index);
    if (*n_rows == dec->rows_cap)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY, "record %zu: pack holds more than %zu metrics",
                             index, dec->rows_cap);
    struct tg_codec_row *row = &dec->rows[*n_rows];
    struct tg_metric *metric = &row->metric;
    tg_err err;

    if (rec->n.len > 0) {
        err = tg_codec_take_name(dec, "metric name", rec->n.s, rec->n.len, &metric->name);
    } else if (base->bn.len > 0) {
        err = cached_name(dec, "metric name (from \"bn\")", &base->bn, &base->bn_copy);
        metric->name = base->bn_copy;
    } else {
        err = tg_codec_fail(dec, TG_ERR_BAD_NAME, "record %zu: no name (\"n\" or \"bn\")", index);
    }
    if (err != TG_OK)
        return err;

    metric->unit = NULL;
    if (rec->u.len > 0) {
        err = tg_codec_take_name(dec, "unit", rec->u.s, rec->u.len, &metric->unit);
    } else if (base->bu.len > 0) {
        err = cached_name(dec, "unit (from \"bu\")", &base->bu, &base->bu_copy);
        metric->unit = base->bu_copy;
    }
    if (err != TG_OK)
        return err;

    char q[TG_CODEC_QUOTE_MAX];
    if (values & BIT(L_V)) {
        metric->value = base->bv + rec->v;
        if (!isfinite(metric->value))
            return tg_codec_fail(dec, TG_ERR_NON_FINITE,
                                 "record %zu: metric %s: bv + v is infinite", index,
                                 tg_codec_quote(q, metric->name, strlen(metric->name)));
    } else {
        metric->value = rec->vb ? 1.0 : 0.0;
    }

    double time_s = base->bt + ((p & BIT(L_T)) ? rec->t : 0.0);
    double time_ms = time_s < RELATIVE_TIME_LIMIT_S ? (double)now_ms + time_s * 1000.0
                                                    : time_s * 1000.0;
    time_ms = nearbyint(time_ms);
    if (!(time_ms >= 0 && time_ms < MAX_TIME_MS))
        return tg_codec_fail(dec, TG_ERR_OUT_OF_RANGE,
                             "record %zu: resolved time %.17g s is out of range", index, time_s);
    row->ts_ms = (int64_t)time_ms;
    (*n_rows)++;
    return TG_OK;
}

/* Groups the rows into readings by resolved time and checks the per-reading limits. */
static tg_err group_rows(struct tg_decoder *dec, size_t n_rows, struct tg_decoded *out)
{
    if (n_rows == 0)
        return tg_codec_fail(dec, TG_ERR_MISSING_FIELD, "SenML pack holds no measurement");
    size_t n_readings = 0;
    for (size_t i = 0; i < n_rows; i++) {
        struct tg_codec_row *row = &dec->rows[i];
        size_t r = 0;
        while (r < n_readings && dec->readings[r].ts_ms != row->ts_ms)
            r++;
        if (r == n_readings) {
            if (n_readings == dec->limits.max_readings)
                return tg_codec_fail(dec, TG_ERR_TOO_MANY,
                                     "SenML pack has more than %u distinct times (readings)",
                                     dec->limits.max_readings);
            struct tg_reading *rdg = &dec->readings[n_readings++];
            memset(rdg, 0, sizeof *rdg);
            rdg->device = dec->device;
            rdg->has_seq = false;
            rdg->ts_ms = row->ts_ms;
        }
        row->reading = r;
        if (++dec->readings[r].n_metrics > dec->limits.max_metrics)
            return tg_codec_fail(dec, TG_ERR_TOO_MANY,
                                 "SenML pack has more than %u metrics at time %lld ms",
                                 dec->limits.max_metrics, (long long)row->ts_ms);
    }
    /* Lay the metrics out reading by reading, keeping pack order within each. */
    size_t offset = 0;
    for (size_t r = 0; r < n_readings; r++) {
        dec->readings[r].metrics = dec->metrics + offset;
        offset += dec->readings[r].n_metrics;
        dec->readings[r].n_metrics = 0;
    }
    char q[TG_CODEC_QUOTE_MAX];
    for (size_t i = 0; i < n_rows; i++) {
        struct tg_reading *rdg = &dec->readings[dec->rows[i].reading];
        struct tg_metric *slot = (struct tg_metric *)rdg->metrics;
        const char *name = dec->rows[i].metric.name;
        for (size_t k = 0; k < rdg->n_metrics; k++)
            if (strcmp(slot[k].name, name) == 0)
                return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD,
                                     "metric %s appears twice at time %lld ms",
                                     tg_codec_quote(q, name, strlen(name)),
                                     (long long)rdg->ts_ms);
        slot[rdg->n_metrics++] = dec->rows[i].metric;
    }
    out->readings = dec->readings;
    out->n_readings = n_readings;
    return TG_OK;
}

static tg_err label_twice(struct tg_decoder *dec, size_t index, enum label label)
{
    return tg_codec_fail(dec, TG_ERR_DUPLICATE_FIELD, "record %zu: label \"%s\" appears twice",
                         index, labels[label].name);
}

static tg_err wrong_type(struct tg_decoder *dec, size_t index, enum label label, const char *got)
{
    return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "record %zu: label \"%s\": expected %s, got %s",
                         index, labels[label].name, type_names[labels[label].type], got);
}

/* --- CBOR ------------------------------------------------------------------------------- */

static tg_err cbor_value(struct tg_decoder *dec, struct tg_cbor_reader *rd, size_t index,
                         enum label label, struct record *rec)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    const struct tg_cbor_item *item = &rd->item;
    const char *got = tg_codec_cbor_kind_name(item);
    double number;
    switch (labels[label].type) {
    case T_TEXT:
        if (item->kind != TG_CBOR_TEXT)
            return wrong_type(dec, index, label, got);
        struct text text = {(const char *)item->str, item->len};
        set_text(rec, label, text);
        break;
    case T_NUMBER:
        if (!tg_codec_cbor_number(item, &number))
            return wrong_type(dec, index, label, got);
        double *slot = label == L_BT ? &rec->bt
                       : label == L_BV ? &rec->bv
                       : label == L_T  ? &rec->t
                       : label == L_V  ? &rec->v
                                       : &number; /* s, bs, ut: checked, then not used */
        return finite_number(dec, index, label, number, slot);
    case T_INTEGER:
        if (item->kind == TG_CBOR_UINT)
            rec->bver = item->u > INT64_MAX ? INT64_MAX : (int64_t)item->u;
        else if (item->kind == TG_CBOR_NEGINT)
            rec->bver = -1;
        else
            return wrong_type(dec, index, label, got);
        break;
    case T_BOOL:
        if (item->kind != TG_CBOR_BOOL)
            return wrong_type(dec, index, label, got);
        rec->vb = item->b;
        break;
    case T_DATA:
        if (item->kind != TG_CBOR_BYTES)
            return wrong_type(dec, index, label, got);
        break;
    }
    return TG_OK;
}

static tg_err cbor_record(struct tg_decoder *dec, struct tg_cbor_reader *rd, size_t index,
                          struct record *rec)
{
    tg_err err = tg_codec_cbor_next(dec, rd);
    if (err != TG_OK)
        return err;
    if (rd->item.kind != TG_CBOR_MAP)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "record %zu: expected map, got %s", index,
                             tg_codec_cbor_kind_name(&rd->item));
    if (dec->limits.max_depth < 2)
        return tg_codec_fail(dec, TG_ERR_TOO_DEEP, "record %zu: nests deeper than the limit of %u",
                             index, dec->limits.max_depth);
    uint64_t n = rd->item.u;
    memset(rec, 0, sizeof *rec);
    for (uint64_t i = 0; i < n; i++) {
        if ((err = tg_codec_cbor_next(dec, rd)) != TG_OK)
            return err;
        int label;
        if (rd->item.kind == TG_CBOR_UINT || rd->item.kind == TG_CBOR_NEGINT) {
            bool negative = rd->item.kind == TG_CBOR_NEGINT;
            label = rd->item.u > 64 ? -1
                                    : label_by_number(negative ? -1 - (int64_t)rd->item.u
                                                               : (int64_t)rd->item.u);
        } else if (rd->item.kind == TG_CBOR_TEXT) {
            label = label_by_name(rd->item.str, rd->item.len);
            if (label < 0 && (err = unknown_label(dec, index, rd->item.str, rd->item.len)))
                return err;
        } else {
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                 "record %zu: labels must be integers or text strings, got %s",
                                 index, tg_codec_cbor_kind_name(&rd->item));
        }
        if (label < 0) { /* an extension this decoder ignores: skip its value */
            if ((err = tg_codec_cbor_next(dec, rd)) != TG_OK ||
                (err = tg_codec_cbor_skip(dec, rd, 3)) != TG_OK)
                return err;
            continue;
        }
        if (rec->present & BIT(label))
            return label_twice(dec, index, (enum label)label);
        rec->present |= BIT(label);
        if (label == L_VS || label == L_VD || label == L_S || label == L_BS)
            return unsupported_value(dec, index, (enum label)label);
        if ((err = cbor_value(dec, rd, index, (enum label)label, rec)) != TG_OK)
            return err;
    }
    return TG_OK;
}

tg_err tg_codec_senml_cbor(struct tg_decoder *dec, const uint8_t *buf, size_t len, size_t start,
                           int64_t now_ms, struct tg_decoded *out)
{
    struct tg_cbor_reader rd = {.buf = buf, .len = len, .pos = start};
    tg_err err = tg_codec_cbor_next(dec, &rd);
    if (err != TG_OK)
        return err;
    if (rd.item.kind != TG_CBOR_ARRAY)
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "SenML pack: expected an array, got %s",
                             tg_codec_cbor_kind_name(&rd.item));
    uint64_t n = rd.item.u;
    if (n > dec->rows_cap)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY,
                             "SenML pack: %llu records exceed the limit of %zu",
                             (unsigned long long)n, dec->rows_cap);
    struct base base = {0};
    struct record rec;
    size_t n_rows = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        if ((err = cbor_record(dec, &rd, i, &rec)) != TG_OK ||
            (err = apply_record(dec, &base, &rec, i, now_ms, &n_rows)) != TG_OK)
            return err;
    }
    if (rd.pos != len)
        return tg_codec_fail(dec, TG_ERR_TRAILING_BYTES,
                             "%zu bytes follow the SenML pack (which ends at offset %zu)",
                             len - rd.pos, rd.pos);
    return group_rows(dec, n_rows, out);
}

/* --- JSON ------------------------------------------------------------------------------- */

static tg_err json_value(struct tg_decoder *dec, const json_t *value, size_t index,
                         enum label label, struct record *rec)
{
    const char *got = tg_codec_json_type_name(value);
    switch (labels[label].type) {
    case T_TEXT:
        if (!json_is_string(value))
            return wrong_type(dec, index, label, got);
        struct text text = {json_string_value(value), json_string_length(value)};
        set_text(rec, label, text);
        break;
    case T_NUMBER: {
        if (!json_is_number(value))
            return wrong_type(dec, index, label, got);
        double unused;
        double *slot = label == L_BT ? &rec->bt
                       : label == L_BV ? &rec->bv
                       : label == L_T  ? &rec->t
                       : label == L_V  ? &rec->v
                                       : &unused;
        return finite_number(dec, index, label, json_number_value(value), slot);
    }
    case T_INTEGER:
        if (!json_is_integer(value))
            return wrong_type(dec, index, label, got);
        rec->bver = json_integer_value(value);
        break;
    case T_BOOL:
        if (!json_is_boolean(value))
            return wrong_type(dec, index, label, got);
        rec->vb = json_is_true(value);
        break;
    case T_DATA: /* base64url text in JSON */
        if (!json_is_string(value))
            return tg_codec_fail(dec, TG_ERR_WRONG_TYPE,
                                 "record %zu: label \"vd\": expected string, got %s", index, got);
        break;
    }
    return TG_OK;
}

static tg_err json_record(struct tg_decoder *dec, const json_t *obj, size_t index,
                          struct record *rec)
{
    if (!json_is_object(obj))
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "record %zu: expected object, got %s", index,
                             tg_codec_json_type_name(obj));
    memset(rec, 0, sizeof *rec);
    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach((json_t *)obj, key, key_len, value) {
        tg_err err;
        int label = label_by_name(key, key_len);
        if (label < 0) {
            if ((err = unknown_label(dec, index, key, key_len)) != TG_OK)
                return err;
            /* the pack is depth 1, the record 2: an ignored value nests from 3 on */
            unsigned budget = dec->limits.max_depth > 2 ? dec->limits.max_depth - 2 : 0;
            if (tg_codec_json_depth(value, budget) > budget)
                return tg_codec_fail(dec, TG_ERR_TOO_DEEP,
                                     "record %zu: a value nests deeper than the limit of %u",
                                     index, dec->limits.max_depth);
            continue;
        }
        rec->present |= BIT(label);
        if (label == L_VS || label == L_VD || label == L_S || label == L_BS)
            return unsupported_value(dec, index, (enum label)label);
        if ((err = json_value(dec, value, index, (enum label)label, rec)) != TG_OK)
            return err;
    }
    return TG_OK;
}

static tg_err senml_json_root(struct tg_decoder *dec, const json_t *root, int64_t now_ms,
                              struct tg_decoded *out)
{
    if (!json_is_array(root))
        return tg_codec_fail(dec, TG_ERR_WRONG_TYPE, "SenML pack: expected an array, got %s",
                             tg_codec_json_type_name(root));
    if (json_array_size(root) > dec->rows_cap)
        return tg_codec_fail(dec, TG_ERR_TOO_MANY, "SenML pack: %zu records exceed the limit of %zu",
                             json_array_size(root), dec->rows_cap);
    struct base base = {0};
    struct record rec;
    size_t n_rows = 0, i;
    json_t *obj;
    json_array_foreach(root, i, obj) {
        tg_err err;
        if ((err = json_record(dec, obj, i, &rec)) != TG_OK ||
            (err = apply_record(dec, &base, &rec, i, now_ms, &n_rows)) != TG_OK)
            return err;
    }
    return group_rows(dec, n_rows, out);
}

tg_err tg_codec_senml_json(struct tg_decoder *dec, const uint8_t *buf, size_t len, int64_t now_ms,
                           struct tg_decoded *out)
{
    json_t *root;
    tg_err err = tg_codec_json_load(dec, buf, len, &root);
    if (err != TG_OK)
        return err;
    err = senml_json_root(dec, root, now_ms, out);
    json_decref(root);
    return err;
}
