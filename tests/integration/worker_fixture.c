/*
 * worker_fixture.c - see worker_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <pthread.h>
#include <time.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical.h"
#include "harness_internal.h"
#include "harness_kafka.h"
#include "record.h"
#include "worker_fixture.h"

struct wfx_cluster {
    struct tg_harness_devkafka *dk;
    struct tg_harness_kafka *kf;
};

struct wfx_cluster *wfx_cluster_start(bool real_kafka)
{
    struct wfx_cluster *cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    static const char *const prefixes[] = {"a.", "ref."};
    if (!real_kafka) {
        const char *args[] = {"--brokers", "1", "--topic", "telemetry:6", "--topic",
                              "a.anomalies:3", "--topic", "a.agg:3", "--topic", "a.state:6",
                              "--topic", "ref.anomalies:3", "--topic", "ref.agg:3", "--topic",
                              "ref.state:6", NULL};
        cl->dk = tg_harness_devkafka_start(args);
        assert_non_null(cl->dk);
        return cl;
    }
    /* WFX_KAFKA_PROPERTIES: broker properties of one's own, when investigating by hand
     * (e.g. a transaction timeout enforced at once; test_worker_bigckpt). */
    cl->kf = tg_harness_kafka_start_with(WFX_PARTITIONS, 0, getenv("WFX_KAFKA_PROPERTIES"));
    assert_non_null(cl->kf);
    static const char *const compact[] = {"cleanup.policy=compact", NULL};
    for (size_t i = 0; i < 2; i++) {
        char t[64];
        snprintf(t, sizeof t, "%sanomalies", prefixes[i]);
        assert_int_equal(tg_harness_kafka_create_topic(cl->kf, t, 3, NULL), 0);
        snprintf(t, sizeof t, "%sagg", prefixes[i]);
        assert_int_equal(tg_harness_kafka_create_topic(cl->kf, t, 3, NULL), 0);
        snprintf(t, sizeof t, "%sstate", prefixes[i]);
        assert_int_equal(tg_harness_kafka_create_topic(cl->kf, t, WFX_PARTITIONS, compact), 0);
    }
    return cl;
}

const char *wfx_cluster_bootstrap(const struct wfx_cluster *cl)
{
    return cl->dk ? tg_harness_devkafka_bootstrap(cl->dk) : tg_harness_kafka_bootstrap(cl->kf);
}

struct tg_harness_devkafka *wfx_cluster_devkafka(const struct wfx_cluster *cl)
{
    return cl->dk;
}

bool wfx_cluster_real(const struct wfx_cluster *cl)
{
    return cl->kf != NULL;
}

void wfx_cluster_destroy(struct wfx_cluster *cl)
{
    if (!cl)
        return;
    tg_harness_devkafka_destroy(cl->dk);
    tg_harness_kafka_destroy(cl->kf);
    free(cl);
}

static rd_kafka_t *client(rd_kafka_type_t type, const char *bootstrap, const char *const kv[])
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                                       sizeof errstr),
                     RD_KAFKA_CONF_OK);
    for (size_t i = 0; kv && kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
            fail_msg("%s=%s: %s", kv[i], kv[i + 1], errstr);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof errstr);
    if (!rk)
        fail_msg("rd_kafka_new: %s", errstr);
    return rk;
}

/* A deterministic value in [-1, 1) from (device, second): a hash, not a stateful generator,
 * so that any range of seconds can be produced on its own. */
static double noise(int device, int second)
{
    uint64_t x = (uint64_t)device * 0x9E3779B97F4A7C15u ^ (uint64_t)second * 0xBF58476D1CE4E5B9u;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBu;
    x ^= x >> 29;
    return (double)(x >> 11) / (double)(UINT64_C(1) << 52) - 1.0;
}

static double value_at(int device, int second)
{
    double v = 20.0 + device % 7 + 2.0 * sin(second / 90.0) +
               0.2 * (noise(device, second) + noise(device + 1000, second));
    if (second == 120 + 7 * (device % 40))
        v += 25.0; /* a spike */
    if (device % 5 == 0 && second >= 300 + device % 50)
        v += 6.0; /* a level shift */
    return v;
}

