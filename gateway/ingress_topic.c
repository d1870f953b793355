/*
 * ingress_topic.c - the [mqtt] topic filter rule (ingress_topic.h), without libmosquitto.
 */
#include "ingress_topic.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* MQTT 5 section 1.5.4 / 3.1.1 section 1.5.3: topic names and filters are UTF-8 strings of at
 * most 65,535 bytes. */
#define TOPIC_BYTES_MAX 65535

/* Code points MQTT says a string should not hold (MQTT 5 1.5.4), which libmosquitto refuses
 * in a SUBSCRIBE (mosquitto_validate_utf8) and Mosquitto in a PUBLISH: control characters
 * (U+0000-001F, U+007F-009F) and non-characters (U+FDD0-FDEF, U+xxFFFE-xxFFFF). */
static bool refused_code_point(uint32_t cp)
{
    return cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0xFDD0 && cp <= 0xFDEF) ||
           (cp & 0xFFFE) == 0xFFFE;
}

/* Well-formed UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF) without the
 * code points above: a broker refuses a SUBSCRIBE with anything else (the daemon would
 * reconnect for ever), and no device could publish such a topic (the plugin would match
 * nothing). */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            if (refused_code_point(c))
                return false;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_for_len[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ||
            refused_code_point(cp))
            return false;
        i += n + 1;
    }
    return true;
}

bool tg_ingress_share_group_ok(const char *group, size_t len)
{
    return len > 0 && !memchr(group, '/', len) && !memchr(group, '+', len) &&
           !memchr(group, '#', len) && utf8_valid((const unsigned char *)group, len);
}

const char *tg_ingress_topic_filter(const char *topic, const char **group, size_t *group_len)
{
    const char *g = NULL, *slash = NULL;
    if (strncmp(topic, TG_INGRESS_SHARE_PREFIX, strlen(TG_INGRESS_SHARE_PREFIX)) == 0) {
        g = topic + strlen(TG_INGRESS_SHARE_PREFIX);
        slash = strchr(g, '/');
    }
    if (!slash) /* not a shared subscription (or a malformed one the check refuses) */
        g = NULL;
    if (group) {
        *group = g;
        *group_len = g ? (size_t)(slash - g) : 0;
    }
    return g ? slash + 1 : topic;
}

char *tg_ingress_topic_subscription(const char *topic, int connections, const char *share_group)
{
    const char *own_group;
    size_t own_len;
    (void)tg_ingress_topic_filter(topic, &own_group, &own_len);
    if (connections <= 1 || own_group)
        return strdup(topic);
    size_t len = strlen(TG_INGRESS_SHARE_PREFIX) + strlen(share_group) + 1 + strlen(topic) + 1;
    char *sub = malloc(len);
    if (sub)
        snprintf(sub, len, "%s%s/%s", TG_INGRESS_SHARE_PREFIX, share_group, topic);
    return sub;
}

/* The rules of ingress_topic.h for the filter proper (no "$share/<group>/" in front);
 * shown is the whole topic, for the message. */
static tg_err check_filter(const char *filter, const char *shown, char *why, size_t whylen)
{
    /* The device id is the last level of each message's topic. With '#' or a '+' before
     * the last level, two different devices (telemetry/A/x, telemetry/B/x) would both be
     * taken as device x, or one device's readings split by an extra level. */
    const char *last = strrchr(filter, '/');
    last = last ? last + 1 : filter;
    for (const char *p = filter; *p; p++) {
        if (*p == '#' || (*p == '+' && p != last)) {
            snprintf(why, whylen,
                     "\"%s\" makes the device id ambiguous: the device id is the topic's last "
                     "level, so the only wildcard allowed is a '+' as the last level "
                     "(e.g. \"telemetry/+\")",
                     shown);
            return TG_ERR_CONFIG;
        }
    }
    /* A '+' that shares its level with other characters ("telemetry/a+") is not a wildcard
     * in MQTT and not a valid filter either. */
    if (*last == '+' && last[1] != '\0') {
        snprintf(why, whylen, "\"%s\" is not a valid MQTT topic filter", shown);
        return TG_ERR_CONFIG;
    }
    return TG_OK;
}

tg_err tg_ingress_topic_check(const char *filter, char *why, size_t whylen)
{
    size_t len = strlen(filter);
    if (len == 0 || len > TOPIC_BYTES_MAX || !utf8_valid((const unsigned char *)filter, len)) {
        snprintf(why, whylen, "\"%s\" is not a valid MQTT topic filter", filter);
        return TG_ERR_CONFIG;
    }
    /* "$share/<group>/<filter>" (MQTT 5 4.8.2): a group of at least one character without
     * '/', '+' or '#', then a filter of its own, to which the rules apply. A second
     * "$share/" inside would be a filter on topics that start with "$share/", which no
     * client may publish: it would match nothing. */
    if (strncmp(filter, TG_INGRESS_SHARE_PREFIX, strlen(TG_INGRESS_SHARE_PREFIX)) == 0) {
        const char *group;
        size_t group_len;
        const char *inner = tg_ingress_topic_filter(filter, &group, &group_len);
        if (!group || !tg_ingress_share_group_ok(group, group_len) || !*inner ||
            strncmp(inner, TG_INGRESS_SHARE_PREFIX, strlen(TG_INGRESS_SHARE_PREFIX)) == 0) {
            snprintf(why, whylen,
                     "\"%s\" is not a valid shared subscription: expected "
                     "\"$share/<group>/<filter>\", a group without '/', '+' or '#' and one "
                     "filter (e.g. \"$share/tidegate/telemetry/+\")",
                     filter);
            return TG_ERR_CONFIG;
        }
        return check_filter(inner, filter, why, whylen);
    }
    return check_filter(filter, filter, why, whylen);
}
