/* Unit tests for metrics.c: value semantics, label sets and families, escaping, the exact text
 * of a rendering, concurrent updates, and the registration errors that abort. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"

static char *render(struct tg_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(tg_metrics_render(m, &text, &len), TG_OK);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* True when the rendering of m contains `line` as a whole line. */
static bool has_line(struct tg_metrics *m, const char *line)
{
    char *text = render(m);
    size_t n = strlen(line);
    bool found = false;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0')) {
            found = true;
            break;
        }
    }
    if (!found)
        fprintf(stderr, "line not found: %s\nin:\n%s", line, text);
    free(text);
    return found;
}

static void counter_semantics(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    assert_non_null(m);
    struct tg_counter *c = tg_metrics_counter(m, "t_events_total", "Events.", NULL);
    assert_int_equal(tg_counter_value(c), 0);
    tg_counter_inc(c);
    tg_counter_add(c, 41);
    assert_int_equal(tg_counter_value(c), 42);
    /* same series twice: same handle */
    assert_ptr_equal(tg_metrics_counter(m, "t_events_total", "Events.", NULL), c);
    /* 64-bit range renders exactly */
    struct tg_counter *big = tg_metrics_counter(m, "t_bytes_total", "Bytes.", NULL);
    tg_counter_add(big, UINT64_C(18446744073709551615));
    assert_true(has_line(m, "t_bytes_total 18446744073709551615"));
    assert_true(has_line(m, "t_events_total 42"));
    assert_true(tg_metrics_find_value(m, "t_events_total", NULL) == 42.0);
    tg_metrics_destroy(m);
    tg_metrics_destroy(NULL);
}

static void labels_and_families(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    struct tg_counter *malformed = tg_metrics_counter(m, "t_invalid_total", "Rejected payloads.",
                                                      "reason", "malformed", NULL);
    struct tg_counter *badsig = tg_metrics_counter(m, "t_invalid_total", "Rejected payloads.",
                                                   "reason", "bad_signature", NULL);
    assert_ptr_not_equal(malformed, badsig);
    assert_ptr_equal(tg_metrics_counter(m, "t_invalid_total", "Rejected payloads.", "reason",
                                        "malformed", NULL),
                     malformed);
    /* a series is a label set: the order of the pairs does not matter */
    struct tg_counter *ab = tg_metrics_counter(m, "t_pairs_total", "Pairs.", "a", "1", "b", "2",
                                               NULL);
    assert_ptr_equal(tg_metrics_counter(m, "t_pairs_total", "Pairs.", "b", "2", "a", "1", NULL),
                     ab);
    tg_counter_add(malformed, 3);
    tg_counter_inc(badsig);
    tg_counter_inc(ab);

    char *text = render(m);
    /* one header per family, series sorted by labels, labels sorted by name */
    const char *expected =
        "# HELP t_invalid_total Rejected payloads.\n"
        "# TYPE t_invalid_total counter\n"
        "t_invalid_total{reason=\"bad_signature\"} 1\n"
        "t_invalid_total{reason=\"malformed\"} 3\n"
        "# HELP t_pairs_total Pairs.\n"
        "# TYPE t_pairs_total counter\n"
        "t_pairs_total{a=\"1\",b=\"2\"} 1\n";
    assert_string_equal(text, expected);
    free(text);

    assert_true(tg_metrics_find_value(m, "t_invalid_total", "reason", "malformed", NULL) == 3.0);
    assert_true(tg_metrics_find_value(m, "t_pairs_total", "b", "2", "a", "1", NULL) == 1.0);
    assert_true(isnan(tg_metrics_find_value(m, "t_invalid_total", "reason", "other", NULL)));
    assert_true(isnan(tg_metrics_find_value(m, "t_invalid_total", NULL)));
    assert_true(isnan(tg_metrics_find_value(m, "t_absent_total", NULL)));
    tg_metrics_destroy(m);
}