struct delivery {
    size_t delivered, failed;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct delivery *dv = opaque;
    if (msg->err)
        dv->failed++;
    else
        dv->delivered++;
}

/* The producing itself, without cmocka (it also runs on the feed's thread): returns the
 * number produced, or 0 with *why set when something failed. */
static size_t produce_range(const char *bootstrap, const char *topic, const struct wfx_input *in,
                            int from_s, int to_s, int pace_ms, const char **why)
{
    static const char *const kv[] = {"partitioner", "murmur2_random", "linger.ms", "10",
                                     "enable.idempotence", "true", "compression.codec", "lz4",
                                     NULL};
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof errstr);
    for (size_t i = 0; kv[i]; i += 2)
        rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr);
    struct delivery dv = {0, 0};
    rd_kafka_conf_set_opaque(conf, &dv);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        *why = "cannot create the producer";
        return 0;
    }
    size_t n = 0;
    char buf[512], device[16];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int s = from_s; s < to_s; s++) {
        if (pace_ms > 0) {
            long long due_ns = (long long)(s - from_s) * pace_ms * 1000000LL;
            struct timespec due = {t0.tv_sec + (time_t)(due_ns / 1000000000LL),
                                   t0.tv_nsec + (long)(due_ns % 1000000000LL)};
            if (due.tv_nsec >= 1000000000L) {
                due.tv_sec++;
                due.tv_nsec -= 1000000000L;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
        }
        for (int d = 0; d < in->n_devices; d++) {
            if (in->mute_from_s > 0 && d == in->mute_device && s >= in->mute_from_s)
                continue;
            snprintf(device, sizeof device, "dev-%03d", d);
            struct tg_metric m = {.name = "temp", .unit = NULL, .value = value_at(d, s)};
            struct tg_reading rd = {.device = device, .has_seq = true, .boot = 1,
                                    .seq = (uint64_t)s, .ts_ms = in->base_ts_ms + s * 1000LL,
                                    .n_metrics = 1, .metrics = &m};
            size_t len;
            if (tg_codec_canonical_json(&rd, "gw-test", rd.ts_ms + 3, buf, sizeof buf, &len) !=
                TG_OK) {
                *why = "cannot encode a reading";
                goto out;
            }
            rd_kafka_resp_err_t e;
            while ((e = rd_kafka_producev(
                        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(device, strlen(device)),
                        RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_TIMESTAMP(rd.ts_ms),
                        RD_KAFKA_V_HEADER("content-type", "application/json", -1),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END)) ==
                   RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 10);
            if (e) {
                *why = "produce failed";
                goto out;
            }
            n++;
        }
        rd_kafka_poll(rk, 0);
    }
out:
    if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR && !*why)
        *why = "flush timed out";
    if ((dv.failed || dv.delivered != n) && !*why)
        *why = "a delivery failed";
    rd_kafka_destroy(rk);
    return *why ? 0 : n;
}

int64_t wfx_recent_base_ms(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000;
    return now_ms / 60000 * 60000 - (int64_t)seconds * 1000;
}

size_t wfx_produce(const char *bootstrap, const char *topic, const struct wfx_input *in,
                   int from_s, int to_s)
{
    const char *why = NULL;
    size_t n = produce_range(bootstrap, topic, in, from_s, to_s, 0, &why);
    if (why)
        fail_msg("producing to %s: %s", topic, why);
    return n;
}

struct wfx_feed {
    pthread_t thread;
    char bootstrap[512], topic[128];
    struct wfx_input in;
    int from_s, to_s, pace_ms;
    size_t n;
    const char *why;
};

static void *feed_main(void *arg)
{
    struct wfx_feed *fd = arg;
    fd->n = produce_range(fd->bootstrap, fd->topic, &fd->in, fd->from_s, fd->to_s, fd->pace_ms,
                          &fd->why);
    return NULL;
}

