/*
 * stub_egress.h - a stand-in for egress_kafka.c in unit tests of the pipeline: it implements
 * egress_kafka.h without librdkafka. Produced records wait in the stub until the test
 * reports their outcome; "up", topic errors and a full queue are set by the test.
 * One instance at a time (the last one created); single-threaded. It also stands in for
 * reconcile_kafka.c: the read-back finishes at once and finds nothing.
 */
#ifndef TG_STUB_EGRESS_H
#define TG_STUB_EGRESS_H

#include <stdbool.h>
#include <stddef.h>

#include "egress_kafka.h"

/* The last egress created (NULL after it was destroyed). */
struct tg_egress *stub_egress(void);

/* Whether the stub says a broker is connected (default true). */
void stub_egress_set_up(struct tg_egress *eg, bool up);

/* Whether tg_egress_produce() refuses with TG_ERR_FULL (default false). */
void stub_egress_set_full(struct tg_egress *eg, bool full);

/* The topic error for a kind (0: none), as tg_egress_topic_error() reports it. */
void stub_egress_set_topic_error(struct tg_egress *eg, enum tg_jrecord_kind kind, int err);

/* Records produced and not yet reported. */
size_t stub_egress_pending(const struct tg_egress *eg);

/* Reports the outcome of every pending record (oldest first) through the delivery callback. */
void stub_egress_deliver_all(struct tg_egress *eg, tg_err result);

#endif
