/*
 * journal.h - the durable store: compressed segments in one SQLite file (WAL mode).
 *
 * The journal is a table of segments (see segment.h) keyed by segment id, plus a small
 * key/value table for gateway state that must survive restarts (the dedup window). It knows
 * nothing about Kafka: the pipeline decides what to write and when to delete; the journal
 * makes each transaction durable (synchronous=FULL: the WAL is fsynced at every commit, so
 * a committed segment survives power loss) and never overwrites a segment in place.
 *
 * Each segment row records the rid range it was cut from and a "done" bitmap over that
 * range: records delivered (or dropped) since the segment was written, so that a restart
 * resends only what Kafka has not confirmed.
 *
 * Writes are grouped: tg_journal_begin(), any number of puts/updates/deletes, then
 * tg_journal_commit(). Not thread-safe: one owner thread (the pipeline thread).
 */
#ifndef TG_JOURNAL_H
#define TG_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "segment.h"

/* What the journal knows about one stored segment without reading its data. */
struct tg_jseg_meta {
    uint64_t id;          /* unique and increasing: the first rid of the range */
    uint64_t first_rid;   /* rid range [first_rid, last_rid] the segment was cut from */
    uint64_t last_rid;
    uint32_t n_records;   /* records stored (may be fewer than the range) */
    int64_t created_ms;   /* receive time of the oldest record */
    enum tg_codec_id codec;
    uint32_t raw_bytes;   /* serialized size before compression */
    uint32_t data_bytes;  /* compressed size as stored */
};

struct tg_journal;

/* Opens (creating if needed) the journal at path, checks it with PRAGMA quick_check, and
 * prepares it for writing. A file that fails the check is renamed to
 * "<path>.corrupt-<unix time>" (kept for inspection) and a fresh journal is created;
 * *moved_aside is set to true then. On error returns NULL-equivalent status with a
 * message naming the path in err. */
tg_err tg_journal_open(const char *path, struct tg_journal **out, bool *moved_aside, char *err,
                       size_t errlen);
void tg_journal_close(struct tg_journal *jr);

/* Text of the last SQLite error, for logs. */
const char *tg_journal_errmsg(const struct tg_journal *jr);

tg_err tg_journal_begin(struct tg_journal *jr);
/* Commits the open transaction; durable on return (WAL fsynced). On failure the
 * transaction is rolled back: nothing of it is stored. */
tg_err tg_journal_commit(struct tg_journal *jr);
void tg_journal_rollback(struct tg_journal *jr);

/* Stores a segment. TG_ERR_FULL when the disk is full (the caller applies its overflow
 * policy), TG_ERR_IO on other I/O failures. */
tg_err tg_journal_put(struct tg_journal *jr, const struct tg_jseg_meta *meta, const uint8_t *blob,
                      size_t blob_len);

/* Replaces the done bitmap of segment id (bit i = rid first_rid + i is delivered or dropped). */
tg_err tg_journal_set_done(struct tg_journal *jr, uint64_t id, const uint8_t *bitmap,
                           size_t bitmap_len);

tg_err tg_journal_delete(struct tg_journal *jr, uint64_t id);

/* Reads segment id's data into *blob (malloc'd; caller frees). */
tg_err tg_journal_read(struct tg_journal *jr, uint64_t id, uint8_t **blob, size_t *blob_len);

/* Calls fn for every stored segment in id order, with its done bitmap (NULL when none).
 * Stops and returns fn's error if it returns one. */
typedef tg_err (*tg_journal_scan_fn)(void *ud, const struct tg_jseg_meta *meta,
                                     const uint8_t *done, size_t done_len);
tg_err tg_journal_scan(struct tg_journal *jr, tg_journal_scan_fn fn, void *ud);

/* Small named values that must survive restarts. get: *val malloc'd, TG_ERR_MISSING_FIELD
 * when absent. */
tg_err tg_journal_state_put(struct tg_journal *jr, const char *key, const void *val, size_t len);
tg_err tg_journal_state_get(struct tg_journal *jr, const char *key, void **val, size_t *len);

/* Compressed bytes of all stored segments (what journal.max_bytes caps). */
uint64_t tg_journal_data_bytes(const struct tg_journal *jr);
/* Number of stored segments. */
uint64_t tg_journal_segments(const struct tg_journal *jr);

/* Runs PRAGMA integrity_check; TG_OK when it answers "ok", else the first problem in err. */
tg_err tg_journal_integrity_check(struct tg_journal *jr, char *err, size_t errlen);

#endif
