/* Unit tests for the firmware core's node (firmware/core/node.h) over a fake board: boot
 * counter persistence, seq numbering, the per-sensor sampling schedule, the publish flow
 * (refusals, PUBACK tokens, re-sends after a reconnect, oldest first), reconnect backoff and
 * config validation. Payloads are read back with tidegate_common's decoder, as the gateway
 * would read them. */
#include <math.h>

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

static const struct tg_node_config default_cfg = {.device_id = "node-01", .outbox_slots = 8};

/* The reading a recorded publish carries, decoded as the gateway would. */
static const struct tg_reading *decode_pub(const struct fake *fk, size_t i)
{
    assert_true(i < fk->n_pubs);
    struct tg_decoded out;
    tg_err err = tg_decoder_decode(dec, TG_FORMAT_NATIVE, "node-01", fk->pubs[i].payload,
                                   fk->pubs[i].len, fk->wall_ms, &out);
    if (err != TG_OK)
        fail_msg("publish %zu does not decode: %s", i, tg_decoder_error(dec));
    assert_int_equal(out.n_readings, 1);
    return &out.readings[0];
}

static uint64_t pub_seq(const struct fake *fk, size_t i)
{
    return decode_pub(fk, i)->seq;
}

/* Starts a node with one fake sensor (period_ms) and brings the connection up. */
static struct tg_node *started_node(union fake_storage *st, struct fake *fk,
                                    struct fake_sensor *fs, const struct tg_node_config *cfg,
                                    uint32_t period_ms)
{
    struct tg_node *node = fake_node(st, fk, cfg);
    fake_sensor_setup(fs);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, fs, 0x76, period_ms), 0);
    assert_int_equal(tg_node_start(node), 0);
    return node;
}

/* Drives the node as a port does (sleeping for what poll returns) until it starts a
 * connection attempt; the clock stops at the attempt. */
static void poll_until_connect(struct fake *fk, struct tg_node *node)
{
    unsigned connects = fk->connects;
    for (int i = 0; i < 10000; i++) {
        uint32_t wait = tg_node_poll(node);
        if (fk->connects != connects)
            return;
        fake_advance(fk, wait);
    }
    fail_msg("no connection attempt");
}

/* --- boot and seq ------------------------------------------------------------------------ */

static void boot_increments_across_restarts(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    for (uint64_t restart = 1; restart <= 3; restart++) {
        /* a "restart": a fresh node over the same persistent store */
        struct tg_node *node = started_node(&st, &fk, &fs, &default_cfg, 1000);
        assert_int_equal(tg_node_boot(node), restart);
        assert_true(fk.kv_has_boot);
        assert_int_equal(fk.kv_boot, restart);
        /* stored before the first reading was taken */
        assert_int_equal(fk.events_at_kv_store, fk.n_events);
        fk.n_events = 0;
        tg_node_poll(node);
        assert_int_equal(fk.n_events, 1);
        assert_int_equal(fk.events[0].ev, TG_NODE_EV_TAKEN);
        assert_int_equal(fk.events[0].boot, restart);
        assert_int_equal(fk.events[0].seq, 0); /* seq restarts at 0 at each boot */
        fk.n_events = 0;
    }

    /* a store that already holds a counter (first start after a firmware update) */
    fk.kv_boot = 41;
    struct tg_node *node = started_node(&st, &fk, &fs, &default_cfg, 1000);
    assert_int_equal(tg_node_boot(node), 42);
}

static void start_fails_when_boot_cannot_be_stored(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    fk.kv_store_fails = true;
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = fake_node(&st, &fk, &default_cfg);
    fake_sensor_setup(&fs);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs, 0x76, 1000), 0);
    assert_int_equal(tg_node_start(node), -1);
    assert_int_equal(fs.inits, 0);
    assert_int_equal(fk.connects, 0);
    tg_node_poll(node); /* not started: takes nothing */
    assert_int_equal(fs.reads, 0);
    assert_int_equal(fk.n_events, 0);

    /* and when a sensor's init fails */
    fake_init(&fk);
    node = fake_node(&st, &fk, &default_cfg);
    fake_sensor_setup(&fs);
    fs.init_fails = true;
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs, 0x76, 1000), 0);
    assert_int_equal(tg_node_start(node), -1);
}

