/*
 * ledger.c - the simulator's ground truth (ledger.h): what each device sent, as seq ranges.
 *
 * In memory each (device, boot) keeps three disjoint sets of seqs, one per fate: released,
 * dropped and unconfirmed (taken, not yet released or dropped). A set is a sorted array of
 * inclusive ranges with no two ranges touching, so a device that sent 0..3599 without a
 * gap costs one range. The fates move readings between sets: TAKEN adds to unconfirmed,
 * RELEASED and DROPPED move from unconfirmed. A reading both released and dropped counts as
 * released: the broker confirmed it, so it is expected in Kafka whatever the outbox did.
 *
 * File format (text, UTF-8 free: ids are [A-Za-z0-9_.-]{1,64}), one fact per line:
 *
 *   tidegate-sim-ledger 1                   first line: magic and version
 *   # ...                                   comment (also blank lines), ignored
 *   run <start_ms> <end_ms>                 wall-clock times the run started and ended
 *                                           (optional, before the first device)
 *   device <id> [boot=N] [connected=N] [malformed=N] [duplicates=N] [skewed=N]
 *                                           starts a device; boot: the boot counter the run
 *                                           gave it; connected: connections the broker
 *                                           accepted; zero counters are left out
 *   malformed <hash>,...                    that device's malformed payloads, each as the
 *                                           16 hex digits of tg_ledger_payload_hash(), in
 *                                           ascending order (as many as malformed=N)
 *   skewed <boot> <ranges>                  that device's readings taken with a skewed clock
 *   released <boot> <ranges>                that device's seqs of that boot with this fate;
 *   dropped <boot> <ranges>                 <ranges> is a comma-separated list of "a" or
 *   unconfirmed <boot> <ranges>             "a-b" (inclusive), ascending, disjoint
 *   end <devices>                           last line: how many devices the file holds, so a
 *                                           truncated copy is detected
 *
 * e.g. a device that restarted once and lost one reading on the device:
 *
 *   device sim-00042 malformed=1
 *   released 1 0-812
 *   released 2 0-57,59-2786
 *   dropped 2 58
 *
 * The file is written to a temporary file in the same directory, fsync'ed and renamed over
 * the path, so a reader (the audit, maybe following a run) sees the whole ledger or none.
 */
#include "ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "record.h" /* tg_device_id_valid */
#include "seqset.h"
#include "strmap.h"

#define LEDGER_MAGIC "tidegate-sim-ledger 1"

/* ------------------------------------------------------------------------------------------
 * The ledger
 */

struct boot_fates {
    uint64_t boot;
    struct tg_seqset released, dropped, unconfirmed;
    struct tg_seqset skewed; /* not a fate: which readings carried a skewed clock */
};

struct device {
    char *id;
    uint64_t boot, connected;
    uint64_t malformed, duplicates, skewed;
    uint64_t *malformed_hashes; /* ascending, malformed of them */
    size_t cap_hashes;
    struct boot_fates *boots; /* ascending boot */
    size_t n_boots, cap_boots;
};

struct tg_ledger {
    struct device *devs;
    size_t n_devs, cap_devs;
    struct tg_strmap *index; /* device id -> index in devs */
    bool has_run;
    int64_t run_start_ms, run_end_ms;
};

struct tg_ledger *tg_ledger_new(void)
{
    struct tg_ledger *lg = calloc(1, sizeof *lg);
    if (lg && !(lg->index = tg_strmap_new())) {
        free(lg);
        return NULL;
    }
    return lg;
}

void tg_ledger_destroy(struct tg_ledger *lg)
{
    if (!lg)
        return;
    for (size_t d = 0; d < lg->n_devs; d++) {
        struct device *dev = &lg->devs[d];
        for (size_t b = 0; b < dev->n_boots; b++) {
            tg_seqset_free(&dev->boots[b].released);
            tg_seqset_free(&dev->boots[b].dropped);
            tg_seqset_free(&dev->boots[b].unconfirmed);
            tg_seqset_free(&dev->boots[b].skewed);
        }
        free(dev->boots);
        free(dev->malformed_hashes);
        free(dev->id);
    }
    free(lg->devs);
    tg_strmap_destroy(lg->index);
    free(lg);
}

