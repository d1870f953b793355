/* libFuzzer target: the worker engine's state snapshots as read back from the compacted state
 * topic (worker/engine_state.c, worker/snapshot.c), where anything may have been written.
 *
 * Input: one byte k, then k bytes of key, then the value. The pair goes to tg_engine_restore()
 * of an engine tracking partitions 0..3; whatever it accepts must then work: a reading for
 * the restored series (when the key names one), a sweep, a snapshot of every dirty pair (each
 * of which must restore again into a fresh engine) and a flush. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tg_engine_config *ec;

static void ignore(void *ud, const struct tg_engine_output *out)
{
    (void)ud;
    (void)out;
}

static struct tg_engine *second;

static void restore_again(void *ud, int32_t partition, const void *key, size_t key_len,
                          const void *value, size_t value_len)
{
    (void)ud;
    (void)partition;
    /* What the engine wrote, it must read back. */
    if (tg_engine_restore(second, key, key_len, value, value_len) != TG_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ec) {
        size_t n;
        const struct tg_config_key *keys = tg_engine_config_keys(&n);
        struct tg_config *cfg = tg_config_new(keys, n);
        /* Every detector's state: seasonal everywhere, predict on the metrics "vib*". */
        if (!cfg || tg_config_set(cfg, "detect.seasonal=on") != TG_OK ||
            tg_config_set(cfg, "rules.1.match=vib*") != TG_OK ||
            tg_config_set(cfg, "rules.1.predict=on") != TG_OK)
            abort();
        char err[256];
        ec = tg_engine_config_from(cfg, err, sizeof err);
        tg_config_destroy(cfg);
        if (!ec)
            abort();
        /* As the worker runs it: restored holes (partition values of version 2) are used. */
        tg_engine_config_set_partition_hole_ms(ec, 2000);
    }
    if (size < 1 || (size_t)data[0] + 1 > size)
        return 0;
    size_t key_len = data[0];
    const char *key = (const char *)data + 1;
    const uint8_t *value = data + 1 + key_len;
    size_t value_len = size - 1 - key_len;

    struct tg_engine *en = tg_engine_new(ec, ignore, NULL);
    second = tg_engine_new(ec, ignore, NULL);
    if (!en || !second)
        abort();
    for (int32_t p = 0; p < 4; p++) {
        tg_engine_partition_add(en, p);
        tg_engine_partition_add(second, p);
    }
    if (tg_engine_restore(en, key, key_len, value, value_len) == TG_OK) {
        /* "<p>/<device>/<metric>": offer a reading to that series. */
        char buf[256];
        if (key_len < sizeof buf) {
            memcpy(buf, key, key_len);
            buf[key_len] = '\0';
            char *s1 = strchr(buf, '/');
            char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
            if (s1 && s2 && s2[1]) {
                *s2 = '\0';
                struct tg_metric m = {.name = s2 + 1, .value = 1.5};
                struct tg_reading rd = {.device = s1 + 1, .ts_ms = 1700000000000,
                                        .n_metrics = 1, .metrics = &m};
                tg_engine_process(en, (int32_t)strtol(buf, NULL, 10), &rd);
                rd.ts_ms += 1000;
                tg_engine_process(en, (int32_t)strtol(buf, NULL, 10), &rd);
            }
        }
    }
    tg_engine_sweep(en, 1700000100000);
    tg_engine_snapshot_dirty(en, restore_again, NULL);
    tg_engine_flush(en);
    struct tg_engine_stats st;
    tg_engine_stats(en, &st);
    tg_engine_destroy(en);
    tg_engine_destroy(second);
    second = NULL;
    return 0;
}
