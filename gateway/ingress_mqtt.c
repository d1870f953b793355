/*
 * ingress_mqtt.c - libmosquitto subscriber connections driven from one poll(2) loop
 * (see ingress_mqtt.h).
 *
 * Why our own loop and not mosquitto_loop_start(): backpressure. libmosquitto 2.0 reads a
 * plain TCP socket one MQTT packet at a time (no read-ahead buffer of its own), so when we
 * simply do not call mosquitto_loop_read() for a connection, the broker's further messages
 * stay in the kernel's socket buffer and then in the broker's queue for our session, and the
 * broker's in-flight window (max_inflight_messages) stops it from sending more. Over TLS one
 * loop_read() may deliver several messages (those already decrypted); every message that
 * arrives while the connection waits goes behind the ones already waiting, so order holds.
 *
 * Acknowledgement order, measured with strace on libmosquitto 2.0.11: for a QoS1 message the
 * PUBACK is written to the socket BEFORE on_message() runs (QoS2: PUBREC before, PUBCOMP
 * after the callback that follows PUBREL). So once a message reached on_message the broker
 * has forgotten it: a message kept in a pending list, or accepted by the sink but not yet
 * journaled, is lost if the process is killed. tg_ingress_stop() therefore hands every
 * pending message to the sink before it returns; what a kill -9 can lose is bounded by the
 * pipeline's commit interval plus the (at most a few) pending messages. A message not yet
 * read from the socket is unacknowledged and the broker sends it again to the session.
 *
 * Every libmosquitto call on a client happens on the ingress thread (after tg_ingress_new(),
 * which runs before the thread exists), so the clients are used unlocked.
 */
#include "ingress_mqtt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "gateway_limits.h"
#include "mqtt_nopair.h"

/* Poll timeout while messages wait for the sink: how soon the sink is offered them again. */
#define PENDING_RETRY_MS 2
/* Poll timeout otherwise: how often libmosquitto's keepalive bookkeeping runs at least. */
#define IDLE_TICK_MS 1000
/* How long tg_ingress_stop() waits for the DISCONNECT packets to leave. */
#define DISCONNECT_FLUSH_MS 2000
/* While stopping waits on the sink, how often it says so. */
#define STOP_WAIT_LOG_MS 5000
/* Lines that repeat while the broker is unreachable or refuses us, per connection. */
#define FAILURE_LOG_INTERVAL_MS 10000

enum conn_state {
    CONN_IDLE,       /* no socket; next attempt at next_attempt_ms */
    CONN_CONNECTING, /* socket open, CONNECT sent or pending, no CONNACK yet */
    CONN_ACTIVE,     /* CONNACK accepted, SUBACK not yet received */
    CONN_SUBSCRIBED, /* subscription confirmed: counted in tg_ingress_connected() */
};

/* A message the sink did not take yet: topic (no NUL) then payload in data. */
struct pending {
    struct pending *next;
    int64_t rx_ms;
    size_t topic_len;
    size_t payload_len;
    uint8_t data[];
};

struct conn {
    struct tg_ingress *in;
    struct mosquitto *mosq;
    char *client_id;
    enum conn_state state;
    bool attempted;          /* a connect was tried before: later ones count as reconnects */
    bool had_session;        /* CONNACK accepted at least once in this process */
    bool refused;            /* the broker refused the CONNECT or the SUBSCRIBE */
    unsigned failures;       /* attempts failed since the last accepted CONNACK */
    unsigned sub_refusals;   /* SUBSCRIBEs refused since the last accepted one */
    int64_t next_attempt_ms; /* monotonic */
    int sub_mid;
    struct pending *pend_head, *pend_tail;
    size_t n_pending;
    struct tg_log_ratelimit fail_rl;
    /* The first error libmosquitto logged during the current connect attempt: over TLS,
     * OpenSSL's reason ("certificate verify failed"), which its result code does not carry. */
    char connect_error[160];
};

struct tg_ingress {
    char *host;
    int port;
    char *sub_topic; /* tg_ingress_topic_subscription() */
    int qos;
    size_t max_payload_bytes; /* 0: no cut (tg_ingress_opts) */
    int keepalive_s;
    bool keeps_session; /* session expiry of at least 1 s on the wire */
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;

    tg_ingress_sink_fn sink;
    void *ud;

    struct conn *conns;
    int n_conns;
    struct pollfd *pfds; /* [0]: wake_fd, [1 + i]: conns[i] */
    int wake_fd;

    pthread_t thread;
    bool thread_running; /* owner thread only */
    bool stopped;        /* owner thread only */
    atomic_bool stop_requested;
    atomic_int n_subscribed;
    bool paused; /* ingress thread: some connection has pending messages */
    bool lib_init;
    uint64_t rng;

    struct tg_gauge *g_connections;
    struct tg_gauge *g_paused;
    struct tg_counter *c_reconnects;

    /* tg_ingress_publish(): messages for the broker from other threads (durable acks) */
    pthread_mutex_t out_lock;
    bool out_lock_init;
    struct outmsg *out_head, *out_tail;
    size_t out_n;
};

/* One message waiting for the ingress thread to publish it: topic, NUL, payload. */
struct outmsg {
    struct outmsg *next;
    size_t topic_len, len;
    int qos;
    char data[];
};

/* libmosquitto's init/cleanup keep a reference count, but a plain (unlocked) one: serialize
 * ours so that several ingress objects on different threads are safe. */
