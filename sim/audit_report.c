/*
 * audit_report.c - the reports of `tidegate-sim audit` (audit.h): a human summary and one
 * JSON object, both from a finished comparison.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include "audit_internal.h"

/* ------------------------------------------------------------------------------------------
 * Reports
 */

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 100.0;
}

static void print_ranges(const struct adev *dev, FILE *out)
{
    size_t shown = dev->n_lost_ranges < LOST_RANGES_KEPT ? dev->n_lost_ranges : LOST_RANGES_KEPT;
    for (size_t i = 0; i < shown; i++) {
        const struct seq_range *r = &dev->lost_ranges[i];
        fprintf(out, "%s%" PRIu64 ":%" PRIu64, i ? "," : " ", r->boot, r->lo);
        if (r->hi != r->lo)
            fprintf(out, "-%" PRIu64, r->hi);
    }
    if (dev->n_lost_ranges > shown)
        fprintf(out, ",...");
}

static const char *latency_source(const struct tg_sim_audit *au)
{
    return au->log_append_time ? "kafka_log_append_time" : "audit_receive_time";
}

void tg_sim_audit_print_text(const struct tg_sim_audit *au,
                             const struct tg_sim_audit_context *ctx, size_t max_devices,
                             FILE *out)
{
    const struct tg_sim_audit_result *r = &au->res;
    const struct tg_ledger_totals *t = &au->totals;
    fprintf(out, "tidegate-sim audit: topic %s (%d partitions) against %s\n", ctx->topic,
            ctx->partitions, ctx->ledger_path);
    fprintf(out, "  stopped:      after %.1f s: %s\n", ctx->elapsed_s, ctx->stopped);
    fprintf(out,
            "  ledger:       %zu devices; %" PRIu64 " readings released, %" PRIu64
            " unconfirmed, %" PRIu64 " dropped on devices; injected: %" PRIu64
            " malformed, %" PRIu64 " duplicate publishes, %" PRIu64 " skewed\n",
            t->devices, t->released, t->unconfirmed, t->dropped, t->malformed, t->duplicates,
            t->skewed);
    fprintf(out, "  kafka:        %" PRIu64 " records in %s", r->records, ctx->topic);
    if (ctx->dlq_topic)
        fprintf(out, ", %" PRIu64 " in %s", r->dlq_records, ctx->dlq_topic);
    fprintf(out, "\n");
    fprintf(out, "  delivered:    %" PRIu64 " of %" PRIu64 " released (%.3f%%)\n", r->delivered,
            t->released, pct(r->delivered, t->released));
    fprintf(out, "  lost:         %" PRIu64, r->lost);
    if (r->rejected)
        fprintf(out, " (%" PRIu64 " of them found only in the DLQ with no injected fault to "
                     "explain it)",
                r->rejected);
    fprintf(out, "\n");
    fprintf(out, "  duplicated:   %" PRIu64 "\n", r->duplicated);
    fprintf(out, "  reordered:    %" PRIu64 "\n", r->reordered);
    fprintf(out, "  resent:       %" PRIu64 " (first copies the node sent again after newer "
                 "ones: late, not reordered)\n",
            r->resent);
    fprintf(out, "  unexpected:   %" PRIu64 " (readings the ledger never saw taken)\n",
            r->unexpected);
    if (r->other_runs)
        fprintf(out, "  other runs:   %" PRIu64 " records (another boot than this run's, or "
                     "received before it started): not this run's\n",
                r->other_runs);
    if (r->foreign)
        fprintf(out, "  foreign:      %" PRIu64 " records of %zu devices not in the ledger\n",
                r->foreign, r->foreign_devices);
    if (r->never_connected)
        fprintf(out, "  connected:    %zu of %zu devices never connected to the broker\n",
                r->never_connected, t->devices);
    if (r->undecodable)
        fprintf(out, "  undecodable:  %" PRIu64 " records are not canonical readings\n",
                r->undecodable);
    if (r->dead_lettered)
        fprintf(out, "  dead-lettered: %" PRIu64 " released readings were rejected into the DLQ\n",
                r->dead_lettered);
    fprintf(out,
            "  unconfirmed:  %" PRIu64 " arrived, %" PRIu64
            " did not (the run ended before the broker confirmed them: not a failure)\n",
            r->unconfirmed_arrived, r->unconfirmed_missing);
    if (t->dropped || r->dropped_arrived)
        fprintf(out, "  dropped:      %" PRIu64 " on devices (outbox full), %" PRIu64
                     " of them arrived anyway\n",
                t->dropped, r->dropped_arrived);
    if (ctx->dlq_topic) {
        fprintf(out, "  dlq:          %" PRIu64 " records", r->dlq_records);
        for (size_t i = 0; i < au->n_reasons; i++)
            fprintf(out, "%s%s %" PRIu64, i ? ", " : " (", au->reasons[i].reason,
                    au->reasons[i].n);
        const char *verdict = r->dlq_missing                     ? "MISSING"
                              : r->dlq_malformed == t->malformed ? "match"
                                                                 : "more than published";
        fprintf(out, "%s; %" PRIu64 " malformed payloads for %" PRIu64 " published: %s\n",
                au->n_reasons ? ")" : "", r->dlq_malformed, t->malformed, verdict);
    } else {
        fprintf(out, "  dlq:          not read (--dlq-topic)\n");
    }
    if (r->offset_gaps)
        fprintf(out, "  WARNING:      %" PRIu64 " records were gone from the topic before the "
                     "audit read them (retention): losses may be the cluster's, not the "
                     "pipeline's\n",
                r->offset_gaps);
    if (r->latency_samples) {
        fprintf(out,
                "  latency:      device time -> %s: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max "
                "%.0f ms (%" PRIu64 " readings",
                au->log_append_time ? "Kafka append (LogAppendTime)"
                                    : "audit receipt (the topic keeps CreateTime)",
                r->latency_p50_ms, r->latency_p90_ms, r->latency_p99_ms, r->latency_max_ms,
                r->latency_samples);
        if (au->backlog_records)
            fprintf(out, "; %" PRIu64 " read from a backlog left out", au->backlog_records);
        fprintf(out, ")\n");
    } else {
        fprintf(out, "  latency:      not measured (no record arrived while the audit was "
                     "following: use --follow during the run)\n");
    }
    if (au->gw_latency.n)
        fprintf(out,
                "  to gateway:   device time -> gateway receipt (gw_ts): p50 %.0f ms, p90 %.0f "
                "ms, p99 %.0f ms, max %.0f ms\n",
                au->gw_latency.p50, au->gw_latency.p90, au->gw_latency.p99, au->gw_latency.max);
    if (au->skewed_devices)
        fprintf(out, "                (%" PRIu64 " devices with a skewed clock left out)\n",
                au->skewed_devices);
    if (r->problem_devices) {
        fprintf(out, "  problem devices: %zu", r->problem_devices);
        if (r->problem_devices > max_devices)
            fprintf(out, " (first %zu shown)", max_devices);
        fprintf(out, "\n");
        size_t shown = 0;
        for (size_t d = 0; d < au->n_devs && shown < max_devices; d++) {
            const struct adev *dev = &au->devs[d];
            if (!audit__problem(dev))
                continue;
            shown++;
            fprintf(out, "    %-20s lost %" PRIu64, dev->id, dev->lost);
            if (dev->lost) {
                fprintf(out, " (boot:seq");
                print_ranges(dev, out);
                fprintf(out, ")");
            }
            fprintf(out, ", duplicated %" PRIu64 ", reordered %" PRIu64 ", unexpected %" PRIu64,
                    dev->duplicated, dev->reordered, dev->unexpected);
            if (dev->dlq_missing)
                fprintf(out, ", malformed missing from the DLQ %" PRIu64, dev->dlq_missing);
            fprintf(out, "\n");
        }
    }
    fprintf(out, "RESULT: %s", r->ok ? "PASS (nothing lost, duplicated, reordered or unexpected)"
                                     : "FAIL:");
    if (r->nothing_released)
        fprintf(out, " the run released nothing;");
    if (r->none_connected)
        fprintf(out, " no device connected;");
    if (r->lost)
        fprintf(out, " %" PRIu64 " lost;", r->lost);
    if (r->duplicated)
        fprintf(out, " %" PRIu64 " duplicated;", r->duplicated);
    if (r->reordered)
        fprintf(out, " %" PRIu64 " reordered;", r->reordered);
    if (r->unexpected)
        fprintf(out, " %" PRIu64 " unexpected;", r->unexpected);
    if (r->dlq_missing)
        fprintf(out, " %" PRIu64 " malformed payloads missing from the DLQ;", r->dlq_missing);
    fprintf(out, "\n");
}

