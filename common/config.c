/*
 * config.c - schema-driven INI configuration with layering and per-value origins.
 *
 * inih does the key = value splitting, trimming and inline-comment removal. Around it,
 * our reader function hands inih one physical line at a time, which is how we know the
 * line number (Debian's libinih is built without INI_HANDLER_LINENO: inih calls the
 * handler for a line before it asks the reader for the next one, so the reader's count is
 * the handler's line). The reader also classifies each line first, so every malformed
 * line, over-long line and unknown section is reported with its own line number (inih
 * itself only returns the first bad line), and it strips leading whitespace so that an
 * indented line never becomes a continuation of the previous value.
 *
 * A load collects its assignments in a staging list and applies them only when the whole
 * source is clean; the staging list also finds duplicate keys within one file.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

/* Problems reported per load; the rest are counted. */
#define MAX_ERRORS 20

struct value {
    char *text;           /* as written: "64M" */
    char *origin;         /* "default", "FILE:LINE" or "--set" */
    tg_config_layer layer;
    int64_t num;          /* INT, DURATION_MS, SIZE; BOOL as 0/1; ENUM as choice index */
};

struct pair {
    char *key;
    struct value val;
};

/* One per schema entry: val for typed keys, pairs for a pass-through section. */
struct entry {
    struct value val;
    struct pair *pairs;
    size_t n_pairs, cap_pairs;
};

struct tg_config {
    const struct tg_config_key *schema;
    size_t n;
    struct entry *entries;
    char *error;          /* "" or the problems of the last failed load */
};

/* ------------------------------------------------------------------------------------ */
/* secrets                                                                              */

/* Words of a key name that mark its value as a credential (see tg_config_is_secret()). */
static const char *const secret_words[] = {
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "tokens",
    "credential", "credentials", "pem", "jaas", "oauthbearer", "private", "apikey", NULL,
};

bool tg_config_is_secret(const char *key, const char *value)
{
    if (value && strstr(value, "-----BEGIN"))
        return true;
    if (!key)
        return false;
    const char *p = key;
    while (*p) {
        while (*p && !isalnum((unsigned char)*p))
            p++;
        const char *word = p;
        while (isalnum((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - word);
        if (len == 0)
            break;
        for (const char *const *w = secret_words; *w; w++)
            if (strlen(*w) == len && strncasecmp(word, *w, len) == 0)
                return true;
        bool last = true;
        for (const char *q = p; *q && last; q++)
            last = !isalnum((unsigned char)*q);
        if (last && len == 3 && strncasecmp(word, "key", 3) == 0)
            return true;
    }
    return false;
}

void tg_config_scrub(char *text, size_t len, const char *value)
{
    static const char mask[] = "(value not shown)";
    size_t vlen = strlen(value);
    if (vlen == 0 || len == 0)
        return;
    char *hit = strstr(text, value);
    while (hit) {
        size_t head = (size_t)(hit - text);
        size_t tail = strlen(hit + vlen);
        size_t mlen = sizeof mask - 1;
        if (head + mlen >= len) { /* no room for the mask: cut the text here */
            text[head] = '\0';
            return;
        }
        size_t keep = tail < len - head - mlen - 1 ? tail : len - head - mlen - 1;
        memmove(hit + mlen, hit + vlen, keep);
        memcpy(hit, mask, mlen);
        hit[mlen + keep] = '\0';
        hit = strstr(hit + mlen, value);
    }
}

/* ------------------------------------------------------------------------------------ */
/* value parsing                                                                        */

tg_err tg_parse_size(const char *text, uint64_t *bytes)
{
    const char *p = text;
    uint64_t v = 0;
    bool overflow = false;

    if (!isdigit((unsigned char)*p))
        return TG_ERR_CONFIG;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    unsigned shift = 0;
    switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    case 't': case 'T': shift = 40; p++; break;
    default: break;
    }
    if (*p != '\0')
        return TG_ERR_CONFIG;
    if (overflow || (shift && v > (UINT64_MAX >> shift)))
        return TG_ERR_OUT_OF_RANGE;
    *bytes = v << shift;
    return TG_OK;
}

tg_err tg_parse_bool(const char *text, bool *value)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *value = true;
            return TG_OK;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *value = false;
            return TG_OK;
        }
    }
    return TG_ERR_CONFIG;
}

tg_err tg_parse_int(const char *text, int64_t min, int64_t max, int64_t *value)
{
    const char *digits = text + (*text == '-' || *text == '+');
    if (!isdigit((unsigned char)*digits))
        return TG_ERR_CONFIG;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end != '\0')
        return TG_ERR_CONFIG;
    if (errno == ERANGE || v < min || v > max)
        return TG_ERR_OUT_OF_RANGE;
    *value = v;
    return TG_OK;
}

