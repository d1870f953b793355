/*
 * unit_tmp.h - the scratch directory and files that unit tests of file-reading modules (config,
 * journal, ledger, validate's key file, board detection, ...) share: a fresh directory under
 * $TMPDIR (unset or empty: /tmp), files written into it, and its removal with everything in
 * it, without a shell.
 *
 * The write helpers fail the running cmocka test on any error; the directory helpers return
 * 0 or -1 so that they also serve in setup and teardown functions.
 * Threads: the test's main thread.
 */
#ifndef TG_UNIT_TMP_H
#define TG_UNIT_TMP_H

#include <stddef.h>

/* Big enough for any of these directories plus a file name. */
#define TG_UNIT_PATH_MAX 512

/* Makes a new directory "<TMPDIR>/tg-<label>-XXXXXX" and writes its path into dir
 * (dir_size bytes, TG_UNIT_PATH_MAX will do). 0, or -1 (printed) when it does not fit or
 * mkdtemp fails. */
int tg_unit_tmpdir_new(char *dir, size_t dir_size, const char *label);

/* Removes dir and everything below it, depth first. 0 (also when dir is gone already), or -1
 * (printed). */
int tg_unit_tmpdir_remove(const char *dir);

/* A fresh directory that becomes the working directory (for tests that name files relative
 * to it), and the way back: the previous working directory again, the directory removed.
 * One at a time. 0, or -1 (printed). */
int tg_unit_tmpdir_enter(const char *label);
int tg_unit_tmpdir_leave(void);

/* "<dir>/<name>" into out; fails the test when it does not fit. Returns out. */
char *tg_unit_path(char *out, size_t out_size, const char *dir, const char *name);

/* Creates or truncates path and writes len bytes / the text (without its NUL). */
void tg_unit_write_bytes(const char *path, const void *data, size_t len);
void tg_unit_write_file(const char *path, const char *text);

#endif
