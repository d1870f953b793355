/*
 * test_node_posix.c - tidegate-node as a user sees it: a real Mosquitto, the node with a
 * simulated sensor at a short period, and a libmosquitto subscriber on telemetry/#.
 *
 *   - readings arrive as native CBOR that the gateway's decoder accepts, signed with the
 *     configured key (checked with mbedtls here), boot 1, seq 0, 1, 2, ... without gaps;
 *   - the broker goes away and comes back: the readings taken meanwhile arrive, oldest
 *     first, nothing is missing, boot stays;
 *   - SIGTERM exits 0; a restarted node counts boot 2 and starts again at seq 0;
 *   - a bad configuration exits non-zero naming file:line and key; a world-readable key file
 *     is refused;
 *   - TLS with a client certificate and a user name/password: a CA, server and client
 *     certificates generated with the openssl CLI at test time (tg_harness_tls_make).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mbedtls/md.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "codec.h"
#include "harness.h"

#define WAIT_MS 20000
#define DEVICE "node-it-01"
#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define MAX_READINGS 100000

static int teardown(void **state)
{
    tg_harness_reap_all();
    return 0;
}

/* ---- a subscriber that decodes and checks every reading as it arrives ---------------- */

struct got {
    uint64_t boot, seq;
};

struct subscriber {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    struct tg_decoder *dec; /* used on the loop thread only */
    uint8_t key[32];
    bool subscribed;
    struct got *got;
    size_t n;
    unsigned bad_decode, bad_sig, bad_topic, bad_metrics;
    char last_error[256];
};

static void sub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    if (rc == 0)
        mosquitto_subscribe(mosq, NULL, "telemetry/#", 1);
}

static void sub_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *qos)
{
    struct subscriber *s = obj;
    pthread_mutex_lock(&s->lock);
    s->subscribed = true;
    pthread_mutex_unlock(&s->lock);
}

static bool sig_valid(const struct subscriber *s, const struct tg_decoded *d)
{
    uint8_t mac[32];
    if (!d->sig || !d->signed_bytes)
        return false;
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (mbedtls_md_hmac(md, s->key, sizeof s->key, d->signed_bytes, d->signed_len, mac) != 0)
        return false;
    return memcmp(mac, d->sig, sizeof mac) == 0;
}

static void sub_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    struct subscriber *s = obj;
    struct tg_decoded d;
    pthread_mutex_lock(&s->lock);
    if (strcmp(m->topic, "telemetry/" DEVICE) != 0 || m->qos != 1) {
        s->bad_topic++;
    } else if (tg_decoder_decode(s->dec, TG_FORMAT_NATIVE, DEVICE, m->payload,
                                 (size_t)m->payloadlen, 0, &d) != TG_OK ||
               d.n_readings != 1 || !d.cbor) {
        s->bad_decode++;
        snprintf(s->last_error, sizeof s->last_error, "%s", tg_decoder_error(s->dec));
    } else {
        const struct tg_reading *rd = &d.readings[0];
        if (!sig_valid(s, &d))
            s->bad_sig++;
        /* the simulated sensor's five metrics, with a plausible temperature */
        bool temp_ok = false;
        for (size_t i = 0; i < rd->n_metrics; i++)
            if (strcmp(rd->metrics[i].name, "temperature_c") == 0)
                temp_ok = rd->metrics[i].value > -40 && rd->metrics[i].value < 60;
        if (rd->n_metrics != 5 || !temp_ok || rd->ts_ms < 1600000000000)
            s->bad_metrics++;
        if (s->n < MAX_READINGS)
            s->got[s->n++] = (struct got){rd->boot, rd->seq};
    }
    pthread_mutex_unlock(&s->lock);
}

