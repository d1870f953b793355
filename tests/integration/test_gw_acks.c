/*
 * test_gw_acks.c - zero loss with durable acknowledgements (issue 12), the whole chain as a
 * user runs it: `tidegate-sim run --durable-acks` (each device its own MQTT connection running
 * the firmware core) -> Mosquitto (persistence off) -> tidegate ([ack] enabled) ->
 * tidegate-devkafka, with `tidegate-sim audit --follow` reading the topics during the run.
 *
 * Three fault schedules, each bounded (about a minute):
 *   - gateway_kill9_loop: kill -9 of the gateway every 4-7 s (seeded), KILLS times, with a
 *     Kafka outage across one of the kills;
 *   - broker_kill9_twice: kill -9 of Mosquitto (persistence off: it forgets every queued
 *     message and session) twice, restarted on the same port;
 *   - power_loss: SIGKILL of the gateway and the broker together, twice.
 *   - ingress_full_resent: a Kafka outage with the journal at its smallest cap (64 KiB,
 *     overflow = backpressure) until the gateway has refused readings under load; the nodes
 *     keep what no ack covers and send it again. Plugin mode only (TG_GW_MODE=plugin, issue
 *     14): there a full pipeline refuses messages inside the broker (counted in
 *     tidegate_messages_dropped_total{reason="ingress_full"}, at least REFUSED_MIN here) and
 *     only the resends save them; the daemon instead stops reading and the broker holds them
 *     (test_gw_overflow).
 * In plugin mode (test_gw_acks_plugin) the gateway is the broker: gateway_kill9_loop is then a
 * kill -9 of Mosquitto with the plugin and its restart on the same persistent journal, with the
 * acks published from inside the broker, and broker_kill9_twice and power_loss, which would
 * kill the same process, are skipped.
 * Verdict for each: the audit reports 0 lost and 0 duplicated, and every reading the devices
 * took is either delivered or was dropped from a full outbox (counted; none is expected
 * here), with nothing left waiting in an outbox after the drain. Duplicates are 0 because
 * the restarted gateway reads back what its last run sent after its last saved point
 * (reconcile_kafka.h); TG_ACKS_READBACK_OFF=1 switches that off (the test then fails).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "gateway_fixture.h"

/* The defaults make the CTest run; TG_ACKS_{DEVICES,RATE,DURATION,KILLS,COMMIT_MS,OUTAGE_MS,
 * DEDUP_SAVE_MS}
 * in the environment scale it up to the measurement (2,000 devices at 2 Hz, ten
 * kills, commit 50 ms, a 15 s Kafka outage), and TG_ACKS_OFF=1 runs the devices without
 * durable acks (the "before" figure: the test then fails on the loss).
 * Without TG_ACKS_DURATION the load is not a fixed length: it lasts until the last fault is
 * over, the gateway acks again, and POST_FAULT_MS has passed (the nodes' resends of what the
 * fault left unacked then happen under load too), and a SIGTERM then moves tidegate-sim to its
 * drain; RUN_CAP_S only bounds the run should the signal never come. */
static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}
#define DEVICES env_int("TG_ACKS_DEVICES", 200)
#define RATE env_int("TG_ACKS_RATE", 5)
#define DURATION_S env_int("TG_ACKS_DURATION", 30)
#define RUN_CAP_S 120
#define ACK_TIMEOUT_MS "2000"
/* Three ack timeouts: a node resends what no ack covered after one. */
#define POST_FAULT_MS 6000
#define KILLS env_int("TG_ACKS_KILLS", 3)
#define WAIT_MS 60000
#define SEED 20261203u

/* ingress_full_resent: refusals counted before Kafka comes back. */
#define REFUSED_MIN 500

enum fault { GATEWAY_KILLS, BROKER_KILLS, POWER_LOSS, INGRESS_FULL };

static int teardown(void **state)
{
    (void)state;
    tg_gw_reap_all();
    return 0;
}

/* A small seeded generator: the schedule is the same at every run. */
static int next_interval_ms(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return 4000 + (int)((*s >> 33) % 3001);
}

static void kill9_broker(struct tg_gw *gw)
{
    struct tg_harness_mosquitto *mq = tg_gw_mosquitto(gw);
    assert_int_equal(tg_harness_proc_signal(tg_harness_mosquitto_proc(mq), SIGKILL), 0);
}

