/*
 * mqtt_nopair.c - see mqtt_nopair.h. This file defines socketpair(), which takes precedence
 * over libc's for the whole program. So it is a library of its own (tidegate_mqtt_nopair),
 * linked only by the poll-driven libmosquitto clients (gateway ingress, simulator, node
 * transport), not part of tidegate_common.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mqtt_nopair.h"

static _Thread_local bool refuse;

void tg_mqtt_nopair_begin(void)
{
    refuse = true;
}

void tg_mqtt_nopair_end(void)
{
    refuse = false;
}

int socketpair(int domain, int type, int protocol, int sv[2])
{
    if (refuse && domain == AF_UNIX) {
        errno = EMFILE;
        return -1;
    }
    return (int)syscall(SYS_socketpair, domain, type, protocol, sv);
}
