/*
 * score.h - `tidegate-sim score`: the worker's alerts measured against the simulator's
 * ground-truth anomaly labels.
 *
 *   tidegate-sim score --labels FILE --brokers LIST [--topic telemetry.anomalies] [--json]
 *                      [--devices N --duration-s S] [--match-slack-ms N] [--since-ms T]
 *                      [--timeout-ms N] [--min-recall X] [--min-f1 X]
 *                      [--max-false-per-device-hour X] [--details N]
 *
 * tg_sim_score_main() is the command (sim/main.c dispatches to it; score_cmd.c). It reads
 * every partition of the alerts topic to the high watermark it had when the command started
 * (read_committed: the worker writes in transactions), hands each record to the comparison
 * below and prints the report.
 *
 * The comparison (struct tg_sim_score, score.c) knows nothing of Kafka and is unit-tested on
 * synthetic labels and alerts. Its rules:
 *
 *   incident   the alert records that share one id (open, updates, close): one incident
 *              however many records it has; its start is the smallest start_ts among them, its
 *              device, metric and kind those of its open record (else its first record).
 *   match      an incident matches a label when both have the same device and
 *                - a silence label (metric "*") only a silence incident (kind "silence" or
 *                  metric "*"), on any metric of the device: the worker raises silence per
 *                  series, so one silent device gives up to one incident per metric;
 *                - any other label only a non-silence incident on the label's metric;
 *              and the incident's start lies within [label start - slack, label end + slack].
 *              An incident that could match several labels matches the one whose interval
 *              holds its start, else the nearest one (then the earlier one).
 *   detected   a label with at least one matching incident. Several incidents on one label
 *              count once (the others are "extra incidents", reported, neither true nor false).
 *   false      an incident matching no label, except a silence incident that never closed:
 *              its device stopped sending for good, as every device does when the run ends,
 *              and the worker's sweep reports that. A silence on a live device closes when
 *              its next reading arrives. Those are counted apart (silent_at_end).
 *   recall     detected / labels;  precision  detected / (detected + false);  F1 their
 *              harmonic mean, 2 detected / (2 detected + false + missed), which is 0 for a kind
 *              with labels but neither detections nor false alerts. None of them is defined
 *              (reported as "-" / null, never as 1.0) when its denominator is 0.
 *   delay      per detected label, the earliest matching incident's start minus the label's
 *              start (negative when the alert starts inside the leading slack); median and
 *              p90 by nearest rank.
 *   per kind   labels, detected and delay by the label's kind. A false incident has no label,
 *              so it is charged to the label kind that incidents of its alert kind (the
 *              worker's dominant detector) matched most often in this run, ties to the first
 *              kind in tg_anomaly_kind order; a false incident whose alert kind matched no
 *              label at all is "unattributed": it counts in the overall precision only.
 *   exposure   device-hours = devices x duration-s / 3600 (when both are given). "Clean"
 *              device-hours subtract, per label, its interval plus both slacks (where an
 *              alert would match rather than be false); false alerts per device-hour divide
 *              by clean device-hours. Subtracting a whole device's time for a one-metric
 *              label, and counting overlaps twice, only makes the figure higher.
 *
 * Threads: a score is used from one thread.
 */
#ifndef TG_SIM_SCORE_H
#define TG_SIM_SCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "anomaly.h"

/* The command: argv[0] is the command's name ("score"), options follow. Exit status 0 when
 * the report was produced and every floor given is met, 1 when a floor is not met or nothing
 * was measured (alerts or labels missing), 2 on usage or setup errors. */
int tg_sim_score_main(int argc, char **argv);

struct tg_sim_score;

/* slack_ms: the match tolerance around each label's interval (>= 0). */
struct tg_sim_score *tg_sim_score_new(int64_t slack_ms);
void tg_sim_score_destroy(struct tg_sim_score *sc); /* NULL is a no-op */

/* One label. Strings are copied. Returns 0, or -1 when out of memory. */
int tg_sim_score_add_label(struct tg_sim_score *sc, const char *device, const char *metric,
                           enum tg_anomaly_kind kind, int64_t start_ts, int64_t end_ts);

/* Every label of a file written by `tidegate-sim run --labels` (one JSON object per line:
 * device, metric, kind, start_ts, end_ts). Returns the number of labels read, or -1 with
 * "path:line: what" in err (NUL-terminated) for a file that cannot be read, a line that is
 * not such an object, or an unknown kind. */
long tg_sim_score_load_labels(struct tg_sim_score *sc, const char *path, char *err,
                              size_t errlen);

/* One alert record, as decoded. Strings are copied; id NULL derives one from device, metric,
 * kind and start_ts. state is "open", "update" or "close". */
struct tg_sim_score_alert {
    const char *id;
    const char *device;
    const char *metric;
    const char *kind; /* the worker's alert kind; NULL or "" for unknown */
    const char *state;
    int64_t start_ts, end_ts;
};

/* Returns 0, 1 when the record is unusable (missing field, unknown state: counted as
 * undecodable), -1 when out of memory. */
int tg_sim_score_add_alert(struct tg_sim_score *sc, const struct tg_sim_score_alert *al);

/* One record value of the alerts topic (a JSON document): decoded and added as above; a value
 * that is not such a document returns 1 and is counted as undecodable. */
