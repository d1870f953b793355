/*
 * anomaly.c - the anomaly-injecting sensor wrapper (see anomaly.h).
 */
#include "anomaly.h"

#include <string.h>

#include "sim_rand.h"

struct metric_rule {
    const char *name;
    double scale;
    double lo, hi; /* physical bounds the altered value is kept within */
};

static const struct metric_rule metric_rules[] = {
    {"temperature_c", 1.0, -1e9, 1e9},
    {"humidity_pct", 3.0, 0.0, 100.0},
    {"pressure_hpa", 1.5, -1e9, 1e9},
    {"battery_v", 0.05, 0.0, 1e9},
    {"vibration_g", 0.1, -1e9, 1e9},
};
static const struct metric_rule default_rule = {NULL, 1.0, -1e9, 1e9};

struct anomaly_state {
    struct tg_anomaly_config cfg;
    uint64_t rng;
    uint64_t count;
    bool finished;         /* tg_anomaly_finish(): every read fails */

    bool has_next;         /* an anomaly is planned to start at next_start_ts */
    bool scheduled_once;   /* the first plan was drawn */
    int64_t next_start_ts;
    bool forced;
    enum tg_anomaly_kind forced_kind;
    unsigned forced_metric;
    int64_t forced_duration_ms;

    bool active;
    enum tg_anomaly_kind kind;
    uint32_t metric_pick;  /* resolved to an index of the sample at the first alteration */
    int metric;            /* -1 until resolved */
    const char *metric_name;
    const struct metric_rule *rule;
    int64_t start_ts;      /* the time it began (first sample at or after its planned start) */
    int64_t end_plan_ts;   /* samples after this are no longer altered */
    double magnitude;      /* in units of the metric's scale, signed */
    bool frozen_set;
    double frozen;         /* stuck: the value held */
    bool touched;          /* at least one sample altered or suppressed */
    int64_t min_ts, max_ts;
};

static const char *const kind_names[TG_ANOMALY_KINDS] = {
    "spike", "level_shift", "drift", "stuck", "noise_burst", "silence",
};

const char *tg_anomaly_kind_name(enum tg_anomaly_kind kind)
{
    return (unsigned)kind < TG_ANOMALY_KINDS ? kind_names[kind] : "unknown";
}

void tg_anomaly_setup(void *state, const struct tg_anomaly_config *cfg)
{
    struct anomaly_state *s = state;
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->rng = cfg->seed ? cfg->seed : 1;
    s->metric = -1;
}

static void plan_next(struct anomaly_state *s, int64_t from_ts)
{
    s->scheduled_once = true;
    if (s->cfg.rate_per_hour <= 0) {
        s->has_next = false;
        return;
    }
    double gap_ms = tg_sim_rand_exp(&s->rng, 3600000.0 / s->cfg.rate_per_hour);
    if (gap_ms > 1e15)
        gap_ms = 1e15; /* keeps the sum in range; means "not in this run" */
    s->has_next = true;
    s->next_start_ts = from_ts + 1 + (int64_t)gap_ms;
}

static void end_anomaly(struct anomaly_state *s, int64_t now)
{
    if (s->touched && s->cfg.on_label) {
        struct tg_anomaly_label label = {
            .device = s->cfg.device_id,
            .metric = s->kind == TG_ANOMALY_SILENCE || !s->metric_name ? "*" : s->metric_name,
            .kind = s->kind,
            .start_ts = s->min_ts,
            .end_ts = s->max_ts,
        };
        s->cfg.on_label(s->cfg.label_ud, &label);
    }
    s->active = false;
    if (!s->has_next)
        plan_next(s, s->touched && s->max_ts > now ? s->max_ts : now);
}

static int64_t duration_ms(struct anomaly_state *s, enum tg_anomaly_kind kind)
{
    static const double lo_s[TG_ANOMALY_KINDS] = {0, 120, 300, 60, 30, 30};
    static const double hi_s[TG_ANOMALY_KINDS] = {0, 600, 1200, 300, 180, 180};
    if (kind == TG_ANOMALY_SPIKE)
        return 0;
    return (int64_t)(tg_sim_rand_range(&s->rng, lo_s[kind], hi_s[kind]) * 1000.0);
}

static void begin_anomaly(struct anomaly_state *s, int64_t now)
{
    s->active = true;
    s->count++;
    s->has_next = false;
    s->metric = -1;
    s->metric_name = NULL;
    s->rule = &default_rule;
    s->frozen_set = false;
    s->touched = false;
    s->start_ts = now;
    int64_t dur;
    if (s->forced) {
        s->forced = false;
        s->kind = s->forced_kind;
        s->metric_pick = s->forced_metric;
        dur = s->kind == TG_ANOMALY_SPIKE ? 0 : s->forced_duration_ms;
    } else {
        s->kind = (enum tg_anomaly_kind)tg_sim_rand_below(&s->rng, TG_ANOMALY_KINDS);
        s->metric_pick = tg_sim_rand_below(&s->rng, TG_SENSOR_MAX_METRICS * 7u);
        dur = duration_ms(s, s->kind);
    }
    s->end_plan_ts = now + dur;
    static const double mag_lo[TG_ANOMALY_KINDS] = {6, 3, 4, 0, 3, 0};
    static const double mag_hi[TG_ANOMALY_KINDS] = {12, 6, 8, 0, 5, 0};
    double mag = tg_sim_rand_range(&s->rng, mag_lo[s->kind], mag_hi[s->kind]);
    bool negative = tg_sim_rand_chance(&s->rng, 0.5) && s->kind != TG_ANOMALY_NOISE_BURST;
    s->magnitude = negative ? -mag : mag;
}

