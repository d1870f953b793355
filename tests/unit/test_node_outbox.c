/* Unit tests for the firmware core's outbox (firmware/core/outbox.h) on its own, and for what
 * a node does with it when it overflows: the oldest reading is dropped and reported, the
 * order of the rest is kept, and they are all sent, oldest first, once connected. */
#include "codec.h"
#include "outbox.h"
#include "test_node_fake.h"

union outbox_storage {
    max_align_t align;
    uint8_t bytes[16 * 1024];
};

/* Encodes a recognisable payload for seq into the scratch buffer and pushes it. */
static bool push(struct tg_outbox *ob, uint64_t seq, uint64_t *dropped)
{
    uint8_t *buf = tg_outbox_scratch(ob);
    size_t len = 1 + seq % 7;
    memset(buf, (int)(seq & 0xff), len);
    return tg_outbox_push(ob, seq, len, dropped);
}

static void check_entry(const struct tg_outbox_entry *entry, uint64_t seq)
{
    assert_int_equal(entry->seq, seq);
    assert_int_equal(entry->len, 1 + seq % 7);
    for (size_t i = 0; i < entry->len; i++)
        assert_int_equal(entry->payload[i], seq & 0xff);
}

/* Sends (marks sent with token = seq + 1000) every unsent entry, checking their seqs. */
static void send_all(struct tg_outbox *ob, const uint64_t *seqs, size_t n)
{
    struct tg_outbox_entry entry;
    for (size_t i = 0; i < n; i++) {
        assert_true(tg_outbox_next_unsent(ob, &entry));
        check_entry(&entry, seqs[i]);
        tg_outbox_mark_sent(ob, (uint32_t)(seqs[i] + 1000));
    }
    assert_false(tg_outbox_next_unsent(ob, &entry));
}

static void overflow_drops_oldest_and_keeps_order(void **state)
{
    (void)state;
    static union outbox_storage st;
    size_t size = tg_outbox_storage_size(4, 16);
    assert_true(size > 0 && size <= sizeof st.bytes);
    struct tg_outbox *ob = tg_outbox_init(&st, 4, 16);
    assert_non_null(ob);
    assert_int_equal(tg_outbox_payload_max(ob), 16);
    uint64_t dropped;
    for (uint64_t seq = 0; seq < 4; seq++)
        assert_false(push(ob, seq, &dropped));
    assert_int_equal(tg_outbox_count(ob), 4);
    /* 4..9 each push out the oldest */
    for (uint64_t seq = 4; seq < 10; seq++) {
        assert_true(push(ob, seq, &dropped));
        assert_int_equal(dropped, seq - 4);
        assert_int_equal(tg_outbox_count(ob), 4);
    }
    send_all(ob, (const uint64_t[]){6, 7, 8, 9}, 4);

    /* sent readings are dropped too when the outbox is full; the rest stay sent */
    assert_true(push(ob, 10, &dropped));
    assert_int_equal(dropped, 6);
    assert_int_equal(tg_outbox_sent(ob), 3);
    send_all(ob, (const uint64_t[]){10}, 1);
}

static void release_anywhere_keeps_order(void **state)
{
    (void)state;
    static union outbox_storage st;
    struct tg_outbox *ob = tg_outbox_init(&st, 8, 16);
    uint64_t dropped;
    for (uint64_t seq = 0; seq < 6; seq++)
        push(ob, seq, &dropped);
    send_all(ob, (const uint64_t[]){0, 1, 2, 3, 4, 5}, 6);
    unsigned pos;
    assert_false(tg_outbox_find_token(ob, 42, &pos));
    /* confirmations out of order: 3, 0, 5 */
    static const uint64_t confirm[] = {3, 0, 5};
    for (size_t i = 0; i < 3; i++) {
        assert_true(tg_outbox_find_token(ob, (uint32_t)(confirm[i] + 1000), &pos));
        assert_int_equal(tg_outbox_release(ob, pos), confirm[i]);
        assert_false(tg_outbox_find_token(ob, (uint32_t)(confirm[i] + 1000), &pos));
    }
    assert_int_equal(tg_outbox_count(ob), 3);
    assert_int_equal(tg_outbox_sent(ob), 3);

    /* the connection drops: all three unsent again, and new readings queue behind them */
    tg_outbox_unsend_all(ob);
    assert_false(tg_outbox_find_token(ob, 1001, &pos));
    for (uint64_t seq = 6; seq < 11; seq++)
        assert_false(push(ob, seq, &dropped));
    assert_true(push(ob, 11, &dropped)); /* 8 held: the oldest, 1, goes */
    assert_int_equal(dropped, 1);
    send_all(ob, (const uint64_t[]){2, 4, 6, 7, 8, 9, 10, 11}, 8);

    /* release everything in a scrambled order; the buffers come back for reuse */
    static const uint64_t order[] = {9, 2, 11, 6, 4, 10, 8, 7};
    for (size_t i = 0; i < 8; i++) {
        assert_true(tg_outbox_find_token(ob, (uint32_t)(order[i] + 1000), &pos));
        assert_int_equal(tg_outbox_release(ob, pos), order[i]);
    }
    assert_int_equal(tg_outbox_count(ob), 0);
    for (uint64_t seq = 100; seq < 108; seq++)
        assert_false(push(ob, seq, &dropped));
    send_all(ob, (const uint64_t[]){100, 101, 102, 103, 104, 105, 106, 107}, 8);
}

