/*
 * node.c - the sensor-node firmware core (contract in node.h).
 *
 * A node is a small state machine driven by tg_node_poll() and the port's transport events:
 *
 *   sampling   each sensor has its own next-due time; a due sensor is read, the sample is
 *              encoded (and signed) straight into the outbox's scratch buffer and pushed.
 *   link       CONNECTING (an attempt is under way; the port will report up or down),
 *              UP, or WAITING (a reconnect is scheduled after a backoff delay).
 *   sending    while UP, outbox readings not yet sent on this connection go out oldest
 *              first; a refused publish stops the round and is retried RESEND_MS later.
 *   release    a reading leaves the outbox only in release_confirmed() (or, outbox full,
 *              as the reported drop of the oldest).
 *
 * Portable C: no operating-system call, no allocation, no stdio; time, randomness, storage
 * and I/O come through the HAL (hal.h).
 */
#include "node.h"

#include <stddef.h>
#include <string.h>

#include "ack_msg.h"
#include "backoff.h"
#include "codec_native.h"
#include "outbox.h"
#include "record.h"
#include "sign.h"

_Static_assert(TG_OUTBOX_MAX_SLOTS == TG_NODE_MAX_OUTBOX_SLOTS, "node.h and outbox.h disagree");

#define DEFAULT_PAYLOAD_BYTES 256
#define DEFAULT_BACKOFF_MIN_MS 1000
#define DEFAULT_BACKOFF_MAX_MS 60000
#define DEFAULT_ACK_TIMEOUT_MS 15000
/* After the transport refuses a publish (its buffer is full, or it has not noticed yet that
 * the connection is gone) the node tries again this much later rather than spinning. */
#define RESEND_MS 100
/* What tg_node_poll() returns when nothing at all is scheduled (no sensors, connecting). */
#define IDLE_MS 1000
/* The key/value entry holding the boot counter. */
#define BOOT_KEY "boot"

enum link {
    LINK_CONNECTING, /* an attempt is under way: the port reports up or down */
    LINK_UP,
    LINK_WAITING, /* a reconnect is due at reconnect_at_ms */
};

struct sensor {
    const struct tg_sensor_driver *driver;
    void *state;
    uint8_t addr;
    uint32_t period_ms;
    uint64_t due_ms; /* monotonic time of the next sample */
};

struct tg_node {
    struct tg_hal hal;
    char device_id[TG_NODE_DEVICE_ID_MAX + 1];
    bool has_key;
    struct tg_sign sign;
    uint32_t backoff_min_ms, backoff_max_ms;
    struct sensor sensors[TG_NODE_MAX_SENSORS];
    unsigned n_sensors;
    bool started;
    bool sampling_stopped;         /* tg_node_stop_sampling(): drain only */
    uint64_t boot;
    uint64_t next_seq;
    enum link link;
    unsigned failures;        /* consecutive failed attempts since the last up: backoff exponent */
    uint64_t reconnect_at_ms; /* LINK_WAITING */
    bool publish_refused;     /* the last send round was cut short by the transport */
    uint64_t resend_at_ms;    /* when publish_refused: the next send round */
    bool durable_acks;
    uint32_t ack_timeout_ms;
    /* durable_acks: while some reading is sent and not acknowledged, the time by which the
     * oldest one must be, and which one that is (ack_wait_seq). An ack that releases other
     * readings does not move the deadline: only the oldest one leaving the outbox does. */
    bool ack_armed;
    uint64_t ack_deadline_ms;
    uint64_t ack_wait_seq;
    uint64_t published_hw;    /* seqs below this were published at least once: resends */
    bool published_any;
    struct tg_node_stats stats; /* outbox_used and connected are filled in on request */
    struct tg_outbox *outbox; /* inside the same storage, right after this struct */
};

#define ALIGN (_Alignof(max_align_t))
/* The node's own bytes at the start of the storage; the outbox follows. A constant
 * expression, like outbox.c's OUTBOX_BYTES, for the footprint report. */
#define NODE_HEADER_BYTES ((sizeof(struct tg_node) + ALIGN - 1) / ALIGN * ALIGN)

/* The config with defaults applied; false when it is invalid. */
struct settings {
    size_t payload_max;
    uint32_t backoff_min_ms, backoff_max_ms;
    uint32_t ack_timeout_ms;
    size_t key_len; /* 0: unsigned */
    size_t outbox_bytes;
};

