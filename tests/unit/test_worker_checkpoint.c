/*
 * test_worker_checkpoint.c - the engine contracts the worker's checkpoints and its silence
 * sweep rest on (worker/consumer_txn.c, worker/consumer.c):
 *
 *   1. tg_engine_snapshot_dirty_if() hands over the chosen partitions' changes only; the
 *      others' stay pending, every one of them, for a later call.
 *   2. Restoring a checkpoint taken at record C and processing records C..O again with the
 *      outputs thrown away (the previous owner committed them) leaves an engine whose outputs
 *      from O on are, byte for byte, those of an engine that never stopped; and the outputs
 *      thrown away are exactly those the first engine gave for C..O.
 *   3. tg_engine_sweep_clocks(): a partition whose clock stopped (a stall) gets no silence
 *      alert however long the wall clock runs, one whose clock runs does, one with no clock
 *      (-1: the worker is behind on it) is not swept at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define TEST_ENGINE_OWN_STORE /* a fixed-size store of its own, below */
#include "test_engine_util.h"

#define DEVICES 12
#define SECONDS 900
#define BASE_MS INT64_C(1700000000000)

/* Device d lives in partition d % 3; one reading a second; a spike per device and a level
 * shift on every fourth, so alerts open and close. */
static int32_t part_of(int d)
{
    return d % 3;
}

static double value_at(int d, int s)
{
    double v = 20.0 + d % 5 + 2.0 * sin(s / 80.0) + 0.1 * sin(s * 1.7 + d) + 0.1 * cos(s * 0.9);
    if (s == 150 + 13 * d)
        v += 20.0;
    if (d % 4 == 0 && s >= 400 + 5 * d)
        v += 5.0;
    return v;
}

/* Records are numbered in order: second s, device d is record s * DEVICES + d. */
static void feed_record(struct tg_engine *en, int k)
{
    int s = k / DEVICES, d = k % DEVICES;
    char dev[16];
    snprintf(dev, sizeof dev, "dev-%02d", d);
    assert_int_equal(feed(en, part_of(d), dev, "t", BASE_MS + (int64_t)s * 1000, value_at(d, s)),
                     TG_OK);
}

static struct tg_engine *engine_new(const struct tg_engine_config *ec, struct rec *r)
{
    struct tg_engine *en = tg_engine_new(ec, rec_emit, r);
    assert_non_null(en);
    for (int32_t p = 0; p < 3; p++)
        assert_int_equal(tg_engine_partition_add(en, p), TG_OK);
    return en;
}

/* The compacted state topic: latest value per key, in first-write order. */
struct kv {
    char *key;
    size_t key_len;
    void *value;
    size_t value_len;
};
struct store {
    struct kv v[256];
    size_t n;
    size_t put;              /* pairs handed over */
    size_t put_by_part[3];
};

static void store_put(void *ud, int32_t partition, const void *key, size_t key_len,
                      const void *value, size_t value_len)
{
    struct store *st = ud;
    st->put++;
    if (partition >= 0 && partition < 3)
        st->put_by_part[partition]++;
    struct kv *e = NULL;
    for (size_t i = 0; i < st->n && !e; i++)
        if (st->v[i].key_len == key_len && memcmp(st->v[i].key, key, key_len) == 0)
            e = &st->v[i];
    if (!e) {
        assert_true(st->n < 256);
        e = &st->v[st->n++];
        e->key = malloc(key_len);
        memcpy(e->key, key, key_len);
        e->key_len = key_len;
    } else {
        free(e->value);
    }
    e->value = malloc(value_len ? value_len : 1);
    if (value_len)
        memcpy(e->value, value, value_len);
    e->value_len = value_len;
}

static void store_free(struct store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->v[i].key);
        free(st->v[i].value);
    }
    st->n = 0;
}

static bool only_partition_1(void *ud, int32_t partition)
{
    (void)ud;
    return partition == 1;
}

