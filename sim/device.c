/*
 * device.c - one simulated sensor node: firmware core + simulator HAL + libmosquitto client
 * (see device.h).
 */
#include "device.h"

#include <errno.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "faults.h"
#include "log.h"
#include "ledger.h"
#include "mqtt_nopair.h"
#include "sim_rand.h"
#include "sim_sensor.h"

#define MAX_PAYLOAD_BYTES 192 /* a 5-metric native payload is about 145 bytes */
#define MISC_INTERVAL_MS 5000 /* keepalive checks; the keepalive itself is 60 s */
#define FAULT_SLOTS 16        /* injected publishes awaiting their PUBACK */
#define KV_SLOTS 4

enum link { LINK_IDLE = 0, LINK_CONNECTING, LINK_UP };
enum fault_kind { FAULT_MALFORMED = 1, FAULT_DUPLICATE };

struct fault_mid {
    int mid;
    enum fault_kind kind;
    uint64_t payload_hash; /* FAULT_MALFORMED: how the ledger names the payload */
};

struct kv_entry {
    char key[24];
    uint64_t value;
    bool used;
};

struct tg_sim_device {
    struct tg_sim_device_config cfg;
    char id[TG_NODE_DEVICE_ID_MAX + 1];
    char topic[TG_NODE_DEVICE_ID_MAX + 16];
    char ack_topic[TG_NODE_DEVICE_ID_MAX + 16];
    struct mosquitto *mosq;
    struct tg_node *node;
    void *node_storage;
    void *sensor_state;
    void *anomaly_state;
    uint64_t rng_hal;
    uint64_t rng_faults;
    enum link link;
    bool started;
    bool wants_poll;
    int reg_fd;                /* the socket registered in epoll, -1: none */
    uint32_t reg_events;
    uint64_t next_misc_ms;
    int64_t skew_ms;           /* added to the fleet's wall clock */
    int64_t skew_initial_ms;
    uint64_t next_step_ms;     /* next backward step of a skewed clock (mono) */
    struct kv_entry kv[KV_SLOTS];
    uint8_t last_payload[MAX_PAYLOAD_BYTES];
    size_t last_len;
    struct fault_mid faults[FAULT_SLOTS];
    unsigned n_faults;
};

/* Every client is created and connected without libmosquitto's wake-up socketpair
 * (mqtt_nopair.h): our loop never reads it, and 10,000 devices could not afford the descriptors. */

/* --- epoll registration --------------------------------------------------------------- */

