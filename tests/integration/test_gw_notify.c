/*
 * test_gw_notify.c - the daemon under a service manager (issue 13): the sd_notify protocol as
 * systemd would receive it, on a Unix datagram socket the test binds and names in
 * NOTIFY_SOCKET, with the sender's pid checked through SCM_CREDENTIALS as systemd does.
 *
 *   - started while the MQTT broker is down: watchdog pings and a STATUS line saying it waits
 *     for the broker arrive, READY=1 does not; once the broker is up, READY=1 arrives;
 *   - WATCHDOG=1 keeps coming, with a STATUS line giving MQTT, Kafka and the backlog;
 *   - a stuck pipeline thread (the TIDEGATE_TEST_STALL_FILE hook) stops the pings, and they
 *     resume when it is released;
 *   - SIGTERM: STOPPING=1, and the clean stop exits 0.
 */
/* struct ucred and SCM_CREDENTIALS need _GNU_SOURCE, which the build defines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gateway_fixture.h"

#define WATCHDOG_USEC "600000" /* pings every 200 ms */
#define WAIT_MS 30000
#define SILENCE_MS 2000        /* ten ping intervals */

struct notify_rx {
    int fd;
    pid_t pid;              /* only datagrams from this process count */
    bool broker_started;    /* set by the test before it starts the broker */
    int ready, ready_early, watchdog, status, stopping, foreign;
    char last_status[512];
};

