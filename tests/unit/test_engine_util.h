/*
 * test_engine_util.h - shared by the worker engine's unit tests: an engine built from
 * --set assignments, an output recorder, and a deterministic noise source.
 */
#ifndef TEST_ENGINE_UTIL_H
#define TEST_ENGINE_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "engine.h"

struct rec {
    char **lines; /* "A <state> <id> <json>" or "G <json>" */
    size_t n, cap;
    size_t alerts, opens, closes, aggregates;
};

static inline void rec_push(struct rec *r, const char *line)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->lines = realloc(r->lines, r->cap * sizeof *r->lines);
    }
    r->lines[r->n++] = strdup(line);
}

static inline void rec_emit(void *ud, const struct tg_engine_output *out)
{
    struct rec *r = ud;
    char *line = malloc(out->value_len + 512);
    if (out->kind == TG_ENGINE_ALERT) {
        snprintf(line, out->value_len + 512, "A %s %s %.*s", out->alert_state, out->alert_id,
                 (int)out->value_len, out->value);
        r->alerts++;
        r->opens += strcmp(out->alert_state, "open") == 0;
        r->closes += strcmp(out->alert_state, "close") == 0;
    } else {
        snprintf(line, out->value_len + 512, "G %.*s", (int)out->value_len, out->value);
        r->aggregates++;
    }
    rec_push(r, line);
    free(line);
}

static inline void rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->lines[i]);
    free(r->lines);
    memset(r, 0, sizeof *r);
}

/* Number of recorded lines that start with prefix. */
static inline size_t rec_count(const struct rec *r, const char *prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += strncmp(r->lines[i], prefix, strlen(prefix)) == 0;
    return n;
}

static inline void rec_dump(const struct rec *r, size_t max)
{
    for (size_t i = 0; i < r->n && i < max; i++)
        fprintf(stderr, "  %s\n", r->lines[i]);
}

/* A config of the engine's schema with the given --set assignments (NULL-terminated);
 * NULL and the error in err when it does not build. */
static inline struct tg_engine_config *make_config(const char *const *sets, char *err, size_t errlen)
{
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    struct tg_config *cfg = tg_config_new(keys, n);
    struct tg_engine_config *ec = NULL;
    for (size_t i = 0; sets && sets[i]; i++)
        if (tg_config_set(cfg, sets[i]) != TG_OK) {
            snprintf(err, errlen, "%s", tg_config_error(cfg));
            goto out;
        }
    ec = tg_engine_config_from(cfg, err, errlen);
out:
    tg_config_destroy(cfg);
    return ec;
}

