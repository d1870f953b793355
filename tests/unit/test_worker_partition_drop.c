/*
 * test_worker_partition_drop.c - the engine contract the worker's rebalances rest on:
 * dropping some partitions (a revoke) leaves every other partition's state exactly as it was.
 *
 * Two engines get the same readings of 40 devices over six partitions; one drops partitions
 * 0-2 after some seconds (as a worker does when they are revoked) and no longer gets their
 * readings. The alerts and aggregates of partitions 3-5 must be the same, byte for byte, for
 * every moment of the drop. Found by test_worker_rebalance: a drop left holes in the series
 * table's probe chains, so series of kept partitions were no longer found and restarted cold
 * (an open alert never closed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine.h"

#define DEVICES 40
#define SECONDS 600
#define OUT_MAX 4096

struct outputs {
    char *v[OUT_MAX];
    int n;
};

static double noise(int device, int second)
{
    uint64_t x = (uint64_t)device * 0x9E3779B97F4A7C15u ^ (uint64_t)second * 0xBF58476D1CE4E5B9u;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBu;
    x ^= x >> 29;
    return (double)(x >> 11) / (double)(UINT64_C(1) << 52) - 1.0;
}

/* The integration tests' fleet (worker_fixture.c): a cycle, noise, a spike per device and a
 * level shift on every fifth device. */
static double value_at(int device, int second)
{
    double v = 20.0 + device % 7 + 2.0 * sin(second / 90.0) +
               0.2 * (noise(device, second) + noise(device + 1000, second));
    if (second == 120 + 7 * (device % 40))
        v += 25.0;
    if (device % 5 == 0 && second >= 300 + device % 50)
        v += 6.0;
    return v;
}

/* The placement test_worker_rebalance saw (murmur2 of the ids over 6 partitions) for the
 * devices of partition 3; the others spread over the rest. */
static int partition_of(int device)
{
    static const int p3[] = {1, 8, 16, 25, 27, 31};
    for (size_t i = 0; i < sizeof p3 / sizeof p3[0]; i++)
        if (p3[i] == device)
            return 3;
    static const int others[] = {0, 1, 2, 4, 5};
    return others[device % 5];
}

static void emit(void *ud, const struct tg_engine_output *out)
{
    struct outputs *o = ud;
    if (out->partition < 3)
        return;
    assert_true(o->n < OUT_MAX);
    o->v[o->n] = malloc(out->value_len + 1);
    assert_non_null(o->v[o->n]);
    memcpy(o->v[o->n], out->value, out->value_len);
    o->v[o->n][out->value_len] = '\0';
    o->n++;
}

static void no_snapshot(void *ud, int32_t partition, const void *key, size_t key_len,
                        const void *value, size_t value_len)
{
    (void)ud, (void)partition, (void)key, (void)key_len, (void)value, (void)value_len;
}

static void outputs_free(struct outputs *o)
{
    for (int i = 0; i < o->n; i++)
        free(o->v[i]);
    o->n = 0;
}

static void run(const struct tg_engine_config *ec, int drop_at, struct outputs *out)
{
    struct tg_engine *en = tg_engine_new(ec, emit, out);
    assert_non_null(en);
    for (int p = 0; p < 6; p++)
        assert_int_equal(tg_engine_partition_add(en, p), TG_OK);
    for (int s = 0; s < SECONDS; s++) {
        if (s == drop_at)
            for (int p = 0; p < 3; p++)
                tg_engine_partition_drop(en, p);
        for (int d = 0; d < DEVICES; d++) {
            int p = partition_of(d);
            if (s >= drop_at && p < 3)
                continue;
            char device[16];
            snprintf(device, sizeof device, "dev-%03d", d);
            struct tg_metric m = {.name = "temp", .unit = NULL, .value = value_at(d, s)};
            struct tg_reading rd = {.device = device, .has_seq = true, .boot = 1,
                                    .seq = (uint64_t)s, .ts_ms = INT64_C(1796286060000) + s * 1000,
                                    .n_metrics = 1, .metrics = &m};
            assert_int_equal(tg_engine_process(en, p, &rd), TG_OK);
        }
        if (s % 3 == 0) /* as commits do: forget what changed */
            tg_engine_snapshot_dirty(en, no_snapshot, NULL);
    }
    tg_engine_destroy(en);
}

static void test_drop_keeps_other_partitions(void **state)
{
    (void)state;
    size_t nk;
    const struct tg_config_key *keys = tg_engine_config_keys(&nk);
    struct tg_config *cfg = tg_config_new(keys, nk);
    assert_non_null(cfg);
    assert_int_equal(tg_config_set(cfg, "detect.silence=false"), TG_OK);
    char err[512];
    struct tg_engine_config *ec = tg_engine_config_from(cfg, err, sizeof err);
    assert_non_null(ec);

    static struct outputs ref, got;
    run(ec, SECONDS, &ref);
    assert_true(ref.n > 100);
    for (int drop_at = 25; drop_at < SECONDS; drop_at += 25) {
        run(ec, drop_at, &got);
        int differ = got.n != ref.n;
        for (int i = 0; !differ && i < ref.n; i++)
            differ = strcmp(ref.v[i], got.v[i]) != 0;
        if (differ)
            fail_msg("dropping partitions 0-2 at second %d changed partitions 3-5: %d outputs "
                     "instead of %d",
                     drop_at, got.n, ref.n);
        outputs_free(&got);
    }
    outputs_free(&ref);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drop_keeps_other_partitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