static void sync_epoll(struct tg_sim_device *dev)
{
    int fd = mosquitto_socket(dev->mosq);
    if (fd < 0) {
        dev->reg_fd = -1; /* closing a descriptor removed it from the epoll set */
        return;
    }
    uint32_t events = EPOLLIN | (mosquitto_want_write(dev->mosq) ? EPOLLOUT : 0u);
    if (fd == dev->reg_fd && events == dev->reg_events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = dev};
    int op = fd == dev->reg_fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int rc = epoll_ctl(dev->cfg.epoll_fd, op, fd, &ev);
    if (rc != 0 && errno == EEXIST)
        rc = epoll_ctl(dev->cfg.epoll_fd, EPOLL_CTL_MOD, fd, &ev);
    else if (rc != 0 && errno == ENOENT)
        rc = epoll_ctl(dev->cfg.epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    if (rc != 0) {
        /* Cannot happen with a valid fd and enough memory; the device would go deaf, so drop
         * the connection and let the node reconnect. */
        shutdown(fd, SHUT_RDWR);
        dev->reg_fd = -1;
        return;
    }
    dev->reg_fd = fd;
    dev->reg_events = events;
}

/* --- ledger and metrics ----------------------------------------------------------------- */

static void ledger_check(struct tg_sim_device *dev, int rc)
{
    if (rc != 0)
        tg_counter_inc(dev->cfg.metrics->ledger_errors);
}

static void hal_observe(void *ctx, enum tg_node_event ev, uint64_t boot, uint64_t seq)
{
    struct tg_sim_device *dev = ctx;
    struct tg_sim_metrics *sm = dev->cfg.metrics;
    switch (ev) {
    case TG_NODE_EV_TAKEN:
        tg_counter_inc(sm->taken);
        if (dev->cfg.skewed) {
            tg_counter_inc(sm->skewed);
            if (dev->cfg.ledger)
                ledger_check(dev, tg_ledger_skewed(dev->cfg.ledger, (int)dev->cfg.index, boot,
                                                   seq));
        }
        break;
    case TG_NODE_EV_RELEASED:
        tg_counter_inc(sm->released);
        break;
    case TG_NODE_EV_DROPPED:
        tg_counter_inc(sm->dropped);
        break;
    }
    if (dev->cfg.ledger)
        ledger_check(dev, tg_ledger_reading(dev->cfg.ledger, (int)dev->cfg.index, ev, boot, seq));
}

static void on_label(void *ud, const struct tg_anomaly_label *label)
{
    struct tg_sim_device *dev = ud;
    if ((unsigned)label->kind < TG_ANOMALY_KINDS)
        tg_counter_inc(dev->cfg.metrics->anomalies[label->kind]);
    if (dev->cfg.on_label)
        dev->cfg.on_label(dev->cfg.label_ud, label);
}

/* --- MQTT callbacks (inside mosquitto_loop_* or mosquitto_disconnect, never inside a HAL
 * call: libmosquitto 2.0 runs no callback from mosquitto_publish or connect_async) ------- */

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct tg_sim_device *dev = obj;
    if (rc != 0)
        return; /* refused: the broker closes the connection, on_disconnect counts it */
    dev->link = LINK_UP;
    /* Before the core sends anything on this connection, so no ack of it is missed. A
     * failed subscribe costs resends after the ack timeout, not readings. */
    if (dev->cfg.durable_acks)
        (void)mosquitto_subscribe(mosq, NULL, dev->ack_topic, 0);
    tg_gauge_inc(dev->cfg.metrics->connected);
    if (dev->cfg.ledger)
        ledger_check(dev, tg_ledger_connected(dev->cfg.ledger, (int)dev->cfg.index));
    tg_node_transport_up(dev->node); /* re-sends the unconfirmed readings */
    dev->wants_poll = true;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct tg_sim_device *dev = obj;
    if (dev->link == LINK_UP) {
        tg_gauge_dec(dev->cfg.metrics->connected);
        tg_counter_inc(dev->cfg.metrics->disconnects);
    } else if (dev->link == LINK_CONNECTING) {
        tg_counter_inc(dev->cfg.metrics->connect_failures);
    }
    bool was_linked = dev->link != LINK_IDLE;
    dev->link = LINK_IDLE;
    dev->reg_fd = -1;
    dev->n_faults = 0; /* their PUBACKs can no longer come */
    if (was_linked && dev->started)
        tg_node_transport_down(dev->node);
    dev->wants_poll = true;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    struct tg_sim_device *dev = obj;
    for (unsigned i = 0; i < dev->n_faults; i++) {
        if (dev->faults[i].mid != mid)
            continue;
        /* The ledger counts an injected publish only once the broker has it: only then is it
         * certain to reach the gateway (malformed: its DLQ). */
        if (dev->faults[i].kind == FAULT_MALFORMED) {
            tg_counter_inc(dev->cfg.metrics->malformed_acked);
            if (dev->cfg.ledger)
                ledger_check(dev, tg_ledger_malformed(dev->cfg.ledger, (int)dev->cfg.index,
                                                      dev->faults[i].payload_hash));
        } else {
            tg_counter_inc(dev->cfg.metrics->duplicates_acked);
            if (dev->cfg.ledger)
                ledger_check(dev, tg_ledger_duplicate(dev->cfg.ledger, (int)dev->cfg.index));
        }
        dev->faults[i] = dev->faults[--dev->n_faults];
        return;
    }
    tg_node_transport_acked(dev->node, (uint32_t)mid);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct tg_sim_device *dev = obj;
    if (dev->started && msg->payloadlen > 0 &&
        tg_node_ack_received(dev->node, msg->payload, (size_t)msg->payloadlen) != 0)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "sim", 10000,
                           "device %s: a message on %s is not an ack", dev->id, dev->ack_topic);
    dev->wants_poll = true; /* the ack deadline may have moved */
}

