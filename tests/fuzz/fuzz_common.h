/*
 * fuzz_common.h - what every decoder fuzz target checks, besides "no crash, no leak, no UB".
 *
 * For each input: decode it; on rejection the detail text must be non-empty printable ASCII;
 * on success every reading must be sane (finite values, valid names), its canonical JSON must
 * parse back with jansson to the same numbers and names, its canonical CBOR must be
 * well-formed, and a native reading must survive native encode -> decode unchanged. Any
 * violation aborts, which libFuzzer reports as a crash.
 */
#ifndef TG_FUZZ_COMMON_H
#define TG_FUZZ_COMMON_H

#include <cbor.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_canonical.h"
#include "codec_native.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW_MS INT64_C(1700000000000)

#define check(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

static struct tg_decoder *fuzz_decoder(void)
{
    static struct tg_decoder *dec;
    if (!dec)
        dec = tg_decoder_new(NULL);
    check(dec);
    return dec;
}

static struct tg_decoder *fuzz_second_decoder(void)
{
    static struct tg_decoder *dec;
    if (!dec)
        dec = tg_decoder_new(NULL);
    check(dec);
    return dec;
}

static bool same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void check_json_record(const struct tg_reading *rd, const char *json, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (!root) {
        fprintf(stderr, "canonical JSON does not parse: %s\n%.*s\n", jerr.text, (int)len, json);
        abort();
    }
    check(strcmp(json_string_value(json_object_get(root, "device")), rd->device) == 0);
    json_t *m = json_object_get(root, "m");
    check(json_is_object(m));
    check(json_object_size(m) == rd->n_metrics);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        json_t *value = json_object_get(m, rd->metrics[i].name);
        check(json_is_number(value));
        check(json_number_value(value) == rd->metrics[i].value);
        if (rd->metrics[i].unit) {
            json_t *unit = json_object_get(json_object_get(root, "u"), rd->metrics[i].name);
            check(unit && strcmp(json_string_value(unit), rd->metrics[i].unit) == 0);
        }
    }
    json_decref(root);
}

static void check_reading(const struct tg_reading *rd, const struct tg_codec_limits *limits)
{
    static char json[65536];
    static uint8_t cbor[65536];
    check(rd->n_metrics <= limits->max_metrics);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        const struct tg_metric *m = &rd->metrics[i];
        check(isfinite(m->value));
        size_t name_len = strlen(m->name);
        check(name_len > 0 && name_len <= limits->max_name_bytes);
        for (size_t k = 0; k < i; k++)
            check(strcmp(rd->metrics[k].name, m->name) != 0);
    }
    size_t len;
    check(tg_codec_canonical_json(rd, "fuzz-gw", FUZZ_NOW_MS, json, sizeof json, &len) == TG_OK);
    check_json_record(rd, json, len);
    /* the size contract: one byte short must be reported as full, with the same size */
    if (len > 0) {
        size_t need;
        check(tg_codec_canonical_json(rd, "fuzz-gw", FUZZ_NOW_MS, json, len - 1, &need) ==
              TG_ERR_FULL);
        check(need == len);
    }
    check(tg_codec_canonical_cbor(rd, "fuzz-gw", FUZZ_NOW_MS, cbor, sizeof cbor, &len) == TG_OK);
    struct cbor_load_result res;
    cbor_item_t *item = cbor_load(cbor, len, &res);
    check(item && res.read == len && cbor_isa_map(item));
    cbor_decref(&item);
}

/* A native reading encoded again decodes to the same reading. */
static void check_native_round_trip(const struct tg_reading *rd)
{
    static uint8_t buf[65536];
    size_t len;
    check(tg_codec_native_encode(rd, buf, sizeof buf, &len) == TG_OK);
    struct tg_decoded again;
    struct tg_decoder *dec = fuzz_second_decoder();
    tg_err err = tg_decoder_decode(dec, TG_FORMAT_NATIVE, rd->device, buf, len, FUZZ_NOW_MS, &again);
    if (err == TG_ERR_TOO_LARGE) /* re-encoding can grow a payload near the size limit */
        return;
    if (err != TG_OK) {
        fprintf(stderr, "re-encoded reading rejected: %s\n", tg_decoder_error(dec));
        abort();
    }
    const struct tg_reading *back = &again.readings[0];
    check(back->seq == rd->seq && back->boot == rd->boot && back->ts_ms == rd->ts_ms);
    check(back->n_metrics == rd->n_metrics);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        check(strcmp(back->metrics[i].name, rd->metrics[i].name) == 0);
        check(same_double(back->metrics[i].value, rd->metrics[i].value));
    }
}

static void fuzz_one(enum tg_format format, const uint8_t *data, size_t size)
{
    struct tg_decoder *dec = fuzz_decoder();
    struct tg_decoded out;
    tg_err err = tg_decoder_decode(dec, format, "fuzz-dev", data, size, FUZZ_NOW_MS, &out);
    if (err != TG_OK) {
        const char *text = tg_decoder_error(dec);
        check(text[0] != '\0');
        for (const char *p = text; *p; p++)
            check(*p >= 0x20 && *p < 0x7f);
        check(out.n_readings == 0 && out.readings == NULL);
        return;
    }
    const struct tg_codec_limits *limits = tg_decoder_limits(dec);
    check(out.n_readings >= 1);
    check(out.format == TG_FORMAT_NATIVE ? out.n_readings == 1
                                         : out.n_readings <= limits->max_readings);
    if (out.sig) {
        check(out.format == TG_FORMAT_NATIVE && out.cbor);
        check(out.signed_bytes && out.signed_len < size);
    }
    for (size_t i = 0; i < out.n_readings; i++) {
        const struct tg_reading *rd = &out.readings[i];
        check(strcmp(rd->device, "fuzz-dev") == 0);
        check(rd->has_seq == (out.format == TG_FORMAT_NATIVE));
        check_reading(rd, limits);
        for (size_t k = 0; k < i; k++)
            check(out.readings[k].ts_ms != rd->ts_ms);
        if (out.format == TG_FORMAT_NATIVE)
            check_native_round_trip(rd);
    }
}

#endif
