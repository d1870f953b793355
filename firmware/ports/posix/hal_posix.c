/*
 * hal_posix.c - clocks, randomness, the atomically replaced kv file, and Linux I2C.
 */
#include "hal_posix.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/i2c-dev.h>
#include <linux/i2c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "node.h"

#define KV_MAX 16
#define KV_KEY_MAX 32
#define I2C_MAX TG_NODE_MAX_SENSORS

struct kv_entry {
    char key[KV_KEY_MAX + 1];
    uint64_t value;
};

struct i2c_binding {
    uint8_t addr;
    unsigned bus;
    int fd;
};

struct tg_posix_hal {
    char *dir;
    char *kv_path;
    char *kv_tmp_path;
    int lock_fd;
    int dir_fd;
    struct kv_entry kv[KV_MAX];
    size_t n_kv;
    struct i2c_binding i2c[I2C_MAX];
    size_t n_i2c;
};

static char *path_join(const char *dir, const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

static bool key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > KV_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((key[i] >= 'a' && key[i] <= 'z') || (key[i] >= '0' && key[i] <= '9') ||
              key[i] == '_'))
            return false;
    return true;
}

/* Reads the kv file. A missing file is an empty store (first start); anything unreadable is
 * an error rather than a silent reset, since resetting the boot counter would repeat
 * (boot, seq) pairs the gateway has already seen and would drop as duplicates. */
static int kv_read(struct tg_posix_hal *ph)
{
    FILE *f = fopen(ph->kv_path, "re");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        TG_LOG_ERROR("hal", "cannot open %s: %m", ph->kv_path);
        return -1;
    }
    char line[128];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char key[KV_KEY_MAX + 2];
        char digits[24];
        char end;
        uint64_t value = 0;
        /* Digits only, checked by hand: scanf's %llu would take "-1" or wrap an overflow,
         * and a wrapped boot counter repeats (boot, seq) pairs. */
        bool ok = sscanf(line, "%33s %23[0-9]%c", key, digits, &end) == 3 && end == '\n' &&
                  key_valid(key) && ph->n_kv < KV_MAX;
        for (const char *d = digits; ok && *d; d++) {
            unsigned digit = (unsigned)(*d - '0');
            ok = value <= (UINT64_MAX - digit) / 10;
            value = value * 10 + digit;
        }
        if (!ok) {
            TG_LOG_ERROR("hal", "%s:%d: malformed line (expected \"key value\"); fix or remove "
                         "the file", ph->kv_path, lineno);
            rc = -1;
            break;
        }
        memcpy(ph->kv[ph->n_kv].key, key, strlen(key) + 1); /* key_valid: fits */
        ph->kv[ph->n_kv].value = value;
        ph->n_kv++;
    }
    if (rc == 0 && ferror(f)) {
        TG_LOG_ERROR("hal", "cannot read %s: %m", ph->kv_path);
        rc = -1;
    }
    (void)fclose(f); /* read-only: nothing to lose on close */
    return rc;
}

/* Replaces the kv file with the store's content. The order (data fsync, rename, directory
 * fsync) is what makes the new value durable and the replacement atomic. */
static int kv_write(struct tg_posix_hal *ph)
{
    int rc = -1;
    int fd = open(ph->kv_tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        TG_LOG_ERROR("hal", "cannot create %s: %m", ph->kv_tmp_path);
        return -1;
    }
    char buf[KV_MAX * (KV_KEY_MAX + 24)];
    size_t len = 0;
    for (size_t i = 0; i < ph->n_kv; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %" PRIu64 "\n", ph->kv[i].key,
                                ph->kv[i].value);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            TG_LOG_ERROR("hal", "cannot write %s: %m", ph->kv_tmp_path);
            goto cleanup;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        TG_LOG_ERROR("hal", "fsync %s: %m", ph->kv_tmp_path);
        goto cleanup;
    }
    if (close(fd) != 0) {
        fd = -1;
        TG_LOG_ERROR("hal", "close %s: %m", ph->kv_tmp_path);
        goto cleanup;
    }
    fd = -1;
    if (rename(ph->kv_tmp_path, ph->kv_path) != 0) {
        TG_LOG_ERROR("hal", "rename %s -> %s: %m", ph->kv_tmp_path, ph->kv_path);
        goto cleanup;
    }
    if (fsync(ph->dir_fd) != 0) {
        TG_LOG_ERROR("hal", "fsync %s: %m", ph->dir);
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (fd >= 0)
        close(fd);
    return rc;
}

struct tg_posix_hal *tg_posix_hal_new(const char *state_dir)
{
    struct tg_posix_hal *ph = calloc(1, sizeof *ph);
    if (!ph)
        return NULL;
    ph->lock_fd = -1;
    ph->dir_fd = -1;
    ph->dir = strdup(state_dir);
    ph->kv_path = path_join(state_dir, "kv");
    ph->kv_tmp_path = path_join(state_dir, "kv.tmp");
    char *lock_path = path_join(state_dir, "lock");
    if (!ph->dir || !ph->kv_path || !ph->kv_tmp_path || !lock_path) {
        TG_LOG_ERROR("hal", "out of memory");
        goto fail;
    }
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        TG_LOG_ERROR("hal", "cannot create state directory %s: %m", state_dir);
        goto fail;
    }
    ph->dir_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ph->dir_fd < 0) {
        TG_LOG_ERROR("hal", "cannot open state directory %s: %m", state_dir);
        goto fail;
    }
    ph->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (ph->lock_fd < 0) {
        TG_LOG_ERROR("hal", "cannot open %s: %m", lock_path);
        goto fail;
    }
    if (flock(ph->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            TG_LOG_ERROR("hal", "%s is in use by another tidegate-node: each node needs its "
                         "own state_dir", state_dir);
        else
            TG_LOG_ERROR("hal", "cannot lock %s: %m", lock_path);
        goto fail;
    }
    if (kv_read(ph) != 0)
        goto fail;
    free(lock_path);
    return ph;
fail:
    free(lock_path);
    tg_posix_hal_destroy(ph);
    return NULL;
}

