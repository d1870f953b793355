/*
 * Unit tests for config.c: defaults, the four layers and their origins, every kind of
 * configuration error with its exact text, pass-through sections, the value parsers, and
 * the dump reading back to the same configuration.
 *
 * Fixture files are written into a fresh mkdtemp directory that the tests chdir into, so
 * messages name files the way a user sees them ("gateway.ini:12: ...").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "unit_tmp.h"

static const char *const overflow_choices[] = {"backpressure", "drop_oldest", "drop_newest",
                                               NULL};

static const struct tg_config_key schema[] = {
    TG_CFG_STR("gateway", "name", "gw-1", "gateway id written into every record"),
    TG_CFG_INT("gateway", "threads", "2", 1, 64, "worker threads, count"),
    TG_CFG_BOOL("gateway", "require_signature", "false", "reject unsigned payloads"),
    TG_CFG_SIZE("journal", "max_bytes", "256M", TG_MIB(1), TG_GIB(64),
                "cap on the journal's disk use, bytes"),
    TG_CFG_MS("journal", "commit_interval_ms", "200", 1, 60000,
              "group-commit interval, ms; bounds loss on power cut"),
    TG_CFG_ENUM("journal", "overflow", "backpressure", overflow_choices,
                "what happens at the cap"),
    TG_CFG_STR("kafka", "brokers", "127.0.0.1:9092", "bootstrap brokers, host:port list"),
    TG_CFG_STR("kafka", "password", "", "SASL password; empty: no SASL"),
    TG_CFG_PASSTHROUGH("kafka.rdkafka", "librdkafka properties, passed unchanged"),
    TG_CFG_INT("kafka.rdkafka.topic", "partitions", "4", 1, 1024, "expected partitions, count"),
};
#define N_SCHEMA (sizeof schema / sizeof schema[0])

static int group_setup(void **state)
{
    (void)state;
    return tg_unit_tmpdir_enter("config");
}

static int group_teardown(void **state)
{
    (void)state;
    return tg_unit_tmpdir_leave();
}

static struct tg_config *new_cfg(void)
{
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    assert_non_null(cfg);
    return cfg;
}

/* Loads text as gateway.ini and expects exactly this error text; nothing may change. */
static void expect_file_error(const char *text, const char *error)
{
    struct tg_config *cfg = new_cfg();
    tg_unit_write_file("gateway.ini", text);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_ERR_CONFIG);
    assert_string_equal(tg_config_error(cfg), error);
    assert_string_equal(tg_config_origin(cfg, "journal", "max_bytes"), "default");
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 256 << 20);
    tg_config_destroy(cfg);
}

static void expect_set_error(const char *arg, const char *error)
{
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, arg), TG_ERR_CONFIG);
    assert_string_equal(tg_config_error(cfg), error);
    tg_config_destroy(cfg);
}

/* Pass-through pairs as "key=value@origin;..." for easy comparison. */
struct pairs_text {
    char buf[1024];
    int stop_after; /* return TG_ERR_CONFIG after this many pairs; 0: never */
    int seen;
};

static tg_err collect_pair(void *arg, const char *key, const char *value, const char *origin)
{
    struct pairs_text *pt = arg;
    size_t len = strlen(pt->buf);
    snprintf(pt->buf + len, sizeof pt->buf - len, "%s=%s@%s;", key, value, origin);
    return ++pt->seen == pt->stop_after ? TG_ERR_CONFIG : TG_OK;
}

static const char *pairs(const struct tg_config *cfg, const char *section)
{
    static struct pairs_text pt;
    memset(&pt, 0, sizeof pt);
    assert_int_equal(tg_config_foreach_pair(cfg, section, collect_pair, &pt), TG_OK);
    return pt.buf;
}

/* ---------------------------------------------------------------------------------- */

static void defaults(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    assert_string_equal(tg_config_get_str(cfg, "gateway", "name"), "gw-1");
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 2);
    assert_false(tg_config_get_bool(cfg, "gateway", "require_signature"));
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 256u << 20);
    assert_int_equal(tg_config_get_ms(cfg, "journal", "commit_interval_ms"), 200);
    assert_int_equal(tg_config_get_enum(cfg, "journal", "overflow"), 0);
    assert_string_equal(tg_config_get_str(cfg, "journal", "overflow"), "backpressure");
    assert_string_equal(tg_config_get_str(cfg, "journal", "max_bytes"), "256M");
    assert_string_equal(tg_config_get_str(cfg, "kafka", "password"), "");
    assert_string_equal(tg_config_origin(cfg, "gateway", "threads"), "default");
    assert_string_equal(pairs(cfg, "kafka.rdkafka"), "");
    assert_string_equal(tg_config_error(cfg), "");
    tg_config_destroy(cfg);
    tg_config_destroy(NULL);
}

static const char board_ini[] =
    "; board: pi-zero2w\n"
    "[journal]\n"
    "max_bytes = 64M\n"
    "commit_interval_ms = 500\n"
    "[gateway]\n"
    "threads = 1\n"
    "[kafka.rdkafka]\n"
    "linger.ms = 5\n"
    "compression.type = lz4\n";

