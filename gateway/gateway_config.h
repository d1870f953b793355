/*
 * gateway_config.h - the tidegate daemon's configuration schema.
 *
 * Every key the gateway understands, with its default, bounds and one-line help, in one
 * table: `tidegate --check-config` prints it with the origin of each value, the README's
 * configuration reference lists it, and board files (the files in boards/) set the hardware-
 * dependent ones. See config.h for layering (defaults < board < file < --set) and syntax.
 *
 * Threads: the table is constant; build and load the config on the main thread at startup.
 */
#ifndef TG_GATEWAY_CONFIG_H
#define TG_GATEWAY_CONFIG_H

#include <stddef.h>

#include "config.h"

/* Indices of the enum keys' choices, as tg_config_get_enum() returns them. */
enum tg_journal_mode { TG_JOURNAL_DURABLE = 0, TG_JOURNAL_SPILL = 1 };
enum tg_overflow {
    TG_OVERFLOW_BACKPRESSURE = 0,
    TG_OVERFLOW_DROP_OLDEST = 1,
    TG_OVERFLOW_DROP_NEWEST = 2,
};
enum tg_kafka_format { TG_KAFKA_JSON = 0, TG_KAFKA_CBOR = 1 };

/* A new config holding the gateway schema's defaults; NULL when out of memory. */
struct tg_config *tg_gateway_config_new(void);

/* Checks what the schema cannot say about single values: journal.path not empty,
 * mqtt.topic a filter that names the device by its last level (tg_ingress_topic_check),
 * mqtt.share_group a group name when connections > 1, and no other name than the topic's
 * own group when the topic is written "$share/<group>/...",
 * mqtt.max_packet_bytes room for validate.max_payload_bytes, kafka.brokers not empty,
 * kafka.topic and kafka.dlq_topic set and different, metrics.listen an address the exporter
 * can bind, and every [kafka.rdkafka] pair known to librdkafka and not switching off a
 * guarantee (tg_kafka_guard_check). TG_ERR_CONFIG with every problem in err, one per line,
 * as "FILE:LINE: [section] key: what was expected", never echoing a [kafka.rdkafka] value;
 * TG_ERR_NOMEM. Both a normal start and --check-config make it before anything else. */
tg_err tg_gateway_config_check(const struct tg_config *cfg, char *err, size_t errlen);

#endif
