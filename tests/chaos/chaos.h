/*
 * chaos.h - what the fault-injection tests (tests/chaos/) share on top of gateway_fixture.h:
 * a seeded random source, the journal's integrity checked on a copy, a recorder of a metric
 * over time, and the one-line summary every chaos test prints.
 *
 * Threads: the test's main thread only, like the fixture.
 */
#ifndef TG_CHAOS_H
#define TG_CHAOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway_fixture.h"

/* ------------------------------------------------------------------------------------------
 * Seeded randomness: TG_CHAOS_SEED in the environment (decimal), else the default given by the
 * test. The seed is printed, so a failing schedule can be run again.
 */
struct tg_chaos_rand {
    uint64_t state;
};

/* Seeds from TG_CHAOS_SEED or default_seed and prints "<label>: seed N". */
void tg_chaos_rand_init(struct tg_chaos_rand *r, uint64_t default_seed, const char *label);
/* Uniform in [lo, hi]. */
int tg_chaos_rand_range(struct tg_chaos_rand *r, int lo, int hi);

/* ------------------------------------------------------------------------------------------
 * The journal after a crash
 */

/* Copies the journal (the file and its -wal, which holds the committed transactions not yet
 * checkpointed) into the fixture's dir and runs PRAGMA integrity_check on the copy, so the
 * check itself cannot recover or checkpoint the file the gateway opens next. 0 when SQLite
 * answered "ok"; else -1 with its answer in result. */
int tg_chaos_journal_integrity(const struct tg_gw *gw, char *result, size_t result_size);

/* One kill of a crash loop: kill -9 of tidegate, then tg_chaos_journal_integrity(), printing
 * "<what>: PRAGMA integrity_check: <answer>". 0 when the kill worked and SQLite answered "ok";
 * else -1. The test starts the gateway again (tg_gw_tidegate_start()). */
int tg_chaos_kill9_check(struct tg_gw *gw, const char *what);

/* The end every crash loop shares: tidegate's log (all its runs) never says its journal was
 * found corrupt at start-up, a graceful stop (SIGTERM) exits 0, and the journal it leaves
 * passes PRAGMA integrity_check. 0, or -1 with what failed printed. The caller still
 * destroys gw. */
int tg_chaos_finish_clean(struct tg_gw *gw);

/* ------------------------------------------------------------------------------------------
 * A counter recorded over time (e.g. tidegate_messages_delivered_total), for bounds that
 * depend on what happened in a window before an event.
 */
struct tg_chaos_series;

struct tg_chaos_series *tg_chaos_series_new(struct tg_gw *gw, const char *metric);
void tg_chaos_series_destroy(struct tg_chaos_series *s);
/* Scrapes once and records (now, value); a failed scrape records nothing. Returns the value
 * or NAN. */
double tg_chaos_series_sample(struct tg_chaos_series *s);
/* The last value recorded at or before t_ms (monotonic, tg_harness_now_ms), or 0 when none. */
double tg_chaos_series_at(const struct tg_chaos_series *s, int64_t t_ms);
/* Forgets the samples: the gateway restarted and its counters begin again at 0. */
void tg_chaos_series_reset(struct tg_chaos_series *s);

/* Waits for deadline_ms (absolute, monotonic) while sampling s about every 20 ms. This and
 * tg_chaos_pause_until() time the faults of a schedule; they never stand in for waiting on a
 * condition. */
void tg_chaos_series_until(struct tg_chaos_series *s, int64_t deadline_ms);
/* Sleeps until deadline_ms (absolute, monotonic); calls fn(ud) about every 50 ms meanwhile
 * when fn is not NULL (e.g. to record a peak). */
void tg_chaos_pause_until(int64_t deadline_ms, void (*fn)(void *ud), void *ud);

/* ------------------------------------------------------------------------------------------
 * Summary
 */

/* Prints "CHAOS <test>: lost L, duplicated D, <extra>" on stderr: the line the README's
 * figures come from. */
void tg_chaos_summary(const char *test, int lost, int duplicated, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The fixture's audit of plan against the telemetry topic, read up to its end. Waits up to
 * wait_ms for at least `want` records. Returns the consumer (the caller destroys it) and fills
 * audit, or NULL. */
struct tg_gw_consumer *tg_chaos_audit(const struct tg_gw *gw, const struct tg_gw_plan *plan,
                                      size_t want, int wait_ms, struct tg_gw_audit *audit);

/* tg_gw_audit_exactly_once() for a topic that also holds other plans' records: every
 * reading of the plan once, none bad, misplaced or out of order; foreign records ignored. */
bool tg_chaos_plan_exactly_once(const struct tg_gw_audit *audit, int expected);

#endif
