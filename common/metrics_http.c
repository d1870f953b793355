/*
 * metrics_http.c - /metrics and /healthz over libmicrohttpd.
 *
 * The exporter binds its listening socket itself and hands it to libmicrohttpd
 * (MHD_OPTION_LISTEN_SOCKET): bind errors then come back as a plain errno ("Address already in
 * use") instead of a log line inside the library, and the bound port is read with getsockname().
 * libmicrohttpd runs one internal thread (MHD_USE_INTERNAL_POLLING_THREAD) that accepts and
 * serves every connection; scrapes are rare and small, so one thread is plenty, and it keeps the
 * health callback and computed gauges on a single, documented thread.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"
#define LISTEN_BACKLOG 16
#define CONNECTION_LIMIT 32
#define CONNECTION_TIMEOUT_S 10
#define HEALTH_REASON_MAX 256

struct tg_metrics_http {
    struct tg_metrics *m;
    tg_metrics_health_fn health;
    void *ud;
    struct MHD_Daemon *daemon;
    uint16_t port;
};

/* ------------------------------------------------------------------------------------------ */
/* listen address                                                                              */

/* Splits "host:port" or "[v6]:port" and resolves it numerically (no DNS). */
static bool parse_listen(const char *listen_addr, struct sockaddr_storage *addr,
                         socklen_t *addrlen, char *err, size_t errlen)
{
    static const char expected[] = "expected HOST:PORT with a numeric IPv4 address or a "
                                   "bracketed IPv6 address, e.g. 127.0.0.1:9464 or [::1]:9464";
    if (!listen_addr || !*listen_addr) {
        snprintf(err, errlen, "metrics listen: empty address, %s", expected);
        return false;
    }

    const char *host_start, *port;
    size_t host_len;
    if (listen_addr[0] == '[') {
        const char *close = strchr(listen_addr, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "metrics listen %s: %s", listen_addr, expected);
            return false;
        }
        host_start = listen_addr + 1;
        host_len = (size_t)(close - host_start);
        port = close + 2;
    } else {
        const char *colon = strrchr(listen_addr, ':');
        if (!colon || memchr(listen_addr, ':', (size_t)(colon - listen_addr))) {
            snprintf(err, errlen, "metrics listen %s: %s", listen_addr, expected);
            return false;
        }
        host_start = listen_addr;
        host_len = (size_t)(colon - listen_addr);
        port = colon + 1;
    }
    char host[INET6_ADDRSTRLEN + 64]; /* room for an IPv6 zone: fe80::1%eth0 */
    if (host_len == 0 || host_len >= sizeof host) {
        snprintf(err, errlen, "metrics listen %s: %s", listen_addr, expected);
        return false;
    }
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    size_t port_len = strlen(port);
    unsigned long port_num = 0;
    bool port_ok = port_len >= 1 && port_len <= 5;
    for (size_t i = 0; port_ok && i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9')
            port_ok = false;
        else
            port_num = port_num * 10 + (unsigned long)(port[i] - '0');
    }
    if (!port_ok || port_num > 65535) {
        snprintf(err, errlen, "metrics listen %s: port must be a number from 0 to 65535 "
                 "(0 picks a free port)", listen_addr);
        return false;
    }

    struct addrinfo hints = { 0 };
    hints.ai_family = listen_addr[0] == '[' ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res || res->ai_addrlen > sizeof *addr) {
        snprintf(err, errlen, "metrics listen %s: '%s' is not a numeric %s address; %s",
                 listen_addr, host, hints.ai_family == AF_INET6 ? "IPv6" : "IPv4", expected);
        if (res)
            freeaddrinfo(res);
        return false;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

static int open_listener(const char *listen_addr, const struct sockaddr_storage *addr,
                         socklen_t addrlen, uint16_t *port, char *err, size_t errlen)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "metrics listen %s: %s", listen_addr, strerror(errno));
        return -1;
    }
    /* Lets a restarted process bind while old connections sit in TIME_WAIT; on Linux it does not
     * let two processes listen on the same port. */
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)addr, addrlen) != 0 ||
        listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "metrics listen %s: %s", listen_addr, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) != 0) {
        snprintf(err, errlen, "metrics listen %s: %s", listen_addr, strerror(errno));
        close(fd);
        return -1;
    }
    if (bound.ss_family == AF_INET6)
        *port = ntohs(((const struct sockaddr_in6 *)(const void *)&bound)->sin6_port);
    else
        *port = ntohs(((const struct sockaddr_in *)(const void *)&bound)->sin_port);
    return fd;
}

