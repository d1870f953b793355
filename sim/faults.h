/*
 * faults.h - what the simulator's fault injection sends and decides, as pure functions of a
 * random stream (sim_rand.h), so that a run is repeatable from --seed and the choices can be
 * tested without a network.
 *
 * Malformed payloads (--malformed): published by the device beside its readings, outside the
 * firmware core, so no seq is consumed. Each is one of
 *   truncated_cbor   the device's last native payload cut short (CBOR is prefix-free, so every
 *                    strict prefix is ill-formed); a fixed payload when none was sent yet
 *   wrong_type_cbor  a native CBOR map whose "seq" is a text string
 *   wrong_type_json  the same in JSON
 *   bad_json         JSON that does not parse (a missing brace, a trailing comma)
 * and the gateway's decoder rejects every one of them (DLQ reasons malformed or wrong_type).
 *
 * Clock skew (--skew): a skewed device's clock is off by a fixed 10..240 s either way, inside
 * the gateway's default acceptance (validate.max_skew_ms = 300 s ahead, 7 days behind), and
 * steps back by 2..10 s about TG_FAULT_STEPS_PER_HOUR times an hour (an NTP correction), so a
 * few of its readings carry a ts earlier than the reading before: out-of-order event times.
 * A step that would take the offset below -240 s sets it to +|initial| instead (a forward
 * correction), so the clock always stays within 240 s of true time.
 */
#ifndef TG_SIM_FAULTS_H
#define TG_SIM_FAULTS_H

#include <stddef.h>
#include <stdint.h>

enum tg_malformed_kind {
    TG_MALFORMED_TRUNCATED_CBOR = 0,
    TG_MALFORMED_WRONG_TYPE_CBOR,
    TG_MALFORMED_WRONG_TYPE_JSON,
    TG_MALFORMED_BAD_JSON,
    TG_MALFORMED_KINDS
};

/* Longest malformed payload tg_fault_malformed() writes when last_len is at most this too. */
#define TG_FAULT_MALFORMED_MAX 256

#define TG_FAULT_SKEW_MIN_MS 10000
#define TG_FAULT_SKEW_MAX_MS 240000
#define TG_FAULT_STEP_MIN_MS 2000
#define TG_FAULT_STEP_MAX_MS 10000
#define TG_FAULT_STEPS_PER_HOUR 6.0

/* "truncated_cbor", "wrong_type_cbor", "wrong_type_json", "bad_json". */
const char *tg_malformed_kind_name(enum tg_malformed_kind kind);

/* Writes one malformed payload into out (cap >= TG_FAULT_MALFORMED_MAX) and returns its
 * length (>= 1); *kind says which. last[0..last_len) is the device's last valid payload (may
 * be NULL / 0); ts_ms goes into the payloads that carry a time. */
size_t tg_fault_malformed(uint64_t *rng, const uint8_t *last, size_t last_len, int64_t ts_ms,
                          uint8_t *out, size_t cap, enum tg_malformed_kind *kind);

/* A skewed device's initial clock offset in ms: +-(TG_FAULT_SKEW_MIN_MS..TG_FAULT_SKEW_MAX_MS). */
int64_t tg_fault_skew_offset_ms(uint64_t *rng);

/* The size of one backward step of a skewed clock, in ms (positive). */
int64_t tg_fault_skew_step_ms(uint64_t *rng);

/* The offset after one backward step from offset, given the initial offset: back by step,
 * or +|initial| when that would be more than TG_FAULT_SKEW_MAX_MS behind. */
int64_t tg_fault_skew_after_step(int64_t offset, int64_t initial, int64_t step);

#endif