/* Writes a size as the shortest exact "64M"-style text. */
static void format_size(char *buf, size_t len, int64_t v)
{
    static const char units[] = "kMGT";
    int unit = -1;
    for (int u = 3; u >= 0 && v != 0; u--) {
        if (v % ((int64_t)1 << (10 * (u + 1))) == 0) {
            unit = u;
            break;
        }
    }
    if (unit < 0)
        snprintf(buf, len, "%" PRId64, v);
    else
        snprintf(buf, len, "%" PRId64 "%c", v >> (10 * (unit + 1)), units[unit]);
}

static void format_number(const struct tg_config_key *k, char *buf, size_t len, int64_t v)
{
    if (k->type == TG_CONFIG_SIZE)
        format_size(buf, len, v);
    else
        snprintf(buf, len, "%" PRId64, v);
}

/* "a size in bytes (e.g. 64M) between 1M and 64G": what a key accepts. */
static void describe_expected(const struct tg_config_key *k, char *buf, size_t len)
{
    const char *what = "";
    switch (k->type) {
    case TG_CONFIG_STRING:
    case TG_CONFIG_PASSTHROUGH:
        snprintf(buf, len, "any text");
        return;
    case TG_CONFIG_BOOL:
        snprintf(buf, len, "a boolean (true/false, yes/no, on/off, 1/0)");
        return;
    case TG_CONFIG_ENUM: {
        size_t off = (size_t)snprintf(buf, len, "one of ");
        for (size_t i = 0; k->choices[i] && off < len; i++)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", k->choices[i]);
        return;
    }
    case TG_CONFIG_INT: what = "an integer"; break;
    case TG_CONFIG_SIZE: what = "a size in bytes (e.g. 64M)"; break;
    case TG_CONFIG_DURATION_MS: what = "a duration in milliseconds (an integer)"; break;
    }
    bool no_min = k->min == INT64_MIN || (k->type == TG_CONFIG_SIZE && k->min <= 0);
    bool no_max = k->max == INT64_MAX;
    char lo[32], hi[32];
    format_number(k, lo, sizeof lo, k->min);
    format_number(k, hi, sizeof hi, k->max);
    if (no_min && no_max)
        snprintf(buf, len, "%s", what);
    else if (no_max)
        snprintf(buf, len, "%s of at least %s", what, lo);
    else if (no_min)
        snprintf(buf, len, "%s of at most %s", what, hi);
    else
        snprintf(buf, len, "%s between %s and %s", what, lo, hi);
}

/*
 * Parses text for key k into *num. On failure writes the complaint ("expected ..., got
 * "text"") into msg and returns false.
 */
static bool parse_value(const struct tg_config_key *k, const char *text, int64_t *num,
                        char *msg, size_t msglen)
{
    bool ok = true;
    *num = 0;
    switch (k->type) {
    case TG_CONFIG_STRING:
    case TG_CONFIG_PASSTHROUGH:
        return true;
    case TG_CONFIG_BOOL: {
        bool b = false;
        ok = tg_parse_bool(text, &b) == TG_OK;
        *num = b;
        break;
    }
    case TG_CONFIG_ENUM:
        ok = false;
        for (int i = 0; k->choices[i]; i++) {
            if (strcmp(text, k->choices[i]) == 0) {
                *num = i;
                ok = true;
                break;
            }
        }
        break;
    case TG_CONFIG_INT:
    case TG_CONFIG_DURATION_MS:
        ok = tg_parse_int(text, k->min, k->max, num) == TG_OK;
        break;
    case TG_CONFIG_SIZE: {
        uint64_t v;
        ok = tg_parse_size(text, &v) == TG_OK && v <= (uint64_t)INT64_MAX;
        *num = (int64_t)v;
        ok = ok && *num >= k->min && *num <= k->max;
        break;
    }
    }
    if (ok)
        return true;
    char expected[512];
    describe_expected(k, expected, sizeof expected);
    /* "64M  # journal cap": '#' is no inline comment in inih; say so rather than puzzle. */
    const char *hash = strchr(text, '#');
    bool hash_comment = hash && hash > text && isspace((unsigned char)hash[-1]);
    if (tg_config_is_secret(k->key, text)) {
        snprintf(msg, msglen, "expected %s, got a value that is not shown (it may be a secret)",
                 expected);
        return false;
    }
    snprintf(msg, msglen, "expected %s, got \"%s\"%s", expected, text,
             hash_comment ? " (\"#\" starts a comment only at the beginning of a line; "
                            "use \" ;\" for a comment after a value)" : "");
    return false;
}

/* ------------------------------------------------------------------------------------ */
/* schema                                                                               */

