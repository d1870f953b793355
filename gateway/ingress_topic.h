/*
 * ingress_topic.h - the rule for the telemetry topic filter ([mqtt] topic), shared by both
 * front-ends: the daemon's MQTT subscriber (ingress_mqtt.c) subscribes to it, the Mosquitto
 * plugin (plugin_mosq.c) matches each message's topic against it.
 *
 * It is its own file, free of libmosquitto, so that the plugin, which runs inside the broker,
 * does not link the MQTT client library for one syntax check (README, "In the broker").
 *
 * Threads: any; no state.
 */
#ifndef TG_INGRESS_TOPIC_H
#define TG_INGRESS_TOPIC_H

#include <stddef.h>

#include "error.h"

/* Whether filter is a topic filter whose messages each name their device by the topic's
 * last level: a valid MQTT filter (non-empty, at most 65,535 bytes of valid UTF-8 without the
 * control characters and non-characters libmosquitto refuses)
 * whose only wildcard, if any, is a '+' standing alone as its last level ("telemetry/+", or
 * "telemetry/dev-1" for one device). '#' anywhere, or '+' at another level, would let
 * "telemetry/A/B" be taken as device B: TG_ERR_CONFIG with the reason in why. */
tg_err tg_ingress_topic_check(const char *filter, char *why, size_t whylen);

#endif