static const char gateway_ini[] =
    "# gateway config\n"
    "[journal]\n"
    "max_bytes = 128M\n"
    "overflow = drop_oldest\n"
    "\n"
    "[kafka.rdkafka]\n"
    "compression.type = zstd\n"
    "acks = all\n";

static void check_layered(struct tg_config *cfg)
{
    /* --set beats the config file, which beats the board, which beats the default */
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 1u << 30);
    assert_string_equal(tg_config_origin(cfg, "journal", "max_bytes"), "--set");
    assert_int_equal(tg_config_get_enum(cfg, "journal", "overflow"), 1);
    assert_string_equal(tg_config_origin(cfg, "journal", "overflow"), "gateway.ini:4");
    assert_int_equal(tg_config_get_ms(cfg, "journal", "commit_interval_ms"), 500);
    assert_string_equal(tg_config_origin(cfg, "journal", "commit_interval_ms"), "board.ini:4");
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 1);
    assert_string_equal(tg_config_origin(cfg, "gateway", "threads"), "board.ini:6");
    assert_string_equal(tg_config_get_str(cfg, "gateway", "name"), "gw-1");
    assert_string_equal(tg_config_origin(cfg, "gateway", "name"), "default");
    /* pairs merge by key, keep the place of first appearance, and carry their origin */
    assert_string_equal(pairs(cfg, "kafka.rdkafka"),
                        "linger.ms=50@--set;compression.type=zstd@gateway.ini:7;"
                        "acks=all@gateway.ini:8;sasl.mechanism=PLAIN@--set;");
}

static void layers_override_in_order(void **state)
{
    (void)state;
    tg_unit_write_file("board.ini", board_ini);
    tg_unit_write_file("gateway.ini", gateway_ini);
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_BOARD, "board.ini"), TG_OK);
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 64u << 20);
    assert_string_equal(tg_config_origin(cfg, "journal", "max_bytes"), "board.ini:3");
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 128u << 20);
    assert_string_equal(tg_config_origin(cfg, "journal", "max_bytes"), "gateway.ini:3");
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=512M"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes = 1G"), TG_OK); /* last --set wins */
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.linger.ms=50"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.mechanism=PLAIN"), TG_OK);
    check_layered(cfg);
    tg_config_destroy(cfg);
}

static void layers_are_ranked_not_ordered(void **state)
{
    (void)state;
    tg_unit_write_file("board.ini", board_ini);
    tg_unit_write_file("gateway.ini", gateway_ini);
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.linger.ms=50"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=1G"), TG_OK);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_BOARD, "board.ini"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.mechanism=PLAIN"), TG_OK);
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 1u << 30);
    assert_int_equal(tg_config_get_enum(cfg, "journal", "overflow"), 1);
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 1);
    /* pair order is order of first appearance, here --set came first */
    assert_string_equal(pairs(cfg, "kafka.rdkafka"),
                        "linger.ms=50@--set;compression.type=zstd@gateway.ini:7;"
                        "acks=all@gateway.ini:8;sasl.mechanism=PLAIN@--set;");
    tg_config_destroy(cfg);
}

static void set_picks_longest_section(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    /* [kafka], [kafka.rdkafka] and [kafka.rdkafka.topic] all exist */
    assert_int_equal(tg_config_set(cfg, "kafka.brokers=a:9092,b:9092"), TG_OK);
    assert_string_equal(tg_config_get_str(cfg, "kafka", "brokers"), "a:9092,b:9092");
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.topic.partitions=12"), TG_OK);
    assert_int_equal(tg_config_get_int(cfg, "kafka.rdkafka.topic", "partitions"), 12);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.mechanism=PLAIN"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.client.id="), TG_OK);
    assert_string_equal(pairs(cfg, "kafka.rdkafka"),
                        "sasl.mechanism=PLAIN@--set;client.id=@--set;");
    tg_config_destroy(cfg);
}

static void passthrough_keeps_file_order(void **state)
{
    (void)state;
    tg_unit_write_file("gateway.ini", "[kafka.rdkafka]\n"
                              "queue.buffering.max.ms = 5\n"
                              "batch.num.messages = 10000\n"
                              "[journal]\n"
                              "max_bytes = 1G\n"
                              "[kafka.rdkafka]\n"
                              "Security.Protocol = sasl_ssl\n"
                              "ssl.ca.location = /etc/ssl/certs/ca.pem ; inline comment\n"
                              "a.b = x # not a comment\n");
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_string_equal(pairs(cfg, "kafka.rdkafka"),
                        "queue.buffering.max.ms=5@gateway.ini:2;"
                        "batch.num.messages=10000@gateway.ini:3;"
                        "Security.Protocol=sasl_ssl@gateway.ini:7;"
                        "ssl.ca.location=/etc/ssl/certs/ca.pem@gateway.ini:8;"
                        "a.b=x # not a comment@gateway.ini:9;");
    /* the callback's error stops the walk and is returned */
    struct pairs_text pt = {.stop_after = 2};
    assert_int_equal(tg_config_foreach_pair(cfg, "kafka.rdkafka", collect_pair, &pt),
                     TG_ERR_CONFIG);
    assert_int_equal(pt.seen, 2);
    tg_config_destroy(cfg);
}

