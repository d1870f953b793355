/* Unit tests for gateway/journal.c: segments stored, scanned, read, updated and deleted;
 * totals; transactions; reopen; corruption handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "unit_tmp.h"

struct fixture {
    char dir[TG_UNIT_PATH_MAX];
    char path[TG_UNIT_PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(tg_unit_tmpdir_new(fx->dir, sizeof fx->dir, "journal"), 0);
    tg_unit_path(fx->path, sizeof fx->path, fx->dir, "journal.db");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (tg_unit_tmpdir_remove(fx->dir) != 0)
        return -1;
    free(fx);
    return 0;
}

static struct tg_journal *open_ok(const char *path)
{
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    tg_err e = tg_journal_open(path, NULL, &jr, &moved, err, sizeof err);
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

static tg_err scan_cb(void *ud, const struct tg_jseg_meta *m, const uint8_t *done, size_t done_len,
                      const uint8_t *data, size_t data_len)
{
    /* The data handed over is what was stored (put_seg: len bytes of id & 0xff). */
    assert_int_equal(data_len, m->data_bytes);
    assert_true(data_len > 0 && data[0] == (uint8_t)(m->id & 0xff) &&
                data[data_len - 1] == (uint8_t)(m->id & 0xff));
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
    assert_int_equal(tg_journal_open(fx->path, NULL, &jr, &moved, err, sizeof err), TG_OK);
    assert_true(moved);
    assert_non_null(strstr(err, fx->path)); /* the problem was described */
    assert_int_equal(tg_journal_segments(jr), 0);
    tg_journal_close(jr);
    char cmd[TG_UNIT_PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q 'journal.db.corrupt-'", fx->dir);
    assert_int_equal(system(cmd), 0);
}

static void unopenable_path(void **state)
{
    (void)state;
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(
        tg_journal_open("/nonexistent-dir/x/journal.db", NULL, &jr, &moved, err, sizeof err),
        TG_ERR_IO);
    assert_null(jr);
    assert_non_null(strstr(err, "/nonexistent-dir/x/journal.db"));
}

/* --- issue 11: corrupt rows, lock, empty path, zero-byte file, schema version, WAL bound --- */

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

struct seen {
    int n;
    uint64_t ids[16];
    bool had_done[16];
};

static tg_err seen_cb(void *ud, const struct tg_jseg_meta *m, const uint8_t *done, size_t done_len,
                      const uint8_t *data, size_t data_len)
{
    struct seen *r = ud;
    (void)done_len;
    (void)data;
    (void)data_len;
    r->ids[r->n] = m->id;
    r->had_done[r->n] = done != NULL;
    r->n++;
    return TG_OK;
}

static void corrupt_rows_skipped_counted_removed(void **state)
{
    struct fixture *fx = *state;
    struct tg_journal *jr = open_ok(fx->path);
    assert_int_equal(tg_journal_begin(jr), TG_OK);
    put_seg(jr, 10, 50);   /* good: rids 10..19 */
    put_seg(jr, 100, 50);  /* good: rids 100..109, gets a done bitmap of the wrong length */
    assert_int_equal(tg_journal_commit(jr), TG_OK);
    tg_journal_close(jr);
    /* What a damaged or hand-edited file can hold. */
    exec_sql(fx->path,
             "UPDATE segment SET done = x'0102030405' WHERE id = 100;"
             /* inverted range; id != first rid; range too long; more records than the
              * range; unknown codec; impossible size; text, negative size; a text bitmap */
             "INSERT INTO segment VALUES (200, 200, 150, 1, 0, 1, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (300, 301, 310, 1, 0, 1, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (400, 400, 400 + 1000000000, 1, 0, 1, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (500, 500, 509, 11, 0, 1, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (600, 600, 609, 1, 0, 9, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (700, 700, 709, 1, 0, 1, 4000000000, x'00', NULL);"
             "INSERT INTO segment VALUES (800, 800, 809, 1, 0, 1, 'ten', x'00', NULL);"
             "INSERT INTO segment VALUES (900, 900, 909, 1, 0, 1, -5, x'00', NULL);"
             "INSERT INTO segment VALUES (1000, 1000, 1009, 1, 0, 1, 10, x'00', 'text');"
             /* a good row, then one overlapping it */
             "INSERT INTO segment VALUES (2000, 2000, 2009, 10, 0, 1, 10, x'00', NULL);"
             "INSERT INTO segment VALUES (2005, 2005, 2010, 1, 0, 1, 10, x'00', NULL);");
    struct tg_metrics *m = tg_metrics_new();
    struct tg_journal_opts jo = {.metrics = m};
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open(fx->path, &jo, &jr, &moved, err, sizeof err), TG_OK);
    struct seen r = {0};
    assert_int_equal(tg_journal_scan(jr, seen_cb, &r), TG_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.ids[0], 10);
    assert_int_equal(r.ids[1], 100);
    assert_false(r.had_done[1]); /* a bitmap of the wrong length is not trusted */
    assert_int_equal(r.ids[2], 2000);
    assert_int_equal(tg_journal_corrupt_rows(jr), 10);
    assert_true(tg_metrics_find_value(m, "tidegate_journal_corrupt_rows_total", NULL) == 10.0);
    assert_int_equal(tg_journal_segments(jr), 3); /* the corrupt rows are gone */
    tg_journal_close(jr);
    tg_metrics_destroy(m);
    jr = open_ok(fx->path);
    memset(&r, 0, sizeof r);
    assert_int_equal(tg_journal_scan(jr, seen_cb, &r), TG_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(tg_journal_corrupt_rows(jr), 0);
    tg_journal_close(jr);
}

