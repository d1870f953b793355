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
#include "ingress_mqtt.h"

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

static void ambiguous_topic_filters_refused(void **state)
{
    (void)state;
    char why[512];
    static const char *const good[] = {"telemetry/+", "site/a/telemetry/+", "+", "telemetry/dev-1"};
    static const char *const bad[] = {"telemetry/#", "#", "telemetry/+/data", "+/telemetry/+",
                                      "telemetry/+/#", "telemetry/a#", ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (tg_ingress_topic_check(good[i], why, sizeof why) != TG_OK)
            fail_msg("%s refused: %s", good[i], why);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tg_ingress_topic_check(bad[i], why, sizeof why) != TG_ERR_CONFIG)
            fail_msg("\"%s\" accepted", bad[i]);

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_pass),
        cmocka_unit_test(empty_journal_path_refused_with_file_line_key),
        cmocka_unit_test(ambiguous_topic_filters_refused),
        cmocka_unit_test(packet_limit_must_hold_a_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
