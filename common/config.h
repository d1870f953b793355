/*
 * config.h - schema-driven INI configuration with layering and per-value origins.
 *
 * Each program declares a static table of the keys it understands (struct tg_config_key,
 * built with the TG_CFG_* macros below): section, key, type, default as text, bounds or
 * choices, and a one-line help that names the unit. Values come from four layers, lowest
 * first:
 *
 *     built-in defaults  <  board file (-b)  <  config file (-c)  <  --set section.key=value
 *
 * A value from a lower layer never replaces one from a higher layer, so layers may be
 * loaded in any order; within one layer the later load wins (two --set of the same key:
 * the last one counts). Every value remembers where it came from ("default",
 * "FILE:LINE" or "--set"), which tg_config_dump() prints and tg_config_origin() returns.
 *
 * File syntax (inih, with the behaviour pinned down here rather than left to inih's
 * build options):
 *   - `[section]` headers; section names may contain dots (`[kafka.rdkafka]`).
 *   - `key = value` (or `key: value`); whitespace around key and value is dropped.
 *   - Lines whose first non-blank character is `#` or `;` are comments.
 *   - Inline comments: only `;` preceded by whitespace (`key = v ; note`). A `#` after a
 *     value is part of the value (`key = v # note` gives "v # note"); for typed keys the
 *     error message points this out.
 *   - Leading whitespace is ignored: an indented line is an ordinary line, never a
 *     continuation of the previous value (multi-line values are not supported).
 *   - Values are literal: quotes are not removed.
 *   - Lines are limited to the line length of the inih build (197 characters with
 *     Debian's libinih); a longer line is an error, never silently split.
 *
 * Errors: a load that finds any problem changes nothing and returns TG_ERR_CONFIG. The
 * text, kept in the handle until the next load, reports every problem of that load (up
 * to 20), one per line, each naming the file, line, section, key and what was expected:
 *     gateway.ini:12: [journal] max_bytes: expected a size in bytes (e.g. 64M) between
 *     1M and 64G, got "lots"
 *     --set journal.max_bytes=lots: expected a size in bytes (e.g. 64M) ...
 * Errors in a file: unknown section or key (with a "did you mean" hint), bad or
 * out-of-range value, duplicate key within the file, malformed line, key before any
 * section, over-long line, pass-through key that is not a property name
 * ([A-Za-z0-9._-]), missing or unreadable file (with strerror).
 *
 * The schema itself is program code: a malformed schema (bad default, a size key not
 * ending in `_bytes`, a duplicate key, ...) is a bug, and tg_config_new() aborts with a
 * message naming the entry. Likewise asking an accessor for a key the schema does not
 * declare, or with the wrong type, aborts.
 *
 * Threads: a struct tg_config is not synchronized. Build and load it at startup on one
 * thread; after loading, the getters only read and may be called from any thread.
 */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef enum tg_config_type {
    TG_CONFIG_STRING,      /* any text */
    TG_CONFIG_INT,         /* int64 in [min, max] */
    TG_CONFIG_BOOL,        /* true/false, yes/no, on/off, 1/0 (any case) */
    TG_CONFIG_ENUM,        /* exactly one of choices (case-sensitive) */
    TG_CONFIG_SIZE,        /* bytes, with optional k/M/G/T suffix (powers of 1024); key ends in _bytes */
    TG_CONFIG_DURATION_MS, /* milliseconds, plain integer; key ends in _ms */
    TG_CONFIG_PASSTHROUGH, /* a whole free-form section: key = value pairs kept in file order */
} tg_config_type;

/*
 * One schema entry. This is a static descriptor, not an object: programs declare an array
 * of them with the TG_CFG_* macros and never touch the fields. All strings must outlive
 * the struct tg_config (string literals, in practice).
 */
struct tg_config_key {
    const char *section;        /* [a-z0-9_.]; may contain dots */
    const char *key;            /* [a-z0-9_]; NULL for TG_CONFIG_PASSTHROUGH */
    tg_config_type type;
    const char *def;            /* default, as it would be written in a file; "" allowed for strings */
    int64_t min, max;           /* INT, SIZE, DURATION_MS: inclusive bounds */
    const char *const *choices; /* ENUM: NULL-terminated list */
    const char *help;           /* one line, naming the unit */
};

