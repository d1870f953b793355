/* libFuzzer target: the dedup snapshot loader (gateway/dedup.c, tg_dedup_load), which reads
 * what the journal's state table kept across a restart. Whatever the bytes, the load must
 * fail cleanly (leaving the window empty) or restore a state whose own snapshot loads back
 * to the same snapshot. Byte 0 picks the window's device capacity (1..256), so snapshots
 * with more devices than fit are tried too. */
#include <stdint.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct tg_dedup *dd = NULL, *back = NULL;
    check(tg_dedup_new((size_t)data[0] + 1, &dd) == TG_OK);
    tg_err e = tg_dedup_load(dd, data + 1, size - 1);
    if (e != TG_OK) {
        check(e == TG_ERR_INTERNAL || e == TG_ERR_NOMEM);
        check(tg_dedup_devices(dd) == 0);
        tg_dedup_destroy(dd);
        return 0;
    }
    check(tg_dedup_devices(dd) <= (size_t)data[0] + 1);
    uint8_t *snap = NULL, *snap2 = NULL;
    size_t len = 0, len2 = 0;
    check(tg_dedup_save(dd, &snap, &len) == TG_OK);
    check(tg_dedup_new((size_t)data[0] + 1, &back) == TG_OK);
    check(tg_dedup_load(back, snap, len) == TG_OK);
    check(tg_dedup_devices(back) == tg_dedup_devices(dd));
    check(tg_dedup_save(back, &snap2, &len2) == TG_OK);
    check(len == len2 && memcmp(snap, snap2, len) == 0);
    free(snap);
    free(snap2);
    tg_dedup_destroy(dd);
    tg_dedup_destroy(back);
    return 0;
}