static void seq_never_repeats_within_a_boot(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor a, b;
    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){
                                                    .device_id = "node-01", .outbox_slots = 64});
    fake_sensor_setup(&a);
    fake_sensor_setup(&b);
    b.names[0] = "humidity_pct";
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &a, 0x76, 70), 0);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &b, 0x44, 30), 0);
    assert_int_equal(tg_node_start(node), 0);
    tg_node_transport_up(node);
    /* two sensors on different periods, a failing read now and then, acks in between */
    for (int step = 0; step < 400; step++) {
        a.read_fails = step % 37 == 0;
        tg_node_poll(node);
        while (fk.n_pubs > 0 && step % 3 == 0) {
            tg_node_transport_acked(node, fk.pubs[fk.n_pubs - 1].token);
            fk.n_pubs--;
        }
        fake_advance(&fk, 10);
    }
    uint64_t taken[FAKE_MAX_EVENTS];
    size_t n = fake_seqs(&fk, TG_NODE_EV_TAKEN, taken, FAKE_MAX_EVENTS);
    assert_true(n > 150);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(taken[i], i); /* 0, 1, 2, ... : no repeat, no gap */
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.taken, n);
    assert_true(stats.sample_errors > 0);
}

/* --- sampling schedule ------------------------------------------------------------------- */

static void each_sensor_samples_on_its_own_period(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor slow, fast;
    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){
                                                    .device_id = "node-01", .outbox_slots = 64});
    fake_sensor_setup(&slow);
    fake_sensor_setup(&fast);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &slow, 1, 1000), 0);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fast, 2, 250), 0);
    assert_int_equal(tg_node_start(node), 0);
    uint64_t t0 = fk.mono_ms;

    /* drive the node the way a port does: sleep for what poll returns */
    while (fk.mono_ms - t0 < 10000) {
        uint32_t wait = tg_node_poll(node);
        assert_true(wait > 0); /* nothing is left due right after a poll */
        assert_true(wait <= 250);
        fake_advance(&fk, wait);
    }
    assert_int_equal(slow.reads, 10); /* t0, t0+1000, ..., t0+9000 */
    assert_int_equal(fast.reads, 40);
    for (unsigned i = 0; i < 10; i++)
        assert_int_equal(slow.read_at_ms[i], t0 + 1000 * i);
    for (unsigned i = 0; i < 40; i++)
        assert_int_equal(fast.read_at_ms[i], t0 + 250 * i);

    /* polled late by 3.1 s: one sample each, not a burst of the missed ones, and the
     * schedule continues one period after that */
    unsigned slow_before = slow.reads, fast_before = fast.reads;
    fake_advance(&fk, 3100);
    uint32_t wait = tg_node_poll(node);
    assert_int_equal(slow.reads, slow_before + 1);
    assert_int_equal(fast.reads, fast_before + 1);
    assert_true(wait <= 250);
    fake_advance(&fk, 249);
    tg_node_poll(node);
    assert_int_equal(fast.reads, fast_before + 1);
    fake_advance(&fk, 1);
    tg_node_poll(node);
    assert_int_equal(fast.reads, fast_before + 2);

    /* the reading carries the wall clock and the sensor's metrics */
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.taken, slow.reads + fast.reads);
}

static void add_sensor_limits(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs[TG_NODE_MAX_SENSORS + 1];
    struct tg_node *node = fake_node(&st, &fk, &default_cfg);
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs[0], 1, 0), -1);
    for (unsigned i = 0; i < TG_NODE_MAX_SENSORS; i++) {
        fake_sensor_setup(&fs[i]);
        assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs[i], 1, 100), 0);
    }
    assert_int_equal(tg_node_add_sensor(node, &fake_sensor_driver, &fs[TG_NODE_MAX_SENSORS], 1,
                                        100),
                     -1);
    assert_int_equal(tg_node_start(node), 0);
    for (unsigned i = 0; i < TG_NODE_MAX_SENSORS; i++)
        assert_int_equal(fs[i].inits, 1);
    assert_int_equal(tg_node_start(node), -1); /* once */
}

/* --- publishing -------------------------------------------------------------------------- */