static void gauge_semantics(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    struct tg_gauge *g = tg_metrics_gauge(m, "t_queue_depth", "Queue depth.", NULL);
    assert_true(tg_gauge_value(g) == 0.0);
    tg_gauge_set(g, 10);
    tg_gauge_inc(g);
    tg_gauge_dec(g);
    tg_gauge_dec(g);
    tg_gauge_add(g, 0.5);
    assert_true(tg_gauge_value(g) == 9.5);
    assert_true(has_line(m, "t_queue_depth 9.5"));

    /* Prometheus float syntax, shortest exact form */
    struct tg_gauge *v = tg_metrics_gauge(m, "t_value", "A value.", "k", "v", NULL);
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        { 0.1, "t_value{k=\"v\"} 0.1" },
        { 1.0 / 3.0, "t_value{k=\"v\"} 0.3333333333333333" },
        { -2, "t_value{k=\"v\"} -2" },
        { 1e-9, "t_value{k=\"v\"} 1e-09" },
        { 12345678901234567.0, "t_value{k=\"v\"} 12345678901234568" },
        { INFINITY, "t_value{k=\"v\"} +Inf" },
        { -INFINITY, "t_value{k=\"v\"} -Inf" },
        { NAN, "t_value{k=\"v\"} NaN" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_gauge_set(v, cases[i].v);
        assert_true(has_line(m, cases[i].text));
    }
    tg_metrics_destroy(m);
}

static double oldest_age(void *ud)
{
    return *(double *)ud;
}

static void callback_gauges(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    double age = 1.25;
    struct tg_gauge *g = tg_metrics_gauge_fn(m, "t_oldest_age_seconds", "Oldest record age.",
                                             oldest_age, &age, "journal", "main", NULL);
    assert_ptr_equal(tg_metrics_gauge_fn(m, "t_oldest_age_seconds", "Oldest record age.",
                                         oldest_age, &age, "journal", "main", NULL),
                     g);
    /* a set gauge may share the family */
    struct tg_gauge *set = tg_metrics_gauge(m, "t_oldest_age_seconds", "Oldest record age.",
                                            "journal", "spare", NULL);
    tg_gauge_set(set, 2);
    assert_true(has_line(m, "t_oldest_age_seconds{journal=\"main\"} 1.25"));
    age = 7;
    assert_true(has_line(m, "t_oldest_age_seconds{journal=\"main\"} 7"));
    assert_true(tg_gauge_value(g) == 7.0);
    tg_gauge_set(g, 100); /* ignored: the callback decides */
    assert_true(tg_metrics_find_value(m, "t_oldest_age_seconds", "journal", "main", NULL) == 7.0);
    assert_true(has_line(m, "t_oldest_age_seconds{journal=\"spare\"} 2"));
    tg_metrics_destroy(m);
}