static bool name_chars_ok(const char *s, bool dots)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                  (dots && *p == '.' && p != s && p[1] != '\0' && p[1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static void schema_bug(const struct tg_config_key *k, const char *what)
{
    fprintf(stderr, "tg_config: schema bug: [%s] %s: %s\n", k->section ? k->section : "(null)",
            k->key ? k->key : "(section)", what);
    abort();
}

static void check_schema(const struct tg_config_key *schema, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct tg_config_key *k = &schema[i];
        if (!name_chars_ok(k->section, true))
            schema_bug(k, "section name must be [a-z0-9_.] without empty parts");
        if (!k->help || !*k->help)
            schema_bug(k, "missing help");
        if (k->type == TG_CONFIG_PASSTHROUGH && k->key)
            schema_bug(k, "a pass-through entry has no key");
        if (k->type != TG_CONFIG_PASSTHROUGH && !name_chars_ok(k->key, false))
            schema_bug(k, "key name must be [a-z0-9_]");
        for (size_t j = 0; j < i; j++) {
            const struct tg_config_key *o = &schema[j];
            if (strcmp(o->section, k->section) != 0)
                continue;
            if ((o->type == TG_CONFIG_PASSTHROUGH) != (k->type == TG_CONFIG_PASSTHROUGH))
                schema_bug(k, "a pass-through section cannot also have typed keys");
            if (k->type == TG_CONFIG_PASSTHROUGH)
                schema_bug(k, "pass-through section declared twice");
            if (strcmp(o->key, k->key) == 0)
                schema_bug(k, "declared twice");
        }
        if (k->type == TG_CONFIG_PASSTHROUGH)
            continue;
        if ((k->type == TG_CONFIG_SIZE) != ends_with(k->key, "_bytes"))
            schema_bug(k, "size keys, and only they, end in _bytes");
        if ((k->type == TG_CONFIG_DURATION_MS) != ends_with(k->key, "_ms"))
            schema_bug(k, "millisecond keys, and only they, end in _ms");
        if (k->type == TG_CONFIG_ENUM && (!k->choices || !k->choices[0]))
            schema_bug(k, "enum without choices");
        if ((k->type == TG_CONFIG_INT || k->type == TG_CONFIG_SIZE ||
             k->type == TG_CONFIG_DURATION_MS) && k->min > k->max)
            schema_bug(k, "min > max");
        if (k->type == TG_CONFIG_SIZE && k->min < 0)
            schema_bug(k, "a size cannot be negative");
        if (!k->def)
            schema_bug(k, "every key needs a default");
        char msg[768];
        int64_t num;
        if (!parse_value(k, k->def, &num, msg, sizeof msg)) {
            char what[900];
            snprintf(what, sizeof what, "default: %s", msg);
            schema_bug(k, what);
        }
    }
}

static bool is_section(const struct tg_config *cfg, const char *section, size_t len)
{
    for (size_t i = 0; i < cfg->n; i++) {
        const char *s = cfg->schema[i].section;
        if (strlen(s) == len && memcmp(s, section, len) == 0)
            return true;
    }
    return false;
}

/* Index of the pass-through entry for section, or -1. */
static ptrdiff_t passthrough_index(const struct tg_config *cfg, const char *section)
{
    for (size_t i = 0; i < cfg->n; i++) {
        if (cfg->schema[i].type == TG_CONFIG_PASSTHROUGH &&
            strcmp(cfg->schema[i].section, section) == 0)
            return (ptrdiff_t)i;
    }
    return -1;
}

static ptrdiff_t key_index(const struct tg_config *cfg, const char *section, const char *key)
{
    for (size_t i = 0; i < cfg->n; i++) {
        const struct tg_config_key *k = &cfg->schema[i];
        if (k->key && strcmp(k->section, section) == 0 && strcmp(k->key, key) == 0)
            return (ptrdiff_t)i;
    }
    return -1;
}

/*
 * Edit distance counting a swap of neighbours as one edit ("nmae" -> "name"), for "did you
 * mean" hints; long names are simply not compared.
 */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return SIZE_MAX;
    size_t rows[3][64]; /* distances for prefixes of a of length i-2, i-1, i */
    size_t *two = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                two[j - 2] + 1 < best)
                best = two[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = two;
        two = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* The closest known key of section (or, with section NULL, the closest section). */
static const char *suggest(const struct tg_config *cfg, const char *section, const char *name)
{
    const char *best = NULL;
    size_t best_d = strlen(name) < 6 ? 1 : 2; /* farther than this is no typo */
    for (size_t i = 0; i < cfg->n; i++) {
        const struct tg_config_key *k = &cfg->schema[i];
        const char *cand;
        if (section)
            cand = (k->key && strcmp(k->section, section) == 0) ? k->key : NULL;
        else
            cand = k->section;
        if (!cand)
            continue;
        size_t d = edit_distance(name, cand);
        if (d <= best_d && (!best || d < best_d)) {
            best = cand;
            best_d = d;
        }
    }
    return best;
}

/* ------------------------------------------------------------------------------------ */
/* construction                                                                         */

static void value_free(struct value *v)
{
    free(v->text);
    free(v->origin);
    v->text = v->origin = NULL;
}

static char *set_error(struct tg_config *cfg, const char *text)
{
    char *copy = strdup(text);
    if (!copy)
        return NULL;
    free(cfg->error);
    cfg->error = copy;
    return copy;
}

struct tg_config *tg_config_new(const struct tg_config_key *schema, size_t n)
{
    check_schema(schema, n);
    struct tg_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->schema = schema;
    cfg->n = n;
    cfg->entries = calloc(n ? n : 1, sizeof *cfg->entries);
    if (!cfg->entries || !set_error(cfg, ""))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const struct tg_config_key *k = &schema[i];
        if (k->type == TG_CONFIG_PASSTHROUGH)
            continue;
        struct value *v = &cfg->entries[i].val;
        char msg[8];
        v->layer = TG_CONFIG_DEFAULT;
        (void)parse_value(k, k->def, &v->num, msg, sizeof msg); /* checked by check_schema */
        v->text = strdup(k->def);
        v->origin = strdup("default");
        if (!v->text || !v->origin)
            goto fail;
    }
    return cfg;
fail:
    tg_config_destroy(cfg);
    return NULL;
}

