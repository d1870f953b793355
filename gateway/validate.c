/*
 * validate.c - signature, clock and range checks on decoded payloads (rules in validate.h).
 *
 * Both lookups on the hot path (device -> key, metric -> range) are chained hash tables over
 * one array, indexed by FNV-1a. The HMAC context is set up once: mbedtls_md_hmac() would
 * allocate and free one per message.
 */
#include "validate.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>

#include "codec_canonical.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#define KEY_MIN_BYTES 16
#define KEY_MAX_BYTES 64
#define KEYS_LINE_MAX 512
#define KEYS_MAX_ERRORS 10
#define METRIC_MAX_BYTES 255
#define RANGE_TEXT_MAX (2 * TG_CODEC_DOUBLE_MAX + 2)

struct key_entry {
    char device[TG_DEVICE_ID_MAX + 1];
    uint8_t key_len;
    uint8_t key[KEY_MAX_BYTES];
    uint32_t line; /* where it was defined, for "listed twice" */
};

struct keyring {
    struct key_entry *entries;
    uint32_t n, cap;
    struct tg_strmap *index; /* device id -> index in entries (ids are not secret) */
};

struct range {
    char *metric;
    double lo, hi; /* -inf / +inf when open */
    char text[RANGE_TEXT_MAX]; /* "LO..HI" as written back in messages */
};

