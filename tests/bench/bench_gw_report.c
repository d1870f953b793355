/*
 * bench_gw_report.c - the tables bench_gateway prints: the bare subscriber next to the daemon
 * (with the gateway issue's targets), and the plugin next to the daemon path.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "bench_gw_run.h"

static const char *verdict(bool measured, bool met)
{
    return !measured ? "not measured" : met ? "met" : "NOT met";
}

static void row(const char *figure, const char *bare, const char *gateway, const char *target)
{
    printf("  %-48s %15s %16s   %s\n", figure, bare, gateway, target);
}

/* v with the given decimals, "-" when it is not a number. */
static char *num(char *buf, size_t size, int decimals, double v)
{
    if (isnan(v))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.*f", decimals, v);
    return buf;
}

void bgw_report(const struct bgw_ctx *cx, const struct bgw_ceiling_result *cr,
                   const struct bgw_gateway_result *gr)
{
    const struct bgw_opts *o = &cx->o;
    char a[64], b[64], t[160];
    const char *rate_note = o->rate == TARGET_RATE ? "" : " (target is for 10,000 msg/s)";
    bool outage = gr->ran && o->outage_s > 0;

    printf("\nload: %u publisher connections (MQTT 3.1.1, QoS1), %u devices, ", o->publishers,
           o->devices);
    if (o->rate)
        printf("%" PRIu64 " msg/s paced", o->rate);
    else
        printf("as fast as %u in-flight messages per connection allow", o->inflight);
    printf(", %.0f s, %s payloads of %.0f B on average\n", o->duration_s,
           o->json ? "JSON" : "native CBOR", cx->payload_avg);
    printf("gateway: %u MQTT connection(s), journal %s, %s%s%s\n", o->connections,
           o->mode == MODE_DURABLE ? "durable" : "spill", o->board ? "board " : "no board file",
           o->board ? o->board : "", o->n_sets ? ", with --set overrides" : "");
    printf("steady window: from %.0f s after the first message until %s:", o->warmup_s,
           outage ? "Kafka goes down" : "the publisher stops");
    if (cr->ran)
        printf(" %.1f s (bare subscriber)", cr->window_s);
    if (gr->ran)
        printf(" %.1f s (tidegate)", gr->window_s);
    printf("\n");
    if (cx->disk_is_tmpfs)
        printf("warning: the temporary directory is on tmpfs, where write_bytes counts nothing: "
               "set TMPDIR to a directory on disk\n");
    printf("\n");
    row("figure (steady window unless it says otherwise)", "bare subscriber", "tidegate",
        "target");
    row("published, whole run (msg/s)", cr->ran ? num(a, sizeof a, 0, cr->pub_rate) : "-",
        gr->ran ? num(b, sizeof b, 0, gr->pub_rate) : "-", "");
    row("received (msg/s)", cr->ran ? num(a, sizeof a, 0, cr->msgs_per_s) : "-",
        gr->ran ? num(b, sizeof b, 0, gr->received_per_s) : "-", "");
    if (!outage)
        row("not yet received when publishing stopped", cr->ran ? num(a, sizeof a, 0, cr->behind)
                                                                  : "-",
            gr->ran ? num(b, sizeof b, 0, gr->behind) : "-", "");
    row("delivered to Kafka (msg/s)", "-",
        gr->ran ? num(b, sizeof b, 0, gr->delivered_per_s) : "-", "");
    if (gr->ran && cr->ran) {
        double share = gr->delivered_per_s / cr->msgs_per_s;
        snprintf(t, sizeof t, ">= %.0f%%: %s%s", TARGET_CEILING_SHARE * 100,
                 verdict(true, share >= TARGET_CEILING_SHARE),
                 o->rate ? " (paced: both take the offered rate; --rate max tests the ceiling)"
                         : "");
        row("delivered / bare-subscriber received", "100%",
            (snprintf(b, sizeof b, "%.1f%%", share * 100), b), t);
    }
    row("CPU per message, total (us)", cr->ran ? num(a, sizeof a, 1, cr->cpu_us) : "-",
        gr->ran ? num(b, sizeof b, 1, gr->cpu_us) : "-", "");
    if (gr->ran && cr->ran) {
        double own = gr->cpu_us - cr->cpu_us;
        snprintf(t, sizeof t, "<= %.0f us: %s%s", TARGET_CPU_US,
                 verdict(true, own <= TARGET_CPU_US), rate_note);
        row("CPU per message above the receive floor (us)", "(the floor)",
            num(b, sizeof b, 1, own), t);
    }
    row("CPU used (cores)", cr->ran ? num(a, sizeof a, 2, cr->cpu_share) : "-",
        gr->ran ? num(b, sizeof b, 2, gr->cpu_share) : "-", "");
    row("broker CPU per message (us)", cr->ran ? num(a, sizeof a, 1, cr->broker_cpu_us) : "-",
        gr->ran ? num(b, sizeof b, 1, gr->broker_cpu_us) : "-", "");
    if (gr->ran)
        snprintf(t, sizeof t, "<= 16 MB: %s%s",
                 verdict(gr->hwm_kb >= 0, gr->hwm_kb >= 0 && gr->hwm_kb <= TARGET_RSS_KB),
                 rate_note);
    row("peak RSS, VmHWM (MB)", cr->ran ? num(a, sizeof a, 1, (double)cr->hwm_kb / 1024) : "-",
        gr->ran ? num(b, sizeof b, 1, (double)gr->hwm_kb / 1024) : "-", gr->ran ? t : "");
    if (outage)
        row("  same, whole run incl. outage and drain (MB)", "-",
            num(b, sizeof b, 1, (double)gr->hwm_run_kb / 1024), "");
    if (gr->ran && gr->io_ok) {
        if (o->mode == MODE_DURABLE)
            snprintf(t, sizeof t, "<= %.0f B (durable): %s%s", TARGET_WRITE_B,
                     verdict(true, gr->write_b <= TARGET_WRITE_B), rate_note);
        else
            snprintf(t, sizeof t, "(the target is for durable mode)");
        row("disk write_bytes per message (B)", "-", num(b, sizeof b, 1, gr->write_b), t);
        row(outage ? "  same, whole run incl. outage, start, stop (B)"
                   : "  same, whole run incl. start and stop (B)",
            "-", num(b, sizeof b, 1, gr->write_b_run), "");
        if (gr->cancelled_b_run > 0)
            row("  cancelled_write_bytes, whole run (B)", "-",
                num(b, sizeof b, 1, gr->cancelled_b_run), "");
        row("wchar / rchar per message (B)", "-",
            (snprintf(b, sizeof b, "%.0f / %.0f", gr->wchar_b, gr->rchar_b), b), "");
        row("disk read_bytes per message (B)", "-", num(b, sizeof b, 1, gr->read_b), "");
    } else if (gr->ran) {
        row("disk write_bytes per message (B)", "-", "no /proc/pid/io", "");
    }
    if (gr->ran) {
        snprintf(t, sizeof t, "p99 <= %.0f ms: %s%s", TARGET_P99_MS,
                 verdict(gr->lat_n > 0, gr->lat_n > 0 && gr->lat_p99 <= TARGET_P99_MS),
                 rate_note);
        if (gr->lat_n > 0)
            snprintf(b, sizeof b, "%.1f / %.1f", gr->lat_p50, gr->lat_p99);
        row("e2e latency p50 / p99, Kafka consumer (ms)", "-", gr->lat_n ? b : "-", t);
        row("  max (ms), and records in the window", "-",
            (snprintf(b, sizeof b, "%.0f, %zu", gr->lat_max, gr->lat_n), b), "");
        if (gr->hist_ok)
            snprintf(b, sizeof b, "%.1f / %s%.1f", gr->hist_p50, gr->hist_p99_beyond ? ">" : "",
                     gr->hist_p99);
        row("e2e latency p50 / p99, gateway histogram (ms)", "-", gr->hist_ok ? b : "-", "");
    }
    if (cr->ran)
        snprintf(a, sizeof a, "%" PRIu64 "/%" PRIu64, cr->received_total, cr->published);
    if (gr->ran)
        snprintf(b, sizeof b, "%.0f/%" PRIu64, gr->delivered_total, gr->published);
    row("received (delivered) / published, whole run", cr->ran ? a : "-", gr->ran ? b : "-",
        (cr->ran && !cr->complete) || (gr->ran && !gr->complete) ? "INCOMPLETE" : "");
    if (gr->ran) {
        snprintf(b, sizeof b, "%" PRIu64 "/%" PRIu64, gr->kafka_records, gr->published);
        row("records the Kafka consumer read / published", "-", b, "");
        snprintf(b, sizeof b, "%s",
                 gr->exit_status >= 0 && tg_harness_exited_ok(gr->exit_status) ? "exit 0"
                                                                               : "NOT clean");
        row("tidegate stop on SIGTERM", "-", b, "");
    }
    if (gr->ran && o->outage_s > 0 && gr->outage_ran) {
        printf("\noutage: every Kafka broker down for %.0f s, publishing going on\n",
               o->outage_s);
        row("journal records before the outage (max)", "-",
            num(b, sizeof b, 0, gr->baseline_records), "");
        row("backlog at recovery (journal records)", "-", num(b, sizeof b, 0, gr->backlog), "");
        row("  highest during the drain", "-", num(b, sizeof b, 0, gr->backlog_max), "");
        row("first delivery after recovery (s)", "-", num(b, sizeof b, 2, gr->reconnect_s), "");
        if (gr->drained) {
            row("drain time, recovery to normal level (s)", "-",
                num(b, sizeof b, 2, gr->drain_s), "");
            snprintf(t, sizeof t, ">= %.0f msg/s: %s", TARGET_DRAIN,
                     verdict(true, gr->drain_rate >= TARGET_DRAIN));
            row("drain rate, backlog / drain time (msg/s)", "-",
                num(b, sizeof b, 0, gr->drain_rate), t);
            row("  delivered/s from first delivery to drained", "-",
                num(b, sizeof b, 0, gr->drain_delivered_rate), "(backlog + live traffic)");
        } else {
            row("drain", "-", "did not finish", "");
        }
    }
    printf("\nCPU per message: utime+stime over the window / messages (delivered ones, for "
           "tidegate);\nthe receive floor is the bare subscriber's figure from the same run. "
           "On a shared machine\nthe figures move from run to run: compare runs, not digits.\n");
}

