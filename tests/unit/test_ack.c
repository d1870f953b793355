/* Unit tests for the gateway's acker (gateway/ack.h): a reading is acknowledged only once it
 * is durable (a commit below its rid, or Kafka's confirmation), never when the gateway
 * dropped it; per device one message per flush, only when the view moved or a repeat asks
 * for it, never sooner than the minimum interval; gaps become ranges, too many gaps fold the
 * oldest; a new boot starts afresh; repeats of unknown readings count only when trusted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ack.h"

struct sent {
    char topic[200];
    struct tg_ack_msg msg;
};

static struct sent sent[64];
static size_t n_sent;

static int capture(void *ud, const char *topic, const uint8_t *payload, size_t len)
{
    (void)ud;
    assert_true(n_sent < 64);
    snprintf(sent[n_sent].topic, sizeof sent[n_sent].topic, "%s", topic);
    assert_int_equal(tg_ack_msg_decode(payload, len, &sent[n_sent].msg), 0);
    n_sent++;
    return 0;
}

static struct tg_acker *new_acker(int64_t min_interval_ms, bool trust)
{
    struct tg_acker *ak;
    struct tg_ack_opts o = {.topic_prefix = "ack/", .min_interval_ms = min_interval_ms,
                            .max_devices = 4, .trust_repeats = trust};
    assert_int_equal(tg_acker_new(&o, NULL, &ak), TG_OK);
    tg_acker_set_publisher(ak, capture, NULL);
    n_sent = 0;
    return ak;
}

static void track(struct tg_acker *ak, const char *dev, uint64_t boot, uint64_t seq, uint64_t rid)
{
    tg_acker_track(ak, dev, strlen(dev), boot, seq, rid);
}

static void repeat(struct tg_acker *ak, const char *dev, uint64_t boot, uint64_t seq)
{
    tg_acker_repeat(ak, dev, strlen(dev), boot, seq);
}

static void only_durable_readings_are_acknowledged(void **state)
{
    (void)state;
    struct tg_acker *ak = new_acker(0, false);
    for (uint64_t s = 0; s < 5; s++)
        track(ak, "d1", 1, s, 100 + s);
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 0); /* nothing durable yet */

    tg_acker_lost(ak, 101);      /* seq 1 dropped by the gateway */
    tg_acker_confirmed(ak, 103); /* seq 3 confirmed by Kafka */
    tg_acker_flush(ak, 10);
    assert_int_equal(n_sent, 1);
    assert_string_equal(sent[0].topic, "ack/d1");
    assert_int_equal(sent[0].msg.boot, 1);
    assert_false(sent[0].msg.has_upto);
    assert_int_equal(sent[0].msg.n_ranges, 1);
    assert_int_equal(sent[0].msg.ranges[0].lo, 3);

    /* a commit stored everything below rid 105: all but the lost seq 1 */
    tg_acker_durable_below(ak, 105);
    tg_acker_flush(ak, 20);
    assert_int_equal(n_sent, 2);
    struct tg_ack_msg *m = &sent[1].msg;
    assert_true(m->has_upto);
    assert_int_equal(m->upto, 0);
    assert_int_equal(m->n_ranges, 1);
    assert_int_equal(m->ranges[0].lo, 2);
    assert_int_equal(m->ranges[0].hi, 4);
    assert_false(tg_ack_msg_covers(m, 1, 1));

    /* nothing moved: no message */
    tg_acker_flush(ak, 30);
    assert_int_equal(n_sent, 2);
    /* the node resends seq 1 (new again for the pipeline): once durable, the gap closes */
    track(ak, "d1", 1, 1, 200);
    tg_acker_durable_below(ak, 201);
    tg_acker_flush(ak, 40);
    assert_int_equal(n_sent, 3);
    assert_true(sent[2].msg.has_upto);
    assert_int_equal(sent[2].msg.upto, 4);
    assert_int_equal(sent[2].msg.n_ranges, 0);
    tg_acker_destroy(ak);
}

static void coalesced_per_device_with_a_minimum_interval(void **state)
{
    (void)state;
    struct tg_acker *ak = new_acker(100, false);
    uint64_t rid = 1;
    for (uint64_t s = 0; s < 10; s++) {
        track(ak, "a", 7, s, rid++);
        track(ak, "b", 3, s, rid++);
    }
    tg_acker_durable_below(ak, rid);
    tg_acker_flush(ak, 1000);
    assert_int_equal(n_sent, 2); /* one per device for 20 readings */
    track(ak, "a", 7, 10, rid++);
    tg_acker_durable_below(ak, rid);
    tg_acker_flush(ak, 1050); /* too soon for a */
    assert_int_equal(n_sent, 2);
    tg_acker_flush(ak, 1100);
    assert_int_equal(n_sent, 3);
    assert_string_equal(sent[2].topic, "ack/a");
    assert_int_equal(sent[2].msg.upto, 10);

    /* a repeat of a durable reading asks for the ack again, without a move */
    repeat(ak, "b", 3, 4);
    tg_acker_flush(ak, 1200);
    assert_int_equal(n_sent, 4);
    assert_string_equal(sent[3].topic, "ack/b");
    assert_int_equal(sent[3].msg.upto, 9);
    tg_acker_destroy(ak);
}

