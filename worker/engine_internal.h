/*
 * engine_internal.h - what the engine's files (engine*.c, detect.c, series_table.c,
 * snapshot.c) share and nobody else sees: the parsed configuration, a series' state, the
 * detectors' entry points and the series table. Cross-file internals are named
 * module__verb() (style.md).
 */
#ifndef TG_ENGINE_INTERNAL_H
#define TG_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "engine_json.h"
#include "engine_options.h"

/* The detectors, in the order their ratios are compared (the first of equal ratios wins). */
enum detector {
    DET_LEVEL = 0, /* rolling median/MAD (Hampel) */
    DET_SHIFT,     /* EWMA chart over an exponentially weighted Welford mean/variance */
    DET_RATE,      /* rate of change per second */
    DET_STUCK,     /* flatline after variation */
    DET_SEASONAL,  /* same time of day on earlier days */
    DET_SILENCE,   /* no data for k usual periods (sweep, or a gap seen in process) */
    DET_PREDICT,   /* residual of an online AR(p) prediction (periodic series) */
    DET__COUNT
};

/* Kind names as alerts carry them. */
const char *detect__name(enum detector d);

/* Detector parameters of one rule (or of [detect], the default rule). */
struct detect_params {
    bool on[DET__COUNT];
    double threshold[DET__COUNT]; /* level, shift, rate, seasonal: z at which ratio = 1 */
    int level_window;             /* samples in the rolling median window */
    double shift_alpha;           /* weight of a new sample in the slow mean/variance */
    double shift_lambda;          /* weight of a new sample in the fast EWMA */
    int shift_persist_samples;    /* chart beyond DRIFT_Z this long on one side fires; 0: off */
    double drift_min;             /* drift test: a gap this large counts whatever the spread; 0: off */
    int stuck_samples;            /* N: samples within tolerance that make a flatline */
    double stuck_tolerance;       /* absolute: |x - start of run| <= this counts as the same */
    double silence_factor;        /* k: silent when quiet for k usual periods */
    int seasonal_buckets;         /* buckets per day */
    int seasonal_days;            /* memory of a bucket, in days */
    int seasonal_min_days;        /* days a bucket must have seen before it scores */
    double min_scale;             /* floor of every scale (absolute, metric units) */
    int warmup_samples;           /* samples before level, shift and rate score */
    int64_t gap_reset_ms;         /* a gap longer than this restarts the warm-up; 0: never */
    bool noise_adapt;             /* per-series threshold multiplier from exceedance rate */
    int predict_order;            /* p of the predict detector's AR(p) model */
    /* Bytes of a series' tail for this rule's detectors (derived). */
    size_t ring_bytes, seasonal_bytes, predict_bytes;
    /* Per-rule constants of the detectors' arithmetic, computed once (detect__derive)
     * rather than on every point: the same operations on the same operands. */
    double chart_factor;   /* sqrt(shift_lambda / (2 - shift_lambda)) */
    double shift_settle;   /* min(2 / shift_alpha, SHIFT_SETTLE_MAX) */
    int32_t seasonal_bucket_ms; /* a day's ms / seasonal_buckets */
};

struct engine_rule {
    char *match; /* fnmatch(3) pattern on the metric name */
    struct detect_params dp;
};

struct tg_engine_config {
    struct engine_rule rules[TG_ENGINE_RULES_MAX];
    int n_rules;
    struct detect_params defaults; /* [detect]: metrics no rule matches */
    int64_t window_ms;
    int64_t lateness_ms;
    double alert_threshold;   /* combined score in (0, 1) that opens an alert */
    double close_threshold;   /* an open alert is quiet while the score is under this */
    double quiet_ratio;       /* a ratio under this scores under alert_threshold for certain */
    int64_t quiet_ms;         /* event time under the threshold before an alert closes */
    int quiet_samples;        /* and at least this many points under it */
    int64_t update_interval_ms; /* least event time between two update records */
    uint64_t max_series;      /* series beyond this are not tracked (counted) */
    int64_t series_idle_ms;   /* evict a series this far behind its partition's watermark */
    int64_t partition_hole_ms; /* event time with no record of a partition that is a hole in
                                * it rather than silence of its devices; 0: off (replay) */
};

