/*
 * transport_mosquitto.c - libmosquitto client driven from the node's loop, events queued.
 */
#include "transport_mosquitto.h"

#include <errno.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mqtt_nopair.h"

enum state { IDLE, CONNECTING, CONNECTED };

struct event {
    enum tg_mqtt_event kind;
    uint32_t token;
};

/* Durable ack payloads waiting for the core, in a ring; an event names its slot. */
#define ACK_SLOTS 16
#define ACK_MAX_BYTES 256

struct ack_slot {
    uint8_t payload[ACK_MAX_BYTES];
    size_t len;
};

struct tg_mqtt_transport {
    char *device_id, *host, *username, *password, *tls_ca, *tls_cert, *tls_key;
    char *ack_topic; /* NULL: no durable acks */
    struct ack_slot acks[ACK_SLOTS];
    uint32_t ack_next; /* slot of the next message, modulo ACK_SLOTS */
    char *topic;
    int port, keepalive_s;
    struct mosquitto *mosq;
    enum state state;
    /* Ring of events not yet handed out. It grows: a burst of PUBACKs after a reconnect can
     * be as long as the outbox. */
    struct event *ev;
    size_t ev_cap, ev_head, ev_count;
    bool oom;          /* an event could not be queued: treated as a lost connection */
    bool down_pending; /* a DOWN to hand out once the ring is empty (needs no memory) */
};

static char *dup_or_null(const char *s)
{
    return (s && s[0]) ? strdup(s) : NULL;
}

static void push_event(struct tg_mqtt_transport *tr, enum tg_mqtt_event kind, uint32_t token)
{
    if (tr->ev_count == tr->ev_cap) {
        size_t cap = tr->ev_cap ? tr->ev_cap * 2 : 64;
        struct event *ev = malloc(cap * sizeof *ev);
        if (!ev) {
            /* Losing a PUBACK would leave a reading in the outbox forever, so an event that
             * cannot be queued ends the connection: the core then sends it again. */
            tr->oom = true;
            return;
        }
        for (size_t i = 0; i < tr->ev_count; i++)
            ev[i] = tr->ev[(tr->ev_head + i) % tr->ev_cap];
        free(tr->ev);
        tr->ev = ev;
        tr->ev_cap = cap;
        tr->ev_head = 0;
    }
    tr->ev[(tr->ev_head + tr->ev_count) % tr->ev_cap] = (struct event){kind, token};
    tr->ev_count++;
}

/* The connection ended (or never came up): one DOWN event however many callbacks say so. */
static void lost(struct tg_mqtt_transport *tr)
{
    if (tr->state == IDLE)
        return;
    tr->state = IDLE;
    push_event(tr, TG_MQTT_EV_DOWN, 0);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct tg_mqtt_transport *tr = obj;
    if (rc == 0) {
        TG_LOG_INFO("mqtt", "connected to %s:%d as %s", tr->host, tr->port, tr->device_id);
        tr->state = CONNECTED;
        /* Subscribed before any reading is sent on this connection, so no ack for it is
         * missed (clean session: the subscription lives as long as the connection). */
        if (tr->ack_topic && mosquitto_subscribe(mosq, NULL, tr->ack_topic, 0) != 0)
            TG_LOG_WARN("mqtt", "cannot subscribe to %s: acks wait for the next connection",
                        tr->ack_topic);
        push_event(tr, TG_MQTT_EV_UP, 0);
        return;
    }
    TG_LOG_WARN("mqtt", "%s:%d refused the connection: %s", tr->host, tr->port,
                mosquitto_connack_string(rc));
    lost(tr);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct tg_mqtt_transport *tr = obj;
    /* rc 0: we asked for it (shutdown) */
    if (tr->state == CONNECTED && rc != 0)
        TG_LOG_WARN("mqtt", "connection to %s:%d lost: %s", tr->host, tr->port,
                    mosquitto_strerror(rc));
    lost(tr);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct tg_mqtt_transport *tr = obj;
    if (msg->payloadlen <= 0 || msg->payloadlen > ACK_MAX_BYTES)
        return; /* no ack message is that long */
    uint32_t token = tr->ack_next++;
    struct ack_slot *slot = &tr->acks[token % ACK_SLOTS];
    memcpy(slot->payload, msg->payload, (size_t)msg->payloadlen);
    slot->len = (size_t)msg->payloadlen;
    push_event(tr, TG_MQTT_EV_DURABLE_ACK, token);
}

