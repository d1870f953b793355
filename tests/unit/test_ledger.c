/*
 * test_ledger.c - sim/ledger.c: the fates of readings as the firmware core reports them, the
 * file written and read back (ranges with holes, every fate, the fault counters), its size
 * for 10,000 devices x one hour, and malformed files rejected with file:line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "unit_tmp.h"

struct fixture {
    char dir[TG_UNIT_PATH_MAX];
    char path[TG_UNIT_PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(tg_unit_tmpdir_new(fx->dir, sizeof fx->dir, "ledger"), 0);
    tg_unit_path(fx->path, sizeof fx->path, fx->dir, "ledger");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    int rc = tg_unit_tmpdir_remove(fx->dir);
    free(fx);
    return rc;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void take_release(struct tg_ledger *lg, int dev, uint64_t boot, uint64_t from,
                         uint64_t to)
{
    for (uint64_t s = from; s <= to; s++) {
        assert_int_equal(tg_ledger_reading(lg, dev, TG_NODE_EV_TAKEN, boot, s), 0);
        assert_int_equal(tg_ledger_reading(lg, dev, TG_NODE_EV_RELEASED, boot, s), 0);
    }
}

static void fates_follow_the_events(void **state)
{
    (void)state;
    struct tg_ledger *lg = tg_ledger_new();
    assert_non_null(lg);
    int d = tg_ledger_add_device(lg, "sim-00001");
    assert_int_equal(d, 0);
    assert_int_equal(tg_ledger_add_device(lg, "sim-00002"), 1);
    /* Ids are checked: the file holds one word per id, and each device is registered once. */
    assert_int_equal(tg_ledger_add_device(lg, "sim-00001"), -1);
    assert_int_equal(tg_ledger_add_device(lg, "bad id"), -1);
    assert_int_equal(tg_ledger_add_device(lg, ""), -1);
    assert_int_equal(tg_ledger_reading(lg, 7, TG_NODE_EV_TAKEN, 1, 0), -1);

    for (uint64_t s = 0; s < 6; s++)
        assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_TAKEN, 3, s), 0);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 0), TG_LEDGER_UNCONFIRMED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 6), TG_LEDGER_UNKNOWN);
    assert_int_equal(tg_ledger_fate(lg, d, 2, 0), TG_LEDGER_UNKNOWN);
    assert_int_equal(tg_ledger_fate(lg, 1, 3, 0), TG_LEDGER_UNKNOWN);

    /* Released out of order, one dropped, one dropped and then confirmed after all (the
     * broker has it: it is expected in Kafka), one released and then reported dropped. */
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 3, 2), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 3, 0), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_DROPPED, 3, 1), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_DROPPED, 3, 3), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 3, 3), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_RELEASED, 3, 4), 0);
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_DROPPED, 3, 4), 0);
    /* A second TAKEN of a seq with a fate does not make it unconfirmed again. */
    assert_int_equal(tg_ledger_reading(lg, d, TG_NODE_EV_TAKEN, 3, 2), 0);

    assert_int_equal(tg_ledger_fate(lg, d, 3, 0), TG_LEDGER_RELEASED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 1), TG_LEDGER_DROPPED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 2), TG_LEDGER_RELEASED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 3), TG_LEDGER_RELEASED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 4), TG_LEDGER_RELEASED);
    assert_int_equal(tg_ledger_fate(lg, d, 3, 5), TG_LEDGER_UNCONFIRMED);

    assert_int_equal(tg_ledger_malformed(lg, d, 7), 0);
    assert_int_equal(tg_ledger_malformed(lg, d, 7), 0);
    assert_int_equal(tg_ledger_malformed_count(lg, d, 7), 2);
    assert_int_equal(tg_ledger_malformed_count(lg, d, 8), 0);
    assert_int_equal(tg_ledger_duplicate(lg, 1), 0);
    assert_int_equal(tg_ledger_skewed(lg, 1, 1, 4), 0);
    assert_int_equal(tg_ledger_skewed(lg, 1, 1, 4), 0); /* the same reading: once */
    assert_true(tg_ledger_is_skewed(lg, 1, 1, 4));
    assert_false(tg_ledger_is_skewed(lg, 1, 1, 5));
    assert_int_equal(tg_ledger_skewed(lg, 9, 1, 1), -1);

    struct tg_ledger_totals t;
    tg_ledger_totals(lg, &t);
    assert_int_equal(t.devices, 2);
    assert_int_equal(t.released, 4);
    assert_int_equal(t.dropped, 1);
    assert_int_equal(t.unconfirmed, 1);
    assert_int_equal(t.malformed, 2);
    assert_int_equal(t.duplicates, 1);
    assert_int_equal(t.skewed, 1);
    struct tg_ledger_faults f;
    tg_ledger_device_faults(lg, 1, &f);
    assert_int_equal(f.malformed, 0);
    assert_int_equal(f.duplicates, 1);
    assert_int_equal(f.skewed, 1);
    assert_int_equal(tg_ledger_find_device(lg, "sim-00002"), 1);
    assert_int_equal(tg_ledger_find_device(lg, "sim-00003"), -1);
    assert_string_equal(tg_ledger_device_id(lg, 0), "sim-00001");
    tg_ledger_destroy(lg);
    tg_ledger_destroy(NULL);
}

