/*
 * ingress_mqtt.h - takes telemetry from the MQTT broker (libmosquitto) and hands it on.
 *
 * N connections (mqtt.connections) to one broker, all served by one ingress thread that
 * drives libmosquitto's non-blocking calls from its own poll(2) loop. Each connection keeps a
 * persistent session (MQTT v5, clean start off, session expiry from the config, a stable
 * client id: "<client_id>" for one connection, "<client_id>-<i>" for several) and subscribes
 * to the topic filter at the configured QoS; with several connections the filter is an MQTT
 * v5 shared subscription, "$share/<share_group>/<filter>", so the broker spreads messages over
 * them and ingestion is not limited by one connection's in-flight window. A topic already
 * written as "$share/<group>/<filter>" is subscribed to as written, by one connection or
 * several: its group is the user's choice (tg_ingress_topic_subscription()).
 *
 * Every message is handed to the sink (the pipeline's entry point) on the ingress thread. The
 * sink never blocks: when it says TG_ERR_FULL the ingress keeps that message (and any others
 * already read from the same socket) and stops reading from that connection until the sink
 * takes them, so the broker holds further QoS1 messages instead of anything being dropped or
 * the MQTT loop blocking on disk or Kafka. Order per connection is kept.
 *
 * Acknowledgements: libmosquitto (2.0.11, measured) sends a QoS1 PUBACK before it hands the
 * message to us, so a message that reached the sink or the pending list is the gateway's
 * responsibility: tg_ingress_stop() delivers the pending ones, and a kill -9 loses them (at
 * most a few per connection) along with what the pipeline had not committed. Messages not yet
 * read from the socket are unacknowledged and come again with the resumed session. Reading
 * stays paused only as long as the sink is full; a pause longer than about twice the keepalive
 * makes libmosquitto drop the connection (the PINGRESP waits unread behind the messages), and
 * the ingress reconnects, still paused, without losing anything.
 *
 * A lost connection is retried with capped exponential backoff and full jitter
 * (reconnect_min_ms doubling up to reconnect_max_ms); the session resumes, and the broker
 * delivers what it queued meanwhile. A refused CONNECT (bad credentials) or SUBSCRIBE (ACL) is
 * logged, rate-limited, and retried the same way.
 *
 * Metrics (registered at _new): tidegate_mqtt_connections (gauge, connected and subscribed
 * now), tidegate_mqtt_reconnects_total (connect attempts after each connection's first),
 * tidegate_mqtt_paused (gauge, 1 while some connection waits for the sink).
 *
 * Threads: _new, _start, _stop and _destroy from one owner thread (main); the sink runs on the
 * ingress thread; tg_ingress_connected() from any thread. _new and _destroy call
 * mosquitto_lib_init()/mosquitto_lib_cleanup(), which libmosquitto reference-counts without a
 * lock: other libmosquitto users in the process must not call them concurrently.
 */
#ifndef TG_INGRESS_MQTT_H
#define TG_INGRESS_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "ingress_topic.h" /* tg_ingress_topic_check() */
#include "metrics.h"

struct tg_ingress_opts {
    const char *host;
    int port;
    const char *client_id;
    const char *topic;          /* filter, e.g. "telemetry/+"; see tg_ingress_topic_check() */
    int qos;
    int connections;            /* >= 1 */
    const char *share_group;    /* used when connections > 1 and topic has no group */
    const char *username;       /* NULL or "": none */
    const char *password;
    const char *tls_ca;         /* NULL or "": no TLS */
    const char *tls_cert;
    const char *tls_key;
    int64_t keepalive_ms;
    int64_t session_expiry_ms;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    /* validate.max_payload_bytes: of a larger payload only the first
     * max(max_payload_bytes + 1, TG_DLQ_PAYLOAD_MAX) bytes are handed to the sink, or kept
     * while it is full: what its dead letter keeps. The rest is never copied. 0: no cut. */
    size_t max_payload_bytes;
    /* mqtt.max_packet_bytes, announced in CONNECT as the MQTT 5 Maximum Packet Size: the
     * broker does not send larger packets (it drops them), so libmosquitto never allocates
     * for one. 0: not announced. */
    uint32_t max_packet_bytes;
};

/* Takes one message; called on the ingress thread; must not block. topic is the full topic
 * (not NUL-terminated within topic_len; the device id is the sink's business), rx_ms the
 * receive time in ms since the Unix epoch. TG_OK: taken (the bytes were copied); TG_ERR_FULL:
 * no room now, offer it again later (the ingress retries every few ms). Anything else is a
 * bug in the sink: the message is logged as lost. */
typedef tg_err (*tg_ingress_sink_fn)(void *ud, const char *topic, size_t topic_len,
                                     const uint8_t *payload, size_t payload_len, int64_t rx_ms);

struct tg_ingress;

/* Sets up the connections (nothing is connected yet) and registers the metrics in metrics
 * (not NULL). Errors (bad TLS files, libmosquitto refusing an option) name the [mqtt] key in
 * err, e.g. `[mqtt] tls_ca: cannot read "/x.pem": No such file or directory`. */
tg_err tg_ingress_new(const struct tg_ingress_opts *opts, tg_ingress_sink_fn sink, void *ud,
                      struct tg_metrics *metrics, struct tg_ingress **out, char *err,
                      size_t errlen);

/* Starts the ingress thread, which connects and keeps connecting. Once only: TG_ERR_USAGE
 * after a start or a stop. */
tg_err tg_ingress_start(struct tg_ingress *in);

/* Stops taking new messages: stops reading, hands every message already read to the sink
 * (retrying while it says TG_ERR_FULL, so the sink's consumer must still be running), then
 * disconnects cleanly (the sessions stay on the broker) and joins the thread. Idempotent;
 * also fine when never started or never connected. */
void tg_ingress_stop(struct tg_ingress *in);

/* Stops if needed and frees. NULL-safe. */
void tg_ingress_destroy(struct tg_ingress *in);

/* Queues one message for the broker (any thread; never blocks): the ingress thread publishes
 * it on its first connection that is up, or drops it when none is. For the durable acks
 * (ack.h), which are idempotent and repeated, so a drop costs a resend, not a reading.
 * TG_ERR_FULL when TG_INGRESS_PUBLISH_QUEUE_MAX messages wait, TG_ERR_NOMEM. */
tg_err tg_ingress_publish(struct tg_ingress *in, const char *topic, const uint8_t *payload,
                          size_t len, int qos);

/* Connections currently connected and subscribed (any thread). */
int tg_ingress_connected(const struct tg_ingress *in);

#endif
