/*
 * plugin_mosq.c - the gateway pipeline inside the Mosquitto broker (issue 14): the second
 * front-end of pipeline.h, beside the daemon's MQTT subscriber (main.c, ingress_mqtt.c).
 *
 *   plugin /usr/lib/tidegate/tidegate_mosq.so
 *   plugin_opt_config /etc/tidegate/tidegate.ini
 *   plugin_opt_board /usr/share/tidegate/boards/rpi4b.ini    (optional)
 *   plugin_opt_forward false                                  (optional; default false)
 *   plugin_opt_set journal.max_bytes=64M    (optional, repeatable: the daemon's --set)
 *
 * What Mosquitto 2.0.11 (Debian 12) does, read in its source (src/handle_publish.c,
 * src/plugin.c, src/loop.c, src/plugin_public.c at tag v2.0.11) and checked by the plugin's
 * integration tests:
 *   - Mosquitto is one thread. MOSQ_EVT_MESSAGE runs on it, inside handle__publish(), for
 *     every PUBLISH from a client (not for messages plugins publish), after the client's
 *     write ACL check and BEFORE the message is stored, routed to subscribers or
 *     acknowledged: the PUBACK (QoS1) / PUBREC (QoS2) is sent after the callback returns.
 *     Persistence to disk (autosave) is later still. So a message this callback took is in
 *     the pipeline's queue before the device hears PUBACK, and the broker never held it.
 *   - Returning MOSQ_ERR_ACL_DENIED makes the broker drop the message and still answer the
 *     PUBACK: with reason code 0x87 (not authorized) to an MQTT 5 client, and a plain PUBACK,
 *     indistinguishable from success, to an MQTT 3.1.1 client. Refusing is therefore a loss
 *     for a 3.1.1 node unless durable acks ([ack], ack.h) make it resend.
 *   - MOSQ_EVT_TICK runs on the same thread once per pass of the main loop (at least every
 *     100 ms: epoll_wait's timeout). mosquitto_broker_publish() appends to a list with no
 *     lock, so it may only be called on that thread: acks made on the pipeline thread are
 *     queued here and published from the tick.
 *   - mosquitto_plugin_cleanup() runs after the main loop ended (SIGTERM/SIGINT), after the
 *     broker's last persistence save: the stop below does not race the broker.
 *   - 2.0.11 does not free a topic a callback replaced (later 2.0.x do): to hide a taken
 *     message from subscribers the topic is therefore rewritten in place, never replaced.
 *   - SIGHUP re-reads mosquitto.conf and raises MOSQ_EVT_RELOAD; a version 5 plugin is not
 *     initialised again (its options are not re-read), so plugin_opt_* changes need a restart.
 *
 * Threads: every callback runs on the broker's thread; the pipeline, librdkafka and the
 * metrics exporter run on their own threads, created here with every signal blocked, so that
 * the broker's signal handlers run on its own thread only. The broker's thread never waits
 * on disk or network: tg_pipeline_offer() copies the message into a bounded queue or says it
 * is full.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "config.h"
#include "gateway_config.h"
#include "gateway_limits.h"
#include "ingress_topic.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "pipeline.h"

/* The only symbols the shared object exports (plugin_mosq.map hides the rest). */
int mosquitto_plugin_version(int supported_version_count, const int *supported_versions);
int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count);
int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count);

#define PLUGIN_API_VERSION 5

/* [mqtt] keys that describe the daemon's client connection to a broker: in the broker there
 * is none, so a value for one is a mistake the operator should hear about. */
static const char *const client_only_keys[] = {
    "host", "port", "client_id", "qos", "connections", "share_group", "max_packet_bytes",
    "username", "password", "tls_ca", "tls_cert", "tls_key", "keepalive_ms",
    "session_expiry_ms", "reconnect_min_ms", "reconnect_max_ms", NULL,
};

/* One durable ack waiting for the broker's thread. */
struct pending_ack {
    struct pending_ack *next;
    char *topic;
    size_t len;
    uint8_t payload[];
};