static void histogram_semantics(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    static const double bounds[] = { 0.125, 1, 10 };
    struct tg_histogram *h = tg_metrics_histogram(m, "t_latency_seconds", "Latency.", bounds, 3,
                                                  "stage", "journal", NULL);
    assert_ptr_equal(tg_metrics_histogram(m, "t_latency_seconds", "Latency.", bounds, 3, "stage",
                                          "journal", NULL),
                     h);
    tg_histogram_observe(h, 0.0625);
    tg_histogram_observe(h, 0.125); /* on the bound: le is inclusive */
    tg_histogram_observe(h, 0.5);
    tg_histogram_observe(h, 3);
    tg_histogram_observe(h, 1000);
    assert_int_equal(tg_histogram_bucket(h, 0), 2);
    assert_int_equal(tg_histogram_bucket(h, 1), 3);
    assert_int_equal(tg_histogram_bucket(h, 2), 4);
    assert_int_equal(tg_histogram_bucket(h, 3), 5); /* +Inf */
    assert_int_equal(tg_histogram_count(h), 5);
    assert_true(tg_histogram_sum(h) == 1003.6875);

    assert_true(has_line(m, "t_latency_seconds_bucket{stage=\"journal\",le=\"0.125\"} 2"));
    assert_true(has_line(m, "t_latency_seconds_bucket{stage=\"journal\",le=\"1\"} 3"));
    assert_true(has_line(m, "t_latency_seconds_bucket{stage=\"journal\",le=\"10\"} 4"));
    assert_true(has_line(m, "t_latency_seconds_bucket{stage=\"journal\",le=\"+Inf\"} 5"));
    assert_true(has_line(m, "t_latency_seconds_sum{stage=\"journal\"} 1003.6875"));
    assert_true(has_line(m, "t_latency_seconds_count{stage=\"journal\"} 5"));

    assert_true(tg_metrics_find_value(m, "t_latency_seconds_count", "stage", "journal", NULL) ==
                5.0);
    assert_true(tg_metrics_find_value(m, "t_latency_seconds_sum", "stage", "journal", NULL) ==
                1003.6875);
    assert_true(tg_metrics_find_value(m, "t_latency_seconds_bucket", "le", "1", "stage",
                                      "journal", NULL) == 3.0);
    assert_true(tg_metrics_find_value(m, "t_latency_seconds_bucket", "stage", "journal", "le",
                                      "+Inf", NULL) == 5.0);
    assert_true(isnan(tg_metrics_find_value(m, "t_latency_seconds_bucket", "stage", "journal",
                                            "le", "2", NULL)));
    assert_true(isnan(tg_metrics_find_value(m, "t_latency_seconds", "stage", "journal", NULL)));

    /* NaN goes to +Inf and poisons the sum, as in Prometheus' clients */
    tg_histogram_observe(h, NAN);
    assert_int_equal(tg_histogram_bucket(h, 2), 4);
    assert_int_equal(tg_histogram_count(h), 6);
    assert_true(isnan(tg_histogram_sum(h)));
    tg_metrics_destroy(m);
}

static void histogram_default_buckets(void **state)
{
    (void)state;
    assert_int_equal(tg_metrics_latency_buckets_len, 15);
    assert_true(tg_metrics_latency_buckets[0] == 0.001);
    assert_true(tg_metrics_latency_buckets[tg_metrics_latency_buckets_len - 1] == 60);

    struct tg_metrics *m = tg_metrics_new();
    struct tg_histogram *h = tg_metrics_histogram(m, "t_e2e_seconds", "End to end.", NULL, 0,
                                                  NULL);
    /* an observation per bucket, and one above the last */
    for (size_t i = 0; i < tg_metrics_latency_buckets_len; i++)
        tg_histogram_observe(h, tg_metrics_latency_buckets[i]);
    tg_histogram_observe(h, 61);
    for (size_t i = 0; i < tg_metrics_latency_buckets_len; i++)
        assert_int_equal(tg_histogram_bucket(h, i), i + 1);
    assert_int_equal(tg_histogram_count(h), tg_metrics_latency_buckets_len + 1);
    assert_true(has_line(m, "t_e2e_seconds_bucket{le=\"0.001\"} 1"));
    assert_true(has_line(m, "t_e2e_seconds_bucket{le=\"0.0025\"} 2"));
    assert_true(has_line(m, "t_e2e_seconds_bucket{le=\"60\"} 15"));
    assert_true(has_line(m, "t_e2e_seconds_bucket{le=\"+Inf\"} 16"));
    assert_true(has_line(m, "t_e2e_seconds_count 16"));

    double exp[4];
    tg_metrics_exponential_buckets(256, 4, 4, exp);
    assert_true(exp[0] == 256 && exp[1] == 1024 && exp[2] == 4096 && exp[3] == 16384);
    struct tg_histogram *sizes = tg_metrics_histogram(m, "t_batch_bytes", "Batch sizes.", exp, 4,
                                                      NULL);
    tg_histogram_observe(sizes, 2000);
    assert_true(has_line(m, "t_batch_bytes_bucket{le=\"1024\"} 0"));
    assert_true(has_line(m, "t_batch_bytes_bucket{le=\"4096\"} 1"));
    tg_metrics_destroy(m);
}

