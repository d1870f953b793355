/* The firmware core's allocation contract (node.h): after tg_node_init() nothing allocates.
 * This program is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc and with
 * mbedtls's static libcrypto archive, so every allocator call made by the core, the encoder
 * and mbedtls goes through the counters of test_alloc_count.h (the test checks that mbedtls's allocations
 * are seen). libcbor is a shared library here; the core uses only its encoding functions,
 * which write into the caller's buffer. A node then runs through everything it does:
 * sampling, signing, publishing, refusals, PUBACKs, overflow, disconnects and reconnects. */
#include <mbedtls/md.h>

#include "test_node_fake.h"

#include "test_alloc_count.h"

static void wrapper_sees_mbedtls(void **state)
{
    (void)state;
    unsigned long before = allocations;
    uint8_t mac[32];
    assert_int_equal(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
                                     (const uint8_t *)"k", 1, (const uint8_t *)"m", 1, mac),
                     0);
    /* mbedtls_md_hmac allocates its contexts: why sign.c does not use it */
    assert_true(allocations > before);
}

static void node_never_allocates(void **state)
{
    (void)state;
    static struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    static const uint8_t key[32] = {1, 2, 3};
    static struct fake_sensor a, b;
    unsigned long before = allocations;

    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){
                                                    .device_id = "node-01",
                                                    .outbox_slots = 8,
                                                    .hmac_key = key,
                                                    .hmac_key_len = sizeof key,
                                                    .backoff_min_ms = 50,
                                                    .backoff_max_ms = 400});
    fake_sensor_setup(&a);
    fake_sensor_setup(&b);
    b.n = 3;
    b.names[1] = "humidity_pct";
    b.values[1] = 40.25;
    b.names[2] = "pressure_pa";
    b.values[2] = 101325;
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &a, 1, 100), 0);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &b, 2, 70), 0);
    assert_int_equal(tg_node_start(node), 0);

    for (int step = 0; step < 5000; step++) {
        switch (step % 500) {
        case 10:
            tg_node_transport_up(node);
            break;
        case 200:
            fk.refuse_publish = true;
            break;
        case 260:
            fk.refuse_publish = false;
            break;
        case 300:
            tg_node_transport_down(node);
            fk.connect_rc = -1;
            break;
        case 420:
            fk.connect_rc = 0;
            break;
        case 450:
            tg_node_transport_up(node);
            break;
        }
        if (step % 7 == 0 && fk.n_pubs > 0) {
            tg_node_transport_acked(node, fk.pubs[fk.n_pubs - 1].token);
            fk.n_pubs = 0;
        }
        b.read_fails = step % 41 == 0;
        tg_node_poll(node);
        fake_advance(&fk, 10);
        fk.n_events = 0;
    }
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_true(stats.taken > 500);
    assert_true(stats.released > 50);
    assert_true(stats.dropped > 0);
    assert_true(stats.connects > 10);
    assert_true(stats.sample_errors > 0);
    assert_int_equal(allocations, before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wrapper_sees_mbedtls),
        cmocka_unit_test(node_never_allocates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