static void readings_carry_boot_seq_time_and_metrics(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs, &default_cfg, 1000);
    fs.n = 3;
    fs.names[1] = "humidity_pct";
    fs.values[1] = 40;
    fs.names[2] = "pressure_pa";
    fs.values[2] = 101325.25;
    tg_node_transport_up(node);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 1);
    const struct tg_reading *rd = decode_pub(&fk, 0);
    assert_int_equal(rd->boot, 1);
    assert_int_equal(rd->seq, 0);
    assert_int_equal(rd->ts_ms, fk.wall_ms);
    assert_int_equal(rd->n_metrics, 3);
    assert_string_equal(rd->metrics[0].name, "temperature_c");
    assert_true(rd->metrics[0].value == 21.5);
    assert_string_equal(rd->metrics[1].name, "humidity_pct");
    assert_true(rd->metrics[1].value == 40);
    assert_true(rd->metrics[2].value == 101325.25);

    /* a value the format cannot carry is a sample error, and costs no seq */
    fs.values[0] = NAN;
    fake_advance(&fk, 1000);
    tg_node_poll(node);
    fs.values[0] = 20;
    fake_advance(&fk, 1000);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 2);
    assert_int_equal(pub_seq(&fk, 1), 1);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.sample_errors, 1);
    assert_int_equal(stats.taken, 2);
}

static void refused_publish_keeps_the_reading(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs, &default_cfg, 1000);
    tg_node_transport_up(node);
    fk.refuse_publish = true;
    tg_node_poll(node); /* seq 0 taken, publish refused */
    assert_int_equal(fk.refused, 1);
    assert_int_equal(fk.n_pubs, 0);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, 1);
    assert_int_equal(stats.published, 0);
    assert_true(stats.connected);

    /* the retry comes soon, not only at the next sample, and does not spin */
    uint32_t wait = tg_node_poll(node);
    assert_int_equal(fk.refused, 1);
    assert_true(wait > 0 && wait < 1000);
    fake_advance(&fk, wait);
    tg_node_poll(node);
    assert_int_equal(fk.refused, 2);

    /* the transport accepts again: the kept reading goes first, then the new one */
    fk.refuse_publish = false;
    fake_advance(&fk, 1000);
    tg_node_poll(node);
    assert_int_equal(fk.n_pubs, 2);
    assert_int_equal(pub_seq(&fk, 0), 0);
    assert_int_equal(pub_seq(&fk, 1), 1);
    tg_node_transport_acked(node, fk.pubs[0].token);
    tg_node_transport_acked(node, fk.pubs[1].token);
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, 0);
    assert_int_equal(stats.released, 2);
    uint64_t released[4];
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_RELEASED, released, 4), 2);
    assert_int_equal(released[0], 0);
    assert_int_equal(released[1], 1);
}

static void acks_release_by_token_in_any_order(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs, &default_cfg, 100);
    tg_node_transport_up(node);
    for (int i = 0; i < 5; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 100);
    }
    assert_int_equal(fk.n_pubs, 5);
    /* PUBACKs for seq 3, 1, then an unknown token, then 0 */
    tg_node_transport_acked(node, fk.pubs[3].token);
    tg_node_transport_acked(node, fk.pubs[1].token);
    tg_node_transport_acked(node, 9999);
    tg_node_transport_acked(node, fk.pubs[1].token); /* twice: already released */
    tg_node_transport_acked(node, fk.pubs[0].token);
    uint64_t released[8];
    assert_int_equal(fake_seqs(&fk, TG_NODE_EV_RELEASED, released, 8), 3);
    assert_int_equal(released[0], 3);
    assert_int_equal(released[1], 1);
    assert_int_equal(released[2], 0);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, 2);

    /* after a reconnect the two left (2 and 4) go again, oldest first, nothing else */
    tg_node_transport_down(node);
    tg_node_transport_up(node);
    assert_int_equal(fk.n_pubs, 7);
    assert_int_equal(pub_seq(&fk, 5), 2);
    assert_int_equal(pub_seq(&fk, 6), 4);
}

