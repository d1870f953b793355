/* Unit tests for holes in a partition's records (worker/engine_hole.c): when no device of a
 * partition produced anything for a while (a frozen source, a gateway restart), the gaps
 * its series show when readings resume are not each device's silence; a device quiet well
 * beyond the hole still is. The holes are part of the partition's snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>

#include "test_engine_util.h"

#define T0 INT64_C(1700000000000)
#define DEVICES 200
#define HOLE_FROM_S 100 /* seconds [HOLE_FROM_S, HOLE_TO_S) of event time: nobody reports */
#define HOLE_TO_S 110
#define SECONDS 160
#define LIMIT_MS 2000   /* the hole limit ([worker] stall_after_ms in the worker) */
#define LONG_QUIET 7    /* silent [70, 130): 60 s around the hole */
#define EARLY_QUIET 9   /* silent [95, 110): 5 s before the hole as well */
#define SKEWED 11       /* its clock 2 s behind the others' */

/* Device d's reading of second s, or false when it sends none then. One reading a second
 * from each device, a few ms apart, in device order. */
static bool reading_at(int s, int d, int64_t *ts)
{
    if (s >= HOLE_FROM_S && s < HOLE_TO_S)
        return false;
    if (d == LONG_QUIET && s >= 70 && s < 130)
        return false;
    if (d == EARLY_QUIET && s >= 95 && s < HOLE_TO_S)
        return false;
    *ts = T0 + (int64_t)s * 1000 + d * 3 - (d == SKEWED ? 2000 : 0);
    return true;
}

