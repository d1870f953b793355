/*
 * codec_canonical.c - the canonical record (codec_canonical.h) as JSON and CBOR.
 *
 * Both encoders run once per reading on the gateway's hot path, so they write straight into
 * the caller's buffer and never allocate; past the buffer's end they only count, so a
 * TG_ERR_FULL answer carries the size that would have been needed.
 */
#include <cbor.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical.h"
#include "codec_internal.h"


static void put_str(struct sink *s, const char *text) { put(s, text, strlen(text)); }

static tg_err finish(const struct sink *s, size_t *len)
{
    *len = s->pos;
    return s->pos <= s->cap ? TG_OK : TG_ERR_FULL;
}

static tg_err check_values(const struct tg_reading *rd)
{
    for (size_t i = 0; i < rd->n_metrics; i++)
        if (!isfinite(rd->metrics[i].value))
            return TG_ERR_NON_FINITE;
    return TG_OK;
}

static bool has_units(const struct tg_reading *rd)
{
    for (size_t i = 0; i < rd->n_metrics; i++)
        if (rd->metrics[i].unit)
            return true;
    return false;
}

/* --- numbers as text -------------------------------------------------------------------- */

/* Writes the decimal digits of v into the end of a 20-byte scratch; returns the first. */
static char *u64_digits(uint64_t v, char scratch[20])
{
    char *p = scratch + 20;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

static size_t format_i64(int64_t v, char *out)
{
    char scratch[20];
    size_t n = 0;
    uint64_t mag = (uint64_t)v;
    if (v < 0) {
        out[n++] = '-';
        mag = 0 - mag;
    }
    char *digits = u64_digits(mag, scratch);
    size_t len = (size_t)(scratch + 20 - digits);
    memcpy(out + n, digits, len);
    n += len;
    out[n] = '\0';
    return n;
}

/* mantissa * 10^-decimals, as plain decimal text. */
static size_t format_fixed(int64_t mantissa, int decimals, char *out)
{
    while (decimals > 0 && mantissa % 10 == 0) {
        mantissa /= 10;
        decimals--;
    }
    char scratch[20];
    size_t n = 0;
    uint64_t mag = (uint64_t)mantissa;
    if (mantissa < 0) {
        out[n++] = '-';
        mag = 0 - mag;
    }
    char *digits = u64_digits(mag, scratch);
    size_t len = (size_t)(scratch + 20 - digits), dec = (size_t)decimals;
    if (len <= dec) {
        out[n++] = '0';
        out[n++] = '.';
        memset(out + n, '0', dec - len);
        n += dec - len;
        memcpy(out + n, digits, len);
        n += len;
    } else {
        memcpy(out + n, digits, len - dec);
        n += len - dec;
        if (dec) {
            out[n++] = '.';
            memcpy(out + n, digits + len - dec, dec);
            n += dec;
        }
    }
    out[n] = '\0';
    return n;
}

/* Largest number of integer digits written without an exponent. ECMAScript's
 * Number::toString allows 21; 15 keeps every plain integer literal below 2^53, so a
 * consumer whose JSON parser stores integers in 64 bits (jansson) never overflows. */
#define MAX_PLAIN_DIGITS 15

/* Lays out a decimal s x 10^(n-k) (digits d[0..k), no trailing zeros) like ECMAScript's
 * Number::toString (JSON.stringify), but with MAX_PLAIN_DIGITS: plain digits while the
 * decimal point is within that many places, "0.000ddd" down to 1e-6, else d.ddde+X. */
static size_t render_decimal(bool negative, const char *d, int k, int n, char *out)
{
    size_t o = 0;
    if (negative)
        out[o++] = '-';
    if (k <= n && n <= MAX_PLAIN_DIGITS) {
        memcpy(out + o, d, (size_t)k);
        o += (size_t)k;
        memset(out + o, '0', (size_t)(n - k));
        o += (size_t)(n - k);
    } else if (0 < n && n <= MAX_PLAIN_DIGITS) {
        memcpy(out + o, d, (size_t)n);
        o += (size_t)n;
        out[o++] = '.';
        memcpy(out + o, d + n, (size_t)(k - n));
        o += (size_t)(k - n);
    } else if (-6 < n && n <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        memset(out + o, '0', (size_t)-n);
        o += (size_t)-n;
        memcpy(out + o, d, (size_t)k);
        o += (size_t)k;
    } else {
        out[o++] = d[0];
        if (k > 1) {
            out[o++] = '.';
            memcpy(out + o, d + 1, (size_t)(k - 1));
            o += (size_t)(k - 1);
        }
        int e = n - 1;
        out[o++] = 'e';
        out[o++] = e < 0 ? '-' : '+';
        char scratch[20];
        char *digits = u64_digits((uint64_t)(e < 0 ? -e : e), scratch);
        size_t len = (size_t)(scratch + 20 - digits);
        memcpy(out + o, digits, len);
        o += len;
    }
    out[o] = '\0';
    return o;
}

/* 10^0 .. 10^22: the powers of ten a double holds exactly. */
static const double exact_pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static const uint64_t pow10_u64[18] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
    100000000ull, 1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull,
    10000000000000ull, 100000000000000ull, 1000000000000000ull, 10000000000000000ull,
    100000000000000000ull};

