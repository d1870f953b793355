/*
 * config_cli.h - what the programs' command lines share about their configuration: the
 * options -c/--config FILE, -b/--board FILE (where the program takes a board file),
 * -s/--set section.key=value (repeatable), --check-config, --version and -h/--help; loading
 * the layers they name into a struct tg_config (config.h), with the one error format of
 * every program; and the last step of --check-config, printing what was loaded.
 *
 * tidegate, tidegate-worker and tidegate-node parse with it; each keeps its own usage text,
 * version line and checks of values across keys.
 *
 * Threads: the main thread, before any other starts (getopt_long keeps global state).
 */
#ifndef TG_CONFIG_CLI_H
#define TG_CONFIG_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "error.h"

/* Flags for tg_config_cli_new(). */
#define TG_CONFIG_CLI_BOARD 0x1u /* the program takes -b/--board FILE */

/* What the command line asks for. */
enum tg_config_cli_action {
    TG_CONFIG_CLI_RUN,     /* -c FILE given: load the configuration, then check or run */
    TG_CONFIG_CLI_VERSION, /* --version: the caller prints its versions and exits 0 */
    TG_CONFIG_CLI_HELP,    /* -h: the caller prints its usage to stdout and exits 0 */
    TG_CONFIG_CLI_USAGE,   /* a bad command line, said on stderr: the caller prints its usage
                            * to stderr and exits with its usage status */
};

struct tg_config_cli;

/* A parser for program prog (the name its messages start with; not copied, so a string
 * literal) and a command line of argc arguments. NULL when out of memory. */
struct tg_config_cli *tg_config_cli_new(const char *prog, unsigned flags, int argc);

/* NULL is a no-op. */
void tg_config_cli_destroy(struct tg_config_cli *cli);

/* Parses argv (getopt_long, from optind). An argument that is not an option, or no -c, is a
 * usage error (said on stderr). Call once per handle. The paths and --set values point into
 * argv. */
enum tg_config_cli_action tg_config_cli_parse(struct tg_config_cli *cli, int argc, char **argv);

/* --check-config was given. */
bool tg_config_cli_checking(const struct tg_config_cli *cli);

/* The paths given with -c and -b (NULL when not given). */
const char *tg_config_cli_config_path(const struct tg_config_cli *cli);
const char *tg_config_cli_board_path(const struct tg_config_cli *cli);

/* The --set values, in command-line order (n in *n). */
const char *const *tg_config_cli_sets(const struct tg_config_cli *cli, size_t *n);

/* Loads the layers into cfg: the board file (-b, else default_board when not NULL), the
 * config file, then each --set. On failure prints "<prog>: configuration error:" and every
 * problem of the failing load (file:line: [section] key: what was expected) to stderr, and
 * returns its error (TG_ERR_CONFIG for a bad file or value). */
tg_err tg_config_cli_load(const struct tg_config_cli *cli, struct tg_config *cfg,
                          const char *default_board);

/* Applies the [log] section of cfg: level, and the debug subsystems (a bad debug list is
 * said as "<prog>: FILE:LINE: [log] debug: cannot enable ..." and returns -1). 0 on success.
 * tidegate and tidegate-worker; the node says more about its subsystems itself. */
int tg_config_cli_setup_logging(const struct tg_config_cli *cli, const struct tg_config *cfg);

/* The last step of --check-config, after the program has dumped the configuration to stdout
 * (dumped: what the dump returned): flushes stdout and returns EXIT_SUCCESS, or prints
 * "<prog>: cannot write the configuration: <strerror(errno)>" and returns EXIT_FAILURE, so
 * that a full disk or a closed pipe is not taken for a good configuration. */
int tg_config_cli_dumped(const struct tg_config_cli *cli, tg_err dumped);

#endif
