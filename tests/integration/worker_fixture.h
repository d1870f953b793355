/*
 * worker_fixture.h - what the worker's integration tests and benchmark share: canonical
 * telemetry produced straight into a Kafka cluster (no Mosquitto, no gateway: cheaper on two
 * cores, and the worker reads exactly what the gateway would write), tidegate-worker processes
 * with generated configs, and the outputs read back with a read_committed consumer.
 *
 * Threads: the test's main thread. Functions fail the cmocka test on errors unless said.
 */
#ifndef TG_WORKER_FIXTURE_H
#define TG_WORKER_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "harness.h"

/* The cluster under test: tidegate-devkafka (fast, no transaction isolation, no compaction)
 * or a real Kafka broker (harness_kafka.h). Either way it has telemetry with 6 partitions and,
 * for each prefix in "a." and "ref.", <prefix>anomalies (3), <prefix>agg (3) and
 * <prefix>state (6, compacted on the real broker). */
#define WFX_PARTITIONS 6
struct wfx_cluster;
struct wfx_cluster *wfx_cluster_start(bool real_kafka);
const char *wfx_cluster_bootstrap(const struct wfx_cluster *cl);
bool wfx_cluster_real(const struct wfx_cluster *cl);
/* devkafka's command interface (harness.h), or NULL on the real tier. */
struct tg_harness_devkafka *wfx_cluster_devkafka(const struct wfx_cluster *cl);
void wfx_cluster_destroy(struct wfx_cluster *cl);

/* The synthetic fleet: n_devices devices "dev-NNN", one reading per second of event time
 * from base_ts_ms, metric "temp" (a slow cycle plus deterministic noise) with a spike per
 * device and a level shift on every fifth device, so detectors fire. */
struct wfx_input {
    int n_devices;
    int64_t base_ts_ms;
    int mute_device; /* with mute_from_s > 0: device mute_device sends nothing from second */
    int mute_from_s; /* mute_from_s of event time on (a silent device) */
};

/* A base time for seconds of event time that end about now, on a whole minute (so windows
 * line up the same in every run): a real broker deletes records whose timestamps are older
 * than its retention, and these timestamps are the event times. */
int64_t wfx_recent_base_ms(int seconds);

/* Produces the readings of seconds [from_s, to_s) of every device to topic (JSON canonical
 * records, key = device, content-type header, murmur2_random like the gateway) and waits for
 * every delivery. Returns the number produced. */
size_t wfx_produce(const char *bootstrap, const char *topic, const struct wfx_input *in,
                   int from_s, int to_s);

/* The same from a thread of its own, paced: second s of event time is produced at about
 * s * pace_ms after the start, so workers can be killed and started while input flows. */
struct wfx_feed;
struct wfx_feed *wfx_feed_start(const char *bootstrap, const char *topic,
                                const struct wfx_input *in, int from_s, int to_s, int pace_ms);
/* Waits for the feed to end; fails the test if a delivery failed. Returns the count. */
size_t wfx_feed_join(struct wfx_feed *fd);

/* High watermarks of every partition of topic into hi[0..n) (n returned, at most max). */
int wfx_watermarks(const char *bootstrap, const char *topic, int64_t *hi, int max);

/* Reads every partition of topic (read_committed) from the beginning to its high watermark,
 * calling fn(ud, msg) for each record in partition order; fails the test after 60 s. */
void wfx_read_topic(const char *bootstrap, const char *topic,
                    void (*fn)(void *ud, const rd_kafka_message_t *msg), void *ud);

/* One record read back. */
struct wfx_record {
    char *text; /* "key\tvalue", NUL-terminated */
};

/* Every record of topic (all partitions, from the beginning to the end, read_committed),
 * as "key\tvalue" lines sorted bytewise; *n their number. Free with wfx_records_free(). */
char **wfx_read_all(const char *bootstrap, const char *topic, size_t *n);
void wfx_records_free(char **recs, size_t n);
/* Silence alerts on topic: returns how many are for device (the records keyed by it), sets
 * *others to those of every other device, and prints the first `show` of those to stderr. */
size_t wfx_silence_alerts(const char *bootstrap, const char *topic, const char *device,
                          size_t *others, size_t show);

/* The latest offset marker of each partition of the worker's state topic (-1 when none)
 * into next[0..n_parts). */
void wfx_state_markers(const char *bootstrap, const char *state_topic, int64_t *next,
                       int n_parts);

/* A tidegate-worker (logs dir/<name>.stderr) with instance_id, started with a config written
 * to dir/<name>.ini: group, topics with the
 * given prefix ("" for the defaults' names; else <prefix>anomalies, <prefix>agg,
 * <prefix>state), commit every 100 ms, short session timeout, silence detection off (its
 * wall-clock sweep would make runs differ), metrics on a free port. extra: more INI lines or
 * NULL; they follow the [detect] section's first lines, so "silence = true\n..." sets keys
 * of [detect] (and then silence is not turned off), and a "[section]" line starts another. */
struct wfx_worker {
    struct tg_harness_proc *proc;
    int metrics_port;
    char name[64];
};
struct wfx_worker *wfx_worker_start(const char *dir, const char *name, const char *instance_id,
                                    const char *bootstrap, const char *group,
                                    const char *topic_prefix, const char *extra);
/* Waits until the worker logged that it holds partitions, or fails the test. */
void wfx_worker_wait_assigned(struct wfx_worker *w, int timeout_ms);
/* SIGTERM and wait; returns the waitpid() status. */
int wfx_worker_stop(struct wfx_worker *w);
void wfx_worker_destroy(struct wfx_worker *w);

/* Waits until the markers of every partition of state_topic reach the input's high
 * watermarks (hi, n_parts): everything consumed was committed. True when it happened. */
bool wfx_wait_processed(const char *bootstrap, const char *state_topic, const int64_t *hi,
                        int n_parts, int timeout_ms);

/* Compares the records of run_topic with those of ref_topic (a reference worker's), failing
 * the test when a reference record is missing or a record is not in the reference; repeats
 * in run_topic are allowed here and counted in *repeats (the reference may have none). */
void wfx_compare(const char *bootstrap, const char *run_topic, const char *ref_topic,
                 size_t *repeats);

/* Waits until the committed markers of state_topic add up to at least records (n_parts
 * partitions), or fails the test. */
void wfx_wait_progress(const char *bootstrap, const char *state_topic, int n_parts,
                       int64_t records, int timeout_ms);

/* GET /metrics of the worker (malloc'd body), or fails the test. */
char *wfx_scrape(const struct wfx_worker *w);
/* The value of one sample, series written as in the exposition ("name{l=\"v\"}"); NAN if
 * absent. */
double wfx_metric(const char *body, const char *series);
/* `promtool check metrics` on text (TG_PROMTOOL or PATH; fails the test without it): its
 * waitpid() status. */
int wfx_promtool(const char *text);

#endif
