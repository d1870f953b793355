/* Unit tests for gateway/dedup.c: the native (boot, seq) window, the SenML ts set, LRU
 * eviction, and snapshots that survive a restart (and reject any damage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dedup.h"
#include "util.h"

/* Out-of-memory tests cap the address space, which AddressSanitizer's shadow memory cannot
 * live with: they run in the plain build only. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_OOM 0
#else
#define TEST_OOM 1
#include <sys/resource.h>
#include <unistd.h>
#endif

#define NOW_MS INT64_C(1700000000000)

static struct tg_dedup *new_dedup(size_t max_devices)
{
    struct tg_dedup *dd;
    assert_int_equal(tg_dedup_new(max_devices, &dd), TG_OK);
    return dd;
}

/* True when (device, boot, seq) is new. */
static bool native(struct tg_dedup *dd, const char *device, uint64_t boot, uint64_t seq)
{
    struct tg_reading r = {.device = device, .has_seq = true, .boot = boot, .seq = seq,
                           .ts_ms = NOW_MS};
    return tg_dedup_check(dd, &r, NOW_MS);
}

/* True when (device, ts) is new (a SenML reading). */
static bool senml(struct tg_dedup *dd, const char *device, int64_t ts)
{
    struct tg_reading r = {.device = device, .has_seq = false, .ts_ms = ts};
    return tg_dedup_check(dd, &r, NOW_MS);
}

static void new_rejects_bad_sizes(void **state)
{
    (void)state;
    struct tg_dedup *dd = (struct tg_dedup *)1;
    assert_int_equal(tg_dedup_new(0, &dd), TG_ERR_USAGE);
    assert_null(dd);
    assert_int_equal(tg_dedup_new((size_t)TG_DEDUP_MAX_DEVICES + 1, &dd), TG_ERR_USAGE);
    tg_dedup_destroy(NULL);
}

static void in_order_and_redelivery(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    for (uint64_t seq = 0; seq < 200; seq++) {
        assert_true(native(dd, "dev-1", 1, seq));
        assert_false(native(dd, "dev-1", 1, seq)); /* QoS1 redelivery */
    }
    /* Redeliveries of everything still in the window are duplicates too. */
    for (uint64_t seq = 199 - TG_DEDUP_WINDOW; seq < 200; seq++)
        assert_false(native(dd, "dev-1", 1, seq));
    /* Another device with the same (boot, seq) is a different reading. */
    assert_true(native(dd, "dev-2", 1, 5));
    assert_int_equal(tg_dedup_devices(dd), 2);
    tg_dedup_destroy(dd);
}

static void out_of_order_within_window(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    assert_true(native(dd, "d", 0, 100));
    /* Every seq in the window arrives late, in reverse: each is taken exactly once. */
    for (uint64_t seq = 99; seq >= 100 - TG_DEDUP_WINDOW; seq--)
        assert_true(native(dd, "d", 0, seq));
    for (uint64_t seq = 100 - TG_DEDUP_WINDOW; seq <= 100; seq++)
        assert_false(native(dd, "d", 0, seq));
    /* Gaps stay open as the window slides, until they fall out of it. */
    assert_true(native(dd, "d", 0, 110)); /* 101..109 missing */
    assert_true(native(dd, "d", 0, 105));
    assert_false(native(dd, "d", 0, 105));
    assert_true(native(dd, "d", 0, 101));
    /* Slide so that 102 (never seen) is exactly 64 below the highest: the window's last slot. */
    assert_true(native(dd, "d", 0, 102 + TG_DEDUP_WINDOW));
    assert_true(native(dd, "d", 0, 102));
    assert_false(native(dd, "d", 0, 102));
    assert_false(native(dd, "d", 0, 101)); /* 65 below: too old */
    assert_false(native(dd, "d", 0, 100));
    tg_dedup_destroy(dd);
}

static void too_old_is_duplicate(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    assert_true(native(dd, "d", 3, 1000));
    assert_true(native(dd, "d", 3, 1000 - TG_DEDUP_WINDOW)); /* the window's last slot */
    assert_false(native(dd, "d", 3, 1000 - TG_DEDUP_WINDOW - 1));
    assert_false(native(dd, "d", 3, 0));
    /* A jump of more than the window clears it: nothing below survives. */
    assert_true(native(dd, "d", 3, 5000));
    assert_true(native(dd, "d", 3, 4999));
    assert_false(native(dd, "d", 3, 1000));
    /* A jump of exactly the window keeps the old highest as the window's last slot. */
    assert_true(native(dd, "d", 3, 5000 + TG_DEDUP_WINDOW));
    assert_false(native(dd, "d", 3, 5000));
    assert_true(native(dd, "d", 3, 5001));
    /* The extremes of seq. */
    assert_true(native(dd, "e", 0, UINT64_MAX - 1));
    assert_true(native(dd, "e", 0, UINT64_MAX));
    assert_false(native(dd, "e", 0, UINT64_MAX - 1));
    assert_true(native(dd, "e", 0, UINT64_MAX - 2));
    tg_dedup_destroy(dd);
}

static void boot_change_and_late_previous_boot(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    for (uint64_t seq = 1; seq <= 10; seq++)
        assert_true(native(dd, "n", 1, seq));
    /* Reboot: seqs start over and are new. */
    assert_true(native(dd, "n", 2, 1));
    assert_false(native(dd, "n", 2, 1));
    assert_true(native(dd, "n", 2, 2));
    /* The outbox drains boot 1's tail after the reboot: taken once, in order. */
    assert_true(native(dd, "n", 1, 11));
    assert_false(native(dd, "n", 1, 11));
    assert_true(native(dd, "n", 1, 13));
    assert_false(native(dd, "n", 1, 12)); /* below the previous boot's highest */
    assert_false(native(dd, "n", 1, 10));
    assert_false(native(dd, "n", 1, 1));
    /* Older boots than the previous one are duplicates. */
    assert_false(native(dd, "n", 0, 100));
    /* Boot 2's window was not disturbed. */
    assert_false(native(dd, "n", 2, 2));
    assert_true(native(dd, "n", 2, 3));
    /* Boots may skip numbers; only the one before is remembered. */
    assert_true(native(dd, "n", 7, 0));
    assert_true(native(dd, "n", 2, 4));
    assert_false(native(dd, "n", 2, 3));
    assert_false(native(dd, "n", 1, 14));
    tg_dedup_destroy(dd);
}

