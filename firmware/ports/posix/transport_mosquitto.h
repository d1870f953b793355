/*
 * transport_mosquitto.h - the node's MQTT transport (hal.h transport_*) over libmosquitto.
 *
 * One connection to the broker, optionally TLS (CA, client certificate and key) and with a
 * user name and password, publishing QoS1 to telemetry/<device_id>. The firmware core owns
 * reconnection and retransmission: this transport never reconnects by itself, and each
 * connection attempt starts from a fresh libmosquitto client, so messages libmosquitto still
 * held from a lost connection are not sent a second time behind the core's back.
 *
 * Events (connected, lost, PUBACK of a message id) are recorded by libmosquitto's callbacks
 * and handed out by tg_mqtt_transport_next_event() after tg_mqtt_transport_run() returns, so
 * the core's tg_node_transport_*() are never called from inside a HAL call (hal.h).
 *
 * Durable acks (firmware/core/node.h): with an ack_topic, each connection subscribes to it
 * (QoS 0, as the gateway publishes) and every message on it becomes an event; the last
 * ACK_SLOTS payloads are kept (an ack dropped here is repeated by the gateway).
 *
 * Threads: one thread (the node's); libmosquitto runs in that thread (no loop thread).
 */
#ifndef TG_TRANSPORT_MOSQUITTO_H
#define TG_TRANSPORT_MOSQUITTO_H

#include <stddef.h>
#include <stdint.h>

struct tg_mqtt_transport_config {
    const char *device_id;   /* client id and topic telemetry/<device_id> */
    const char *host;
    int port;
    const char *username;    /* NULL or "": none */
    const char *password;    /* NULL or "": none */
    const char *tls_ca;      /* NULL or "": plain TCP */
    const char *tls_cert;    /* with tls_key, or both NULL/"" */
    const char *tls_key;
    int keepalive_s;
    const char *ack_topic;   /* NULL or "": no durable acks; else subscribed at each connect */
};

enum tg_mqtt_event {
    TG_MQTT_EV_NONE = 0,
    TG_MQTT_EV_UP,     /* CONNACK accepted */
    TG_MQTT_EV_DOWN,   /* the attempt failed or the connection was lost */
    TG_MQTT_EV_ACKED,  /* PUBACK for *token */
    TG_MQTT_EV_DURABLE_ACK, /* a message on ack_topic: tg_mqtt_transport_ack_message(token) */
};

struct tg_mqtt_transport;

/* Copies cfg. The caller has called mosquitto_lib_init(). NULL when out of memory. */
struct tg_mqtt_transport *tg_mqtt_transport_new(const struct tg_mqtt_transport_config *cfg);

/* Disconnects (without waiting) and frees. NULL is a no-op. */
void tg_mqtt_transport_destroy(struct tg_mqtt_transport *tr);

/* hal.h transport_connect: starts a connection attempt with a fresh client. 0, or -1 when it
 * could not even start (the reason logged). */
int tg_mqtt_transport_connect(struct tg_mqtt_transport *tr);

/* hal.h transport_publish: QoS1 to telemetry/<device_id>; *token is the message id. 0, or -1
 * when not connected or libmosquitto refused. */
int tg_mqtt_transport_publish(struct tg_mqtt_transport *tr, const uint8_t *payload, size_t len,
                              uint32_t *token);

/* Network work for at most timeout_ms (less when something arrives): reads, writes,
 * keepalive. Sleeps when there is no connection. May be cut short by a signal. */
void tg_mqtt_transport_run(struct tg_mqtt_transport *tr, int timeout_ms);

/* The next recorded event, oldest first, or TG_MQTT_EV_NONE. *token is set for ACKED. */
enum tg_mqtt_event tg_mqtt_transport_next_event(struct tg_mqtt_transport *tr, uint32_t *token);

/* The payload of the TG_MQTT_EV_DURABLE_ACK event that gave token; valid until the next
 * tg_mqtt_transport_run(). */
const uint8_t *tg_mqtt_transport_ack_message(const struct tg_mqtt_transport *tr, uint32_t token,
                                             size_t *len);

#endif
