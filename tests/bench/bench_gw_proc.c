/*
 * bench_gw_proc.c - what bench_gateway reads about the processes it measures: CPU time, peak
 * memory and I/O from /proc, and the gateway's Prometheus metrics over HTTP.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#include "bench_gw.h"

/* ------------------------------------------------------------------------------------------
 * /proc
 */

/* The value after "key:" at the start of a line of text, parsed as unsigned. */
static bool field_u64(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            char *end;
            unsigned long long v = strtoull(p + klen + 1, &end, 10);
            if (end == p + klen + 1)
                return false;
            *out = v;
            return true;
        }
    }
    return false;
}

void bgw_proc_sample(pid_t pid, struct bgw_proc_sample *out)
{
    memset(out, 0, sizeof *out);
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    char *stat = tg_harness_read_file(path);
    if (stat) {
        /* The command name (field 2) is in parentheses and may hold spaces: count fields from
         * the last ')'. utime and stime are fields 14 and 15, in clock ticks, and cover every
         * thread of the process, the exited ones included. */
        char *p = strrchr(stat, ')');
        unsigned long long utime = 0, stime = 0;
        if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                        &utime, &stime) == 2) {
            long tck = sysconf(_SC_CLK_TCK);
            out->cpu_s = (double)(utime + stime) / (double)(tck > 0 ? tck : 100);
            out->ok = true;
        }
        free(stat);
    }
    snprintf(path, sizeof path, "/proc/%ld/io", (long)pid);
    char *io = tg_harness_read_file(path);
    if (io) {
        out->io_ok = field_u64(io, "rchar", &out->rchar) && field_u64(io, "wchar", &out->wchar) &&
                     field_u64(io, "read_bytes", &out->read_bytes) &&
                     field_u64(io, "write_bytes", &out->write_bytes) &&
                     field_u64(io, "cancelled_write_bytes", &out->cancelled_write_bytes);
        free(io);
    }
}

long bgw_proc_status_kb(pid_t pid, const char *field)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    char *status = tg_harness_read_file(path);
    uint64_t kb;
    bool ok = status && field_u64(status, field, &kb);
    free(status);
    return ok ? (long)kb : -1;
}

/* ------------------------------------------------------------------------------------------
 * HTTP
 */

char *bgw_http_get(int port, const char *path, int timeout_ms, int *status)
{
    char *body;
    *status = tg_harness_http_get(port, path, timeout_ms, &body);
    return body;
}

/* ------------------------------------------------------------------------------------------
 * Prometheus text format: "name{labels} value [timestamp]" per line, # for comments.
 */

/* If line starts with the sample name `name` (followed by '{' or a space), returns the start
 * of its labels ('{') or value; else NULL. */
static const char *sample_of(const char *line, const char *name, size_t nlen)
{
    if (strncmp(line, name, nlen) != 0)
        return NULL;
    if (line[nlen] == '{' || line[nlen] == ' ')
        return line + nlen;
    return NULL;
}

/* The value of a sample whose labels/value part starts at p. */
static bool sample_value(const char *p, double *out)
{
    if (*p == '{') {
        /* label values are quoted and may contain '}' only escaped inside quotes */
        bool quoted = false;
        for (p++; *p && *p != '\n'; p++) {
            if (quoted && *p == '\\' && p[1])
                p++;
            else if (*p == '"')
                quoted = !quoted;
            else if (!quoted && *p == '}')
                break;
        }
        if (*p != '}')
            return false;
        p++;
    }
    char *end;
    double v = strtod(p, &end);
    if (end == p)
        return false;
    *out = v;
    return true;
}

double bgw_metric_sum(const char *text, const char *name, bool *found)
{
    return bgw_metric_sum_where(text, name, NULL, found);
}

/* Whether the label set starting at p ('{', or the value when there is none) contains label. */
static bool labels_contain(const char *p, const char *label)
{
    if (*p != '{')
        return false;
    const char *end = strchr(p, '}');
    const char *hit = strstr(p, label);
    return hit && end && hit < end;
}

