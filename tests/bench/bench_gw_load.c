/*
 * bench_gw_load.c - the load of bench_gateway: K publisher connections standing in for the
 * devices, and the bare libmosquitto subscriber that gives the ceiling and the receive floor.
 *
 * Each runs in its own child process (bench_gateway --role pub|sub ...), so that its CPU time
 * is its own and the publisher's work is the same in the ceiling run and the gateway run.
 * They talk to the parent over stdin/stdout, one line at a time:
 *
 * Publisher: bench_gateway --role pub HOST PORT CONNECTIONS DEVICES RATE DURATION_MS INFLIGHT BOOT
 *                                      [FORMAT]
 *   RATE is messages per second over all connections, 0 for "as fast as the in-flight window
 *   allows" (INFLIGHT unacknowledged QoS1 messages per connection). Device i publishes on
 *   connection i % CONNECTIONS, to telemetry/dev-<i>, with boot BOOT and seq 0, 1, 2, ... and
 *   ts = the wall clock when the message is made. FORMAT json (the default: the native keys in
 *   a JSON object, about 120 bytes, as issue 14's load) or cbor (native CBOR, about 103 bytes).
 *   MQTT 3.1.1, TCP_NODELAY.
 *     child: ready                    every connection has its CONNACK
 *     parent: go
 *     child: started WALL_US          the first message goes out now
 *     child: published sent=N bytes=B elapsed_us=E     DURATION_MS is over
 *     child: done sent=N acked=A      every PUBACK is in (or 20 s passed), then it exits 0
 *     child: error TEXT               and exits 1
 *
 * Subscriber: bench_gateway --role sub HOST PORT CONNECTIONS TOPIC QOS [RECEIVE_MAX]
 *   CONNECTIONS libmosquitto clients (MQTT v5, clean start, TCP_NODELAY like the gateway's
 *   ingress), each driven by libmosquitto's own
 *   network thread (mosquitto_loop_start), subscribed to TOPIC, or with several connections to
 *   the shared subscription $share/bench/TOPIC, as the gateway does. It does nothing with a
 *   message but count it.
 *     child: ready                    every subscription is acknowledged
 *     parent: count      child: count N
 *     parent: quit (or EOF)           it disconnects and exits 0
 */
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_gw.h"
#include "codec_native.h"
#include "record.h"

#define PUB_ACK_TIMEOUT_US (20 * INT64_C(1000000))
#define PUB_CONNECT_TIMEOUT_US (15 * INT64_C(1000000))
#define SUB_READY_TIMEOUT_US (15 * INT64_C(1000000))
/* A paced publisher connection stops sending (and falls behind the rate) beyond this many
 * unacknowledged messages, so that a stalled broker cannot make it queue without bound. */
#define PUB_PACED_OUTSTANDING_MAX 2000
#define PAYLOAD_MAX 256

int64_t bgw_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t bgw_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------------------------------
 * Publisher
 */

struct pub_conn {
    struct mosquitto *mosq;
    bool connected;
    int connack_rc;
    uint64_t sent;
    uint64_t acked;
    unsigned next;      /* index among this connection's devices */
    unsigned n_devices; /* devices c, c + K, c + 2K, ... below DEVICES */
};

struct publisher {
    const char *host;
    int port;
    unsigned n_conns;
    unsigned n_devices;
    uint64_t rate;       /* msg/s, 0 = window-limited */
    int64_t duration_us;
    unsigned inflight;
    uint64_t boot;
    bool json;           /* JSON payloads, else native CBOR */
    struct pub_conn *conns;
    char (*topics)[32];
    uint64_t *seq;       /* next seq per device */
    struct pollfd *pfds;
    uint64_t rng;
    uint64_t sent_total;
    uint64_t bytes_total;
    int64_t last_misc_us;
    bool failed;
};

static void pub_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pub_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("error ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static uint64_t next_random(struct publisher *pb)
{
    pb->rng ^= pb->rng << 13;
    pb->rng ^= pb->rng >> 7;
    pb->rng ^= pb->rng << 17;
    return pb->rng;
}

static void on_pub_connect(struct mosquitto *mosq, void *ud, int rc)
{
    struct pub_conn *pc = ud;
    pc->connack_rc = rc;
    pc->connected = rc == 0;
}

static void on_pub_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
    struct pub_conn *pc = ud;
    pc->connected = false;
}

static void on_pub_publish(struct mosquitto *mosq, void *ud, int mid)
{
    struct pub_conn *pc = ud;
    pc->acked++;
}