struct tg_validate {
    int64_t max_skew_ms, max_age_ms;
    bool require_signature;
    char *keys_file;     /* NULL: no keys */
    struct keyring *keys;
    struct range *ranges;
    uint32_t n_ranges;
    struct tg_strmap *range_index; /* metric -> index in ranges; NULL while there are none */
    mbedtls_md_context_t hmac;
};

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen,
                                                          const char *fmt, ...)
{
    if (!errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- keys ---------------------------------------------------------------------------------- */

static void keyring_free(struct keyring *kr)
{
    if (!kr)
        return;
    if (kr->entries) {
        mbedtls_platform_zeroize(kr->entries, (size_t)kr->cap * sizeof *kr->entries);
        free(kr->entries);
    }
    tg_strmap_destroy(kr->index);
    free(kr);
}

static const struct key_entry *keyring_find(const struct keyring *kr, const char *device,
                                            size_t len)
{
    uint32_t i;
    return tg_strmap_get(kr->index, device, len, &i) ? &kr->entries[i] : NULL;
}

/* Room for one more entry. Grows by copying rather than realloc(), so that the old block
 * can be wiped before it is freed. */
static bool keyring_reserve(struct keyring *kr)
{
    if (kr->n < kr->cap)
        return true;
    uint32_t cap = kr->cap ? kr->cap * 2 : 64;
    struct key_entry *entries = malloc((size_t)cap * sizeof *entries);
    if (!entries)
        return false;
    if (kr->entries) {
        memcpy(entries, kr->entries, (size_t)kr->n * sizeof *entries);
        mbedtls_platform_zeroize(kr->entries, (size_t)kr->cap * sizeof *kr->entries);
        free(kr->entries);
    }
    kr->entries = entries;
    kr->cap = cap;
    return true;
}

/* Problems found in a keys file, one per line, up to KEYS_MAX_ERRORS. */
struct problems {
    char *buf;
    size_t len;
    size_t used;
    unsigned count;
};

__attribute__((format(printf, 2, 3))) static void problem(struct problems *pb, const char *fmt,
                                                          ...)
{
    if (++pb->count > KEYS_MAX_ERRORS || pb->used + 1 >= pb->len)
        return;
    if (pb->count > 1)
        pb->buf[pb->used++] = '\n';
    if (pb->count == KEYS_MAX_ERRORS) {
        snprintf(pb->buf + pb->used, pb->len - pb->used, "(further problems not shown)");
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(pb->buf + pb->used, pb->len - pb->used, fmt, ap);
        va_end(ap);
    }
    pb->used += strlen(pb->buf + pb->used);
}

/* A device token as messages show it. A token of 32 or more hex digits is probably a key in
 * the wrong column (or a line holding only a key), and key material is never echoed. */
static const char *shown(const char *device)
{
    size_t n = 0;
    while (tg_hex_digit(device[n]) >= 0)
        n++;
    return device[n] == '\0' && n >= 2 * KEY_MIN_BYTES ? "<hex digits, not shown>" : device;
}

/* One line of the keys file, comment already cut. Adds the key to kr, or reports why not. */
static tg_err parse_key_line(struct keyring *kr, const char *path, uint32_t lineno, char *line,
                             struct problems *pb)
{
    static const char blanks[] = " \t\r\n\v\f";
    char *save = NULL;
    char *device = strtok_r(line, blanks, &save);
    if (!device)
        return TG_OK;
    char *hex = strtok_r(NULL, blanks, &save);
    size_t dev_len = strlen(device);
    if (!tg_device_id_valid(device, dev_len)) {
        problem(pb, "%s:%" PRIu32 ": invalid device id \"%.64s\" (expected 1 to 64 of "
                "[A-Za-z0-9_.-])", path, lineno, shown(device));
        return TG_OK;
    }
    if (!hex) {
        problem(pb, "%s:%" PRIu32 ": device \"%s\" has no key (expected \"<device_id> <hex key>\")",
                path, lineno, shown(device));
        return TG_OK;
    }
    if (strtok_r(NULL, blanks, &save)) {
        problem(pb, "%s:%" PRIu32 ": device \"%s\": unexpected text after the key (expected "
                "\"<device_id> <hex key>\")", path, lineno, shown(device));
        return TG_OK;
    }
    size_t digits = strlen(hex);
    if (digits < 2 * KEY_MIN_BYTES || digits > 2 * KEY_MAX_BYTES || digits % 2) {
        problem(pb, "%s:%" PRIu32 ": device \"%s\": expected a key of %d to %d bytes (%d to %d "
                "hex digits, an even number), got %zu digits", path, lineno, shown(device),
                KEY_MIN_BYTES, KEY_MAX_BYTES, 2 * KEY_MIN_BYTES, 2 * KEY_MAX_BYTES, digits);
        return TG_OK;
    }
    for (size_t i = 0; i < digits; i++) {
        if (tg_hex_digit(hex[i]) < 0) {
            problem(pb, "%s:%" PRIu32 ": device \"%s\": the key is not hexadecimal (character "
                    "%zu)", path, lineno, shown(device), i + 1);
            return TG_OK;
        }
    }
    const struct key_entry *dup = keyring_find(kr, device, dev_len);
    if (dup) {
        problem(pb, "%s:%" PRIu32 ": device \"%s\" is listed twice (first at line %" PRIu32 ")",
                path, lineno, shown(device), dup->line);
        return TG_OK;
    }
    if (!keyring_reserve(kr) || tg_strmap_put(kr->index, device, dev_len, kr->n) != TG_OK)
        return TG_ERR_NOMEM;
    uint32_t i = kr->n++;
    struct key_entry *k = &kr->entries[i];
    memcpy(k->device, device, dev_len + 1);
    k->key_len = (uint8_t)(digits / 2);
    for (size_t b = 0; b < k->key_len; b++)
        k->key[b] = (uint8_t)(tg_hex_digit(hex[2 * b]) << 4 | tg_hex_digit(hex[2 * b + 1]));
    k->line = lineno;
    return TG_OK;
}

/*
 * Reads a keys file into a new keyring. Every buffer that held key text (the line, stdio's
 * buffer) is ours and wiped before returning.
 */
static tg_err keyring_load(const char *path, struct keyring **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "re");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return TG_ERR_CONFIG;
    }
    char iobuf[4096];
    char line[KEYS_LINE_MAX];
    setvbuf(f, iobuf, _IOFBF, sizeof iobuf);
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        TG_LOG_WARN("validate", "keys file %s is readable by others than its owner (mode %03o)",
                    path, (unsigned)(st.st_mode & 0777));

    tg_err rc = TG_OK;
    char scratch[1];
    struct problems pb = {.buf = errlen ? err : scratch, .len = errlen ? errlen : sizeof scratch};
    pb.buf[0] = '\0';
    struct keyring *kr = calloc(1, sizeof *kr);
    if (!kr || !(kr->index = tg_strmap_new())) {
        rc = TG_ERR_NOMEM;
        goto out;
    }
    uint32_t lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int c;
            while ((c = getc(f)) != EOF && c != '\n')
                ;
            problem(&pb, "%s:%" PRIu32 ": line longer than %d bytes", path, lineno,
                    KEYS_LINE_MAX - 2);
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        if ((rc = parse_key_line(kr, path, lineno, line, &pb)) != TG_OK)
            goto out;
    }
    if (ferror(f))
        problem(&pb, "%s: read error: %s", path, strerror(errno));
    if (pb.count)
        rc = TG_ERR_CONFIG;
out:
    fclose(f);
    mbedtls_platform_zeroize(iobuf, sizeof iobuf);
    mbedtls_platform_zeroize(line, sizeof line);
    if (rc != TG_OK) {
        keyring_free(kr);
        if (rc == TG_ERR_NOMEM)
            set_err(err, errlen, "%s: out of memory", path);
        return rc;
    }
    *out = kr;
    return TG_OK;
}

