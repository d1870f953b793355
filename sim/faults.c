/*
 * faults.c - malformed payloads and skewed clocks (see faults.h).
 */
#include "faults.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "sim_rand.h"

static const char *const malformed_names[TG_MALFORMED_KINDS] = {
    "truncated_cbor", "wrong_type_cbor", "wrong_type_json", "bad_json",
};

const char *tg_malformed_kind_name(enum tg_malformed_kind kind)
{
    return (unsigned)kind < TG_MALFORMED_KINDS ? malformed_names[kind] : "unknown";
}

/* A well-formed native payload {"seq":0,"boot":1,"ts":0,"m":{"x":1}} to truncate when the
 * device has sent nothing yet. */
static const uint8_t fallback_cbor[] = {
    0xa4, 0x63, 's', 'e', 'q', 0x00, 0x64, 'b', 'o', 'o', 't', 0x01,
    0x62, 't', 's', 0x00, 0x61, 'm', 0xa1, 0x61, 'x', 0x01,
};

static size_t put_text(uint8_t *out, size_t pos, const char *text)
{
    size_t n = strlen(text); /* < 24 here: one-byte header */
    out[pos++] = (uint8_t)(0x60 | n);
    memcpy(out + pos, text, n);
    return pos + n;
}

static size_t wrong_type_cbor(int64_t ts_ms, uint8_t *out)
{
    size_t pos = 0;
    out[pos++] = 0xa4; /* map of 4 */
    pos = put_text(out, pos, "seq");
    pos = put_text(out, pos, "7"); /* a text string where an unsigned integer belongs */
    pos = put_text(out, pos, "boot");
    out[pos++] = 0x01;
    pos = put_text(out, pos, "ts");
    out[pos++] = 0x1b; /* uint64, big endian */
    uint64_t ts = ts_ms > 0 ? (uint64_t)ts_ms : 0;
    for (int i = 7; i >= 0; i--)
        out[pos++] = (uint8_t)(ts >> (8 * i));
    pos = put_text(out, pos, "m");
    out[pos++] = 0xa1;
    pos = put_text(out, pos, "temperature_c");
    out[pos++] = 0x15; /* 21 */
    return pos;
}

size_t tg_fault_malformed(uint64_t *rng, const uint8_t *last, size_t last_len, int64_t ts_ms,
                          uint8_t *out, size_t cap, enum tg_malformed_kind *kind)
{
    enum tg_malformed_kind k = (enum tg_malformed_kind)tg_sim_rand_below(rng, TG_MALFORMED_KINDS);
    *kind = k;
    size_t n = 0;
    switch (k) {
    case TG_MALFORMED_TRUNCATED_CBOR: {
        if (!last || last_len < 2 || last_len > cap) {
            last = fallback_cbor;
            last_len = sizeof fallback_cbor;
        }
        n = 1 + tg_sim_rand_below(rng, (uint32_t)(last_len - 1)); /* 1 .. last_len - 1 */
        memcpy(out, last, n);
        break;
    }
    case TG_MALFORMED_WRONG_TYPE_CBOR:
        n = wrong_type_cbor(ts_ms, out);
        break;
    case TG_MALFORMED_WRONG_TYPE_JSON: {
        int w = snprintf((char *)out, cap,
                         "{\"seq\":\"7\",\"boot\":1,\"ts\":%" PRId64 ",\"m\":{\"temperature_c\":21.5}}",
                         ts_ms);
        n = w > 0 ? (size_t)w : 0;
        break;
    }
    case TG_MALFORMED_BAD_JSON:
    default: {
        /* A missing closing brace, or a trailing comma. */
        int w = tg_sim_rand_chance(rng, 0.5)
                    ? snprintf((char *)out, cap,
                               "{\"seq\":7,\"boot\":1,\"ts\":%" PRId64 ",\"m\":{\"temperature_c\":21.5}",
                               ts_ms)
                    : snprintf((char *)out, cap,
                               "{\"seq\":7,\"boot\":1,\"ts\":%" PRId64 ",\"m\":{\"temperature_c\":21.5,}}",
                               ts_ms);
        n = w > 0 ? (size_t)w : 0;
        break;
    }
    }
    if (n >= cap)
        n = cap - 1;
    return n ? n : 1;
}

int64_t tg_fault_skew_offset_ms(uint64_t *rng)
{
    int64_t mag = (int64_t)tg_sim_rand_range(rng, TG_FAULT_SKEW_MIN_MS, TG_FAULT_SKEW_MAX_MS);
    return tg_sim_rand_chance(rng, 0.5) ? -mag : mag;
}

int64_t tg_fault_skew_step_ms(uint64_t *rng)
{
    return (int64_t)tg_sim_rand_range(rng, TG_FAULT_STEP_MIN_MS, TG_FAULT_STEP_MAX_MS);
}

int64_t tg_fault_skew_after_step(int64_t offset, int64_t initial, int64_t step)
{
    int64_t next = offset - step;
    /* Past the band's far end the clock is "corrected" forward to the size of its initial
     * offset, ahead of true time, and starts stepping back again from there. */
    int64_t ahead = initial < 0 ? -initial : initial;
    return next < -TG_FAULT_SKEW_MAX_MS ? ahead : next;
}
