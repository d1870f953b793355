/*
 * Unit tests for config_cli.c: the options the programs share, what each asks for, the three
 * layers loaded in their order with the program's name on every error, a bad [log] debug
 * list refused, and --check-config's last step refusing a failed dump.
 *
 * Files are written into a fresh mkdtemp directory that the tests chdir into; stderr is
 * captured in a file there, so the messages can be compared with what a user reads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "unit_tmp.h"
#include "config_cli.h"

static const struct tg_config_key schema[] = {
    TG_CFG_INT("a", "board_only", "0", 0, 100, "set by the board file, count"),
    TG_CFG_INT("a", "both", "0", 0, 100, "set by both files, count"),
    TG_CFG_INT("a", "all", "0", 0, 100, "set by both files and --set, count"),
    TG_CFG_STR("log", "level", "info", "log level"),
    TG_CFG_STR("log", "debug", "", "subsystems with debug output"),
};
#define N_SCHEMA (sizeof schema / sizeof schema[0])

static int group_setup(void **state)
{
    (void)state;
    return tg_unit_tmpdir_enter("config-cli");
}

static int group_teardown(void **state)
{
    (void)state;
    return tg_unit_tmpdir_leave();
}

/* stderr into a file while fn's work runs; returns what was written (malloc'd). */
static int saved_stderr = -1;

static void capture_begin(void)
{
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_non_null(freopen("stderr.txt", "w", stderr));
}

static char *capture_end(void)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    FILE *fp = fopen("stderr.txt", "r");
    assert_non_null(fp);
    static char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    return strdup(text);
}

/* Parses a NULL-terminated argument list (argv[0] included) with a fresh getopt state. */
static enum tg_config_cli_action parse(struct tg_config_cli *cli, char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    optind = 0; /* glibc: start over, as a new process would */
    return tg_config_cli_parse(cli, argc, args);
}

static void options_are_collected(void **state)
{
    (void)state;
    char *args[] = {"prog", "-c", "x.ini", "--board", "b.ini", "--set", "a.all=1",
                    "-s", "a.all=2", "--check-config", NULL};
    struct tg_config_cli *cli = tg_config_cli_new("prog", TG_CONFIG_CLI_BOARD, 10);
    assert_non_null(cli);
    assert_int_equal(parse(cli, args), TG_CONFIG_CLI_RUN);
    assert_string_equal(tg_config_cli_config_path(cli), "x.ini");
    assert_string_equal(tg_config_cli_board_path(cli), "b.ini");
    assert_true(tg_config_cli_checking(cli));
    size_t n;
    const char *const *sets = tg_config_cli_sets(cli, &n);
    assert_int_equal(n, 2);
    assert_string_equal(sets[0], "a.all=1");
    assert_string_equal(sets[1], "a.all=2");
    tg_config_cli_destroy(cli);

    char *plain[] = {"prog", "--config=y.ini", NULL};
    cli = tg_config_cli_new("prog", 0, 2);
    assert_int_equal(parse(cli, plain), TG_CONFIG_CLI_RUN);
    assert_string_equal(tg_config_cli_config_path(cli), "y.ini");
    assert_null(tg_config_cli_board_path(cli));
    assert_false(tg_config_cli_checking(cli));
    tg_config_cli_sets(cli, &n);
    assert_int_equal(n, 0);
    tg_config_cli_destroy(cli);
    tg_config_cli_destroy(NULL);
}

