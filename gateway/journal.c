/*
 * journal.c - SQLite storage of journal segments.
 *
 * Schema (user_version 1, TG_JOURNAL_SCHEMA_VERSION):
 *   segment(id PK, first_rid, last_rid, n_records, created_ms, codec, raw_bytes, data, done)
 *   state(key PK, value)
 *
 * One process at a time: "<path>.lock" is held with flock() for as long as the journal is
 * open. SQLite's own locks only serialize transactions; two gateways would each recover the
 * same rows and send them twice.
 *
 * The WAL is bounded: after a commit that leaves it larger than its share of
 * journal.max_bytes it is checkpointed and truncated (we are the only connection, so no
 * reader can hold the checkpoint back), and a clean close truncates it too.
 *
 * Durability: journal_mode=WAL with synchronous=FULL, so COMMIT returns only after the WAL
 * is fsynced; a crash or power loss after that keeps the transaction, one before it loses
 * the whole transaction and nothing else (WAL frames without a commit record are ignored
 * when the database is opened again). Segments are inserted and deleted, never updated in
 * place, except for their small done bitmap.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PUT,
    ST_SET_DONE,
    ST_DELETE,
    ST_READ,
    ST_SCAN,
    ST_STATE_PUT,
    ST_STATE_GET,
    ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PUT] = "INSERT INTO segment(id, first_rid, last_rid, n_records, created_ms, codec, "
               "raw_bytes, data, done) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
    [ST_SET_DONE] = "UPDATE segment SET done = ?2 WHERE id = ?1",
    [ST_DELETE] = "DELETE FROM segment WHERE id = ?1 RETURNING length(data)",
    [ST_READ] = "SELECT data FROM segment WHERE id = ?1",
    /* data is selected too: done lies after it in the row, so SQLite reads the data's
     * pages to reach done anyway, and the caller gets them without a second read. */
    [ST_SCAN] = "SELECT id, first_rid, last_rid, n_records, created_ms, codec, raw_bytes, "
                "length(data), done, data FROM segment ORDER BY id",
    [ST_STATE_PUT] = "INSERT INTO state(key, value) VALUES (?1, ?2) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_STATE_GET] = "SELECT value FROM state WHERE key = ?1",
};

/* The WAL's share of journal.max_bytes, and its largest value: room for a few commits'
 * segments between checkpoints, small next to any sensible cap. */
#define WAL_SHARE_DIVISOR 8
#define WAL_BOUND_MAX ((uint64_t)4 << 20)

struct tg_journal {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    char *wal_path;             /* "<path>-wal" */
    int lock_fd;                /* "<path>.lock", flock()ed; -1 when not held */
    uint64_t wal_bound;         /* checkpoint and truncate the WAL above this many bytes */
    uint64_t wal_bytes;         /* WAL size after the last commit */
    uint64_t corrupt_rows;
    struct tg_counter *m_corrupt_rows; /* NULL without a registry */
    struct tg_gauge *m_wal_bytes;
    uint64_t data_bytes;
    uint64_t segments;
    /* Pending changes of the open transaction, applied to the totals only on commit. */
    int64_t tx_bytes;
    int64_t tx_segments;
    bool in_tx;
};

static tg_err map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return TG_OK;
    case SQLITE_FULL:
        return TG_ERR_FULL;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TG_ERR_IO;
    case SQLITE_NOMEM:
        return TG_ERR_NOMEM;
    default:
        return TG_ERR_INTERNAL;
    }
}

/* Steps a prepared statement to completion (no rows expected) and resets it. */
static tg_err run(struct tg_journal *jr, enum stmt_id id)
{
    sqlite3_stmt *st = jr->st[id];
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? TG_OK : map_rc(rc == SQLITE_ROW ? SQLITE_MISUSE : rc);
}

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS segment ("
    "  id INTEGER PRIMARY KEY,"
    "  first_rid INTEGER NOT NULL,"
    "  last_rid INTEGER NOT NULL,"
    "  n_records INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  codec INTEGER NOT NULL,"
    "  raw_bytes INTEGER NOT NULL,"
    "  data BLOB NOT NULL,"
    "  done BLOB);"
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);";