static void snapshot_of_chosen_partitions_only(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    assert_non_null(ec);
    struct rec r = {0};
    struct tg_engine *en = engine_new(ec, &r);
    for (int k = 0; k < 30 * DEVICES; k++)
        feed_record(en, k);
    struct store st = {0};
    tg_engine_snapshot_dirty_if(en, only_partition_1, NULL, store_put, &st);
    /* Partition 1: its 4 series and its partition state; nothing of 0 and 2. */
    assert_int_equal(st.put_by_part[1], DEVICES / 3 + 1);
    assert_int_equal(st.put_by_part[0] + st.put_by_part[2], 0);
    /* Nothing changed since in partition 1; 0 and 2 still have all their changes pending. */
    struct store rest = {0};
    tg_engine_snapshot_dirty(en, store_put, &rest);
    assert_int_equal(rest.put_by_part[1], 0);
    assert_int_equal(rest.put_by_part[0], DEVICES / 3 + 1);
    assert_int_equal(rest.put_by_part[2], DEVICES / 3 + 1);
    struct store none = {0};
    tg_engine_snapshot_dirty(en, store_put, &none);
    assert_int_equal(none.put, 0);
    store_free(&st);
    store_free(&rest);
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

static void checkpoint_then_silent_replay_equals_no_stop(void **state)
{
    (void)state;
    char err[512];
    struct tg_engine_config *ec = make_config(NULL, err, sizeof err);
    assert_non_null(ec);
    const int total = SECONDS * DEVICES;
    /* The checkpoint before the spikes, the crash after some of them. */
    const int ckpt = 120 * DEVICES + 5, crash = 260 * DEVICES + 7;

    /* The first owner: snapshots only at the checkpoint, outputs recorded by range. */
    struct rec before = {0};
    struct tg_engine *en = engine_new(ec, &before);
    struct store st = {0};
    for (int k = 0; k < total; k++) {
        if (k == ckpt) {
            tg_engine_snapshot_dirty(en, store_put, &st);
            assert_true(before.n > 0); /* aggregates of the first minutes */
        }
        if (k == crash)
            break;
        feed_record(en, k);
    }
    size_t at_ckpt = 0;
    /* Count the outputs up to the checkpoint by running again: deterministic. */
    {
        struct rec r = {0};
        struct tg_engine *e2 = engine_new(ec, &r);
        for (int k = 0; k < ckpt; k++)
            feed_record(e2, k);
        at_ckpt = r.n;
        tg_engine_destroy(e2);
        rec_free(&r);
    }
    tg_engine_destroy(en);

    /* The reference: never stopped. */
    struct rec ref = {0};
    en = engine_new(ec, &ref);
    for (int k = 0; k < total; k++)
        feed_record(en, k);
    tg_engine_flush(en);
    tg_engine_destroy(en);
    assert_true(ref.opens >= DEVICES); /* the input does hold incidents */

    /* The next owner: restores the checkpoint, replays ckpt..crash silently, goes on. */
    struct rec replayed = {0}, after = {0};
    en = engine_new(ec, &replayed);
    for (size_t i = 0; i < st.n; i++)
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                           st.v[i].value_len),
                         TG_OK);
    for (int k = ckpt; k < crash; k++)
        feed_record(en, k);
    size_t n_replayed = replayed.n;
    tg_engine_destroy(en);
    /* The replay's outputs are the first owner's for ckpt..crash. */
    assert_int_equal(at_ckpt + n_replayed, before.n);
    for (size_t i = 0; i < n_replayed; i++)
        assert_string_equal(replayed.lines[i], before.lines[at_ckpt + i]);

    /* Again, this time going on past the crash with outputs kept. */
    en = engine_new(ec, &after);
    for (size_t i = 0; i < st.n; i++)
        assert_int_equal(tg_engine_restore(en, st.v[i].key, st.v[i].key_len, st.v[i].value,
                                           st.v[i].value_len),
                         TG_OK);
    for (int k = ckpt; k < total; k++)
        feed_record(en, k);
    tg_engine_flush(en);
    tg_engine_destroy(en);
    /* before (up to the crash) + after (from the crash on) = the reference, line for line. */
    assert_int_equal(before.n + (after.n - n_replayed), ref.n);
    for (size_t i = 0; i < ref.n; i++) {
        const char *got = i < before.n ? before.lines[i] : after.lines[n_replayed + i - before.n];
        if (strcmp(got, ref.lines[i]) != 0)
            fail_msg("output %zu differs:\n  got %s\n  ref %s", i, got, ref.lines[i]);
    }
    store_free(&st);
    rec_free(&before);
    rec_free(&ref);
    rec_free(&replayed);
    rec_free(&after);
    tg_engine_config_destroy(ec);
}

static void sweep_on_partition_clocks(void **state)
{
    (void)state;
    char err[512];
    const char *sets[] = {"detect.silence=on", "detect.silence_factor=3", NULL};
    struct tg_engine_config *ec = make_config(sets, err, sizeof err);
    assert_non_null(ec);
    struct rec r = {0};
    struct tg_engine *en = engine_new(ec, &r);
    for (int k = 0; k < 60 * DEVICES; k++)
        feed_record(en, k);
    /* Every partition seen moving at wall time W; then nothing arrives. */
    const int64_t w = BASE_MS + 100000;
    int64_t clocks[3] = {w, w, w};
    tg_engine_sweep_clocks(en, clocks, 3, w);
    size_t opens = r.opens;
    /* Partition 0 flows (its clock runs; its devices are the silent ones), partition 1 is
     * stalled (its clock stopped at W), partition 2 is not judged (-1). The wall clock is 60 s
     * on: far past 3 periods of 1 s. */
    for (int i = 1; i <= 60; i++) {
        int64_t now = w + i * 1000;
        clocks[0] = now;
        clocks[1] = w;
        clocks[2] = -1;
        tg_engine_sweep_clocks(en, clocks, 3, now);
    }
    size_t silence_p0 = 0, silence_other = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (strncmp(r.lines[i], "A open ", 7) != 0 || !strstr(r.lines[i], "/silence/"))
            continue;
        int d = atoi(strstr(r.lines[i], "dev-") + 4);
        if (part_of(d) == 0)
            silence_p0++;
        else
            silence_other++;
    }
    assert_int_equal(r.opens - opens, silence_p0 + silence_other);
    assert_int_equal(silence_p0, DEVICES / 3);
    assert_int_equal(silence_other, 0);
    tg_engine_destroy(en);
    rec_free(&r);
    tg_engine_config_destroy(ec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(snapshot_of_chosen_partitions_only),
        cmocka_unit_test(checkpoint_then_silent_replay_equals_no_stop),
        cmocka_unit_test(sweep_on_partition_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
