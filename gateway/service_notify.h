/*
 * service_notify.h - tells the service manager (systemd) how the daemon is doing: the
 * sd_notify(3) protocol, spoken directly.
 *
 * The protocol is one datagram per notification, "KEY=VALUE" lines, sent to the AF_UNIX
 * socket named by $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace). systemd
 * documents it as a stable interface that programs may implement themselves; doing so keeps
 * libsystemd out of the gateway's link and out of every cross build's sysroot (README,
 * "The service under systemd"). What tidegate sends:
 *   READY=1      once the journal is recovered and the first MQTT connection is up
 *   WATCHDOG=1   from the pipeline thread, so a stuck pipeline misses its pings and systemd
 *                restarts it (WatchdogSec in config/tidegate.service)
 *   STATUS=...   one line: MQTT, Kafka, backlog (systemctl status shows it)
 *   STOPPING=1   when SIGTERM starts the clean stop
 *
 * Threads: every function may be called from any thread once _new returned; sends are single
 * datagrams, which the kernel never interleaves.
 */
#ifndef TG_SERVICE_NOTIFY_H
#define TG_SERVICE_NOTIFY_H

#include <stdint.h>

#include "error.h"

struct tg_notify;

/* From the environment: NOTIFY_SOCKET, and WATCHDOG_USEC (ignored when WATCHDOG_PID is set and
 * names another process, as sd_watchdog_enabled(3) does). NULL when NOTIFY_SOCKET is unset or
 * unusable (logged): not under a service manager that listens. Every call below takes NULL
 * and then does nothing. */
struct tg_notify *tg_notify_new(void);

/* The watchdog timeout the manager asked for, in ms; 0: no watchdog. */
int64_t tg_notify_watchdog_ms(const struct tg_notify *n);

/* Sends msg ("KEY=VALUE" lines) as one datagram. TG_OK, or TG_ERR_IO (logged, rate-limited by
 * the caller's cadence: a manager that went away is not worth more than a line). */
tg_err tg_notify_send(struct tg_notify *n, const char *msg);

/* Closes the socket. NULL-safe. */
void tg_notify_destroy(struct tg_notify *n);

#endif