/* The native keys in a JSON object, as a device without a CBOR encoder (or mosquitto_pub)
 * sends them. Short metric names keep it near issue 14's ~120-byte readings. The values are
 * those pub_one() makes, which %g prints exactly (1/16, 1/2 and 1/100 steps, integers) except
 * the vibration, cut to 6 significant digits. */
static tg_err encode_json(const struct tg_reading *rd, uint8_t *buf, size_t cap, size_t *len)
{
    static const char *const short_names[] = {"temp", "humidity", "pressure", "bat", "vib"};
    size_t n = (size_t)snprintf((char *)buf, cap,
                                "{\"seq\":%" PRIu64 ",\"boot\":%" PRIu64 ",\"ts\":%" PRId64
                                ",\"m\":{",
                                rd->seq, rd->boot, rd->ts_ms);
    for (size_t i = 0; i < rd->n_metrics && n < cap; i++)
        n += (size_t)snprintf((char *)buf + n, cap - n, "%s\"%s\":%g", i ? "," : "",
                              short_names[i], rd->metrics[i].value);
    if (n < cap)
        n += (size_t)snprintf((char *)buf + n, cap - n, "}}");
    if (n >= cap)
        return TG_ERR_TOO_LARGE;
    *len = n;
    return TG_OK;
}

/* Makes the next reading of one of pc's devices and publishes it (QoS1). */
static int pub_one(struct publisher *pb, unsigned conn_idx)
{
    struct pub_conn *pc = &pb->conns[conn_idx];
    unsigned dev = conn_idx + pb->n_conns * pc->next;
    pc->next = (pc->next + 1) % pc->n_devices;
    uint64_t r = next_random(pb);
    /* Plausible sensor values in the forms real sensors give: temperature in 1/16 degC steps
     * (a DS18B20), humidity in 0.5 % steps, pressure with two decimals, the battery in mV, and
     * a vibration RMS on every other reading, so payloads carry 4 or 5 metrics. */
    struct tg_metric metrics[5] = {
        {.name = "temperature", .value = 18.0 + (double)(dev % 64) / 16.0 + (double)(r & 15) / 16.0},
        {.name = "humidity", .value = 35.0 + (double)((r >> 4) % 60) / 2.0},
        {.name = "pressure", .value = 1013.25 + (double)((int)((r >> 10) % 2001) - 1000) / 100.0},
        {.name = "battery", .value = (double)(3000 + (r >> 21) % 300)},
        {.name = "vibration", .value = (double)((r >> 30) % 100000) / 65536.0 + 1e-3},
    };
    struct tg_reading rd = {
        .device = pb->topics[dev] + strlen("telemetry/"),
        .has_seq = true,
        .boot = pb->boot,
        .seq = pb->seq[dev],
        .ts_ms = bgw_wall_us() / 1000,
        .n_metrics = (pb->seq[dev] & 1) ? 5 : 4,
        .metrics = metrics,
    };
    uint8_t buf[PAYLOAD_MAX];
    size_t len;
    tg_err err = pb->json ? encode_json(&rd, buf, sizeof buf, &len)
                          : tg_codec_native_encode(&rd, buf, sizeof buf, &len);
    if (err != TG_OK) {
        pub_fail("encoding a payload failed: %s", tg_strerror(err));
        return -1;
    }
    pb->seq[dev]++;
    int rc = mosquitto_publish(pc->mosq, NULL, pb->topics[dev], (int)len, buf, 1, false);
    if (rc != MOSQ_ERR_SUCCESS) {
        pub_fail("mosquitto_publish on connection %u: %s", conn_idx, mosquitto_strerror(rc));
        return -1;
    }
    pc->sent++;
    pb->sent_total++;
    pb->bytes_total += len;
    return 0;
}

/* One round of network I/O on every connection, waiting at most timeout_ms for any. */
static int pub_pump(struct publisher *pb, int timeout_ms)
{
    for (unsigned i = 0; i < pb->n_conns; i++) {
        pb->pfds[i].fd = mosquitto_socket(pb->conns[i].mosq);
        pb->pfds[i].events = POLLIN | (mosquitto_want_write(pb->conns[i].mosq) ? POLLOUT : 0);
        pb->pfds[i].revents = 0;
    }
    int n = poll(pb->pfds, pb->n_conns, timeout_ms);
    if (n < 0 && errno != EINTR) {
        pub_fail("poll: %s", strerror(errno));
        return -1;
    }
    for (unsigned i = 0; n > 0 && i < pb->n_conns; i++) {
        short rev = pb->pfds[i].revents;
        struct mosquitto *mosq = pb->conns[i].mosq;
        int rc = MOSQ_ERR_SUCCESS;
        if (rev & (POLLIN | POLLERR | POLLHUP))
            rc = mosquitto_loop_read(mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS && (rev & POLLOUT))
            rc = mosquitto_loop_write(mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            pub_fail("connection %u lost: %s", i, mosquitto_strerror(rc));
            return -1;
        }
    }
    int64_t now = bgw_mono_us();
    if (now - pb->last_misc_us >= 100000) { /* keep-alive pings */
        pb->last_misc_us = now;
        for (unsigned i = 0; i < pb->n_conns; i++)
            mosquitto_loop_misc(pb->conns[i].mosq);
    }
    return 0;
}

