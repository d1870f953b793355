/*
 * harness.h - what an integration test needs to run real components on loopback: temporary
 * directories, child processes, a Mosquitto broker and a tidegate-devkafka cluster, each on a
 * free port, plus waiting for a condition with a deadline.
 *
 * Threads: call these functions from the test's main thread. Children are started with
 * PR_SET_PDEATHSIG = SIGKILL, which fires when the *thread* that forked them exits; for the
 * main thread that is when the test process dies, however it dies.
 *
 * Cleanup, in three layers:
 *   - the normal path: each _destroy() stops its process and removes its temporary directory;
 *   - a test that fails half-way (a cmocka assertion longjmps past the _destroy calls): call
 *     tg_harness_reap_all() from the cmocka teardown, and it also runs at exit. It kills every
 *     child still running and KEEPS the temporary directories of objects never destroyed,
 *     printing their paths (logs, generated configs, persistence files) for debugging;
 *   - a crash: SIGABRT/SIGSEGV/SIGBUS/SIGFPE/SIGILL handlers SIGKILL every child (they do
 *     nothing else, and only async-signal-safe calls), then PDEATHSIG covers _exit and SIGKILL.
 * Set TG_HARNESS_KEEP=1 to keep every temporary directory, also on success.
 *
 * The harness ignores SIGPIPE in the test process: writing to a child that died must fail
 * with EPIPE, not kill the test. Children start with default signal dispositions.
 *
 * Errors: functions that can fail print why to stderr (prefix "harness: ") and return NULL or
 * -1, so a test only needs assert_non_null / assert_int_equal on the result.
 *
 * Where binaries come from: tidegate's own binaries from tg_harness_bin_dir() (the TG_BIN_DIR
 * environment variable, set by tg_integration_test() in CMake, else the build's bin directory
 * compiled in); system binaries (mosquitto, kcat, ...) from PATH, then /usr/sbin and /sbin.
 */
#ifndef TG_HARNESS_H
#define TG_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------------------------
 * Time and waiting
 */

/* Monotonic clock in milliseconds. */
int64_t tg_harness_now_ms(void);

/* A condition to wait for; ud is the caller's. Must not block for long. */
typedef bool (*tg_harness_cond_fn)(void *ud);

/* Calls fn(ud) until it returns true or timeout_ms have passed, pausing a few milliseconds
 * between calls (growing from 1 to 25 ms). Returns true when the condition became true. */
bool tg_harness_wait_until(tg_harness_cond_fn fn, void *ud, int timeout_ms);

/* ------------------------------------------------------------------------------------------
 * Loopback TCP
 */

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and released), or -1.
 * Someone else can take it before you bind it: starters that use it retry on collision. */
int tg_harness_free_port(void);

/* GET path from http://127.0.0.1:port (HTTP/1.0), each socket operation bounded by
 * timeout_ms. Returns the status code, or -1 when there was no well-formed answer; with body
 * not NULL, *body is the malloc'd NUL-terminated body (NULL on -1). For /metrics and /healthz. */
int tg_harness_http_get(int port, const char *path, int timeout_ms, char **body);

/* Tries one TCP connection to host:port (IPv4 literal). Returns 0 when it was accepted,
 * else the errno of connect(), e.g. ECONNREFUSED. The connection is closed at once. */
int tg_harness_tcp_probe(const char *host, int port);

/* ------------------------------------------------------------------------------------------
 * Temporary directories
 */

/* Creates $TMPDIR/tidegate-<tag>-XXXXXX (default /tmp) and registers it, so that it is
 * reported (and kept) if the test ends without tg_harness_tmpdir_done(). Returns a malloc'd
 * path the caller passes to tg_harness_tmpdir_done(), or NULL. */
char *tg_harness_tmpdir_new(const char *tag);

/* Success path: removes the directory recursively (unless TG_HARNESS_KEEP is set),
 * unregisters it and frees path. NULL is a no-op. */
void tg_harness_tmpdir_done(char *path);

/* Removes path and everything under it; does not follow symlinks. Returns 0 or -1. */
int tg_harness_rmtree(const char *path);

/* The whole file at path, malloc'd and NUL-terminated (the caller frees it), or NULL when it
 * cannot be read. For logs and /proc files of tests and benchmarks. */
char *tg_harness_read_file(const char *path);

/* True when the file at path exists and contains needle: with tg_harness_wait_until, the way
 * to wait for a log line. Reads the whole file on every call; meant for logs of tests. */
