/*
 * test_provision_e2e.c - devices made by scripts/tidegate-provision reach Kafka through the
 * gateway with their signatures checked (issue 13): the node config and key it writes, run by
 * the real tidegate-node, against the gateway's keys file it writes, with
 * validate.require_signature on. After `--rotate` (and SIGHUP to the gateway) a node still
 * holding the old key is dead-lettered as bad_signature, and the rotated node is delivered.
 * (test_provision.sh covers the Mosquitto password file and ACL with the real broker.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_fixture.h"

#ifndef TG_SOURCE_DIR
#error "TG_SOURCE_DIR must name the source tree"
#endif
#define WAIT_MS 60000

static void provision(const char *etc, const char *id, bool rotate)
{
    char nodes[600], state[700];
    snprintf(nodes, sizeof nodes, "%s/tidegate/nodes/%s", etc, id);
    snprintf(state, sizeof state, "%s/state-%s", etc, id);
    const char *argv[] = {"sh", TG_SOURCE_DIR "/scripts/tidegate-provision", "--etc", etc,
                          "--host", "127.0.0.1", "--sensor", "sim", "--node-etc", nodes,
                          "--node-state-dir", state, rotate ? "--rotate" : id,
                          rotate ? id : NULL, NULL};
    char *out = NULL;
    int st = tg_harness_run(argv, NULL, 0, &out, 30000);
    if (!tg_harness_exited_ok(st))
        fail_msg("tidegate-provision %s: %s", id, out ? out : "");
    free(out);
}

/* tidegate-node with a provisioned config, on the fixture's broker, sampling every 100 ms. */
static struct tg_harness_proc *start_node(struct tg_gw *gw, const char *name, const char *ini,
                                          const char *key_override)
{
    char bin[1024], port[64], key[700];
    snprintf(bin, sizeof bin, "%s/tidegate-node", tg_harness_bin_dir());
    snprintf(port, sizeof port, "mqtt.port=%d", tg_harness_mosquitto_port(tg_gw_mosquitto(gw)));
    snprintf(key, sizeof key, "node.hmac_key_file=%s", key_override ? key_override : "");
    const char *argv[] = {bin, "-c", ini, "--set", port, "--set", "sensor.air.period_ms=100",
                          key_override ? "--set" : NULL, key, NULL};
    struct tg_harness_proc *p = tg_harness_proc_start(tg_gw_dir(gw), name, argv, NULL, 0);
    assert_non_null(p);
    return p;
}

struct reload_wait {
    struct tg_gw *gw;
    int before;
};

static bool keys_reloaded(void *ud)
{
    struct reload_wait *rw = ud;
    return tg_gw_log_count(rw->gw, "reloaded 2 device keys") > rw->before;
}

static void provisioned_nodes_reach_kafka_signed(void **state)
{
    (void)state;
    char *dir = tg_harness_tmpdir_new("provision-e2e");
    assert_non_null(dir);
    char etc[512], keys[600], set_keys[700];
    snprintf(etc, sizeof etc, "%s/etc", dir);
    snprintf(keys, sizeof keys, "%s/tidegate/device-keys", etc);
    provision(etc, "node-a", false);
    provision(etc, "node-b", false);

    snprintf(set_keys, sizeof set_keys, "validate.keys_file=%s", keys);
    const char *sets[] = {set_keys, "validate.require_signature=true", NULL};
    const struct tg_gw_opts opts = {.sets = sets};
    struct tg_gw *gw = tg_gw_new(&opts);
    assert_non_null(gw);

    /* node-b's old key kept aside, then node-b rotated: the gateway must learn the new key
     * on SIGHUP, and the old one must stop verifying. */
    char old_key[700], cmd[2048], ini_a[700], ini_b[700];
    snprintf(old_key, sizeof old_key, "%s/old-node-b.key", dir);
    snprintf(cmd, sizeof cmd, "cp -p '%s/tidegate/nodes/node-b/node.key' '%s'", etc, old_key);
    assert_int_equal(system(cmd), 0);
    provision(etc, "node-b", true);
    struct reload_wait rw = {.gw = gw, .before = tg_gw_log_count(gw, "reloaded 2 device keys")};
    assert_int_equal(tg_harness_proc_signal(tg_gw_tidegate_proc(gw), SIGHUP), 0);
    assert_true(tg_harness_wait_until(keys_reloaded, &rw, WAIT_MS));

    snprintf(ini_a, sizeof ini_a, "%s/tidegate/nodes/node-a/tidegate-node.ini", etc);
    snprintf(ini_b, sizeof ini_b, "%s/tidegate/nodes/node-b/tidegate-node.ini", etc);
    struct tg_harness_proc *a = start_node(gw, "node-a", ini_a, NULL);
    struct tg_harness_proc *stale = start_node(gw, "node-b-stale", ini_b, old_key);

    /* node-a's readings verify and are delivered; the stale key's are dead-lettered. */
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE, 10,
                                  WAIT_MS));
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_invalid_total",
                                  "reason=\"bad_signature\"", TG_GW_GE, 5, WAIT_MS));
    assert_true(tg_gw_metric_is(gw, "tidegate_messages_invalid_total", "reason=\"unsigned\"",
                                TG_GW_EQ, 0));
    assert_int_equal(tg_harness_proc_stop(stale, 10000) >= 0, 1);

    /* The rotated node-b, with its new key, is delivered too. */
    double delivered = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    double bad = tg_gw_metric(gw, "tidegate_messages_invalid_total", "reason=\"bad_signature\"");
    assert_int_equal(tg_harness_proc_stop(a, 10000) >= 0, 1);
    double after_a = tg_gw_metric(gw, "tidegate_messages_delivered_total", NULL);
    struct tg_harness_proc *b = start_node(gw, "node-b", ini_b, NULL);
    assert_true(tg_gw_wait_metric(gw, "tidegate_messages_delivered_total", NULL, TG_GW_GE,
                                  after_a + 10, WAIT_MS));
    fprintf(stderr, "delivered %g with node-a and the stale node-b, %g dead-lettered as "
            "bad_signature; the rotated node-b delivered too\n", delivered, bad);
    assert_int_equal(tg_harness_proc_stop(b, 10000) >= 0, 1);

    tg_harness_proc_destroy(a);
    tg_harness_proc_destroy(stale);
    tg_harness_proc_destroy(b);
    tg_gw_destroy(gw);
    tg_harness_tmpdir_done(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(provisioned_nodes_reach_kafka_signed, tg_gw_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