static int rx_open(struct notify_rx *rx, const char *path)
{
    memset(rx, 0, sizeof *rx);
    rx->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (rx->fd < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, path);
    int on = 1;
    if (bind(rx->fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        setsockopt(rx->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
        return -1;
    return 0;
}

static void rx_parse(struct notify_rx *rx, char *msg)
{
    for (char *save = NULL, *line = strtok_r(msg, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "READY=1") == 0) {
            rx->ready++;
            if (!rx->broker_started)
                rx->ready_early++;
        } else if (strcmp(line, "WATCHDOG=1") == 0) {
            rx->watchdog++;
        } else if (strcmp(line, "STOPPING=1") == 0) {
            rx->stopping++;
        } else if (strncmp(line, "STATUS=", 7) == 0) {
            rx->status++;
            snprintf(rx->last_status, sizeof rx->last_status, "%s", line + 7);
        }
    }
}

/* Takes every datagram waiting, waiting up to wait_ms for the first. */
static void rx_poll(struct notify_rx *rx, int wait_ms)
{
    for (;;) {
        struct pollfd pfd = {.fd = rx->fd, .events = POLLIN};
        if (poll(&pfd, 1, wait_ms) <= 0)
            return;
        wait_ms = 0;
        char buf[4096];
        union {
            struct cmsghdr h;
            char space[CMSG_SPACE(sizeof(struct ucred))];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                            .msg_controllen = sizeof ctl};
        ssize_t n = recvmsg(rx->fd, &mh, 0);
        if (n < 0)
            return;
        buf[n] = '\0';
        pid_t from = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred uc;
                memcpy(&uc, CMSG_DATA(c), sizeof uc);
                from = uc.pid;
            }
        if (from != rx->pid) {
            rx->foreign++;
            continue;
        }
        rx_parse(rx, buf);
    }
}

struct until {
    struct notify_rx *rx;
    int min_watchdog;
    const char *status_has;     /* NULL: any */
    const char *status_lacks;   /* NULL: none */
    int min_ready, min_stopping;
};

static bool rx_until(void *ud)
{
    struct until *u = ud;
    rx_poll(u->rx, 20);
    return u->rx->watchdog >= u->min_watchdog && u->rx->ready >= u->min_ready &&
           u->rx->stopping >= u->min_stopping &&
           (!u->status_has || strstr(u->rx->last_status, u->status_has)) &&
           (!u->status_lacks || !strstr(u->rx->last_status, u->status_lacks));
}

static bool file_exists(void *ud) { return access(ud, F_OK) == 0; }

static void notify_ready_watchdog_status(void **state)
{
    (void)state;
    /* The fixture's own start (no NOTIFY_SOCKET: the daemon must work without one). */
    struct tg_gw *gw = tg_gw_new(NULL);
    assert_non_null(gw);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, WAIT_MS)));
    struct tg_harness_mosquitto *mq = tg_gw_mosquitto(gw);
    assert_int_equal(tg_harness_mosquitto_stop(mq), 0);

    char sock[512], stall[512], stalled[600], ini[512], bin[1024];
    snprintf(sock, sizeof sock, "%s/notify.sock", tg_gw_dir(gw));
    snprintf(stall, sizeof stall, "%s/stall", tg_gw_dir(gw));
    snprintf(stalled, sizeof stalled, "%s.stalled", stall);
    snprintf(ini, sizeof ini, "%s/tidegate.ini", tg_gw_dir(gw));
    snprintf(bin, sizeof bin, "%s/tidegate", tg_harness_bin_dir());
    struct notify_rx rx;
    assert_int_equal(rx_open(&rx, sock), 0);

    char env_sock[600], env_stall[600];
    snprintf(env_sock, sizeof env_sock, "NOTIFY_SOCKET=%s", sock);
    snprintf(env_stall, sizeof env_stall, "TIDEGATE_TEST_STALL_FILE=%s", stall);
    const char *env[] = {env_sock, "WATCHDOG_USEC=" WATCHDOG_USEC, env_stall,
                         "TIDEGATE_BOARDS_DIR=/nonexistent/tidegate-test-boards", NULL};
    const char *argv[] = {bin, "-c", ini, NULL};
    struct tg_harness_proc *proc = tg_harness_proc_start(tg_gw_dir(gw), "tidegate-notify", argv,
                                                         env, 0);
    assert_non_null(proc);
    rx.pid = tg_harness_proc_pid(proc);

    /* Broker down: alive (pings, a status saying why it is not ready), not ready. */
    struct until waiting = {.rx = &rx, .min_watchdog = 3,
                            .status_has = "waiting for the MQTT broker"};
    assert_true(tg_harness_wait_until(rx_until, &waiting, WAIT_MS));
    assert_int_equal(rx.ready, 0);
    fprintf(stderr, "before the broker: %d pings, status \"%s\"\n", rx.watchdog,
            rx.last_status);

    /* Broker up: READY=1, after it and not before. */
    rx.broker_started = true;
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    struct until ready = {.rx = &rx, .min_ready = 1};
    assert_true(tg_harness_wait_until(rx_until, &ready, WAIT_MS));
    assert_int_equal(rx.ready_early, 0);
    assert_int_equal(rx.ready, 1);

    /* Running: pings go on, the status gives MQTT, Kafka and the backlog. */
    struct until running = {.rx = &rx, .min_watchdog = rx.watchdog + 3,
                            .status_has = "mqtt 1/1 connected, kafka up, backlog 0 records",
                            .status_lacks = "waiting"};
    assert_true(tg_harness_wait_until(rx_until, &running, WAIT_MS));
    fprintf(stderr, "running: status \"%s\"\n", rx.last_status);

    /* A stuck pipeline thread: the pings stop. */
    FILE *f = fopen(stall, "w");
    assert_non_null(f);
    fclose(f);
    assert_true(tg_harness_wait_until(file_exists, stalled, WAIT_MS));
    rx_poll(&rx, 0); /* what was sent before the thread stalled */
    int before = rx.watchdog;
    int64_t end = tg_harness_now_ms() + SILENCE_MS;
    while (tg_harness_now_ms() < end)
        rx_poll(&rx, (int)(end - tg_harness_now_ms()));
    fprintf(stderr, "stalled: %d pings in %d ms\n", rx.watchdog - before, SILENCE_MS);
    assert_int_equal(rx.watchdog, before);
    assert_true(tg_harness_proc_running(proc));

    /* Released: they resume. */
    assert_int_equal(unlink(stall), 0);
    struct until resumed = {.rx = &rx, .min_watchdog = before + 2};
    assert_true(tg_harness_wait_until(rx_until, &resumed, WAIT_MS));

    /* SIGTERM: STOPPING=1, clean exit. */
    assert_int_equal(tg_harness_proc_signal(proc, SIGTERM), 0);
    struct until stopping = {.rx = &rx, .min_stopping = 1};
    assert_true(tg_harness_wait_until(rx_until, &stopping, WAIT_MS));
    int status = -1;
    assert_int_equal(tg_harness_proc_wait(proc, WAIT_MS, &status), 0);
    assert_true(tg_harness_exited_ok(status));
    fprintf(stderr, "datagrams from other processes ignored: %d\n", rx.foreign);

    tg_harness_proc_destroy(proc);
    close(rx.fd);
    tg_gw_destroy(gw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(notify_ready_watchdog_status, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