/* True when the decimal m x 10^scale (with the sign) reads back as exactly value.
 * When m and 10^|scale| are both exact doubles (m <= 2^53, |scale| <= 22), the one IEEE
 * multiplication or division that combines them is correctly rounded, as strtod is, so it
 * gives strtod's answer without building text (Clinger's fast path). Mean values of sensor
 * readings (the worker's aggregates) have 15-16 digits and take this path; 17-digit
 * candidates and extreme exponents still go through strtod. Only where doubles are
 * evaluated in double precision (not x87's extended one). */
static bool reads_back(bool negative, uint64_t m, int scale, double value)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    if (m <= (UINT64_C(1) << 53) && scale >= -22 && scale <= 22) {
        double mv = (double)m; /* exact */
        double r = scale < 0 ? mv / exact_pow10[-scale] : mv * exact_pow10[scale];
        return (negative ? -r : r) == value;
    }
#endif
    char text[48], scratch[20];
    size_t o = 0;
    if (negative)
        text[o++] = '-';
    char *digits = u64_digits(m, scratch);
    size_t len = (size_t)(scratch + 20 - digits);
    memcpy(text + o, digits, len);
    o += len;
    text[o++] = 'e';
    if (scale < 0)
        text[o++] = '-';
    digits = u64_digits((uint64_t)(scale < 0 ? -scale : scale), scratch);
    len = (size_t)(scratch + 20 - digits);
    memcpy(text + o, digits, len);
    o += len;
    text[o] = '\0';
    return strtod(text, NULL) == value;
}

/*
 * The general case: for p = 15, 16, 17 digits, take the correctly rounded p-digit mantissa M
 * and, when it does not read back, its neighbours M+1 and M-1. For a normal double, a
 * decimal of at most 15 digits that reads back is the correctly rounded one (the 15-digit
 * grid is coarser than the rounding interval), so p = 15 finds those; at 16 digits the
 * correctly rounded mantissa can miss where the interval is lopsided (at a power of two)
 * while its neighbour hits; 17 digits always read back. Subnormals have fewer significant
 * bits, so for them every p from 1 is tried.
 *
 * round_digits() finds the p-digit mantissas without printf where it can (most values); else
 * printf is asked once, for the 17 digits; the shorter mantissas are rounded from those.
 * That is exact unless the digits dropped are exactly a half (the 17-digit rounding may have
 * made them so), and only then printf is asked for the p digits themselves. Candidates are
 * checked with strtod on text built here: this runs for most non-decimal sensor values, and
 * the printf calls it saves were a tenth of the gateway's pipeline thread.
 */
/*
 * The p-digit mantissa of mag rounded to nearest, as mantissa x 10^scale (99..9 rounded up
 * is 10^(p-1) x 10^(scale+1), as printf writes it), without printf: where 10^k is exact
 * (k = p - 1 - decimal exponent in 0..22), the product and its error (one fused
 * multiply-add) hold mag x 10^k exactly, so its rounding is decided exactly.
 * False outside that range and on an exact tie (printf's path decides those).
 */