static struct subscriber *subscriber_start(const struct tg_harness_mosquitto *mq)
{
    struct subscriber *s = calloc(1, sizeof *s);
    assert_non_null(s);
    pthread_mutex_init(&s->lock, NULL);
    s->got = calloc(MAX_READINGS, sizeof *s->got);
    s->dec = tg_decoder_new(NULL);
    assert_non_null(s->got);
    assert_non_null(s->dec);
    for (size_t i = 0; i < sizeof s->key; i++)
        s->key[i] = (uint8_t)i; /* KEY_HEX */
    /* A persistent session: what the node publishes while this client reconnects after a
     * broker restart is queued for it by the broker. */
    s->mosq = mosquitto_new("test-node-sub", false, s);
    assert_non_null(s->mosq);
    mosquitto_connect_callback_set(s->mosq, sub_on_connect);
    mosquitto_subscribe_callback_set(s->mosq, sub_on_subscribe);
    mosquitto_message_callback_set(s->mosq, sub_on_message);
    mosquitto_reconnect_delay_set(s->mosq, 1, 1, false);
    assert_int_equal(mosquitto_connect(s->mosq, tg_harness_mosquitto_host(mq),
                                       tg_harness_mosquitto_port(mq), 30),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(s->mosq), MOSQ_ERR_SUCCESS);
    return s;
}

static void subscriber_destroy(struct subscriber *s)
{
    mosquitto_disconnect(s->mosq);
    mosquitto_loop_stop(s->mosq, false);
    mosquitto_destroy(s->mosq);
    tg_decoder_destroy(s->dec);
    free(s->got);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static bool subscribed_cond(void *ud)
{
    struct subscriber *s = ud;
    pthread_mutex_lock(&s->lock);
    bool r = s->subscribed;
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* Waits for a reading of (boot, seq >= seq). */
struct want {
    struct subscriber *s;
    uint64_t boot, seq;
};

static bool reading_cond(void *ud)
{
    struct want *w = ud;
    bool r = false;
    pthread_mutex_lock(&w->s->lock);
    for (size_t i = 0; i < w->s->n && !r; i++)
        r = w->s->got[i].boot == w->boot && w->s->got[i].seq >= w->seq;
    pthread_mutex_unlock(&w->s->lock);
    return r;
}

static void wait_reading(struct subscriber *s, uint64_t boot, uint64_t seq)
{
    struct want w = {s, boot, seq};
    if (!tg_harness_wait_until(reading_cond, &w, WAIT_MS))
        fail_msg("no reading of boot %llu with seq >= %llu within %d ms",
                 (unsigned long long)boot, (unsigned long long)seq, WAIT_MS);
}

/*
 * The readings of one boot, in arrival order, without the repeats QoS1 allows (a reading
 * sent again after a reconnect): first arrivals must be seq 0, 1, 2, ... in that order.
 * Returns the highest seq seen.
 */
static uint64_t check_boot_in_order(struct subscriber *s, uint64_t boot)
{
    pthread_mutex_lock(&s->lock);
    uint64_t next = 0;
    size_t repeats = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->got[i].boot != boot)
            continue;
        if (s->got[i].seq < next) {
            repeats++; /* already seen: a redelivery */
            continue;
        }
        if (s->got[i].seq != next) {
            pthread_mutex_unlock(&s->lock);
            fail_msg("boot %llu: reading %zu has seq %llu, expected %llu (lost or reordered)",
                     (unsigned long long)boot, i, (unsigned long long)s->got[i].seq,
                     (unsigned long long)next);
        }
        next++;
    }
    unsigned bad_decode = s->bad_decode, bad_sig = s->bad_sig, bad_topic = s->bad_topic,
             bad_metrics = s->bad_metrics;
    char last_error[256];
    snprintf(last_error, sizeof last_error, "%s", s->last_error);
    pthread_mutex_unlock(&s->lock);
    printf("boot %llu: %llu readings in order, %zu redelivered\n", (unsigned long long)boot,
           (unsigned long long)next, repeats);
    if (bad_decode)
        fail_msg("%u payloads did not decode: %s", bad_decode, last_error);
    assert_int_equal(bad_sig, 0);
    assert_int_equal(bad_topic, 0);
    assert_int_equal(bad_metrics, 0);
    assert_true(next > 0);
    return next - 1;
}

