/*
 * engine_hole.c - holes in a partition's records: spans of event time in which no device of
 * the partition produced a record at all.
 *
 * A device is silent only while its partition keeps flowing (consumer.c, "Silence or
 * stall"). The sweep follows that rule on the partition's clock; this file gives the same
 * rule to the gaps judged when a reading arrives (engine.c, silence_on_sample). When the
 * source freezes, a gateway restarts, or a broker restart loses QoS0 readings, every series
 * of the partition has the same hole in event time, and judged one by one each of them
 * would look silent: thousands of alerts for one upstream event. So the partition notes a
 * hole whenever its highest event time jumps by more than the hole limit
 * (tg_engine_config_set_partition_hole_ms: the worker sets [worker] stall_after_ms, one limit
 * for "the partition stopped" on the wall clock and in event time alike), and a series' gap is judged without its overlap with
 * the partition's recent holes.
 *
 * Everything here is a function of event times and the order of records, never of a clock,
 * so a partition replayed after a crash or restored elsewhere reaches the same holes (they
 * are part of its snapshot) and the same alerts.
 */
#include <inttypes.h>
#include <string.h>

#include "engine_internal.h"
#include "log.h"

void engine__hole_record(struct tg_engine *en, struct partition_state *ps, int32_t partition,
                         int64_t ts)
{
    int64_t limit = en->ec->partition_hole_ms;
    if (ps->n_holes == TG_ENGINE_PARTITION_HOLES) {
        memmove(ps->holes, ps->holes + 1, (TG_ENGINE_PARTITION_HOLES - 1) * sizeof *ps->holes);
        ps->n_holes--;
    }
    ps->holes[ps->n_holes++] = (struct part_hole){ps->max_ts, ts};
    ps->dirty = true;
    en->stats.partition_gaps++;
    /* One line per hole tells the story (one upstream event, not every device going quiet);
     * the counter carries the volume when a flapping source makes many. */
    TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "engine", 10000,
                       "partition %" PRId32 ": no record for %" PRId64 " ms of event time "
                       "(%" PRId64 " to %" PRId64 " ms since the epoch), more than "
                       "stall_after_ms (%" PRId64 "): a hole upstream (a stalled source, a "
                       "restart, readings lost), not silence of each device; gaps of its "
                       "series over it are judged without it",
                       partition, ts - ps->max_ts, ps->max_ts, ts, limit);
}

int64_t engine__hole_overlap(const struct tg_engine *en, const struct partition_state *ps,
                             int64_t from, int64_t to)
{
    int64_t tol = en->ec->partition_hole_ms;
    if (tol <= 0 || to <= from)
        return 0;
    /* Holes are apart from each other, but widened by tol they may meet: the sum is capped
     * at the gap rather than merged, which is the same whenever it matters (a gap mostly
     * made of holes is discounted whole). */
    int64_t sum = 0;
    for (unsigned i = 0; i < ps->n_holes; i++) {
        int64_t a = ps->holes[i].from - tol, b = ps->holes[i].to + tol;
        if (a < from)
            a = from;
        if (b > to)
            b = to;
        if (b > a)
            sum += b - a;
    }
    return sum < to - from ? sum : to - from;
}