const uint8_t *tg_mqtt_transport_ack_message(const struct tg_mqtt_transport *tr, uint32_t token,
                                             size_t *len)
{
    /* More than ACK_SLOTS acks between two drains: the older ones were overwritten. */
    if (tr->ack_next - token > ACK_SLOTS) {
        *len = 0;
        return NULL;
    }
    const struct ack_slot *slot = &tr->acks[token % ACK_SLOTS];
    *len = slot->len;
    return slot->payload;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    struct tg_mqtt_transport *tr = obj;
    push_event(tr, TG_MQTT_EV_ACKED, (uint32_t)mid);
}

struct tg_mqtt_transport *tg_mqtt_transport_new(const struct tg_mqtt_transport_config *cfg)
{
    struct tg_mqtt_transport *tr = calloc(1, sizeof *tr);
    if (!tr)
        return NULL;
    tr->ack_topic = dup_or_null(cfg->ack_topic);
    if (cfg->ack_topic && cfg->ack_topic[0] && !tr->ack_topic) {
        free(tr);
        return NULL;
    }
    tr->device_id = strdup(cfg->device_id);
    tr->host = strdup(cfg->host);
    tr->username = dup_or_null(cfg->username);
    tr->password = dup_or_null(cfg->password);
    tr->tls_ca = dup_or_null(cfg->tls_ca);
    tr->tls_cert = dup_or_null(cfg->tls_cert);
    tr->tls_key = dup_or_null(cfg->tls_key);
    tr->port = cfg->port;
    tr->keepalive_s = cfg->keepalive_s;
    if (asprintf(&tr->topic, "telemetry/%s", cfg->device_id) < 0)
        tr->topic = NULL;
    if (!tr->device_id || !tr->host || !tr->topic ||
        (cfg->username && cfg->username[0] && !tr->username) ||
        (cfg->password && cfg->password[0] && !tr->password) ||
        (cfg->tls_ca && cfg->tls_ca[0] && !tr->tls_ca) ||
        (cfg->tls_cert && cfg->tls_cert[0] && !tr->tls_cert) ||
        (cfg->tls_key && cfg->tls_key[0] && !tr->tls_key)) {
        tg_mqtt_transport_destroy(tr);
        return NULL;
    }
    return tr;
}

void tg_mqtt_transport_destroy(struct tg_mqtt_transport *tr)
{
    if (!tr)
        return;
    if (tr->mosq) {
        if (tr->state == CONNECTED)
            (void)mosquitto_disconnect(tr->mosq); /* polite; nothing to do if it fails */
        mosquitto_destroy(tr->mosq);
    }
    free(tr->device_id);
    free(tr->host);
    free(tr->username);
    if (tr->password)
        explicit_bzero(tr->password, strlen(tr->password));
    free(tr->password);
    free(tr->tls_ca);
    free(tr->tls_cert);
    free(tr->tls_key);
    free(tr->topic);
    free(tr->ack_topic);
    free(tr->ev);
    free(tr);
}