static void resend_after_reconnect_oldest_first(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs,
                                        &(struct tg_node_config){.device_id = "node-01",
                                                                 .outbox_slots = 64,
                                                                 .backoff_max_ms = 4000},
                                        1000);
    tg_node_transport_up(node);
    /* seq 0..2 sent and confirmed; 3..4 sent, never confirmed; then the link drops */
    for (int i = 0; i < 5; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 1000);
    }
    for (size_t i = 0; i < 3; i++)
        tg_node_transport_acked(node, fk.pubs[i].token);
    uint32_t stale_token = fk.pubs[3].token;
    tg_node_transport_down(node);
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_false(stats.connected);

    /* offline: 5..9 are taken and kept, nothing is published */
    size_t pubs_before = fk.n_pubs;
    fk.connect_rc = -1; /* the broker stays unreachable for a while */
    for (int i = 0; i < 5; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 1000);
    }
    assert_int_equal(fk.n_pubs, pubs_before);
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, 7);

    /* back: a connect attempt is made when its backoff passes (readings go on being taken
     * meanwhile); up re-sends everything unconfirmed, 3 onwards, in order */
    fk.connect_rc = 0;
    poll_until_connect(&fk, node);
    tg_node_get_stats(node, &stats);
    unsigned unconfirmed = stats.outbox_used;
    assert_true(unconfirmed >= 7);
    tg_node_transport_up(node);
    assert_int_equal(fk.n_pubs - pubs_before, unconfirmed);
    for (size_t i = 0; i < unconfirmed; i++)
        assert_int_equal(pub_seq(&fk, pubs_before + i), 3 + i);

    /* a confirmation from the old connection releases nothing */
    tg_node_transport_acked(node, stale_token);
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, unconfirmed);
    assert_int_equal(stats.published, 5 + unconfirmed);
    assert_int_equal(stats.released, 3);
    assert_int_equal(stats.dropped, 0);
}

/* Shutdown: after tg_node_stop_sampling() no reading is taken, but what the outbox holds is
 * still sent, after a reconnect too, and poll no longer wakes the port for sampling. */
static void stop_sampling_drains_without_sampling(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    static union fake_storage st;
    struct fake_sensor fs;
    struct tg_node *node = started_node(&st, &fk, &fs,
                                        &(struct tg_node_config){.device_id = "node-01",
                                                                 .outbox_slots = 16},
                                        1000);
    fk.connect_rc = -1; /* offline: three readings wait in the outbox */
    tg_node_transport_down(node); /* the first attempt failed */
    for (int i = 0; i < 3; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 1000);
    }
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.taken, 3);
    assert_int_equal(stats.outbox_used, 3);

    tg_node_stop_sampling(node);
    fk.connect_rc = 0;
    poll_until_connect(&fk, node);
    tg_node_transport_up(node);
    for (int i = 0; i < 5; i++) {
        tg_node_poll(node);
        fake_advance(&fk, 1000);
    }
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.taken, 3); /* nothing sampled after the stop */
    assert_int_equal(fk.n_pubs, 3);   /* everything waiting was sent, oldest first */
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(pub_seq(&fk, i), i);
    for (size_t i = 0; i < 3; i++)
        tg_node_transport_acked(node, fk.pubs[i].token);
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.outbox_used, 0);
    assert_true(tg_node_poll(node) >= 1000); /* idle: no sampling deadline any more */
}

/* --- connection and backoff -------------------------------------------------------------- */

static void reconnects_with_capped_backoff(void **state)
{
    (void)state;
    struct fake fk;
    fake_init(&fk);
    fk.rng_fixed = true;
    fk.rng_value = UINT32_MAX; /* the longest delay jitter allows: the ceiling itself */
    fk.connect_rc = -1;        /* every attempt fails at once */
    static union fake_storage st;
    struct tg_node *node = fake_node(&st, &fk, &(struct tg_node_config){
                                                    .device_id = "node-01",
                                                    .outbox_slots = 4,
                                                    .backoff_min_ms = 100,
                                                    .backoff_max_ms = 1000});
    assert_int_equal(tg_node_start(node), 0);
    assert_int_equal(fk.connects, 1);
    /* successive gaps between attempts: 100, 200, 400, 800, then capped at 1000 */
    static const uint64_t expected[] = {100, 200, 400, 800, 1000, 1000, 1000};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        uint64_t since = fk.mono_ms;
        poll_until_connect(&fk, node);
        assert_int_equal(fk.mono_ms - since, expected[i]);
    }
    struct tg_node_stats stats;
    tg_node_get_stats(node, &stats);
    assert_int_equal(stats.connects, fk.connects);

    /* an attempt that starts and then fails (the port reports down) backs off as well; a
     * successful connection resets the backoff */
    fk.connect_rc = 0;
    poll_until_connect(&fk, node);
    tg_node_transport_down(node);
    tg_node_transport_down(node); /* reported twice: one reconnect */
    assert_int_equal(tg_node_poll(node), 1000);
    fake_advance(&fk, 1000);
    tg_node_poll(node);
    tg_node_transport_up(node);
    tg_node_get_stats(node, &stats);
    assert_true(stats.connected);
    unsigned connects = fk.connects;
    tg_node_transport_down(node);
    assert_int_equal(tg_node_poll(node), 100); /* back to the minimum */
    fake_advance(&fk, 100);
    tg_node_poll(node);
    assert_int_equal(fk.connects, connects + 1);

    /* full jitter: with random bits 0 the delay is 0, so the attempt is immediate */
    fk.rng_value = 0;
    tg_node_transport_down(node);
    tg_node_poll(node);
    assert_int_equal(fk.connects, connects + 2);
}

