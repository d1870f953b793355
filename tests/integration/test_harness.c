/*
 * test_harness.c - the integration-test harness's own promises: bounded runs, SIGTERM then
 * SIGKILL, environment overrides, line reading, temp dirs, and a Mosquitto start that fails
 * cleanly when its port cannot be had.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "harness.h"

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

static void test_run_collects_output_and_status(void **state)
{
    (void)state;
    const char *cat[] = {"cat", NULL};
    char *out = NULL;
    int status = tg_harness_run(cat, "line 1\nline 2\n", 14, &out, 10000);
    assert_true(tg_harness_exited_ok(status));
    assert_string_equal(out, "line 1\nline 2\n");
    free(out);

    const char *fail[] = {"sh", "-c", "exit 3", NULL};
    status = tg_harness_run(fail, NULL, 0, NULL, 10000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);

    const char *missing[] = {"tidegate-no-such-program", NULL};
    assert_int_equal(tg_harness_run(missing, NULL, 0, NULL, 10000), -1);
}

static void test_run_is_bounded(void **state)
{
    (void)state;
    const char *slow[] = {"sleep", "30", NULL};
    char *out = NULL;
    int64_t t0 = tg_harness_now_ms();
    assert_int_equal(tg_harness_run(slow, NULL, 0, &out, 300), -1);
    assert_true(tg_harness_now_ms() - t0 < 5000);
    assert_null(out);
}

static void test_stop_escalates_to_sigkill(void **state)
{
    (void)state;
    char *dir = tg_harness_tmpdir_new("harness");
    assert_non_null(dir);
    /* ignores SIGTERM (an ignored signal stays ignored across exec) */
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; exec sleep 30", NULL};
    struct tg_harness_proc *proc = tg_harness_proc_start(dir, "stubborn", argv, NULL,
                                                         TG_HARNESS_PROC_STDOUT_PIPE);
    assert_non_null(proc);
    char line[64];
    assert_true(tg_harness_proc_read_line(proc, line, sizeof line, 10000) >= 0);
    assert_string_equal(line, "ready"); /* the trap is set: SIGTERM is ignored from here */
    assert_true(tg_harness_proc_running(proc));
    int status = tg_harness_proc_stop(proc, 300);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_false(tg_harness_proc_running(proc));
    assert_int_equal(tg_harness_proc_stop(proc, 300), status); /* same answer again */
    tg_harness_proc_destroy(proc);
    tg_harness_tmpdir_done(dir);
}

static void test_env_pipes_and_logs(void **state)
{
    (void)state;
    char *dir = tg_harness_tmpdir_new("harness");
    assert_non_null(dir);
    const char *env[] = {"TG_HARNESS_TEST_VALUE=overridden", "HOME=/nonexistent", NULL};
    setenv("TG_HARNESS_TEST_VALUE", "original", 1);
    const char *argv[] = {"sh", "-c",
                          "echo \"value=$TG_HARNESS_TEST_VALUE home=$HOME\"; "
                          "echo to-stderr >&2; read line; echo \"got $line\"",
                          NULL};
    struct tg_harness_proc *proc =
        tg_harness_proc_start(dir, "shell", argv, env,
                              TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    assert_non_null(proc);
    char line[256];
    assert_true(tg_harness_proc_read_line(proc, line, sizeof line, 10000) >= 0);
    assert_string_equal(line, "value=overridden home=/nonexistent");
    assert_int_equal(tg_harness_proc_write(proc, "hello\n"), 0);
    assert_true(tg_harness_proc_read_line(proc, line, sizeof line, 10000) >= 0);
    assert_string_equal(line, "got hello");
    assert_int_equal(tg_harness_proc_read_line(proc, line, sizeof line, 10000), -1); /* EOF */
    int status = -1;
    assert_int_equal(tg_harness_proc_wait(proc, 10000, &status), 0);
    assert_true(tg_harness_exited_ok(status));
    assert_true(tg_harness_file_contains(tg_harness_proc_stderr_path(proc), "to-stderr\n"));
    tg_harness_proc_destroy(proc);

    /* done removes the directory and everything in it */
    char *copy = strdup(dir);
    tg_harness_tmpdir_done(dir);
    struct stat st;
    assert_int_equal(stat(copy, &st), -1);
    free(copy);
}

static void test_mosquitto_port_taken_fails_cleanly(void **state)
{
    (void)state;
    /* A second listener on a port we hold: every attempt fails with "Address already in
     * use"; the harness retries on fresh ports, then gives up with NULL. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char extra[64];
    snprintf(extra, sizeof extra, "listener %d 127.0.0.1", ntohs(sa.sin_port));
    int64_t t0 = tg_harness_now_ms();
    assert_null(tg_harness_mosquitto_start(0, extra));
    assert_true(tg_harness_now_ms() - t0 < 30000);
    close(fd);
    tg_harness_discard_leftovers(); /* the failed attempts' dirs: expected, not for debugging */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_run_collects_output_and_status, teardown),
        cmocka_unit_test_teardown(test_run_is_bounded, teardown),
        cmocka_unit_test_teardown(test_stop_escalates_to_sigkill, teardown),
        cmocka_unit_test_teardown(test_env_pipes_and_logs, teardown),
        cmocka_unit_test_teardown(test_mosquitto_port_taken_fails_cleanly, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
