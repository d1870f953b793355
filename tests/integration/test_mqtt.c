/*
 * test_mqtt.c - the harness's Mosquitto as MQTT clients see it: QoS1 publish/subscribe in
 * order through libmosquitto, the mosquitto_pub/mosquitto_sub tools, and a restart on the
 * same port that keeps a persistent session and the QoS1 messages queued for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define WAIT_MS 20000
#define ORDER_MSGS 500
#define OFFLINE_MSGS 50

static int teardown(void **state)
{
    (void)state;
    tg_harness_reap_all();
    return 0;
}

/* ---- a libmosquitto client whose callbacks (on its loop thread) record what happened ---- */

struct client {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    bool connected;
    bool session_present;
    int connects;
    int disconnects;
    bool subscribed;
    int acked;          /* PUBACKs for our QoS1 publishes */
    char **msgs;        /* payloads received, in order */
    int n_msgs;
    int cap_msgs;
};

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    struct client *c = obj;
    pthread_mutex_lock(&c->lock);
    if (rc == 0) {
        c->connected = true;
        c->session_present = flags & 1;
        c->connects++;
    }
    pthread_mutex_unlock(&c->lock);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    (void)mosq;
    (void)rc;
    struct client *c = obj;
    pthread_mutex_lock(&c->lock);
    c->connected = false;
    c->disconnects++;
    pthread_mutex_unlock(&c->lock);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                         const int *granted)
{
    (void)mosq;
    (void)mid;
    (void)qos_count;
    (void)granted;
    struct client *c = obj;
    pthread_mutex_lock(&c->lock);
    c->subscribed = true;
    pthread_mutex_unlock(&c->lock);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    (void)mosq;
    (void)mid;
    struct client *c = obj;
    pthread_mutex_lock(&c->lock);
    c->acked++;
    pthread_mutex_unlock(&c->lock);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
    (void)mosq;
    struct client *c = obj;
    char *copy = strndup(msg->payload ? msg->payload : "", (size_t)msg->payloadlen);
    pthread_mutex_lock(&c->lock);
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? c->cap_msgs * 2 : 64;
        char **grown = realloc(c->msgs, (size_t)cap * sizeof *grown);
        if (grown) {
            c->msgs = grown;
            c->cap_msgs = cap;
        }
    }
    if (copy && c->n_msgs < c->cap_msgs)
        c->msgs[c->n_msgs++] = copy;
    else
        free(copy);
    pthread_mutex_unlock(&c->lock);
}

static struct client *client_new(const char *id, bool clean_session)
{
    struct client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    pthread_mutex_init(&c->lock, NULL);
    c->mosq = mosquitto_new(id, clean_session, c);
    assert_non_null(c->mosq);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_callback_set(c->mosq, on_disconnect);
    mosquitto_subscribe_callback_set(c->mosq, on_subscribe);
    mosquitto_publish_callback_set(c->mosq, on_publish);
    mosquitto_message_callback_set(c->mosq, on_message);
    return c;
}

