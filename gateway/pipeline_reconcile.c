/*
 * pipeline_reconcile.c - after a restart, what the last run put in Kafka that the journal
 * and the dedup window do not know (reconcile_kafka.h has the why).
 *
 * The pipeline keeps, per partition of the telemetry topic, the highest offset Kafka
 * confirmed (kmarks) and saves it in the same journal transaction as the dedup window, so
 * the pair says: "every reading below these offsets is in this window". At the next start,
 * before anything is produced:
 *   1. the saved marks are read back (pipeline__marks_load, at recover);
 *   2. a reader (reconcile_kafka.c, its own thread) takes each partition from its mark to
 *      its end and keeps the readings this gateway wrote; ingestion goes on meanwhile, only
 *      producing waits (nothing new can reach Kafka in between);
 *   3. the result is applied: each reading found is fed to the dedup window (a node's
 *      resend is then a duplicate) and settled in the acker (it is durable: Kafka has it),
 *      and every open record with the same identity (a journal row whose done mark the dead
 *      run never committed, or a resend taken since the start) is marked done;
 *   4. the marks become the end offsets found, and the next commit saves them with the
 *      window; only after that commit does producing start, so that a kill -9 in between
 *      still finds a saved point that lies below everything this run sends.
 * A journal that never saved marks (its first start with this) reads nothing back and only
 * learns the end offsets (steps 4 onward).
 */
#include "pipeline_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical_decode.h"
#include "gateway_config.h"
#include "log.h"

#define MARKS_KEY "kafka.marks"
#define MARKS_MAGIC "tgmarks1"

/* Format: "tgmarks1 <topic>\n" then one "<partition> <offset>\n" per known partition. A
 * mark of another topic (the config changed) is not used. */
void pipeline__marks_load(struct tg_pipeline *pl)
{
    void *blob = NULL;
    size_t len = 0;
    if (tg_journal_state_get(pl->jr, MARKS_KEY, &blob, &len) != TG_OK || !blob)
        return;
    char *text = malloc(len + 1);
    if (!text) {
        free(blob);
        return;
    }
    memcpy(text, blob, len);
    text[len] = '\0';
    free(blob);
    char *nl = strchr(text, '\n');
    const char *topic = tg_config_get_str(pl->cfg, "kafka", "topic");
    size_t mlen = strlen(MARKS_MAGIC);
    if (!nl || strncmp(text, MARKS_MAGIC " ", mlen + 1) != 0 ||
        (size_t)(nl - text) != mlen + 1 + strlen(topic) ||
        strncmp(text + mlen + 1, topic, strlen(topic)) != 0) {
        TG_LOG_WARN("kafka", "the saved Kafka offsets are for another topic or unreadable: "
                             "not reading back what the last run sent");
        free(text);
        return;
    }
    pl->marks_loaded = true;
    for (char *line = nl + 1; *line;) {
        char *end;
        unsigned long long p = strtoull(line, &end, 10);
        long long off = end != line ? strtoll(end, &end, 10) : -1;
        if (end == line || *end != '\n' || p > 1000000)
            break;
        if (p >= pl->n_kmarks) {
            int64_t *m = realloc(pl->kmarks, (p + 1) * sizeof *m);
            if (!m)
                break;
            for (size_t i = pl->n_kmarks; i <= p; i++)
                m[i] = -1;
            pl->kmarks = m;
            pl->n_kmarks = p + 1;
        }
        pl->kmarks[p] = off;
        line = end + 1;
    }
    free(text);
}

static void merge_one(struct tg_pipeline *pl, const int64_t *marks, size_t n)
{
    if (n > pl->n_kmarks) {
        int64_t *m = realloc(pl->kmarks, n * sizeof *m);
        if (!m)
            return; /* the marks stay lower: the next start reads back more */
        for (size_t i = pl->n_kmarks; i < n; i++)
            m[i] = -1;
        pl->kmarks = m;
        pl->n_kmarks = n;
    }
    for (size_t p = 0; p < n; p++)
        if (marks[p] > pl->kmarks[p])
            pl->kmarks[p] = marks[p];
}

void pipeline__marks_merge(struct tg_pipeline *pl)
{
    /* Before the read-back is applied, what this run confirmed is nothing (it produces
     * nothing), and the saved marks must stay as they are. */
    if (!pl->eg || pipeline__reconcile_holds(pl))
        return;
    const int64_t *marks;
    size_t n = tg_egress_confirmed_offsets(pl->eg, &marks);
    merge_one(pl, marks, n);
}

