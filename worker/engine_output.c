/*
 * engine_output.c - the engine's output records: the aggregate and alert JSON documents
 * (README: "Outputs") and the deterministic alert id "<device>/<metric>/<kind>/<start_ts>".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

void engine__emit_aggregate(struct tg_engine *en, struct series *s, const struct series_window *w)
{
    const struct detect_params *dp = engine__params(en->ec, s->rule);
    struct jbuf *jb = &en->out;
    jbuf__reset(jb);
    /* Keys as literals with their punctuation: an aggregate per series and window is the
     * engine's most frequent output. */
    JBUF_LIT(jb, "{\"device\":");
    jbuf__str(jb, series__device(s, dp), s->dev_len);
    JBUF_LIT(jb, ",\"metric\":");
    jbuf__str(jb, series__metric(s, dp), s->metric_len);
    JBUF_LIT(jb, ",\"window_start\":");
    jbuf__i64(jb, w->start);
    JBUF_LIT(jb, ",\"window_end\":");
    jbuf__i64(jb, w->start + en->ec->window_ms);
    JBUF_LIT(jb, ",\"count\":");
    jbuf__i64(jb, w->count);
    JBUF_LIT(jb, ",\"min\":");
    jbuf__num(jb, w->min);
    JBUF_LIT(jb, ",\"max\":");
    jbuf__num(jb, w->max);
    JBUF_LIT(jb, ",\"mean\":");
    jbuf__num(jb, w->sum / w->count);
    JBUF_LIT(jb, ",\"last\":");
    jbuf__num(jb, w->last);
    JBUF_LIT(jb, "}");
    if (jb->oom)
        return;
    en->stats.aggregates++;
    struct tg_engine_output out = {
        .kind = TG_ENGINE_AGGREGATE,
        .partition = s->partition,
        .key = series__device(s, dp),
        .key_len = s->dev_len,
        .value = jb->data,
        .value_len = jb->len,
        .ts_ms = w->start + en->ec->window_ms,
    };
    en->emit(en->emit_ud, &out);
}

/* Builds the alert id "<device>/<metric>/<kind>/<start_ts>" in en->id. */
static const char *make_id(struct tg_engine *en, const struct series *s,
                           const struct detect_params *dp, enum detector kind, int64_t start)
{
    size_t need = (size_t)s->dev_len + s->metric_len + 64;
    if (need > en->id_cap) {
        char *p = en->id == en->idbuf ? malloc(need) : realloc(en->id, need);
        if (!p)
            return NULL;
        en->id = p;
        en->id_cap = need;
    }
    snprintf(en->id, en->id_cap, "%.*s/%.*s/%s/%" PRId64, (int)s->dev_len,
             series__device(s, dp), (int)s->metric_len, series__metric(s, dp),
             detect__name(kind), start);
    return en->id;
}


void engine__emit_alert(struct tg_engine *en, struct series *s, const struct alert_point *ap)
{
    const struct detect_params *dp = engine__params(en->ec, s->rule);
    const char *id = make_id(en, s, dp, ap->kind, ap->start_ts);
    if (!id)
        return;
    struct jbuf *jb = &en->out;
    jbuf__reset(jb);
    jbuf__lit(jb, "{");
    jbuf__key(jb, "id", true);
    jbuf__str(jb, id, strlen(id));
    jbuf__key(jb, "device", false);
    jbuf__str(jb, series__device(s, dp), s->dev_len);
    jbuf__key(jb, "metric", false);
    jbuf__str(jb, series__metric(s, dp), s->metric_len);
    jbuf__key(jb, "kind", false);
    jbuf__lit(jb, "\"");
    jbuf__lit(jb, detect__name(ap->kind));
    jbuf__lit(jb, "\"");
    jbuf__key(jb, "state", false);
    jbuf__lit(jb, "\"");
    jbuf__lit(jb, ap->state);
    jbuf__lit(jb, "\"");
    jbuf__key(jb, "detectors", false);
    jbuf__lit(jb, "{");
    bool first = true;
    if (ap->res) {
        /* The detectors that fired at this point, each with its own score. */
        for (int d = 0; d < DET__COUNT; d++) {
            double sc = detect__score(ap->res->ratio[d] / ap->calib);
            if (sc < en->ec->alert_threshold && d != ap->res->dominant)
                continue;
            if (ap->res->ratio[d] <= 0)
                continue;
            jbuf__key(jb, detect__name((enum detector)d), first);
            jbuf__num(jb, sc);
            first = false;
        }
    } else {
        jbuf__key(jb, detect__name(ap->kind), true);
        jbuf__num(jb, ap->score);
    }
    jbuf__lit(jb, "}");
    jbuf__key(jb, "score", false);
    jbuf__num(jb, ap->score);
    jbuf__key(jb, "value", false);
    jbuf__num(jb, ap->value);
    jbuf__key(jb, "baseline", false);
    jbuf__num(jb, ap->baseline);
    jbuf__key(jb, "start_ts", false);
    jbuf__i64(jb, ap->start_ts);
    jbuf__key(jb, "end_ts", false);
    jbuf__i64(jb, ap->end_ts);
    jbuf__key(jb, "ts", false);
    jbuf__i64(jb, ap->ts);
    jbuf__lit(jb, "}");
    if (jb->oom)
        return;
    if (ap->state[0] == 'o')
        en->stats.alerts_open++;
    else if (ap->state[0] == 'u')
        en->stats.alerts_update++;
    else
        en->stats.alerts_close++;
    struct tg_engine_output out = {
        .kind = TG_ENGINE_ALERT,
        .partition = s->partition,
        .key = series__device(s, dp),
        .key_len = s->dev_len,
        .value = jb->data,
        .value_len = jb->len,
        .ts_ms = ap->ts,
        .alert_id = id,
        .alert_kind = detect__name(ap->kind),
        .alert_state = ap->state,
    };
    en->emit(en->emit_ud, &out);
}
