/* Unit tests for the reconnect backoff (firmware/core/backoff.h): the ceiling starts at the
 * minimum, doubles per failed attempt and stops at the cap, and the jittered delay stays
 * within [0, ceiling] while covering the whole window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"

static void ceiling_doubles_from_min_up_to_the_cap(void **state)
{
    (void)state;
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 0), 1000);
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 1), 2000);
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 2), 4000);
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 5), 32000);
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 6), 60000);
    assert_int_equal(tg_backoff_ceiling_ms(1000, 60000, 1000000), 60000);
    /* no overflow near the top of the range */
    assert_int_equal(tg_backoff_ceiling_ms(UINT32_MAX / 2 + 1, UINT32_MAX, 1), UINT32_MAX);
    assert_int_equal(tg_backoff_ceiling_ms(3, UINT32_MAX, 40), UINT32_MAX);
    assert_int_equal(tg_backoff_ceiling_ms(500, 500, 3), 500);
    assert_int_equal(tg_backoff_ceiling_ms(0, 100, 50), 0);
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        uint32_t c = tg_backoff_ceiling_ms(250, 45000, attempt);
        assert_true(c >= 250 && c <= 45000);
        if (attempt > 0) {
            uint32_t prev = tg_backoff_ceiling_ms(250, 45000, attempt - 1);
            assert_true(c == 45000 || c == 2 * prev);
        }
    }
}

static void jitter_stays_within_zero_and_the_ceiling(void **state)
{
    (void)state;
    /* the extremes of the random bits give the extremes of the window */
    assert_int_equal(tg_backoff_delay_ms(1000, 60000, 0, 0), 0);
    assert_int_equal(tg_backoff_delay_ms(1000, 60000, 0, UINT32_MAX), 1000);
    assert_int_equal(tg_backoff_delay_ms(1000, 60000, 9, UINT32_MAX), 60000);
    assert_int_equal(tg_backoff_delay_ms(1, UINT32_MAX, 64, UINT32_MAX), UINT32_MAX);

    /* many draws: always inside [0, ceiling], spread over the window (each tenth of it hit,
     * mean near the middle) */
    uint32_t rng = 2463534242u;
    for (unsigned attempt = 0; attempt < 8; attempt++) {
        uint32_t ceiling = tg_backoff_ceiling_ms(100, 10000, attempt);
        unsigned deciles[10] = {0};
        double sum = 0;
        enum { DRAWS = 100000 };
        for (int i = 0; i < DRAWS; i++) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            uint32_t d = tg_backoff_delay_ms(100, 10000, attempt, rng);
            assert_true(d <= ceiling);
            deciles[d * 10ull / (ceiling + 1ull)]++;
            sum += d;
        }
        for (int k = 0; k < 10; k++)
            assert_true(deciles[k] > DRAWS / 10 * 9 / 10 && deciles[k] < DRAWS / 10 * 11 / 10);
        double mean = sum / DRAWS;
        assert_true(mean > ceiling * 0.48 && mean < ceiling * 0.52);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ceiling_doubles_from_min_up_to_the_cap),
        cmocka_unit_test(jitter_stays_within_zero_and_the_ceiling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
