/*
 * Unit tests for firmware/drivers/sht3x.c against recorded register traffic
 * (data/drivers/sht3x_*.txt, replayed by test_driver_replay.c): exact command sequence, CRC
 * checks (the datasheet's example first), conversions computed by hand, NACK paths.
 */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "sht3x.h"
#include "test_driver_replay.h"

struct driver_state {
    alignas(max_align_t) unsigned char bytes[256];
};

static void *new_state(void)
{
    static struct driver_state state;
    assert_true(tg_sht3x_driver.state_size <= sizeof state.bytes);
    memset(&state, 0xA5, sizeof state);
    return state.bytes;
}

static void test_crc8(void **unused)
{
    /* Datasheet section 4.12: CRC of 0xBEEF is 0x92. */
    const uint8_t beef[2] = {0xBE, 0xEF};
    assert_int_equal(tg_sht3x_crc8(beef, 2), 0x92);
    /* Initial value 0xFF: the CRC of nothing is the initial value. */
    assert_int_equal(tg_sht3x_crc8(NULL, 0), 0xFF);
    /* 0x0000: 0xFF shifted through the polynomial 16 times, by hand: 0x81. */
    const uint8_t zero[2] = {0, 0};
    assert_int_equal(tg_sht3x_crc8(zero, 2), 0x81);
}

static void test_sample(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("sht3x_sample.txt", &hal);
    void *state = new_state();
    struct tg_sensor_sample s;

    assert_string_equal(tg_sht3x_driver.name, "sht3x");
    assert_int_equal(tg_sht3x_driver.init(state, &hal, TG_SHT3X_ADDR_PRIMARY), 0);

    memset(&s, 0, sizeof s);
    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.names[0], "temperature_c");
    assert_string_equal(s.names[1], "humidity_pct");
    /* -45 + 175 * 26214 / 65535 = -45 + 70 = 25 exactly; 100 * 32768 / 65535 = 50.000763. */
    assert_near(s.values[0], 25.0, 1e-9);
    assert_near(s.values[1], 50.000763, 1e-6);

    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), 0);
    /* -45 + 175 * 48879 / 65535 = 85.523003; 100 * 16384 / 65535 = 25.000381. */
    assert_near(s.values[0], 85.523003, 1e-6);
    assert_near(s.values[1], 25.000381, 1e-6);
    tg_replay_finish(rp);
}

static void test_errors(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("sht3x_errors.txt", &hal);
    void *state = new_state();
    struct tg_sensor_sample s;
    assert_int_equal(tg_sht3x_driver.init(state, &hal, TG_SHT3X_ADDR_SECONDARY), 0);
    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), -1); /* temperature CRC */
    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), -1); /* humidity CRC */
    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), -1); /* command NACKed */
    assert_int_equal(tg_sht3x_driver.read(state, &hal, &s), -1); /* never answers */
    tg_replay_finish(rp);
}

static void test_absent(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("sht3x_absent.txt", &hal);
    assert_int_equal(tg_sht3x_driver.init(new_state(), &hal, TG_SHT3X_ADDR_PRIMARY), -1);
    tg_replay_finish(rp);
}

static void test_bad_status_crc(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("sht3x_bad_status.txt", &hal);
    assert_int_equal(tg_sht3x_driver.init(new_state(), &hal, TG_SHT3X_ADDR_PRIMARY), -1);
    tg_replay_finish(rp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc8),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_bad_status_crc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