static bool settle(const struct tg_node_config *cfg, struct settings *set)
{
    if (!cfg->device_id)
        return false;
    /* bounded scan: a device id longer than the maximum is invalid, however long it is */
    size_t id_len = 0;
    while (id_len <= TG_NODE_DEVICE_ID_MAX && cfg->device_id[id_len] != '\0')
        id_len++;
    if (!tg_device_id_valid(cfg->device_id, id_len))
        return false;
    set->key_len = cfg->hmac_key ? cfg->hmac_key_len : 0;
    if (set->key_len > TG_NODE_KEY_MAX)
        return false;
    set->payload_max = cfg->max_payload_bytes ? cfg->max_payload_bytes : DEFAULT_PAYLOAD_BYTES;
    set->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    set->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (set->backoff_min_ms > set->backoff_max_ms)
        return false;
    set->ack_timeout_ms = cfg->ack_timeout_ms ? cfg->ack_timeout_ms : DEFAULT_ACK_TIMEOUT_MS;
    set->outbox_bytes = tg_outbox_storage_size(cfg->outbox_slots, set->payload_max);
    if (set->outbox_bytes == 0 || set->outbox_bytes > SIZE_MAX - NODE_HEADER_BYTES)
        return false;
    return true;
}

size_t tg_node_storage_size(const struct tg_node_config *cfg)
{
    struct settings set;
    if (!settle(cfg, &set))
        return 0;
    return NODE_HEADER_BYTES + set.outbox_bytes;
}

struct tg_node *tg_node_init(void *storage, size_t size, const struct tg_node_config *cfg,
                             const struct tg_hal *hal)
{
    struct settings set;
    if (!settle(cfg, &set) || size < NODE_HEADER_BYTES + set.outbox_bytes ||
        (uintptr_t)storage % ALIGN != 0)
        return NULL;
    struct tg_node *node = storage;
    memset(node, 0, sizeof *node);
    node->hal = *hal;
    memcpy(node->device_id, cfg->device_id, strlen(cfg->device_id) + 1);
    node->backoff_min_ms = set.backoff_min_ms;
    node->backoff_max_ms = set.backoff_max_ms;
    node->durable_acks = cfg->durable_acks;
    node->ack_timeout_ms = set.ack_timeout_ms;
    if (set.key_len > 0) {
        if (tg_sign_init(&node->sign, cfg->hmac_key, set.key_len) != 0)
            return NULL;
        node->has_key = true;
    }
    node->outbox = tg_outbox_init((uint8_t *)storage + NODE_HEADER_BYTES, cfg->outbox_slots,
                                  set.payload_max);
    if (!node->outbox) {
        tg_sign_clear(&node->sign);
        return NULL;
    }
    return node;
}

int tg_node_add_sensor(struct tg_node *node, const struct tg_sensor_driver *driver, void *state,
                       uint8_t addr, uint32_t period_ms)
{
    if (node->started || node->n_sensors == TG_NODE_MAX_SENSORS || period_ms == 0)
        return -1;
    node->sensors[node->n_sensors++] =
        (struct sensor){.driver = driver, .state = state, .addr = addr, .period_ms = period_ms};
    return 0;
}

static uint64_t now_ms(const struct tg_node *node)
{
    return node->hal.mono_ms(node->hal.ctx);
}

static void observe(const struct tg_node *node, enum tg_node_event ev, uint64_t seq)
{
    if (node->hal.observe)
        node->hal.observe(node->hal.ctx, ev, node->boot, seq);
}

/* --- link ------------------------------------------------------------------------------- */

static void schedule_reconnect(struct tg_node *node)
{
    uint32_t delay = tg_backoff_delay_ms(node->backoff_min_ms, node->backoff_max_ms,
                                         node->failures, node->hal.random_u32(node->hal.ctx));
    if (node->failures < 64) /* the ceiling is long capped by then; keep the count bounded */
        node->failures++;
    node->reconnect_at_ms = now_ms(node) + delay;
    node->link = LINK_WAITING;
}

static void start_connect(struct tg_node *node)
{
    node->stats.connects++;
    if (node->hal.transport_connect(node->hal.ctx) == 0)
        node->link = LINK_CONNECTING;
    else
        schedule_reconnect(node);
}

/* --- outbox flow ------------------------------------------------------------------------ */

/* THE release point: the one place where a reading counts as delivered and leaves the
 * outbox. The evidence is the broker's PUBACK (tg_node_transport_acked), or with durable_acks
 * the gateway's acknowledgement (tg_node_ack_received), design.md 5.7. */
static void release_confirmed(struct tg_node *node, unsigned pos)
{
    uint64_t seq = tg_outbox_release(node->outbox, pos);
    node->stats.released++;
    observe(node, TG_NODE_EV_RELEASED, seq);
}

