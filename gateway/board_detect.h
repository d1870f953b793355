/*
 * board_detect.h - which board file suits the board tidegate runs on, when -b is not given.
 *
 * Board files (the .ini files of boards/, installed under TG_BOARDS_DIR) say what they match in comment
 * lines of their header, which the config loader ignores:
 *   # match-model: <prefix>      the device tree's model string starts with <prefix>
 *   # match-arch: <machine>...   uname -m is one of these (the generic file of an architecture)
 * A file matching the model wins, the longest prefix first (so "Raspberry Pi 4 Model B"
 * beats a shorter "Raspberry Pi"); without one, the first file by name whose match-arch
 * names the machine; without that, none (the built-in defaults).
 *
 * Threads: any; no state.
 */
#ifndef TG_BOARD_DETECT_H
#define TG_BOARD_DETECT_H

#include <stddef.h>

#include "error.h"

/* Where the device tree's model string is on Linux. */
#define TG_BOARD_MODEL_PATH "/proc/device-tree/model"

/* Chooses a board file from boards_dir for the model read from model_path (a missing or
 * unreadable file is no model: x86 machines and qemu have none) and machine (uname -m).
 * TG_OK: path (pathlen bytes) names the file and why says how it was chosen, e.g.
 * `model "Raspberry Pi 4 Model B Rev 1.4" matches "Raspberry Pi 4 Model B"`.
 * TG_ERR_UNAVAILABLE: no file matches (why says what was looked for; path is ""). TG_ERR_IO:
 * boards_dir cannot be read (why says so). */
tg_err tg_board_detect(const char *boards_dir, const char *model_path, const char *machine,
                       char *path, size_t pathlen, char *why, size_t whylen);

#endif