/* Starts the killed broker again on its port (persistence off: it comes back empty). The
 * harness's restart reports the killed run's exit status, which is not a success here; the
 * broker is back when its port takes connections. */
static void restart_broker(struct tg_gw *gw)
{
    struct tg_harness_mosquitto *mq = tg_gw_mosquitto(gw);
    (void)tg_harness_mosquitto_restart(mq);
    assert_int_equal(tg_harness_tcp_probe(tg_harness_mosquitto_host(mq),
                                          tg_harness_mosquitto_port(mq)),
                     0);
}

/* The gateway is back and connected to the broker again (its own reconnect). */
static void wait_gateway_connected(struct tg_gw *gw)
{
    assert_true(tg_gw_wait_metric(gw, "tidegate_mqtt_connections", NULL, TG_GW_EQ, 1, WAIT_MS));
}

/* INGRESS_FULL: Kafka down until the gateway refused REFUSED_MIN readings (the journal is at
 * its cap by then), then back. The nodes' resends after their ack timeout are refused too while
 * it lasts, and are counted again. */
static void refuse_under_load(struct tg_gw *gw, const char *label)
{
    int64_t from = tg_harness_now_ms();
    assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_dropped_total",
                                  "reason=\"ingress_full\"", TG_GW_GE, REFUSED_MIN, WAIT_MS));
    double refused =
        tg_gw_metric(gw, "tidegate_messages_dropped_total", "reason=\"ingress_full\"");
    assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
    fprintf(stderr, "%s: %.0f readings refused (ingress_full) during a %lld ms Kafka outage\n",
            label, refused, (long long)(tg_harness_now_ms() - from));
}