void tg_config_destroy(struct tg_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; cfg->entries && i < cfg->n; i++) {
        struct entry *e = &cfg->entries[i];
        value_free(&e->val);
        for (size_t j = 0; j < e->n_pairs; j++) {
            free(e->pairs[j].key);
            value_free(&e->pairs[j].val);
        }
        free(e->pairs);
    }
    free(cfg->entries);
    free(cfg->error);
    free(cfg);
}

const char *tg_config_error(const struct tg_config *cfg)
{
    return cfg->error;
}

/* ------------------------------------------------------------------------------------ */
/* one load: staging, errors, commit                                                    */

struct pending {
    size_t idx;           /* schema entry */
    char *key;            /* pass-through pairs only */
    char *text;
    char *origin;
    int line;
    int64_t num;
};

struct load {
    struct tg_config *cfg;
    tg_config_layer layer;
    const char *path;     /* file being read; NULL for --set */
    const char *arg;      /* the --set argument as errors show it: without a value that
                           * may be secret */

    struct pending *items;
    size_t n_items, cap_items;

    char *errors;         /* accumulated problems, one per line */
    size_t errors_len, errors_cap;
    int n_errors;
    bool nomem;

    /* reader state */
    FILE *fp;
    char *linebuf;
    size_t linecap;
    int line;
    int read_errno;
    bool skip_section;    /* current section is unknown or its header was malformed */
    char section[256];
    int section_line;
};