static void file_syntax(void **state)
{
    (void)state;
    /* BOM, CRLF, indentation (never a continuation), ':' separator, inline ';' comment */
    tg_unit_write_file("gateway.ini", "\xEF\xBB\xBF[gateway]\r\n"
                              "  threads = 8\r\n"
                              "    name = edge-7\r\n"
                              "\t; indented comment\r\n"
                              "[ journal ]   ; trailing comment\n"
                              "max_bytes: 2G\n"
                              "overflow = drop_newest ; spill policy\n"
                              "# comment\n"
                              "[kafka]\n"
                              "brokers = \"quoted;kept\"\n");
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 8);
    assert_string_equal(tg_config_get_str(cfg, "gateway", "name"), "edge-7");
    assert_string_equal(tg_config_origin(cfg, "gateway", "name"), "gateway.ini:3");
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 2ull << 30);
    assert_int_equal(tg_config_get_enum(cfg, "journal", "overflow"), 2);
    assert_string_equal(tg_config_get_str(cfg, "kafka", "brokers"), "\"quoted;kept\"");
    tg_config_destroy(cfg);
}

static void value_errors(void **state)
{
    (void)state;
    expect_file_error("[journal]\n\nmax_bytes = lots\n",
                      "gateway.ini:3: [journal] max_bytes: expected a size in bytes (e.g. 64M) "
                      "between 1M and 64G, got \"lots\"");
    expect_file_error("[journal]\nmax_bytes = 512k\n",
                      "gateway.ini:2: [journal] max_bytes: expected a size in bytes (e.g. 64M) "
                      "between 1M and 64G, got \"512k\"");
    expect_file_error("[journal]\nmax_bytes = 65G\n",
                      "gateway.ini:2: [journal] max_bytes: expected a size in bytes (e.g. 64M) "
                      "between 1M and 64G, got \"65G\"");
    expect_file_error("[journal]\nmax_bytes = 99999999999999999999\n",
                      "gateway.ini:2: [journal] max_bytes: expected a size in bytes (e.g. 64M) "
                      "between 1M and 64G, got \"99999999999999999999\"");
    expect_file_error("[journal]\nmax_bytes = 64M # the cap\n",
                      "gateway.ini:2: [journal] max_bytes: expected a size in bytes (e.g. 64M) "
                      "between 1M and 64G, got \"64M # the cap\" (\"#\" starts a comment only at "
                      "the beginning of a line; use \" ;\" for a comment after a value)");
    expect_file_error("[journal]\ncommit_interval_ms = 0\n",
                      "gateway.ini:2: [journal] commit_interval_ms: expected a duration in "
                      "milliseconds (an integer) between 1 and 60000, got \"0\"");
    expect_file_error("[journal]\ncommit_interval_ms = 1s\n",
                      "gateway.ini:2: [journal] commit_interval_ms: expected a duration in "
                      "milliseconds (an integer) between 1 and 60000, got \"1s\"");
    expect_file_error("[gateway]\nthreads = 65\n",
                      "gateway.ini:2: [gateway] threads: expected an integer between 1 and 64, "
                      "got \"65\"");
    expect_file_error("[gateway]\nthreads = 2.5\n",
                      "gateway.ini:2: [gateway] threads: expected an integer between 1 and 64, "
                      "got \"2.5\"");
    expect_file_error("[gateway]\nrequire_signature = maybe\n",
                      "gateway.ini:2: [gateway] require_signature: expected a boolean "
                      "(true/false, yes/no, on/off, 1/0), got \"maybe\"");
    expect_file_error("[journal]\noverflow = drop-oldest\n",
                      "gateway.ini:2: [journal] overflow: expected one of backpressure, "
                      "drop_oldest, drop_newest, got \"drop-oldest\"");
    expect_file_error("[journal]\noverflow =\n",
                      "gateway.ini:2: [journal] overflow: expected one of backpressure, "
                      "drop_oldest, drop_newest, got \"\"");
}