tg_err tg_validate_reload_keys(struct tg_validate *v, char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    if (!v->keys_file)
        return TG_OK;
    struct keyring *kr;
    tg_err rc = keyring_load(v->keys_file, &kr, err, errlen);
    if (rc != TG_OK)
        return rc;
    keyring_free(v->keys);
    v->keys = kr;
    return TG_OK;
}

size_t tg_validate_keys(const struct tg_validate *v)
{
    return v->keys ? v->keys->n : 0;
}

/* --- construction -------------------------------------------------------------------------- */

tg_err tg_validate_new(const struct tg_validate_opts *opts, struct tg_validate **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    set_err(err, errlen, "%s", "");
    if (opts->max_skew_ms < 0 || opts->max_age_ms < 0) {
        set_err(err, errlen, "max_skew_ms and max_age_ms cannot be negative");
        return TG_ERR_USAGE;
    }
    bool has_keys = opts->keys_file && *opts->keys_file;
    if (opts->require_signature && !has_keys) {
        set_err(err, errlen, "require_signature = true needs a keys_file");
        return TG_ERR_CONFIG;
    }
    struct tg_validate *v = calloc(1, sizeof *v);
    if (!v)
        return TG_ERR_NOMEM;
    mbedtls_md_init(&v->hmac);
    v->max_skew_ms = opts->max_skew_ms;
    v->max_age_ms = opts->max_age_ms;
    v->require_signature = opts->require_signature;
    tg_err rc = TG_ERR_NOMEM;
    if (mbedtls_md_setup(&v->hmac, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0)
        goto fail;
    if (has_keys) {
        if (!(v->keys_file = strdup(opts->keys_file)))
            goto fail;
        if ((rc = tg_validate_reload_keys(v, err, errlen)) != TG_OK)
            goto fail;
    }
    *out = v;
    return TG_OK;
fail:
    if (rc == TG_ERR_NOMEM)
        set_err(err, errlen, "out of memory");
    tg_validate_destroy(v);
    return rc;
}

void tg_validate_destroy(struct tg_validate *v)
{
    if (!v)
        return;
    keyring_free(v->keys);
    mbedtls_md_free(&v->hmac); /* wipes the keyed inner/outer state */
    for (uint32_t i = 0; i < v->n_ranges; i++)
        free(v->ranges[i].metric);
    free(v->ranges);
    tg_strmap_destroy(v->range_index);
    free(v->keys_file);
    free(v);
}

/* --- ranges -------------------------------------------------------------------------------- */

/* One bound: blanks around it allowed, empty means open. False when it is not a finite
 * decimal number. */
static bool parse_bound(const char *s, size_t len, bool *present, double *value)
{
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    *present = len > 0;
    if (!len)
        return true;
    char text[64];
    if (len >= sizeof text)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789+-.eE", s[i]) || s[i] == '\0')
            return false;
    memcpy(text, s, len);
    text[len] = '\0';
    char *end;
    errno = 0;
    *value = strtod(text, &end);
    return end == text + len && errno != ERANGE && isfinite(*value);
}

static struct range *range_find(const struct tg_validate *v, const char *metric, size_t len)
{
    uint32_t i;
    return v->range_index && tg_strmap_get(v->range_index, metric, len, &i) ? &v->ranges[i]
                                                                            : NULL;
}

tg_err tg_validate_add_range(struct tg_validate *v, const char *metric, const char *spec,
                             char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    size_t metric_len = strlen(metric);
    if (metric_len == 0 || metric_len > METRIC_MAX_BYTES) {
        set_err(err, errlen, "\"%.64s\": a metric name is 1 to %d bytes", metric,
                METRIC_MAX_BYTES);
        return TG_ERR_CONFIG;
    }
    const char *dots = strstr(spec, "..");
    bool has_lo, has_hi;
    double lo = -INFINITY, hi = INFINITY;
    /* strstr() finds the first "..", so "1...2" (ambiguous) shows as a '.' right after it. */
    if (!dots || dots[2] == '.' || strstr(dots + 2, "..") ||
        !parse_bound(spec, (size_t)(dots - spec), &has_lo, &lo) ||
        !parse_bound(dots + 2, strlen(dots + 2), &has_hi, &hi)) {
        set_err(err, errlen, "%s: expected a range LO..HI of decimal numbers (either bound may "
                "be empty, e.g. -40..125 or 0..), got \"%s\"", metric, spec);
        return TG_ERR_CONFIG;
    }
    if (!has_lo && !has_hi) {
        set_err(err, errlen, "%s: a range needs at least one bound (e.g. -40..125 or 0..), got "
                "\"%s\"", metric, spec);
        return TG_ERR_CONFIG;
    }
    if (!has_lo)
        lo = -INFINITY;
    if (!has_hi)
        hi = INFINITY;
    if (lo > hi) {
        set_err(err, errlen, "%s: the lower bound is above the upper bound in \"%s\"", metric,
                spec);
        return TG_ERR_CONFIG;
    }
    char lo_text[TG_CODEC_DOUBLE_MAX] = "", hi_text[TG_CODEC_DOUBLE_MAX] = "";
    if (has_lo)
        tg_codec_format_double(lo, lo_text);
    if (has_hi)
        tg_codec_format_double(hi, hi_text);

    struct range *rg = range_find(v, metric, metric_len);
    if (!rg) {
        if (!v->range_index && !(v->range_index = tg_strmap_new())) {
            set_err(err, errlen, "out of memory");
            return TG_ERR_NOMEM;
        }
        char *name = strdup(metric);
        struct range *ranges = name ? realloc(v->ranges, (v->n_ranges + 1) * sizeof *ranges) : NULL;
        if (!ranges || tg_strmap_put(v->range_index, metric, metric_len, v->n_ranges) != TG_OK) {
            if (ranges)
                v->ranges = ranges;
            free(name);
            set_err(err, errlen, "out of memory");
            return TG_ERR_NOMEM;
        }
        v->ranges = ranges;
        rg = &ranges[v->n_ranges++];
        rg->metric = name;
    }
    rg->lo = lo;
    rg->hi = hi;
    snprintf(rg->text, sizeof rg->text, "%s..%s", lo_text, hi_text);
    return TG_OK;
}

/* --- configuration -------------------------------------------------------------------------- */

struct range_ctx {
    struct tg_validate *v;
    char *err;
    size_t errlen;
};

static tg_err add_range_pair(void *arg, const char *key, const char *value, const char *origin)
{
    struct range_ctx *ctx = arg;
    char msg[512];
    tg_err rc = tg_validate_add_range(ctx->v, key, value, msg, sizeof msg);
    if (rc != TG_OK)
        set_err(ctx->err, ctx->errlen, "%s: [validate.ranges] %s", origin, msg);
    return rc;
}

tg_err tg_validate_from_config(const struct tg_config *cfg, struct tg_validate **out, char *err,
                               size_t errlen)
{
    *out = NULL;
    struct tg_validate_opts opts = {
        .max_skew_ms = tg_config_get_ms(cfg, "validate", "max_skew_ms"),
        .max_age_ms = tg_config_get_ms(cfg, "validate", "max_age_ms"),
        .require_signature = tg_config_get_bool(cfg, "validate", "require_signature"),
        .keys_file = tg_config_get_str(cfg, "validate", "keys_file"),
    };
    if (opts.require_signature && !*opts.keys_file) {
        set_err(err, errlen, "%s: [validate] require_signature: true needs keys_file to be set",
                tg_config_origin(cfg, "validate", "require_signature"));
        return TG_ERR_CONFIG;
    }
    struct tg_validate *v;
    tg_err rc = tg_validate_new(&opts, &v, err, errlen);
    if (rc != TG_OK)
        return rc;
    struct range_ctx ctx = {v, err, errlen};
    if ((rc = tg_config_foreach_pair(cfg, "validate.ranges", add_range_pair, &ctx)) != TG_OK) {
        tg_validate_destroy(v);
        return rc;
    }
    *out = v;
    return TG_OK;
}

/* --- the checks ---------------------------------------------------------------------------- */

/* Payload-level rejections (the signature) have no reading index. */
#define WHOLE_PAYLOAD SIZE_MAX

/* Writes "reading N: " (for a reading of a payload of several) and the message into why;
 * returns code. */
__attribute__((format(printf, 6, 7))) static tg_err reject(char *why, size_t whylen,
                                                           const struct tg_decoded *p,
                                                           size_t index, tg_err code,
                                                           const char *fmt, ...)
{
    if (!whylen)
        return code;
    size_t used = 0;
    if (p->n_readings > 1 && index != WHOLE_PAYLOAD) {
        int n = snprintf(why, whylen, "reading %zu: ", index);
        used = n < 0 ? 0 : (size_t)n < whylen ? (size_t)n : whylen - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, whylen - used, fmt, ap);
    va_end(ap);
    return code;
}

static tg_err check_signature(struct tg_validate *v, const char *device,
                              const struct tg_decoded *p, char *why, size_t whylen)
{
    size_t dev_len = strlen(device);
    const struct key_entry *k = v->keys ? keyring_find(v->keys, device, dev_len) : NULL;
    if (!k) {
        if (v->require_signature)
            return reject(why, whylen, p, WHOLE_PAYLOAD, TG_ERR_UNSIGNED,
                          "no key is configured for device \"%s\" and signatures are required",
                          device);
        return TG_OK;
    }
    if (!p->sig) {
        const char *form = p->format == TG_FORMAT_SENML ? " (SenML payloads cannot be signed)"
                           : !p->cbor                   ? " (JSON payloads cannot be signed)"
                                                        : "";
        return reject(why, whylen, p, WHOLE_PAYLOAD, TG_ERR_UNSIGNED,
                      "device \"%s\" has a key but the payload is not signed%s", device, form);
    }
    if (!p->signed_bytes)
        return reject(why, whylen, p, WHOLE_PAYLOAD, TG_ERR_BAD_SIGNATURE,
                      "signature of device \"%s\" comes without the bytes it signs", device);
    uint8_t mac[TG_SIG_LEN];
    if (mbedtls_md_hmac_starts(&v->hmac, k->key, k->key_len) != 0 ||
        mbedtls_md_hmac_update(&v->hmac, p->signed_bytes, p->signed_len) != 0 ||
        mbedtls_md_hmac_finish(&v->hmac, mac) != 0) {
        mbedtls_platform_zeroize(mac, sizeof mac);
        return reject(why, whylen, p, WHOLE_PAYLOAD, TG_ERR_INTERNAL,
                      "HMAC-SHA256 computation failed");
    }
    /* Constant time: how many leading bytes match must not show in the timing. */
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < TG_SIG_LEN; i++)
        diff |= mac[i] ^ p->sig[i];
    mbedtls_platform_zeroize(mac, sizeof mac);
    if (diff != 0)
        return reject(why, whylen, p, WHOLE_PAYLOAD, TG_ERR_BAD_SIGNATURE,
                      "signature does not match the key of device \"%s\"", device);
    return TG_OK;
}