static void escaping(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    const char *help = "Help with a \\ backslash, \"quotes\"\nand a newline.";
    struct tg_counter *c = tg_metrics_counter(m, "t_escape_total", help, "path",
                                              "C:\\dir \"x\"\nnext", "utf8", "é✓", NULL);
    tg_counter_inc(c);
    char *text = render(m);
    const char *expected =
        "# HELP t_escape_total Help with a \\\\ backslash, \"quotes\"\\nand a newline.\n"
        "# TYPE t_escape_total counter\n"
        "t_escape_total{path=\"C:\\\\dir \\\"x\\\"\\nnext\",utf8=\"é✓\"} 1\n";
    assert_string_equal(text, expected);
    free(text);
    /* lookups use the raw value, not the escaped one */
    assert_true(tg_metrics_find_value(m, "t_escape_total", "utf8", "é✓", "path",
                                      "C:\\dir \"x\"\nnext", NULL) == 1.0);
    tg_metrics_destroy(m);
}

static void exact_rendering(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    char *text = render(m);
    assert_string_equal(text, ""); /* an empty registry renders as nothing */
    free(text);

    /* registered out of order on purpose: the output is sorted */
    struct tg_gauge *temp = tg_metrics_gauge(m, "x_temperature_celsius", "Board temperature.",
                                             NULL);
    struct tg_counter *c500 = tg_metrics_counter(m, "x_requests_total", "Requests handled.",
                                                 "code", "500", NULL);
    static const double bounds[] = { 0.125, 1 };
    struct tg_histogram *lat = tg_metrics_histogram(m, "x_latency_seconds",
                                                    "Time to handle a request.", bounds, 2,
                                                    "path", "a", NULL);
    struct tg_counter *c200 = tg_metrics_counter(m, "x_requests_total", "Requests handled.",
                                                 "code", "200", NULL);
    tg_gauge_set(temp, 41.5);
    tg_counter_inc(c500);
    tg_counter_add(c200, 3);
    tg_histogram_observe(lat, 0.0625);
    tg_histogram_observe(lat, 0.125);
    tg_histogram_observe(lat, 0.5);
    tg_histogram_observe(lat, 3);

    text = render(m);
    const char *expected =
        "# HELP x_latency_seconds Time to handle a request.\n"
        "# TYPE x_latency_seconds histogram\n"
        "x_latency_seconds_bucket{path=\"a\",le=\"0.125\"} 2\n"
        "x_latency_seconds_bucket{path=\"a\",le=\"1\"} 3\n"
        "x_latency_seconds_bucket{path=\"a\",le=\"+Inf\"} 4\n"
        "x_latency_seconds_sum{path=\"a\"} 3.6875\n"
        "x_latency_seconds_count{path=\"a\"} 4\n"
        "# HELP x_requests_total Requests handled.\n"
        "# TYPE x_requests_total counter\n"
        "x_requests_total{code=\"200\"} 3\n"
        "x_requests_total{code=\"500\"} 1\n"
        "# HELP x_temperature_celsius Board temperature.\n"
        "# TYPE x_temperature_celsius gauge\n"
        "x_temperature_celsius 41.5\n";
    assert_string_equal(text, expected);
    free(text);
    tg_metrics_destroy(m);
}

/* --- concurrency --------------------------------------------------------------------------- */

#define THREADS 4
#define ITERATIONS 250000

struct worker_arg {
    struct tg_metrics *m;
    struct tg_counter *c;
    struct tg_histogram *h;
    struct tg_gauge *g;
    struct tg_counter *registered; /* what this thread's own registration returned */
};

static void *worker(void *p)
{
    struct worker_arg *arg = p;
    arg->registered = tg_metrics_counter(arg->m, "t_shared_total", "Registered by all threads.",
                                         "k", "v", NULL);
    for (int i = 0; i < ITERATIONS; i++) {
        tg_counter_inc(arg->c);
        tg_counter_inc(arg->registered);
        tg_histogram_observe(arg->h, (i & 1) ? 0.5 : 2.0);
        tg_gauge_add(arg->g, 1.0);
    }
    return NULL;
}

/* Renders while the workers update. cmocka's asserts are not for other threads: the result
 * goes back through the return value. */
