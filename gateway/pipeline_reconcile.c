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
 *   3. what it found is applied as it comes, every CHECKPOINT_MS: each reading is fed to
 *      the dedup window (a node's resend is then a duplicate) and settled in the acker (it
 *      is durable: Kafka has it), and an open record with the same identity (a journal row
 *      whose done mark the dead run never committed, or a resend taken since the start,
 *      both indexed by identity when the read-back starts or the reading is taken) is
 *      marked done; the marks move to where the reader got, and the next commit saves them
 *      with the window and the done marks, so a kill during a long read-back (a crash loop
 *      faster than the read) does not send the next run back to its start;
 *   4. the marks become the end offsets found, and the next commit saves them with the
 *      window; only after that commit does producing start, so that a kill -9 in between
 *      still finds a saved point that lies below everything this run sends.
 * A journal that never saved marks (its first start with this) reads nothing back and only
 * learns the end offsets (steps 4 onward).
 */
#include "pipeline_internal.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical_decode.h"
#include "gateway_config.h"
#include "log.h"
#include "strmap.h"

#define MARKS_KEY "kafka.marks"
/* While a read-back runs, what it found is applied and saved this often. */
#define CHECKPOINT_MS 500
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
    /* Nothing known (none loaded, no read-back finished): leave the saved ones. Marks
     * loaded and not yet moved are saved as they were; moved ones came from a checkpoint. */
    if (pl->reconcile_phase == RECONCILE_OFF || pl->n_kmarks == 0)
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

/* The open telemetry records (the journal's backlog, and what is taken while the read-back
 * runs) by identity, so that a reading found in Kafka marks its copy here done. */
static void index_record(struct tg_pipeline *pl, const struct tg_reading *r, uint64_t rid)
{
    char key[TG_DEVICE_ID_MAX + 64];
    size_t klen = tg_reconcile_identity(r, key, sizeof key);
    if (!klen)
        return;
    if (pl->n_rb_rids == pl->cap_rb_rids) {
        size_t cap = pl->cap_rb_rids ? pl->cap_rb_rids * 2 : 1024;
        uint64_t *nr = realloc(pl->rb_rids, cap * sizeof *nr);
        if (!nr)
            return; /* a possible duplicate, not a loss */
        pl->rb_rids = nr;
        pl->cap_rb_rids = cap;
    }
    if (tg_strmap_put(pl->rb_open, key, klen, (uint32_t)pl->n_rb_rids) == TG_OK)
        pl->rb_rids[pl->n_rb_rids++] = rid;
}

void pipeline__reconcile_track(struct tg_pipeline *pl, const struct tg_reading *r, uint64_t rid)
{
    if (pl->rb_open && pipeline__reconcile_holds(pl))
        index_record(pl, r, rid);
}

void pipeline__journal_readings_begin(struct tg_pipeline *pl)
{
    if (tg_config_get_bool(pl->cfg, "kafka", "reconcile_on_start"))
        pl->rb_open = tg_strmap_new();
}

void pipeline__journal_readings_seg(struct tg_pipeline *pl, struct seg *s,
                                    struct tg_canonical_decoder *cd, int64_t now)
{
    for (size_t idx = 0; idx < tg_segment_count(s->data); idx++) {
        struct tg_jrecord rec;
        tg_segment_get(s->data, idx, &rec);
        size_t bi = (size_t)(rec.rid - s->first_rid);
        struct tg_reading r;
        if (rec.kind != TG_JREC_TELEMETRY || bit_get(s->done, bi) ||
            tg_canonical_decode(cd, rec.value, rec.value_len, -1, &r, NULL) != TG_OK)
            continue;
        /* The journal runs ahead of the saved window by up to a save interval: a node's
         * resend of a journaled reading must be a duplicate, not a second record. */
        (void)tg_dedup_check(pl->dd, &r, now);
        if (pl->rb_open && pl->n_rb_rids < TG_RECONCILE_INDEX_MAX)
            index_record(pl, &r, rec.rid);
    }
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
    if (!pl->rb_open)
        pl->rb_open = tg_strmap_new();
    if (!pl->rb_open || tg_reconcile_start(&o, &pl->rcl) != TG_OK) {
        TG_LOG_ERROR("kafka", "cannot start reading back what the last run sent (out of "
                              "memory): sending without (a reading may reach Kafka twice)");
        tg_strmap_destroy(pl->rb_open);
        pl->rb_open = NULL;
        pl->reconcile_phase = RECONCILE_DONE;
        return;
    }
    pl->rb_taken = 0;
    pl->rb_next_checkpoint_ms = mono_ms() + CHECKPOINT_MS;
    pl->reconcile_phase = RECONCILE_RUNNING;
}

