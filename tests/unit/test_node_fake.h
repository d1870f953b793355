/*
 * test_node_fake.h - a fake board for the firmware core's unit tests (header-only, static).
 *
 * struct fake is the whole outside world of a node: a clock the test advances, a key/value
 * store that survives "restarts" (a new node over the same struct fake), a transport that
 * records every publish and hands out tokens, a random source, and a log of the node's
 * reading events. fake_sensor is a driver whose samples the test controls. Nothing here
 * allocates, so the allocation test can use it too.
 */
#ifndef TG_TEST_NODE_FAKE_H
#define TG_TEST_NODE_FAKE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "node.h"

#define FAKE_MAX_PUBS 512
#define FAKE_MAX_EVENTS 1024
#define FAKE_PAYLOAD_MAX 512

struct fake_pub {
    uint8_t payload[FAKE_PAYLOAD_MAX];
    size_t len;
    uint32_t token;
};

struct fake_event {
    enum tg_node_event ev;
    uint64_t boot, seq;
};

struct fake {
    int64_t wall_ms;
    uint64_t mono_ms;
    uint32_t rng; /* xorshift32 state */
    bool rng_fixed;     /* random_u32 returns rng_value (UINT32_MAX: the longest delays) */
    uint32_t rng_value;

    bool kv_has_boot;
    uint64_t kv_boot;
    bool kv_store_fails;
    unsigned kv_stores;
    size_t events_at_kv_store; /* events logged when the boot counter was stored */

    int connect_rc;
    unsigned connects;
    bool refuse_publish;
    unsigned refused;
    uint32_t next_token;
    struct fake_pub pubs[FAKE_MAX_PUBS];
    size_t n_pubs;

    struct fake_event events[FAKE_MAX_EVENTS];
    size_t n_events;
};

static inline int64_t fake_wall_ms(void *ctx)
{
    return ((struct fake *)ctx)->wall_ms;
}

static inline uint64_t fake_mono_ms(void *ctx)
{
    return ((struct fake *)ctx)->mono_ms;
}

static inline uint32_t fake_random_u32(void *ctx)
{
    struct fake *fk = ctx;
    if (fk->rng_fixed)
        return fk->rng_value;
    fk->rng ^= fk->rng << 13;
    fk->rng ^= fk->rng >> 17;
    fk->rng ^= fk->rng << 5;
    return fk->rng;
}

static inline bool fake_kv_load(void *ctx, const char *key, uint64_t *value)
{
    struct fake *fk = ctx;
    assert_string_equal(key, "boot");
    if (!fk->kv_has_boot)
        return false;
    *value = fk->kv_boot;
    return true;
}

static inline int fake_kv_store(void *ctx, const char *key, uint64_t value)
{
    struct fake *fk = ctx;
    assert_string_equal(key, "boot");
    fk->kv_stores++;
    if (fk->kv_store_fails)
        return -1;
    fk->kv_has_boot = true;
    fk->kv_boot = value;
    fk->events_at_kv_store = fk->n_events;
    return 0;
}

static inline int fake_connect(void *ctx)
{
    struct fake *fk = ctx;
    fk->connects++;
    return fk->connect_rc;
}

static inline int fake_publish(void *ctx, const uint8_t *payload, size_t len, uint32_t *token)
{
    struct fake *fk = ctx;
    if (fk->refuse_publish) {
        fk->refused++;
        return -1;
    }
    assert_true(fk->n_pubs < FAKE_MAX_PUBS);
    assert_true(len <= FAKE_PAYLOAD_MAX);
    struct fake_pub *pub = &fk->pubs[fk->n_pubs++];
    memcpy(pub->payload, payload, len);
    pub->len = len;
    pub->token = ++fk->next_token;
    *token = pub->token;
    return 0;
}

static inline int fake_i2c(void *ctx, uint8_t addr, const uint8_t *wr, size_t wr_len, uint8_t *rd,
                           size_t rd_len)
{
    (void)ctx, (void)addr, (void)wr, (void)wr_len, (void)rd, (void)rd_len;
    fail_msg("the core itself never uses the I2C bus");
    return -1;
}

