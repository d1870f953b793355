/*
 * queue.c - SPSC byte ring for ingress -> pipeline.
 *
 * head and tail are byte counters that only grow (mod 2^64); their difference is the bytes
 * in use and (counter & mask) the position in the ring. The producer publishes an entry by
 * storing head with release order after writing it; the consumer reads head with acquire
 * order, so it never sees a half-written entry (and symmetrically for tail).
 *
 * Entry layout, 8-byte aligned: a header, then the topic (with its NUL), then the payload.
 * An entry never wraps: when it does not fit before the end of the ring, the producer writes
 * a header with WRAP_MARK there and starts the entry at offset 0.
 */
#include "queue.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WRAP_MARK UINT32_MAX

struct entry_hdr {
    uint32_t size; /* whole entry in bytes (aligned), or WRAP_MARK */
    uint32_t topic_len;
    uint32_t payload_len;
    uint32_t pad;
    int64_t rx_ms;
};

struct tg_queue {
    uint8_t *ring;
    size_t cap, mask;
    int efd;
    /* producer-written */
    _Alignas(64) _Atomic uint64_t head;
    _Atomic uint64_t pushed;
    /* consumer-written */
    _Alignas(64) _Atomic uint64_t tail;
    _Atomic uint64_t popped;
    _Atomic int waiting;
    uint64_t peeked_end; /* tail after the peeked entry */
};

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

size_t tg_queue_entry_bytes(size_t topic_len, size_t payload_len)
{
    return align8(sizeof(struct entry_hdr) + topic_len + 1 + payload_len);
}

struct tg_queue *tg_queue_new(size_t capacity_bytes)
{
    size_t cap = 4096;
    while (cap < capacity_bytes)
        cap <<= 1;
    struct tg_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->efd = -1;
    q->ring = aligned_alloc(64, cap);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!q->ring || q->efd < 0) {
        tg_queue_destroy(q);
        return NULL;
    }
    q->cap = cap;
    q->mask = cap - 1;
    return q;
}

void tg_queue_destroy(struct tg_queue *q)
{
    if (!q)
        return;
    if (q->efd >= 0)
        close(q->efd);
    free(q->ring);
    free(q);
}

tg_err tg_queue_push(struct tg_queue *q, const char *topic, size_t topic_len,
                     const uint8_t *payload, size_t payload_len, int64_t rx_ms)
{
    size_t need = tg_queue_entry_bytes(topic_len, payload_len);
    if (need > q->cap / 2 || topic_len > UINT32_MAX || payload_len > UINT32_MAX)
        return TG_ERR_TOO_LARGE;
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    size_t pos = (size_t)(head & q->mask);
    size_t to_end = q->cap - pos;
    size_t skip = need > to_end ? to_end : 0; /* bytes wasted to wrap */
    if ((size_t)(head - tail) + skip + need > q->cap)
        return TG_ERR_FULL;
    if (skip) {
        /* The header always fits: positions and sizes are multiples of 8 and the header is
         * 24 bytes... unless fewer than 24 bytes remain; then the consumer skips by size. */
        if (to_end >= sizeof(struct entry_hdr)) {
            struct entry_hdr mark = {.size = WRAP_MARK};
            memcpy(q->ring + pos, &mark, sizeof mark);
        }
        head += skip;
        pos = 0;
    }
    struct entry_hdr h = {.size = (uint32_t)need, .topic_len = (uint32_t)topic_len,
                          .payload_len = (uint32_t)payload_len, .rx_ms = rx_ms};
    uint8_t *p = q->ring + pos;
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, topic, topic_len);
    p[sizeof h + topic_len] = '\0';
    if (payload_len)
        memcpy(p + sizeof h + topic_len + 1, payload, payload_len);
    atomic_store_explicit(&q->head, head + need, memory_order_release);
    atomic_fetch_add_explicit(&q->pushed, 1, memory_order_relaxed);

    /* Wake the consumer only when it announced it is going to sleep. The fence orders our
     * store of head before our load of waiting; the consumer stores waiting before it loads
     * head (both seq_cst), so at least one side sees the other and no wake-up is lost. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&q->waiting) && atomic_exchange(&q->waiting, 0)) {
        uint64_t one = 1;
        ssize_t n = write(q->efd, &one, sizeof one);
        (void)n; /* EAGAIN only when the counter is already non-zero: a wake-up is pending */
    }
    return TG_OK;
}

size_t tg_queue_free_bytes(const struct tg_queue *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    return q->cap - (size_t)(head - tail);
}

bool tg_queue_peek(struct tg_queue *q, struct tg_qmsg *out)
{
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail == head)
        return false;
    size_t pos = (size_t)(tail & q->mask);
    size_t to_end = q->cap - pos;
    struct entry_hdr h;
    if (to_end < sizeof h) {
        tail += to_end; /* too short for a header: the producer wrapped here */
        pos = 0;
    } else {
        memcpy(&h, q->ring + pos, sizeof h);
        if (h.size == WRAP_MARK) {
            tail += to_end;
            pos = 0;
        }
    }
    memcpy(&h, q->ring + pos, sizeof h);
    const uint8_t *p = q->ring + pos + sizeof h;
    out->topic = (const char *)p;
    out->topic_len = h.topic_len;
    out->payload = p + h.topic_len + 1;
    out->payload_len = h.payload_len;
    out->rx_ms = h.rx_ms;
    q->peeked_end = tail + h.size;
    return true;
}

void tg_queue_pop(struct tg_queue *q)
{
    atomic_store_explicit(&q->tail, q->peeked_end, memory_order_release);
    atomic_fetch_add_explicit(&q->popped, 1, memory_order_relaxed);
}

bool tg_queue_prepare_wait(struct tg_queue *q)
{
    atomic_store(&q->waiting, 1);
    if (atomic_load(&q->head) != atomic_load_explicit(&q->tail, memory_order_relaxed)) {
        atomic_store(&q->waiting, 0);
        return false;
    }
    return true;
}

void tg_queue_ack_wakeup(struct tg_queue *q)
{
    uint64_t v;
    ssize_t n = read(q->efd, &v, sizeof v);
    (void)n;
    atomic_store(&q->waiting, 0);
}

int tg_queue_fd(const struct tg_queue *q) { return q->efd; }

size_t tg_queue_messages(const struct tg_queue *q)
{
    uint64_t pushed = atomic_load_explicit(&q->pushed, memory_order_relaxed);
    uint64_t popped = atomic_load_explicit(&q->popped, memory_order_relaxed);
    return pushed > popped ? (size_t)(pushed - popped) : 0;
}

size_t tg_queue_used_bytes(const struct tg_queue *q) { return q->cap - tg_queue_free_bytes(q); }

size_t tg_queue_capacity(const struct tg_queue *q) { return q->cap; }