static int pub_connect_all(struct publisher *pb)
{
    for (unsigned i = 0; i < pb->n_conns; i++) {
        struct pub_conn *pc = &pb->conns[i];
        char id[64];
        snprintf(id, sizeof id, "bench-pub-%" PRIu64 "-%u", pb->boot, i);
        pc->mosq = mosquitto_new(id, true, pc);
        if (!pc->mosq) {
            pub_fail("mosquitto_new: %s", strerror(errno));
            return -1;
        }
        mosquitto_connect_callback_set(pc->mosq, on_pub_connect);
        mosquitto_disconnect_callback_set(pc->mosq, on_pub_disconnect);
        mosquitto_publish_callback_set(pc->mosq, on_pub_publish);
        int rc = mosquitto_int_option(pc->mosq, MOSQ_OPT_SEND_MAXIMUM, (int)pb->inflight);
        /* One connection stands in for many devices, each of which would send one message
         * now and then on its own connection: no Nagle delay behind earlier messages. */
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_int_option(pc->mosq, MOSQ_OPT_TCP_NODELAY, 1);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_connect(pc->mosq, pb->host, pb->port, 60);
        if (rc != MOSQ_ERR_SUCCESS) {
            pub_fail("connecting %s:%d: %s", pb->host, pb->port, mosquitto_strerror(rc));
            return -1;
        }
        pc->connack_rc = -1;
    }
    int64_t deadline = bgw_mono_us() + PUB_CONNECT_TIMEOUT_US;
    for (;;) {
        unsigned up = 0;
        for (unsigned i = 0; i < pb->n_conns; i++) {
            if (pb->conns[i].connack_rc > 0) {
                pub_fail("connection %u refused: %s", i,
                         mosquitto_connack_string(pb->conns[i].connack_rc));
                return -1;
            }
            up += pb->conns[i].connected;
        }
        if (up == pb->n_conns)
            return 0;
        if (bgw_mono_us() > deadline) {
            pub_fail("only %u of %u connections up after %" PRId64 " s", up, pb->n_conns,
                     PUB_CONNECT_TIMEOUT_US / 1000000);
            return -1;
        }
        if (pub_pump(pb, 10) < 0)
            return -1;
    }
}

/* Publishes for duration_us: paced with a token bucket (the number due is rate x elapsed,
 * handed out round robin over the connections), or, with rate 0, keeping every connection's
 * in-flight window full. */
static int pub_run(struct publisher *pb)
{
    int64_t t0 = bgw_mono_us();
    int64_t end = t0 + pb->duration_us;
    unsigned rr = 0;
    pb->last_misc_us = t0;
    printf("started %" PRId64 "\n", bgw_wall_us());
    fflush(stdout);
    for (int64_t now = t0; now < end; now = bgw_mono_us()) {
        int timeout_ms;
        if (pb->rate > 0) {
            uint64_t due = (uint64_t)((double)(now - t0) * (double)pb->rate / 1e6) + 1;
            while (pb->sent_total < due) {
                unsigned tries = 0;
                while (tries < pb->n_conns &&
                       pb->conns[rr].sent - pb->conns[rr].acked >= PUB_PACED_OUTSTANDING_MAX) {
                    rr = (rr + 1) % pb->n_conns;
                    tries++;
                }
                if (tries == pb->n_conns)
                    break; /* every connection is backed up: fall behind the rate */
                if (pub_one(pb, rr) < 0)
                    return -1;
                rr = (rr + 1) % pb->n_conns;
            }
            timeout_ms = 1;
        } else {
            for (unsigned i = 0; i < pb->n_conns; i++)
                while (pb->conns[i].sent - pb->conns[i].acked < pb->inflight)
                    if (pub_one(pb, i) < 0)
                        return -1;
            timeout_ms = 5;
        }
        if (pub_pump(pb, timeout_ms) < 0)
            return -1;
    }
    int64_t elapsed = bgw_mono_us() - t0;
    printf("published sent=%" PRIu64 " bytes=%" PRIu64 " elapsed_us=%" PRId64 "\n",
           pb->sent_total, pb->bytes_total, elapsed);
    fflush(stdout);

    int64_t deadline = bgw_mono_us() + PUB_ACK_TIMEOUT_US;
    uint64_t acked;
    for (;;) {
        acked = 0;
        for (unsigned i = 0; i < pb->n_conns; i++)
            acked += pb->conns[i].acked;
        if (acked >= pb->sent_total || bgw_mono_us() > deadline)
            break;
        if (pub_pump(pb, 10) < 0)
            return -1;
    }
    printf("done sent=%" PRIu64 " acked=%" PRIu64 "\n", pb->sent_total, acked);
    fflush(stdout);
    return 0;
}