/* True when (device, boot, seq) taken at device time ts_ms is new. */
static bool native_at(struct tg_dedup *dd, const char *device, uint64_t boot, uint64_t seq,
                      int64_t ts_ms)
{
    struct tg_reading r = {.device = device, .has_seq = true, .boot = boot, .seq = seq,
                           .ts_ms = ts_ms};
    return tg_dedup_check(dd, &r, NOW_MS);
}

/* A node whose boot counter went back (re-flashed, state lost) is heard again once its
 * readings are newer than its old boot's by more than the grace (default 10 s); stale
 * copies of old boots, which carry old times, never start an epoch. */
static void boot_going_back_starts_a_new_epoch(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    int64_t t = NOW_MS;
    for (uint64_t seq = 0; seq < 10; seq++)
        assert_true(native_at(dd, "n", 5, seq, t + (int64_t)seq * 1000));
    /* boot 5's newest is t + 9 s. A stale boot-2 copy from before: out of window. */
    assert_false(native_at(dd, "n", 2, 7, t - 60000));
    /* Re-flashed, back at boot 1: within the grace its readings are not yet believed... */
    assert_false(native_at(dd, "n", 1, 0, t + 9000 + 5000));
    /* ...past it, boot 1 is the device's epoch, and its seqs count from there. */
    assert_true(native_at(dd, "n", 1, 1, t + 9000 + 11000));
    assert_false(native_at(dd, "n", 1, 1, t + 9000 + 11000));
    assert_true(native_at(dd, "n", 1, 2, t + 9000 + 12000));
    /* A late copy from the abandoned boot 5 is older than boot 1's newest: not a restart. */
    assert_false(native_at(dd, "n", 5, 10, t + 9500));
    assert_true(native_at(dd, "n", 1, 3, t + 9000 + 13000));
    /* A real restart afterwards still works. */
    assert_true(native_at(dd, "n", 2, 0, t + 9000 + 14000));
    assert_true(native_at(dd, "n", 1, 4, t + 9000 + 13500)); /* boot 1's tail, drained */
    /* Re-flashed again, back at exactly the previous boot's number (1): its seqs 0.. are
     * below boot 1's highest, but their time says they are a new epoch, not boot 1's tail. */
    assert_true(native_at(dd, "m", 1, 50, t));
    assert_true(native_at(dd, "m", 2, 0, t + 1000));
    assert_true(native_at(dd, "m", 1, 51, t + 500)); /* the tail, taken before the reboot */
    assert_false(native_at(dd, "m", 1, 0, t + 5000)); /* within the grace */
    assert_true(native_at(dd, "m", 1, 1, t + 1000 + 11000));
    assert_true(native_at(dd, "m", 1, 2, t + 1000 + 12000));
    tg_dedup_destroy(dd);
}

/* An ordinary reboot whose clock stepped back is still a restart: time only decides against
 * a higher boot that the device left by going back to a lower one. That memory survives a
 * snapshot. */
static void a_reboot_with_a_clock_stepped_back_is_a_restart(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    int64_t t = NOW_MS;
    assert_true(native_at(dd, "r", 3, 0, t));
    assert_true(native_at(dd, "r", 3, 1, t + 1000));
    assert_true(native_at(dd, "r", 4, 0, t - 60000)); /* rebooted, its clock 61 s behind */
    assert_true(native_at(dd, "r", 4, 1, t - 59000));
    /* Back from 4 to 1 (a new epoch), then a late copy from boot 4 (old time): stale. */
    assert_true(native_at(dd, "r", 1, 0, t + 30000));
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    struct tg_dedup *dd2 = new_dedup(16);
    assert_int_equal(tg_dedup_load(dd2, blob, len), TG_OK);
    free(blob);
    assert_false(native_at(dd2, "r", 4, 2, t - 58000));
    assert_false(native_at(dd2, "r", 3, 2, t + 2000));
    /* Beyond the left boot, a higher boot is a restart whatever its time. */
    assert_true(native_at(dd2, "r", 5, 0, t));
    tg_dedup_destroy(dd2);
    tg_dedup_destroy(dd);
}

static void senml_by_ts(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    int64_t t0 = NOW_MS;
    assert_true(senml(dd, "s", t0));
    assert_false(senml(dd, "s", t0));
    assert_true(senml(dd, "s", t0 + 1000));
    assert_true(senml(dd, "s", t0 + 500)); /* out of order, not remembered yet: new */
    assert_false(senml(dd, "s", t0 + 500));
    assert_false(senml(dd, "s", t0 + 1000));
    /* Until the set is full, even times older than everything are new. */
    assert_true(senml(dd, "s", t0 - 1000));
    /* Five newer times fill the set: highest t0 + 50000, and below it the 8 times t0 +
     * 40000, 31000, 21000, 11000, 1000, 500, 0, -1000. */
    for (int k = 1; k <= 3; k++)
        assert_true(senml(dd, "s", t0 + 1000 + k * 10000));
    assert_true(senml(dd, "s", t0 + 40000));
    assert_true(senml(dd, "s", t0 + 50000));
    assert_false(senml(dd, "s", t0 - 1000));
    assert_false(senml(dd, "s", t0 - 5000)); /* older than everything remembered */
    /* A new time between remembered ones pushes the oldest out. */
    assert_true(senml(dd, "s", t0 + 45000));
    assert_false(senml(dd, "s", t0 - 1000)); /* now older than everything */
    assert_false(senml(dd, "s", t0 + 45000));
    tg_dedup_destroy(dd);
}

static void senml_window_edges(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    /* Exactly TG_DEDUP_SENML_RECENT times below the highest are remembered. */
    for (int64_t k = 0; k <= TG_DEDUP_SENML_RECENT; k++)
        assert_true(senml(dd, "s", k * 1000));
    for (int64_t k = 0; k <= TG_DEDUP_SENML_RECENT; k++)
        assert_false(senml(dd, "s", k * 1000));
    assert_false(senml(dd, "s", -1)); /* older than everything, set full */
    assert_true(senml(dd, "s", 1500)); /* between remembered times: new, 0 forgotten */
    assert_false(senml(dd, "s", 0));
    assert_false(senml(dd, "s", 1500));
    /* A time 2^32 ms or more below the highest is a duplicate; a jump that far forgets. */
    assert_true(senml(dd, "t", INT64_C(1) << 40));
    assert_false(senml(dd, "t", (INT64_C(1) << 40) - (INT64_C(1) << 32) - 1));
    assert_true(senml(dd, "t", (INT64_C(1) << 40) - ((INT64_C(1) << 32) - 1)));
    assert_true(senml(dd, "t", INT64_C(1) << 41));
    assert_false(senml(dd, "t", INT64_C(1) << 40));
    /* Negative and extreme times are just numbers. */
    assert_true(senml(dd, "u", INT64_MIN));
    assert_true(senml(dd, "u", INT64_MAX));
    assert_false(senml(dd, "u", INT64_MIN));
    assert_false(senml(dd, "u", INT64_MAX));
    tg_dedup_destroy(dd);
}

