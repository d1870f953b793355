/*
 * test_gw_journal_fault.c - the journal's disk fills under the running daemon (issue 11).
 *
 * The journal lives on a tmpfs mounted in a private mount namespace that the test makes for
 * itself before any thread exists (the daemon, its child, inherits it; nothing outside sees
 * the mount). Without the privilege to mount the test fails and says so. (Other journal I/O
 * errors, which a busy tmpfs cannot be made to give, are injected in test_pipeline_commit.)
 *
 *   stop_disk_full      Kafka up, the disk full under backpressure (the ingress paused with
 *                       messages in hand): SIGTERM ends the process within
 *                       shutdown_timeout_ms plus the final commit (exit 1 allowed: the final
 *                       commit cannot be written). Before the fix it waited for room forever.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "gateway_fixture.h"

#define WAIT_MS 30000

static bool have_namespace;
static char namespace_error[256];

/* Before cmocka or any thread: a process with several threads cannot unshare its mounts. */
static void private_namespace(void)
{
    if (unshare(CLONE_NEWNS) != 0) {
        snprintf(namespace_error, sizeof namespace_error, "unshare(CLONE_NEWNS): %s",
                 strerror(errno));
        return;
    }
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(namespace_error, sizeof namespace_error, "making / private: %s",
                 strerror(errno));
        return;
    }
    have_namespace = true;
}

struct disk {
    char *dir;
    char journal_set[700];
};

static void disk_mount(struct disk *d, const char *size)
{
    if (!have_namespace)
        fail_msg("cannot mount a filesystem here (%s): run as root or where user namespaces "
                 "are allowed", namespace_error);
    d->dir = tg_harness_tmpdir_new("journal-fault");
    assert_non_null(d->dir);
    char opts[64];
    snprintf(opts, sizeof opts, "%s,mode=0700", size);
    if (mount("tidegate-journal-fault", d->dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0)
        fail_msg("mount tmpfs on %s: %s", d->dir, strerror(errno));
    snprintf(d->journal_set, sizeof d->journal_set, "journal.path=%s/journal.db", d->dir);
}

static void disk_done(struct disk *d)
{
    if (umount2(d->dir, MNT_DETACH) != 0)
        fprintf(stderr, "umount %s: %s\n", d->dir, strerror(errno));
    tg_harness_tmpdir_done(d->dir);
    d->dir = NULL;
}

static bool unhealthy(void *ud) { return tg_gw_http_get(ud, "/healthz", NULL) == 503; }
static bool paused(void *ud) { return tg_gw_metric(ud, "tidegate_mqtt_paused", NULL) >= 1; }

static void stop_disk_full(void **state)
{
    (void)state;
    struct disk d = {0};
    disk_mount(&d, "size=512k");
    const char *const sets[] = {d.journal_set, "journal.overflow=backpressure",
                                "gateway.shutdown_timeout_ms=2000", NULL};
    const struct tg_gw_opts opts = {.kafka_tier = TG_GW_KAFKA_DEV, .sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "full-pub");
    assert_non_null(pub);
    assert_true(tg_gw_wait_metric(gw, "tidegate_kafka_up", NULL, TG_GW_EQ, 1, 20000));
    /* Kafka up, but slow enough that records wait to be journaled, and the disk fills. */
    char reply[256];
    assert_int_equal(tg_harness_devkafka_cmd(tg_gw_devkafka(gw), "rtt all 20000", reply,
                                             sizeof reply),
                     0);
    const struct tg_gw_plan plan = {.prefix = "full", .devices = 100, .seqs = 300, .boot = 1,
                                    .rate = 5000, .noise = true};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    if (!tg_harness_wait_until(unhealthy, gw, WAIT_MS) ||
        !tg_harness_wait_until(paused, gw, WAIT_MS)) {
        tg_gw_print_log_tail(gw, 20);
        fail_msg("the disk never filled with the ingress paused");
    }
    int64_t t0 = tg_harness_now_ms();
    int status = tg_gw_tidegate_term(gw, 2000 + 10000);
    fprintf(stderr, "SIGTERM with the disk full: exited after %lld ms, status %d\n",
            (long long)(tg_harness_now_ms() - t0), status);
    if (!(WIFEXITED(status)))
        tg_gw_print_log_tail(gw, 20);
    assert_true(status >= 0 && WIFEXITED(status)); /* not killed: it stopped by itself */

    (void)tg_gw_pub_plan_join(pub);
    tg_gw_pub_destroy(pub);
    tg_gw_destroy(gw);
    disk_done(&d);
}

int main(void)
{
    private_namespace();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(stop_disk_full, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
