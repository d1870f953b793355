/*
 * ingress_topic.h - the rule for the telemetry topic filter ([mqtt] topic), shared by both
 * front-ends: the daemon's MQTT subscriber (ingress_mqtt.c) subscribes to it, the Mosquitto
 * plugin (plugin_mosq.c) matches each message's topic against it.
 *
 * A topic may be written as an MQTT 5 shared subscription, "$share/<group>/<filter>": the
 * daemon subscribes to it as written, keeping the user's group (with several connections too,
 * where it would otherwise make "$share/<share_group>/<topic>"); the rules below apply to the
 * <filter> part. The plugin refuses such a topic (it subscribes to nothing).
 *
 * It is its own file, free of libmosquitto, so that the plugin, which runs inside the broker,
 * does not link the MQTT client library for one syntax check (README, "In the broker").
 *
 * Threads: any; no state.
 */
#ifndef TG_INGRESS_TOPIC_H
#define TG_INGRESS_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Whether filter is a topic filter whose messages each name their device by the topic's
 * last level: a valid MQTT filter (non-empty, at most 65,535 bytes of valid UTF-8 without the
 * control characters and non-characters libmosquitto refuses)
 * whose only wildcard, if any, is a '+' standing alone as its last level ("telemetry/+", or
 * "telemetry/dev-1" for one device). '#' anywhere, or '+' at another level, would let
 * "telemetry/A/B" be taken as device B: TG_ERR_CONFIG with the reason in why. */
tg_err tg_ingress_topic_check(const char *filter, char *why, size_t whylen);

/* MQTT 5 (4.8.2): a shared subscription is "$share/<group>/<filter>". */
#define TG_INGRESS_SHARE_PREFIX "$share/"

/* Whether group (len bytes) can name a shared subscription group: at least one byte of valid
 * UTF-8 (as in tg_ingress_topic_check) without '/', '+' or '#' (MQTT 5 4.8.2). */
bool tg_ingress_share_group_ok(const char *group, size_t len);

/* The filter proper of a topic tg_ingress_topic_check() accepted: what follows
 * "$share/<group>/" ("telemetry/+" of "$share/g/telemetry/+"), or topic itself. When group
 * is not NULL it is set to the group within topic (not NUL-terminated, *group_len bytes), or
 * to NULL and 0 for a topic that is not a shared subscription. */
const char *tg_ingress_topic_filter(const char *topic, const char **group, size_t *group_len);

/* What the daemon subscribes to, on each of its `connections` connections, for a topic
 * tg_ingress_topic_check() accepted: the topic as written for one connection, or when it
 * names its own group; else "$share/<share_group>/<topic>" (share_group must pass
 * tg_ingress_share_group_ok). Allocated: the caller frees it; NULL when out of memory. */
char *tg_ingress_topic_subscription(const char *topic, int connections, const char *share_group);

#endif
