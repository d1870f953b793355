/*
 * gateway_fixture.c - the tidegate daemon and its surroundings for the guarantee tests.
 * The contract is in gateway_fixture.h; this file explains only what is not obvious from it.
 */
#include "gateway_fixture.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codec_native.h"
#include "record.h"

#define READY_TIMEOUT_MS 30000
#define START_ATTEMPTS 3
#define HTTP_TIMEOUT_S 5
#define PUB_CONNECT_TIMEOUT_MS 20000
/* Flat-out plans keep at most this many messages unacknowledged: libmosquitto walks its whole
 * outgoing list on every publish and acknowledgement, so an unbounded backlog costs O(n^2). */
#define PUB_MAX_UNACKED 2000
#define CONSUMER_POLL_MS 100
/* How often a read asks again for end offsets it could not learn (a cluster that is down). */
#define ENDS_RETRY_MS 500
#define MQTT_DEFAULT_EXTRA "max_queued_messages 1000000\n"

static void flog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void flog(const char *fmt, ...)
{
    va_list ap;
    fputs("gw-fixture: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------------------------
 * murmur2, from the definition of the Java client's Utils.murmur2: seed 0x9747b28c, m
 * 0x5bd1e995, r 24, little-endian 4-byte blocks, the tail mixed in, then the final avalanche.
 */

int32_t tg_gw_java_murmur2(const void *data, size_t len)
{
    const uint8_t *b = data;
    const uint32_t m = 0x5bd1e995u;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t blocks = len / 4;
    for (size_t i = 0; i < blocks; i++) {
        const uint8_t *p = b + i * 4;
        uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = b + blocks * 4;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int tg_gw_java_partition(const char *key, int partitions)
{
    /* Java's Utils.toPositive(): clear the sign bit (not abs()). */
    uint32_t positive = (uint32_t)tg_gw_java_murmur2(key, strlen(key)) & 0x7fffffffu;
    return (int)(positive % (uint32_t)partitions);
}

/* ------------------------------------------------------------------------------------------
 * The fixture
 */

struct tg_gw {
    char *dir;
    enum tg_gw_mode mode;
    unsigned mqtt_flags;
    char *mqtt_extra_conf;
    struct tg_harness_mosquitto *mq;
    enum tg_gw_kafka_tier tier;
    struct tg_harness_devkafka *dk; /* dev tier */
    struct tg_harness_kafka *kf;    /* real tier */
    struct tg_harness_proc *proc;  /* the running (or last) tidegate, or NULL */
    char ini_path[512];
    char journal_path[512];
    char log_path[512];
    int metrics_port;
    int connections;
    int commit_interval_ms;
    char *extra_ini;
    char **sets;
    size_t n_sets;
    bool ready_unhealthy;
};

const char *tg_gw_dir(const struct tg_gw *gw) { return gw->dir; }
const char *tg_gw_bootstrap(const struct tg_gw *gw)
{
    return gw->kf ? tg_harness_kafka_bootstrap(gw->kf) : tg_harness_devkafka_bootstrap(gw->dk);
}
const char *tg_gw_journal_path(const struct tg_gw *gw) { return gw->journal_path; }
const char *tg_gw_log_path(const struct tg_gw *gw) { return gw->log_path; }
int tg_gw_commit_interval_ms(const struct tg_gw *gw) { return gw->commit_interval_ms; }
int tg_gw_metrics_port(const struct tg_gw *gw) { return gw->metrics_port; }
struct tg_harness_mosquitto *tg_gw_mosquitto(const struct tg_gw *gw) { return gw->mq; }
struct tg_harness_devkafka *tg_gw_devkafka(const struct tg_gw *gw) { return gw->dk; }
struct tg_harness_kafka *tg_gw_kafka(const struct tg_gw *gw) { return gw->kf; }
enum tg_gw_kafka_tier tg_gw_kafka_tier(const struct tg_gw *gw) { return gw->tier; }
enum tg_gw_mode tg_gw_mode(const struct tg_gw *gw) { return gw->mode; }
bool tg_gw_plugin(const struct tg_gw *gw) { return gw->mode == TG_GW_MODE_PLUGIN; }

static int resolve_mode(enum tg_gw_mode asked, enum tg_gw_mode *mode)
{
    if (asked != TG_GW_MODE_ENV) {
        *mode = asked;
        return 0;
    }
    const char *env = getenv("TG_GW_MODE");
    if (!env || !*env || strcmp(env, "daemon") == 0) {
        *mode = TG_GW_MODE_DAEMON;
        return 0;
    }
    if (strcmp(env, "plugin") == 0) {
        *mode = TG_GW_MODE_PLUGIN;
        return 0;
    }
    flog("TG_GW_MODE=%s: expected daemon or plugin", env);
    return -1;
}

const char *tg_gw_kafka_tier_name(const struct tg_gw *gw)
{
    return gw->tier == TG_GW_KAFKA_REAL ? "real" : "dev";
}

int tg_gw_telemetry_partitions(const struct tg_gw *gw)
{
    /* devkafka's default topic list (tools/devkafka.c): telemetry:12 */
    return gw->tier == TG_GW_KAFKA_REAL ? TG_HARNESS_KAFKA_TELEMETRY_PARTITIONS : 12;
}

/* The tier asked for: opts, else TG_KAFKA_TIER. -1 (and why) for an unknown name. */
static int resolve_tier(enum tg_gw_kafka_tier asked, enum tg_gw_kafka_tier *tier)
{
    if (asked != TG_GW_KAFKA_ENV) {
        *tier = asked;
        return 0;
    }
    const char *env = getenv("TG_KAFKA_TIER");
    if (!env || !*env || strcmp(env, "dev") == 0) {
        *tier = TG_GW_KAFKA_DEV;
        return 0;
    }
    if (strcmp(env, "real") == 0) {
        *tier = TG_GW_KAFKA_REAL;
        return 0;
    }
    flog("TG_KAFKA_TIER='%s': expected dev or real", env);
    return -1;
}

struct refused {
    const char *bootstrap; /* "127.0.0.1:port" */
};

static bool bootstrap_refused(void *ud)
{
    const char *colon = strrchr(((struct refused *)ud)->bootstrap, ':');
    return colon && tg_harness_tcp_probe("127.0.0.1", atoi(colon + 1)) == ECONNREFUSED;
}

int tg_gw_kafka_outage_begin(struct tg_gw *gw)
{
    if (gw->dk)
        return tg_harness_devkafka_outage_begin(gw->dk);
    int64_t t0 = tg_harness_now_ms();
    if (tg_harness_kafka_stop(gw->kf) != 0)
        return -1;
    struct refused rf = {tg_harness_kafka_bootstrap(gw->kf)};
    if (!tg_harness_wait_until(bootstrap_refused, &rf, 10000)) {
        flog("Kafka stopped, but %s still accepts connections", rf.bootstrap);
        return -1;
    }
    flog("outage: Kafka broker stopped (%lld ms)", (long long)(tg_harness_now_ms() - t0));
    return 0;
}

int tg_gw_kafka_outage_end(struct tg_gw *gw)
{
    if (gw->dk)
        return tg_harness_devkafka_outage_end(gw->dk);
    int64_t t0 = tg_harness_now_ms();
    if (tg_harness_kafka_restart(gw->kf) != 0)
        return -1;
    flog("outage over: Kafka broker restarted (%lld ms)", (long long)(tg_harness_now_ms() - t0));
    return 0;
}

static int write_ini(struct tg_gw *gw)
{
    FILE *f = fopen(gw->ini_path, "w");
    if (!f) {
        flog("%s: %s", gw->ini_path, strerror(errno));
        return -1;
    }
    /* Reconnects are quick so that outages and restarts fit in a test's time; the rest are
     * the daemon's defaults unless a test sets them. The plugin refuses the keys of the
     * daemon's MQTT connection: it has none. */
    char mqtt[512];
    if (gw->mode == TG_GW_MODE_PLUGIN)
        snprintf(mqtt, sizeof mqtt, "[mqtt]\n");
    else
        snprintf(mqtt, sizeof mqtt,
                 "[mqtt]\n"
                 "host = %s\n"
                 "port = %d\n"
                 "client_id = tidegate-test\n"
                 "connections = %d\n"
                 "reconnect_min_ms = 100\n"
                 "reconnect_max_ms = 1000\n",
                 gw->mq ? tg_harness_mosquitto_host(gw->mq) : "127.0.0.1",
                 gw->mq ? tg_harness_mosquitto_port(gw->mq) : 0, gw->connections);
    fprintf(f,
            "# generated by gateway_fixture.c\n"
            "[gateway]\n"
            "id = " TG_GW_GATEWAY_ID "\n"
            "[log]\n"
            "level = info\n"
            "%s"
            "[kafka]\n"
            "brokers = %s\n"
            "topic = " TG_GW_TOPIC "\n"
            "dlq_topic = " TG_GW_DLQ_TOPIC "\n"
            "linger_ms = 5\n"
            "stats_interval_ms = 100\n"
            "[kafka.rdkafka]\n"
            "reconnect.backoff.ms = 50\n"
            "reconnect.backoff.max.ms = 500\n"
            "[journal]\n"
            "path = %s\n"
            "mode = durable\n"
            "commit_interval_ms = %d\n"
            "[metrics]\n"
            "listen = 127.0.0.1:%d\n"
            "%s",
            mqtt, tg_gw_bootstrap(gw), gw->journal_path,
            gw->commit_interval_ms, gw->metrics_port, gw->extra_ini ? gw->extra_ini : "");
    if (fclose(f) != 0) {
        flog("%s: %s", gw->ini_path, strerror(errno));
        return -1;
    }
    return 0;
}

bool tg_gw_ready(struct tg_gw *gw)
{
    int status = tg_gw_http_get(gw, "/healthz", NULL);
    if (status < 0 || (status != 200 && !gw->ready_unhealthy))
        return false;
    if (gw->mode == TG_GW_MODE_PLUGIN)
        return tg_gw_metric(gw, "tidegate_mode_info", "mode=\"plugin\"") == 1;
    double conns = tg_gw_metric(gw, "tidegate_mqtt_connections", NULL);
    return conns == (double)gw->connections;
}

/* In plugin mode "tidegate" is the broker process. */
static struct tg_harness_proc *gateway_proc(const struct tg_gw *gw)
{
    if (gw->mode == TG_GW_MODE_PLUGIN)
        return gw->mq ? tg_harness_mosquitto_proc(gw->mq) : NULL;
    return gw->proc;
}

struct tg_harness_proc *tg_gw_tidegate_proc(struct tg_gw *gw) { return gateway_proc(gw); }

bool tg_gw_tidegate_running(struct tg_gw *gw)
{
    struct tg_harness_proc *proc = gateway_proc(gw);
    return proc && tg_harness_proc_running(proc);
}

/* The mosquitto.conf lines that load the plugin with the fixture's INI and sets. */
static char *plugin_conf(const struct tg_gw *gw)
{
    const char *so = getenv("TG_PLUGIN_PATH");
    if (!so || !*so) {
        flog("plugin mode: TG_PLUGIN_PATH (the path of tidegate_mosq.so) is not set");
        return NULL;
    }
    size_t cap = 4096 + strlen(so) + (gw->mqtt_extra_conf ? strlen(gw->mqtt_extra_conf) : 0);
    for (size_t i = 0; i < gw->n_sets; i++)
        cap += strlen(gw->sets[i]) + 32;
    char *conf = malloc(cap);
    if (!conf)
        return NULL;
    size_t len = (size_t)snprintf(conf, cap, "%s\nplugin %s\nplugin_opt_config %s\n",
                                  gw->mqtt_extra_conf ? gw->mqtt_extra_conf : "", so,
                                  gw->ini_path);
    for (size_t i = 0; i < gw->n_sets; i++)
        len += (size_t)snprintf(conf + len, cap - len, "plugin_opt_set %s\n", gw->sets[i]);
    return conf;
}

/* LD_PRELOAD for the broker only (TG_PLUGIN_PRELOAD): set before it starts, restored after. */
static char *preload_begin(void)
{
    const char *preload = getenv("TG_PLUGIN_PRELOAD");
    if (!preload || !*preload)
        return NULL;
    const char *old = getenv("LD_PRELOAD");
    char *saved = strdup(old ? old : "");
    setenv("LD_PRELOAD", preload, 1);
    return saved;
}

static void preload_end(char *saved)
{
    if (!saved)
        return;
    if (*saved)
        setenv("LD_PRELOAD", saved, 1);
    else
        unsetenv("LD_PRELOAD");
    free(saved);
}

static bool plugin_ready_or_exited(void *ud)
{
    struct tg_gw *gw = ud;
    return !tg_gw_tidegate_running(gw) || tg_gw_ready(gw);
}

static int plugin_wait_ready(struct tg_gw *gw)
{
    if (!tg_harness_wait_until(plugin_ready_or_exited, gw, READY_TIMEOUT_MS) ||
        !tg_gw_tidegate_running(gw)) {
        flog("plugin: the broker is not ready within %d ms (metrics on port %d)",
             READY_TIMEOUT_MS, gw->metrics_port);
        tg_gw_print_log_tail(gw, 40);
        return -1;
    }
    return 0;
}

/* Plugin mode: the first start of the broker, which loads the plugin. */
static int plugin_first_start(struct tg_gw *gw)
{
    if (write_ini(gw) != 0)
        return -1;
    char *conf = plugin_conf(gw);
    if (!conf)
        return -1;
    char *saved = preload_begin();
    gw->mq = tg_harness_mosquitto_start(gw->mqtt_flags, conf);
    preload_end(saved);
    free(conf);
    if (!gw->mq)
        return -1;
    snprintf(gw->log_path, sizeof gw->log_path, "%s", tg_harness_mosquitto_log_path(gw->mq));
    return plugin_wait_ready(gw);
}

struct ready_wait {
    struct tg_gw *gw;
    bool exited;
};

static bool ready_or_exited(void *ud)
{
    struct ready_wait *rw = ud;
    if (!tg_gw_tidegate_running(rw->gw)) {
        rw->exited = true;
        return true;
    }
    return tg_gw_ready(rw->gw);
}

/* One start: write the config, start the process, wait until it is ready or has exited. */
static int start_once(struct tg_gw *gw, bool *exited)
{
    *exited = false;
    if (write_ini(gw) != 0)
        return -1;
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate", tg_harness_bin_dir());
    if (access(bin, X_OK) != 0) {
        flog("%s: %s (build the tidegate target)", bin, strerror(errno));
        return -1;
    }
    size_t argc = 0;
    const char **argv = calloc(4 + 2 * gw->n_sets + 1, sizeof *argv);
    if (!argv)
        return -1;
    argv[argc++] = bin;
    argv[argc++] = "-c";
    argv[argc++] = gw->ini_path;
    for (size_t i = 0; i < gw->n_sets; i++) {
        argv[argc++] = "--set";
        argv[argc++] = gw->sets[i];
    }
    argv[argc] = NULL;
    tg_harness_proc_destroy(gw->proc);
    /* No -b, and no board file found either (README, "Board autodetection"): the tests run on
     * the built-in defaults and their INI, whatever board files this machine has installed. */
    const char *env[] = {"TIDEGATE_BOARDS_DIR=/nonexistent/tidegate-test-boards", NULL};
    gw->proc = tg_harness_proc_start(gw->dir, "tidegate", argv, env, 0);
    free(argv);
    if (!gw->proc)
        return -1;
    snprintf(gw->log_path, sizeof gw->log_path, "%s", tg_harness_proc_stderr_path(gw->proc));
    struct ready_wait rw = {.gw = gw};
    if (!tg_harness_wait_until(ready_or_exited, &rw, READY_TIMEOUT_MS)) {
        flog("tidegate not ready within %d ms (metrics on port %d)", READY_TIMEOUT_MS,
             gw->metrics_port);
        tg_gw_print_log_tail(gw, 40);
        return -1;
    }
    if (rw.exited) {
        *exited = true;
        return -1;
    }
    return 0;
}

int tg_gw_tidegate_start(struct tg_gw *gw)
{
    if (tg_gw_tidegate_running(gw)) {
        flog("tidegate is already running");
        return -1;
    }
    if (gw->mode == TG_GW_MODE_PLUGIN) {
        if (!gw->mq)
            return plugin_first_start(gw);
        /* Its stop reports how the broker last exited (after tg_gw_tidegate_kill9(), not
         * cleanly): what counts here is that it runs again. */
        char *saved = preload_begin();
        (void)tg_harness_mosquitto_restart(gw->mq);
        preload_end(saved);
        return plugin_wait_ready(gw);
    }
    for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        bool exited = false;
        if (start_once(gw, &exited) == 0)
            return 0;
        if (!exited)
            return -1;
        int status = -1;
        tg_harness_proc_wait(gw->proc, 1000, &status);
        flog("tidegate exited during start-up (attempt %d, status 0x%x)", attempt, status);
        tg_gw_print_log_tail(gw, 30);
        /* The likeliest passing cause is the metrics port taken meanwhile: pick another. */
        int port = tg_harness_free_port();
        if (port < 0)
            return -1;
        gw->metrics_port = port;
    }
    return -1;
}

int tg_gw_tidegate_kill9(struct tg_gw *gw)
{
    if (!tg_gw_tidegate_running(gw)) {
        flog("kill -9: no tidegate running");
        return -1;
    }
    struct tg_harness_proc *proc = gateway_proc(gw);
    if (tg_harness_proc_signal(proc, SIGKILL) != 0)
        return -1;
    int status = 0;
    if (tg_harness_proc_wait(proc, 10000, &status) != 0) {
        flog("kill -9: tidegate not reaped");
        return -1;
    }
    return 0;
}

int tg_gw_tidegate_term(struct tg_gw *gw, int timeout_ms)
{
    struct tg_harness_proc *proc = gateway_proc(gw);
    if (!proc)
        return -1;
    if (!tg_harness_proc_running(proc)) {
        flog("SIGTERM: tidegate had already exited");
        return -1;
    }
    if (tg_harness_proc_signal(proc, SIGTERM) != 0)
        return -1;
    int status = 0;
    if (tg_harness_proc_wait(proc, timeout_ms, &status) == 0)
        return status;
    flog("SIGTERM: tidegate still running after %d ms; SIGKILL", timeout_ms);
    tg_gw_print_log_tail(gw, 30);
    (void)tg_harness_proc_stop(proc, 1000);
    return -1;
}

void tg_gw_print_log_tail(const struct tg_gw *gw, int lines)
{
    if (!gw->log_path[0])
        return;
    char *text = tg_harness_read_file(gw->log_path);
    if (!text) {
        flog("%s: cannot read", gw->log_path);
        return;
    }
    size_t len = strlen(text);
    size_t start = len;
    int seen = 0;
    while (start > 0) {
        if (text[start - 1] == '\n' && start != len && ++seen >= lines)
            break;
        start--;
    }
    flog("--- last lines of %s ---", gw->log_path);
    fputs(text + start, stderr);
    flog("--- end of log ---");
    free(text);
}

int tg_gw_log_count(const struct tg_gw *gw, const char *needle)
{
    char *text = tg_harness_read_file(gw->log_path);
    if (!text)
        return 0;
    int count = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, needle))
            count++;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return count;
}

struct tg_gw *tg_gw_new(const struct tg_gw_opts *opts)
{
    static const struct tg_gw_opts defaults = {0};
    if (!opts)
        opts = &defaults;
    struct tg_gw *gw = calloc(1, sizeof *gw);
    if (!gw)
        return NULL;
    if (resolve_tier(opts->kafka_tier, &gw->tier) != 0 || resolve_mode(opts->mode, &gw->mode) != 0)
        goto fail;
    gw->mqtt_flags = opts->mqtt_flags;
    if (!(gw->mqtt_extra_conf =
              strdup(opts->mqtt_extra_conf ? opts->mqtt_extra_conf : MQTT_DEFAULT_EXTRA)))
        goto fail;
    gw->connections = opts->connections > 0 ? opts->connections : 1;
    gw->ready_unhealthy = opts->ready_unhealthy;
    gw->commit_interval_ms = opts->commit_interval_ms > 0 ? opts->commit_interval_ms : 200;
    if (opts->extra_ini && !(gw->extra_ini = strdup(opts->extra_ini)))
        goto fail;
    for (size_t i = 0; opts->sets && opts->sets[i]; i++)
        gw->n_sets++;
    gw->sets = calloc(gw->n_sets + 1, sizeof *gw->sets);
    if (!gw->sets)
        goto fail;
    for (size_t i = 0; i < gw->n_sets; i++) {
        if (!(gw->sets[i] = strdup(opts->sets[i])))
            goto fail;
    }
    gw->dir = tg_harness_tmpdir_new("gw");
    if (!gw->dir)
        goto fail;
    snprintf(gw->ini_path, sizeof gw->ini_path, "%s/tidegate.ini", gw->dir);
    snprintf(gw->journal_path, sizeof gw->journal_path, "%s/journal.db", gw->dir);
    /* Plugin mode: the broker is started last, by tg_gw_tidegate_start(), since it loads the
     * plugin, which needs Kafka's address and the metrics port in its INI. */
    if (gw->mode != TG_GW_MODE_PLUGIN &&
        !(gw->mq = tg_harness_mosquitto_start(gw->mqtt_flags, gw->mqtt_extra_conf)))
        goto fail;
    if (gw->tier == TG_GW_KAFKA_REAL) {
        gw->kf = tg_harness_kafka_start(0, 0);
        if (!gw->kf)
            goto fail;
    } else {
        gw->dk = tg_harness_devkafka_start(NULL);
        if (!gw->dk)
            goto fail;
    }
    gw->metrics_port = tg_harness_free_port();
    if (gw->metrics_port < 0)
        goto fail;
    if (tg_gw_tidegate_start(gw) != 0)
        goto fail;
    return gw;
fail:
    flog("fixture start failed (temp dir %s kept)", gw->dir ? gw->dir : "-");
    /* Leave the children to tg_gw_reap_all()/exit so that their logs stay for debugging. */
    return NULL;
}

void tg_gw_destroy(struct tg_gw *gw)
{
    if (!gw)
        return;
    if (gw->proc) {
        tg_harness_proc_destroy(gw->proc);
        gw->proc = NULL;
    }
    tg_harness_devkafka_destroy(gw->dk);
    tg_harness_kafka_destroy(gw->kf);
    tg_harness_mosquitto_destroy(gw->mq);
    tg_harness_tmpdir_done(gw->dir);
    for (size_t i = 0; i < gw->n_sets; i++)
        free(gw->sets[i]);
    free(gw->sets);
    free(gw->extra_ini);
    free(gw->mqtt_extra_conf);
    free(gw);
}

/* ------------------------------------------------------------------------------------------
 * Metrics
 */

int tg_gw_http_get(const struct tg_gw *gw, const char *path, char **body)
{
    return tg_harness_http_get(gw->metrics_port, path, HTTP_TIMEOUT_S * 1000, body);
}

/* True when the label block "{...}" (without braces, len bytes) carries every pair of want. */
static bool labels_match(const char *block, size_t len, const char *want)
{
    const char *p = want;
    while (*p) {
        const char *comma = p;
        /* a pair ends at the comma after its closing quote */
        const char *q = strchr(p, '"');
        if (q)
            q = strchr(q + 1, '"');
        comma = q ? q + 1 : p + strlen(p);
        size_t plen = (size_t)(comma - p);
        bool found = false;
        for (size_t i = 0; i + plen <= len; i++) {
            if ((i == 0 || block[i - 1] == ',') && memcmp(block + i, p, plen) == 0 &&
                (i + plen == len || block[i + plen] == ',')) {
                found = true;
                break;
            }
        }
        if (!found)
            return false;
        p = *comma == ',' ? comma + 1 : comma;
    }
    return true;
}

bool tg_gw_sample(const char *body, const char *name, const char *labels, double *value)
{
    size_t name_len = strlen(name);
    bool found = false;
    double sum = 0;
    for (const char *line = body; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
        if (line[0] != '#' && line_len > name_len && memcmp(line, name, name_len) == 0 &&
            (line[name_len] == '{' || line[name_len] == ' ')) {
            const char *rest = line + name_len;
            const char *block = "";
            size_t block_len = 0;
            if (*rest == '{') {
                const char *close = memchr(rest, '}', line_len - name_len);
                if (close) {
                    block = rest + 1;
                    block_len = (size_t)(close - block);
                    rest = close + 1;
                }
            }
            if (!labels || labels_match(block, block_len, labels)) {
                char num[64];
                size_t num_len = line_len - (size_t)(rest - line);
                if (num_len >= sizeof num)
                    num_len = sizeof num - 1;
                memcpy(num, rest, num_len);
                num[num_len] = '\0';
                sum += strtod(num, NULL);
                found = true;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    if (found && value)
        *value = sum;
    return found;
}

double tg_gw_metric_at(int metrics_port, const char *name, const char *labels)
{
    char *body = NULL;
    if (tg_harness_http_get(metrics_port, "/metrics", HTTP_TIMEOUT_S * 1000, &body) != 200 ||
        !body) {
        free(body);
        return NAN;
    }
    double v = 0;
    if (!tg_gw_sample(body, name, labels, &v))
        v = 0;
    free(body);
    return v;
}

double tg_gw_metric(const struct tg_gw *gw, const char *name, const char *labels)
{
    return tg_gw_metric_at(gw->metrics_port, name, labels);
}

struct metric_wait {
    int port;
    const char *name, *labels;
    enum tg_gw_cmp cmp;
    double value, last;
};

static const char *const cmp_ops[] = {"==", ">=", ">", "<=", "<"};

static bool compare(double v, enum tg_gw_cmp cmp, double value)
{
    switch (cmp) {
    case TG_GW_EQ:
        return v == value;
    case TG_GW_GE:
        return v >= value;
    case TG_GW_GT:
        return v > value;
    case TG_GW_LE:
        return v <= value;
    case TG_GW_LT:
        return v < value;
    }
    return false;
}

static bool metric_holds(void *ud)
{
    struct metric_wait *mw = ud;
    mw->last = tg_gw_metric_at(mw->port, mw->name, mw->labels);
    return compare(mw->last, mw->cmp, mw->value);
}

bool tg_gw_metric_is(const struct tg_gw *gw, const char *name, const char *labels,
                     enum tg_gw_cmp cmp, double value)
{
    double v = tg_gw_metric(gw, name, labels);
    if (compare(v, cmp, value))
        return true;
    flog("%s{%s} = %g, expected %s %g", name, labels ? labels : "", v, cmp_ops[cmp], value);
    return false;
}

bool tg_gw_wait_metric_at(int metrics_port, const char *name, const char *labels,
                          enum tg_gw_cmp cmp, double value, int timeout_ms)
{
    struct metric_wait mw = {metrics_port, name, labels, cmp, value, NAN};
    if (tg_harness_wait_until(metric_holds, &mw, timeout_ms))
        return true;
    flog("waited %d ms for %s{%s} %s %g; last value %g", timeout_ms, name,
         labels ? labels : "", cmp_ops[cmp], value, mw.last);
    return false;
}

bool tg_gw_wait_metric(struct tg_gw *gw, const char *name, const char *labels,
                       enum tg_gw_cmp cmp, double value, int timeout_ms)
{
    if (tg_gw_wait_metric_at(gw->metrics_port, name, labels, cmp, value, timeout_ms))
        return true;
    tg_gw_print_log_tail(gw, 25);
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Journal
 */

struct integrity {
    char *out;
    size_t size;
    size_t len;
};

static int integrity_row(void *ud, int ncols, char **vals, char **names)
{
    (void)names;
    struct integrity *in = ud;
    for (int i = 0; i < ncols; i++) {
        int n = snprintf(in->out + in->len, in->size - in->len, "%s%s", in->len ? "; " : "",
                         vals[i] ? vals[i] : "NULL");
        if (n > 0)
            in->len += (size_t)n < in->size - in->len ? (size_t)n : in->size - in->len - 1;
    }
    return 0;
}

int tg_gw_journal_integrity(const char *path, char *result, size_t result_size)
{
    result[0] = '\0';
    sqlite3 *db = NULL;
    /* Read-write, as the daemon opens it: a WAL left by a crash is recovered on open, which
     * is exactly what must work. */
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(result, result_size, "open: %s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    struct integrity in = {result, result_size, 0};
    char *err = NULL;
    rc = sqlite3_exec(db, "PRAGMA integrity_check", integrity_row, &in, &err);
    if (rc != SQLITE_OK) {
        snprintf(result, result_size, "integrity_check: %s", err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        sqlite3_close(db);
        return -1;
    }
    if (sqlite3_close(db) != SQLITE_OK)
        return -1;
    return strcmp(result, "ok") == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------
 * Publisher
 */

double tg_gw_plan_temp(int dev, int seq) { return 20.0 + (double)((dev * 7 + seq) % 80) * 0.5; }

static const char *plan_prefix(const struct tg_gw_plan *plan)
{
    return plan->prefix ? plan->prefix : "dev";
}

char *tg_gw_plan_device(const struct tg_gw_plan *plan, int dev, char *buf, size_t size)
{
    snprintf(buf, size, "%s-%04d", plan_prefix(plan), dev);
    return buf;
}

/* A native reading with n metrics (names[i] = values[i]) as JSON or CBOR; length or -1. */
static int encode_metrics(enum tg_gw_format format, uint64_t boot, uint64_t seq, int64_t ts_ms,
                          const char *const *names, const double *values, size_t n,
                          uint8_t *buf, size_t cap)
{
    if (format == TG_GW_JSON) {
        int len = snprintf((char *)buf, cap,
                           "{\"seq\":%" PRIu64 ",\"boot\":%" PRIu64 ",\"ts\":%" PRId64 ",\"m\":{",
                           seq, boot, ts_ms);
        for (size_t i = 0; i < n && len > 0 && (size_t)len < cap; i++)
            len += snprintf((char *)buf + len, cap - (size_t)len, "%s\"%s\":%.17g",
                            i ? "," : "", names[i], values[i]);
        if (len > 0 && (size_t)len < cap)
            len += snprintf((char *)buf + len, cap - (size_t)len, "}}");
        return len > 0 && (size_t)len < cap ? len : -1;
    }
    struct tg_metric m[4];
    if (n > sizeof m / sizeof m[0])
        return -1;
    for (size_t i = 0; i < n; i++)
        m[i] = (struct tg_metric){.name = names[i], .unit = NULL, .value = values[i]};
    struct tg_reading rd = {.device = "", .has_seq = true, .boot = boot, .seq = seq,
                            .ts_ms = ts_ms, .n_metrics = n, .metrics = m};
    size_t len = 0;
    if (tg_codec_native_encode(&rd, buf, cap, &len) != TG_OK)
        return -1;
    return (int)len;
}

int tg_gw_encode_reading(enum tg_gw_format format, uint64_t boot, uint64_t seq, int64_t ts_ms,
                         const char *metric, double value, uint8_t *buf, size_t cap)
{
    return encode_metrics(format, boot, seq, ts_ms, &metric, &value, 1, buf, cap);
}

/* A value in [0, 1) with 53 random-looking bits, fixed by (dev, seq): splitmix64. */
static double noise_value(int dev, int seq)
{
    uint64_t z = ((uint64_t)(uint32_t)dev << 32 | (uint32_t)seq) + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

#define MIDS 65536

struct tg_gw_pub {
    struct tg_gw_pub *next;       /* list of live publishers, for tg_gw_reap_all() */
    struct mosquitto *mosq;
    char *client_id;
    pthread_mutex_t lock;
    pthread_cond_t changed;       /* connected or acked changed */
    bool connected;
    int sent, acked;
    /* mid -> what it carries: 0 unknown, -1 not a plan reading, k > 0 plan reading k - 1.
     * A PUBACK can overtake the store of its mid (the loop thread runs on its own), so an
     * early acknowledgement is parked in early_ack until the publishing thread claims it. */
    int32_t mid_index[MIDS];
    int64_t early_ack[MIDS];
    /* the current plan */
    struct tg_gw_plan plan;
    char prefix[64];
    int64_t *sent_ms, *acked_ms;
    atomic_int progress;
    atomic_bool stop;
    bool thread_running;
    pthread_t thread;
    int plan_result;
};

static pthread_once_t mosq_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pubs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tg_gw_pub *pubs;

static void mosq_init(void) { mosquitto_lib_init(); }

static void pub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    struct tg_gw_pub *pub = obj;
    pthread_mutex_lock(&pub->lock);
    pub->connected = rc == 0;
    pthread_cond_broadcast(&pub->changed);
    pthread_mutex_unlock(&pub->lock);
}

static void pub_on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    (void)rc;
    struct tg_gw_pub *pub = obj;
    pthread_mutex_lock(&pub->lock);
    pub->connected = false;
    pthread_cond_broadcast(&pub->changed);
    pthread_mutex_unlock(&pub->lock);
}

static void pub_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    struct tg_gw_pub *pub = obj;
    int64_t now = tg_harness_now_ms();
    pthread_mutex_lock(&pub->lock);
    uint16_t m = (uint16_t)mid;
    int32_t k = pub->mid_index[m];
    if (k == 0) {
        pub->early_ack[m] = now;
    } else {
        if (k > 0 && pub->acked_ms)
            pub->acked_ms[k - 1] = now;
        pub->mid_index[m] = 0;
    }
    pub->acked++;
    pthread_cond_broadcast(&pub->changed);
    pthread_mutex_unlock(&pub->lock);
}

struct tg_gw_pub *tg_gw_pub_new(struct tg_gw *gw, const char *client_id)
{
    pthread_once(&mosq_once, mosq_init);
    struct tg_gw_pub *pub = calloc(1, sizeof *pub);
    if (!pub)
        return NULL;
    pthread_mutex_init(&pub->lock, NULL);
    pthread_cond_init(&pub->changed, NULL);
    pub->client_id = strdup(client_id);
    /* A persistent session: after a broker restart the broker and the client both still
     * know which QoS1 messages are unacknowledged, and the client sends them again. */
    pub->mosq = mosquitto_new(client_id, false, pub);
    if (!pub->client_id || !pub->mosq) {
        flog("publisher %s: mosquitto_new failed", client_id);
        goto fail;
    }
    mosquitto_connect_callback_set(pub->mosq, pub_on_connect);
    mosquitto_disconnect_callback_set(pub->mosq, pub_on_disconnect);
    mosquitto_publish_callback_set(pub->mosq, pub_on_publish);
    mosquitto_reconnect_delay_set(pub->mosq, 1, 2, false);
    if (mosquitto_max_inflight_messages_set(pub->mosq, 100) != MOSQ_ERR_SUCCESS)
        goto fail;
    int rc = mosquitto_connect(pub->mosq, tg_harness_mosquitto_host(tg_gw_mosquitto(gw)),
                               tg_harness_mosquitto_port(tg_gw_mosquitto(gw)), 30);
    if (rc != MOSQ_ERR_SUCCESS) {
        flog("publisher %s: connect: %s", client_id, mosquitto_strerror(rc));
        goto fail;
    }
    rc = mosquitto_loop_start(pub->mosq);
    if (rc != MOSQ_ERR_SUCCESS) {
        flog("publisher %s: loop_start: %s", client_id, mosquitto_strerror(rc));
        goto fail;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PUB_CONNECT_TIMEOUT_MS / 1000;
    pthread_mutex_lock(&pub->lock);
    while (!pub->connected &&
           pthread_cond_timedwait(&pub->changed, &pub->lock, &until) != ETIMEDOUT) {
    }
    bool connected = pub->connected;
    pthread_mutex_unlock(&pub->lock);
    if (!connected) {
        flog("publisher %s: not connected within %d ms", client_id, PUB_CONNECT_TIMEOUT_MS);
        mosquitto_loop_stop(pub->mosq, true);
        goto fail;
    }
    pthread_mutex_lock(&pubs_lock);
    pub->next = pubs;
    pubs = pub;
    pthread_mutex_unlock(&pubs_lock);
    return pub;
fail:
    if (pub->mosq)
        mosquitto_destroy(pub->mosq);
    free(pub->client_id);
    pthread_cond_destroy(&pub->changed);
    pthread_mutex_destroy(&pub->lock);
    free(pub);
    return NULL;
}

/* Waits (bounded) for the connection; false on timeout or stop. Called without the lock. */
static bool pub_wait_connected(struct tg_gw_pub *pub, int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    pthread_mutex_lock(&pub->lock);
    while (!pub->connected && !atomic_load(&pub->stop) && tg_harness_now_ms() < deadline) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pub->changed, &pub->lock, &until);
    }
    bool connected = pub->connected;
    pthread_mutex_unlock(&pub->lock);
    return connected;
}

/* Publishes one message; plan_index is the plan reading it carries, or -1. */
static int pub_publish(struct tg_gw_pub *pub, const char *device, const void *payload,
                       size_t len, int plan_index)
{
    char topic[128];
    snprintf(topic, sizeof topic, "telemetry/%s", device);
    if (!pub_wait_connected(pub, PUB_CONNECT_TIMEOUT_MS)) {
        flog("publisher %s: no connection to publish %s", pub->client_id, topic);
        return -1;
    }
    int mid = 0;
    int64_t now = tg_harness_now_ms();
    int rc = mosquitto_publish(pub->mosq, &mid, topic, (int)len, payload, 1, false);
    /* NO_CONN: the connection dropped after the check above. libmosquitto has queued the
     * QoS1 message all the same (it is sent after the reconnect), so it counts as sent; if
     * it were lost, waiting for its PUBACK would say so. */
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
        flog("publisher %s: publish %s: %s", pub->client_id, topic, mosquitto_strerror(rc));
        return -1;
    }
    pthread_mutex_lock(&pub->lock);
    uint16_t m = (uint16_t)mid;
    int64_t acked = pub->early_ack[m];
    if (plan_index >= 0 && pub->sent_ms)
        pub->sent_ms[plan_index] = now;
    if (acked) {
        pub->early_ack[m] = 0;
        if (plan_index >= 0 && pub->acked_ms)
            pub->acked_ms[plan_index] = acked;
    } else {
        pub->mid_index[m] = plan_index >= 0 ? plan_index + 1 : -1;
    }
    pub->sent++;
    pthread_mutex_unlock(&pub->lock);
    return 0;
}

int tg_gw_pub_send(struct tg_gw_pub *pub, const char *device, const void *payload, size_t len)
{
    return pub_publish(pub, device, payload, len, -1);
}

/* Flat-out plans: wait until fewer than PUB_MAX_UNACKED messages are unacknowledged. */
static void pub_throttle(struct tg_gw_pub *pub)
{
    pthread_mutex_lock(&pub->lock);
    while (pub->sent - pub->acked >= PUB_MAX_UNACKED && !atomic_load(&pub->stop)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&pub->changed, &pub->lock, &until);
    }
    pthread_mutex_unlock(&pub->lock);
}

static void *plan_thread(void *arg)
{
    struct tg_gw_pub *pub = arg;
    const struct tg_gw_plan *plan = &pub->plan;
    int64_t start = tg_harness_now_ms();
    int total = plan->devices * plan->seqs;
    for (int i = 0; i < total && !atomic_load(&pub->stop); i++) {
        int seq_index = i / plan->devices, dev = i % plan->devices;
        if (plan->rate > 0) {
            /* pacing: reading i is due at start + i / rate */
            int64_t due = start + (int64_t)i * 1000 / plan->rate;
            int64_t wait = due - tg_harness_now_ms();
            if (wait > 0)
                pause_ms((int)wait);
        } else {
            pub_throttle(pub);
        }
        uint8_t payload[256];
        enum tg_gw_format format = plan->format;
        if (format == TG_GW_MIXED)
            format = dev % 2 ? TG_GW_CBOR : TG_GW_JSON;
        int seq = plan->first_seq + seq_index;
        static const char *const names[] = {"temp", "noise"};
        const double values[] = {tg_gw_plan_temp(dev, seq), noise_value(dev, seq)};
        int len = encode_metrics(format, plan->boot, (uint64_t)seq, wall_ms(), names, values,
                                 plan->noise ? 2 : 1, payload, sizeof payload);
        char device[TG_DEVICE_ID_MAX + 1];
        tg_gw_plan_device(plan, dev, device, sizeof device);
        int index = dev * plan->seqs + seq_index;
        if (len < 0 || pub_publish(pub, device, payload, (size_t)len, index) != 0) {
            pub->plan_result = -1;
            break;
        }
        atomic_fetch_add(&pub->progress, 1);
    }
    return NULL;
}

int tg_gw_pub_plan_start(struct tg_gw_pub *pub, const struct tg_gw_plan *plan)
{
    if (pub->thread_running) {
        flog("publisher %s: a plan is already running", pub->client_id);
        return -1;
    }
    if (plan->devices <= 0 || plan->seqs <= 0) {
        flog("publisher %s: empty plan", pub->client_id);
        return -1;
    }
    size_t n = (size_t)plan->devices * (size_t)plan->seqs;
    int64_t *sent_ms = malloc(n * sizeof *sent_ms);
    int64_t *acked_ms = malloc(n * sizeof *acked_ms);
    if (!sent_ms || !acked_ms) {
        free(sent_ms);
        free(acked_ms);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        sent_ms[i] = acked_ms[i] = -1;
    pthread_mutex_lock(&pub->lock);
    /* Messages of an earlier plan still unacknowledged no longer point into the arrays. */
    for (int m = 0; m < MIDS; m++) {
        if (pub->mid_index[m] > 0)
            pub->mid_index[m] = -1;
    }
    free(pub->sent_ms);
    free(pub->acked_ms);
    pub->sent_ms = sent_ms;
    pub->acked_ms = acked_ms;
    pub->plan = *plan;
    snprintf(pub->prefix, sizeof pub->prefix, "%s", plan_prefix(plan));
    pub->plan.prefix = pub->prefix;
    if (!pub->plan.boot)
        pub->plan.boot = 1;
    pub->plan_result = 0;
    pthread_mutex_unlock(&pub->lock);
    atomic_store(&pub->progress, 0);
    atomic_store(&pub->stop, false);
    if (pthread_create(&pub->thread, NULL, plan_thread, pub) != 0) {
        flog("publisher %s: pthread_create failed", pub->client_id);
        return -1;
    }
    pub->thread_running = true;
    return 0;
}

int tg_gw_pub_plan_join(struct tg_gw_pub *pub)
{
    if (!pub->thread_running)
        return -1;
    pthread_join(pub->thread, NULL);
    pub->thread_running = false;
    return pub->plan_result;
}

int tg_gw_pub_plan_progress(struct tg_gw_pub *pub) { return atomic_load(&pub->progress); }

int tg_gw_pub_sent(struct tg_gw_pub *pub)
{
    pthread_mutex_lock(&pub->lock);
    int n = pub->sent;
    pthread_mutex_unlock(&pub->lock);
    return n;
}

int tg_gw_pub_acked(struct tg_gw_pub *pub)
{
    pthread_mutex_lock(&pub->lock);
    int n = pub->acked;
    pthread_mutex_unlock(&pub->lock);
    return n;
}

static bool all_acked(void *ud)
{
    struct tg_gw_pub *pub = ud;
    pthread_mutex_lock(&pub->lock);
    bool done = pub->acked >= pub->sent;
    pthread_mutex_unlock(&pub->lock);
    return done;
}

struct progress {
    struct tg_gw_pub *pub;
    int want;
};

static bool progressed(void *ud)
{
    const struct progress *p = ud;
    return tg_gw_pub_plan_progress(p->pub) >= p->want;
}

bool tg_gw_pub_wait_progress(struct tg_gw_pub *pub, int want, int timeout_ms)
{
    struct progress p = {pub, want};
    if (tg_harness_wait_until(progressed, &p, timeout_ms))
        return true;
    flog("publisher %s: %d of the %d readings waited for published after %d ms",
         pub->client_id, tg_gw_pub_plan_progress(pub), want, timeout_ms);
    return false;
}

bool tg_gw_pub_wait_acked(struct tg_gw_pub *pub, int timeout_ms)
{
    if (tg_harness_wait_until(all_acked, pub, timeout_ms))
        return true;
    flog("publisher %s: %d of %d messages acknowledged after %d ms", pub->client_id,
         tg_gw_pub_acked(pub), tg_gw_pub_sent(pub), timeout_ms);
    return false;
}

static int64_t plan_time(struct tg_gw_pub *pub, const int64_t *arr, int dev, int seq)
{
    int seq_index = seq - pub->plan.first_seq;
    if (!arr || dev < 0 || dev >= pub->plan.devices || seq_index < 0 ||
        seq_index >= pub->plan.seqs)
        return -1;
    pthread_mutex_lock(&pub->lock);
    int64_t t = arr[dev * pub->plan.seqs + seq_index];
    pthread_mutex_unlock(&pub->lock);
    return t;
}

int64_t tg_gw_pub_sent_ms(struct tg_gw_pub *pub, int dev, int seq)
{
    return plan_time(pub, pub->sent_ms, dev, seq);
}

int64_t tg_gw_pub_acked_ms(struct tg_gw_pub *pub, int dev, int seq)
{
    return plan_time(pub, pub->acked_ms, dev, seq);
}

static void pub_halt(struct tg_gw_pub *pub)
{
    atomic_store(&pub->stop, true);
    if (pub->thread_running) {
        pthread_join(pub->thread, NULL);
        pub->thread_running = false;
    }
    mosquitto_disconnect(pub->mosq);
    mosquitto_loop_stop(pub->mosq, true);
}

void tg_gw_pub_destroy(struct tg_gw_pub *pub)
{
    if (!pub)
        return;
    pthread_mutex_lock(&pubs_lock);
    for (struct tg_gw_pub **pp = &pubs; *pp; pp = &(*pp)->next) {
        if (*pp == pub) {
            *pp = pub->next;
            break;
        }
    }
    pthread_mutex_unlock(&pubs_lock);
    pub_halt(pub);
    mosquitto_destroy(pub->mosq);
    free(pub->sent_ms);
    free(pub->acked_ms);
    free(pub->client_id);
    pthread_cond_destroy(&pub->changed);
    pthread_mutex_destroy(&pub->lock);
    free(pub);
}

int tg_gw_teardown(void **state)
{
    (void)state;
    tg_gw_reap_all();
    return 0;
}

void tg_gw_reap_all(void)
{
    /* Publishers first: their threads must not go on talking to brokers being killed. They
     * stay allocated (a failed test's memory), only halted and unlisted. */
    pthread_mutex_lock(&pubs_lock);
    struct tg_gw_pub *list = pubs;
    pubs = NULL;
    pthread_mutex_unlock(&pubs_lock);
    for (struct tg_gw_pub *pub = list; pub; pub = pub->next)
        pub_halt(pub);
    tg_harness_reap_all();
}

/* ------------------------------------------------------------------------------------------
 * Consumer
 */

struct tg_gw_consumer {
    rd_kafka_t *rk;
    char *topic;
    int partitions;
    /* Per partition, the offset after the last record read (0: none yet). */
    int64_t *next;
    /* Per partition, the end offset to read up to in this tg_gw_consumer_read() call (-1:
     * not known yet). */
    int64_t *target;
    bool ends_unknown_logged;
    struct tg_gw_record *recs;
    size_t n, cap;
};

static void parse_canonical(struct tg_gw_record *rec)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)rec->value, rec->value_len, 0, &jerr);
    if (!root)
        return;
    json_t *device = json_object_get(root, "device");
    json_t *boot = json_object_get(root, "boot");
    json_t *seq = json_object_get(root, "seq");
    json_t *ts = json_object_get(root, "ts");
    json_t *gw_ts = json_object_get(root, "gw_ts");
    json_t *gateway = json_object_get(root, "gateway");
    json_t *m = json_object_get(root, "m");
    if (json_is_string(device) && json_is_integer(boot) && json_is_integer(seq) &&
        json_is_integer(ts) && json_is_integer(gw_ts) && json_is_string(gateway) &&
        json_is_object(m)) {
        rec->canonical = true;
        snprintf(rec->device, sizeof rec->device, "%s", json_string_value(device));
        rec->boot = (uint64_t)json_integer_value(boot);
        rec->seq = (uint64_t)json_integer_value(seq);
        rec->ts = (int64_t)json_integer_value(ts);
        rec->gw_ts = (int64_t)json_integer_value(gw_ts);
        snprintf(rec->gateway, sizeof rec->gateway, "%s", json_string_value(gateway));
        json_t *temp = json_object_get(m, "temp");
        if (json_is_number(temp)) {
            rec->has_temp = true;
            rec->temp = json_number_value(temp);
        }
    }
    json_decref(root);
}

static int store_message(struct tg_gw_consumer *c, const rd_kafka_message_t *msg)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        struct tg_gw_record *grown = realloc(c->recs, cap * sizeof *grown);
        if (!grown)
            return -1;
        c->recs = grown;
        c->cap = cap;
    }
    struct tg_gw_record *rec = &c->recs[c->n];
    memset(rec, 0, sizeof *rec);
    rec->partition = msg->partition;
    rec->offset = msg->offset;
    if (msg->key && (rec->key = strndup(msg->key, msg->key_len)) == NULL)
        return -1;
    rd_kafka_timestamp_type_t tstype;
    rec->timestamp = rd_kafka_message_timestamp(msg, &tstype);
    rec->value = malloc(msg->len + 1);
    if (!rec->value)
        return -1;
    if (msg->len)
        memcpy(rec->value, msg->payload, msg->len);
    rec->value[msg->len] = 0;
    rec->value_len = msg->len;
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        size_t count = rd_kafka_header_cnt(hdrs);
        rec->headers = calloc(count ? count : 1, sizeof *rec->headers);
        if (!rec->headers)
            return -1;
        for (size_t i = 0; i < count; i++) {
            const char *name;
            const void *val;
            size_t size;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            struct tg_gw_header *h = &rec->headers[rec->n_headers++];
            h->name = strdup(name);
            h->value = malloc(size + 1);
            if (!h->name || !h->value)
                return -1;
            if (size)
                memcpy(h->value, val, size);
            h->value[size] = '\0';
            h->value_len = size;
        }
    }
    parse_canonical(rec);
    c->n++;
    return 0;
}