bool tg_harness_file_contains(const char *path, const char *needle);

/* ------------------------------------------------------------------------------------------
 * Binaries
 */

/* Directory of tidegate's binaries (TG_BIN_DIR, else the build's bin dir). Static string. */
const char *tg_harness_bin_dir(void);

/* Full path of an executable: name itself if it contains '/', else the first match in PATH,
 * then /usr/local/sbin, /usr/sbin, /sbin. Returns a malloc'd string, or NULL. */
char *tg_harness_find_program(const char *name);

/* ------------------------------------------------------------------------------------------
 * Child processes
 */

struct tg_harness_proc;

/* Flags for tg_harness_proc_start(). */
#define TG_HARNESS_PROC_STDIN_PIPE 0x1u   /* else stdin is /dev/null */
#define TG_HARNESS_PROC_STDOUT_PIPE 0x2u  /* else stdout goes to <dir>/<name>.stdout */

/* Starts argv[0] (resolved with tg_harness_find_program) with arguments argv (NULL-
 * terminated) and the test's environment plus env (NULL-terminated "KEY=VALUE" entries that
 * override the same keys; env may be NULL). stderr is appended to <dir>/<name>.stderr, stdout
 * to <dir>/<name>.stdout unless piped. Files are opened for appending, so a restarted process
 * adds to the same log. Returns NULL when the program cannot be found or started. */
struct tg_harness_proc *tg_harness_proc_start(const char *dir, const char *name,
                                              const char *const argv[],
                                              const char *const env[], unsigned flags);

pid_t tg_harness_proc_pid(const struct tg_harness_proc *proc);
const char *tg_harness_proc_name(const struct tg_harness_proc *proc);
const char *tg_harness_proc_stderr_path(const struct tg_harness_proc *proc);
const char *tg_harness_proc_stdout_path(const struct tg_harness_proc *proc); /* NULL if piped */

/* Writes all of text to the child's stdin pipe. Returns 0, or -1 (no pipe, child gone). */
int tg_harness_proc_write(struct tg_harness_proc *proc, const char *text);

/* Closes the child's stdin pipe: the child reads EOF. */
void tg_harness_proc_close_stdin(struct tg_harness_proc *proc);

/* Reads one line (without its newline) from the child's stdout pipe into buf, waiting at most
 * timeout_ms. Returns its length, or -1 on timeout, EOF or error. Longer lines are cut to
 * size - 1 bytes (the rest of the line is discarded). */
int tg_harness_proc_read_line(struct tg_harness_proc *proc, char *buf, size_t size,
                              int timeout_ms);

/* Sends sig to the child (if it has not been reaped). Returns 0 or -1. */
int tg_harness_proc_signal(struct tg_harness_proc *proc, int sig);

/* True while the child has not exited (reaps it without blocking when it has). */
bool tg_harness_proc_running(struct tg_harness_proc *proc);

/* Waits at most timeout_ms for the child to exit. Returns 0 and sets *status (a waitpid()
 * status: use WIFEXITED etc.; status may be NULL), or -1 on timeout. */
int tg_harness_proc_wait(struct tg_harness_proc *proc, int timeout_ms, int *status);

/* SIGTERM, then SIGKILL if the child has not exited after timeout_ms. Returns its waitpid()
 * status, or -1 if it could not be reaped. Once the child has exited, returns the same
 * status again. */
int tg_harness_proc_stop(struct tg_harness_proc *proc, int timeout_ms);

/* Stops the child if needed (SIGTERM, SIGKILL after 10 s), closes pipes, frees. The log files
 * stay in dir. NULL is a no-op. */
void tg_harness_proc_destroy(struct tg_harness_proc *proc);

/* True when a waitpid() status means "exited with status 0". */
bool tg_harness_exited_ok(int status);

/* Runs argv to completion with the given stdin (input_len bytes; input may be NULL for
 * /dev/null) and, when output is not NULL, collects its stdout into a malloc'd NUL-terminated
 * *output (else stdout is inherited). stderr is inherited, so it shows in the test's log.
 * After timeout_ms the child is killed. Returns the waitpid() status, or -1 on timeout or
 * failure to start (then *output is NULL). */
int tg_harness_run(const char *const argv[], const char *input, size_t input_len,
                   char **output, int timeout_ms);