static void close_db(struct tg_journal *jr)
{
    for (int i = 0; i < ST__COUNT; i++) {
        sqlite3_finalize(jr->st[i]);
        jr->st[i] = NULL;
    }
    sqlite3_close(jr->db);
    jr->db = NULL;
}

/* Opens the file and runs quick_check. *corrupt is set when the file exists but is not a
 * sound SQLite database. */
static tg_err open_db(struct tg_journal *jr, const char *path, bool *corrupt, char *err,
                      size_t errlen)
{
    *corrupt = false;
    int rc = sqlite3_open_v2(path, &jr->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "journal %s: cannot open: %s", path,
                 jr->db ? sqlite3_errmsg(jr->db) : sqlite3_errstr(rc));
        return TG_ERR_IO;
    }
    sqlite3_extended_result_codes(jr->db, 1);
    sqlite3_busy_timeout(jr->db, 5000);

    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(jr->db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (!res || strcmp(res, "ok") != 0) {
            snprintf(err, errlen, "journal %s: quick_check failed: %s", path,
                     res ? res : "(no answer)");
            *corrupt = true;
        }
    } else if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) {
        snprintf(err, errlen, "journal %s: %s", path, sqlite3_errmsg(jr->db));
        *corrupt = true;
    } else if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "journal %s: quick_check: %s", path, sqlite3_errmsg(jr->db));
        sqlite3_finalize(st);
        return map_rc(rc);
    }
    sqlite3_finalize(st);
    return *corrupt ? TG_ERR_INTERNAL : TG_OK;
}

/* Runs a one-row, one-column statement (a PRAGMA that answers) and copies its text. */
static int query_text(sqlite3 *db, const char *sql, char *out, size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", t ? t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        snprintf(out, outlen, "%s", "");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

static tg_err setup(struct tg_journal *jr, const char *path, char *err, size_t errlen)
{
    /* A journal written by a newer gateway may hold rows this one would misread: refuse it
     * before changing anything in it. 0 is a fresh file. */
    char answer[64];
    int rc = query_text(jr->db, "PRAGMA user_version", answer, sizeof answer);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "journal %s: %s", path, sqlite3_errmsg(jr->db));
        return map_rc(rc);
    }
    long version = strtol(answer, NULL, 10);
    if (version > TG_JOURNAL_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "journal %s has schema version %ld, newer than this gateway's (%d): it was "
                 "written by a newer tidegate. Drain it with that version, or set "
                 "journal.path to another file",
                 path, version, TG_JOURNAL_SCHEMA_VERSION);
        return TG_ERR_CONFIG;
    }
    /* journal_mode answers the mode in effect, which is not WAL when the filesystem cannot
     * give SQLite shared memory (some network filesystems): every durability claim here
     * assumes WAL, so that is an error, not a warning. */
    rc = query_text(jr->db, "PRAGMA journal_mode=WAL", answer, sizeof answer);
    if (rc != SQLITE_OK || strcmp(answer, "wal") != 0) {
        snprintf(err, errlen, "journal %s: journal_mode=WAL did not take (%s): put the journal "
                              "on a local filesystem",
                 path, rc != SQLITE_OK ? sqlite3_errmsg(jr->db) : answer);
        return rc != SQLITE_OK ? map_rc(rc) : TG_ERR_CONFIG;
    }
    /* synchronous=FULL: COMMIT fsyncs the WAL, which is what makes a commit durable on
     * power loss (NORMAL would only survive a process crash). journal_size_limit and
     * wal_autocheckpoint hold the WAL near its bound between our own checkpoints (see
     * bound_wal()). cache_size: the journal is written once and read back once, so SQLite's
     * default 2 MB page cache only holds pages the kernel's cache holds anyway; 256 KB keeps
     * the gateway's memory small. */
    char pragmas[512];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA synchronous=FULL;"
             "PRAGMA journal_size_limit=%llu;"
             "PRAGMA wal_autocheckpoint=%llu;"
             "PRAGMA temp_store=MEMORY;"
             "PRAGMA cache_size=-256;",
             (unsigned long long)jr->wal_bound,
             (unsigned long long)(jr->wal_bound / 4096 ? jr->wal_bound / 4096 : 1));
    char *msg = NULL;
    rc = sqlite3_exec(jr->db, pragmas, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(jr->db, schema_sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK && version < TG_JOURNAL_SCHEMA_VERSION) {
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d;", TG_JOURNAL_SCHEMA_VERSION);
        rc = sqlite3_exec(jr->db, set, NULL, NULL, &msg);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "journal %s: %s", path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return map_rc(rc);
    }
    for (int i = 0; i < ST__COUNT; i++) {
        rc = sqlite3_prepare_v3(jr->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &jr->st[i],
                                NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "journal %s: prepare: %s", path, sqlite3_errmsg(jr->db));
            return map_rc(rc);
        }
    }
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(jr->db, "SELECT count(*), coalesce(sum(length(data)), 0) FROM segment",
                            -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        jr->segments = (uint64_t)sqlite3_column_int64(st, 0);
        jr->data_bytes = (uint64_t)sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    } else {
        snprintf(err, errlen, "journal %s: %s", path, sqlite3_errmsg(jr->db));
        rc = rc == SQLITE_OK ? SQLITE_ERROR : rc;
    }
    sqlite3_finalize(st);
    return map_rc(rc);
}