static pthread_mutex_t lib_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64*: reconnect jitter only needs to differ between connections and gateways.
 * libmosquitto calls srand() in mosquitto_lib_init(), so rand() is not used. */
static uint64_t next_random(struct tg_ingress *in)
{
    in->rng ^= in->rng >> 12;
    in->rng ^= in->rng << 25;
    in->rng ^= in->rng >> 27;
    return in->rng * UINT64_C(2685821657736338717);
}

/* Full jitter (the "exponential backoff and jitter" scheme): a uniformly random delay in
 * [0, min(max, min * 2^failures)], so that many gateways, or the connections of one, that lost
 * the broker together do not come back in lockstep. */
static int64_t backoff_delay_ms(struct tg_ingress *in, unsigned failures)
{
    int64_t cap = in->reconnect_min_ms;
    for (unsigned i = 0; i < failures && cap < in->reconnect_max_ms; i++)
        cap *= 2;
    if (cap > in->reconnect_max_ms)
        cap = in->reconnect_max_ms;
    return (int64_t)(next_random(in) % (uint64_t)(cap + 1));
}

static bool stopping(const struct tg_ingress *in)
{
    return atomic_load_explicit(&in->stop_requested, memory_order_acquire);
}

/* A libmosquitto result for a log line. On a disconnect libmosquitto 2.0 passes either one of
 * its own codes or, when the broker sent a v5 DISCONNECT, the broker's reason code (>= 128,
 * e.g. 142 "session taken over"). */
static const char *mosq_reason(int rc)
{
    if (rc >= 128)
        return mosquitto_reason_string(rc);
    if (rc == MOSQ_ERR_ERRNO)
        return strerror(errno);
    return mosquitto_strerror(rc);
}

#define CONN_WARN_RL(c, ...)                                                                 \
    do {                                                                                     \
        uint64_t suppressed_;                                                                \
        if (tg_log_enabled(TG_LOG_LEVEL_WARN, "mqtt") &&                                    \
            tg_log_ratelimit_pass(&(c)->fail_rl, FAILURE_LOG_INTERVAL_MS,                    \
                                  tg_log_monotonic_ms(), &suppressed_))                      \
            tg_log_write_suppressed(TG_LOG_LEVEL_WARN, "mqtt", suppressed_, __VA_ARGS__);    \
    } while (0)

static void set_subscribed(struct conn *c, bool subscribed)
{
    struct tg_ingress *in = c->in;
    bool was = c->state == CONN_SUBSCRIBED;
    if (was == subscribed)
        return;
    int n = atomic_fetch_add_explicit(&in->n_subscribed, subscribed ? 1 : -1,
                                      memory_order_relaxed) + (subscribed ? 1 : -1);
    tg_gauge_set(in->g_connections, n);
}

static void set_state(struct conn *c, enum conn_state st)
{
    set_subscribed(c, st == CONN_SUBSCRIBED);
    c->state = st;
}

static void schedule_retry(struct conn *c, int64_t now, unsigned exponent)
{
    int64_t delay = backoff_delay_ms(c->in, exponent);
    c->next_attempt_ms = now + delay;
    TG_LOG_DEBUG("mqtt", "%s: next connect attempt in %lld ms", c->client_id,
                 (long long)delay);
}

/* ---- pending messages (the backpressure path; not the hot path) ---- */

static tg_err pending_push(struct conn *c, const char *topic, size_t topic_len,
                           const uint8_t *payload, size_t payload_len, int64_t rx_ms)
{
    struct pending *p = malloc(sizeof *p + topic_len + payload_len);
    if (!p)
        return TG_ERR_NOMEM;
    p->next = NULL;
    p->rx_ms = rx_ms;
    p->topic_len = topic_len;
    p->payload_len = payload_len;
    memcpy(p->data, topic, topic_len);
    if (payload_len)
        memcpy(p->data + topic_len, payload, payload_len);
    if (c->pend_tail)
        c->pend_tail->next = p;
    else
        c->pend_head = p;
    c->pend_tail = p;
    c->n_pending++;
    return TG_OK;
}

static void pending_pop(struct conn *c)
{
    struct pending *p = c->pend_head;
    c->pend_head = p->next;
    if (!c->pend_head)
        c->pend_tail = NULL;
    c->n_pending--;
    free(p);
}

/* The sink's contract allows TG_OK and TG_ERR_FULL only. Anything else is a bug there; the
 * message is logged as lost rather than retried forever (which would wedge the ingress and
 * tg_ingress_stop()). */
static void sink_bug(const struct conn *c, tg_err rc, size_t topic_len, const char *topic)
{
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "mqtt", 10000,
                       "%s: the sink failed (%s): message on %.*s lost", c->client_id,
                       tg_strerror(rc), (int)topic_len, topic);
}

/* Offers each connection's pending messages to the sink, oldest first, until it is full.
 * Returns how many are still pending over all connections. */
static size_t retry_pending(struct tg_ingress *in)
{
    size_t left = 0;
    for (int i = 0; i < in->n_conns; i++) {
        struct conn *c = &in->conns[i];
        while (c->pend_head) {
            struct pending *p = c->pend_head;
            tg_err rc = in->sink(in->ud, (const char *)p->data, p->topic_len,
                                 p->data + p->topic_len, p->payload_len, p->rx_ms);
            if (rc == TG_ERR_FULL)
                break;
            if (rc != TG_OK)
                sink_bug(c, rc, p->topic_len, (const char *)p->data);
            pending_pop(c);
        }
        left += c->n_pending;
    }
    return left;
}

