/* Unit tests for the string map the validator, the ledger and the audit share
 * (common/strmap.c): lookups agree with a plain array model through many growths, keys are
 * copies and slices, replacing keeps the count, and a failed allocation changes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "strmap.h"

#define N_KEYS 20000

static void agrees_with_a_model(void **state)
{
    (void)state;
    struct tg_strmap *m = tg_strmap_new();
    assert_non_null(m);
    char key[32];
    for (uint32_t i = 0; i < N_KEYS; i++) {
        int len = snprintf(key, sizeof key, "dev-%05u", i);
        assert_false(tg_strmap_get(m, key, (size_t)len, NULL));
        assert_int_equal(tg_strmap_put(m, key, (size_t)len, i * 3), TG_OK);
        assert_int_equal(tg_strmap_count(m), i + 1);
    }
    for (uint32_t i = 0; i < N_KEYS; i++) {
        int len = snprintf(key, sizeof key, "dev-%05u", i);
        uint32_t v = 0;
        assert_true(tg_strmap_get(m, key, (size_t)len, &v));
        assert_int_equal(v, i * 3);
        /* a prefix or an extension of a key is another key */
        assert_false(tg_strmap_get(m, key, (size_t)len - 1, NULL));
        key[len] = 'x';
        assert_false(tg_strmap_get(m, key, (size_t)len + 1, NULL));
    }
    tg_strmap_destroy(m);
}

static void keys_are_copies_and_slices(void **state)
{
    (void)state;
    struct tg_strmap *m = tg_strmap_new();
    assert_non_null(m);
    char buf[] = "telemetry/sensor-7";
    assert_int_equal(tg_strmap_put(m, buf + 10, 8, 7), TG_OK); /* "sensor-7", not terminated */
    memset(buf, 'z', sizeof buf - 1);                           /* the map kept its own copy */
    uint32_t v = 0;
    assert_true(tg_strmap_get(m, "sensor-7", 8, &v));
    assert_int_equal(v, 7);
    assert_true(tg_strmap_get(m, "sensor-7 and more", 8, &v)); /* lookups take slices too */
    /* replacing keeps one entry */
    assert_int_equal(tg_strmap_put(m, "sensor-7", 8, 9), TG_OK);
    assert_int_equal(tg_strmap_count(m), 1);
    assert_true(tg_strmap_get(m, "sensor-7", 8, &v));
    assert_int_equal(v, 9);
    /* the empty key and bytes that are not text are keys like any other */
    assert_int_equal(tg_strmap_put(m, "", 0, 1), TG_OK);
    assert_int_equal(tg_strmap_put(m, "a\0b", 3, 2), TG_OK);
    assert_true(tg_strmap_get(m, "", 0, &v));
    assert_int_equal(v, 1);
    assert_true(tg_strmap_get(m, "a\0b", 3, &v));
    assert_int_equal(v, 2);
    assert_false(tg_strmap_get(m, "a\0c", 3, NULL));
    assert_int_equal(tg_strmap_count(m), 3);
    tg_strmap_destroy(m);
    tg_strmap_destroy(NULL);
}

/* Allocation failures: malloc/realloc fail after a countdown (the wrap is linked in by
 * -Wl,--wrap in CMakeLists.txt); the map must stay as it was and keep working. */
static int fail_countdown = -1;
void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
    if (fail_countdown == 0)
        return NULL;
    if (fail_countdown > 0)
        fail_countdown--;
    return __real_malloc(n);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fail_countdown == 0)
        return NULL;
    if (fail_countdown > 0)
        fail_countdown--;
    return __real_realloc(p, n);
}

static void out_of_memory_changes_nothing(void **state)
{
    (void)state;
    struct tg_strmap *m = tg_strmap_new();
    assert_non_null(m);
    char key[32];
    uint32_t added = 0, refused = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        int len = snprintf(key, sizeof key, "%0*u", (int)(i % 30) + 1, i);
        fail_countdown = i % 2 ? 0 : -1; /* every other put finds no memory at all */
        tg_err e = tg_strmap_put(m, key, (size_t)len, i);
        fail_countdown = -1;
        if (e == TG_OK)
            added++;
        else
            refused++;
        assert_int_equal(tg_strmap_count(m), added);
        assert_int_equal(tg_strmap_get(m, key, (size_t)len, NULL), e == TG_OK);
    }
    assert_true(refused > 0); /* growth did need memory, so the refusals were exercised */
    for (uint32_t i = 0; i < 2000; i += 2) {
        int len = snprintf(key, sizeof key, "%0*u", (int)(i % 30) + 1, i);
        uint32_t v;
        assert_true(tg_strmap_get(m, key, (size_t)len, &v));
        assert_int_equal(v, i);
    }
    tg_strmap_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agrees_with_a_model),
        cmocka_unit_test(keys_are_copies_and_slices),
        cmocka_unit_test(out_of_memory_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
