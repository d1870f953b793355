/*
 * test_dashboard.c - config/grafana/tidegate.json against the real Prometheus (Debian's
 * `prometheus` package) scraping a running gateway under load and a running worker
 * (issue 13); the worker reads a cluster of its own. For every panel target and every template variable's query:
 *   - with the variables at "All" (".*") and $__rate_interval substituted, the query parses
 *     and returns data through Prometheus's HTTP API (/api/v1/query) once a few scrapes are in;
 *   - with board and instance set to the gateway's own values it still returns data, and with
 *     a board no gateway has, every gateway query that has no `or vector(0)` returns nothing
 *     (so the variables really filter);
 *   - gateway queries carry the site, board and instance filters, worker queries the worker
 *     filter.
 * Prometheus listens on a free loopback port, scrapes every second, keeps its data in the
 * fixture's temp dir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_fixture.h"
#include "worker_fixture.h"

#ifndef TG_SOURCE_DIR
#error "TG_SOURCE_DIR must name the source tree"
#endif
#define DASHBOARD TG_SOURCE_DIR "/config/grafana/tidegate.json"
#define BOARD "testboard"
#define RATE_INTERVAL "20s"
#define WAIT_MS 90000
#define MAX_QUERIES 128

struct query {
    char *title;  /* panel title or "variable NAME" */
    char *expr;   /* as in the dashboard */
    bool gateway; /* reads gateway metrics (not only the worker's) */
};

/* Replaces every occurrence of from in s (malloc'd, freed) by to. */
static char *replace_all(char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
        n++;
    char *out = malloc(strlen(s) + n * (tl + 1) + 1);
    assert_non_null(out);
    char *o = out;
    for (const char *p = s;;) {
        const char *hit = strstr(p, from);
        if (!hit) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to, tl);
        o += tl;
        p = hit + fl;
    }
    free(s);
    return out;
}

/* label_values(SELECTOR, LABEL) -> count by (LABEL) (SELECTOR): the same series in PromQL. */
static char *variable_promql(const char *q)
{
    const char *open = strchr(q, '('), *comma = strrchr(q, ','), *close = strrchr(q, ')');
    assert_true(strncmp(q, "label_values(", 13) == 0 && open && comma && close && comma < close);
    char *out = malloc(strlen(q) + 32);
    assert_non_null(out);
    int label_len = (int)(close - comma - 1);
    const char *label = comma + 1;
    while (*label == ' ') {
        label++;
        label_len--;
    }
    sprintf(out, "count by (%.*s) (%.*s)", label_len, label, (int)(comma - open - 1), open + 1);
    return out;
}

static size_t collect_panels(json_t *panels, struct query *qs, size_t n)
{
    size_t i;
    json_t *p;
    json_array_foreach(panels, i, p) {
        json_t *nested = json_object_get(p, "panels");
        if (json_is_array(nested))
            n = collect_panels(nested, qs, n);
        json_t *targets = json_object_get(p, "targets");
        size_t j;
        json_t *t;
        json_array_foreach(targets, j, t) {
            const char *expr = json_string_value(json_object_get(t, "expr"));
            assert_non_null(expr);
            assert_true(n < MAX_QUERIES);
            qs[n].title = strdup(json_string_value(json_object_get(p, "title")));
            qs[n].expr = strdup(expr);
            qs[n].gateway = strstr(expr, "tidegate_worker_") == NULL;
            n++;
        }
    }
    return n;
}

static size_t load_dashboard(struct query *qs, bool *has_board, bool *has_instance)
{
    json_error_t jerr;
    json_t *d = json_load_file(DASHBOARD, 0, &jerr);
    if (!d)
        fail_msg("%s:%d: %s", DASHBOARD, jerr.line, jerr.text);
    size_t n = collect_panels(json_object_get(d, "panels"), qs, 0);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(json_object_get(d, "templating"), "list"), i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *type = json_string_value(json_object_get(v, "type"));
        if (strcmp(type, "query") != 0)
            continue;
        *has_board |= strcmp(name, "board") == 0;
        *has_instance |= strcmp(name, "instance") == 0;
        const char *q = json_string_value(json_object_get(json_object_get(v, "query"), "query"));
        assert_non_null(q);
        char title[128];
        snprintf(title, sizeof title, "variable %s", name);
        qs[n].title = strdup(title);
        qs[n].expr = variable_promql(q);
        qs[n].gateway = strstr(q, "tidegate_worker_") == NULL;
        n++;
    }
    json_decref(d);
    return n;
}

static void url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

enum answer { ANSWER_DATA, ANSWER_EMPTY, ANSWER_ERROR };

