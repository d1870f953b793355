/*
 * test_sim_faults.c - the simulator's fault choices (sim/faults.c), seeded streams
 * (sim/sim_rand.h) and timer queue (sim/timerq.c): every malformed payload is rejected by the
 * gateway's own decoder, fault fractions come out right for a seed, skew stays inside what
 * the gateway accepts, and the queue hands devices out in time order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "faults.h"
#include "fleet.h"
#include "sim_rand.h"
#include "timerq.h"

#define NOW_MS INT64_C(1763712000000)

static void test_malformed_rejected_by_decoder(void **unused)
{
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    /* A real native payload for the truncation case, checked to decode first. */
    static const uint8_t valid[] = {
        0xa4, 0x63, 's', 'e', 'q', 0x05, 0x64, 'b', 'o', 'o', 't', 0x01, 0x62, 't', 's',
        0x1b, 0x00, 0x00, 0x01, 0x9a, 0xa5, 0x3c, 0x4c, 0x00, 0x61, 'm', 0xa1, 0x61, 'x', 0x01,
    };
    struct tg_decoded out;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_AUTO, "sim-00001", valid, sizeof valid,
                                       NOW_MS, &out),
                     TG_OK);
    uint64_t rng = tg_sim_stream_seed(3, 0, TG_SIM_STREAM_FAULTS);
    int kinds[TG_MALFORMED_KINDS] = {0};
    for (int i = 0; i < 4000; i++) {
        uint8_t buf[TG_FAULT_MALFORMED_MAX];
        enum tg_malformed_kind kind;
        size_t n = tg_fault_malformed(&rng, i % 2 ? valid : NULL, i % 2 ? sizeof valid : 0,
                                      NOW_MS, buf, sizeof buf, &kind);
        assert_true(n >= 1 && n < sizeof buf);
        kinds[kind]++;
        tg_err err = tg_decoder_decode(dec, TG_FORMAT_AUTO, "sim-00001", buf, n, NOW_MS, &out);
        if (err == TG_OK)
            fail_msg("malformed payload %d (%s, %zu bytes) decoded", i,
                     tg_malformed_kind_name(kind), n);
        assert_true(err == TG_ERR_MALFORMED || err == TG_ERR_WRONG_TYPE ||
                    err == TG_ERR_UNKNOWN_FORMAT || err == TG_ERR_MISSING_FIELD);
    }
    for (int k = 0; k < TG_MALFORMED_KINDS; k++)
        assert_true(kinds[k] > 800); /* each kind about a quarter */
    tg_decoder_destroy(dec);
}

static void test_malformed_deterministic(void **unused)
{
    uint64_t a = 77, b = 77;
    for (int i = 0; i < 100; i++) {
        uint8_t x[TG_FAULT_MALFORMED_MAX], y[TG_FAULT_MALFORMED_MAX];
        enum tg_malformed_kind kx, ky;
        size_t nx = tg_fault_malformed(&a, NULL, 0, NOW_MS, x, sizeof x, &kx);
        size_t ny = tg_fault_malformed(&b, NULL, 0, NOW_MS, y, sizeof y, &ky);
        assert_int_equal(kx, ky);
        assert_int_equal(nx, ny);
        assert_memory_equal(x, y, nx);
    }
}

/* The fleet's per-reading fault decisions: the fraction drawn is the fraction asked for. */
static void test_fault_fractions(void **unused)
{
    const double asked[] = {0.001, 0.01, 0.05, 0.2};
    for (size_t a = 0; a < sizeof asked / sizeof asked[0]; a++) {
        int hits = 0;
        const int n = 200000;
        for (int dev = 0; dev < 100; dev++) {
            uint64_t rng = tg_sim_stream_seed(9, (uint64_t)dev, TG_SIM_STREAM_FAULTS);
            for (int i = 0; i < n / 100; i++)
                hits += tg_sim_rand_chance(&rng, asked[a]);
        }
        double got = (double)hits / n;
        assert_true(got > asked[a] * 0.85 && got < asked[a] * 1.15);
    }
    /* Skewed devices as the fleet picks them: one draw per device from its fleet stream. */
    int skewed = 0;
    for (uint64_t i = 0; i < 10000; i++) {
        uint64_t pick = tg_sim_stream_seed(1, i, TG_SIM_STREAM_FLEET);
        skewed += tg_sim_rand_unit(&pick) < 0.1;
    }
    assert_true(skewed > 900 && skewed < 1100);
}

