/* Unit tests for the seq sets the sim ledger and the audit share (sim/seqset.c): each
 * operation against a plain bitmap model, over random and ordered seqs, plus the edges
 * (0, UINT64_MAX, splitting and joining ranges, iteration stopping early). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "seqset.h"

#define MODEL_SEQS 512

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The set's invariants: ranges sorted, disjoint and not touching; count agrees. */
static void check_shape(const struct tg_seqset *s, const bool *model)
{
    uint64_t n = 0;
    for (size_t i = 0; i < tg_seqset_n_ranges(s); i++) {
        struct tg_seqset_range r = tg_seqset_range(s, i);
        assert_true(r.lo <= r.hi);
        if (i > 0)
            assert_true(tg_seqset_range(s, i - 1).hi + 1 < r.lo);
        n += r.hi - r.lo + 1;
    }
    assert_int_equal(tg_seqset_count(s), n);
    if (model) {
        uint64_t m = 0;
        for (uint64_t q = 0; q < MODEL_SEQS; q++) {
            m += model[q];
            assert_int_equal(tg_seqset_contains(s, q), model[q]);
        }
        assert_int_equal(n, m);
    }
}

static void matches_a_bitmap_model(void **state)
{
    (void)state;
    struct tg_seqset s = {0};
    bool model[MODEL_SEQS] = {false};
    for (int step = 0; step < 20000; step++) {
        uint64_t q = rnd() % MODEL_SEQS;
        if (rnd() % 3 == 0) {
            assert_int_equal(tg_seqset_remove(&s, q), model[q] ? 1 : 0);
            model[q] = false;
        } else {
            assert_int_equal(tg_seqset_add(&s, q), model[q] ? 0 : 1);
            model[q] = true;
        }
        if (step % 500 == 0)
            check_shape(&s, model);
        uint64_t lo = rnd() % MODEL_SEQS, hi = lo + rnd() % 8;
        bool any = false;
        for (uint64_t x = lo; x <= hi && x < MODEL_SEQS; x++)
            any = any || model[x];
        assert_int_equal(tg_seqset_intersects(&s, lo, hi), any);
    }
    check_shape(&s, model);
    tg_seqset_free(&s);
    assert_int_equal(tg_seqset_n_ranges(&s), 0);
    assert_false(tg_seqset_contains(&s, 1));
}

static void in_order_is_one_range(void **state)
{
    (void)state;
    struct tg_seqset s = {0};
    for (uint64_t q = 1; q <= 3600; q++)
        assert_int_equal(tg_seqset_add(&s, q), 1);
    assert_int_equal(tg_seqset_n_ranges(&s), 1);
    assert_int_equal(tg_seqset_count(&s), 3600);
    assert_int_equal(tg_seqset_add(&s, 1800), 0); /* a duplicate */
    /* removing from the middle splits, adding back joins */
    assert_int_equal(tg_seqset_remove(&s, 1800), 1);
    assert_int_equal(tg_seqset_n_ranges(&s), 2);
    assert_int_equal(tg_seqset_add(&s, 1800), 1);
    assert_int_equal(tg_seqset_n_ranges(&s), 1);
    tg_seqset_free(&s);
}

static void extremes(void **state)
{
    (void)state;
    struct tg_seqset s = {0};
    assert_int_equal(tg_seqset_add(&s, UINT64_MAX), 1);
    assert_int_equal(tg_seqset_add(&s, 0), 1);
    assert_int_equal(tg_seqset_add(&s, UINT64_MAX - 1), 1);
    assert_int_equal(tg_seqset_n_ranges(&s), 2);
    assert_true(tg_seqset_contains(&s, UINT64_MAX));
    assert_true(tg_seqset_intersects(&s, 5, UINT64_MAX));
    assert_false(tg_seqset_intersects(&s, 1, 100));
    check_shape(&s, NULL);
    tg_seqset_free(&s);
}

struct collect {
    uint64_t seqs[16];
    size_t n, stop_after;
};

static bool collect_fn(void *ud, uint64_t seq)
{
    struct collect *c = ud;
    c->seqs[c->n++] = seq;
    return c->n != c->stop_after;
}

static void each_visits_ascending_and_stops(void **state)
{
    (void)state;
    struct tg_seqset s = {0};
    static const uint64_t in[] = {9, 3, 4, 5, 20, UINT64_MAX};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        assert_int_equal(tg_seqset_add(&s, in[i]), 1);
    struct collect c = {.stop_after = 0};
    assert_true(tg_seqset_each(&s, collect_fn, &c));
    static const uint64_t want[] = {3, 4, 5, 9, 20, UINT64_MAX};
    assert_int_equal(c.n, 6);
    assert_memory_equal(c.seqs, want, sizeof want);
    c = (struct collect){.stop_after = 2};
    assert_false(tg_seqset_each(&s, collect_fn, &c));
    assert_int_equal(c.n, 2);
    tg_seqset_free(&s);
}

static void append_range_checks_order(void **state)
{
    (void)state;
    struct tg_seqset s = {0};
    assert_int_equal(tg_seqset_append_range(&s, 1, 5), 0);
    errno = 0;
    assert_int_equal(tg_seqset_append_range(&s, 6, 9), -1); /* touches: would not be merged */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(tg_seqset_append_range(&s, 3, 9), -1);
    assert_int_equal(tg_seqset_append_range(&s, 9, 8), -1);
    assert_int_equal(tg_seqset_append_range(&s, 7, 9), 0);
    assert_int_equal(tg_seqset_count(&s), 8);
    check_shape(&s, NULL);
    tg_seqset_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_a_bitmap_model),
        cmocka_unit_test(in_order_is_one_range),
        cmocka_unit_test(extremes),
        cmocka_unit_test(each_visits_ascending_and_stops),
        cmocka_unit_test(append_range_checks_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