/* Kills (SIGKILL) and reaps every child started through the harness that is still running,
 * names (once) those not destroyed that had already failed on their own (non-zero exit or a
 * signal), and reports every registered temporary directory as kept. For cmocka teardowns
 * after a failed test; also runs at exit. Objects stay allocated: their memory is the failed
 * test's. */
void tg_harness_reap_all(void);

/* Removes every registered temporary directory that no object owns any more, i.e. those left
 * by a failed start, which would otherwise be kept and reported. For tests that expect a
 * start to fail. Call it only when no harness object of the test is alive. */
void tg_harness_discard_leftovers(void);

/* ------------------------------------------------------------------------------------------
 * Mosquitto
 */

struct tg_harness_mosquitto;

/* Flags for tg_harness_mosquitto_start(). */
#define TG_HARNESS_MQTT_PERSISTENCE 0x1u  /* persistence true, location in the temp dir:
                                           * sessions and queued QoS1 messages survive
                                           * tg_harness_mosquitto_restart() */

/* Starts Mosquitto on a free 127.0.0.1 port with a generated config in a fresh temp dir
 * (listener, allow_anonymous true; logs connections and subscriptions, the latter as lines
 * "<unix time>: <client id> <qos> <topic filter>", to tg_harness_mosquitto_log_path()),
 * followed by extra_conf if not NULL (lines of mosquitto.conf, e.g. "max_queued_messages
 * 10000\n"). Returns once Mosquitto logged that it is running and a TCP connect to the port
 * succeeds (deadline 10 s). If the port was taken in the meantime, retries on another one.
 * Returns NULL on failure (the log is printed). */
struct tg_harness_mosquitto *tg_harness_mosquitto_start(unsigned flags, const char *extra_conf);

const char *tg_harness_mosquitto_host(const struct tg_harness_mosquitto *mq); /* "127.0.0.1" */
int tg_harness_mosquitto_port(const struct tg_harness_mosquitto *mq);
const char *tg_harness_mosquitto_dir(const struct tg_harness_mosquitto *mq);
/* The broker's log, appended to across restarts: wait on it with tg_harness_file_contains(). */
const char *tg_harness_mosquitto_log_path(const struct tg_harness_mosquitto *mq);
struct tg_harness_proc *tg_harness_mosquitto_proc(const struct tg_harness_mosquitto *mq);

/* Stops Mosquitto with SIGTERM (it saves its persistence database on the way out) and waits
 * for it (SIGKILL after 10 s). Returns 0 when it exited with status 0, else -1. A stopped
 * broker refuses connections until tg_harness_mosquitto_restart(). */
int tg_harness_mosquitto_stop(struct tg_harness_mosquitto *mq);

/* Stops Mosquitto if it runs, then starts it again with the same config on the SAME port.
 * Returns 0 when it is accepting connections again, -1 if not (e.g. the port was taken). */
int tg_harness_mosquitto_restart(struct tg_harness_mosquitto *mq);

/* Stops Mosquitto and removes its temp dir. NULL is a no-op. */
void tg_harness_mosquitto_destroy(struct tg_harness_mosquitto *mq);

/* ------------------------------------------------------------------------------------------
 * tidegate-devkafka
 */

struct tg_harness_devkafka;

/* Path of the devkafka binary the harness starts: TG_DEVKAFKA_BIN when set (the ARM tiers of
 * scripts/test point it at a native build), else <bin dir>/tidegate-devkafka. Caller frees. */
char *tg_harness_devkafka_bin(void);

/* Starts <bin>/tidegate-devkafka with the extra arguments args (NULL-terminated, or NULL for
 * the defaults: 3 brokers, the telemetry topics) in a fresh temp dir, its stdin and stdout
 * piped to the harness, and waits for the bootstrap line (deadline 30 s). devkafka prints it
 * only once every broker accepts connections. Returns NULL on failure (its log is printed). */
struct tg_harness_devkafka *tg_harness_devkafka_start(const char *const args[]);

/* "127.0.0.1:p1,127.0.0.1:p2,..." */
const char *tg_harness_devkafka_bootstrap(const struct tg_harness_devkafka *dk);
int tg_harness_devkafka_broker_count(const struct tg_harness_devkafka *dk);
/* Port of broker id (1 .. count). devkafka lists brokers in id order. -1 if no such id. */
int tg_harness_devkafka_broker_port(const struct tg_harness_devkafka *dk, int id);
const char *tg_harness_devkafka_dir(const struct tg_harness_devkafka *dk);
struct tg_harness_proc *tg_harness_devkafka_proc(const struct tg_harness_devkafka *dk);

