/*
 * replay.c - see replay.h. A CSV front-end over the engine: one reading per line, the
 * engine's per-point hook writes the output line.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_rules.h"
#include "engine.h"
#include "engine_internal.h"
#include "replay.h"

struct replay {
    FILE *out;
    const char *ts_text, *value_text; /* the current line's fields, echoed as written */
    size_t ts_len, value_len;
    bool emitted;
};

static void on_point(void *ud, const struct tg_engine_point *pt)
{
    struct replay *rp = ud;
    fprintf(rp->out, "%.*s,%.*s,%.6f,%s\n", (int)rp->ts_len, rp->ts_text, (int)rp->value_len,
            rp->value_text, pt->score, pt->alert_state);
    rp->emitted = true;
}

static void on_output(void *ud, const struct tg_engine_output *out)
{
    (void)ud;
    (void)out; /* replay shows the per-point view; alerts and aggregates are the worker's */
}

static bool digits_at(const char *s, size_t at, size_t n, int *out)
{
    int v = 0;
    for (size_t i = at; i < at + n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int days_in_month(int y, int mo)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return mo == 2 && leap ? 29 : days[mo - 1];
}

/* "YYYY-MM-DD HH:MM:SS" (UTC) or integer ms; false when neither. The date is read by
 * position, digit by digit: sscanf's %d would take signs and spaces ("2026-01-01 -1:00:00"),
 * and timegm() would quietly move February 31 to March 3. Second 60 (a leap second, as
 * recorders write it) is accepted and counts as the next minute's first. */
static bool parse_ts(const char *s, size_t len, int64_t *ms)
{
    char buf[40];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    bool digits = true;
    for (size_t i = 0; i < len; i++)
        if ((buf[i] < '0' || buf[i] > '9') && !(i == 0 && buf[i] == '-'))
            digits = false;
    if (digits) {
        errno = 0;
        char *end;
        long long v = strtoll(buf, &end, 10);
        if (errno || *end)
            return false;
        *ms = v;
        return true;
    }
    int y, mo, d, h, mi, se;
    if (len != 19 || buf[4] != '-' || buf[7] != '-' || buf[10] != ' ' || buf[13] != ':' ||
        buf[16] != ':' || !digits_at(buf, 0, 4, &y) || !digits_at(buf, 5, 2, &mo) ||
        !digits_at(buf, 8, 2, &d) || !digits_at(buf, 11, 2, &h) || !digits_at(buf, 14, 2, &mi) ||
        !digits_at(buf, 17, 2, &se))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
        return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = se};
    time_t t = timegm(&tm);
    *ms = (int64_t)t * 1000;
    return true;
}

static size_t trim(const char **s, size_t len)
{
    while (len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        len--;
    }
    while (len && ((*s)[len - 1] == ' ' || (*s)[len - 1] == '\t' || (*s)[len - 1] == '\r' ||
                   (*s)[len - 1] == '\n'))
        len--;
    return len;
}

static void usage(FILE *err)
{
    fprintf(err, "usage: tidegate-worker replay --csv FILE [--metric NAME] [-c worker.ini] "
                 "[--set section.key=value]...\n");
}

/* The worker's whole schema when replay is linked into tidegate-worker (worker_config.c is
 * then in the program): a weak reference, NULL in a program without it (the standalone
 * tidegate-worker-replay, the tests), which fall back to the engine's sections alone. So
 * `tidegate-worker replay -c tidegate-worker.ini` reads the worker's own file. */
struct tg_config *tg_worker_config_new(void) __attribute__((weak));

static int replay_run(int argc, char **argv, struct tg_config *cfg, FILE *out, FILE *err);

int tg_worker_replay_run(int argc, char **argv, const struct tg_config_key *schema, size_t n,
                         FILE *out, FILE *err)
{
    return replay_run(argc, argv, tg_config_new(schema, n), out, err);
}

int tg_worker_replay_main(int argc, char **argv)
{
    if (tg_worker_config_new)
        return replay_run(argc, argv, tg_worker_config_new(), stdout, stderr);
    size_t n;
    const struct tg_config_key *keys = tg_engine_config_keys(&n);
    return tg_worker_replay_run(argc, argv, keys, n, stdout, stderr);
}