struct visit {
    uint64_t boot[32], seq[32];
    size_t n, stop_after;
};

static bool visit_fn(void *ud, uint64_t boot, uint64_t seq)
{
    struct visit *v = ud;
    v->boot[v->n] = boot;
    v->seq[v->n] = seq;
    v->n++;
    return v->n < v->stop_after;
}

static void round_trip_with_holes(void **state)
{
    struct fixture *fx = *state;
    struct tg_ledger *lg = tg_ledger_new();
    assert_non_null(lg);
    int a = tg_ledger_add_device(lg, "sim-00042");
    int b = tg_ledger_add_device(lg, "node_b.1");
    int c = tg_ledger_add_device(lg, "silent");
    assert_true(a >= 0 && b >= 0 && c >= 0);
    /* Two boots, registered newest first to check they are kept in order. */
    take_release(lg, a, 2, 0, 57);
    assert_int_equal(tg_ledger_reading(lg, a, TG_NODE_EV_TAKEN, 2, 58), 0);
    assert_int_equal(tg_ledger_reading(lg, a, TG_NODE_EV_DROPPED, 2, 58), 0);
    take_release(lg, a, 2, 59, 99);
    assert_int_equal(tg_ledger_reading(lg, a, TG_NODE_EV_TAKEN, 2, 100), 0);
    assert_int_equal(tg_ledger_reading(lg, a, TG_NODE_EV_TAKEN, 2, 101), 0);
    take_release(lg, a, 1, 0, 9);
    assert_int_equal(tg_ledger_malformed(lg, a, UINT64_C(0xfedcba9876543210)), 0);
    assert_int_equal(tg_ledger_connected(lg, a), 0);
    assert_int_equal(tg_ledger_connected(lg, a), 0);
    assert_int_equal(tg_ledger_set_boot(lg, a, 1), 0);
    tg_ledger_set_run(lg, 1700000000000, 1700000060000);
    /* Holes everywhere: released 0,2,4,...; the odd ones unconfirmed. */
    for (uint64_t s = 0; s < 10; s++) {
        assert_int_equal(tg_ledger_reading(lg, b, TG_NODE_EV_TAKEN, 7, s), 0);
        if (s % 2 == 0)
            assert_int_equal(tg_ledger_reading(lg, b, TG_NODE_EV_RELEASED, 7, s), 0);
    }
    assert_int_equal(tg_ledger_duplicate(lg, b), 0);
    assert_int_equal(tg_ledger_skewed(lg, b, 7, 2), 0);
    assert_int_equal(tg_ledger_skewed(lg, b, 7, 3), 0);

    assert_int_equal(tg_ledger_write(lg, fx->path), 0);
    const char *text = slurp(fx->path);
    assert_non_null(strstr(text, "tidegate-sim-ledger 1\n"));
    assert_non_null(strstr(text, "run 1700000000000 1700000060000\n"));
    assert_non_null(strstr(text, "device sim-00042 boot=1 connected=2 malformed=1\n"
                                 "malformed fedcba9876543210\n"
                                 "released 1 0-9\n"
                                 "released 2 0-57,59-99\n"
                                 "dropped 2 58\n"
                                 "unconfirmed 2 100-101\n"));
    assert_non_null(strstr(text, "device node_b.1 duplicates=1 skewed=2\n"
                                 "skewed 7 2-3\n"
                                 "released 7 0,2,4,6,8\n"
                                 "unconfirmed 7 1,3,5,7,9\n"
                                 "device silent\n"
                                 "end 3\n"));

    char err[256];
    struct tg_ledger *rd = tg_ledger_read(fx->path, err, sizeof err);
    if (!rd)
        fail_msg("%s", err);
    struct tg_ledger_totals t1, t2;
    tg_ledger_totals(lg, &t1);
    tg_ledger_totals(rd, &t2);
    assert_memory_equal(&t1, &t2, sizeof t1);
    assert_int_equal(t2.released, 10 + 99 + 5);
    assert_int_equal(t2.unconfirmed, 2 + 5);
    assert_int_equal(t2.dropped, 1);
    assert_int_equal(t2.connected_devices, 1);
    assert_int_equal(tg_ledger_device_boot(rd, a), 1);
    assert_int_equal(tg_ledger_malformed_count(rd, a, UINT64_C(0xfedcba9876543210)), 1);
    assert_true(tg_ledger_is_skewed(rd, b, 7, 3));
    assert_false(tg_ledger_is_skewed(rd, b, 7, 4));
    int64_t run_start, run_end;
    assert_true(tg_ledger_run(rd, &run_start, &run_end));
    assert_true(run_start == 1700000000000 && run_end == 1700000060000);
    for (int d = 0; d < 3; d++) {
        assert_string_equal(tg_ledger_device_id(rd, d), tg_ledger_device_id(lg, d));
        for (uint64_t boot = 0; boot < 9; boot++)
            for (uint64_t s = 0; s < 110; s++)
                assert_int_equal(tg_ledger_fate(rd, d, boot, s), tg_ledger_fate(lg, d, boot, s));
    }
    struct visit v = {.stop_after = 32};
    tg_ledger_each_released(rd, b, visit_fn, &v);
    assert_int_equal(v.n, 5);
    assert_int_equal(v.seq[4], 8);
    assert_int_equal(v.boot[0], 7);
    /* (boot, seq) order, and stopping early. */
    v = (struct visit){.stop_after = 12};
    tg_ledger_each_released(rd, a, visit_fn, &v);
    assert_int_equal(v.n, 12);
    assert_int_equal(v.boot[9], 1);
    assert_int_equal(v.seq[9], 9);
    assert_int_equal(v.boot[10], 2);
    assert_int_equal(v.seq[10], 0);

    /* Writing again replaces the file whole and leaves no temporary file behind. */
    assert_int_equal(tg_ledger_write(rd, fx->path), 0);
    assert_string_equal(slurp(fx->path), text);
    char other[TG_UNIT_PATH_MAX];
    tg_unit_path(other, sizeof other, fx->dir, "no/such/dir/ledger");
    assert_int_equal(tg_ledger_write(rd, other), -1);
    assert_int_equal(errno, ENOENT);
    tg_ledger_destroy(rd);
    tg_ledger_destroy(lg);
}

