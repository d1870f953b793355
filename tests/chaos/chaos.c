/*
 * chaos.c - shared helpers of the fault-injection tests; the contract is in chaos.h.
 */
#include "chaos.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void tg_chaos_rand_init(struct tg_chaos_rand *r, uint64_t default_seed, const char *label)
{
    uint64_t seed = default_seed;
    const char *env = getenv("TG_CHAOS_SEED");
    if (env && *env) {
        char *end = NULL;
        unsigned long long v = strtoull(env, &end, 10);
        if (end && *end == '\0')
            seed = v;
    }
    fprintf(stderr, "%s: seed %" PRIu64 " (set TG_CHAOS_SEED to replay another)\n", label, seed);
    r->state = seed ? seed : 0x9e3779b97f4a7c15u;
}

/* xorshift64*: plenty for choosing delays, and identical on every machine. */
static uint64_t next(struct tg_chaos_rand *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

int tg_chaos_rand_range(struct tg_chaos_rand *r, int lo, int hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int)(next(r) % (uint64_t)(hi - lo + 1));
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        return errno == ENOENT ? 1 : -1;
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            rc = -1;
            break;
        }
    }
    if (ferror(in))
        rc = -1;
    fclose(in);
    if (fclose(out) != 0)
        rc = -1;
    return rc;
}

int tg_chaos_journal_integrity(const struct tg_gw *gw, char *result, size_t result_size)
{
    char copy[1024], from[1100], to[1100];
    snprintf(copy, sizeof copy, "%s/integrity-copy.db", tg_gw_dir(gw));
    unlink(copy);
    snprintf(to, sizeof to, "%s-wal", copy);
    unlink(to);
    snprintf(to, sizeof to, "%s-shm", copy);
    unlink(to);
    if (copy_file(tg_gw_journal_path(gw), copy) != 0) {
        snprintf(result, result_size, "cannot copy %s", tg_gw_journal_path(gw));
        return -1;
    }
    snprintf(from, sizeof from, "%s-wal", tg_gw_journal_path(gw));
    snprintf(to, sizeof to, "%s-wal", copy);
    if (copy_file(from, to) < 0) {
        snprintf(result, result_size, "cannot copy %s", from);
        return -1;
    }
    int rc = tg_gw_journal_integrity(copy, result, result_size);
    unlink(copy);
    unlink(to);
    snprintf(to, sizeof to, "%s-shm", copy);
    unlink(to);
    return rc;
}

int tg_chaos_kill9_check(struct tg_gw *gw, const char *what)
{
    if (tg_gw_tidegate_kill9(gw) != 0) {
        fprintf(stderr, "%s: kill -9 of tidegate failed\n", what);
        return -1;
    }
    char result[512];
    int rc = tg_chaos_journal_integrity(gw, result, sizeof result);
    fprintf(stderr, "%s: PRAGMA integrity_check: %s\n", what, result);
    return rc;
}

int tg_chaos_finish_clean(struct tg_gw *gw)
{
    int rc = 0;
    int corrupt = tg_gw_log_count(gw, "corrupt");
    if (corrupt != 0) {
        fprintf(stderr, "chaos: tidegate's log says \"corrupt\" %d times\n", corrupt);
        rc = -1;
    }
    int status = tg_gw_tidegate_term(gw, 30000);
    if (!tg_harness_exited_ok(status)) {
        fprintf(stderr, "chaos: tidegate did not stop cleanly on SIGTERM (status %d)\n", status);
        tg_gw_print_log_tail(gw, 30);
        rc = -1;
    }
    char result[512];
    if (tg_gw_journal_integrity(tg_gw_journal_path(gw), result, sizeof result) != 0) {
        fprintf(stderr, "chaos: the journal after the stop: PRAGMA integrity_check: %s\n",
                result);
        rc = -1;
    }
    return rc;
}

struct sample {
    int64_t t_ms;
    double value;
};

struct tg_chaos_series {
    struct tg_gw *gw;
    char *metric;
    struct sample *samples;
    size_t n, cap;
};

struct tg_chaos_series *tg_chaos_series_new(struct tg_gw *gw, const char *metric)
{
    struct tg_chaos_series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->gw = gw;
    s->metric = strdup(metric);
    if (!s->metric) {
        free(s);
        return NULL;
    }
    return s;
}

void tg_chaos_series_destroy(struct tg_chaos_series *s)
{
    if (!s)
        return;
    free(s->samples);
    free(s->metric);
    free(s);
}

double tg_chaos_series_sample(struct tg_chaos_series *s)
{
    double v = tg_gw_metric(s->gw, s->metric, NULL);
    if (isnan(v))
        return v;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        struct sample *grown = realloc(s->samples, cap * sizeof *grown);
        if (!grown)
            return v;
        s->samples = grown;
        s->cap = cap;
    }
    /* stamped at the end of the scrape: the value held at least by then */
    s->samples[s->n++] = (struct sample){tg_harness_now_ms(), v};
    return v;
}

double tg_chaos_series_at(const struct tg_chaos_series *s, int64_t t_ms)
{
    double v = 0;
    for (size_t i = 0; i < s->n && s->samples[i].t_ms <= t_ms; i++)
        v = s->samples[i].value;
    return v;
}

void tg_chaos_series_reset(struct tg_chaos_series *s) { s->n = 0; }

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void tg_chaos_pause_until(int64_t deadline_ms, void (*fn)(void *ud), void *ud)
{
    for (;;) {
        if (fn)
            fn(ud);
        int64_t left = deadline_ms - tg_harness_now_ms();
        if (left <= 0)
            return;
        sleep_ms(left < 50 ? (int)left : 50);
    }
}

void tg_chaos_series_until(struct tg_chaos_series *s, int64_t deadline_ms)
{
    for (;;) {
        tg_chaos_series_sample(s);
        int64_t left = deadline_ms - tg_harness_now_ms();
        if (left <= 0)
            return;
        sleep_ms(left < 20 ? (int)left : 20);
    }
}

void tg_chaos_summary(const char *test, int lost, int duplicated, const char *fmt, ...)
{
    fprintf(stderr, "CHAOS %s: lost %d, duplicated %d", test, lost, duplicated);
    if (fmt && *fmt) {
        va_list ap;
        fputs(", ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
}

struct tg_gw_consumer *tg_chaos_audit(const struct tg_gw *gw, const struct tg_gw_plan *plan,
                                      size_t want, int wait_ms, struct tg_gw_audit *audit)
{
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    if (!c)
        return NULL;
    tg_gw_consumer_read(c, want, wait_ms);
    tg_gw_audit_run(c, plan, audit);
    return c;
}

bool tg_chaos_plan_exactly_once(const struct tg_gw_audit *a, int expected)
{
    bool ok = a->distinct == expected && a->missing == 0 && a->duplicates == 0 && a->bad == 0 &&
              a->misplaced == 0 && a->out_of_order == 0;
    if (!ok)
        fprintf(stderr, "audit: distinct %d (expected %d), missing %d, duplicates %d, bad %d, "
                "misplaced %d, out of order %d\n", a->distinct, expected, a->missing,
                a->duplicates, a->bad, a->misplaced, a->out_of_order);
    return ok;
}
