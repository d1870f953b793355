/*
 * test_ingress.c - gateway/ingress_mqtt.c against a real Mosquitto: messages reach the sink in
 * order with topic and payload intact; several connections share one subscription and each
 * message arrives once; a full sink pauses reading without losing, duplicating or reordering
 * anything; the persistent session keeps what was published while the ingress was away, also
 * across a broker restart; tg_ingress_stop() hands pending messages to the sink; a broker that
 * refuses the credentials is retried with backoff; an oversized payload is cut to what its
 * dead letter keeps, and one over the announced Maximum Packet Size never arrives.
 *
 * The publisher is a separate libmosquitto client with its own network thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "ingress_mqtt.h"
#include "gateway_limits.h"
#include "metrics.h"

#define WAIT_MS 20000

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* ---- the sink: records what it takes; refuses (TG_ERR_FULL) while closed ---- */

struct msg {
    char *topic;
    uint8_t *payload;
    size_t payload_len;
};

struct sink {
    pthread_mutex_t lock;
    atomic_bool open;
    atomic_long refused; /* TG_ERR_FULL answers */
    struct msg *msgs;
    int n, cap;
};

static tg_err sink_fn(void *ud, const char *topic, size_t topic_len, const uint8_t *payload,
                      size_t payload_len, int64_t rx_ms)
{
    struct sink *s = ud;
    (void)rx_ms;
    if (!atomic_load(&s->open)) {
        atomic_fetch_add(&s->refused, 1);
        return TG_ERR_FULL;
    }
    struct msg m = {.topic = strndup(topic, topic_len), .payload = malloc(payload_len + 1),
                    .payload_len = payload_len};
    if (!m.topic || !m.payload)
        abort();
    memcpy(m.payload, payload, payload_len);
    pthread_mutex_lock(&s->lock);
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->msgs = realloc(s->msgs, (size_t)s->cap * sizeof *s->msgs);
        if (!s->msgs)
            abort();
    }
    s->msgs[s->n++] = m;
    pthread_mutex_unlock(&s->lock);
    return TG_OK;
}

static void sink_init(struct sink *s, bool open)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->open, open);
    atomic_init(&s->refused, 0);
}

static void sink_fini(struct sink *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->msgs[i].topic);
        free(s->msgs[i].payload);
    }
    free(s->msgs);
    pthread_mutex_destroy(&s->lock);
}

static int sink_count(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* The number in a "m-<i>" payload, or -1. */
static int msg_index(const struct msg *m)
{
    char buf[32];
    if (m->payload_len < 3 || m->payload_len >= sizeof buf)
        return -1;
    memcpy(buf, m->payload, m->payload_len);
    buf[m->payload_len] = '\0';
    int i;
    char extra;
    return sscanf(buf, "m-%d%c", &i, &extra) == 1 ? i : -1;
}

struct sink_want {
    struct sink *s;
    int n;
};

static bool sink_has_cond(void *ud)
{
    struct sink_want *w = ud;
    return sink_count(w->s) >= w->n;
}

static bool sink_refused_cond(void *ud)
{
    struct sink_want *w = ud;
    return atomic_load(&w->s->refused) >= w->n;
}

/* Distinct "m-<i>" indices 0..n-1 seen so far. */
static int sink_distinct(struct sink *s, int n)
{
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    int distinct = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n; i++) {
        int k = msg_index(&s->msgs[i]);
        if (k >= 0 && k < n && !seen[k]) {
            seen[k] = 1;
            distinct++;
        }
    }
    pthread_mutex_unlock(&s->lock);
    free(seen);
    return distinct;
}

static bool sink_distinct_cond(void *ud)
{
    struct sink_want *w = ud;
    return sink_distinct(w->s, w->n) >= w->n;
}

/* Checks that the sink holds exactly "m-0" .. "m-(n-1)", in this order, on topic. */
static void expect_exactly_in_order(struct sink *s, int n, const char *topic)
{
    struct sink_want w = {s, n};
    if (!tg_harness_wait_until(sink_has_cond, &w, WAIT_MS))
        fail_msg("the sink got %d of %d messages within %d ms", sink_count(s), n, WAIT_MS);
    pthread_mutex_lock(&s->lock);
    int got = s->n;
    pthread_mutex_unlock(&s->lock);
    assert_int_equal(got, n);
    for (int i = 0; i < n; i++) {
        if (msg_index(&s->msgs[i]) != i)
            fail_msg("message %d is \"%.*s\", expected m-%d", i, (int)s->msgs[i].payload_len,
                     (const char *)s->msgs[i].payload, i);
        if (topic)
            assert_string_equal(s->msgs[i].topic, topic);
    }
}