static void set_paused(struct tg_ingress *in, bool paused)
{
    if (in->paused == paused)
        return;
    in->paused = paused;
    tg_gauge_set(in->g_paused, paused ? 1 : 0);
    TG_LOG_DEBUG("mqtt", "%s reading: the pipeline is %s", paused ? "paused" : "resumed",
                 paused ? "full" : "taking messages again");
}

/* ---- libmosquitto callbacks (ingress thread, inside loop_read/loop_write/loop_misc) ---- */

/* libmosquitto's log, on while a connect attempt runs (connect_attempt() to the CONNACK):
 * libmosquitto formats every debug line for it, one per packet, which the receive path
 * should not pay for. Keeps the first error: OpenSSL's, when a TLS handshake fails. */
static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    struct conn *c = obj;
    if (level != MOSQ_LOG_ERR || c->connect_error[0])
        return;
    /* "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed" */
    const char *why = strstr(str, "error:");
    snprintf(c->connect_error, sizeof c->connect_error, "%s", why ? why : str);
}

/* What failed in a connect attempt: libmosquitto's result, plus OpenSSL's reason if any. */
static const char *connect_failure(struct conn *c, int rc, char *buf, size_t size)
{
    if (!c->connect_error[0])
        return mosq_reason(rc);
    snprintf(buf, size, "%s (%s)", mosq_reason(rc), c->connect_error);
    return buf;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    (void)props;
    struct conn *c = obj;
    struct tg_ingress *in = c->in;
    mosquitto_log_callback_set(mosq, NULL);
    if (rc != 0) {
        /* Bad credentials, a banned client id, ...: the broker closes the connection, and
         * on_disconnect schedules the next attempt with backoff. */
        c->refused = true;
        CONN_WARN_RL(c, "%s: the broker %s:%d refused the connection: %s (reason %d)",
                     c->client_id, in->host, in->port, mosq_reason(rc), rc);
        return;
    }
    bool session_present = flags & 1;
    if (c->had_session && !session_present && in->keeps_session)
        TG_LOG_WARN("mqtt",
                    "%s: connected to %s:%d, but the broker no longer had our session (expired "
                    "or lost in a broker restart without persistence): messages queued for it "
                    "are gone",
                    c->client_id, in->host, in->port);
    else
        TG_LOG_INFO("mqtt", "%s: connected to %s:%d (%s)", c->client_id, in->host, in->port,
                    session_present ? "session resumed" : "new session");
    c->had_session = true;
    c->failures = 0;
    /* A resumed session still has its subscription, so the connection counts as subscribed
     * now; this matters while reading is paused, when the SUBACK waits unread behind the
     * messages the broker resends. */
    set_state(c, session_present ? CONN_SUBSCRIBED : CONN_ACTIVE);

    /* Subscribing again on every connect is harmless with a resumed session (the broker
     * replaces the subscription) and needed when the session is new. */
    int src = mosquitto_subscribe(mosq, &c->sub_mid, in->sub_topic, in->qos);
    if (src != MOSQ_ERR_SUCCESS) {
        TG_LOG_ERROR("mqtt", "%s: cannot subscribe to %s: %s; reconnecting", c->client_id,
                     in->sub_topic, mosq_reason(src));
        c->refused = true;
        mosquitto_disconnect(mosq);
    }
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
    struct conn *c = obj;
    struct tg_ingress *in = c->in;
    if (mid != c->sub_mid || c->state < CONN_ACTIVE)
        return;
    /* With MQTT v5 the entries are reason codes: 0-2 the granted QoS, >= 128 a refusal
     * (e.g. 135 "not authorized" from the broker's ACL). */
    if (qos_count < 1 || granted[0] >= 128) {
        int reason = qos_count < 1 ? MQTT_RC_UNSPECIFIED : granted[0];
        c->refused = true;
        c->sub_refusals++;
        CONN_WARN_RL(c, "%s: the broker refused the subscription to %s: %s (reason %d)",
                     c->client_id, in->sub_topic, mosquitto_reason_string(reason), reason);
        mosquitto_disconnect(mosq);
        return;
    }
    if (granted[0] < in->qos)
        TG_LOG_WARN("mqtt", "%s: the broker granted QoS %d for %s, not %d", c->client_id,
                    granted[0], in->sub_topic, in->qos);
    c->sub_refusals = 0;
    set_state(c, CONN_SUBSCRIBED);
    TG_LOG_DEBUG("mqtt", "%s: subscribed to %s", c->client_id, in->sub_topic);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                          const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct conn *c = obj;
    struct tg_ingress *in = c->in;
    enum conn_state was = c->state;
    set_state(c, CONN_IDLE);
    int64_t now = tg_log_monotonic_ms();
    if (stopping(in)) {
        if (was >= CONN_ACTIVE)
            TG_LOG_INFO("mqtt", "%s: disconnected (the session stays on the broker)",
                        c->client_id);
        return;
    }
    if (c->refused) {
        /* already logged; a refused SUBSCRIBE backs off like a refused CONNECT */
        c->refused = false;
        schedule_retry(c, now, c->sub_refusals ? c->sub_refusals : c->failures++);
        return;
    }
    if (was >= CONN_ACTIVE && rc == MOSQ_ERR_KEEPALIVE && c->pend_head) {
        /* Expected when the pipeline stays full for more than about twice the keepalive:
         * the PINGRESP waits unread behind the messages we are not reading. */
        TG_LOG_INFO("mqtt", "%s: keepalive expired while reading was paused for the pipeline; "
                            "reconnecting (the broker keeps the unread messages)",
                    c->client_id);
    } else if (was >= CONN_ACTIVE) {
        TG_LOG_WARN("mqtt", "%s: connection to %s:%d lost: %s; reconnecting", c->client_id,
                    in->host, in->port, mosq_reason(rc));
    } else {
        char why[256];
        CONN_WARN_RL(c, "%s: cannot connect to %s:%d: %s", c->client_id, in->host, in->port,
                     connect_failure(c, rc, why, sizeof why));
    }
    schedule_retry(c, now, c->failures++);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct conn *c = obj;
    struct tg_ingress *in = c->in;
    int64_t rx_ms = wall_ms();
    const char *topic = msg->topic;
    size_t topic_len = strlen(topic);
    const uint8_t *payload = msg->payload;
    size_t payload_len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    /* An oversized payload is only ever dead-lettered as too large, keeping its first
     * TG_DLQ_PAYLOAD_MAX bytes: nothing more of it is copied (neither into the hand-off
     * queue nor into a pending message while the pipeline is full). */
    if (in->max_payload_bytes && payload_len > in->max_payload_bytes) {
        size_t keep = in->max_payload_bytes + 1 > TG_DLQ_PAYLOAD_MAX ? in->max_payload_bytes + 1
                                                                     : TG_DLQ_PAYLOAD_MAX;
        if (payload_len > keep)
            payload_len = keep;
    }

    /* Behind messages already waiting, this one waits too: order per connection. */
    if (!c->pend_head) {
        tg_err rc = in->sink(in->ud, topic, topic_len, payload, payload_len, rx_ms);
        if (rc == TG_OK)
            return;
        if (rc != TG_ERR_FULL) {
            sink_bug(c, rc, topic_len, topic);
            return;
        }
        TG_LOG_DEBUG("mqtt", "%s: the pipeline is full, pausing this connection",
                     c->client_id);
    }
    if (pending_push(c, topic, topic_len, payload, payload_len, rx_ms) != TG_OK)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_ERROR, "mqtt", 10000,
                           "%s: out of memory keeping a message the pipeline could not take "
                           "yet: message on %s lost",
                           c->client_id, topic);
}

