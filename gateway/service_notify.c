/*
 * service_notify.c - the sd_notify(3) datagram protocol (see service_notify.h).
 */
#include "service_notify.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

struct tg_notify {
    int fd;
    struct sockaddr_un addr;
    socklen_t addr_len;
    int64_t watchdog_ms;
    atomic_bool send_failed_logged;
};

/* WATCHDOG_USEC applies to this process only if WATCHDOG_PID is unset or names it: a child
 * that inherited the variables must not ping for its parent. */
static int64_t watchdog_ms_from_env(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    if (!usec || !*usec)
        return 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && *pid) {
        char *end;
        long long p = strtoll(pid, &end, 10);
        if (*end || p != (long long)getpid())
            return 0;
    }
    char *end;
    errno = 0;
    unsigned long long us = strtoull(usec, &end, 10);
    if (errno || *end || us == 0)
        return 0;
    int64_t ms = (int64_t)(us / 1000);
    return ms > 0 ? ms : 1;
}

struct tg_notify *tg_notify_new(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return NULL;
    size_t len = strlen(path);
    struct tg_notify *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->fd = -1;
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof n->addr.sun_path) {
        TG_LOG_WARN("main", "NOTIFY_SOCKET \"%s\" is not a socket path: not notifying systemd",
                    path);
        goto fail;
    }
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0'; /* abstract namespace: the name has no terminator */
    n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/'));
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0) {
        TG_LOG_WARN("main", "cannot create the systemd notification socket: %s", strerror(errno));
        goto fail;
    }
    n->watchdog_ms = watchdog_ms_from_env();
    return n;
fail:
    tg_notify_destroy(n);
    return NULL;
}

int64_t tg_notify_watchdog_ms(const struct tg_notify *n) { return n ? n->watchdog_ms : 0; }

tg_err tg_notify_send(struct tg_notify *n, const char *msg)
{
    if (!n)
        return TG_OK;
    ssize_t r;
    do
        r = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
                   n->addr_len);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (!atomic_exchange(&n->send_failed_logged, true))
            TG_LOG_WARN("main", "cannot notify systemd: %s (logged once)", strerror(errno));
        return TG_ERR_IO;
    }
    return TG_OK;
}

void tg_notify_destroy(struct tg_notify *n)
{
    if (!n)
        return;
    if (n->fd >= 0)
        close(n->fd);
    free(n);
}