/* The size claim of ledger.h: 10,000 devices x 3,600 readings (one hour at 1 Hz) with a
 * dropped reading and two unconfirmed ones each. */
static void ten_thousand_devices_for_an_hour_stay_small(void **state)
{
    struct fixture *fx = *state;
    struct tg_ledger *lg = tg_ledger_new();
    assert_non_null(lg);
    const int devices = 10000;
    const uint64_t seqs = 3600;
    clock_t t0 = clock();
    for (int i = 0; i < devices; i++) {
        char id[32];
        snprintf(id, sizeof id, "sim-%05d", i + 1);
        assert_int_equal(tg_ledger_add_device(lg, id), i);
    }
    /* Interleaved as in a run: second by second, every device takes one and the previous
     * one is confirmed. */
    for (uint64_t s = 0; s < seqs; s++)
        for (int i = 0; i < devices; i++) {
            assert_int_equal(tg_ledger_reading(lg, i, TG_NODE_EV_TAKEN, 1, s), 0);
            if (s == 0)
                continue;
            enum tg_node_event ev =
                s - 1 == (uint64_t)(i % 3000) + 100 ? TG_NODE_EV_DROPPED : TG_NODE_EV_RELEASED;
            if (s - 1 < seqs - 2)
                assert_int_equal(tg_ledger_reading(lg, i, ev, 1, s - 1), 0);
        }
    double fill_s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    struct tg_ledger_totals t;
    tg_ledger_totals(lg, &t);
    assert_int_equal(t.released, (uint64_t)devices * (seqs - 3));
    assert_int_equal(t.dropped, devices);
    assert_int_equal(t.unconfirmed, (uint64_t)devices * 2);

    t0 = clock();
    assert_int_equal(tg_ledger_write(lg, fx->path), 0);
    double write_s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    struct stat st;
    assert_int_equal(stat(fx->path, &st), 0);
    t0 = clock();
    char err[256];
    struct tg_ledger *rd = tg_ledger_read(fx->path, err, sizeof err);
    double read_s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (!rd)
        fail_msg("%s", err);
    struct tg_ledger_totals t2;
    tg_ledger_totals(rd, &t2);
    assert_memory_equal(&t, &t2, sizeof t);
    printf("ledger of %d devices x %llu readings: %lld bytes (%.1f bytes/device); "
           "CPU: recording %.2f s, write %.2f s, read %.2f s\n",
           devices, (unsigned long long)seqs, (long long)st.st_size,
           (double)st.st_size / devices, fill_s, write_s, read_s);
    /* "A few MB at most": this one is well under. */
    assert_true(st.st_size < 2 * 1024 * 1024);
    tg_ledger_destroy(rd);
    tg_ledger_destroy(lg);
}