static bool round_digits(double mag, int p, int e10, uint64_t *mantissa, int *scale)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    for (int tries = 0; tries < 3; tries++) {
        int k = p - 1 - e10;
        if (k < 0 || k > 22)
            return false;
        double hi = mag * exact_pow10[k];
        double lo = fma(mag, exact_pow10[k], -hi); /* mag x 10^k = hi + lo exactly */
        /* the estimate of the exponent was off by one: mag x 10^k must have p digits */
        if (hi < exact_pow10[p - 1] || (hi == exact_pow10[p - 1] && lo < 0)) {
            e10--;
            continue;
        }
        if (hi > exact_pow10[p] || (hi == exact_pow10[p] && lo >= 0)) {
            e10++;
            continue;
        }
        uint64_t m;
        if (hi >= 9007199254740992.0) {
            /* From 2^53 (17 digits) hi is a whole number and the fraction is all in lo
             * (|lo| <= 8): round lo. */
            if (fabs(lo - trunc(lo)) == 0.5)
                return false;
            m = (uint64_t)hi + (uint64_t)(int64_t)nearbyint(lo);
        } else {
            double whole = floor(hi);
            /* (hi - whole) and its difference from a half are exact (hi >= 10^14); adding
             * lo keeps the sign of the exact sum, and gives zero only for an exact tie. */
            double above_half = (hi - whole - 0.5) + lo;
            if (above_half == 0)
                return false;
            m = (uint64_t)whole + (above_half > 0);
        }
        int sc = -k;
        if (m == pow10_u64[p]) {
            m = pow10_u64[p - 1];
            sc++;
        }
        *mantissa = m;
        *scale = sc;
        return true;
    }
#else
    (void)mag, (void)p, (void)e10, (void)mantissa, (void)scale;
#endif
    return false;
}

/* The text of mantissa x 10^scale, trailing zeros dropped. */
static size_t render_mantissa(bool negative, uint64_t mantissa, int scale, char *out)
{
    char scratch[20];
    char *digits = u64_digits(mantissa, scratch);
    int k = (int)(scratch + 20 - digits);
    int n = scale + k;
    while (k > 1 && digits[k - 1] == '0')
        k--;
    return render_decimal(negative, digits, k, n, out);
}

/* The text of the first of the candidates mantissa, +1, -1 (x 10^scale) that reads back as
 * value, into out; 0 when none does. */
static size_t try_candidates(bool negative, uint64_t mantissa, int scale, double value,
                             char *out)
{
    static const int deltas[] = {0, 1, -1};
    for (int i = 0; i < 3; i++) {
        uint64_t candidate = mantissa + (uint64_t)(int64_t)deltas[i];
        if (reads_back(negative, candidate, scale, value))
            return render_mantissa(negative, candidate, scale, out);
    }
    return 0;
}

static size_t format_shortest(double value, char *out)
{
    bool negative = value < 0;
    double mag = fabs(value);
    int first_p = mag < DBL_MIN ? 1 : 15;
    if (mag >= DBL_MIN) {
        /* 15, 16 and 17 digits without printf where that is exact (most sensor values and
         * their means); printf decides ties and what is out of range. */
        int e10 = (int)floor(log10(mag)); /* an estimate: round_digits corrects it */
        uint64_t mantissa;
        int scale;
        for (; first_p <= 17 && round_digits(mag, first_p, e10, &mantissa, &scale); first_p++) {
            /* A correctly rounded 17-digit decimal always reads back (the 17-digit grid is
             * finer than half the spacing of doubles), so it needs no check. */
            size_t n = first_p == 17 ? render_mantissa(negative, mantissa, scale, out)
                                     : try_candidates(negative, mantissa, scale, value, out);
            if (n)
                return n;
        }
    }
    char sci[40];
    snprintf(sci, sizeof sci, "%.16e", mag);
    uint64_t m17 = 0;
    const char *c = sci;
    for (; *c && *c != 'e'; c++)
        if (*c != '.')
            m17 = m17 * 10 + (uint64_t)(*c - '0');
    int exp10 = atoi(c + 1); /* mag ~ m17 x 10^(exp10 - 16) */

    const uint64_t *pow10 = pow10_u64;
    for (int p = first_p; p <= 17; p++) {
        uint64_t unit = pow10[17 - p];
        uint64_t mantissa = m17 / unit, dropped = m17 % unit;
        int scale = exp10 - (p - 1);
        if (p < 17 && dropped == unit / 2) {
            /* a tie at 17 digits may not be one in the exact value: ask printf */
            snprintf(sci, sizeof sci, "%.*e", p - 1, mag);
            mantissa = 0;
            for (c = sci; *c && *c != 'e'; c++)
                if (*c != '.')
                    mantissa = mantissa * 10 + (uint64_t)(*c - '0');
            scale = atoi(c + 1) - (p - 1);
        } else if (p < 17 && dropped > unit / 2 && ++mantissa == pow10[p]) {
            mantissa = pow10[p - 1]; /* 99..9 rounded up: one digit more, as printf writes it */
            scale++;
        }
        size_t n = try_candidates(negative, mantissa, scale, value, out);
        if (n)
            return n;
    }
    return (size_t)snprintf(out, TG_CODEC_DOUBLE_MAX, "%.17g", value); /* not reached */
}

