/*
 * harness.c - integration-test harness: processes, temp dirs, Mosquitto and devkafka.
 * The contract is in harness.h; this file explains only what is not obvious from it.
 */
#include "harness.h"
#include "harness_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TG_HARNESS_BIN_DIR
#define TG_HARNESS_BIN_DIR "."
#endif

#define PIDS_MAX 256
#define MOSQUITTO_START_TIMEOUT_MS 10000
#define MOSQUITTO_STOP_TIMEOUT_MS 10000
#define MOSQUITTO_PORT_ATTEMPTS 5
#define DEVKAFKA_START_TIMEOUT_MS 30000
#define DEVKAFKA_STOP_TIMEOUT_MS 15000
#define DEVKAFKA_CMD_TIMEOUT_MS 10000
#define DEVKAFKA_OUTAGE_TIMEOUT_MS 10000
#define DEVKAFKA_BROKERS_MAX 64
#define DESTROY_STOP_TIMEOUT_MS 10000

extern char **environ;

struct tg_harness_proc {
    struct tg_harness_proc *next; /* registry of every proc not yet destroyed */
    char *name;
    pid_t pid;
    int pid_slot;                 /* index in live_pids, -1 once reaped */
    bool exited;
    bool reported;                /* tg_harness_reap_all() has said how it ended */
    int status;
    int stdin_fd;                 /* our end of the stdin pipe, or -1 */
    int stdout_fd;                /* our end of the stdout pipe, or -1 */
    char *stdout_path;            /* NULL when stdout is piped */
    char *stderr_path;
    char rbuf[8192];              /* stdout bytes read but not yet returned as lines */
    size_t rlen;
    bool rskip;                   /* discarding the rest of an over-long line */
};

struct tmpdir_entry {
    char *path;
    struct tmpdir_entry *next;
};

/* Everything the cleanup paths need. The pid array is what the crash handler reads: plain
 * sig_atomic_t slots, no list walking inside a signal handler. */
static volatile sig_atomic_t live_pids[PIDS_MAX];
static struct tg_harness_proc *procs;
static struct tmpdir_entry *tmpdirs;
static bool initialized;

static const int crash_signals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
static struct sigaction crash_previous[sizeof crash_signals / sizeof crash_signals[0]];

#define hlog(...) harness__log(NULL, __VA_ARGS__)

void harness__log(const char *subsystem, const char *fmt, ...)
{
    va_list ap;
    fputs("harness: ", stderr);
    if (subsystem)
        fprintf(stderr, "%s: ", subsystem);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

char *harness__asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

void harness__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------------------------
 * Cleanup registry
 */

/* Async-signal-safe: kill every started child, then let the previous disposition (ASan's
 * reporter, cmocka's, or the default) handle the signal as if we had not been here. */
static void crash_handler(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    for (int i = 0; i < PIDS_MAX; i++) {
        pid_t pid = (pid_t)live_pids[i];
        if (pid > 0)
            kill(pid, SIGKILL);
    }
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++) {
        if (crash_signals[i] == sig)
            sigaction(sig, &crash_previous[i], NULL);
    }
    /* A fault re-executes the faulting instruction on return; a raised signal must be
     * raised again (it is blocked until we return). */
    if (info->si_code <= 0)
        raise(sig);
}

static void at_exit(void)
{
    tg_harness_reap_all();
}

static void harness_init(void)
{
    if (initialized)
        return;
    initialized = true;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = crash_handler;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(crash_signals[i], &sa, &crash_previous[i]);
    }
    atexit(at_exit);
}

static int pid_slot_take(pid_t pid)
{
    for (int i = 0; i < PIDS_MAX; i++) {
        if (live_pids[i] == 0) {
            live_pids[i] = (sig_atomic_t)pid;
            return i;
        }
    }
    return -1;
}

static void proc_mark_exited(struct tg_harness_proc *proc, int status)
{
    proc->exited = true;
    proc->status = status;
    if (proc->pid_slot >= 0) {
        live_pids[proc->pid_slot] = 0;
        proc->pid_slot = -1;
    }
}

/* Non-blocking reap. True once the child has exited. */
static bool proc_reap(struct tg_harness_proc *proc)
{
    if (proc->exited)
        return true;
    int status = 0;
    pid_t r = waitpid(proc->pid, &status, WNOHANG);
    if (r == proc->pid) {
        proc_mark_exited(proc, status);
    } else if (r < 0 && errno == ECHILD) {
        proc_mark_exited(proc, -1); /* someone else reaped it */
    }
    return proc->exited;
}

void tg_harness_reap_all(void)
{
    for (struct tg_harness_proc *proc = procs; proc; proc = proc->next) {
        /* A child that failed on its own is often why the test failed (a broker whose data
         * dir vanished, a crash): say so once, with how it ended. */
        if (proc_reap(proc)) {
            if (!proc->reported && proc->status != -1 && !tg_harness_exited_ok(proc->status)) {
                if (WIFSIGNALED(proc->status))
                    hlog("%s (pid %ld) had already ended, by signal %d", proc->name,
                         (long)proc->pid, WTERMSIG(proc->status));
                else
                    hlog("%s (pid %ld) had already exited with status %d", proc->name,
                         (long)proc->pid, WEXITSTATUS(proc->status));
            }
            proc->reported = true;
            continue;
        }
        proc->reported = true; /* killed here: not news at the next call */
        hlog("killing %s (pid %ld), left running by the test", proc->name, (long)proc->pid);
        kill(proc->pid, SIGKILL);
        int status = 0;
        pid_t r;
        do {
            r = waitpid(proc->pid, &status, 0);
        } while (r < 0 && errno == EINTR);
        proc_mark_exited(proc, r == proc->pid ? status : -1);
    }
    while (tmpdirs) {
        struct tmpdir_entry *e = tmpdirs;
        tmpdirs = e->next;
        hlog("kept %s for inspection (the test did not finish cleanly)", e->path);
        free(e->path);
        free(e);
    }
}

