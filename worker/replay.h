/*
 * replay.h - `tidegate-worker replay`: the engine's detectors, offline, on a CSV of one
 * series, for tuning on recorded data without Kafka.
 *
 *   tidegate-worker replay --csv FILE [--metric NAME] [-c worker.ini] [--set k=v]...
 *
 * Input: `timestamp,value` per line; timestamps `YYYY-MM-DD HH:MM:SS` (UTC) or integer ms
 * since the epoch; a first line that is not data is a header and skipped; blank lines and
 * lines starting with '#' are skipped. Output on stdout: `timestamp,value,anomaly_score,
 * alert_state`, one line per input data line, timestamp and value as written in the input,
 * the score with 6 decimals, the alert state ("open", "update", "close" or empty). The
 * series is offered to a fresh engine as readings of device "replay" (metric NAME, default
 * "value") on partition 0: exactly what the streaming worker computes for those readings.
 *
 * Returns the process exit status: 0, 1 for a bad input line (FILE:LINE: what, on stderr),
 * 2 for a usage or config error.
 */
#ifndef TG_WORKER_REPLAY_H
#define TG_WORKER_REPLAY_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* argv[0] is the subcommand name ("replay"). The config schema is the worker's whole one
 * when the program also links worker_config.c (tidegate-worker), so -c takes the worker's
 * own file; otherwise (tidegate-worker-replay) the engine's sections alone. */
int tg_worker_replay_main(int argc, char **argv);

/* The same, with the config schema, stdout and stderr given (tests). The schema must
 * include tg_engine_config_keys(). */
int tg_worker_replay_run(int argc, char **argv, const struct tg_config_key *schema, size_t n,
                         FILE *out, FILE *err);

#endif
