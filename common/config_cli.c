/*
 * config_cli.c - the configuration options of the programs' command lines (config_cli.h).
 */
#include "config_cli.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

struct tg_config_cli {
    const char *prog;
    unsigned flags;
    const char *config_path;
    const char *board_path;
    const char **sets; /* room for argc: every argument a --set */
    size_t n_sets;
    bool check;
};

struct tg_config_cli *tg_config_cli_new(const char *prog, unsigned flags, int argc)
{
    struct tg_config_cli *cli = calloc(1, sizeof *cli);
    if (!cli)
        return NULL;
    cli->prog = prog;
    cli->flags = flags;
    cli->sets = calloc(argc > 0 ? (size_t)argc : 1, sizeof *cli->sets);
    if (!cli->sets) {
        tg_config_cli_destroy(cli);
        return NULL;
    }
    return cli;
}

void tg_config_cli_destroy(struct tg_config_cli *cli)
{
    if (!cli)
        return;
    free(cli->sets);
    free(cli);
}

enum tg_config_cli_action tg_config_cli_parse(struct tg_config_cli *cli, int argc, char **argv)
{
    /* Two tables, so that a program without boards refuses --board as getopt_long does any
     * other unknown option. */
    static const struct option with_board[] = {
        {"config", required_argument, NULL, 'c'},
        {"board", required_argument, NULL, 'b'},
        {"set", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const struct option without_board[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool board = cli->flags & TG_CONFIG_CLI_BOARD;
    int opt;
    while ((opt = getopt_long(argc, argv, board ? "c:b:s:h" : "c:s:h",
                              board ? with_board : without_board, NULL)) != -1) {
        switch (opt) {
        case 'c': cli->config_path = optarg; break;
        case 'b': cli->board_path = optarg; break;
        /* --set values are applied after the files are loaded: layers make the order moot,
         * but collecting them first lets the files' errors be reported first. */
        case 's': cli->sets[cli->n_sets++] = optarg; break;
        case 'C': cli->check = true; break;
        case 'V': return TG_CONFIG_CLI_VERSION;
        case 'h': return TG_CONFIG_CLI_HELP;
        default: return TG_CONFIG_CLI_USAGE; /* getopt_long said why */
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument \"%s\"\n", cli->prog, argv[optind]);
        return TG_CONFIG_CLI_USAGE;
    }
    if (!cli->config_path) {
        fprintf(stderr, "%s: -c FILE is required\n", cli->prog);
        return TG_CONFIG_CLI_USAGE;
    }
    return TG_CONFIG_CLI_RUN;
}

bool tg_config_cli_checking(const struct tg_config_cli *cli) { return cli->check; }
const char *tg_config_cli_config_path(const struct tg_config_cli *cli) { return cli->config_path; }
const char *tg_config_cli_board_path(const struct tg_config_cli *cli) { return cli->board_path; }

const char *const *tg_config_cli_sets(const struct tg_config_cli *cli, size_t *n)
{
    *n = cli->n_sets;
    return cli->sets;
}

tg_err tg_config_cli_load(const struct tg_config_cli *cli, struct tg_config *cfg,
                          const char *default_board)
{
    const char *board = cli->board_path ? cli->board_path : default_board;
    tg_err err = TG_OK;
    if (board)
        err = tg_config_load_file(cfg, TG_CONFIG_BOARD, board);
    if (err == TG_OK)
        err = tg_config_load_file(cfg, TG_CONFIG_FILE, cli->config_path);
    for (size_t i = 0; err == TG_OK && i < cli->n_sets; i++)
        err = tg_config_set(cfg, cli->sets[i]);
    if (err != TG_OK) {
        const char *e = tg_config_error(cfg);
        size_t n = strlen(e);
        if (!n)
            e = tg_strerror(err);
        fprintf(stderr, "%s: configuration error:\n%s%s", cli->prog, e,
                n && e[n - 1] == '\n' ? "" : "\n");
    }
    return err;
}

int tg_config_cli_setup_logging(const struct tg_config_cli *cli, const struct tg_config *cfg)
{
    tg_log_level level;
    if (tg_log_level_parse(tg_config_get_str(cfg, "log", "level"), &level) == TG_OK)
        tg_log_set_level(level);
    const char *debug = tg_config_get_str(cfg, "log", "debug");
    if (*debug && tg_log_enable_debug(debug) != TG_OK) {
        fprintf(stderr, "%s: %s: [log] debug: cannot enable \"%s\"\n", cli->prog,
                tg_config_origin(cfg, "log", "debug"), debug);
        return -1;
    }
    return 0;
}

int tg_config_cli_dumped(const struct tg_config_cli *cli, tg_err dumped)
{
    if (dumped == TG_OK && fflush(stdout) == 0)
        return EXIT_SUCCESS;
    fprintf(stderr, "%s: cannot write the configuration: %s\n", cli->prog, strerror(errno));
    return EXIT_FAILURE;
}
