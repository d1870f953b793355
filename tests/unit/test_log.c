/*
 * Unit tests for log.c: level filtering, per-subsystem debug, the line format in both
 * forms (plain and journald), sanitizing and truncation, whole lines from many threads,
 * and the rate limiter driven with fake time.
 *
 * Output goes to a memfd (tg_log_set_fd), read back after each step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int out_fd = -1;
static char captured_buf[4 << 20];

static int setup(void **state)
{
    (void)state;
    unsetenv("JOURNAL_STREAM");
    out_fd = memfd_create("tg-log", 0);
    if (out_fd < 0 || fcntl(out_fd, F_SETFL, O_APPEND) != 0)
        return -1;
    tg_log_set_fd(out_fd);
    tg_log_set_level(TG_LOG_LEVEL_INFO);
    return tg_log_enable_debug("") == TG_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_log_set_fd(-1);
    close(out_fd);
    return 0;
}

/* Everything written since the last call. */
static const char *captured(void)
{
    off_t len = lseek(out_fd, 0, SEEK_END);
    assert_true(len >= 0 && (size_t)len < sizeof captured_buf);
    assert_int_equal(pread(out_fd, captured_buf, (size_t)len, 0), len);
    captured_buf[len] = '\0';
    assert_int_equal(ftruncate(out_fd, 0), 0);
    return captured_buf;
}

/* The captured text with each line's timestamp cut off, for exact comparisons. */
static const char *captured_untimed(void)
{
    static char out[4 << 20];
    const char *in = captured();
    size_t o = 0;
    while (*in) {
        const char *sp = strchr(in, ' ');
        const char *nl = strchr(in, '\n');
        assert_non_null(sp);
        assert_non_null(nl);
        size_t len = (size_t)(nl - sp); /* from the blank after the timestamp to the newline */
        memcpy(out + o, sp + 1, len);
        o += len;
        in = nl + 1;
    }
    out[o] = '\0';
    return out;
}

static int evaluated;
static int count_eval(void)
{
    return ++evaluated;
}

static void levels_filter(void **state)
{
    (void)state;
    TG_LOG_DEBUG("journal", "d");
    TG_LOG_INFO("journal", "i");
    TG_LOG_WARN("journal", "w");
    TG_LOG_ERROR("journal", "e");
    assert_string_equal(captured_untimed(), "info  [journal] i\nwarn  [journal] w\n"
                                            "error [journal] e\n");
    tg_log_set_level(TG_LOG_LEVEL_WARN);
    evaluated = 0;
    TG_LOG_INFO("journal", "i %d", count_eval());
    TG_LOG_DEBUG("journal", "d %d", count_eval());
    assert_int_equal(evaluated, 0); /* arguments of a disabled line are not evaluated */
    TG_LOG_WARN("journal", "w %d", count_eval());
    assert_int_equal(evaluated, 1);
    assert_string_equal(captured_untimed(), "warn  [journal] w 1\n");
    tg_log_set_level(TG_LOG_LEVEL_ERROR);
    TG_LOG_WARN("journal", "w");
    TG_LOG_ERROR("journal", "e");
    assert_string_equal(captured_untimed(), "error [journal] e\n");
    tg_log_set_level(TG_LOG_LEVEL_DEBUG);
    TG_LOG_DEBUG("mqtt", "d");
    assert_string_equal(captured_untimed(), "debug [mqtt] d\n");
    assert_true(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "anything"));
}