static void client_destroy(struct client *c)
{
    mosquitto_loop_stop(c->mosq, true);
    mosquitto_destroy(c->mosq);
    for (int i = 0; i < c->n_msgs; i++)
        free(c->msgs[i]);
    free(c->msgs);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

struct client_cond {
    struct client *c;
    int want;
};

static bool connected_cond(void *ud)
{
    struct client *c = ud;
    pthread_mutex_lock(&c->lock);
    bool r = c->connected;
    pthread_mutex_unlock(&c->lock);
    return r;
}

static bool disconnected_cond(void *ud)
{
    struct client *c = ud;
    pthread_mutex_lock(&c->lock);
    bool r = c->disconnects > 0;
    pthread_mutex_unlock(&c->lock);
    return r;
}

static bool subscribed_cond(void *ud)
{
    struct client *c = ud;
    pthread_mutex_lock(&c->lock);
    bool r = c->subscribed;
    pthread_mutex_unlock(&c->lock);
    return r;
}

static bool acked_cond(void *ud)
{
    struct client_cond *cc = ud;
    pthread_mutex_lock(&cc->c->lock);
    bool r = cc->c->acked >= cc->want;
    pthread_mutex_unlock(&cc->c->lock);
    return r;
}

static bool received_cond(void *ud)
{
    struct client_cond *cc = ud;
    pthread_mutex_lock(&cc->c->lock);
    bool r = cc->c->n_msgs >= cc->want;
    pthread_mutex_unlock(&cc->c->lock);
    return r;
}

static void client_connect(struct client *c, const struct tg_harness_mosquitto *mq)
{
    assert_int_equal(mosquitto_connect(c->mosq, tg_harness_mosquitto_host(mq),
                                       tg_harness_mosquitto_port(mq), 30),
                     MOSQ_ERR_SUCCESS);
    assert_int_equal(mosquitto_loop_start(c->mosq), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(connected_cond, c, WAIT_MS));
}

static void client_subscribe(struct client *c, const char *pattern)
{
    assert_int_equal(mosquitto_subscribe(c->mosq, NULL, pattern, 1), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(subscribed_cond, c, WAIT_MS));
}

/* Publishes n QoS1 messages "<prefix>-<i>" and waits for every PUBACK. */
static void client_publish_n(struct client *c, const char *topic, const char *prefix, int n)
{
    char payload[64];
    for (int i = 0; i < n; i++) {
        int len = snprintf(payload, sizeof payload, "%s-%d", prefix, i);
        assert_int_equal(mosquitto_publish(c->mosq, NULL, topic, len, payload, 1, false),
                         MOSQ_ERR_SUCCESS);
    }
    struct client_cond cc = {.c = c, .want = n};
    assert_true(tg_harness_wait_until(acked_cond, &cc, WAIT_MS));
}

/* Waits for n messages and checks they are "<prefix>-0" .. "<prefix>-(n-1)" in order. */
static void client_expect_n(struct client *c, const char *prefix, int n)
{
    struct client_cond cc = {.c = c, .want = n};
    if (!tg_harness_wait_until(received_cond, &cc, WAIT_MS))
        fail_msg("received %d of %d messages within %d ms", c->n_msgs, n, WAIT_MS);
    pthread_mutex_lock(&c->lock);
    int got = c->n_msgs;
    pthread_mutex_unlock(&c->lock);
    assert_int_equal(got, n);
    for (int i = 0; i < n; i++) {
        char expected[64];
        snprintf(expected, sizeof expected, "%s-%d", prefix, i);
        assert_string_equal(c->msgs[i], expected);
    }
}

/* ---- tests ---- */

static void test_qos1_in_order(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);

    struct client *sub = client_new("tg-order-sub", true);
    client_connect(sub, mq);
    client_subscribe(sub, "telemetry/+");

    struct client *pub = client_new("tg-order-pub", true);
    client_connect(pub, mq);
    client_publish_n(pub, "telemetry/dev-1", "msg", ORDER_MSGS);

    client_expect_n(sub, "msg", ORDER_MSGS);

    mosquitto_disconnect(pub->mosq);
    mosquitto_disconnect(sub->mosq);
    client_destroy(pub);
    client_destroy(sub);
    tg_harness_mosquitto_destroy(mq);
}

struct file_contains {
    const char *path;
    const char *needle;
};

static bool file_contains_cond(void *ud)
{
    const struct file_contains *fc = ud;
    return tg_harness_file_contains(fc->path, fc->needle);
}