struct tg_plugin {
    mosquitto_plugin_id_t *id;
    struct tg_config *cfg;
    struct tg_metrics *metrics;
    struct tg_pipeline *pl;
    struct tg_metrics_http *http;
    struct tg_counter *dropped_full;  /* refused: the pipeline had no room */
    struct tg_counter *acks_dropped;  /* acks not queued for the broker's thread */
    bool forward;                     /* taken messages also go to subscribers */
    char *filter_prefix;              /* "telemetry/" of "telemetry/+", or the whole topic */
    size_t filter_prefix_len;
    bool filter_wildcard;             /* the filter ends in "/+" */
    bool registered_message, registered_tick, registered_reload;

    /* acks: the pipeline thread appends, the broker's thread (tick) takes them all */
    pthread_mutex_t ack_lock;
    struct pending_ack *ack_head, **ack_tail;
    size_t ack_count;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == PLUGIN_API_VERSION)
            return PLUGIN_API_VERSION;
    return -1;
}

/* Whether topic is one the [mqtt] topic filter names. The filter was checked by
 * tg_gateway_config_check(): no '#', and '+' only as its whole last level. */
static bool topic_taken(const struct tg_plugin *pg, const char *topic)
{
    if (strncmp(topic, pg->filter_prefix, pg->filter_prefix_len) != 0)
        return false;
    const char *rest = topic + pg->filter_prefix_len;
    if (!pg->filter_wildcard)
        return *rest == '\0';
    return *rest != '\0' && !strchr(rest, '/');
}

/* Makes a taken message invisible to subscribers without replacing the topic (see the top of
 * the file): "$tg" (or "$" for a topic shorter than that), which no wildcard subscription
 * matches (MQTT: '#' and '+' do not match a first level starting with '$'). The broker then
 * stores and acknowledges the message as one without subscribers. */
static void hide_topic(char *topic)
{
    if (strlen(topic) >= 3)
        memcpy(topic, "$tg", 4);
    else
        memcpy(topic, "$", 2);
}

/* MOSQ_EVT_MESSAGE, on the broker's thread, before the PUBACK (see the top of the file). */
static int on_message(int event, void *event_data, void *userdata)
{
    (void)event;
    struct tg_plugin *pg = userdata;
    struct mosquitto_evt_message *ev = event_data;
    if (!ev->topic || !topic_taken(pg, ev->topic))
        return MOSQ_ERR_SUCCESS;
    tg_err rc = tg_pipeline_offer(pg->pl, ev->topic, strlen(ev->topic), ev->payload,
                                  ev->payloadlen, wall_ms());
    if (rc != TG_OK) {
        /* Never wait: the broker's thread serves every client. The message is refused, and
         * counted; the broker drops it (PUBACK 0x87 to an MQTT 5 client). */
        tg_counter_inc(pg->dropped_full);
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "plugin", 10000,
                           "pipeline full: refusing messages (counted in "
                           "tidegate_messages_dropped_total{reason=\"ingress_full\"})");
        return MOSQ_ERR_ACL_DENIED;
    }
    if (!pg->forward) {
        hide_topic(ev->topic);
        ev->retain = false;
    }
    return MOSQ_ERR_SUCCESS;
}

/* The ack publisher the pipeline calls on its thread (tg_ack_publish_fn): queue only. */
static int queue_ack(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
    struct tg_plugin *pg = ud;
    size_t tlen = strlen(topic);
    struct pending_ack *a = malloc(sizeof *a + len + tlen + 1);
    if (!a)
        goto dropped;
    a->next = NULL;
    a->len = len;
    memcpy(a->payload, payload, len);
    a->topic = (char *)a->payload + len;
    memcpy(a->topic, topic, tlen + 1);
    pthread_mutex_lock(&pg->ack_lock);
    if (pg->ack_count >= TG_INGRESS_PUBLISH_QUEUE_MAX) {
        pthread_mutex_unlock(&pg->ack_lock);
        free(a);
        goto dropped;
    }
    *pg->ack_tail = a;
    pg->ack_tail = &a->next;
    pg->ack_count++;
    pthread_mutex_unlock(&pg->ack_lock);
    return 0;
dropped:
    tg_counter_inc(pg->acks_dropped);
    return -1;
}

