/*
 * validate.h - the gateway's semantic checks on a decoded payload (design.md 5.6).
 *
 * The decoder (codec.h) has already checked well-formedness, types, sizes and limits. This
 * module applies what only the gateway's configuration knows, in this order, and rejects the
 * whole payload at the first failure with a code (its DLQ reason) and a text naming it:
 *
 *   1. Signature (HMAC-SHA256 over M', see codec_native.h), per-device keys from a file:
 *      - a device WITH a key must send a valid signature: none -> TG_ERR_UNSIGNED (JSON and
 *        SenML payloads cannot be signed, so they are always unsigned); a signature that does
 *        not match -> TG_ERR_BAD_SIGNATURE (compared in constant time). A signature of the
 *        wrong length never gets here: the decoder rejects it, also as TG_ERR_BAD_SIGNATURE.
 *      - a device WITHOUT a key: a signature, if present, is ignored (there is nothing to
 *        check it against; it is not an error, so nodes can be given keys one by one) -
 *        unless require_signature is set: then the payload is rejected as TG_ERR_UNSIGNED,
 *        "no key is configured for device ...".
 *   2. Clock skew, per reading: ts more than max_skew_ms ahead of the gateway clock, or more
 *      than max_age_ms behind it -> TG_ERR_CLOCK_SKEW,
 *        ts 1763712000000 is 3600000 ms ahead of the gateway clock (limit 300000)
 *      A reading exactly at a limit passes. A limit of 0 switches that bound off.
 *   3. Ranges, per metric of each reading: a value outside its metric's configured range ->
 *      TG_ERR_OUT_OF_RANGE,
 *        metric "temperature" = 300 is outside -40..125
 *      Bounds are inclusive; metrics without a range pass.
 * In a payload of several readings (SenML) the text starts with "reading N: " (0-based).
 *
 * Configuration (TG_VALIDATE_CONFIG_KEYS below):
 *
 *   [validate]
 *   max_skew_ms = 300000          ; how far ahead of the gateway clock a ts may be; 0: no limit
 *   max_age_ms = 604800000        ; how far behind; 0: no limit
 *   require_signature = false     ; reject devices that have no key
 *   keys_file = /etc/tidegate/device-keys
 *
 *   [validate.ranges]             ; metric = LO..HI, decimal numbers, either bound may be empty
 *   temperature = -40..125
 *   humidity = 0..100
 *   battery = 0..
 *
 * Keys file: one device per line, `<device_id> <key in hex>`, separated by blanks; the key is
 * 16 to 64 bytes (32 to 128 hex digits, either case). `#` starts a comment (to the end of the
 * line); blank lines are ignored; a device listed twice is an error. Errors name file:line and
 * never echo key material. The file should be readable by the gateway only: a group- or
 * world-readable file is logged as a warning. Keys are held in memory in a hash table (O(1)
 * lookup) and wiped when replaced or destroyed.
 *
 * Threads: not synchronized. A validator belongs to the pipeline thread, which makes every
 * call, tg_validate_reload_keys() included (a SIGHUP handler only sets a flag for it).
 */
#ifndef TG_VALIDATE_H
#define TG_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "config.h"
#include "error.h"

struct tg_validate_opts {
    int64_t max_skew_ms;    /* how far ahead of now_ms a ts may lie; 0: no limit */
    int64_t max_age_ms;     /* how far behind now_ms a ts may lie; 0: no limit */
    bool require_signature; /* devices without a key are rejected (needs keys_file) */
    const char *keys_file;  /* path of the device keys; NULL or "": no keys */
};

/* The [validate] keys and the [validate.ranges] pass-through section, for a program's config
 * schema: static const struct tg_config_key schema[] = {..., TG_VALIDATE_CONFIG_KEYS}; */
#define TG_VALIDATE_CONFIG_KEYS                                                                  \
    TG_CFG_MS("validate", "max_skew_ms", "300000", 0, INT64_C(31536000000),                      \
              "how far (ms) a reading's time may lie ahead of the gateway clock; 0: no limit"),  \
    TG_CFG_MS("validate", "max_age_ms", "604800000", 0, INT64_C(31536000000),                    \
              "how far (ms) a reading's time may lie behind the gateway clock; 0: no limit"),    \
    TG_CFG_BOOL("validate", "require_signature", "false",                                        \
                "reject payloads of devices that have no key in keys_file (true/false)"),        \
    TG_CFG_STR("validate", "keys_file", "",                                                      \
               "path of the device keys file (<device_id> <hex key> per line); empty: none"),    \
    TG_CFG_PASSTHROUGH("validate.ranges",                                                        \
                       "allowed values per metric: name = LO..HI (either bound may be empty)")

struct tg_validate;

/*
 * A validator with opts (copied; keys_file is read now and its path kept for reloads) and no
 * ranges. TG_ERR_CONFIG with a text in err when the keys file cannot be read or has errors
 * (each "FILE:LINE: problem", one per line) or require_signature is set without a keys file;
 * TG_ERR_USAGE when a limit is negative; TG_ERR_NOMEM when out of memory. On success *out
 * belongs to the caller. err may be NULL when errlen is 0.
 */
tg_err tg_validate_new(const struct tg_validate_opts *opts, struct tg_validate **out, char *err,
                       size_t errlen);

/* Frees v, wiping its keys. NULL is a no-op. */
void tg_validate_destroy(struct tg_validate *v);

/*
 * tg_validate_new() from a config holding TG_VALIDATE_CONFIG_KEYS, then every pair of
 * [validate.ranges] through tg_validate_add_range(). Error texts start with where the value
 * came from: "gateway.ini:14: [validate.ranges] humidity: expected ...".
 */
tg_err tg_validate_from_config(const struct tg_config *cfg, struct tg_validate **out, char *err,
                               size_t errlen);

/*
 * Sets the allowed range of metric from spec "LO..HI": decimal numbers (strtod syntax, finite,
 * no hex, inf or nan), blanks around them allowed, either bound may be empty ("..100", "0..")
 * but not both, LO <= HI. A second range for the same metric replaces the first.
 * TG_ERR_CONFIG with err = `metric: expected ..., got "spec"` (the caller prefixes where the
 * value came from); TG_ERR_NOMEM. Setup only; strings are copied.
 */
tg_err tg_validate_add_range(struct tg_validate *v, const char *metric, const char *spec,
                             char *err, size_t errlen);

/*
 * Re-reads the keys file (after SIGHUP). All or nothing: on any error (TG_ERR_CONFIG with the
 * same texts as tg_validate_new(), or TG_ERR_NOMEM) the keys in use stay as they were. TG_OK
 * and nothing to do when no keys file is configured.
 */
tg_err tg_validate_reload_keys(struct tg_validate *v, char *err, size_t errlen);

/* Number of device keys in use. */
size_t tg_validate_keys(const struct tg_validate *v);

/*
 * Applies the checks above to p, the decoded payload that device (the id from the MQTT topic)
 * sent, at gateway time now_ms (ms since the Unix epoch). TG_OK, or the rejecting code with a
 * text in why (truncated to whylen; "" on TG_OK). Allocates nothing; p is only read.
 */
tg_err tg_validate_payload(struct tg_validate *v, const char *device, const struct tg_decoded *p,
                           int64_t now_ms, char *why, size_t whylen);

#endif
