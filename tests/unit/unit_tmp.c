/*
 * unit_tmp.c - scratch directories and files for unit tests (unit_tmp.h).
 */
#define _XOPEN_SOURCE 700 /* nftw */

#include "unit_tmp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int tg_unit_tmpdir_new(char *dir, size_t dir_size, const char *label)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    int n = snprintf(dir, dir_size, "%s/tg-%s-XXXXXX", base, label);
    if (n < 0 || (size_t)n >= dir_size) {
        fprintf(stderr, "unit_tmp: %s/tg-%s-XXXXXX does not fit in %zu bytes\n", base, label,
                dir_size);
        return -1;
    }
    if (!mkdtemp(dir)) {
        fprintf(stderr, "unit_tmp: mkdtemp %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (remove(path) != 0) {
        fprintf(stderr, "unit_tmp: remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int tg_unit_tmpdir_remove(const char *dir)
{
    /* FTW_DEPTH: a directory after its contents; FTW_PHYS: a link is removed, not followed. */
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0)
        return 0;
    if (errno == ENOENT)
        return 0;
    fprintf(stderr, "unit_tmp: removing %s failed\n", dir);
    return -1;
}

static char entered_dir[TG_UNIT_PATH_MAX];
static char left_dir[PATH_MAX];

int tg_unit_tmpdir_enter(const char *label)
{
    if (entered_dir[0]) {
        fprintf(stderr, "unit_tmp: %s entered already\n", entered_dir);
        return -1;
    }
    if (!getcwd(left_dir, sizeof left_dir)) {
        fprintf(stderr, "unit_tmp: getcwd: %s\n", strerror(errno));
        return -1;
    }
    if (tg_unit_tmpdir_new(entered_dir, sizeof entered_dir, label) != 0)
        goto fail;
    if (chdir(entered_dir) != 0) {
        fprintf(stderr, "unit_tmp: chdir %s: %s\n", entered_dir, strerror(errno));
        tg_unit_tmpdir_remove(entered_dir);
        goto fail;
    }
    return 0;
fail:
    entered_dir[0] = '\0';
    return -1;
}

int tg_unit_tmpdir_leave(void)
{
    if (!entered_dir[0])
        return 0;
    if (chdir(left_dir) != 0) {
        fprintf(stderr, "unit_tmp: chdir %s: %s\n", left_dir, strerror(errno));
        return -1;
    }
    int rc = tg_unit_tmpdir_remove(entered_dir);
    entered_dir[0] = '\0';
    return rc;
}

char *tg_unit_path(char *out, size_t out_size, const char *dir, const char *name)
{
    int n = snprintf(out, out_size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= out_size)
        fail_msg("unit_tmp: %s/%s does not fit in %zu bytes", dir, name, out_size);
    return out;
}

void tg_unit_write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("unit_tmp: fopen %s: %s", path, strerror(errno));
    size_t written = fwrite(data, 1, len, f);
    int closed = fclose(f);
    if (written != len || closed != 0)
        fail_msg("unit_tmp: writing %zu bytes to %s failed", len, path);
}

void tg_unit_write_file(const char *path, const char *text)
{
    tg_unit_write_bytes(path, text, strlen(text));
}
