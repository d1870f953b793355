/*
 * engine_options.h - compile-time limits of the worker's engine, in one place (lwIP's opt.h
 * habit). Each may be overridden with -D at build time; the config's bounds follow them.
 */
#ifndef TG_ENGINE_OPTIONS_H
#define TG_ENGINE_OPTIONS_H

/* Rule sections [rules.1] .. [rules.N] the worker's INI may hold (the schema is static). */
#ifndef TG_ENGINE_RULES_MAX
#define TG_ENGINE_RULES_MAX 8
#endif

/* Largest rolling window of the level (median/MAD) detector, in samples. */
#ifndef TG_ENGINE_LEVEL_WINDOW_MAX
#define TG_ENGINE_LEVEL_WINDOW_MAX 31
#endif

/* Most time-of-day buckets of the seasonal detector. */
#ifndef TG_ENGINE_SEASONAL_BUCKETS_MAX
#define TG_ENGINE_SEASONAL_BUCKETS_MAX 48
#endif

/* Largest order p of the predict detector's AR(p) model (its state is O(p^2) doubles). */
#ifndef TG_ENGINE_PREDICT_ORDER_MAX
#define TG_ENGINE_PREDICT_ORDER_MAX 12
#endif

/* Open windows a series can hold at once: allowed lateness is at most one window, so the
 * window being filled and the one before it. */
#define TG_ENGINE_SERIES_WINDOWS 2

/* Recent holes (no record of the partition over more than the hole limit of event time) a
 * partition remembers, for judging the gaps of its series that arrive after one (engine_hole.c):
 * a series' gap spanning older holes is judged without their discount. */
#ifndef TG_ENGINE_PARTITION_HOLES
#define TG_ENGINE_PARTITION_HOLES 4
#endif

/* Largest snapshot value of one series, in bytes (level ring, seasonal buckets and predict
 * model at their maximum, plus the fixed part). */
#define TG_ENGINE_SNAPSHOT_MAX 2048

#endif
