/*
 * quality_wire: what a real `scripts/quality` run's worker consumed, against the simulator's
 * offline fleet (quality_sim.h), to tell the pipeline's effects on detection from the
 * signals'. Two steps:
 *
 *   quality_wire capture BROKERS TOPIC OUT
 *       every record of TOPIC (all partitions, from the start to the end), decoded as the
 *       worker decodes them (content-type header), one line each in consumption order:
 *       "partition offset device boot seq ts_ms name=value ..." (values %.17g: exact).
 *   quality_wire replay FILE LABELS SEED DEVICES DURATION_S [-c worker.ini] [--set k=v]...
 *                       [--mode asis|regen|grid]
 *       feeds FILE's readings to a fresh engine in FILE's order and scores its alerts against
 *       the run's labels (`tidegate-sim score`'s comparison), after a wire report: records per
 *       device out of order or repeated, the time steps' spread around 1 s, values that are not
 *       the simulator's quantization, and (regen, grid) values that differ from what the
 *       simulator's sensor gives at that reading's time. Modes:
 *         asis   the readings as consumed (must give the real run's alerts);
 *         regen  each value recomputed by the simulator (seed, device index) at the reading's
 *                own time: the wire's rounding removed, the sampling instants kept;
 *         grid   each reading moved to its device's 1 s grid (first reading + k s) and its
 *                value recomputed there: the sampling instants' jitter removed.
 *
 * For diagnosis, not a test: run it on a kept run (README, worker quality section).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "anomaly.h"
#include "codec_canonical_decode.h"
#include "kafka_read.h"
#include "quality_sim.h"
#include "sim_rand.h"
#include "sim_sensor.h"

#define PROG "quality_wire"
#define MAXM 8

struct rec {
    int32_t partition;
    int64_t offset;
    int dev;               /* index: sim-00001 is 0 */
    uint64_t boot, seq;
    int64_t ts_ms;
    int n;
    int name[MAXM];        /* index into names[] */
    double value[MAXM];
};

static char names[16][32];
static int n_names;