void bgw_report_plugin(const struct bgw_gateway_result *gr, const struct bgw_plugin_result *pr)
{
    printf("\n-- plugin mode (tidegate_mosq.so inside Mosquitto), same load --\n");
    printf("published %" PRIu64 " at %.0f msg/s; window %.1f s: received %.0f msg/s, delivered "
           "%.0f msg/s; delivered in all %.0f (%s); stopped %s\n",
           pr->published, pr->pub_rate, pr->window_s, pr->received_per_s, pr->delivered_per_s,
           pr->delivered_total, pr->complete ? "complete" : "INCOMPLETE",
           pr->stopped_clean ? "cleanly" : "NOT cleanly");
    if (pr->refused_total > 0)
        printf("refused while the hand-off queue was full (ingress_full): %.0f, lost (the "
               "bench's publishers have no durable acks)\n",
               pr->refused_total);
    printf("broker + plugin CPU per message: %.2f us (%.0f%% of a core); peak RSS %ld kB\n",
           pr->broker_cpu_us, pr->cpu_share * 100, pr->hwm_kb);
    if (gr->ran) {
        double daemon_path = gr->broker_cpu_us + gr->cpu_us;
        printf("daemon path (broker %.2f us + tidegate %.2f us): %.2f us per message\n",
               gr->broker_cpu_us, gr->cpu_us, daemon_path);
        printf("plugin path / daemon path: %.2f\n", pr->broker_cpu_us / daemon_path);
    }
}
