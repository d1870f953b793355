/*
 * test_codec_util.h - helpers shared by the codec unit tests (header-only, static).
 *
 * struct tbuf builds payloads by hand: CBOR from hex fragments and a few item helpers, so
 * each test shows the exact bytes it feeds the decoder.
 */
#ifndef TG_TEST_CODEC_UTIL_H
#define TG_TEST_CODEC_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "util.h"
#include "codec.h"

#define NOW_MS INT64_C(1700000000000)

struct tbuf {
    uint8_t b[16384];
    size_t n;
};

/* Appends the bytes of a hex string; spaces are ignored. */
static inline struct tbuf *tb_hex(struct tbuf *t, const char *hex)
{
    for (const char *p = hex; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        int hi = tg_hex_digit(p[0]), lo = tg_hex_digit(p[1]);
        assert_true(hi >= 0 && lo >= 0);
        assert_true(t->n < sizeof t->b);
        t->b[t->n++] = (uint8_t)(hi << 4 | lo);
        p += 2;
    }
    return t;
}

static inline struct tbuf *tb_bytes(struct tbuf *t, const void *data, size_t len)
{
    assert_true(len <= sizeof t->b - t->n);
    memcpy(t->b + t->n, data, len);
    t->n += len;
    return t;
}

/* CBOR head of major type major with argument n, shortest form. */
static inline struct tbuf *tb_head(struct tbuf *t, unsigned major, uint64_t n)
{
    uint8_t h[9];
    size_t len;
    if (n < 24) {
        h[0] = (uint8_t)(major << 5 | n);
        len = 1;
    } else {
        int bytes = n <= 0xff ? 1 : n <= 0xffff ? 2 : n <= 0xffffffffu ? 4 : 8;
        h[0] = (uint8_t)(major << 5 | (bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27));
        for (int i = 0; i < bytes; i++)
            h[1 + i] = (uint8_t)(n >> (8 * (bytes - 1 - i)));
        len = 1 + (size_t)bytes;
    }
    return tb_bytes(t, h, len);
}

static inline struct tbuf *tb_text(struct tbuf *t, const char *s)
{
    tb_head(t, 3, strlen(s));
    return tb_bytes(t, s, strlen(s));
}

static inline struct tbuf *tb_str(struct tbuf *t, const char *s)
{
    return tb_bytes(t, s, strlen(s));
}

/* The start of a native CBOR payload {"seq": seq, "boot": 1, "ts": NOW_MS, "m": ...}: the
 * caller appends the m map. */
static inline struct tbuf *tb_native_prefix(struct tbuf *t, uint64_t seq)
{
    tb_head(t, 5, 4);
    tb_text(t, "seq");
    tb_head(t, 0, seq);
    tb_text(t, "boot");
    tb_head(t, 0, 1);
    tb_text(t, "ts");
    tb_head(t, 0, (uint64_t)NOW_MS);
    return tb_text(t, "m");
}

/* Decodes with format and checks the outcome code; on failure also that the detail text
 * contains detail (when not NULL). Prints the text so a failing test shows it. */
static inline void expect_decode(struct tg_decoder *dec, enum tg_format format, const uint8_t *buf,
                                 size_t len, tg_err want, const char *detail,
                                 struct tg_decoded *out)
{
    struct tg_decoded scratch;
    if (!out)
        out = &scratch;
    tg_err got = tg_decoder_decode(dec, format, "dev-1", buf, len, NOW_MS, out);
    if (got != want || (detail && !strstr(tg_decoder_error(dec), detail)))
        print_error("decode: want %s (\"%s\"), got %s: \"%s\"\n", tg_err_reason(want),
                    detail ? detail : "", tg_err_reason(got), tg_decoder_error(dec));
    assert_int_equal(got, want);
    if (want != TG_OK) {
        assert_true(strlen(tg_decoder_error(dec)) > 0);
        if (detail)
            assert_non_null(strstr(tg_decoder_error(dec), detail));
        assert_int_equal(out->n_readings, 0);
        assert_null(out->readings);
    } else {
        assert_string_equal(tg_decoder_error(dec), "");
    }
}

static inline void expect_tbuf(struct tg_decoder *dec, const struct tbuf *t, tg_err want,
                               const char *detail)
{
    expect_decode(dec, TG_FORMAT_AUTO, t->b, t->n, want, detail, NULL);
}

static inline void expect_text(struct tg_decoder *dec, enum tg_format format, const char *text,
                               tg_err want, const char *detail, struct tg_decoded *out)
{
    expect_decode(dec, format, (const uint8_t *)text, strlen(text), want, detail, out);
}

/* The metric called name in rd, or fail. */
static inline const struct tg_metric *find_metric(const struct tg_reading *rd, const char *name)
{
    for (size_t i = 0; i < rd->n_metrics; i++)
        if (strcmp(rd->metrics[i].name, name) == 0)
            return &rd->metrics[i];
    fail_msg("metric \"%s\" not found", name);
    return NULL;
}

static inline int setup_decoder(void **state)
{
    *state = tg_decoder_new(NULL);
    return *state ? 0 : -1;
}

static inline int teardown_decoder(void **state)
{
    tg_decoder_destroy(*state);
    return 0;
}

/* Reads a whole file from $TG_TEST_DATA/codec/name into a malloc'd buffer. */
static inline uint8_t *read_test_file(const char *name, size_t *len)
{
    const char *dir = getenv("TG_TEST_DATA");
    assert_non_null(dir);
    char path[1024];
    snprintf(path, sizeof path, "%s/codec/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, (size_t)size, f);
    assert_int_equal(*len, (size_t)size);
    fclose(f);
    return buf;
}

#endif