static void test_command_line_clients(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(0, NULL);
    assert_non_null(mq);
    char port[16];
    snprintf(port, sizeof port, "%d", tg_harness_mosquitto_port(mq));
    const char *host = tg_harness_mosquitto_host(mq);

    /* -d makes mosquitto_sub say when its subscription is in place (line-buffered by
     * stdbuf, as its stdout is a file): wait for that, not for some time, before publishing.
     * The broker logs the subscription too. */
    const char *sub_argv[] = {"stdbuf", "-oL", "mosquitto_sub", "-d", "-i", "tg-cli-sub",
                              "-h", host, "-p", port, "-t", "telemetry/cli", "-q", "1",
                              "-C", "1", "-W", "20", NULL};
    struct tg_harness_proc *sub =
        tg_harness_proc_start(tg_harness_mosquitto_dir(mq), "mosquitto_sub", sub_argv, NULL, 0);
    assert_non_null(sub);
    struct file_contains subscribed = {tg_harness_proc_stdout_path(sub), "received SUBACK"};
    assert_true(tg_harness_wait_until(file_contains_cond, &subscribed, WAIT_MS));
    assert_true(tg_harness_file_contains(tg_harness_mosquitto_log_path(mq),
                                         ": tg-cli-sub 1 telemetry/cli\n"));

    const char *pub_argv[] = {"mosquitto_pub", "-h", host, "-p", port, "-t", "telemetry/cli",
                              "-q", "1", "-m", "{\"seq\":1,\"boot\":1,\"ts\":1,\"m\":{\"t\":2}}",
                              NULL};
    assert_true(tg_harness_exited_ok(tg_harness_run(pub_argv, NULL, 0, NULL, WAIT_MS)));

    int status = -1;
    assert_int_equal(tg_harness_proc_wait(sub, WAIT_MS, &status), 0);
    assert_true(tg_harness_exited_ok(status)); /* -C 1: exits after one message */
    struct file_contains got = {tg_harness_proc_stdout_path(sub),
                                "\n{\"seq\":1,\"boot\":1,\"ts\":1,\"m\":{\"t\":2}}\n"};
    assert_true(file_contains_cond(&got));

    tg_harness_proc_destroy(sub);
    tg_harness_mosquitto_destroy(mq);
}

static void test_restart_keeps_persistent_session(void **state)
{
    (void)state;
    struct tg_harness_mosquitto *mq = tg_harness_mosquitto_start(TG_HARNESS_MQTT_PERSISTENCE,
                                                                 NULL);
    assert_non_null(mq);
    int port = tg_harness_mosquitto_port(mq);

    /* a persistent session subscribes, then goes away */
    struct client *sub = client_new("tg-persistent-sub", false);
    client_connect(sub, mq);
    client_subscribe(sub, "telemetry/#");
    assert_int_equal(mosquitto_disconnect(sub->mosq), MOSQ_ERR_SUCCESS);
    assert_true(tg_harness_wait_until(disconnected_cond, sub, WAIT_MS));
    client_destroy(sub);

    /* QoS1 messages published while it is away are queued for it */
    struct client *pub = client_new("tg-persistent-pub", true);
    client_connect(pub, mq);
    client_publish_n(pub, "telemetry/dev-7", "offline", OFFLINE_MSGS);
    mosquitto_disconnect(pub->mosq);
    client_destroy(pub);

    /* the broker goes down (saving its database) and comes back on the same port */
    assert_int_equal(tg_harness_mosquitto_stop(mq), 0);
    assert_int_equal(tg_harness_tcp_probe(tg_harness_mosquitto_host(mq), port), ECONNREFUSED);
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    assert_int_equal(tg_harness_mosquitto_port(mq), port);

    /* the same client id reconnects without subscribing again and gets everything */
    sub = client_new("tg-persistent-sub", false);
    client_connect(sub, mq);
    pthread_mutex_lock(&sub->lock);
    bool session_present = sub->session_present;
    pthread_mutex_unlock(&sub->lock);
    assert_true(session_present);
    client_expect_n(sub, "offline", OFFLINE_MSGS);

    /* and a second restart without stop in between works too */
    mosquitto_disconnect(sub->mosq);
    client_destroy(sub);
    assert_int_equal(tg_harness_mosquitto_restart(mq), 0);
    assert_int_equal(tg_harness_mosquitto_port(mq), port);
    assert_int_equal(tg_harness_tcp_probe(tg_harness_mosquitto_host(mq), port), 0);

    tg_harness_mosquitto_destroy(mq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_qos1_in_order, teardown),
        cmocka_unit_test_teardown(test_command_line_clients, teardown),
        cmocka_unit_test_teardown(test_restart_keeps_persistent_session, teardown),
    };
    mosquitto_lib_init();
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mosquitto_lib_cleanup();
    return failed;
}
