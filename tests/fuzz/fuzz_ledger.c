/* libFuzzer target: the simulator's ledger reader (sim/ledger.c, tg_ledger_read), which the
 * audit trusts to say what the fleet sent. Whatever the file holds, the read must fail with
 * a message naming the file and line, or give a ledger that writes and reads back with the
 * same totals. The input is given as a file through a memfd (no disk). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

static int fd_with(const uint8_t *data, size_t size, char *path, size_t pathlen)
{
    int fd = memfd_create("fuzz-ledger", 0);
    check(fd >= 0);
    check(size == 0 || write(fd, data, size) == (ssize_t)size);
    snprintf(path, pathlen, "/proc/self/fd/%d", fd);
    return fd;
}

static void same_totals(const struct tg_ledger *a, const struct tg_ledger *b)
{
    struct tg_ledger_totals ta, tb;
    tg_ledger_totals(a, &ta);
    tg_ledger_totals(b, &tb);
    check(ta.devices == tb.devices && ta.released == tb.released &&
          ta.unconfirmed == tb.unconfirmed && ta.dropped == tb.dropped &&
          ta.malformed == tb.malformed && ta.duplicates == tb.duplicates &&
          ta.skewed == tb.skewed && ta.connected_devices == tb.connected_devices);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512] = "";
    int fd = fd_with(data, size, path, sizeof path);
    struct tg_ledger *lg = tg_ledger_read(path, err, sizeof err);
    close(fd);
    if (!lg) {
        check(err[0] != '\0');
        return 0;
    }
    /* Written back (tg_ledger_write renames a temporary file into place: a real directory),
     * it reads back to the same totals. */
    char dir[] = "/tmp/fuzz-ledger-XXXXXX";
    check(mkdtemp(dir));
    char out[128];
    snprintf(out, sizeof out, "%s/ledger", dir);
    check(tg_ledger_write(lg, out) == 0);
    struct tg_ledger *back = tg_ledger_read(out, err, sizeof err);
    if (!back) {
        fprintf(stderr, "a ledger read back from its own file fails: %s\n", err);
        abort();
    }
    same_totals(lg, back);
    tg_ledger_destroy(back);
    tg_ledger_destroy(lg);
    unlink(out);
    rmdir(dir);
    return 0;
}