static void structure_errors(void **state)
{
    (void)state;
    expect_file_error("[jounral]\nmax_bytes = 1G\n",
                      "gateway.ini:1: [jounral]: unknown section (did you mean [journal]?)");
    expect_file_error("[mqtt]\nhost = x\nport = 1\n", "gateway.ini:1: [mqtt]: unknown section");
    expect_file_error("[journal]\nmax_byte = 1G\n",
                      "gateway.ini:2: [journal] max_byte: unknown key (did you mean max_bytes?)");
    expect_file_error("[journal]\nsize = 1G\n", "gateway.ini:2: [journal] size: unknown key");
    expect_file_error("[journal]\nmax_bytes = 1G\noverflow = drop_oldest\nmax_bytes = 2G\n",
                      "gateway.ini:4: [journal] max_bytes: duplicate key (first set on line 2)");
    expect_file_error("[journal]\nmax_bytes = 1G\n[gateway]\nthreads=1\n[journal]\nmax_bytes=1G\n",
                      "gateway.ini:6: [journal] max_bytes: duplicate key (first set on line 2)");
    expect_file_error("[kafka.rdkafka]\nacks = 1\nlinger.ms = 5\nacks = all\n",
                      "gateway.ini:4: [kafka.rdkafka] acks: duplicate key (first set on line 2)");
    expect_file_error("[journal]\nmax_bytes 64M\n",
                      "gateway.ini:2: expected \"key = value\", \"[section]\" or a comment, "
                      "got \"max_bytes 64M\"");
    expect_file_error("[journal\nmax_bytes = 64M\n",
                      "gateway.ini:1: expected \"[section]\", got \"[journal\"");
    expect_file_error("[journal] max_bytes = 64M\n",
                      "gateway.ini:1: unexpected text after the section header: "
                      "\"[journal] max_bytes = 64M\"");
    expect_file_error("max_bytes = 64M\n[journal]\n",
                      "gateway.ini:1: max_bytes: key outside of any [section]");
    expect_file_error("[kafka.rdkafka]\nsasl mechanism = PLAIN\n",
                      "gateway.ini:2: [kafka.rdkafka] sasl mechanism: expected a property name "
                      "made of letters, digits, \".\", \"_\" and \"-\"");
    expect_file_error("[journal]\n= 64M\n",
                      "gateway.ini:2: [journal]: missing key name before \"=\"");

    char longline[400];
    snprintf(longline, sizeof longline, "[kafka]\nbrokers = %0250d\n", 0);
    expect_file_error(longline, "gateway.ini:2: line longer than 197 characters");
    /* 197 characters is fine, and read whole */
    snprintf(longline, sizeof longline, "[kafka]\n  brokers = %0187d\n", 0);
    tg_unit_write_file("gateway.ini", longline);
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_int_equal(strlen(tg_config_get_str(cfg, "kafka", "brokers")), 187);
    tg_config_destroy(cfg);
}

static void every_problem_is_reported(void **state)
{
    (void)state;
    expect_file_error("[gateway]\n"
                      "threads = many\n"
                      "nmae = x\n"
                      "[jounral]\n"
                      "max_bytes = 1G\n"
                      "[journal]\n"
                      "overflow = never\n"
                      "broken line\n",
                      "gateway.ini:2: [gateway] threads: expected an integer between 1 and 64, "
                      "got \"many\"\n"
                      "gateway.ini:3: [gateway] nmae: unknown key (did you mean name?)\n"
                      "gateway.ini:4: [jounral]: unknown section (did you mean [journal]?)\n"
                      "gateway.ini:7: [journal] overflow: expected one of backpressure, "
                      "drop_oldest, drop_newest, got \"never\"\n"
                      "gateway.ini:8: expected \"key = value\", \"[section]\" or a comment, "
                      "got \"broken line\"");

    /* beyond 20, problems are counted */
    char text[4096] = "[gateway]\n";
    for (int i = 0; i < 25; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "bogus%d = 1\n", i);
    struct tg_config *cfg = new_cfg();
    tg_unit_write_file("gateway.ini", text);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_ERR_CONFIG);
    const char *err = tg_config_error(cfg);
    assert_non_null(strstr(err, "gateway.ini:21: [gateway] bogus19: unknown key\n"
                                "(5 more problems not shown)"));
    assert_null(strstr(err, "bogus20"));
    tg_config_destroy(cfg);
}

static void failed_load_changes_nothing(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    tg_unit_write_file("good.ini", "[gateway]\nthreads = 4\n[kafka.rdkafka]\nacks = 1\n");
    tg_unit_write_file("bad.ini", "[gateway]\nthreads = 8\n[kafka.rdkafka]\nacks = all\nx=1\n"
                          "[journal]\nmax_bytes = 0\n");
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_BOARD, "good.ini"), TG_OK);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "bad.ini"), TG_ERR_CONFIG);
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 4);
    assert_string_equal(tg_config_origin(cfg, "gateway", "threads"), "good.ini:2");
    assert_string_equal(pairs(cfg, "kafka.rdkafka"), "acks=1@good.ini:4;");
    /* the next successful load clears the error text */
    assert_int_equal(tg_config_set(cfg, "gateway.threads=3"), TG_OK);
    assert_string_equal(tg_config_error(cfg), "");
    tg_config_destroy(cfg);
}

static void missing_file(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_BOARD, "boards/nope.ini"), TG_ERR_CONFIG);
    assert_string_equal(tg_config_error(cfg),
                        "boards/nope.ini: cannot open: No such file or directory");
    /* a directory opens but cannot be read */
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "."), TG_ERR_CONFIG);
    assert_string_equal(tg_config_error(cfg), ".: cannot read: Is a directory");
    tg_config_destroy(cfg);
}

