/*
 * worker_config.h - tidegate-worker's configuration schema.
 *
 * The worker's own keys ([worker], [log], [kafka], [kafka.rdkafka], [metrics]) followed by
 * the engine's sections (tg_engine_config_keys(): detectors, windows, alerts), in one schema
 * loaded by the project's config module: same layering (defaults < board < file < --set),
 * same file:line:key errors, same redacted dump for --check-config.
 *
 * Threads: build and load on the main thread at startup; the getters only read afterwards.
 */
#ifndef TG_WORKER_CONFIG_H
#define TG_WORKER_CONFIG_H

#include <stddef.h>

#include "config.h"

/* Indices of [kafka] auto_offset_reset, as tg_config_get_enum() returns them. */
enum tg_worker_offset_reset { TG_WORKER_RESET_EARLIEST = 0, TG_WORKER_RESET_LATEST = 1 };

/* The whole schema (the worker's keys, then the engine's), static, n in *n; NULL when out of
 * memory. For `tidegate-worker replay`, which loads a full worker.ini. */
const struct tg_config_key *tg_worker_config_schema(size_t *n);

/* A new config holding the worker schema's defaults; NULL when out of memory. */
struct tg_config *tg_worker_config_new(void);

/* Checks what the schema cannot express: the instance id's form (after defaulting it to the
 * host name), distinct topic names. Writes "origin: [section] key: problem" lines to err.
 * The effective instance id goes to instance_id (at least 65 bytes). TG_OK or TG_ERR_CONFIG. */
tg_err tg_worker_config_check(const struct tg_config *cfg, char *instance_id, size_t id_size,
                              char *err, size_t errlen);

#endif
