/*
 * test_worker_stop.c - SIGTERM at moments the other tests do not pick: while the worker is
 * still joining its consumer group, and twice in a row. Each stop must end the process with
 * an exit status (0, or 1 for a second signal), never by a signal.
 *
 * The join: librdkafka 2.0.2 aborted (SIGABRT, an assertion on the cooperative-sticky
 * assignor's state) when a consumer that had joined its group but had no assignment yet was
 * destroyed (librdkafka issue 4312): about every second worker stopped during its join
 * crashed. On devkafka a join takes seconds, so SIGTERM at 0.4 s steps through the first
 * 3.2 s after start lands in that window several times; the old code failed this test in
 * every run seen.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "worker_fixture.h"

#define CYCLES 8
#define STEP_MS 400

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static bool running(void *ud)
{
    struct wfx_worker *w = ud;
    return tg_harness_file_contains(tg_harness_proc_stderr_path(w->proc), "running:");
}

static void pause_ms(int ms)
{
    /* Not a synchronisation: the moment of the stop is the variable under test. */
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void describe(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "status %#x", status);
}

static void test_sigterm_while_joining(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-stop");
    assert_non_null(dir);
    int failures = 0;
    for (int i = 0; i < CYCLES; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        struct wfx_worker *w = wfx_worker_start(dir, name, name, bs, "tidegate-anomaly", "a.",
                                                NULL);
        assert_true(tg_harness_wait_until(running, w, 20000));
        pause_ms((i + 1) * STEP_MS);
        bool had = tg_harness_file_contains(tg_harness_proc_stderr_path(w->proc),
                                            "assigned telemetry[");
        int status = wfx_worker_stop(w);
        char what[64];
        describe(status, what, sizeof what);
        fprintf(stderr, "SIGTERM %d ms after start (%s): %s\n", (i + 1) * STEP_MS,
                had ? "partitions held" : "still joining", what);
        if (!tg_harness_exited_ok(status)) {
            failures++;
            fprintf(stderr, "  see %s\n", tg_harness_proc_stderr_path(w->proc));
        }
        wfx_worker_destroy(w);
    }
    assert_int_equal(failures, 0);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

static void test_sigterm_twice(void **state)
{
    (void)state;
    struct wfx_cluster *cl = wfx_cluster_start(false);
    const char *bs = wfx_cluster_bootstrap(cl);
    char *dir = tg_harness_tmpdir_new("worker-stop2");
    assert_non_null(dir);
    struct wfx_input in = {.n_devices = 20, .base_ts_ms = wfx_recent_base_ms(60)};
    wfx_produce(bs, "telemetry", &in, 0, 60);
    struct wfx_worker *w = wfx_worker_start(dir, "w", "w", bs, "tidegate-anomaly", "a.", NULL);
    wfx_worker_wait_assigned(w, 60000);
    assert_int_equal(tg_harness_proc_signal(w->proc, SIGTERM), 0);
    assert_int_equal(tg_harness_proc_signal(w->proc, SIGTERM), 0);
    int status = 0;
    assert_int_equal(tg_harness_proc_wait(w->proc, 20000, &status), 0);
    char what[64];
    describe(status, what, sizeof what);
    fprintf(stderr, "two SIGTERMs: %s\n", what);
    /* 1 when the second signal cut the stop short, 0 when the stop was already done. */
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) <= 1);
    wfx_worker_destroy(w);
    wfx_cluster_destroy(cl);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigterm_while_joining, teardown),
        cmocka_unit_test_teardown(test_sigterm_twice, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
