/* Unit tests for worker/state_fold.c: what a restore hands to the engine from a state
 * partition (the latest committed value per key, in last-write order, tombstones dropping
 * keys, nothing after the last marker), and that its memory follows the keys, not the
 * records read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state_fold.h"

struct seen {
    char text[4096];
    size_t calls;
};

static void collect(void *ud, const char *key, size_t key_len, const void *value,
                    size_t value_len)
{
    struct seen *sn = ud;
    size_t used = strlen(sn->text);
    snprintf(sn->text + used, sizeof sn->text - used, "%.*s=%.*s;", (int)key_len, key,
             (int)value_len, (const char *)value);
    sn->calls++;
}

static void put(struct tg_state_fold *sf, const char *key, const char *value)
{
    assert_int_equal(tg_state_fold_put(sf, key, strlen(key), value, value ? strlen(value) : 0),
                     TG_OK);
}

static void latest_committed_value_per_key(void **state)
{
    (void)state;
    struct tg_state_fold *sf = tg_state_fold_new();
    assert_non_null(sf);
    struct seen sn = {"", 0};
    /* Nothing committed yet: nothing handed out. */
    put(sf, "0/a/t", "a1");
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 0);
    put(sf, "0/b/t", "b1");
    put(sf, "0/", "p1");
    put(sf, "0/a/t", "a2"); /* a's last write is now after b's and the partition's */
    tg_state_fold_commit(sf);
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 3);
    assert_string_equal(sn.text, "0/b/t=b1;0/=p1;0/a/t=a2;");
    /* A tombstone drops b; an empty value is one too; c comes and stays. */
    put(sf, "0/b/t", NULL);
    put(sf, "0/c/t", "c1");
    put(sf, "0/d/t", "d1");
    tg_state_fold_commit(sf);
    put(sf, "0/d/t", "");
    tg_state_fold_commit(sf);
    /* After the last marker: a transaction that never committed changes nothing. */
    put(sf, "0/a/t", "a3");
    put(sf, "0/c/t", NULL);
    put(sf, "0/e/t", "e1");
    memset(&sn, 0, sizeof sn);
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 3);
    assert_string_equal(sn.text, "0/=p1;0/a/t=a2;0/c/t=c1;");
    /* ... until a marker follows it. */
    tg_state_fold_commit(sf);
    memset(&sn, 0, sizeof sn);
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 3);
    assert_string_equal(sn.text, "0/=p1;0/a/t=a3;0/e/t=e1;");
    /* A tombstone brought back to life. */
    put(sf, "0/b/t", "b2");
    tg_state_fold_commit(sf);
    memset(&sn, 0, sizeof sn);
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 4);
    assert_string_equal(sn.text, "0/=p1;0/a/t=a3;0/e/t=e1;0/b/t=b2;");
    tg_state_fold_destroy(sf);
    tg_state_fold_destroy(NULL);
}

/* An uncompacted state log: 1,000 series checkpointed 300 times (50 minutes of checkpoints
 * every 10 s), 335-byte snapshots, plus a storm of 100,000 tombstones for 1,000 keys. The
 * fold holds one value per key: under 0.5 MB where the records read are about 100 MB. */
static void memory_follows_keys_not_records(void **state)
{
    (void)state;
    struct tg_state_fold *sf = tg_state_fold_new();
    assert_non_null(sf);
    enum { SERIES = 1000, CHECKPOINTS = 300, VALUE = 335 };
    static char value[VALUE];
    char key[64];
    size_t read_bytes = 0;
    for (int c = 0; c < CHECKPOINTS; c++) {
        for (int s = 0; s < SERIES; s++) {
            memset(value, 'a' + (c + s) % 26, sizeof value);
            int n = snprintf(key, sizeof key, "3/dev-%05d/temperature_c", s);
            assert_int_equal(tg_state_fold_put(sf, key, (size_t)n, value, sizeof value), TG_OK);
            read_bytes += (size_t)n + sizeof value;
        }
        tg_state_fold_commit(sf);
    }
    for (int t = 0; t < 100 * 1000; t++) {
        int n = snprintf(key, sizeof key, "3/ghost-%03d/x", t % 1000);
        assert_int_equal(tg_state_fold_put(sf, key, (size_t)n, NULL, 0), TG_OK);
        read_bytes += (size_t)n;
    }
    tg_state_fold_commit(sf);
    size_t held = tg_state_fold_bytes(sf);
    fprintf(stderr, "%zu bytes of records read, %zu keys and %zu bytes held\n", read_bytes,
            tg_state_fold_keys(sf), held);
    assert_int_equal(tg_state_fold_keys(sf), 2 * SERIES);
    assert_true(held < (size_t)SERIES * (VALUE + 64) + 1000 * 64);
    /* The last checkpoint's values are the ones handed out. */
    struct seen sn = {"", 0};
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), SERIES);
    tg_state_fold_destroy(sf);
}

/* A spread checkpoint that never reached its @ckpt: what was put since the last commit is
 * forgotten, what was committed before stays, and later puts commit as usual. */
static void rollback_forgets_pending_only(void **state)
{
    (void)state;
    struct tg_state_fold *sf = tg_state_fold_new();
    assert_non_null(sf);
    put(sf, "0/a/t", "a1");
    tg_state_fold_commit(sf);
    put(sf, "0/a/t", "a2");
    put(sf, "0/b/t", "b1");
    tg_state_fold_rollback(sf);
    put(sf, "0/c/t", "c1");
    tg_state_fold_commit(sf);
    struct seen sn = {"", 0};
    assert_int_equal(tg_state_fold_foreach(sf, collect, &sn), 2);
    assert_string_equal(sn.text, "0/a/t=a1;0/c/t=c1;");
    tg_state_fold_destroy(sf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(latest_committed_value_per_key),
        cmocka_unit_test(memory_follows_keys_not_records),
        cmocka_unit_test(rollback_forgets_pending_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