static struct pending_ack *take_acks(struct tg_plugin *pg)
{
    pthread_mutex_lock(&pg->ack_lock);
    struct pending_ack *list = pg->ack_head;
    pg->ack_head = NULL;
    pg->ack_tail = &pg->ack_head;
    pg->ack_count = 0;
    pthread_mutex_unlock(&pg->ack_lock);
    return list;
}

static void free_acks(struct pending_ack *a)
{
    while (a) {
        struct pending_ack *next = a->next;
        free(a);
        a = next;
    }
}

/* MOSQ_EVT_TICK, on the broker's thread: publishes the queued acks, QoS 0, not retained
 * (each ack repeats what the previous one said; see main.c's publish_ack). */
static int on_tick(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data;
    struct tg_plugin *pg = userdata;
    struct pending_ack *list = take_acks(pg);
    for (struct pending_ack *a = list; a; a = a->next)
        if (mosquitto_broker_publish_copy(NULL, a->topic, (int)a->len, a->payload, 0, false,
                                          NULL) != MOSQ_ERR_SUCCESS)
            tg_counter_inc(pg->acks_dropped);
    free_acks(list);
    return MOSQ_ERR_SUCCESS;
}

/* MOSQ_EVT_RELOAD (SIGHUP to the broker): the device keys file is read again, as SIGHUP does
 * for the daemon. 2.0.11 stops the reload of the listener's security options at the first
 * reload callback that does not return MOSQ_ERR_PLUGIN_DEFER (security__init_single), which
 * would skip older-API auth plugins' re-init: so this one defers. */
static int on_reload(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data;
    struct tg_plugin *pg = userdata;
    TG_LOG_INFO("plugin", "broker reload: reloading the device keys");
    tg_pipeline_request_reload(pg->pl);
    return MOSQ_ERR_PLUGIN_DEFER;
}

static bool health_check(void *ud, char *reason, size_t len)
{
    return tg_pipeline_health(ud, reason, len);
}

/* Refuses [mqtt] keys set anywhere (board, file) that only the daemon's client uses. */
static int check_plugin_keys(const struct tg_config *cfg)
{
    int bad = 0;
    for (const char *const *k = client_only_keys; *k; k++) {
        const char *origin = tg_config_origin(cfg, "mqtt", *k);
        if (strcmp(origin, "default") == 0)
            continue;
        TG_LOG_ERROR("plugin",
                     "%s: [mqtt] %s: has no meaning in plugin mode (the pipeline runs inside the "
                     "broker, with no MQTT connection of its own): remove it",
                     origin, *k);
        bad++;
    }
    return bad ? -1 : 0;
}

static int setup_logging(const struct tg_config *cfg)
{
    tg_log_level level;
    if (tg_log_level_parse(tg_config_get_str(cfg, "log", "level"), &level) == TG_OK)
        tg_log_set_level(level);
    const char *debug = tg_config_get_str(cfg, "log", "debug");
    if (*debug && tg_log_enable_debug(debug) != TG_OK) {
        TG_LOG_ERROR("plugin", "%s: [log] debug: cannot enable \"%s\"",
                     tg_config_origin(cfg, "log", "debug"), debug);
        return -1;
    }
    return 0;
}

static void plugin_destroy(struct tg_plugin *pg)
{
    if (!pg)
        return;
    if (pg->registered_message)
        mosquitto_callback_unregister(pg->id, MOSQ_EVT_MESSAGE, on_message, NULL);
    if (pg->registered_tick)
        mosquitto_callback_unregister(pg->id, MOSQ_EVT_TICK, on_tick, NULL);
    if (pg->registered_reload)
        mosquitto_callback_unregister(pg->id, MOSQ_EVT_RELOAD, on_reload, NULL);
    if (pg->pl) {
        /* Nothing is offered any more (the broker's loop has ended, or never ran): take what
         * is queued, wait for Kafka up to shutdown_timeout_ms, commit the rest. */
        int64_t timeout_ms = tg_config_get_ms(pg->cfg, "gateway", "shutdown_timeout_ms");
        tg_pipeline_begin_stop(pg->pl, timeout_ms);
        if (tg_pipeline_stop(pg->pl, timeout_ms) != TG_OK)
            TG_LOG_ERROR("plugin", "the final journal commit failed: the journal keeps its "
                                   "previous commit");
    }
    tg_metrics_http_stop(pg->http);
    tg_pipeline_destroy(pg->pl);
    free_acks(take_acks(pg));
    pthread_mutex_destroy(&pg->ack_lock);
    tg_metrics_destroy(pg->metrics);
    tg_config_destroy(pg->cfg);
    free(pg->filter_prefix);
    free(pg);
}