/*
 * Shortest round-trip text, laid out like JavaScript (JSON.stringify) except for the
 * exponent threshold (render_decimal()):
 *  1. integral values up to 2^53 print as integers;
 *  2. most sensor values have a few decimals: for d = 1..9, m = round(value * 10^d); if
 *     m / 10^d == value the text "m e-d" reads back as value, because m and 10^d are exact
 *     doubles and both the division and strtod round the same rational correctly. The first
 *     d that works gives the fewest digits. m stays below 2^50, so value * 10^d is within
 *     0.5 of the intended integer and round() finds it;
 *  3. otherwise format_shortest(), which costs a few snprintf/strtod calls.
 */
size_t tg_codec_format_double(double value, char *out)
{
    if (value == 0) {
        strcpy(out, signbit(value) ? "-0" : "0");
        return strlen(out);
    }
    double mag = fabs(value);
    if (mag <= 9007199254740992.0 && value == trunc(value))
        return format_i64((int64_t)value, out);
    if (mag >= 1e-5 && mag < 1e15) {
        double scale = 1;
        for (int d = 1; d <= 9; d++) {
            scale *= 10;
            double x = value * scale;
            if (fabs(x) >= 1125899906842624.0) /* 2^50 */
                break;
            double m = nearbyint(x);
            if (m / scale == value)
                return format_fixed((int64_t)m, d, out);
        }
    }
    return format_shortest(value, out);
}

/* --- JSON ------------------------------------------------------------------------------- */

static void put_json_string(struct sink *s, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    put(s, "\"", 1);
    const char *run = text;
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(s, run, (size_t)(p - run));
        run = p + 1;
        char esc[6] = {'\\', 0};
        size_t esc_len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc_len = 6;
            break;
        }
        put(s, esc, esc_len);
    }
    put(s, run, strlen(run));
    put(s, "\"", 1);
}

static void put_json_int(struct sink *s, int64_t v)
{
    char text[24];
    put(s, text, format_i64(v, text));
}

static void put_json_uint(struct sink *s, uint64_t v)
{
    char scratch[20];
    char *digits = u64_digits(v, scratch);
    put(s, digits, (size_t)(scratch + 20 - digits));
}

