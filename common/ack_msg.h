/*
 * ack_msg.h - the gateway's durable acknowledgement to one node (design.md 5.7, issue 12).
 *
 * Published by the gateway on ack/<device_id> (the prefix is [ack] topic_prefix), read by the
 * node's firmware core. It says which readings of ONE boot of that device are durable at the
 * gateway (committed to its journal, or confirmed by Kafka, whichever came first):
 *
 *   CBOR map {"b": boot, "s": upto, "x": [[lo, hi], ...]}
 *     b  the boot the message is about (always present);
 *     s  cumulative point: every seq <= s of boot b is durable (absent: none known yet);
 *     x  durable seq ranges above s, inclusive, ascending, at most TG_ACK_MAX_RANGES (absent
 *        or empty: none). They exist for gaps: a reading lost between node and gateway (a
 *        broker restart, a gateway crash) is missing until the node resends it, and the
 *        readings after it need not wait; after a gateway restart the gateway knows nothing
 *        of the readings before the first it sees again.
 *
 * Each message is the gateway's whole current view of that boot, so messages are idempotent
 * and a lost one is repaired by the next: the transport may be QoS 0.
 *
 * The encoder and the decoder are written by hand over this one fixed shape: no allocation,
 * no library call, so a microcontroller port of the firmware core carries a few hundred bytes
 * of code for them. The decoder accepts unsigned integers of any CBOR width, skips unknown
 * keys whose value is an unsigned integer or a text string, and refuses everything else.
 *
 * Threads: pure functions.
 */
#ifndef TG_ACK_MSG_H
#define TG_ACK_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef TG_ACK_MAX_RANGES
#define TG_ACK_MAX_RANGES 4 /* durable ranges above the cumulative point, per message */
#endif

/* Largest encoded message: map head, three keys, three uint64s, the array and its ranges. */
#define TG_ACK_MSG_MAX_BYTES (1 + 3 * 2 + 2 * 9 + 1 + TG_ACK_MAX_RANGES * (1 + 2 * 9))

struct tg_ack_range {
    uint64_t lo, hi; /* inclusive, lo <= hi */
};

struct tg_ack_msg {
    uint64_t boot;
    bool has_upto;
    uint64_t upto;
    unsigned n_ranges;
    struct tg_ack_range ranges[TG_ACK_MAX_RANGES];
};

/* Encodes msg into buf (cap bytes; TG_ACK_MSG_MAX_BYTES always suffice). Returns the length,
 * or 0 when cap is too small or msg is malformed (more than TG_ACK_MAX_RANGES ranges, a range
 * with lo > hi). */
size_t tg_ack_msg_encode(const struct tg_ack_msg *msg, uint8_t *buf, size_t cap);

/* Decodes len bytes into *out. Returns 0, or -1 when the bytes are not an ack message
 * (bad CBOR, missing "b", a range with lo > hi, too many ranges, trailing bytes). */
int tg_ack_msg_decode(const uint8_t *buf, size_t len, struct tg_ack_msg *out);

/* Whether msg says that reading (boot, seq) is durable. */
bool tg_ack_msg_covers(const struct tg_ack_msg *msg, uint64_t boot, uint64_t seq);

#endif
