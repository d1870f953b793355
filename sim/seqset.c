/*
 * seqset.c - sets of sequence numbers as sorted ranges (see seqset.h).
 */
#include "seqset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void tg_seqset_free(struct tg_seqset *s)
{
    free(s->r);
    s->r = NULL;
    s->n = s->cap = 0;
}

/* Index of the first range with hi >= seq (n when none). */
static size_t search(const struct tg_seqset *s, uint64_t seq)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].hi < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool tg_seqset_contains(const struct tg_seqset *s, uint64_t seq)
{
    size_t i = search(s, seq);
    return i < s->n && s->r[i].lo <= seq;
}

bool tg_seqset_intersects(const struct tg_seqset *s, uint64_t lo, uint64_t hi)
{
    size_t i = search(s, lo);
    return i < s->n && s->r[i].lo <= hi;
}

static int insert_at(struct tg_seqset *s, size_t i, uint64_t lo, uint64_t hi)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 2;
        struct tg_seqset_range *r = realloc(s->r, cap * sizeof *r);
        if (!r)
            return -1;
        s->r = r;
        s->cap = cap;
    }
    memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
    s->r[i] = (struct tg_seqset_range){lo, hi};
    s->n++;
    return 0;
}

int tg_seqset_add(struct tg_seqset *s, uint64_t seq)
{
    if (s->n > 0) {
        struct tg_seqset_range *last = &s->r[s->n - 1];
        if (seq > last->hi) { /* the common case: the next seq of a device */
            if (seq == last->hi + 1) {
                last->hi = seq;
                return 1;
            }
            return insert_at(s, s->n, seq, seq) == 0 ? 1 : -1;
        }
    }
    size_t i = search(s, seq);
    if (i < s->n && s->r[i].lo <= seq)
        return 0;
    bool joins_left = i > 0 && s->r[i - 1].hi + 1 == seq;
    bool joins_right = i < s->n && s->r[i].lo == seq + 1;
    if (joins_left && joins_right) {
        s->r[i - 1].hi = s->r[i].hi;
        memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof *s->r);
        s->n--;
    } else if (joins_left) {
        s->r[i - 1].hi = seq;
    } else if (joins_right) {
        s->r[i].lo = seq;
    } else if (insert_at(s, i, seq, seq) != 0) {
        return -1;
    }
    return 1;
}

int tg_seqset_remove(struct tg_seqset *s, uint64_t seq)
{
    size_t i = search(s, seq);
    if (i == s->n || s->r[i].lo > seq)
        return 0;
    struct tg_seqset_range *r = &s->r[i];
    if (r->lo == r->hi) {
        memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof *s->r);
        s->n--;
    } else if (seq == r->lo) {
        r->lo++;
    } else if (seq == r->hi) {
        r->hi--;
    } else {
        uint64_t hi = r->hi;
        r->hi = seq - 1;
        if (insert_at(s, i + 1, seq + 1, hi) != 0) {
            s->r[i].hi = hi; /* undo: the set is unchanged on failure */
            return -1;
        }
    }
    return 1;
}

int tg_seqset_append_range(struct tg_seqset *s, uint64_t lo, uint64_t hi)
{
    if (hi < lo || (s->n > 0 && (lo <= s->r[s->n - 1].hi || lo - 1 == s->r[s->n - 1].hi))) {
        errno = EINVAL;
        return -1;
    }
    if (insert_at(s, s->n, lo, hi) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

uint64_t tg_seqset_count(const struct tg_seqset *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->r[i].hi - s->r[i].lo + 1;
    return n;
}

size_t tg_seqset_n_ranges(const struct tg_seqset *s)
{
    return s->n;
}

struct tg_seqset_range tg_seqset_range(const struct tg_seqset *s, size_t i)
{
    return s->r[i];
}

bool tg_seqset_each(const struct tg_seqset *s, tg_seqset_visit_fn fn, void *ud)
{
    for (size_t i = 0; i < s->n; i++)
        for (uint64_t seq = s->r[i].lo;; seq++) {
            if (!fn(ud, seq))
                return false;
            if (seq == s->r[i].hi) /* not seq <= hi: hi may be UINT64_MAX */
                break;
        }
    return true;
}