static void gaps_new_boots_and_repeats(void **state)
{
    (void)state;
    struct tg_acker *ak = new_acker(0, false);
    uint64_t rid = 1;
    /* seqs 10, 12, 14, 16, 18, 20: six ranges, no cumulative point (a restarted gateway) */
    for (uint64_t s = 10; s <= 20; s += 2)
        track(ak, "g", 2, s, rid++);
    tg_acker_durable_below(ak, rid);
    tg_acker_flush(ak, 0);
    struct tg_ack_msg *m = &sent[n_sent - 1].msg;
    assert_int_equal(m->n_ranges, TG_ACK_MAX_RANGES);
    assert_true(m->has_upto); /* the two oldest gaps were folded */
    assert_int_equal(m->upto, 12);
    assert_int_equal(m->ranges[0].lo, 14);
    struct tg_acker_stats st;
    tg_acker_stats(ak, &st);
    assert_int_equal(st.gaps_skipped, 2);

    /* a repeat of an unknown reading is not trusted here */
    repeat(ak, "g", 2, 30);
    repeat(ak, "h", 1, 0);
    tg_acker_flush(ak, 10);
    size_t before = n_sent;
    assert_false(tg_acker_view(ak, "h", m));

    /* a new boot starts afresh; an older boot's late reading changes nothing */
    track(ak, "g", 3, 0, rid++);
    track(ak, "g", 2, 21, rid++);
    tg_acker_durable_below(ak, rid);
    tg_acker_flush(ak, 20);
    assert_int_equal(n_sent, before + 1);
    m = &sent[n_sent - 1].msg;
    assert_int_equal(m->boot, 3);
    assert_int_equal(m->upto, 0);
    assert_int_equal(m->n_ranges, 0);
    tg_acker_destroy(ak);

    /* trusted (journal.mode = durable): a repeat nobody waits for is durable */
    ak = new_acker(0, true);
    track(ak, "t", 1, 5, 1); /* waiting */
    repeat(ak, "t", 1, 5);
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 0); /* waiting for its commit */
    repeat(ak, "t", 1, 2);
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 1);
    assert_true(tg_ack_msg_covers(&sent[0].msg, 1, 2));
    assert_false(tg_ack_msg_covers(&sent[0].msg, 1, 5));
    /* a device one of whose readings was refused on arrival: its repeats are not trusted */
    tg_acker_refused(ak, "t", 1);
    repeat(ak, "t", 1, 3);
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 1);
    tg_acker_destroy(ak);
}

/* Spill mode (repeats not trusted): after a restart a reading the read-back found in Kafka
 * is acknowledged (tg_acker_settle), and so is its repeat; a repeat of any other reading
 * is not, since the dedup window may remember a reading that died in memory with the
 * gateway: that node keeps resending it until its outbox drops it (README, "After a
 * gateway restart"). */
static void spill_acknowledges_what_kafka_holds_only(void **state)
{
    (void)state;
    struct tg_acker *ak = new_acker(0, false);
    tg_acker_settle(ak, "s", 1, 1, 7);
    repeat(ak, "s", 1, 9); /* remembered by the window, unknown here */
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 1);
    assert_true(tg_ack_msg_covers(&sent[0].msg, 1, 7));
    assert_false(tg_ack_msg_covers(&sent[0].msg, 1, 9));
    repeat(ak, "s", 1, 7); /* the node missed the ack: sent again */
    tg_acker_flush(ak, 1);
    assert_int_equal(n_sent, 2);
    assert_true(tg_ack_msg_covers(&sent[1].msg, 1, 7));
    assert_false(tg_ack_msg_covers(&sent[1].msg, 1, 9));
    tg_acker_destroy(ak);
}

static void bounded_devices_and_a_growing_ring(void **state)
{
    (void)state;
    struct tg_acker *ak = new_acker(0, false);
    char id[16];
    for (int d = 0; d < 6; d++) {
        snprintf(id, sizeof id, "dev-%d", d);
        for (uint64_t s = 0; s < 1000; s++)
            track(ak, id, 1, s, (uint64_t)d * 1000 + s + 1);
    }
    struct tg_acker_stats st;
    tg_acker_stats(ak, &st);
    assert_int_equal(st.devices, 4);
    assert_int_equal(st.untracked, 2000);
    assert_int_equal(st.readings_waiting, 4000);
    tg_acker_confirmed(ak, 2500); /* dev-2 seq 499 */
    tg_acker_durable_below(ak, 2000);
    tg_acker_flush(ak, 0);
    assert_int_equal(n_sent, 3);
    assert_string_equal(sent[0].topic, "ack/dev-2"); /* due first */
    assert_int_equal(sent[0].msg.n_ranges, 1);
    assert_int_equal(sent[0].msg.ranges[0].lo, 499);
    assert_int_equal(sent[1].msg.upto, 999);
    tg_acker_durable_below(ak, UINT64_MAX);
    tg_acker_stats(ak, &st);
    assert_int_equal(st.readings_waiting, 0);
    tg_acker_destroy(ak);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(only_durable_readings_are_acknowledged),
        cmocka_unit_test(coalesced_per_device_with_a_minimum_interval),
        cmocka_unit_test(gaps_new_boots_and_repeats),
        cmocka_unit_test(spill_acknowledges_what_kafka_holds_only),
        cmocka_unit_test(bounded_devices_and_a_growing_ring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
