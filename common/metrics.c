/*
 * metrics.c - the metrics registry and its Prometheus text rendering.
 *
 * Layout: the registry holds a list of families sorted by name; each family holds its series
 * sorted by their rendered label text. Both lists only grow until tg_metrics_destroy(), so a
 * handle is a stable pointer to its series. The lists are guarded by one mutex, taken by
 * registration and rendering only; updates touch nothing but the series' own atomics.
 *
 * Values: counters are atomic uint64; gauges and the histogram sum are doubles kept as their
 * IEEE-754 bits in an atomic uint64 (store for set, a compare-and-swap loop for add), because
 * C11 has no atomic add on floating types. Histogram buckets are stored non-cumulative (one
 * fetch_add per observation) and summed at render, and the count is derived from the same
 * reads, so `_count` always equals the `+Inf` bucket of the same scrape. All accesses are
 * relaxed: a scrape needs each value to be untorn, not ordered with respect to the others.
 */
#include "metrics.h"

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The hot path promises lock-free updates; 64-bit atomics are lock-free on x86-64, aarch64 and
 * armv7 (ldrexd/strexd). Fail the build, rather than silently take libatomic's locks, elsewhere. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free on this target");

#define MAX_LABELS 16
#define MAX_BOUNDS 64
/* Series are allocated on their own cache lines so that two hot counters updated by different
 * threads do not share a line. */
#define CACHE_LINE 64

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };
static const char *const kind_names[] = { "counter", "gauge", "histogram" };

struct family;

struct series {
    struct series *next;  /* next series of the family, sorted by labels */
    struct family *fam;
    char *labels;         /* rendered and escaped: `a="x",b="y"`, or "" without labels */
};

struct tg_counter {
    struct series s;
    _Atomic uint64_t value;
};

struct tg_gauge {
    struct series s;
    _Atomic uint64_t bits; /* the double's bits */
    tg_gauge_fn fn;        /* non-NULL: computed at scrape time, bits unused */
    void *ud;
};

struct tg_histogram {
    struct series s;
    size_t nbounds;
    const double *bounds;      /* the family's copy */
    _Atomic uint64_t sum_bits; /* the double's bits */
    _Atomic uint64_t buckets[]; /* nbounds + 1 non-cumulative counts; the last one is +Inf */
};

struct family {
    struct family *next; /* sorted by name */
    enum kind kind;
    char *name;
    char *help;
    char *label_names;   /* sorted label names joined by ',': every series must match */
    double *bounds;      /* histograms only */
    size_t nbounds;
    struct series *series;
};

struct tg_metrics {
    pthread_mutex_t lock;
    struct family *families;
    locale_t c_locale;   /* numbers are rendered with '.' whatever the process locale */
    size_t render_hint;  /* size of the last rendering, to allocate once */
};

const double tg_metrics_latency_buckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
};
const size_t tg_metrics_latency_buckets_len =
    sizeof tg_metrics_latency_buckets / sizeof tg_metrics_latency_buckets[0];

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tidegate metrics: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        die("out of memory");
    return copy;
}

