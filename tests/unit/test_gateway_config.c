/* Unit tests for the gateway's cross-key config checks (gateway/gateway_config.c,
 * tg_gateway_config_check) and the topic filter rule (tg_ingress_topic_check): the values
 * issue 11 found accepted although they fail or lose data at run time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "gateway_config.h"
#include "ingress_topic.h"

/* Loads text as a config file; returns the config and the file's path in path. */
static struct tg_config *load(const char *text, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "/tmp/tg-gwcfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct tg_config *cfg = tg_gateway_config_new();
    assert_non_null(cfg);
    if (tg_config_load_file(cfg, TG_CONFIG_FILE, path) != TG_OK)
        fail_msg("%s", tg_config_error(cfg));
    return cfg;
}

static void defaults_pass(void **state)
{
    (void)state;
    struct tg_config *cfg = tg_gateway_config_new();
    char err[1024];
    assert_int_equal(tg_gateway_config_check(cfg, err, sizeof err), TG_OK);
    assert_string_equal(err, "");
    tg_config_destroy(cfg);
}

static void empty_journal_path_refused_with_file_line_key(void **state)
{
    (void)state;
    char path[64], want[128], err[1024];
    struct tg_config *cfg = load("[journal]\n; empty: SQLite would use a temporary db\npath =\n",
                                 path, sizeof path);
    assert_int_equal(tg_gateway_config_check(cfg, err, sizeof err), TG_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:3: [journal] path: must not be empty", path);
    if (!strstr(err, want))
        fail_msg("expected \"%s\" in \"%s\"", want, err);
    tg_config_destroy(cfg);
    unlink(path);
}

/* Every topic of good passes tg_ingress_topic_check, every one of bad is refused. */
static void expect_topics(const char *const *good, size_t n_good, const char *const *bad,
                          size_t n_bad)
{
    char why[512];
    for (size_t i = 0; i < n_good; i++)
        if (tg_ingress_topic_check(good[i], why, sizeof why) != TG_OK)
            fail_msg("%s refused: %s", good[i], why);
    for (size_t i = 0; i < n_bad; i++)
        if (tg_ingress_topic_check(bad[i], why, sizeof why) != TG_ERR_CONFIG)
            fail_msg("\"%s\" accepted", bad[i]);
}

static void ambiguous_topic_filters_refused(void **state)
{
    (void)state;
    char why[512];
    static const char *const good[] = {"telemetry/+", "site/a/telemetry/+", "+", "telemetry/dev-1"};
    static const char *const bad[] = {"telemetry/#", "#", "telemetry/+/data", "+/telemetry/+",
                                      "telemetry/+/#", "telemetry/a#", "",
                                      /* not MQTT filters: a '+' sharing its level, bytes
                                       * that are not UTF-8 (a lone continuation byte, an
                                       * overlong '/', a surrogate) */
                                      "telemetry/+x", "telemetry/x+", "telemetry/\x80",
                                      "telemetry/\xc0\xaf", "telemetry/\xed\xa0\x80",
                                      /* UTF-8 that libmosquitto refuses in a SUBSCRIBE
                                       * (mosquitto_validate_utf8): control characters (a
                                       * tab, DEL, U+0085) and non-characters (U+FFFF,
                                       * U+FDD0, U+1FFFE). Accepted, the daemon would
                                       * reconnect for ever without ever subscribing. */
                                      "tele\tmetry/+", "telemetry/\x7f/+", "telemetry/\xc2\x85/+",
                                      "telemetry/\xef\xbf\xbf/+", "telemetry/\xef\xb7\x90/+",
                                      "telemetry/\xf0\x9f\xbf\xbe/+"};
    expect_topics(good, sizeof good / sizeof good[0], bad, sizeof bad / sizeof bad[0]);

    /* multi-byte UTF-8 is fine; a filter longer than MQTT's 65,535 bytes is not */
    if (tg_ingress_topic_check("capteurs/\xc3\xa9t\xc3\xa9/+", why, sizeof why) != TG_OK ||
        tg_ingress_topic_check("a/\xf0\x9f\x98\x80/\xef\xbf\xbd/+", why, sizeof why) != TG_OK)
        fail_msg("a UTF-8 filter refused: %s", why);
    static char longest[65537];
    memset(longest, 'a', sizeof longest - 1);
    longest[65535] = '\0';
    assert_int_equal(tg_ingress_topic_check(longest, why, sizeof why), TG_OK);
    longest[65535] = 'a';
    assert_int_equal(tg_ingress_topic_check(longest, why, sizeof why), TG_ERR_CONFIG);

    char path[64], want[128], err[2048];
    struct tg_config *cfg = load("[mqtt]\ntopic = telemetry/#\n", path, sizeof path);
    assert_int_equal(tg_gateway_config_check(cfg, err, sizeof err), TG_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: [mqtt] topic: \"telemetry/#\" makes the device id ambiguous",
             path);
    if (!strstr(err, want))
        fail_msg("expected \"%s\" in \"%s\"", want, err);
    tg_config_destroy(cfg);
    unlink(path);
}

static void packet_limit_must_hold_a_payload(void **state)
{
    (void)state;
    char path[64], want[128], err[1024];
    struct tg_config *cfg = load("[mqtt]\nmax_packet_bytes = 64K\n[validate]\n"
                                 "max_payload_bytes = 64K\n",
                                 path, sizeof path);
    assert_int_equal(tg_gateway_config_check(cfg, err, sizeof err), TG_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: [mqtt] max_packet_bytes: expected at least", path);
    if (!strstr(err, want))
        fail_msg("expected \"%s\" in \"%s\"", want, err);
    tg_config_destroy(cfg);
    unlink(path);
}

/* Expects text (a config file) to load and then fail the check with a line containing
 * "FILE:LINE: [section] key: want"; returns nothing, frees everything. */
static void expect_check_error(const char *text, int line, const char *section, const char *key,
                               const char *want, const char *never)
{
    char path[64], full[512], err[4096];
    struct tg_config *cfg = load(text, path, sizeof path);
    if (tg_gateway_config_check(cfg, err, sizeof err) != TG_ERR_CONFIG)
        fail_msg("accepted: %s", text);
    snprintf(full, sizeof full, "%s:%d: [%s] %s: %s", path, line, section, key, want);
    if (!strstr(err, full))
        fail_msg("expected \"%s\" in \"%s\"", full, err);
    if (never && strstr(err, never))
        fail_msg("\"%s\" shown in \"%s\"", never, err);
    tg_config_destroy(cfg);
    unlink(path);
}

/* A topic written as a shared subscription, "$share/<group>/<filter>" (issue 14's leftover):
 * the daemon subscribes to it as written with any number of connections; it was prefixed a
 * second time with several ("$share/tidegate/$share/mine/telemetry/+"), which matches
 * nothing. A malformed one is refused, and so is a share_group that contradicts its group. */
static void shared_subscription_topics(void **state)
{
    (void)state;
    static const char *const good[] = {"$share/mine/telemetry/+", "$share/g/+",
                                       "$share/g/telemetry/dev-1", "$share/\xc3\xa9/t/+"};
    static const char *const bad[] = {"$share//telemetry/+",    "$share/g",
                                      "$share/g/",              "$share/",
                                      "$share/g+/telemetry/+",  "$share/g#/telemetry/+",
                                      "$share/g/telemetry/#",   "$share/g/+/x",
                                      "$share/g/$share/h/telemetry/+"};
    expect_topics(good, sizeof good / sizeof good[0], bad, sizeof bad / sizeof bad[0]);

    const char *group;
    size_t group_len;
    assert_string_equal(tg_ingress_topic_filter("$share/mine/telemetry/+", &group, &group_len),
                        "telemetry/+");
    assert_int_equal(group_len, 4);
    assert_memory_equal(group, "mine", 4);
    assert_string_equal(tg_ingress_topic_filter("telemetry/+", &group, &group_len),
                        "telemetry/+");
    assert_null(group);
    assert_int_equal(group_len, 0);

    static const struct {
        const char *topic;
        int connections;
        const char *want;
    } subs[] = {
        {"telemetry/+", 1, "telemetry/+"},
        {"telemetry/+", 3, "$share/tg/telemetry/+"},
        {"$share/mine/telemetry/+", 1, "$share/mine/telemetry/+"},
        {"$share/mine/telemetry/+", 3, "$share/mine/telemetry/+"},
    };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char *sub = tg_ingress_topic_subscription(subs[i].topic, subs[i].connections, "tg");
        assert_non_null(sub);
        if (strcmp(sub, subs[i].want) != 0)
            fail_msg("%s with %d connections: subscribed to \"%s\", expected \"%s\"",
                     subs[i].topic, subs[i].connections, sub, subs[i].want);
        free(sub);
    }

    /* the config check: share_group is used, and checked, only with several connections
     * and a topic without a group of its own */
    static const char *const fine[] = {
        "[mqtt]\nconnections = 4\ntopic = $share/mine/telemetry/+\n",
        "[mqtt]\nconnections = 4\ntopic = $share/mine/telemetry/+\nshare_group = mine\n",
        "[mqtt]\nconnections = 1\ntopic = $share/mine/telemetry/+\nshare_group = other\n",
        "[mqtt]\nconnections = 1\nshare_group = a/b\n",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        char path[64], err[2048];
        struct tg_config *cfg = load(fine[i], path, sizeof path);
        if (tg_gateway_config_check(cfg, err, sizeof err) != TG_OK)
            fail_msg("refused: %s: %s", fine[i], err);
        tg_config_destroy(cfg);
        unlink(path);
    }
    expect_check_error("[mqtt]\nconnections = 4\ntopic = $share/mine/telemetry/+\n"
                       "share_group = other\n",
                       4, "mqtt", "share_group",
                       "\"other\" contradicts the group \"mine\" of [mqtt] topic", NULL);
    expect_check_error("[mqtt]\nconnections = 2\nshare_group = a/b\n", 3, "mqtt", "share_group",
                       "\"a/b\" cannot name a shared subscription group", NULL);
    expect_check_error("[mqtt]\ntopic = $share//telemetry/+\n", 2, "mqtt", "topic",
                       "\"$share//telemetry/+\" is not a valid shared subscription", NULL);
}

/* Issue 11: a [kafka.rdkafka] line could switch a guarantee off, and acks=0 passed
 * --check-config. Every spelling of each refused property is refused, with file:line:key and
 * without its value; what does not touch a guarantee still passes. */
static void rdkafka_guarantee_switches_refused(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"acks", "0"},
        {"acks", "1"},
        {"request.required.acks", "1"},
        {"enable.idempotence", "false"},
        {"enable.idempotence", "0"},
        {"message.timeout.ms", "1500"},
        {"delivery.timeout.ms", "300000"},
        {"retries", "0"},
        {"message.send.max.retries", "0"},
        {"max.in.flight", "6"},
        {"max.in.flight.requests.per.connection", "100"},
        {"queuing.strategy", "lifo"},
        {"delivery.report.only.error", "true"},
        {"transactional.id", "gw-tx"},
        {"partitioner", "random"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "[kafka.rdkafka]\nlinger.ms = 5\n%s = %s\n", bad[i][0],
                 bad[i][1]);
        expect_check_error(text, 3, "kafka.rdkafka", bad[i][0], "must be ", NULL);
    }
    char path[64], err[4096];
    struct tg_config *cfg = load("[kafka.rdkafka]\nacks = all\nrequest.required.acks = -1\n"
                                 "enable.idempotence = true\nmessage.timeout.ms = 0\n"
                                 "queue.buffering.max.ms = 5\nenable.gapless.guarantee = true\n"
                                 "partitioner = murmur2\nmax.in.flight = 5\nretries = 3\n"
                                 "sasl.mechanism = PLAIN\nsasl.password = hunter2\n",
                                 path, sizeof path);
    if (tg_gateway_config_check(cfg, err, sizeof err) != TG_OK)
        fail_msg("refused: %s", err);
    tg_config_destroy(cfg);
    unlink(path);
}

