/*
 * timerq.c - indexed binary min-heap (see timerq.h).
 */
#include "timerq.h"

#include <stdlib.h>

#define NOT_QUEUED UINT32_MAX

struct entry {
    uint64_t due_ms;
    uint32_t id;
};

struct tg_timerq {
    uint32_t capacity;
    uint32_t size;
    struct entry *heap;
    uint32_t *pos; /* pos[id]: index in heap, or NOT_QUEUED */
};

struct tg_timerq *tg_timerq_new(uint32_t capacity)
{
    struct tg_timerq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->capacity = capacity;
    q->heap = calloc(capacity ? capacity : 1, sizeof *q->heap);
    q->pos = malloc((capacity ? capacity : 1) * sizeof *q->pos);
    if (!q->heap || !q->pos) {
        tg_timerq_destroy(q);
        return NULL;
    }
    for (uint32_t i = 0; i < capacity; i++)
        q->pos[i] = NOT_QUEUED;
    return q;
}

void tg_timerq_destroy(struct tg_timerq *q)
{
    if (!q)
        return;
    free(q->heap);
    free(q->pos);
    free(q);
}

static void place(struct tg_timerq *q, uint32_t i, struct entry e)
{
    q->heap[i] = e;
    q->pos[e.id] = i;
}

static void sift_up(struct tg_timerq *q, uint32_t i)
{
    struct entry e = q->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (q->heap[parent].due_ms <= e.due_ms)
            break;
        place(q, i, q->heap[parent]);
        i = parent;
    }
    place(q, i, e);
}

static void sift_down(struct tg_timerq *q, uint32_t i)
{
    struct entry e = q->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= q->size)
            break;
        if (child + 1 < q->size && q->heap[child + 1].due_ms < q->heap[child].due_ms)
            child++;
        if (e.due_ms <= q->heap[child].due_ms)
            break;
        place(q, i, q->heap[child]);
        i = child;
    }
    place(q, i, e);
}

void tg_timerq_set(struct tg_timerq *q, uint32_t id, uint64_t due_ms)
{
    if (id >= q->capacity)
        return;
    uint32_t i = q->pos[id];
    if (i == NOT_QUEUED) {
        i = q->size++;
        place(q, i, (struct entry){.due_ms = due_ms, .id = id});
        sift_up(q, i);
        return;
    }
    uint64_t old = q->heap[i].due_ms;
    q->heap[i].due_ms = due_ms;
    if (due_ms < old)
        sift_up(q, i);
    else if (due_ms > old)
        sift_down(q, i);
}

void tg_timerq_remove(struct tg_timerq *q, uint32_t id)
{
    if (id >= q->capacity || q->pos[id] == NOT_QUEUED)
        return;
    uint32_t i = q->pos[id];
    q->pos[id] = NOT_QUEUED;
    q->size--;
    if (i == q->size)
        return;
    struct entry last = q->heap[q->size];
    place(q, i, last);
    sift_down(q, i);
    sift_up(q, q->pos[last.id]);
}

bool tg_timerq_peek(const struct tg_timerq *q, uint32_t *id, uint64_t *due_ms)
{
    if (q->size == 0)
        return false;
    *id = q->heap[0].id;
    *due_ms = q->heap[0].due_ms;
    return true;
}

bool tg_timerq_pop_due(struct tg_timerq *q, uint64_t now_ms, uint32_t *id)
{
    if (q->size == 0 || q->heap[0].due_ms > now_ms)
        return false;
    *id = q->heap[0].id;
    tg_timerq_remove(q, *id);
    return true;
}

bool tg_timerq_get(const struct tg_timerq *q, uint32_t id, uint64_t *due_ms)
{
    if (id >= q->capacity || q->pos[id] == NOT_QUEUED)
        return false;
    *due_ms = q->heap[q->pos[id]].due_ms;
    return true;
}

size_t tg_timerq_size(const struct tg_timerq *q)
{
    return q->size;
}