/* Parameters for rule index r (n_rules means the defaults). */
static inline const struct detect_params *engine__params(const struct tg_engine_config *ec, int r)
{
    return r < ec->n_rules ? &ec->rules[r].dp : &ec->defaults;
}

/* Bounds every series' state stays within (detect.c keeps it there, snapshot.c refuses
 * snapshots beyond them): values are at most 1e100 (engine.c refuses larger ones), so these
 * leave room for sums and squares without overflow. */
#define STATE_VALUE_MAX 1e101 /* levels and baselines */
#define STATE_RATE_MAX 1e110  /* per-second trends and rates */
#define STATE_VAR_MAX 1e230   /* variances */

/* Longest metric name a series may have (snapshot keys carry it; restore reads it back). */
#define METRIC_NAME_MAX 1023

/* The first rule whose pattern matches metric, or n_rules. */
int engine__rule_for(const struct tg_engine_config *ec, const char *metric);

/* ---- series state ----------------------------------------------------------------------- */

struct series_window {
    int64_t start;   /* window start, ms; the window is [start, start + window_ms) */
    int64_t last_ts; /* event time of `last` */
    double min, max, sum, last;
    uint32_t count;  /* 0: slot free */
};

struct seasonal_bucket {
    float mean;
    float var; /* < 0: the bucket has not seen a sample yet */
};

enum {
    SERIES_HAS_LAST = 1 << 0, /* last_ts / last_value hold a sample */
    SERIES_ALERT = 1 << 1,    /* an alert (not silence) is open */
    SERIES_SILENCE = 1 << 2,  /* a silence alert is open */
    SERIES_DIRTY = 1 << 3,    /* changed since the last snapshot */
};

struct series {
    /* Cold: read at alert transitions and by the sweep only. First, so that what every point
     * reads (from SERIES_HOT on) is contiguous and a lookup prefetches fewer lines: 448 bytes
     * with the shipped rules, 7 or 8 lines where 496 bytes from the start spanned 8 or 9. */
    int64_t alert_start, alert_last_over, alert_last_emit;
    int64_t silence_start;
    /* The sweep's own view, on the wall clock: the last_ts it last saw change, and when.
     * Not part of snapshots (a restored series starts a new view at the first sweep). */
    int64_t sweep_seen_ts, sweep_seen_wall;
    /* Hot: every point reads these, the key and the level window that follow. */
    uint32_t hash;
    int32_t partition;
    uint16_t dev_len, metric_len;
    uint8_t rule;
    uint8_t flags;
    uint8_t alert_kind;  /* enum detector of the open alert */
    uint8_t level_n;     /* values in the level ring */
    uint8_t level_pos;   /* next slot of the ring */
    /* What a lookup prefetches (series_table.c), set at creation: the bytes from SERIES_HOT
     * to pf_bytes (counted from the start), which every point reads (through the level
     * window, or the whole series with `predict` on), and when pf_bucket is set, the one
     * seasonal bucket the point's time of day picks (the buckets start at pf_bytes): a point
     * reads one of them, not the day's three lines. */
    uint8_t pf_bucket;
    uint16_t pf_bytes;
    uint32_t n;          /* samples since the last warm-up start (saturating) */
    uint32_t stuck_run;  /* samples within tolerance of stuck_ref, this one included */
    uint32_t quiet;      /* points under the threshold since the alert's last crossing */
    int32_t first_day;   /* day number (UTC) of the first sample: the seasonal profile's age */
    float period_ms;     /* usual time between samples (EW, gaps clipped) */
    float resolution;    /* smallest non-zero step seen: the sensor's quantum */
    float p_change;      /* EW fraction of samples that differ from the run's start */
    float calib;         /* noise adaptation: threshold multiplier >= 1 */
    int32_t drift_run;   /* samples the shift chart has stayed beyond DRIFT_Z (sign: side) */
    int64_t last_ts;
    double last_value;
    double shift_mean, shift_var, shift_fast, shift_trend; /* trend: units per second */
    double shift_dvar;   /* EW variance of the chart statistic (fast - baseline) */
    double rate_mean, rate_var;
    double drift_fast, drift_slow; /* detect_drift.c: a fast EWMA and the trendless anchor */
    double drift_var, drift_sum;   /* the spread of their gap; its CUSUM (sign: side) */
    uint32_t drift_back;           /* samples left of the anchor's restart (0: none) */
    double stuck_ref;
    struct series_window win[TG_ENGINE_SERIES_WINDOWS];
    /* Tail: "<device>\0<metric>\0" padded to 8 bytes first (a lookup compares it, so it
     * sits next to the fields scoring reads), then the level window (level_window.c:
     * level_window__bytes), the seasonal buckets and the predict detector's model when the
     * rule has those detectors on. */
    _Alignas(8) unsigned char tail[];
};