static int setup_client(struct tg_sim_device *dev)
{
    mosquitto_connect_callback_set(dev->mosq, on_connect);
    mosquitto_disconnect_callback_set(dev->mosq, on_disconnect);
    mosquitto_publish_callback_set(dev->mosq, on_publish);
    mosquitto_message_callback_set(dev->mosq, on_message);
    /* Two or three small publishes in a row (a reading and an injected fault) should not wait
     * for Nagle. */
    return mosquitto_int_option(dev->mosq, MOSQ_OPT_TCP_NODELAY, 1);
}

/* --- HAL ----------------------------------------------------------------------------- */

static int64_t hal_wall_ms(void *ctx)
{
    struct tg_sim_device *dev = ctx;
    return dev->cfg.clock->wall_ms + dev->skew_ms;
}

static uint64_t hal_mono_ms(void *ctx)
{
    struct tg_sim_device *dev = ctx;
    return dev->cfg.clock->mono_ms;
}

static uint32_t hal_random_u32(void *ctx)
{
    struct tg_sim_device *dev = ctx;
    return (uint32_t)(tg_sim_rand_u64(&dev->rng_hal) >> 32);
}

static bool hal_kv_load(void *ctx, const char *key, uint64_t *value)
{
    struct tg_sim_device *dev = ctx;
    for (int i = 0; i < KV_SLOTS; i++) {
        if (dev->kv[i].used && strcmp(dev->kv[i].key, key) == 0) {
            *value = dev->kv[i].value;
            return true;
        }
    }
    return false;
}

static int hal_kv_store(void *ctx, const char *key, uint64_t value)
{
    struct tg_sim_device *dev = ctx;
    if (strlen(key) >= sizeof dev->kv[0].key)
        return -1;
    int free_slot = -1;
    for (int i = 0; i < KV_SLOTS; i++) {
        if (dev->kv[i].used && strcmp(dev->kv[i].key, key) == 0) {
            dev->kv[i].value = value;
            return 0;
        }
        if (!dev->kv[i].used && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0)
        return -1;
    snprintf(dev->kv[free_slot].key, sizeof dev->kv[free_slot].key, "%s", key);
    dev->kv[free_slot].value = value;
    dev->kv[free_slot].used = true;
    return 0;
}

static int hal_transport_connect(void *ctx)
{
    struct tg_sim_device *dev = ctx;
    tg_counter_inc(dev->cfg.metrics->connects);
    /* A fresh client state: libmosquitto forgets the previous connection's queued QoS1
     * messages, which the core re-sends itself (device.h). */
    tg_mqtt_nopair_begin();
    int rc = mosquitto_reinitialise(dev->mosq, dev->id, true, dev);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = setup_client(dev);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_connect_bind_async(dev->mosq, dev->cfg.host, dev->cfg.port,
                                          dev->cfg.keepalive_s, NULL);
    tg_mqtt_nopair_end();
    dev->reg_fd = -1; /* any previous socket was closed by mosquitto_reinitialise */
    dev->n_faults = 0;
    if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(dev->mosq) < 0) {
        tg_counter_inc(dev->cfg.metrics->connect_failures);
        return -1;
    }
    dev->link = LINK_CONNECTING;
    dev->next_misc_ms = dev->cfg.clock->mono_ms + MISC_INTERVAL_MS;
    sync_epoll(dev);
    return 0;
}

static void remember_fault(struct tg_sim_device *dev, int mid, enum fault_kind kind,
                           uint64_t payload_hash)
{
    if (dev->n_faults < FAULT_SLOTS)
        dev->faults[dev->n_faults++] =
            (struct fault_mid){.mid = mid, .kind = kind, .payload_hash = payload_hash};
}

