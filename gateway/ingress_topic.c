/*
 * ingress_topic.c - the [mqtt] topic filter rule (ingress_topic.h), without libmosquitto.
 */
#include "ingress_topic.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
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

tg_err tg_ingress_topic_check(const char *filter, char *why, size_t whylen)
{
    size_t len = strlen(filter);
    if (len == 0 || len > TOPIC_BYTES_MAX || !utf8_valid((const unsigned char *)filter, len)) {
        snprintf(why, whylen, "\"%s\" is not a valid MQTT topic filter", filter);
        return TG_ERR_CONFIG;
    }
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
                     filter);
            return TG_ERR_CONFIG;
        }
    }
    /* A '+' that shares its level with other characters ("telemetry/a+") is not a wildcard
     * in MQTT and not a valid filter either. */
    if (*last == '+' && last[1] != '\0') {
        snprintf(why, whylen, "\"%s\" is not a valid MQTT topic filter", filter);
        return TG_ERR_CONFIG;
    }
    return TG_OK;
}