/* Where a series' hot part starts (the cold fields above it are 48 bytes). */
#define SERIES_HOT offsetof(struct series, hash)

static inline size_t series__key_bytes(size_t dev_len, size_t metric_len)
{
    return (dev_len + metric_len + 2 + 7) & ~(size_t)7;
}
static inline const char *series__device(const struct series *s, const struct detect_params *dp)
{
    (void)dp;
    return (const char *)s->tail;
}
static inline const char *series__metric(const struct series *s, const struct detect_params *dp)
{
    (void)dp;
    return (const char *)s->tail + s->dev_len + 1;
}
/* The level detector's window (level_window.c), right after the key. */
static inline unsigned char *series__level(struct series *s)
{
    return s->tail + series__key_bytes(s->dev_len, s->metric_len);
}
static inline struct seasonal_bucket *series__buckets(struct series *s,
                                                      const struct detect_params *dp)
{
    return (struct seasonal_bucket *)(void *)(s->tail +
                                              series__key_bytes(s->dev_len, s->metric_len) +
                                              dp->ring_bytes);
}

/* The predict detector's state (detect_predict.c), predict__bytes(p) at the end of the tail. */
struct predict_state {
    double mean;     /* slow mean the model predicts around */
    double res_var;  /* EW variance of the one-step residual */
    double step_ms;  /* time step the model learned at; 0: none yet */
    double p_trace;  /* trace of P at the model's start, its ceiling; 0: not started */
    uint32_t n;      /* residuals learned since the model started (saturating) */
    float dt_dev;    /* EW mean of |time step - step_ms|, ms: how unevenly the series samples */
    uint8_t hist_n;  /* contiguous samples in the history, at most p */
    uint8_t run;     /* outliers in a row */
    int16_t slot_off; /* the newest history sample, when it is a prediction standing in for a
                       * sample taken off its slot: how far off, in 1e-5 steps; 0: none */
    uint16_t stand_mask; /* bit i: history[i] is such a stand-in */
    uint16_t pad_;
    double v[];      /* w[p], history[p] (newest first), P (p x p, lower triangle packed) */
};
static inline struct predict_state *series__predict(struct series *s,
                                                    const struct detect_params *dp)
{
    return (struct predict_state *)(void *)(s->tail +
                                            series__key_bytes(s->dev_len, s->metric_len) +
                                            dp->ring_bytes + dp->seasonal_bytes);
}
/* Bytes of the state of an AR(order) model; doubles of its v[]. */
size_t predict__bytes(int order);
size_t predict__doubles(int order);
/* Clears the state to "never seen a sample". */
void predict__reset(struct series *s, const struct detect_params *dp);

/* ---- the level detector's rolling window: level_window.c ---------------------------------
 * The last `window` values of a series in sorted order, each tagged with its ring slot, in
 * level_window__bytes(window) bytes of the series' tail. n is the series' level_n (values
 * held), pos its level_pos (the slot the next value takes; while n < window, pos == n). */