/* The faults injected beside a reading's publish: a duplicate of it, a malformed payload.
 * Both go out after the reading on the same connection, outside the core (no seq used). */
static void inject_faults(struct tg_sim_device *dev, const uint8_t *payload, size_t len)
{
    struct tg_sim_metrics *sm = dev->cfg.metrics;
    int mid;
    if (dev->cfg.duplicates > 0 && dev->n_faults < FAULT_SLOTS &&
        tg_sim_rand_chance(&dev->rng_faults, dev->cfg.duplicates)) {
        if (mosquitto_publish(dev->mosq, &mid, dev->topic, (int)len, payload, 1, false) ==
            MOSQ_ERR_SUCCESS) {
            tg_counter_inc(sm->pub_duplicates);
            remember_fault(dev, mid, FAULT_DUPLICATE, 0);
        }
    }
    if (dev->cfg.malformed > 0 && dev->n_faults < FAULT_SLOTS &&
        tg_sim_rand_chance(&dev->rng_faults, dev->cfg.malformed)) {
        uint8_t bad[TG_FAULT_MALFORMED_MAX];
        enum tg_malformed_kind kind;
        size_t n = tg_fault_malformed(&dev->rng_faults, dev->last_payload, dev->last_len,
                                      hal_wall_ms(dev), bad, sizeof bad, &kind);
        if (mosquitto_publish(dev->mosq, &mid, dev->topic, (int)n, bad, 1, false) ==
            MOSQ_ERR_SUCCESS) {
            tg_counter_inc(sm->pub_malformed);
            remember_fault(dev, mid, FAULT_MALFORMED, tg_ledger_payload_hash(bad, n));
        }
    }
}

static int hal_transport_publish(void *ctx, const uint8_t *payload, size_t len, uint32_t *token)
{
    struct tg_sim_device *dev = ctx;
    if (dev->link != LINK_UP)
        return -1;
    int mid;
    int rc = mosquitto_publish(dev->mosq, &mid, dev->topic, (int)len, payload, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        tg_counter_inc(dev->cfg.metrics->publish_errors);
        return -1;
    }
    *token = (uint32_t)mid;
    tg_counter_inc(dev->cfg.metrics->pub_readings);
    if (len <= sizeof dev->last_payload) {
        memcpy(dev->last_payload, payload, len);
        dev->last_len = len;
    }
    inject_faults(dev, payload, len);
    return 0;
}

/* --- lifecycle ------------------------------------------------------------------------ */