/* Takes "<path>.lock" for this process. The lock file is never removed (removing it would
 * let a third process lock a new file while the second still holds the old one); its
 * content is the holder's pid, for the message a second gateway prints. */
static tg_err take_lock(struct tg_journal *jr, const char *path, char *err, size_t errlen)
{
    char lock_path[4096];
    snprintf(lock_path, sizeof lock_path, "%s.lock", path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "journal %s: cannot open %s: %s", path, lock_path, strerror(errno));
        return TG_ERR_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            snprintf(err, errlen,
                     "journal %s is in use by another process (pid %s holds %s): two "
                     "gateways on one journal would both send its records; stop the other "
                     "one or give this one its own journal.path",
                     path, *holder ? holder : "unknown", lock_path);
            return TG_ERR_CONFIG;
        }
        snprintf(err, errlen, "journal %s: cannot lock %s: %s", path, lock_path, strerror(e));
        return TG_ERR_IO;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    /* Only informative: a failure to record the pid does not weaken the lock. */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        TG_LOG_DEBUG("journal", "cannot write the pid to %s", lock_path);
    jr->lock_fd = fd;
    return TG_OK;
}

static void release_lock(struct tg_journal *jr)
{
    if (jr->lock_fd >= 0)
        close(jr->lock_fd); /* closing the only descriptor releases the flock */
    jr->lock_fd = -1;
}

static void free_journal(struct tg_journal *jr)
{
    close_db(jr);
    release_lock(jr);
    free(jr->wal_path);
    free(jr);
}

static uint64_t wal_file_bytes(const struct tg_journal *jr)
{
    struct stat stt;
    return stat(jr->wal_path, &stt) == 0 ? (uint64_t)stt.st_size : 0;
}

/* Checkpoints the WAL into the database and truncates it to zero bytes. With no other
 * connection nothing can hold the checkpoint back; should it fail, the WAL is only larger
 * than wanted until the next try. */
static void truncate_wal(struct tg_journal *jr)
{
    int rc = sqlite3_wal_checkpoint_v2(jr->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "journal", 10000, "WAL checkpoint failed: %s",
                           sqlite3_errmsg(jr->db));
}

/* After a commit: keeps the WAL within its bound. Deletes of delivered segments land in the
 * WAL like any write; without this it stays at its high-water mark (SQLite's automatic
 * checkpoint copies pages back but leaves the file at its size) and shares the disk with
 * the data it was meant to protect. One stat(2) per commit. */
