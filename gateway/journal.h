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
struct tg_metrics;

/* Schema version this gateway writes (SQLite's user_version). A journal with a newer one was
 * written by a newer tidegate and is refused rather than misread. */
#define TG_JOURNAL_SCHEMA_VERSION 1

/* Most rids one row may span (its done bitmap is range/8 bytes): journal.segment_bytes at its
 * largest holds fewer records than this. A row claiming more is corrupt. */
#ifndef TG_JOURNAL_RANGE_MAX
#define TG_JOURNAL_RANGE_MAX ((uint64_t)1 << 24)
#endif

struct tg_journal_opts {
    /* journal.max_bytes. The SQLite WAL is held to an eighth of it (at most 4 MiB, see
     * tg_journal_wal_bound()); 0: that largest bound. */
    uint64_t max_bytes;
    /* Registry for the journal's own metrics (corrupt rows, WAL size); NULL: none. */
    struct tg_metrics *metrics;
};

/* Opens (creating if needed) the journal at path for this process alone, checks it and
 * prepares it for writing:
 *  - path must not be empty (SQLite would silently use a temporary database);
 *  - "<path>.lock" is locked (flock, released by tg_journal_close or the process's exit): a
 *    second process on the same journal is refused with an error naming the holder's pid,
 *    since two gateways on one journal would each send its records;
 *  - an existing zero-byte file is logged (a warning) and taken as a fresh journal;
 *  - PRAGMA quick_check: a file that fails it is renamed to "<path>.corrupt-<unix time>"
 *    (kept for inspection) and a fresh journal is created; *moved_aside is set then;
 *  - journal_mode=WAL must take (it cannot on some filesystems), and a schema version newer
 *    than TG_JOURNAL_SCHEMA_VERSION is refused.
 * Rows whose stored fields cannot be right (see tg_journal_scan) are found at the first scan.
 * On error returns the code with a message naming the path in err: TG_ERR_CONFIG for an
 * empty path, a journal in use or of a newer schema; TG_ERR_IO and others as SQLite says. */
tg_err tg_journal_open(const char *path, const struct tg_journal_opts *opts,
                       struct tg_journal **out, bool *moved_aside, char *err, size_t errlen);
/* Commits nothing: an open transaction is rolled back. Checkpoints the WAL into the database
 * and truncates it, so a cleanly stopped gateway leaves the database file alone on disk. */
void tg_journal_close(struct tg_journal *jr);

/* Bytes of journal.max_bytes set aside for the SQLite WAL: the WAL is checkpointed and
 * truncated after any commit that leaves it larger, so the segment data may use
 * max_bytes - tg_journal_wal_bound(). (A single transaction larger than the bound still
 * passes through the WAL whole before it is truncated.) */
uint64_t tg_journal_wal_bound(const struct tg_journal *jr);
/* Size of the WAL file after the last commit or checkpoint. */
uint64_t tg_journal_wal_bytes(const struct tg_journal *jr);
/* Rows found corrupt and removed since open (also tidegate_journal_corrupt_rows_total). */
uint64_t tg_journal_corrupt_rows(const struct tg_journal *jr);

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

/* Calls fn for every stored segment in id order, with its done bitmap (NULL when none) and its
 * data (what tg_journal_read() returns; valid during the call only). The bitmap is stored
 * after the data, so reading it reads the data's pages anyway: a caller that needs the data
 * at start-up takes it here rather than reading the file a second time.
 * Stops and returns fn's error if it returns one. Every field read back is checked first:
 * integer columns that are integers, id == first_rid >= 1, first_rid <= last_rid with at
 * most TG_JOURNAL_RANGE_MAX rids, ranges not overlapping the previous row's, n_records
 * within the range, a known codec, raw_bytes at most TG_SEGMENT_RAW_MAX, data a blob. A row
 * that fails is not passed to fn: it is logged, counted in
 * tidegate_journal_corrupt_rows_total and deleted after the scan (its records cannot be
 * sent; the rest of the journal is unaffected). A done bitmap of the wrong length is logged
 * and passed as NULL, so the caller resends what the row stores rather than trust it. */
typedef tg_err (*tg_journal_scan_fn)(void *ud, const struct tg_jseg_meta *meta,
                                     const uint8_t *done, size_t done_len,
                                     const uint8_t *data, size_t data_len);
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