struct tg_sim_device *tg_sim_device_new(const struct tg_sim_device_config *cfg, char *err,
                                        size_t errlen)
{
    struct tg_sim_device *dev = calloc(1, sizeof *dev);
    if (!dev) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    dev->cfg = *cfg;
    dev->reg_fd = -1;
    snprintf(dev->id, sizeof dev->id, "%s", cfg->device_id);
    dev->cfg.device_id = dev->id;
    snprintf(dev->topic, sizeof dev->topic, "telemetry/%s", dev->id);
    snprintf(dev->ack_topic, sizeof dev->ack_topic, "ack/%s", dev->id);
    dev->rng_hal = tg_sim_stream_seed(cfg->seed, cfg->index, TG_SIM_STREAM_HAL);
    dev->rng_faults = tg_sim_stream_seed(cfg->seed, cfg->index, TG_SIM_STREAM_FAULTS);
    if (cfg->skewed) {
        dev->skew_initial_ms = tg_fault_skew_offset_ms(&dev->rng_faults);
        dev->skew_ms = dev->skew_initial_ms;
        dev->next_step_ms = cfg->clock->mono_ms +
                            (uint64_t)tg_sim_rand_exp(&dev->rng_faults,
                                                      3600000.0 / TG_FAULT_STEPS_PER_HOUR);
    }

    struct tg_node_config ncfg = {
        .device_id = dev->id,
        .outbox_slots = cfg->outbox_slots,
        .max_payload_bytes = MAX_PAYLOAD_BYTES,
        .durable_acks = cfg->durable_acks,
        .ack_timeout_ms = cfg->ack_timeout_ms,
    };
    size_t size = tg_node_storage_size(&ncfg);
    if (size == 0) {
        snprintf(err, errlen, "device %s: invalid node configuration", dev->id);
        goto fail;
    }
    dev->node_storage = malloc(size);
    dev->sensor_state = calloc(1, tg_sim_sensor_driver.state_size);
    dev->anomaly_state = calloc(1, tg_anomaly_driver.state_size);
    if (!dev->node_storage || !dev->sensor_state || !dev->anomaly_state) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    struct tg_hal hal = {
        .ctx = dev,
        .wall_ms = hal_wall_ms,
        .mono_ms = hal_mono_ms,
        .random_u32 = hal_random_u32,
        .kv_load = hal_kv_load,
        .kv_store = hal_kv_store,
        .transport_connect = hal_transport_connect,
        .transport_publish = hal_transport_publish,
        .i2c_transfer = NULL,
        .observe = hal_observe,
    };
    /* The core takes the stored boot + 1 when it starts: store the one before this run's. */
    if (cfg->boot > 1 && hal_kv_store(dev, "boot", cfg->boot - 1) != 0) {
        snprintf(err, errlen, "device %s: cannot seed its boot counter", dev->id);
        goto fail;
    }
    dev->node = tg_node_init(dev->node_storage, size, &ncfg, &hal);
    if (!dev->node) {
        snprintf(err, errlen, "device %s: tg_node_init failed", dev->id);
        goto fail;
    }
    tg_sim_sensor_set_seed(dev->sensor_state,
                           tg_sim_stream_seed(cfg->seed, cfg->index, TG_SIM_STREAM_SENSOR));
    struct tg_anomaly_config acfg = {
        .device_id = dev->id,
        .rate_per_hour = cfg->anomaly_rate,
        .seed = tg_sim_stream_seed(cfg->seed, cfg->index, TG_SIM_STREAM_ANOMALY),
        .inner = &tg_sim_sensor_driver,
        .inner_state = dev->sensor_state,
        .on_label = on_label,
        .label_ud = dev,
    };
    tg_anomaly_setup(dev->anomaly_state, &acfg);
    if (tg_node_add_sensor(dev->node, &tg_anomaly_driver, dev->anomaly_state, 0,
                           cfg->period_ms ? cfg->period_ms : 1) != 0) {
        snprintf(err, errlen, "device %s: cannot add its sensor", dev->id);
        goto fail;
    }
    tg_mqtt_nopair_begin();
    dev->mosq = mosquitto_new(dev->id, true, dev);
    tg_mqtt_nopair_end();
    if (!dev->mosq) {
        snprintf(err, errlen, "device %s: mosquitto_new: %s", dev->id, strerror(errno));
        goto fail;
    }
    if (setup_client(dev) != MOSQ_ERR_SUCCESS) {
        snprintf(err, errlen, "device %s: cannot set up the MQTT client", dev->id);
        goto fail;
    }
    return dev;
fail:
    tg_sim_device_destroy(dev);
    return NULL;
}

void tg_sim_device_destroy(struct tg_sim_device *dev)
{
    if (!dev)
        return;
    if (dev->mosq)
        mosquitto_destroy(dev->mosq); /* closes the socket: it leaves the epoll set */
    free(dev->node_storage);
    free(dev->sensor_state);
    free(dev->anomaly_state);
    free(dev);
}

int tg_sim_device_start(struct tg_sim_device *dev)
{
    if (dev->started)
        return 0;
    dev->started = true;
    dev->next_misc_ms = dev->cfg.clock->mono_ms + MISC_INTERVAL_MS;
    if (tg_node_start(dev->node) != 0) {
        dev->started = false;
        return -1;
    }
    return 0;
}