struct tg_gw_consumer *tg_gw_consumer_new(const char *bootstrap, const char *topic)
{
    struct tg_gw_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* fetch.wait.max.ms: a fetch that finds nothing new waits this long before the broker
     * answers (devkafka's mock cluster never answers early), and reading to the end of every
     * partition takes a few such rounds: librdkafka's 500 ms default made each read-back
     * of a test cost seconds. */
    const char *kv[] = {"bootstrap.servers", bootstrap, "group.id", "tg-gw-audit",
                        "enable.auto.commit", "false", "enable.partition.eof", "true",
                        "auto.offset.reset", "earliest", "fetch.wait.max.ms", "20",
                        "log_level", "3", NULL};
    for (size_t i = 0; kv[i]; i += 2) {
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            flog("consumer: %s=%s: %s", kv[i], kv[i + 1], errstr);
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr); /* takes conf */
    if (!c->rk) {
        flog("consumer: rd_kafka_new: %s", errstr);
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    c->topic = strdup(topic);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, topic, NULL);
    if (!c->topic || !rkt)
        goto fail;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(c->rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        flog("consumer: metadata of %s: %s", topic, rd_kafka_err2str(err));
        goto fail;
    }
    if (md->topic_cnt == 1 && !md->topics[0].err)
        c->partitions = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    if (c->partitions <= 0) {
        flog("consumer: topic %s has no partitions", topic);
        goto fail;
    }
    c->next = calloc((size_t)c->partitions, sizeof *c->next);
    c->target = calloc((size_t)c->partitions, sizeof *c->target);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(c->partitions);
    if (!c->next || !c->target || !parts) {
        if (parts)
            rd_kafka_topic_partition_list_destroy(parts);
        goto fail;
    }
    for (int p = 0; p < c->partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    err = rd_kafka_assign(c->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        flog("consumer: assign: %s", rd_kafka_err2str(err));
        goto fail;
    }
    return c;
fail:
    tg_gw_consumer_destroy(c);
    return NULL;
}

void tg_gw_consumer_destroy(struct tg_gw_consumer *c)
{
    if (!c)
        return;
    if (c->rk) {
        rd_kafka_assign(c->rk, NULL);
        rd_kafka_destroy(c->rk);
    }
    for (size_t i = 0; i < c->n; i++) {
        struct tg_gw_record *rec = &c->recs[i];
        free(rec->key);
        free(rec->value);
        for (size_t h = 0; h < rec->n_headers; h++) {
            free(rec->headers[h].name);
            free(rec->headers[h].value);
        }
        free(rec->headers);
    }
    free(c->recs);
    free(c->next);
    free(c->target);
    free(c->topic);
    free(c);
}

int tg_gw_consumer_partitions(const struct tg_gw_consumer *c) { return c->partitions; }

/* Asks the leaders for the end offset (high watermark) of every partition whose end is not
 * known yet in this call (c->target[p] < 0), all in one request per leader. True when every
 * end is known; the others stay unknown and are asked again later (a cluster that is down). */
static bool query_ends(struct tg_gw_consumer *c, int64_t deadline)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(c->partitions);
    if (!list)
        return false;
    for (int p = 0; p < c->partitions; p++)
        if (c->target[p] < 0) /* offsets_for_times: timestamp END asks for the end offset */
            rd_kafka_topic_partition_list_add(list, c->topic, p)->offset = RD_KAFKA_OFFSET_END;
    int64_t left = deadline - tg_harness_now_ms();
    int wait = left < 100 ? 100 : left > 5000 ? 5000 : (int)left;
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(c->rk, list, wait);
    bool all = true;
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        if (!err && !tp->err && tp->offset >= 0 && tp->partition >= 0 &&
            tp->partition < c->partitions)
            c->target[tp->partition] = tp->offset;
        else
            all = false;
    }
    if (!all && !c->ends_unknown_logged) {
        flog("consumer %s: end offsets not known yet (%s): reading on until they are",
             c->topic, rd_kafka_err2str(err ? err : RD_KAFKA_RESP_ERR__TIMED_OUT));
        c->ends_unknown_logged = true;
    }
    rd_kafka_topic_partition_list_destroy(list);
    return all;
}