/* ---- the node ---------------------------------------------------------------------------- */

static char *write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* A node config for the broker at port, with extra lines appended to [mqtt]. */
static char *write_config(const char *dir, int port, const char *mqtt_extra)
{
    char *key = write_file(dir, "node.key", KEY_HEX "\n", 0600);
    char *text;
    assert_true(asprintf(&text,
                         "# tidegate-node test configuration\n"
                         "[node]\n"
                         "device_id = " DEVICE "\n"
                         "state_dir = %s/state\n"
                         "hmac_key_file = %s\n"
                         "backoff_min_ms = 50\n"
                         "backoff_max_ms = 300\n"
                         "shutdown_flush_ms = 5000\n"
                         "[mqtt]\n"
                         "host = 127.0.0.1\n"
                         "port = %d\n"
                         "%s"
                         "[log]\n"
                         "level = debug\n"
                         "[sensor.env]\n"
                         "driver = sim\n"
                         "period_ms = 20\n",
                         dir, key, port, mqtt_extra ? mqtt_extra : "") > 0);
    char *path = write_file(dir, "node.ini", text, 0644);
    free(text);
    free(key);
    return path;
}

static struct tg_harness_proc *node_start(const char *dir, const char *config)
{
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate-node", tg_harness_bin_dir());
    const char *argv[] = {bin, "-c", config, NULL};
    struct tg_harness_proc *proc = tg_harness_proc_start(dir, "tidegate-node", argv, NULL, 0);
    assert_non_null(proc);
    return proc;
}

static void node_stop_ok(struct tg_harness_proc *proc)
{
    int status = tg_harness_proc_stop(proc, 10000);
    if (!tg_harness_exited_ok(status)) {
        char *log = tg_harness_read_file(tg_harness_proc_stderr_path(proc));
        fail_msg("tidegate-node did not exit 0 on SIGTERM (status %d):\n%s", status,
                 log ? log : "");
    }
    tg_harness_proc_destroy(proc);
}

struct file_has {
    const char *path;
    const char *needle;
};

static bool file_has_cond(void *ud)
{
    const struct file_has *fh = ud;
    return tg_harness_file_contains(fh->path, fh->needle);
}

static bool never(void *ud)
{
    return false;
}

static void test_delivery_outage_restart(void **state)
{
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(TG_HARNESS_MQTT_PERSISTENCE, NULL);
    assert_non_null(mq);
    char *dir = tg_harness_tmpdir_new("node");
    assert_non_null(dir);
    char *config = write_config(dir, tg_harness_mosquitto_port(mq), NULL);
    struct subscriber *sub = subscriber_start(mq);
    assert_true(tg_harness_wait_until(subscribed_cond, sub, WAIT_MS));

    /* Live delivery. */
    struct tg_harness_proc *node = node_start(dir, config);
    wait_reading(sub, 1, 20);
    uint64_t before = check_boot_in_order(sub, 1);

    /* Outage: the node notices, keeps sampling into its outbox, and reconnects with backoff
     * until the broker is back. */
    assert_int_equal(tg_harness_mosquitto_stop(mq), 0);
    struct file_has lost = {tg_harness_proc_stderr_path(node), "lost: "};
    assert_true(tg_harness_wait_until(file_has_cond, &lost, WAIT_MS));
    /* Not a synchronisation: the outage must last long enough for readings to pile up
     * (period 20 ms), and nothing observable marks "enough" but time. */
    (void)tg_harness_wait_until(never, NULL, 1000);
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    assert_true(tg_harness_proc_running(node));
    /* At 20 ms per reading, 1 s of outage is ~50 readings beyond what arrived before. */
    wait_reading(sub, 1, before + 60);
    uint64_t after = check_boot_in_order(sub, 1);
    assert_true(after >= before + 60);

    /* SIGTERM: exit 0, boot persisted; a new start is boot 2 from seq 0. */
    node_stop_ok(node);
    char *kv_path;
    assert_true(asprintf(&kv_path, "%s/state/kv", dir) > 0);
    assert_true(tg_harness_file_contains(kv_path, "boot 1\n"));
    node = node_start(dir, config);
    wait_reading(sub, 2, 10);
    check_boot_in_order(sub, 2);
    assert_true(tg_harness_file_contains(kv_path, "boot 2\n"));
    node_stop_ok(node);

    free(kv_path);
    free(config);
    subscriber_destroy(sub);
    tg_harness_mosquitto_destroy(mq);
    tg_harness_tmpdir_done(dir);
}