static json_t *percentiles_json(uint64_t n, double p50, double p90, double p99, double max)
{
    if (n == 0)
        return json_null();
    return json_pack("{s:I,s:f,s:f,s:f,s:f}", "samples", (json_int_t)n, "p50", p50, "p90",
                     p90, "p99", p99, "max", max);
}

int tg_sim_audit_print_json(const struct tg_sim_audit *au,
                            const struct tg_sim_audit_context *ctx, size_t max_devices,
                            FILE *out)
{
    const struct tg_sim_audit_result *r = &au->res;
    const struct tg_ledger_totals *t = &au->totals;
    int rc = -1;
    json_t *reasons = json_object();
    json_t *devices = json_array();
    json_t *root = NULL;
    if (!reasons || !devices)
        goto cleanup;
    for (size_t i = 0; i < au->n_reasons; i++)
        if (json_object_set_new(reasons, au->reasons[i].reason,
                                json_integer((json_int_t)au->reasons[i].n)) != 0)
            goto cleanup;
    size_t shown = 0;
    for (size_t d = 0; d < au->n_devs && shown < max_devices; d++) {
        const struct adev *dev = &au->devs[d];
        if (!audit__problem(dev))
            continue;
        shown++;
        json_t *lost = json_array();
        size_t kept = dev->n_lost_ranges < LOST_RANGES_KEPT ? dev->n_lost_ranges
                                                            : LOST_RANGES_KEPT;
        for (size_t i = 0; lost && i < kept; i++)
            json_array_append_new(lost, json_pack("{s:I,s:I,s:I}", "boot",
                                                  (json_int_t)dev->lost_ranges[i].boot, "from",
                                                  (json_int_t)dev->lost_ranges[i].lo, "to",
                                                  (json_int_t)dev->lost_ranges[i].hi));
        json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o*}", "device",
                              dev->id, "in_ledger", dev->ledger >= 0, "delivered",
                              (json_int_t)dev->delivered, "lost", (json_int_t)dev->lost,
                              "rejected", (json_int_t)dev->rejected, "duplicated",
                              (json_int_t)dev->duplicated, "reordered",
                              (json_int_t)dev->reordered, "unexpected",
                              (json_int_t)dev->unexpected, "other_runs",
                              (json_int_t)dev->other_runs, "dlq_missing",
                              (json_int_t)dev->dlq_missing, "lost_ranges", lost);
        if (!o || json_array_append_new(devices, o) != 0)
            goto cleanup;
    }
    root = json_pack(
        "{s:b,s:s,s:f,s:s,s:s,s:i,s:s?,"
        "s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},"
        "s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
        "s:{s:b,s:I,s:I,s:I,s:I,s:I,s:o},"
        "s:{s:s,s:o,s:I},s:o,s:I,s:I,s:o}",
        "ok", r->ok, "stopped", ctx->stopped, "elapsed_s", ctx->elapsed_s, "ledger",
        ctx->ledger_path, "topic", ctx->topic, "partitions", ctx->partitions, "dlq_topic",
        ctx->dlq_topic,
        "expected", "devices", (json_int_t)t->devices, "released", (json_int_t)t->released,
        "unconfirmed", (json_int_t)t->unconfirmed, "dropped", (json_int_t)t->dropped,
        "malformed", (json_int_t)t->malformed, "duplicates", (json_int_t)t->duplicates,
        "skewed", (json_int_t)t->skewed,
        "records", (json_int_t)r->records, "delivered", (json_int_t)r->delivered, "lost",
        (json_int_t)r->lost, "duplicated", (json_int_t)r->duplicated, "reordered",
        (json_int_t)r->reordered, "resent", (json_int_t)r->resent, "unexpected",
        (json_int_t)r->unexpected, "undecodable",
        (json_int_t)r->undecodable, "dead_lettered", (json_int_t)r->dead_lettered,
        "unconfirmed_arrived", (json_int_t)r->unconfirmed_arrived, "unconfirmed_missing",
        (json_int_t)r->unconfirmed_missing, "dropped_arrived", (json_int_t)r->dropped_arrived,
        "offset_gaps", (json_int_t)r->offset_gaps,
        "dlq", "read", ctx->dlq_topic != NULL, "records", (json_int_t)r->dlq_records,
        "malformed", (json_int_t)r->dlq_malformed, "malformed_expected",
        (json_int_t)t->malformed, "readings", (json_int_t)r->dlq_readings, "missing",
        (json_int_t)r->dlq_missing, "by_reason", reasons,
        "latency_ms", "source", latency_source(au), "device_to_kafka",
        percentiles_json(r->latency_samples, r->latency_p50_ms, r->latency_p90_ms,
                         r->latency_p99_ms, r->latency_max_ms),
        "backlog_records_left_out", (json_int_t)au->backlog_records,
        "latency_to_gateway_ms",
        percentiles_json(au->gw_latency.n, au->gw_latency.p50, au->gw_latency.p90,
                         au->gw_latency.p99, au->gw_latency.max),
        "skewed_devices_left_out", (json_int_t)au->skewed_devices, "problem_devices",
        (json_int_t)r->problem_devices, "devices", devices);
    reasons = devices = NULL; /* json_pack's "o" took them, also when it failed */
    if (!root)
        goto cleanup;
    json_t *more = json_pack("{s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:I}", "rejected",
                             (json_int_t)r->rejected, "other_runs", (json_int_t)r->other_runs,
                             "foreign", (json_int_t)r->foreign, "foreign_devices",
                             (json_int_t)r->foreign_devices, "never_connected",
                             (json_int_t)r->never_connected, "nothing_released",
                             r->nothing_released, "none_connected", r->none_connected,
                             "connected_devices", (json_int_t)t->connected_devices);
    if (!more || json_object_update(root, more) != 0) {
        json_decref(more);
        goto cleanup;
    }
    json_decref(more);
    if (json_dumpf(root, out, JSON_COMPACT | JSON_REAL_PRECISION(10)) != 0 ||
        fputc('\n', out) == EOF)
        goto cleanup;
    rc = 0;
cleanup:
    json_decref(reasons);
    json_decref(devices);
    json_decref(root);
    return rc;
}

