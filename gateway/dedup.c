/*
 * dedup.c - per-device duplicate windows in a slab with an index-linked LRU list and a
 * chained hash table. The rules and the snapshot format are in dedup.h.
 *
 * Links are 32-bit slab indices rather than pointers: they survive the slab's realloc when
 * it grows, and keep an entry small.
 *
 * An entry is 80 bytes (it was 120, with the id always inline). The slab is 16-byte aligned
 * (malloc), so an entry starts at most 48 bytes into a 64-byte cache line and always spans
 * exactly two lines (48 + 80 = 128); a 120-byte entry spanned three for 3/4 of the slab.
 * Ids of up to ID_INLINE bytes (the usual ones: "sim-00042", a MAC or EUI-64 in text, with a
 * short prefix) live in the entry; a longer one (up to TG_DEVICE_ID_MAX) is copied to its own
 * allocation, owned by the entry and freed when the entry is released, and the entry keeps
 * its hash so that a lookup only reads the copy for an entry whose length and hash both
 * match, and a rehash or removal never reads it. So a short id costs no extra memory access,
 * and a long one one extra at most.
 */
#include "dedup.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define SLAB_INITIAL 256u
#define SORT_MAX 256u
/* Longest id stored in the entry itself; see above. */
#define ID_INLINE 24u

/* Entry kinds; the values are also the snapshot's kind byte. */
enum kind {
    KIND_FREE = 0,
    KIND_NATIVE = 1,
    KIND_NATIVE_PREV = 2, /* native, with a previous boot remembered */
    KIND_SENML = 3,
    KIND_NATIVE_LEFT = 4, /* native, with the higher boot it went back from remembered */
};

static bool is_native(uint8_t kind)
{
    return kind == KIND_NATIVE || kind == KIND_NATIVE_PREV || kind == KIND_NATIVE_LEFT;
}

struct native_state {
    uint64_t boot;
    uint64_t seq;       /* highest seq seen in boot */
    uint64_t window;    /* bit i: seq - 1 - i has been seen */
    uint64_t prev_seq;  /* KIND_NATIVE_PREV: the previous boot's highest seq seen;
                         * KIND_NATIVE_LEFT: the left boot's */
    uint32_t prev_back; /* KIND_NATIVE_PREV: boot - the previous boot (1..UINT32_MAX);
                         * KIND_NATIVE_LEFT: the left boot - boot (1..UINT32_MAX) */
    uint32_t newest_s;  /* newest device time taken in boot, s since the epoch; 0: unknown */
};

struct senml_state {
    int64_t max_ts;
    uint32_t recent[TG_DEDUP_SENML_RECENT]; /* max_ts - ts of remembered times, ascending */
};

/* An id longer than ID_INLINE. */
struct long_id {
    char *bytes;   /* id_len bytes (not NUL-terminated), malloc'd, owned by the entry */
    uint32_t hash; /* tg_hash_fnv1a of them */
};

/* What a lookup reads (hnext, id_len, the id) comes first, within the first 32 bytes. */
struct entry {
    uint32_t hnext; /* hash chain; free list when KIND_FREE */
    uint8_t id_len; /* 0 when the entry is free (it is 1..TG_DEVICE_ID_MAX when live) */
    uint8_t kind;
    uint8_t n_recent; /* SenML: entries of recent[] in use */
    uint8_t unused;
    union {
        char bytes[ID_INLINE]; /* id_len <= ID_INLINE; not NUL-terminated */
        struct long_id ext;    /* id_len > ID_INLINE */
    } id;
    uint32_t lru_prev; /* towards the most recently seen */
    uint32_t lru_next; /* towards the least recently seen */
    union {
        struct native_state nat;
        struct senml_state senml;
    } u;
};

_Static_assert(sizeof(struct long_id) <= ID_INLINE, "a long id's reference must fit inline");
_Static_assert(ID_INLINE < TG_DEVICE_ID_MAX && TG_DEVICE_ID_MAX <= UINT8_MAX, "id_len is a u8");
_Static_assert(sizeof(struct entry) == TG_DEDUP_ENTRY_BYTES, "dedup entry size changed");