size_t level_window__bytes(int window);
/* level_window__push, __median, __mad_raw: inline, in level_window.h. */
/* The values by ring slot: ring[0 .. n) (what snapshots carry). */
void level_window__ring(const unsigned char *lw, int window, int n, double *ring);
/* Builds the window from ring[0 .. n), slots 0 .. n-1 (a decoded snapshot). */
void level_window__load(unsigned char *lw, int window, const double *ring, int n);

/* Bytes of a series with this rule and key. */
size_t series__size(const struct detect_params *dp, size_t dev_len, size_t metric_len);
/* Sets s->pf_bytes and s->pf_bucket for its rule and key (series_table.c prefetches by them). */
void series__set_prefetch(struct series *s, const struct detect_params *dp);

#define DETECT_DAY_MS INT64_C(86400000)
/* The time of day (ms, 0 .. a day) of event time ts, and in *day its day number (UTC); the
 * seasonal detector's and the lookup's prefetch's. */
static inline int32_t detect__time_of_day(int64_t ts, int64_t *day)
{
    /* One division by the constant (the floor for times before the epoch), the rest from it. */
    int64_t d = ts / DETECT_DAY_MS;
    d -= ts - d * DETECT_DAY_MS < 0;
    *day = d;
    return (int32_t)(ts - d * DETECT_DAY_MS);
}

/* The seasonal bucket of a time of day (detect__time_of_day), the last one for the day's
 * remainder when the buckets do not divide it evenly. In 32 bits (a day's ms fit): a 64-bit
 * division costs several times more. */
static inline int32_t detect__bucket_index(const struct detect_params *dp, int32_t tod)
{
    int32_t bi = tod / dp->seasonal_bucket_ms;
    return bi < dp->seasonal_buckets ? bi : dp->seasonal_buckets - 1;
}

/* Resets a series' detector state to "never seen a sample" (windows and alerts untouched). */
void detect__reset(struct series *s, const struct detect_params *dp);
/* Fills dp's derived constants from its settings (after they are read). */
void detect__derive(struct detect_params *dp);

/* What one point did to the detectors. */
struct detect_result {
    bool scored;                 /* false: warm-up, the detectors only learned */
    double ratio[DET__COUNT];    /* statistic / threshold: 1 = at its threshold */
    double baseline[DET__COUNT]; /* what the detector expected */
    double r;                    /* max ratio after noise adaptation */
    int dominant;                /* enum detector with the largest ratio */
    double score;                /* combined, [0, 1) */
};

/* Feeds one sample, later than s->last_ts (or the first), to every detector of dp: scores
 * it against what they learned, then learns it. res->score is left 0: detect__score(res->r)
 * is the point's score, computed by whoever reads it. */
void detect__point(struct series *s, const struct detect_params *dp, int64_t ts, double x,
                   struct detect_result *res);

/* An alert opened at adapted ratio r (noise adaptation on): a modest crossing (r < 2) on a
 * series makes the next one need 1.5 times more, decaying back over about a day of samples;
 * a series whose noise keeps crossing the threshold stops alerting after a few. */
void detect__opened(struct series *s, const struct detect_params *dp, double r);

/* The predict detector's part of detect__point: scores x against the model's prediction
 * (ratio and baseline in res), then learns it. dt_ms: time since the series' last sample,
 * negative for its first; floor: the series' scale floor. */
void predict__point(struct series *s, const struct detect_params *dp, double dt_ms, double x,
                    double floor, struct detect_result *res);
/* detect_drift.c: samples the drift test's anchor averages afresh after a reported excursion
 * ended, before its sum scores again (the bound of series.drift_back). */
#define DRIFT_BACK 100
/* detect_drift.c: the drift test of one point, run after the shift chart scored it (so
 * res->ratio[DET_SHIFT] holds the chart's ratio) and before anything learned it. */
void detect__drift(struct series *s, const struct detect_params *dp, double x, bool warm,
                   double level_var, double floor, struct detect_result *res);

/* The score of a ratio: 1 - 2^-(r^2), 0.5 at r = 1. */
double detect__score(double r);

/* ---- series table ----------------------------------------------------------------------- */

struct series_table;