void tg_harness_discard_leftovers(void)
{
    while (tmpdirs) {
        struct tmpdir_entry *e = tmpdirs;
        tmpdirs = e->next;
        tg_harness_rmtree(e->path);
        free(e->path);
        free(e);
    }
}

/* ------------------------------------------------------------------------------------------
 * Time and waiting
 */

int64_t tg_harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool tg_harness_wait_until(tg_harness_cond_fn fn, void *ud, int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    int pause_ms = 1;
    for (;;) {
        if (fn(ud))
            return true;
        int64_t left = deadline - tg_harness_now_ms();
        if (left <= 0)
            return fn(ud);
        harness__sleep_ms(pause_ms < left ? pause_ms : (int)left);
        if (pause_ms < 25)
            pause_ms *= 2;
    }
}

/* ------------------------------------------------------------------------------------------
 * Loopback TCP
 */

int (*harness__port_source)(void) = tg_harness_free_port;

int tg_harness_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sa;
    int port = -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int tg_harness_tcp_probe(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int err = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : errno;
    close(fd);
    return err;
}

/* ------------------------------------------------------------------------------------------
 * Temporary directories
 */

char *tg_harness_tmpdir_new(const char *tag)
{
    harness_init();
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char *path = harness__asprintf("%s/tidegate-%s-XXXXXX", base, tag);
    struct tmpdir_entry *e = calloc(1, sizeof *e);
    if (!path || !e || !mkdtemp(path)) {
        hlog("cannot create a temp dir under %s: %s", base, strerror(errno));
        free(path);
        free(e);
        return NULL;
    }
    e->path = strdup(path);
    if (!e->path) {
        rmdir(path);
        free(path);
        free(e);
        return NULL;
    }
    e->next = tmpdirs;
    tmpdirs = e;
    return path;
}

void tg_harness_tmpdir_done(char *path)
{
    if (!path)
        return;
    for (struct tmpdir_entry **pp = &tmpdirs; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->path, path) == 0) {
            struct tmpdir_entry *e = *pp;
            *pp = e->next;
            free(e->path);
            free(e);
            break;
        }
    }
    const char *keep = getenv("TG_HARNESS_KEEP");
    if (keep && *keep && strcmp(keep, "0") != 0)
        hlog("kept %s (TG_HARNESS_KEEP)", path);
    else if (tg_harness_rmtree(path) != 0)
        hlog("cannot remove %s: %s", path, strerror(errno));
    free(path);
}

