/* Unit tests for durable acknowledgements (design.md 5.7, issue 12): the ack message's codec
 * (common/ack_msg.h) and what the firmware core does with acks (firmware/core/node.h with
 * durable_acks): PUBACK no longer releases, an ack releases exactly what it covers of the
 * current boot, the oldest reading's ack timeout resends everything unacknowledged, and a
 * reconnect does too. */
#include "ack_msg.h"
#include "codec.h"
#include "test_node_fake.h"

static struct tg_decoder *dec;

static int setup(void **state)
{
    (void)state;
    dec = tg_decoder_new(NULL);
    return dec ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_decoder_destroy(dec);
    return 0;
}

static uint64_t pub_seq(const struct fake *fk, size_t i)
{
    assert_true(i < fk->n_pubs);
    struct tg_decoded out;
    assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_NATIVE, "node-01", fk->pubs[i].payload,
                                       fk->pubs[i].len, fk->wall_ms, &out),
                     TG_OK);
    return out.readings[0].seq;
}

/* --- the message ------------------------------------------------------------------------- */

static void msg_round_trips(void **state)
{
    (void)state;
    const struct tg_ack_msg cases[] = {
        {.boot = 1},
        {.boot = 7, .has_upto = true, .upto = 0},
        {.boot = UINT64_MAX, .has_upto = true, .upto = UINT64_MAX - 1},
        {.boot = 300, .has_upto = true, .upto = 70000, .n_ranges = 2,
         .ranges = {{70002, 70010}, {0x100000000ull, 0x100000005ull}}},
        {.boot = 2, .n_ranges = TG_ACK_MAX_RANGES,
         .ranges = {{5, 5}, {7, 23}, {25, 255}, {257, 65536}}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[TG_ACK_MSG_MAX_BYTES];
        size_t len = tg_ack_msg_encode(&cases[i], buf, sizeof buf);
        assert_true(len > 0);
        struct tg_ack_msg back;
        assert_int_equal(tg_ack_msg_decode(buf, len, &back), 0);
        assert_memory_equal(&back, &cases[i], sizeof back);
        /* every shorter prefix is refused, and so is a trailing byte */
        for (size_t cut = 0; cut < len; cut++)
            assert_int_equal(tg_ack_msg_decode(buf, cut, &back), -1);
        buf[len] = 0;
        assert_int_equal(tg_ack_msg_decode(buf, len + 1, &back), -1);
        /* too small a buffer: 0, never a partial message */
        assert_int_equal(tg_ack_msg_encode(&cases[i], buf, len - 1), 0);
    }
    /* the exact bytes of a small one: {"b": 3, "s": 24} */
    uint8_t buf[16];
    struct tg_ack_msg m = {.boot = 3, .has_upto = true, .upto = 24};
    static const uint8_t want[] = {0xa2, 0x61, 'b', 0x03, 0x61, 's', 0x18, 24};
    assert_int_equal(tg_ack_msg_encode(&m, buf, sizeof buf), sizeof want);
    assert_memory_equal(buf, want, sizeof want);
}

static void msg_refuses_what_is_not_an_ack(void **state)
{
    (void)state;
    struct tg_ack_msg out;
    static const struct {
        const char *what;
        uint8_t bytes[16];
        size_t len;
    } bad[] = {
        {"no boot", {0xa1, 0x61, 's', 0x01}, 4},
        {"not a map", {0x83, 0x01, 0x02, 0x03}, 4},
        {"negative boot", {0xa1, 0x61, 'b', 0x20}, 4},
        {"range lo > hi", {0xa2, 0x61, 'b', 0x01, 0x61, 'x', 0x81, 0x82, 0x05, 0x04}, 10},
        {"range of three", {0xa2, 0x61, 'b', 0x01, 0x61, 'x', 0x81, 0x83, 1, 2, 3}, 11},
        {"too many ranges", {0xa2, 0x61, 'b', 0x01, 0x61, 'x', 0x85}, 7},
        {"indefinite map", {0xbf, 0x61, 'b', 0x01, 0xff}, 5},
        {"unknown key, array value", {0xa2, 0x61, 'b', 0x01, 0x61, 'z', 0x80}, 7},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tg_ack_msg_decode(bad[i].bytes, bad[i].len, &out) != -1)
            fail_msg("accepted: %s", bad[i].what);
    /* an unknown key with a simple value is skipped */
    static const uint8_t later[] = {0xa2, 0x61, 'b', 0x02, 0x62, 'v', '2', 0x05};
    assert_int_equal(tg_ack_msg_decode(later, sizeof later, &out), 0);
    assert_int_equal(out.boot, 2);
    assert_false(out.has_upto);

    struct tg_ack_msg m = {.boot = 4, .has_upto = true, .upto = 9, .n_ranges = 1,
                           .ranges = {{12, 14}}};
    assert_true(tg_ack_msg_covers(&m, 4, 0));
    assert_true(tg_ack_msg_covers(&m, 4, 9));
    assert_false(tg_ack_msg_covers(&m, 4, 10));
    assert_true(tg_ack_msg_covers(&m, 4, 12));
    assert_true(tg_ack_msg_covers(&m, 4, 14));
    assert_false(tg_ack_msg_covers(&m, 4, 15));
    assert_false(tg_ack_msg_covers(&m, 3, 0));
}

/* --- the node ---------------------------------------------------------------------------- */

static const struct tg_node_config acks_cfg = {
    .device_id = "node-01", .outbox_slots = 16, .durable_acks = true, .ack_timeout_ms = 5000};

static struct tg_node *started_node(union fake_storage *st, struct fake *fk,
                                    struct fake_sensor *fs, const struct tg_node_config *cfg)
{
    struct tg_node *node = fake_node(st, fk, cfg);
    fake_sensor_setup(fs);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, fs, 0x76, 100), 0);
    assert_int_equal(tg_node_start(node), 0);
    tg_node_transport_up(node);
    return node;
}

