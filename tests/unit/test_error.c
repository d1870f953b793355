/* Unit tests for error.c: every code has a reason and a text, and the retriable split is right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "error.h"
#include "record.h"

static void every_code_has_reason_and_text(void **state)
{
    (void)state;
    for (int e = 0; e < TG_ERR__COUNT; e++) {
        const char *reason = tg_err_reason((tg_err)e);
        assert_non_null(reason);
        assert_true(strlen(reason) > 0);
        for (const char *p = reason; *p; p++) /* snake_case: usable as a metric label value */
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        assert_non_null(tg_strerror((tg_err)e));
        for (int f = 0; f < e; f++) /* reasons are unique */
            assert_string_not_equal(reason, tg_err_reason((tg_err)f));
    }
}

static void retriable_split(void **state)
{
    (void)state;
    assert_true(tg_err_retriable(TG_ERR_UNAVAILABLE));
    assert_true(tg_err_retriable(TG_ERR_FULL));
    assert_true(tg_err_retriable(TG_ERR_IO));
    assert_false(tg_err_retriable(TG_ERR_MALFORMED));
    assert_false(tg_err_retriable(TG_ERR_BAD_SIGNATURE));
    assert_false(tg_err_retriable(TG_ERR_TOO_LARGE));
    /* out-of-range codes are treated as internal errors, not crashes */
    assert_string_equal(tg_err_reason((tg_err)9999), "internal");
}

static void device_ids(void **state)
{
    (void)state;
    assert_true(tg_device_id_valid("node-01.a_B", 11));
    assert_false(tg_device_id_valid("", 0));
    assert_false(tg_device_id_valid("a/b", 3));
    assert_false(tg_device_id_valid("a b", 3));
    assert_false(tg_device_id_valid("+", 1));
    char id[TG_DEVICE_ID_MAX + 1];
    memset(id, 'x', sizeof id);
    assert_true(tg_device_id_valid(id, TG_DEVICE_ID_MAX));
    assert_false(tg_device_id_valid(id, TG_DEVICE_ID_MAX + 1));
    /* Every byte value, alone and after a valid character, against the rule's own words. */
    for (int c = 0; c < 256; c++) {
        bool want = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
        char two[2] = {'a', (char)c};
        if (tg_device_id_valid(&two[1], 1) != want || tg_device_id_valid(two, 2) != want)
            fail_msg("byte %d: valid should be %d", c, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_code_has_reason_and_text),
        cmocka_unit_test(retriable_split),
        cmocka_unit_test(device_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