static void set_errors(void **state)
{
    (void)state;
    expect_set_error("journal.max_bytes=lots",
                     "--set journal.max_bytes=lots: expected a size in bytes (e.g. 64M) between "
                     "1M and 64G, got \"lots\"");
    expect_set_error("journal.max_byte=1G",
                     "--set journal.max_byte=(value not shown): unknown key \"max_byte\" in [journal] "
                     "(did you mean max_bytes?)");
    expect_set_error("jounral.max_bytes=1G",
                     "--set jounral.max_bytes=(value not shown): unknown section (did you mean [journal]?)");
    expect_set_error("max_bytes=1G", "--set max_bytes=(value not shown): expected section.key=value");
    expect_set_error("journal.max_bytes", "--set journal.max_bytes: expected section.key=value");
    expect_set_error("journal.=1G", "--set journal.=(value not shown): missing key name after \"journal.\"");
    expect_set_error("journal=1G", "--set journal=(value not shown): expected section.key=value");
    expect_set_error("kafka.brokers=a\nb", "--set kafka.brokers=a\nb: value contains a "
                                           "control character");
    expect_set_error("kafka.password=x ;y",
                     "--set kafka.password=(value not shown): value contains \" ;\", which a config file "
                     "would read as the start of a comment");
    expect_set_error("kafka.rdkafka.a:b=1",
                     "--set kafka.rdkafka.a:b=(value not shown): expected a property name made of letters, "
                     "digits, \".\", \"_\" and \"-\"");
    char longset[300];
    snprintf(longset, sizeof longset, "kafka.brokers=%0187d", 0);
    struct tg_config *fits = new_cfg();
    assert_int_equal(tg_config_set(fits, longset), TG_OK); /* "brokers = " + 187 = 197 */
    tg_config_destroy(fits);
    snprintf(longset, sizeof longset, "kafka.brokers=%0188d", 0);
    char msg[400];
    snprintf(msg, sizeof msg, "--set %s: longer than a config file line (197 characters)", longset);
    expect_set_error(longset, msg);
    /* ';' without a blank before it is no comment, in files or in --set */
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "kafka.password=x;y"), TG_OK);
    assert_string_equal(tg_config_get_str(cfg, "kafka", "password"), "x;y");
    tg_config_destroy(cfg);
}

static void size_parser(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"0", 0},          {"1", 1},           {"4096", 4096},          {"64k", 64 << 10},
        {"64K", 64 << 10}, {"64M", 64u << 20}, {"64m", 64u << 20},      {"3G", 3ull << 30},
        {"2T", 2ull << 40}, {"18446744073709551615", UINT64_MAX}, {"16777215T", 16777215ull << 40},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1234;
        assert_int_equal(tg_parse_size(good[i].text, &v), TG_OK);
        assert_true(v == good[i].bytes);
    }
    static const char *const bad[] = {"", "M", "-1", "+1", " 1", "1 ", "1.5G", "64MB", "64Mi",
                                      "1P", "0x10", "1e3", "ten"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 1234;
        assert_int_equal(tg_parse_size(bad[i], &v), TG_ERR_CONFIG);
        assert_true(v == 1234);
    }
    uint64_t v;
    assert_int_equal(tg_parse_size("18446744073709551616", &v), TG_ERR_OUT_OF_RANGE);
    assert_int_equal(tg_parse_size("16777216T", &v), TG_ERR_OUT_OF_RANGE);
    assert_int_equal(tg_parse_size("99999999999999999999k", &v), TG_ERR_OUT_OF_RANGE);

    /* in the config: bounds are inclusive */
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=1M"), TG_OK);
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 1 << 20);
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=1024k"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=1048575"), TG_ERR_CONFIG);
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=64G"), TG_OK);
    assert_int_equal(tg_config_get_size(cfg, "journal", "max_bytes"), 64ull << 30);
    assert_string_equal(tg_config_get_str(cfg, "journal", "max_bytes"), "64G");
    assert_int_equal(tg_config_set(cfg, "journal.max_bytes=68719476737"), TG_ERR_CONFIG);
    tg_config_destroy(cfg);
}

