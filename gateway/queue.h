/*
 * queue.h - the bounded hand-off between the ingress thread and the pipeline thread.
 *
 * A single-producer, single-consumer ring of bytes: each entry is one received MQTT message
 * (topic, payload, receive time) copied in place, so a message costs no allocation and the
 * queue's memory is fixed at creation. When it lacks room, tg_queue_push() says TG_ERR_FULL
 * at once: the ingress then stops reading from the broker (which holds QoS1 messages) instead
 * of blocking the MQTT loop or dropping anything.
 *
 * Threads: exactly one producer thread calls push/free_bytes, exactly one consumer thread
 * calls peek/pop/wait_fd; any thread may read the counters. The consumer sleeps in poll(2)
 * on tg_queue_fd() after tg_queue_prepare_wait() said the queue is empty; the producer
 * signals the descriptor only then, so a busy pipeline costs the producer no syscall.
 */
#ifndef TG_QUEUE_H
#define TG_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tg_qmsg {
    const char *topic; /* NUL-terminated */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    int64_t rx_ms;     /* receive time, ms since the Unix epoch */
};

struct tg_queue;

/* A queue of capacity_bytes (rounded up to a power of two, at least 4 KiB). NULL on error. */
struct tg_queue *tg_queue_new(size_t capacity_bytes);
void tg_queue_destroy(struct tg_queue *q);

/* Bytes one message with these sizes takes in the ring. */
size_t tg_queue_entry_bytes(size_t topic_len, size_t payload_len);

/* Producer: copies the message in. TG_ERR_FULL when it does not fit now; TG_ERR_TOO_LARGE
 * when it could never fit (larger than half the ring). */
tg_err tg_queue_push(struct tg_queue *q, const char *topic, size_t topic_len,
                     const uint8_t *payload, size_t payload_len, int64_t rx_ms);

/* Producer: bytes free right now. */
size_t tg_queue_free_bytes(const struct tg_queue *q);

/* Consumer: the oldest message, without removing it; false when empty. The pointers stay
 * valid until tg_queue_pop(). */
bool tg_queue_peek(struct tg_queue *q, struct tg_qmsg *out);

/* Consumer: removes the message returned by the last tg_queue_peek(). */
void tg_queue_pop(struct tg_queue *q);

/* Consumer: call before sleeping on tg_queue_fd(). Returns false (do not sleep) when a
 * message is already there; otherwise the producer will signal the fd on its next push. */
bool tg_queue_prepare_wait(struct tg_queue *q);

/* Consumer: clears the wake-up signal; call after poll(2) reported the fd readable. */
void tg_queue_ack_wakeup(struct tg_queue *q);

/* Readable when the consumer should look again (an eventfd). */
int tg_queue_fd(const struct tg_queue *q);

/* Messages and bytes currently queued (approximate while both threads run). */
size_t tg_queue_messages(const struct tg_queue *q);
size_t tg_queue_used_bytes(const struct tg_queue *q);
size_t tg_queue_capacity(const struct tg_queue *q);

#endif