static void senml_pack_any_order(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    /* A pack listed newest first, far bigger than the remembered set. */
    struct tg_reading pack[40];
    bool fresh[40];
    for (int k = 0; k < 40; k++)
        pack[k] = (struct tg_reading){.device = "p", .ts_ms = NOW_MS - k * 1000};
    assert_int_equal(tg_dedup_check_all(dd, pack, 40, NOW_MS, fresh), 40);
    for (int k = 0; k < 40; k++)
        assert_true(fresh[k]);
    /* Its redelivery is entirely duplicate. */
    assert_int_equal(tg_dedup_check_all(dd, pack, 40, NOW_MS, fresh), 0);
    for (int k = 0; k < 40; k++)
        assert_false(fresh[k]);
    /* A later pack that overlaps: only its new times are taken. */
    for (int k = 0; k < 40; k++)
        pack[k].ts_ms = NOW_MS + 20000 - k * 1000;
    assert_int_equal(tg_dedup_check_all(dd, pack, 40, NOW_MS, fresh), 20);
    for (int k = 0; k < 40; k++)
        assert_true(fresh[k] == (k < 20));
    /* A native payload through the same call. */
    struct tg_reading one = {.device = "q", .has_seq = true, .boot = 1, .seq = 1};
    assert_int_equal(tg_dedup_check_all(dd, &one, 1, NOW_MS, fresh), 1);
    assert_int_equal(tg_dedup_check_all(dd, &one, 1, NOW_MS, fresh), 0);
    tg_dedup_destroy(dd);
}

static void format_switch_starts_afresh(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    assert_true(native(dd, "x", 1, 1));
    assert_true(senml(dd, "x", NOW_MS));
    assert_false(senml(dd, "x", NOW_MS));
    assert_true(native(dd, "x", 1, 1));
    assert_false(native(dd, "x", 1, 1));
    assert_int_equal(tg_dedup_devices(dd), 1);
    tg_dedup_destroy(dd);
}

static void lru_eviction(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(3);
    assert_true(native(dd, "a", 1, 1));
    assert_true(native(dd, "b", 1, 1));
    assert_true(native(dd, "c", 1, 1));
    assert_false(native(dd, "a", 1, 1)); /* a duplicate counts as seen: a is most recent */
    assert_true(native(dd, "d", 1, 1));  /* evicts b, the least recently seen */
    assert_int_equal(tg_dedup_devices(dd), 3);
    assert_false(native(dd, "a", 1, 1));
    assert_false(native(dd, "c", 1, 1));
    assert_false(native(dd, "d", 1, 1));
    /* b was forgotten: new again, evicting a (seen last a, c, d, oldest first), then a is new
     * again too. */
    assert_true(native(dd, "b", 1, 1));
    assert_true(native(dd, "a", 1, 1));
    assert_int_equal(tg_dedup_devices(dd), 3);

    /* Many devices through a small table: always bounded, the most recent kept. */
    struct tg_dedup *small = new_dedup(1000);
    char id[32];
    for (int k = 0; k < 10000; k++) {
        snprintf(id, sizeof id, "dev-%05d", k);
        assert_true(native(small, id, 1, 1));
        assert_true(tg_dedup_devices(small) <= 1000);
    }
    assert_int_equal(tg_dedup_devices(small), 1000);
    for (int k = 9000; k < 10000; k++) {
        snprintf(id, sizeof id, "dev-%05d", k);
        assert_false(native(small, id, 1, 1));
    }
    snprintf(id, sizeof id, "dev-%05d", 8999);
    assert_true(native(small, id, 1, 1));
    tg_dedup_destroy(small);
    tg_dedup_destroy(dd);
}

static void forget_device(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(4);
    assert_true(native(dd, "a", 9, 9));
    assert_true(native(dd, "b", 9, 9));
    assert_false(tg_dedup_forget(dd, "zz"));
    assert_true(tg_dedup_forget(dd, "a"));
    assert_int_equal(tg_dedup_devices(dd), 1);
    assert_true(native(dd, "a", 1, 1)); /* a reflashed node starts over */
    assert_false(native(dd, "b", 9, 9));
    /* Freed slots are reused: fill to the bound and beyond. */
    assert_true(native(dd, "c", 1, 1));
    assert_true(native(dd, "d", 1, 1));
    assert_true(native(dd, "e", 1, 1));
    assert_int_equal(tg_dedup_devices(dd), 4);
    tg_dedup_destroy(dd);
}

static void dirty_flag(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(4);
    assert_false(tg_dedup_dirty(dd));
    assert_int_equal(tg_dedup_as_of_ms(dd), INT64_MIN);
    assert_true(native(dd, "a", 1, 1));
    assert_true(tg_dedup_dirty(dd));
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    assert_false(tg_dedup_dirty(dd));
    assert_false(native(dd, "a", 1, 1)); /* a duplicate changes nothing worth saving */
    assert_false(tg_dedup_dirty(dd));
    assert_true(native(dd, "a", 1, 2));
    assert_true(tg_dedup_dirty(dd));
    assert_int_equal(tg_dedup_load(dd, blob, len), TG_OK);
    assert_false(tg_dedup_dirty(dd));
    assert_true(tg_dedup_forget(dd, "a"));
    assert_true(tg_dedup_dirty(dd));
    free(blob);
    tg_dedup_destroy(dd);
}

/* A deterministic mixed workload: native devices with reboots and reordering, SenML ones. */
struct workload {
    uint64_t rng;
    char ids[64][TG_DEVICE_ID_MAX + 1];
    uint64_t boot[64], seq[64];
};

