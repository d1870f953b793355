/*
 * test_worker_config.c - tidegate-worker's command line and configuration as an operator meets
 * them: the shipped example passes --check-config, every kind of mistake exits 1 before
 * anything starts with file:line, section and key in the message, secrets are redacted,
 * `replay` takes the same worker.ini, and a state topic with fewer partitions than the input
 * topic is refused at start.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#ifndef TG_SOURCE_DIR
#error "TG_SOURCE_DIR must be defined"
#endif

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tg_harness_tmpdir_new("worker-config");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_harness_tmpdir_done(dir);
    dir = NULL;
    return 0;
}

static const char *worker_bin(void)
{
    static char bin[512];
    snprintf(bin, sizeof bin, "%s/tidegate-worker", tg_harness_bin_dir());
    return bin;
}

/* Runs tidegate-worker with args (NULL-terminated, after the program); returns the exit
 * status, and its stdout and stderr (malloc'd) in *out and *err. */
static int run_worker(const char *const args[], char **out, char **err)
{
    static int seq;
    char name[32];
    snprintf(name, sizeof name, "run%d", seq++);
    const char *argv[16] = {worker_bin()};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    struct tg_harness_proc *p = tg_harness_proc_start(dir, name, argv, NULL, 0);
    assert_non_null(p);
    int status;
    assert_int_equal(tg_harness_proc_wait(p, 60000, &status), 0);
    *out = tg_harness_read_file(tg_harness_proc_stdout_path(p));
    *err = tg_harness_read_file(tg_harness_proc_stderr_path(p));
    assert_non_null(*out);
    assert_non_null(*err);
    tg_harness_proc_destroy(p);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static char *write_ini(const char *name, const char *text)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    assert_non_null(path);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void test_example_config_checks(void **state)
{
    (void)state;
    const char *args[] = {"-c", TG_SOURCE_DIR "/config/tidegate-worker.ini", "--check-config",
                          NULL};
    char *out, *err;
    assert_int_equal(run_worker(args, &out, &err), 0);
    assert_non_null(strstr(out, "group_id = tidegate-anomaly"));
    assert_non_null(strstr(out, "state_topic = telemetry.worker.state"));
    assert_non_null(strstr(out, "commit_interval_ms = 100"));
    assert_non_null(strstr(out, "[detect]")); /* the engine's sections are part of the schema */
    free(out);
    free(err);
}

static void test_mistakes_name_file_line_and_key(void **state)
{
    (void)state;
    struct {
        const char *ini;
        const char *expect;
    } cases[] = {
        {"[kafka]\ncommit_interval_ms = soon\n", "bad.ini:2: [kafka] commit_interval_ms"},
        {"[kafka]\ncomit_interval_ms = 100\n", "commit_interval_ms"}, /* did you mean */
        {"[worker]\ninstance_id = two words\n", "bad.ini:2: [worker] instance_id"},
        {"[kafka]\nlinger_ms = 200\n", "bad.ini:2: [kafka] linger_ms: expected less than"},
        {"[kafka]\nstate_topic = telemetry\n", "[kafka] state_topic: \"telemetry\" is also"},
        {"[detect]\nlevel_window = 1\n", "bad.ini:2: [detect] level_window"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_ini("bad.ini", cases[i].ini);
        const char *args[] = {"-c", path, "--check-config", NULL};
        char *out, *err;
        assert_int_equal(run_worker(args, &out, &err), 1);
        if (!strstr(err, cases[i].expect))
            fail_msg("case %zu: expected \"%s\" in:\n%s", i, cases[i].expect, err);
        free(out);
        free(err);
        free(path);
    }
    /* --set is named as the origin. */
    char *path = write_ini("ok.ini", "[worker]\ninstance_id = w1\n");
    const char *args[] = {"-c", path, "--set", "kafka.session_timeout_ms=1", NULL};
    char *out, *err;
    assert_int_equal(run_worker(args, &out, &err), 1);
    assert_non_null(strstr(err, "--set kafka.session_timeout_ms=1"));
    free(out);
    free(err);
    free(path);
}

static void test_secrets_are_redacted(void **state)
{
    (void)state;
    char *path = write_ini("secret.ini", "[worker]\ninstance_id = w1\n[kafka.rdkafka]\n"
                                         "sasl.username = alice\nsasl.password = hunter2\n");
    const char *args[] = {"-c", path, "--check-config", NULL};
    char *out, *err;
    assert_int_equal(run_worker(args, &out, &err), 0);
    assert_non_null(strstr(out, "sasl.username = alice"));
    assert_null(strstr(out, "hunter2"));
    free(out);
    free(err);
    free(path);

    /* issue 11: an inline PEM and an OAUTHBEARER config were printed */
    path = write_ini("pem.ini", "[worker]\ninstance_id = w1\n[kafka.rdkafka]\n"
                                "ssl.key.pem = -----BEGIN PRIVATE KEY-----\n"
                                "sasl.oauthbearer.config = scope=x secret=oauthsecret\n");
    const char *args2[] = {"-c", path, "--check-config", NULL};
    assert_int_equal(run_worker(args2, &out, &err), 0);
    assert_null(strstr(out, "BEGIN"));
    assert_null(strstr(out, "oauthsecret"));
    free(out);
    free(err);
    free(path);

    /* ... and a property librdkafka refuses at start was echoed with its value */
    path = write_ini("typo.ini", "[worker]\ninstance_id = w1\n[kafka]\nbrokers = 127.0.0.1:1\n"
                                 "[metrics]\nlisten =\n[kafka.rdkafka]\nsasl.passwrd = hunter2\n");
    const char *args3[] = {"-c", path, NULL};
    assert_int_equal(run_worker(args3, &out, &err), 1);
    assert_non_null(strstr(err, "typo.ini:8: [kafka.rdkafka] kafka property sasl.passwrd"));
    assert_null(strstr(err, "hunter2"));
    free(out);
    free(err);
    free(path);
}

/* `tidegate-worker replay` is dispatched to the engine's replay and takes the whole worker.ini. */
static void test_replay_takes_the_worker_config(void **state)
{
    (void)state;
    char *csv = write_ini("series.csv", "timestamp,value\n2026-01-01 00:00:00,1\n"
                                        "2026-01-01 00:00:01,1.5\n");
    const char *args[] = {"replay", "--csv", csv, "-c",
                          TG_SOURCE_DIR "/config/tidegate-worker.ini", NULL};
    char *out, *err;
    assert_int_equal(run_worker(args, &out, &err), 0);
    assert_non_null(strstr(out, "timestamp,value,anomaly_score"));
    assert_non_null(strstr(out, "2026-01-01 00:00:01,1.5,"));
    free(out);
    free(err);
    free(csv);
}

static void test_state_topic_too_small_is_refused(void **state)
{
    (void)state;
    const char *dk_args[] = {"--brokers", "1", "--topic", "telemetry:6", "--topic", "small.state:2",
                             NULL};
    struct tg_harness_devkafka *dk = tg_harness_devkafka_start(dk_args);
    assert_non_null(dk);
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[worker]\ninstance_id = w1\n[kafka]\nbrokers = %s\nstate_topic = small.state\n"
             "[metrics]\nlisten =\n",
             tg_harness_devkafka_bootstrap(dk));
    char *path = write_ini("small.ini", ini);
    const char *args[] = {"-c", path, NULL};
    char *out, *err;
    assert_int_equal(run_worker(args, &out, &err), 1);
    assert_non_null(strstr(err, "topic small.state has 2 partitions, fewer than the 6 of "
                                "telemetry"));
    free(out);
    free(err);
    free(path);
    tg_harness_devkafka_destroy(dk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_config_checks),
        cmocka_unit_test(test_mistakes_name_file_line_and_key),
        cmocka_unit_test(test_secrets_are_redacted),
        cmocka_unit_test(test_replay_takes_the_worker_config),
        cmocka_unit_test(test_state_topic_too_small_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
