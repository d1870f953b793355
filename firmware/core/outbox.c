/*
 * outbox.c - readings awaiting confirmation, in fixed payload buffers.
 *
 * Layout inside the storage: the header, then per buffer its metadata, then the order ring
 * (buffer indices, oldest first) and the free stack (indices of unused buffers), then the
 * payload bytes. There are slots + 1 buffers: the free stack is never empty, its top being
 * the scratch buffer. Releasing from the middle of the ring (a PUBACK that overtook an older
 * one) shifts the later indices down by one: two bytes per reading, never the payloads.
 */
#include "outbox.h"

#include <stddef.h>
#include <string.h>

struct slot {
    uint64_t seq;
    uint32_t token; /* valid while the reading is sent on the current connection */
    uint32_t len;
};

struct tg_outbox {
    unsigned slots;     /* capacity in readings */
    size_t payload_max; /* bytes per payload buffer */
    unsigned head;      /* ring position of the oldest reading */
    unsigned count;     /* readings held */
    unsigned sent;      /* the oldest `sent` readings were sent on this connection */
    unsigned n_free;    /* entries on the free stack (count + n_free == slots + 1) */
    struct slot *meta;  /* slots + 1 */
    uint16_t *order;    /* slots: ring of buffer indices */
    uint16_t *free;     /* slots + 1: stack of unused buffer indices */
    uint8_t *payloads;  /* (slots + 1) * payload_max */
};

#define ALIGN (_Alignof(max_align_t))
#define ALIGN_UP(n) (((n) + ALIGN - 1) / ALIGN * ALIGN)

/* The regions of the storage, each aligned. OUTBOX_BYTES is a constant expression for
 * constant arguments, which is how the Cortex-M footprint report (firmware/cortex-m) learns
 * the storage size for the target's own type sizes without running target code. */
#define REGION_HEADER ALIGN_UP(sizeof(struct tg_outbox))
#define REGION_META(slots) ALIGN_UP(((size_t)(slots) + 1) * sizeof(struct slot))
#define REGION_ORDER(slots) ALIGN_UP((size_t)(slots) * sizeof(uint16_t))
#define REGION_FREE(slots) ALIGN_UP(((size_t)(slots) + 1) * sizeof(uint16_t))
#define REGION_PAYLOADS(slots, payload_max) ALIGN_UP(((size_t)(slots) + 1) * (size_t)(payload_max))
#define OUTBOX_BYTES(slots, payload_max)                                                      \
    (REGION_HEADER + REGION_META(slots) + REGION_ORDER(slots) + REGION_FREE(slots) +         \
     REGION_PAYLOADS(slots, payload_max))

/* Offsets of the regions; false when the total would overflow size_t. */
struct layout {
    size_t meta, order, free, payloads, total;
};

static bool plan(unsigned slots, size_t payload_max, struct layout *lay)
{
    /* slots is at most TG_OUTBOX_MAX_SLOTS, so only the payload region can be large */
    if (payload_max > (SIZE_MAX / 2) / ((size_t)slots + 1))
        return false;
    lay->meta = REGION_HEADER;
    lay->order = lay->meta + REGION_META(slots);
    lay->free = lay->order + REGION_ORDER(slots);
    lay->payloads = lay->free + REGION_FREE(slots);
    lay->total = lay->payloads + REGION_PAYLOADS(slots, payload_max);
    return true;
}

size_t tg_outbox_storage_size(unsigned slots, size_t payload_max)
{
    struct layout lay;
    if (slots == 0 || slots > TG_OUTBOX_MAX_SLOTS || payload_max == 0 || payload_max > UINT32_MAX ||
        !plan(slots, payload_max, &lay))
        return 0;
    return lay.total;
}

struct tg_outbox *tg_outbox_init(void *storage, unsigned slots, size_t payload_max)
{
    struct layout lay;
    if (tg_outbox_storage_size(slots, payload_max) == 0 || !plan(slots, payload_max, &lay))
        return NULL;
    uint8_t *base = storage;
    struct tg_outbox *ob = storage;
    memset(ob, 0, sizeof *ob);
    ob->slots = slots;
    ob->payload_max = payload_max;
    ob->meta = (struct slot *)(base + lay.meta);
    ob->order = (uint16_t *)(base + lay.order);
    ob->free = (uint16_t *)(base + lay.free);
    ob->payloads = base + lay.payloads;
    memset(ob->meta, 0, ((size_t)slots + 1) * sizeof(struct slot));
    for (unsigned i = 0; i <= slots; i++)
        ob->free[i] = (uint16_t)(slots - i); /* buffer 0 on top: fills in address order */
    ob->n_free = slots + 1;
    return ob;
}