static void actions_and_usage_errors(void **state)
{
    (void)state;
    static const struct {
        unsigned flags;
        char *args[6];
        enum tg_config_cli_action want;
        const char *said; /* on stderr, or NULL for nothing */
    } cases[] = {
        {TG_CONFIG_CLI_BOARD, {"p", "--version", NULL}, TG_CONFIG_CLI_VERSION, NULL},
        {TG_CONFIG_CLI_BOARD, {"p", "-h", NULL}, TG_CONFIG_CLI_HELP, NULL},
        {0, {"p", "--help", NULL}, TG_CONFIG_CLI_HELP, NULL},
        {TG_CONFIG_CLI_BOARD, {"p", NULL}, TG_CONFIG_CLI_USAGE, "prog: -c FILE is required\n"},
        {TG_CONFIG_CLI_BOARD, {"p", "-c", "x.ini", "extra", NULL}, TG_CONFIG_CLI_USAGE,
         "prog: unexpected argument \"extra\"\n"},
        /* a program without boards refuses -b and --board like any unknown option */
        {0, {"p", "-c", "x.ini", "--board=b.ini", NULL}, TG_CONFIG_CLI_USAGE, "--board"},
        {0, {"p", "-b", "b.ini", "-c", "x.ini", NULL}, TG_CONFIG_CLI_USAGE, "-- 'b'"},
        {TG_CONFIG_CLI_BOARD, {"p", "-c", NULL}, TG_CONFIG_CLI_USAGE, "'c'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tg_config_cli *cli = tg_config_cli_new("prog", cases[i].flags, 6);
        assert_non_null(cli);
        capture_begin();
        enum tg_config_cli_action got = parse(cli, (char **)cases[i].args);
        char *said = capture_end();
        if (got != cases[i].want)
            fail_msg("case %zu: action %d, want %d (said: %s)", i, got, cases[i].want, said);
        if (cases[i].said ? !strstr(said, cases[i].said) : *said != '\0')
            fail_msg("case %zu: said \"%s\", want \"%s\"", i, said,
                     cases[i].said ? cases[i].said : "");
        free(said);
        tg_config_cli_destroy(cli);
    }
}

static void layers_load_in_order(void **state)
{
    (void)state;
    tg_unit_write_file("board.ini", "[a]\nboard_only = 1\nboth = 1\nall = 1\n");
    tg_unit_write_file("cfg.ini", "[a]\nboth = 2\nall = 2\n");
    char *args[] = {"prog", "-c", "cfg.ini", "-b", "board.ini", "--set", "a.all=3", NULL};
    struct tg_config_cli *cli = tg_config_cli_new("prog", TG_CONFIG_CLI_BOARD, 7);
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    assert_int_equal(parse(cli, args), TG_CONFIG_CLI_RUN);
    assert_int_equal(tg_config_cli_load(cli, cfg, "not-read.ini"), TG_OK);
    assert_int_equal(tg_config_get_int(cfg, "a", "board_only"), 1);
    assert_int_equal(tg_config_get_int(cfg, "a", "both"), 2);
    assert_int_equal(tg_config_get_int(cfg, "a", "all"), 3);
    assert_string_equal(tg_config_origin(cfg, "a", "board_only"), "board.ini:2");
    tg_config_destroy(cfg);
    tg_config_cli_destroy(cli);

    /* Without -b the default board applies. */
    char *no_board[] = {"prog", "-c", "cfg.ini", NULL};
    cli = tg_config_cli_new("prog", TG_CONFIG_CLI_BOARD, 3);
    cfg = tg_config_new(schema, N_SCHEMA);
    assert_int_equal(parse(cli, no_board), TG_CONFIG_CLI_RUN);
    assert_int_equal(tg_config_cli_load(cli, cfg, "board.ini"), TG_OK);
    assert_int_equal(tg_config_get_int(cfg, "a", "board_only"), 1);
    tg_config_destroy(cfg);
    tg_config_cli_destroy(cli);
}

static void load_errors_name_the_program_and_the_place(void **state)
{
    (void)state;
    tg_unit_write_file("bad.ini", "[a]\nboth = 2\nall = lots\n");
    tg_unit_write_file("good.ini", "[a]\nboth = 2\n");
    static const struct {
        char *args[6];
        const char *said;
    } cases[] = {
        {{"prog", "-c", "bad.ini", NULL},
         "prog: configuration error:\nbad.ini:3: [a] all: expected"},
        {{"prog", "-c", "good.ini", "--set", "a.all=101", NULL},
         "prog: configuration error:\n--set a.all=101: "},
        {{"prog", "-c", "missing.ini", NULL}, "prog: configuration error:\nmissing.ini"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tg_config_cli *cli = tg_config_cli_new("prog", TG_CONFIG_CLI_BOARD, 5);
        struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
        assert_int_equal(parse(cli, (char **)cases[i].args), TG_CONFIG_CLI_RUN);
        capture_begin();
        tg_err err = tg_config_cli_load(cli, cfg, NULL);
        char *said = capture_end();
        assert_int_equal(err, TG_ERR_CONFIG);
        if (strncmp(said, cases[i].said, strlen(cases[i].said)) != 0)
            fail_msg("case %zu: said \"%s\", want it to begin \"%s\"", i, said, cases[i].said);
        assert_int_equal(said[strlen(said) - 1], '\n');
        free(said);
        tg_config_destroy(cfg);
        tg_config_cli_destroy(cli);
    }
}

static void logging_refuses_an_unknown_subsystem(void **state)
{
    (void)state;
    tg_unit_write_file("log.ini", "[log]\nlevel = warn\n");
    char *args[] = {"prog", "-c", "log.ini", "--set", "log.debug=no such thing!", NULL};
    struct tg_config_cli *cli = tg_config_cli_new("prog", 0, 5);
    struct tg_config *cfg = tg_config_new(schema, N_SCHEMA);
    assert_int_equal(parse(cli, args), TG_CONFIG_CLI_RUN);
    assert_int_equal(tg_config_cli_load(cli, cfg, NULL), TG_OK);
    capture_begin();
    int rc = tg_config_cli_setup_logging(cli, cfg);
    char *said = capture_end();
    assert_int_equal(rc, -1);
    assert_string_equal(said, "prog: --set: [log] debug: cannot enable \"no such thing!\"\n");
    free(said);
    tg_config_destroy(cfg);
    tg_config_cli_destroy(cli);
}

static void dumped_refuses_a_failed_dump(void **state)
{
    (void)state;
    struct tg_config_cli *cli = tg_config_cli_new("prog", 0, 1);
    assert_int_equal(tg_config_cli_dumped(cli, TG_OK), EXIT_SUCCESS);
    capture_begin();
    int status = tg_config_cli_dumped(cli, TG_ERR_IO);
    char *said = capture_end();
    assert_int_equal(status, EXIT_FAILURE);
    assert_non_null(strstr(said, "prog: cannot write the configuration: "));
    free(said);
    tg_config_cli_destroy(cli);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_are_collected),
        cmocka_unit_test(actions_and_usage_errors),
        cmocka_unit_test(layers_load_in_order),
        cmocka_unit_test(load_errors_name_the_program_and_the_place),
        cmocka_unit_test(logging_refuses_an_unknown_subsystem),
        cmocka_unit_test(dumped_refuses_a_failed_dump),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