bool tg_sim_device_started(const struct tg_sim_device *dev)
{
    return dev->started;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint32_t tg_sim_device_poll(struct tg_sim_device *dev)
{
    uint64_t now = dev->cfg.clock->mono_ms;
    dev->wants_poll = false;
    /* A socket libmosquitto closed without a callback would leave the node waiting forever;
     * every path we know calls on_disconnect, this keeps the state honest if one does not. */
    if (dev->link != LINK_IDLE && mosquitto_socket(dev->mosq) < 0)
        on_disconnect(dev->mosq, dev, MOSQ_ERR_CONN_LOST);
    if (dev->link != LINK_IDLE && now >= dev->next_misc_ms) {
        mosquitto_loop_misc(dev->mosq); /* PINGREQ when idle; gives up on a silent peer */
        dev->next_misc_ms = now + MISC_INTERVAL_MS;
    }
    if (dev->cfg.skewed && now >= dev->next_step_ms) {
        int64_t step = tg_fault_skew_step_ms(&dev->rng_faults);
        dev->skew_ms = tg_fault_skew_after_step(dev->skew_ms, dev->skew_initial_ms, step);
        dev->next_step_ms = now + 1 +
                            (uint64_t)tg_sim_rand_exp(&dev->rng_faults,
                                                      3600000.0 / TG_FAULT_STEPS_PER_HOUR);
    }
    uint64_t next = now + (dev->started ? tg_node_poll(dev->node) : 1000u);
    sync_epoll(dev);
    if (dev->link != LINK_IDLE)
        next = min_u64(next, dev->next_misc_ms);
    if (dev->cfg.skewed)
        next = min_u64(next, dev->next_step_ms);
    if (dev->wants_poll)
        return 0;
    return next <= now ? 0 : (uint32_t)min_u64(next - now, UINT32_MAX);
}

bool tg_sim_device_io(struct tg_sim_device *dev, uint32_t events)
{
    if (mosquitto_socket(dev->mosq) >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        mosquitto_loop_read(dev->mosq, 1); /* errors reach on_disconnect */
    if (mosquitto_socket(dev->mosq) >= 0 && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        mosquitto_loop_write(dev->mosq, 1);
    sync_epoll(dev);
    bool wants = dev->wants_poll;
    dev->wants_poll = false;
    return wants;
}

bool tg_sim_device_drop(struct tg_sim_device *dev, bool abrupt)
{
    if (dev->link != LINK_UP)
        return false;
    if (abrupt) {
        /* Like a network loss: the next read sees EOF and on_disconnect runs from there. */
        int fd = mosquitto_socket(dev->mosq);
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
    } else {
        mosquitto_disconnect(dev->mosq);
    }
    sync_epoll(dev);
    return true;
}

void tg_sim_device_stop_sampling(struct tg_sim_device *dev)
{
    tg_node_stop_sampling(dev->node); /* the outbox still drains */
    tg_anomaly_finish(dev->anomaly_state);
}

void tg_sim_device_disconnect(struct tg_sim_device *dev)
{
    if (dev->link == LINK_UP)
        mosquitto_disconnect(dev->mosq);
    sync_epoll(dev);
}

bool tg_sim_device_want_write(const struct tg_sim_device *dev)
{
    return mosquitto_socket(dev->mosq) >= 0 && mosquitto_want_write(dev->mosq);
}

bool tg_sim_device_connected(const struct tg_sim_device *dev)
{
    return dev->link == LINK_UP;
}

unsigned tg_sim_device_outbox_used(const struct tg_sim_device *dev)
{
    struct tg_node_stats st;
    tg_node_get_stats(dev->node, &st);
    return st.outbox_used;
}

const char *tg_sim_device_id(const struct tg_sim_device *dev)
{
    return dev->id;
}

uint32_t tg_sim_device_index(const struct tg_sim_device *dev)
{
    return dev->cfg.index;
}

void tg_sim_device_stats(const struct tg_sim_device *dev, struct tg_node_stats *out)
{
    tg_node_get_stats(dev->node, out);
}

void *tg_sim_device_anomaly_state(struct tg_sim_device *dev)
{
    return dev->anomaly_state;
}
