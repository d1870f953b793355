/*
 * boot_state.h - the simulated devices' boot counters, kept between runs of `tidegate-sim
 * run`, as a real node keeps its own in flash: every run starts each device at the boot after
 * the one its previous run used, so a second run against the same gateway is new data, not
 * duplicates of the first, and the audit can tell the runs apart.
 *
 * The counters live in one text file, DIR/tidegate-sim.boots:
 *
 *   tidegate-sim-boots 1
 *   <device id> <boot>          one line per device ever run with this directory
 *
 * tg_sim_boots_advance() takes an exclusive lock (flock on DIR/tidegate-sim.boots.lock, held
 * for milliseconds), reads the file (missing: every boot 0), gives each device the boot after
 * its stored one, and writes the file back (a temporary file, fsync'ed and renamed) before
 * any reading carries the new boots: like the firmware core, which makes a new boot durable
 * before using it. Concurrent runs sharing a directory therefore never hand out the same
 * boot twice. Devices in the file but not in this run keep their line.
 *
 * Threads: any; the lock also serializes processes.
 */
#ifndef TG_SIM_BOOT_STATE_H
#define TG_SIM_BOOT_STATE_H

#include <stddef.h>
#include <stdint.h>

#define TG_SIM_BOOTS_FILE "tidegate-sim.boots"

/* Sets boots[i] to the boot device ids[i] runs with in this run (stored + 1, so >= 1) and
 * stores them in dir. 0, or -1 with a message naming the file in err. */
int tg_sim_boots_advance(const char *dir, const char *const *ids, size_t n, uint64_t *boots,
                         char *err, size_t errlen);

/* The default directory of the state when --state-dir is not given: the ledger's directory
 * when there is a ledger, else $XDG_STATE_HOME/tidegate-sim or ~/.local/state/tidegate-sim
 * (created). Writes it into out; 0, or -1 with a message in err. */
int tg_sim_boots_default_dir(const char *ledger_path, char *out, size_t size, char *err,
                             size_t errlen);

#endif