/* Reads the options and the config; TG_OK or an error already logged. */
static tg_err load_config(struct tg_plugin *pg, struct mosquitto_opt *options, int option_count)
{
    const char *config_path = NULL, *board_path = NULL;
    for (int i = 0; i < option_count; i++) {
        const char *key = options[i].key, *value = options[i].value ? options[i].value : "";
        if (strcmp(key, "config") == 0) {
            config_path = value;
        } else if (strcmp(key, "board") == 0) {
            board_path = value;
        } else if (strcmp(key, "set") == 0) {
            continue; /* applied after the files, as the daemon's --set */
        } else if (strcmp(key, "forward") == 0) {
            if (tg_parse_bool(value, &pg->forward) != TG_OK) {
                TG_LOG_ERROR("plugin", "plugin_opt_forward: expected true or false, got \"%s\"",
                             value);
                return TG_ERR_CONFIG;
            }
        } else {
            TG_LOG_ERROR("plugin", "plugin_opt_%s: unknown option (known: plugin_opt_config, "
                                   "plugin_opt_board, plugin_opt_forward, plugin_opt_set)",
                         key);
            return TG_ERR_CONFIG;
        }
    }
    if (!config_path || !*config_path) {
        TG_LOG_ERROR("plugin", "plugin_opt_config is required: the tidegate config file");
        return TG_ERR_CONFIG;
    }
    if ((board_path && *board_path &&
         tg_config_load_file(pg->cfg, TG_CONFIG_BOARD, board_path) != TG_OK) ||
        tg_config_load_file(pg->cfg, TG_CONFIG_FILE, config_path) != TG_OK) {
        TG_LOG_ERROR("plugin", "configuration error:\n%s", tg_config_error(pg->cfg));
        return TG_ERR_CONFIG;
    }
    for (int i = 0; i < option_count; i++) {
        if (strcmp(options[i].key, "set") == 0 &&
            tg_config_set(pg->cfg, options[i].value ? options[i].value : "") != TG_OK) {
            TG_LOG_ERROR("plugin", "plugin_opt_set: configuration error:\n%s",
                         tg_config_error(pg->cfg));
            return TG_ERR_CONFIG;
        }
    }
    if (setup_logging(pg->cfg) != 0)
        return TG_ERR_CONFIG;
    char err[2048];
    if (tg_gateway_config_check(pg->cfg, err, sizeof err) != TG_OK) {
        TG_LOG_ERROR("plugin", "configuration error:\n%s", err);
        return TG_ERR_CONFIG;
    }
    if (check_plugin_keys(pg->cfg) != 0)
        return TG_ERR_CONFIG;

    const char *filter = tg_config_get_str(pg->cfg, "mqtt", "topic");
    const char *group;
    size_t group_len;
    const char *unshared = tg_ingress_topic_filter(filter, &group, &group_len);
    if (group) {
        /* Matched against each PUBLISH's topic, "$share/..." would take nothing, silently. */
        TG_LOG_ERROR("plugin",
                     "%s: [mqtt] topic: \"%s\" is a shared subscription, which only the "
                     "daemon's MQTT connections make; the plugin sees every message the broker "
                     "receives: write the filter alone (\"%s\")",
                     tg_config_origin(pg->cfg, "mqtt", "topic"), filter, unshared);
        return TG_ERR_CONFIG;
    }
    size_t flen = strlen(filter);
    pg->filter_wildcard = strcmp(filter, "+") == 0 ||
                          (flen >= 2 && strcmp(filter + flen - 2, "/+") == 0);
    pg->filter_prefix_len = pg->filter_wildcard ? flen - 1 : flen;
    pg->filter_prefix = strndup(filter, pg->filter_prefix_len);
    return pg->filter_prefix ? TG_OK : TG_ERR_NOMEM;
}