#define TG_CFG_STR(section, key, def, help) \
    {(section), (key), TG_CONFIG_STRING, (def), 0, 0, NULL, (help)}
#define TG_CFG_INT(section, key, def, min, max, help) \
    {(section), (key), TG_CONFIG_INT, (def), (min), (max), NULL, (help)}
#define TG_CFG_BOOL(section, key, def, help) \
    {(section), (key), TG_CONFIG_BOOL, (def), 0, 0, NULL, (help)}
#define TG_CFG_ENUM(section, key, def, choices, help) \
    {(section), (key), TG_CONFIG_ENUM, (def), 0, 0, (choices), (help)}
#define TG_CFG_SIZE(section, key, def, min, max, help) \
    {(section), (key), TG_CONFIG_SIZE, (def), (min), (max), NULL, (help)}
#define TG_CFG_MS(section, key, def, min, max, help) \
    {(section), (key), TG_CONFIG_DURATION_MS, (def), (min), (max), NULL, (help)}
#define TG_CFG_PASSTHROUGH(section, help) \
    {(section), NULL, TG_CONFIG_PASSTHROUGH, NULL, 0, 0, NULL, (help)}

/* Size bounds are easier to read as TG_MIB(1), TG_GIB(64). */
#define TG_KIB(n) ((int64_t)(n) << 10)
#define TG_MIB(n) ((int64_t)(n) << 20)
#define TG_GIB(n) ((int64_t)(n) << 30)

/* The layers, lowest precedence first. */
typedef enum tg_config_layer {
    TG_CONFIG_DEFAULT,
    TG_CONFIG_BOARD,  /* -b FILE: hardware-dependent defaults */
    TG_CONFIG_FILE,   /* -c FILE: the program's config */
    TG_CONFIG_SET,    /* --set section.key=value */
} tg_config_layer;

struct tg_config;

/*
 * A configuration holding the schema's defaults. The schema (n entries) is borrowed and
 * must outlive the result. Returns NULL only when out of memory; aborts on a schema bug.
 */
struct tg_config *tg_config_new(const struct tg_config_key *schema, size_t n);

/* Frees cfg and every value it holds. NULL is a no-op. */
void tg_config_destroy(struct tg_config *cfg);

/*
 * Loads an INI file into layer (TG_CONFIG_BOARD or TG_CONFIG_FILE). All or nothing: on
 * TG_ERR_CONFIG nothing changed and tg_config_error() describes every problem found.
 * The path is quoted in messages and origins as given. Returns TG_ERR_NOMEM on allocation
 * failure.
 */
tg_err tg_config_load_file(struct tg_config *cfg, tg_config_layer layer, const char *path);

/*
 * Applies one --set argument, "section.key=value" (value may be empty). The section is the
 * longest declared section that, followed by a dot, prefixes the left-hand side, so
 * "kafka.rdkafka.sasl.mechanism=PLAIN" sets key "sasl.mechanism" of [kafka.rdkafka] even
 * when a section [kafka] exists. Whitespace around key and value is dropped. A value
 * containing a control character or " ;" (which a file would read as a comment), or too
 * long for a file line, is refused, so tg_config_dump() output always reads back the
 * same. TG_ERR_CONFIG with tg_config_error().
 */
tg_err tg_config_set(struct tg_config *cfg, const char *assignment);

/* The problems of the last failed load or set, one per line; "" after a success. */
const char *tg_config_error(const struct tg_config *cfg);

/*
 * Typed getters. Each aborts if [section] key is not in the schema or has another type:
 * that is a bug in the caller, not a configuration problem. Strings returned are owned
 * by cfg and valid until the next load or set, or tg_config_destroy().
 */