int tg_ledger_find_device(const struct tg_ledger *lg, const char *device_id)
{
    uint32_t d;
    return tg_strmap_get(lg->index, device_id, strlen(device_id), &d) ? (int)d : -1;
}

/* Registers a device. Ids must be valid device ids ([A-Za-z0-9_.-]{1,64}), which keeps the
 * file format one word per id; an invalid or already registered id returns -1 (EINVAL),
 * like running out of memory (ENOMEM). */
int tg_ledger_add_device(struct tg_ledger *lg, const char *device_id)
{
    if (!tg_device_id_valid(device_id, strlen(device_id)) || lg->n_devs >= INT_MAX - 1 ||
        tg_ledger_find_device(lg, device_id) >= 0) {
        errno = EINVAL;
        return -1;
    }
    if (lg->n_devs == lg->cap_devs) {
        size_t cap = lg->cap_devs ? lg->cap_devs * 2 : 16;
        struct device *devs = realloc(lg->devs, cap * sizeof *devs);
        if (!devs)
            return -1;
        lg->devs = devs;
        lg->cap_devs = cap;
    }
    struct device *dev = &lg->devs[lg->n_devs];
    *dev = (struct device){.id = strdup(device_id)};
    if (!dev->id)
        return -1;
    if (tg_strmap_put(lg->index, device_id, strlen(device_id), (uint32_t)lg->n_devs) != TG_OK) {
        free(dev->id);
        errno = ENOMEM;
        return -1;
    }
    return (int)lg->n_devs++;
}

static struct device *device_at(const struct tg_ledger *lg, int device)
{
    if (device < 0 || (size_t)device >= lg->n_devs)
        return NULL;
    return &lg->devs[device];
}

static struct boot_fates *boot_find(const struct device *dev, uint64_t boot)
{
    /* Devices restart rarely: a handful of boots, newest last, so search from the end. */
    for (size_t b = dev->n_boots; b-- > 0;)
        if (dev->boots[b].boot == boot)
            return &dev->boots[b];
    return NULL;
}

static struct boot_fates *boot_get(struct device *dev, uint64_t boot)
{
    struct boot_fates *bf = boot_find(dev, boot);
    if (bf)
        return bf;
    if (dev->n_boots == dev->cap_boots) {
        size_t cap = dev->cap_boots ? dev->cap_boots * 2 : 1;
        struct boot_fates *boots = realloc(dev->boots, cap * sizeof *boots);
        if (!boots)
            return NULL;
        dev->boots = boots;
        dev->cap_boots = cap;
    }
    size_t b = dev->n_boots;
    while (b > 0 && dev->boots[b - 1].boot > boot) {
        dev->boots[b] = dev->boots[b - 1];
        b--;
    }
    dev->boots[b] = (struct boot_fates){.boot = boot};
    dev->n_boots++;
    return &dev->boots[b];
}

int tg_ledger_reading(struct tg_ledger *lg, int device, enum tg_node_event ev, uint64_t boot,
                      uint64_t seq)
{
    struct device *dev = device_at(lg, device);
    if (!dev) {
        errno = EINVAL;
        return -1;
    }
    struct boot_fates *bf = boot_get(dev, boot);
    if (!bf)
        return -1;
    switch (ev) {
    case TG_NODE_EV_TAKEN:
        /* A seq is taken once per boot; a second TAKEN of a seq with a fate already is the
         * core's bug, not a new reading, so it does not resurrect it as unconfirmed. */
        if (tg_seqset_contains(&bf->released, seq) || tg_seqset_contains(&bf->dropped, seq))
            return 0;
        return tg_seqset_add(&bf->unconfirmed, seq) < 0 ? -1 : 0;
    case TG_NODE_EV_RELEASED:
        /* Add first: if that fails the reading keeps its old fate rather than none. */
        if (tg_seqset_add(&bf->released, seq) < 0)
            return -1;
        if (tg_seqset_remove(&bf->unconfirmed, seq) < 0 || tg_seqset_remove(&bf->dropped, seq) < 0)
            return -1;
        return 0;
    case TG_NODE_EV_DROPPED:
        if (tg_seqset_contains(&bf->released, seq))
            return 0;
        if (tg_seqset_add(&bf->dropped, seq) < 0)
            return -1;
        return tg_seqset_remove(&bf->unconfirmed, seq) < 0 ? -1 : 0;
    }
    errno = EINVAL;
    return -1;
}