int tg_sim_score_add_alert_json(struct tg_sim_score *sc, const void *value, size_t len);

/* Counts a record that could not be read at all (e.g. an empty value) as undecodable. */
void tg_sim_score_undecodable(struct tg_sim_score *sc);

/* Alert records whose start_ts is below since_ms are left out (counted in
 * res->before_since): the incidents of an earlier run in the same topic. */
void tg_sim_score_set_since(struct tg_sim_score *sc, int64_t since_ms);

/* Run exposure for the false-alert rate; without it that rate is not computed. */
void tg_sim_score_set_exposure(struct tg_sim_score *sc, uint64_t devices, double duration_s);

/* Results, valid after tg_sim_score_finish(). A ratio that is not defined is NAN. */
struct tg_sim_score_kind {
    uint64_t labels, detected, false_alerts, incidents; /* incidents: matched to this kind */
    double recall, precision, f1;
    bool has_delay;
    int64_t delay_p50_ms, delay_p90_ms;
};

struct tg_sim_score_result {
    struct tg_sim_score_kind kind[TG_ANOMALY_KINDS];
    struct tg_sim_score_kind all;
    uint64_t records, undecodable, before_since, incidents, matched_incidents, extra_incidents;
    uint64_t false_unattributed;
    uint64_t reopened;      /* incidents with more than one open record */
    uint64_t silent_at_end; /* unmatched silence incidents never closed: not false */
    bool has_exposure;
    double device_hours, clean_device_hours, false_per_device_hour; /* NAN without exposure */
};

/* Matches incidents to labels and fills res. Call once, after every label and alert.
 * Returns 0, or -1 when out of memory. */
int tg_sim_score_finish(struct tg_sim_score *sc, struct tg_sim_score_result *res);

/* The false and matched incidents per alert kind, for the report: fn is called once per
 * alert kind seen, in order of first appearance. After tg_sim_score_finish(). */
typedef void (*tg_sim_score_alert_kind_fn)(void *ud, const char *alert_kind,
                                           uint64_t incidents, uint64_t matched,
                                           uint64_t false_alerts);
void tg_sim_score_each_alert_kind(const struct tg_sim_score *sc, tg_sim_score_alert_kind_fn fn,
                                  void *ud);

/* The labels no incident matched, in (device, start) order. After tg_sim_score_finish(). */
typedef void (*tg_sim_score_missed_fn)(void *ud, const char *device, const char *metric,
                                       enum tg_anomaly_kind kind, int64_t start_ts,
                                       int64_t end_ts);
void tg_sim_score_each_missed(const struct tg_sim_score *sc, tg_sim_score_missed_fn fn,
                              void *ud);

/* One false incident, and the label of its device nearest to its start (any metric), if the
 * device has one: for tuning, "a shift alert 40 s after a drift ended" says more than a
 * count. Pointers valid during the callback. */
struct tg_sim_score_false {
    const char *device, *metric, *alert_kind;
    int64_t start_ts;
    int64_t end_ts;  /* the largest end_ts of its records: for a closed silence, when the last
                      * missing reading was due, so end_ts == start_ts means at most the one
                      * reading due at its start was missing (lag, not a gap in the data) */
    bool closed;
    bool has_near;
    const char *near_metric;
    enum tg_anomaly_kind near_kind;
    int64_t near_start_ts, near_end_ts;
};
typedef void (*tg_sim_score_false_fn)(void *ud, const struct tg_sim_score_false *f);
/* In id order. After tg_sim_score_finish(). */
void tg_sim_score_each_false(const struct tg_sim_score *sc, tg_sim_score_false_fn fn, void *ud);

/* Floors from the command line; a NAN floor is not checked. */
struct tg_sim_score_floors {
    double min_recall;                /* every kind that has labels */
    double min_f1;                    /* overall */
    double max_false_per_device_hour; /* needs the exposure */
};

/* Writes, into why (NUL-terminated), every floor that is not met and every reason the run
 * measured nothing (no labels; labels but no alert records decoded). Returns true when the
 * result passes. */
bool tg_sim_score_verdict(const struct tg_sim_score_result *res,
                          const struct tg_sim_score_floors *floors, char *why, size_t whylen);

/* --- the report (score_report.c) --------------------------------------------------------- */

struct tg_sim_score_context {
    const char *topic;
    const char *labels_path;
    int partitions;
    int64_t slack_ms;
    uint64_t devices;   /* 0 when not given */
    double duration_s;  /* 0 when not given */
    const struct tg_sim_score_floors *floors;
    bool pass;
    const char *why;    /* tg_sim_score_verdict()'s reasons ("" when it passed) */
    unsigned details;   /* at most this many missed labels and false incidents listed */
};

/* The report as a table (text) or one JSON object (json), on out. After
 * tg_sim_score_finish(). Returns 0, or -1 when out of memory or the write failed. */
int tg_sim_score_print_text(const struct tg_sim_score *sc, const struct tg_sim_score_result *res,
                            const struct tg_sim_score_context *ctx, FILE *out);
int tg_sim_score_print_json(const struct tg_sim_score *sc, const struct tg_sim_score_result *res,
                            const struct tg_sim_score_context *ctx, FILE *out);

#endif
