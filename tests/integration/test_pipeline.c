/* Integration test of gateway/pipeline.c against tidegate-devkafka, without MQTT: messages go
 * in through the entry point (tg_pipeline_offer) and the test looks at what a user sees, the
 * metrics and the Kafka topic (read with kcat). Covers delivery in per-device order, dead
 * letters and duplicates, a restart that resends the journaled backlog first, and each
 * overflow policy's counting at a small cap. The daemon-level guarantee tests (test_gw_*)
 * add MQTT on top. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "gateway_config.h"
#include "harness.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"

struct env {
    struct tg_harness_devkafka *dk;
    char *dir;
    char journal[512];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct tg_config *make_config(struct env *e, const char *const *extra)
{
    struct tg_config *cfg = tg_gateway_config_new();
    assert_non_null(cfg);
    char kv[1024];
    snprintf(kv, sizeof kv, "kafka.brokers=%s", tg_harness_devkafka_bootstrap(e->dk));
    assert_int_equal(tg_config_set(cfg, kv), TG_OK);
    snprintf(kv, sizeof kv, "journal.path=%s", e->journal);
    assert_int_equal(tg_config_set(cfg, kv), TG_OK);
    const char *const common[] = {"journal.commit_interval_ms=100", "kafka.linger_ms=5",
                                  "gateway.id=gw-test", "gateway.shutdown_timeout_ms=5000",
                                  "kafka.rdkafka.reconnect.backoff.max.ms=200", NULL};
    for (const char *const *s = common; *s; s++)
        assert_int_equal(tg_config_set(cfg, *s), TG_OK);
    for (const char *const *s = extra; s && *s; s++)
        if (tg_config_set(cfg, *s) != TG_OK)
            fail_msg("%s: %s", *s, tg_config_error(cfg));
    return cfg;
}

struct gw {
    struct tg_config *cfg;
    struct tg_metrics *m;
    struct tg_pipeline *pl;
};

static void gw_start(struct env *e, struct gw *g, const char *const *extra)
{
    g->cfg = make_config(e, extra);
    g->m = tg_metrics_new();
    char err[1024];
    if (tg_pipeline_new(g->cfg, g->m, &g->pl, err, sizeof err) != TG_OK)
        fail_msg("tg_pipeline_new: %s", err);
    assert_int_equal(tg_pipeline_start(g->pl), TG_OK);
}

static void gw_stop(struct gw *g)
{
    assert_int_equal(tg_pipeline_stop(g->pl, 5000), TG_OK);
    tg_pipeline_destroy(g->pl);
    tg_metrics_destroy(g->m);
    tg_config_destroy(g->cfg);
}

static double metric(struct gw *g, const char *name)
{
    double v = tg_metrics_find_value(g->m, name, NULL);
    return v != v ? 0 : v;
}

static double metric_l(struct gw *g, const char *name, const char *label, const char *value)
{
    double v = tg_metrics_find_value(g->m, name, label, value, NULL);
    return v != v ? 0 : v;
}

/* Offers one native JSON reading, retrying while the pipeline says full, for up to
 * timeout_ms. True when it was taken. */