static void debug_per_subsystem(void **state)
{
    (void)state;
    assert_int_equal(tg_log_enable_debug("journal, kafka"), TG_OK);
    TG_LOG_DEBUG("journal", "j");
    TG_LOG_DEBUG("mqtt", "m");
    TG_LOG_DEBUG("kafka", "k");
    TG_LOG_INFO("mqtt", "info still on");
    assert_string_equal(captured_untimed(), "debug [journal] j\ndebug [kafka] k\n"
                                            "info  [mqtt] info still on\n");
    assert_true(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "kafka"));
    assert_false(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "kafk"));
    assert_false(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "journal2"));

    /* the switch is per subsystem, not a global level: warn still hides info */
    tg_log_set_level(TG_LOG_LEVEL_WARN);
    TG_LOG_INFO("journal", "hidden");
    TG_LOG_DEBUG("journal", "shown");
    assert_string_equal(captured_untimed(), "debug [journal] shown\n");

    /* bad lists change nothing */
    static const char *const bad[] = {"a,,b", "a,", ",a", "Journal", "a b", "a;b",
                                      "abcdefghijklmnopqrstuvwxyz0123456",
                                      "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tg_log_enable_debug(bad[i]), TG_ERR_CONFIG);
    assert_true(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "kafka"));
    assert_int_equal(tg_log_enable_debug("a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p"), TG_OK);
    assert_true(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "p"));
    assert_false(tg_log_enabled(TG_LOG_LEVEL_DEBUG, "kafka"));

    assert_int_equal(tg_log_enable_debug("all"), TG_OK);
    TG_LOG_DEBUG("whatever", "x");
    assert_string_equal(captured_untimed(), "debug [whatever] x\n");

    assert_int_equal(tg_log_enable_debug("  "), TG_OK);
    TG_LOG_DEBUG("journal", "off again");
    assert_string_equal(captured(), "");
}

static void level_names(void **state)
{
    (void)state;
    tg_log_level lvl = TG_LOG_LEVEL_ERROR;
    assert_int_equal(tg_log_level_parse("debug", &lvl), TG_OK);
    assert_int_equal(lvl, TG_LOG_LEVEL_DEBUG);
    assert_int_equal(tg_log_level_parse("warn", &lvl), TG_OK);
    assert_int_equal(lvl, TG_LOG_LEVEL_WARN);
    assert_int_equal(tg_log_level_parse("info", &lvl), TG_OK);
    assert_int_equal(lvl, TG_LOG_LEVEL_INFO);
    assert_int_equal(tg_log_level_parse("error", &lvl), TG_OK);
    assert_int_equal(lvl, TG_LOG_LEVEL_ERROR);
    assert_int_equal(tg_log_level_parse("warning", &lvl), TG_ERR_CONFIG);
    assert_int_equal(tg_log_level_parse("", &lvl), TG_ERR_CONFIG);
    for (int i = 0; tg_log_level_choices[i]; i++) {
        assert_int_equal(tg_log_level_parse(tg_log_level_choices[i], &lvl), TG_OK);
        assert_string_equal(tg_log_level_name(lvl), tg_log_level_choices[i]);
    }
}