/* ---- the publisher: a libmosquitto client on its own network thread ---- */

struct publisher {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    bool connected;
    int acked;
};

static void pub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    struct publisher *p = obj;
    pthread_mutex_lock(&p->lock);
    p->connected = rc == 0;
    pthread_mutex_unlock(&p->lock);
}

static void pub_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    (void)mid;
    struct publisher *p = obj;
    pthread_mutex_lock(&p->lock);
    p->acked++;
    pthread_mutex_unlock(&p->lock);
}

static bool pub_connected_cond(void *ud)
{
    struct publisher *p = ud;
    pthread_mutex_lock(&p->lock);
    bool r = p->connected;
    pthread_mutex_unlock(&p->lock);
    return r;
}

struct pub_want {
    struct publisher *p;
    int n;
};

static bool pub_acked_cond(void *ud)
{
    struct pub_want *w = ud;
    pthread_mutex_lock(&w->p->lock);
    bool r = w->p->acked >= w->n;
    pthread_mutex_unlock(&w->p->lock);
    return r;
}

static struct publisher *publisher_new(const struct tg_harness_mosquitto *mq)
{
    struct publisher *p = calloc(1, sizeof *p);
    assert_non_null(p);
    pthread_mutex_init(&p->lock, NULL);
    p->mosq = mosquitto_new(NULL, true, p);
    assert_non_null(p->mosq);
    mosquitto_connect_callback_set(p->mosq, pub_on_connect);
    mosquitto_publish_callback_set(p->mosq, pub_on_publish);
    /* after a broker restart, reconnect within a second */
    assert_int_equal(mosquitto_reconnect_delay_set(p->mosq, 1, 1, false), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_connect(p->mosq, tg_harness_mosquitto_host(mq),
                                       tg_harness_mosquitto_port(mq), 30),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(p->mosq), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(pub_connected_cond, p, WAIT_MS));
    return p;
}

