/*
 * journal.c - SQLite storage of journal segments.
 *
 * Schema (user_version 1):
 *   segment(id PK, first_rid, last_rid, n_records, created_ms, codec, raw_bytes, data, done)
 *   state(key PK, value)
 *
 * Durability: journal_mode=WAL with synchronous=FULL, so COMMIT returns only after the WAL
 * is fsynced; a crash or power loss after that keeps the transaction, one before it loses
 * the whole transaction and nothing else (WAL frames without a commit record are ignored
 * when the database is opened again). Segments are inserted and deleted, never updated in
 * place, except for their small done bitmap.
 */
#include "journal.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    [ST_SCAN] = "SELECT id, first_rid, last_rid, n_records, created_ms, codec, raw_bytes, "
                "length(data), done FROM segment ORDER BY id",
    [ST_STATE_PUT] = "INSERT INTO state(key, value) VALUES (?1, ?2) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_STATE_GET] = "SELECT value FROM state WHERE key = ?1",
};

struct tg_journal {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
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
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "PRAGMA user_version = 1;";

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

static tg_err setup(struct tg_journal *jr, const char *path, char *err, size_t errlen)
{
    /* synchronous=FULL: COMMIT fsyncs the WAL, which is what makes a commit durable on
     * power loss (NORMAL would only survive a process crash). journal_size_limit keeps the
     * WAL file from staying at its high-water mark after an outage drains. cache_size: the
     * journal is written once and read back once, so SQLite's default 2 MB page cache only
     * holds pages the kernel's cache holds anyway; 256 KB keeps the gateway's memory small. */
    const char *pragmas = "PRAGMA journal_mode=WAL;"
                          "PRAGMA synchronous=FULL;"
                          "PRAGMA journal_size_limit=8388608;"
                          "PRAGMA temp_store=MEMORY;"
                          "PRAGMA cache_size=-256;";
    char *msg = NULL;
    int rc = sqlite3_exec(jr->db, pragmas, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(jr->db, schema_sql, NULL, NULL, &msg);
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

tg_err tg_journal_open(const char *path, struct tg_journal **out, bool *moved_aside, char *err,
                       size_t errlen)
{
    *out = NULL;
    *moved_aside = false;
    struct tg_journal *jr = calloc(1, sizeof *jr);
    if (!jr) {
        snprintf(err, errlen, "journal %s: out of memory", path);
        return TG_ERR_NOMEM;
    }
    bool corrupt;
    tg_err e = open_db(jr, path, &corrupt, err, errlen);
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
                free(jr);
                return TG_ERR_IO;
            }
        }
        *moved_aside = true;
        e = open_db(jr, path, &corrupt, err, errlen);
    }
    if (e == TG_OK)
        e = setup(jr, path, err, errlen);
    if (e != TG_OK) {
        close_db(jr);
        free(jr);
        return e;
    }
    *out = jr;
    return TG_OK;
}

void tg_journal_close(struct tg_journal *jr)
{
    if (!jr)
        return;
    if (jr->in_tx)
        tg_journal_rollback(jr);
    close_db(jr);
    free(jr);
}

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

tg_err tg_journal_scan(struct tg_journal *jr, tg_journal_scan_fn fn, void *ud)
{
    sqlite3_stmt *st = jr->st[ST_SCAN];
    tg_err e = TG_OK;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct tg_jseg_meta meta = {
            .id = (uint64_t)sqlite3_column_int64(st, 0),
            .first_rid = (uint64_t)sqlite3_column_int64(st, 1),
            .last_rid = (uint64_t)sqlite3_column_int64(st, 2),
            .n_records = (uint32_t)sqlite3_column_int64(st, 3),
            .created_ms = sqlite3_column_int64(st, 4),
            .codec = (enum tg_codec_id)sqlite3_column_int(st, 5),
            .raw_bytes = (uint32_t)sqlite3_column_int64(st, 6),
            .data_bytes = (uint32_t)sqlite3_column_int64(st, 7),
        };
        const uint8_t *done = sqlite3_column_blob(st, 8);
        size_t done_len = (size_t)sqlite3_column_bytes(st, 8);
        e = fn(ud, &meta, done, done_len);
        if (e != TG_OK)
            break;
    }
    if (e == TG_OK && rc != SQLITE_DONE)
        e = map_rc(rc);
    sqlite3_reset(st);
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
