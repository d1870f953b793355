/*
 * test_board_detect.c - the board file chosen without -b (gateway/board_detect.c), from fake
 * /proc/device-tree/model files: against the shipped boards/ (the real model strings of each
 * board, the generic files per architecture) and against made-up board directories (longest
 * prefix wins, ties by file name, no match, no directory).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "board_detect.h"
#include "unit_tmp.h"

#ifndef TG_SOURCE_DIR
#error "TG_SOURCE_DIR must name the source tree"
#endif
#define BOARDS TG_SOURCE_DIR "/boards"

struct fixture {
    char dir[64];
    char model[128];
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tg_unit_tmpdir_new(fx->dir, sizeof fx->dir, "board-detect") != 0)
        return -1;
    tg_unit_path(fx->model, sizeof fx->model, fx->dir, "model");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (tg_unit_tmpdir_remove(fx->dir) != 0)
        return -1;
    free(fx);
    return 0;
}

/* The device tree's model as the kernel shows it: the string and its terminating NUL. */
static void write_model(const struct fixture *fx, const char *model)
{
    tg_unit_write_bytes(fx->model, model, strlen(model) + 1);
}

static void write_board(const struct fixture *fx, const char *name, const char *header)
{
    char path[256];
    snprintf(path, sizeof path, "%s/boards/%s", fx->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s\n[journal]\nmax_bytes = 1G\n", header);
    assert_int_equal(fclose(f), 0);
}

/* Asserts that model (NULL: no model file) on machine picks boards/<want> (NULL: none). */
static void expect(const struct fixture *fx, const char *dir, const char *model,
                   const char *machine, const char *want, const char *why_has)
{
    char path[1024], why[512];
    if (model)
        write_model(fx, model);
    else
        unlink(fx->model);
    tg_err rc = tg_board_detect(dir, fx->model, machine, path, sizeof path, why, sizeof why);
    fprintf(stderr, "model \"%s\" on %s -> %s (%s)\n", model ? model : "(none)", machine,
            rc == TG_OK ? path : "none", why);
    if (!want) {
        assert_int_equal(rc, TG_ERR_UNAVAILABLE);
        assert_string_equal(path, "");
    } else {
        assert_int_equal(rc, TG_OK);
        char expected[1024];
        snprintf(expected, sizeof expected, "%s/%s", dir, want);
        assert_string_equal(path, expected);
    }
    assert_non_null(strstr(why, why_has));
}

static void shipped_boards_by_model(void **state)
{
    struct fixture *fx = *state;
    expect(fx, BOARDS, "Raspberry Pi 4 Model B Rev 1.4", "aarch64", "rpi4b.ini",
           "matches \"Raspberry Pi 4 Model B\"");
    expect(fx, BOARDS, "Raspberry Pi 400 Rev 1.0", "aarch64", "rpi4b.ini", "Raspberry Pi 400");
    expect(fx, BOARDS, "Raspberry Pi 5 Model B Rev 1.0", "aarch64", "rpi5.ini",
           "Raspberry Pi 5");
    expect(fx, BOARDS, "Raspberry Pi 3 Model B Plus Rev 1.3", "aarch64", "rpi3b.ini",
           "Raspberry Pi 3 Model B");
    expect(fx, BOARDS, "Raspberry Pi 3 Model B Rev 1.2", "armv7l", "rpi3b.ini", "Rev 1.2");
    /* A Zero 2 W runs armhf or arm64 Raspberry Pi OS: the model decides either way. */
    expect(fx, BOARDS, "Raspberry Pi Zero 2 W Rev 1.0", "armv7l", "rpi-zero2w.ini", "Zero 2 W");
    expect(fx, BOARDS, "TI AM335x BeagleBone Black", "armv7l", "beaglebone-black.ini",
           "BeagleBone");
}

static void shipped_boards_by_architecture(void **state)
{
    struct fixture *fx = *state;
    expect(fx, BOARDS, "Pine64 RockPro64 v2.1", "aarch64", "generic-arm64.ini",
           "no board file matches model \"Pine64 RockPro64 v2.1\"; the generic file of "
           "architecture aarch64");
    /* Older Pis have no file of their own: the armhf generic file. */
    expect(fx, BOARDS, "Raspberry Pi 2 Model B Rev 1.1", "armv7l", "generic-armhf.ini",
           "architecture armv7l");
    expect(fx, BOARDS, "Xunlong Orange Pi PC", "armv8l", "generic-armhf.ini", "armv8l");
    /* x86 and qemu-user: no device tree. */
    expect(fx, BOARDS, NULL, "x86_64", "x86_64-dev.ini", "no device-tree model");
    expect(fx, BOARDS, NULL, "aarch64", "generic-arm64.ini", "no device-tree model");
    expect(fx, BOARDS, NULL, "riscv64", NULL, "architecture riscv64");
    expect(fx, BOARDS, "StarFive VisionFive 2 v1.3B", "riscv64", NULL,
           "model \"StarFive VisionFive 2 v1.3B\" or architecture riscv64");
}

static void longest_prefix_and_ties(void **state)
{
    struct fixture *fx = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/boards", fx->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    write_board(fx, "a-family.ini", "# family\n# match-model: Acme Board\n# match-arch: aarch64");
    write_board(fx, "z-specific.ini", "# the Mk II\n#match-model:   Acme Board Mk II  ");
    write_board(fx, "0-mk3.ini", "# match-model: Acme Board Mk III");
    write_board(fx, "b-also-arm64.ini", "# match-arch: armv7l aarch64");
    write_board(fx, ".hidden.ini", "# match-model: Acme");
    write_board(fx, "notes.txt", "# match-model: Acme Board Mk II Pro");
    /* Longest prefix, whatever the file order; comment spacing tolerated. */
    expect(fx, dir, "Acme Board Mk II rev 3", "aarch64", "z-specific.ini",
           "matches \"Acme Board Mk II\"");
    /* The longest prefix sorts first by name here, and two shorter ones match after it. */
    expect(fx, dir, "Acme Board Mk III", "aarch64", "0-mk3.ini", "matches \"Acme Board Mk III\"");
    expect(fx, dir, "Acme Board Mk I", "aarch64", "a-family.ini", "matches \"Acme Board\"");
    /* A prefix is a prefix: case and position matter. */
    expect(fx, dir, "acme board", "aarch64", "a-family.ini", "architecture aarch64");
    expect(fx, dir, "The Acme Board", "armv7l", "b-also-arm64.ini", "architecture armv7l");
    /* Two files claim aarch64: the first by name. */
    expect(fx, dir, NULL, "aarch64", "a-family.ini", "architecture aarch64");
    /* Only *.ini files, not hidden ones: "Acme" alone matches nothing. */
    expect(fx, dir, "Acme", "mips", NULL, "model \"Acme\"");
}

static void no_directory(void **state)
{
    struct fixture *fx = *state;
    char path[256], why[512], dir[128];
    snprintf(dir, sizeof dir, "%s/absent", fx->dir);
    write_model(fx, "Raspberry Pi 4 Model B Rev 1.4");
    assert_int_equal(tg_board_detect(dir, fx->model, "aarch64", path, sizeof path, why, sizeof why),
                     TG_ERR_IO);
    assert_string_equal(path, "");
    assert_non_null(strstr(why, "absent"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(shipped_boards_by_model, setup, teardown),
        cmocka_unit_test_setup_teardown(shipped_boards_by_architecture, setup, teardown),
        cmocka_unit_test_setup_teardown(longest_prefix_and_ties, setup, teardown),
        cmocka_unit_test_setup_teardown(no_directory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