/* Sends one command line ("down 1", "up all", "rtt all 50", "status") and waits for its
 * one-line answer (deadline 10 s), copied to reply when reply is not NULL. Returns 0 when the
 * answer starts with "ok", -1 otherwise (an "error: ..." answer, a timeout, a dead process). */
int tg_harness_devkafka_cmd(struct tg_harness_devkafka *dk, const char *cmd, char *reply,
                            size_t reply_size);

/* SIGUSR1 (every broker down), then waits until a TCP connect to every broker port is refused
 * (deadline 10 s). Returns 0 once the outage is visible, -1 if not. */
int tg_harness_devkafka_outage_begin(struct tg_harness_devkafka *dk);

/* SIGUSR2 (every broker up, same ports), then waits until every broker port accepts TCP
 * connections (deadline 10 s). Returns 0 or -1. */
int tg_harness_devkafka_outage_end(struct tg_harness_devkafka *dk);

/* SIGTERM and wait (SIGKILL after 15 s). Returns the waitpid() status (devkafka exits 0 on
 * SIGTERM) or -1. */
int tg_harness_devkafka_stop(struct tg_harness_devkafka *dk);

/* Stops devkafka if it runs and removes its temp dir. NULL is a no-op. */
void tg_harness_devkafka_destroy(struct tg_harness_devkafka *dk);

/* ------------------------------------------------------------------------------------------
 * TLS material and Mosquitto password files, for tests of TLS listeners
 */

struct tg_harness_tls;

/* Makes a small PKI with the openssl CLI (found on PATH) in dir, which the caller owns: a CA,
 * a server certificate for 127.0.0.1/localhost and a client certificate for client_cn (a
 * host-name-like id: it is also the client certificate's DNS subjectAltName), all EC P-256,
 * valid two days. Files are <dir>/<name>-ca.crt, -ca.key, -server.crt, -server.key,
 * -client.crt and -client.key, so that several PKIs (e.g. a second, unrelated CA) can share
 * one dir. Takes a few hundred ms. Returns NULL on failure (openssl's messages are on
 * stderr). Free with tg_harness_tls_destroy(); the files stay. */
struct tg_harness_tls *tg_harness_tls_make(const char *dir, const char *name,
                                           const char *client_cn);

/* Paths of the files (valid until tg_harness_tls_destroy()). */
const char *tg_harness_tls_ca(const struct tg_harness_tls *tls);
const char *tg_harness_tls_server_cert(const struct tg_harness_tls *tls);
const char *tg_harness_tls_server_key(const struct tg_harness_tls *tls);
const char *tg_harness_tls_client_cert(const struct tg_harness_tls *tls);
const char *tg_harness_tls_client_key(const struct tg_harness_tls *tls);

/* One more client certificate signed by tls's CA, for cn (also its DNS subjectAltName):
 * <dir>/<name>-<what>.crt and .key, what being e.g. "publisher". Sets *cert and *key to
 * malloc'd paths and returns 0, or returns -1 with both NULL. */
int tg_harness_tls_make_client(const struct tg_harness_tls *tls, const char *what,
                               const char *cn, char **cert, char **key);

/* Lines of mosquitto.conf (for tg_harness_mosquitto_start()'s extra_conf) that add a TLS
 * listener on 127.0.0.1:port with this PKI's server certificate, trusting its CA for client
 * certificates; with require_client_cert, clients without a certificate signed by that CA
 * are refused. Malloc'd, or NULL. The port is the caller's (tg_harness_free_port()): unlike
 * the plain listener, a collision on it is not retried. */
char *tg_harness_tls_listener_conf(const struct tg_harness_tls *tls, int port,
                                   bool require_client_cert);

/* NULL is a no-op. */
void tg_harness_tls_destroy(struct tg_harness_tls *tls);

/* Adds (or updates) user with password in the Mosquitto password file at path, creating it
 * with mode 0600 if needed (mosquitto_passwd -b). For "password_file <path>" in extra_conf;
 * with the harness's allow_anonymous true, clients that send a user name must then give its
 * password, and clients that send none stay allowed. Returns 0 or -1. */
int tg_harness_mosquitto_passwd(const char *path, const char *user, const char *password);

#endif
