/*
 * harness_internal.h - what harness.c (processes, Mosquitto, devkafka) and harness_kafka.c
 * (the real Kafka broker) share, and tests do not see: the harness's log lines, small string
 * and file helpers, and the two steps every broker's start and stop have in common. Defined
 * in harness.c. Called from the test's main thread, like the rest of the harness.
 */
#ifndef TG_HARNESS_INTERNAL_H
#define TG_HARNESS_INTERNAL_H

#include <sys/types.h>

#include "harness.h"

#define HARNESS_LOOPBACK "127.0.0.1"

/* A line on stderr: "harness: " (and "<subsystem>: " when not NULL), then fmt. */
void harness__log(const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* vasprintf() that returns NULL on failure. */
char *harness__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Sleeps ms milliseconds, EINTR included. */
void harness__sleep_ms(int ms);

/* The size of the file at path, 0 when it does not exist: where a restarted process's log
 * lines begin. */
off_t harness__file_size(const char *path);

/* The contents of path from byte offset on, malloc'd and NUL-terminated; NULL if unreadable. */
char *harness__read_file_from(const char *path, off_t offset);

/* Prints the log at path from offset on under the title what, at most its last 6,000 bytes:
 * a process that failed says why near the end (a JVM after pages of stack trace). */
void harness__print_log(const char *what, const char *path, off_t offset);

/* The end of a broker start that did not get ready: when its log from offset says the port
 * was taken between tg_harness_free_port() and the bind, returns 1 (the caller retries on
 * other ports); otherwise prints why (when not NULL) and the log, and returns -1. Either way
 * stops the process (SIGTERM, SIGKILL after stop_timeout_ms) and destroys it; *proc becomes
 * NULL. */
int harness__start_failed(struct tg_harness_proc **proc, const char *log_path, off_t offset,
                          int stop_timeout_ms, const char *why);

/* Where the brokers' starts get a free port: tg_harness_free_port(), unless a test of the
 * harness itself (test_harness.c) puts in a source that hands out a port it holds, to see
 * the start take another instead of failing. */
extern int (*harness__port_source)(void);

/* Stops *proc (SIGTERM, SIGKILL after timeout_ms), destroys it and sets *proc to NULL.
 * Returns the wait status (tg_harness_proc_stop()); a NULL *proc returns 0. */
int harness__proc_end(struct tg_harness_proc **proc, int timeout_ms);

#endif