int bgw_publisher_main(int argc, char **argv)
{
    uint64_t port, conns, devices, rate, duration_ms, inflight, boot;
    bool json = argc < 9 || strcmp(argv[8], "json") == 0;
    if ((argc != 8 && argc != 9) || (argc == 9 && !json && strcmp(argv[8], "cbor") != 0) ||
        !parse_u64(argv[1], &port) || !parse_u64(argv[2], &conns) ||
        !parse_u64(argv[3], &devices) || !parse_u64(argv[4], &rate) ||
        !parse_u64(argv[5], &duration_ms) || !parse_u64(argv[6], &inflight) ||
        !parse_u64(argv[7], &boot) || port == 0 || port > 65535 || conns == 0 ||
        conns > 10000 || devices < conns || devices > 10000000 || inflight == 0 ||
        inflight > 65535) {
        fprintf(stderr, "usage: bench_gateway --role pub HOST PORT CONNECTIONS DEVICES RATE "
                        "DURATION_MS INFLIGHT BOOT [json|cbor]\n");
        return 2;
    }
    struct publisher pb = {
        .host = argv[0], .port = (int)port, .n_conns = (unsigned)conns,
        .n_devices = (unsigned)devices, .rate = rate, .duration_us = (int64_t)duration_ms * 1000,
        .inflight = (unsigned)inflight, .boot = boot, .json = json, .rng = 0x9E3779B97F4A7C15u ^ boot,
    };
    int status = 1;
    mosquitto_lib_init();
    pb.conns = calloc(pb.n_conns, sizeof *pb.conns);
    pb.pfds = calloc(pb.n_conns, sizeof *pb.pfds);
    pb.topics = calloc(pb.n_devices, sizeof *pb.topics);
    pb.seq = calloc(pb.n_devices, sizeof *pb.seq);
    if (!pb.conns || !pb.pfds || !pb.topics || !pb.seq) {
        pub_fail("out of memory");
        goto cleanup;
    }
    for (unsigned d = 0; d < pb.n_devices; d++)
        snprintf(pb.topics[d], sizeof pb.topics[d], "telemetry/dev-%05u", d);
    for (unsigned i = 0; i < pb.n_conns; i++)
        pb.conns[i].n_devices = (pb.n_devices - i + pb.n_conns - 1) / pb.n_conns;

    if (pub_connect_all(&pb) < 0)
        goto cleanup;
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) != 0)
        goto cleanup; /* the parent gave up */
    if (pub_run(&pb) < 0)
        goto cleanup;
    for (unsigned i = 0; i < pb.n_conns; i++)
        mosquitto_disconnect(pb.conns[i].mosq);
    status = 0;

cleanup:
    for (unsigned i = 0; pb.conns && i < pb.n_conns; i++)
        mosquitto_destroy(pb.conns[i].mosq);
    free(pb.conns);
    free(pb.pfds);
    free(pb.topics);
    free(pb.seq);
    mosquitto_lib_cleanup();
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Bare subscriber
 */

struct sub_conn {
    const char *filter;
    int qos;
    atomic_uint_fast64_t *received;
    atomic_int *subscribed;
    atomic_int *failed;
};

static void on_sub_connect(struct mosquitto *mosq, void *ud, int rc)
{
    struct sub_conn *sc = ud;
    if (rc != 0) {
        fprintf(stderr, "bare subscriber: connection refused: %s\n", mosquitto_connack_string(rc));
        atomic_store(sc->failed, 1);
        return;
    }
    int src = mosquitto_subscribe(mosq, NULL, sc->filter, sc->qos);
    if (src != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bare subscriber: subscribe: %s\n", mosquitto_strerror(src));
        atomic_store(sc->failed, 1);
    }
}