static bool offer_within(struct gw *g, const char *device, unsigned boot, unsigned seq,
                         int timeout_ms)
{
    char topic[128], payload[256];
    int tl = snprintf(topic, sizeof topic, "telemetry/%s", device);
    /* Values that do not compress away, so a small journal cap fills quickly. */
    uint32_t x = 2166136261u ^ boot;
    for (const char *c = device; *c; c++)
        x = (x ^ (uint8_t)*c) * 16777619u;
    x ^= (seq + 1) * 2654435761u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    int pl = snprintf(payload, sizeof payload,
                      "{\"seq\":%u,\"boot\":%u,\"ts\":%lld,\"m\":{\"temp\":%u.%03u,"
                      "\"hum\":%u}}",
                      seq, boot, (long long)now_ms(), x % 100, (x >> 8) % 1000, x);
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    while (tg_pipeline_offer(g->pl, topic, (size_t)tl, (const uint8_t *)payload, (size_t)pl,
                             now_ms()) != TG_OK) {
        if (tg_harness_now_ms() >= deadline)
            return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

static void offer(struct gw *g, const char *device, unsigned boot, unsigned seq)
{
    assert_true(offer_within(g, device, boot, seq, 10000));
}

static void offer_raw(struct gw *g, const char *topic, const char *payload)
{
    assert_int_equal(tg_pipeline_offer(g->pl, topic, strlen(topic), (const uint8_t *)payload,
                                       strlen(payload), now_ms()),
                     TG_OK);
}

struct wait_metric {
    struct gw *g;
    const char *name;
    double at_least;
};

static bool metric_reached(void *ud)
{
    struct wait_metric *w = ud;
    return metric(w->g, w->name) >= w->at_least;
}

static void wait_metric(struct gw *g, const char *name, double at_least, int timeout_ms)
{
    struct wait_metric w = {g, name, at_least};
    if (!tg_harness_wait_until(metric_reached, &w, timeout_ms))
        fail_msg("%s stayed at %g, expected >= %g", name, metric(g, name), at_least);
}

/* kcat's view of a topic: one line per record, "key seq". */
static char *consume(struct env *e, const char *topic, const char *fmt, int expect)
{
    char count[32];
    snprintf(count, sizeof count, "%d", expect);
    const char *const argv[] = {"kcat", "-C", "-b", tg_harness_devkafka_bootstrap(e->dk), "-t",
                                topic, "-o", "beginning", "-c", count, "-e", "-q", "-f", fmt,
                                NULL};
    char *out = NULL;
    int st = tg_harness_run(argv, NULL, 0, &out, 30000);
    assert_true(tg_harness_exited_ok(st));
    return out;
}

/* Every device's seqs arrive once each, in order (records of one device share a partition). */
static void check_order(const char *out, int devices, int per_device)
{
    int *next = calloc((size_t)devices, sizeof *next);
    assert_non_null(next);
    const char *p = out;
    int lines = 0;
    while (*p) {
        int dev, seq;
        assert_int_equal(sscanf(p, "dev-%d {\"device\":\"dev-%*d\",\"boot\":1,\"seq\":%d", &dev,
                                &seq),
                         2);
        assert_true(dev >= 0 && dev < devices);
        assert_int_equal(seq, next[dev]);
        next[dev]++;
        lines++;
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    for (int d = 0; d < devices; d++)
        assert_int_equal(next[d], per_device);
    assert_int_equal(lines, devices * per_device);
    free(next);
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    e->dk = tg_harness_devkafka_start(NULL);
    e->dir = tg_harness_tmpdir_new("pipeline");
    if (!e->dk || !e->dir)
        return -1;
    snprintf(e->journal, sizeof e->journal, "%s/journal.db", e->dir);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    tg_harness_devkafka_destroy(e->dk);
    tg_harness_tmpdir_done(e->dir);
    free(e);
    return 0;
}

static void delivers_in_order_with_dlq_and_dups(void **state)
{
    struct env *e = *state;
    struct gw g;
    gw_start(e, &g, NULL);
    enum { DEV = 20, PER = 50 };
    for (int s = 0; s < PER; s++)
        for (int d = 0; d < DEV; d++) {
            char dev[32];
            snprintf(dev, sizeof dev, "dev-%d", d);
            offer(&g, dev, 1, (unsigned)s);
            if (s % 10 == 0)
                offer(&g, dev, 1, (unsigned)s); /* a QoS1 redelivery */
        }
    offer_raw(&g, "telemetry/dev-0", "{\"seq\":\"x\"}");
    offer_raw(&g, "telemetry/bad id", "{}");
    wait_metric(&g, "tidegate_messages_delivered_total", DEV * PER, 30000);
    wait_metric(&g, "tidegate_dlq_delivered_total", 2, 30000);
    assert_int_equal(metric(&g, "tidegate_messages_duplicate_total"), DEV * 5);
    assert_int_equal(metric_l(&g, "tidegate_messages_invalid_total", "reason", "wrong_type"), 1);
    assert_int_equal(metric_l(&g, "tidegate_messages_invalid_total", "reason", "bad_name"), 1);
    gw_stop(&g);

    char *out = consume(e, "telemetry", "%k %s\\n", DEV * PER);
    check_order(out, DEV, PER);
    free(out);
    out = consume(e, "telemetry.dlq", "%k %h\\n", 2);
    assert_non_null(strstr(out, "reason=wrong_type"));
    assert_non_null(strstr(out, "reason=bad_name"));
    free(out);
}

static void offer_round(struct gw *g, int devices, unsigned boot, unsigned seq)
{
    for (int d = 0; d < devices; d++) {
        char dev[32];
        snprintf(dev, sizeof dev, "dev-%d", d);
        offer(g, dev, boot, seq);
    }
}

/* Kafka down, then a graceful stop: the backlog is journaled; the next start sends it first,
 * then new readings, each device in order; the dedup window survived the restart. */
static void restart_resends_backlog_first(void **state)
{
    struct env *e = *state;
    enum { DEV = 10, PER1 = 30, PER2 = 20 };
    struct gw g;
    gw_start(e, &g, NULL);
    assert_int_equal(tg_harness_devkafka_outage_begin(e->dk), 0);
    for (int s = 0; s < PER1; s++)
        offer_round(&g, DEV, 1, (unsigned)s);
    wait_metric(&g, "tidegate_journal_records", DEV * PER1, 10000);
    wait_metric(&g, "tidegate_journal_bytes", 1, 10000);
    gw_stop(&g);

    assert_int_equal(tg_harness_devkafka_outage_end(e->dk), 0);
    gw_start(e, &g, NULL);
    assert_int_equal(metric(&g, "tidegate_journal_records"), DEV * PER1);
    for (int s = PER1; s < PER1 + PER2; s++)
        offer_round(&g, DEV, 1, (unsigned)s);
    offer(&g, "dev-0", 1, 3); /* seen before the restart */
    wait_metric(&g, "tidegate_messages_delivered_total", DEV * (PER1 + PER2), 30000);
    wait_metric(&g, "tidegate_messages_duplicate_total", 1, 5000);
    gw_stop(&g);
    char *out = consume(e, "telemetry", "%k %s\\n", DEV * (PER1 + PER2));
    check_order(out, DEV, PER1 + PER2);
    free(out);
}

/* What Kafka holds for each device: the seqs, in arrival order. */
static void delivered_seqs(struct env *e, int expect, int devices, int per, bool *got)
{
    char *out = consume(e, "telemetry", "%k %s\\n", expect);
    int lines = 0;
    for (const char *p = out; *p; lines++) {
        int dev, seq;
        assert_int_equal(sscanf(p, "dev-%d {\"device\":\"dev-%*d\",\"boot\":1,\"seq\":%d", &dev,
                                &seq),
                         2);
        assert_true(dev >= 0 && dev < devices && seq >= 0 && seq < per);
        assert_false(got[dev * per + seq]); /* no duplicates */
        got[dev * per + seq] = true;
        p = strchr(p, '\n') + 1;
    }
    assert_int_equal(lines, expect);
    free(out);
}

enum { OV_DEV = 100, OV_PER = 150 };

static void overflow_run(struct env *e, const char *policy, struct gw *g)
{
    char kv[64];
    snprintf(kv, sizeof kv, "journal.overflow=%s", policy);
    const char *const extra[] = {kv, "journal.max_bytes=64K", "kafka.queue_max_messages=100",
                                 "journal.memory_bytes=256K", "journal.segment_bytes=16K", NULL};
    gw_start(e, g, extra);
    assert_int_equal(tg_harness_devkafka_outage_begin(e->dk), 0);
}

static bool all_accounted(void *ud)
{
    struct gw *g = ud;
    double dropped = metric_l(g, "tidegate_messages_dropped_total", "reason", "journal_full");
    return metric(g, "tidegate_messages_delivered_total") + dropped == OV_DEV * OV_PER &&
           metric(g, "tidegate_journal_records") == 0;
}

/* Kafka returns; once every reading is delivered or counted dropped, returns how many were
 * delivered. The policy must have dropped some. */
static bool some_dropped(void *ud)
{
    return metric_l(ud, "tidegate_messages_dropped_total", "reason", "journal_full") > 0;
}

static double settle(struct env *e, struct gw *g)
{
    if (!tg_harness_wait_until(some_dropped, g, 20000))
        fail_msg("nothing dropped: journal bytes %g, records %g",
                 metric(g, "tidegate_journal_bytes"), metric(g, "tidegate_journal_records"));
    assert_int_equal(tg_harness_devkafka_outage_end(e->dk), 0);
    if (!tg_harness_wait_until(all_accounted, g, 60000))
        fail_msg("delivered %g + dropped %g != %d, journal_records %g",
                 metric(g, "tidegate_messages_delivered_total"),
                 metric_l(g, "tidegate_messages_dropped_total", "reason", "journal_full"),
                 OV_DEV * OV_PER, metric(g, "tidegate_journal_records"));
    double dropped = metric_l(g, "tidegate_messages_dropped_total", "reason", "journal_full");
    gw_stop(g);
    return OV_DEV * OV_PER - dropped;
}

/* Kafka down, a burst of OV_DEV x OV_PER readings under policy, Kafka back: which readings
 * reached Kafka, got[dev * OV_PER + seq] (calloc'd; the caller frees it). */
static bool *overflow_burst(struct env *e, const char *policy)
{
    struct gw g;
    overflow_run(e, policy, &g);
    for (int s = 0; s < OV_PER; s++)
        offer_round(&g, OV_DEV, 1, (unsigned)s);
    wait_metric(&g, "tidegate_messages_received_total", OV_DEV * OV_PER, 10000);
    double expect = settle(e, &g);
    bool *got = calloc(OV_DEV * OV_PER, sizeof *got);
    assert_non_null(got);
    delivered_seqs(e, (int)expect, OV_DEV, OV_PER, got);
    return got;
}

static void overflow_drop_newest(void **state)
{
    bool *got = overflow_burst(*state, "drop_newest");
    /* The newest were dropped: per device what arrived is a prefix of its seqs. */
    for (int d = 0; d < OV_DEV; d++) {
        bool gap = false;
        for (int s = 0; s < OV_PER; s++) {
            if (!got[d * OV_PER + s])
                gap = true;
            else
                assert_false(gap);
        }
    }
    free(got);
}

static void overflow_drop_oldest(void **state)
{
    bool *got = overflow_burst(*state, "drop_oldest");
    /* The oldest were dropped: every device's newest reading arrived. */
    for (int d = 0; d < OV_DEV; d++)
        assert_true(got[d * OV_PER + OV_PER - 1]);
    free(got);
}

static void overflow_backpressure(void **state)
{
    struct env *e = *state;
    struct gw g;
    overflow_run(e, "backpressure", &g);
    /* Offer until the pipeline refuses for a whole second: the journal is full. */
    int accepted = 0;
    for (int s = 0; s < 100000; s++) {
        char dev[32];
        snprintf(dev, sizeof dev, "dev-%d", s % OV_DEV);
        if (!offer_within(&g, dev, 1, (unsigned)(s / OV_DEV), 1000))
            goto full;
        accepted++;
    }
    fail_msg("the pipeline never pushed back: bytes %g records %g received %g",
             metric(&g, "tidegate_journal_bytes"), metric(&g, "tidegate_journal_records"),
             metric(&g, "tidegate_messages_received_total"));
full:
    assert_true(metric(&g, "tidegate_journal_bytes") >= 64 * 1024);
    assert_int_equal(metric_l(&g, "tidegate_messages_dropped_total", "reason", "journal_full"), 0);
    assert_int_equal(tg_harness_devkafka_outage_end(e->dk), 0);
    wait_metric(&g, "tidegate_messages_delivered_total", accepted, 60000);
    assert_int_equal(metric(&g, "tidegate_journal_records"), 0);
    gw_stop(&g);
}

int main(void)
{
    tg_log_set_level(TG_LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(delivers_in_order_with_dlq_and_dups, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_resends_backlog_first, setup, teardown),
        cmocka_unit_test_setup_teardown(overflow_drop_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(overflow_drop_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(overflow_backpressure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