static int configure(struct tg_mqtt_transport *tr)
{
    int rc = mosquitto_int_option(tr->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (rc != MOSQ_ERR_SUCCESS)
        return rc;
    if (tr->username && (rc = mosquitto_username_pw_set(tr->mosq, tr->username, tr->password)))
        return rc;
    if (tr->tls_ca &&
        (rc = mosquitto_tls_set(tr->mosq, tr->tls_ca, NULL, tr->tls_cert, tr->tls_key, NULL)))
        return rc;
    mosquitto_connect_callback_set(tr->mosq, on_connect);
    mosquitto_disconnect_callback_set(tr->mosq, on_disconnect);
    mosquitto_publish_callback_set(tr->mosq, on_publish);
    mosquitto_message_callback_set(tr->mosq, on_message);
    return MOSQ_ERR_SUCCESS;
}

int tg_mqtt_transport_connect(struct tg_mqtt_transport *tr)
{
    /* A fresh client per attempt: what the old one still queued is the core's to resend. */
    if (tr->mosq) {
        mosquitto_destroy(tr->mosq);
        tr->mosq = NULL;
    }
    tr->state = IDLE;
    /* clean session: the node keeps no subscriptions, and its unconfirmed readings live in
     * the core's outbox, not in a broker session. */
    /* Without libmosquitto's wake-up socketpair (mqtt_nopair.h): our loop never reads it. */
    tg_mqtt_nopair_begin();
    tr->mosq = mosquitto_new(tr->device_id, true, tr);
    tg_mqtt_nopair_end();
    if (!tr->mosq) {
        TG_LOG_ERROR("mqtt", "cannot create a client: %m");
        return -1;
    }
    int rc = configure(tr);
    if (rc != MOSQ_ERR_SUCCESS) {
        TG_LOG_ERROR("mqtt", "cannot configure the client: %s", mosquitto_strerror(rc));
        return -1;
    }
    tg_mqtt_nopair_begin();
    rc = mosquitto_connect_async(tr->mosq, tr->host, tr->port, tr->keepalive_s);
    tg_mqtt_nopair_end();
    if (rc != MOSQ_ERR_SUCCESS) {
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 60000, "cannot connect to %s:%d: %s",
                           tr->host, tr->port,
                           rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return -1;
    }
    TG_LOG_DEBUG("mqtt", "connecting to %s:%d", tr->host, tr->port);
    tr->state = CONNECTING;
    return 0;
}

int tg_mqtt_transport_publish(struct tg_mqtt_transport *tr, const uint8_t *payload, size_t len,
                              uint32_t *token)
{
    if (tr->state != CONNECTED || len > INT32_MAX)
        return -1;
    int mid = 0;
    int rc = mosquitto_publish(tr->mosq, &mid, tr->topic, (int)len, payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 10000, "publish failed: %s",
                           mosquitto_strerror(rc));
        return -1;
    }
    *token = (uint32_t)mid;
    return 0;
}

void tg_mqtt_transport_run(struct tg_mqtt_transport *tr, int timeout_ms)
{
    if (tr->state == IDLE || !tr->mosq) {
        /* Nothing to serve: just wait, waking early for a signal. */
        if (timeout_ms > 0)
            (void)poll(NULL, 0, timeout_ms);
        return;
    }
    int rc = mosquitto_loop(tr->mosq, timeout_ms, 1);
    if (rc != MOSQ_ERR_SUCCESS && tr->state != IDLE) {
        /* libmosquitto reports most failures through on_disconnect; this catches the rest
         * (a failed non-blocking connect, a TLS handshake error). */
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 60000, "connection to %s:%d failed: %s",
                           tr->host, tr->port,
                           rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        lost(tr);
    }
    if (tr->oom) {
        tr->oom = false;
        TG_LOG_ERROR("mqtt", "out of memory queueing an event: dropping the connection");
        mosquitto_destroy(tr->mosq);
        tr->mosq = NULL;
        tr->state = IDLE;
        tr->ev_count = 0; /* UP/ACKED of a connection that is gone no longer matter */
        tr->down_pending = true;
    }
}

enum tg_mqtt_event tg_mqtt_transport_next_event(struct tg_mqtt_transport *tr, uint32_t *token)
{
    if (tr->ev_count == 0) {
        if (!tr->down_pending)
            return TG_MQTT_EV_NONE;
        tr->down_pending = false;
        return TG_MQTT_EV_DOWN;
    }
    struct event e = tr->ev[tr->ev_head];
    tr->ev_head = (tr->ev_head + 1) % tr->ev_cap;
    tr->ev_count--;
    *token = e.token;
    return e.kind;
}