static void line_format(void **state)
{
    (void)state;
    /* The same clock the logger reads: time(2) uses the coarse clock, which can still show
     * the previous second when CLOCK_REALTIME has already moved on. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t before = ts.tv_sec;
    TG_LOG_WARN("journal", "opened %s (%d segments)", "/var/lib/tidegate/journal.db", 3);
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t after = ts.tv_sec;
    const char *line = captured();

    regex_t re;
    assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                                  "warn  \\[journal\\] opened /var/lib/tidegate/journal.db "
                                  "\\(3 segments\\)\n$", REG_EXTENDED), 0);
    if (regexec(&re, line, 0, NULL, 0) != 0)
        fail_msg("unexpected line: %s", line);
    regfree(&re);

    /* the timestamp is UTC and now */
    struct tm tm = {0};
    assert_non_null(strptime(line, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t logged = timegm(&tm);
    assert_true(logged >= before && logged <= after);
}

static void journald_form(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(fstat(out_fd, &st), 0);
    char env[64];

    /* JOURNAL_STREAM naming another file: not journald (e.g. a redirected child) */
    snprintf(env, sizeof env, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino + 1);
    setenv("JOURNAL_STREAM", env, 1);
    tg_log_set_fd(out_fd);
    TG_LOG_INFO("kafka", "x");
    assert_true(captured()[0] != '<');

    snprintf(env, sizeof env, "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    tg_log_set_fd(out_fd);
    tg_log_set_level(TG_LOG_LEVEL_DEBUG);
    TG_LOG_ERROR("kafka", "broker down");
    TG_LOG_WARN("mqtt", "reconnecting");
    TG_LOG_INFO("journal", "opened");
    TG_LOG_DEBUG("journal", "segment %d", 7);
    assert_string_equal(captured(), "<3>error [kafka] broker down\n"
                                    "<4>warn  [mqtt] reconnecting\n"
                                    "<6>info  [journal] opened\n"
                                    "<7>debug [journal] segment 7\n");
    unsetenv("JOURNAL_STREAM");
}

static void hostile_and_long_messages(void **state)
{
    (void)state;
    TG_LOG_WARN("mqtt", "bad device id \"%s\"", "dev\n2025-01-01T00:00:00.000Z error [x] forged\r\x1b[31m\tok");
    assert_string_equal(captured_untimed(),
                        "warn  [mqtt] bad device id \"dev?2025-01-01T00:00:00.000Z error [x] "
                        "forged??[31m\tok\"\n");

    static char big[3 * TG_LOG_LINE_MAX];
    memset(big, 'x', sizeof big - 1);
    TG_LOG_INFO("mqtt", "%s", big);
    const char *line = captured();
    size_t len = strlen(line);
    assert_int_equal(len, TG_LOG_LINE_MAX - 1);
    assert_string_equal(line + len - 5, "x...\n");

    /* the suppressed note survives truncation */
    tg_log_write_suppressed(TG_LOG_LEVEL_INFO, "mqtt", 42, "%s", big);
    line = captured();
    len = strlen(line);
    assert_true(len < TG_LOG_LINE_MAX);
    assert_string_equal(line + len - 37, "... (42 similar messages suppressed)\n");
}

static void errno_is_kept(void **state)
{
    (void)state;
    errno = ENOENT;
    TG_LOG_ERROR("journal", "open failed: %m");
    assert_int_equal(errno, ENOENT);
    assert_string_equal(captured_untimed(), "error [journal] open failed: No such file or directory\n");
    errno = EACCES;
    TG_LOG_DEBUG("journal", "disabled %m");
    assert_int_equal(errno, EACCES);
}

struct writer {
    int id;
};

static void *write_lines(void *arg)
{
    const struct writer *w = arg;
    for (int i = 0; i < 2000; i++)
        TG_LOG_INFO("mqtt", "writer %d line %d %0200d", w->id, i, 0);
    return NULL;
}

static void threads_never_interleave(void **state)
{
    (void)state;
    pthread_t th[4];
    struct writer w[4];
    for (int t = 0; t < 4; t++) {
        w[t].id = t;
        assert_int_equal(pthread_create(&th[t], NULL, write_lines, &w[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);

    const char *text = captured_untimed();
    int next[4] = {0};
    char expect[512];
    for (const char *line = text; *line;) {
        int id = -1, i = -1;
        assert_int_equal(sscanf(line, "info  [mqtt] writer %d line %d", &id, &i), 2);
        assert_true(id >= 0 && id < 4);
        assert_int_equal(i, next[id]); /* each thread's lines whole and in order */
        next[id]++;
        int n = snprintf(expect, sizeof expect, "info  [mqtt] writer %d line %d %0200d\n", id, i, 0);
        assert_memory_equal(line, expect, (size_t)n);
        line += n;
    }
    for (int t = 0; t < 4; t++)
        assert_int_equal(next[t], 2000);
}

static void ratelimit_with_fake_time(void **state)
{
    (void)state;
    struct tg_log_ratelimit rl = TG_LOG_RATELIMIT_INIT;
    uint64_t sup = 99;
    assert_true(tg_log_ratelimit_pass(&rl, 1000, 0, &sup));
    assert_int_equal(sup, 0);
    assert_false(tg_log_ratelimit_pass(&rl, 1000, 1, &sup));
    assert_false(tg_log_ratelimit_pass(&rl, 1000, 500, &sup));
    assert_false(tg_log_ratelimit_pass(&rl, 1000, 999, &sup));
    assert_true(tg_log_ratelimit_pass(&rl, 1000, 1000, &sup));
    assert_int_equal(sup, 3);
    assert_false(tg_log_ratelimit_pass(&rl, 1000, 1999, &sup));
    assert_true(tg_log_ratelimit_pass(&rl, 1000, 5000, &sup));
    assert_int_equal(sup, 1);
    assert_true(tg_log_ratelimit_pass(&rl, 1000, 6000, &sup));
    assert_int_equal(sup, 0);

    /* negative times (an arbitrary monotonic origin) are fine */
    struct tg_log_ratelimit neg = TG_LOG_RATELIMIT_INIT;
    assert_true(tg_log_ratelimit_pass(&neg, 10, -100, &sup));
    assert_false(tg_log_ratelimit_pass(&neg, 10, -91, &sup));
    assert_true(tg_log_ratelimit_pass(&neg, 10, -90, &sup));
    assert_int_equal(sup, 1);
}

struct hammer {
    struct tg_log_ratelimit *rl;
    int passed;
};

static void *hammer_ratelimit(void *arg)
{
    struct hammer *h = arg;
    uint64_t sup;
    for (int i = 0; i < 10000; i++)
        h->passed += tg_log_ratelimit_pass(h->rl, 1000, 42, &sup);
    return NULL;
}

static void ratelimit_across_threads(void **state)
{
    (void)state;
    struct tg_log_ratelimit rl = TG_LOG_RATELIMIT_INIT;
    pthread_t th[4];
    struct hammer h[4];
    for (int t = 0; t < 4; t++) {
        h[t] = (struct hammer){.rl = &rl};
        assert_int_equal(pthread_create(&th[t], NULL, hammer_ratelimit, &h[t]), 0);
    }
    int passed = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        passed += h[t].passed;
    }
    assert_int_equal(passed, 1); /* one line for the interval, however many threads */
    uint64_t sup = 0;
    assert_true(tg_log_ratelimit_pass(&rl, 1000, 1042, &sup));
    assert_int_equal(sup, 4 * 10000 - 1); /* and none of the others lost from the count */
}

static void ratelimited_macro(void **state)
{
    (void)state;
    /* One call site; an interval of "forever" then 0 stands in for time passing. */
    int64_t intervals[] = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 0, 0};
    for (int i = 0; i < 6; i++)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", intervals[i], "queue full (%d)", i);
    assert_string_equal(captured_untimed(), "warn  [mqtt] queue full (0)\n"
                                            "warn  [mqtt] queue full (4) "
                                            "(3 similar messages suppressed)\n"
                                            "warn  [mqtt] queue full (5)\n");

    /* while the level is off, nothing is written or counted */
    tg_log_set_level(TG_LOG_LEVEL_ERROR);
    for (int i = 0; i < 3; i++)
        TG_LOG_RATELIMITED(TG_LOG_LEVEL_WARN, "mqtt", i == 2 ? 0 : INT64_MAX, "x %d", i);
    assert_string_equal(captured(), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(levels_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(debug_per_subsystem, setup, teardown),
        cmocka_unit_test_setup_teardown(level_names, setup, teardown),
        cmocka_unit_test_setup_teardown(line_format, setup, teardown),
        cmocka_unit_test_setup_teardown(journald_form, setup, teardown),
        cmocka_unit_test_setup_teardown(hostile_and_long_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(errno_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(threads_never_interleave, setup, teardown),
        cmocka_unit_test_setup_teardown(ratelimit_with_fake_time, setup, teardown),
        cmocka_unit_test_setup_teardown(ratelimit_across_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(ratelimited_macro, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