struct series_table *series_table__new(void);
void series_table__destroy(struct series_table *st); /* frees every series too */
uint32_t series_table__hash(int32_t partition, const char *device, size_t dev_len,
                            const char *metric, size_t metric_len);
/* The same in two steps, so a reading hashes its device once for all its metrics. */
uint32_t series_table__hash_device(const char *device, size_t dev_len);
uint32_t series_table__hash_metric(uint32_t device_hash, int32_t partition, const char *metric,
                                   size_t metric_len);
/* The series or NULL. */
struct series *series_table__find(const struct series_table *st, const struct tg_engine_config *ec,
                                  uint32_t hash, int32_t partition, const char *device,
                                  size_t dev_len, const char *metric, size_t metric_len);
/* Prefetch hints for a lookup of hash: the slot (stage 1), then the series the slot holds
 * (stage 2, once the slot has arrived). A reading's metrics are looked up together so that
 * their cache misses overlap. No effect on results. */
void series_table__prefetch_slot(const struct series_table *st, uint32_t hash);
void series_table__prefetch_series(const struct series_table *st,
                                   const struct tg_engine_config *ec, uint32_t hash,
                                   int32_t tod);
/* Inserts s (not present; ownership moves to the table). TG_ERR_NOMEM. */
tg_err series_table__insert(struct series_table *st, struct series *s);
size_t series_table__count(const struct series_table *st);
size_t series_table__bytes(const struct series_table *st); /* slots array only */
/* Calls fn on every series (slot order: not deterministic across restores). */
void series_table__foreach(struct series_table *st, void (*fn)(void *ud, struct series *s),
                           void *ud);
/* Removes and frees every series for which pred is true. */
void series_table__remove_if(struct series_table *st, bool (*pred)(void *ud, struct series *s),
                             void *ud);

/* ---- snapshots -------------------------------------------------------------------------- */

/* Encodes a series' state into buf (TG_ENGINE_SNAPSHOT_MAX bytes); returns its length. */
size_t snapshot__encode_series(const struct series *s, const struct detect_params *dp,
                               unsigned char *buf);
/* Decodes value into s (already laid out for dp, key set); TG_ERR_MALFORMED when it does not
 * decode or was written for another layout (the series then starts cold). */
tg_err snapshot__decode_series(struct series *s, const struct detect_params *dp,
                               const unsigned char *value, size_t len);
struct partition_state;
/* The partition value of ps (max_ts, has_max and its holes) into buf (at least
 * SNAPSHOT_PARTITION_MAX bytes); returns its length. */
#define SNAPSHOT_PARTITION_MAX (1 + 1 + 8 + 1 + TG_ENGINE_PARTITION_HOLES * 16)
size_t snapshot__encode_partition(const struct partition_state *ps, unsigned char *buf);
/* Decodes a partition value (version 1, or 2 with holes) into out's has_max, max_ts,
 * n_holes and holes (nothing else of out is touched); TG_ERR_MALFORMED when it does not. */
tg_err snapshot__decode_partition(const unsigned char *value, size_t len,
                                  struct partition_state *out);

/* ---- the engine object: engine.c, engine_window.c, engine_output.c, engine_state.c ---- */

struct wbucket {
    int64_t end; /* window end shared by the listed series */
    struct series **v;
    size_t n, cap;
};

/* A span of event time in which a partition had no record at all: (from, to), the partition's
 * highest event time before it and the event time of the record that ended it. */
struct part_hole {
    int64_t from, to;
};

struct partition_state {
    bool tracked;
    bool has_max;  /* max_ts is set: the watermark exists */
    bool dirty;    /* max_ts or the holes changed since the last snapshot */
    uint8_t n_holes; /* in holes[0..n_holes), oldest first */
    int64_t max_ts;
    struct part_hole holes[TG_ENGINE_PARTITION_HOLES];
    struct wbucket *buckets; /* by ascending end */
    size_t n_buckets, cap_buckets;
};

struct tombstone {
    int32_t partition;
    char *key; /* "<partition>/<device>/<metric>" */
    size_t len;
};