/* Takes n readings, 100 ms apart, each published as it is taken. */
static void take(struct fake *fk, struct tg_node *node, int n)
{
    for (int i = 0; i < n; i++) {
        tg_node_poll(node);
        fake_advance(fk, 100);
    }
}

static int ack(struct tg_node *node, const struct tg_ack_msg *m)
{
    uint8_t buf[TG_ACK_MSG_MAX_BYTES];
    size_t len = tg_ack_msg_encode(m, buf, sizeof buf);
    assert_true(len > 0);
    return tg_node_ack_received(node, buf, len);
}

static unsigned outbox_used(const struct tg_node *node)
{
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    return stats.outbox_used;
}

static void puback_keeps_and_ack_releases_what_it_covers(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs, &acks_cfg);
    uint64_t boot = tg_node_boot(node);
    take(&fk, node, 8);
    assert_int_equal(fk.n_pubs, 8);
    for (size_t i = 0; i < fk.n_pubs; i++)
        tg_node_transport_acked(node, fk.pubs[i].token);
    uint64_t seqs[16];
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_RELEASED, seqs, 16), 0);
    assert_int_equal(outbox_used(node), 8);

    /* another boot's ack, and bytes that are no ack, release nothing */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot - 1, .has_upto = true,
                                                    .upto = 100}),
                     0);
    assert_int_equal(tg_node_ack_received(node, (const uint8_t *)"\x01", 1), -1);
    assert_int_equal(outbox_used(node), 8);

    /* up to 2, and 5..6: 3, 4 and 7 stay */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .has_upto = true, .upto = 2,
                                                    .n_ranges = 1, .ranges = {{5, 6}}}),
                     0);
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_RELEASED, seqs, 16), 5);
    static const uint64_t want[] = {0, 1, 2, 5, 6};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(seqs[i], want[i]);
    assert_int_equal(outbox_used(node), 3);
    /* the same ack again: nothing more */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .has_upto = true, .upto = 2}),
                     0);
    assert_int_equal(outbox_used(node), 3);

    /* a reconnect sends what is left, oldest first, and an ack releases unsent ones too */
    tg_node_transport_down(node);
    size_t before = fk.n_pubs;
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .has_upto = true, .upto = 3}),
                     0);
    tg_node_transport_up(node);
    assert_int_equal(fk.n_pubs - before, 2);
    assert_int_equal(pub_seq(&fk, before), 4);
    assert_int_equal(pub_seq(&fk, before + 1), 7);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.acks, 4);
    assert_int_equal(stats.released, 6);
    assert_int_equal(stats.resent, 2);
}

static void ack_timeout_resends_everything_unacknowledged(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs, &acks_cfg);
    uint64_t boot = tg_node_boot(node);
    take(&fk, node, 4); /* seq 0 published at t0, 3 at t0 + 300; now t0 + 400 */
    tg_node_stop_sampling(node);
    assert_int_equal(fk.n_pubs, 4);

    /* 1..2 acknowledged: the oldest, 0, still waits, so its deadline (t0 + 5000) holds */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .n_ranges = 1,
                                                    .ranges = {{1, 2}}}),
                     0);
    fake_advance(&fk, 4500);
    uint32_t wait = tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 4);
    assert_true(wait > 0 && wait <= 100); /* the port is woken for the deadline */
    fake_advance(&fk, wait);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 6);
    assert_int_equal(pub_seq(&fk, 4), 0);
    assert_int_equal(pub_seq(&fk, 5), 3);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.ack_timeouts, 1);
    assert_int_equal(stats.resent, 2);

    /* 0 acknowledged: 3 is the oldest now, with a deadline of its own from now */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .has_upto = true, .upto = 2}),
                     0);
    fake_advance(&fk, 4900);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 6);
    fake_advance(&fk, 100);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 7);
    assert_int_equal(pub_seq(&fk, 6), 3);

    /* all acknowledged: nothing waits, nothing is sent however long nothing comes */
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = boot, .has_upto = true, .upto = 3}),
                     0);
    assert_int_equal(outbox_used(node), 0);
    fake_advance(&fk, 60000);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 7);
}

static void acks_off_keeps_the_puback_release(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node_config cfg = acks_cfg;
    cfg.durable_acks = false;
    struct tg_node *node = started_node(&st, &fk, &fs, &cfg);
    take(&fk, node, 3);
    assert_int_equal(ack(node, &(struct tg_ack_msg){.boot = tg_node_boot(node),
                                                    .has_upto = true, .upto = 10}),
                     0);
    assert_int_equal(outbox_used(node), 3);
    for (size_t i = 0; i < fk.n_pubs; i++)
        tg_node_transport_acked(node, fk.pubs[i].token);
    assert_int_equal(outbox_used(node), 0);
    /* no resend however long nothing comes: PUBACK was the confirmation */
    take(&fk, node, 1);
    size_t before = fk.n_pubs;
    fake_advance(&fk, 60000);
    tg_node_poll(node);
    assert_true(fk.n_pubs <= before + 1); /* at most the one new reading */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(msg_round_trips),
        cmocka_unit_test(msg_refuses_what_is_not_an_ack),
        cmocka_unit_test(puback_keeps_and_ack_releases_what_it_covers),
        cmocka_unit_test(ack_timeout_resends_everything_unacknowledged),
        cmocka_unit_test(acks_off_keeps_the_puback_release),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