tg_err tg_codec_canonical_json(const struct tg_reading *rd, const char *gateway, int64_t gw_ts_ms,
                               char *buf, size_t cap, size_t *len)
{
    tg_err err = check_values(rd);
    if (err != TG_OK)
        return err;
    struct sink s = {.buf = (uint8_t *)buf, .cap = cap};
    put_str(&s, "{\"device\":");
    put_json_string(&s, rd->device);
    if (rd->has_seq) {
        put_str(&s, ",\"boot\":");
        put_json_uint(&s, rd->boot);
        put_str(&s, ",\"seq\":");
        put_json_uint(&s, rd->seq);
    }
    put_str(&s, ",\"ts\":");
    put_json_int(&s, rd->ts_ms);
    if (gateway) {
        put_str(&s, ",\"gw_ts\":");
        put_json_int(&s, gw_ts_ms);
        put_str(&s, ",\"gateway\":");
        put_json_string(&s, gateway);
    }
    put_str(&s, ",\"m\":{");
    for (size_t i = 0; i < rd->n_metrics; i++) {
        char number[TG_CODEC_DOUBLE_MAX];
        if (i)
            put(&s, ",", 1);
        put_json_string(&s, rd->metrics[i].name);
        put(&s, ":", 1);
        put(&s, number, tg_codec_format_double(rd->metrics[i].value, number));
    }
    put(&s, "}", 1);
    if (has_units(rd)) {
        put_str(&s, ",\"u\":{");
        bool first = true;
        for (size_t i = 0; i < rd->n_metrics; i++) {
            if (!rd->metrics[i].unit)
                continue;
            if (!first)
                put(&s, ",", 1);
            first = false;
            put_json_string(&s, rd->metrics[i].name);
            put(&s, ":", 1);
            put_json_string(&s, rd->metrics[i].unit);
        }
        put(&s, "}", 1);
    }
    put(&s, "}", 1);
    return finish(&s, len);
}

/* --- CBOR ------------------------------------------------------------------------------- */


static void put_cbor_int(struct sink *s, int64_t v)
{
    uint8_t item[9];
    if (v >= 0)
        put(s, item, cbor_encode_uint((uint64_t)v, item, sizeof item));
    else
        put(s, item, cbor_encode_negint((uint64_t)(-(v + 1)), item, sizeof item));
}

static void put_cbor_map(struct sink *s, size_t n)
{
    uint8_t header[9];
    put(s, header, cbor_encode_map_start(n, header, sizeof header));
}

tg_err tg_codec_canonical_cbor(const struct tg_reading *rd, const char *gateway, int64_t gw_ts_ms,
                               uint8_t *buf, size_t cap, size_t *len)
{
    tg_err err = check_values(rd);
    if (err != TG_OK)
        return err;
    struct sink s = {.buf = buf, .cap = cap};
    bool units = has_units(rd);
    put_cbor_map(&s, 3 + (rd->has_seq ? 2 : 0) + (gateway ? 2 : 0) + (units ? 1 : 0));
    put_cbor_text(&s, "device", strlen("device"));
    put_cbor_text(&s, rd->device, strlen(rd->device));
    if (rd->has_seq) {
        put_cbor_text(&s, "boot", strlen("boot"));
        put_cbor_uint(&s, rd->boot);
        put_cbor_text(&s, "seq", strlen("seq"));
        put_cbor_uint(&s, rd->seq);
    }
    put_cbor_text(&s, "ts", strlen("ts"));
    put_cbor_int(&s, rd->ts_ms);
    if (gateway) {
        put_cbor_text(&s, "gw_ts", strlen("gw_ts"));
        put_cbor_int(&s, gw_ts_ms);
        put_cbor_text(&s, "gateway", strlen("gateway"));
        put_cbor_text(&s, gateway, strlen(gateway));
    }
    put_cbor_text(&s, "m", strlen("m"));
    put_cbor_map(&s, rd->n_metrics);
    for (size_t i = 0; i < rd->n_metrics; i++) {
        uint8_t number[9];
        put_cbor_text(&s, rd->metrics[i].name, strlen(rd->metrics[i].name));
        put(&s, number, tg_codec_cbor_put_number(rd->metrics[i].value, number));
    }
    if (units) {
        size_t n_units = 0;
        for (size_t i = 0; i < rd->n_metrics; i++)
            n_units += rd->metrics[i].unit != NULL;
        put_cbor_text(&s, "u", strlen("u"));
        put_cbor_map(&s, n_units);
        for (size_t i = 0; i < rd->n_metrics; i++) {
            if (!rd->metrics[i].unit)
                continue;
            put_cbor_text(&s, rd->metrics[i].name, strlen(rd->metrics[i].name));
            put_cbor_text(&s, rd->metrics[i].unit, strlen(rd->metrics[i].unit));
        }
    }
    return finish(&s, len);
}