void tg_posix_hal_destroy(struct tg_posix_hal *ph)
{
    if (!ph)
        return;
    for (size_t i = 0; i < ph->n_i2c; i++) {
        bool shared = false;
        for (size_t j = 0; j < i; j++)
            shared |= ph->i2c[j].fd == ph->i2c[i].fd;
        if (!shared)
            close(ph->i2c[i].fd);
    }
    if (ph->lock_fd >= 0)
        close(ph->lock_fd); /* releases the flock */
    if (ph->dir_fd >= 0)
        close(ph->dir_fd);
    free(ph->dir);
    free(ph->kv_path);
    free(ph->kv_tmp_path);
    free(ph);
}

int tg_posix_hal_attach_i2c(struct tg_posix_hal *ph, unsigned bus, uint8_t addr)
{
    int fd = -1;
    for (size_t i = 0; i < ph->n_i2c; i++) {
        if (ph->i2c[i].addr == addr)
            return ph->i2c[i].bus == bus ? 0 : -1;
        if (ph->i2c[i].bus == bus)
            fd = ph->i2c[i].fd;
    }
    if (ph->n_i2c == I2C_MAX)
        return -1;
    if (fd < 0) {
        char path[32];
        snprintf(path, sizeof path, "/dev/i2c-%u", bus);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            TG_LOG_ERROR("hal", "cannot open %s: %m (is the I2C bus enabled, and may this user "
                         "use it? e.g. group i2c)", path);
            return -1;
        }
        unsigned long funcs;
        if (ioctl(fd, I2C_FUNCS, &funcs) != 0 || !(funcs & I2C_FUNC_I2C)) {
            TG_LOG_ERROR("hal", "%s does not support plain I2C transfers (I2C_RDWR)", path);
            close(fd);
            return -1;
        }
    }
    ph->i2c[ph->n_i2c++] = (struct i2c_binding){.addr = addr, .bus = bus, .fd = fd};
    return 0;
}

int64_t tg_posix_hal_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t tg_posix_hal_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint32_t tg_posix_hal_random_u32(void)
{
    uint32_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    /* Early at boot the pool may not be ready: jitter only needs nodes to differ, and the
     * nanoseconds of the clock and the pid do that. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() * 2654435761u);
    return r;
}

bool tg_posix_hal_kv_load(struct tg_posix_hal *ph, const char *key, uint64_t *value)
{
    for (size_t i = 0; i < ph->n_kv; i++) {
        if (strcmp(ph->kv[i].key, key) == 0) {
            *value = ph->kv[i].value;
            return true;
        }
    }
    return false;
}

int tg_posix_hal_kv_store(struct tg_posix_hal *ph, const char *key, uint64_t value)
{
    if (!key_valid(key))
        return -1;
    size_t i;
    for (i = 0; i < ph->n_kv; i++)
        if (strcmp(ph->kv[i].key, key) == 0)
            break;
    if (i == ph->n_kv) {
        if (ph->n_kv == KV_MAX)
            return -1;
        memcpy(ph->kv[i].key, key, strlen(key) + 1); /* key_valid: fits */
        ph->n_kv++;
    }
    uint64_t old = ph->kv[i].value;
    ph->kv[i].value = value;
    if (kv_write(ph) != 0) {
        ph->kv[i].value = old; /* memory must match what survives a restart */
        return -1;
    }
    return 0;
}

int tg_posix_hal_i2c_transfer(struct tg_posix_hal *ph, uint8_t addr, const uint8_t *wr,
                              size_t wr_len, uint8_t *rd, size_t rd_len)
{
    int fd = -1;
    for (size_t i = 0; i < ph->n_i2c; i++)
        if (ph->i2c[i].addr == addr)
            fd = ph->i2c[i].fd;
    if (fd < 0 || wr_len > UINT16_MAX || rd_len > UINT16_MAX)
        return -1;
    struct i2c_msg msgs[2];
    unsigned n = 0;
    /* i2c_msg.buf is not const, but the kernel only reads a write message's buffer. */
    if (wr_len > 0 || rd_len == 0)
        msgs[n++] = (struct i2c_msg){.addr = addr, .flags = 0, .len = (uint16_t)wr_len,
                                     .buf = (uint8_t *)(uintptr_t)wr};
    if (rd_len > 0)
        msgs[n++] = (struct i2c_msg){.addr = addr, .flags = I2C_M_RD, .len = (uint16_t)rd_len,
                                     .buf = rd};
    struct i2c_rdwr_ioctl_data data = {.msgs = msgs, .nmsgs = n};
    int rc;
    do {
        rc = ioctl(fd, I2C_RDWR, &data);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        /* A NACK (ENXIO / EREMOTEIO) is normal while a sensor converts: debug only. */
        TG_LOG_DEBUG("hal", "i2c 0x%02x: %m", addr);
        return -1;
    }
    return 0;
}
