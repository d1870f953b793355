/*
 * engine_json.h - a growable text buffer for the engine's JSON outputs (alerts, aggregates).
 * Numbers use the canonical record's shortest-double formatting, so the same state gives
 * the same bytes on every machine.
 */
#ifndef TG_ENGINE_JSON_H
#define TG_ENGINE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jbuf {
    char *data;
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete */
};

void jbuf__reset(struct jbuf *jb);
void jbuf__free(struct jbuf *jb);
void jbuf__raw(struct jbuf *jb, const char *s, size_t n);
void jbuf__lit(struct jbuf *jb, const char *s);          /* NUL-terminated, no escaping */
void jbuf__str(struct jbuf *jb, const char *s, size_t n); /* a JSON string, escaped */
void jbuf__i64(struct jbuf *jb, int64_t v);
void jbuf__num(struct jbuf *jb, double v);               /* non-finite gives null */
/* "key": with a leading comma unless first */
void jbuf__key(struct jbuf *jb, const char *key, bool first);
/* A literal fragment known at compile time (a string literal: its length is its size - 1),
 * e.g. a key that needs no escaping with its punctuation: JBUF_LIT(jb, ",\"min\":"). */
#define JBUF_LIT(jb, lit) jbuf__raw((jb), (lit), sizeof(lit) - 1)

#endif
