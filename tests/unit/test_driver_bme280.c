/*
 * Unit tests for firmware/drivers/bme280.c against recorded register traffic
 * (data/drivers/bme280_*.txt, replayed by test_driver_replay.c): the driver must make exactly
 * the transcript's transactions, and turn the datasheet's example raw values into the values
 * computed by hand from the datasheet's formulas.
 */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "bme280.h"
#include "test_driver_replay.h"

struct driver_state {
    alignas(max_align_t) unsigned char bytes[256];
};

static void *new_state(void)
{
    static struct driver_state state;
    assert_true(tg_bme280_driver.state_size <= sizeof state.bytes);
    memset(&state, 0xA5, sizeof state); /* the driver must not rely on zeroed state */
    return state.bytes;
}

static double metric(const struct tg_sensor_sample *s, const char *name)
{
    for (unsigned i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return s->values[i];
    fail_msg("metric %s missing", name);
    return 0;
}

static void test_sample(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("bme280_sample.txt", &hal);
    void *state = new_state();
    struct tg_sensor_sample s;

    assert_string_equal(tg_bme280_driver.name, "bme280");
    assert_int_equal(tg_bme280_driver.init(state, &hal, TG_BME280_ADDR_PRIMARY), 0);

    memset(&s, 0, sizeof s);
    assert_int_equal(tg_bme280_driver.read(state, &hal, &s), 0);
    assert_int_equal(s.n, 3);
    /* Temperature: datasheet example, var1 = 128793, var2 = -371, t_fine = 128422,
     * T = (128422 * 5 + 128) >> 8 = 2508 -> 25.08 degC exactly as the integer formula gives. */
    assert_true(metric(&s, "temperature_c") == 2508 / 100.0);
    /* Pressure: the 64-bit formula by hand gives 25767233 in Q24.8 = 100653.2539 Pa; the
     * datasheet's double formula gives 100653.27 Pa for the same inputs. */
    assert_true(metric(&s, "pressure_hpa") == 25767233 / 25600.0);
    assert_near(metric(&s, "pressure_hpa"), 1006.5327, 0.0005);
    /* Humidity: the integer formula by hand gives 40312 in Q22.10 = 39.367 %RH; the
     * datasheet's double formula gives 39.370 %RH. */
    assert_true(metric(&s, "humidity_pct") == 40312 / 1024.0);
    assert_near(metric(&s, "humidity_pct"), 39.370, 0.005);

    /* A skipped measurement (raw 0x80000) is a failed sample, not a wild value. */
    assert_int_equal(tg_bme280_driver.read(state, &hal, &s), -1);
    tg_replay_finish(rp);
}

static void test_wrong_chip_id(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("bme280_wrong_id.txt", &hal);
    assert_int_equal(tg_bme280_driver.init(new_state(), &hal, TG_BME280_ADDR_PRIMARY), -1);
    tg_replay_finish(rp);
}

static void test_absent(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("bme280_absent.txt", &hal);
    assert_int_equal(tg_bme280_driver.init(new_state(), &hal, TG_BME280_ADDR_SECONDARY), -1);
    tg_replay_finish(rp);
}

static void test_bus_errors(void **unused)
{
    struct tg_hal hal;
    struct tg_replay *rp = tg_replay_new("bme280_bus_errors.txt", &hal);
    void *state = new_state();
    struct tg_sensor_sample s;
    assert_int_equal(tg_bme280_driver.init(state, &hal, TG_BME280_ADDR_SECONDARY), 0);
    assert_int_equal(tg_bme280_driver.read(state, &hal, &s), -1); /* data read NACKed */
    assert_int_equal(tg_bme280_driver.read(state, &hal, &s), -1); /* conversion never ends */
    assert_int_equal(tg_bme280_driver.read(state, &hal, &s), -1); /* trigger NACKed */
    tg_replay_finish(rp);
}

static void test_no_bus(void **unused)
{
    struct tg_hal hal;
    memset(&hal, 0, sizeof hal); /* a board without I2C */
    assert_int_equal(tg_bme280_driver.init(new_state(), &hal, TG_BME280_ADDR_PRIMARY), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_wrong_chip_id),
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_bus_errors),
        cmocka_unit_test(test_no_bus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
