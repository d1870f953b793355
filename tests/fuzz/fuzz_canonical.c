/*
 * libFuzzer target: the canonical record decoder (codec_canonical_decode.c), with the
 * encoding sniffed, named CBOR and named JSON.
 *
 * Besides "no crash, no leak, no UB": a rejection carries a non-empty printable detail; an
 * accepted record is sane (valid device id, finite values, distinct names, units only on
 * metrics) and survives re-encoding with both canonical encoders and decoding again
 * unchanged. Any violation aborts, which libFuzzer reports as a crash.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical.h"
#include "codec_canonical_decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

static struct tg_canonical_decoder *decoder(int which)
{
    static struct tg_canonical_decoder *cd[2];
    if (!cd[which])
        cd[which] = tg_canonical_decoder_new(NULL);
    check(cd[which]);
    return cd[which];
}

static void check_detail(const char *detail)
{
    check(detail[0] != '\0');
    for (const char *p = detail; *p; p++)
        check(*p >= 0x20 && *p < 0x7f);
}

static bool same_double(double a, double b)
{
    return a == b; /* -0 and 0 may trade places through JSON; both are the same reading */
}

static void check_same(const struct tg_reading *a, const struct tg_canonical_extra *ea,
                       const struct tg_reading *b, const struct tg_canonical_extra *eb)
{
    check(strcmp(a->device, b->device) == 0);
    check(a->has_seq == b->has_seq);
    check(!a->has_seq || (a->boot == b->boot && a->seq == b->seq));
    check(a->ts_ms == b->ts_ms);
    check(a->n_metrics == b->n_metrics);
    for (size_t i = 0; i < a->n_metrics; i++) {
        check(strcmp(a->metrics[i].name, b->metrics[i].name) == 0);
        check(same_double(a->metrics[i].value, b->metrics[i].value));
        check(!a->metrics[i].unit == !b->metrics[i].unit);
        check(!a->metrics[i].unit || strcmp(a->metrics[i].unit, b->metrics[i].unit) == 0);
    }
    check(!ea->gateway == !eb->gateway);
    check(!ea->gateway || (strcmp(ea->gateway, eb->gateway) == 0 && ea->gw_ts_ms == eb->gw_ts_ms));
}

static void re_encode(const struct tg_reading *rd, const struct tg_canonical_extra *extra,
                      bool cbor)
{
    static uint8_t buf[1 << 17];
    size_t len;
    tg_err err = cbor ? tg_codec_canonical_cbor(rd, extra->gateway, extra->gw_ts_ms, buf,
                                                sizeof buf, &len)
                      : tg_codec_canonical_json(rd, extra->gateway, extra->gw_ts_ms,
                                                (char *)buf, sizeof buf, &len);
    check(err == TG_OK);
    struct tg_reading again;
    struct tg_canonical_extra extra2;
    err = tg_canonical_decode(decoder(1), buf, len, cbor ? 1 : 0, &again, &extra2);
    /* JSON integers are signed 64-bit: the only refusal allowed on the way back */
    if (!cbor && rd->has_seq && (rd->boot > INT64_MAX || rd->seq > INT64_MAX)) {
        check(err == TG_ERR_OUT_OF_RANGE);
        return;
    }
    if (err != TG_OK) {
        fprintf(stderr, "re-encoded record refused: %s\n", tg_canonical_decoder_error(decoder(1)));
        abort();
    }
    check_same(rd, extra, &again, &extra2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int mode = -1; mode <= 1; mode++) {
        struct tg_reading rd;
        struct tg_canonical_extra extra;
        tg_err err = tg_canonical_decode(decoder(0), data, size, mode, &rd, &extra);
        if (err != TG_OK) {
            check(!tg_err_retriable(err) || err == TG_ERR_NOMEM);
            check_detail(tg_canonical_decoder_error(decoder(0)));
            check(rd.device == NULL && extra.gateway == NULL);
            continue;
        }
        check(tg_device_id_valid(rd.device, strlen(rd.device)));
        for (size_t i = 0; i < rd.n_metrics; i++) {
            check(isfinite(rd.metrics[i].value));
            for (size_t k = 0; k < i; k++)
                check(strcmp(rd.metrics[i].name, rd.metrics[k].name) != 0);
        }
        re_encode(&rd, &extra, true);
        re_encode(&rd, &extra, false);
    }
    return 0;
}