/* Runs the node on config, which must fail at once; its stderr must contain every needle. */
static void expect_config_error(const char *dir, const char *config, const char *const *needles)
{
    struct tg_harness_proc *node = node_start(dir, config);
    int status;
    assert_int_equal(tg_harness_proc_wait(node, 10000, &status), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    char *log = tg_harness_read_file(tg_harness_proc_stderr_path(node));
    assert_non_null(log);
    for (size_t i = 0; needles[i]; i++)
        if (!strstr(log, needles[i]))
            fail_msg("stderr lacks \"%s\":\n%s", needles[i], log);
    free(log);
    tg_harness_proc_destroy(node);
}

static void test_bad_config(void **state)
{
    char *dir = tg_harness_tmpdir_new("node-cfg");
    assert_non_null(dir);
    char *config = write_file(dir, "bad.ini",
                              "[node]\n"
                              "device_id = node-01\n"
                              "[sensor.env]\n"
                              "driver = sim\n"
                              "period_ms = soon\n"
                              "[sensor.door]\n"
                              "driver = bme280\n"
                              "address = 0x80\n"
                              "[mqtt]\n"
                              "prot = 1883\n",
                              0644);
    char *path_line5, *path_line8, *path_line10;
    assert_true(asprintf(&path_line5, "%s:5: [sensor.env] period_ms", config) > 0);
    assert_true(asprintf(&path_line8, "%s:8: [sensor.door] address", config) > 0);
    assert_true(asprintf(&path_line10, "%s:10: [mqtt] prot", config) > 0);
    /* common/config.h reports the schema's errors (all of them) before semantic checks. */
    const char *const schema_errors[] = {path_line5, path_line10, "did you mean", NULL};
    expect_config_error(dir, config, schema_errors);
    free(config);

    config = write_file(dir, "bad2.ini",
                        "[node]\n"
                        "device_id = node-01\n"
                        "[sensor.door]\n"
                        "driver = bme280\n"
                        "address = 0x80\n",
                        0644);
    free(path_line8);
    assert_true(asprintf(&path_line8, "%s:5: [sensor.door] address", config) > 0);
    const char *const semantic_errors[] = {path_line8, "0x08 and 0x77", NULL};
    expect_config_error(dir, config, semantic_errors);
    free(config);

    /* A key file every user can read is refused, naming the key and what to do. */
    char *key = write_file(dir, "open.key", KEY_HEX "\n", 0644);
    char *text;
    assert_true(asprintf(&text,
                         "[node]\ndevice_id = node-01\nstate_dir = %s/state\n"
                         "hmac_key_file = %s\n[sensor.env]\ndriver = sim\n",
                         dir, key) > 0);
    config = write_file(dir, "open-key.ini", text, 0644);
    char *key_line;
    assert_true(asprintf(&key_line, "%s:4: [node] hmac_key_file", config) > 0);
    const char *const key_errors[] = {key_line, "chmod 600", NULL};
    expect_config_error(dir, config, key_errors);

    free(key_line);
    free(config);
    free(text);
    free(key);
    free(path_line5);
    free(path_line8);
    free(path_line10);
    tg_harness_tmpdir_done(dir);
}

/* The shipped example configuration is valid once its files exist (here: switched off). */
static void test_example_config(void **state)
{
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate-node", tg_harness_bin_dir());
    const char *argv[] = {bin, "-c", TG_SOURCE_DIR "/config/tidegate-node.ini",
                          "--set", "node.hmac_key_file=", "--set", "mqtt.tls_ca=",
                          "--set", "mqtt.tls_cert=", "--set", "mqtt.tls_key=",
                          "--set", "mqtt.password=hunter2", "--check-config", NULL};
    char *out = NULL;
    int status = tg_harness_run(argv, NULL, 0, &out, 10000);
    assert_true(tg_harness_exited_ok(status));
    assert_non_null(strstr(out, "[sensor.air]"));
    assert_non_null(strstr(out, "driver = bme280"));
    /* the gateway's redaction rule (common/config.c) holds here too */
    assert_null(strstr(out, "hunter2"));
    assert_non_null(strstr(out, "# password = (set, 7 characters; not shown)"));
    free(out);
}

/* ---- TLS ----------------------------------------------------------------------------------- */

static void test_tls_with_client_cert_and_password(void **state)
{
    char *dir = tg_harness_tmpdir_new("node-tls");
    assert_non_null(dir);
    struct tg_harness_tls *tls = tg_harness_tls_make(dir, "test", DEVICE);
    assert_non_null(tls);
    char passwd[512];
    snprintf(passwd, sizeof passwd, "%s/passwd", dir);
    assert_int_equal(tg_harness_mosquitto_passwd(passwd, DEVICE, "s3cret"), 0);

    /* A second listener with TLS that requires a client certificate; the password file
     * applies to every client that gives a user name (anonymous ones, like the test's
     * subscriber on the plain listener, stay allowed). */
    int tls_port = tg_harness_free_port();
    assert_true(tls_port > 0);
    char *listener = tg_harness_tls_listener_conf(tls, tls_port, true);
    assert_non_null(listener);
    char *extra;
    assert_true(asprintf(&extra, "password_file %s\n%s", passwd, listener) > 0);
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, extra);
    assert_non_null(mq);
    struct subscriber *sub = subscriber_start(mq);
    assert_true(tg_harness_wait_until(subscribed_cond, sub, WAIT_MS));

    char *mqtt_extra;
    assert_true(asprintf(&mqtt_extra,
                         "tls_ca = %s\ntls_cert = %s\ntls_key = %s\n"
                         "username = " DEVICE "\npassword = s3cret\n",
                         tg_harness_tls_ca(tls), tg_harness_tls_client_cert(tls),
                         tg_harness_tls_client_key(tls)) > 0);
    char *config = write_config(dir, tls_port, mqtt_extra);
    struct tg_harness_proc *node = node_start(dir, config);
    wait_reading(sub, 1, 10);
    check_boot_in_order(sub, 1);
    assert_true(tg_harness_file_contains(tg_harness_proc_stderr_path(node), "(TLS)"));
    node_stop_ok(node);

    /* A wrong password is refused by the broker, and the node says so. */
    free(config);
    free(mqtt_extra);
    assert_true(asprintf(&mqtt_extra,
                         "tls_ca = %s\ntls_cert = %s\ntls_key = %s\n"
                         "username = " DEVICE "\npassword = wrong\n",
                         tg_harness_tls_ca(tls), tg_harness_tls_client_cert(tls),
                         tg_harness_tls_client_key(tls)) > 0);
    config = write_config(dir, tls_port, mqtt_extra);
    node = node_start(dir, config);
    struct file_has refused = {tg_harness_proc_stderr_path(node), "refused the connection"};
    assert_true(tg_harness_wait_until(file_has_cond, &refused, WAIT_MS));
    node_stop_ok(node);

    free(config);
    free(mqtt_extra);
    free(extra);
    free(listener);
    tg_harness_tls_destroy(tls);
    subscriber_destroy(sub);
    tg_harness_mosquitto_destroy(mq);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    mosquitto_lib_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_delivery_outage_restart, teardown),
        cmocka_unit_test_teardown(test_bad_config, teardown),
        cmocka_unit_test_teardown(test_example_config, teardown),
        cmocka_unit_test_teardown(test_tls_with_client_cert_and_password, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mosquitto_lib_cleanup();
    return rc;
}