static uint64_t next_random(struct workload *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void workload_init(struct workload *w, uint64_t seed)
{
    memset(w, 0, sizeof *w);
    w->rng = seed;
    for (int k = 0; k < 64; k++) {
        /* Long shared prefixes and the longest id exercise the snapshot's prefix coding. */
        if (k == 0)
            memset(w->ids[k], 'L', TG_DEVICE_ID_MAX);
        else
            snprintf(w->ids[k], sizeof w->ids[k], "sensor.site-%02d_%d", k % 7, k);
        w->boot[k] = 1 + k % 3;
    }
}

static struct tg_reading workload_next(struct workload *w)
{
    uint64_t r = next_random(w);
    int k = (int)(r % 64);
    struct tg_reading rd = {.device = w->ids[k]};
    if (k % 4 == 3) {
        rd.ts_ms = NOW_MS + (int64_t)(next_random(w) % 40) * 250;
        return rd;
    }
    rd.has_seq = true;
    switch ((r >> 8) % 16) {
    case 0: /* reboot */
        w->boot[k]++;
        w->seq[k] = 0;
        break;
    case 1: /* late reading of the previous boot */
        rd.boot = w->boot[k] - 1;
        rd.seq = next_random(w) % 200;
        return rd;
    case 2: /* a seq anywhere below, in or out of the window */
        rd.boot = w->boot[k];
        rd.seq = w->seq[k] ? next_random(w) % (w->seq[k] + 1) : 0;
        return rd;
    default:
        w->seq[k] += 1 + next_random(w) % 3;
        break;
    }
    rd.boot = w->boot[k];
    rd.seq = w->seq[k];
    return rd;
}

static void save_load_round_trip(void **state)
{
    (void)state;
    /* max_devices below the workload's 64 devices, so eviction order matters too. */
    struct tg_dedup *dd = new_dedup(48);
    struct workload w;
    workload_init(&w, 0x9E3779B97F4A7C15u);
    for (int n = 0; n < 20000; n++) {
        struct tg_reading rd = workload_next(&w);
        tg_dedup_check(dd, &rd, NOW_MS + n);
    }
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    struct tg_dedup *restored = new_dedup(48);
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(restored), tg_dedup_devices(dd));
    assert_int_equal(tg_dedup_as_of_ms(restored), NOW_MS + 19999);

    /* Saving the restored state gives the same bytes. */
    uint8_t *again;
    size_t again_len;
    assert_int_equal(tg_dedup_save(restored, &again, &again_len), TG_OK);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, blob, len);
    free(again);

    /* And the same decisions from here on, evictions included. */
    size_t fresh = 0;
    for (int n = 0; n < 20000; n++) {
        struct tg_reading rd = workload_next(&w);
        bool a = tg_dedup_check(dd, &rd, NOW_MS);
        bool b = tg_dedup_check(restored, &rd, NOW_MS);
        assert_true(a == b);
        fresh += a;
    }
    assert_true(fresh > 1000 && fresh < 19000); /* the workload mixes both outcomes */

    /* A smaller table keeps the most recently seen devices of the snapshot. */
    struct tg_dedup *small = new_dedup(5);
    assert_int_equal(tg_dedup_load(small, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(small), 5);
    tg_dedup_destroy(small);

    /* An empty state round-trips too. */
    struct tg_dedup *empty = new_dedup(4);
    free(blob);
    assert_int_equal(tg_dedup_save(empty, &blob, &len), TG_OK);
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(restored), 0);
    free(blob);
    tg_dedup_destroy(empty);
    tg_dedup_destroy(restored);
    tg_dedup_destroy(dd);
}

/* CRC-32 (IEEE), to forge snapshots whose checksum is right but whose content is not. */
static uint32_t crc32_ieee(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return crc ^ 0xFFFFFFFFu;
}

static void fix_crc(uint8_t *blob, size_t len)
{
    uint32_t crc = crc32_ieee(blob, len - 4);
    for (int k = 0; k < 4; k++)
        blob[len - 4 + k] = (uint8_t)(crc >> (8 * k));
}

/* A state with every kind of entry, saved. */
static uint8_t *sample_snapshot(size_t *len)
{
    struct tg_dedup *dd = new_dedup(16);
    assert_true(native(dd, "n1", 1, 10));
    assert_true(native(dd, "n1", 1, 7));
    assert_true(native(dd, "n2", 4, 300));
    assert_true(native(dd, "n2", 5, 2)); /* with a previous boot */
    assert_true(senml(dd, "s1", NOW_MS));
    assert_true(senml(dd, "s1", NOW_MS - 700));
    assert_true(senml(dd, "s1", NOW_MS - 90000));
    uint8_t *blob;
    assert_int_equal(tg_dedup_save(dd, &blob, len), TG_OK);
    tg_dedup_destroy(dd);
    return blob;
}

static void assert_load_fails(struct tg_dedup *dd, const uint8_t *blob, size_t len)
{
    assert_int_equal(tg_dedup_load(dd, blob, len), TG_ERR_INTERNAL);
    assert_int_equal(tg_dedup_devices(dd), 0);
    assert_false(tg_dedup_dirty(dd));
    /* Still usable afterwards. */
    assert_true(native(dd, "n1", 1, 10));
    assert_true(tg_dedup_forget(dd, "n1"));
}