static void int_parser(void **state)
{
    (void)state;
    int64_t v = 1234;
    assert_int_equal(tg_parse_int("0", 0, 10, &v), TG_OK);
    assert_true(v == 0);
    assert_int_equal(tg_parse_int("-7", -10, 10, &v), TG_OK);
    assert_true(v == -7);
    assert_int_equal(tg_parse_int("+10", -10, 10, &v), TG_OK); /* bounds are inclusive */
    assert_true(v == 10);
    assert_int_equal(tg_parse_int("9223372036854775807", 0, INT64_MAX, &v), TG_OK);
    assert_true(v == INT64_MAX);
    v = 1234;
    static const char *const bad[] = {"", "-", "+", " 1", "1 ", "1.5", "0x10", "1e3", "ten",
                                      "--1", "1k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tg_parse_int(bad[i], INT64_MIN, INT64_MAX, &v), TG_ERR_CONFIG);
    assert_int_equal(tg_parse_int("11", -10, 10, &v), TG_ERR_OUT_OF_RANGE);
    assert_int_equal(tg_parse_int("-11", -10, 10, &v), TG_ERR_OUT_OF_RANGE);
    assert_int_equal(tg_parse_int("9223372036854775808", 0, INT64_MAX, &v), TG_ERR_OUT_OF_RANGE);
    assert_true(v == 1234); /* untouched by every refusal */
}

static void bool_parser(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", "yes", "Yes", "on", "ON", "1"};
    static const char *const no[] = {"false", "FALSE", "no", "NO", "off", "Off", "0"};
    static const char *const bad[] = {"", "y", "n", "t", "2", "enabled", "true ", "-1"};
    bool b;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = false;
        assert_int_equal(tg_parse_bool(yes[i], &b), TG_OK);
        assert_true(b);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        b = true;
        assert_int_equal(tg_parse_bool(no[i], &b), TG_OK);
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tg_parse_bool(bad[i], &b), TG_ERR_CONFIG);

    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "gateway.require_signature=on"), TG_OK);
    assert_true(tg_config_get_bool(cfg, "gateway", "require_signature"));
    assert_int_equal(tg_config_set(cfg, "gateway.require_signature=No"), TG_OK);
    assert_false(tg_config_get_bool(cfg, "gateway", "require_signature"));
    tg_config_destroy(cfg);
}

static void int_bounds(void **state)
{
    (void)state;
    static const char *const ok[] = {"gateway.threads=1", "gateway.threads=64",
                                     "gateway.threads=+5", "gateway.threads=007"};
    static const char *const bad[] = {"gateway.threads=0", "gateway.threads=65",
                                      "gateway.threads=-1", "gateway.threads=",
                                      "gateway.threads=99999999999999999999", "gateway.threads=0x2",
                                      "gateway.threads=- 1"};
    struct tg_config *cfg = new_cfg();
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(tg_config_set(cfg, ok[i]), TG_OK);
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 7);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tg_config_set(cfg, bad[i]), TG_ERR_CONFIG);
    assert_int_equal(tg_config_get_int(cfg, "gateway", "threads"), 7);
    tg_config_destroy(cfg);
}

/* Dumps cfg, reads the dump into a fresh config, and compares every value and pair. */
static void dump_reads_back(void **state)
{
    (void)state;
    tg_unit_write_file("board.ini", board_ini);
    tg_unit_write_file("gateway.ini", gateway_ini);
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_BOARD, "board.ini"), TG_OK);
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.password=s3cr#t;x"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "gateway.name=edge 7"), TG_OK);

    FILE *fp = fopen("dump.ini", "w");
    assert_non_null(fp);
    assert_int_equal(tg_config_dump(cfg, fp), TG_OK);
    fclose(fp);

    struct tg_config *again = new_cfg();
    assert_int_equal(tg_config_load_file(again, TG_CONFIG_FILE, "dump.ini"), TG_OK);
    for (size_t i = 0; i < N_SCHEMA; i++) {
        if (schema[i].type == TG_CONFIG_PASSTHROUGH)
            continue;
        assert_string_equal(tg_config_get_str(again, schema[i].section, schema[i].key),
                            tg_config_get_str(cfg, schema[i].section, schema[i].key));
    }
    char first[1024];
    snprintf(first, sizeof first, "%s", pairs(cfg, "kafka.rdkafka"));
    const char *second = pairs(again, "kafka.rdkafka");
    /* same pairs in the same order; only the origins differ */
    assert_string_equal(first, "linger.ms=5@board.ini:8;compression.type=zstd@gateway.ini:7;"
                               "acks=all@gateway.ini:8;");
    assert_non_null(strstr(second, "linger.ms=5@dump.ini:"));
    assert_non_null(strstr(second, ";compression.type=zstd@dump.ini:"));
    assert_non_null(strstr(second, ";acks=all@dump.ini:"));

    /* and the dump shows origins */
    fp = fopen("dump.ini", "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_non_null(strstr(text, "[journal]\n# cap on the journal's disk use, bytes\n"
                                 "# origin: gateway.ini:3 (default: 256M)\nmax_bytes = 128M\n"));
    assert_non_null(strstr(text, "# origin: --set (default: \"\")\npassword = s3cr#t;x\n"));
    assert_non_null(strstr(text, "# origin: board.ini:6 (default: 2)\nthreads = 1\n"));
    assert_non_null(strstr(text, "[kafka.rdkafka]\n# librdkafka properties, passed unchanged\n"
                                 "# origin: board.ini:8\nlinger.ms = 5\n"));
    assert_non_null(strstr(text, "# origin: default\nbrokers = 127.0.0.1:9092\n"));
    tg_config_destroy(again);
    tg_config_destroy(cfg);
}

