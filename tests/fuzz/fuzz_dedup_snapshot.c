/*
 * libFuzzer target: the dedup snapshot loader (gateway/dedup.c, tg_dedup_load), which reads
 * what the journal kept across a restart. The input's last four bytes are overwritten with
 * the CRC-32 of the rest, so the fuzzer explores the body rather than the checksum.
 *
 * Besides "no crash, no leak, no UB": a rejected snapshot leaves the dedup empty; an accepted
 * one saves, and that save loads again and saves to the same bytes (a snapshot survives any
 * number of restarts unchanged), and both states decide a few probe readings alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

#define MAX_DEVICES 64

static uint32_t crc32_ieee(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return crc ^ 0xFFFFFFFFu;
}

/* The same probes against both states, which must answer alike. */
static void probe(struct tg_dedup *a, struct tg_dedup *b)
{
    static const char *const ids[] = {"a", "d", "node-00001", "sim-00042"};
    static const uint64_t boots[] = {0, 1, 3, 7};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        for (size_t k = 0; k < sizeof boots / sizeof boots[0]; k++) {
            struct tg_reading r = {.device = ids[i], .has_seq = true, .boot = boots[k],
                                   .seq = 10 * k, .ts_ms = INT64_C(1700000000000)};
            check(tg_dedup_classify(a, &r, 0) == tg_dedup_classify(b, &r, 0));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    check(copy);
    memcpy(copy, data, size);
    if (size >= 4) {
        uint32_t crc = crc32_ieee(copy, size - 4);
        for (int k = 0; k < 4; k++)
            copy[size - 4 + k] = (uint8_t)(crc >> (8 * k));
    }
    struct tg_dedup *dd, *dd2;
    check(tg_dedup_new(MAX_DEVICES, &dd) == TG_OK);
    check(tg_dedup_new(MAX_DEVICES, &dd2) == TG_OK);
    if (tg_dedup_load(dd, copy, size) != TG_OK) {
        check(tg_dedup_devices(dd) == 0);
    } else {
        check(tg_dedup_devices(dd) <= MAX_DEVICES);
        uint8_t *blob, *blob2;
        size_t len, len2;
        check(tg_dedup_save(dd, &blob, &len) == TG_OK);
        check(tg_dedup_load(dd2, blob, len) == TG_OK);
        check(tg_dedup_devices(dd2) == tg_dedup_devices(dd));
        check(tg_dedup_save(dd2, &blob2, &len2) == TG_OK);
        check(len2 == len && memcmp(blob, blob2, len) == 0);
        probe(dd, dd2);
        free(blob);
        free(blob2);
    }
    tg_dedup_destroy(dd);
    tg_dedup_destroy(dd2);
    free(copy);
    return 0;
}