/* Takes cfg (a fresh config of a schema that includes the engine's; NULL: out of memory). */
static int replay_run(int argc, char **argv, struct tg_config *cfg, FILE *out, FILE *err)
{
    const char *csv = NULL, *metric = "value", *cfg_path = NULL;
    int rc = 2;
    struct tg_engine_config *ec = NULL;
    struct tg_engine *en = NULL;
    FILE *in = NULL;
    char *line = NULL;
    size_t cap = 0;
    if (!cfg) {
        fprintf(err, "replay: out of memory\n");
        goto cleanup;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_arg = i + 1 < argc;
        if (strcmp(a, "--csv") == 0 && has_arg) {
            csv = argv[++i];
        } else if (strcmp(a, "--metric") == 0 && has_arg) {
            metric = argv[++i];
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has_arg) {
            cfg_path = argv[++i];
        } else if (strcmp(a, "--set") == 0 && has_arg) {
            if (tg_config_set(cfg, argv[++i]) != TG_OK) {
                fprintf(err, "%s\n", tg_config_error(cfg));
                goto cleanup;
            }
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(out);
            rc = 0;
            goto cleanup;
        } else {
            fprintf(err, "replay: unknown or incomplete argument '%s'\n", a);
            usage(err);
            goto cleanup;
        }
    }
    if (!csv || !*metric) {
        usage(err);
        goto cleanup;
    }
    const char *problem = tg_codec_name_problem(metric, strlen(metric), METRIC_NAME_MAX);
    if (problem) {
        fprintf(err, "replay: --metric '%.80s': %s (a metric name is 1 to %d bytes of "
                     "printable UTF-8)\n", metric, problem, METRIC_NAME_MAX);
        goto cleanup;
    }
    if (cfg_path && tg_config_load_file(cfg, TG_CONFIG_FILE, cfg_path) != TG_OK) {
        fprintf(err, "%s\n", tg_config_error(cfg));
        goto cleanup;
    }
    char msg[512];
    ec = tg_engine_config_from(cfg, msg, sizeof msg);
    if (!ec) {
        fprintf(err, "%s\n", msg);
        goto cleanup;
    }
    struct replay rp = {.out = out};
    en = tg_engine_new(ec, on_output, &rp);
    if (!en || tg_engine_partition_add(en, 0) != TG_OK) {
        fprintf(err, "replay: out of memory\n");
        goto cleanup;
    }
    tg_engine_set_point_hook(en, on_point, &rp);
    in = strcmp(csv, "-") == 0 ? stdin : fopen(csv, "r");
    if (!in) {
        fprintf(err, "replay: %s: %s\n", csv, strerror(errno));
        goto cleanup;
    }
    fprintf(out, "timestamp,value,anomaly_score,alert_state\n");
    rc = 1;
    ssize_t got;
    unsigned long lineno = 0;
    bool any_data = false, header_seen = false;
    while ((got = getline(&line, &cap, in)) >= 0) {
        lineno++;
        const char *p = line;
        size_t raw_len = (size_t)got;
        if (lineno == 1 && raw_len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
            p += 3; /* a UTF-8 byte order mark, as spreadsheet exports write */
            raw_len -= 3;
        }
        size_t len = trim(&p, raw_len);
        if (len == 0 || p[0] == '#')
            continue;
        const char *comma = memchr(p, ',', len);
        const char *ts_s = p, *v_s = comma ? comma + 1 : NULL;
        size_t ts_len = comma ? (size_t)(comma - p) : len;
        size_t v_len = comma ? len - ts_len - 1 : 0;
        ts_len = trim(&ts_s, ts_len);
        if (v_s)
            v_len = trim(&v_s, v_len);
        int64_t ts = 0;
        char vbuf[64];
        char *end = NULL;
        double v = 0;
        bool ts_ok = parse_ts(ts_s, ts_len, &ts);
        /* Decimal only: strtod would also read "0x1p4" as 16. */
        bool v_ok = v_s && v_len > 0 && v_len < sizeof vbuf && !memchr(v_s, ',', v_len) &&
                    !memchr(v_s, 'x', v_len) && !memchr(v_s, 'X', v_len);
        if (v_ok) {
            memcpy(vbuf, v_s, v_len);
            vbuf[v_len] = '\0';
            v = strtod(vbuf, &end);
            v_ok = end && !*end && v == v && v - v == 0; /* finite */
        }
        if (!ts_ok || !v_ok) {
            /* A header is the first line with content, and only when its first field cannot
             * be a timestamp: a first row of data with a mistake in it is reported, not
             * skipped as if it were a header. */
            bool header = !any_data && !header_seen && ts_len > 0 &&
                          !(ts_s[0] >= '0' && ts_s[0] <= '9') && ts_s[0] != '-';
            if (header) {
                header_seen = true;
                continue;
            }
            fprintf(err, "%s:%lu: expected 'timestamp,value' with a timestamp "
                         "'YYYY-MM-DD HH:MM:SS' (UTC) or integer ms and a finite number, "
                         "got '%.*s'\n",
                    csv, lineno, (int)(len > 80 ? 80 : len), p);
            goto cleanup;
        }
        any_data = true;
        struct tg_metric m = {.name = metric, .value = v};
        struct tg_reading rd = {.device = "replay", .ts_ms = ts, .n_metrics = 1, .metrics = &m};
        rp.ts_text = ts_s;
        rp.ts_len = ts_len;
        rp.value_text = v_s;
        rp.value_len = v_len;
        rp.emitted = false;
        tg_err e = tg_engine_process(en, 0, &rd);
        if (e != TG_OK || !rp.emitted) {
            fprintf(err, "%s:%lu: not processed: %s%s\n", csv, lineno, tg_strerror(e),
                    e == TG_ERR_OUT_OF_RANGE ? " (the engine takes timestamps within +-2^53 ms "
                                               "of the epoch and values within +-1e100)"
                                             : "");
            goto cleanup;
        }
    }
    if (ferror(in)) {
        fprintf(err, "replay: %s: read error\n", csv);
        goto cleanup;
    }
    tg_engine_flush(en);
    /* A line not later than the one before is echoed with score 0 (the detectors learn in
     * time order): say how many, or a recording with a clock step looks merely calm. */
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    if (st.backward_ts)
        fprintf(err, "replay: %s: %" PRIu64 " line%s not scored: timestamp not after the "
                     "line before (duplicated or going backwards)\n",
                csv, st.backward_ts, st.backward_ts == 1 ? "" : "s");
    rc = fflush(out) == 0 ? 0 : 1;
cleanup:
    free(line);
    if (in && in != stdin)
        fclose(in);
    tg_engine_destroy(en);
    tg_engine_config_destroy(ec);
    tg_config_destroy(cfg);
    return rc;
}