struct tg_dedup {
    struct entry *slab;
    int64_t epoch_grace_ms;
    struct tg_dedup_stats stats;
    uint32_t cap;       /* entries allocated */
    uint32_t used;      /* entries [0, used) have been handed out at least once */
    uint32_t max;       /* max_devices */
    uint32_t count;     /* live entries */
    uint32_t free_head; /* entries freed by tg_dedup_forget() */
    uint32_t *buckets;
    uint32_t mask;      /* buckets - 1 (a power of two minus one) */
    uint32_t lru_head;  /* most recently seen */
    uint32_t lru_tail;  /* least recently seen: evicted first */
    bool dirty;
    int64_t as_of_ms;
    uint64_t last_epoch_from, last_epoch_to; /* the latest new epoch, for the log */
};

static bool is_long(const struct entry *e)
{
    return e->id_len > ID_INLINE;
}

static const char *entry_id(const struct entry *e)
{
    return is_long(e) ? e->id.ext.bytes : e->id.bytes;
}

static uint32_t entry_hash(const struct entry *e)
{
    return is_long(e) ? e->id.ext.hash : tg_hash_fnv1a(e->id.bytes, e->id_len);
}

/* Frees the long ids of all live entries and marks every entry free (the slab stays). */
static void free_long_ids(struct tg_dedup *dd)
{
    for (uint32_t i = 0; i < dd->used; i++) {
        struct entry *e = &dd->slab[i];
        if (is_long(e))
            free(e->id.ext.bytes);
        e->id_len = 0;
    }
}

static void reset(struct tg_dedup *dd)
{
    free_long_ids(dd);
    dd->used = 0;
    dd->count = 0;
    dd->free_head = NIL;
    dd->lru_head = dd->lru_tail = NIL;
    for (uint32_t b = 0; b <= dd->mask; b++)
        dd->buckets[b] = NIL;
}

tg_err tg_dedup_new(size_t max_devices, struct tg_dedup **out)
{
    *out = NULL;
    if (max_devices == 0 || max_devices > TG_DEDUP_MAX_DEVICES)
        return TG_ERR_USAGE;
    struct tg_dedup *dd = calloc(1, sizeof *dd);
    if (!dd)
        return TG_ERR_NOMEM;
    dd->max = (uint32_t)max_devices;
    dd->cap = dd->max < SLAB_INITIAL ? dd->max : SLAB_INITIAL;
    dd->mask = tg_pow2_at_least(dd->cap) - 1;
    dd->slab = malloc((size_t)dd->cap * sizeof *dd->slab);
    dd->buckets = malloc(((size_t)dd->mask + 1) * sizeof *dd->buckets);
    if (!dd->slab || !dd->buckets) {
        tg_dedup_destroy(dd);
        return TG_ERR_NOMEM;
    }
    reset(dd);
    dd->as_of_ms = INT64_MIN;
    dd->epoch_grace_ms = TG_DEDUP_DEFAULT_EPOCH_GRACE_MS;
    *out = dd;
    return TG_OK;
}

void tg_dedup_destroy(struct tg_dedup *dd)
{
    if (!dd)
        return;
    free_long_ids(dd); /* used is 0 when the slab was never allocated */
    free(dd->slab);
    free(dd->buckets);
    free(dd);
}

size_t tg_dedup_devices(const struct tg_dedup *dd)
{
    return dd->count;
}

bool tg_dedup_dirty(const struct tg_dedup *dd)
{
    return dd->dirty;
}

int64_t tg_dedup_as_of_ms(const struct tg_dedup *dd)
{
    return dd->as_of_ms;
}

/* --- hash table and LRU list ------------------------------------------------------------ */

static uint32_t find(const struct tg_dedup *dd, const char *id, size_t len, uint32_t h)
{
    for (uint32_t i = dd->buckets[h & dd->mask]; i != NIL; i = dd->slab[i].hnext) {
        const struct entry *e = &dd->slab[i];
        if (e->id_len != len)
            continue;
        if (len <= ID_INLINE ? memcmp(e->id.bytes, id, len) == 0
                             : e->id.ext.hash == h && memcmp(e->id.ext.bytes, id, len) == 0)
            return i;
    }
    return NIL;
}

static void hash_insert(struct tg_dedup *dd, uint32_t i, uint32_t h)
{
    uint32_t *head = &dd->buckets[h & dd->mask];
    dd->slab[i].hnext = *head;
    *head = i;
}

static void hash_remove(struct tg_dedup *dd, uint32_t i)
{
    struct entry *e = &dd->slab[i];
    uint32_t *link = &dd->buckets[entry_hash(e) & dd->mask];
    while (*link != i)
        link = &dd->slab[*link].hnext;
    *link = e->hnext;
}

