/*
 * gateway_limits.h - compile-time limits shared by gateway modules, each with a #ifndef
 * default so that a build can override it (-D...). Limits used by one file stay in it.
 */
#ifndef TG_GATEWAY_LIMITS_H
#define TG_GATEWAY_LIMITS_H

/* Most bytes of a rejected payload kept in its dead letter (the rest is cut). The ingress
 * cuts an oversized payload to the larger of this and validate.max_payload_bytes + 1 before
 * copying it, which is all the pipeline can use of it. */
#ifndef TG_DLQ_PAYLOAD_MAX
#define TG_DLQ_PAYLOAD_MAX (64 * 1024)
#endif

/* Most messages tg_ingress_publish() holds for the ingress thread (durable acks: one per
 * device per commit at most, so this is room for a few commits of 10,000 devices). */
#ifndef TG_INGRESS_PUBLISH_QUEUE_MAX
#define TG_INGRESS_PUBLISH_QUEUE_MAX 65536
#endif

#endif
