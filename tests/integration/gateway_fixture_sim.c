/*
 * gateway_fixture_sim.c - the part of the gateway fixture that tests of the simulated fleet
 * share (gateway_fixture.h, "The simulator's fleet"): the open-files limit a fleet of
 * connections needs, `tidegate-sim audit --follow` started before the fleet, the fleet's
 * `tidegate-sim run` waited for, and the audit's JSON report read back.
 */
#include "gateway_fixture.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define AUDIT_FOLLOW_TIMEOUT_MS 30000

int tg_gw_raise_open_files(unsigned long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "gw-fixture: getrlimit: %s\n", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur >= (rlim_t)want)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)want) {
        fprintf(stderr, "gw-fixture: open-files hard limit %llu is below the %lu this test needs\n",
                (unsigned long long)rl.rlim_max, want);
        return -1;
    }
    rl.rlim_cur = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "gw-fixture: setrlimit(%lu): %s\n", want, strerror(errno));
        return -1;
    }
    return 0;
}

static void print_log(const char *what, const char *path)
{
    char *log = path ? tg_harness_read_file(path) : NULL;
    fprintf(stderr, "gw-fixture: %s:\n%s\n", what, log ? log : "(no log)");
    free(log);
}

/* The audit prints "consuming" once it is assigned every partition at the start. */
static bool audit_following(void *ud)
{
    return tg_harness_file_contains(tg_harness_proc_stderr_path(ud), "consuming");
}

struct tg_harness_proc *tg_gw_sim_audit_start(struct tg_gw *gw, const char *ledger,
                                              int timeout_s)
{
    char sim[1024], timeout[16];
    snprintf(sim, sizeof sim, "%s/tidegate-sim", tg_harness_bin_dir());
    snprintf(timeout, sizeof timeout, "%d", timeout_s);
    const char *argv[] = {sim, "audit", "--brokers", tg_gw_bootstrap(gw),
                          "--topic", TG_GW_TOPIC, "--dlq-topic", TG_GW_DLQ_TOPIC,
                          "--ledger", ledger, "--follow", "--json", "--timeout", timeout,
                          NULL};
    struct tg_harness_proc *audit = tg_harness_proc_start(tg_gw_dir(gw), "audit", argv, NULL, 0);
    if (!audit)
        return NULL;
    if (!tg_harness_wait_until(audit_following, audit, AUDIT_FOLLOW_TIMEOUT_MS)) {
        fprintf(stderr, "gw-fixture: the audit did not start consuming within %d ms\n",
                AUDIT_FOLLOW_TIMEOUT_MS);
        print_log("audit log", tg_harness_proc_stderr_path(audit));
        tg_harness_proc_destroy(audit);
        return NULL;
    }
    return audit;
}

int tg_gw_sim_run_wait(struct tg_harness_proc *run, int timeout_ms, char **log)
{
    if (log)
        *log = NULL;
    int status = 0;
    bool exited = tg_harness_proc_wait(run, timeout_ms, &status) == 0;
    char *text = tg_harness_read_file(tg_harness_proc_stderr_path(run));
    if (!exited || !tg_harness_exited_ok(status)) {
        if (exited)
            fprintf(stderr, "tidegate-sim run failed (status 0x%x):\n%s\n", (unsigned)status,
                    text ? text : "(no log)");
        else
            fprintf(stderr, "tidegate-sim run failed: still running after %d ms:\n%s\n",
                    timeout_ms, text ? text : "(no log)");
        free(text);
        return -1;
    }
    if (log)
        *log = text;
    else
        free(text);
    return 0;
}

long long tg_gw_sim_run_resent(const char *log)
{
    const char *p = log ? strstr(log, "resent ") : NULL;
    return p ? atoll(p + strlen("resent ")) : -1;
}

struct json_t *tg_gw_sim_audit_report(const struct tg_harness_proc *audit, int status)
{
    char *report = tg_harness_read_file(tg_harness_proc_stdout_path(audit));
    fprintf(stderr, "audit (exit %d): %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
            report ? report : "(no report)\n");
    json_t *root = NULL;
    if (report) {
        json_error_t jerr;
        root = json_loads(report, 0, &jerr);
        if (!root)
            fprintf(stderr, "gw-fixture: audit output is not JSON: %s\n", jerr.text);
    }
    if (!root)
        print_log("audit log", tg_harness_proc_stderr_path(audit));
    free(report);
    return root;
}

long long tg_gw_json_int(const struct json_t *obj, const char *key1, const char *key2)
{
    json_t *v = json_object_get(obj, key1);
    if (key2)
        v = json_object_get(v, key2);
    if (!json_is_integer(v)) {
        fprintf(stderr, "gw-fixture: audit JSON: %s%s%s is not an integer\n", key1,
                key2 ? "." : "", key2 ? key2 : "");
        return -1;
    }
    return (long long)json_integer_value(v);
}