/* Why end offsets and not partition EOF events: librdkafka reports EOF once per reaching
 * the end, and an EOF seen in an earlier call says nothing about records appended since.
 * Keeping "at end" flags across calls made a read with want 0 return at once, without
 * fetching, for the rest of the consumer's life: a test that created its consumer while the
 * gateway was still holding records back (its read-back at start, seconds long under qemu)
 * never saw them. The end offsets asked of the leaders at the start of the call cover every
 * record a producer had confirmed (acks=all) before it. */
size_t tg_gw_consumer_read(struct tg_gw_consumer *c, size_t want, int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    for (int p = 0; p < c->partitions; p++)
        c->target[p] = -1;
    c->ends_unknown_logged = false;
    bool ends_known = query_ends(c, deadline);
    int64_t next_query_ms = tg_harness_now_ms() + ENDS_RETRY_MS;
    for (;;) {
        bool all_read = ends_known;
        for (int p = 0; p < c->partitions && all_read; p++)
            all_read = c->next[p] >= c->target[p];
        if (all_read && c->n >= want)
            break;
        int64_t now = tg_harness_now_ms();
        if (now >= deadline)
            break;
        if (!ends_known && now >= next_query_ms) {
            ends_known = query_ends(c, deadline);
            next_query_ms = tg_harness_now_ms() + ENDS_RETRY_MS;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(c->rk, CONSUMER_POLL_MS);
        if (!msg)
            continue;
        bool known = msg->partition >= 0 && msg->partition < c->partitions;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Everything below msg->offset has been handed over (offsets that hold no
             * record, such as transaction markers, included). */
            if (known && msg->offset > c->next[msg->partition])
                c->next[msg->partition] = msg->offset;
        } else if (msg->err) {
            flog("consumer %s: %s", c->topic, rd_kafka_message_errstr(msg));
        } else {
            if (known && msg->offset + 1 > c->next[msg->partition])
                c->next[msg->partition] = msg->offset + 1;
            if (store_message(c, msg) != 0)
                flog("consumer %s: out of memory", c->topic);
        }
        rd_kafka_message_destroy(msg);
    }
    return c->n;
}