static struct tg_engine_config *hole_config(int64_t limit_ms)
{
    char err[512];
    /* Silent after 2 periods: a gap the hole stretches by 2 s would cross it without the
     * skew tolerance, so the skewed device tests the tolerance. */
    const char *sets[] = {"detect.silence_factor=2", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    assert_non_null(ec);
    tg_engine_config_set_partition_hole_ms(ec, limit_ms);
    return ec;
}

/* Feeds seconds [from_s, to_s) of every device (from device from_d in the first second). */
static void feed_range(struct tg_engine *en, int from_s, int from_d, int to_s)
{
    for (int s = from_s; s < to_s; s++)
        for (int d = s == from_s ? from_d : 0; d < DEVICES; d++) {
            int64_t ts;
            if (!reading_at(s, d, &ts))
                continue;
            char dev[16];
            snprintf(dev, sizeof dev, "d%03d", d);
            assert_int_equal(feed(en, 0, dev, "temp", ts, 20 + (s % 7) * 0.1), TG_OK);
        }
}

/* The silence opens of r, as a bitmap over devices; returns their count. */
static size_t silence_devices(const struct rec *r, bool *who)
{
    size_t n = 0;
    memset(who, 0, DEVICES * sizeof *who);
    for (size_t i = 0; i < r->n; i++) {
        const char *l = r->lines[i];
        if (strncmp(l, "A open d", 8) != 0 || !strstr(l, "\"kind\":\"silence\""))
            continue;
        int d = atoi(l + 8);
        assert_true(d >= 0 && d < DEVICES);
        who[d] = true;
        n++;
    }
    return n;
}

static void common_hole_is_not_every_device_silent(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(LIMIT_MS);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    assert_int_equal(tg_engine_partition_add(en, 0), TG_OK);
    feed_range(en, 0, 0, SECONDS);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    bool who[DEVICES];
    size_t n = silence_devices(&r, who);
    if (n != 2 || !who[LONG_QUIET] || !who[EARLY_QUIET]) {
        rec_dump(&r, 20);
        fail_msg("%zu silence alerts; want exactly d%03d's and d%03d's (d%03d: %s)", n,
                 LONG_QUIET, EARLY_QUIET, SKEWED, who[SKEWED] ? "alerted" : "not alerted");
    }
    assert_int_equal(st.partition_gaps, 1);
    /* The long silence's alert spans its own gap, hole included: it is the device's. */
    char want[64];
    snprintf(want, sizeof want, "d%03d/temp/silence/%" PRId64, LONG_QUIET,
             T0 + 69 * 1000 + LONG_QUIET * 3 + 1000);
    bool found = false;
    for (size_t i = 0; i < r.n; i++)
        found |= strstr(r.lines[i], want) != NULL;
    if (!found) {
        rec_dump(&r, 20);
        fail_msg("no alert %s", want);
    }
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

/* The control: with no hole limit (replay's setting) the same input raises an alert for
 * every device, so the scenario provokes what the limit prevents. */
static void without_the_limit_every_device_alerts(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(0);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    assert_int_equal(tg_engine_partition_add(en, 0), TG_OK);
    feed_range(en, 0, 0, SECONDS);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    bool who[DEVICES];
    assert_int_equal(silence_devices(&r, who), DEVICES);
    assert_int_equal(st.partition_gaps, 0);
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

/* A device alone on its partition: its every gap is a hole of the partition, which says
 * nothing of the device (the sweep's clock stops there too). */
static void lone_device_gap_is_a_hole(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(LIMIT_MS);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    assert_int_equal(tg_engine_partition_add(en, 4), TG_OK);
    for (int s = 0; s < 60; s++)
        if (s < 30 || s >= 45)
            assert_int_equal(feed(en, 4, "solo", "temp", T0 + s * 1000, 1 + s % 3), TG_OK);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    assert_int_equal(rec_opens(&r, "silence"), 0);
    assert_int_equal(st.partition_gaps, 1);
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

static const struct kv *store_find(const struct store *st, const char *key)
{
    for (size_t i = 0; i < st->n; i++)
        if (st->v[i].key_len == strlen(key) && memcmp(st->v[i].key, key, st->v[i].key_len) == 0)
            return &st->v[i];
    return NULL;
}

/* The engine dies right after the hole, with only a few devices back: a new engine restores
 * the snapshots and goes on, with the same outputs as one that never stopped, and the same
 * state, byte for byte, at the end. */
static void restore_after_the_hole_continues_byte_for_byte(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(LIMIT_MS);
    struct rec ref = {0}, a = {0}, b = {0};
    struct store ref_state = {0}, st = {0}, b_state = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &ref);
    tg_engine_partition_add(en, 0);
    feed_range(en, 0, 0, SECONDS);
    tg_engine_snapshot_dirty(en, store_put, &ref_state);
    tg_engine_destroy(en);

    en = tg_engine_new(ec, rec_emit, &a);
    tg_engine_partition_add(en, 0);
    feed_range(en, 0, 0, 50);
    tg_engine_snapshot_dirty(en, store_put, &st);
    feed_range(en, 50, 0, HOLE_TO_S);
    /* Second HOLE_TO_S for devices 0..4 only: the hole is noted, most series not back. */
    for (int d = 0; d < 5; d++) {
        char dev[16];
        int64_t ts;
        snprintf(dev, sizeof dev, "d%03d", d);
        assert_true(reading_at(HOLE_TO_S, d, &ts));
        assert_int_equal(feed(en, 0, dev, "temp", ts, 20 + (HOLE_TO_S % 7) * 0.1), TG_OK);
    }
    tg_engine_snapshot_dirty(en, store_put, &st);
    tg_engine_destroy(en);
    const struct kv *part = store_find(&st, "0/");
    assert_non_null(part);
    assert_int_equal((unsigned char)part->value[0], 2); /* version 2: it carries the hole */

    en = tg_engine_new(ec, rec_emit, &b);
    tg_engine_partition_add(en, 0);
    store_restore_all(en, &st);
    feed_range(en, HOLE_TO_S, 5, SECONDS);
    tg_engine_snapshot_dirty(en, store_put, &b_state);
    struct tg_engine_stats bst;
    tg_engine_stats(en, &bst);
    assert_int_equal(bst.partition_gaps, 0); /* the hole was the earlier engine's */
    tg_engine_destroy(en);

    assert_int_equal(a.n + b.n, ref.n);
    for (size_t i = 0; i < ref.n; i++) {
        const char *got = i < a.n ? a.lines[i] : b.lines[i - a.n];
        if (strcmp(got, ref.lines[i]) != 0)
            fail_msg("output %zu differs:\n  ref %s\n  got %s", i, ref.lines[i], got);
    }
    assert_int_equal(rec_opens(&ref, "silence"), 2);
    /* Every pair the restored engine wrote equals the reference's, the partition's first. */
    assert_non_null(store_find(&b_state, "0/"));
    for (size_t i = 0; i < b_state.n; i++) {
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)b_state.v[i].key_len, b_state.v[i].key);
        const struct kv *want = store_find(&ref_state, key);
        assert_non_null(want);
        assert_int_equal(b_state.v[i].value_len, want->value_len);
        assert_memory_equal(b_state.v[i].value, want->value, want->value_len);
    }
    rec_free(&ref);
    rec_free(&a);
    rec_free(&b);
    store_free(&ref_state);
    store_free(&st);
    store_free(&b_state);
    tg_engine_config_destroy(ec);
}

static int64_t get_i64(const char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | (unsigned char)p[i];
    return (int64_t)v;
}

/* The ring keeps the last TG_ENGINE_PARTITION_HOLES (4) holes, oldest first, and every hole
 * is counted. */
static void only_the_last_holes_are_kept(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(LIMIT_MS);
    struct rec r = {0};
    struct store st = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    int64_t ts = T0;
    for (int hole = 0; hole < 6; hole++) {
        for (int i = 0; i < 10; i++, ts += 1000)
            assert_int_equal(feed(en, 0, "solo", "temp", ts, 1), TG_OK);
        ts += 5000 + hole * 1000; /* a hole of 6 + hole s between two readings */
    }
    assert_int_equal(feed(en, 0, "solo", "temp", ts, 1), TG_OK);
    struct tg_engine_stats es;
    tg_engine_stats(en, &es);
    assert_int_equal(es.partition_gaps, 6);
    tg_engine_snapshot_dirty(en, store_put, &st);
    const struct kv *part = store_find(&st, "0/");
    assert_non_null(part);
    assert_int_equal(part->value_len, 11 + 4 * 16);
    assert_int_equal((unsigned char)part->value[10], 4);
    /* The oldest kept is the third hole: 8 s long, after the third run of readings. */
    int64_t from = get_i64(part->value + 11), to = get_i64(part->value + 19);
    assert_int_equal(to - from, 7000 + 1000);
    int64_t last_to = get_i64(part->value + 11 + 3 * 16 + 8);
    assert_int_equal(last_to, ts);
    tg_engine_destroy(en);
    rec_free(&r);
    store_free(&st);
    tg_engine_config_destroy(ec);
}

static void put_i64(unsigned char *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(((uint64_t)v >> (8 * i)) & 0xff);
}

/* Version 1 partition values (written before holes were kept) still restore; version 2
 * values the engine would never write are refused. */
static void partition_versions_old_read_bad_refused(void **state)
{
    (void)state;
    struct tg_engine_config *ec = hole_config(LIMIT_MS);
    struct rec r = {0};
    struct tg_engine *en = tg_engine_new(ec, rec_emit, &r);
    tg_engine_partition_add(en, 0);
    unsigned char v1[10] = {1, 1};
    put_i64(v1 + 2, T0);
    assert_int_equal(tg_engine_restore(en, "0/", 2, v1, sizeof v1), TG_OK);
    int64_t max_ts = 0;
    assert_true(tg_engine_partition_max_ts(en, 0, &max_ts));
    assert_int_equal(max_ts, T0);

    /* version 2, max_ts T0, holes (from, to) */
    struct {
        int n;
        int64_t h[3][2];
        tg_err want;
    } cases[] = {
        {1, {{T0 - 9000, T0 - 5000}}, TG_OK},
        {2, {{T0 - 9000, T0 - 5000}, {T0 - 4000, T0}}, TG_OK},
        {0, {{0, 0}}, TG_ERR_MALFORMED},                                       /* no hole */
        {1, {{T0 - 5000, T0 - 9000}}, TG_ERR_MALFORMED},                       /* backward */
        {1, {{T0 - 5000, T0 + 1}}, TG_ERR_MALFORMED},                          /* past max */
        {2, {{T0 - 4000, T0}, {T0 - 9000, T0 - 5000}}, TG_ERR_MALFORMED},      /* order */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        unsigned char v[64] = {2, 1};
        put_i64(v + 2, T0);
        v[10] = (unsigned char)cases[c].n;
        for (int i = 0; i < cases[c].n; i++) {
            put_i64(v + 11 + 16 * i, cases[c].h[i][0]);
            put_i64(v + 11 + 16 * i + 8, cases[c].h[i][1]);
        }
        size_t len = 11 + 16 * (size_t)cases[c].n;
        if (tg_engine_restore(en, "0/", 2, v, len) != cases[c].want)
            fail_msg("case %zu: not %s", c, cases[c].want == TG_OK ? "restored" : "refused");
        if (cases[c].want == TG_OK) /* one byte more or less is refused */
            assert_int_equal(tg_engine_restore(en, "0/", 2, v, len - 1), TG_ERR_MALFORMED);
    }
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(common_hole_is_not_every_device_silent),
        cmocka_unit_test(without_the_limit_every_device_alerts),
        cmocka_unit_test(lone_device_gap_is_a_hole),
        cmocka_unit_test(restore_after_the_hole_continues_byte_for_byte),
        cmocka_unit_test(partition_versions_old_read_bad_refused),
        cmocka_unit_test(only_the_last_holes_are_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