static int name_index(const char *s)
{
    for (int i = 0; i < n_names; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    if (n_names == 16)
        return -1;
    snprintf(names[n_names], sizeof names[0], "%s", s);
    return n_names++;
}

/* ---- capture ------------------------------------------------------------------------------ */

static int capture(const char *brokers, const char *topic, const char *out_path)
{
    static const char *const extra[] = {"isolation.level", "read_committed", NULL};
    int rc = 1;
    FILE *out = fopen(out_path, "w");
    rd_kafka_t *rk = tg_sim_kafka_consumer_new(PROG, brokers, "quality-wire", extra, NULL, NULL);
    struct tg_canonical_decoder *cd = tg_canonical_decoder_new(NULL);
    int64_t *hi = NULL;
    if (!out || !rk || !cd)
        goto cleanup;
    int n = tg_sim_kafka_partitions(rk, PROG, topic, 10000);
    if (n <= 0)
        goto cleanup;
    hi = calloc((size_t)n, sizeof *hi);
    if (!hi || tg_sim_kafka_watermarks(rk, topic, n, 10000, true, NULL, hi, NULL))
        goto cleanup;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    int pending = 0;
    for (int p = 0; p < n; p++)
        if (hi[p] > 0) {
            rd_kafka_topic_partition_list_add(list, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            pending++;
        }
    rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    uint64_t total = 0, bad = 0;
    while (pending > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, PROG ": %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        int cbor = -1;
        rd_kafka_headers_t *hdrs;
        const void *v;
        size_t vlen;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(hdrs, "content-type", &v, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR)
            cbor = tg_canonical_content_type(v, vlen);
        struct tg_reading rd;
        if (m->payload && tg_canonical_decode(cd, m->payload, m->len, cbor, &rd, NULL) == TG_OK) {
            fprintf(out, "%" PRId32 " %" PRId64 " %s %" PRIu64 " %" PRIu64 " %" PRId64,
                    m->partition, m->offset, rd.device, rd.boot, rd.seq, rd.ts_ms);
            for (size_t i = 0; i < rd.n_metrics; i++)
                fprintf(out, " %s=%.17g", rd.metrics[i].name, rd.metrics[i].value);
            fputc('\n', out);
        } else {
            bad++;
        }
        total++;
        if (m->offset + 1 >= hi[m->partition])
            pending--;
        rd_kafka_message_destroy(m);
    }
    fprintf(stderr, PROG ": %" PRIu64 " records from %d partitions (%" PRIu64 " undecodable)\n",
            total, n, bad);
    rc = 0;
cleanup:
    free(hi);
    tg_canonical_decoder_destroy(cd);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (out && fclose(out) != 0)
        rc = 1;
    return rc;
}

/* ---- replay ------------------------------------------------------------------------------- */

static struct rec *load(const char *path, size_t *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    struct rec *r = malloc(cap * sizeof *r);
    char line[1024];
    while (r && fgets(line, sizeof line, f)) {
        if (n == cap) {
            struct rec *g = realloc(r, (cap *= 2) * sizeof *r);
            if (!g) {
                free(r);
                r = NULL;
                break;
            }
            r = g;
        }
        struct rec *x = &r[n];
        int idx, used;
        if (sscanf(line, "%" SCNd32 " %" SCNd64 " sim-%d %" SCNu64 " %" SCNu64 " %" SCNd64 "%n",
                   &x->partition, &x->offset, &idx, &x->boot, &x->seq, &x->ts_ms, &used) != 6)
            continue;
        x->dev = idx - 1;
        x->n = 0;
        char *p = line + used, *tok;
        while ((tok = strtok(p, " \n")) && x->n < MAXM) {
            p = NULL;
            char *eq = strchr(tok, '=');
            if (!eq)
                continue;
            *eq = '\0';
            x->name[x->n] = name_index(tok);
            x->value[x->n++] = strtod(eq + 1, NULL);
        }
        n++;
    }
    fclose(f);
    *n_out = n;
    return r;
}

/* The simulator's quantization per metric (sim_sensor.c): units per step. */
static double quantum(const char *name)
{
    if (strcmp(name, "vibration_g") == 0)
        return 10000;
    if (strcmp(name, "battery_v") == 0)
        return 1000;
    return 100;
}

static int by_dev_seq(const void *a, const void *b)
{
    const struct rec *x = *(struct rec *const *)a, *y = *(struct rec *const *)b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->boot != y->boot)
        return x->boot < y->boot ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The device's simulated sensor, on a clock the caller sets. */
struct regen {
    int64_t now_ms;
};
static int64_t rg_wall(void *ctx)
{
    return ((struct regen *)ctx)->now_ms;
}
static uint64_t rg_mono(void *ctx)
{
    return (uint64_t)((struct regen *)ctx)->now_ms;
}
static uint32_t rg_rand(void *ctx)
{
    (void)ctx;
    return 4;
}
static void rg_label(void *ud, const struct tg_anomaly_label *lb)
{
    (void)ud;
    (void)lb;
}

/* Recomputes the values of one device's readings (recs in seq order) at their own times
 * (grid false) or at the device's 1 s grid (grid true: ts moved there too). Between readings
 * more than 1.5 s apart the sensor is asked at each missed second, as a device in a silence
 * anomaly is (those reads fail and consume no noise); a read that succeeds there is a second
 * the real device did not sample (a stall), so its effect is undone. Counts values that differ
 * from the captured ones in *diff. */
static void regen_device(struct rec **rs, size_t n, uint64_t seed, double rate, bool grid,
                         uint64_t *diff, uint64_t *diff_vib, double *max_vib_diff)
{
    char id[16];
    snprintf(id, sizeof id, "sim-%05d", rs[0]->dev + 1);
    struct regen rg = {0};
    struct tg_hal hal = {.ctx = &rg, .wall_ms = rg_wall, .mono_ms = rg_mono, .random_u32 = rg_rand};
    void *sensor = calloc(1, tg_sim_sensor_driver.state_size);
    void *anom = calloc(1, tg_anomaly_driver.state_size);
    void *save_s = calloc(1, tg_sim_sensor_driver.state_size);
    void *save_a = calloc(1, tg_anomaly_driver.state_size);
    if (!sensor || !anom || !save_s || !save_a)
        goto cleanup;
    tg_sim_sensor_set_seed(sensor, tg_sim_stream_seed(seed, (uint64_t)rs[0]->dev,
                                                      TG_SIM_STREAM_SENSOR));
    struct tg_anomaly_config acfg = {
        .device_id = id,
        .rate_per_hour = rate,
        .seed = tg_sim_stream_seed(seed, (uint64_t)rs[0]->dev, TG_SIM_STREAM_ANOMALY),
        .inner = &tg_sim_sensor_driver,
        .inner_state = sensor,
        .on_label = rg_label,
    };
    tg_anomaly_setup(anom, &acfg);
    rg.now_ms = rs[0]->ts_ms;
    if (tg_anomaly_driver.init(anom, &hal, 0) != 0)
        goto cleanup;
    int64_t t0 = rs[0]->ts_ms, prev = 0;
    for (size_t i = 0; i < n; i++) {
        struct rec *x = rs[i];
        int64_t t = grid ? t0 + (int64_t)llround((double)(x->ts_ms - t0) / 1000.0) * 1000
                         : x->ts_ms;
        for (int64_t k = prev + 1000; i > 0 && t - prev > 1500 && k <= t - 500; k += 1000) {
            memcpy(save_s, sensor, tg_sim_sensor_driver.state_size);
            memcpy(save_a, anom, tg_anomaly_driver.state_size);
            rg.now_ms = k;
            struct tg_sensor_sample smp = {0};
            if (tg_anomaly_driver.read(anom, &hal, &smp) == 0) {
                memcpy(sensor, save_s, tg_sim_sensor_driver.state_size);
                memcpy(anom, save_a, tg_anomaly_driver.state_size);
            }
        }
        rg.now_ms = t;
        struct tg_sensor_sample smp = {0};
        int tries = 0;
        while (tg_anomaly_driver.read(anom, &hal, &smp) != 0 && tries++ < 3)
            ; /* a silence that ends at this very reading: read again */
        prev = t;
        x->ts_ms = t;
        for (int m = 0; m < x->n; m++)
            for (unsigned j = 0; j < smp.n; j++)
                if (strcmp(names[x->name[m]], smp.names[j]) == 0) {
                    if (x->value[m] != smp.values[j]) {
                        (*diff)++;
                        if (strcmp(smp.names[j], "vibration_g") == 0) {
                            (*diff_vib)++;
                            double d = fabs(x->value[m] - smp.values[j]);
                            if (d > *max_vib_diff)
                                *max_vib_diff = d;
                        }
                    }
                    x->value[m] = smp.values[j];
                }
    }
cleanup:
    free(sensor);
    free(anom);
    free(save_s);
    free(save_a);
}

static void on_output(void *ud, const struct tg_engine_output *out)
{
    if (out->kind == TG_ENGINE_ALERT)
        tg_sim_score_add_alert_json(ud, out->value, out->value_len);
}

static int replay(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: " PROG " replay FILE LABELS SEED DEVICES DURATION_S "
                        "[-c worker.ini] [--set k=v]... [--mode asis|regen|grid] [--rate R]\n");
        return 2;
    }
    const char *path = argv[1], *labels = argv[2], *cfg_path = NULL, *mode = "asis";
    uint64_t seed = strtoull(argv[3], NULL, 10);
    int devices = atoi(argv[4]);
    double duration_s = atof(argv[5]), rate = 2;
    const char *sets[32];
    int n_sets = 0;
    for (int i = 6; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            cfg_path = argv[++i];
        else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && n_sets < 32)
            sets[n_sets++] = argv[++i];
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--rate") == 0 && i + 1 < argc)
            rate = atof(argv[++i]);
    }
    char err[512];
    size_t n = 0;
    struct rec *r = load(path, &n);
    struct rec **by = r ? malloc((n ? n : 1) * sizeof *by) : NULL;
    struct tg_engine_config *ec = tg_quality_engine_config(cfg_path, sets, n_sets, err, sizeof err);
    struct tg_sim_score *sc = tg_sim_score_new(TG_QUALITY_SLACK_MS);
    struct tg_engine *en = NULL;
    int rc = 1;
    if (!r || !by || !ec || !sc) {
        fprintf(stderr, PROG ": %s\n", !ec ? err : "cannot load");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++)
        by[i] = &r[i];

    /* The wire report: per device in consumption order (the worker's order). */
    {
        uint64_t backward = 0, repeated_ts = 0, repeated_seq = 0, seq_back = 0, split = 0;
        uint64_t unquant = 0, unquant_vib = 0, steps = 0;
        static const int edges[] = {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
        uint64_t hist[12] = {0};
        int64_t *last_ts = calloc((size_t)devices + 1, sizeof *last_ts);
        uint64_t *last_seq = calloc((size_t)devices + 1, sizeof *last_seq);
        int32_t *part = calloc((size_t)devices + 1, sizeof *part);
        if (!last_ts || !last_seq || !part)
            goto report_done;
        for (int d = 0; d <= devices; d++)
            part[d] = -1;
        for (size_t i = 0; i < n; i++) {
            struct rec *x = &r[i];
            if (x->dev < 0 || x->dev >= devices)
                continue;
            for (int m = 0; m < x->n; m++) {
                double q = quantum(names[x->name[m]]), s = x->value[m] * q;
                if ((double)(int64_t)(s + (s >= 0 ? 0.5 : -0.5)) / q != x->value[m]) {
                    unquant++;
                    if (strcmp(names[x->name[m]], "vibration_g") == 0)
                        unquant_vib++;
                }
            }
            if (part[x->dev] >= 0 && part[x->dev] != x->partition)
                split++;
            part[x->dev] = x->partition;
            if (last_ts[x->dev]) {
                int64_t dt = x->ts_ms - last_ts[x->dev];
                if (dt < 0)
                    backward++;
                else if (dt == 0)
                    repeated_ts++;
                if (x->seq == last_seq[x->dev])
                    repeated_seq++;
                else if (x->seq < last_seq[x->dev])
                    seq_back++;
                if (dt > 0 && x->seq == last_seq[x->dev] + 1) {
                    int64_t off = llabs(dt - 1000);
                    int b = 0;
                    while (b < 11 && off >= edges[b])
                        b++;
                    hist[b]++;
                    steps++;
                }
            }
            last_ts[x->dev] = x->ts_ms;
            last_seq[x->dev] = x->seq;
        }
        printf("wire: %zu readings; backward ts %" PRIu64 ", repeated ts %" PRIu64
               ", repeated seq %" PRIu64 ", seq backward %" PRIu64
               ", devices in more than one partition %" PRIu64 "\n",
               n, backward, repeated_ts, repeated_seq, seq_back, split);
        printf("wire: values off the simulator's quantization %" PRIu64 " (vibration_g %" PRIu64
               ")\n", unquant, unquant_vib);
        printf("wire: |step - 1000 ms| of %" PRIu64 " consecutive readings (seq + 1):\n", steps);
        for (int b = 1; b < 12; b++)
            if (hist[b])
                printf("  %s%d ms: %" PRIu64 " (%.4f%%)\n", b < 11 ? "< " : ">= ",
                       b < 11 ? edges[b] : edges[10], hist[b],
                       100.0 * (double)hist[b] / (double)steps);
    report_done:
        free(last_ts);
        free(last_seq);
        free(part);
    }

    if (strcmp(mode, "asis") != 0) {
        bool grid = strcmp(mode, "grid") == 0;
        qsort(by, n, sizeof *by, by_dev_seq);
        uint64_t diff = 0, diff_vib = 0;
        double max_vib = 0;
        for (size_t i = 0; i < n;) {
            size_t j = i;
            while (j < n && by[j]->dev == by[i]->dev)
                j++;
            if (by[i]->dev >= 0 && by[i]->dev < devices)
                regen_device(by + i, j - i, seed, rate, grid, &diff, &diff_vib, &max_vib);
            i = j;
        }
        printf("%s: values that differ from the simulator's at %s: %" PRIu64
               " (vibration_g %" PRIu64 ", largest %g)\n",
               mode, grid ? "the 1 s grid" : "their own time", diff, diff_vib, max_vib);
    }

    en = tg_engine_new(ec, on_output, sc);
    if (!en)
        goto cleanup;
    for (int p = 0; p < 64; p++)
        tg_engine_partition_add(en, p);
    for (size_t i = 0; i < n; i++) {
        struct tg_metric ms[MAXM];
        for (int m = 0; m < r[i].n; m++)
            ms[m] = (struct tg_metric){.name = names[r[i].name[m]], .value = r[i].value[m]};
        char id[16];
        snprintf(id, sizeof id, "sim-%05d", r[i].dev + 1);
        struct tg_reading rd = {.device = id, .has_seq = true, .boot = r[i].boot,
                                .seq = r[i].seq, .ts_ms = r[i].ts_ms, .n_metrics = (size_t)r[i].n,
                                .metrics = ms};
        tg_engine_process(en, r[i].partition, &rd);
    }
    tg_engine_flush(en);
    if (tg_sim_score_load_labels(sc, labels, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        goto cleanup;
    }
    tg_sim_score_set_exposure(sc, (uint64_t)devices, duration_s);
    struct tg_sim_score_result res;
    if (tg_sim_score_finish(sc, &res) != 0)
        goto cleanup;
    struct tg_sim_score_floors floors = {NAN, NAN, NAN};
    struct tg_sim_score_context ctx = {
        .topic = "(replay)", .labels_path = labels, .partitions = 12,
        .slack_ms = TG_QUALITY_SLACK_MS, .devices = (uint64_t)devices,
        .duration_s = duration_s, .floors = &floors, .pass = true, .why = "", .details = 100,
    };
    tg_sim_score_print_text(sc, &res, &ctx, stdout);
    rc = 0;
cleanup:
    tg_engine_destroy(en);
    tg_sim_score_destroy(sc);
    tg_engine_config_destroy(ec);
    free(by);
    free(r);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "capture") == 0)
        return capture(argv[2], argv[3], argv[4]);
    if (argc >= 2 && strcmp(argv[1], "replay") == 0)
        return replay(argc - 1, argv + 1);
    fprintf(stderr, "usage: " PROG " capture BROKERS TOPIC OUT | replay FILE LABELS SEED DEVICES "
                    "DURATION_S [-c INI] [--set k=v]... [--mode asis|regen|grid]\n");
    return 2;
}
