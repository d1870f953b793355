/*
 * bench_gw.h - the pieces of bench_gateway (see bench_gateway.c for what it measures).
 *
 *   bench_gw_load.c   the load: the publisher and the bare subscriber, each run as a child
 *                     process (bench_gateway --role pub|sub ...) so that its CPU is its own
 *   bench_gw_proc.c   what the bench reads about other processes: /proc/<pid>/stat, status
 *                     and io, and the gateway's /metrics over HTTP
 *   bench_gw_kafka.c  the end-to-end latency as a Kafka consumer sees it
 * and the passes that use them are declared in bench_gw_run.h.
 *
 * Everything here is single-threaded unless it says otherwise (the consumer has its own
 * thread). Symbols carry the prefix bgw_ (bench gateway).
 */
#ifndef BENCH_GW_H
#define BENCH_GW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------------------------
 * Clocks
 */

/* Monotonic clock, microseconds. */
int64_t bgw_mono_us(void);

/* Wall clock (CLOCK_REALTIME), microseconds since the epoch: device timestamps and Kafka
 * record timestamps are wall-clock milliseconds. */
int64_t bgw_wall_us(void);

/* ------------------------------------------------------------------------------------------
 * Load roles, run in child processes: `bench_gateway --role pub ARGS` / `--role sub ARGS`.
 * Both talk to the parent through stdin/stdout, one line per message (see bench_gw_load.c).
 */

/* argv[0] is the first argument after "--role pub"; returns the exit status. */
int bgw_publisher_main(int argc, char **argv);
int bgw_subscriber_main(int argc, char **argv);

/* ------------------------------------------------------------------------------------------
 * /proc
 */

struct bgw_proc_sample {
    bool ok;                 /* /proc/<pid>/stat was read */
    double cpu_s;            /* utime + stime of every thread, seconds */
    bool io_ok;              /* /proc/<pid>/io was read (needs the same uid, or root) */
    uint64_t rchar, wchar;   /* bytes passed to read()/write()-like calls */
    uint64_t read_bytes;     /* bytes fetched from the block layer */
    uint64_t write_bytes;    /* bytes this process caused to be written to the block layer */
    uint64_t cancelled_write_bytes; /* written bytes that were truncated away before writeback */
};

/* Reads /proc/<pid>/stat and /proc/<pid>/io into *out (out->ok false when pid is gone). */
void bgw_proc_sample(pid_t pid, struct bgw_proc_sample *out);

/* A "Vm..:" line of /proc/<pid>/status in kB (e.g. "VmHWM", "VmRSS"), or -1. */
long bgw_proc_status_kb(pid_t pid, const char *field);

/* ------------------------------------------------------------------------------------------
 * Files (bench_gw_proc.c)
 */

/* The whole of a small file (a /proc file, a log), malloc'd and NUL-terminated, or NULL. */
char *bgw_read_small_file(const char *path);

/* Prints the last 3,000 bytes of a log file to stderr (nothing when it cannot be read). */
void bgw_print_log_tail(const char *path);

/* ------------------------------------------------------------------------------------------
 * HTTP and the Prometheus text format
 */

/* GET http://127.0.0.1:<port><path> (HTTP/1.0). Returns the malloc'd body, NUL-terminated,
 * and the status code in *status; NULL on a connection or protocol error or after
 * timeout_ms. */
char *bgw_http_get(int port, const char *path, int timeout_ms, int *status);

/* The sum of every sample of metric `name` (any labels) in an exposition text; *found tells
 * whether there was one (may be NULL). */
double bgw_metric_sum(const char *text, const char *name, bool *found);

/* The same over the samples whose labels contain `label` (e.g. "reason=\"ingress_full\""). */
double bgw_metric_sum_where(const char *text, const char *name, const char *label, bool *found);

#define BGW_HIST_MAX 64

/* A histogram's cumulative buckets, summed over label sets, +Inf last. */
struct bgw_hist {
    size_t n;
    double le[BGW_HIST_MAX];     /* upper bounds, ascending; the last is INFINITY */
    double count[BGW_HIST_MAX];  /* cumulative counts */
};

/* Reads the <name>_bucket samples; returns false when there are none. */
bool bgw_metric_hist(const char *text, const char *name, struct bgw_hist *out);

/* later - earlier, bucket by bucket (both from the same histogram); false if they differ. */
bool bgw_hist_delta(const struct bgw_hist *later, const struct bgw_hist *earlier,
                    struct bgw_hist *out);

/* The q-quantile (0 < q < 1) estimated as Prometheus' histogram_quantile() does: linear
 * interpolation inside the bucket holding the rank, the first bucket starting at 0. Returns
 * NAN with no observations; when the rank falls in the +Inf bucket, returns the highest finite
 * bound and sets *beyond (may be NULL). */
double bgw_hist_quantile(const struct bgw_hist *h, double q, bool *beyond);

/* ------------------------------------------------------------------------------------------
 * Percentiles of samples
 */

/* Sorts v[0..n) in place and returns its q-quantile (nearest rank), NAN when n == 0. */
double bgw_quantile_sorted(float *v, size_t n, double q, bool already_sorted);

/* ------------------------------------------------------------------------------------------
 * The Kafka consumer that measures end-to-end latency
 */

struct bgw_consumer;

/* Connects to bootstrap and assigns every partition of topic at its current end (the high
 * watermark, read before returning), so that it sees only what is produced from now on.
 * NULL with a reason in err on failure. Starts no thread yet. */
struct bgw_consumer *bgw_consumer_new(const char *bootstrap, const char *topic, char *err,
                                      size_t errlen);

/* Starts the consuming thread. Every record becomes a sample (record timestamp in ms, now -
 * timestamp in ms). Returns 0 or -1. */
int bgw_consumer_start(struct bgw_consumer *kc);

/* Records consumed so far whose timestamp is >= from_ms (any thread). */
uint64_t bgw_consumer_count(struct bgw_consumer *kc, int64_t from_ms);

/* Stops the thread (if started). Then the samples can be read. */
void bgw_consumer_stop(struct bgw_consumer *kc);

/* After _stop: latencies (ms) of records with from_ms <= timestamp < to_ms, p50/p99/max, and
 * how many. Returns the count. */
size_t bgw_consumer_latency(struct bgw_consumer *kc, int64_t from_ms, int64_t to_ms,
                            double *p50, double *p99, double *max);

/* Partitions assigned, consume errors seen (e.g. during an outage). */
int bgw_consumer_partitions(const struct bgw_consumer *kc);
uint64_t bgw_consumer_errors(struct bgw_consumer *kc);

void bgw_consumer_destroy(struct bgw_consumer *kc);

#endif