const char *tg_config_get_str(const struct tg_config *cfg, const char *section, const char *key);
int64_t tg_config_get_int(const struct tg_config *cfg, const char *section, const char *key);
bool tg_config_get_bool(const struct tg_config *cfg, const char *section, const char *key);
uint64_t tg_config_get_size(const struct tg_config *cfg, const char *section, const char *key);
int64_t tg_config_get_ms(const struct tg_config *cfg, const char *section, const char *key);
/* Index of the value in the key's choices array. */
int tg_config_get_enum(const struct tg_config *cfg, const char *section, const char *key);

/* tg_config_get_str() accepts any typed key and returns its text as written ("64M"). */

/*
 * Where the value of [section] key came from: "default", "FILE:LINE" or "--set". Useful
 * to report a semantic problem the schema cannot express with the same precision.
 */
const char *tg_config_origin(const struct tg_config *cfg, const char *section, const char *key);

/*
 * Calls fn for each pair of a pass-through section, in order of first appearance (board
 * file pairs first, then new keys from the config file, then from --set; an overridden
 * key keeps its place). origin is as tg_config_origin(). Stops at the first fn that does
 * not return TG_OK and returns that code. Aborts if section is not a pass-through section.
 */
typedef tg_err (*tg_config_pair_fn)(void *arg, const char *key, const char *value,
                                    const char *origin);
tg_err tg_config_foreach_pair(const struct tg_config *cfg, const char *section,
                              tg_config_pair_fn fn, void *arg);

/*
 * Writes the effective configuration as INI that tg_config_load_file() reads back to the
 * same values: every section and key in schema order, each preceded by comments giving
 * its help, origin and default. Returns TG_ERR_IO if writing fails.
 */
tg_err tg_config_dump(const struct tg_config *cfg, FILE *out);

/*
 * The same, for people and logs (--check-config): every value that tg_config_is_secret()
 * calls a credential (schema keys and pass-through pairs alike) is replaced by a comment
 * saying that it is set and how long it is, so it reads back as unset.
 */
tg_err tg_config_dump_redacted(const struct tg_config *cfg, FILE *out);

/*
 * Whether a value is, or may hold, a credential, judged by the key's name and the value.
 * The name is split into words at every character that is not a letter or digit
 * ("sasl.oauthbearer.client.secret" -> sasl, oauthbearer, client, secret); it is secret
 * when a word is one of password, passwd, pwd, passphrase, secret, secrets, token, tokens,
 * credential, credentials, pem, jaas, oauthbearer, private, apikey, or its last word is
 * "key" (mqtt tls_key, api_key). The value (may be NULL) is secret when it holds a PEM block
 * ("-----BEGIN"), whatever its name. Case is ignored. Over-redacting a harmless value
 * (a key file's path) is the price of never printing a credential.
 *
 * Error messages follow the same rule and more: a value is never echoed for a key that
 * looks secret, for any key of a pass-through section (its names are not checked, so a
 * misspelt "sasl.passwrd" must not leak), nor for an unknown key.
 */
bool tg_config_is_secret(const char *key, const char *value);

/*
 * Replaces every occurrence of value in text (a NUL-terminated string in a buffer of len
 * bytes) with "(value not shown)", truncating if need be: for a library's message about a
 * value (librdkafka's "Invalid value "..." for configuration property") that is to be
 * shown without the value. An empty value changes nothing.
 */
void tg_config_scrub(char *text, size_t len, const char *value);

/*
 * Value parsers, usable on their own. Both accept exactly the spellings described at
 * tg_config_type and nothing else (no surrounding whitespace). TG_OK, TG_ERR_CONFIG when
 * the text is not such a value, TG_ERR_OUT_OF_RANGE when a size overflows 64 bits.
 */
tg_err tg_parse_size(const char *text, uint64_t *bytes);
tg_err tg_parse_bool(const char *text, bool *value);

/*
 * A decimal integer (optional sign, digits, nothing else) within [min, max], the parser of
 * TG_CONFIG_INT keys, for the tools' numeric options too. TG_OK; TG_ERR_CONFIG when the text is
 * not such a number; TG_ERR_OUT_OF_RANGE when it is outside [min, max] or int64_t. *value is
 * written only on TG_OK.
 */
tg_err tg_parse_int(const char *text, int64_t min, int64_t max, int64_t *value);

#endif