static void lru_unlink(struct tg_dedup *dd, uint32_t i)
{
    struct entry *e = &dd->slab[i];
    if (e->lru_prev != NIL)
        dd->slab[e->lru_prev].lru_next = e->lru_next;
    else
        dd->lru_head = e->lru_next;
    if (e->lru_next != NIL)
        dd->slab[e->lru_next].lru_prev = e->lru_prev;
    else
        dd->lru_tail = e->lru_prev;
}

static void lru_push_front(struct tg_dedup *dd, uint32_t i)
{
    struct entry *e = &dd->slab[i];
    e->lru_prev = NIL;
    e->lru_next = dd->lru_head;
    if (dd->lru_head != NIL)
        dd->slab[dd->lru_head].lru_prev = i;
    else
        dd->lru_tail = i;
    dd->lru_head = i;
}

static void touch(struct tg_dedup *dd, uint32_t i)
{
    if (dd->lru_head == i)
        return;
    lru_unlink(dd, i);
    lru_push_front(dd, i);
}

/* Removes live entry i from the table and the list, frees its long id, and puts it on the
 * free list. */
static void release(struct tg_dedup *dd, uint32_t i)
{
    hash_remove(dd, i);
    lru_unlink(dd, i);
    if (is_long(&dd->slab[i]))
        free(dd->slab[i].id.ext.bytes);
    dd->slab[i].id_len = 0;
    dd->slab[i].kind = KIND_FREE;
    dd->slab[i].hnext = dd->free_head;
    dd->free_head = i;
    dd->count--;
    dd->dirty = true;
}

/* Doubles the slab (up to max) and, when it outgrows them, the buckets. False when out of
 * memory; nothing changed then. */
static bool grow(struct tg_dedup *dd)
{
    uint32_t cap = dd->cap > dd->max / 2 ? dd->max : dd->cap * 2;
    struct entry *slab = realloc(dd->slab, (size_t)cap * sizeof *slab);
    if (!slab)
        return false;
    dd->slab = slab;
    uint32_t nbuckets = tg_pow2_at_least(cap);
    if (nbuckets > dd->mask + 1) {
        uint32_t *buckets = malloc((size_t)nbuckets * sizeof *buckets);
        if (!buckets)
            return false; /* the bigger slab is kept; only its new tail is unused */
        free(dd->buckets);
        dd->buckets = buckets;
        dd->mask = nbuckets - 1;
        for (uint32_t b = 0; b < nbuckets; b++)
            buckets[b] = NIL;
        for (uint32_t i = 0; i < dd->used; i++)
            if (dd->slab[i].id_len != 0)
                hash_insert(dd, i, entry_hash(&dd->slab[i]));
    }
    dd->cap = cap;
    return true;
}

/* A slab entry for a new device: a freed one, a never-used one (growing the slab if it is
 * below max), or the least recently seen device's, evicted. Not linked anywhere yet. */
static uint32_t take_entry(struct tg_dedup *dd)
{
    uint32_t i;
    if (dd->free_head != NIL) {
        i = dd->free_head;
        dd->free_head = dd->slab[i].hnext;
    } else if (dd->used < dd->cap || (dd->cap < dd->max && grow(dd))) {
        i = dd->used++;
    } else {
        i = dd->lru_tail;
        release(dd, i);
        dd->free_head = dd->slab[i].hnext;
    }
    dd->count++;
    return i;
}

/* Tracks a new device (id of 1..TG_DEVICE_ID_MAX bytes, hash h), with no state yet (kind
 * KIND_FREE). NIL when the copy of a long id cannot be allocated: nothing changed then (it is
 * allocated before an entry is taken, which may evict). */
static uint32_t add_device(struct tg_dedup *dd, const char *id, size_t len, uint32_t h)
{
    char *copy = NULL;
    if (len > ID_INLINE) {
        copy = malloc(len);
        if (!copy)
            return NIL;
        memcpy(copy, id, len);
    }
    uint32_t i = take_entry(dd);
    struct entry *e = &dd->slab[i];
    memset(e, 0, sizeof *e);
    if (copy) {
        e->id.ext.bytes = copy;
        e->id.ext.hash = h;
    } else {
        memcpy(e->id.bytes, id, len);
    }
    e->id_len = (uint8_t)len;
    hash_insert(dd, i, h);
    lru_push_front(dd, i);
    return i;
}