tg_err pipeline__marks_save(struct tg_pipeline *pl)
{
    /* Nothing learnt yet (no read-back finished, none loaded): leave the saved ones. */
    if (pl->reconcile_phase == RECONCILE_OFF ||
        (pipeline__reconcile_holds(pl) && pl->reconcile_phase != RECONCILE_APPLIED))
        return TG_OK;
    const char *topic = tg_config_get_str(pl->cfg, "kafka", "topic");
    size_t cap = strlen(MARKS_MAGIC) + strlen(topic) + 3 + pl->n_kmarks * 42;
    char *text = malloc(cap);
    if (!text)
        return TG_ERR_NOMEM;
    size_t len = (size_t)snprintf(text, cap, "%s %s\n", MARKS_MAGIC, topic);
    for (size_t p = 0; p < pl->n_kmarks; p++)
        if (pl->kmarks[p] >= 0)
            len += (size_t)snprintf(text + len, cap - len, "%zu %" PRId64 "\n", p,
                                    pl->kmarks[p]);
    tg_err rc = tg_journal_state_put(pl->jr, MARKS_KEY, text, len);
    free(text);
    return rc;
}

static void start(struct tg_pipeline *pl)
{
    struct tg_reconcile_opts o = {
        .brokers = pl->egress_opts.brokers,
        .topic = pl->egress_opts.topic,
        .gateway_id = pl->gateway_id,
        .rdkafka_conf = pl->egress_opts.rdkafka_conf,
        .marks = pl->kmarks,
        .n_marks = pl->n_kmarks,
        .read = pl->marks_loaded,
    };
    if (tg_reconcile_start(&o, &pl->rcl) != TG_OK) {
        TG_LOG_ERROR("kafka", "cannot start reading back what the last run sent (out of "
                              "memory): sending without (a reading may reach Kafka twice)");
        pl->reconcile_phase = RECONCILE_DONE;
        return;
    }
    pl->reconcile_phase = RECONCILE_RUNNING;
}

/* Marks done the open telemetry records of s that Kafka already holds. */
static size_t skip_found(struct tg_pipeline *pl, struct seg *s, struct tg_canonical_decoder *cd)
{
    if (s->n_open == s->n_inflight)
        return 0;
    if (!s->data && pipeline__load_seg(pl, s) != TG_OK)
        return 0; /* read again when produced; a possible duplicate, not a loss */
    size_t n = 0;
    for (size_t idx = 0; idx < tg_segment_count(s->data); idx++) {
        struct tg_jrecord rec;
        tg_segment_get(s->data, idx, &rec);
        size_t bi = (size_t)(rec.rid - s->first_rid);
        if (rec.kind != TG_JREC_TELEMETRY || bit_get(s->done, bi) || bit_get(s->inflight, bi))
            continue;
        struct tg_reading r;
        if (tg_canonical_decode(cd, rec.value, rec.value_len, -1, &r, NULL) != TG_OK ||
            !tg_reconcile_contains(pl->rcl, &r))
            continue;
        pipeline__set_done_bit(pl, s, bi);
        if (pl->ack)
            tg_acker_confirmed(pl->ack, rec.rid);
        n++;
    }
    return n;
}

static void apply(struct tg_pipeline *pl)
{
    size_t found = tg_reconcile_found(pl->rcl);
    int64_t now = wall_ms();
    for (size_t i = 0; i < found; i++) {
        struct tg_reading r;
        tg_reconcile_reading(pl->rcl, i, &r);
        (void)tg_dedup_check(pl->dd, &r, now);
        if (pl->ack && r.has_seq)
            tg_acker_settle(pl->ack, r.device, strlen(r.device), r.boot, r.seq);
    }
    size_t skipped = 0;
    struct tg_canonical_decoder *cd = found ? tg_canonical_decoder_new(NULL) : NULL;
    for (struct seg *s = pl->head; s && cd;) {
        struct seg *next = s->next;
        skipped += skip_found(pl, s, cd);
        if (!s->persisted && seg_finished(s))
            pipeline__list_remove(pl, s);
        s = next;
    }
    tg_canonical_decoder_destroy(cd);
    tg_counter_add(pl->m.reconcile_found, found);
    tg_counter_add(pl->m.reconcile_skipped, skipped);
    /* From now on the marks are the ends found: this run's records all lie above them. */
    const int64_t *ends;
    size_t n = tg_reconcile_ends(pl->rcl, &ends);
    merge_one(pl, ends, n);
    if (pl->marks_loaded || found)
        TG_LOG_INFO("kafka", "read back %" PRIu64 " records the last run may have sent after "
                             "its last saved point: %zu readings of this gateway, %zu of them "
                             "still in the journal (not sent again)%s",
                    tg_reconcile_records_read(pl->rcl), found, skipped,
                    tg_reconcile_truncated(pl->rcl) ? "; stopped at the read limit" : "");
    tg_reconcile_destroy(pl->rcl);
    pl->rcl = NULL;
    pl->reconcile_phase = RECONCILE_APPLIED;
    pl->force_state_save = true;
    pl->next_commit_ms = mono_ms(); /* sending waits for that commit: make it now */
}

void pipeline__reconcile_step(struct tg_pipeline *pl)
{
    switch (pl->reconcile_phase) {
    case RECONCILE_NEED:
        start(pl);
        break;
    case RECONCILE_RUNNING:
        if (tg_reconcile_done(pl->rcl))
            apply(pl);
        break;
    default:
        break;
    }
}
