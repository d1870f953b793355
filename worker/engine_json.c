/*
 * engine_json.c - see engine_json.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_canonical.h"
#include "engine_json.h"

void jbuf__reset(struct jbuf *jb)
{
    jb->len = 0;
    jb->oom = false;
}

void jbuf__free(struct jbuf *jb)
{
    free(jb->data);
    jb->data = NULL;
    jb->len = jb->cap = 0;
}

static bool reserve(struct jbuf *jb, size_t n)
{
    if (jb->len + n + 1 <= jb->cap)
        return true;
    size_t cap = jb->cap ? jb->cap : 512;
    while (cap < jb->len + n + 1)
        cap *= 2;
    char *p = realloc(jb->data, cap);
    if (!p) {
        jb->oom = true;
        return false;
    }
    jb->data = p;
    jb->cap = cap;
    return true;
}

void jbuf__raw(struct jbuf *jb, const char *s, size_t n)
{
    if (!reserve(jb, n))
        return;
    memcpy(jb->data + jb->len, s, n);
    jb->len += n;
    jb->data[jb->len] = '\0';
}

void jbuf__lit(struct jbuf *jb, const char *s)
{
    jbuf__raw(jb, s, strlen(s));
}

void jbuf__str(struct jbuf *jb, const char *s, size_t n)
{
    if (!reserve(jb, n * 6 + 2))
        return;
    char *o = jb->data + jb->len;
    *o++ = '"';
    /* The usual name needs no escaping: copy the run before the first character that does. */
    size_t plain = 0;
    while (plain < n && (unsigned char)s[plain] >= 0x20 && s[plain] != '"' && s[plain] != '\\')
        plain++;
    memcpy(o, s, plain);
    o += plain;
    for (size_t i = plain; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            o += sprintf(o, "\\u%04x", c);
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    jb->len = (size_t)(o - jb->data);
}

/* Digits by hand: snprintf's format parsing cost more than the number (three or four per
 * aggregate, one per alert field). */
void jbuf__i64(struct jbuf *jb, int64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (v < 0)
        *--p = '-';
    jbuf__raw(jb, p, (size_t)(tmp + sizeof tmp - p));
}

void jbuf__num(struct jbuf *jb, double v)
{
    if (!isfinite(v)) {
        jbuf__lit(jb, "null");
        return;
    }
    char tmp[TG_CODEC_DOUBLE_MAX];
    size_t n = tg_codec_format_double(v, tmp);
    jbuf__raw(jb, tmp, n);
}

void jbuf__key(struct jbuf *jb, const char *key, bool first)
{
    if (!first)
        jbuf__raw(jb, ",", 1);
    jbuf__str(jb, key, strlen(key));
    jbuf__raw(jb, ":", 1);
}