static void corrupt_snapshots(void **state)
{
    (void)state;
    size_t len;
    uint8_t *blob = sample_snapshot(&len);
    struct tg_dedup *dd = new_dedup(16);
    assert_int_equal(tg_dedup_load(dd, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(dd), 3);

    /* Every truncation, each copied to its own exact-size buffer so ASan sees overreads. */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut ? cut : 1);
        assert_non_null(part);
        memcpy(part, blob, cut);
        assert_load_fails(dd, part, cut);
        /* With the checksum recomputed, the parser itself must notice the truncation. */
        if (cut >= 12) {
            fix_crc(part, cut);
            assert_load_fails(dd, part, cut);
        }
        free(part);
    }
    /* Every single-byte change. */
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, blob, len);
        copy[i] ^= 0x5A;
        assert_load_fails(dd, copy, len);
    }
    /* Unknown version and reserved byte, with a correct checksum. */
    memcpy(copy, blob, len);
    copy[4] = 3;
    fix_crc(copy, len);
    assert_load_fails(dd, copy, len);
    memcpy(copy, blob, len);
    copy[5] = 1;
    fix_crc(copy, len);
    assert_load_fails(dd, copy, len);
    /* Trailing bytes after a valid body. */
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, blob, len - 4);
    longer[len - 4] = 0;
    fix_crc(longer, len + 1);
    assert_load_fails(dd, longer, len + 1);
    free(longer);
    /* Hand-made bodies with valid checksums: bad kind, duplicate device, bad id, a count
     * larger than the data, overlong varint, SenML offsets out of order. */
    static const char *const bodies[] = {
        "01 00 01 61 07 00 00 00",                   /* kind 7 */
        "02 00 01 61 01 01 01 00 00 01 61 01 01 01 00", /* "a" twice */
        "01 00 01 2f 01 01 01 00",                   /* id "/" */
        "01 00 00 01 01 01 00",                      /* empty id */
        "05 00 01 61 01 01 01 00",                   /* count 5, one device */
        "01 00 01 61 01 ff ff ff ff ff ff ff ff ff ff 01 01 00", /* varint past 64 bits */
        "01 00 01 61 03 00 02 05 00",                /* SenML offset step of 0 */
        "01 00 01 61 03 00 09 01 01 01 01 01 01 01 01 01", /* 9 remembered times */
        "01 00 01 61 02 05 01 00 06 00",             /* previous boot below 0 */
        "01 00 01 61 02 05 01 00 00 00",             /* previous boot equal to boot */
        "01 05 01 61 01 01 01 00",                   /* shares 5 bytes with nothing */
    };
    for (size_t b = 0; b < sizeof bodies / sizeof bodies[0]; b++) {
        uint8_t forged[64] = {'T', 'G', 'D', 'D', 1, 0, 0 /* as of 0 */};
        size_t n = 7;
        for (const char *h = bodies[b]; *h;) {
            if (*h == ' ') {
                h++;
                continue;
            }
            unsigned byte;
            assert_int_equal(sscanf(h, "%2x", &byte), 1);
            forged[n++] = (uint8_t)byte;
            h += 2;
        }
        n += 4;
        fix_crc(forged, n);
        assert_load_fails(dd, forged, n);
    }
    /* The same framing with a valid body loads, proving the forgeries fail for their reason. */
    uint8_t good[32] = {'T', 'G', 'D', 'D', 1, 0, 0, 0x01, 0x00, 0x01, 'a', 0x01, 0x01, 0x01, 0x00};
    fix_crc(good, 19);
    assert_int_equal(tg_dedup_load(dd, good, 19), TG_OK);
    assert_int_equal(tg_dedup_devices(dd), 1);
    assert_false(native(dd, "a", 1, 1));
    assert_true(native(dd, "a", 1, 2));

    /* Random bodies with valid framing: never a crash, never a partial state. */
    uint64_t rng = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t junk[48] = {'T', 'G', 'D', 'D', 1, 0};
        size_t n = 10 + (size_t)(iter % 38);
        for (size_t i = 6; i < n - 4; i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            junk[i] = (uint8_t)(rng % 5 == 0 ? rng >> 8 : rng % 4); /* small numbers mostly */
        }
        fix_crc(junk, n);
        tg_err err = tg_dedup_load(dd, junk, n);
        assert_true(err == TG_OK || err == TG_ERR_INTERNAL);
        if (err != TG_OK)
            assert_int_equal(tg_dedup_devices(dd), 0);
    }
    free(copy);
    free(blob);
    tg_dedup_destroy(dd);
}

/* Out-of-window readings are told from duplicates, and counted apart; a version 1 snapshot
 * (no device times) still loads. */
static void out_of_window_is_not_a_duplicate(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(16);
    struct tg_reading r = {.device = "d", .has_seq = true, .boot = 3, .seq = 1000,
                           .ts_ms = NOW_MS};
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_NEW);
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_DUPLICATE);
    r.seq = 1000 - TG_DEDUP_WINDOW - 1;
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_OUT_OF_WINDOW);
    r.boot = 1; /* an older boot, not newer in time */
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_OUT_OF_WINDOW);
    struct tg_dedup_stats st;
    tg_dedup_stats(dd, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.out_of_window, 2);
    assert_int_equal(st.new_epochs, 0);
    uint64_t from, to;
    assert_false(tg_dedup_last_epoch(dd, &from, &to));
    /* grace 0: any later second starts the epoch */
    tg_dedup_set_epoch_grace(dd, 0);
    r.ts_ms = NOW_MS + 1000;
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_NEW);
    tg_dedup_stats(dd, &st);
    assert_int_equal(st.new_epochs, 1);
    assert_true(tg_dedup_last_epoch(dd, &from, &to));
    assert_true(from == 3 && to == 1);
    /* the device time survives a snapshot */
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    assert_int_equal(blob[4], 2);
    struct tg_dedup *dd2 = new_dedup(16);
    assert_int_equal(tg_dedup_load(dd2, blob, len), TG_OK);
    r.boot = 0;
    r.ts_ms = NOW_MS + 500; /* not newer than boot 1's newest (NOW_MS + 1 s) */
    assert_int_equal(tg_dedup_classify(dd2, &r, NOW_MS), TG_DEDUP_OUT_OF_WINDOW);
    free(blob);
    tg_dedup_destroy(dd2);
    /* version 1: "TGDD" 1 0, as-of 0, one device "d", native boot 3 seq 10 window 0 */
    uint8_t v1[] = {'T', 'G', 'D', 'D', 1, 0, 0, 1, 0, 1, 'd', 1, 3, 10, 0, 0, 0, 0, 0};
    fix_crc(v1, sizeof v1);
    assert_int_equal(tg_dedup_load(dd, v1, sizeof v1), TG_OK);
    r = (struct tg_reading){.device = "d", .has_seq = true, .boot = 3, .seq = 10,
                            .ts_ms = NOW_MS};
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_DUPLICATE);
    r.seq = 11;
    assert_int_equal(tg_dedup_classify(dd, &r, NOW_MS), TG_DEDUP_NEW);
    tg_dedup_destroy(dd);
}

static void snapshot_size_10k_devices(void **state)
{
    (void)state;
    struct tg_dedup *dd = new_dedup(10000);
    char id[32];
    /* A long in-order history: every window full. */
    for (int round = 0; round < TG_DEDUP_WINDOW + 3; round++) {
        for (int k = 0; k < 10000; k++) {
            snprintf(id, sizeof id, "node-%05d", k);
            assert_true(native(dd, id, 7, 100000 + (uint64_t)round));
        }
    }
    assert_int_equal(tg_dedup_devices(dd), 10000);
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    /* Per device: 2 bytes of prefix coding, 1 new id byte (2 for every tenth), kind, boot,
     * 3 bytes of seq, 1 of window, 1 of newest time: 10.1 bytes measured. */
    assert_true(len <= 10000 * 11);
    struct tg_dedup *restored = new_dedup(10000);
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(restored), 10000);
    for (int k = 0; k < 10000; k += 97) {
        snprintf(id, sizeof id, "node-%05d", k);
        assert_false(native(restored, id, 7, 100002));
        assert_true(native(restored, id, 7, 100000 + TG_DEDUP_WINDOW + 3));
    }
    free(blob);
    tg_dedup_destroy(restored);
    tg_dedup_destroy(dd);
}

/* --- long ids ---------------------------------------------------------------------------- */

/* An id of exactly len bytes (len >= 6), distinct for each k: "<k>-xxx...". */
static void make_id(char id[TG_DEVICE_ID_MAX + 1], size_t len, unsigned k)
{
    int n = snprintf(id, TG_DEVICE_ID_MAX + 1, "%u-", k);
    assert_true(n > 0 && (size_t)n <= len && len <= TG_DEVICE_ID_MAX);
    memset(id + n, 'x', len - (size_t)n);
    id[len] = '\0';
}