/* The dump for people (--check-config) shows that a credential is set, never its value,
 * for schema keys and pass-through pairs alike; everything else is shown as before. */
static void dump_redacted_hides_secrets(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "kafka.password=s3cr#t;x"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.password=hunter2"), TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.oauthbearer.client.secret=abc"),
                     TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.mechanism=PLAIN"), TG_OK);

    FILE *fp = fopen("redacted.ini", "w+");
    assert_non_null(fp);
    assert_int_equal(tg_config_dump_redacted(cfg, fp), TG_OK);
    rewind(fp);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_null(strstr(text, "s3cr#t"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "= abc"));
    assert_non_null(strstr(text, "# password = (set, 8 characters; not shown)\n"));
    assert_non_null(strstr(text, "# sasl.password = (set, 7 characters; not shown)\n"));
    assert_non_null(strstr(text, "# sasl.oauthbearer.client.secret = (set, 3 characters; "));
    assert_non_null(strstr(text, "sasl.mechanism = PLAIN\n"));
    assert_non_null(strstr(text, "brokers = 127.0.0.1:9092\n"));

    /* read back, the credentials are simply unset */
    struct tg_config *again = new_cfg();
    assert_int_equal(tg_config_load_file(again, TG_CONFIG_FILE, "redacted.ini"), TG_OK);
    assert_string_equal(tg_config_get_str(again, "kafka", "password"), "");
    const char *left = pairs(again, "kafka.rdkafka");
    assert_non_null(strstr(left, "sasl.mechanism=PLAIN@redacted.ini:"));
    assert_null(strstr(left, "password"));
    assert_null(strstr(left, "secret"));
    tg_config_destroy(again);
    tg_config_destroy(cfg);
}

/* Which names and values count as credentials (issue 11: an inline ssl.key.pem and
 * sasl.oauthbearer.config were printed by --check-config). */
static void secret_rule(void **state)
{
    (void)state;
    static const char *const secret[] = {
        "ssl.key.pem", "ssl.key.password", "sasl.password", "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret", "sasl.jaas.config", "password", "mqtt_passwd",
        "api_key", "tls_key", "ssl.keystore.password", "Sasl.Password", "access-token",
        "private_key_file", "ssl.certificate.pem",
    };
    static const char *const plain[] = {
        "sasl.mechanism", "ssl.key.location", "bootstrap.servers", "linger.ms",
        "hmac_key_file", "keepalive_ms", "client.id", "monkey", "tokenizer",
    };
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++)
        if (!tg_config_is_secret(secret[i], "x"))
            fail_msg("%s not taken for a secret", secret[i]);
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        if (tg_config_is_secret(plain[i], "x"))
            fail_msg("%s taken for a secret", plain[i]);
    /* a PEM block is secret under any name */
    assert_true(tg_config_is_secret("ssl.ca.location", "-----BEGIN PRIVATE KEY-----"));
    assert_false(tg_config_is_secret("ssl.ca.location", NULL));
}

static void scrub_removes_every_copy(void **state)
{
    (void)state;
    char text[128] = "Invalid value \"hunter2\" (hunter2) for property";
    tg_config_scrub(text, sizeof text, "hunter2");
    assert_string_equal(text, "Invalid value \"(value not shown)\" ((value not shown)) for property");
    char small[24] = "bad \"hunter2\" here";
    tg_config_scrub(small, sizeof small, "hunter2");
    assert_null(strstr(small, "hunter"));
    char same[32] = "no value here";
    tg_config_scrub(same, sizeof same, "");
    assert_string_equal(same, "no value here");
}

/* --check-config prints neither an inline PEM nor an OAUTHBEARER config, and no error shows a
 * value that may be secret: a pass-through pair's, a secret key's, a pasted PEM line's. */