/* ---- the loop ---- */

/* Reading is what backpressure withholds: not while messages of this connection wait for
 * the sink (except until the CONNACK of a new connection, without which the connection
 * would time out), and not at all once stopping. */
static bool may_read(const struct conn *c, bool stop)
{
    if (stop)
        return false;
    return !c->pend_head || c->state == CONN_CONNECTING;
}

static void connect_attempt(struct conn *c, int64_t now)
{
    struct tg_ingress *in = c->in;
    if (c->attempted)
        tg_counter_inc(in->c_reconnects);
    c->attempted = true;
    c->refused = false;
    c->connect_error[0] = '\0';
    mosquitto_log_callback_set(c->mosq, on_log);
    /* Non-blocking: the TCP connect completes (and CONNECT is written) once poll reports the
     * socket writable. Host name resolution, if the host is a name, still blocks. The v5
     * CONNECT properties were stored on the client in tg_ingress_new(). */
    tg_mqtt_nopair_begin();
    int rc = mosquitto_connect_bind_async(c->mosq, in->host, in->port, in->keepalive_s, NULL);
    tg_mqtt_nopair_end();
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(c->mosq) >= 0) {
        set_state(c, CONN_CONNECTING);
        return;
    }
    char buf[256];
    const char *why = rc == MOSQ_ERR_SUCCESS ? "no socket" : connect_failure(c, rc, buf,
                                                                             sizeof buf);
    CONN_WARN_RL(c, "%s: cannot connect to %s:%d: %s", c->client_id, in->host, in->port, why);
    schedule_retry(c, now, c->failures++);
}

static void service(struct conn *c, short revents, bool stop)
{
    if (mosquitto_socket(c->mosq) < 0)
        return;
    /* Errors inside these calls reach on_disconnect, which schedules the next attempt. */
    if ((revents & (POLLIN | POLLERR | POLLHUP)) && may_read(c, stop))
        mosquitto_loop_read(c->mosq, 1);
    if (mosquitto_socket(c->mosq) >= 0 && (revents & (POLLOUT | POLLERR | POLLHUP)))
        mosquitto_loop_write(c->mosq, 1);
    /* Keepalive: sends PINGREQ when due, and gives up on a connection (or a connect) that
     * stayed silent too long. Runs also while reading is paused. */
    if (mosquitto_socket(c->mosq) >= 0)
        mosquitto_loop_misc(c->mosq);
}

static void drain_wake_fd(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof v) > 0)
        ;
}

/* Sends DISCONNECT on every connection that has a session going, and waits a little for the
 * packets to leave. libmosquitto closes the socket once DISCONNECT is written. Connections
 * still connecting are closed by mosquitto_destroy() in tg_ingress_stop(). */