static void long_ids_evict_forget_destroy(void **state)
{
    (void)state;
    char l[6][TG_DEVICE_ID_MAX + 1];
    for (unsigned k = 0; k < 6; k++)
        make_id(l[k], TG_DEVICE_ID_MAX, k);

    /* Eviction of long ids, and long and short ids taking each other's entries. */
    struct tg_dedup *dd = new_dedup(3);
    assert_true(native(dd, l[0], 1, 1));
    assert_true(native(dd, l[1], 1, 1));
    assert_true(native(dd, l[2], 1, 1));
    assert_false(native(dd, l[0], 1, 1));
    assert_true(native(dd, l[3], 1, 1)); /* evicts l[1] */
    assert_int_equal(tg_dedup_devices(dd), 3);
    assert_false(native(dd, l[0], 1, 1));
    assert_false(native(dd, l[2], 1, 1));
    assert_false(native(dd, l[3], 1, 1));
    assert_true(native(dd, l[1], 1, 1));  /* evicts l[0] */
    assert_true(native(dd, "short", 1, 1)); /* a short id in a long one's entry (l[2]) */
    assert_true(native(dd, l[4], 1, 1));    /* and back (evicts l[3]) */
    assert_false(native(dd, "short", 1, 1));
    assert_false(native(dd, l[1], 1, 1));
    assert_false(native(dd, l[4], 1, 1));
    assert_true(native(dd, l[2], 1, 1)); /* evicts "short", the least recently seen now */

    /* Forget: the copy is freed, the entry reused by either kind of id. */
    assert_true(tg_dedup_forget(dd, l[4]));
    assert_false(tg_dedup_forget(dd, l[4]));
    assert_false(tg_dedup_forget(dd, l[5]));
    assert_int_equal(tg_dedup_devices(dd), 2);
    assert_true(native(dd, l[4], 1, 1));
    assert_true(tg_dedup_forget(dd, l[4]));
    assert_true(native(dd, "s", 1, 1));
    assert_true(tg_dedup_forget(dd, "s"));
    assert_true(native(dd, l[5], 1, 1));
    assert_false(native(dd, l[1], 1, 1));
    assert_false(native(dd, l[2], 1, 1));
    assert_false(native(dd, l[5], 1, 1));
    tg_dedup_destroy(dd); /* with three long ids live: ASan checks they are freed */

    /* Every length 1..64, both sides of the inline limit: each tracked as itself. */
    dd = new_dedup(TG_DEVICE_ID_MAX);
    char id[TG_DEVICE_ID_MAX + 1];
    for (size_t len = 1; len <= TG_DEVICE_ID_MAX; len++) {
        memset(id, 'a' + (int)(len % 26), len);
        id[len] = '\0';
        assert_true(native(dd, id, 1, len));
    }
    for (size_t len = 1; len <= TG_DEVICE_ID_MAX; len++) {
        memset(id, 'a' + (int)(len % 26), len);
        id[len] = '\0';
        assert_false(native(dd, id, 1, len));
        if (len % 2)
            assert_true(tg_dedup_forget(dd, id));
    }
    assert_int_equal(tg_dedup_devices(dd), TG_DEVICE_ID_MAX / 2);
    /* A prefix of a tracked id, or the id one byte longer, is another device. */
    memset(id, 'a' + 40 % 26, 40);
    id[39] = '\0';
    assert_true(native(dd, id, 1, 40));
    tg_dedup_destroy(dd);

    /* Churn through a growing table, long and short ids mixed: the slab grows (rehashing
     * long ids by their kept hash) and evicts; the most recent 1000 are still known. */
    dd = new_dedup(1000);
    for (unsigned k = 0; k < 5000; k++) {
        make_id(id, k % 3 ? TG_DEVICE_ID_MAX - k % 40 : 10, k);
        assert_true(native(dd, id, 1, 1));
        assert_true(tg_dedup_devices(dd) <= 1000);
    }
    for (unsigned k = 4000; k < 5000; k++) {
        make_id(id, k % 3 ? TG_DEVICE_ID_MAX - k % 40 : 10, k);
        assert_false(native(dd, id, 1, 1));
    }
    make_id(id, TG_DEVICE_ID_MAX - 3999 % 40, 3999);
    assert_true(native(dd, id, 1, 1));
    tg_dedup_destroy(dd);
}

/*
 * Full 32-bit FNV-1a collisions, found offline: the same length and hash, different bytes.
 * The long pair is only told apart by comparing the copies.
 */
static const char COLLIDE_LONG_A[] =
    "urn.dev.building-07.floor-3.room-112.sensor-humidity00000001498b";
static const char COLLIDE_LONG_B[] =
    "urn.dev.building-07.floor-3.room-112.sensor-humidity0000000578b8";
static const char COLLIDE_SHORT_A[] = "sim-3298b";
static const char COLLIDE_SHORT_B[] = "sim-798b8";

/* The k-th id of length len (after skip earlier ones) whose hash has the same low bits
 * (mask) as COLLIDE_LONG_A's: it shares that id's bucket in a table of mask + 1 buckets. */
static void same_bucket_id(char id[TG_DEVICE_ID_MAX + 1], size_t len, uint32_t mask, unsigned skip)
{
    uint32_t want = tg_hash_fnv1a(COLLIDE_LONG_A, strlen(COLLIDE_LONG_A)) & mask;
    for (unsigned k = 0;; k++) {
        make_id(id, len, k);
        if ((tg_hash_fnv1a(id, len) & mask) == want && skip-- == 0)
            return;
    }
}