/* --- the rules ---------------------------------------------------------------------------- */

/* A device time in whole seconds for newest_s: 0 (unknown) outside 1 s .. 2^32-1 s. */
static uint32_t time_s(int64_t ts_ms)
{
    int64_t s = ts_ms / 1000;
    return s >= 1 && s <= (int64_t)UINT32_MAX ? (uint32_t)s : 0;
}

static void native_start(struct entry *e, uint64_t boot, uint64_t seq, int64_t ts_ms)
{
    e->kind = KIND_NATIVE;
    memset(&e->u, 0, sizeof e->u);
    e->u.nat.boot = boot;
    e->u.nat.seq = seq;
    e->u.nat.newest_s = time_s(ts_ms);
}

/* How a reading of another boot than the current one compares in device time with the
 * newest reading taken in the current boot: +1 more than the grace newer, -1 more than the
 * grace older, 0 within the grace or unknown. */
static int boot_time_cmp(const struct tg_dedup *dd, const struct native_state *ns, int64_t ts_ms)
{
    uint32_t t = time_s(ts_ms);
    if (ns->newest_s == 0 || t == 0)
        return 0;
    int64_t ahead_ms = ((int64_t)t - (int64_t)ns->newest_s) * 1000;
    if (ahead_ms > dd->epoch_grace_ms)
        return 1;
    if (ahead_ms < -dd->epoch_grace_ms)
        return -1;
    return 0;
}

static enum tg_dedup_verdict native_check(struct tg_dedup *dd, struct entry *e,
                                          const struct tg_reading *r)
{
    struct native_state *ns = &e->u.nat;
    uint64_t boot = r->boot, seq = r->seq;
    if (!is_native(e->kind)) {
        native_start(e, boot, seq, r->ts_ms);
        return TG_DEDUP_NEW;
    }
    if (boot == ns->boot) {
        if (seq > ns->seq) {
            uint64_t d = seq - ns->seq;
            if (d > TG_DEDUP_WINDOW)
                ns->window = 0;
            else
                ns->window = (d == TG_DEDUP_WINDOW ? 0 : ns->window << d) | UINT64_C(1) << (d - 1);
            ns->seq = seq;
        } else {
            uint64_t d = ns->seq - seq;
            if (d == 0)
                return TG_DEDUP_DUPLICATE;
            if (d > TG_DEDUP_WINDOW)
                return TG_DEDUP_OUT_OF_WINDOW;
            uint64_t bit = UINT64_C(1) << (d - 1);
            if (ns->window & bit)
                return TG_DEDUP_DUPLICATE;
            ns->window |= bit;
        }
        uint32_t t = time_s(r->ts_ms);
        if (t > ns->newest_s)
            ns->newest_s = t;
        return TG_DEDUP_NEW;
    }
    if (boot > ns->boot) {
        /* The device restarted. Unless it went back from a higher boot (a new epoch) and
         * this is one of the boots it left, with a time older than the current boot's
         * newest: a late copy from the abandoned epoch, not a restart. (Only then does time
         * decide against a higher boot: a node whose clock steps back across an ordinary
         * reboot must not lose its readings.) */
        if (e->kind == KIND_NATIVE_LEFT && boot - ns->boot <= ns->prev_back &&
            boot_time_cmp(dd, ns, r->ts_ms) < 0)
            return TG_DEDUP_OUT_OF_WINDOW;
        /* What was current becomes the previous boot, whose tail the outbox may still be
         * draining (remembered while the boots are at most 2^32-1 apart). */
        uint64_t back = boot - ns->boot, prev_seq = ns->seq;
        native_start(e, boot, seq, r->ts_ms);
        if (back <= UINT32_MAX) {
            e->kind = KIND_NATIVE_PREV;
            ns->prev_back = (uint32_t)back;
            ns->prev_seq = prev_seq;
        }
        return TG_DEDUP_NEW;
    }
    /* A lower boot: the previous boot's tail (the outbox draining after a reboot), a stale
     * copy from long ago, or a node whose boot counter went back (re-flashed, its state
     * lost). Time tells them apart: the tail and stale copies were taken before the current
     * boot's readings; the re-flashed node sends readings newer than the current boot's by
     * more than the grace, and from then on its new boot is the current one. That holds
     * also when it came back at exactly the previous boot's number. */
    if (boot_time_cmp(dd, ns, r->ts_ms) > 0) {
        dd->stats.new_epochs++;
        dd->last_epoch_from = ns->boot;
        dd->last_epoch_to = boot;
        uint64_t left = ns->boot, left_seq = ns->seq;
        native_start(e, boot, seq, r->ts_ms);
        if (left - boot <= UINT32_MAX) {
            e->kind = KIND_NATIVE_LEFT;
            ns->prev_back = (uint32_t)(left - boot);
            ns->prev_seq = left_seq;
        }
        return TG_DEDUP_NEW;
    }
    if (e->kind == KIND_NATIVE_PREV && boot == ns->boot - ns->prev_back) {
        if (seq > ns->prev_seq) {
            ns->prev_seq = seq;
            return TG_DEDUP_NEW;
        }
        return seq == ns->prev_seq ? TG_DEDUP_DUPLICATE : TG_DEDUP_OUT_OF_WINDOW;
    }
    return TG_DEDUP_OUT_OF_WINDOW;
}