/* Everything that may create a thread, with every signal blocked so that those threads never
 * take the broker's signals. */
static tg_err start_pipeline(struct tg_plugin *pg)
{
    char err[1024] = "";
    if (tg_pipeline_new(pg->cfg, pg->metrics, &pg->pl, err, sizeof err) != TG_OK) {
        TG_LOG_ERROR("plugin", "cannot start: %s", err);
        return TG_ERR_CONFIG;
    }
    tg_pipeline_set_ack_publisher(pg->pl, queue_ack, pg);
    if (tg_pipeline_start(pg->pl) != TG_OK) {
        TG_LOG_ERROR("plugin", "cannot start the pipeline thread");
        return TG_ERR_IO;
    }
    const char *listen = tg_config_get_str(pg->cfg, "metrics", "listen");
    if (*listen && !(pg->http = tg_metrics_http_start(pg->metrics, listen, health_check, pg->pl,
                                                     err, sizeof err))) {
        TG_LOG_ERROR("plugin", "%s: [metrics] listen: %s",
                     tg_config_origin(pg->cfg, "metrics", "listen"), err);
        return TG_ERR_CONFIG;
    }
    return TG_OK;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    struct tg_plugin *pg = calloc(1, sizeof *pg);
    if (!pg)
        return MOSQ_ERR_NOMEM;
    pg->id = identifier;
    pthread_mutex_init(&pg->ack_lock, NULL);
    pg->ack_tail = &pg->ack_head;
    pg->cfg = tg_gateway_config_new();
    pg->metrics = tg_metrics_new();
    if (!pg->cfg || !pg->metrics)
        goto fail;
    if (load_config(pg, options, option_count) != TG_OK)
        goto fail;

    pg->dropped_full = tg_metrics_counter(pg->metrics, "tidegate_messages_dropped_total",
                                          "Readings and dead letters dropped, by reason",
                                          "reason", "ingress_full", NULL);
    pg->acks_dropped = tg_metrics_counter(pg->metrics, "tidegate_plugin_acks_dropped_total",
                                          "Durable acks the broker's thread could not publish "
                                          "(queue full or refused)",
                                          NULL);
    tg_gauge_set(tg_metrics_gauge(pg->metrics, "tidegate_mode_info",
                                  "How the pipeline is fed: daemon (MQTT subscriber) or plugin "
                                  "(inside Mosquitto)",
                                  "mode", "plugin", NULL),
                 1);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    tg_err rc = start_pipeline(pg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != TG_OK)
        goto fail;

    if (mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, pg) !=
        MOSQ_ERR_SUCCESS)
        goto fail;
    pg->registered_message = true;
    if (mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, pg) !=
        MOSQ_ERR_SUCCESS)
        goto fail;
    pg->registered_tick = true;
    if (mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, pg) !=
        MOSQ_ERR_SUCCESS)
        goto fail;
    pg->registered_reload = true;

    TG_LOG_INFO("plugin", "tidegate plugin running: topic %s (%s), kafka %s, journal %s (%s), "
                          "metrics %s",
                tg_config_get_str(pg->cfg, "mqtt", "topic"),
                pg->forward ? "forwarded to subscribers" : "not forwarded",
                tg_config_get_str(pg->cfg, "kafka", "brokers"),
                tg_config_get_str(pg->cfg, "journal", "path"),
                tg_config_get_str(pg->cfg, "journal", "mode"),
                *tg_config_get_str(pg->cfg, "metrics", "listen")
                    ? tg_config_get_str(pg->cfg, "metrics", "listen")
                    : "off");
    *userdata = pg;
    return MOSQ_ERR_SUCCESS;
fail:
    /* A refused init makes the broker exit: it must not run without the pipeline the
     * operator configured. */
    plugin_destroy(pg);
    return MOSQ_ERR_UNKNOWN;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    (void)options;
    (void)option_count;
    struct tg_plugin *pg = userdata;
    plugin_destroy(pg);
    TG_LOG_INFO("plugin", "stopped");
    return MOSQ_ERR_SUCCESS;
}