/* A long random run against a simple model: a list of (seq, sent, token). */
static void matches_a_model(void **state)
{
    (void)state;
    static union outbox_storage st;
    enum { SLOTS = 5 };
    struct tg_outbox *ob = tg_outbox_init(&st, SLOTS, 16);
    struct {
        uint64_t seq;
        bool sent;
        uint32_t token;
    } model[SLOTS];
    unsigned n = 0;
    uint64_t next_seq = 0;
    uint32_t rng = 12345, next_token = 1;
    for (int step = 0; step < 20000; step++) {
        rng = rng * 1103515245u + 12345u;
        unsigned op = (rng >> 16) % 4;
        uint64_t dropped;
        if (op == 0) {
            bool was_full = n == SLOTS;
            assert_int_equal(push(ob, next_seq, &dropped), was_full);
            if (was_full) {
                assert_int_equal(dropped, model[0].seq);
                memmove(&model[0], &model[1], (SLOTS - 1) * sizeof model[0]);
                n--;
            }
            model[n].seq = next_seq++;
            model[n].sent = false;
            n++;
        } else if (op == 1) {
            struct tg_outbox_entry entry;
            unsigned first_unsent = 0;
            while (first_unsent < n && model[first_unsent].sent)
                first_unsent++;
            assert_int_equal(tg_outbox_next_unsent(ob, &entry), first_unsent < n);
            if (first_unsent < n) {
                check_entry(&entry, model[first_unsent].seq);
                model[first_unsent].sent = true;
                model[first_unsent].token = next_token;
                tg_outbox_mark_sent(ob, next_token++);
            }
        } else if (op == 2 && n > 0) {
            unsigned i = (rng >> 8) % n;
            unsigned pos;
            if (!model[i].sent) {
                assert_false(tg_outbox_find_token(ob, next_token + 7, &pos));
                continue;
            }
            assert_true(tg_outbox_find_token(ob, model[i].token, &pos));
            assert_int_equal(pos, i);
            assert_int_equal(tg_outbox_release(ob, pos), model[i].seq);
            memmove(&model[i], &model[i + 1], (n - i - 1) * sizeof model[0]);
            n--;
        } else if (op == 3 && (rng >> 8) % 16 == 0) {
            tg_outbox_unsend_all(ob);
            for (unsigned i = 0; i < n; i++)
                model[i].sent = false;
        }
        assert_int_equal(tg_outbox_count(ob), n);
    }
}

static void storage_size_limits(void **state)
{
    (void)state;
    assert_int_equal(tg_outbox_storage_size(0, 256), 0);
    assert_int_equal(tg_outbox_storage_size(1, 0), 0);
    assert_int_equal(tg_outbox_storage_size(TG_OUTBOX_MAX_SLOTS + 1, 16), 0);
    assert_int_equal(tg_outbox_storage_size(TG_OUTBOX_MAX_SLOTS, SIZE_MAX / 4), 0);
    assert_true(tg_outbox_storage_size(TG_OUTBOX_MAX_SLOTS, 16) > 16 * (size_t)TG_OUTBOX_MAX_SLOTS);
    /* slots + 1 payload buffers: the extra one is the scratch buffer */
    assert_true(tg_outbox_storage_size(16, 256) >= 17 * 256);
}

/* The node's side: readings taken while disconnected overflow the outbox. */
static void node_overflow_reports_dropped_and_sends_the_rest_in_order(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){
                                                    .device_id = "node-01", .outbox_slots = 4});
    fake_sensor_setup(&fs);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs, 0x76, 1000), 0);
    assert_int_equal(tg_node_start(node), 0); /* connecting, never up */
    for (int i = 0; i < 10; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 1000);
    }
    uint64_t seqs[16];
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_TAKEN, seqs, 16), 10);
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_DROPPED, seqs, 16), 6);
    for (uint64_t i = 0; i < 6; i++)
        assert_int_equal(seqs[i], i);
    /* each drop is reported before the reading that caused it is taken */
    assert_int_equal(fk.events[4].ev, TG_NODE_EV_DROPPED);
    assert_int_equal(fk.events[4].seq, 0);
    assert_int_equal(fk.events[5].ev, TG_NODE_EV_TAKEN);
    assert_int_equal(fk.events[5].seq, 4);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.dropped, 6);
    assert_int_equal(stats.outbox_used, 4);
    assert_int_equal(fk.n_pubs, 0);

    tg_node_transport_up(node);
    assert_int_equal(fk.n_pubs, 4);
    struct tg_decoder *dec = tg_decoder_new(NULL);
    assert_non_null(dec);
    for (size_t i = 0; i < 4; i++) {
        struct tg_decoded out;
        assert_int_equal(tg_decoder_decode(dec, TG_FORMAT_NATIVE, "node-01", fk.pubs[i].payload,
                                           fk.pubs[i].len, fk.wall_ms, &out),
                         TG_OK);
        assert_int_equal(out.readings[0].seq, 6 + i);
    }
    tg_decoder_destroy(dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overflow_drops_oldest_and_keeps_order),
        cmocka_unit_test(release_anywhere_keeps_order),
        cmocka_unit_test(matches_a_model),
        cmocka_unit_test(storage_size_limits),
        cmocka_unit_test(node_overflow_reports_dropped_and_sends_the_rest_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