static int fault_add(struct tg_ledger *lg, int device, size_t field)
{
    struct device *dev = device_at(lg, device);
    if (!dev) {
        errno = EINVAL;
        return -1;
    }
    uint64_t *counter = (uint64_t *)((char *)dev + field);
    (*counter)++;
    return 0;
}

/* Inserts hash into the device's ascending list. */
static int hash_insert(struct device *dev, uint64_t hash)
{
    if (dev->malformed == dev->cap_hashes) {
        size_t cap = dev->cap_hashes ? dev->cap_hashes * 2 : 4;
        uint64_t *h = realloc(dev->malformed_hashes, cap * sizeof *h);
        if (!h)
            return -1;
        dev->malformed_hashes = h;
        dev->cap_hashes = cap;
    }
    size_t i = (size_t)dev->malformed;
    while (i > 0 && dev->malformed_hashes[i - 1] > hash) {
        dev->malformed_hashes[i] = dev->malformed_hashes[i - 1];
        i--;
    }
    dev->malformed_hashes[i] = hash;
    dev->malformed++;
    return 0;
}

int tg_ledger_malformed(struct tg_ledger *lg, int device, uint64_t payload_hash)
{
    struct device *dev = device_at(lg, device);
    if (!dev) {
        errno = EINVAL;
        return -1;
    }
    return hash_insert(dev, payload_hash);
}