static void publisher_destroy(struct publisher *p)
{
    mosquitto_disconnect(p->mosq);
    mosquitto_loop_stop(p->mosq, false);
    mosquitto_destroy(p->mosq);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Publishes "m-<first>" .. "m-<first+n-1>" at QoS1 (not waiting for the PUBACKs). */
static void publish_range(struct publisher *p, const char *topic, int first, int n)
{
    char payload[32];
    for (int i = first; i < first + n; i++) {
        int len = snprintf(payload, sizeof payload, "m-%d", i);
        int rc = mosquitto_publish(p->mosq, NULL, topic, len, payload, 1, false);
        /* NO_CONN: the publisher has not reconnected yet after a broker restart. libmosquitto
         * has queued the QoS1 message all the same and sends it after the reconnect;
         * publisher_wait_acked() says so if it never arrives. */
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
            fail_msg("publish m-%d: %s", i, mosquitto_strerror(rc));
    }
}

/* Waits until the broker acknowledged `total` publishes of this publisher. */
static void publisher_wait_acked(struct publisher *p, int total)
{
    struct pub_want w = {p, total};
    if (!tg_harness_wait_until(pub_acked_cond, &w, WAIT_MS))
        fail_msg("the broker acknowledged %d of %d publishes", p->acked, total);
}

/* ---- the ingress ---- */

static struct tg_ingress_opts base_opts(const struct tg_harness_mosquitto *mq,
                                        const char *client_id)
{
    return (struct tg_ingress_opts){
        .host = tg_harness_mosquitto_host(mq),
        .port = tg_harness_mosquitto_port(mq),
        .client_id = client_id,
        .topic = "telemetry/+",
        .qos = 1,
        .connections = 1,
        .share_group = "tg",
        .keepalive_ms = 10000,
        .session_expiry_ms = 3600000,
        .reconnect_min_ms = 20,
        .reconnect_max_ms = 500,
    };
}

struct ingress_want {
    struct tg_ingress *in;
    int n;
};

static bool ingress_connected_cond(void *ud)
{
    struct ingress_want *w = ud;
    return tg_ingress_connected(w->in) == w->n;
}

static struct tg_ingress *ingress_start(const struct tg_ingress_opts *opts, struct sink *s,
                                        struct tg_metrics *m)
{
    struct tg_ingress *in = NULL;
    char err[256] = "";
    tg_err rc = tg_ingress_new(opts, sink_fn, s, m, &in, err, sizeof err);
    if (rc != TG_OK)
        fail_msg("tg_ingress_new: %s", err);
    assert_int_equal(tg_ingress_start(in), TG_OK);
    struct ingress_want w = {in, opts->connections};
    assert_true(tg_harness_wait_until(ingress_connected_cond, &w, WAIT_MS));
    return in;
}

static double metric(struct tg_metrics *m, const char *name)
{
    return tg_metrics_find_value(m, name, NULL);
}

struct metric_want {
    struct tg_metrics *m;
    const char *name;
    double value;
};

static bool metric_at_least_cond(void *ud)
{
    struct metric_want *w = ud;
    return metric(w->m, w->name) >= w->value;
}

static bool metric_equals_cond(void *ud)
{
    struct metric_want *w = ud;
    return metric(w->m, w->name) == w->value;
}

/* ---- tests ---- */

/* Topic and payload (binary, with NUL bytes) arrive intact and in publish order. */
static void test_order_and_content(void **state)
{
    (void)state;
    enum { N = 500 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = base_opts(mq, "tg-order");
    struct tg_ingress *in = ingress_start(&opts, &s, m);
    assert_true(metric(m, "tidegate_mqtt_connections") == 1);
    assert_true(metric(m, "tidegate_mqtt_paused") == 0);
    assert_true(tg_harness_file_contains(tg_harness_mosquitto_log_path(mq),
                                         ": tg-order 1 telemetry/+\n"));

    struct publisher *p = publisher_new(mq);
    for (int i = 0; i < N; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "telemetry/dev-%d", i % 7);
        uint8_t payload[8] = {0, (uint8_t)(i >> 8), (uint8_t)i, 0xff, 0, 'x', 0, (uint8_t)i};
        size_t len = 1 + (size_t)(i % 8); /* 1..8 bytes, including empty-looking ones */
        assert_int_equal(mosquitto_publish(p->mosq, NULL, topic, (int)len, payload, 1, false),
                         MOSQ_ERR_SUCCESS);
    }
    struct sink_want w = {&s, N};
    assert_true(tg_harness_wait_until(sink_has_cond, &w, WAIT_MS));
    assert_int_equal(sink_count(&s), N);
    for (int i = 0; i < N; i++) {
        char topic[64];
        snprintf(topic, sizeof topic, "telemetry/dev-%d", i % 7);
        uint8_t payload[8] = {0, (uint8_t)(i >> 8), (uint8_t)i, 0xff, 0, 'x', 0, (uint8_t)i};
        assert_string_equal(s.msgs[i].topic, topic);
        assert_int_equal(s.msgs[i].payload_len, 1 + i % 8);
        assert_memory_equal(s.msgs[i].payload, payload, s.msgs[i].payload_len);
    }

    publisher_destroy(p);
    tg_ingress_stop(in);
    tg_ingress_stop(in); /* idempotent */
    assert_int_equal(tg_ingress_connected(in), 0);
    assert_true(metric(m, "tidegate_mqtt_connections") == 0);
    assert_true(metric(m, "tidegate_mqtt_reconnects_total") == 0);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* Three connections share one subscription, `want` in the broker's log: every message
 * published on telemetry/dev-1 arrives exactly once. */
static void shared_subscription_case(const char *client_id, const char *topic,
                                     const char *share_group, const char *want)
{
    enum { N = 900, CONNS = 3 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = base_opts(mq, client_id);
    opts.topic = topic;
    opts.connections = CONNS;
    opts.share_group = share_group;
    struct tg_ingress *in = ingress_start(&opts, &s, m);
    assert_true(metric(m, "tidegate_mqtt_connections") == CONNS);
    for (int i = 0; i < CONNS; i++) {
        char line[128];
        snprintf(line, sizeof line, ": %s-%d 1 %s\n", client_id, i, want);
        if (!tg_harness_file_contains(tg_harness_mosquitto_log_path(mq), line))
            fail_msg("the broker log has no subscription line \"%s\"", line);
    }

    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-1", 0, N);
    publisher_wait_acked(p, N);
    struct sink_want w = {&s, N};
    if (!tg_harness_wait_until(sink_has_cond, &w, WAIT_MS))
        fail_msg("%s: the sink got %d of %d messages within %d ms", topic, sink_count(&s), N,
                 WAIT_MS);
    assert_int_equal(sink_count(&s), N);
    assert_int_equal(sink_distinct(&s, N), N); /* N messages, N distinct: each once */

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

static void test_shared_subscription(void **state)
{
    (void)state;
    shared_subscription_case("tg-shared", "telemetry/+", "grp", "$share/grp/telemetry/+");
}

/* A topic written as a shared subscription keeps its own group with several connections
 * (it was prefixed a second time, "$share/grp/$share/mine/telemetry/+", which matches
 * nothing), and share_group, not set by the user, is not used. */
static void test_shared_subscription_own_group(void **state)
{
    (void)state;
    shared_subscription_case("tg-own", "$share/mine/telemetry/+", "grp",
                             "$share/mine/telemetry/+");
}

/* A sink that refuses everything pauses reading; when it opens, all 2,000 QoS1 messages
 * arrive once each and in order: the broker held them meanwhile. */
static void test_backpressure(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct tg_harness_mosquitto *mq =
        tg_harness_mosquitto_start(0, "max_queued_messages 100000\nmax_inflight_messages 20\n");
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, false);
    struct tg_ingress_opts opts = base_opts(mq, "tg-bp");
    struct tg_ingress *in = ingress_start(&opts, &s, m);

    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-2", 0, N);
    publisher_wait_acked(p, N); /* the broker has all of them */
    struct metric_want paused = {m, "tidegate_mqtt_paused", 1};
    assert_true(tg_harness_wait_until(metric_equals_cond, &paused, WAIT_MS));
    /* the sink is offered the same first message again and again, and takes nothing */
    struct sink_want retried = {&s, 20};
    assert_true(tg_harness_wait_until(sink_refused_cond, &retried, WAIT_MS));
    assert_int_equal(sink_count(&s), 0);
    assert_int_equal(tg_ingress_connected(in), 1);

    atomic_store(&s.open, true);
    expect_exactly_in_order(&s, N, "telemetry/dev-2");
    struct metric_want resumed = {m, "tidegate_mqtt_paused", 0};
    assert_true(tg_harness_wait_until(metric_equals_cond, &resumed, WAIT_MS));

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* What is published while the ingress is stopped waits in its session on the broker. */
static void test_persistent_session(void **state)
{
    (void)state;
    enum { N = 100 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = base_opts(mq, "tg-persist");

    struct tg_ingress *in = ingress_start(&opts, &s, m);
    tg_ingress_stop(in);
    tg_ingress_destroy(in);

    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-3", 0, N);
    publisher_wait_acked(p, N);
    assert_int_equal(sink_count(&s), 0);

    in = ingress_start(&opts, &s, m);
    expect_exactly_in_order(&s, N, "telemetry/dev-3");

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* The broker restarts (persistence on) while it holds a backlog for the ingress and while a
 * publisher is sending: the ingress reconnects and gets everything. QoS1 allows duplicates
 * (messages in flight when the broker went down are sent again); each message must arrive,
 * and the first arrivals must be in publish order. */
static void test_broker_restart(void **state)
{
    (void)state;
    enum { BACKLOG = 300, DURING = 100, AFTER = 200, N = BACKLOG + DURING + AFTER };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(
        TG_HARNESS_MQTT_PERSISTENCE, "max_queued_messages 100000\nmax_inflight_messages 20\n");
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, false);
    struct tg_ingress_opts opts = base_opts(mq, "tg-restart");
    struct tg_ingress *in = ingress_start(&opts, &s, m);

    /* a backlog the broker holds for the paused ingress */
    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-4", 0, BACKLOG);
    publisher_wait_acked(p, BACKLOG);
    /* more on the way while the broker goes down and comes back */
    publish_range(p, "telemetry/dev-4", BACKLOG, DURING);
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    atomic_store(&s.open, true);
    publish_range(p, "telemetry/dev-4", BACKLOG + DURING, AFTER);
    publisher_wait_acked(p, N);

    struct sink_want all = {&s, N};
    if (!tg_harness_wait_until(sink_distinct_cond, &all, WAIT_MS))
        fail_msg("the sink got %d of %d distinct messages", sink_distinct(&s, N), N);
    struct metric_want reconnected = {m, "tidegate_mqtt_reconnects_total", 1};
    assert_true(metric_at_least_cond(&reconnected));
    struct ingress_want connected = {in, 1};
    assert_true(tg_harness_wait_until(ingress_connected_cond, &connected, WAIT_MS));

    /* first arrivals in order */
    pthread_mutex_lock(&s.lock);
    int next = 0, dups = 0;
    for (int i = 0; i < s.n; i++) {
        int k = msg_index(&s.msgs[i]);
        assert_true(k >= 0 && k < N);
        if (k == next)
            next++;
        else if (k < next)
            dups++;
        else
            fail_msg("m-%d arrived before m-%d", k, next);
    }
    pthread_mutex_unlock(&s.lock);
    assert_int_equal(next, N);
    print_message("broker restart: %d messages, %d duplicates (QoS1 redelivery), %.0f "
                  "reconnect attempts\n",
                  N, dups, metric(m, "tidegate_mqtt_reconnects_total"));

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* Reading paused for longer than twice the keepalive: libmosquitto gives up waiting for the
 * PINGRESP (it waits unread behind the messages) and the ingress reconnects while still
 * paused. Nothing is lost or doubled: the message kept for the sink was acknowledged, the
 * unread ones come again with the resumed session. */
static void test_long_pause_reconnects(void **state)
{
    (void)state;
    enum { N = 200 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, false);
    struct tg_ingress_opts opts = base_opts(mq, "tg-longpause");
    opts.keepalive_ms = 5000; /* the smallest libmosquitto accepts */
    struct tg_ingress *in = ingress_start(&opts, &s, m);

    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-6", 0, N);
    publisher_wait_acked(p, N);
    struct metric_want reconnected = {m, "tidegate_mqtt_reconnects_total", 1};
    assert_true(tg_harness_wait_until(metric_at_least_cond, &reconnected, 4 * 5000));
    /* connected again (the resumed session has its subscription) and still paused */
    struct ingress_want connected = {in, 1};
    assert_true(tg_harness_wait_until(ingress_connected_cond, &connected, WAIT_MS));
    assert_true(metric(m, "tidegate_mqtt_paused") == 1);
    assert_int_equal(sink_count(&s), 0);

    atomic_store(&s.open, true);
    expect_exactly_in_order(&s, N, "telemetry/dev-6");

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* Opens the sink once tg_ingress_stop() has offered it the pending messages a few times. */
struct opener {
    struct sink *s;
    atomic_bool stop_called;
    long refused_before;
};

static void *opener_main(void *arg)
{
    struct opener *o = arg;
    struct timespec tick = {.tv_nsec = 1000000};
    int64_t deadline = tg_harness_now_ms() + WAIT_MS;
    while (tg_harness_now_ms() < deadline) {
        if (atomic_load(&o->stop_called) && atomic_load(&o->s->refused) >= o->refused_before + 5)
            break;
        nanosleep(&tick, NULL);
    }
    atomic_store(&o->s->open, true);
    return NULL;
}

/* Stop while paused: stop() hands the pending messages to the sink before it returns, and
 * what was not read yet stays on the broker for the next session: nothing lost, nothing
 * twice. */
static void test_stop_delivers_pending(void **state)
{
    (void)state;
    enum { N = 50 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, false);
    struct tg_ingress_opts opts = base_opts(mq, "tg-stop");
    struct tg_ingress *in = ingress_start(&opts, &s, m);

    struct publisher *p = publisher_new(mq);
    publish_range(p, "telemetry/dev-5", 0, N);
    publisher_wait_acked(p, N);
    struct sink_want refused = {&s, 1};
    assert_true(tg_harness_wait_until(sink_refused_cond, &refused, WAIT_MS));

    struct opener o = {.s = &s, .refused_before = atomic_load(&s.refused)};
    atomic_init(&o.stop_called, false);
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, opener_main, &o), 0);
    atomic_store(&o.stop_called, true);
    tg_ingress_stop(in);
    int taken = sink_count(&s);
    assert_int_equal(pthread_join(opener, NULL), 0);
    assert_true(taken >= 1);
    assert_true(atomic_load(&s.refused) >= o.refused_before + 5); /* stop() had to wait */
    tg_ingress_destroy(in);
    assert_int_equal(sink_count(&s), taken); /* nothing after stop() returned */

    /* the rest comes with the next session */
    in = ingress_start(&opts, &s, m);
    expect_exactly_in_order(&s, N, "telemetry/dev-5");
    print_message("stop while paused: %d pending message(s) handed over by stop(), %d with "
                  "the next session\n",
                  taken, N - taken);

    publisher_destroy(p);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

/* Wrong credentials: the CONNACK refusal is retried with backoff, never counted connected. */
static void test_refused_credentials(void **state)
{
    (void)state;
    /* a password file with user "gw" / "right", and anonymous access off */
    char *dir = tg_harness_tmpdir_new("ingress-pw");
    assert_non_null(dir);
    char *pwfile = NULL, *conf = NULL;
    assert_true(asprintf(&pwfile, "%s/passwd", dir) > 0);
    const char *pw_argv[] = {"mosquitto_passwd", "-c", "-b", pwfile, "gw", "right", NULL};
    assert_true(tg_harness_exited_ok(tg_harness_run(pw_argv, NULL, 0, NULL, WAIT_MS)));
    assert_true(asprintf(&conf, "allow_anonymous false\npassword_file %s\n", pwfile) > 0);
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, conf);
    assert_non_null(mq);

    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = base_opts(mq, "tg-auth");
    opts.username = "gw";
    opts.password = "wrong";
    struct tg_ingress *in = NULL;
    char err[256];
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err), TG_OK);
    assert_int_equal(tg_ingress_start(in), TG_OK);
    struct metric_want retried = {m, "tidegate_mqtt_reconnects_total", 3};
    assert_true(tg_harness_wait_until(metric_at_least_cond, &retried, WAIT_MS));
    assert_int_equal(tg_ingress_connected(in), 0);
    tg_ingress_destroy(in);

    /* the right password connects */
    opts.password = "right";
    in = ingress_start(&opts, &s, m);
    tg_ingress_destroy(in);

    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
    tg_harness_tmpdir_done(dir);
    free(pwfile);
    free(conf);
}

/* Errors of _new name the [mqtt] key. */
static void test_config_errors(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = {
        .host = "127.0.0.1", .port = 1883, .client_id = "tg-cfg", .topic = "telemetry/+",
        .qos = 1, .connections = 1, .share_group = "tg", .keepalive_ms = 30000,
        .session_expiry_ms = 0, .reconnect_min_ms = 10, .reconnect_max_ms = 100,
        .tls_ca = "/nonexistent/ca.pem",
    };
    struct tg_ingress *in = NULL;
    char err[256] = "";
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_null(in);
    assert_string_equal(err, "[mqtt] tls_ca: cannot read \"/nonexistent/ca.pem\": No such "
                             "file or directory");

    opts.tls_ca = NULL;
    opts.tls_cert = "/etc/hostname";
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_non_null(strstr(err, "[mqtt] tls_key:"));

    opts.tls_cert = NULL;
    opts.topic = "telemetry/#/x";
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_non_null(strstr(err, "[mqtt] topic:"));

    opts.topic = "telemetry/+";
    opts.connections = 2;
    opts.share_group = "a/b";
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err),
                     TG_ERR_CONFIG);
    assert_non_null(strstr(err, "[mqtt] share_group:"));

    /* stop and destroy without ever starting (nothing listens on this port anyway) */
    opts.share_group = "tg";
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err), TG_OK);
    tg_ingress_stop(in);
    tg_ingress_destroy(in);
    tg_ingress_destroy(NULL);

    tg_metrics_destroy(m);
    sink_fini(&s);
}