static int rmtree_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int tg_harness_rmtree(const char *path)
{
    return nftw(path, rmtree_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------
 * Binaries
 */

const char *tg_harness_bin_dir(void)
{
    const char *dir = getenv("TG_BIN_DIR");
    return dir && *dir ? dir : TG_HARNESS_BIN_DIR;
}

char *tg_harness_find_program(const char *name)
{
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *env_path = getenv("PATH");
    char *search =
        harness__asprintf("%s:/usr/local/sbin:/usr/sbin:/sbin", env_path ? env_path : "");
    if (!search)
        return NULL;
    char *found = NULL;
    char *save = NULL;
    for (char *dir = strtok_r(search, ":", &save); dir && !found;
         dir = strtok_r(NULL, ":", &save)) {
        char *candidate = harness__asprintf("%s/%s", *dir ? dir : ".", name);
        if (candidate && access(candidate, X_OK) == 0)
            found = candidate;
        else
            free(candidate);
    }
    free(search);
    return found;
}

/* ------------------------------------------------------------------------------------------
 * Child processes
 */

/* The test's environment with the entries of extra added, replacing those with the same key.
 * The array is malloc'd; its strings are borrowed (environ's and the caller's). */
static char **build_env(const char *const extra[])
{
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    char **envp = calloc(n_env + n_extra + 1, sizeof *envp);
    if (!envp)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t keylen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < n_extra && !overridden; j++)
            overridden = strncmp(extra[j], environ[i], keylen) == 0 && extra[j][keylen] == '=';
        if (!overridden)
            envp[n++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp[n++] = (char *)extra[j];
    envp[n] = NULL;
    return envp;
}

/* fork + exec. Between the two the child runs only async-signal-safe calls: the test process
 * may have librdkafka or libmosquitto threads, and another thread may hold malloc's lock.
 * in/out/err are the fds to install as 0/1/2, or -1 to inherit the test's. */
static pid_t spawn(const char *path, const char *const argv[], char *const envp[], int in_fd,
                   int out_fd, int err_fd)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid; /* parent, or -1 */

    /* Die with the test, even if it dies by SIGKILL. If it already died between fork and
     * prctl, our parent is now someone else: give up. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    const int fds[3] = {in_fd, out_fd, err_fd};
    for (int target = 0; target < 3; target++) {
        if (fds[target] < 0)
            continue;
        if (fds[target] == target) {
            int flags = fcntl(target, F_GETFD);
            fcntl(target, F_SETFD, flags & ~FD_CLOEXEC);
        } else if (dup2(fds[target], target) < 0) {
            _exit(127);
        }
    }
    /* exec keeps ignored signals ignored and the signal mask: reset both (the test
     * ignores SIGPIPE; a library thread may have blocked signals). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN) {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigaction(sig, &dfl, NULL);
        }
    }
    execve(path, (char *const *)argv, envp);
    static const char msg[] = "harness: exec failed\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void proc_free(struct tg_harness_proc *proc)
{
    if (!proc)
        return;
    close_fd(&proc->stdin_fd);
    close_fd(&proc->stdout_fd);
    free(proc->name);
    free(proc->stdout_path);
    free(proc->stderr_path);
    free(proc);
}

struct tg_harness_proc *tg_harness_proc_start(const char *dir, const char *name,
                                              const char *const argv[],
                                              const char *const env[], unsigned flags)
{
    harness_init();
    struct tg_harness_proc *proc = calloc(1, sizeof *proc);
    char *path = NULL;
    char **envp = NULL;
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    int child_in = -1, child_out = -1, child_err = -1;

    if (!proc)
        return NULL;
    proc->stdin_fd = proc->stdout_fd = -1;
    proc->pid_slot = -1;
    proc->name = strdup(name);
    proc->stderr_path = harness__asprintf("%s/%s.stderr", dir, name);
    if (!(flags & TG_HARNESS_PROC_STDOUT_PIPE))
        proc->stdout_path = harness__asprintf("%s/%s.stdout", dir, name);
    envp = build_env(env);
    if (!proc->name || !proc->stderr_path || !envp ||
        (!(flags & TG_HARNESS_PROC_STDOUT_PIPE) && !proc->stdout_path))
        goto fail;

    path = tg_harness_find_program(argv[0]);
    if (!path) {
        hlog("%s: program '%s' not found", name, argv[0]);
        goto fail;
    }

    if (flags & TG_HARNESS_PROC_STDIN_PIPE) {
        if (pipe2(in_pipe, O_CLOEXEC) != 0)
            goto fail_errno;
        child_in = in_pipe[0];
        proc->stdin_fd = in_pipe[1];
        in_pipe[0] = in_pipe[1] = -1;
    } else {
        child_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (flags & TG_HARNESS_PROC_STDOUT_PIPE) {
        if (pipe2(out_pipe, O_CLOEXEC) != 0)
            goto fail_errno;
        child_out = out_pipe[1];
        proc->stdout_fd = out_pipe[0];
        out_pipe[0] = out_pipe[1] = -1;
    } else {
        child_out = open_log(proc->stdout_path);
    }
    child_err = open_log(proc->stderr_path);
    if (child_in < 0 || child_out < 0 || child_err < 0)
        goto fail_errno;

    proc->pid = spawn(path, argv, envp, child_in, child_out, child_err);
    if (proc->pid < 0)
        goto fail_errno;
    proc->pid_slot = pid_slot_take(proc->pid);
    proc->next = procs;
    procs = proc;

    close(child_in);
    close(child_out);
    close(child_err);
    free(path);
    free(envp);
    return proc;

fail_errno:
    hlog("%s: cannot start %s: %s", name, argv[0], strerror(errno));
fail:
    close_fd(&child_in);
    close_fd(&child_out);
    close_fd(&child_err);
    free(path);
    free(envp);
    proc_free(proc);
    return NULL;
}

pid_t tg_harness_proc_pid(const struct tg_harness_proc *proc)
{
    return proc->pid;
}

const char *tg_harness_proc_name(const struct tg_harness_proc *proc)
{
    return proc->name;
}

const char *tg_harness_proc_stderr_path(const struct tg_harness_proc *proc)
{
    return proc->stderr_path;
}

const char *tg_harness_proc_stdout_path(const struct tg_harness_proc *proc)
{
    return proc->stdout_path;
}

int tg_harness_proc_write(struct tg_harness_proc *proc, const char *text)
{
    size_t len = strlen(text), off = 0;
    if (proc->stdin_fd < 0)
        return -1;
    while (off < len) {
        ssize_t n = write(proc->stdin_fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            hlog("%s: write to stdin: %s", proc->name, strerror(errno));
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

void tg_harness_proc_close_stdin(struct tg_harness_proc *proc)
{
    close_fd(&proc->stdin_fd);
}

/* Moves one complete line out of rbuf, if there is one. */
static int take_line(struct tg_harness_proc *proc, char *buf, size_t size)
{
    char *nl = memchr(proc->rbuf, '\n', proc->rlen);
    if (!nl)
        return -1;
    size_t linelen = (size_t)(nl - proc->rbuf);
    size_t copy = linelen < size - 1 ? linelen : size - 1;
    memcpy(buf, proc->rbuf, copy);
    buf[copy] = '\0';
    proc->rlen -= linelen + 1;
    memmove(proc->rbuf, nl + 1, proc->rlen);
    return (int)copy;
}

int tg_harness_proc_read_line(struct tg_harness_proc *proc, char *buf, size_t size,
                              int timeout_ms)
{
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    if (proc->stdout_fd < 0 || size == 0)
        return -1;
    for (;;) {
        int n = take_line(proc, buf, size);
        if (n >= 0 && !proc->rskip)
            return n;
        if (n >= 0) { /* the tail of an over-long line we already returned */
            proc->rskip = false;
            continue;
        }
        if (proc->rlen == sizeof proc->rbuf) { /* over-long line: return its head */
            size_t copy = size - 1 < proc->rlen ? size - 1 : proc->rlen;
            memcpy(buf, proc->rbuf, copy);
            buf[copy] = '\0';
            proc->rlen = 0;
            proc->rskip = true;
            return (int)copy;
        }
        int64_t left = deadline - tg_harness_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = proc->stdout_fd, .events = POLLIN};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t got = read(proc->stdout_fd, proc->rbuf + proc->rlen,
                           sizeof proc->rbuf - proc->rlen);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1; /* EOF: the child closed stdout or died */
        proc->rlen += (size_t)got;
        if (proc->rskip) { /* drop the rest of the over-long line up to its newline */
            char *nl = memchr(proc->rbuf, '\n', proc->rlen);
            if (!nl) {
                proc->rlen = 0;
                continue;
            }
            proc->rlen -= (size_t)(nl + 1 - proc->rbuf);
            memmove(proc->rbuf, nl + 1, proc->rlen);
            proc->rskip = false;
        }
    }
}

int tg_harness_proc_signal(struct tg_harness_proc *proc, int sig)
{
    if (proc_reap(proc))
        return -1;
    return kill(proc->pid, sig) == 0 ? 0 : -1;
}

bool tg_harness_proc_running(struct tg_harness_proc *proc)
{
    return !proc_reap(proc);
}

static bool proc_exited_cond(void *ud)
{
    return proc_reap(ud);
}

int tg_harness_proc_wait(struct tg_harness_proc *proc, int timeout_ms, int *status)
{
    if (!tg_harness_wait_until(proc_exited_cond, proc, timeout_ms))
        return -1;
    if (status)
        *status = proc->status;
    return 0;
}

int tg_harness_proc_stop(struct tg_harness_proc *proc, int timeout_ms)
{
    int status;
    if (proc_reap(proc))
        return proc->status;
    kill(proc->pid, SIGTERM);
    if (tg_harness_proc_wait(proc, timeout_ms, &status) == 0)
        return status;
    hlog("%s (pid %ld) ignored SIGTERM for %d ms: SIGKILL", proc->name, (long)proc->pid,
         timeout_ms);
    kill(proc->pid, SIGKILL);
    if (tg_harness_proc_wait(proc, 5000, &status) == 0)
        return status;
    return -1;
}

void tg_harness_proc_destroy(struct tg_harness_proc *proc)
{
    if (!proc)
        return;
    tg_harness_proc_stop(proc, DESTROY_STOP_TIMEOUT_MS);
    for (struct tg_harness_proc **pp = &procs; *pp; pp = &(*pp)->next) {
        if (*pp == proc) {
            *pp = proc->next;
            break;
        }
    }
    proc_free(proc);
}

bool tg_harness_exited_ok(int status)
{
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int tg_harness_run(const char *const argv[], const char *input, size_t input_len,
                   char **output, int timeout_ms)
{
    harness_init();
    int64_t deadline = tg_harness_now_ms() + timeout_ms;
    int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1};
    int dev_null = -1;
    char *path = NULL, *out = NULL;
    size_t out_len = 0, out_cap = 0, in_off = 0;
    char **envp = build_env(NULL);
    int status = -1;
    pid_t pid = -1;
    int slot = -1;

    if (output)
        *output = NULL;
    if (!envp)
        return -1;
    path = tg_harness_find_program(argv[0]);
    if (!path) {
        hlog("program '%s' not found", argv[0]);
        goto out;
    }
    if (input) {
        if (pipe2(in_pipe, O_CLOEXEC) != 0)
            goto out;
        fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    } else if ((dev_null = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        goto out;
    }
    if (output && pipe2(out_pipe, O_CLOEXEC) != 0)
        goto out;

    pid = spawn(path, argv, envp, input ? in_pipe[0] : dev_null, output ? out_pipe[1] : -1,
                -1);
    if (pid < 0) {
        hlog("cannot start %s: %s", argv[0], strerror(errno));
        goto out;
    }
    slot = pid_slot_take(pid);
    close_fd(&in_pipe[0]);
    close_fd(&out_pipe[1]);
    close_fd(&dev_null);
    if (input && input_len == 0)
        close_fd(&in_pipe[1]);

    /* Feed stdin and drain stdout until the child closes stdout and exits. */
    bool exited = false;
    while (!exited) {
        struct pollfd pfd[2] = {
            {.fd = in_pipe[1], .events = POLLOUT},
            {.fd = out_pipe[0], .events = POLLIN},
        };
        int64_t left = deadline - tg_harness_now_ms();
        if (left <= 0)
            break;
        bool io = in_pipe[1] >= 0 || out_pipe[0] >= 0;
        int r = io ? poll(pfd, 2, (int)(left < 20 ? left : 20)) : 0;
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && (pfd[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(in_pipe[1], input + in_off, input_len - in_off);
            if (n > 0)
                in_off += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || in_off == input_len)
                close_fd(&in_pipe[1]); /* all written, or the child stopped reading */
        }
        if (r > 0 && (pfd[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            if (out_cap - out_len < 4096) {
                size_t cap = out_cap ? out_cap * 2 : 8192;
                char *grown = realloc(out, cap);
                if (!grown)
                    break;
                out = grown;
                out_cap = cap;
            }
            ssize_t n = read(out_pipe[0], out + out_len, out_cap - out_len - 1);
            if (n > 0)
                out_len += (size_t)n;
            else if (n == 0 || errno != EINTR)
                close_fd(&out_pipe[0]);
        }
        if (out_pipe[0] < 0) {
            int st;
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) {
                status = st;
                exited = true;
            } else if (!io) {
                harness__sleep_ms(5);
            }
        }
    }
    if (!exited) {
        hlog("%s did not finish within %d ms: killed", argv[0], timeout_ms);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        status = -1;
    }
    if (slot >= 0)
        live_pids[slot] = 0;
    if (output && status != -1) {
        if (!out)
            out = calloc(1, 1);
        else
            out[out_len] = '\0';
        *output = out;
        out = NULL;
    }

out:
    close_fd(&in_pipe[0]);
    close_fd(&in_pipe[1]);
    close_fd(&out_pipe[0]);
    close_fd(&out_pipe[1]);
    close_fd(&dev_null);
    free(out);
    free(path);
    free(envp);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Log files
 */

char *harness__read_file_from(const char *path, off_t offset)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (fseeko(f, offset, SEEK_SET) == 0) {
        for (;;) {
            if (cap - len < 4096) {
                cap = cap ? cap * 2 : 8192;
                char *grown = realloc(buf, cap);
                if (!grown)
                    break;
                buf = grown;
            }
            size_t n = fread(buf + len, 1, cap - len - 1, f);
            len += n;
            if (n == 0)
                break;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

int tg_harness_http_get(int port, const char *path, int timeout_ms, char **body)
{
    if (body)
        *body = NULL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int status = -1;
    char *buf = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto cleanup;
    /* Long enough for a URL-encoded PromQL query (test_dashboard). */
    char req[8192];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (n < 0 || (size_t)n >= sizeof req || send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto cleanup;
    size_t cap = 16384, got = 0;
    buf = malloc(cap);
    if (!buf)
        goto cleanup;
    for (;;) {
        if (got + 1 >= cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                goto cleanup;
            buf = grown;
            cap *= 2;
        }
        ssize_t k = read(fd, buf + got, cap - got - 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            goto cleanup;
        if (k == 0)
            break; /* HTTP/1.0: the server closes after the body */
        got += (size_t)k;
    }
    buf[got] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    int code = 0;
    if (!end || sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
        goto cleanup;
    status = code;
    if (body && !(*body = strdup(end + 4)))
        status = -1;
cleanup:
    free(buf);
    close(fd);
    return status;
}

char *tg_harness_read_file(const char *path) { return harness__read_file_from(path, 0); }

bool tg_harness_file_contains(const char *path, const char *needle)
{
    char *text = harness__read_file_from(path, 0);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

off_t harness__file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

#define LOG_TAIL_BYTES 6000

void harness__print_log(const char *what, const char *path, off_t offset)
{
    char *text = harness__read_file_from(path, offset);
    if (!text) {
        hlog("---- %s (%s): unreadable ----", what, path);
        return;
    }
    size_t len = strlen(text), from = 0;
    if (len > LOG_TAIL_BYTES)
        from = len - LOG_TAIL_BYTES;
    hlog("---- %s (%s) ----\n%s", what, path, text + from);
    free(text);
}

int harness__start_failed(struct tg_harness_proc **proc, const char *log_path, off_t offset,
                          int stop_timeout_ms, const char *why)
{
    char *log = harness__read_file_from(log_path, offset);
    bool in_use = log && strstr(log, "Address already in use");
    free(log);
    if (!in_use) {
        if (why)
            hlog("%s", why);
        harness__print_log("log", log_path, offset);
    }
    harness__proc_end(proc, stop_timeout_ms);
    return in_use ? 1 : -1;
}

int harness__proc_end(struct tg_harness_proc **proc, int timeout_ms)
{
    if (!*proc)
        return 0;
    int status = tg_harness_proc_stop(*proc, timeout_ms);
    tg_harness_proc_destroy(*proc);
    *proc = NULL;
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Mosquitto
 */

struct tg_harness_mosquitto {
    char *dir;
    char *conf_path;
    char *log_path;
    unsigned flags;
    char *extra_conf;
    int port;
    struct tg_harness_proc *proc;
};

static int mosquitto_write_conf(struct tg_harness_mosquitto *mq)
{
    FILE *f = fopen(mq->conf_path, "we");
    if (!f) {
        hlog("cannot write %s: %s", mq->conf_path, strerror(errno));
        return -1;
    }
    fprintf(f, "# generated by the tidegate integration-test harness\n"
               "listener %d " HARNESS_LOOPBACK "\n"
               "allow_anonymous true\n"
               "log_dest stderr\n"
               "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
               "log_type subscribe\nlog_type unsubscribe\n"
               "connection_messages true\n",
            mq->port);
    if (mq->flags & TG_HARNESS_MQTT_PERSISTENCE)
        fprintf(f, "persistence true\npersistence_location %s/\n", mq->dir);
    else
        fprintf(f, "persistence false\n");
    /* As root, Mosquitto switches to the "mosquitto" user unless told otherwise, and that
     * user could not write the persistence file into our 0700 temp dir. */
    if (geteuid() == 0)
        fprintf(f, "user root\n");
    if (mq->extra_conf)
        fprintf(f, "%s\n", mq->extra_conf);
    if (fclose(f) != 0) {
        hlog("cannot write %s: %s", mq->conf_path, strerror(errno));
        return -1;
    }
    return 0;
}

struct mosquitto_ready {
    struct tg_harness_mosquitto *mq;
    off_t log_offset;
};

/* Ready: Mosquitto logged "running" (it opened its listener) and accepts a connection. Also
 * stops the wait when the process has exited. */
static bool mosquitto_ready_cond(void *ud)
{
    struct mosquitto_ready *rd = ud;
    if (!tg_harness_proc_running(rd->mq->proc))
        return true;
    char *log =
        harness__read_file_from(tg_harness_proc_stderr_path(rd->mq->proc), rd->log_offset);
    bool running = log && strstr(log, " running");
    free(log);
    return running && tg_harness_tcp_probe(HARNESS_LOOPBACK, rd->mq->port) == 0;
}

/* Starts the process on mq->port. Returns 0 when ready, 1 when the port was in use (retry on
 * another), -1 on any other failure. */
static int mosquitto_launch(struct tg_harness_mosquitto *mq)
{
    const char *argv[] = {"mosquitto", "-c", mq->conf_path, NULL};
    struct mosquitto_ready rd = {.mq = mq, .log_offset = harness__file_size(mq->log_path)};

    mq->proc = tg_harness_proc_start(mq->dir, "mosquitto", argv, NULL, 0);
    if (!mq->proc)
        return -1;
    bool done = tg_harness_wait_until(mosquitto_ready_cond, &rd, MOSQUITTO_START_TIMEOUT_MS);
    if (done && tg_harness_proc_running(mq->proc))
        return 0;

    char why[128];
    snprintf(why, sizeof why, "mosquitto did not start on port %d within %d ms", mq->port,
             MOSQUITTO_START_TIMEOUT_MS);
    return harness__start_failed(&mq->proc, mq->log_path, rd.log_offset,
                                 MOSQUITTO_STOP_TIMEOUT_MS, why);
}

struct tg_harness_mosquitto *tg_harness_mosquitto_start(unsigned flags, const char *extra_conf)
{
    struct tg_harness_mosquitto *mq = calloc(1, sizeof *mq);
    if (!mq)
        return NULL;
    mq->flags = flags;
    mq->dir = tg_harness_tmpdir_new("mosquitto");
    if (!mq->dir)
        goto fail;
    mq->conf_path = harness__asprintf("%s/mosquitto.conf", mq->dir);
    mq->log_path = harness__asprintf("%s/mosquitto.stderr", mq->dir);
    if (!mq->conf_path || !mq->log_path ||
        (extra_conf && !(mq->extra_conf = strdup(extra_conf))))
        goto fail;

    for (int attempt = 1; attempt <= MOSQUITTO_PORT_ATTEMPTS; attempt++) {
        mq->port = harness__port_source();
        if (mq->port < 0 || mosquitto_write_conf(mq) != 0)
            goto fail;
        int r = mosquitto_launch(mq);
        if (r == 0)
            return mq;
        if (r < 0)
            goto fail;
        hlog("port %d was taken before mosquitto could bind it; trying another", mq->port);
    }
    hlog("mosquitto: no free port after %d attempts", MOSQUITTO_PORT_ATTEMPTS);
fail:
    /* keep the temp dir: it holds the config and log of the failed start */
    if (mq->dir)
        hlog("mosquitto: start failed; see %s", mq->dir);
    free(mq->conf_path);
    free(mq->log_path);
    free(mq->extra_conf);
    free(mq->dir); /* the registry has its own copy: the dir is reported and kept */
    free(mq);
    return NULL;
}

const char *tg_harness_mosquitto_host(const struct tg_harness_mosquitto *mq)
{
    (void)mq;
    return HARNESS_LOOPBACK;
}

int tg_harness_mosquitto_port(const struct tg_harness_mosquitto *mq)
{
    return mq->port;
}

const char *tg_harness_mosquitto_dir(const struct tg_harness_mosquitto *mq)
{
    return mq->dir;
}

const char *tg_harness_mosquitto_log_path(const struct tg_harness_mosquitto *mq)
{
    return mq->log_path;
}

struct tg_harness_proc *tg_harness_mosquitto_proc(const struct tg_harness_mosquitto *mq)
{
    return mq->proc;
}

int tg_harness_mosquitto_stop(struct tg_harness_mosquitto *mq)
{
    if (!mq->proc)
        return 0;
    int status = harness__proc_end(&mq->proc, MOSQUITTO_STOP_TIMEOUT_MS);
    if (!tg_harness_exited_ok(status)) {
        hlog("mosquitto did not exit cleanly (wait status %d)", status);
        return -1;
    }
    return 0;
}

int tg_harness_mosquitto_restart(struct tg_harness_mosquitto *mq)
{
    int rc = tg_harness_mosquitto_stop(mq);
    if (mosquitto_launch(mq) != 0) {
        hlog("mosquitto could not be restarted on port %d", mq->port);
        return -1;
    }
    return rc;
}

void tg_harness_mosquitto_destroy(struct tg_harness_mosquitto *mq)
{
    if (!mq)
        return;
    tg_harness_mosquitto_stop(mq);
    tg_harness_tmpdir_done(mq->dir);
    free(mq->conf_path);
    free(mq->log_path);
    free(mq->extra_conf);
    free(mq);
}

/* ------------------------------------------------------------------------------------------
 * tidegate-devkafka
 */

struct tg_harness_devkafka {
    char *dir;
    struct tg_harness_proc *proc;
    char bootstrap[2048];
    int n_brokers;
    int ports[DEVKAFKA_BROKERS_MAX]; /* ports[id - 1] */
};

/* "127.0.0.1:p1,127.0.0.1:p2" -> ports. Returns the number of brokers, or -1. */
static int parse_bootstrap(const char *bootstrap, int *ports, int max)
{
    int n = 0;
    const char *p = bootstrap;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memrchr(p, ':', (size_t)(end - p));
        if (!colon || n == max)
            return -1;
        char *num_end;
        long port = strtol(colon + 1, &num_end, 10);
        if (num_end != end || port <= 0 || port > 65535)
            return -1;
        ports[n++] = (int)port;
        p = comma ? comma + 1 : end;
    }
    return n > 0 ? n : -1;
}

/* TG_DEVKAFKA_BIN names a devkafka binary outside TG_BIN_DIR: the ARM test tiers run the
 * gateway under qemu-user but keep devkafka native, since librdkafka's mock cluster polls in a
 * tight loop that emulation slows past the tests' deadlines. */
char *tg_harness_devkafka_bin(void)
{
    const char *override = getenv("TG_DEVKAFKA_BIN");

    if (override && *override)
        return harness__asprintf("%s", override);
    return harness__asprintf("%s/tidegate-devkafka", tg_harness_bin_dir());
}

struct tg_harness_devkafka *tg_harness_devkafka_start(const char *const args[])
{
    struct tg_harness_devkafka *dk = calloc(1, sizeof *dk);
    char *bin = NULL;
    const char **argv = NULL;
    size_t n_args = 0;

    if (!dk)
        return NULL;
    while (args && args[n_args])
        n_args++;
    dk->dir = tg_harness_tmpdir_new("devkafka");
    bin = tg_harness_devkafka_bin();
    argv = calloc(n_args + 2, sizeof *argv);
    if (!dk->dir || !bin || !argv)
        goto fail;
    argv[0] = bin;
    for (size_t i = 0; i < n_args; i++)
        argv[i + 1] = args[i];

    dk->proc = tg_harness_proc_start(dk->dir, "devkafka", argv, NULL,
                                     TG_HARNESS_PROC_STDIN_PIPE | TG_HARNESS_PROC_STDOUT_PIPE);
    if (!dk->proc)
        goto fail;
    if (tg_harness_proc_read_line(dk->proc, dk->bootstrap, sizeof dk->bootstrap,
                                  DEVKAFKA_START_TIMEOUT_MS) < 0) {
        hlog("devkafka printed no bootstrap line within %d ms", DEVKAFKA_START_TIMEOUT_MS);
        goto fail_log;
    }
    dk->n_brokers = parse_bootstrap(dk->bootstrap, dk->ports, DEVKAFKA_BROKERS_MAX);
    if (dk->n_brokers < 0) {
        hlog("devkafka's first line is not a bootstrap list: '%s'", dk->bootstrap);
        goto fail_log;
    }
    free(bin);
    free(argv);
    return dk;

fail_log:
    tg_harness_proc_stop(dk->proc, DEVKAFKA_STOP_TIMEOUT_MS);
    harness__print_log("devkafka log", tg_harness_proc_stderr_path(dk->proc), 0);
fail:
    if (dk->dir)
        hlog("devkafka: start failed; see %s", dk->dir);
    tg_harness_proc_destroy(dk->proc);
    free(bin);
    free(argv);
    free(dk->dir); /* the registry has its own copy: the dir is reported and kept */
    free(dk);
    return NULL;
}

const char *tg_harness_devkafka_bootstrap(const struct tg_harness_devkafka *dk)
{
    return dk->bootstrap;
}

int tg_harness_devkafka_broker_count(const struct tg_harness_devkafka *dk)
{
    return dk->n_brokers;
}

int tg_harness_devkafka_broker_port(const struct tg_harness_devkafka *dk, int id)
{
    return id >= 1 && id <= dk->n_brokers ? dk->ports[id - 1] : -1;
}

const char *tg_harness_devkafka_dir(const struct tg_harness_devkafka *dk)
{
    return dk->dir;
}

struct tg_harness_proc *tg_harness_devkafka_proc(const struct tg_harness_devkafka *dk)
{
    return dk->proc;
}

int tg_harness_devkafka_cmd(struct tg_harness_devkafka *dk, const char *cmd, char *reply,
                            size_t reply_size)
{
    char line[4096];
    char *text = harness__asprintf("%s\n", cmd);
    int rc = text ? tg_harness_proc_write(dk->proc, text) : -1;
    free(text);
    if (rc == 0 &&
        tg_harness_proc_read_line(dk->proc, line, sizeof line, DEVKAFKA_CMD_TIMEOUT_MS) < 0) {
        hlog("devkafka: no answer to '%s' within %d ms", cmd, DEVKAFKA_CMD_TIMEOUT_MS);
        rc = -1;
    }
    if (rc != 0) {
        if (reply && reply_size)
            reply[0] = '\0';
        return -1;
    }
    if (reply && reply_size)
        snprintf(reply, reply_size, "%s", line);
    return strncmp(line, "ok", 2) == 0 && (line[2] == '\0' || line[2] == ' ') ? 0 : -1;
}

struct ports_state {
    const struct tg_harness_devkafka *dk;
    bool want_refused;
};

static bool ports_state_cond(void *ud)
{
    const struct ports_state *ps = ud;
    for (int i = 0; i < ps->dk->n_brokers; i++) {
        int err = tg_harness_tcp_probe(HARNESS_LOOPBACK, ps->dk->ports[i]);
        if (ps->want_refused ? err != ECONNREFUSED : err != 0)
            return false;
    }
    return true;
}

static int devkafka_outage(struct tg_harness_devkafka *dk, int sig, bool down)
{
    struct ports_state ps = {.dk = dk, .want_refused = down};
    if (tg_harness_proc_signal(dk->proc, sig) != 0) {
        hlog("devkafka: cannot signal it: not running");
        return -1;
    }
    if (!tg_harness_wait_until(ports_state_cond, &ps, DEVKAFKA_OUTAGE_TIMEOUT_MS)) {
        hlog("devkafka: brokers not %s within %d ms", down ? "refusing connections" : "back up",
             DEVKAFKA_OUTAGE_TIMEOUT_MS);
        return -1;
    }
    return 0;
}

int tg_harness_devkafka_outage_begin(struct tg_harness_devkafka *dk)
{
    return devkafka_outage(dk, SIGUSR1, true);
}

int tg_harness_devkafka_outage_end(struct tg_harness_devkafka *dk)
{
    return devkafka_outage(dk, SIGUSR2, false);
}

int tg_harness_devkafka_stop(struct tg_harness_devkafka *dk)
{
    return tg_harness_proc_stop(dk->proc, DEVKAFKA_STOP_TIMEOUT_MS);
}

void tg_harness_devkafka_destroy(struct tg_harness_devkafka *dk)
{
    if (!dk)
        return;
    harness__proc_end(&dk->proc, DEVKAFKA_STOP_TIMEOUT_MS);
    tg_harness_tmpdir_done(dk->dir);
    free(dk);
}

/* ------------------------------------------------------------------------------------------
 * TLS material and Mosquitto password files
 */

struct tg_harness_tls {
    char *dir, *name;
    char *ca, *ca_key;
    char *server_cert, *server_key;
    char *client_cert, *client_key;
};

/* Runs argv to completion; 0 when it exited 0. Its stderr shows in the test's log. */
static int run_tool(const char *const argv[])
{
    int status = tg_harness_run(argv, NULL, 0, NULL, 60000);
    if (!tg_harness_exited_ok(status)) {
        hlog("%s %s failed (status %d)", argv[0], argv[1], status);
        return -1;
    }
    return 0;
}

/* A key and a certificate signed by tls's CA for cn, with subjectAltName san. */
static int tls_sign(const struct tg_harness_tls *tls, const char *what, const char *cn,
                    const char *san, const char *cert, const char *key)
{
    int rc = -1;
    char *csr = harness__asprintf("%s/%s-%s.csr", tls->dir, tls->name, what);
    char *ext_path = harness__asprintf("%s/%s-%s.ext", tls->dir, tls->name, what);
    char *subj = harness__asprintf("/CN=%s", cn);
    FILE *ext = NULL;
    if (!csr || !ext_path || !subj)
        goto out;
    /* openssl x509 -req takes extensions only from a file. */
    ext = fopen(ext_path, "we");
    if (!ext || fprintf(ext, "subjectAltName=%s\n", san) < 0) {
        hlog("cannot write %s: %s", ext_path, strerror(errno));
        goto out;
    }
    int closed = fclose(ext);
    ext = NULL;
    if (closed != 0) {
        hlog("cannot write %s: %s", ext_path, strerror(errno));
        goto out;
    }
    const char *req[] = {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
                         "-subj", subj, NULL};
    const char *sign[] = {"openssl", "x509", "-req", "-in", csr, "-CA", tls->ca, "-CAkey",
                          tls->ca_key, "-CAcreateserial", "-days", "2", "-out", cert,
                          "-extfile", ext_path, NULL};
    if (run_tool(req) != 0 || run_tool(sign) != 0)
        goto out;
    rc = 0;
out:
    if (ext)
        fclose(ext);
    free(csr);
    free(ext_path);
    free(subj);
    return rc;
}

struct tg_harness_tls *tg_harness_tls_make(const char *dir, const char *name,
                                           const char *client_cn)
{
    struct tg_harness_tls *tls = calloc(1, sizeof *tls);
    if (!tls)
        return NULL;
    tls->dir = strdup(dir);
    tls->name = strdup(name);
    tls->ca = harness__asprintf("%s/%s-ca.crt", dir, name);
    tls->ca_key = harness__asprintf("%s/%s-ca.key", dir, name);
    tls->server_cert = harness__asprintf("%s/%s-server.crt", dir, name);
    tls->server_key = harness__asprintf("%s/%s-server.key", dir, name);
    tls->client_cert = harness__asprintf("%s/%s-client.crt", dir, name);
    tls->client_key = harness__asprintf("%s/%s-client.key", dir, name);
    char *ca_subj = harness__asprintf("/CN=tidegate test CA %s", name);
    char *client_san = harness__asprintf("DNS:%s", client_cn);
    if (!tls->dir || !tls->name || !tls->ca || !tls->ca_key || !tls->server_cert ||
        !tls->server_key || !tls->client_cert || !tls->client_key || !ca_subj || !client_san)
        goto fail;
    const char *mkca[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", tls->ca_key,
                          "-out", tls->ca, "-days", "2", "-subj", ca_subj, NULL};
    if (run_tool(mkca) != 0 ||
        tls_sign(tls, "server", "localhost", "IP:127.0.0.1,DNS:localhost", tls->server_cert,
                 tls->server_key) != 0 ||
        tls_sign(tls, "client", client_cn, client_san, tls->client_cert, tls->client_key) != 0)
        goto fail;
    free(ca_subj);
    free(client_san);
    return tls;
fail:
    hlog("cannot make the TLS files %s/%s-*", dir, name);
    free(ca_subj);
    free(client_san);
    tg_harness_tls_destroy(tls);
    return NULL;
}

const char *tg_harness_tls_ca(const struct tg_harness_tls *tls)
{
    return tls->ca;
}

const char *tg_harness_tls_server_cert(const struct tg_harness_tls *tls)
{
    return tls->server_cert;
}

const char *tg_harness_tls_server_key(const struct tg_harness_tls *tls)
{
    return tls->server_key;
}

const char *tg_harness_tls_client_cert(const struct tg_harness_tls *tls)
{
    return tls->client_cert;
}

const char *tg_harness_tls_client_key(const struct tg_harness_tls *tls)
{
    return tls->client_key;
}

int tg_harness_tls_make_client(const struct tg_harness_tls *tls, const char *what,
                               const char *cn, char **cert, char **key)
{
    *cert = harness__asprintf("%s/%s-%s.crt", tls->dir, tls->name, what);
    *key = harness__asprintf("%s/%s-%s.key", tls->dir, tls->name, what);
    char *san = harness__asprintf("DNS:%s", cn);
    int rc = *cert && *key && san ? tls_sign(tls, what, cn, san, *cert, *key) : -1;
    free(san);
    if (rc != 0) {
        hlog("cannot make the TLS files %s/%s-%s.*", tls->dir, tls->name, what);
        free(*cert);
        free(*key);
        *cert = *key = NULL;
    }
    return rc;
}

char *tg_harness_tls_listener_conf(const struct tg_harness_tls *tls, int port,
                                   bool require_client_cert)
{
    return harness__asprintf("listener %d " HARNESS_LOOPBACK "\n"
                     "cafile %s\n"
                     "certfile %s\n"
                     "keyfile %s\n"
                     "require_certificate %s\n",
                     port, tls->ca, tls->server_cert, tls->server_key,
                     require_client_cert ? "true" : "false");
}

void tg_harness_tls_destroy(struct tg_harness_tls *tls)
{
    if (!tls)
        return;
    free(tls->dir);
    free(tls->name);
    free(tls->ca);
    free(tls->ca_key);
    free(tls->server_cert);
    free(tls->server_key);
    free(tls->client_cert);
    free(tls->client_key);
    free(tls);
}

int tg_harness_mosquitto_passwd(const char *path, const char *user, const char *password)
{
    /* mosquitto_passwd -b needs the file to exist; 0600 because Mosquitto warns about (and
     * later versions refuse) password files others can read. */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        hlog("cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    const char *argv[] = {"mosquitto_passwd", "-b", path, user, password, NULL};
    return run_tool(argv);
}
