/*
 * ack.h - durable acknowledgements from the gateway to each node (design.md 5.7, issue 12).
 *
 * The acker follows every reading the pipeline keeps, from the moment it has a record id
 * (rid) to the moment it is durable: committed to the journal, or confirmed by Kafka,
 * whichever comes first. Per device it keeps the durable view of the device's current boot
 * (a cumulative point plus up to TG_ACK_MAX_RANGES ranges above it, common/ack_msg.h) and
 * publishes it on <topic_prefix><device_id> when it changed:
 *   - coalesced: at most one message per device per tg_acker_flush() (the pipeline calls it
 *     once per group commit), and none sooner than min_interval_ms after the previous one;
 *   - a repeat of a reading that is already durable (the node resends because it missed the
 *     ack) makes the view due again even though it did not move;
 *   - a reading dropped by the gateway (journal cap, Kafka refused a dead letter) is never
 *     acknowledged: the node keeps it, and resends it.
 * More gaps than TG_ACK_MAX_RANGES: the oldest gap is folded into the cumulative point
 * (counted in tidegate_ack_gaps_skipped_total). A gap that old is nearly always a reading the
 * node itself dropped from a full outbox; the ack would release nothing the node holds.
 *
 * After a gateway restart the acker knows nothing: a reading the dedup window remembers
 * (a repeat the node sends because its ack was lost in the crash) counts as durable only
 * when trust_repeats is set, which the pipeline does in journal.mode = durable, where the
 * saved dedup window never runs ahead of the journal.
 *
 * Bounds: max_devices devices are followed (later ones get no acks, counted); readings wait
 * in a ring from tg_acker_track() until durable or lost (in durable mode about one commit
 * interval of traffic).
 *
 * Threads: not synchronized; the pipeline thread makes every call, and the publish function
 * runs on it.
 */
#ifndef TG_ACK_H
#define TG_ACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ack_msg.h"
#include "config.h"
#include "error.h"
#include "metrics.h"

/* Sends one ack message; must not block (the ingress queues it for its MQTT connection).
 * Returns 0, or -1 when it could not be queued (the message is dropped, counted). */
typedef int (*tg_ack_publish_fn)(void *ud, const char *topic, const uint8_t *payload,
                                 size_t len);

struct tg_ack_opts {
    const char *topic_prefix; /* "ack/": topic = prefix + device id */
    int64_t min_interval_ms;  /* least time between two acks to one device */
    size_t max_devices;       /* devices followed */
    bool trust_repeats;       /* a repeat of an unknown reading counts as durable (above) */
};

struct tg_acker;

/* A new acker; registers its metrics in metrics (may be NULL in tests). TG_ERR_NOMEM, or
 * TG_ERR_USAGE for a prefix longer than 128 bytes or max_devices 0. */
tg_err tg_acker_new(const struct tg_ack_opts *opts, struct tg_metrics *metrics,
                    struct tg_acker **out);
/* The acker [ack] asks for: *out NULL (and TG_OK) when [ack] enabled = false. */
tg_err tg_acker_from_config(const struct tg_config *cfg, struct tg_metrics *metrics,
                            struct tg_acker **out);
/* NULL-safe. */
void tg_acker_destroy(struct tg_acker *ak);

/* Where messages go; before the first flush. Without one, flush publishes nothing. */
void tg_acker_set_publisher(struct tg_acker *ak, tg_ack_publish_fn fn, void *ud);

/* Reading (device, boot, seq) became record rid. rids only grow. */
void tg_acker_track(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                    uint64_t seq, uint64_t rid);
/* Kafka confirmed rid: durable. Unknown rids are ignored. */
void tg_acker_confirmed(struct tg_acker *ak, uint64_t rid);
/* rid was dropped by the gateway: never acknowledged. Unknown rids are ignored. */
void tg_acker_lost(struct tg_acker *ak, uint64_t rid);
/* Every rid below limit not lost is durable (a journal commit stored them). */
void tg_acker_durable_below(struct tg_acker *ak, uint64_t limit);
/* The dedup window said (device, boot, seq) was taken before. */
void tg_acker_repeat(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                     uint64_t seq);
/* (device, boot, seq) is durable although it has no rid here: Kafka holds it (the pipeline
 * found it reading back what the last run sent, pipeline_reconcile.c). */
void tg_acker_settle(struct tg_acker *ak, const char *device, size_t device_len, uint64_t boot,
                     uint64_t seq);
/* The pipeline dropped a reading of device on arrival (drop_newest at the cap, out of
 * memory) after the dedup window had counted it as seen: from now on a repeat of that
 * device is never taken as durable (its resend of the dropped reading would look like one),
 * so the node keeps the reading until its own outbox drops it. */
void tg_acker_refused(struct tg_acker *ak, const char *device, size_t device_len);
/* Publishes the view of every device whose view is due (see above). now_ms: monotonic. */
void tg_acker_flush(struct tg_acker *ak, int64_t now_ms);

struct tg_acker_stats {
    uint64_t sent, publish_failed, gaps_skipped, untracked;
    size_t devices, devices_due, readings_waiting;
};
void tg_acker_stats(const struct tg_acker *ak, struct tg_acker_stats *out);

/* The current view of device (for tests): false when the device is not followed. */
bool tg_acker_view(const struct tg_acker *ak, const char *device, struct tg_ack_msg *out);

#endif