struct wfx_feed *wfx_feed_start(const char *bootstrap, const char *topic,
                                const struct wfx_input *in, int from_s, int to_s, int pace_ms)
{
    struct wfx_feed *fd = calloc(1, sizeof *fd);
    assert_non_null(fd);
    snprintf(fd->bootstrap, sizeof fd->bootstrap, "%s", bootstrap);
    snprintf(fd->topic, sizeof fd->topic, "%s", topic);
    fd->in = *in;
    fd->from_s = from_s;
    fd->to_s = to_s;
    fd->pace_ms = pace_ms;
    assert_int_equal(pthread_create(&fd->thread, NULL, feed_main, fd), 0);
    return fd;
}

size_t wfx_feed_join(struct wfx_feed *fd)
{
    assert_int_equal(pthread_join(fd->thread, NULL), 0);
    const char *why = fd->why;
    size_t n = fd->n;
    free(fd);
    if (why)
        fail_msg("feeding: %s", why);
    return n;
}

static int partitions_of(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    assert_int_equal(rd_kafka_metadata(rk, 0, rkt, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    int n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

int wfx_watermarks(const char *bootstrap, const char *topic, int64_t *hi, int max)
{
    rd_kafka_t *rk = client(RD_KAFKA_PRODUCER, bootstrap, NULL);
    int n = partitions_of(rk, topic);
    assert_true(n > 0 && n <= max);
    for (int p = 0; p < n; p++) {
        int64_t lo;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    rd_kafka_destroy(rk);
    return n;
}

/* Reads every partition of topic from the beginning to its end; fn per record. The end is
 * the high watermark: on a real broker a read_committed reader first sees the end of a
 * partition at its last stable offset, which lags behind for a moment after a commit (the
 * coordinator writes the transaction markers after answering EndTxn), and for longer while
 * a killed worker's transaction waits to be aborted, so an end-of-partition event below the
 * high watermark means "wait", not "done". A read_committed client's ListOffsets answers
 * with the last stable offset too, so the high watermark is the one each fetch response
 * brings (rd_kafka_get_watermark_offsets), or the queried end if that is higher. */
void wfx_read_topic(const char *bootstrap, const char *topic,
                    void (*fn)(void *ud, const rd_kafka_message_t *msg), void *ud)
{
    static const char *const kv[] = {"group.id", "wfx-reader", "isolation.level",
                                     "read_committed", "enable.partition.eof", "true",
                                     "enable.auto.commit", "false", "fetch.wait.max.ms", "10",
                                     NULL};
    rd_kafka_t *rk = client(RD_KAFKA_CONSUMER, bootstrap, kv);
    int n = partitions_of(rk, topic);
    assert_true(n > 0 && n <= 256);
    int64_t hi[256];
    bool done[256];
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    int pending = 0;
    for (int p = 0; p < n; p++) {
        int64_t lo;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi[p], 10000),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        done[p] = hi[p] <= lo;
        if (!done[p]) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            pending++;
        }
    }
    assert_int_equal(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t deadline = tg_harness_now_ms() + 60000;
    while (pending > 0) {
        if (tg_harness_now_ms() > deadline)
            fail_msg("reading %s: %d partitions not at their end after 60 s", topic, pending);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 100);
        if (!msg)
            continue;
        int32_t p = msg->partition;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            int64_t lo2, hi2;
            if (p >= 0 && p < n &&
                rd_kafka_get_watermark_offsets(rk, topic, p, &lo2, &hi2) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR &&
                hi2 > hi[p])
                hi[p] = hi2;
            if (p >= 0 && p < n && !done[p] && msg->offset >= hi[p]) {
                done[p] = true;
                pending--;
            }
        } else if (msg->err) {
            fail_msg("reading %s: %s", topic, rd_kafka_message_errstr(msg));
        } else {
            fn(ud, msg);
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

struct collect {
    char **recs;
    size_t n, cap;
};

static void collect_fn(void *ud, const rd_kafka_message_t *msg)
{
    struct collect *c = ud;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->recs = realloc(c->recs, c->cap * sizeof *c->recs);
        assert_non_null(c->recs);
    }
    size_t len = msg->key_len + 1 + msg->len + 1;
    char *t = malloc(len);
    assert_non_null(t);
    memcpy(t, msg->key ? msg->key : "", msg->key_len);
    t[msg->key_len] = '\t';
    memcpy(t + msg->key_len + 1, msg->payload ? msg->payload : "", msg->len);
    t[len - 1] = '\0';
    c->recs[c->n++] = t;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **wfx_read_all(const char *bootstrap, const char *topic, size_t *n)
{
    struct collect c = {0};
    wfx_read_topic(bootstrap, topic, collect_fn, &c);
    if (c.n)
        qsort(c.recs, c.n, sizeof *c.recs, cmp_str);
    *n = c.n;
    return c.recs;
}

void wfx_records_free(char **recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(recs[i]);
    free(recs);
}

struct markers {
    int64_t *next;
    int n;
};

static void marker_fn(void *ud, const rd_kafka_message_t *msg)
{
    struct markers *mk = ud;
    static const char suffix[] = "/@offset";
    size_t sl = sizeof suffix - 1;
    if (!msg->key || msg->key_len <= sl ||
        memcmp((const char *)msg->key + msg->key_len - sl, suffix, sl) != 0 || !msg->payload)
        return;
    char buf[32];
    size_t len = msg->len < sizeof buf - 1 ? msg->len : sizeof buf - 1;
    memcpy(buf, msg->payload, len);
    buf[len] = '\0';
    if (msg->partition < mk->n)
        mk->next[msg->partition] = strtoll(buf, NULL, 10);
}

void wfx_state_markers(const char *bootstrap, const char *state_topic, int64_t *next,
                       int n_parts)
{
    for (int p = 0; p < n_parts; p++)
        next[p] = -1;
    struct markers mk = {next, n_parts};
    wfx_read_topic(bootstrap, state_topic, marker_fn, &mk);
}

struct processed_ctx {
    const char *bootstrap, *state_topic;
    const int64_t *hi;
    int n;
};

static bool processed(void *ud)
{
    struct processed_ctx *pc = ud;
    int64_t next[256];
    wfx_state_markers(pc->bootstrap, pc->state_topic, next, pc->n);
    for (int p = 0; p < pc->n; p++)
        if (pc->hi[p] > 0 && next[p] < pc->hi[p])
            return false;
    return true;
}

bool wfx_wait_processed(const char *bootstrap, const char *state_topic, const int64_t *hi,
                        int n_parts, int timeout_ms)
{
    struct processed_ctx pc = {bootstrap, state_topic, hi, n_parts};
    return tg_harness_wait_until(processed, &pc, timeout_ms);
}

struct progress_ctx {
    const char *bootstrap, *state_topic;
    int n;
    int64_t min_sum;
};

static bool progressed(void *ud)
{
    struct progress_ctx *pc = ud;
    int64_t next[256];
    wfx_state_markers(pc->bootstrap, pc->state_topic, next, pc->n);
    int64_t sum = 0;
    for (int p = 0; p < pc->n; p++)
        sum += next[p] > 0 ? next[p] : 0;
    return sum >= pc->min_sum;
}

void wfx_wait_progress(const char *bootstrap, const char *state_topic, int n_parts,
                       int64_t records, int timeout_ms)
{
    struct progress_ctx pc = {bootstrap, state_topic, n_parts, records};
    if (!tg_harness_wait_until(progressed, &pc, timeout_ms))
        fail_msg("fewer than %lld records committed in %s after %d ms", (long long)records,
                 state_topic, timeout_ms);
}

/* The worker's config at path, its metrics on port. */
static void write_worker_ini(const char *path, const char *instance_id, const char *bootstrap,
                             const char *group, const char *topic_prefix, const char *extra,
                             int port)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[worker]\ninstance_id = %s\n"
            "[log]\nlevel = info\n"
            "[kafka]\nbrokers = %s\ngroup_id = %s\ninput_topic = telemetry\n"
            "alerts_topic = %sanomalies\naggregates_topic = %sagg\nstate_topic = %sstate\n"
            "commit_interval_ms = 100\nsession_timeout_ms = 6000\n"
            "transaction_timeout_ms = %s\nrestore_timeout_ms = 40000\n"
            "[metrics]\nlisten = 127.0.0.1:%d\n"
            "[detect]\n%s%s",
            instance_id, bootstrap, group, topic_prefix, topic_prefix, topic_prefix,
            /* WFX_TRANSACTION_TIMEOUT_MS: a shorter transaction timeout, to see by hand what
             * a transaction that outgrows it does (test_worker_bigckpt). */
            getenv("WFX_TRANSACTION_TIMEOUT_MS") && *getenv("WFX_TRANSACTION_TIMEOUT_MS")
                ? getenv("WFX_TRANSACTION_TIMEOUT_MS")
                : "10000",
            port,
            /* A key may be set once: an extra that sets silence itself turns it on. */
            extra && strstr(extra, "silence =") ? "" : "silence = false\n", extra ? extra : "");
    /* WFX_WORKER_EXTRA: more lines for every worker's config, when investigating by hand
     * (e.g. "[log]\ndebug = txn" ends up as a second [log] section). */
    const char *env_extra = getenv("WFX_WORKER_EXTRA");
    if (env_extra && *env_extra)
        fprintf(f, "\n%s\n", env_extra);
    assert_int_equal(fclose(f), 0);
}

struct start_ctx {
    struct tg_harness_proc *proc;
    off_t offset; /* where this start's lines begin in the appended log */
    char *log;    /* those lines, once the worker listens or has exited */
};

/* The worker has either logged that it runs (its metrics listener is bound: main.c logs
 * "running" after tg_metrics_http_start) or exited. */
static bool started_or_exited(void *ud)
{
    struct start_ctx *sc = ud;
    bool running = tg_harness_proc_running(sc->proc);
    char *log = harness__read_file_from(tg_harness_proc_stderr_path(sc->proc), sc->offset);
    if (log && (!running || strstr(log, " running: instance "))) {
        sc->log = log;
        return true;
    }
    free(log);
    return false;
}

/* Starts and restarts until the metrics port is the worker's. The port comes from
 * tg_harness_free_port(), which closes it again: until the worker binds it, after creating
 * its Kafka clients (a second or more on a loaded machine), another test's process can take
 * it (a broker's or gateway's free port, a client's source port: the sim's 1,000 connections).
 * The worker then exits with "[metrics] listen: ... Address already in use", and the test
 * would fail on a stranger's port; so it gets another port, as the gateway fixture and the
 * brokers' starts do. */
#define WORKER_START_ATTEMPTS 3
#define WORKER_START_WAIT_MS 60000

struct wfx_worker *wfx_worker_start(const char *dir, const char *name, const char *instance_id,
                                    const char *bootstrap, const char *group,
                                    const char *topic_prefix, const char *extra)
{
    struct wfx_worker *w = calloc(1, sizeof *w);
    assert_non_null(w);
    snprintf(w->name, sizeof w->name, "%s", name);
    char path[512], log_path[512];
    snprintf(path, sizeof path, "%s/%s.ini", dir, name);
    snprintf(log_path, sizeof log_path, "%s/%s.stderr", dir, name);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/tidegate-worker", tg_harness_bin_dir());
    const char *argv[] = {bin, "-c", path, NULL};
    for (int attempt = 1;; attempt++) {
        w->metrics_port = harness__port_source();
        assert_true(w->metrics_port > 0);
        write_worker_ini(path, instance_id, bootstrap, group, topic_prefix, extra,
                         w->metrics_port);
        struct start_ctx sc = {NULL, harness__file_size(log_path), NULL};
        w->proc = tg_harness_proc_start(dir, name, argv, NULL, 0);
        assert_non_null(w->proc);
        sc.proc = w->proc;
        /* No answer either way within the wait: the test's own waits judge it. */
        if (!tg_harness_wait_until(started_or_exited, &sc, WORKER_START_WAIT_MS))
            break;
        bool taken = !tg_harness_proc_running(w->proc) && strstr(sc.log, "[metrics] listen:") &&
                     strstr(sc.log, "in use");
        free(sc.log);
        if (!taken || attempt == WORKER_START_ATTEMPTS)
            break;
        fprintf(stderr, "wfx: %s: metrics port %d was taken before the worker bound it; "
                        "starting it again on another\n",
                name, w->metrics_port);
        tg_harness_proc_destroy(w->proc);
    }
    return w;
}

static bool assigned(void *ud)
{
    struct wfx_worker *w = ud;
    if (!tg_harness_proc_running(w->proc))
        fail_msg("%s exited early; see %s", w->name, tg_harness_proc_stderr_path(w->proc));
    return tg_harness_file_contains(tg_harness_proc_stderr_path(w->proc), "assigned telemetry[");
}

void wfx_worker_wait_assigned(struct wfx_worker *w, int timeout_ms)
{
    if (!tg_harness_wait_until(assigned, w, timeout_ms))
        fail_msg("%s holds no partition after %d ms; see %s", w->name, timeout_ms,
                 tg_harness_proc_stderr_path(w->proc));
}

int wfx_worker_stop(struct wfx_worker *w)
{
    return tg_harness_proc_stop(w->proc, 20000);
}

void wfx_worker_destroy(struct wfx_worker *w)
{
    if (!w)
        return;
    tg_harness_proc_destroy(w->proc);
    free(w);
}

/* ---- comparing outputs ---- */

/* Records of a that are not in b (both sorted), as a count; prints the first few. */
static size_t missing_from(char **a, size_t na, char **b, size_t nb, const char *what)
{
    size_t i = 0, j = 0, missing = 0;
    while (i < na) {
        int c = j < nb ? strcmp(a[i], b[j]) : -1;
        if (c == 0) {
            i++;
            j++;
        } else if (c < 0) {
            if (missing++ < 5)
                fprintf(stderr, "  %s: %s\n", what, a[i]);
            i++;
        } else {
            j++;
        }
    }
    return missing;
}

/* Adjacent equal records of a sorted list. */
static size_t repeats(char **a, size_t n)
{
    size_t r = 0;
    for (size_t i = 1; i < n; i++)
        r += strcmp(a[i - 1], a[i]) == 0;
    return r;
}

/* Removes adjacent duplicates in place; returns the new count. The removed strings are kept
 * at the end of the array so that wfx_records_free() still frees them. */
static size_t dedup(char **a, size_t n)
{
    if (n == 0)
        return 0;
    size_t w = 1;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(a[i], a[w - 1]) != 0) {
            char *t = a[w];
            a[w] = a[i];
            a[i] = t;
            w++;
        }
    }
    return w;
}

