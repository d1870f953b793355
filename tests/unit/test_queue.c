/* Unit tests for gateway/queue.c: order, wrap-around, full and too-large, and a two-thread
 * run that checks every message arrives once, in order, intact, with sleeping consumers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "queue.h"

static void push_peek_pop(void **state)
{
    (void)state;
    struct tg_queue *q = tg_queue_new(100); /* rounded up to 4 KiB */
    assert_non_null(q);
    assert_int_equal(tg_queue_capacity(q), 4096);
    struct tg_qmsg m;
    assert_false(tg_queue_peek(q, &m));
    assert_int_equal(tg_queue_push(q, "telemetry/a", 11, (const uint8_t *)"xyz", 3, 42), TG_OK);
    assert_int_equal(tg_queue_push(q, "telemetry/b", 11, NULL, 0, 43), TG_OK);
    assert_int_equal(tg_queue_messages(q), 2);
    assert_true(tg_queue_peek(q, &m));
    assert_string_equal(m.topic, "telemetry/a");
    assert_int_equal(m.payload_len, 3);
    assert_memory_equal(m.payload, "xyz", 3);
    assert_int_equal(m.rx_ms, 42);
    tg_queue_pop(q);
    assert_true(tg_queue_peek(q, &m));
    assert_string_equal(m.topic, "telemetry/b");
    assert_int_equal(m.payload_len, 0);
    tg_queue_pop(q);
    assert_false(tg_queue_peek(q, &m));
    assert_int_equal(tg_queue_used_bytes(q), 0);
    tg_queue_destroy(q);
    tg_queue_destroy(NULL);
}

static void full_and_too_large(void **state)
{
    (void)state;
    struct tg_queue *q = tg_queue_new(4096);
    uint8_t big[3000] = {0};
    assert_int_equal(tg_queue_push(q, "t", 1, big, sizeof big, 0), TG_ERR_TOO_LARGE);
    uint8_t p[200] = {0};
    int n = 0;
    while (tg_queue_push(q, "t", 1, p, sizeof p, n) == TG_OK)
        n++;
    assert_int_equal(n, 4096 / (int)tg_queue_entry_bytes(1, 200));
    assert_true(tg_queue_free_bytes(q) < tg_queue_entry_bytes(1, 200));
    struct tg_qmsg m;
    assert_true(tg_queue_peek(q, &m));
    tg_queue_pop(q); /* room again */
    assert_int_equal(tg_queue_push(q, "t", 1, p, sizeof p, 99), TG_OK);
    tg_queue_destroy(q);
}

static void wrap_around(void **state)
{
    (void)state;
    struct tg_queue *q = tg_queue_new(4096);
    /* Sizes chosen so entries end at every 8-byte offset near the ring's end, including the
     * ones that leave less room than a header. */
    for (uint32_t i = 0; i < 5000; i++) {
        char topic[32];
        int tl = snprintf(topic, sizeof topic, "telemetry/d%u", i);
        uint8_t payload[300];
        size_t pl = (i * 37) % 300;
        for (size_t k = 0; k < pl; k++)
            payload[k] = (uint8_t)(i + k);
        assert_int_equal(tg_queue_push(q, topic, (size_t)tl, payload, pl, i), TG_OK);
        struct tg_qmsg m;
        assert_true(tg_queue_peek(q, &m));
        assert_string_equal(m.topic, topic);
        assert_int_equal(m.payload_len, pl);
        assert_memory_equal(m.payload, payload, pl);
        assert_int_equal(m.rx_ms, i);
        tg_queue_pop(q);
    }
    tg_queue_destroy(q);
}

#define STRESS_N 300000

static void *producer(void *arg)
{
    struct tg_queue *q = arg;
    for (uint32_t i = 0; i < STRESS_N;) {
        uint8_t payload[64];
        size_t pl = 4 + i % 60;
        memcpy(payload, &i, 4);
        for (size_t k = 4; k < pl; k++)
            payload[k] = (uint8_t)(i ^ k);
        if (tg_queue_push(q, "telemetry/x", 11, payload, pl, i) == TG_OK)
            i++;
        else
            sched_yield(); /* full: the real ingress pauses reading here */
    }
    return NULL;
}

static void two_threads(void **state)
{
    (void)state;
    struct tg_queue *q = tg_queue_new(8192);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer, q), 0);
    uint32_t expect = 0;
    unsigned sleeps = 0;
    while (expect < STRESS_N) {
        struct tg_qmsg m;
        if (!tg_queue_peek(q, &m)) {
            if (tg_queue_prepare_wait(q)) {
                struct pollfd pfd = {.fd = tg_queue_fd(q), .events = POLLIN};
                /* A lost wake-up would stall here: the timeout turns it into a failure. */
                int r = poll(&pfd, 1, 5000);
                assert_int_equal(r, 1);
                tg_queue_ack_wakeup(q);
                sleeps++;
            }
            continue;
        }
        uint32_t got;
        memcpy(&got, m.payload, 4);
        assert_int_equal(got, expect);
        assert_int_equal(m.payload_len, 4 + expect % 60);
        for (size_t k = 4; k < m.payload_len; k++)
            assert_int_equal(m.payload[k], (uint8_t)(expect ^ k));
        tg_queue_pop(q);
        expect++;
    }
    pthread_join(th, NULL);
    assert_int_equal(tg_queue_messages(q), 0);
    print_message("consumer slept %u times\n", sleeps);
    tg_queue_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(push_peek_pop),
        cmocka_unit_test(full_and_too_large),
        cmocka_unit_test(wrap_around),
        cmocka_unit_test(two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
