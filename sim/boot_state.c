/*
 * boot_state.c - boot counters kept between simulator runs (boot_state.h).
 */
#include "boot_state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record.h"

#define BOOTS_MAGIC "tidegate-sim-boots 1"

struct stored {
    char *id;
    uint64_t boot;
};

static int cmp_stored(const void *a, const void *b)
{
    return strcmp(((const struct stored *)a)->id, ((const struct stored *)b)->id);
}

static void free_stored(struct stored *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].id);
    free(s);
}

/* Appends (id, boot); -1 when out of memory. */
static int push(struct stored **s, size_t *n, size_t *cap, const char *id, uint64_t boot)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        struct stored *t = realloc(*s, c * sizeof *t);
        if (!t)
            return -1;
        *s = t;
        *cap = c;
    }
    (*s)[*n].id = strdup(id);
    if (!(*s)[*n].id)
        return -1;
    (*s)[*n].boot = boot;
    (*n)++;
    return 0;
}

/* Reads path into a sorted array. A missing file is an empty one. */
static int read_file(const char *path, struct stored **out, size_t *n_out, size_t *cap,
                     char *err, size_t errlen)
{
    *out = NULL;
    *n_out = *cap = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[256];
    size_t lineno = 0;
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n')
            line[--len] = '\0';
        if (lineno == 1) {
            if (strcmp(line, BOOTS_MAGIC) != 0) {
                snprintf(err, errlen, "%s:1: not a boot state file (expected \"%s\")", path,
                         BOOTS_MAGIC);
                goto cleanup;
            }
            continue;
        }
        char id[TG_DEVICE_ID_MAX + 2];
        char *sp = strchr(line, ' ');
        char *end;
        errno = 0;
        uint64_t boot = sp ? strtoull(sp + 1, &end, 10) : 0;
        if (!sp || (size_t)(sp - line) > TG_DEVICE_ID_MAX || sp[1] < '0' || sp[1] > '9' ||
            errno || *end != '\0') {
            snprintf(err, errlen, "%s:%zu: expected \"<device id> <boot>\"", path, lineno);
            goto cleanup;
        }
        memcpy(id, line, (size_t)(sp - line));
        id[sp - line] = '\0';
        if (!tg_device_id_valid(id, strlen(id))) {
            snprintf(err, errlen, "%s:%zu: bad device id", path, lineno);
            goto cleanup;
        }
        if (push(out, n_out, cap, id, boot) != 0) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto cleanup;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    qsort(*out, *n_out, sizeof **out, cmp_stored);
    rc = 0;
cleanup:
    fclose(f);
    return rc;
}

static int write_file(const char *dir, const char *path, const struct stored *s, size_t n,
                      char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    fprintf(f, BOOTS_MAGIC "\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s %" PRIu64 "\n", s[i].id, s[i].boot);
    /* The new boots must be on disk before a reading carries them (boot_state.h). */
    bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd); /* the rename itself; a failure here loses nothing already written */
        close(dfd);
    }
    return 0;
}

int tg_sim_boots_advance(const char *dir, const char *const *ids, size_t n, uint64_t *boots,
                         char *err, size_t errlen)
{
    char path[PATH_MAX], lock_path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/" TG_SIM_BOOTS_FILE, dir) >= (int)sizeof path ||
        snprintf(lock_path, sizeof lock_path, "%s/" TG_SIM_BOOTS_FILE ".lock", dir) >=
            (int)sizeof lock_path) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    int lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) {
        snprintf(err, errlen, "%s: %s (the simulator keeps its boot counters there; see "
                              "--state-dir)", lock_path, strerror(errno));
        return -1;
    }
    int rc = -1;
    struct stored *s = NULL;
    size_t n_s = 0, cap = 0;
    if (flock(lock_fd, LOCK_EX) != 0) {
        snprintf(err, errlen, "%s: flock: %s", lock_path, strerror(errno));
        goto cleanup;
    }
    if (read_file(path, &s, &n_s, &cap, err, errlen) != 0)
        goto cleanup;
    size_t n_old = n_s; /* s[0..n_old) is sorted: look-ups stay there */
    for (size_t i = 0; i < n; i++) {
        struct stored key = {.id = (char *)ids[i]};
        struct stored *hit = n_old ? bsearch(&key, s, n_old, sizeof *s, cmp_stored) : NULL;
        if (hit) {
            if (hit->boot == UINT64_MAX) {
                snprintf(err, errlen, "%s: device %s has run out of boot numbers", path,
                         ids[i]);
                goto cleanup;
            }
            boots[i] = ++hit->boot;
        } else {
            boots[i] = 1;
            if (push(&s, &n_s, &cap, ids[i], 1) != 0) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto cleanup;
            }
        }
    }
    qsort(s, n_s, sizeof *s, cmp_stored);
    rc = write_file(dir, path, s, n_s, err, errlen);
cleanup:
    free_stored(s, n_s);
    close(lock_fd); /* releases the lock */
    return rc;
}

static int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int tg_sim_boots_default_dir(const char *ledger_path, char *out, size_t size, char *err,
                             size_t errlen)
{
    if (ledger_path) {
        const char *slash = strrchr(ledger_path, '/');
        if (!slash)
            snprintf(out, size, ".");
        else if (slash == ledger_path)
            snprintf(out, size, "/");
        else
            snprintf(out, size, "%.*s", (int)(slash - ledger_path), ledger_path);
        return 0;
    }
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int w;
    if (xdg && xdg[0] == '/')
        w = snprintf(out, size, "%s/tidegate-sim", xdg);
    else if (home && home[0] == '/')
        w = snprintf(out, size, "%s/.local/state/tidegate-sim", home);
    else {
        snprintf(err, errlen, "no --state-dir, no --ledger, and neither XDG_STATE_HOME nor "
                              "HOME is set: nowhere to keep the boot counters");
        return -1;
    }
    if (w < 0 || (size_t)w >= size) {
        snprintf(err, errlen, "state directory path too long");
        return -1;
    }
    if (make_dirs(out) != 0) {
        snprintf(err, errlen, "%s: %s", out, strerror(errno));
        return -1;
    }
    return 0;
}