static void *scraper(void *p)
{
    struct tg_metrics *m = p;
    for (int i = 0; i < 200; i++) {
        char *text = NULL;
        size_t len = 0;
        if (tg_metrics_render(m, &text, &len) != TG_OK)
            return (void *)"render failed";
        free(text);
    }
    return NULL;
}

static void concurrent_updates(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    static const double bounds[] = { 1 };
    struct worker_arg args[THREADS];
    struct tg_counter *c = tg_metrics_counter(m, "t_concurrent_total", "Concurrent.", NULL);
    struct tg_histogram *h = tg_metrics_histogram(m, "t_concurrent_seconds", "Concurrent.",
                                                  bounds, 1, NULL);
    struct tg_gauge *g = tg_metrics_gauge(m, "t_concurrent_level", "Concurrent.", NULL);
    pthread_t threads[THREADS], scrape;
    assert_int_equal(pthread_create(&scrape, NULL, scraper, m), 0);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){ .m = m, .c = c, .h = h, .g = g };
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    void *scrape_result = NULL;
    assert_int_equal(pthread_join(scrape, &scrape_result), 0);
    assert_null(scrape_result);

    const uint64_t total = (uint64_t)THREADS * ITERATIONS;
    assert_int_equal(tg_counter_value(c), total);
    for (int i = 1; i < THREADS; i++)
        assert_ptr_equal(args[i].registered, args[0].registered);
    assert_int_equal(tg_counter_value(args[0].registered), total);
    assert_int_equal(tg_histogram_count(h), total);
    assert_int_equal(tg_histogram_bucket(h, 0), total / 2);
    /* every addend is exact in binary, so the CAS-loop sum is exact too */
    assert_true(tg_histogram_sum(h) == (double)total / 2 * 0.5 + (double)total / 2 * 2.0);
    assert_true(tg_gauge_value(g) == (double)total);
    tg_metrics_destroy(m);
}

/* --- registration errors abort ------------------------------------------------------------- */

enum misuse {
    BAD_METRIC_NAME,
    COUNTER_WITHOUT_TOTAL,
    GAUGE_WITH_TOTAL,
    OTHER_TYPE,
    OTHER_HELP,
    OTHER_LABEL_NAMES,
    BAD_LABEL_NAME,
    RESERVED_LABEL_NAME,
    LE_ON_HISTOGRAM,
    DUPLICATE_LABEL,
    MISSING_LABEL_VALUE,
    BAD_UTF8,
    EMPTY_HELP,
    BAD_BUCKETS,
    OTHER_BUCKETS,
    HISTOGRAM_COLLISION,
    OTHER_CALLBACK,
};

static double zero(void *ud)
{
    (void)ud;
    return 0;
}