static bool senml_check(struct entry *e, int64_t ts)
{
    struct senml_state *ss = &e->u.senml;
    if (e->kind != KIND_SENML) {
        e->kind = KIND_SENML;
        memset(&e->u, 0, sizeof e->u);
        e->n_recent = 0;
        ss->max_ts = ts;
        return true;
    }
    if (ts > ss->max_ts) {
        /* The old maximum joins the remembered times; times that would now lie more than
         * 2^32 ms below fall out (they are the oldest, at the end). */
        uint64_t d = (uint64_t)ts - (uint64_t)ss->max_ts;
        uint32_t recent[TG_DEDUP_SENML_RECENT];
        unsigned n = 0;
        if (d <= UINT32_MAX) {
            recent[n++] = (uint32_t)d;
            for (unsigned k = 0; k < e->n_recent && n < TG_DEDUP_SENML_RECENT; k++) {
                if (ss->recent[k] > UINT32_MAX - d)
                    break;
                recent[n++] = ss->recent[k] + (uint32_t)d;
            }
        }
        memcpy(ss->recent, recent, n * sizeof recent[0]);
        e->n_recent = (uint8_t)n;
        ss->max_ts = ts;
        return true;
    }
    uint64_t d = (uint64_t)ss->max_ts - (uint64_t)ts;
    if (d == 0 || d > UINT32_MAX)
        return false;
    unsigned n = e->n_recent, pos = 0;
    while (pos < n && ss->recent[pos] < d)
        pos++;
    if (pos < n && ss->recent[pos] == d)
        return false;
    if (pos == TG_DEDUP_SENML_RECENT)
        return false; /* older than everything remembered, and the set is full */
    if (n == TG_DEDUP_SENML_RECENT)
        n--; /* forget the oldest */
    memmove(&ss->recent[pos + 1], &ss->recent[pos], (n - pos) * sizeof ss->recent[0]);
    ss->recent[pos] = (uint32_t)d;
    e->n_recent = (uint8_t)(n + 1);
    return true;
}

void tg_dedup_set_epoch_grace(struct tg_dedup *dd, int64_t grace_ms)
{
    dd->epoch_grace_ms = grace_ms < 0 ? 0 : grace_ms;
}

void tg_dedup_stats(const struct tg_dedup *dd, struct tg_dedup_stats *out)
{
    *out = dd->stats;
}

bool tg_dedup_last_epoch(const struct tg_dedup *dd, uint64_t *from_boot, uint64_t *to_boot)
{
    if (dd->stats.new_epochs == 0)
        return false;
    *from_boot = dd->last_epoch_from;
    *to_boot = dd->last_epoch_to;
    return true;
}

bool tg_dedup_check(struct tg_dedup *dd, const struct tg_reading *r, int64_t now_ms)
{
    return tg_dedup_classify(dd, r, now_ms) == TG_DEDUP_NEW;
}

