/*
 * test_sim_boots.c - the simulator's boot counters kept between runs (sim/boot_state.h):
 * each run boots every device one higher than the last, devices of other runs keep theirs,
 * concurrent runs never hand out the same boot, and a damaged file is refused with its name
 * and line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "boot_state.h"
#include "unit_tmp.h"

struct fixture {
    char dir[TG_UNIT_PATH_MAX];
    char path[TG_UNIT_PATH_MAX];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tg_unit_tmpdir_new(fx->dir, sizeof fx->dir, "sim-boots") != 0)
        return -1;
    tg_unit_path(fx->path, sizeof fx->path, fx->dir, TG_SIM_BOOTS_FILE);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    int rc = tg_unit_tmpdir_remove(fx->dir); /* the boots file and its .lock */
    free(fx);
    return rc;
}

static void each_run_boots_one_higher(void **state)
{
    struct fixture *fx = *state;
    const char *const ids[] = {"sim-00001", "sim-00002"};
    uint64_t boots[2];
    char err[256];
    assert_int_equal(tg_sim_boots_advance(fx->dir, ids, 2, boots, err, sizeof err), 0);
    assert_true(boots[0] == 1 && boots[1] == 1);
    assert_int_equal(tg_sim_boots_advance(fx->dir, ids, 2, boots, err, sizeof err), 0);
    assert_true(boots[0] == 2 && boots[1] == 2);
    /* A run of another fleet: its devices start at 1, the others keep their boots. */
    const char *const other[] = {"node-a", "sim-00002"};
    assert_int_equal(tg_sim_boots_advance(fx->dir, other, 2, boots, err, sizeof err), 0);
    assert_true(boots[0] == 1 && boots[1] == 3);
    assert_int_equal(tg_sim_boots_advance(fx->dir, ids, 2, boots, err, sizeof err), 0);
    assert_true(boots[0] == 3 && boots[1] == 4);
    FILE *f = fopen(fx->path, "r");
    assert_non_null(f);
    char text[256] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_string_equal(text, "tidegate-sim-boots 1\nnode-a 1\nsim-00001 3\nsim-00002 4\n");
}

/* Four processes advance the same device at once: four distinct boots. */
static void concurrent_runs_never_share_a_boot(void **state)
{
    struct fixture *fx = *state;
    int fds[4][2];
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            const char *const ids[] = {"sim-00001"};
            uint64_t boot = 0;
            char err[256];
            int rc = tg_sim_boots_advance(fx->dir, ids, 1, &boot, err, sizeof err);
            ssize_t w = write(fds[i][1], &boot, sizeof boot);
            _exit(rc == 0 && w == (ssize_t)sizeof boot ? 0 : 1);
        }
        close(fds[i][1]);
    }
    unsigned seen = 0;
    for (int i = 0; i < 4; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        uint64_t boot = 0;
        assert_int_equal(read(fds[i][0], &boot, sizeof boot), (ssize_t)sizeof boot);
        close(fds[i][0]);
        assert_true(boot >= 1 && boot <= 4);
        seen |= 1u << boot;
    }
    assert_int_equal(seen, 0x1e); /* 1, 2, 3 and 4, once each */
}

static void a_damaged_file_is_refused(void **state)
{
    struct fixture *fx = *state;
    static const struct {
        const char *text, *what;
    } cases[] = {
        {"tidegate-sim-boots 2\n", ":1: not a boot state file"},
        {"tidegate-sim-boots 1\nsim-00001\n", ":2: expected"},
        {"tidegate-sim-boots 1\nsim-00001 x\n", ":2: expected"},
        {"tidegate-sim-boots 1\nsim-00001 1\nbad/id 2\n", ":3: bad device id"},
        {"tidegate-sim-boots 1\nsim-00001 18446744073709551615\n", "run out of boot numbers"},
    };
    const char *const ids[] = {"sim-00001"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_unit_write_file(fx->path, cases[i].text);
        uint64_t boot = 0;
        char err[256] = "";
        assert_int_equal(tg_sim_boots_advance(fx->dir, ids, 1, &boot, err, sizeof err), -1);
        if (!strstr(err, fx->path) || !strstr(err, cases[i].what))
            fail_msg("case %zu: \"%s\" does not name the file and \"%s\"", i, err,
                     cases[i].what);
    }
    char err[256];
    uint64_t boot;
    assert_int_equal(tg_sim_boots_advance("/nonexistent/dir", ids, 1, &boot, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "--state-dir"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_run_boots_one_higher, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_runs_never_share_a_boot, setup, teardown),
        cmocka_unit_test_setup_teardown(a_damaged_file_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
