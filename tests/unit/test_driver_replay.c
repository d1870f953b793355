/* test_driver_replay.c - the transcript-replaying fake I2C bus of test_driver_replay.h. */
#include "test_driver_replay.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define MAX_BYTES 64

struct transaction {
    int line;
    uint8_t addr;
    size_t wr_len, rd_len;
    uint8_t wr[MAX_BYTES], rd[MAX_BYTES];
    int nack;
};

struct tg_replay {
    char path[512];
    struct transaction *tx;
    size_t n, cap, next;
    uint64_t bus_ms;
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Hex bytes separated by blanks, or "-". Returns the count, or -1. */
static int parse_bytes(char *field, uint8_t *out)
{
    char *s = trim(field);
    if (strcmp(s, "-") == 0)
        return 0;
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        char *end;
        unsigned long v = strtoul(tok, &end, 16);
        if (*end != '\0' || strlen(tok) != 2 || v > 0xFF || n == MAX_BYTES)
            return -1;
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void parse_line(struct tg_replay *rp, char *text, int line)
{
    char *hash = strchr(text, '#');
    if (hash)
        *hash = '\0';
    if (*trim(text) == '\0')
        return;
    char *fields[4] = {0};
    int nf = 0;
    char *save = NULL;
    for (char *f = strtok_r(text, "|", &save); f && nf < 4; f = strtok_r(NULL, "|", &save))
        fields[nf++] = f;
    if (nf < 3)
        fail_msg("%s:%d: expected ADDR | WRITTEN | READ BACK [| REPEAT]", rp->path, line);

    struct transaction t = {.line = line};
    char *end;
    unsigned long addr = strtoul(trim(fields[0]), &end, 16);
    if (*end != '\0' || addr > 0x7F)
        fail_msg("%s:%d: bad address", rp->path, line);
    t.addr = (uint8_t)addr;
    int n = parse_bytes(fields[1], t.wr);
    if (n < 0)
        fail_msg("%s:%d: bad written bytes", rp->path, line);
    t.wr_len = (size_t)n;
    char *rd = trim(fields[2]);
    if (strncmp(rd, "nack:", 5) == 0) {
        t.nack = 1;
        t.rd_len = strtoul(rd + 5, &end, 10);
        if (*end != '\0' || t.rd_len > MAX_BYTES)
            fail_msg("%s:%d: bad nack length", rp->path, line);
    } else {
        n = parse_bytes(rd, t.rd);
        if (n < 0)
            fail_msg("%s:%d: bad read-back bytes", rp->path, line);
        t.rd_len = (size_t)n;
    }
    unsigned long repeat = 1;
    if (nf == 4) {
        repeat = strtoul(trim(fields[3]), &end, 10);
        if (*end != '\0' || repeat == 0 || repeat > 10000)
            fail_msg("%s:%d: bad repeat count", rp->path, line);
    }
    for (unsigned long i = 0; i < repeat; i++) {
        if (rp->n == rp->cap) {
            rp->cap = rp->cap ? rp->cap * 2 : 64;
            rp->tx = realloc(rp->tx, rp->cap * sizeof *rp->tx);
            assert_non_null(rp->tx);
        }
        rp->tx[rp->n++] = t;
    }
}

static char *hex(const uint8_t *b, size_t n, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off + 4 < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%02X", i ? " " : "", b[i]);
    if (n == 0)
        snprintf(buf, size, "-");
    return buf;
}

static int fake_i2c(void *ctx, uint8_t addr, const uint8_t *wr, size_t wr_len, uint8_t *rd,
                    size_t rd_len)
{
    struct tg_replay *rp = ctx;
    char got[3 * MAX_BYTES + 8], want[3 * MAX_BYTES + 8];
    rp->bus_ms++;
    if (rp->next == rp->n)
        fail_msg("%s: transaction past the end of the transcript: addr %02X write %s read %zu",
                 rp->path, addr, hex(wr, wr_len, got, sizeof got), rd_len);
    const struct transaction *t = &rp->tx[rp->next++];
    if (addr != t->addr)
        fail_msg("%s:%d: address %02X, transcript has %02X", rp->path, t->line, addr, t->addr);
    if (wr_len != t->wr_len || (wr_len && memcmp(wr, t->wr, wr_len) != 0))
        fail_msg("%s:%d: wrote %s, transcript has %s", rp->path, t->line,
                 hex(wr, wr_len, got, sizeof got), hex(t->wr, t->wr_len, want, sizeof want));
    if (rd_len != t->rd_len)
        fail_msg("%s:%d: read %zu bytes, transcript has %zu", rp->path, t->line, rd_len,
                 t->rd_len);
    if (t->nack)
        return -1;
    if (rd_len)
        memcpy(rd, t->rd, rd_len);
    return 0;
}

static uint64_t fake_mono_ms(void *ctx)
{
    const struct tg_replay *rp = ctx;
    return rp->bus_ms;
}

static int64_t fake_wall_ms(void *ctx)
{
    const struct tg_replay *rp = ctx;
    return 1763712000000 + (int64_t)rp->bus_ms;
}

static uint32_t fake_random_u32(void *ctx)
{
    return 4;
}

struct tg_replay *tg_replay_new(const char *name, struct tg_hal *hal)
{
    const char *dir = getenv("TG_TEST_DATA");
    assert_non_null(dir);
    struct tg_replay *rp = calloc(1, sizeof *rp);
    assert_non_null(rp);
    rp->bus_ms = 1000;
    snprintf(rp->path, sizeof rp->path, "%s/drivers/%s", dir, name);
    FILE *f = fopen(rp->path, "r");
    if (f == NULL)
        fail_msg("cannot open %s", rp->path);
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        parse_line(rp, line, lineno);
    }
    fclose(f);
    memset(hal, 0, sizeof *hal);
    hal->ctx = rp;
    hal->i2c_transfer = fake_i2c;
    hal->mono_ms = fake_mono_ms;
    hal->wall_ms = fake_wall_ms;
    hal->random_u32 = fake_random_u32;
    return rp;
}

void tg_replay_finish(struct tg_replay *rp)
{
    if (rp->next != rp->n)
        fail_msg("%s:%d: %zu transactions of the transcript were not made", rp->path,
                 rp->tx[rp->next].line, rp->n - rp->next);
    free(rp->tx);
    free(rp);
}

void tg_replay_assert_near(double got, double want, double eps, const char *file, int line)
{
    if (!(fabs(got - want) <= eps))
        fail_msg("%s:%d: got %.9f, want %.9f +- %g", file, line, got, want, eps);
}