static void second_open_refused_while_locked(void **state)
{
    struct fixture *fx = *state;
    struct tg_journal *jr = open_ok(fx->path);
    struct tg_journal *jr2 = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open(fx->path, NULL, &jr2, &moved, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_null(jr2);
    assert_non_null(strstr(err, "in use by another process"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(err, pid));

    /* Another process is refused the same way (flock: per open file, any process). */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct tg_journal *c = NULL;
        char cerr[512];
        tg_err ce = tg_journal_open(fx->path, NULL, &c, &moved, cerr, sizeof cerr);
        _exit(ce == TG_ERR_CONFIG && strstr(cerr, "in use") ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    tg_journal_close(jr); /* released: the next one may open it */
    jr = open_ok(fx->path);
    tg_journal_close(jr);
}

static void empty_path_refused(void **state)
{
    (void)state;
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open("", NULL, &jr, &moved, err, sizeof err), TG_ERR_CONFIG);
    assert_null(jr);
    assert_non_null(strstr(err, "journal.path is empty"));
}

static void zero_byte_file_logged(void **state)
{
    struct fixture *fx = *state;
    tg_unit_write_file(fx->path, "");
    char log_path[TG_UNIT_PATH_MAX];
    tg_unit_path(log_path, sizeof log_path, fx->dir, "log");
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    tg_log_set_fd(fd);
    struct tg_journal *jr = open_ok(fx->path);
    tg_log_set_fd(2);
    close(fd);
    tg_journal_close(jr);
    char text[2048] = "";
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_non_null(strstr(text, "is an empty file (0 bytes)"));
}

static void newer_schema_refused(void **state)
{
    struct fixture *fx = *state;
    tg_journal_close(open_ok(fx->path));
    exec_sql(fx->path, "PRAGMA user_version = 2;");
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open(fx->path, NULL, &jr, &moved, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_non_null(strstr(err, "schema version 2, newer than this gateway's (1)"));
    /* A journal of the current version opens, and a fresh one is stamped with it. */
    exec_sql(fx->path, "PRAGMA user_version = 1;");
    tg_journal_close(open_ok(fx->path));
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* With Kafka keeping up, every commit writes a segment and deletes an older one. The WAL
 * stays within its bound through it all and is gone after a clean close. */
static void wal_bounded_and_truncated_on_close(void **state)
{
    struct fixture *fx = *state;
    struct tg_journal_opts jo = {.max_bytes = 1 << 20}; /* WAL bound: 128 KiB */
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    assert_int_equal(tg_journal_open(fx->path, &jo, &jr, &moved, err, sizeof err), TG_OK);
    assert_int_equal(tg_journal_wal_bound(jr), 128 << 10);
    char wal[TG_UNIT_PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", fx->path);
    long wal_max = 0;
    for (uint64_t i = 1; i <= 200; i++) {
        assert_int_equal(tg_journal_begin(jr), TG_OK);
        put_seg(jr, i * 10, 20000);
        if (i > 2)
            assert_int_equal(tg_journal_delete(jr, (i - 2) * 10), TG_OK);
        assert_int_equal(tg_journal_commit(jr), TG_OK);
        long sz = file_size(wal);
        if (sz > wal_max)
            wal_max = sz;
        assert_int_equal(tg_journal_wal_bytes(jr), sz < 0 ? 0 : sz);
    }
    assert_true(wal_max <= 128 << 10);
    tg_journal_close(jr);
    assert_true(file_size(wal) <= 0); /* absent, or empty */
}

/* SQLite cannot put an in-memory database in WAL mode: the journal must refuse to run
 * without it rather than carry on with weaker durability. (A filesystem without shared
 * memory support fails the same way.) */
static void wal_mode_must_take(void **state)
{
    struct fixture *fx = *state;
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(fx->dir), 0); /* ":memory:.lock" lands here */
    struct tg_journal *jr = NULL;
    bool moved;
    char err[512] = "";
    tg_err e = tg_journal_open(":memory:", NULL, &jr, &moved, err, sizeof err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(e, TG_ERR_CONFIG);
    assert_null(jr);
    if (!strstr(err, "journal_mode=WAL did not take (memory)"))
        fail_msg("unexpected error: %s", err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(store_scan_read_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(state_values, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_file_moved_aside, setup, teardown),
        cmocka_unit_test(unopenable_path),
        cmocka_unit_test_setup_teardown(corrupt_rows_skipped_counted_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(second_open_refused_while_locked, setup, teardown),
        cmocka_unit_test(empty_path_refused),
        cmocka_unit_test_setup_teardown(zero_byte_file_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(wal_bounded_and_truncated_on_close, setup, teardown),
        cmocka_unit_test_setup_teardown(wal_mode_must_take, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