/* xorshift64* and Box-Muller: the same noise on every run and machine. */
struct rng {
    uint64_t s;
};
static inline double rng_uniform(struct rng *g)
{
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    return (double)((g->s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static inline double rng_gauss(struct rng *g)
{
    double u = rng_uniform(g), v = rng_uniform(g);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* Offers one reading of one metric. */
static inline tg_err feed(struct tg_engine *en, int32_t partition, const char *device,
                   const char *metric, int64_t ts, double value)
{
    struct tg_metric m = {.name = metric, .value = value};
    struct tg_reading rd = {.device = device, .ts_ms = ts, .n_metrics = 1, .metrics = &m};
    return tg_engine_process(en, partition, &rd);
}

/* The recorded alert opens of kind (NULL: of any kind). */
static inline size_t rec_opens(const struct rec *r, const char *kind)
{
    size_t n = 0;
    char want[64];
    snprintf(want, sizeof want, "\"kind\":\"%s\"", kind ? kind : "");
    for (size_t i = 0; i < r->n; i++)
        if (strncmp(r->lines[i], "A open ", 7) == 0 && (!kind || strstr(r->lines[i], want)))
            n++;
    return n;
}

/* Fails the test, listing every alert, unless there are want opens of kind. */
static inline void rec_expect_opens(const struct rec *r, const char *kind, size_t want)
{
    size_t got = rec_opens(r, kind);
    if (got != want) {
        fprintf(stderr, "alerts (kind %s: want %zu, got %zu):\n", kind ? kind : "any", want, got);
        for (size_t i = 0; i < r->n; i++)
            if (r->lines[i][0] == 'A')
                fprintf(stderr, "  %s\n", r->lines[i]);
        fail();
    }
}

/* An engine of the --set assignments sets with partition 0 added, its outputs recorded in
 * r; fails the test when the config does not build. Undone by run_close. */
static inline void run_open(struct tg_engine_config **ec, struct tg_engine **en, struct rec *r,
                            const char *const *sets)
{
    char err[512];
    *ec = make_config(sets, err, sizeof err);
    if (!*ec)
        fail_msg("config: %s", err);
    *en = tg_engine_new(*ec, rec_emit, r);
    assert_non_null(*en);
    assert_int_equal(tg_engine_partition_add(*en, 0), TG_OK);
}

static inline void run_close(struct tg_engine_config *ec, struct tg_engine *en, struct rec *r)
{
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    rec_free(r);
}

/* For a test's own struct run (any struct with members ec, en and r, started by run_open):
 * its end, and its alert opens. */
#define run_end(ru) run_close((ru)->ec, (ru)->en, &(ru)->r)
#define opens_of(ru, kind) rec_opens(&(ru)->r, (kind))
#define expect_opens(ru, kind, want) rec_expect_opens(&(ru)->r, (kind), (want))

/* Every point's score in order, for bit-for-bit comparisons (compare with memcmp: a NaN
 * must equal itself). Hook: tg_engine_set_point_hook(en, scores_push, &sc). */
struct scores {
    double *v;
    size_t n, cap;
};
static inline void scores_push(void *ud, const struct tg_engine_point *pt)
{
    struct scores *sc = ud;
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? 2 * sc->cap : 4096;
        sc->v = realloc(sc->v, sc->cap * sizeof *sc->v);
    }
    sc->v[sc->n++] = pt->score;
}

/* An engine of ec on partition 0, outputs recorded in r, every point's score into sc: one
 * run of a bit-for-bit restore comparison. */
static inline struct tg_engine *scored_engine_new(const struct tg_engine_config *ec,
                                                  struct rec *r, struct scores *sc)
{
    struct tg_engine *en = tg_engine_new(ec, rec_emit, r);
    tg_engine_set_point_hook(en, scores_push, sc);
    tg_engine_partition_add(en, 0);
    return en;
}

#ifndef TEST_ENGINE_OWN_STORE
/* A snapshot store: what tg_engine_snapshot_dirty hands over, kept in memory. Tests that
 * keep their own (fixed-size, counting) store define TEST_ENGINE_OWN_STORE first. */
struct kv {
    char *key, *value;
    size_t key_len, value_len;
};
struct store {
    struct kv *v;
    size_t n, cap;
};

/* Appends a copy of (key, value); a tombstone (NULL, 0) is kept as an empty value. */
static inline void store_add(void *ud, int32_t partition, const void *key, size_t key_len,
                             const void *value, size_t value_len)
{
    (void)partition;
    struct store *st = ud;
    if (st->n == st->cap) {
        st->cap = st->cap ? 2 * st->cap : 64;
        st->v = realloc(st->v, st->cap * sizeof *st->v);
    }
    struct kv *kv = &st->v[st->n++];
    kv->key = malloc(key_len + 1);
    memcpy(kv->key, key, key_len);
    kv->key_len = key_len;
    kv->value = malloc(value_len + 1);
    if (value_len)
        memcpy(kv->value, value, value_len);
    kv->value_len = value_len;
}

/* The compacted topic: the latest value per key, keys in first-write order. */
static inline void store_put(void *ud, int32_t partition, const void *key, size_t key_len,
                             const void *value, size_t value_len)
{
    struct store *st = ud;
    for (size_t i = 0; i < st->n; i++)
        if (st->v[i].key_len == key_len && memcmp(st->v[i].key, key, key_len) == 0) {
            free(st->v[i].value);
            st->v[i].value = malloc(value_len + 1);
            if (value_len)
                memcpy(st->v[i].value, value, value_len);
            st->v[i].value_len = value_len;
            return;
        }
    store_add(ud, partition, key, key_len, value, value_len);
}

/* Restores every (key, value) of the store into en, as a new owner reads the compacted
 * topic; each must be accepted. */
static inline void store_restore_all(struct tg_engine *en, const struct store *st)
{
    for (size_t i = 0; i < st->n; i++)
        assert_int_equal(tg_engine_restore(en, st->v[i].key, st->v[i].key_len, st->v[i].value,
                                           st->v[i].value_len),
                         TG_OK);
}

static inline void store_free(struct store *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->v[i].key);
        free(st->v[i].value);
    }
    free(st->v);
    memset(st, 0, sizeof *st);
}
#endif

#endif