static void bound_wal(struct tg_journal *jr)
{
    jr->wal_bytes = wal_file_bytes(jr);
    if (jr->wal_bytes > jr->wal_bound) {
        truncate_wal(jr);
        jr->wal_bytes = wal_file_bytes(jr);
    }
    if (jr->m_wal_bytes)
        tg_gauge_set(jr->m_wal_bytes, (double)jr->wal_bytes);
}

static void register_metrics(struct tg_journal *jr, struct tg_metrics *m)
{
    if (!m)
        return;
    jr->m_corrupt_rows = tg_metrics_counter(
        m, "tidegate_journal_corrupt_rows_total",
        "Journal rows whose stored fields cannot be right (range, size, codec), found when "
        "the journal is read at start and removed",
        NULL);
    jr->m_wal_bytes = tg_metrics_gauge(m, "tidegate_journal_wal_bytes",
                                       "Size of the SQLite WAL file beside the journal (bytes)",
                                       NULL);
}

tg_err tg_journal_open(const char *path, const struct tg_journal_opts *opts,
                       struct tg_journal **out, bool *moved_aside, char *err, size_t errlen)
{
    *out = NULL;
    *moved_aside = false;
    if (!*path) {
        /* sqlite3_open_v2("") opens a private temporary database: everything "journaled"
         * would vanish at exit. */
        snprintf(err, errlen, "journal.path is empty: the journal must be a file (SQLite would "
                              "use a temporary database and keep nothing across a restart)");
        return TG_ERR_CONFIG;
    }
    struct tg_journal *jr = calloc(1, sizeof *jr);
    size_t plen = strlen(path);
    if (!jr || !(jr->wal_path = malloc(plen + sizeof "-wal"))) {
        free(jr);
        snprintf(err, errlen, "journal %s: out of memory", path);
        return TG_ERR_NOMEM;
    }
    jr->lock_fd = -1;
    memcpy(jr->wal_path, path, plen);
    memcpy(jr->wal_path + plen, "-wal", sizeof "-wal");
    uint64_t share = (opts && opts->max_bytes ? opts->max_bytes : UINT64_MAX) / WAL_SHARE_DIVISOR;
    jr->wal_bound = share < WAL_BOUND_MAX ? share : WAL_BOUND_MAX;
    register_metrics(jr, opts ? opts->metrics : NULL);

    tg_err e = take_lock(jr, path, err, errlen);
    if (e != TG_OK) {
        free_journal(jr);
        return e;
    }
    struct stat stt;
    if (stat(path, &stt) == 0 && S_ISREG(stt.st_mode) && stt.st_size == 0)
        TG_LOG_WARN("journal", "%s is an empty file (0 bytes): taking it as a fresh journal; "
                               "whatever it held was lost before this start",
                    path);
    bool corrupt;
    e = open_db(jr, path, &corrupt, err, errlen);
    if (corrupt) {
        /* Keep the damaged file (and its WAL) for inspection and start a fresh journal:
         * an unattended gateway must go on taking live data. */
        close_db(jr);
        char aside[4096];
        long now = (long)time(NULL);
        static const char *const sfx[] = {"", "-wal", "-shm"};
        for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
            char from[4096];
            snprintf(from, sizeof from, "%s%s", path, sfx[i]);
            snprintf(aside, sizeof aside, "%s.corrupt-%ld%s", path, now, sfx[i]);
            if (rename(from, aside) != 0 && errno != ENOENT) {
                snprintf(err, errlen, "journal %s: corrupt, and cannot move it aside: %s", path,
                         strerror(errno));
                free_journal(jr);
                return TG_ERR_IO;
            }
        }
        *moved_aside = true;
        e = open_db(jr, path, &corrupt, err, errlen);
    }
    if (e == TG_OK)
        e = setup(jr, path, err, errlen);
    if (e != TG_OK) {
        free_journal(jr);
        return e;
    }
    bound_wal(jr);
    *out = jr;
    return TG_OK;
}