static void disconnect_all(struct tg_ingress *in)
{
    for (int i = 0; i < in->n_conns; i++) {
        struct conn *c = &in->conns[i];
        if (c->state >= CONN_ACTIVE && mosquitto_socket(c->mosq) >= 0)
            mosquitto_disconnect(c->mosq);
    }
    int64_t deadline = tg_log_monotonic_ms() + DISCONNECT_FLUSH_MS;
    for (;;) {
        int n = 0;
        for (int i = 0; i < in->n_conns; i++) {
            struct conn *c = &in->conns[i];
            int fd = mosquitto_socket(c->mosq);
            bool busy = c->state >= CONN_ACTIVE && fd >= 0 && mosquitto_want_write(c->mosq);
            in->pfds[1 + i] = (struct pollfd){.fd = busy ? fd : -1, .events = POLLOUT};
            n += busy;
        }
        int64_t left = deadline - tg_log_monotonic_ms();
        if (n == 0 || left <= 0)
            break;
        if (poll(in->pfds + 1, (nfds_t)in->n_conns, (int)left) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < in->n_conns; i++)
            if (in->pfds[1 + i].fd >= 0 && in->pfds[1 + i].revents)
                mosquitto_loop_write(in->conns[i].mosq, 1);
    }
}

/* Publishes what other threads queued (tg_ingress_publish) on the first connection that is
 * up, or drops it when none is: acks are idempotent and repeated (ack.h). */
static void publish_queued(struct tg_ingress *in)
{
    pthread_mutex_lock(&in->out_lock);
    struct outmsg *m = in->out_head;
    in->out_head = in->out_tail = NULL;
    in->out_n = 0;
    pthread_mutex_unlock(&in->out_lock);
    struct conn *up = NULL;
    for (int i = 0; i < in->n_conns && !up; i++)
        if (in->conns[i].state >= CONN_ACTIVE && mosquitto_socket(in->conns[i].mosq) >= 0)
            up = &in->conns[i];
    while (m) {
        struct outmsg *next = m->next;
        if (up)
            (void)mosquitto_publish(up->mosq, NULL, m->data, (int)m->len,
                                    m->data + m->topic_len + 1, m->qos, false);
        free(m);
        m = next;
    }
}