static void test_streams_independent(void **unused)
{
    uint64_t s1 = tg_sim_stream_seed(1, 0, TG_SIM_STREAM_SENSOR);
    assert_int_equal(s1, tg_sim_stream_seed(1, 0, TG_SIM_STREAM_SENSOR));
    assert_true(s1 != tg_sim_stream_seed(1, 1, TG_SIM_STREAM_SENSOR));
    assert_true(s1 != tg_sim_stream_seed(1, 0, TG_SIM_STREAM_ANOMALY));
    assert_true(s1 != tg_sim_stream_seed(2, 0, TG_SIM_STREAM_SENSOR));
}

/* Skew starts 10..240 s off and stays within 240 s however many steps it takes, which keeps
 * it inside the gateway's default validate.max_skew_ms (300 s ahead). */
static void test_skew_band(void **unused)
{
    uint64_t rng = 123;
    for (int dev = 0; dev < 200; dev++) {
        int64_t initial = tg_fault_skew_offset_ms(&rng);
        int64_t mag = initial < 0 ? -initial : initial;
        assert_true(mag >= TG_FAULT_SKEW_MIN_MS && mag <= TG_FAULT_SKEW_MAX_MS);
        int64_t off = initial;
        int backwards = 0;
        for (int step = 0; step < 200; step++) {
            int64_t s = tg_fault_skew_step_ms(&rng);
            assert_true(s >= TG_FAULT_STEP_MIN_MS && s <= TG_FAULT_STEP_MAX_MS);
            int64_t next = tg_fault_skew_after_step(off, initial, s);
            backwards += next < off;
            off = next;
            int64_t m = off < 0 ? -off : off;
            assert_true(m <= TG_FAULT_SKEW_MAX_MS);
        }
        assert_true(backwards > 100); /* mostly steps back: out-of-order timestamps */
    }
}

static void test_outbox_slots(void **unused)
{
    assert_int_equal(tg_sim_outbox_slots(1.0), 30);
    assert_int_equal(tg_sim_outbox_slots(0.01), 8);
    assert_int_equal(tg_sim_outbox_slots(100.0), 64);
}

static void test_timerq_order(void **unused)
{
    const uint32_t n = 1000;
    struct tg_timerq *q = tg_timerq_new(n);
    assert_non_null(q);
    uint64_t rng = 5;
    for (uint32_t i = 0; i < n; i++)
        tg_timerq_set(q, i, tg_sim_rand_u64(&rng) % 10000);
    /* Move some, remove some. */
    for (uint32_t i = 0; i < n; i += 3)
        tg_timerq_set(q, i, tg_sim_rand_u64(&rng) % 10000);
    for (uint32_t i = 1; i < n; i += 10)
        tg_timerq_remove(q, i);
    tg_timerq_set(q, 7, 0);
    uint64_t due;
    assert_true(tg_timerq_get(q, 7, &due));
    assert_int_equal(due, 0);
    assert_false(tg_timerq_get(q, 1, &due));
    assert_int_equal(tg_timerq_size(q), n - n / 10);
    uint32_t id;
    uint64_t last = 0;
    size_t popped = 0;
    uint64_t peek_due;
    assert_true(tg_timerq_peek(q, &id, &peek_due));
    assert_int_equal(peek_due, 0);
    assert_false(tg_timerq_pop_due(q, 0, &id) && id != 7);
    while (tg_timerq_peek(q, &id, &due)) {
        assert_true(tg_timerq_pop_due(q, due, &id));
        assert_true(due >= last);
        last = due;
        popped++;
    }
    assert_int_equal(popped + 1, n - n / 10); /* 7 was popped above */
    assert_false(tg_timerq_pop_due(q, UINT64_MAX, &id));
    tg_timerq_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_rejected_by_decoder),
        cmocka_unit_test(test_malformed_deterministic),
        cmocka_unit_test(test_fault_fractions),
        cmocka_unit_test(test_streams_independent),
        cmocka_unit_test(test_skew_band),
        cmocka_unit_test(test_outbox_slots),
        cmocka_unit_test(test_timerq_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