enum tg_dedup_verdict tg_dedup_classify(struct tg_dedup *dd, const struct tg_reading *r,
                                        int64_t now_ms)
{
    if (now_ms > dd->as_of_ms)
        dd->as_of_ms = now_ms;
    size_t len = strnlen(r->device, TG_DEVICE_ID_MAX + 1);
    if (len == 0 || len > TG_DEVICE_ID_MAX)
        return TG_DEDUP_NEW; /* outside the contract: let it through untracked, not lose it */
    uint32_t h = tg_hash_fnv1a(r->device, len);
    uint32_t i = find(dd, r->device, len, h);
    if (i == NIL) {
        i = add_device(dd, r->device, len, h);
        if (i == NIL)
            return TG_DEDUP_NEW; /* no memory for a long id: untracked, as above */
    } else {
        touch(dd, i);
    }
    struct entry *e = &dd->slab[i];
    enum tg_dedup_verdict v;
    if (r->has_seq)
        v = native_check(dd, e, r);
    else
        v = senml_check(e, r->ts_ms) ? TG_DEDUP_NEW : TG_DEDUP_DUPLICATE;
    switch (v) {
    case TG_DEDUP_NEW:
        dd->dirty = true;
        break;
    case TG_DEDUP_DUPLICATE:
        dd->stats.duplicates++;
        break;
    case TG_DEDUP_OUT_OF_WINDOW:
        dd->stats.out_of_window++;
        break;
    }
    return v;
}

size_t tg_dedup_check_all(struct tg_dedup *dd, const struct tg_reading *readings, size_t n,
                          int64_t now_ms, bool *fresh)
{
    size_t n_fresh = 0;
    if (n > SORT_MAX) {
        for (size_t k = 0; k < n; k++)
            n_fresh += (fresh[k] = tg_dedup_check(dd, &readings[k], now_ms));
        return n_fresh;
    }
    /* Insertion sort of indices: linear for the usual already-ordered pack, stable. */
    uint16_t order[SORT_MAX];
    for (size_t k = 0; k < n; k++) {
        size_t j = k;
        while (j > 0 && readings[order[j - 1]].ts_ms > readings[k].ts_ms) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = (uint16_t)k;
    }
    for (size_t k = 0; k < n; k++)
        n_fresh += (fresh[order[k]] = tg_dedup_check(dd, &readings[order[k]], now_ms));
    return n_fresh;
}

bool tg_dedup_forget(struct tg_dedup *dd, const char *device)
{
    size_t len = strnlen(device, TG_DEVICE_ID_MAX + 1);
    if (len == 0 || len > TG_DEVICE_ID_MAX)
        return false;
    uint32_t i = find(dd, device, len, tg_hash_fnv1a(device, len));
    if (i == NIL)
        return false;
    release(dd, i);
    return true;
}

/* --- snapshots ------------------------------------------------------------------------------ */

#define SNAP_MAGIC "TGDD"
#define SNAP_VERSION 2 /* 2 added newest_s; version 1 snapshots still load */
#define SNAP_WINDOW_INVERTED 0x10 /* kind flag: a native window is stored as ~window */
#define SNAP_HEADER_MAX (4 + 2 + 10 + 10)
/* Shared and suffix bytes, id, kind, then the larger of native (4 varints of at most 10
 * bytes and 2 of at most 5: 50) and SenML (zigzag varint, count, 8 varints of at most 5
 * bytes: 51). */
#define SNAP_DEVICE_MAX (2 + TG_DEVICE_ID_MAX + 1 + 51)