/* --- configuration ----------------------------------------------------------------------- */

static void invalid_configs_are_refused(void **state)
{
    (void)state;
    uint8_t key[TG_NODE_KEY_MAX + 1] = {0};
    const struct tg_node_config bad[] = {
        {.device_id = NULL, .outbox_slots = 4},
        {.device_id = "", .outbox_slots = 4},
        {.device_id = "has space", .outbox_slots = 4},
        {.device_id = "telemetry/x", .outbox_slots = 4},
        {.device_id = "a123456789b123456789c123456789d123456789e123456789f123456789g1234",
         .outbox_slots = 4}, /* 65 characters */
        {.device_id = "ok", .outbox_slots = 0},
        {.device_id = "ok", .outbox_slots = 4, .hmac_key = key, .hmac_key_len = sizeof key},
        {.device_id = "ok", .outbox_slots = 4, .backoff_min_ms = 5000, .backoff_max_ms = 1000},
        {.device_id = "ok", .outbox_slots = 4, .backoff_min_ms = 90000}, /* above the 60 s cap */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tg_node_storage_size(&bad[i]), 0);
        static union fake_storage st;
        struct tg_hal hal = {0};
        assert_null(tg_node_init(&st, sizeof st, &bad[i], &hal));
    }

    const struct tg_node_config good = {
        .device_id = "a123456789b123456789c123456789d123456789e123456789f123456789g123",
        .outbox_slots = 16,
        .hmac_key = key,
        .hmac_key_len = TG_NODE_KEY_MAX};
    size_t size = tg_node_storage_size(&good);
    assert_true(size >= 16 * 256);
    assert_true(size < 16 * 256 + 4096);
    static union fake_storage st;
    struct fake fk;
    fake_init(&fk);
    struct tg_hal hal = fake_hal(&fk);
    assert_null(tg_node_init(&st, size - 1, &good, &hal)); /* too small */
    assert_null(tg_node_init(st.bytes + 1, size, &good, &hal)); /* misaligned */
    struct tg_node *node = tg_node_init(&st, size, &good, &hal);
    assert_ptr_equal(node, &st);
    assert_string_equal(tg_node_device_id(node), good.device_id);
    /* max_payload_bytes scales the storage */
    struct tg_node_config bigger = good;
    bigger.max_payload_bytes = 512;
    assert_true(tg_node_storage_size(&bigger) >= size + 17 * 256);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(boot_increments_across_restarts),
        cmocka_unit_test(start_fails_when_boot_cannot_be_stored),
        cmocka_unit_test(seq_never_repeats_within_a_boot),
        cmocka_unit_test(each_sensor_samples_on_its_own_period),
        cmocka_unit_test(add_sensor_limits),
        cmocka_unit_test(readings_carry_boot_seq_time_and_metrics),
        cmocka_unit_test(refused_publish_keeps_the_reading),
        cmocka_unit_test(acks_release_by_token_in_any_order),
        cmocka_unit_test(resend_after_reconnect_oldest_first),
        cmocka_unit_test(stop_sampling_drains_without_sampling),
        cmocka_unit_test(reconnects_with_capped_backoff),
        cmocka_unit_test(invalid_configs_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