void tg_journal_close(struct tg_journal *jr)
{
    if (!jr)
        return;
    if (jr->in_tx)
        tg_journal_rollback(jr);
    if (jr->db)
        truncate_wal(jr);
    free_journal(jr);
}

uint64_t tg_journal_wal_bound(const struct tg_journal *jr) { return jr->wal_bound; }

uint64_t tg_journal_wal_bytes(const struct tg_journal *jr) { return jr->wal_bytes; }

uint64_t tg_journal_corrupt_rows(const struct tg_journal *jr) { return jr->corrupt_rows; }

const char *tg_journal_errmsg(const struct tg_journal *jr) { return sqlite3_errmsg(jr->db); }

tg_err tg_journal_begin(struct tg_journal *jr)
{
    if (jr->in_tx)
        return TG_ERR_INTERNAL;
    tg_err e = run(jr, ST_BEGIN);
    if (e == TG_OK) {
        jr->in_tx = true;
        jr->tx_bytes = 0;
        jr->tx_segments = 0;
    }
    return e;
}

tg_err tg_journal_commit(struct tg_journal *jr)
{
    if (!jr->in_tx)
        return TG_ERR_INTERNAL;
    tg_err e = run(jr, ST_COMMIT);
    if (e != TG_OK) {
        tg_journal_rollback(jr);
        return e;
    }
    jr->in_tx = false;
    jr->data_bytes = (uint64_t)((int64_t)jr->data_bytes + jr->tx_bytes);
    jr->segments = (uint64_t)((int64_t)jr->segments + jr->tx_segments);
    bound_wal(jr);
    return TG_OK;
}

void tg_journal_rollback(struct tg_journal *jr)
{
    if (!jr->in_tx)
        return;
    /* A failed COMMIT may already have rolled back; ROLLBACK then fails harmlessly. */
    if (!sqlite3_get_autocommit(jr->db))
        (void)run(jr, ST_ROLLBACK);
    jr->in_tx = false;
}

tg_err tg_journal_put(struct tg_journal *jr, const struct tg_jseg_meta *meta, const uint8_t *blob,
                      size_t blob_len)
{
    sqlite3_stmt *st = jr->st[ST_PUT];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)meta->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)meta->first_rid);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)meta->last_rid);
    sqlite3_bind_int64(st, 4, meta->n_records);
    sqlite3_bind_int64(st, 5, meta->created_ms);
    sqlite3_bind_int(st, 6, (int)meta->codec);
    sqlite3_bind_int64(st, 7, meta->raw_bytes);
    sqlite3_bind_blob64(st, 8, blob_len ? blob : (const void *)"", blob_len, SQLITE_STATIC);
    tg_err e = run(jr, ST_PUT);
    if (e == TG_OK) {
        jr->tx_bytes += (int64_t)blob_len;
        jr->tx_segments++;
    }
    return e;
}

tg_err tg_journal_set_done(struct tg_journal *jr, uint64_t id, const uint8_t *bitmap,
                           size_t bitmap_len)
{
    sqlite3_stmt *st = jr->st[ST_SET_DONE];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    sqlite3_bind_blob64(st, 2, bitmap, bitmap_len, SQLITE_STATIC);
    return run(jr, ST_SET_DONE);
}

tg_err tg_journal_delete(struct tg_journal *jr, uint64_t id)
{
    sqlite3_stmt *st = jr->st[ST_DELETE];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        jr->tx_bytes -= sqlite3_column_int64(st, 0);
        jr->tx_segments--;
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? TG_OK : map_rc(rc);
}

/* Copies column col of the current row of st into a malloc'd buffer. */
static tg_err copy_blob(sqlite3_stmt *st, int col, void **val, size_t *len)
{
    const void *p = sqlite3_column_blob(st, col);
    int n = sqlite3_column_bytes(st, col);
    uint8_t *copy = malloc(n > 0 ? (size_t)n : 1);
    if (!copy)
        return TG_ERR_NOMEM;
    if (n > 0)
        memcpy(copy, p, (size_t)n);
    *val = copy;
    *len = (size_t)n;
    return TG_OK;
}