static void *ingress_main(void *arg)
{
    struct tg_ingress *in = arg;
    int64_t stop_log_ms = 0;
    for (;;) {
        bool stop = stopping(in);
        /* Pending messages go first, so that reading resumes only once they are taken. */
        size_t pending = retry_pending(in);
        set_paused(in, pending > 0);
        int64_t now = tg_log_monotonic_ms();
        if (stop) {
            if (pending == 0)
                break;
            if (now - stop_log_ms >= STOP_WAIT_LOG_MS) {
                stop_log_ms = now;
                TG_LOG_INFO("mqtt", "stopping: waiting for the pipeline to take %zu pending "
                                    "message(s)",
                            pending);
            }
        }

        publish_queued(in);
        int64_t timeout = pending ? PENDING_RETRY_MS : IDLE_TICK_MS;
        in->pfds[0] = (struct pollfd){.fd = in->wake_fd, .events = POLLIN};
        for (int i = 0; i < in->n_conns; i++) {
            struct conn *c = &in->conns[i];
            /* A socket libmosquitto closed without telling us (it calls on_disconnect on
             * every path we know of; this keeps the state honest if one is missed). */
            if (c->state != CONN_IDLE && mosquitto_socket(c->mosq) < 0)
                on_disconnect(c->mosq, c, MOSQ_ERR_CONN_LOST, NULL);
            if (!stop && c->state == CONN_IDLE) {
                if (now >= c->next_attempt_ms)
                    connect_attempt(c, now);
                else if (c->next_attempt_ms - now < timeout)
                    timeout = c->next_attempt_ms - now;
            }
            int fd = mosquitto_socket(c->mosq);
            short events = 0;
            if (fd >= 0 && may_read(c, stop))
                events |= POLLIN;
            if (fd >= 0 && mosquitto_want_write(c->mosq))
                events |= POLLOUT;
            /* With no events a closed peer would still report POLLHUP at once and spin the
             * loop; a paused connection notices a loss through keepalive or its next read. */
            in->pfds[1 + i] = (struct pollfd){.fd = events ? fd : -1, .events = events};
        }

        int rc = poll(in->pfds, (nfds_t)in->n_conns + 1, (int)timeout);
        if (rc < 0) {
            if (errno != EINTR) {
                TG_LOG_ERROR("mqtt", "poll: %s", strerror(errno));
                /* Should not happen; avoid spinning on it. */
                struct timespec ts = {.tv_nsec = 10 * 1000000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        if (in->pfds[0].revents)
            drain_wake_fd(in->wake_fd);
        for (int i = 0; i < in->n_conns; i++)
            service(&in->conns[i], in->pfds[1 + i].revents, stop);
    }
    disconnect_all(in);
    return NULL;
}

/* ---- setup ---- */

static char *dup_str(const char *s) { return strdup(s ? s : ""); }

static bool empty(const char *s) { return !s || !*s; }

/* "[mqtt] tls_ca: cannot read "/x.pem": No such file or directory" */
static tg_err check_readable(const char *key, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "[mqtt] %s: cannot read \"%s\": %s", key, path, strerror(errno));
        return TG_ERR_CONFIG;
    }
    close(fd);
    return TG_OK;
}

static tg_err check_opts(const struct tg_ingress_opts *o, char *err, size_t errlen)
{
    if (empty(o->host)) {
        snprintf(err, errlen, "[mqtt] host: must not be empty");
        return TG_ERR_CONFIG;
    }
    if (o->port < 1 || o->port > 65535) {
        snprintf(err, errlen, "[mqtt] port: expected 1..65535, got %d", o->port);
        return TG_ERR_CONFIG;
    }
    if (empty(o->client_id)) {
        snprintf(err, errlen, "[mqtt] client_id: must not be empty (a persistent session "
                              "needs a stable client id)");
        return TG_ERR_CONFIG;
    }
    char why[256];
    if (tg_ingress_topic_check(o->topic ? o->topic : "", why, sizeof why) != TG_OK) {
        snprintf(err, errlen, "[mqtt] topic: %s", why);
        return TG_ERR_CONFIG;
    }
    if (o->qos < 0 || o->qos > 2) {
        snprintf(err, errlen, "[mqtt] qos: expected 0, 1 or 2, got %d", o->qos);
        return TG_ERR_CONFIG;
    }
    if (o->connections < 1) {
        snprintf(err, errlen, "[mqtt] connections: expected at least 1, got %d",
                 o->connections);
        return TG_ERR_CONFIG;
    }
    const char *own_group;
    size_t own_group_len;
    (void)tg_ingress_topic_filter(o->topic, &own_group, &own_group_len);
    if (o->connections > 1 && !own_group &&
        (empty(o->share_group) || !tg_ingress_share_group_ok(o->share_group,
                                                             strlen(o->share_group)))) {
        snprintf(err, errlen,
                 "[mqtt] share_group: \"%s\" cannot name a shared subscription group (needed "
                 "with connections > 1): it must be non-empty, without '/', '+' or '#'",
                 o->share_group ? o->share_group : "");
        return TG_ERR_CONFIG;
    }
    if (o->keepalive_ms < 5000 || o->keepalive_ms / 1000 > 65535) {
        snprintf(err, errlen, "[mqtt] keepalive_ms: expected 5000..65535000, got %lld",
                 (long long)o->keepalive_ms);
        return TG_ERR_CONFIG;
    }
    if (o->session_expiry_ms < 0) {
        snprintf(err, errlen, "[mqtt] session_expiry_ms: must not be negative");
        return TG_ERR_CONFIG;
    }
    if (o->reconnect_min_ms < 1 || o->reconnect_max_ms < o->reconnect_min_ms) {
        snprintf(err, errlen,
                 "[mqtt] reconnect_max_ms: must be at least reconnect_min_ms (%lld), got %lld",
                 (long long)o->reconnect_min_ms, (long long)o->reconnect_max_ms);
        return TG_ERR_CONFIG;
    }
    bool cert = !empty(o->tls_cert), key = !empty(o->tls_key);
    if (cert != key) {
        snprintf(err, errlen, "[mqtt] %s: required when %s is set",
                 cert ? "tls_key" : "tls_cert", cert ? "tls_cert" : "tls_key");
        return TG_ERR_CONFIG;
    }
    if (cert && empty(o->tls_ca)) {
        snprintf(err, errlen, "[mqtt] tls_ca: required when tls_cert and tls_key are set");
        return TG_ERR_CONFIG;
    }
    if (!empty(o->tls_ca)) {
        tg_err rc = check_readable("tls_ca", o->tls_ca, err, errlen);
        if (rc == TG_OK && cert)
            rc = check_readable("tls_cert", o->tls_cert, err, errlen);
        if (rc == TG_OK && key)
            rc = check_readable("tls_key", o->tls_key, err, errlen);
        if (rc != TG_OK)
            return rc;
    }
    return TG_OK;
}

/*
 * libmosquitto 2.0 has no asynchronous connect that takes MQTT v5 properties, and without the
 * session-expiry-interval property a v5 session ends when the connection does. But
 * mosquitto_connect_bind_v5() stores its CONNECT properties on the client before it checks
 * its other arguments, and every later connect of that client (mosquitto_connect_bind_async,
 * mosquitto_reconnect_async) sends the stored ones (verified on the wire with 2.0.11). So the
 * properties are stored by a call that is refused for its keepalive (below libmosquitto's
 * minimum of 5 s) and therefore does not connect, and every real connect is asynchronous.
 * test_ingress's persistent-session tests fail if a libmosquitto version stops doing this.
 */
static tg_err store_connect_properties(struct conn *c, const struct tg_ingress_opts *o,
                                       char *err, size_t errlen)
{
    int64_t expiry_s = o->session_expiry_ms / 1000;
    if (expiry_s > (int64_t)UINT32_MAX)
        expiry_s = UINT32_MAX; /* 0xFFFFFFFF: the session never expires */
    mosquitto_property *props = NULL;
    int rc = mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                          (uint32_t)expiry_s);
    /* Maximum Packet Size (MQTT 5, 3.1.2.11.4): the broker must not send us a larger
     * packet. libmosquitto reads a whole PUBLISH into memory before on_message, whatever
     * its size, so this is the only bound on what one message can cost us. */
    if (rc == MOSQ_ERR_SUCCESS && o->max_packet_bytes)
        rc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                          o->max_packet_bytes);
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_connect_bind_v5(c->mosq, o->host, o->port, 1, NULL, props);
        /* MOSQ_ERR_INVAL is the expected answer (the keepalive); anything else means the
         * properties themselves were refused, or memory ran out. */
        rc = rc == MOSQ_ERR_INVAL ? MOSQ_ERR_SUCCESS : rc;
    }
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, errlen, "[mqtt] session_expiry_ms: libmosquitto refused the CONNECT "
                              "properties: %s", mosquitto_strerror(rc));
        return rc == MOSQ_ERR_NOMEM ? TG_ERR_NOMEM : TG_ERR_CONFIG;
    }
    return TG_OK;
}