static void secrets_never_shown(void **state)
{
    (void)state;
    struct tg_config *cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.ssl.key.pem=-----BEGIN PRIVATE KEY-----"),
                     TG_OK);
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.oauthbearer.config=principal=me "
                                        "secret=oauthsecret"),
                     TG_OK);
    FILE *fp = fopen("redacted.ini", "w+");
    assert_non_null(fp);
    assert_int_equal(tg_config_dump_redacted(cfg, fp), TG_OK);
    rewind(fp);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    assert_null(strstr(text, "BEGIN"));
    assert_null(strstr(text, "oauthsecret"));
    assert_non_null(strstr(text, "# ssl.key.pem = (set, 27 characters; not shown)\n"));
    tg_config_destroy(cfg);

    /* --set errors: the pass-through value, the secret value, not echoed */
    cfg = new_cfg();
    assert_int_equal(tg_config_set(cfg, "kafka.rdkafka.sasl.passwrd=hunter2 ;x"), TG_ERR_CONFIG);
    assert_null(strstr(tg_config_error(cfg), "hunter2"));
    assert_int_equal(tg_config_set(cfg, "kafka.pasword=hunter2"), TG_ERR_CONFIG);
    assert_null(strstr(tg_config_error(cfg), "hunter2"));
    assert_int_equal(tg_config_set(cfg, "kafka.password hunter2"), TG_ERR_CONFIG);
    assert_null(strstr(tg_config_error(cfg), "hunter2"));
    tg_config_destroy(cfg);

    /* file errors: a PEM pasted over several lines into [kafka.rdkafka] */
    cfg = new_cfg();
    tg_unit_write_file("gateway.ini", "[kafka.rdkafka]\nssl.key.pem = -----BEGIN PRIVATE KEY-----\n"
                              "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
                              "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7MIIEvQIBADA=\n"
                              "-----END PRIVATE KEY-----\n"
                              "[gateway]\npassword hunter2\n");
    assert_int_equal(tg_config_load_file(cfg, TG_CONFIG_FILE, "gateway.ini"), TG_ERR_CONFIG);
    const char *err = tg_config_error(cfg);
    assert_null(strstr(err, "MIIE"));
    assert_null(strstr(err, "BEGIN"));
    assert_null(strstr(err, "hunter2"));
    assert_non_null(strstr(err, "gateway.ini:3: expected \"key = value\""));
    assert_non_null(strstr(err, "gateway.ini:7: expected \"key = value\""));
    tg_config_destroy(cfg);
}

/* Runs fn in a child and expects it to abort with a message containing text. */
static void expect_abort(void (*fn)(void), const char *text)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char buf[1024];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    if (!strstr(buf, text))
        fail_msg("stderr \"%s\" lacks \"%s\"", buf, text);
}

static void bad_default(void)
{
    static const struct tg_config_key s[] = {
        TG_CFG_SIZE("journal", "max_bytes", "lots", 0, INT64_MAX, "cap, bytes"),
    };
    tg_config_new(s, 1);
}

static void size_without_unit_name(void)
{
    static const struct tg_config_key s[] = {
        TG_CFG_SIZE("journal", "max_size", "1M", 0, INT64_MAX, "cap, bytes"),
    };
    tg_config_new(s, 1);
}

static void ms_key_not_duration(void)
{
    static const struct tg_config_key s[] = {
        TG_CFG_INT("journal", "commit_ms", "1", 0, 10, "interval, ms"),
    };
    tg_config_new(s, 1);
}

static void twice(void)
{
    static const struct tg_config_key s[] = {
        TG_CFG_INT("a", "x", "1", 0, 10, "x"),
        TG_CFG_INT("a", "x", "1", 0, 10, "x"),
    };
    tg_config_new(s, 2);
}

static void mixed_section(void)
{
    static const struct tg_config_key s[] = {
        TG_CFG_PASSTHROUGH("a", "free"),
        TG_CFG_INT("a", "x", "1", 0, 10, "x"),
    };
    tg_config_new(s, 2);
}

static void unknown_getter(void)
{
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    tg_config_get_int(cfg, "gateway", "thread");
}

static void wrong_type_getter(void)
{
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    tg_config_get_int(cfg, "journal", "max_bytes");
}

static void not_passthrough(void)
{
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    tg_config_foreach_pair(cfg, "journal", collect_pair, NULL);
}

static void bugs_abort(void **state)
{
    (void)state;
    expect_abort(bad_default, "schema bug: [journal] max_bytes: default: expected a size in "
                              "bytes (e.g. 64M), got \"lots\"");
    expect_abort(size_without_unit_name, "[journal] max_size: size keys, and only they, end in _bytes");
    expect_abort(ms_key_not_duration, "[journal] commit_ms: millisecond keys");
    expect_abort(twice, "[a] x: declared twice");
    expect_abort(mixed_section, "[a] x: a pass-through section cannot also have typed keys");
    expect_abort(unknown_getter, "tg_config_get_int: [gateway] thread is not in the schema");
    expect_abort(wrong_type_getter, "tg_config_get_int: [journal] max_bytes has another type");
    expect_abort(not_passthrough, "[journal] is not a pass-through section");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(layers_override_in_order),
        cmocka_unit_test(layers_are_ranked_not_ordered),
        cmocka_unit_test(set_picks_longest_section),
        cmocka_unit_test(passthrough_keeps_file_order),
        cmocka_unit_test(file_syntax),
        cmocka_unit_test(value_errors),
        cmocka_unit_test(structure_errors),
        cmocka_unit_test(every_problem_is_reported),
        cmocka_unit_test(failed_load_changes_nothing),
        cmocka_unit_test(missing_file),
        cmocka_unit_test(set_errors),
        cmocka_unit_test(size_parser),
        cmocka_unit_test(int_parser),
        cmocka_unit_test(bool_parser),
        cmocka_unit_test(int_bounds),
        cmocka_unit_test(dump_reads_back),
        cmocka_unit_test(dump_redacted_hides_secrets),
        cmocka_unit_test(secret_rule),
        cmocka_unit_test(scrub_removes_every_copy),
        cmocka_unit_test(secrets_never_shown),
        cmocka_unit_test(bugs_abort),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