/* Runs a single-row lookup bound to (int64 id or text key) and copies its first column. */
static tg_err lookup_blob(struct tg_journal *jr, enum stmt_id id, void **val, size_t *len)
{
    sqlite3_stmt *st = jr->st[id];
    int rc = sqlite3_step(st);
    tg_err e;
    if (rc == SQLITE_ROW)
        e = copy_blob(st, 0, val, len);
    else
        e = rc == SQLITE_DONE ? TG_ERR_MISSING_FIELD : map_rc(rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return e;
}

tg_err tg_journal_read(struct tg_journal *jr, uint64_t id, uint8_t **blob, size_t *blob_len)
{
    sqlite3_bind_int64(jr->st[ST_READ], 1, (sqlite3_int64)id);
    void *val = NULL;
    tg_err e = lookup_blob(jr, ST_READ, &val, blob_len);
    *blob = val;
    return e;
}

/* Why the row st is on cannot be right, or NULL when its fields are plausible. prev_last:
 * the last rid of the previous accepted row (0: none). Fills *meta. */
static const char *check_row(sqlite3_stmt *st, uint64_t prev_last, struct tg_jseg_meta *meta)
{
    for (int col = 0; col <= 7; col++)
        if (sqlite3_column_type(st, col) != SQLITE_INTEGER)
            return "a numeric field is not an integer";
    sqlite3_int64 v[8];
    for (int col = 0; col <= 7; col++) {
        v[col] = sqlite3_column_int64(st, col);
        if (v[col] < 0 && col != 4) /* created_ms is a wall-clock time, any value */
            return "a count or rid is negative";
    }
    *meta = (struct tg_jseg_meta){
        .id = (uint64_t)v[0],
        .first_rid = (uint64_t)v[1],
        .last_rid = (uint64_t)v[2],
        .created_ms = v[4],
        .codec = (enum tg_codec_id)v[5],
    };
    if (meta->id != meta->first_rid || meta->first_rid == 0)
        return "its id is not its first rid";
    if (meta->last_rid < meta->first_rid ||
        meta->last_rid - meta->first_rid >= TG_JOURNAL_RANGE_MAX)
        return "its rid range is inverted or too long";
    if (prev_last && meta->first_rid <= prev_last)
        return "its rid range overlaps the previous row's";
    if ((uint64_t)v[3] > meta->last_rid - meta->first_rid + 1)
        return "it claims more records than its rid range holds";
    if (v[5] != TG_CODEC_NONE && v[5] != TG_CODEC_ZSTD && v[5] != TG_CODEC_LZ4)
        return "its codec is unknown";
    if ((uint64_t)v[6] > TG_SEGMENT_RAW_MAX)
        return "its stored size is impossible";
    if (sqlite3_column_type(st, 8) != SQLITE_NULL && sqlite3_column_type(st, 8) != SQLITE_BLOB)
        return "its done bitmap is not a blob";
    meta->n_records = (uint32_t)v[3];
    meta->raw_bytes = (uint32_t)v[6];
    meta->data_bytes = (uint32_t)(v[7] > UINT32_MAX ? UINT32_MAX : v[7]);
    return NULL;
}

/* Deletes the rows the scan found corrupt, in a transaction of its own unless the caller
 * has one open. */
static tg_err delete_rows(struct tg_journal *jr, const uint64_t *ids, size_t n)
{
    bool own = !jr->in_tx;
    tg_err e = own ? tg_journal_begin(jr) : TG_OK;
    for (size_t i = 0; e == TG_OK && i < n; i++)
        e = tg_journal_delete(jr, ids[i]);
    if (own)
        e = e == TG_OK ? tg_journal_commit(jr) : (tg_journal_rollback(jr), e);
    return e;
}

tg_err tg_journal_scan(struct tg_journal *jr, tg_journal_scan_fn fn, void *ud)
{
    sqlite3_stmt *st = jr->st[ST_SCAN];
    tg_err e = TG_OK;
    int rc;
    uint64_t prev_last = 0;
    uint64_t *bad = NULL;
    size_t n_bad = 0, cap_bad = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_jseg_meta meta;
        const char *why = check_row(st, prev_last, &meta);
        if (why) {
            sqlite3_int64 id = sqlite3_column_int64(st, 0);
            TG_LOG_ERROR("journal", "segment row %lld is corrupt (%s): removed, its records "
                                    "cannot be sent",
                         (long long)id, why);
            if (sqlite3_column_type(st, 0) != SQLITE_INTEGER)
                continue; /* the primary key itself: nothing a delete could name */
            if (n_bad == cap_bad) {
                size_t cap = cap_bad ? 2 * cap_bad : 16;
                uint64_t *nb = realloc(bad, cap * sizeof *nb);
                if (!nb) {
                    e = TG_ERR_NOMEM;
                    break;
                }
                bad = nb;
                cap_bad = cap;
            }
            bad[n_bad++] = (uint64_t)id;
            continue;
        }
        prev_last = meta.last_rid;
        const uint8_t *done = sqlite3_column_blob(st, 8);
        size_t done_len = (size_t)sqlite3_column_bytes(st, 8);
        size_t want = (size_t)((meta.last_rid - meta.first_rid + 1 + 7) / 8);
        if (done && done_len != want) {
            /* Resending what the row stores costs duplicates; trusting a damaged bitmap
             * could skip records. */
            TG_LOG_WARN("journal", "segment %llu: done bitmap of %zu bytes, %zu expected: "
                                   "ignored, the row's records are sent again",
                        (unsigned long long)meta.id, done_len, want);
            done = NULL;
            done_len = 0;
        }
        const uint8_t *data = sqlite3_column_blob(st, 9);
        size_t data_len = (size_t)sqlite3_column_bytes(st, 9);
        e = fn(ud, &meta, done, done_len, data, data_len);
        if (e != TG_OK)
            break;
    }
    if (e == TG_OK && rc != SQLITE_DONE)
        e = map_rc(rc);
    sqlite3_reset(st);
    if (n_bad > 0) {
        tg_err de = delete_rows(jr, bad, n_bad);
        jr->corrupt_rows += n_bad;
        if (jr->m_corrupt_rows)
            tg_counter_add(jr->m_corrupt_rows, n_bad);
        if (de != TG_OK)
            TG_LOG_ERROR("journal", "cannot remove %zu corrupt rows: %s (%s); they are skipped "
                                    "again at the next start",
                         n_bad, tg_strerror(de), sqlite3_errmsg(jr->db));
    }
    free(bad);
    return e;
}

