/* bench_codec: the cost of the payload codecs, in nanoseconds per payload, single thread.
 *
 *   bench_codec [iterations]     (default 1000000 per case)
 *
 * Decodes gateway-typical payloads (one reading, five metrics, about 120 bytes in JSON) with
 * one reused decoder, as an ingress thread would, and encodes the resulting reading as the
 * canonical Kafka record. The figures are the codec's share of the gateway's per-message
 * budget (design.md section 6). Last, the canonical record read back as a consumer of the
 * topic does (codec_canonical_decode.h: the audit, the upstream worker). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "codec_canonical.h"
#include "codec_canonical_decode.h"
#include "codec_native.h"

static uint64_t iterations = 1000000;
static volatile size_t sink; /* keeps the work from being optimised away */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const struct tg_metric metrics[] = {
    {.name = "temp", .value = 21.3},     {.name = "hum", .value = 40.5},
    {.name = "pressure", .value = 1013.25}, {.name = "battery", .value = 3.71},
    {.name = "rssi", .value = -67},
};

static const struct tg_reading reading = {
    .device = "node-0042",
    .has_seq = true,
    .boot = 3,
    .seq = 123456,
    .ts_ms = INT64_C(1700000000123),
    .n_metrics = 5,
    .metrics = metrics,
};

static tg_err fake_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t sig[TG_SIG_LEN])
{
    (void)ctx, (void)msg, (void)len;
    memset(sig, 0x5a, TG_SIG_LEN);
    return TG_OK;
}