struct dump_ctx {
    const char *device;
    int32_t partition; /* of the device's snapshots, once seen; -1 before */
};

static void dump_state_fn(void *ud, const rd_kafka_message_t *msg)
{
    struct dump_ctx *dc = ud;
    if (!msg->key)
        return;
    const char *k = msg->key;
    size_t kl = msg->key_len;
    size_t dl = strlen(dc->device);
    const char *slash = memchr(k, '/', kl);
    if (!slash)
        return;
    bool mine = (size_t)(k + kl - slash) > dl + 1 && memcmp(slash + 1, dc->device, dl) == 0 &&
                slash[1 + dl] == '/';
    bool marker = kl > 8 && memcmp(k + kl - 8, "/@offset", 8) == 0;
    if (mine)
        dc->partition = msg->partition;
    if (mine || msg->partition == dc->partition)
        fprintf(stderr, "    state[%d]@%lld %.*s %s%.*s\n", (int)msg->partition,
                (long long)msg->offset, (int)kl, k, marker ? "= " : "",
                marker ? (int)msg->len : 0, marker ? (const char *)msg->payload : "");
}

/* On a mismatch: both runs' records of the first device that differs, and the state topic's
 * snapshots of it with the markers of its partition, so a failure can be understood from
 * the test's log alone. */