static uint8_t *payload_of(const struct tg_outbox *ob, unsigned buffer)
{
    return ob->payloads + (size_t)buffer * ob->payload_max;
}

/* Buffer index of the reading at position pos (0 = oldest). */
static unsigned buffer_at(const struct tg_outbox *ob, unsigned pos)
{
    return ob->order[(ob->head + pos) % ob->slots];
}

uint8_t *tg_outbox_scratch(struct tg_outbox *ob)
{
    return payload_of(ob, ob->free[ob->n_free - 1]);
}

size_t tg_outbox_payload_max(const struct tg_outbox *ob)
{
    return ob->payload_max;
}

/* Takes the oldest reading out of the ring and returns its buffer to the free stack. */
static uint64_t remove_oldest(struct tg_outbox *ob)
{
    unsigned buffer = buffer_at(ob, 0);
    ob->head = (ob->head + 1) % ob->slots;
    ob->count--;
    if (ob->sent > 0)
        ob->sent--;
    ob->free[ob->n_free++] = (uint16_t)buffer;
    return ob->meta[buffer].seq;
}

bool tg_outbox_push(struct tg_outbox *ob, uint64_t seq, size_t len, uint64_t *dropped_seq)
{
    /* The scratch buffer leaves the free stack before a drop pushes the victim's onto it. */
    unsigned buffer = ob->free[--ob->n_free];
    bool dropped = false;
    if (ob->count == ob->slots) {
        *dropped_seq = remove_oldest(ob);
        dropped = true;
    }
    ob->meta[buffer] = (struct slot){.seq = seq, .len = (uint32_t)len};
    ob->order[(ob->head + ob->count) % ob->slots] = (uint16_t)buffer;
    ob->count++;
    return dropped;
}

unsigned tg_outbox_count(const struct tg_outbox *ob)
{
    return ob->count;
}

unsigned tg_outbox_sent(const struct tg_outbox *ob)
{
    return ob->sent;
}

bool tg_outbox_next_unsent(const struct tg_outbox *ob, struct tg_outbox_entry *out)
{
    if (ob->sent == ob->count)
        return false;
    unsigned buffer = buffer_at(ob, ob->sent);
    out->payload = payload_of(ob, buffer);
    out->len = ob->meta[buffer].len;
    out->seq = ob->meta[buffer].seq;
    return true;
}

void tg_outbox_mark_sent(struct tg_outbox *ob, uint32_t token)
{
    ob->meta[buffer_at(ob, ob->sent)].token = token;
    ob->sent++;
}

void tg_outbox_unsend_all(struct tg_outbox *ob)
{
    ob->sent = 0;
}

bool tg_outbox_find_token(const struct tg_outbox *ob, uint32_t token, unsigned *pos)
{
    /* Confirmations mostly arrive in send order, so the match is nearly always at 0. */
    for (unsigned i = 0; i < ob->sent; i++) {
        if (ob->meta[buffer_at(ob, i)].token == token) {
            *pos = i;
            return true;
        }
    }
    return false;
}

uint64_t tg_outbox_seq_at(const struct tg_outbox *ob, unsigned pos)
{
    return ob->meta[buffer_at(ob, pos)].seq;
}

uint64_t tg_outbox_release(struct tg_outbox *ob, unsigned pos)
{
    if (pos == 0)
        return remove_oldest(ob);
    unsigned buffer = buffer_at(ob, pos);
    for (unsigned i = pos; i + 1 < ob->count; i++)
        ob->order[(ob->head + i) % ob->slots] = ob->order[(ob->head + i + 1) % ob->slots];
    ob->count--;
    if (pos < ob->sent)
        ob->sent--;
    ob->free[ob->n_free++] = (uint16_t)buffer;
    return ob->meta[buffer].seq;
}
