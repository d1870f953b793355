/* Integration test of the metrics HTTP exporter: a real libmicrohttpd server on a free loopback
 * port, scraped over TCP like Prometheus does, its output checked by `promtool check metrics`.
 * promtool comes from Debian's `prometheus` package (scripts/install-deps): when it is missing
 * the test fails, since the exposition format would go unchecked. TG_PROMTOOL overrides the path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_http.h"

/* --- a minimal HTTP/1.0 client ------------------------------------------------------------- */

struct reply {
    int status;
    char *headers; /* the raw header block */
    char *body;
    size_t body_len;
};

static void reply_free(struct reply *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Sends one request to host:port and reads the reply until the server closes. Returns false
 * (with errno) when the connection fails; a 10 s receive timeout keeps a hung server from
 * hanging the test. */
static bool http_request(int family, uint16_t port, const char *method, const char *path,
                         struct reply *r)
{
    memset(r, 0, sizeof *r);
    struct sockaddr_storage ss = { 0 };
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *a;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return false;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);

    size_t cap = 4096, got = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (got + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t k = read(fd, buf + got, cap - got - 1);
        if (k < 0 && errno == EINTR)
            continue;
        assert_true(k >= 0); /* a timeout fails the test */
        if (k == 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    buf[got] = '\0';

    char *end = strstr(buf, "\r\n\r\n");
    assert_non_null(end);
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
    r->headers = strndup(buf, (size_t)(end - buf) + 2);
    r->body_len = got - (size_t)(end + 4 - buf);
    r->body = malloc(r->body_len + 1);
    assert_non_null(r->headers);
    assert_non_null(r->body);
    memcpy(r->body, end + 4, r->body_len);
    r->body[r->body_len] = '\0';
    free(buf);
    return true;
}

static void get(uint16_t port, const char *path, struct reply *r)
{
    assert_true(http_request(AF_INET, port, "GET", path, r));
}

static void assert_header(const struct reply *r, const char *header_line)
{
    char needle[256];
    snprintf(needle, sizeof needle, "\r\n%s\r\n", header_line);
    if (!strcasestr(r->headers, needle))
        fail_msg("header \"%s\" not in:\n%s", header_line, r->headers);
}

/* --- promtool ------------------------------------------------------------------------------ */

/* The promtool to run: $TG_PROMTOOL, or the first one on PATH. Fails the test if none. */
static const char *promtool_path(void)
{
    static char path[4096];
    const char *env = getenv("TG_PROMTOOL");
    if (env && *env)
        return env;
    const char *dirs = getenv("PATH");
    if (!dirs)
        dirs = "/usr/bin:/bin";
    while (*dirs) {
        size_t n = strcspn(dirs, ":");
        snprintf(path, sizeof path, "%.*s/promtool", (int)n, dirs);
        if (n > 0 && access(path, X_OK) == 0)
            return path;
        dirs += n + (dirs[n] == ':');
    }
    fail_msg("promtool not found on PATH: it comes with Debian's prometheus package "
             "(run scripts/install-deps), or set TG_PROMTOOL");
    return NULL;
}

/* Runs `promtool check metrics` on text; returns its exit status, its output in out. */
static int promtool_check(const char *text, size_t len, char *out, size_t outlen)
{
    const char *promtool = promtool_path();
    char file[] = "/tmp/tg_metrics_scrape_XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' 2>&1", promtool, file);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, outlen - 1, p);
    out[got] = '\0';
    int status = pclose(p);
    unlink(file);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* --- fixtures ------------------------------------------------------------------------------ */

static double journal_oldest_age(void *ud)
{
    (void)ud;
    return 12.5;
}

/* A registry with every metric type, labels, several series per family and escapes. */
static struct tg_metrics *sample_registry(void)
{
    struct tg_metrics *m = tg_metrics_new();
    assert_non_null(m);
    tg_counter_add(tg_metrics_counter(m, "tidegate_messages_received_total",
                                      "MQTT messages received.", NULL),
                   1234);
    tg_counter_add(tg_metrics_counter(m, "tidegate_messages_invalid_total",
                                      "Payloads rejected, by reason.", "reason", "malformed",
                                      NULL),
                   7);
    tg_counter_inc(tg_metrics_counter(m, "tidegate_messages_invalid_total",
                                      "Payloads rejected, by reason.", "reason", "bad_signature",
                                      NULL));
    tg_counter_inc(tg_metrics_counter(m, "tidegate_test_escapes_total",
                                      "Help with \\ and \"quotes\"\nover two lines.", "value",
                                      "back\\slash \"quoted\"\nnewline ✓", NULL));
    tg_gauge_set(tg_metrics_gauge(m, "tidegate_journal_bytes", "Journal size in bytes.", NULL),
                 1048576);
    tg_gauge_set(tg_metrics_gauge(m, "tidegate_kafka_connected",
                                  "1 when the broker is reachable.", "broker", "127.0.0.1:9092",
                                  NULL),
                 1);
    tg_gauge_set(tg_metrics_gauge(m, "tidegate_test_special_values", "Non-finite values.",
                                  "kind", "nan", NULL),
                 NAN);
    tg_gauge_set(tg_metrics_gauge(m, "tidegate_test_special_values", "Non-finite values.",
                                  "kind", "inf", NULL),
                 -INFINITY);
    tg_metrics_gauge_fn(m, "tidegate_journal_oldest_age_seconds",
                        "Age of the oldest journaled reading.", journal_oldest_age, NULL, NULL);
    struct tg_histogram *lat = tg_metrics_histogram(m, "tidegate_e2e_latency_seconds",
                                                    "Device time to Kafka acknowledgement.", NULL,
                                                    0, "partition", "0", NULL);
    tg_histogram_observe(lat, 0.004);
    tg_histogram_observe(lat, 0.2);
    tg_histogram_observe(lat, 75);
    tg_histogram_observe(tg_metrics_histogram(m, "tidegate_e2e_latency_seconds",
                                              "Device time to Kafka acknowledgement.", NULL, 0,
                                              "partition", "1", NULL),
                         0.03);
    return m;
}

static atomic_bool kafka_down;

static bool health(void *ud, char *reason, size_t reason_len)
{
    (void)ud;
    if (!atomic_load(&kafka_down))
        return true;
    snprintf(reason, reason_len, "kafka: no broker reachable for 30 s");
    return false;
}

/* --- tests --------------------------------------------------------------------------------- */

static void scrape_passes_promtool(void **state)
{
    (void)state;
    struct tg_metrics *m = sample_registry();
    char err[256] = "";
    struct tg_metrics_http *h = tg_metrics_http_start(m, "127.0.0.1:0", NULL, NULL, err,
                                                      sizeof err);
    if (!h)
        fail_msg("start: %s", err);
    uint16_t port = tg_metrics_http_port(h);
    assert_true(port != 0);

    struct reply r;
    get(port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type: text/plain; version=0.0.4; charset=utf-8");
    char *expected = NULL;
    size_t expected_len = 0;
    assert_int_equal(tg_metrics_render(m, &expected, &expected_len), TG_OK);
    assert_string_equal(r.body, expected);
    assert_non_null(strstr(r.body, "tidegate_test_escapes_total{value=\"back\\\\slash "
                                   "\\\"quoted\\\"\\nnewline ✓\"} 1\n"));
    assert_non_null(strstr(r.body, "tidegate_journal_oldest_age_seconds 12.5\n"));
    assert_non_null(strstr(r.body,
                           "tidegate_e2e_latency_seconds_bucket{partition=\"0\",le=\"+Inf\"} 3\n"));

    char out[8192];
    int rc = promtool_check(r.body, r.body_len, out, sizeof out);
    if (rc != 0 || out[0])
        fail_msg("promtool check metrics: exit %d, output:\n%s\non:\n%s", rc, out, r.body);

    /* and promtool does catch a problem, so the check above means something */
    static const char bad[] = "# HELP x_events events\n# TYPE x_events counter\nx_events 1\n";
    rc = promtool_check(bad, strlen(bad), out, sizeof out);
    assert_true(rc != 0);
    assert_non_null(strstr(out, "_total"));

    free(expected);
    reply_free(&r);
    tg_metrics_http_stop(h);
    tg_metrics_destroy(m);
}

static void routes(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    char err[256] = "";
    struct tg_metrics_http *h = tg_metrics_http_start(m, "127.0.0.1:0", health, NULL, err,
                                                      sizeof err);
    if (!h)
        fail_msg("start: %s", err);
    uint16_t port = tg_metrics_http_port(h);
    struct reply r;

    atomic_store(&kafka_down, false);
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    reply_free(&r);

    atomic_store(&kafka_down, true);
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "kafka: no broker reachable for 30 s\n");
    reply_free(&r);
    atomic_store(&kafka_down, false);

    /* an empty registry is a valid, empty scrape; query strings are ignored */
    get(port, "/metrics?x=1", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    reply_free(&r);

    get(port, "/nope", &r);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    get(port, "/metrics/", &r);
    assert_int_equal(r.status, 404);
    reply_free(&r);

    assert_true(http_request(AF_INET, port, "POST", "/metrics", &r));
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow: GET, HEAD");
    reply_free(&r);

    tg_counter_inc(tg_metrics_counter(m, "t_head_total", "HEAD test.", NULL));
    assert_true(http_request(AF_INET, port, "HEAD", "/metrics", &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    reply_free(&r);

    tg_metrics_http_stop(h);
    /* the listening socket is gone with the exporter */
    assert_false(http_request(AF_INET, port, "GET", "/metrics", &r));
    assert_int_equal(errno, ECONNREFUSED);
    tg_metrics_http_stop(NULL);
    tg_metrics_destroy(m);
}

static void ipv6_loopback(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
        close(probe);
    if (!have_v6)
        skip(); /* the host has no IPv6 loopback: nothing to test here */

    struct tg_metrics *m = sample_registry();
    char err[256] = "";
    struct tg_metrics_http *h = tg_metrics_http_start(m, "[::1]:0", NULL, NULL, err, sizeof err);
    if (!h)
        fail_msg("start: %s", err);
    struct reply r;
    assert_true(http_request(AF_INET6, tg_metrics_http_port(h), "GET", "/metrics", &r));
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "tidegate_messages_received_total 1234\n"));
    reply_free(&r);
    tg_metrics_http_stop(h);
    tg_metrics_destroy(m);
}

static void bad_listen_addresses(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    static const struct {
        const char *listen;
        const char *error;
    } cases[] = {
        { "", "metrics listen: empty address, expected HOST:PORT" },
        { "127.0.0.1", "metrics listen 127.0.0.1: expected HOST:PORT" },
        { ":9464", "metrics listen :9464: expected HOST:PORT" },
        { "localhost:9464", "metrics listen localhost:9464: 'localhost' is not a numeric IPv4" },
        { "256.0.0.1:9464", "'256.0.0.1' is not a numeric IPv4 address" },
        { "::1:9464", "metrics listen ::1:9464: expected HOST:PORT" },
        { "[::1]9464", "metrics listen [::1]9464: expected HOST:PORT" },
        { "[127.0.0.1]:9464", "'127.0.0.1' is not a numeric IPv6 address" },
        { "127.0.0.1:65536", "port must be a number from 0 to 65535" },
        { "127.0.0.1:http", "port must be a number from 0 to 65535" },
        { "127.0.0.1:", "port must be a number from 0 to 65535" },
        { "127.0.0.1:-1", "port must be a number from 0 to 65535" },
        { "192.0.2.1:0", "metrics listen 192.0.2.1:0: Cannot assign requested address" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        struct tg_metrics_http *h = tg_metrics_http_start(m, cases[i].listen, NULL, NULL, err,
                                                          sizeof err);
        if (h || !strstr(err, cases[i].error))
            fail_msg("listen \"%s\": expected an error with \"%s\", got \"%s\"", cases[i].listen,
                     cases[i].error, h ? "(started)" : err);
    }
    tg_metrics_destroy(m);
}

static void port_in_use(void **state)
{
    (void)state;
    struct tg_metrics *m = tg_metrics_new();
    char err[256] = "";
    struct tg_metrics_http *first = tg_metrics_http_start(m, "127.0.0.1:0", NULL, NULL, err,
                                                          sizeof err);
    if (!first)
        fail_msg("start: %s", err);
    char addr[64], expected[128];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", tg_metrics_http_port(first));
    snprintf(expected, sizeof expected, "metrics listen %s: Address already in use", addr);
    struct tg_metrics_http *second = tg_metrics_http_start(m, addr, NULL, NULL, err,
                                                           sizeof err);
    assert_null(second);
    assert_string_equal(err, expected);

    /* the first exporter still serves */
    struct reply r;
    get(tg_metrics_http_port(first), "/healthz", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    tg_metrics_http_stop(first);
    tg_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scrape_passes_promtool),
        cmocka_unit_test(routes),
        cmocka_unit_test(ipv6_loopback),
        cmocka_unit_test(bad_listen_addresses),
        cmocka_unit_test(port_in_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