static void diagnose(const char *bs, const char *run_topic, char **run, size_t n_run, char **ref,
                     size_t n_ref)
{
    char device[80] = "";
    for (size_t i = 0, j = 0; i < n_ref || j < n_run;) {
        int c = i < n_ref && j < n_run ? strcmp(ref[i], run[j]) : (i < n_ref ? -1 : 1);
        if (c == 0) {
            i++;
            j++;
            continue;
        }
        const char *r = c < 0 ? ref[i] : run[j];
        size_t len = strcspn(r, "\t");
        snprintf(device, sizeof device, "%.*s", (int)(len < 79 ? len : 79), r);
        break;
    }
    if (!*device)
        return;
    fprintf(stderr, "  device %s, reference:\n", device);
    for (size_t i = 0; i < n_ref; i++)
        if (strncmp(ref[i], device, strlen(device)) == 0 && ref[i][strlen(device)] == '\t')
            fprintf(stderr, "    %s\n", ref[i] + strlen(device) + 1);
    fprintf(stderr, "  device %s, %s:\n", device, run_topic);
    for (size_t i = 0; i < n_run; i++)
        if (strncmp(run[i], device, strlen(device)) == 0 && run[i][strlen(device)] == '\t')
            fprintf(stderr, "    %s\n", run[i] + strlen(device) + 1);
    /* The run's state topic: run_topic's prefix + "state". */
    char state[128];
    const char *dot = strrchr(run_topic, '.');
    snprintf(state, sizeof state, "%.*sstate", dot ? (int)(dot - run_topic + 1) : 0, run_topic);
    struct dump_ctx dc = {device, -1};
    fprintf(stderr, "  %s, snapshots of %s and every record of its partition after the first:\n",
            state, device);
    wfx_read_topic(bs, state, dump_state_fn, &dc);
}