static void bench_decode(struct tg_decoder *dec, const char *what, const uint8_t *payload,
                         size_t len)
{
    struct tg_decoded out;
    if (tg_decoder_decode(dec, TG_FORMAT_AUTO, "node-0042", payload, len, INT64_C(1700000000000),
                          &out) != TG_OK) {
        fprintf(stderr, "bench_codec: %s does not decode: %s\n", what, tg_decoder_error(dec));
        exit(1);
    }
    double start = now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        tg_decoder_decode(dec, TG_FORMAT_AUTO, "node-0042", payload, len, INT64_C(1700000000000),
                          &out);
        sink += out.n_readings;
    }
    double ns = (now_ns() - start) / (double)iterations;
    printf("decode %-22s %4zu bytes  %8.0f ns/payload  %6.2f M payloads/s\n", what, len, ns,
           1e3 / ns);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        iterations = strtoull(argv[1], NULL, 10);
    if (iterations == 0) {
        fprintf(stderr, "usage: bench_codec [iterations]\n");
        return 2;
    }
    struct tg_decoder *dec = tg_decoder_new(NULL);
    if (!dec)
        return 1;

    uint8_t cbor[256], signed_cbor[256];
    size_t cbor_len, signed_len;
    if (tg_codec_native_encode(&reading, cbor, sizeof cbor, &cbor_len) != TG_OK ||
        tg_codec_native_encode_signed(&reading, fake_sign, NULL, signed_cbor, sizeof signed_cbor,
                                      &signed_len) != TG_OK)
        return 1;
    const char *json = "{\"seq\":123456,\"boot\":3,\"ts\":1700000000123,\"m\":{\"temp\":21.3,"
                       "\"hum\":40.5,\"pressure\":1013.25,\"battery\":3.71,\"rssi\":-67}}";
    const char *senml_json =
        "[{\"bn\":\"node-0042:\",\"bt\":1700000000.123,\"n\":\"temp\",\"u\":\"Cel\",\"v\":21.3},"
        "{\"n\":\"hum\",\"u\":\"%RH\",\"v\":40.5},{\"n\":\"pressure\",\"u\":\"hPa\",\"v\":1013.25},"
        "{\"n\":\"battery\",\"u\":\"V\",\"v\":3.71},{\"n\":\"rssi\",\"u\":\"dBm\",\"v\":-67}]";
    /* the same pack with CBOR labels: bn -2, bt -3, n 0, u 1, v 2 */
    static const uint8_t senml_cbor[] = {
        0x85,
        0xa5, 0x21, 0x6a, 'n', 'o', 'd', 'e', '-', '0', '0', '4', '2', ':',
        0x22, 0xfb, 0x41, 0xd9, 0x54, 0xfc, 0x40, 0x07, 0xdf, 0x3b,
        0x00, 0x64, 't', 'e', 'm', 'p', 0x01, 0x63, 'C', 'e', 'l',
        0x02, 0xfb, 0x40, 0x35, 0x4c, 0xcc, 0xcc, 0xcc, 0xcc, 0xcd,
        0xa3, 0x00, 0x63, 'h', 'u', 'm', 0x01, 0x63, '%', 'R', 'H', 0x02, 0xfa, 0x42, 0x22, 0x00, 0x00,
        0xa3, 0x00, 0x68, 'p', 'r', 'e', 's', 's', 'u', 'r', 'e', 0x01, 0x63, 'h', 'P', 'a',
        0x02, 0xfa, 0x44, 0x7d, 0x50, 0x00,
        0xa3, 0x00, 0x67, 'b', 'a', 't', 't', 'e', 'r', 'y', 0x01, 0x61, 'V',
        0x02, 0xfb, 0x40, 0x0d, 0xae, 0x14, 0x7a, 0xe1, 0x47, 0xae,
        0xa3, 0x00, 0x64, 'r', 's', 's', 'i', 0x01, 0x63, 'd', 'B', 'm', 0x02, 0x38, 0x42,
    };

    printf("bench_codec: %" PRIu64 " iterations per case\n", iterations);
    bench_decode(dec, "native CBOR", cbor, cbor_len);
    bench_decode(dec, "native CBOR signed", signed_cbor, signed_len);
    bench_decode(dec, "native JSON", (const uint8_t *)json, strlen(json));
    bench_decode(dec, "SenML JSON (5 records)", (const uint8_t *)senml_json, strlen(senml_json));
    bench_decode(dec, "SenML CBOR (5 records)", senml_cbor, sizeof senml_cbor);

    char out[1024];
    uint8_t out_cbor[1024];
    size_t len = 0;
    double start = now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        tg_codec_canonical_json(&reading, "gw-1", INT64_C(1700000000200), out, sizeof out, &len);
        sink += len;
    }
    double ns = (now_ns() - start) / (double)iterations;
    printf("encode %-22s %4zu bytes  %8.0f ns/record   %6.2f M records/s\n", "canonical JSON", len,
           ns, 1e3 / ns);
    start = now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        tg_codec_canonical_cbor(&reading, "gw-1", INT64_C(1700000000200), out_cbor,
                                sizeof out_cbor, &len);
        sink += len;
    }
    ns = (now_ns() - start) / (double)iterations;
    printf("encode %-22s %4zu bytes  %8.0f ns/record   %6.2f M records/s\n", "canonical CBOR", len,
           ns, 1e3 / ns);
    start = now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        tg_codec_native_encode(&reading, cbor, sizeof cbor, &len);
        sink += len;
    }
    ns = (now_ns() - start) / (double)iterations;
    printf("encode %-22s %4zu bytes  %8.0f ns/payload  %6.2f M payloads/s\n", "native CBOR", len,
           ns, 1e3 / ns);

    struct tg_canonical_decoder *cd = tg_canonical_decoder_new(NULL);
    if (!cd)
        return 1;
    size_t json_len, cbor_rec_len;
    tg_codec_canonical_json(&reading, "gw-1", INT64_C(1700000000200), out, sizeof out, &json_len);
    tg_codec_canonical_cbor(&reading, "gw-1", INT64_C(1700000000200), out_cbor, sizeof out_cbor,
                            &cbor_rec_len);
    for (int cbor_rec = 0; cbor_rec <= 1; cbor_rec++) {
        const uint8_t *rec = cbor_rec ? out_cbor : (const uint8_t *)out;
        size_t rec_len = cbor_rec ? cbor_rec_len : json_len;
        struct tg_reading rd;
        if (tg_canonical_decode(cd, rec, rec_len, cbor_rec, &rd, NULL) != TG_OK) {
            fprintf(stderr, "bench_codec: canonical record does not decode: %s\n",
                    tg_canonical_decoder_error(cd));
            return 1;
        }
        start = now_ns();
        for (uint64_t i = 0; i < iterations; i++) {
            tg_canonical_decode(cd, rec, rec_len, cbor_rec, &rd, NULL);
            sink += rd.n_metrics;
        }
        ns = (now_ns() - start) / (double)iterations;
        printf("decode %-22s %4zu bytes  %8.0f ns/record   %6.2f M records/s\n",
               cbor_rec ? "canonical CBOR" : "canonical JSON", rec_len, ns, 1e3 / ns);
    }
    tg_canonical_decoder_destroy(cd);
    tg_decoder_destroy(dec);
    return 0;
}