/* ------------------------------------------------------------------------------------------ */
/* requests (exporter thread)                                                                  */

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status,
                               struct MHD_Response *resp, const char *content_type)
{
    if (!resp)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result respond_static(struct MHD_Connection *conn, unsigned int status,
                                      const char *body)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)(uintptr_t)body,
                                        MHD_RESPMEM_PERSISTENT);
    return respond(conn, status, resp, CONTENT_TYPE_TEXT);
}

static enum MHD_Result serve_metrics(struct tg_metrics_http *h, struct MHD_Connection *conn)
{
    char *text = NULL;
    size_t len = 0;
    if (tg_metrics_render(h->m, &text, &len) != TG_OK)
        return respond_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    /* libmicrohttpd frees `text` with free() once the response is sent. */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(text);
    return respond(conn, MHD_HTTP_OK, resp, CONTENT_TYPE_METRICS);
}

static enum MHD_Result serve_health(struct tg_metrics_http *h, struct MHD_Connection *conn)
{
    char reason[HEALTH_REASON_MAX];
    reason[0] = '\0';
    if (!h->health || h->health(h->ud, reason, sizeof reason))
        return respond_static(conn, MHD_HTTP_OK, "ok\n");

    char body[HEALTH_REASON_MAX + 1];
    reason[sizeof reason - 1] = '\0';
    /* one line: the reason up to its first newline */
    reason[strcspn(reason, "\r\n")] = '\0';
    int n = snprintf(body, sizeof body, "%s\n", reason[0] ? reason : "unhealthy");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, resp, CONTENT_TYPE_TEXT);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct tg_metrics_http *h = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(h, conn);
    if (strcmp(url, "/healthz") == 0)
        return serve_health(h, conn);
    return respond_static(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics or /healthz\n");
}

/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

/* True when `fd` still refers to the socket whose identity `st` recorded. */
static bool same_file(int fd, const struct stat *st)
{
    struct stat now;
    return fstat(fd, &now) == 0 && now.st_dev == st->st_dev && now.st_ino == st->st_ino;
}

bool tg_metrics_http_check_listen(const char *listen_addr, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    return parse_listen(listen_addr, &addr, &addrlen, err, errlen);
}

struct tg_metrics_http *tg_metrics_http_start(struct tg_metrics *m, const char *listen_addr,
                                              tg_metrics_health_fn health, void *ud, char *err,
                                              size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    if (!parse_listen(listen_addr, &addr, &addrlen, err, errlen))
        return NULL;

    struct tg_metrics_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "metrics listen %s: out of memory", listen_addr);
        return NULL;
    }
    h->m = m;
    h->health = health;
    h->ud = ud;

    int fd = open_listener(listen_addr, &addr, addrlen, &h->port, err, errlen);
    if (fd < 0) {
        free(h);
        return NULL;
    }
    struct stat fd_stat;
    if (fstat(fd, &fd_stat) != 0) {
        snprintf(err, errlen, "metrics listen %s: %s", listen_addr, strerror(errno));
        close(fd);
        free(h);
        return NULL;
    }

    /* On success the daemon owns fd and closes it in MHD_stop_daemon(). */
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
                                 on_request, h,
                                 MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
                                 MHD_OPTION_END);
    if (!h->daemon) {
        int saved = errno;
        /* Whether a failed start closed the socket is not documented: close it only if the
         * descriptor still names our socket, so that we never close a number another thread
         * has been handed since. */
        if (same_file(fd, &fd_stat))
            close(fd);
        snprintf(err, errlen, "metrics listen %s: cannot start the HTTP server (%s)", listen_addr,
                 saved ? strerror(saved) : "libmicrohttpd failed");
        free(h);
        return NULL;
    }
    return h;
}

uint16_t tg_metrics_http_port(const struct tg_metrics_http *h)
{
    return h->port;
}

void tg_metrics_http_stop(struct tg_metrics_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