static uint32_t crc32_ieee(const uint8_t *p, size_t len)
{
    uint32_t table[256];
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[n] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* The snapshot's newest time of a native device: 0 when unknown, else 1 + the zigzag of how
 * many seconds it lies before the as-of time, which is small for an active device (one
 * byte) where the time itself would take five. */
static uint64_t newest_code(int64_t as_of_ms, uint32_t newest_s)
{
    if (newest_s == 0)
        return 0;
    int64_t base = as_of_ms == INT64_MIN ? 0 : as_of_ms / 1000;
    return zigzag(base - (int64_t)newest_s) + 1;
}

static bool newest_decode(int64_t as_of_ms, uint64_t code, uint32_t *newest_s)
{
    if (code == 0) {
        *newest_s = 0;
        return true;
    }
    int64_t base = as_of_ms == INT64_MIN ? 0 : as_of_ms / 1000;
    int64_t back = unzigzag(code - 1);
    if ((back > 0 && base < INT64_MIN + back) || (back < 0 && base > INT64_MAX + back))
        return false;
    int64_t t = base - back;
    if (t < 1 || t > (int64_t)UINT32_MAX)
        return false;
    *newest_s = (uint32_t)t;
    return true;
}

tg_err tg_dedup_save(struct tg_dedup *dd, uint8_t **blob, size_t *len)
{
    *blob = NULL;
    *len = 0;
    size_t cap = SNAP_HEADER_MAX + (size_t)dd->count * SNAP_DEVICE_MAX + 4;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return TG_ERR_NOMEM;
    uint8_t *p = buf;
    memcpy(p, SNAP_MAGIC, 4);
    p += 4;
    *p++ = SNAP_VERSION;
    *p++ = 0;
    p = put_varint(p, zigzag(dd->as_of_ms));
    p = put_varint(p, dd->count);
    const struct entry *prev = NULL;
    const char *prev_id = NULL;
    for (uint32_t i = dd->lru_tail; i != NIL; i = dd->slab[i].lru_prev) {
        const struct entry *e = &dd->slab[i];
        const char *id = entry_id(e);
        uint8_t shared = 0;
        if (prev)
            while (shared < prev->id_len && shared < e->id_len && prev_id[shared] == id[shared])
                shared++;
        *p++ = shared;
        *p++ = (uint8_t)(e->id_len - shared);
        memcpy(p, id + shared, e->id_len - shared);
        p += e->id_len - shared;
        if (e->kind == KIND_SENML) {
            *p++ = e->kind;
            p = put_varint(p, zigzag(e->u.senml.max_ts));
            *p++ = e->n_recent;
            uint32_t below = 0;
            for (unsigned k = 0; k < e->n_recent; k++) {
                p = put_varint(p, e->u.senml.recent[k] - below);
                below = e->u.senml.recent[k];
            }
        } else {
            /* A device with a long in-order history has a window of all ones; a new one
             * mostly zeros. Whichever of window and ~window is smaller is written. */
            uint64_t window = e->u.nat.window;
            bool inverted = ~window < window;
            *p++ = (uint8_t)(e->kind | (inverted ? SNAP_WINDOW_INVERTED : 0));
            p = put_varint(p, e->u.nat.boot);
            p = put_varint(p, e->u.nat.seq);
            p = put_varint(p, inverted ? ~window : window);
            p = put_varint(p, newest_code(dd->as_of_ms, e->u.nat.newest_s));
            if (e->kind == KIND_NATIVE_PREV || e->kind == KIND_NATIVE_LEFT) {
                p = put_varint(p, e->u.nat.prev_back);
                p = put_varint(p, e->u.nat.prev_seq);
            }
        }
        prev = e;
        prev_id = id;
    }
    uint32_t crc = crc32_ieee(buf, (size_t)(p - buf));
    for (int k = 0; k < 4; k++)
        *p++ = (uint8_t)(crc >> (8 * k));
    *len = (size_t)(p - buf);
    uint8_t *shrunk = realloc(buf, *len);
    *blob = shrunk ? shrunk : buf;
    dd->dirty = false;
    return TG_OK;
}

struct reader {
    const uint8_t *p, *end;
    bool bad;
};

static uint8_t get_u8(struct reader *rd)
{
    if (rd->p == rd->end) {
        rd->bad = true;
        return 0;
    }
    return *rd->p++;
}

static uint64_t get_varint(struct reader *rd)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b = get_u8(rd);
        if (rd->bad)
            return 0;
        if (shift == 63 && b > 1)
            break; /* more than 64 bits */
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            return v;
    }
    rd->bad = true;
    return 0;
}

/* Reads one device: its id into id[0..*id_len), which holds the previous device's id on entry
 * (the prefix coding's reference), and its state into e's kind, n_recent and u (the rest of e
 * is unused). False when the bytes are not a valid device. */