static void on_sub_subscribe(struct mosquitto *mosq, void *ud, int mid, int qos_count,
                             const int *granted)
{
    struct sub_conn *sc = ud;
    if (qos_count < 1 || granted[0] > 2) {
        fprintf(stderr, "bare subscriber: subscription refused\n");
        atomic_store(sc->failed, 1);
        return;
    }
    atomic_fetch_add(sc->subscribed, 1);
}

/* The whole point: a message costs libmosquitto's receive path and one relaxed increment. */
static void on_sub_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg)
{
    struct sub_conn *sc = ud;
    atomic_fetch_add_explicit(sc->received, 1, memory_order_relaxed);
}

static void on_sub_disconnect(struct mosquitto *mosq, void *ud, int rc)
{
    if (rc != 0)
        fprintf(stderr, "bare subscriber: connection lost (%d), reconnecting\n", rc);
}

int bgw_subscriber_main(int argc, char **argv)
{
    uint64_t port, conns, qos, receive_max = 0;
    if ((argc != 5 && argc != 6) || !parse_u64(argv[1], &port) || !parse_u64(argv[2], &conns) ||
        !parse_u64(argv[4], &qos) || (argc == 6 && !parse_u64(argv[5], &receive_max)) ||
        port == 0 || port > 65535 || conns == 0 || conns > 64 || qos > 2 || receive_max > 65535) {
        fprintf(stderr, "usage: bench_gateway --role sub HOST PORT CONNECTIONS TOPIC QOS "
                        "[RECEIVE_MAX]\n");
        return 2;
    }
    const char *host = argv[0];
    atomic_uint_fast64_t received = 0;
    atomic_int subscribed = 0, failed = 0;
    char filter[256];
    if (conns > 1)
        snprintf(filter, sizeof filter, "$share/bench/%s", argv[3]);
    else
        snprintf(filter, sizeof filter, "%s", argv[3]);

    int status = 1;
    mosquitto_lib_init();
    struct mosquitto **mosqs = calloc(conns, sizeof *mosqs);
    struct sub_conn *scs = calloc(conns, sizeof *scs);
    if (!mosqs || !scs) {
        fprintf(stderr, "bare subscriber: out of memory\n");
        goto cleanup;
    }
    for (unsigned i = 0; i < conns; i++) {
        scs[i] = (struct sub_conn){.filter = filter, .qos = (int)qos, .received = &received,
                                   .subscribed = &subscribed, .failed = &failed};
        char id[64];
        snprintf(id, sizeof id, "bench-sub-%ld-%u", (long)getpid(), i);
        mosqs[i] = mosquitto_new(id, true, &scs[i]);
        if (!mosqs[i]) {
            fprintf(stderr, "bare subscriber: mosquitto_new: %s\n", strerror(errno));
            goto cleanup;
        }
        mosquitto_connect_callback_set(mosqs[i], on_sub_connect);
        mosquitto_subscribe_callback_set(mosqs[i], on_sub_subscribe);
        mosquitto_message_callback_set(mosqs[i], on_sub_message);
        mosquitto_disconnect_callback_set(mosqs[i], on_sub_disconnect);
        /* the same socket options as the gateway's ingress: v5, TCP_NODELAY */
        int rc = mosquitto_int_option(mosqs[i], MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_int_option(mosqs[i], MOSQ_OPT_TCP_NODELAY, 1);
        if (rc == MOSQ_ERR_SUCCESS && receive_max > 0)
            rc = mosquitto_int_option(mosqs[i], MOSQ_OPT_RECEIVE_MAXIMUM, (int)receive_max);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_connect(mosqs[i], host, (int)port, 60);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_loop_start(mosqs[i]);
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "bare subscriber: connecting %s:%d: %s\n", host, (int)port,
                    mosquitto_strerror(rc));
            goto cleanup;
        }
    }
    int64_t deadline = bgw_mono_us() + SUB_READY_TIMEOUT_US;
    while (atomic_load(&subscribed) < (int)conns) {
        if (atomic_load(&failed) || bgw_mono_us() > deadline) {
            fprintf(stderr, "bare subscriber: %d of %u subscriptions acknowledged\n",
                    atomic_load(&subscribed), (unsigned)conns);
            goto cleanup;
        }
        nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
    }
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "count", 5) == 0) {
            printf("count %" PRIuFAST64 "\n", atomic_load(&received));
            fflush(stdout);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        }
    }
    status = 0;

cleanup:
    for (unsigned i = 0; mosqs && i < conns; i++) {
        if (!mosqs[i])
            continue;
        mosquitto_disconnect(mosqs[i]);
        mosquitto_loop_stop(mosqs[i], false);
        mosquitto_destroy(mosqs[i]);
    }
    free(mosqs);
    free(scs);
    mosquitto_lib_cleanup();
    return status;
}