static void misuse(enum misuse what)
{
    struct tg_metrics *m = tg_metrics_new();
    static const double b12[] = { 1, 2 }, b13[] = { 1, 3 }, b21[] = { 2, 1 };
    switch (what) {
    case BAD_METRIC_NAME:
        tg_metrics_gauge(m, "9lives", "h", NULL);
        break;
    case COUNTER_WITHOUT_TOTAL:
        tg_metrics_counter(m, "t_events", "h", NULL);
        break;
    case GAUGE_WITH_TOTAL:
        tg_metrics_gauge(m, "t_events_total", "h", NULL);
        break;
    case OTHER_TYPE:
        tg_metrics_gauge(m, "t_x", "h", NULL);
        tg_metrics_histogram(m, "t_x", "h", NULL, 0, NULL);
        break;
    case OTHER_HELP:
        tg_metrics_counter(m, "t_x_total", "one", NULL);
        tg_metrics_counter(m, "t_x_total", "two", NULL);
        break;
    case OTHER_LABEL_NAMES:
        tg_metrics_counter(m, "t_x_total", "h", "reason", "a", NULL);
        tg_metrics_counter(m, "t_x_total", "h", "reson", "b", NULL);
        break;
    case BAD_LABEL_NAME:
        tg_metrics_counter(m, "t_x_total", "h", "bad-name", "a", NULL);
        break;
    case RESERVED_LABEL_NAME:
        tg_metrics_counter(m, "t_x_total", "h", "__name", "a", NULL);
        break;
    case LE_ON_HISTOGRAM:
        tg_metrics_histogram(m, "t_x_seconds", "h", NULL, 0, "le", "1", NULL);
        break;
    case DUPLICATE_LABEL:
        tg_metrics_counter(m, "t_x_total", "h", "a", "1", "a", "2", NULL);
        break;
    case MISSING_LABEL_VALUE:
        tg_metrics_counter(m, "t_x_total", "h", "a", NULL);
        break;
    case BAD_UTF8:
        tg_metrics_counter(m, "t_x_total", "h", "a", "\xc3\x28", NULL);
        break;
    case EMPTY_HELP:
        tg_metrics_counter(m, "t_x_total", "", NULL);
        break;
    case BAD_BUCKETS:
        tg_metrics_histogram(m, "t_x_seconds", "h", b21, 2, NULL);
        break;
    case OTHER_BUCKETS:
        tg_metrics_histogram(m, "t_x_seconds", "h", b12, 2, "a", "1", NULL);
        tg_metrics_histogram(m, "t_x_seconds", "h", b13, 2, "a", "2", NULL);
        break;
    case HISTOGRAM_COLLISION:
        tg_metrics_histogram(m, "t_x_seconds", "h", NULL, 0, NULL);
        tg_metrics_gauge(m, "t_x_seconds_count", "h", NULL);
        break;
    case OTHER_CALLBACK:
        tg_metrics_gauge(m, "t_x", "h", NULL);
        tg_metrics_gauge_fn(m, "t_x", "h", zero, NULL, NULL);
        break;
    }
    tg_metrics_destroy(m);
}

/* Runs misuse(what) in a child and checks that it aborted with `message` on stderr. */
static void expect_abort(enum misuse what, const char *message)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        misuse(what);
        _exit(0); /* not reached when the registry aborts */
    }
    close(fds[1]);
    char out[1024];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof out - 1 && (n = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT || !strstr(out, message))
        fail_msg("misuse %d: expected an abort with \"%s\", got status %d and stderr \"%s\"",
                 (int)what, message, status, out);
}

static void registration_errors_abort(void **state)
{
    (void)state;
    expect_abort(BAD_METRIC_NAME, "invalid metric name \"9lives\"");
    expect_abort(COUNTER_WITHOUT_TOTAL, "counter t_events: counter names end in _total");
    expect_abort(GAUGE_WITH_TOTAL, "only counters end in _total");
    expect_abort(OTHER_TYPE, "metric t_x registered as a gauge and as a histogram");
    expect_abort(OTHER_HELP, "metric t_x_total registered with two help texts");
    expect_abort(OTHER_LABEL_NAMES, "two sets of label names: {reason} and {reson}");
    expect_abort(BAD_LABEL_NAME, "invalid label name \"bad-name\"");
    expect_abort(RESERVED_LABEL_NAME, "invalid label name \"__name\"");
    expect_abort(LE_ON_HISTOGRAM, "\"le\" is reserved");
    expect_abort(DUPLICATE_LABEL, "label a given twice");
    expect_abort(MISSING_LABEL_VALUE, "label a has no value");
    expect_abort(BAD_UTF8, "not valid UTF-8");
    expect_abort(EMPTY_HELP, "help text is required");
    expect_abort(BAD_BUCKETS, "must increase strictly");
    expect_abort(OTHER_BUCKETS, "two different bucket sets");
    expect_abort(HISTOGRAM_COLLISION, "collides with the samples of histogram t_x_seconds");
    expect_abort(OTHER_CALLBACK, "registered again with another callback");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counter_semantics),
        cmocka_unit_test(labels_and_families),
        cmocka_unit_test(gauge_semantics),
        cmocka_unit_test(callback_gauges),
        cmocka_unit_test(histogram_semantics),
        cmocka_unit_test(histogram_default_buckets),
        cmocka_unit_test(escaping),
        cmocka_unit_test(exact_rendering),
        cmocka_unit_test(concurrent_updates),
        cmocka_unit_test(registration_errors_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
