/*
 * metrics_http.h - the HTTP exporter: serves a metrics registry to Prometheus.
 *
 *   GET /metrics  200, Content-Type: text/plain; version=0.0.4; charset=utf-8, the registry
 *                 rendered at request time (tg_metrics_render)
 *   GET /healthz  200 "ok\n", or 503 with the health callback's reason and a newline
 *   other paths   404; methods other than GET and HEAD: 405
 *
 * libmicrohttpd serves requests on one internal thread that it owns ("the exporter thread"): the
 * health callback and the registry's computed gauges run there, one request at a time.
 */
#ifndef TG_METRICS_HTTP_H
#define TG_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

struct tg_metrics_http;

/* The program's health, asked on each GET /healthz, on the exporter thread. Returns true when
 * healthy; otherwise writes a one-line reason (NUL-terminated, at most reason_len bytes with the
 * NUL, truncated if longer) into `reason`. Must be thread-safe and quick: it should read state
 * the program maintains, not probe peers. */
typedef bool (*tg_metrics_health_fn)(void *ud, char *reason, size_t reason_len);

/* Starts serving `m` on `listen_addr`: "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464", "[::]:9464"
 * (a numeric address and a port; port 0 picks a free port, see tg_metrics_http_port). `health`
 * may be NULL: always healthy. `m` must outlive the exporter. Returns NULL with a message in `err`
 * (e.g. "metrics listen 127.0.0.1:9464: Address already in use") when the address is invalid or
 * cannot be bound, or the server cannot start. Call from any thread. */
struct tg_metrics_http *tg_metrics_http_start(struct tg_metrics *m, const char *listen_addr,
                                              tg_metrics_health_fn health, void *ud, char *err,
                                              size_t errlen);

/* Checks listen_addr as tg_metrics_http_start() would, without binding: true, or false with
 * the same message in err. For --check-config, so that "garbage" or port 99999 is refused
 * before anything starts. */
bool tg_metrics_http_check_listen(const char *listen_addr, char *err, size_t errlen);

/* The TCP port the exporter listens on (useful after asking for port 0). */
uint16_t tg_metrics_http_port(const struct tg_metrics_http *h);

/* Stops serving: closes the listening socket and open connections and joins the exporter thread,
 * so no callback runs once it returns. NULL is a no-op. Not from the exporter thread itself. */
void tg_metrics_http_stop(struct tg_metrics_http *h);

#endif