/* Started against a port where nothing listens: it keeps trying, and stops at once. */
static void test_stop_while_never_connected(void **state)
{
    (void)state;
    /* A port bound but not listening refuses connections, and nobody else can take it while
     * we hold it (a port merely found free could be). */
    int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(holder >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(holder, (struct sockaddr *)&addr, sizeof addr), 0);
    socklen_t addr_len = sizeof addr;
    assert_int_equal(getsockname(holder, (struct sockaddr *)&addr, &addr_len), 0);
    int port = ntohs(addr.sin_port);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, true);
    struct tg_ingress_opts opts = {
        .host = "127.0.0.1", .port = port, .client_id = "tg-never", .topic = "telemetry/+",
        .qos = 1, .connections = 2, .share_group = "tg", .keepalive_ms = 10000,
        .session_expiry_ms = 60000, .reconnect_min_ms = 10, .reconnect_max_ms = 50,
    };
    struct tg_ingress *in = NULL;
    char err[256];
    assert_int_equal(tg_ingress_new(&opts, sink_fn, &s, m, &in, err, sizeof err), TG_OK);
    assert_int_equal(tg_ingress_start(in), TG_OK);
    struct metric_want retried = {m, "tidegate_mqtt_reconnects_total", 4};
    assert_true(tg_harness_wait_until(metric_at_least_cond, &retried, WAIT_MS));
    int64_t t0 = tg_harness_now_ms();
    tg_ingress_stop(in);
    assert_true(tg_harness_now_ms() - t0 < 1000);
    assert_int_equal(tg_ingress_connected(in), 0);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    close(holder);
}

