/*
 * codec_decoder.c - the decoder object: limits, arena sizing, format detection and dispatch
 * to the payload parsers (codec_native.c, codec_senml.c). The readers those parsers share
 * are in codec_read.c, so calls go one way: decoder -> parsers -> readers.
 */
#include <cbor.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "codec_read.h"

/* Recursion in the skip/depth helpers is bounded by max_depth; keep that small. */
#define MAX_DEPTH_CEILING 64

/* CBOR tag 55799 ("self-described CBOR", RFC 8949 3.4.6) as its 3-byte encoding. */
static const uint8_t self_describe_tag[3] = {0xd9, 0xd9, 0xf7};

struct tg_codec_limits tg_codec_limits_default(void)
{
    struct tg_codec_limits limits = {
        .max_payload_bytes = TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES,
        .max_metrics = TG_CODEC_DEFAULT_MAX_METRICS,
        .max_readings = TG_CODEC_DEFAULT_MAX_READINGS,
        .max_name_bytes = TG_CODEC_DEFAULT_MAX_NAME_BYTES,
        .max_depth = TG_CODEC_DEFAULT_MAX_DEPTH,
    };
    return limits;
}

const char *tg_codec_format_name(enum tg_format format)
{
    switch (format) {
    case TG_FORMAT_NATIVE:
        return "native";
    case TG_FORMAT_SENML:
        return "senml";
    case TG_FORMAT_AUTO:
        break;
    }
    return "auto";
}

struct tg_decoder *tg_decoder_new(const struct tg_codec_limits *limits)
{
    struct tg_codec_limits lim = tg_codec_limits_default();
    if (limits) {
        if (limits->max_payload_bytes)
            lim.max_payload_bytes = limits->max_payload_bytes;
        if (limits->max_metrics)
            lim.max_metrics = limits->max_metrics;
        if (limits->max_readings)
            lim.max_readings = limits->max_readings;
        if (limits->max_name_bytes)
            lim.max_name_bytes = limits->max_name_bytes;
        if (limits->max_depth)
            lim.max_depth = limits->max_depth;
    }
    if (lim.max_depth > MAX_DEPTH_CEILING)
        lim.max_depth = MAX_DEPTH_CEILING;
    if (lim.max_payload_bytes > SIZE_MAX / 8)
        return NULL;

    struct tg_decoder *dec = calloc(1, sizeof *dec);
    if (!dec)
        return NULL;
    dec->limits = lim;

    /* Every string the arena holds is a copy of payload bytes plus a NUL, each copied once,
     * and the signed bytes are at most the payload: three payloads' worth always suffice. */
    dec->arena_cap = 3 * lim.max_payload_bytes + TG_DEVICE_ID_MAX + 64;
    /* A SenML record that yields a metric takes at least 3 bytes (CBOR {2: 0}), so a pack
     * within max_payload_bytes cannot hold more rows than this. */
    size_t rows_cap = (size_t)lim.max_readings * lim.max_metrics;
    if (rows_cap > lim.max_payload_bytes / 3 + 1)
        rows_cap = lim.max_payload_bytes / 3 + 1;
    if (rows_cap < lim.max_metrics)
        rows_cap = lim.max_metrics;
    dec->rows_cap = rows_cap;

    dec->arena = malloc(dec->arena_cap);
    dec->readings = calloc(lim.max_readings, sizeof *dec->readings);
    dec->metrics = calloc(rows_cap, sizeof *dec->metrics);
    dec->rows = calloc(rows_cap, sizeof *dec->rows);
    if (!dec->arena || !dec->readings || !dec->metrics || !dec->rows) {
        tg_decoder_destroy(dec);
        return NULL;
    }
    return dec;
}

void tg_decoder_destroy(struct tg_decoder *dec)
{
    if (!dec)
        return;
    free(dec->arena);
    free(dec->readings);
    free(dec->metrics);
    free(dec->rows);
    free(dec);
}

const struct tg_codec_limits *tg_decoder_limits(const struct tg_decoder *dec)
{
    return &dec->limits;
}

const char *tg_decoder_error(const struct tg_decoder *dec) { return dec->err; }

static bool is_json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

tg_err tg_decoder_decode(struct tg_decoder *dec, enum tg_format format, const char *device,
                         const uint8_t *buf, size_t len, int64_t now_ms, struct tg_decoded *out)
{
    memset(out, 0, sizeof *out);
    dec->err[0] = '\0';
    dec->arena_used = 0;

    size_t device_len = strnlen(device, TG_DEVICE_ID_MAX + 1);
    if (!tg_device_id_valid(device, device_len)) {
        char q[TG_CODEC_QUOTE_MAX];
        return tg_codec_fail(dec, TG_ERR_BAD_NAME, "device id %s is not [A-Za-z0-9_.-]{1,%d}",
                             tg_codec_quote(q, device, device_len), TG_DEVICE_ID_MAX);
    }
    if (len > dec->limits.max_payload_bytes)
        return tg_codec_fail(dec, TG_ERR_TOO_LARGE, "payload of %zu bytes exceeds the limit of %zu",
                             len, dec->limits.max_payload_bytes);
    if (len == 0)
        return tg_codec_fail(dec, TG_ERR_MALFORMED, "empty payload");
    dec->device = tg_codec_strndup(dec, device, device_len);
    if (!dec->device)
        return tg_codec_fail(dec, TG_ERR_INTERNAL, "decoder arena exhausted");

    /* JSON starts with '{' or '[' after optional whitespace; neither byte starts a CBOR map
     * or array (they are a text and a byte string header), so one look decides. */
    size_t first = 0;
    while (first < len && is_json_space(buf[first]))
        first++;
    bool json = first < len && (buf[first] == '{' || buf[first] == '[');
    bool senml;
    size_t start = 0;
    if (json) {
        senml = buf[first] == '[';
    } else {
        if (len > sizeof self_describe_tag &&
            memcmp(buf, self_describe_tag, sizeof self_describe_tag) == 0)
            start = sizeof self_describe_tag;
        unsigned major = buf[start] >> 5;
        senml = major == 4;
        if (format == TG_FORMAT_AUTO && major != 4 && major != 5)
            return tg_codec_fail(dec, TG_ERR_UNKNOWN_FORMAT,
                                 "first byte 0x%02x is neither a JSON object or array nor a CBOR "
                                 "map or array",
                                 buf[start]);
    }
    if (format == TG_FORMAT_NATIVE)
        senml = false;
    else if (format == TG_FORMAT_SENML)
        senml = true;

    tg_err err;
    if (senml)
        err = json ? tg_codec_senml_json(dec, buf, len, now_ms, out)
                   : tg_codec_senml_cbor(dec, buf, len, start, now_ms, out);
    else
        err = json ? tg_codec_native_json(dec, buf, len, out)
                   : tg_codec_native_cbor(dec, buf, len, start, out);
    if (err != TG_OK) {
        memset(out, 0, sizeof *out);
        if (!dec->err[0]) /* every failure path sets a text; never leave it empty */
            snprintf(dec->err, sizeof dec->err, "%s", tg_strerror(err));
        return err;
    }
    out->format = senml ? TG_FORMAT_SENML : TG_FORMAT_NATIVE;
    out->cbor = !json;
    return TG_OK;
}