static tg_err setup_conn(struct tg_ingress *in, struct conn *c, int index,
                         const struct tg_ingress_opts *o, char *err, size_t errlen)
{
    c->in = in;
    c->fail_rl = (struct tg_log_ratelimit)TG_LOG_RATELIMIT_INIT;
    if (in->n_conns == 1)
        c->client_id = strdup(o->client_id);
    else if (asprintf(&c->client_id, "%s-%d", o->client_id, index) < 0)
        c->client_id = NULL;
    if (!c->client_id)
        goto nomem;
    /* clean_session = false: with v5 this is clean start off, so the broker resumes the
     * session (subscription and queued QoS1 messages) on every connect. */
    /* Without the wake-up socketpair (mqtt_nopair.h): it would cost a write(2) per PUBACK,
     * that is per message received, for a pipe our loop never reads. */
    tg_mqtt_nopair_begin();
    c->mosq = mosquitto_new(c->client_id, false, c);
    tg_mqtt_nopair_end();
    if (!c->mosq)
        goto nomem;

    int rc = mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    const char *what = "protocol version 5";
    /* PUBACKs are 4-byte writes; with Nagle they can wait for the broker's delayed ACK, and
     * the broker sends only max_inflight_messages before it needs them. */
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
        what = "TCP_NODELAY";
    }
    if (rc == MOSQ_ERR_SUCCESS && !empty(o->username)) {
        rc = mosquitto_username_pw_set(c->mosq, o->username,
                                       empty(o->password) ? NULL : o->password);
        what = "username";
    }
    if (rc == MOSQ_ERR_SUCCESS && !empty(o->tls_ca)) {
        rc = mosquitto_tls_set(c->mosq, o->tls_ca, NULL, empty(o->tls_cert) ? NULL : o->tls_cert,
                               empty(o->tls_key) ? NULL : o->tls_key, NULL);
        what = "tls_ca";
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, errlen, "[mqtt] %s: libmosquitto refused it: %s", what,
                 mosquitto_strerror(rc));
        return rc == MOSQ_ERR_NOMEM ? TG_ERR_NOMEM : TG_ERR_CONFIG;
    }
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
    mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
    mosquitto_message_callback_set(c->mosq, on_message);
    return store_connect_properties(c, o, err, errlen);

nomem:
    snprintf(err, errlen, "mqtt: out of memory");
    return TG_ERR_NOMEM;
}

tg_err tg_ingress_new(const struct tg_ingress_opts *opts, tg_ingress_sink_fn sink, void *ud,
                      struct tg_metrics *metrics, struct tg_ingress **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    tg_err rc = check_opts(opts, err, errlen);
    if (rc != TG_OK)
        return rc;

    struct tg_ingress *in = calloc(1, sizeof *in);
    if (!in) {
        snprintf(err, errlen, "mqtt: out of memory");
        return TG_ERR_NOMEM;
    }
    in->wake_fd = -1;
    if (pthread_mutex_init(&in->out_lock, NULL) != 0) {
        free(in);
        return TG_ERR_NOMEM;
    }
    in->out_lock_init = true;
    in->sink = sink;
    in->ud = ud;
    in->port = opts->port;
    in->qos = opts->qos;
    in->max_payload_bytes = opts->max_payload_bytes;
    in->keepalive_s = (int)(opts->keepalive_ms / 1000);
    in->keeps_session = opts->session_expiry_ms >= 1000;
    in->reconnect_min_ms = opts->reconnect_min_ms;
    in->reconnect_max_ms = opts->reconnect_max_ms;
    atomic_init(&in->stop_requested, false);
    atomic_init(&in->n_subscribed, 0);

    pthread_mutex_lock(&lib_lock);
    int lrc = mosquitto_lib_init();
    pthread_mutex_unlock(&lib_lock);
    if (lrc != MOSQ_ERR_SUCCESS) {
        snprintf(err, errlen, "mqtt: libmosquitto initialisation failed: %s",
                 mosquitto_strerror(lrc));
        rc = TG_ERR_INTERNAL;
        goto fail;
    }
    in->lib_init = true;

    in->host = dup_str(opts->host);
    in->sub_topic =
        tg_ingress_topic_subscription(opts->topic, opts->connections, opts->share_group);
    in->n_conns = opts->connections;
    in->conns = calloc((size_t)in->n_conns, sizeof *in->conns);
    in->pfds = calloc((size_t)in->n_conns + 1, sizeof *in->pfds);
    in->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!in->host || !in->sub_topic || !in->conns || !in->pfds) {
        snprintf(err, errlen, "mqtt: out of memory");
        rc = TG_ERR_NOMEM;
        goto fail;
    }
    if (in->wake_fd < 0) {
        snprintf(err, errlen, "mqtt: eventfd: %s", strerror(errno));
        rc = TG_ERR_IO;
        goto fail;
    }
    if (getrandom(&in->rng, sizeof in->rng, GRND_NONBLOCK) != (ssize_t)sizeof in->rng)
        in->rng = (uint64_t)wall_ms() ^ (uint64_t)(uintptr_t)in;
    in->rng |= 1; /* xorshift must not start at 0 */

    for (int i = 0; i < in->n_conns; i++) {
        rc = setup_conn(in, &in->conns[i], i, opts, err, errlen);
        if (rc != TG_OK)
            goto fail;
    }

    in->g_connections = tg_metrics_gauge(metrics, "tidegate_mqtt_connections",
                                         "MQTT connections to the broker that are connected "
                                         "and subscribed",
                                         NULL);
    in->c_reconnects = tg_metrics_counter(metrics, "tidegate_mqtt_reconnects_total",
                                          "MQTT connection attempts after the first one of "
                                          "each connection (after a lost, failed or refused "
                                          "connection)",
                                          NULL);
    in->g_paused = tg_metrics_gauge(metrics, "tidegate_mqtt_paused",
                                    "1 while the MQTT ingress has stopped reading because the "
                                    "pipeline is full (the broker holds the messages), else 0",
                                    NULL);
    tg_gauge_set(in->g_connections, 0);
    tg_gauge_set(in->g_paused, 0);
    *out = in;
    return TG_OK;

