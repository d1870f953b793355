/*
 * board_detect.c - a board file for the board we run on (see board_detect.h).
 */
#include "board_detect.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_MAX 256
/* The match lines sit in the header comment; a file's first lines are enough. */
#define HEADER_LINES 60

/* The model string: the device tree stores it NUL-terminated; trailing blanks cut. "" when
 * there is none. */
static void read_model(const char *model_path, char *model, size_t len)
{
    model[0] = '\0';
    FILE *f = model_path ? fopen(model_path, "rb") : NULL;
    if (!f)
        return;
    size_t n = fread(model, 1, len - 1, f);
    fclose(f);
    model[n] = '\0';
    n = strlen(model);
    while (n > 0 && isspace((unsigned char)model[n - 1]))
        model[--n] = '\0';
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_ini_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".ini") == 0 && name[0] != '.';
}

/* Value of a "# key: value" line, or NULL. */
static char *match_value(char *line, const char *key)
{
    char *p = line;
    if (*p++ != '#')
        return NULL;
    while (*p == ' ')
        p++;
    size_t kl = strlen(key);
    if (strncmp(p, key, kl) != 0 || p[kl] != ':')
        return NULL;
    p += kl + 1;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        p[--n] = '\0';
    return p;
}

static bool word_in(const char *words, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = words; *p;) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, " \t");
        if (n == wl && n > 0 && strncmp(p, word, n) == 0)
            return true;
        p += n;
    }
    return false;
}

tg_err tg_board_detect(const char *boards_dir, const char *model_path, const char *machine,
                       char *path, size_t pathlen, char *why, size_t whylen)
{
    tg_err rc = TG_ERR_UNAVAILABLE;
    char model[MODEL_MAX];
    char **names = NULL;
    size_t n_names = 0, cap = 0;
    char best_model_file[1024] = "", best_prefix[MODEL_MAX] = "", arch_file[1024] = "";
    path[0] = '\0';
    read_model(model_path, model, sizeof model);

    DIR *d = opendir(boards_dir);
    if (!d) {
        snprintf(why, whylen, "cannot read the board files' directory %s: %s", boards_dir,
                 strerror(errno));
        return TG_ERR_IO;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_ini_suffix(de->d_name))
            continue;
        if (n_names == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn) {
                rc = TG_ERR_NOMEM;
                goto cleanup;
            }
            names = nn;
            cap = ncap;
        }
        if (!(names[n_names] = strdup(de->d_name))) {
            rc = TG_ERR_NOMEM;
            goto cleanup;
        }
        n_names++;
    }
    /* Sorted, so that ties (two files claiming one model or machine) resolve the same way on
     * every board, whatever order the file system lists them in. */
    if (n_names)
        qsort(names, n_names, sizeof *names, name_cmp);

    for (size_t i = 0; i < n_names; i++) {
        char file[1024];
        snprintf(file, sizeof file, "%s/%s", boards_dir, names[i]);
        FILE *f = fopen(file, "r");
        if (!f)
            continue;
        char line[512];
        for (int ln = 0; ln < HEADER_LINES && fgets(line, sizeof line, f); ln++) {
            char *v;
            if (model[0] && (v = match_value(line, "match-model")) && *v &&
                strncmp(model, v, strlen(v)) == 0 && strlen(v) > strlen(best_prefix)) {
                snprintf(best_prefix, sizeof best_prefix, "%.*s", (int)sizeof best_prefix - 1, v);
                snprintf(best_model_file, sizeof best_model_file, "%s", file);
            } else if (machine && *machine && !arch_file[0] &&
                       (v = match_value(line, "match-arch")) && word_in(v, machine)) {
                snprintf(arch_file, sizeof arch_file, "%s", file);
            }
        }
        fclose(f);
    }

    if (best_model_file[0]) {
        snprintf(path, pathlen, "%s", best_model_file);
        snprintf(why, whylen, "model \"%s\" matches \"%s\"", model, best_prefix);
        rc = TG_OK;
    } else if (arch_file[0]) {
        snprintf(path, pathlen, "%s", arch_file);
        if (model[0])
            snprintf(why, whylen, "no board file matches model \"%s\"; the generic file of "
                     "architecture %s", model, machine);
        else
            snprintf(why, whylen, "no device-tree model; the generic file of architecture %s",
                     machine);
        rc = TG_OK;
    } else {
        snprintf(why, whylen, "no board file in %s matches %s%s%sarchitecture %s", boards_dir,
                 model[0] ? "model \"" : "", model, model[0] ? "\" or " : "",
                 machine && *machine ? machine : "(unknown)");
    }
cleanup:
    closedir(d);
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    return rc;
}