tg_err tg_journal_state_put(struct tg_journal *jr, const char *key, const void *val, size_t len)
{
    sqlite3_stmt *st = jr->st[ST_STATE_PUT];
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 2, len ? val : (const void *)"", len, SQLITE_STATIC);
    return run(jr, ST_STATE_PUT);
}

tg_err tg_journal_state_get(struct tg_journal *jr, const char *key, void **val, size_t *len)
{
    sqlite3_bind_text(jr->st[ST_STATE_GET], 1, key, -1, SQLITE_STATIC);
    return lookup_blob(jr, ST_STATE_GET, val, len);
}

uint64_t tg_journal_data_bytes(const struct tg_journal *jr) { return jr->data_bytes; }

uint64_t tg_journal_segments(const struct tg_journal *jr) { return jr->segments; }

tg_err tg_journal_integrity_check(struct tg_journal *jr, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(jr->db, "PRAGMA integrity_check", -1, &st, NULL);
    tg_err e = TG_ERR_INTERNAL;
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *res = (const char *)sqlite3_column_text(st, 0);
        if (res && strcmp(res, "ok") == 0)
            e = TG_OK;
        else
            snprintf(err, errlen, "integrity_check: %s", res ? res : "(no answer)");
    } else {
        snprintf(err, errlen, "integrity_check: %s", sqlite3_errmsg(jr->db));
    }
    sqlite3_finalize(st);
    return e;
}
