/*
 * metrics.h - the metrics registry: counters, gauges and histograms with labels, rendered in
 * the Prometheus text exposition format 0.0.4.
 *
 * A family is a metric name with one HELP text and one type; a series is a family plus a set of
 * label name/value pairs. Registering `x_total{reason="malformed"}` and
 * `x_total{reason="bad_signature"}` gives one family with two series.
 *
 * Two kinds of call, with different costs:
 *
 *  - Registration (tg_metrics_counter(), _gauge(), _gauge_fn(), _histogram()) takes the
 *    registry's mutex, validates names and may allocate. Do it at startup, or on the first use of
 *    a label value, and keep the handle: handles are stable pointers, valid until
 *    tg_metrics_destroy(). Registering the same series again returns the same handle.
 *    Misuse is a programming error and aborts with a message on stderr: an invalid metric or
 *    label name, a counter not ending in `_total`, the same name with another type, help text,
 *    label names or histogram buckets, a label value that is not UTF-8. So is running out of
 *    memory while registering.
 *
 *  - Updates (tg_counter_inc/add, tg_gauge_set/add/inc/dec, tg_histogram_observe) are lock-free
 *    and allocation-free: a few relaxed C11 atomic operations. Any thread may call them.
 *
 * Label pairs are passed as a NULL-terminated list of name, value strings:
 *     tg_metrics_counter(m, "tidegate_messages_invalid_total", "Payloads rejected",
 *                        "reason", "malformed", NULL);
 * The registry copies names, help and labels; callers keep ownership of their strings.
 * The order of the pairs does not matter: a series is identified by its set of labels, and all
 * series of one family must use the same label names.
 *
 * Rendering lists families sorted by name and, inside a family, series sorted by their labels, so
 * the output does not depend on the order in which threads registered things.
 *
 * Naming follows Prometheus: counters end in `_total`, durations are histograms in seconds,
 * sizes are in bytes. Metric name prefixes (`tidegate_`, `tidegate_worker_`) belong to the
 * programs; the registry is generic.
 */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct tg_metrics;   /* the registry */
struct tg_counter;   /* one counter series: uint64, monotonic */
struct tg_gauge;     /* one gauge series: double, set or computed at scrape time */
struct tg_histogram; /* one histogram series: fixed bucket bounds, count and sum */

/* Computes a gauge's value at scrape time (e.g. the journal's oldest record age). It runs on the
 * thread that renders (the HTTP exporter's thread) while the registry's mutex is held: it must be
 * thread-safe, quick, and must not call back into the registry. */
typedef double (*tg_gauge_fn)(void *ud);

/* End-to-end latency buckets in seconds, 1 ms to 60 s: 0.001 0.0025 0.005 0.01 0.025 0.05 0.1
 * 0.25 0.5 1 2.5 5 10 30 60 (+Inf is implicit). */
extern const double tg_metrics_latency_buckets[];
extern const size_t tg_metrics_latency_buckets_len;

/* Fills out[0..count-1] with start, start*factor, start*factor^2, ... (e.g. batch sizes in
 * bytes). start > 0, factor > 1. */
void tg_metrics_exponential_buckets(double start, double factor, size_t count, double *out);

/* A new, empty registry. Returns NULL only when memory runs out. */
struct tg_metrics *tg_metrics_new(void);

/* Frees the registry and every handle it gave out. NULL is a no-op. No other thread may use the
 * registry or its handles any more: stop the HTTP exporter first. */
void tg_metrics_destroy(struct tg_metrics *m);

/* Registers (or finds) a counter series. `name` must end in `_total`. Variadic: label name/value
 * pairs, then NULL. */
struct tg_counter *tg_metrics_counter(struct tg_metrics *m, const char *name, const char *help,
                                      ...);

/* Registers (or finds) a gauge series that the program sets; it starts at 0. */
struct tg_gauge *tg_metrics_gauge(struct tg_metrics *m, const char *name, const char *help, ...);

/* Registers (or finds) a gauge series whose value fn(ud) computes at each scrape (see
 * tg_gauge_fn for the thread it runs on). It may share a family with set gauges. Registering
 * the same series again with another fn or ud is a programming error. tg_gauge_set/add on it
 * are ignored. */
struct tg_gauge *tg_metrics_gauge_fn(struct tg_metrics *m, const char *name, const char *help,
                                     tg_gauge_fn fn, void *ud, ...);

/* Registers (or finds) a histogram series. `bounds` are the buckets' upper bounds in the
 * metric's unit (seconds for durations), finite and strictly increasing, at most 64 of them;
 * +Inf is added implicitly. bounds == NULL with nbounds == 0 selects
 * tg_metrics_latency_buckets. The registry copies the bounds. All series of a family share the
 * same bounds. The label name `le` is reserved. */
struct tg_histogram *tg_metrics_histogram(struct tg_metrics *m, const char *name,
                                          const char *help, const double *bounds, size_t nbounds,
                                          ...);

/* --- hot path: lock-free, allocation-free, any thread --- */

void tg_counter_inc(struct tg_counter *c);
void tg_counter_add(struct tg_counter *c, uint64_t n);

void tg_gauge_set(struct tg_gauge *g, double v);
void tg_gauge_add(struct tg_gauge *g, double delta);
void tg_gauge_inc(struct tg_gauge *g);
void tg_gauge_dec(struct tg_gauge *g);

/* Records one observation (e.g. a latency in seconds). NaN lands in the +Inf bucket and makes
 * the sum NaN, as in Prometheus' own clients. */
void tg_histogram_observe(struct tg_histogram *h, double v);

/* --- reading values back (tests, self-checks); any thread, no lock unless stated --- */

uint64_t tg_counter_value(const struct tg_counter *c);
/* A computed gauge calls its fn here, on the caller's thread. */
double tg_gauge_value(const struct tg_gauge *g);
/* Number of observations: the sum of all buckets, so it always equals the +Inf bucket. */
uint64_t tg_histogram_count(const struct tg_histogram *h);
double tg_histogram_sum(const struct tg_histogram *h);
/* Cumulative count of observations <= the i-th bound; i == number of bounds is +Inf. */
uint64_t tg_histogram_bucket(const struct tg_histogram *h, size_t i);

/* The value of the sample a scrape would show for `name` and exactly these labels (variadic
 * name/value pairs, then NULL, in any order), or NAN when there is no such series. `name` may be
 * a family's name or, for a histogram, `<name>_count`, `<name>_sum` or `<name>_bucket` with an
 * `le` label ("0.25", "+Inf"). Label names are checked as at registration. Takes the mutex; for
 * tests and diagnostics, not for the hot path. */
double tg_metrics_find_value(struct tg_metrics *m, const char *name, ...);

/* Renders the whole registry in the Prometheus text format 0.0.4. On TG_OK *out is a
 * NUL-terminated string the caller frees with free() and *len its length without the NUL; on
 * TG_ERR_NOMEM nothing is allocated. Takes the mutex and reads the atomics; computed gauges run
 * on the caller's thread. Numbers are formatted independently of the process locale. */
tg_err tg_metrics_render(struct tg_metrics *m, char **out, size_t *len);

#endif