/* Runs expr with the variables substituted; on ANSWER_ERROR why holds Prometheus's reason. */
static enum answer run_query(int port, const char *expr, const char *board, const char *instance,
                             char *why, size_t whylen)
{
    char *e = strdup(expr);
    e = replace_all(e, "$__rate_interval", RATE_INTERVAL);
    e = replace_all(e, "$site", ".*");
    e = replace_all(e, "$board", board);
    e = replace_all(e, "$instance", instance);
    e = replace_all(e, "$worker", ".*");
    char enc[8192], path[8300];
    url_encode(e, enc, sizeof enc);
    snprintf(path, sizeof path, "/api/v1/query?query=%s", enc);
    char *body = NULL;
    int status = tg_harness_http_get(port, path, 10000, &body);
    enum answer a = ANSWER_ERROR;
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    const char *st = json_string_value(json_object_get(j, "status"));
    if (status == 200 && st && strcmp(st, "success") == 0) {
        json_t *result = json_object_get(json_object_get(j, "data"), "result");
        a = json_array_size(result) > 0 ? ANSWER_DATA : ANSWER_EMPTY;
    } else {
        snprintf(why, whylen, "HTTP %d: %s (query %s)", status,
                 json_string_value(json_object_get(j, "error")) ?: (body ? body : "no answer"), e);
    }
    json_decref(j);
    free(body);
    free(e);
    return a;
}

struct all_data {
    int port;
    struct query *qs;
    size_t n;
    size_t missing;     /* queries without data at the last round */
    const char *first_missing;
};

/* True once every query returns data; a query that does not parse fails the test at once. */
static bool all_have_data(void *ud)
{
    struct all_data *ad = ud;
    ad->missing = 0;
    for (size_t i = 0; i < ad->n; i++) {
        char why[1024];
        enum answer a = run_query(ad->port, ad->qs[i].expr, ".*", ".*", why, sizeof why);
        if (a == ANSWER_ERROR)
            fail_msg("panel \"%s\": %s", ad->qs[i].title, why);
        if (a == ANSWER_EMPTY && ad->missing++ == 0)
            ad->first_missing = ad->qs[i].title;
    }
    return ad->missing == 0;
}

static bool prometheus_ready(void *ud)
{
    int port = *(int *)ud;
    return tg_harness_http_get(port, "/-/ready", 2000, NULL) == 200;
}

