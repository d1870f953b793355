/*
 * log.h - leveled, subsystem-tagged logging to stderr (or journald's stream).
 *
 *     TG_LOG_INFO("journal", "opened %s (%zu segments)", path, n);
 *     TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", 10000, "dropping %s: queue full", id);
 *
 * One line per message, written with a single write(2) of at most TG_LOG_LINE_MAX bytes
 * (less than PIPE_BUF), so lines from different threads never interleave:
 *
 *     2025-05-20T08:15:02.117Z warn  [journal] message          (stderr is a tty or file)
 *     <4>warn  [journal] message                                (stderr is journald's stream)
 *
 * The journald form is chosen when JOURNAL_STREAM names the device and inode of the
 * output fd (the check systemd documents, so a child whose stderr was redirected does not
 * inherit it by mistake): journald then reads the <N> syslog priority and adds its own
 * timestamp. Control characters in a message are written as '?', so data from the wire
 * cannot forge log lines; a message longer than the line is cut and ends in "...".
 *
 * Filtering: a message is written when its level is at or above the global level, or it
 * is a debug message of a subsystem switched on with tg_log_enable_debug(). The macros
 * test an atomic threshold inline, so a disabled debug line costs one load and a branch
 * and its arguments are not evaluated.
 *
 * Threads: tg_log_write() and the macros may be called from any thread; so may
 * tg_log_set_level(). tg_log_enable_debug() and tg_log_set_fd() are for startup (and
 * tests): do not call them while other threads log.
 *
 * errno is preserved across every logging call, and %m works.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"

/* The values are the syslog priorities, as journald expects them. */
typedef enum tg_log_level {
    TG_LOG_LEVEL_ERROR = 3,
    TG_LOG_LEVEL_WARN = 4,
    TG_LOG_LEVEL_INFO = 6,
    TG_LOG_LEVEL_DEBUG = 7,
} tg_log_level;

/* The longest line written, newline included; longer messages are cut. */
#define TG_LOG_LINE_MAX 2048

/* {"error", "warn", "info", "debug", NULL}: choices for a TG_CFG_ENUM log level key. */
extern const char *const tg_log_level_choices[];

/* "error", "warn", "info" or "debug" to a level; TG_ERR_CONFIG for anything else. */
tg_err tg_log_level_parse(const char *text, tg_log_level *level);

/* "error", "warn", "info", "debug". */
const char *tg_log_level_name(tg_log_level level);

/* Messages at this level and above are written. Default: info. */
void tg_log_set_level(tg_log_level level);

/*
 * Switches debug output on for the subsystems in list, a comma-separated list of tags
 * ("journal,kafka"; spaces allowed around names), or for every subsystem with "all".
 * Replaces the previous list; "" switches per-subsystem debug off. Tags are [a-z0-9_-],
 * at most 31 characters, at most 16 of them. TG_ERR_CONFIG (and no change) otherwise.
 */
tg_err tg_log_enable_debug(const char *list);

/* True when a message of this level and subsystem would be written. */
bool tg_log_enabled(tg_log_level level, const char *subsys);

/*
 * Sends output to fd instead of stderr (fd < 0: back to stderr), and re-checks whether
 * it is journald's stream. The fd is not owned. For tests and daemons that log elsewhere.
 */
void tg_log_set_fd(int fd);

/* Writes one line, unconditionally (the macros filter first). */
void tg_log_write(tg_log_level level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tg_log_vwrite(tg_log_level level, const char *subsys, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define TG_LOG(level, subsys, ...)                                                        \
    do {                                                                                  \
        if (tg_log_maybe_(level) && tg_log_enabled((level), (subsys)))                   \
            tg_log_write((level), (subsys), __VA_ARGS__);                                 \
    } while (0)

#define TG_LOG_ERROR(subsys, ...) TG_LOG(TG_LOG_LEVEL_ERROR, subsys, __VA_ARGS__)
#define TG_LOG_WARN(subsys, ...) TG_LOG(TG_LOG_LEVEL_WARN, subsys, __VA_ARGS__)
#define TG_LOG_INFO(subsys, ...) TG_LOG(TG_LOG_LEVEL_INFO, subsys, __VA_ARGS__)
#define TG_LOG_DEBUG(subsys, ...) TG_LOG(TG_LOG_LEVEL_DEBUG, subsys, __VA_ARGS__)

/*
 * Rate limiting for lines that repeat under load: at most one line per interval_ms from
 * each call site (the state is a static per expansion). The next line written after some
 * were suppressed ends in "(N similar messages suppressed)". Suppressed messages are
 * counted only while the level is enabled; a burst followed by silence is never reported
 * (counters carry the volume, logs the story).
 */
#define TG_LOG_RATELIMITED(level, subsys, interval_ms, ...)                               \
    do {                                                                                  \
        static struct tg_log_ratelimit tg_log_rl_ = TG_LOG_RATELIMIT_INIT;                \
        uint64_t tg_log_suppressed_;                                                      \
        if (tg_log_maybe_(level) && tg_log_enabled((level), (subsys)) &&                 \
            tg_log_ratelimit_pass(&tg_log_rl_, (interval_ms), tg_log_monotonic_ms(),      \
                                  &tg_log_suppressed_))                                   \
            tg_log_write_suppressed((level), (subsys), tg_log_suppressed_, __VA_ARGS__);  \
    } while (0)

/* The rate limiter under TG_LOG_RATELIMITED, public so it can be driven with fake time. */
struct tg_log_ratelimit {
    _Atomic int64_t last_ms;     /* when the last line was let through; INT64_MIN: never */
    _Atomic uint64_t suppressed; /* lines held back since */
};
#define TG_LOG_RATELIMIT_INIT {INT64_MIN, 0}

/*
 * True when a line may be written at now_ms: none was let through in the interval before.
 * Then *suppressed is the number held back since the last one, and the count restarts.
 * False counts one more suppressed line. Lock-free; any thread.
 */
bool tg_log_ratelimit_pass(struct tg_log_ratelimit *rl, int64_t interval_ms, int64_t now_ms,
                           uint64_t *suppressed);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t tg_log_monotonic_ms(void);

/* tg_log_write() with " (N similar messages suppressed)" appended when suppressed > 0. */
void tg_log_write_suppressed(tg_log_level level, const char *subsys, uint64_t suppressed,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Internal to the macros: the most verbose level any subsystem currently logs at. */
extern _Atomic int tg_log_verbosity_;
#define tg_log_maybe_(level) \
    ((int)(level) <= atomic_load_explicit(&tg_log_verbosity_, memory_order_relaxed))

#endif