static void errors_append(struct load *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void errors_append(struct load *ld, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[1];
    int need = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (need < 0)
        return;
    size_t want = ld->errors_len + (size_t)need + 2;
    if (want > ld->errors_cap) {
        size_t cap = ld->errors_cap ? ld->errors_cap * 2 : 256;
        while (cap < want)
            cap *= 2;
        char *grown = realloc(ld->errors, cap);
        if (!grown) {
            ld->nomem = true;
            return;
        }
        ld->errors = grown;
        ld->errors_cap = cap;
    }
    if (ld->errors_len)
        ld->errors[ld->errors_len++] = '\n';
    va_start(ap, fmt);
    vsnprintf(ld->errors + ld->errors_len, ld->errors_cap - ld->errors_len, fmt, ap);
    va_end(ap);
    ld->errors_len += (size_t)need;
}

/*
 * Records one problem. Files: "FILE:LINE: [section] key: what" (section and key when
 * known); --set: "--set ARG: what".
 */
static void problem(struct load *ld, int line, const char *section, const char *key,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void problem(struct load *ld, int line, const char *section, const char *key,
                    const char *fmt, ...)
{
    if (ld->n_errors++ >= MAX_ERRORS)
        return;
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!ld->path)
        errors_append(ld, "--set %s: %s", ld->arg, what);
    else if (section && key)
        errors_append(ld, "%s:%d: [%s] %s: %s", ld->path, line, section, key, what);
    else if (section)
        errors_append(ld, "%s:%d: [%s]: %s", ld->path, line, section, what);
    else if (key)
        errors_append(ld, "%s:%d: %s: %s", ld->path, line, key, what);
    else
        errors_append(ld, "%s:%d: %s", ld->path, line, what);
}

static void load_free(struct load *ld)
{
    for (size_t i = 0; i < ld->n_items; i++) {
        free(ld->items[i].key);
        free(ld->items[i].text);
        free(ld->items[i].origin);
    }
    free(ld->items);
    free(ld->errors);
    free(ld->linebuf);
}

static char *make_origin(const struct load *ld, int line)
{
    if (!ld->path)
        return strdup("--set");
    char *s;
    return asprintf(&s, "%s:%d", ld->path, line) < 0 ? NULL : s;
}

/* Checks one assignment and stages it; problems are recorded, not returned. */
static void stage(struct load *ld, int line, const char *section, const char *key,
                  const char *text)
{
    struct tg_config *cfg = ld->cfg;
    ptrdiff_t idx = passthrough_index(cfg, section);
    bool passthrough = idx >= 0;
    int64_t num = 0;

    if (passthrough) {
        /* librdkafka-style names; anything else could not be written back by the dump */
        if (strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
            strlen(key)) {
            /* A long name is not shown: a line of a pasted PEM block ending in "=" lands
             * here, and no property name is that long. */
            bool show = strlen(key) <= 48 && !tg_config_is_secret(key, NULL);
            problem(ld, line, section, show ? key : NULL, "expected a property name made of "
                    "letters, digits, \".\", \"_\" and \"-\"%s", show ? "" : " (name not shown)");
            return;
        }
    } else {
        idx = key_index(cfg, section, key);
        if (idx < 0) {
            const char *hint = suggest(cfg, section, key);
            if (ld->path)
                problem(ld, line, section, key, "unknown key%s%s%s", hint ? " (did you mean " : "",
                        hint ? hint : "", hint ? "?)" : "");
            else
                problem(ld, line, section, key, "unknown key \"%s\" in [%s]%s%s%s", key, section,
                        hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
            return;
        }
        char msg[1024];
        if (!parse_value(&cfg->schema[idx], text, &num, msg, sizeof msg)) {
            problem(ld, line, section, key, "%s", msg);
            return;
        }
    }
    for (size_t i = 0; i < ld->n_items; i++) {
        const struct pending *p = &ld->items[i];
        if (p->idx == (size_t)idx && (!passthrough || strcmp(p->key, key) == 0)) {
            problem(ld, line, section, key, "duplicate key (first set on line %d)", p->line);
            return;
        }
    }
    if (ld->n_items == ld->cap_items) {
        size_t cap = ld->cap_items ? ld->cap_items * 2 : 16;
        struct pending *grown = realloc(ld->items, cap * sizeof *grown);
        if (!grown) {
            ld->nomem = true;
            return;
        }
        ld->items = grown;
        ld->cap_items = cap;
    }
    struct pending *p = &ld->items[ld->n_items];
    *p = (struct pending){.idx = (size_t)idx, .line = line, .num = num};
    p->key = passthrough ? strdup(key) : NULL;
    p->text = strdup(text);
    p->origin = make_origin(ld, line);
    ld->n_items++; /* counted even when incomplete, so load_free() frees what was made */
    if ((passthrough && !p->key) || !p->text || !p->origin)
        ld->nomem = true;
}

static bool reserve_pairs(struct entry *e, size_t more)
{
    if (e->n_pairs + more <= e->cap_pairs)
        return true;
    size_t cap = e->cap_pairs ? e->cap_pairs : 8;
    while (cap < e->n_pairs + more)
        cap *= 2;
    struct pair *grown = realloc(e->pairs, cap * sizeof *grown);
    if (!grown)
        return false;
    e->pairs = grown;
    e->cap_pairs = cap;
    return true;
}

static void replace_value(struct value *v, struct pending *p, tg_config_layer layer)
{
    value_free(v);
    v->text = p->text;
    v->origin = p->origin;
    v->num = p->num;
    v->layer = layer;
    p->text = p->origin = NULL;
}

/*
 * Applies the staged assignments, honouring layer precedence. Memory is reserved first, so
 * that a failure leaves the configuration as it was.
 */
static tg_err commit(struct load *ld)
{
    struct tg_config *cfg = ld->cfg;
    for (size_t i = 0; i < ld->n_items; i++) { /* at most every staged pair is new */
        if (ld->items[i].key && !reserve_pairs(&cfg->entries[ld->items[i].idx], ld->n_items))
            return TG_ERR_NOMEM;
    }
    for (size_t i = 0; i < ld->n_items; i++) {
        struct pending *p = &ld->items[i];
        struct entry *e = &cfg->entries[p->idx];
        if (!p->key) {
            if (e->val.layer <= ld->layer)
                replace_value(&e->val, p, ld->layer);
            continue;
        }
        size_t j = 0;
        while (j < e->n_pairs && strcmp(e->pairs[j].key, p->key) != 0)
            j++;
        if (j == e->n_pairs) {
            e->pairs[e->n_pairs++] = (struct pair){.key = p->key};
            p->key = NULL;
        }
        if (e->pairs[j].val.layer <= ld->layer)
            replace_value(&e->pairs[j].val, p, ld->layer);
    }
    return TG_OK;
}

/* Ends a load: applies it when clean, else keeps the problems for tg_config_error(). */
static tg_err finish(struct load *ld)
{
    tg_err err = TG_OK;
    if (ld->nomem) {
        err = TG_ERR_NOMEM;
    } else if (ld->n_errors) {
        if (ld->n_errors > MAX_ERRORS)
            errors_append(ld, "(%d more problems not shown)", ld->n_errors - MAX_ERRORS);
        err = TG_ERR_CONFIG;
    } else {
        err = commit(ld);
    }
    const char *text = err == TG_ERR_CONFIG ? ld->errors : err == TG_ERR_NOMEM ? "out of memory" : "";
    if (!set_error(ld->cfg, text) && err == TG_OK)
        err = TG_ERR_NOMEM;
    load_free(ld);
    return err;
}

/* ------------------------------------------------------------------------------------ */
/* files                                                                                */

/*
 * The first of chars in s, or the start of an inline comment (";" after whitespace), or
 * the terminating NUL: the same scan inih makes, so that we classify lines as it does.
 */
static const char *scan_until(const char *s, const char *chars)
{
    bool was_space = false;
    for (; *s; s++) {
        if (strchr(chars, *s) || (was_space && *s == ';'))
            break;
        was_space = isspace((unsigned char)*s);
    }
    return s;
}

static void trim(const char **start, const char **end)
{
    while (*start < *end && isspace((unsigned char)**start))
        (*start)++;
    while (*end > *start && isspace((unsigned char)(*end)[-1]))
        (*end)--;
}

/*
 * A section header line. Unknown sections are reported here, at their header, and their
 * keys are skipped, so a misspelt section is one problem rather than one per key.
 */
static void section_header(struct load *ld, const char *s)
{
    const char *close = scan_until(s + 1, "]");
    ld->skip_section = true;
    ld->section_line = ld->line;
    if (*close != ']') {
        problem(ld, ld->line, NULL, NULL, "expected \"[section]\", got \"%s\"", s);
        return;
    }
    const char *rest = close + 1;
    while (isspace((unsigned char)*rest))
        rest++;
    if (*rest && *rest != ';' && *rest != '#') {
        problem(ld, ld->line, NULL, NULL, "unexpected text after the section header: \"%s\"", s);
        return;
    }
    const char *start = s + 1, *end = close;
    trim(&start, &end);
    size_t len = (size_t)(end - start);
    if (len >= sizeof ld->section) {
        problem(ld, ld->line, NULL, NULL, "section name too long");
        return;
    }
    memcpy(ld->section, start, len);
    ld->section[len] = '\0';
    if (!is_section(ld->cfg, ld->section, len)) {
        const char *hint = suggest(ld->cfg, NULL, ld->section);
        problem(ld, ld->line, ld->section, NULL, "unknown section%s%s%s",
                hint ? " (did you mean [" : "", hint ? hint : "", hint ? "]?)" : "");
        return;
    }
    ld->skip_section = false;
}

/*
 * inih's reader: one physical line per call, counted, checked, and with leading
 * whitespace removed. Lines we already reported as malformed reach inih as blank lines,
 * so inih never reports them again.
 */
static char *read_line(char *str, int num, void *stream)
{
    struct load *ld = stream;
    ssize_t len = getline(&ld->linebuf, &ld->linecap, ld->fp);
    if (len < 0) {
        if (ferror(ld->fp))
            ld->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ld->line++;
    char *s = ld->linebuf;
    strcpy(str, "\n");
    if (memchr(s, '\0', (size_t)len)) {
        problem(ld, ld->line, NULL, NULL, "line contains a NUL byte");
        return str;
    }
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
        s[--len] = '\0';
    if (ld->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    while (isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    /* inih needs room for "\r\n\0" after the longest line it reads whole. */
    if (len > num - 3) {
        if (*s == '[') { /* do not blame the keys that follow on the previous section */
            ld->skip_section = true;
            ld->section_line = ld->line;
        }
        problem(ld, ld->line, NULL, NULL, "line longer than %d characters", num - 3);
        return str;
    }
    if (*s == '[') {
        section_header(ld, s);
        if (ld->skip_section)
            return str;
    } else if (*s && *s != ';' && *s != '#') {
        const char *sep = scan_until(s, "=:");
        if (*sep != '=' && *sep != ':') {
            /* Not echoed where it may be part of a credential: the second line of a PEM
             * block pasted into [kafka.rdkafka], "password hunter2". */
            if ((!ld->skip_section && passthrough_index(ld->cfg, ld->section) >= 0) ||
                tg_config_is_secret(s, s))
                problem(ld, ld->line, NULL, NULL,
                        "expected \"key = value\", \"[section]\" or a comment (the line is not "
                        "shown: it may hold a secret; multi-line values are not supported)");
            else
                problem(ld, ld->line, NULL, NULL,
                        "expected \"key = value\", \"[section]\" or a comment, got \"%s\"", s);
            return str;
        }
    }
    memcpy(str, s, (size_t)len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct load *ld = user;
    (void)section; /* ld->section is the same name, trimmed */
    if (ld->section_line == 0)
        problem(ld, ld->line, NULL, name, "key outside of any [section]");
    else if (ld->skip_section)
        ; /* reported at the header */
    else if (*name == '\0')
        problem(ld, ld->line, ld->section, NULL, "missing key name before \"=\"");
    else
        stage(ld, ld->line, ld->section, name, value);
    return 1;
}

tg_err tg_config_load_file(struct tg_config *cfg, tg_config_layer layer, const char *path)
{
    if (layer != TG_CONFIG_BOARD && layer != TG_CONFIG_FILE) {
        fprintf(stderr, "tg_config_load_file: layer %d is not a file layer\n", (int)layer);
        abort();
    }
    struct load ld = {.cfg = cfg, .layer = layer, .path = path};
    ld.fp = fopen(path, "re");
    if (!ld.fp) {
        errors_append(&ld, "%s: cannot open: %s", path, strerror(errno));
        ld.n_errors++;
        return finish(&ld);
    }
    int rc = ini_parse_stream(read_line, &ld, on_pair, &ld);
    fclose(ld.fp);
    if (ld.read_errno) {
        ld.n_errors++;
        errors_append(&ld, "%s: cannot read: %s", path, strerror(ld.read_errno));
    } else if (rc > 0 && ld.n_errors == 0) {
        problem(&ld, rc, NULL, NULL, "malformed line"); /* a case the reader missed */
    } else if (rc < 0 && ld.n_errors == 0) {
        ld.nomem = true;
    }
    return finish(&ld);
}

/* ------------------------------------------------------------------------------------ */
/* --set                                                                                */

/*
 * The --set argument as an error may show it: with its value only when that is the value of
 * a known schema key that does not look secret; a pass-through pair's name is not checked,
 * so "kafka.rdkafka.sasl.passwrd=..." must not be echoed.
 */
static char *shown_assignment(const struct tg_config *cfg, const char *assignment,
                              const char *section, const char *key, const char *value)
{
    const char *eq = strchr(assignment, '=');
    bool show = section && key && value && passthrough_index(cfg, section) < 0 &&
                key_index(cfg, section, key) >= 0 && !tg_config_is_secret(key, value);
    if (!eq)
        show = !tg_config_is_secret(assignment, assignment);
    char *s;
    if (show)
        return strdup(assignment);
    if (!eq)
        return strdup("(not shown)");
    return asprintf(&s, "%.*s=(value not shown)", (int)(eq - assignment), assignment) < 0 ? NULL
                                                                                          : s;
}

tg_err tg_config_set(struct tg_config *cfg, const char *assignment)
{
    struct load ld = {.cfg = cfg, .layer = TG_CONFIG_SET};
    char *shown = NULL;
    const char *eq = strchr(assignment, '=');
    if (!eq) {
        ld.arg = shown = shown_assignment(cfg, assignment, NULL, NULL, NULL);
        if (!shown)
            ld.nomem = true;
        else
            problem(&ld, 0, NULL, NULL, "expected section.key=value");
        tg_err err = finish(&ld);
        free(shown);
        return err;
    }
    const char *lhs = assignment, *lhs_end = eq;
    trim(&lhs, &lhs_end);
    const char *val = eq + 1, *val_end = eq + strlen(eq);
    trim(&val, &val_end);

    /* The longest declared section that, followed by '.', prefixes the left-hand side. */
    const char *section = NULL;
    size_t sec_len = 0;
    for (size_t i = 0; i < cfg->n; i++) {
        const char *s = cfg->schema[i].section;
        size_t l = strlen(s);
        if (l > sec_len && l < (size_t)(lhs_end - lhs) && memcmp(lhs, s, l) == 0 &&
            lhs[l] == '.') {
            section = s;
            sec_len = l;
        }
    }
    char *key = strndup(lhs + sec_len + (section ? 1 : 0),
                        (size_t)(lhs_end - lhs) - sec_len - (section ? 1 : 0));
    char *value = strndup(val, (size_t)(val_end - val));
    if (key && value)
        ld.arg = shown = shown_assignment(cfg, assignment, section, key, value);
    if (!key || !value || !shown) {
        ld.nomem = true;
    } else if (!section) {
        const char *dot = memrchr(lhs, '.', (size_t)(lhs_end - lhs));
        char guess[256] = "";
        if (dot && (size_t)(dot - lhs) < sizeof guess)
            memcpy(guess, lhs, (size_t)(dot - lhs));
        const char *hint = *guess ? suggest(cfg, NULL, guess) : NULL;
        problem(&ld, 0, NULL, NULL, "%s%s%s%s",
                dot ? "unknown section" : "expected section.key=value",
                hint ? " (did you mean [" : "", hint ? hint : "", hint ? "]?)" : "");
    } else if (!*key) {
        problem(&ld, 0, NULL, NULL, "missing key name after \"%.*s.\"", (int)sec_len, section);
    } else {
        bool control = false;
        for (const char *p = value; *p; p++)
            control = control || (unsigned char)*p < 0x20 || *p == 0x7f;
        const char *semi = strchr(value, ';');
        while (semi && !(semi > value && isspace((unsigned char)semi[-1])))
            semi = strchr(semi + 1, ';');
        if (control)
            problem(&ld, 0, NULL, NULL, "value contains a control character");
        else if (semi)
            problem(&ld, 0, NULL, NULL, "value contains \" ;\", which a config file would "
                                        "read as the start of a comment");
        else if (strlen(key) + strlen(value) + 3 > INI_MAX_LINE - 3)
            problem(&ld, 0, NULL, NULL, "longer than a config file line (%d characters)",
                    INI_MAX_LINE - 3);
        else
            stage(&ld, 0, section, key, value);
    }
    free(key);
    free(value);
    tg_err err = finish(&ld);
    free(shown);
    return err;
}

/* ------------------------------------------------------------------------------------ */
/* getters                                                                              */

static const struct entry *lookup(const struct tg_config *cfg, const char *section,
                                  const char *key, int type, const char *getter)
{
    ptrdiff_t idx = key_index(cfg, section, key);
    if (idx < 0) {
        fprintf(stderr, "%s: [%s] %s is not in the schema\n", getter, section, key);
        abort();
    }
    if (type >= 0 && cfg->schema[idx].type != (tg_config_type)type) {
        fprintf(stderr, "%s: [%s] %s has another type\n", getter, section, key);
        abort();
    }
    return &cfg->entries[idx];
}

const char *tg_config_get_str(const struct tg_config *cfg, const char *section, const char *key)
{
    return lookup(cfg, section, key, -1, __func__)->val.text;
}

int64_t tg_config_get_int(const struct tg_config *cfg, const char *section, const char *key)
{
    return lookup(cfg, section, key, TG_CONFIG_INT, __func__)->val.num;
}

bool tg_config_get_bool(const struct tg_config *cfg, const char *section, const char *key)
{
    return lookup(cfg, section, key, TG_CONFIG_BOOL, __func__)->val.num != 0;
}

uint64_t tg_config_get_size(const struct tg_config *cfg, const char *section, const char *key)
{
    return (uint64_t)lookup(cfg, section, key, TG_CONFIG_SIZE, __func__)->val.num;
}

int64_t tg_config_get_ms(const struct tg_config *cfg, const char *section, const char *key)
{
    return lookup(cfg, section, key, TG_CONFIG_DURATION_MS, __func__)->val.num;
}

int tg_config_get_enum(const struct tg_config *cfg, const char *section, const char *key)
{
    return (int)lookup(cfg, section, key, TG_CONFIG_ENUM, __func__)->val.num;
}

const char *tg_config_origin(const struct tg_config *cfg, const char *section, const char *key)
{
    return lookup(cfg, section, key, -1, __func__)->val.origin;
}

tg_err tg_config_foreach_pair(const struct tg_config *cfg, const char *section,
                              tg_config_pair_fn fn, void *arg)
{
    ptrdiff_t idx = passthrough_index(cfg, section);
    if (idx < 0) {
        fprintf(stderr, "tg_config_foreach_pair: [%s] is not a pass-through section\n", section);
        abort();
    }
    const struct entry *e = &cfg->entries[idx];
    for (size_t i = 0; i < e->n_pairs; i++) {
        tg_err err = fn(arg, e->pairs[i].key, e->pairs[i].val.text, e->pairs[i].val.origin);
        if (err != TG_OK)
            return err;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------------------------ */
/* dump                                                                                 */

static void print_pair(FILE *out, const char *key, const char *value, bool redact)
{
    if (redact && *value && tg_config_is_secret(key, value))
        fprintf(out, "# %s = (set, %zu characters; not shown)\n", key, strlen(value));
    else
        fprintf(out, *value ? "%s = %s\n" : "%s =\n", key, value);
}

static tg_err dump(const struct tg_config *cfg, FILE *out, bool redact)
{
    fprintf(out, "# Effective configuration. Above each key: its help, and where its value\n"
                 "# came from (default, FILE:LINE or --set).\n");
    for (size_t i = 0; i < cfg->n; i++) {
        const char *section = cfg->schema[i].section;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(cfg->schema[j].section, section) == 0;
        if (seen)
            continue;
        fprintf(out, "\n[%s]\n", section);
        for (size_t j = i; j < cfg->n; j++) {
            const struct tg_config_key *k = &cfg->schema[j];
            const struct entry *e = &cfg->entries[j];
            if (strcmp(k->section, section) != 0)
                continue;
            fprintf(out, "# %s\n", k->help);
            if (k->type == TG_CONFIG_PASSTHROUGH) {
                for (size_t p = 0; p < e->n_pairs; p++) {
                    fprintf(out, "# origin: %s\n", e->pairs[p].val.origin);
                    print_pair(out, e->pairs[p].key, e->pairs[p].val.text, redact);
                }
                continue;
            }
            if (e->val.layer == TG_CONFIG_DEFAULT)
                fprintf(out, "# origin: default\n");
            else
                fprintf(out, "# origin: %s (default: %s)\n", e->val.origin,
                        *k->def ? k->def : "\"\"");
            print_pair(out, k->key, e->val.text, redact);
        }
    }
    return fflush(out) == 0 && !ferror(out) ? TG_OK : TG_ERR_IO;
}

tg_err tg_config_dump(const struct tg_config *cfg, FILE *out)
{
    return dump(cfg, out, false);
}

tg_err tg_config_dump_redacted(const struct tg_config *cfg, FILE *out)
{
    return dump(cfg, out, true);
}