/* A property librdkafka refuses is named with its file and line, but neither its value nor
 * librdkafka's quote of it is shown: the misspelt sasl.passwrd of issue 11. */
static void rdkafka_errors_never_show_values(void **state)
{
    (void)state;
    expect_check_error("[kafka.rdkafka]\nsasl.passwrd = hunter2\n", 2, "kafka.rdkafka",
                       "sasl.passwrd", "librdkafka refuses it: No such configuration property",
                       "hunter2");
    expect_check_error("[kafka.rdkafka]\n\nsasl.jaas.config = hunter2\n", 3, "kafka.rdkafka",
                       "sasl.jaas.config", "librdkafka refuses it", "hunter2");
    expect_check_error("[kafka.rdkafka]\nacks = hunter2\n", 2, "kafka.rdkafka", "acks",
                       "librdkafka refuses it", "hunter2");
    /* a PEM line ending in "=" reads as a pair; its "name" is not shown either */
    expect_check_error("[kafka.rdkafka]\n"
                       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7MIIEvQIBADA=\n",
                       2, "kafka.rdkafka", "(a name too long to be a property)",
                       "librdkafka refuses it", "MIIE");
}

/* Issue 11: values --check-config accepted although they fail or make no sense at run time. */
static void run_time_failures_refused(void **state)
{
    (void)state;
    expect_check_error("[metrics]\nlisten = garbage\n", 2, "metrics", "listen",
                       "metrics listen garbage: expected HOST:PORT", NULL);
    expect_check_error("[metrics]\nlisten = 127.0.0.1:99999\n", 2, "metrics", "listen",
                       "metrics listen 127.0.0.1:99999: port must be a number", NULL);
    expect_check_error("[kafka]\nbrokers =\n", 2, "kafka", "brokers", "expected host:port",
                       NULL);
    expect_check_error("[kafka]\nbrokers = a:9092,,b:9092\n", 2, "kafka", "brokers",
                       "expected host:port", NULL);
    expect_check_error("[kafka]\ntopic = t\ndlq_topic = t\n", 3, "kafka", "dlq_topic",
                       "must differ from [kafka] topic", NULL);
    expect_check_error("[kafka]\ndlq_topic =\n", 2, "kafka", "dlq_topic",
                       "expected a topic name", NULL);

    /* qos 0 is a schema bound: refused at load, with file, line and key */
    char path[64] = "/tmp/tg-gwcfg-XXXXXX", want[128];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "[mqtt]\nqos = 0\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    struct tg_config *cfg = tg_gateway_config_new();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, path), TG_ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: [mqtt] qos: expected an integer between 1 and 2", path);
    if (!strstr(tg_config_error(cfg), want))
        fail_msg("expected \"%s\" in \"%s\"", want, tg_config_error(cfg));
    tg_config_destroy(cfg);
    unlink(path);

    /* empty metrics.listen still means "off" */
    cfg = load("[metrics]\nlisten =\n", path, sizeof path);
    char err[1024];
    if (tg_gateway_config_check(cfg, err, sizeof err) != TG_OK)
        fail_msg("refused: %s", err);
    tg_config_destroy(cfg);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_pass),
        cmocka_unit_test(empty_journal_path_refused_with_file_line_key),
        cmocka_unit_test(ambiguous_topic_filters_refused),
        cmocka_unit_test(shared_subscription_topics),
        cmocka_unit_test(packet_limit_must_hold_a_payload),
        cmocka_unit_test(rdkafka_guarantee_switches_refused),
        cmocka_unit_test(rdkafka_errors_never_show_values),
        cmocka_unit_test(run_time_failures_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