double bgw_metric_sum_where(const char *text, const char *name, const char *label, bool *found)
{
    size_t nlen = strlen(name);
    double sum = 0;
    bool any = false;
    for (const char *line = text; line && *line; line = strchr(line, '\n'),
                    line = line ? line + 1 : NULL) {
        const char *p = sample_of(line, name, nlen);
        double v;
        if (p && (!label || labels_contain(p, label)) && sample_value(p, &v)) {
            sum += v;
            any = true;
        }
    }
    if (found)
        *found = any;
    return sum;
}

bool bgw_metric_hist(const char *text, const char *name, struct bgw_hist *out)
{
    char bucket[256];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    size_t nlen = strlen(bucket);
    out->n = 0;
    for (const char *line = text; line && *line; line = strchr(line, '\n'),
                    line = line ? line + 1 : NULL) {
        const char *p = sample_of(line, bucket, nlen);
        double v;
        if (!p || !sample_value(p, &v))
            continue;
        const char *le = strstr(p, "le=\"");
        const char *eol = strchr(p, '\n');
        if (!le || (eol && le > eol))
            continue;
        double bound = strncmp(le + 4, "+Inf", 4) == 0 ? INFINITY : strtod(le + 4, NULL);
        /* sum the same bound over several label sets */
        size_t i;
        for (i = 0; i < out->n && out->le[i] != bound; i++)
            ;
        if (i == out->n) {
            if (out->n == BGW_HIST_MAX)
                continue;
            out->le[out->n] = bound;
            out->count[out->n] = 0;
            out->n++;
        }
        out->count[i] += v;
    }
    /* sort by bound (the exposition lists them ascending already; be sure) */
    for (size_t i = 1; i < out->n; i++)
        for (size_t j = i; j > 0 && out->le[j - 1] > out->le[j]; j--) {
            double t = out->le[j];
            out->le[j] = out->le[j - 1];
            out->le[j - 1] = t;
            t = out->count[j];
            out->count[j] = out->count[j - 1];
            out->count[j - 1] = t;
        }
    return out->n > 0;
}

bool bgw_hist_delta(const struct bgw_hist *later, const struct bgw_hist *earlier,
                    struct bgw_hist *out)
{
    if (later->n != earlier->n)
        return false;
    out->n = later->n;
    for (size_t i = 0; i < later->n; i++) {
        if (later->le[i] != earlier->le[i])
            return false;
        out->le[i] = later->le[i];
        out->count[i] = later->count[i] - earlier->count[i];
    }
    return true;
}

double bgw_hist_quantile(const struct bgw_hist *h, double q, bool *beyond)
{
    if (beyond)
        *beyond = false;
    if (h->n == 0 || h->count[h->n - 1] <= 0)
        return NAN;
    double rank = q * h->count[h->n - 1];
    for (size_t i = 0; i < h->n; i++) {
        if (h->count[i] < rank)
            continue;
        if (isinf(h->le[i])) {
            if (beyond)
                *beyond = true;
            return i > 0 ? h->le[i - 1] : NAN;
        }
        double lo = i > 0 ? h->le[i - 1] : 0.0;
        double below = i > 0 ? h->count[i - 1] : 0.0;
        double in = h->count[i] - below;
        if (in <= 0)
            return h->le[i];
        return lo + (h->le[i] - lo) * (rank - below) / in;
    }
    return NAN;
}

/* ------------------------------------------------------------------------------------------
 * Percentiles
 */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

double bgw_quantile_sorted(float *v, size_t n, double q, bool already_sorted)
{
    if (n == 0)
        return NAN;
    if (!already_sorted)
        qsort(v, n, sizeof *v, cmp_float);
    size_t rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

/* ------------------------------------------------------------------------------------------
 * Files
 */

char *bgw_read_small_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&buf, &cap, '\0', f);
    fclose(f);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

void bgw_print_log_tail(const char *path)
{
    char *log = bgw_read_small_file(path);
    if (!log)
        return;
    size_t len = strlen(log);
    const char *from = len > 3000 ? log + len - 3000 : log;
    fprintf(stderr, "--- last lines of %s ---\n%s\n---\n", path, from);
    free(log);
}