static uint64_t double_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double bits_double(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void atomic_add_double(_Atomic uint64_t *bits, double delta)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old,
                                                  double_bits(bits_double(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* A growable string. On allocation failure it sets `failed` and ignores further appends, so a
 * caller checks once at the end. */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

static bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    if (!b->p)
        p[0] = '\0';
    b->p = p;
    b->cap = cap;
    return true;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static void buf_putc(struct buf *b, char c)
{
    buf_add(b, &c, 1);
}

/* Text escaping of the exposition format: label values escape backslash, double quote and
 * newline; HELP text escapes backslash and newline only. */
static void buf_escaped(struct buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_add(b, "\\\\", 2);
        else if (*s == '\n')
            buf_add(b, "\\n", 2);
        else if (*s == '"' && quote)
            buf_add(b, "\\\"", 2);
        else
            buf_putc(b, *s);
    }
}

/* Prometheus float syntax: NaN, +Inf, -Inf, otherwise the shortest %g that reads back exactly.
 * Expects the C numeric locale to be in effect. */
static void fmt_double(char out[40], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* validation                                                                                  */

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool metric_name_valid(const char *s)
{
    if (!s || !*s || !(is_alpha_(*s) || *s == ':'))
        return false;
    for (s++; *s; s++)
        if (!(is_alpha_(*s) || is_digit(*s) || *s == ':'))
            return false;
    return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, and names starting with "__" are reserved to Prometheus. */
static bool label_name_valid(const char *s)
{
    if (!s || !*s || !is_alpha_(*s) || (s[0] == '_' && s[1] == '_'))
        return false;
    for (s++; *s; s++)
        if (!(is_alpha_(*s) || is_digit(*s)))
            return false;
    return true;
}

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned char c = *s;
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* label sets                                                                                  */

struct labelset {
    size_t n;
    const char *name[MAX_LABELS];
    const char *value[MAX_LABELS];
};

/* Reads name/value pairs up to NULL, checks them and sorts them by name. `reserved_le` refuses
 * the label `le` (histograms). */
static void labels_collect(struct labelset *ls, const char *metric, bool reserved_le, va_list ap)
{
    ls->n = 0;
    for (;;) {
        const char *name = va_arg(ap, const char *);
        if (!name)
            break;
        const char *value = va_arg(ap, const char *);
        if (!value)
            die("metric %s: label %s has no value (labels are name, value pairs ended by NULL)",
                metric, name);
        if (ls->n == MAX_LABELS)
            die("metric %s: more than %d labels", metric, MAX_LABELS);
        if (!label_name_valid(name))
            die("metric %s: invalid label name \"%s\" (expected [a-zA-Z_][a-zA-Z0-9_]*, "
                "not starting with __)", metric, name);
        if (reserved_le && strcmp(name, "le") == 0)
            die("metric %s: the label name \"le\" is reserved for histogram buckets", metric);
        if (!utf8_valid(value))
            die("metric %s: value of label %s is not valid UTF-8", metric, name);
        /* insertion sort: label sets are small */
        size_t i = ls->n++;
        while (i > 0 && strcmp(ls->name[i - 1], name) > 0) {
            ls->name[i] = ls->name[i - 1];
            ls->value[i] = ls->value[i - 1];
            i--;
        }
        ls->name[i] = name;
        ls->value[i] = value;
        if (i > 0 && strcmp(ls->name[i - 1], name) == 0)
            die("metric %s: label %s given twice", metric, name);
    }
}

/* The canonical text of a label set, which is also its identity: `a="x",b="y"`. */
static void labels_render(struct buf *b, const struct labelset *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_puts(b, ls->name[i]);
        buf_add(b, "=\"", 2);
        buf_escaped(b, ls->value[i], true);
        buf_putc(b, '"');
    }
}

static void labels_names(struct buf *b, const struct labelset *ls)
{
    for (size_t i = 0; i < ls->n; i++) {
        if (i)
            buf_putc(b, ',');
        buf_puts(b, ls->name[i]);
    }
}

static char *buf_take_or_die(struct buf *b)
{
    if (!buf_reserve(b, 0))
        die("out of memory");
    char *p = b->p;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* registry                                                                                    */

struct tg_metrics *tg_metrics_new(void)
{
    struct tg_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (m->c_locale == (locale_t)0) {
        free(m);
        return NULL;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        freelocale(m->c_locale);
        free(m);
        return NULL;
    }
    return m;
}

void tg_metrics_destroy(struct tg_metrics *m)
{
    if (!m)
        return;
    struct family *fam = m->families;
    while (fam) {
        struct family *fam_next = fam->next;
        struct series *s = fam->series;
        while (s) {
            struct series *s_next = s->next;
            free(s->labels);
            free(s);
            s = s_next;
        }
        free(fam->name);
        free(fam->help);
        free(fam->label_names);
        free(fam->bounds);
        free(fam);
        fam = fam_next;
    }
    pthread_mutex_destroy(&m->lock);
    freelocale(m->c_locale);
    free(m);
}

void tg_metrics_exponential_buckets(double start, double factor, size_t count, double *out)
{
    if (!(start > 0) || !(factor > 1))
        die("exponential buckets need start > 0 and factor > 1 (got %g, %g)", start, factor);
    double v = start;
    for (size_t i = 0; i < count; i++, v *= factor)
        out[i] = v;
}

/* Caller holds the lock. */
static struct family *family_find(struct tg_metrics *m, const char *name)
{
    for (struct family *fam = m->families; fam; fam = fam->next) {
        int cmp = strcmp(fam->name, name);
        if (cmp == 0)
            return fam;
        if (cmp > 0)
            break;
    }
    return NULL;
}

static bool bounds_equal(const double *a, size_t na, const double *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static const char *const histogram_suffixes[] = { "_bucket", "_sum", "_count" };

/* True when full == base followed by suffix. */
static bool is_name_plus_suffix(const char *full, const char *base, const char *suffix)
{
    size_t base_len = strlen(base);
    return strncmp(full, base, base_len) == 0 && strcmp(full + base_len, suffix) == 0;
}

/* A histogram `x` exposes `x_bucket`, `x_sum` and `x_count`: no other family may take those
 * names, or the scrape would have two families writing the same samples. Caller holds the lock. */
static void check_histogram_collisions(struct tg_metrics *m, const char *name, enum kind kind)
{
    for (const struct family *fam = m->families; fam; fam = fam->next) {
        for (size_t i = 0; i < 3; i++) {
            const char *suffix = histogram_suffixes[i];
            if (kind == KIND_HISTOGRAM && is_name_plus_suffix(fam->name, name, suffix))
                die("histogram %s collides with the existing metric %s", name, fam->name);
            if (fam->kind == KIND_HISTOGRAM && is_name_plus_suffix(name, fam->name, suffix))
                die("metric %s collides with the samples of histogram %s", name, fam->name);
        }
    }
}

/* Finds the family or adds it; a family found must agree on everything. Caller holds the lock. */
static struct family *family_get(struct tg_metrics *m, enum kind kind, const char *name,
                                 const char *help, const char *label_names,
                                 const double *bounds, size_t nbounds)
{
    struct family *fam = family_find(m, name);
    if (fam) {
        if (fam->kind != kind)
            die("metric %s registered as a %s and as a %s", name, kind_names[fam->kind],
                kind_names[kind]);
        if (strcmp(fam->help, help) != 0)
            die("metric %s registered with two help texts: \"%s\" and \"%s\"", name, fam->help,
                help);
        if (strcmp(fam->label_names, label_names) != 0)
            die("metric %s registered with two sets of label names: {%s} and {%s}", name,
                fam->label_names, label_names);
        if (kind == KIND_HISTOGRAM && !bounds_equal(fam->bounds, fam->nbounds, bounds, nbounds))
            die("histogram %s registered with two different bucket sets", name);
        return fam;
    }

    check_histogram_collisions(m, name, kind);
    fam = calloc(1, sizeof *fam);
    if (!fam)
        die("out of memory");
    fam->kind = kind;
    fam->name = xstrdup(name);
    fam->help = xstrdup(help);
    fam->label_names = xstrdup(label_names);
    if (kind == KIND_HISTOGRAM) {
        fam->bounds = malloc(nbounds * sizeof *fam->bounds);
        if (!fam->bounds)
            die("out of memory");
        memcpy(fam->bounds, bounds, nbounds * sizeof *fam->bounds);
        fam->nbounds = nbounds;
    }
    struct family **at = &m->families;
    while (*at && strcmp((*at)->name, name) < 0)
        at = &(*at)->next;
    fam->next = *at;
    *at = fam;
    return fam;
}

static void *alloc_series(size_t size)
{
    size = (size + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    void *p = aligned_alloc(CACHE_LINE, size);
    if (!p)
        die("out of memory");
    memset(p, 0, size);
    return p;
}

struct registration {
    enum kind kind;
    const char *name;
    const char *help;
    const double *bounds; /* histograms */
    size_t nbounds;
    tg_gauge_fn fn;       /* computed gauges */
    void *ud;
};

static struct series *register_series(struct tg_metrics *m, const struct registration *r,
                                      va_list ap)
{
    const char *name = r->name;
    if (!metric_name_valid(name))
        die("invalid metric name \"%s\" (expected [a-zA-Z_:][a-zA-Z0-9_:]*)",
            name ? name : "(null)");
    if (!r->help || !*r->help)
        die("metric %s: help text is required", name);
    if (!utf8_valid(r->help))
        die("metric %s: help text is not valid UTF-8", name);
    if (r->kind == KIND_COUNTER && !ends_with(name, "_total"))
        die("counter %s: counter names end in _total", name);
    if (r->kind != KIND_COUNTER && ends_with(name, "_total"))
        die("%s %s: only counters end in _total", kind_names[r->kind], name);

    const double *bounds = r->bounds;
    size_t nbounds = r->nbounds;
    if (r->kind == KIND_HISTOGRAM) {
        if (!bounds && nbounds == 0) {
            bounds = tg_metrics_latency_buckets;
            nbounds = tg_metrics_latency_buckets_len;
        }
        if (!bounds || nbounds == 0 || nbounds > MAX_BOUNDS)
            die("histogram %s: needs 1 to %d bucket bounds", name, MAX_BOUNDS);
        for (size_t i = 0; i < nbounds; i++) {
            if (!isfinite(bounds[i]))
                die("histogram %s: bucket bounds must be finite (+Inf is implicit)", name);
            if (i > 0 && !(bounds[i] > bounds[i - 1]))
                die("histogram %s: bucket bounds must increase strictly", name);
        }
    }

    struct labelset ls;
    labels_collect(&ls, name, r->kind == KIND_HISTOGRAM, ap);
    struct buf b = { 0 };
    labels_render(&b, &ls);
    char *labels = buf_take_or_die(&b);
    labels_names(&b, &ls);
    char *label_names = buf_take_or_die(&b);

    pthread_mutex_lock(&m->lock);
    struct family *fam = family_get(m, r->kind, name, r->help, label_names, bounds, nbounds);
    free(label_names);

    struct series **at = &fam->series;
    int cmp = 1;
    while (*at && (cmp = strcmp((*at)->labels, labels)) < 0)
        at = &(*at)->next;
    if (*at && cmp == 0) {
        struct series *found = *at;
        if (r->kind == KIND_GAUGE) {
            const struct tg_gauge *g = (const struct tg_gauge *)(void *)found;
            if (g->fn != r->fn || g->ud != r->ud)
                die("gauge %s{%s} registered again with another callback (or as a set gauge)",
                    name, labels);
        }
        pthread_mutex_unlock(&m->lock);
        free(labels);
        return found;
    }

    struct series *s;
    switch (r->kind) {
    case KIND_COUNTER: {
        struct tg_counter *c = alloc_series(sizeof *c);
        atomic_init(&c->value, 0);
        s = &c->s;
        break;
    }
    case KIND_GAUGE: {
        struct tg_gauge *g = alloc_series(sizeof *g);
        atomic_init(&g->bits, double_bits(0.0));
        g->fn = r->fn;
        g->ud = r->ud;
        s = &g->s;
        break;
    }
    case KIND_HISTOGRAM:
    default: {
        struct tg_histogram *h =
            alloc_series(sizeof *h + (fam->nbounds + 1) * sizeof h->buckets[0]);
        h->nbounds = fam->nbounds;
        h->bounds = fam->bounds;
        atomic_init(&h->sum_bits, double_bits(0.0));
        for (size_t i = 0; i <= h->nbounds; i++)
            atomic_init(&h->buckets[i], 0);
        s = &h->s;
        break;
    }
    }
    s->fam = fam;
    s->labels = labels;
    s->next = *at;
    *at = s;
    pthread_mutex_unlock(&m->lock);
    return s;
}

struct tg_counter *tg_metrics_counter(struct tg_metrics *m, const char *name, const char *help,
                                      ...)
{
    struct registration r = { .kind = KIND_COUNTER, .name = name, .help = help };
    va_list ap;
    va_start(ap, help);
    struct series *s = register_series(m, &r, ap);
    va_end(ap);
    return (struct tg_counter *)(void *)s;
}

struct tg_gauge *tg_metrics_gauge(struct tg_metrics *m, const char *name, const char *help, ...)
{
    struct registration r = { .kind = KIND_GAUGE, .name = name, .help = help };
    va_list ap;
    va_start(ap, help);
    struct series *s = register_series(m, &r, ap);
    va_end(ap);
    return (struct tg_gauge *)(void *)s;
}

struct tg_gauge *tg_metrics_gauge_fn(struct tg_metrics *m, const char *name, const char *help,
                                     tg_gauge_fn fn, void *ud, ...)
{
    if (!fn)
        die("gauge %s: tg_metrics_gauge_fn needs a callback", name ? name : "(null)");
    struct registration r = { .kind = KIND_GAUGE, .name = name, .help = help, .fn = fn,
                              .ud = ud };
    va_list ap;
    va_start(ap, ud);
    struct series *s = register_series(m, &r, ap);
    va_end(ap);
    return (struct tg_gauge *)(void *)s;
}

struct tg_histogram *tg_metrics_histogram(struct tg_metrics *m, const char *name,
                                          const char *help, const double *bounds, size_t nbounds,
                                          ...)
{
    struct registration r = { .kind = KIND_HISTOGRAM, .name = name, .help = help,
                              .bounds = bounds, .nbounds = nbounds };
    va_list ap;
    va_start(ap, nbounds);
    struct series *s = register_series(m, &r, ap);
    va_end(ap);
    return (struct tg_histogram *)(void *)s;
}

/* ------------------------------------------------------------------------------------------ */
/* hot path                                                                                    */

void tg_counter_inc(struct tg_counter *c)
{
    atomic_fetch_add_explicit(&c->value, 1, memory_order_relaxed);
}

void tg_counter_add(struct tg_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void tg_gauge_set(struct tg_gauge *g, double v)
{
    if (!g->fn)
        atomic_store_explicit(&g->bits, double_bits(v), memory_order_relaxed);
}

void tg_gauge_add(struct tg_gauge *g, double delta)
{
    if (!g->fn)
        atomic_add_double(&g->bits, delta);
}

void tg_gauge_inc(struct tg_gauge *g)
{
    tg_gauge_add(g, 1.0);
}

void tg_gauge_dec(struct tg_gauge *g)
{
    tg_gauge_add(g, -1.0);
}

void tg_histogram_observe(struct tg_histogram *h, double v)
{
    /* The first bucket whose bound is >= v. NaN compares false everywhere: +Inf bucket. */
    size_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

/* ------------------------------------------------------------------------------------------ */
/* reading back                                                                                */

uint64_t tg_counter_value(const struct tg_counter *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

double tg_gauge_value(const struct tg_gauge *g)
{
    if (g->fn)
        return g->fn(g->ud);
    return bits_double(atomic_load_explicit(&g->bits, memory_order_relaxed));
}

uint64_t tg_histogram_bucket(const struct tg_histogram *h, size_t i)
{
    if (i > h->nbounds)
        i = h->nbounds;
    uint64_t cumulative = 0;
    for (size_t k = 0; k <= i; k++)
        cumulative += atomic_load_explicit(&h->buckets[k], memory_order_relaxed);
    return cumulative;
}

uint64_t tg_histogram_count(const struct tg_histogram *h)
{
    return tg_histogram_bucket(h, h->nbounds);
}

double tg_histogram_sum(const struct tg_histogram *h)
{
    return bits_double(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

/* Parses a `le` label value back to a bucket index of h; SIZE_MAX when it names no bucket. */
static size_t bucket_index(const struct tg_histogram *h, const char *le)
{
    if (strcmp(le, "+Inf") == 0)
        return h->nbounds;
    char *end;
    double bound = strtod(le, &end);
    if (end == le || *end)
        return SIZE_MAX;
    for (size_t i = 0; i < h->nbounds; i++)
        if (h->bounds[i] == bound)
            return i;
    return SIZE_MAX;
}

double tg_metrics_find_value(struct tg_metrics *m, const char *name, ...)
{
    struct labelset ls;
    va_list ap;
    va_start(ap, name);
    labels_collect(&ls, name, false, ap);
    va_end(ap);

    /* a histogram sample: find the family by its base name, take `le` out of the label set */
    enum { SAMPLE_VALUE, SAMPLE_BUCKET, SAMPLE_SUM, SAMPLE_COUNT } sample = SAMPLE_VALUE;
    const char *le = NULL;
    double result = NAN;
    struct buf b = { 0 };

    pthread_mutex_lock(&m->lock);
    struct family *fam = family_find(m, name);
    for (struct family *hist = m->families; !fam && hist; hist = hist->next) {
        if (hist->kind != KIND_HISTOGRAM)
            continue;
        for (size_t i = 0; !fam && i < 3; i++) {
            if (is_name_plus_suffix(name, hist->name, histogram_suffixes[i])) {
                fam = hist;
                sample = i == 0 ? SAMPLE_BUCKET : i == 1 ? SAMPLE_SUM : SAMPLE_COUNT;
            }
        }
    }
    if (!fam || (fam->kind == KIND_HISTOGRAM && sample == SAMPLE_VALUE))
        goto out;
    if (sample == SAMPLE_BUCKET) {
        size_t k = 0;
        for (size_t i = 0; i < ls.n; i++) {
            if (strcmp(ls.name[i], "le") == 0) {
                le = ls.value[i];
                continue;
            }
            ls.name[k] = ls.name[i];
            ls.value[k] = ls.value[i];
            k++;
        }
        if (!le)
            goto out;
        ls.n = k;
    }

    labels_render(&b, &ls);
    if (!buf_reserve(&b, 0))
        goto out;
    struct series *s = fam->series;
    while (s && strcmp(s->labels, b.p) != 0)
        s = s->next;
    if (!s)
        goto out;

    switch (fam->kind) {
    case KIND_COUNTER:
        result = (double)tg_counter_value((struct tg_counter *)(void *)s);
        break;
    case KIND_GAUGE:
        result = tg_gauge_value((struct tg_gauge *)(void *)s);
        break;
    case KIND_HISTOGRAM: {
        const struct tg_histogram *h = (const struct tg_histogram *)(void *)s;
        if (sample == SAMPLE_SUM) {
            result = tg_histogram_sum(h);
        } else if (sample == SAMPLE_COUNT) {
            result = (double)tg_histogram_count(h);
        } else {
            size_t i = bucket_index(h, le);
            if (i != SIZE_MAX)
                result = (double)tg_histogram_bucket(h, i);
        }
        break;
    }
    }
out:
    pthread_mutex_unlock(&m->lock);
    free(b.p);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* rendering                                                                                   */

/* `name{labels,extra}` or `name{extra}` or `name`, where extra is an already escaped pair. */
static void render_sample_name(struct buf *b, const char *name, const char *suffix,
                               const char *labels, const char *extra)
{
    buf_puts(b, name);
    buf_puts(b, suffix);
    if (!*labels && !extra)
        return;
    buf_putc(b, '{');
    buf_puts(b, labels);
    if (extra) {
        if (*labels)
            buf_putc(b, ',');
        buf_puts(b, extra);
    }
    buf_putc(b, '}');
}

static void render_u64(struct buf *b, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, " %" PRIu64 "\n", v);
    buf_puts(b, num);
}

static void render_double(struct buf *b, double v)
{
    char num[40];
    fmt_double(num, v);
    buf_putc(b, ' ');
    buf_puts(b, num);
    buf_putc(b, '\n');
}

static void render_histogram(struct buf *b, const struct family *fam,
                             const struct tg_histogram *h)
{
    uint64_t cumulative = 0;
    char le[64];
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->nbounds) {
            char num[40];
            fmt_double(num, h->bounds[i]);
            snprintf(le, sizeof le, "le=\"%s\"", num);
        } else {
            strcpy(le, "le=\"+Inf\"");
        }
        render_sample_name(b, fam->name, "_bucket", h->s.labels, le);
        render_u64(b, cumulative);
    }
    render_sample_name(b, fam->name, "_sum", h->s.labels, NULL);
    render_double(b, tg_histogram_sum(h));
    render_sample_name(b, fam->name, "_count", h->s.labels, NULL);
    render_u64(b, cumulative);
}

tg_err tg_metrics_render(struct tg_metrics *m, char **out, size_t *len)
{
    struct buf b = { 0 };
    locale_t prev = uselocale(m->c_locale);
    pthread_mutex_lock(&m->lock);
    buf_reserve(&b, m->render_hint + 256);
    for (const struct family *fam = m->families; fam; fam = fam->next) {
        buf_add(&b, "# HELP ", 7);
        buf_puts(&b, fam->name);
        buf_putc(&b, ' ');
        buf_escaped(&b, fam->help, false);
        buf_add(&b, "\n# TYPE ", 8);
        buf_puts(&b, fam->name);
        buf_putc(&b, ' ');
        buf_puts(&b, kind_names[fam->kind]);
        buf_putc(&b, '\n');
        for (const struct series *s = fam->series; s; s = s->next) {
            switch (fam->kind) {
            case KIND_COUNTER:
                render_sample_name(&b, fam->name, "", s->labels, NULL);
                render_u64(&b, tg_counter_value((const struct tg_counter *)(const void *)s));
                break;
            case KIND_GAUGE:
                render_sample_name(&b, fam->name, "", s->labels, NULL);
                render_double(&b, tg_gauge_value((const struct tg_gauge *)(const void *)s));
                break;
            case KIND_HISTOGRAM:
                render_histogram(&b, fam, (const struct tg_histogram *)(const void *)s);
                break;
            }
        }
    }
    buf_reserve(&b, 0); /* an empty registry still yields "" */
    if (!b.failed)
        m->render_hint = b.len;
    pthread_mutex_unlock(&m->lock);
    uselocale(prev);

    if (b.failed) {
        free(b.p);
        return TG_ERR_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return TG_OK;
}