void wfx_compare(const char *bs, const char *run_topic, const char *ref_topic,
                 size_t *dups_out)
{
    size_t n_run, n_ref;
    char **run = wfx_read_all(bs, run_topic, &n_run);
    char **ref = wfx_read_all(bs, ref_topic, &n_ref);
    size_t dups = repeats(run, n_run);
    assert_int_equal(repeats(ref, n_ref), 0); /* one uninterrupted worker never repeats */
    size_t u_run = dedup(run, n_run);
    size_t lost = missing_from(ref, n_ref, run, u_run, "missing after failover");
    size_t extra = missing_from(run, u_run, ref, n_ref, "not in the reference");
    fprintf(stderr, "%s: %zu records (%zu repeated), reference %s: %zu; missing %zu, extra %zu\n",
            run_topic, n_run, dups, ref_topic, n_ref, lost, extra);
    if (lost || extra)
        diagnose(bs, run_topic, run, u_run, ref, n_ref);
    assert_true(n_ref > 0);
    assert_int_equal(lost, 0);
    assert_int_equal(extra, 0);
    *dups_out = dups;
    wfx_records_free(run, n_run);
    wfx_records_free(ref, n_ref);
}

/* ---- metrics ---- */

char *wfx_scrape(const struct wfx_worker *w)
{
    char *body = NULL;
    int status = tg_harness_http_get(w->metrics_port, "/metrics", 5000, &body);
    if (status != 200)
        fail_msg("GET /metrics of %s: status %d", w->name, status);
    return body;
}

