/*
 * log.c - leveled, subsystem-tagged logging; see log.h for the line format and contract.
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEBUG_TAGS_MAX 16
#define DEBUG_TAG_LEN 32

const char *const tg_log_level_choices[] = {"error", "warn", "info", "debug", NULL};

_Atomic int tg_log_verbosity_ = TG_LOG_LEVEL_INFO;

static _Atomic int global_level = TG_LOG_LEVEL_INFO;
static _Atomic int out_fd = STDERR_FILENO;
static _Atomic int journal_mode = -1; /* -1: not yet checked for out_fd */

/* Written only by tg_log_enable_debug(), at startup. */
static bool debug_all;
static int n_debug_tags;
static char debug_tags[DEBUG_TAGS_MAX][DEBUG_TAG_LEN];

tg_err tg_log_level_parse(const char *text, tg_log_level *level)
{
    static const tg_log_level levels[] = {TG_LOG_LEVEL_ERROR, TG_LOG_LEVEL_WARN,
                                          TG_LOG_LEVEL_INFO, TG_LOG_LEVEL_DEBUG};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcmp(text, tg_log_level_choices[i]) == 0) {
            *level = levels[i];
            return TG_OK;
        }
    }
    return TG_ERR_CONFIG;
}

const char *tg_log_level_name(tg_log_level level)
{
    switch (level) {
    case TG_LOG_LEVEL_ERROR: return "error";
    case TG_LOG_LEVEL_WARN: return "warn";
    case TG_LOG_LEVEL_INFO: return "info";
    case TG_LOG_LEVEL_DEBUG: return "debug";
    }
    return "?";
}

static void update_verbosity(void)
{
    int v = atomic_load(&global_level);
    if ((debug_all || n_debug_tags > 0) && v < TG_LOG_LEVEL_DEBUG)
        v = TG_LOG_LEVEL_DEBUG;
    atomic_store(&tg_log_verbosity_, v);
}

void tg_log_set_level(tg_log_level level)
{
    atomic_store(&global_level, (int)level);
    update_verbosity();
}

tg_err tg_log_enable_debug(const char *list)
{
    char tags[DEBUG_TAGS_MAX][DEBUG_TAG_LEN];
    int n = 0;
    bool all = false;
    const char *p = list + strspn(list, " ");

    while (*p) { /* one "name ," per turn; an empty name anywhere is an error */
        const char *start = p;
        size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_-");
        p += len;
        p += strspn(p, " ");
        if (len == 0 || len >= DEBUG_TAG_LEN || (*p != ',' && *p != '\0'))
            return TG_ERR_CONFIG;
        if (*p == ',') {
            p++;
            p += strspn(p, " ");
            if (*p == '\0')
                return TG_ERR_CONFIG; /* trailing comma */
        }
        if (len == 3 && memcmp(start, "all", 3) == 0) {
            all = true;
            continue;
        }
        if (n == DEBUG_TAGS_MAX)
            return TG_ERR_CONFIG;
        memcpy(tags[n], start, len);
        tags[n][len] = '\0';
        n++;
    }
    memcpy(debug_tags, tags, sizeof tags);
    n_debug_tags = n;
    debug_all = all;
    update_verbosity();
    return TG_OK;
}

bool tg_log_enabled(tg_log_level level, const char *subsys)
{
    if ((int)level <= atomic_load_explicit(&global_level, memory_order_relaxed))
        return true;
    if (level != TG_LOG_LEVEL_DEBUG)
        return false;
    if (debug_all)
        return true;
    for (int i = 0; i < n_debug_tags; i++) {
        if (strcmp(debug_tags[i], subsys) == 0)
            return true;
    }
    return false;
}

/* True when fd is the stream journald gave us: JOURNAL_STREAM is "DEVICE:INODE" of it. */
static bool is_journal_stream(int fd)
{
    const char *env = getenv("JOURNAL_STREAM");
    uintmax_t dev, ino;
    struct stat st;
    if (!env || sscanf(env, "%ju:%ju", &dev, &ino) != 2 || fstat(fd, &st) != 0)
        return false;
    return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void tg_log_set_fd(int fd)
{
    int saved = errno;
    if (fd < 0)
        fd = STDERR_FILENO;
    atomic_store(&out_fd, fd);
    atomic_store(&journal_mode, is_journal_stream(fd));
    errno = saved;
}

int64_t tg_log_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool tg_log_ratelimit_pass(struct tg_log_ratelimit *rl, int64_t interval_ms, int64_t now_ms,
                           uint64_t *suppressed)
{
    int64_t last = atomic_load_explicit(&rl->last_ms, memory_order_relaxed);
    /* Compare as "now < last + interval" written without overflow: last may be INT64_MIN. */
    bool too_soon = last != INT64_MIN && now_ms >= last && now_ms - last < interval_ms;
    /* Of threads that find the interval over, one wins the exchange and writes the line. */
    if (too_soon || !atomic_compare_exchange_strong(&rl->last_ms, &last, now_ms)) {
        atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
        return false;
    }
    *suppressed = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
    return true;
}

/* Writes all of buf with one write(2) unless interrupted or cut short. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* nowhere left to report it */
        buf += n;
        len -= (size_t)n;
    }
}

static void emit(tg_log_level level, const char *subsys, uint64_t suppressed, const char *fmt,
                 va_list ap) __attribute__((format(printf, 4, 0)));

static void emit(tg_log_level level, const char *subsys, uint64_t suppressed, const char *fmt,
                 va_list ap)
{
    int saved = errno;
    char line[TG_LOG_LINE_MAX];
    size_t off = 0;

    int journal = atomic_load_explicit(&journal_mode, memory_order_relaxed);
    if (journal < 0) { /* first line: look at stderr (races here compute the same answer) */
        journal = is_journal_stream(atomic_load(&out_fd));
        atomic_store(&journal_mode, journal);
    }
    if (journal) {
        off = (size_t)snprintf(line, sizeof line, "<%d>", (int)level);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        off = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        off += (size_t)snprintf(line + off, sizeof line - off, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    off += (size_t)snprintf(line + off, sizeof line - off, "%-5s [%.32s] ",
                            tg_log_level_name(level), subsys);

    char tail[64] = "";
    if (suppressed)
        snprintf(tail, sizeof tail, " (%" PRIu64 " similar messages suppressed)", suppressed);
    size_t tail_len = strlen(tail);

    /* The message gets what is left after the tail and the newline. */
    size_t room = sizeof line - off - tail_len - 1;
    errno = saved; /* for %m */
    int n = vsnprintf(line + off, room, fmt, ap);
    size_t msg_len = n < 0 ? 0 : (size_t)n;
    if (msg_len >= room) {
        msg_len = room - 1;
        memcpy(line + off + msg_len - 3, "...", 3);
    }
    for (size_t i = off; i < off + msg_len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            line[i] = '?';
    }
    off += msg_len;
    memcpy(line + off, tail, tail_len);
    off += tail_len;
    line[off++] = '\n';

    write_all(atomic_load_explicit(&out_fd, memory_order_relaxed), line, off);
    errno = saved;
}

void tg_log_vwrite(tg_log_level level, const char *subsys, const char *fmt, va_list ap)
{
    emit(level, subsys, 0, fmt, ap);
}

void tg_log_write(tg_log_level level, const char *subsys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, subsys, 0, fmt, ap);
    va_end(ap);
}

void tg_log_write_suppressed(tg_log_level level, const char *subsys, uint64_t suppressed,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, subsys, suppressed, fmt, ap);
    va_end(ap);
}