static bool load_device(struct reader *rd, unsigned version, int64_t as_of_ms,
                        char id[TG_DEVICE_ID_MAX], size_t *id_len, struct entry *e)
{
    memset(e, 0, sizeof *e);
    size_t shared = get_u8(rd), suffix = get_u8(rd);
    if (rd->bad || shared > *id_len || shared + suffix > TG_DEVICE_ID_MAX ||
        suffix > (size_t)(rd->end - rd->p))
        return false;
    memcpy(id + shared, rd->p, suffix);
    rd->p += suffix;
    *id_len = shared + suffix;
    if (!tg_device_id_valid(id, *id_len))
        return false;
    uint8_t kind = get_u8(rd);
    bool inverted = kind & SNAP_WINDOW_INVERTED;
    e->kind = kind & (uint8_t)~SNAP_WINDOW_INVERTED;
    if (kind == KIND_SENML) {
        e->u.senml.max_ts = unzigzag(get_varint(rd));
        e->n_recent = get_u8(rd);
        if (e->n_recent > TG_DEDUP_SENML_RECENT)
            return false;
        uint64_t below = 0;
        for (unsigned k = 0; k < e->n_recent; k++) {
            uint64_t step = get_varint(rd);
            if (step == 0 || step > UINT32_MAX - below)
                return false;
            below += step;
            e->u.senml.recent[k] = (uint32_t)below;
        }
        /* The oldest remembered time, max_ts - below, must be an int64. */
        if (e->n_recent && e->u.senml.max_ts < INT64_MIN + (int64_t)below)
            return false;
    } else if (is_native(e->kind) && (e->kind != KIND_NATIVE_LEFT || version >= 2)) {
        e->u.nat.boot = get_varint(rd);
        e->u.nat.seq = get_varint(rd);
        e->u.nat.window = get_varint(rd);
        if (inverted)
            e->u.nat.window = ~e->u.nat.window;
        if (version >= 2 && !newest_decode(as_of_ms, get_varint(rd), &e->u.nat.newest_s))
            return false;
        if (e->kind == KIND_NATIVE_LEFT) {
            uint64_t up = get_varint(rd);
            if (up == 0 || up > UINT32_MAX || up > UINT64_MAX - e->u.nat.boot)
                return false;
            e->u.nat.prev_back = (uint32_t)up;
            e->u.nat.prev_seq = get_varint(rd);
        } else if (e->kind == KIND_NATIVE_PREV) {
            uint64_t back = get_varint(rd);
            if (back == 0 || back > e->u.nat.boot)
                return false;
            if (back <= UINT32_MAX) {
                e->u.nat.prev_back = (uint32_t)back;
                e->u.nat.prev_seq = get_varint(rd);
            } else {
                (void)get_varint(rd); /* a version 1 previous boot too far back to keep */
                e->kind = KIND_NATIVE;
            }
        }
    } else {
        return false;
    }
    return !rd->bad;
}

/* Leaves dd empty and returns err. */
static tg_err load_fail_with(struct tg_dedup *dd, tg_err err)
{
    reset(dd);
    dd->dirty = false;
    dd->as_of_ms = INT64_MIN;
    return err;
}

static tg_err load_fail(struct tg_dedup *dd)
{
    return load_fail_with(dd, TG_ERR_INTERNAL);
}

tg_err tg_dedup_load(struct tg_dedup *dd, const uint8_t *blob, size_t len)
{
    reset(dd);
    if (len < 4 + 2 + 1 + 1 + 4 || memcmp(blob, SNAP_MAGIC, 4) != 0 || blob[4] < 1 ||
        blob[4] > SNAP_VERSION || blob[5] != 0)
        return load_fail(dd);
    unsigned version = blob[4];
    size_t body = len - 4;
    uint32_t crc = (uint32_t)blob[body] | (uint32_t)blob[body + 1] << 8 |
                   (uint32_t)blob[body + 2] << 16 | (uint32_t)blob[body + 3] << 24;
    if (crc != crc32_ieee(blob, body))
        return load_fail(dd);
    struct reader rd = {.p = blob + 6, .end = blob + body, .bad = false};
    int64_t as_of_ms = unzigzag(get_varint(&rd));
    uint64_t count = get_varint(&rd);
    /* Every device takes at least 4 bytes: a cheap bound before trusting count. */
    if (rd.bad || count > (uint64_t)(rd.end - rd.p) / 4)
        return load_fail(dd);
    struct entry e;
    char id[TG_DEVICE_ID_MAX];
    size_t id_len = 0;
    for (uint64_t n = 0; n < count; n++) {
        if (!load_device(&rd, version, as_of_ms, id, &id_len, &e))
            return load_fail(dd);
        uint32_t h = tg_hash_fnv1a(id, id_len);
        if (find(dd, id, id_len, h) != NIL)
            return load_fail(dd); /* the same device twice */
        uint32_t i = add_device(dd, id, id_len, h);
        if (i == NIL)
            return load_fail_with(dd, TG_ERR_NOMEM);
        struct entry *slot = &dd->slab[i];
        slot->kind = e.kind;
        slot->n_recent = e.n_recent;
        slot->u = e.u;
    }
    if (rd.p != rd.end)
        return load_fail(dd);
    dd->as_of_ms = as_of_ms;
    dd->dirty = false;
    return TG_OK;
}