struct bad_case {
    const char *text;
    const char *where; /* ":<line>:" expected in the message */
    const char *what;  /* a fragment of the message */
};

static void malformed_files_name_file_and_line(void **state)
{
    struct fixture *fx = *state;
    static const struct bad_case cases[] = {
        {"", "", "empty file"},
        {"tidegate-sim-ledger 2\nend 0\n", ":1:", "not a ledger"},
        {"tidegate-sim-ledger 1\nreleased 1 0-5\nend 0\n", ":2:", "before any \"device\""},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 5-3\nend 1\n", ":3:", "bad range"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 0-5,4-9\nend 1\n", ":3:",
         "not above the previous"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 0-5,6\nend 1\n", ":3:",
         "not above the previous"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 0-5\n# c\ndropped 1 5\nend 1\n", ":5:",
         "another fate"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 0-5\nreleased 1 7\nend 1\n", ":4:",
         "second line"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased x 1\nend 1\n", ":3:", "<boot>"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 1;2\nend 1\n", ":3:", "range list"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 99999999999999999999\nend 1\n", ":3:",
         "expected a seq"},
        {"tidegate-sim-ledger 1\ndevice a\ndevice a\nend 2\n", ":3:", "listed twice"},
        {"tidegate-sim-ledger 1\ndevice a b\nend 1\n", ":2:", "bad device attribute"},
        {"tidegate-sim-ledger 1\ndevice a malformed=-1\nend 1\n", ":2:",
         "bad device attribute"},
        {"tidegate-sim-ledger 1\ndevice a/b\nend 1\n", ":2:", "bad device id"},
        {"tidegate-sim-ledger 1\ndevice a\nstolen 1 2\nend 1\n", ":3:", "unknown keyword"},
        {"tidegate-sim-ledger 1\ndevice a\nend 2\n", ":3:", "the file listed 1"},
        {"tidegate-sim-ledger 1\ndevice a\nreleased 1 0-9\n", ":4:", "truncated"},
        {"tidegate-sim-ledger 1\ndevice a\nend 1\ndevice b\n", ":4:", "after the \"end\""},
        {"tidegate-sim-ledger 1\nnonsense\nend 0\n", ":2:", "<keyword>"},
        {"tidegate-sim-ledger 1\ndevice a malformed=2\nmalformed 0000000000000001\nend 1\n",
         ":3:", "1 payload hashes for malformed=2"},
        {"tidegate-sim-ledger 1\ndevice a malformed=1\nend 1\n", ":3:",
         "without its \"malformed\" line"},
        {"tidegate-sim-ledger 1\ndevice a malformed=1\ndevice b\nend 2\n", ":3:",
         "without its \"malformed\" line"},
        {"tidegate-sim-ledger 1\ndevice a\nmalformed 0000000000000001\nend 1\n", ":3:",
         "without malformed=N"},
        {"tidegate-sim-ledger 1\ndevice a malformed=1\nmalformed 12\nend 1\n", ":3:",
         "bad payload hash"},
        {"tidegate-sim-ledger 1\ndevice a\nrun 5 6\nend 1\n", ":3:", "before the devices"},
        {"tidegate-sim-ledger 1\nrun 6 5\nend 0\n", ":2:", "before the devices"},
        {"tidegate-sim-ledger 1\ndevice a\nskewed 1 3-2\nend 1\n", ":3:", "bad range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_unit_write_file(fx->path, cases[i].text);
        char err[256] = "";
        struct tg_ledger *lg = tg_ledger_read(fx->path, err, sizeof err);
        if (lg)
            fail_msg("case %zu read without error", i);
        char where[TG_UNIT_PATH_MAX + 16];
        snprintf(where, sizeof where, "%s%s", fx->path, cases[i].where);
        if (strncmp(err, where, strlen(where)) != 0 || !strstr(err, cases[i].what))
            fail_msg("case %zu: got \"%s\", expected \"%s...%s\"", i, err, where,
                     cases[i].what);
    }
    char err[256];
    char missing[TG_UNIT_PATH_MAX];
    tg_unit_path(missing, sizeof missing, fx->dir, "missing");
    assert_null(tg_ledger_read(missing, err, sizeof err));
    assert_non_null(strstr(err, "No such file"));
    /* Comments and blank lines are fine. */
    tg_unit_write_file(fx->path, "tidegate-sim-ledger 1\n\n# hello\ndevice a skewed=3\n"
                         "unconfirmed 4 0-1\nend 1\n");
    struct tg_ledger *lg = tg_ledger_read(fx->path, err, sizeof err);
    if (!lg)
        fail_msg("%s", err);
    assert_int_equal(tg_ledger_fate(lg, 0, 4, 1), TG_LEDGER_UNCONFIRMED);
    tg_ledger_destroy(lg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fates_follow_the_events),
        cmocka_unit_test_setup_teardown(round_trip_with_holes, setup, teardown),
        cmocka_unit_test_setup_teardown(ten_thousand_devices_for_an_hour_stay_small, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(malformed_files_name_file_and_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