static void every_panel_returns_data(void **state)
{
    (void)state;
    static struct query qs[MAX_QUERIES];
    bool has_board = false, has_instance = false;
    size_t n = load_dashboard(qs, &has_board, &has_instance);
    assert_true(has_board);
    assert_true(has_instance);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(qs[i].title, "variable ", 9) == 0)
            continue;
        bool worker_only = strstr(qs[i].expr, "tidegate_worker_") != NULL;
        if (worker_only && !strstr(qs[i].expr, "instance=~\"$worker\""))
            fail_msg("panel \"%s\": no instance=~\"$worker\" filter: %s", qs[i].title,
                     qs[i].expr);
        if (!worker_only && (!strstr(qs[i].expr, "board=~\"$board\"") ||
                             !strstr(qs[i].expr, "instance=~\"$instance\"") ||
                             !strstr(qs[i].expr, "site=~\"$site\"")))
            fail_msg("panel \"%s\": lacks the site/board/instance filters: %s", qs[i].title,
                     qs[i].expr);
    }
    fprintf(stderr, "%zu queries in %s\n", n, DASHBOARD);

    /* A gateway under load (acks on, so their panel has data), and a worker reading its
     * telemetry topic. */
    const char *sets[] = {"ack.enabled=true", NULL};
    const struct tg_gw_opts opts = {.sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    /* The worker on a cluster of its own (worker_fixture.h: its state topic must have as many
     * partitions as telemetry, which the gateway fixture's auto-created topics do not), fed
     * two minutes of a synthetic fleet's canonical records: only its metrics matter here. */
    struct wfx_cluster *cl = wfx_cluster_start(false);
    assert_non_null(cl);
    const struct wfx_input in = {.n_devices = 20, .base_ts_ms = wfx_recent_base_ms(120)};
    assert_true(wfx_produce(wfx_cluster_bootstrap(cl), "telemetry", &in, 0, 120) > 0);
    struct wfx_worker *wk = wfx_worker_start(tg_gw_dir(gw), "worker", "dash-w1",
                                             wfx_cluster_bootstrap(cl), "dash-group", "a.",
                                             NULL);
    assert_non_null(wk);
    wfx_worker_wait_assigned(wk, WAIT_MS);
    struct tg_gw_pub *pub = tg_gw_pub_new(gw, "dash-pub");
    assert_non_null(pub);
    const struct tg_gw_plan plan = {.prefix = "dash", .devices = 20, .seqs = 3000, .boot = 1,
                                    .rate = 300, .format = TG_GW_MIXED};
    assert_int_equal(tg_gw_pub_plan_start(pub, &plan), 0);
    for (int i = 0; i < 5; i++) /* dead letters for the invalid-by-reason panel */
        assert_int_equal(tg_gw_pub_send(pub, "dash-bad", "not a reading", 13), 0);

    /* Prometheus, scraping both every second. */
    char cfg_path[512], tsdb[512], listen[64], cfg_arg[600], tsdb_arg[600], instance[64];
    int port = tg_harness_free_port();
    assert_true(port > 0);
    snprintf(cfg_path, sizeof cfg_path, "%s/prometheus.yml", tg_gw_dir(gw));
    snprintf(tsdb, sizeof tsdb, "%s/tsdb", tg_gw_dir(gw));
    snprintf(instance, sizeof instance, "127.0.0.1:%d", tg_gw_metrics_port(gw));
    FILE *f = fopen(cfg_path, "w");
    assert_non_null(f);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: tidegate\n    static_configs:\n"
            "      - targets: ['%s']\n        labels: {site: test, board: %s}\n"
            "  - job_name: tidegate-worker\n    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            instance, BOARD, wk->metrics_port);
    assert_int_equal(fclose(f), 0);
    snprintf(cfg_arg, sizeof cfg_arg, "--config.file=%s", cfg_path);
    snprintf(tsdb_arg, sizeof tsdb_arg, "--storage.tsdb.path=%s", tsdb);
    snprintf(listen, sizeof listen, "--web.listen-address=127.0.0.1:%d", port);
    const char *argv[] = {"prometheus", cfg_arg, tsdb_arg, listen, "--log.level=warn", NULL};
    struct tg_harness_proc *prom = tg_harness_proc_start(tg_gw_dir(gw), "prometheus", argv, NULL,
                                                         0);
    assert_non_null(prom);
    if (!tg_harness_wait_until(prometheus_ready, &port, WAIT_MS))
        fail_msg("prometheus not ready on port %d; see %s", port,
                 tg_harness_proc_stderr_path(prom));

    /* Every query, variables at "All": parses at once, returns data once scrapes are in. */
    struct all_data ad = {.port = port, .qs = qs, .n = n};
    int64_t t0 = tg_harness_now_ms();
    if (!tg_harness_wait_until(all_have_data, &ad, WAIT_MS))
        fail_msg("%zu queries still without data after %d ms, first: \"%s\"", ad.missing,
                 WAIT_MS, ad.first_missing);
    fprintf(stderr, "all %zu queries returned data %lld ms after Prometheus was ready\n", n,
            (long long)(tg_harness_now_ms() - t0));

    /* The variables filter: the gateway's own board and instance still give data, a board
     * no gateway has gives none (except where the query adds a vector(0)). */
    size_t filtered = 0;
    for (size_t i = 0; i < n; i++) {
        char why[1024];
        enum answer own = run_query(port, qs[i].expr, BOARD, instance, why, sizeof why);
        if (own != ANSWER_DATA)
            fail_msg("\"%s\" with board %s, instance %s: no data (%s)", qs[i].title, BOARD,
                     instance, own == ANSWER_ERROR ? why : "empty");
        if (!qs[i].gateway || strstr(qs[i].expr, "vector(") || !strstr(qs[i].expr, "$board"))
            continue;
        enum answer other = run_query(port, qs[i].expr, "nosuchboard", ".*", why, sizeof why);
        if (other != ANSWER_EMPTY)
            fail_msg("\"%s\" with board nosuchboard: %s", qs[i].title,
                     other == ANSWER_ERROR ? why : "data (the board filter is not applied)");
        filtered++;
    }
    fprintf(stderr, "%zu gateway queries filtered out by an unknown board\n", filtered);
    assert_true(filtered > 10);

    tg_gw_pub_destroy(pub);
    assert_int_equal(tg_harness_proc_stop(prom, 10000) >= 0, 1);
    tg_harness_proc_destroy(prom);
    wfx_worker_stop(wk);
    wfx_worker_destroy(wk);
    wfx_cluster_destroy(cl);
    tg_gw_destroy(gw);
    for (size_t i = 0; i < n; i++) {
        free(qs[i].title);
        free(qs[i].expr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(every_panel_returns_data, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
