/*
 * ack_msg.c - the durable acknowledgement's CBOR, by hand (see ack_msg.h for why).
 */
#include "ack_msg.h"

#include <string.h>

enum { MT_UINT = 0, MT_TEXT = 3, MT_ARRAY = 4, MT_MAP = 5 };

struct writer {
    uint8_t *buf;
    size_t cap, len;
    bool overflow;
};

static void put_byte(struct writer *w, uint8_t b)
{
    if (w->len < w->cap)
        w->buf[w->len++] = b;
    else
        w->overflow = true;
}

/* A head: major type and argument, in the shortest form (RFC 8949 4.2.1). */
static void put_head(struct writer *w, unsigned major, uint64_t v)
{
    uint8_t mt = (uint8_t)(major << 5);
    int bytes;
    if (v < 24) {
        put_byte(w, mt | (uint8_t)v);
        return;
    }
    if (v <= 0xff) {
        put_byte(w, mt | 24);
        bytes = 1;
    } else if (v <= 0xffff) {
        put_byte(w, mt | 25);
        bytes = 2;
    } else if (v <= 0xffffffffu) {
        put_byte(w, mt | 26);
        bytes = 4;
    } else {
        put_byte(w, mt | 27);
        bytes = 8;
    }
    for (int i = bytes - 1; i >= 0; i--)
        put_byte(w, (uint8_t)(v >> (8 * i)));
}

static void put_key(struct writer *w, char key)
{
    put_head(w, MT_TEXT, 1);
    put_byte(w, (uint8_t)key);
}

size_t tg_ack_msg_encode(const struct tg_ack_msg *msg, uint8_t *buf, size_t cap)
{
    if (msg->n_ranges > TG_ACK_MAX_RANGES)
        return 0;
    for (unsigned i = 0; i < msg->n_ranges; i++)
        if (msg->ranges[i].lo > msg->ranges[i].hi)
            return 0;
    struct writer w = {.buf = buf, .cap = cap};
    put_head(&w, MT_MAP, 1 + (msg->has_upto ? 1 : 0) + (msg->n_ranges ? 1 : 0));
    put_key(&w, 'b');
    put_head(&w, MT_UINT, msg->boot);
    if (msg->has_upto) {
        put_key(&w, 's');
        put_head(&w, MT_UINT, msg->upto);
    }
    if (msg->n_ranges) {
        put_key(&w, 'x');
        put_head(&w, MT_ARRAY, msg->n_ranges);
        for (unsigned i = 0; i < msg->n_ranges; i++) {
            put_head(&w, MT_ARRAY, 2);
            put_head(&w, MT_UINT, msg->ranges[i].lo);
            put_head(&w, MT_UINT, msg->ranges[i].hi);
        }
    }
    return w.overflow ? 0 : w.len;
}

struct reader {
    const uint8_t *p, *end;
};

/* Reads a head; only definite lengths and arguments up to 8 bytes. */
static int get_head(struct reader *r, unsigned *major, uint64_t *v)
{
    if (r->p >= r->end)
        return -1;
    uint8_t ib = *r->p++;
    *major = ib >> 5;
    uint8_t ai = ib & 0x1f;
    if (ai < 24) {
        *v = ai;
        return 0;
    }
    if (ai > 27)
        return -1; /* indefinite lengths, reserved values */
    size_t bytes = (size_t)1 << (ai - 24);
    if ((size_t)(r->end - r->p) < bytes)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < bytes; i++)
        x = x << 8 | *r->p++;
    *v = x;
    return 0;
}

static int get_uint(struct reader *r, uint64_t *v)
{
    unsigned major;
    return get_head(r, &major, v) == 0 && major == MT_UINT ? 0 : -1;
}

int tg_ack_msg_decode(const uint8_t *buf, size_t len, struct tg_ack_msg *out)
{
    struct reader r = {.p = buf, .end = buf + len};
    unsigned major;
    uint64_t n;
    bool has_boot = false;
    memset(out, 0, sizeof *out);
    if (get_head(&r, &major, &n) != 0 || major != MT_MAP)
        return -1;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t klen;
        if (get_head(&r, &major, &klen) != 0 || major != MT_TEXT ||
            (uint64_t)(r.end - r.p) < klen)
            return -1;
        const uint8_t *key = r.p;
        r.p += klen;
        char one = klen == 1 ? (char)key[0] : '\0';
        if (one == 'b') {
            if (get_uint(&r, &out->boot) != 0)
                return -1;
            has_boot = true;
        } else if (one == 's') {
            if (get_uint(&r, &out->upto) != 0)
                return -1;
            out->has_upto = true;
        } else if (one == 'x') {
            uint64_t nr;
            if (get_head(&r, &major, &nr) != 0 || major != MT_ARRAY || nr > TG_ACK_MAX_RANGES)
                return -1;
            for (uint64_t i = 0; i < nr; i++) {
                uint64_t two;
                struct tg_ack_range *rg = &out->ranges[i];
                if (get_head(&r, &major, &two) != 0 || major != MT_ARRAY || two != 2 ||
                    get_uint(&r, &rg->lo) != 0 || get_uint(&r, &rg->hi) != 0 || rg->lo > rg->hi)
                    return -1;
            }
            out->n_ranges = (unsigned)nr;
        } else {
            /* unknown key: a later version's field, skipped when it is simple */
            uint64_t v;
            if (get_head(&r, &major, &v) != 0)
                return -1;
            if (major == MT_TEXT) {
                if ((uint64_t)(r.end - r.p) < v)
                    return -1;
                r.p += v;
            } else if (major != MT_UINT) {
                return -1;
            }
        }
    }
    return has_boot && r.p == r.end ? 0 : -1;
}

bool tg_ack_msg_covers(const struct tg_ack_msg *msg, uint64_t boot, uint64_t seq)
{
    if (boot != msg->boot)
        return false;
    if (msg->has_upto && seq <= msg->upto)
        return true;
    for (unsigned i = 0; i < msg->n_ranges; i++)
        if (seq >= msg->ranges[i].lo && seq <= msg->ranges[i].hi)
            return true;
    return false;
}