static void resolve_metric(struct anomaly_state *s, const struct tg_sensor_sample *smp)
{
    if (s->metric >= 0 || smp->n == 0)
        return;
    s->metric = (int)(s->metric_pick % smp->n);
    s->metric_name = smp->names[s->metric];
    for (size_t i = 0; i < sizeof metric_rules / sizeof metric_rules[0]; i++)
        if (strcmp(metric_rules[i].name, s->metric_name) == 0)
            s->rule = &metric_rules[i];
}

static void mark(struct anomaly_state *s, int64_t now)
{
    if (!s->touched || now < s->min_ts)
        s->min_ts = now;
    if (!s->touched || now > s->max_ts)
        s->max_ts = now;
    s->touched = true;
}

static void alter(struct anomaly_state *s, int64_t now, struct tg_sensor_sample *smp)
{
    resolve_metric(s, smp);
    if (s->metric < 0)
        return;
    double v = smp->values[s->metric];
    double scale = s->rule->scale;
    switch (s->kind) {
    case TG_ANOMALY_SPIKE:
    case TG_ANOMALY_LEVEL_SHIFT:
        v += s->magnitude * scale;
        break;
    case TG_ANOMALY_DRIFT: {
        double span = (double)(s->end_plan_ts - s->start_ts);
        double progress = span > 0 ? (double)(now - s->start_ts) / span : 1.0;
        if (progress < 0)
            progress = 0;
        if (progress > 1)
            progress = 1;
        /* Starts at a tenth of the full offset so that even the first sample is altered. */
        v += s->magnitude * scale * (0.1 + 0.9 * progress);
        break;
    }
    case TG_ANOMALY_STUCK:
        if (!s->frozen_set) {
            s->frozen_set = true;
            s->frozen = v;
        }
        v = s->frozen;
        break;
    case TG_ANOMALY_NOISE_BURST:
        v += s->magnitude * scale * tg_sim_rand_gauss(&s->rng);
        break;
    default:
        break;
    }
    if (v < s->rule->lo)
        v = s->rule->lo;
    if (v > s->rule->hi)
        v = s->rule->hi;
    smp->values[s->metric] = v;
    mark(s, now);
}

static int anomaly_init(void *state, const struct tg_hal *hal, uint8_t addr)
{
    struct anomaly_state *s = state;
    return s->cfg.inner->init(s->cfg.inner_state, hal, addr);
}

static int anomaly_read(void *state, const struct tg_hal *hal, struct tg_sensor_sample *out)
{
    struct anomaly_state *s = state;
    if (s->finished)
        return -1;
    int64_t now = hal->wall_ms(hal->ctx);
    if (!s->scheduled_once && !s->has_next)
        plan_next(s, now);
    if (s->active && now > s->end_plan_ts)
        end_anomaly(s, now);
    if (!s->active && s->has_next && now >= s->next_start_ts)
        begin_anomaly(s, now);

    if (s->active && s->kind == TG_ANOMALY_SILENCE) {
        mark(s, now);
        return -1;
    }
    int rc = s->cfg.inner->read(s->cfg.inner_state, hal, out);
    if (rc != 0)
        return rc;
    if (s->active) {
        alter(s, now, out);
        if (s->kind == TG_ANOMALY_SPIKE)
            end_anomaly(s, now);
    }
    return 0;
}

void tg_anomaly_force(void *state, enum tg_anomaly_kind kind, unsigned metric, int64_t start_ts,
                      int64_t duration_ms)
{
    struct anomaly_state *s = state;
    if (s->active)
        end_anomaly(s, s->touched ? s->max_ts : start_ts);
    s->scheduled_once = true;
    s->has_next = true;
    s->next_start_ts = start_ts;
    s->forced = true;
    s->forced_kind = kind;
    s->forced_metric = metric;
    s->forced_duration_ms = duration_ms < 0 ? 0 : duration_ms;
}

void tg_anomaly_finish(void *state)
{
    struct anomaly_state *s = state;
    if (s->finished)
        return;
    s->has_next = true; /* no new plan while closing */
    if (s->active)
        end_anomaly(s, s->max_ts);
    s->has_next = false;
    s->finished = true;
}

uint64_t tg_anomaly_count(const void *state)
{
    const struct anomaly_state *s = state;
    return s->count;
}

const struct tg_sensor_driver tg_anomaly_driver = {
    .name = "anomaly",
    .state_size = sizeof(struct anomaly_state),
    .init = anomaly_init,
    .read = anomaly_read,
};