static void run_with_faults(enum fault fault, const char *label)
{
    assert_int_equal(tg_gw_raise_open_files((unsigned long)DEVICES * 2 + 512), 0);
    /* TG_ACKS_DEDUP_SAVE_MS: journal.dedup_save_interval_ms, for the duplicate figures. */
    char dedup_set[96];
    snprintf(dedup_set, sizeof dedup_set, "journal.dedup_save_interval_ms=%d",
             env_int("TG_ACKS_DEDUP_SAVE_MS", 10000));
    /* On devkafka, one request in flight: its mock cluster does not check the idempotent
     * producer's sequence numbers, so a batch retried across the Kafka outage can be stored
     * twice, a duplicate of the mock's making (test_chaos_fleet.c). */
    const char *tier = getenv("TG_KAFKA_TIER");
    bool real = tier && strcmp(tier, "real") == 0;
    /* INGRESS_FULL: the smallest journal, so that an outage of seconds fills it. */
    const char *sets[6] = {dedup_set};
    size_t nsets = 1;
    if (!real)
        sets[nsets++] = "kafka.rdkafka.max.in.flight=1";
    if (fault == INGRESS_FULL) {
        sets[nsets++] = "journal.max_bytes=64K";
        sets[nsets++] = "journal.overflow=backpressure";
    }
    if (getenv("TG_ACKS_READBACK_OFF"))
        sets[nsets++] = "kafka.reconcile_on_start=false";
    const struct tg_gw_opts opts = {
        .sets = sets,
        .mqtt_extra_conf = "max_connections -1\nmax_queued_messages 1000000\n",
        .commit_interval_ms = env_int("TG_ACKS_COMMIT_MS", 100),
        .extra_ini = "[ack]\nenabled = true\nmin_interval_ms = 100\n",
    };
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *dir = tg_gw_dir(gw);
    char sim[1024], ledger[1024], broker[64], duration[16], devices[16], rate[16];
    snprintf(rate, sizeof rate, "%d", RATE);
    bool acks_off = getenv("TG_ACKS_OFF") != NULL;
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(ledger, sizeof ledger, "%s/ledger", dir);
    snprintf(broker, sizeof broker, "%s:%d", tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
             tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    /* The load's length: fixed when TG_ACKS_DURATION asks for it, else ended by SIGTERM
     * after the faults (see the top of the file). */
    const char *fixed_env = getenv("TG_ACKS_DURATION");
    bool fixed = fixed_env && *fixed_env;
    snprintf(duration, sizeof duration, "%d", fixed ? DURATION_S : RUN_CAP_S);
    snprintf(devices, sizeof devices, "%d", DEVICES);

    struct tg_harness_proc *audit = tg_gw_sim_audit_start(gw, ledger, 90);
    assert_non_null(audit);

    const char *run_argv[] = {sim, "run", "--broker", broker, "--devices", devices,
                              "--rate", rate, "--duration", duration, "--seed", "11",
                              "--ledger", ledger, "--drain", "45", "--durable-acks",
                              "--ack-timeout", ACK_TIMEOUT_MS, NULL};
    if (acks_off)
        run_argv[16] = NULL; /* from "--durable-acks" on */
    int64_t run_from = tg_harness_now_ms();
    struct tg_harness_proc *run = tg_harness_proc_start(dir, "sim-run", run_argv, NULL, 0);
    assert_non_null(run);
    assert_true(
        tg_gw_wait_metric(gw, "tidegate_acks_sent_total", NULL, TG_GW_GE, DEVICES, WAIT_MS));

    uint64_t rnd = SEED;
    int faults = fault == GATEWAY_KILLS ? KILLS : fault == INGRESS_FULL ? 1 : 2;
    for (int k = 0; k < faults; k++) {
        /* The schedule times the faults; it does not stand in for a condition. */
        int interval = next_interval_ms(&rnd);
        struct timespec ts = {interval / 1000, (long)(interval % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        assert_true(tg_harness_proc_running(run)); /* still under load */
        bool outage = fault == GATEWAY_KILLS && k == 1;
        int64_t outage_from = tg_harness_now_ms();
        if (outage)
            assert_int_equal(tg_gw_kafka_outage_begin(gw), 0);
        switch (fault) {
        case GATEWAY_KILLS:
            assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
            assert_int_equal(tg_gw_tidegate_start(gw), 0);
            break;
        case BROKER_KILLS:
            kill9_broker(gw);
            restart_broker(gw);
            wait_gateway_connected(gw);
            break;
        case POWER_LOSS:
            kill9_broker(gw);
            assert_int_equal(tg_gw_tidegate_kill9(gw), 0);
            restart_broker(gw);
            assert_int_equal(tg_gw_tidegate_start(gw), 0);
            break;
        case INGRESS_FULL:
            refuse_under_load(gw, label);
            break;
        }
        if (outage) {
            double sent = tg_gw_metric(gw, "tidegate_acks_sent_total", NULL);
            /* acks go on during the outage: the journal commit makes readings durable */
            assert_true(tg_gw_wait_metric(gw, "tidegate_acks_sent_total", NULL, TG_GW_GE,
                                          sent + DEVICES, WAIT_MS));
            int64_t until = outage_from + env_int("TG_ACKS_OUTAGE_MS", 0);
            while (tg_harness_now_ms() < until) { /* a longer outage, when asked for */
                struct timespec tick = {0, 100 * 1000000L};
                nanosleep(&tick, NULL);
            }
            assert_int_equal(tg_gw_kafka_outage_end(gw), 0);
        }
        fprintf(stderr, "%s: fault %d of %d after %d ms\n", label, k + 1, faults, interval);
    }
    if (!fixed) {
        /* The chain acks again after the last fault (a restarted gateway counts from 0),
         * the load goes on for POST_FAULT_MS, then the fleet stops sampling and drains. */
        int64_t last_fault = tg_harness_now_ms();
        double sent = tg_gw_metric(gw, "tidegate_acks_sent_total", NULL);
        assert_true(tg_gw_wait_metric(gw, "tidegate_acks_sent_total", NULL, TG_GW_GE,
                                      (isnan(sent) ? 0 : sent) + DEVICES, WAIT_MS));
        while (tg_harness_now_ms() < last_fault + POST_FAULT_MS) { /* the load's schedule */
            struct timespec tick = {0, 100 * 1000000L};
            nanosleep(&tick, NULL);
        }
        assert_true(tg_harness_proc_running(run)); /* the load lasted until now */
        assert_int_equal(tg_harness_proc_signal(run, SIGTERM), 0);
    }
    double run_s = (double)(tg_harness_now_ms() - run_from) / 1000.0;

    char *runlog;
    assert_int_equal(tg_gw_sim_run_wait(run, WAIT_MS + 60000, &runlog), 0);
    fprintf(stderr, "%s: node resends %lld (%d faults)\n", label, tg_gw_sim_run_resent(runlog),
            fault == GATEWAY_KILLS ? KILLS : 2);
    free(runlog);
    int status;
    assert_int_equal(tg_harness_proc_wait(audit, WAIT_MS + 60000, &status), 0);
    fprintf(stderr, "%s: ", label); /* the report that follows is this case's */
    json_t *root = tg_gw_sim_audit_report(audit, status);
    assert_non_null(root);
    long long released = tg_gw_json_int(root, "expected", "released");
    long long lost = tg_gw_json_int(root, "lost", NULL);
    long long duplicated = tg_gw_json_int(root, "duplicated", NULL);
    fprintf(stderr,
            "%s: released %lld, lost %lld, duplicated %lld, resent %lld, unconfirmed %lld, "
            "dropped %lld, gateway duplicates removed %.0f, acks sent %.0f (last gateway run)\n",
            label, released, lost, duplicated, tg_gw_json_int(root, "resent", NULL),
            tg_gw_json_int(root, "expected", "unconfirmed"),
            tg_gw_json_int(root, "expected", "dropped"),
            tg_gw_metric(gw, "tidegate_messages_duplicate_total", NULL),
            tg_gw_metric(gw, "tidegate_acks_sent_total", NULL));
    /* The fleet sampled at its rate for the whole run (less its ramp-up). */
    assert_true(released >= (long long)(DEVICES * RATE * ((fixed ? DURATION_S : run_s) - 5)));
    assert_int_equal(lost, 0);
    /* Not one twice after a kill: the restarted gateway reads back what its last run sent
     * (reconcile_kafka.h). Without durable acks a kill still loses (the node let go at
     * PUBACK), so the "before" run fails on the line above. ingress_full_resent once had 2
     * here: devkafka's outage had closed a connection with a Produce response still queued,
     * and its mock stored the retried batch again (tools/devkafka.c, drain_before_down;
     * test_devkafka_outage). */
    assert_int_equal(duplicated, 0);
    /* A resend arrives after newer readings; the audit tells it from reordering (the
     * gateway received it later) and the order the gateway was given holds. */
    assert_int_equal(tg_gw_json_int(root, "reordered", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "expected", "unconfirmed"), 0);
    assert_int_equal(tg_gw_json_int(root, "expected", "dropped"), 0);
    assert_int_equal(tg_gw_json_int(root, "unexpected", NULL), 0);
    assert_int_equal(tg_gw_json_int(root, "delivered", NULL), released);
    if (fault == INGRESS_FULL) /* the refusals were counted, and not lost */
        assert_true(tg_gw_metric_is(gw, "tidegate_messages_dropped_total",
                                    "reason=\"ingress_full\"", TG_GW_GE, REFUSED_MIN));
    json_decref(root);

    tg_harness_proc_destroy(audit);
    tg_harness_proc_destroy(run);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
}

static void gateway_kill9_loop(void **state)
{
    (void)state;
    run_with_faults(GATEWAY_KILLS, "gateway kill -9 loop");
}

/* TG_GW_MODE from the environment, as the fixture reads it: the cases that differ by mode
 * are skipped before a fixture is started. */
static bool plugin_mode(void)
{
    const char *mode = getenv("TG_GW_MODE");
    return mode && strcmp(mode, "plugin") == 0;
}

static void broker_kill9_twice(void **state)
{
    (void)state;
    if (plugin_mode())
        skip(); /* the broker is the gateway: gateway_kill9_loop */
    run_with_faults(BROKER_KILLS, "broker kill -9 twice");
}

static void power_loss(void **state)
{
    (void)state;
    if (plugin_mode())
        skip(); /* one process: gateway_kill9_loop */
    run_with_faults(POWER_LOSS, "gateway and broker SIGKILL together");
}

static void ingress_full_resent(void **state)
{
    (void)state;
    if (!plugin_mode())
        skip(); /* the daemon refuses nothing: it stops reading (test_gw_overflow) */
    run_with_faults(INGRESS_FULL, "ingress_full under load");
}

/* argv[1], if given: run only the tests whose name matches it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(gateway_kill9_loop, teardown),
        cmocka_unit_test_teardown(broker_kill9_twice, teardown),
        cmocka_unit_test_teardown(power_loss, teardown),
        cmocka_unit_test_teardown(ingress_full_resent, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