static tg_err check_reading(const struct tg_validate *v, const struct tg_decoded *p, size_t index,
                            int64_t now_ms, char *why, size_t whylen)
{
    const struct tg_reading *r = &p->readings[index];
    /* Differences in uint64: ts and now may be any int64, their distance does not overflow. */
    if (v->max_skew_ms > 0 && r->ts_ms > now_ms &&
        (uint64_t)r->ts_ms - (uint64_t)now_ms > (uint64_t)v->max_skew_ms)
        return reject(why, whylen, p, index, TG_ERR_CLOCK_SKEW,
                      "ts %" PRId64 " is %" PRIu64 " ms ahead of the gateway clock (limit %" PRId64
                      ")",
                      r->ts_ms, (uint64_t)r->ts_ms - (uint64_t)now_ms, v->max_skew_ms);
    if (v->max_age_ms > 0 && r->ts_ms < now_ms &&
        (uint64_t)now_ms - (uint64_t)r->ts_ms > (uint64_t)v->max_age_ms)
        return reject(why, whylen, p, index, TG_ERR_CLOCK_SKEW,
                      "ts %" PRId64 " is %" PRIu64 " ms behind the gateway clock (limit %" PRId64
                      ")",
                      r->ts_ms, (uint64_t)now_ms - (uint64_t)r->ts_ms, v->max_age_ms);
    if (!v->n_ranges)
        return TG_OK;
    for (size_t m = 0; m < r->n_metrics; m++) {
        const struct tg_metric *mt = &r->metrics[m];
        const struct range *rg = range_find(v, mt->name, strlen(mt->name));
        if (rg && (mt->value < rg->lo || mt->value > rg->hi)) {
            char value[TG_CODEC_DOUBLE_MAX];
            tg_codec_format_double(mt->value, value);
            return reject(why, whylen, p, index, TG_ERR_OUT_OF_RANGE,
                          "metric \"%s\" = %s is outside %s", mt->name, value, rg->text);
        }
    }
    return TG_OK;
}

tg_err tg_validate_payload(struct tg_validate *v, const char *device, const struct tg_decoded *p,
                           int64_t now_ms, char *why, size_t whylen)
{
    if (whylen)
        why[0] = '\0';
    tg_err rc = check_signature(v, device, p, why, whylen);
    for (size_t i = 0; rc == TG_OK && i < p->n_readings; i++)
        rc = check_reading(v, p, i, now_ms, why, whylen);
    return rc;
}