fail:
    tg_ingress_destroy(in);
    return rc;
}

tg_err tg_ingress_start(struct tg_ingress *in)
{
    if (in->thread_running || in->stopped)
        return TG_ERR_USAGE;
    int rc = pthread_create(&in->thread, NULL, ingress_main, in);
    if (rc != 0) {
        TG_LOG_ERROR("mqtt", "cannot start the ingress thread: %s", strerror(rc));
        return rc == EAGAIN ? TG_ERR_NOMEM : TG_ERR_INTERNAL;
    }
    (void)pthread_setname_np(in->thread, "tg-mqtt"); /* cosmetic: shows in top -H */
    in->thread_running = true;
    return TG_OK;
}

void tg_ingress_stop(struct tg_ingress *in)
{
    if (in->stopped)
        return;
    in->stopped = true;
    atomic_store_explicit(&in->stop_requested, true, memory_order_release);
    if (in->thread_running) {
        uint64_t one = 1;
        /* Cannot fail short of a full counter, which a pending wake-up already implies. */
        if (write(in->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            TG_LOG_ERROR("mqtt", "waking the ingress thread: %s", strerror(errno));
        pthread_join(in->thread, NULL);
        in->thread_running = false;
    }
    /* Closes whatever is still open (connects in progress, a DISCONNECT that did not leave
     * in time: the broker keeps the session either way). */
    for (int i = 0; in->conns && i < in->n_conns; i++) {
        struct conn *c = &in->conns[i];
        if (c->mosq) {
            set_state(c, CONN_IDLE);
            mosquitto_destroy(c->mosq);
            c->mosq = NULL;
        }
    }
    if (in->g_paused)
        tg_gauge_set(in->g_paused, 0);
}

void tg_ingress_destroy(struct tg_ingress *in)
{
    if (!in)
        return;
    tg_ingress_stop(in);
    if (in->conns) {
        for (int i = 0; i < in->n_conns; i++) {
            struct conn *c = &in->conns[i];
            while (c->pend_head)
                pending_pop(c);
            free(c->client_id);
        }
    }
    free(in->conns);
    free(in->pfds);
    while (in->out_head) {
        struct outmsg *next = in->out_head->next;
        free(in->out_head);
        in->out_head = next;
    }
    if (in->out_lock_init)
        pthread_mutex_destroy(&in->out_lock);
    if (in->wake_fd >= 0)
        close(in->wake_fd);
    free(in->host);
    free(in->sub_topic);
    if (in->lib_init) {
        pthread_mutex_lock(&lib_lock);
        mosquitto_lib_cleanup();
        pthread_mutex_unlock(&lib_lock);
    }
    free(in);
}

tg_err tg_ingress_publish(struct tg_ingress *in, const char *topic, const uint8_t *payload,
                          size_t len, int qos)
{
    size_t topic_len = strlen(topic);
    struct outmsg *m = malloc(sizeof *m + topic_len + 1 + len);
    if (!m)
        return TG_ERR_NOMEM;
    m->next = NULL;
    m->topic_len = topic_len;
    m->len = len;
    m->qos = qos;
    memcpy(m->data, topic, topic_len + 1);
    memcpy(m->data + topic_len + 1, payload, len);
    pthread_mutex_lock(&in->out_lock);
    bool full = in->out_n >= TG_INGRESS_PUBLISH_QUEUE_MAX;
    bool was_empty = in->out_head == NULL;
    if (!full) {
        if (in->out_tail)
            in->out_tail->next = m;
        else
            in->out_head = m;
        in->out_tail = m;
        in->out_n++;
    }
    pthread_mutex_unlock(&in->out_lock);
    if (full) {
        free(m);
        return TG_ERR_FULL;
    }
    if (was_empty && in->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(in->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 10000, "cannot wake the ingress: %s",
                               strerror(errno));
    }
    return TG_OK;
}

int tg_ingress_connected(const struct tg_ingress *in)
{
    return atomic_load_explicit(&in->n_subscribed, memory_order_relaxed);
}
