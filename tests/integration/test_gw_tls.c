/*
 * test_gw_tls.c - the gateway's MQTT ingress over TLS, against a Mosquitto listener that
 * requires a client certificate signed by its CA and checks passwords (the CA, server and
 * client certificates are made with the openssl CLI at test time: tg_harness_tls_make).
 *
 *   - tidegate with [mqtt] tls_ca, tls_cert, tls_key, username and password connects; a
 *     publisher with its own client certificate publishes a few hundred readings over TLS,
 *     and each reaches Kafka exactly once;
 *   - tidegate trusting another CA (a second, unrelated one) cannot verify the broker's
 *     certificate: it does not connect, keeps retrying without crashing, says why in its log
 *     (certificate verify failed), and exits 0 on SIGTERM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "gateway_fixture.h"

#define DEVICES 20
#define SEQS 20
#define READINGS (DEVICES * SEQS)
#define WAIT_MS 60000
#define GW_USER "tidegate-gw"
#define GW_PASSWORD "gw-s3cret"
#define PUB_USER "publisher"
#define PUB_PASSWORD "pub-s3cret"
/* Connection attempts the gateway with the wrong CA must survive. */
#define RETRIES 5

/* The broker side shared by both cases: a PKI, a password file with the gateway's and the
 * publisher's users, and mosquitto.conf lines for a TLS listener that requires a client
 * certificate. */
struct tls_broker {
    char *dir;
    struct tg_harness_tls *tls;
    int port;
    char *conf;
};

static void tls_broker_init(struct tls_broker *tb)
{
    tb->dir = tg_harness_tmpdir_new("gw-tls");
    assert_non_null(tb->dir);
    tb->tls = tg_harness_tls_make(tb->dir, "broker", "tidegate-gw");
    assert_non_null(tb->tls);
    char passwd[512];
    snprintf(passwd, sizeof passwd, "%s/passwd", tb->dir);
    assert_int_equal(tg_harness_mosquitto_passwd(passwd, GW_USER, GW_PASSWORD), 0);
    assert_int_equal(tg_harness_mosquitto_passwd(passwd, PUB_USER, PUB_PASSWORD), 0);
    tb->port = tg_harness_free_port();
    assert_true(tb->port > 0);
    char *listener = tg_harness_tls_listener_conf(tb->tls, tb->port, true);
    assert_non_null(listener);
    /* The fixture's default queue (the broker must never drop what the gateway has not
     * taken yet), then the password file (global, so it applies to the TLS listener) and
     * the listener. */
    assert_true(asprintf(&tb->conf, "max_queued_messages 1000000\npassword_file %s\n%s",
                         passwd, listener) > 0);
    free(listener);
}

static void tls_broker_done(struct tls_broker *tb)
{
    free(tb->conf);
    tg_harness_tls_destroy(tb->tls);
    tg_harness_tmpdir_done(tb->dir);
}

/* ---- a publisher over TLS with its own client certificate --------------------------------- */

struct tls_pub {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    int connack; /* -1 until the CONNACK */
    int acked;
};

static void tls_pub_on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    struct tls_pub *pub = obj;
    pthread_mutex_lock(&pub->lock);
    pub->connack = rc;
    pthread_mutex_unlock(&pub->lock);
}

static void tls_pub_on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    (void)mid;
    struct tls_pub *pub = obj;
    pthread_mutex_lock(&pub->lock);
    pub->acked++;
    pthread_mutex_unlock(&pub->lock);
}

static bool tls_pub_connacked(void *ud)
{
    struct tls_pub *pub = ud;
    pthread_mutex_lock(&pub->lock);
    bool r = pub->connack >= 0;
    pthread_mutex_unlock(&pub->lock);
    return r;
}

struct acked_wait {
    struct tls_pub *pub;
    int want;
};

