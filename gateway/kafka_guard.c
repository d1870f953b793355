/*
 * kafka_guard.c - the [kafka.rdkafka] properties that would switch off a guarantee (see
 * kafka_guard.h).
 *
 * Each rule names librdkafka's property, its aliases, and the values allowed, written as
 * rd_kafka_conf_get() gives them back (acks=all reads back as "-1", booleans as
 * "true"/"false"), so every spelling librdkafka accepts is judged the same way.
 */
#include "kafka_guard.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "config.h"

/* Longest property name shown in a message: librdkafka's are all shorter, and a longer one
 * is a line of a pasted PEM block that happened to end in "=". */
#define NAME_SHOWN_MAX 48

enum allow { EQUALS, NOT_EQUALS, INT_AT_LEAST, INT_AT_MOST };

struct rule {
    const char *names[3];  /* the property, then its aliases */
    enum allow allow;
    const char *value;     /* as rd_kafka_conf_get() writes it */
    const char *expected;  /* what to write instead, for people */
    const char *why;       /* which guarantee it would break */
};

static const struct rule rules[] = {
    {{"request.required.acks", "acks"}, EQUALS, "-1", "all (-1)",
     "with fewer acknowledgements the journal deletes a reading the cluster can still lose "
     "(acks=1: a leader failover; acks=0: anything)"},
    {{"enable.idempotence"}, EQUALS, "true", "true",
     "without it a retry after a lost response writes a duplicate and can reorder a device's "
     "readings"},
    {{"message.timeout.ms", "delivery.timeout.ms"}, EQUALS, "0", "0 (no local timeout)",
     "a reading that times out is sent again from the journal while the first copy may still "
     "land: duplicates; the journal, not a timer, decides what is kept"},
    {{"message.send.max.retries", "retries"}, INT_AT_LEAST, "1", "at least 1",
     "the idempotent producer needs retries (librdkafka would refuse to start)"},
    {{"max.in.flight.requests.per.connection", "max.in.flight"}, INT_AT_MOST, "5", "at most 5",
     "the idempotent producer keeps order only with at most 5 requests in flight (librdkafka "
     "would refuse to start)"},
    {{"queuing.strategy"}, EQUALS, "fifo", "fifo", "lifo reorders a device's readings"},
    {{"delivery.report.only.error"}, EQUALS, "false", "false",
     "a reading leaves the journal only on a success report: without them nothing is ever "
     "deleted and everything is sent again at the next start"},
    {{"transactional.id"}, EQUALS, "", "unset",
     "the gateway does not produce in transactions, and a transactional producer refuses "
     "what it sends"},
    {{"partitioner"}, NOT_EQUALS, "random", "a key-hashing partitioner (murmur2_random)",
     "random ignores the device key: one device's readings would spread over partitions and "
     "lose their order"},
};

static bool allowed(const struct rule *r, const char *got)
{
    switch (r->allow) {
    case EQUALS:
        return strcmp(got, r->value) == 0;
    case NOT_EQUALS:
        return strcmp(got, r->value) != 0;
    case INT_AT_LEAST:
        return strtoll(got, NULL, 10) >= strtoll(r->value, NULL, 10);
    case INT_AT_MOST:
        return strtoll(got, NULL, 10) <= strtoll(r->value, NULL, 10);
    }
    return false;
}

tg_err tg_kafka_guard_check(const char *key, const char *value, char *why, size_t whylen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) {
        snprintf(why, whylen, "out of memory");
        return TG_ERR_NOMEM;
    }
    tg_err err = TG_OK;
    char rkerr[512];
    if (rd_kafka_conf_set(conf, key, value, rkerr, sizeof rkerr) != RD_KAFKA_CONF_OK) {
        /* librdkafka's text may quote the value; the name only when it can be one. */
        tg_config_scrub(rkerr, sizeof rkerr, value);
        if (strlen(key) > NAME_SHOWN_MAX)
            tg_config_scrub(rkerr, sizeof rkerr, key);
        snprintf(why, whylen, "librdkafka refuses it: %s (the value is not shown)", rkerr);
        err = TG_ERR_CONFIG;
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const struct rule *r = &rules[i];
        bool named = false;
        for (size_t j = 0; j < 3 && r->names[j] && !named; j++)
            named = strcmp(key, r->names[j]) == 0;
        if (!named)
            continue;
        char got[256];
        size_t len = sizeof got;
        if (rd_kafka_conf_get(conf, r->names[0], got, &len) != RD_KAFKA_CONF_OK)
            got[0] = '\0';
        if (!allowed(r, got)) {
            snprintf(why, whylen, "must be %s: %s. The gateway sets what it needs itself; "
                                  "remove the line", r->expected, r->why);
            err = TG_ERR_CONFIG;
        }
        break;
    }
cleanup:
    rd_kafka_conf_destroy(conf);
    return err;
}