static void hash_collisions_mixed_lengths(void **state)
{
    (void)state;
    assert_int_equal(strlen(COLLIDE_LONG_A), TG_DEVICE_ID_MAX);
    assert_int_equal(tg_hash_fnv1a(COLLIDE_LONG_A, TG_DEVICE_ID_MAX),
                     tg_hash_fnv1a(COLLIDE_LONG_B, TG_DEVICE_ID_MAX));
    assert_int_equal(tg_hash_fnv1a(COLLIDE_SHORT_A, 9), tg_hash_fnv1a(COLLIDE_SHORT_B, 9));

    /* 3 devices: 4 buckets (mask 3), all of these in one chain. */
    char s1[TG_DEVICE_ID_MAX + 1], s2[TG_DEVICE_ID_MAX + 1], l1[TG_DEVICE_ID_MAX + 1];
    same_bucket_id(s1, 8, 3, 0);
    same_bucket_id(s2, 8, 3, 1);
    same_bucket_id(l1, 40, 3, 0);
    struct tg_dedup *dd = new_dedup(3);
    assert_true(native(dd, COLLIDE_LONG_A, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_true(native(dd, s1, 1, 1));
    assert_false(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_false(native(dd, COLLIDE_LONG_A, 1, 1));
    assert_false(native(dd, s1, 1, 1));
    assert_true(native(dd, l1, 1, 1)); /* evicts B, in the middle of the chain s1, B, A */
    assert_false(native(dd, COLLIDE_LONG_A, 1, 1));
    assert_false(native(dd, s1, 1, 1));
    assert_false(native(dd, l1, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_B, 1, 1)); /* evicts A, its twin */
    assert_false(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_true(tg_dedup_forget(dd, s1));
    assert_false(tg_dedup_forget(dd, COLLIDE_LONG_A));
    assert_true(native(dd, s2, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_A, 1, 1)); /* evicts l1 */
    assert_true(tg_dedup_forget(dd, COLLIDE_LONG_B));
    assert_false(native(dd, COLLIDE_LONG_A, 1, 1));
    assert_false(native(dd, s2, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_int_equal(tg_dedup_devices(dd), 3);

    /* The colliding pairs and their chain survive a snapshot. */
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    struct tg_dedup *restored = new_dedup(3);
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    assert_false(native(restored, COLLIDE_LONG_A, 1, 1));
    assert_false(native(restored, COLLIDE_LONG_B, 1, 1));
    assert_false(native(restored, s2, 1, 1));
    assert_true(native(restored, s1, 1, 1));
    free(blob);
    tg_dedup_destroy(restored);
    tg_dedup_destroy(dd);

    /* Both pairs, and short and long ids of one bucket, in a table that grows past them. */
    dd = new_dedup(2000);
    assert_true(native(dd, COLLIDE_SHORT_A, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_A, 1, 1));
    char id[TG_DEVICE_ID_MAX + 1];
    for (unsigned k = 0; k < 1500; k++) {
        make_id(id, k % 2 ? 12 : 50, k);
        assert_true(native(dd, id, 1, 1));
    }
    assert_true(native(dd, COLLIDE_SHORT_B, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_false(native(dd, COLLIDE_SHORT_A, 1, 1));
    assert_false(native(dd, COLLIDE_SHORT_B, 1, 1));
    assert_false(native(dd, COLLIDE_LONG_A, 1, 1));
    assert_false(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_true(tg_dedup_forget(dd, COLLIDE_LONG_A));
    assert_false(native(dd, COLLIDE_LONG_B, 1, 1));
    assert_true(native(dd, COLLIDE_LONG_A, 1, 1));
    tg_dedup_destroy(dd);
}

/*
 * A snapshot written by the dedup before long ids moved out of the entry (120-byte entries,
 * every id inline): a 64-byte id with a previous boot, a 48-byte SenML id sharing its prefix,
 * and a short one. Made by: 64-byte id native (2, 40), (3, 5), (3, 3); the 48-byte id SenML
 * NOW_MS, NOW_MS - 1000; "sim-00042" native (1, 7); saved with as-of NOW_MS.
 */
static const uint8_t OLD_SNAPSHOT[] = {
    0x54, 0x47, 0x44, 0x44, 0x01, 0x00, 0x80, 0xa0, 0xab, 0xfe, 0xf9, 0x62,
    0x03, 0x00, 0x40, 0x75, 0x72, 0x6e, 0x2e, 0x64, 0x65, 0x76, 0x2e, 0x62,
    0x75, 0x69, 0x6c, 0x64, 0x69, 0x6e, 0x67, 0x2d, 0x30, 0x37, 0x2e, 0x66,
    0x6c, 0x6f, 0x6f, 0x72, 0x2d, 0x33, 0x2e, 0x72, 0x6f, 0x6f, 0x6d, 0x2d,
    0x31, 0x31, 0x32, 0x2e, 0x73, 0x65, 0x6e, 0x73, 0x6f, 0x72, 0x2d, 0x68,
    0x75, 0x6d, 0x69, 0x64, 0x69, 0x74, 0x79, 0x30, 0x30, 0x30, 0x30, 0x30,
    0x30, 0x30, 0x31, 0x34, 0x39, 0x38, 0x62, 0x02, 0x03, 0x05, 0x02, 0x01,
    0x28, 0x2c, 0x04, 0x74, 0x65, 0x6d, 0x70, 0x03, 0x80, 0xa0, 0xab, 0xfe,
    0xf9, 0x62, 0x01, 0xe8, 0x07, 0x00, 0x09, 0x73, 0x69, 0x6d, 0x2d, 0x30,
    0x30, 0x30, 0x34, 0x32, 0x01, 0x01, 0x07, 0x00, 0xcf, 0x30, 0x17, 0x28,
};

/* The k-th of 150 distinct ids, of length 1 + k % 64. */
static void any_length_id(char id[TG_DEVICE_ID_MAX + 1], unsigned k)
{
    size_t n = 1 + k % TG_DEVICE_ID_MAX;
    if (n < 6) {
        memset(id, 'a' + (int)(k % 26), n);
        id[n] = '\0';
    } else {
        make_id(id, n, k);
    }
}

static void long_ids_save_load(void **state)
{
    (void)state;
    /* The old (version 1) snapshot loads, saves as version 2 with one byte more per native
     * device (the newest time, unknown), reloads, and decides as it did. */
    struct tg_dedup *dd = new_dedup(8);
    assert_int_equal(tg_dedup_load(dd, OLD_SNAPSHOT, sizeof OLD_SNAPSHOT), TG_OK);
    assert_int_equal(tg_dedup_devices(dd), 3);
    assert_int_equal(tg_dedup_as_of_ms(dd), NOW_MS);
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    assert_int_equal(blob[4], 2);
    assert_true(len > sizeof OLD_SNAPSHOT && len <= sizeof OLD_SNAPSHOT + 3);
    assert_int_equal(tg_dedup_load(dd, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(dd), 3);
    free(blob);
    const char *l64 = COLLIDE_LONG_A;
    const char *l48 = "urn.dev.building-07.floor-3.room-112.sensor-temp";
    assert_false(native(dd, l64, 3, 5));
    assert_false(native(dd, l64, 3, 3));
    assert_true(native(dd, l64, 3, 4));
    assert_false(native(dd, l64, 2, 40));
    assert_true(native(dd, l64, 2, 41)); /* the previous boot's tail */
    assert_false(senml(dd, l48, NOW_MS));
    assert_false(senml(dd, l48, NOW_MS - 1000));
    assert_true(senml(dd, l48, NOW_MS - 500));
    assert_false(native(dd, "sim-00042", 1, 7));
    assert_true(native(dd, "sim-00042", 1, 8));

    /* Ids of every length, long ones sharing long prefixes, through a round trip. */
    struct tg_dedup *big = new_dedup(200);
    char id[TG_DEVICE_ID_MAX + 1];
    for (unsigned k = 0; k < 150; k++) {
        any_length_id(id, k);
        if (k % 2)
            assert_true(senml(big, id, NOW_MS + k));
        else
            assert_true(native(big, id, 1 + k % 3, k));
    }
    assert_int_equal(tg_dedup_save(big, &blob, &len), TG_OK);
    struct tg_dedup *restored = new_dedup(200);
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(restored), 150);
    uint8_t *again;
    size_t again_len;
    assert_int_equal(tg_dedup_save(restored, &again, &again_len), TG_OK);
    assert_int_equal(again_len, len);
    assert_memory_equal(again, blob, len);
    free(again);
    for (unsigned k = 0; k < 150; k++) {
        any_length_id(id, k);
        if (k % 2)
            assert_false(senml(restored, id, NOW_MS + k));
        else
            assert_false(native(restored, id, 1 + k % 3, k));
    }

    /* Loading over a state holding long ids frees them; so does a failed load, and a load
     * into a smaller table evicts the oldest (long ones among them). */
    assert_int_equal(tg_dedup_load(dd, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(dd), 8);
    blob[len / 2] ^= 1;
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_ERR_INTERNAL);
    assert_int_equal(tg_dedup_devices(restored), 0);
    blob[len / 2] ^= 1;
    assert_int_equal(tg_dedup_load(restored, blob, len), TG_OK);
    free(blob);
    tg_dedup_destroy(restored);
    tg_dedup_destroy(big);
    tg_dedup_destroy(dd);
}

#if TEST_OOM
/* Makes malloc fail until unstarve(): caps the address space at what is mapped now plus 1 MB,
 * then takes every heap block a copy of up to 64 bytes could use (every malloc size class up
 * to 64), listed through their first word. Nothing else may allocate meanwhile. */
struct starved {
    struct rlimit old;
    void *blocks;
};

static void starve(struct starved *st)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long pages;
    assert_int_equal(fscanf(f, "%lu", &pages), 1);
    fclose(f);
    assert_int_equal(getrlimit(RLIMIT_AS, &st->old), 0);
    struct rlimit cap = {.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (1u << 20),
                         .rlim_max = st->old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_AS, &cap), 0);
    st->blocks = NULL;
    for (size_t size = TG_DEVICE_ID_MAX; size >= sizeof(void *); size -= 8) {
        void **b;
        while ((b = malloc(size)) != NULL) {
            *b = st->blocks;
            st->blocks = b;
        }
    }
}

static void unstarve(struct starved *st)
{
    assert_int_equal(setrlimit(RLIMIT_AS, &st->old), 0);
    while (st->blocks) {
        void **b = st->blocks;
        st->blocks = *b;
        free(b);
    }
}
#endif

static void long_id_out_of_memory(void **state)
{
    (void)state;
#if TEST_OOM
    char l[3][TG_DEVICE_ID_MAX + 1];
    for (unsigned k = 0; k < 3; k++)
        make_id(l[k], TG_DEVICE_ID_MAX - 10 * k, k);
    struct tg_dedup *dd = new_dedup(2);
    assert_true(native(dd, l[0], 1, 1));
    assert_true(native(dd, l[1], 1, 1));
    uint8_t *blob;
    size_t len;
    assert_int_equal(tg_dedup_save(dd, &blob, &len), TG_OK);
    struct tg_dedup *other = new_dedup(2);

    struct starved st;
    starve(&st);
    /* Assertions wait until memory is back: cmocka may allocate to report. */
    bool fresh_1 = native(dd, l[2], 1, 1);
    bool fresh_2 = native(dd, l[2], 1, 1);
    size_t devices = tg_dedup_devices(dd);
    bool dirty = tg_dedup_dirty(dd);
    bool dup_0 = native(dd, l[0], 1, 1);
    bool dup_1 = native(dd, l[1], 1, 1);
    tg_err load_err = tg_dedup_load(other, blob, len);
    size_t other_devices = tg_dedup_devices(other);
    bool short_fresh = native(dd, "short", 1, 1); /* needs no memory (evicts l[0]) */
    unstarve(&st);

    /* Let through, untracked, and nothing evicted or changed to make room. */
    assert_true(fresh_1);
    assert_true(fresh_2);
    assert_int_equal(devices, 2);
    assert_false(dirty);
    assert_false(dup_0);
    assert_false(dup_1);
    assert_int_equal(load_err, TG_ERR_NOMEM);
    assert_int_equal(other_devices, 0);
    assert_true(short_fresh);
    /* With memory back, all as usual. */
    assert_true(native(dd, l[2], 1, 1));
    assert_false(native(dd, l[2], 1, 1));
    assert_false(native(dd, "short", 1, 1));
    assert_int_equal(tg_dedup_load(other, blob, len), TG_OK);
    assert_int_equal(tg_dedup_devices(other), 2);
    free(blob);
    tg_dedup_destroy(other);
    tg_dedup_destroy(dd);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_rejects_bad_sizes),
        cmocka_unit_test(in_order_and_redelivery),
        cmocka_unit_test(out_of_order_within_window),
        cmocka_unit_test(too_old_is_duplicate),
        cmocka_unit_test(boot_change_and_late_previous_boot),
        cmocka_unit_test(boot_going_back_starts_a_new_epoch),
        cmocka_unit_test(a_reboot_with_a_clock_stepped_back_is_a_restart),
        cmocka_unit_test(senml_by_ts),
        cmocka_unit_test(senml_window_edges),
        cmocka_unit_test(senml_pack_any_order),
        cmocka_unit_test(format_switch_starts_afresh),
        cmocka_unit_test(lru_eviction),
        cmocka_unit_test(forget_device),
        cmocka_unit_test(dirty_flag),
        cmocka_unit_test(save_load_round_trip),
        cmocka_unit_test(corrupt_snapshots),
        cmocka_unit_test(snapshot_size_10k_devices),
        cmocka_unit_test(out_of_window_is_not_a_duplicate),
        cmocka_unit_test(long_ids_evict_forget_destroy),
        cmocka_unit_test(hash_collisions_mixed_lengths),
        cmocka_unit_test(long_ids_save_load),
        cmocka_unit_test(long_id_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