static bool tls_pub_all_acked(void *ud)
{
    struct acked_wait *aw = ud;
    pthread_mutex_lock(&aw->pub->lock);
    bool r = aw->pub->acked >= aw->want;
    pthread_mutex_unlock(&aw->pub->lock);
    return r;
}

/* Connects to the TLS listener with cert/key and user/password, and waits for the CONNACK.
 * Returns the publisher; *connack is the broker's answer (0: accepted). */
static struct tls_pub *tls_pub_new(const struct tls_broker *tb, const char *cert,
                                   const char *key, const char *password, int *connack)
{
    struct tls_pub *pub = calloc(1, sizeof *pub);
    assert_non_null(pub);
    pthread_mutex_init(&pub->lock, NULL);
    pub->connack = -1;
    pub->mosq = mosquitto_new(NULL, true, pub);
    assert_non_null(pub->mosq);
    mosquitto_connect_callback_set(pub->mosq, tls_pub_on_connect);
    mosquitto_publish_callback_set(pub->mosq, tls_pub_on_publish);
    assert_int_equal(mosquitto_tls_set(pub->mosq, tg_harness_tls_ca(tb->tls), NULL, cert, key,
                                       NULL),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_username_pw_set(pub->mosq, PUB_USER, password),
                     MOSQ_ERR_SUCCESS);
    /* Blocking connect: TCP and the TLS handshake; the CONNACK arrives on the loop thread. */
    assert_int_equal(mosquitto_connect(pub->mosq, "127.0.0.1", tb->port, 30), MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(pub->mosq), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(tls_pub_connacked, pub, WAIT_MS));
    pthread_mutex_lock(&pub->lock);
    *connack = pub->connack;
    pthread_mutex_unlock(&pub->lock);
    return pub;
}

static void tls_pub_destroy(struct tls_pub *pub)
{
    mosquitto_disconnect(pub->mosq);
    mosquitto_loop_stop(pub->mosq, false);
    mosquitto_destroy(pub->mosq);
    pthread_mutex_destroy(&pub->lock);
    free(pub);
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Publishes plan QoS1, seq by seq for every device, as tg_gw_pub would. */
static void tls_pub_plan(struct tls_pub *pub, const struct tg_gw_plan *plan)
{
    for (int s = 0; s < plan->seqs; s++) {
        for (int d = 0; d < plan->devices; d++) {
            int seq = plan->first_seq + s;
            char device[TG_DEVICE_ID_MAX + 1], topic[TG_DEVICE_ID_MAX + 32];
            uint8_t payload[512];
            tg_gw_plan_device(plan, d, device, sizeof device);
            snprintf(topic, sizeof topic, "telemetry/%s", device);
            enum tg_gw_format format = d % 2 ? TG_GW_CBOR : TG_GW_JSON; /* TG_GW_MIXED */
            int len = tg_gw_encode_reading(format, plan->boot, (uint64_t)seq, wall_ms(), "temp",
                                           tg_gw_plan_temp(d, seq), payload, sizeof payload);
            assert_true(len > 0);
            assert_int_equal(mosquitto_publish(pub->mosq, NULL, topic, len, payload, 1, false),
                             MOSQ_ERR_SUCCESS);
        }
    }
}

/* Mosquitto's log: a line of the TLS listener's connection from user with client id. */
static bool broker_logged_client(const char *log_path, const char *client_id, const char *user)
{
    char needle[256];
    snprintf(needle, sizeof needle, " as %s (", client_id);
    char user_needle[128];
    snprintf(user_needle, sizeof user_needle, "u'%s'", user);
    FILE *f = fopen(log_path, "r");
    if (!f)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, "New client connected") && strstr(line, needle) &&
                strstr(line, user_needle);
    fclose(f);
    return found;
}

/* ---- readings over TLS reach Kafka exactly once ------------------------------------------ */