/* One reading found in Kafka: the dedup window learns it (a node's resend is then a
 * duplicate), the acker settles it (it is durable), and an open copy here is done. */
static void take_found(void *ud, const struct tg_reading *r)
{
    struct tg_pipeline *pl = ud;
    pl->rb_found++;
    (void)tg_dedup_check(pl->dd, r, pl->rb_now_ms);
    if (pl->ack && r->has_seq)
        tg_acker_settle(pl->ack, r->device, strlen(r->device), r->boot, r->seq);
    char key[TG_DEVICE_ID_MAX + 64];
    size_t klen = tg_reconcile_identity(r, key, sizeof key);
    uint32_t k;
    if (!klen || !tg_strmap_get(pl->rb_open, key, klen, &k))
        return;
    uint64_t rid = pl->rb_rids[k];
    struct seg *s = pipeline__find_seg(pl, rid);
    if (!s)
        return;
    size_t bi = (size_t)(rid - s->first_rid);
    if (bit_get(s->done, bi) || bit_get(s->inflight, bi))
        return;
    pipeline__set_done_bit(pl, s, bi);
    if (pl->ack)
        tg_acker_confirmed(pl->ack, rid);
    pl->rb_skipped++;
}

/* Applies what the reader found since the last checkpoint and moves the marks to where it
 * read; the next commit saves both with the dedup window, so a kill during a long read-back
 * does not send the next run back to the start of it. */
static void checkpoint(struct tg_pipeline *pl)
{
    int64_t pos[1024];
    size_t n_pos = 0;
    pl->rb_now_ms = wall_ms();
    size_t before = pl->rb_taken;
    pl->rb_taken = tg_reconcile_take(pl->rcl, pl->rb_taken, take_found, pl, pos,
                                     sizeof pos / sizeof pos[0], &n_pos);
    bool moved = pl->rb_taken != before;
    if (pl->marks_loaded) { /* else nothing was read, only end offsets learnt */
        for (size_t p = 0; p < n_pos && !moved; p++)
            moved = p >= pl->n_kmarks ? pos[p] >= 0 : pos[p] > pl->kmarks[p];
        merge_one(pl, pos, n_pos);
    }
    /* Journal rows whose last record was just marked done go at the commit. */
    for (struct seg *s = pl->head; s;) {
        struct seg *next = s->next;
        if (!s->persisted && seg_finished(s))
            pipeline__list_remove(pl, s);
        s = next;
    }
    if (moved)
        pl->force_state_save = true;
}

static void finish(struct tg_pipeline *pl)
{
    checkpoint(pl);
    size_t found = pl->rb_found, skipped = pl->rb_skipped;
    /* From now on the marks are the ends found: this run's records all lie above them. */
    const int64_t *ends;
    size_t n = tg_reconcile_ends(pl->rcl, &ends);
    merge_one(pl, ends, n);
    if (pl->marks_loaded || found)
        TG_LOG_INFO("kafka", "read back %" PRIu64 " records the last run may have sent after "
                             "its last saved point: %zu readings of this gateway, %zu of them "
                             "still here (not sent again)%s",
                    tg_reconcile_records_read(pl->rcl), found, skipped,
                    tg_reconcile_truncated(pl->rcl) ? "; cut short (see above)" : "");
    tg_reconcile_destroy(pl->rcl);
    pl->rcl = NULL;
    tg_strmap_destroy(pl->rb_open);
    pl->rb_open = NULL;
    free(pl->rb_rids);
    pl->rb_rids = NULL;
    pl->n_rb_rids = pl->cap_rb_rids = 0;
    /* The read-back's buffers (librdkafka's fetched batches, the readings found and their
     * indexes) are free now but stay resident in the allocator's arenas, several times the
     * gateway's steady size after a long read-back: hand them back once. */
    malloc_trim(0);
    /* Counted last: a reader of the metrics who sees them sees the memory handed back. */
    tg_counter_add(pl->m.reconcile_found, found);
    tg_counter_add(pl->m.reconcile_skipped, skipped);
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
        if (tg_reconcile_done(pl->rcl)) {
            finish(pl);
        } else if (mono_ms() >= pl->rb_next_checkpoint_ms) {
            checkpoint(pl);
            pl->rb_next_checkpoint_ms = mono_ms() + CHECKPOINT_MS;
        }
        break;
    default:
        break;
    }
}

void pipeline__reconcile_free(struct tg_pipeline *pl)
{
    tg_reconcile_destroy(pl->rcl);
    pl->rcl = NULL;
    tg_strmap_destroy(pl->rb_open);
    pl->rb_open = NULL;
    free(pl->rb_rids);
    pl->rb_rids = NULL;
}