size_t tg_gw_consumer_count(const struct tg_gw_consumer *c) { return c->n; }

const struct tg_gw_record *tg_gw_consumer_record(const struct tg_gw_consumer *c, size_t i)
{
    return i < c->n ? &c->recs[i] : NULL;
}

const char *tg_gw_record_header(const struct tg_gw_record *rec, const char *name)
{
    for (size_t i = 0; i < rec->n_headers; i++) {
        if (strcmp(rec->headers[i].name, name) == 0)
            return rec->headers[i].value;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Audit
 */

#define AUDIT_REPORT_MAX 5

static void report(int *count, const struct tg_gw_record *rec, const char *what, bool verbose)
{
    if (++*count <= AUDIT_REPORT_MAX && verbose)
        flog("audit: %s: partition %d offset %" PRId64 " key %s value %.*s", what,
             rec->partition, rec->offset, rec->key ? rec->key : "(none)",
             (int)(rec->value_len > 200 ? 200 : rec->value_len), (const char *)rec->value);
}

/* The plan's device index of id, or -1 when id is not "<prefix>-%04d" within the plan. */
static int plan_dev(const struct tg_gw_plan *plan, const char *id)
{
    const char *prefix = plan_prefix(plan);
    size_t plen = strlen(prefix);
    if (strncmp(id, prefix, plen) != 0 || id[plen] != '-')
        return -1;
    char *end = NULL;
    long dev = strtol(id + plen + 1, &end, 10);
    if (!end || *end || dev < 0 || dev >= plan->devices)
        return -1;
    char expect[TG_DEVICE_ID_MAX + 1];
    if (strcmp(tg_gw_plan_device(plan, (int)dev, expect, sizeof expect), id) != 0)
        return -1;
    return (int)dev;
}

static void audit_run(const struct tg_gw_consumer *c, const struct tg_gw_plan *plan,
                      struct tg_gw_audit *a, bool verbose)
{
    memset(a, 0, sizeof *a);
    a->devices = plan->devices;
    a->seqs = plan->seqs;
    a->partitions = c->partitions;
    uint64_t boot = plan->boot ? plan->boot : 1;
    size_t n = (size_t)plan->devices * (size_t)plan->seqs;
    a->copies = calloc(n ? n : 1, 1);
    int64_t *last_seq = malloc((size_t)(plan->devices > 0 ? plan->devices : 1) * sizeof *last_seq);
    if (!a->copies || !last_seq) {
        flog("audit: out of memory");
        free(last_seq);
        a->bad = 1;
        return;
    }
    for (int d = 0; d < plan->devices; d++)
        last_seq[d] = -1;
    for (size_t i = 0; i < c->n; i++) {
        const struct tg_gw_record *rec = &c->recs[i];
        if (!rec->canonical) {
            report(&a->bad, rec, "not a canonical record", verbose);
            continue;
        }
        int dev = plan_dev(plan, rec->device);
        int64_t seq_index = (int64_t)rec->seq - plan->first_seq;
        if (dev < 0 || rec->boot != boot || seq_index < 0 || seq_index >= plan->seqs) {
            a->foreign++;
            continue;
        }
        const char *ctype = tg_gw_record_header(rec, "content-type");
        if (!rec->key || strcmp(rec->key, rec->device) != 0)
            report(&a->bad, rec, "key is not the device id", verbose);
        else if (rec->timestamp != rec->ts)
            report(&a->bad, rec, "Kafka timestamp is not the reading's ts", verbose);
        else if (!ctype || strcmp(ctype, "application/json") != 0)
            report(&a->bad, rec, "content-type header is not application/json", verbose);
        else if (!tg_gw_record_header(rec, "schema-version"))
            report(&a->bad, rec, "no schema-version header", verbose);
        else if (strcmp(rec->gateway, TG_GW_GATEWAY_ID) != 0)
            report(&a->bad, rec, "gateway is not " TG_GW_GATEWAY_ID, verbose);
        else if (!rec->has_temp || rec->temp != tg_gw_plan_temp(dev, (int)rec->seq))
            report(&a->bad, rec, "m.temp is not the published value", verbose);
        if (rec->partition != tg_gw_java_partition(rec->device, c->partitions))
            report(&a->misplaced, rec, "not on the murmur2 partition of its key", verbose);
        uint8_t *copies = &a->copies[(size_t)dev * (size_t)plan->seqs + (size_t)seq_index];
        if (*copies) {
            report(&a->duplicates, rec, "duplicate", verbose);
        } else {
            /* Records of one device share a partition and arrive in offset order. */
            if (last_seq[dev] >= 0 && (int64_t)rec->seq <= last_seq[dev])
                report(&a->out_of_order, rec, "seq not above the device's previous one", verbose);
            last_seq[dev] = (int64_t)rec->seq;
        }
        if (*copies < UINT8_MAX)
            (*copies)++;
    }
    for (size_t i = 0; i < n; i++) {
        if (a->copies[i])
            a->distinct++;
        else
            a->missing++;
    }
    free(last_seq);
}

void tg_gw_audit_run(const struct tg_gw_consumer *c, const struct tg_gw_plan *plan,
                     struct tg_gw_audit *a)
{
    audit_run(c, plan, a, true);
}

void tg_gw_audit_run_quiet(const struct tg_gw_consumer *c, const struct tg_gw_plan *plan,
                           struct tg_gw_audit *a)
{
    audit_run(c, plan, a, false);
}

int tg_gw_audit_copies(const struct tg_gw_audit *a, int dev, int seq_index)
{
    if (!a->copies || dev < 0 || dev >= a->devices || seq_index < 0 || seq_index >= a->seqs)
        return 0;
    return a->copies[(size_t)dev * (size_t)a->seqs + (size_t)seq_index];
}

void tg_gw_audit_print(const char *label, const struct tg_gw_audit *a)
{
    flog("audit %s: %d devices x %d seqs: distinct %d missing %d duplicates %d foreign %d "
         "bad %d misplaced %d out_of_order %d (%d partitions)",
         label, a->devices, a->seqs, a->distinct, a->missing, a->duplicates, a->foreign, a->bad,
         a->misplaced, a->out_of_order, a->partitions);
}

void tg_gw_audit_free(struct tg_gw_audit *a)
{
    free(a->copies);
    a->copies = NULL;
}

bool tg_gw_audit_exactly_once(const struct tg_gw_audit *a, int expected)
{
    bool ok = a->distinct == expected && a->missing == 0 && a->duplicates == 0 &&
              a->foreign == 0 && a->bad == 0 && a->misplaced == 0 && a->out_of_order == 0;
    if (!ok)
        fprintf(stderr,
                "audit: distinct %d (expected %d), missing %d, duplicates %d, foreign %d, bad %d, "
                "misplaced %d, out of order %d\n",
                a->distinct, expected, a->missing, a->duplicates, a->foreign, a->bad,
                a->misplaced, a->out_of_order);
    return ok;
}

bool tg_gw_kafka_exactly_once(const struct tg_gw *gw, const struct tg_gw_plan *plan,
                              int expected, const char *label, int wait_ms)
{
    struct tg_gw_consumer *c = tg_gw_consumer_new(tg_gw_bootstrap(gw), TG_GW_TOPIC);
    if (!c)
        return false;
    size_t records = tg_gw_consumer_read(c, (size_t)expected, wait_ms);
    struct tg_gw_audit audit;
    tg_gw_audit_run(c, plan, &audit);
    tg_gw_audit_print(label, &audit);
    bool ok = records == (size_t)expected && tg_gw_audit_exactly_once(&audit, expected);
    if (records != (size_t)expected)
        fprintf(stderr, "%s: Kafka held %zu records, expected %d\n", label, records, expected);
    tg_gw_audit_free(&audit);
    tg_gw_consumer_destroy(c);
    return ok;
}