static inline void fake_observe(void *ctx, enum tg_node_event ev, uint64_t boot, uint64_t seq)
{
    struct fake *fk = ctx;
    /* the boot a reading carries is durable before the reading exists */
    if (ev == TG_NODE_EV_TAKEN)
        assert_true(fk->kv_has_boot && fk->kv_boot == boot);
    assert_true(fk->n_events < FAKE_MAX_EVENTS);
    fk->events[fk->n_events++] = (struct fake_event){.ev = ev, .boot = boot, .seq = seq};
}

static inline void fake_init(struct fake *fk)
{
    memset(fk, 0, sizeof *fk);
    fk->wall_ms = INT64_C(1700000000000);
    fk->mono_ms = 5000;
    fk->rng = 0x9e3779b9u;
}

static inline struct tg_hal fake_hal(struct fake *fk)
{
    return (struct tg_hal){.ctx = fk,
                           .wall_ms = fake_wall_ms,
                           .mono_ms = fake_mono_ms,
                           .random_u32 = fake_random_u32,
                           .kv_load = fake_kv_load,
                           .kv_store = fake_kv_store,
                           .transport_connect = fake_connect,
                           .transport_publish = fake_publish,
                           .i2c_transfer = fake_i2c,
                           .observe = fake_observe};
}

/* Lets time pass on both clocks. */
static inline void fake_advance(struct fake *fk, uint64_t ms)
{
    fk->mono_ms += ms;
    fk->wall_ms += (int64_t)ms;
}

/* Events of one kind, in the order they happened: their seqs into out (at most max). */
static inline size_t fake_seqs(const struct fake *fk, enum tg_node_event ev, uint64_t *out,
                               size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < fk->n_events; i++)
        if (fk->events[i].ev == ev && n < max)
            out[n++] = fk->events[i].seq;
    return n;
}

/* --- a sensor the test controls ------------------------------------------------------- */

struct fake_sensor {
    unsigned inits, reads;
    bool init_fails;
    bool read_fails;
    unsigned n;                       /* metrics per sample */
    const char *names[TG_SENSOR_MAX_METRICS];
    double values[TG_SENSOR_MAX_METRICS];
    uint64_t read_at_ms[64];          /* mono time of the first 64 reads */
    struct fake *fk;
};

static inline int fake_sensor_init(void *state, const struct tg_hal *hal, uint8_t addr)
{
    (void)hal, (void)addr;
    struct fake_sensor *fs = state;
    fs->inits++;
    return fs->init_fails ? -1 : 0;
}

static inline int fake_sensor_read(void *state, const struct tg_hal *hal,
                                   struct tg_sensor_sample *out)
{
    struct fake_sensor *fs = state;
    if (fs->reads < 64)
        fs->read_at_ms[fs->reads] = hal->mono_ms(hal->ctx);
    fs->reads++;
    if (fs->read_fails)
        return -1;
    out->n = fs->n;
    for (unsigned i = 0; i < fs->n; i++) {
        out->names[i] = fs->names[i];
        out->values[i] = fs->values[i];
    }
    return 0;
}

static const struct tg_sensor_driver fake_sensor_driver = {
    .name = "fake",
    .state_size = sizeof(struct fake_sensor),
    .init = fake_sensor_init,
    .read = fake_sensor_read,
};

/* A sensor giving one metric, "temperature_c" = 21.5. */
static inline void fake_sensor_setup(struct fake_sensor *fs)
{
    memset(fs, 0, sizeof *fs);
    fs->n = 1;
    fs->names[0] = "temperature_c";
    fs->values[0] = 21.5;
}

/* --- a node over the fake ------------------------------------------------------------- */

/* Storage for a test node: max_align_t-aligned, big enough for the tests' configs. */
union fake_storage {
    max_align_t align;
    uint8_t bytes[64 * 1024];
};

static inline struct tg_node *fake_node(union fake_storage *st, struct fake *fk,
                                        const struct tg_node_config *cfg)
{
    struct tg_hal hal = fake_hal(fk);
    size_t need = tg_node_storage_size(cfg);
    assert_true(need > 0 && need <= sizeof st->bytes);
    struct tg_node *node = tg_node_init(st, sizeof st->bytes, cfg, &hal);
    assert_non_null(node);
    return node;
}

#endif