/* Issue 11: a 100 MB payload took the gateway to 233 MB. The ingress announces a Maximum
 * Packet Size (MQTT 5) so the broker does not send what is larger, and of a payload over
 * max_payload_bytes hands over (or keeps, while the sink is full) only what its dead letter
 * keeps: TG_DLQ_PAYLOAD_MAX bytes. */
static void test_oversized_payloads(void **state)
{
    (void)state;
    enum { LIMIT = 4096, PACKET = 128 * 1024, BIG = 100 * 1024, HUGE = 300 * 1024 };
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    struct tg_metrics *m = tg_metrics_new();
    struct sink s;
    sink_init(&s, false); /* full: what arrives is kept by the ingress first */
    struct tg_ingress_opts opts = base_opts(mq, "tg-big");
    opts.max_payload_bytes = LIMIT;
    opts.max_packet_bytes = PACKET;
    struct tg_ingress *in = ingress_start(&opts, &s, m);

    uint8_t *payload = malloc(HUGE);
    assert_non_null(payload);
    for (size_t i = 0; i < HUGE; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    struct publisher *p = publisher_new(mq);
    assert_int_equal(mosquitto_publish(p->mosq, NULL, "telemetry/big", BIG, payload, 1, false),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_publish(p->mosq, NULL, "telemetry/huge", HUGE, payload, 1, false),
                     MOSQ_ERR_SUCCESS);
    publish_range(p, "telemetry/small", 0, 1);
    publisher_wait_acked(p, 3);
    /* The first message is held for the full sink; then let everything through. */
    struct sink_want refused = {&s, 1};
    assert_true(tg_harness_wait_until(sink_refused_cond, &refused, WAIT_MS));
    atomic_store(&s.open, true);
    struct sink_want w = {&s, 2};
    assert_true(tg_harness_wait_until(sink_has_cond, &w, WAIT_MS));
    /* the small message came after the huge one on the same connection: the broker dropped
     * the huge one rather than send it */
    assert_int_equal(sink_count(&s), 2);
    assert_string_equal(s.msgs[0].topic, "telemetry/big");
    assert_int_equal(s.msgs[0].payload_len, TG_DLQ_PAYLOAD_MAX);
    assert_memory_equal(s.msgs[0].payload, payload, TG_DLQ_PAYLOAD_MAX);
    assert_string_equal(s.msgs[1].topic, "telemetry/small");
    assert_int_equal(msg_index(&s.msgs[1]), 0);

    free(payload);
    publisher_destroy(p);
    tg_ingress_stop(in);
    tg_ingress_destroy(in);
    tg_metrics_destroy(m);
    sink_fini(&s);
    tg_harness_mosquitto_destroy(mq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_order_and_content, teardown),
        cmocka_unit_test_teardown(test_shared_subscription, teardown),
        cmocka_unit_test_teardown(test_shared_subscription_own_group, teardown),
        cmocka_unit_test_teardown(test_backpressure, teardown),
        cmocka_unit_test_teardown(test_persistent_session, teardown),
        cmocka_unit_test_teardown(test_broker_restart, teardown),
        cmocka_unit_test_teardown(test_stop_delivers_pending, teardown),
        cmocka_unit_test_teardown(test_long_pause_reconnects, teardown),
        cmocka_unit_test_teardown(test_refused_credentials, teardown),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test_teardown(test_oversized_payloads, teardown),
        cmocka_unit_test(test_stop_while_never_connected),
    };
    /* for the publisher; the ingress initialises libmosquitto itself as well */
    mosquitto_lib_init();
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mosquitto_lib_cleanup();
    return failed;
}
