/* bench_metrics: the cost of the metrics hot path, in nanoseconds per call.
 *
 *   bench_metrics [iterations]     (default 20000000 per thread)
 *
 * Single-threaded figures are the uncontended cost of one relaxed atomic (two for a histogram:
 * its bucket and its sum). The two-thread figures show what sharing one series between threads
 * costs (the cache line moves between cores) next to each thread having its own series. Also
 * times one render of a gateway-sized registry, which is what a scrape costs the process. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "metrics.h"

#define VALUES 1024

static double observations[VALUES]; /* spread over the default latency buckets */
static uint64_t iterations = 20000000;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

enum op { OP_COUNTER_INC, OP_GAUGE_SET, OP_GAUGE_ADD, OP_HISTOGRAM_OBSERVE };

struct job {
    enum op op;
    void *handle;
    pthread_barrier_t *start;
    double ns_per_op;
};

static void *run(void *p)
{
    struct job *job = p;
    if (job->start)
        pthread_barrier_wait(job->start);
    double t0 = now_ns();
    switch (job->op) {
    case OP_COUNTER_INC:
        for (uint64_t i = 0; i < iterations; i++)
            tg_counter_inc(job->handle);
        break;
    case OP_GAUGE_SET:
        for (uint64_t i = 0; i < iterations; i++)
            tg_gauge_set(job->handle, (double)i);
        break;
    case OP_GAUGE_ADD:
        for (uint64_t i = 0; i < iterations; i++)
            tg_gauge_add(job->handle, 1.0);
        break;
    case OP_HISTOGRAM_OBSERVE:
        for (uint64_t i = 0; i < iterations; i++)
            tg_histogram_observe(job->handle, observations[i % VALUES]);
        break;
    }
    job->ns_per_op = (now_ns() - t0) / (double)iterations;
    return NULL;
}

static void one_thread(const char *what, enum op op, void *handle)
{
    struct job job = { .op = op, .handle = handle };
    run(&job);
    printf("%-34s %8.2f ns/op\n", what, job.ns_per_op);
}

/* Two threads at once, on the same handle (a == b) or on one handle each. */
static void two_threads(const char *what, enum op op, void *a, void *b)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    struct job jobs[2] = { { .op = op, .handle = a, .start = &start },
                           { .op = op, .handle = b, .start = &start } };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&threads[i], NULL, run, &jobs[i]) != 0)
            abort();
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    printf("%-34s %8.2f ns/op per thread\n", what, (jobs[0].ns_per_op + jobs[1].ns_per_op) / 2);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        iterations = strtoull(argv[1], NULL, 10);
    uint64_t seed = 42;
    for (int i = 0; i < VALUES; i++) { /* log-uniform from 0.5 ms to 120 s */
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        double u = (double)(seed >> 11) / 9007199254740992.0;
        observations[i] = 0.0005 * pow(240000.0, u);
    }

    struct tg_metrics *m = tg_metrics_new();
    struct tg_counter *c1 = tg_metrics_counter(m, "bench_a_total", "Bench.", NULL);
    struct tg_counter *c2 = tg_metrics_counter(m, "bench_b_total", "Bench.", NULL);
    struct tg_gauge *g1 = tg_metrics_gauge(m, "bench_a", "Bench.", NULL);
    struct tg_gauge *g2 = tg_metrics_gauge(m, "bench_b", "Bench.", NULL);
    struct tg_histogram *h1 = tg_metrics_histogram(m, "bench_a_seconds", "Bench.", NULL, 0, NULL);
    struct tg_histogram *h2 = tg_metrics_histogram(m, "bench_b_seconds", "Bench.", NULL, 0, NULL);

    printf("iterations per thread: %" PRIu64 "\n", iterations);
    one_thread("counter_inc", OP_COUNTER_INC, c1);
    one_thread("gauge_set", OP_GAUGE_SET, g1);
    one_thread("gauge_add", OP_GAUGE_ADD, g1);
    one_thread("histogram_observe (15 buckets)", OP_HISTOGRAM_OBSERVE, h1);
    two_threads("counter_inc, 2 threads, same", OP_COUNTER_INC, c1, c1);
    two_threads("counter_inc, 2 threads, own", OP_COUNTER_INC, c1, c2);
    two_threads("gauge_add, 2 threads, same", OP_GAUGE_ADD, g1, g1);
    two_threads("gauge_add, 2 threads, own", OP_GAUGE_ADD, g1, g2);
    two_threads("histogram_observe, 2 threads, same", OP_HISTOGRAM_OBSERVE, h1, h1);
    two_threads("histogram_observe, 2 threads, own", OP_HISTOGRAM_OBSERVE, h1, h2);
    if (tg_counter_value(c1) != 4 * iterations || tg_histogram_count(h1) != 4 * iterations) {
        fprintf(stderr, "bench_metrics: lost updates\n");
        return 1;
    }
    tg_metrics_destroy(m);

    /* a scrape of a gateway-sized registry: 40 counters, 10 gauges, 4 histograms */
    m = tg_metrics_new();
    char value[16];
    for (int i = 0; i < 40; i++) {
        snprintf(value, sizeof value, "r%02d", i);
        tg_counter_add(tg_metrics_counter(m, "bench_events_total", "Bench.", "reason", value, NULL),
                       (uint64_t)i * 1000003);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(value, sizeof value, "g%02d", i);
        tg_gauge_set(tg_metrics_gauge(m, "bench_level", "Bench.", "name", value, NULL), i * 0.1);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(value, sizeof value, "%d", i);
        struct tg_histogram *h =
            tg_metrics_histogram(m, "bench_latency_seconds", "Bench.", NULL, 0, "stage", value,
                                 NULL);
        for (int k = 0; k < VALUES; k++)
            tg_histogram_observe(h, observations[k]);
    }
    const int renders = 2000;
    size_t len = 0;
    double t0 = now_ns();
    for (int i = 0; i < renders; i++) {
        char *text = NULL;
        if (tg_metrics_render(m, &text, &len) != TG_OK)
            abort();
        free(text);
    }
    printf("%-34s %8.2f us per scrape (%zu bytes)\n", "render, 54 series",
           (now_ns() - t0) / renders / 1000, len);
    tg_metrics_destroy(m);
    return 0;
}