/* durable_acks: starts the wait for the oldest sent reading's ack, unless one is running for
 * that same reading. */
static void arm_ack_wait(struct tg_node *node)
{
    if (!node->durable_acks || tg_outbox_sent(node->outbox) == 0) {
        node->ack_armed = false;
        return;
    }
    uint64_t oldest = tg_outbox_seq_at(node->outbox, 0);
    if (node->ack_armed && node->ack_wait_seq == oldest)
        return;
    node->ack_armed = true;
    node->ack_wait_seq = oldest;
    node->ack_deadline_ms = now_ms(node) + node->ack_timeout_ms;
}

/* Sends every reading not yet sent on this connection, oldest first. Stops at the first
 * refusal: the refused reading stays first in line, so order is kept on the retry. */
static void send_unsent(struct tg_node *node)
{
    struct tg_outbox_entry entry;
    node->publish_refused = false;
    while (node->link == LINK_UP && tg_outbox_next_unsent(node->outbox, &entry)) {
        uint32_t token;
        if (node->hal.transport_publish(node->hal.ctx, entry.payload, entry.len, &token) != 0) {
            node->publish_refused = true;
            node->resend_at_ms = now_ms(node) + RESEND_MS;
            break;
        }
        tg_outbox_mark_sent(node->outbox, token);
        node->stats.published++;
        if (node->published_any && entry.seq < node->published_hw)
            node->stats.resent++;
        else
            node->published_hw = entry.seq + 1;
        node->published_any = true;
    }
    arm_ack_wait(node);
}

/* Reads one sensor and puts the reading in the outbox. A failed read or encoding (a value
 * the format cannot carry, a payload beyond max_payload_bytes) counts as a sample error and
 * consumes no seq, so the seqs of one boot have no gaps that were never readings. */
static void take_sample(struct tg_node *node, struct sensor *sensor)
{
    struct tg_sensor_sample sample = {0};
    if (sensor->driver->read(sensor->state, &node->hal, &sample) != 0 ||
        sample.n > TG_SENSOR_MAX_METRICS) {
        node->stats.sample_errors++;
        return;
    }
    struct tg_metric metrics[TG_SENSOR_MAX_METRICS];
    for (unsigned i = 0; i < sample.n; i++)
        metrics[i] = (struct tg_metric){.name = sample.names[i], .value = sample.values[i]};
    uint64_t seq = node->next_seq;
    struct tg_reading reading = {.device = node->device_id,
                                 .has_seq = true,
                                 .boot = node->boot,
                                 .seq = seq,
                                 .ts_ms = node->hal.wall_ms(node->hal.ctx),
                                 .n_metrics = sample.n,
                                 .metrics = metrics};
    uint8_t *buf = tg_outbox_scratch(node->outbox);
    size_t cap = tg_outbox_payload_max(node->outbox), len;
    tg_err err = node->has_key ? tg_codec_native_encode_signed(&reading, tg_sign_hmac,
                                                               &node->sign, buf, cap, &len)
                               : tg_codec_native_encode(&reading, buf, cap, &len);
    if (err != TG_OK) {
        node->stats.sample_errors++;
        return;
    }
    uint64_t dropped_seq;
    if (tg_outbox_push(node->outbox, seq, len, &dropped_seq)) {
        node->stats.dropped++;
        observe(node, TG_NODE_EV_DROPPED, dropped_seq);
    }
    node->next_seq++;
    node->stats.taken++;
    observe(node, TG_NODE_EV_TAKEN, seq);
}

/* --- entry points ----------------------------------------------------------------------- */

int tg_node_start(struct tg_node *node)
{
    if (node->started)
        return -1;
    /* The new boot is durable before any reading carries it: after a crash the next start
     * cannot hand out this boot again, so (device, boot, seq) never names two readings. */
    uint64_t previous = 0;
    if (!node->hal.kv_load(node->hal.ctx, BOOT_KEY, &previous))
        previous = 0;
    node->boot = previous + 1;
    if (node->hal.kv_store(node->hal.ctx, BOOT_KEY, node->boot) != 0)
        return -1;
    node->next_seq = 0;
    for (unsigned i = 0; i < node->n_sensors; i++) {
        struct sensor *sensor = &node->sensors[i];
        if (sensor->driver->init(sensor->state, &node->hal, sensor->addr) != 0)
            return -1;
    }
    uint64_t now = now_ms(node);
    for (unsigned i = 0; i < node->n_sensors; i++)
        node->sensors[i].due_ms = now; /* first sample at the first poll */
    node->started = true;
    start_connect(node);
    return 0;
}