struct tg_engine {
    const struct tg_engine_config *ec;
    tg_engine_emit_fn emit;
    void *emit_ud;
    tg_engine_point_fn point_fn;
    void *point_ud;
    struct series_table *st;
    struct partition_state *parts; /* indexed by partition number */
    size_t n_parts;
    struct series **dirty;
    size_t n_dirty, cap_dirty;
    struct tombstone *tombs; /* keys of evicted series, for the next snapshot */
    size_t n_tombs, cap_tombs;
    size_t series_bytes;
    struct tg_engine_stats stats;
    struct jbuf out;
    char idbuf[TG_DEVICE_ID_MAX + 4 * 64 + 64];
    char *id;      /* alert id: idbuf, or heap when the metric name is long */
    size_t id_cap;
};

static inline int64_t engine__floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Records the hole (ps->max_ts, ts) in ps (counted, logged). engine_hole.c */
void engine__hole_record(struct tg_engine *en, struct partition_state *ps, int32_t partition,
                         int64_t ts);
/* A reading at ts is about to raise ps's highest event time: when it is more than the hole
 * limit past it, records a hole. Inline: it runs for most readings, and records nearly never. */
static inline void engine__hole_note(struct tg_engine *en, struct partition_state *ps,
                                     int32_t partition, int64_t ts)
{
    int64_t limit = en->ec->partition_hole_ms;
    if (limit > 0 && ps->has_max && ts - ps->max_ts > limit)
        engine__hole_record(en, ps, partition, ts);
}

static inline struct partition_state *engine__part_get(struct tg_engine *en, int32_t partition)
{
    if (partition < 0 || (size_t)partition >= en->n_parts || !en->parts[partition].tracked)
        return NULL;
    return &en->parts[partition];
}

/* Puts s on the dirty list (its state changed since the last snapshot). engine.c */
void engine__mark_dirty(struct tg_engine *en, struct series *s);
/* The series of (partition, device, metric) whose hash is h, created cold when new; NULL at
 * max_series or out of memory. engine.c */
struct series *engine__series_get(struct tg_engine *en, int32_t partition, const char *device,
                                  size_t dev_len, uint32_t h, const char *metric,
                                  size_t metric_len, bool *created);

/* ---- windows: engine_window.c ---- */
/* Lists s under the open window ending at end. TG_ERR_NOMEM. */
tg_err engine__bucket_add(struct partition_state *ps, int64_t end, struct series *s);
void engine__part_free(struct partition_state *ps);

/* ---- holes in a partition's records: engine_hole.c ---- */
/* How much of the event time (from, to) the partition as a whole was silent in: its overlap
 * with ps's recent holes, each widened by the hole limit either side for device
 * clocks that are off from the partition's; at most to - from. */
int64_t engine__hole_overlap(const struct tg_engine *en, const struct partition_state *ps,
                             int64_t from, int64_t to);
/* qsort_r order of series pointers: device, then metric (arg: the engine config). */
int engine__series_cmp(const void *a, const void *b, void *arg);
/* Emits, in (device, metric) order per window end, every window the watermark passed. */
void engine__close_windows(struct tg_engine *en, struct partition_state *ps, int64_t watermark);
/* Adds the point (ts, x) to its window of s, opening the window if needed. */
void engine__window_merge(struct tg_engine *en, struct partition_state *ps, struct series *s,
                          int64_t ts, double x);

/* ---- outputs: engine_output.c ---- */

struct alert_point {
    const char *state;
    enum detector kind;
    int64_t start_ts, end_ts, ts;
    double value, baseline, score;
    const struct detect_result *res; /* NULL: no detector detail (silence) */
    double calib;
};

void engine__emit_aggregate(struct tg_engine *en, struct series *s, const struct series_window *w);
void engine__emit_alert(struct tg_engine *en, struct series *s, const struct alert_point *ap);

/* ---- state: engine_state.c ---- */

#define EVICT_CHECK_MS INT64_C(3600000) /* event time between two eviction scans */
/* Forgets the series of partition idle for series_idle_ms before watermark. */
void engine__evict_idle(struct tg_engine *en, int32_t partition, int64_t watermark);

#endif