double wfx_metric(const char *body, const char *series)
{
    size_t len = strlen(series);
    for (const char *line = body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            return strtod(line + len + 1, NULL);
    }
    return NAN;
}

int wfx_promtool(const char *text)
{
    const char *env = getenv("TG_PROMTOOL");
    char *promtool = env && *env ? strdup(env) : tg_harness_find_program("promtool");
    if (!promtool)
        fail_msg("promtool not found on PATH: it comes with Debian's prometheus package "
                 "(scripts/install-deps), or set TG_PROMTOOL");
    const char *argv[] = {promtool, "check", "metrics", NULL};
    char *out = NULL;
    int status = tg_harness_run(argv, text, strlen(text), &out, 30000);
    if (out && *out)
        fprintf(stderr, "promtool: %s\n", out);
    free(out);
    free(promtool);
    return status;
}

size_t wfx_silence_alerts(const char *bootstrap, const char *topic, const char *device,
                          size_t *others, size_t show)
{
    size_t n = 0, n_rec;
    *others = 0;
    char **recs = wfx_read_all(bootstrap, topic, &n_rec);
    size_t dl = strlen(device);
    for (size_t i = 0; i < n_rec; i++) {
        if (!strstr(recs[i], "\"kind\":\"silence\""))
            continue;
        if (strncmp(recs[i], device, dl) == 0 && recs[i][dl] == '\t') {
            n++;
        } else if (++*others <= show) {
            fprintf(stderr, "  silence alert: %s\n", recs[i]);
        }
    }
    wfx_records_free(recs, n_rec);
    return n;
}
