/* Unit tests for gateway/journal.c: segments stored, scanned, read, updated and deleted;
 * totals; transactions; reopen; corruption handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "journal.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/tg-journal-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/journal.db", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0)
        return -1;
    free(fx);
    return 0;
}

static struct tg_journal *open_ok(const char *path)
{
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    tg_err e = tg_journal_open(path, &jr, &moved, err, sizeof err);
    if (e != TG_OK)
        fail_msg("open: %s", err);
    assert_false(moved);
    return jr;
}

static void put_seg(struct tg_journal *jr, uint64_t id, size_t len)
{
    uint8_t *blob = malloc(len);
    memset(blob, (int)(id & 0xff), len);
    struct tg_jseg_meta m = {.id = id, .first_rid = id, .last_rid = id + 9, .n_records = 10,
                             .created_ms = 1000 + (int64_t)id, .codec = TG_CODEC_ZSTD,
                             .raw_bytes = (uint32_t)len * 3, .data_bytes = (uint32_t)len};
    assert_int_equal(tg_journal_put(jr, &m, blob, len), TG_OK);
    free(blob);
}

struct scan_result {
    int n;
    uint64_t ids[16];
    size_t done_len[16];
    uint8_t done0[16];
    uint32_t data_bytes[16];
};

static tg_err scan_cb(void *ud, const struct tg_jseg_meta *m, const uint8_t *done, size_t done_len)
{
    struct scan_result *r = ud;
    assert_int_equal(m->last_rid, m->first_rid + 9);
    assert_int_equal(m->codec, TG_CODEC_ZSTD);
    assert_int_equal(m->raw_bytes, m->data_bytes * 3);
    r->ids[r->n] = m->id;
    r->done_len[r->n] = done_len;
    r->done0[r->n] = done_len ? done[0] : 0;
    r->data_bytes[r->n] = m->data_bytes;
    r->n++;
    return TG_OK;
}

static void store_scan_read_delete(void **state)
{
    struct fixture *fx = *state;
    struct tg_journal *jr = open_ok(fx->path);
    assert_int_equal(tg_journal_begin(jr), TG_OK);
    put_seg(jr, 30, 100);
    put_seg(jr, 10, 200);
    put_seg(jr, 20, 300);
    assert_int_equal(tg_journal_data_bytes(jr), 0); /* totals move on commit */
    assert_int_equal(tg_journal_commit(jr), TG_OK);
    assert_int_equal(tg_journal_data_bytes(jr), 600);
    assert_int_equal(tg_journal_segments(jr), 3);

    struct scan_result r = {0};
    assert_int_equal(tg_journal_scan(jr, scan_cb, &r), TG_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ids[0], 10); /* id order */
    assert_int_equal(r.ids[1], 20);
    assert_int_equal(r.ids[2], 30);
    assert_int_equal(r.done_len[0], 0);

    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_journal_read(jr, 20, &blob, &len), TG_OK);
    assert_int_equal(len, 300);
    assert_int_equal(blob[0], 20);
    assert_int_equal(blob[299], 20);
    free(blob);
    assert_int_equal(tg_journal_read(jr, 99, &blob, &len), TG_ERR_MISSING_FIELD);

    assert_int_equal(tg_journal_begin(jr), TG_OK);
    const uint8_t bits[2] = {0x0f, 0x01};
    assert_int_equal(tg_journal_set_done(jr, 10, bits, 2), TG_OK);
    assert_int_equal(tg_journal_delete(jr, 20), TG_OK);
    assert_int_equal(tg_journal_delete(jr, 21), TG_OK); /* absent: no change */
    assert_int_equal(tg_journal_commit(jr), TG_OK);
    assert_int_equal(tg_journal_data_bytes(jr), 300);
    assert_int_equal(tg_journal_segments(jr), 2);

    memset(&r, 0, sizeof r);
    assert_int_equal(tg_journal_scan(jr, scan_cb, &r), TG_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.done_len[0], 2);
    assert_int_equal(r.done0[0], 0x0f);

    /* Duplicate id is an error and the transaction can be rolled back. */
    assert_int_equal(tg_journal_begin(jr), TG_OK);
    put_seg(jr, 40, 10);
    uint8_t one = 0;
    struct tg_jseg_meta dup = {.id = 10, .first_rid = 10, .last_rid = 19, .codec = TG_CODEC_ZSTD};
    assert_int_not_equal(tg_journal_put(jr, &dup, &one, 1), TG_OK);
    tg_journal_rollback(jr);
    assert_int_equal(tg_journal_segments(jr), 2);
    assert_int_equal(tg_journal_read(jr, 40, &blob, &len), TG_ERR_MISSING_FIELD);

    char err[256];
    assert_int_equal(tg_journal_integrity_check(jr, err, sizeof err), TG_OK);
    tg_journal_close(jr);

    /* Reopen: everything committed is there, totals recomputed. */
    jr = open_ok(fx->path);
    assert_int_equal(tg_journal_data_bytes(jr), 300);
    assert_int_equal(tg_journal_segments(jr), 2);
    tg_journal_close(jr);
    tg_journal_close(NULL);
}

static void state_values(void **state)
{
    struct fixture *fx = *state;
    struct tg_journal *jr = open_ok(fx->path);
    void *val;
    size_t len;
    assert_int_equal(tg_journal_state_get(jr, "dedup", &val, &len), TG_ERR_MISSING_FIELD);
    assert_int_equal(tg_journal_begin(jr), TG_OK);
    assert_int_equal(tg_journal_state_put(jr, "dedup", "abc", 3), TG_OK);
    assert_int_equal(tg_journal_state_put(jr, "dedup", "abcd", 4), TG_OK);
    assert_int_equal(tg_journal_commit(jr), TG_OK);
    tg_journal_close(jr);
    jr = open_ok(fx->path);
    assert_int_equal(tg_journal_state_get(jr, "dedup", &val, &len), TG_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(val, "abcd", 4);
    free(val);
    tg_journal_close(jr);
}

static void corrupt_file_moved_aside(void **state)
{
    struct fixture *fx = *state;
    FILE *f = fopen(fx->path, "w");
    for (int i = 0; i < 1000; i++)
        fputs("this is not a database ", f);
    fclose(f);
    struct tg_journal *jr = NULL;
    bool moved = false;
    char err[512] = "";
    assert_int_equal(tg_journal_open(fx->path, &jr, &moved, err, sizeof err), TG_OK);
    assert_true(moved);
    assert_non_null(strstr(err, fx->path)); /* the problem was described */
    assert_int_equal(tg_journal_segments(jr), 0);
    tg_journal_close(jr);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q 'journal.db.corrupt-'", fx->dir);
    assert_int_equal(system(cmd), 0);
}

static void unopenable_path(void **state)
{
    (void)state;
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open("/nonexistent-dir/x/journal.db", &jr, &moved, err, sizeof err),
                     TG_ERR_IO);
    assert_null(jr);
    assert_non_null(strstr(err, "/nonexistent-dir/x/journal.db"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(store_scan_read_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(state_values, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_file_moved_aside, setup, teardown),
        cmocka_unit_test(unopenable_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
