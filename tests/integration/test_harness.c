/*
 * test_harness.c - the integration-test harness's own promises: bounded runs, SIGTERM then
 * SIGKILL, environment overrides, line reading, temp dirs, and Mosquitto's ports: a start whose
 * port was taken moves to another, one that cannot get any fails cleanly, and a restart whose
 * port was taken says so.
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
#include "harness_internal.h" /* harness__port_source */

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

/* Listens on port (0: any free one) of 127.0.0.1, as another program holding it would, and
 * returns the socket; *bound gets the port. */
static int hold_port(int port, int *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail_msg("bind 127.0.0.1:%d: %s", port, strerror(errno));
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *bound = ntohs(sa.sin_port);
    return fd;
}

static void test_mosquitto_port_taken_fails_cleanly(void **state)
{
    (void)state;
    /* A second listener on a port we hold: every attempt fails with "Address already in
     * use"; the harness retries on fresh ports, then gives up with NULL. */
    int held;
    int fd = hold_port(0, &held);
    char extra[64];
    snprintf(extra, sizeof extra, "listener %d 127.0.0.1", held);
    int64_t t0 = tg_harness_now_ms();
    assert_null(tg_harness_mosquitto_start(0, extra));
    assert_true(tg_harness_now_ms() - t0 < 30000);
    close(fd);
    tg_harness_discard_leftovers(); /* the failed attempts' dirs: expected, not for debugging */
}

/* The free-port race: between tg_harness_free_port() and Mosquitto's bind, another program
 * takes the port. A port source hands out a port this test holds first; the start must see
 * "Address already in use", take another port and succeed there. */
static int taken_port = -1;
static int port_requests;

static int taken_then_free(void)
{
    return port_requests++ == 0 ? taken_port : tg_harness_free_port();
}

static void test_mosquitto_takes_another_port_when_one_is_taken(void **state)
{
    (void)state;
    int fd = hold_port(0, &taken_port);
    port_requests = 0;
    harness__port_source = taken_then_free;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    harness__port_source = tg_harness_free_port;
    assert_non_null(mq);
    assert_int_equal(port_requests, 2); /* the taken one, then one that worked */
    assert_int_not_equal(tg_harness_mosquitto_port(mq), taken_port);
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", tg_harness_mosquitto_port(mq)), 0);
    tg_harness_mosquitto_destroy(mq);
    close(fd);
}

/* A restart keeps its port (clients reconnect to the same address), so a port taken while
 * the broker was down is reported as a failed restart, not papered over with another. */
static void test_mosquitto_restart_reports_its_port_taken(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    int port = tg_harness_mosquitto_port(mq);
    assert_int_equal(tg_harness_mosquitto_stop(mq), 0);
    int held;
    int fd = hold_port(port, &held);
    assert_int_equal(tg_harness_mosquitto_restart(mq), -1);
    assert_int_equal(tg_harness_mosquitto_port(mq), port);
    close(fd);
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0); /* free again: back on it */
    assert_int_equal(tg_harness_tcp_probe("127.0.0.1", port), 0);
    tg_harness_mosquitto_destroy(mq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_run_collects_output_and_status, teardown),
        cmocka_unit_test_teardown(test_run_is_bounded, teardown),
        cmocka_unit_test_teardown(test_stop_escalates_to_sigkill, teardown),
        cmocka_unit_test_teardown(test_env_pipes_and_logs, teardown),
        cmocka_unit_test_teardown(test_mosquitto_port_taken_fails_cleanly, teardown),
        cmocka_unit_test_teardown(test_mosquitto_takes_another_port_when_one_is_taken,
                                  teardown),
        cmocka_unit_test_teardown(test_mosquitto_restart_reports_its_port_taken, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