uint64_t tg_ledger_payload_hash(const void *payload, size_t len)
{
    /* FNV-1a, 64 bits: tells apart the few malformed payloads of one device, nothing more */
    uint64_t h = UINT64_C(14695981039346656037);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

uint64_t tg_ledger_malformed_count(const struct tg_ledger *lg, int device, uint64_t payload_hash)
{
    const struct device *dev = device_at(lg, device);
    uint64_t n = 0;
    for (size_t i = 0; dev && i < dev->malformed; i++)
        n += dev->malformed_hashes[i] == payload_hash;
    return n;
}

int tg_ledger_duplicate(struct tg_ledger *lg, int device)
{
    return fault_add(lg, device, offsetof(struct device, duplicates));
}

int tg_ledger_skewed(struct tg_ledger *lg, int device, uint64_t boot, uint64_t seq)
{
    struct device *dev = device_at(lg, device);
    if (!dev) {
        errno = EINVAL;
        return -1;
    }
    struct boot_fates *bf = boot_get(dev, boot);
    if (!bf)
        return -1;
    int added = tg_seqset_add(&bf->skewed, seq);
    if (added < 0)
        return -1;
    dev->skewed += (uint64_t)added;
    return 0;
}

bool tg_ledger_is_skewed(const struct tg_ledger *lg, int device, uint64_t boot, uint64_t seq)
{
    const struct device *dev = device_at(lg, device);
    const struct boot_fates *bf = dev ? boot_find(dev, boot) : NULL;
    return bf && tg_seqset_contains(&bf->skewed, seq);
}

int tg_ledger_connected(struct tg_ledger *lg, int device)
{
    return fault_add(lg, device, offsetof(struct device, connected));
}

int tg_ledger_set_boot(struct tg_ledger *lg, int device, uint64_t boot)
{
    struct device *dev = device_at(lg, device);
    if (!dev) {
        errno = EINVAL;
        return -1;
    }
    dev->boot = boot;
    return 0;
}

uint64_t tg_ledger_device_boot(const struct tg_ledger *lg, int device)
{
    const struct device *dev = device_at(lg, device);
    return dev ? dev->boot : 0;
}

void tg_ledger_set_run(struct tg_ledger *lg, int64_t start_ms, int64_t end_ms)
{
    lg->has_run = true;
    lg->run_start_ms = start_ms;
    lg->run_end_ms = end_ms;
}

bool tg_ledger_run(const struct tg_ledger *lg, int64_t *start_ms, int64_t *end_ms)
{
    if (!lg->has_run)
        return false;
    *start_ms = lg->run_start_ms;
    *end_ms = lg->run_end_ms;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * Reading back
 */

void tg_ledger_totals(const struct tg_ledger *lg, struct tg_ledger_totals *out)
{
    *out = (struct tg_ledger_totals){.devices = lg->n_devs};
    for (size_t d = 0; d < lg->n_devs; d++) {
        const struct device *dev = &lg->devs[d];
        out->malformed += dev->malformed;
        out->duplicates += dev->duplicates;
        out->skewed += dev->skewed;
        out->connected_devices += dev->connected > 0;
        for (size_t b = 0; b < dev->n_boots; b++) {
            out->released += tg_seqset_count(&dev->boots[b].released);
            out->dropped += tg_seqset_count(&dev->boots[b].dropped);
            out->unconfirmed += tg_seqset_count(&dev->boots[b].unconfirmed);
        }
    }
}

size_t tg_ledger_device_count(const struct tg_ledger *lg)
{
    return lg->n_devs;
}

const char *tg_ledger_device_id(const struct tg_ledger *lg, int device)
{
    const struct device *dev = device_at(lg, device);
    return dev ? dev->id : NULL;
}

void tg_ledger_device_faults(const struct tg_ledger *lg, int device,
                             struct tg_ledger_faults *out)
{
    const struct device *dev = device_at(lg, device);
    *out = dev ? (struct tg_ledger_faults){dev->malformed, dev->duplicates, dev->skewed,
                                           dev->connected}
               : (struct tg_ledger_faults){0, 0, 0, 0};
}

enum tg_ledger_fate tg_ledger_fate(const struct tg_ledger *lg, int device, uint64_t boot,
                                   uint64_t seq)
{
    const struct device *dev = device_at(lg, device);
    const struct boot_fates *bf = dev ? boot_find(dev, boot) : NULL;
    if (!bf)
        return TG_LEDGER_UNKNOWN;
    if (tg_seqset_contains(&bf->released, seq))
        return TG_LEDGER_RELEASED;
    if (tg_seqset_contains(&bf->unconfirmed, seq))
        return TG_LEDGER_UNCONFIRMED;
    if (tg_seqset_contains(&bf->dropped, seq))
        return TG_LEDGER_DROPPED;
    return TG_LEDGER_UNKNOWN;
}

struct visit_boot {
    tg_ledger_visit_fn fn;
    void *ud;
    uint64_t boot;
};

static bool visit_released(void *ud, uint64_t seq)
{
    struct visit_boot *vb = ud;
    return vb->fn(vb->ud, vb->boot, seq);
}

void tg_ledger_each_released(const struct tg_ledger *lg, int device, tg_ledger_visit_fn fn,
                             void *ud)
{
    const struct device *dev = device_at(lg, device);
    if (!dev)
        return;
    for (size_t b = 0; b < dev->n_boots; b++) {
        struct visit_boot vb = {fn, ud, dev->boots[b].boot};
        if (!tg_seqset_each(&dev->boots[b].released, visit_released, &vb))
            return;
    }
}

/* ------------------------------------------------------------------------------------------
 * Writing
 */

static void write_set(FILE *f, const char *fate, uint64_t boot, const struct tg_seqset *s)
{
    size_t n = tg_seqset_n_ranges(s);
    if (n == 0)
        return;
    fprintf(f, "%s %" PRIu64 " ", fate, boot);
    for (size_t i = 0; i < n; i++) {
        struct tg_seqset_range r = tg_seqset_range(s, i);
        if (i > 0)
            fputc(',', f);
        if (r.lo == r.hi)
            fprintf(f, "%" PRIu64, r.lo);
        else
            fprintf(f, "%" PRIu64 "-%" PRIu64, r.lo, r.hi);
    }
    fputc('\n', f);
}

static void write_all(FILE *f, const struct tg_ledger *lg)
{
    fprintf(f, LEDGER_MAGIC "\n# written by tidegate-sim run; format: sim/ledger.c\n");
    if (lg->has_run)
        fprintf(f, "run %" PRId64 " %" PRId64 "\n", lg->run_start_ms, lg->run_end_ms);
    for (size_t d = 0; d < lg->n_devs; d++) {
        const struct device *dev = &lg->devs[d];
        fprintf(f, "device %s", dev->id);
        if (dev->boot)
            fprintf(f, " boot=%" PRIu64, dev->boot);
        if (dev->connected)
            fprintf(f, " connected=%" PRIu64, dev->connected);
        if (dev->malformed)
            fprintf(f, " malformed=%" PRIu64, dev->malformed);
        if (dev->duplicates)
            fprintf(f, " duplicates=%" PRIu64, dev->duplicates);
        if (dev->skewed)
            fprintf(f, " skewed=%" PRIu64, dev->skewed);
        fputc('\n', f);
        for (size_t i = 0; i < dev->malformed; i++)
            fprintf(f, "%s%016" PRIx64, i ? "," : "malformed ", dev->malformed_hashes[i]);
        if (dev->malformed)
            fputc('\n', f);
        for (size_t b = 0; b < dev->n_boots; b++) {
            const struct boot_fates *bf = &dev->boots[b];
            write_set(f, "skewed", bf->boot, &bf->skewed);
            write_set(f, "released", bf->boot, &bf->released);
            write_set(f, "dropped", bf->boot, &bf->dropped);
            write_set(f, "unconfirmed", bf->boot, &bf->unconfirmed);
        }
    }
    fprintf(f, "end %zu\n", lg->n_devs);
}

/* The directory part of path ("." when none), for the temporary file and its fsync. */
static void dir_of(const char *path, char *out, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, size, ".");
    else if (slash == path)
        snprintf(out, size, "/");
    else
        snprintf(out, size, "%.*s", (int)(slash - path), path);
}

int tg_ledger_write(const struct tg_ledger *lg, const char *path)
{
    char tmp[PATH_MAX];
    FILE *f = NULL;
    int fd = -1, saved = 0, rc = -1;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    f = fdopen(fd, "w");
    if (!f)
        goto cleanup;
    fd = -1; /* the stream owns it now */
    write_all(f, lg);
    /* The rename must not land before the data: fsync first, so that a crash leaves the old
     * file or the whole new one. */
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0)
        goto cleanup;
    if (fclose(f) != 0) {
        f = NULL;
        goto cleanup;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        goto cleanup;
    tmp[0] = '\0';
    /* Make the rename itself durable. Failing to open the directory (no read permission) is
     * not worth failing the write for: the file is complete either way. */
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    FILE *d = fopen(dir, "r");
    if (d) {
        int r = fsync(fileno(d));
        fclose(d);
        if (r != 0 && errno != EINVAL)
            goto cleanup;
    }
    rc = 0;
cleanup:
    saved = errno;
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    if (tmp[0] != '\0')
        unlink(tmp);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------------------------------
 * Reading
 */

struct parser {
    const char *path;
    size_t line;
    char *err;
    size_t err_size;
};

__attribute__((format(printf, 2, 3))) static void perr(struct parser *p, const char *fmt, ...)
{
    int n = snprintf(p->err, p->err_size, "%s:%zu: ", p->path, p->line);
    if (n < 0 || (size_t)n >= p->err_size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->err_size - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Parses a decimal uint64 at *s (digits only, no sign, no overflow), advancing *s. */
static bool parse_u64(const char **s, uint64_t *out)
{
    const char *c = *s;
    if (*c < '0' || *c > '9')
        return false;
    uint64_t v = 0;
    for (; *c >= '0' && *c <= '9'; c++) {
        unsigned digit = (unsigned)(*c - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *s = c;
    *out = v;
    return true;
}

/* "a,b-c,..." into set (empty before), checked ascending, disjoint from the other two fates
 * of the same boot. */
static int parse_ranges(struct parser *p, const char *s, struct tg_seqset *set,
                        const struct tg_seqset *other1, const struct tg_seqset *other2)
{
    if (tg_seqset_n_ranges(set) != 0) {
        perr(p, "second line for this fate and boot");
        return -1;
    }
    for (;;) {
        uint64_t lo, hi;
        if (!parse_u64(&s, &lo)) {
            perr(p, "expected a seq, got \"%.20s\"", s);
            return -1;
        }
        hi = lo;
        if (*s == '-') {
            s++;
            if (!parse_u64(&s, &hi) || hi < lo) {
                perr(p, "bad range ending at \"%.20s\"", s);
                return -1;
            }
        }
        /* Ranges never touch either: the writer merges them. */
        size_t n = tg_seqset_n_ranges(set);
        if (n > 0 && (lo <= tg_seqset_range(set, n - 1).hi ||
                      lo - 1 == tg_seqset_range(set, n - 1).hi)) {
            perr(p, "range %" PRIu64 "-%" PRIu64 " not above the previous one", lo, hi);
            return -1;
        }
        if (tg_seqset_intersects(other1, lo, hi) || tg_seqset_intersects(other2, lo, hi)) {
            perr(p, "seqs %" PRIu64 "-%" PRIu64 " already have another fate", lo, hi);
            return -1;
        }
        if (tg_seqset_append_range(set, lo, hi) != 0) {
            perr(p, "out of memory");
            return -1;
        }
        if (*s == '\0')
            return 0;
        if (*s != ',') {
            perr(p, "unexpected \"%.20s\" in a range list", s);
            return -1;
        }
        s++;
    }
}

/* A device with malformed=N needs its "malformed" line (the audit reads the hashes). */
static int check_hashes(struct parser *p, const struct tg_ledger *lg)
{
    if (lg->n_devs == 0)
        return 0;
    const struct device *dev = &lg->devs[lg->n_devs - 1];
    if (dev->malformed > 0 && !dev->malformed_hashes) {
        perr(p, "device %s: malformed=%" PRIu64 " without its \"malformed\" line", dev->id,
             dev->malformed);
        return -1;
    }
    return 0;
}

static int parse_device(struct parser *p, struct tg_ledger *lg, char *rest)
{
    if (check_hashes(p, lg) != 0)
        return -1;
    char *save = NULL;
    char *id = strtok_r(rest, " ", &save);
    if (!id || !tg_device_id_valid(id, strlen(id))) {
        perr(p, "bad device id");
        return -1;
    }
    if (tg_ledger_find_device(lg, id) >= 0) {
        perr(p, "device %s listed twice", id);
        return -1;
    }
    int d = tg_ledger_add_device(lg, id);
    if (d < 0) {
        perr(p, "out of memory");
        return -1;
    }
    struct device *dev = &lg->devs[d];
    for (char *kv; (kv = strtok_r(NULL, " ", &save)) != NULL;) {
        uint64_t *field = NULL;
        const char *v = strchr(kv, '=');
        if (v) {
            size_t klen = (size_t)(v - kv);
            if (klen == 9 && strncmp(kv, "malformed", 9) == 0)
                field = &dev->malformed;
            else if (klen == 4 && strncmp(kv, "boot", 4) == 0)
                field = &dev->boot;
            else if (klen == 9 && strncmp(kv, "connected", 9) == 0)
                field = &dev->connected;
            else if (klen == 10 && strncmp(kv, "duplicates", 10) == 0)
                field = &dev->duplicates;
            else if (klen == 6 && strncmp(kv, "skewed", 6) == 0)
                field = &dev->skewed;
            v++;
        }
        if (!field || !parse_u64(&v, field) || *v != '\0') {
            perr(p, "bad device attribute \"%s\"", kv);
            return -1;
        }
    }
    return 0;
}

static int parse_fate(struct parser *p, struct tg_ledger *lg, const char *fate, char *rest)
{
    if (lg->n_devs == 0) {
        perr(p, "\"%s\" before any \"device\" line", fate);
        return -1;
    }
    struct device *dev = &lg->devs[lg->n_devs - 1];
    const char *s = rest;
    uint64_t boot;
    if (!parse_u64(&s, &boot) || *s != ' ') {
        perr(p, "expected \"%s <boot> <ranges>\"", fate);
        return -1;
    }
    struct boot_fates *bf = boot_get(dev, boot);
    if (!bf) {
        perr(p, "out of memory");
        return -1;
    }
    s++;
    if (strcmp(fate, "skewed") == 0) {
        static const struct tg_seqset none = {0};
        if (parse_ranges(p, s, &bf->skewed, &none, &none) != 0)
            return -1;
        return 0;
    }
    if (strcmp(fate, "released") == 0)
        return parse_ranges(p, s, &bf->released, &bf->dropped, &bf->unconfirmed);
    if (strcmp(fate, "dropped") == 0)
        return parse_ranges(p, s, &bf->dropped, &bf->released, &bf->unconfirmed);
    return parse_ranges(p, s, &bf->unconfirmed, &bf->released, &bf->dropped);
}

/* "malformed <hash>,...": as many hashes as the device's malformed=N, ascending. */
static int parse_hashes(struct parser *p, struct tg_ledger *lg, char *rest)
{
    if (lg->n_devs == 0) {
        perr(p, "\"malformed\" before any \"device\" line");
        return -1;
    }
    struct device *dev = &lg->devs[lg->n_devs - 1];
    uint64_t want = dev->malformed;
    if (dev->cap_hashes > 0 || want == 0) {
        perr(p, "\"malformed\" line twice, or without malformed=N on its device");
        return -1;
    }
    dev->malformed = 0;
    for (char *save = NULL, *tok = strtok_r(rest, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        uint64_t h = strtoull(tok, &end, 16);
        if (errno || end - tok != 16 || *end != '\0' ||
            (dev->malformed > 0 && h < dev->malformed_hashes[dev->malformed - 1])) {
            perr(p, "bad payload hash \"%.20s\"", tok);
            return -1;
        }
        if (hash_insert(dev, h) != 0) {
            perr(p, "out of memory");
            return -1;
        }
    }
    if (dev->malformed != want) {
        perr(p, "%" PRIu64 " payload hashes for malformed=%" PRIu64, dev->malformed, want);
        return -1;
    }
    return 0;
}

static int parse_run(struct parser *p, struct tg_ledger *lg, const char *rest)
{
    long long start, end;
    char extra;
    if (lg->has_run || lg->n_devs > 0 ||
        sscanf(rest, "%lld %lld %c", &start, &end, &extra) != 2 || end < start) {
        perr(p, "expected one \"run <start_ms> <end_ms>\" before the devices");
        return -1;
    }
    tg_ledger_set_run(lg, start, end);
    return 0;
}

struct tg_ledger *tg_ledger_read(const char *path, char *err, size_t err_size)
{
    struct parser p = {.path = path, .err = err, .err_size = err_size};
    struct tg_ledger *lg = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    bool ended = false, ok = false;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    lg = tg_ledger_new();
    if (!lg) {
        snprintf(err, err_size, "%s: out of memory", path);
        goto cleanup;
    }
    ssize_t len;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        p.line++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (p.line == 1) {
            if (strcmp(line, LEDGER_MAGIC) != 0) {
                perr(&p, "not a ledger (expected first line \"" LEDGER_MAGIC "\")");
                goto cleanup;
            }
            continue;
        }
        if (len == 0 || line[0] == '#')
            continue;
        if (ended) {
            perr(&p, "text after the \"end\" line");
            goto cleanup;
        }
        char *sp = strchr(line, ' ');
        if (!sp) {
            perr(&p, "expected \"<keyword> <arguments>\"");
            goto cleanup;
        }
        *sp = '\0';
        char *rest = sp + 1;
        int rc;
        if (strcmp(line, "device") == 0) {
            rc = parse_device(&p, lg, rest);
        } else if (strcmp(line, "released") == 0 || strcmp(line, "dropped") == 0 ||
                   strcmp(line, "unconfirmed") == 0 || strcmp(line, "skewed") == 0) {
            rc = parse_fate(&p, lg, line, rest);
        } else if (strcmp(line, "malformed") == 0) {
            rc = parse_hashes(&p, lg, rest);
        } else if (strcmp(line, "run") == 0) {
            rc = parse_run(&p, lg, rest);
        } else if (strcmp(line, "end") == 0) {
            const char *s = rest;
            uint64_t n;
            rc = 0;
            if (check_hashes(&p, lg) != 0)
                goto cleanup;
            if (!parse_u64(&s, &n) || *s != '\0' || n != lg->n_devs) {
                perr(&p, "\"end\" says %s devices, the file listed %zu", rest, lg->n_devs);
                rc = -1;
            }
            ended = true;
        } else {
            perr(&p, "unknown keyword \"%s\"", line);
            rc = -1;
        }
        if (rc != 0)
            goto cleanup;
    }
    if (ferror(f)) {
        snprintf(err, err_size, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (p.line == 0) {
        snprintf(err, err_size, "%s: empty file", path);
        goto cleanup;
    }
    if (!ended) {
        p.line++;
        perr(&p, "file ends without its \"end\" line (truncated?)");
        goto cleanup;
    }
    ok = true;
cleanup:
    free(line);
    fclose(f);
    if (!ok) {
        tg_ledger_destroy(lg);
        return NULL;
    }
    return lg;
}