static void tls_readings_exactly_once(void **state)
{
    (void)state;
    struct tls_broker tb;
    tls_broker_init(&tb);

    char port_set[64], ca_set[600], cert_set[600], key_set[600];
    snprintf(port_set, sizeof port_set, "mqtt.port=%d", tb.port);
    snprintf(ca_set, sizeof ca_set, "mqtt.tls_ca=%s", tg_harness_tls_ca(tb.tls));
    snprintf(cert_set, sizeof cert_set, "mqtt.tls_cert=%s", tg_harness_tls_client_cert(tb.tls));
    snprintf(key_set, sizeof key_set, "mqtt.tls_key=%s", tg_harness_tls_client_key(tb.tls));
    const char *const sets[] = {port_set, ca_set, cert_set, key_set,
                                "mqtt.username=" GW_USER, "mqtt.password=" GW_PASSWORD, NULL};
    const struct tg_gw_opts opts = {.mqtt_extra_conf = tb.conf, .sets = sets};
    /* Ready means subscribed: the gateway got through the TLS handshake (the listener
     * requires its certificate) and the broker accepted its password. */
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);
    const char *broker_log = tg_harness_mosquitto_log_path(tg_gw_mosquitto(gw));
    assert_true(broker_logged_client(broker_log, "tidegate-test", GW_USER));

    /* The publisher has its own certificate from the same CA and its own user. A wrong
     * password is refused first: the broker does check them on this listener. */
    char *pub_cert, *pub_key;
    assert_int_equal(tg_harness_tls_make_client(tb.tls, "publisher", "publisher", &pub_cert,
                                                &pub_key),
                     0);
    int connack;
    struct tls_pub *pub = tls_pub_new(&tb, pub_cert, pub_key, "wrong", &connack);
    assert_int_not_equal(connack, 0);
    tls_pub_destroy(pub);
    pub = tls_pub_new(&tb, pub_cert, pub_key, PUB_PASSWORD, &connack);
    assert_int_equal(connack, 0);

    const struct tg_gw_plan plan = {.prefix = "tls", .devices = DEVICES, .seqs = SEQS,
                                    .boot = 1, .format = TG_GW_MIXED};
    tls_pub_plan(pub, &plan);
    struct acked_wait aw = {pub, READINGS};
    assert_true(tg_harness_wait_until(tls_pub_all_acked, &aw, WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  READINGS, WAIT_MS));
    assert_true(tg_gw_kafka_exactly_once(gw, &plan, READINGS, "tls", WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_delivered_total", NULL, TG_GW_EQ,
                                READINGS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", NULL, TG_GW_EQ, 0));
    assert_true(tg_gw_metric_is(gw, "tidegate_mqtt_connections", NULL, TG_GW_EQ, 1));

    tls_pub_destroy(pub);
    free(pub_cert);
    free(pub_key);
    assert_true(tg_harness_exited_ok(tg_gw_tidegate_term(gw, 30000)));
    tg_gw_destroy(gw);
    tls_broker_done(&tb);
}

/* ---- a CA that did not sign the broker's certificate ----------------------------------- */

struct log_wait {
    const char *path;
    const char *needle;
};

static bool log_has(void *ud)
{
    const struct log_wait *lw = ud;
    return tg_harness_file_contains(lw->path, lw->needle);
}

static void tls_wrong_ca_retries(void **state)
{
    (void)state;
    struct tls_broker tb;
    tls_broker_init(&tb);
    /* Another CA with its own client certificate: the broker would not accept that one
     * either, but the gateway fails first, verifying the broker's certificate. */
    struct tg_harness_tls *other = tg_harness_tls_make(tb.dir, "other", "tidegate-gw");
    assert_non_null(other);

    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, tb.conf);
    assert_non_null(mq);
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(NULL);
    assert_non_null(dk);
    int metrics_port = tg_harness_free_port();
    assert_true(metrics_port > 0);

    char *ini_path, *ini;
    assert_true(asprintf(&ini_path, "%s/tidegate.ini", tb.dir) > 0);
    assert_true(asprintf(&ini,
                         "[gateway]\nid = " TG_GW_GATEWAY_ID "\n"
                         "[mqtt]\nhost = 127.0.0.1\nport = %d\nclient_id = tidegate-test\n"
                         "username = " GW_USER "\npassword = " GW_PASSWORD "\n"
                         "tls_ca = %s\ntls_cert = %s\ntls_key = %s\n"
                         "reconnect_min_ms = 100\nreconnect_max_ms = 500\n"
                         "[kafka]\nbrokers = %s\n"
                         "[journal]\npath = %s/journal.db\n"
                         "[metrics]\nlisten = 127.0.0.1:%d\n",
                         tb.port, tg_harness_tls_ca(other), tg_harness_tls_client_cert(other),
                         tg_harness_tls_client_key(other), tg_harness_devkafka_bootstrap(dk),
                         tb.dir, metrics_port) > 0);
    FILE *f = fopen(ini_path, "w");
    assert_non_null(f);
    assert_true(fputs(ini, f) >= 0);
    assert_int_equal(fclose(f), 0);

    char bin[1024];
    snprintf(bin, sizeof bin, "%s/tidegate", tg_harness_bin_dir());
    const char *argv[] = {bin, "-c", ini_path, NULL};
    struct tg_harness_proc *gw = tg_harness_proc_start(tb.dir, "tidegate", argv, NULL, 0);
    assert_non_null(gw);
    const char *log_path = tg_harness_proc_stderr_path(gw);

    /* It keeps trying (each attempt after the first counts as a reconnect) and stays up. */
    if (!tg_gw_wait_metric_at(metrics_port, "tidegate_mqtt_reconnects_total", NULL, TG_GW_GE,
                              RETRIES, WAIT_MS)) {
        char *log = tg_harness_read_file(log_path);
        fail_msg("fewer than %d reconnects (running: %d):\n%s", RETRIES,
                 tg_harness_proc_running(gw), log ? log : "");
    }
    assert_true(tg_harness_proc_running(gw));
    assert_true(tg_gw_metric_at(metrics_port, "tidegate_mqtt_connections", NULL) == 0);

    /* The log says what failed and why, in OpenSSL's words. */
    struct log_wait lw = {log_path, "certificate verify failed"};
    if (!tg_harness_wait_until(log_has, &lw, 5000)) {
        char *log = tg_harness_read_file(log_path);
        fail_msg("tidegate's log does not say \"certificate verify failed\":\n%s",
                 log ? log : "");
    }
    assert_true(tg_harness_file_contains(log_path, "cannot connect to 127.0.0.1:"));
    /* The broker saw the handshake fail on the gateway's side (it rejected our CA). */
    assert_true(tg_harness_file_contains(tg_harness_mosquitto_log_path(mq), "unknown ca"));
    /* Nothing got through: the broker never logged a connected client. */
    assert_false(tg_harness_file_contains(tg_harness_mosquitto_log_path(mq),
                                          "New client connected"));

    int status = tg_harness_proc_stop(gw, 30000);
    if (!tg_harness_exited_ok(status)) {
        char *log = tg_harness_read_file(log_path);
        fail_msg("tidegate did not exit 0 on SIGTERM (status 0x%x):\n%s", status,
                 log ? log : "");
    }
    assert_true(tg_harness_file_contains(log_path, "stopped"));

    tg_harness_proc_destroy(gw);
    free(ini);
    free(ini_path);
    tg_harness_devkafka_destroy(dk);
    tg_harness_mosquitto_destroy(mq);
    tg_harness_tls_destroy(other);
    tls_broker_done(&tb);
}

int main(void)
{
    mosquitto_lib_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(tls_readings_exactly_once, tg_gw_teardown),
        cmocka_unit_test_teardown(tls_wrong_ca_retries, tg_gw_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mosquitto_lib_cleanup();
    return rc;
}
