/* bench_dedup: the cost of one duplicate check, and the size and speed of snapshots.
 *
 *   bench_dedup [devices] [rounds]     (defaults 10000 and 200)
 *
 * Each round every device sends its next in-order reading, devices in a new random order per
 * round (so consecutive checks touch unrelated slab entries, as on a busy gateway), plus one
 * QoS1 redelivery for every 10th. Reported: ns per check with every device tracked, then with
 * max_devices at half the fleet (every new reading of a forgotten device evicts another), then
 * the snapshot of the tracked state: bytes, bytes per device, save and load times. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dedup.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t rng = 0x2545F4914F6CDD1Du;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void shuffle(unsigned *order, unsigned n)
{
    for (unsigned i = n - 1; i > 0; i--) {
        unsigned j = (unsigned)(next_random() % (i + 1));
        unsigned t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Runs rounds over n devices through dd; returns ns per check and counts new readings. */
static double run(struct tg_dedup *dd, char (*ids)[TG_DEVICE_ID_MAX + 1], unsigned n,
                  unsigned rounds, uint64_t seq0, uint64_t *fresh)
{
    unsigned *order = malloc(n * sizeof *order);
    if (!order)
        exit(1);
    for (unsigned i = 0; i < n; i++)
        order[i] = i;
    uint64_t checks = 0;
    *fresh = 0;
    double elapsed = 0;
    for (unsigned r = 0; r < rounds; r++) {
        shuffle(order, n);
        double t0 = now_ns();
        for (unsigned i = 0; i < n; i++) {
            struct tg_reading rd = {.device = ids[order[i]], .has_seq = true, .boot = 3,
                                    .seq = seq0 + r, .ts_ms = 0};
            *fresh += tg_dedup_check(dd, &rd, 0);
            checks++;
            if (i % 10 == 0) {
                *fresh += tg_dedup_check(dd, &rd, 0);
                checks++;
            }
        }
        elapsed += now_ns() - t0;
    }
    free(order);
    return elapsed / (double)checks;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 10000;
    unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 200;
    if (n < 2 || rounds == 0) {
        fprintf(stderr, "usage: bench_dedup [devices >= 2] [rounds >= 1]\n");
        return 2;
    }
    char (*ids)[TG_DEVICE_ID_MAX + 1] = malloc(n * sizeof *ids);
    if (!ids)
        return 1;
    for (unsigned i = 0; i < n; i++)
        snprintf(ids[i], sizeof ids[i], "sensor-%06u", i);

    struct tg_dedup *dd;
    if (tg_dedup_new(n, &dd) != TG_OK)
        return 1;
    uint64_t fresh;
    run(dd, ids, n, 2, 1000, &fresh); /* warm up: the slab reaches its size */
    double ns = run(dd, ids, n, rounds, 2000, &fresh);
    printf("devices %u, rounds %u: %.1f ns/check, all tracked (%" PRIu64 " new)\n", n, rounds,
           ns, fresh);

    struct tg_dedup *half;
    if (tg_dedup_new(n / 2, &half) != TG_OK)
        return 1;
    ns = run(half, ids, n, rounds, 2000, &fresh);
    printf("devices %u, max_devices %u: %.1f ns/check with eviction churn\n", n, n / 2, ns);
    tg_dedup_destroy(half);

    printf("memory: %d bytes/device in the slab + 4..8 bytes of hash buckets\n",
           TG_DEDUP_ENTRY_BYTES);

    uint8_t *blob;
    size_t len;
    double t0 = now_ns();
    if (tg_dedup_save(dd, &blob, &len) != TG_OK)
        return 1;
    double save_ms = (now_ns() - t0) / 1e6;
    struct tg_dedup *restored;
    if (tg_dedup_new(n, &restored) != TG_OK)
        return 1;
    t0 = now_ns();
    if (tg_dedup_load(restored, blob, len) != TG_OK)
        return 1;
    double load_ms = (now_ns() - t0) / 1e6;
    printf("snapshot: %zu bytes for %zu devices (%.1f bytes/device), save %.2f ms, load %.2f ms\n",
           len, tg_dedup_devices(dd), (double)len / (double)tg_dedup_devices(dd), save_ms,
           load_ms);

    free(blob);
    tg_dedup_destroy(restored);
    tg_dedup_destroy(dd);
    free(ids);
    return 0;
}