static uint64_t earlier(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint32_t tg_node_poll(struct tg_node *node)
{
    if (!node->started)
        return IDLE_MS;
    uint64_t now = now_ms(node);
    for (unsigned i = 0; i < node->n_sensors && !node->sampling_stopped; i++) {
        struct sensor *sensor = &node->sensors[i];
        if (now < sensor->due_ms)
            continue;
        take_sample(node, sensor);
        /* Keep to the period's grid; after a stall (poll called late) skip the missed
         * samples rather than taking a burst of them at the same instant. */
        sensor->due_ms += sensor->period_ms;
        if (sensor->due_ms <= now)
            sensor->due_ms = now + sensor->period_ms;
    }
    if (node->link == LINK_WAITING && now >= node->reconnect_at_ms)
        start_connect(node);
    if (node->link == LINK_UP && node->ack_armed && now >= node->ack_deadline_ms) {
        /* The oldest reading sent waited too long for the gateway: it, or the ack, was lost
         * (a gateway crash, a broker restart). Send every unacknowledged reading again. */
        node->stats.ack_timeouts++;
        node->ack_armed = false;
        tg_outbox_unsend_all(node->outbox);
        node->publish_refused = false;
    }
    if (node->link == LINK_UP && (!node->publish_refused || now >= node->resend_at_ms))
        send_unsent(node);

    uint64_t next = UINT64_MAX;
    for (unsigned i = 0; i < node->n_sensors && !node->sampling_stopped; i++)
        next = earlier(next, node->sensors[i].due_ms);
    if (node->link == LINK_WAITING)
        next = earlier(next, node->reconnect_at_ms);
    if (node->link == LINK_UP && node->publish_refused)
        next = earlier(next, node->resend_at_ms);
    if (node->link == LINK_UP && node->ack_armed)
        next = earlier(next, node->ack_deadline_ms);
    /* time may have passed inside the HAL calls above */
    now = now_ms(node);
    if (next == UINT64_MAX)
        return IDLE_MS;
    if (next <= now)
        return 0;
    return next - now > UINT32_MAX ? UINT32_MAX : (uint32_t)(next - now);
}

void tg_node_stop_sampling(struct tg_node *node)
{
    node->sampling_stopped = true;
}

void tg_node_transport_up(struct tg_node *node)
{
    node->link = LINK_UP;
    node->failures = 0;
    /* A new connection knows nothing of the old one's tokens: send every unconfirmed
     * reading again, oldest first. The gateway removes any duplicate by (device, boot, seq). */
    tg_outbox_unsend_all(node->outbox);
    send_unsent(node);
}

void tg_node_transport_down(struct tg_node *node)
{
    if (!node->started || node->link == LINK_WAITING)
        return; /* a reconnect is already scheduled */
    tg_outbox_unsend_all(node->outbox);
    node->publish_refused = false;
    node->ack_armed = false; /* the reconnect sends everything again anyway */
    schedule_reconnect(node);
}

void tg_node_transport_acked(struct tg_node *node, uint32_t token)
{
    if (node->durable_acks)
        return; /* the broker has it; only the gateway's ack releases it */
    unsigned pos;
    /* An unknown token is a confirmation from a previous connection, or for a reading the
     * full outbox already dropped: nothing to release. */
    if (tg_outbox_find_token(node->outbox, token, &pos))
        release_confirmed(node, pos);
}

int tg_node_ack_received(struct tg_node *node, const uint8_t *payload, size_t len)
{
    if (!node->durable_acks)
        return 0;
    struct tg_ack_msg msg;
    if (tg_ack_msg_decode(payload, len, &msg) != 0)
        return -1;
    node->stats.acks++;
    if (msg.boot != node->boot)
        return 0; /* an older boot's readings left with the RAM they were in */
    for (unsigned pos = 0; pos < tg_outbox_count(node->outbox);) {
        if (tg_ack_msg_covers(&msg, node->boot, tg_outbox_seq_at(node->outbox, pos)))
            release_confirmed(node, pos); /* the next reading moves into pos */
        else
            pos++;
    }
    arm_ack_wait(node);
    return 0;
}

uint64_t tg_node_boot(const struct tg_node *node)
{
    return node->boot;
}

const char *tg_node_device_id(const struct tg_node *node)
{
    return node->device_id;
}

void tg_node_get_stats(const struct tg_node *node, struct tg_node_stats *out)
{
    *out = node->stats;
    out->outbox_used = tg_outbox_count(node->outbox);
    out->connected = node->link == LINK_UP;
}
