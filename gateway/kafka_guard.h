/*
 * kafka_guard.h - what [kafka.rdkafka] may not change.
 *
 * The gateway's guarantees (delete only after Kafka confirms, nothing lost in an outage,
 * duplicates removed, per-device order) rest on librdkafka properties the gateway sets
 * itself: acks=all, an idempotent producer, no local message timeout, a delivery report for
 * every record. [kafka.rdkafka] is applied after them, so without this check one line could
 * switch a guarantee off (issue 11: message.timeout.ms=1500 gave 551 records for 300
 * readings). The README's "Refused [kafka.rdkafka] properties" table lists the rules.
 *
 * Threads: no state; call from any thread (config checking runs on the main thread).
 */
#ifndef TG_KAFKA_GUARD_H
#define TG_KAFKA_GUARD_H

#include <stddef.h>

#include "error.h"

/*
 * Checks one [kafka.rdkafka] pair: librdkafka knows the property and takes the value (tried
 * on a scratch configuration), and the value does not switch off a guarantee. Aliases count
 * as their property (acks and request.required.acks; delivery.timeout.ms and
 * message.timeout.ms; ...), and values are compared as librdkafka reads them (acks=all and
 * acks=-1 alike). TG_OK, TG_ERR_CONFIG with the reason in why, TG_ERR_NOMEM. why never
 * contains the value: the property may be a credential, and a misspelt "sasl.passwrd" is
 * not recognisably one.
 */
tg_err tg_kafka_guard_check(const char *key, const char *value, char *why, size_t whylen);

#endif
