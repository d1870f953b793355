/*
 * stub_egress.c - see stub_egress.h.
 */
#include "stub_egress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reconcile_kafka.h"

struct pending {
    uint64_t rid;
    int64_t ts_ms;
    enum tg_jrecord_kind kind;
};

struct tg_egress {
    tg_egress_delivery_fn fn;
    void *ud;
    bool up, full;
    int topic_err[2];
    struct pending *pend;
    size_t n_pend, cap_pend;
};

static struct tg_egress *last;

struct tg_egress *stub_egress(void) { return last; }
void stub_egress_set_up(struct tg_egress *eg, bool up) { eg->up = up; }
void stub_egress_set_full(struct tg_egress *eg, bool full) { eg->full = full; }
void stub_egress_set_topic_error(struct tg_egress *eg, enum tg_jrecord_kind kind, int err)
{
    eg->topic_err[kind == TG_JREC_DLQ] = err;
}
size_t stub_egress_pending(const struct tg_egress *eg) { return eg->n_pend; }

void stub_egress_deliver_all(struct tg_egress *eg, tg_err result)
{
    size_t n = eg->n_pend;
    struct pending *p = eg->pend;
    eg->pend = NULL;
    eg->n_pend = eg->cap_pend = 0;
    for (size_t i = 0; i < n; i++)
        eg->fn(eg->ud, p[i].rid, p[i].kind, p[i].ts_ms, result,
               result == TG_OK ? NULL : tg_strerror(result));
    free(p);
}

tg_err tg_egress_new(const struct tg_egress_opts *opts, tg_egress_delivery_fn fn, void *ud,
                     struct tg_egress **out, char *err, size_t errlen)
{
    (void)opts;
    struct tg_egress *eg = calloc(1, sizeof *eg);
    if (!eg) {
        snprintf(err, errlen, "out of memory");
        return TG_ERR_NOMEM;
    }
    eg->fn = fn;
    eg->ud = ud;
    eg->up = true;
    *out = last = eg;
    return TG_OK;
}

tg_err tg_egress_check_opts(const struct tg_egress_opts *opts, char *err, size_t errlen)
{
    (void)opts, (void)err, (void)errlen;
    return TG_OK;
}

void tg_egress_destroy(struct tg_egress *eg)
{
    if (!eg)
        return;
    stub_egress_deliver_all(eg, TG_ERR_UNAVAILABLE); /* as the real one: all reported */
    if (last == eg)
        last = NULL;
    free(eg);
}

tg_err tg_egress_produce(struct tg_egress *eg, const struct tg_jrecord *rec)
{
    if (eg->full)
        return TG_ERR_FULL;
    if (eg->topic_err[rec->kind == TG_JREC_DLQ])
        return TG_ERR_UNAVAILABLE;
    if (eg->n_pend == eg->cap_pend) {
        size_t cap = eg->cap_pend ? eg->cap_pend * 2 : 64;
        struct pending *p = realloc(eg->pend, cap * sizeof *p);
        if (!p)
            return TG_ERR_FULL;
        eg->pend = p;
        eg->cap_pend = cap;
    }
    eg->pend[eg->n_pend++] = (struct pending){rec->rid, rec->ts_ms, rec->kind};
    return TG_OK;
}

int tg_egress_poll(struct tg_egress *eg, int timeout_ms)
{
    (void)eg, (void)timeout_ms;
    return 0;
}

int tg_egress_fd(const struct tg_egress *eg)
{
    (void)eg;
    return -1;
}

size_t tg_egress_in_flight(const struct tg_egress *eg) { return eg->n_pend; }
bool tg_egress_up(const struct tg_egress *eg) { return eg->up; }
bool tg_egress_fatal(const struct tg_egress *eg)
{
    (void)eg;
    return false;
}

tg_err tg_egress_flush(struct tg_egress *eg, int timeout_ms)
{
    (void)timeout_ms;
    return eg->n_pend ? TG_ERR_TIMEOUT : TG_OK;
}

int tg_egress_topic_error(const struct tg_egress *eg, enum tg_jrecord_kind kind)
{
    return eg->topic_err[kind == TG_JREC_DLQ];
}

const char *tg_egress_error_name(int code) { return code ? "UNKNOWN_TOPIC_OR_PART" : "NO_ERROR"; }

size_t tg_egress_confirmed_offsets(const struct tg_egress *eg, const int64_t **marks)
{
    (void)eg;
    *marks = NULL;
    return 0;
}

/* The read-back of reconcile_kafka.h against no cluster: finished at once, nothing found,
 * no topic. */
struct tg_reconcile {
    int unused;
};

tg_err tg_reconcile_start(const struct tg_reconcile_opts *opts, struct tg_reconcile **out)
{
    (void)opts;
    *out = calloc(1, sizeof **out);
    return *out ? TG_OK : TG_ERR_NOMEM;
}
bool tg_reconcile_done(struct tg_reconcile *rc) { (void)rc; return true; }
size_t tg_reconcile_found(const struct tg_reconcile *rc) { (void)rc; return 0; }
void tg_reconcile_reading(const struct tg_reconcile *rc, size_t i, struct tg_reading *out)
{
    (void)rc, (void)i;
    memset(out, 0, sizeof *out);
}
bool tg_reconcile_contains(const struct tg_reconcile *rc, const struct tg_reading *r)
{
    (void)rc, (void)r;
    return false;
}
size_t tg_reconcile_ends(const struct tg_reconcile *rc, const int64_t **ends)
{
    (void)rc;
    *ends = NULL;
    return 0;
}
bool tg_reconcile_truncated(const struct tg_reconcile *rc) { (void)rc; return false; }
uint64_t tg_reconcile_records_read(const struct tg_reconcile *rc) { (void)rc; return 0; }
void tg_reconcile_destroy(struct tg_reconcile *rc) { free(rc); }
size_t tg_reconcile_take(struct tg_reconcile *rc, size_t from,
                         void (*fn)(void *ud, const struct tg_reading *r), void *ud,
                         int64_t *pos, size_t pos_cap, size_t *n_pos)
{
    (void)rc, (void)fn, (void)ud, (void)pos, (void)pos_cap;
    *n_pos = 0;
    return from;
}
size_t tg_reconcile_identity(const struct tg_reading *r, char *buf, size_t cap)
{
    (void)r, (void)buf, (void)cap;
    return 0;
}
