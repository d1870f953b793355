/*
 * outbox.h - the node's bounded store of readings awaiting delivery confirmation.
 *
 * Holds up to `slots` encoded payloads, stored inline in caller-provided memory (part of the
 * node's storage: nothing is allocated). Readings are kept in the order they were taken.
 *
 * - Sending goes oldest first. The readings sent on the current connection are always the
 *   oldest ones (a prefix of the order), because sending stops at the first publish the
 *   transport refuses; tg_outbox_unsend_all() (connection lost) makes all of them unsent
 *   again, so the next connection re-sends from the oldest.
 * - A full outbox makes room by dropping its oldest reading, sent or not: newer readings are
 *   worth more to a monitoring system than older ones, and the drop is reported, never silent.
 * - tg_outbox_release() is the ONLY way a reading leaves the outbox other than that drop. The
 *   node calls it at the one point where a delivery counts as confirmed: the broker's PUBACK,
 *   or with durable acks the gateway's acknowledgement (design.md 5.7), which may release
 *   readings sent or unsent, anywhere in the order.
 *
 * One extra payload buffer beyond `slots` is the scratch buffer a new reading is encoded into
 * (tg_outbox_scratch), so that a reading which fails to encode never costs an older one.
 *
 * Used from the node's thread only.
 */
#ifndef TG_OUTBOX_H
#define TG_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_OUTBOX_MAX_SLOTS 65534u /* slot indices are 16-bit, one more for the scratch */

struct tg_outbox;

/* One reading in the outbox, as the node sees it. */
struct tg_outbox_entry {
    const uint8_t *payload;
    size_t len;
    uint64_t seq;
};

/* Bytes of storage (alignment: max_align_t) for slots readings of up to payload_max bytes.
 * 0 when slots is 0 or above TG_OUTBOX_MAX_SLOTS, payload_max is 0, or the size overflows. */
size_t tg_outbox_storage_size(unsigned slots, size_t payload_max);

/* Builds an empty outbox in storage (tg_outbox_storage_size(slots, payload_max) bytes). */
struct tg_outbox *tg_outbox_init(void *storage, unsigned slots, size_t payload_max);

/* The buffer (payload_max bytes) to encode the next reading into before tg_outbox_push(). */
uint8_t *tg_outbox_scratch(struct tg_outbox *ob);
size_t tg_outbox_payload_max(const struct tg_outbox *ob);

/* Appends the reading encoded in the scratch buffer (len bytes), unsent. When the outbox was
 * full its oldest reading is dropped first: returns true with that reading's seq in
 * *dropped_seq; false when nothing was dropped. */
bool tg_outbox_push(struct tg_outbox *ob, uint64_t seq, size_t len, uint64_t *dropped_seq);

unsigned tg_outbox_count(const struct tg_outbox *ob);
/* Readings sent on the current connection and not yet confirmed. */
unsigned tg_outbox_sent(const struct tg_outbox *ob);

/* The oldest reading not sent on this connection; false when every reading has been sent. */
bool tg_outbox_next_unsent(const struct tg_outbox *ob, struct tg_outbox_entry *out);
/* Marks the reading tg_outbox_next_unsent() returned as sent, awaiting token's confirmation. */
void tg_outbox_mark_sent(struct tg_outbox *ob, uint32_t token);
/* The connection is gone, and its tokens with it: every reading is unsent again. */
void tg_outbox_unsend_all(struct tg_outbox *ob);

/* Finds the sent reading awaiting token; false when none does (a stale or unknown token).
 * *pos is its position, 0 being the oldest. */
bool tg_outbox_find_token(const struct tg_outbox *ob, uint32_t token, unsigned *pos);

/* The seq of the reading at position pos (< tg_outbox_count), 0 being the oldest. */
uint64_t tg_outbox_seq_at(const struct tg_outbox *ob, unsigned pos);

/* Removes the reading at position pos (< tg_outbox_count) and returns its seq: the one
 * release point (see above). */
uint64_t tg_outbox_release(struct tg_outbox *ob, unsigned pos);

#endif
