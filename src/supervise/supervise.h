/* Supervise: the backend programs bulwark starts, restarts and stops
 * (config programs.<name>; README, "Programs").
 *
 * One supervisor per process, driven by the main thread's loop. Each program
 * runs under a keeper of its own: bulwark forks the keeper (no exec), the
 * keeper forks and execs the program in a process group of its own (with
 * user/group switched to when bulwark is root). The keeper is
 *  - a subreaper (PR_SET_CHILD_SUBREAPER): every process of the program's
 *    tree whose parent dies is re-parented to it, even one that left the
 *    process group or the session (setsid), so it can find them all in
 *    /proc/<keeper>/task/<keeper>/children;
 *  - tied to bulwark by PR_SET_PDEATHSIG(SIGTERM), a signal it waits for:
 *    when bulwark dies, even of SIGKILL, the keeper kills the program's
 *    group and then, round after round, every process it adopted, reaps
 *    them and exits. The program has PR_SET_PDEATHSIG(SIGKILL) towards the
 *    keeper, in case the keeper itself is killed.
 * When the program exits, its keeper kills the rest of the tree, sends the
 * program's wait status to bulwark on a pipe and exits; bulwark watches the
 * keeper. What ended it is kept, the upstream server it is bound to is
 * marked down at once, and it is restarted after an exponential back-off
 * (jitter within +-50%). It is marked up again when a TCP connect to its
 * server succeeds (polled on the loop). Too many crashes within
 * restart_window: FATAL, no more restarts.
 *
 * A program's stdout and stderr are pipes read on the loop (non-blocking,
 * in bounded batches), written on to its stdout/stderr file or, when none
 * is set, to bulwark's own stderr; the last SUPERVISE_TAIL_LINES lines of
 * stderr are kept in fixed memory as evidence (supervise_last_stderr, the
 * exit log line). A program that floods or never writes a newline is cut
 * per line, never grows memory.
 *
 * Hangs: the active health checks (src/upstream/health.c, same loop) tell
 * the supervisor every verdict through upstream_health_set_verdict_hook();
 * a RUNNING program whose server failed `fails` checks in a row while its
 * process is alive is stopped (stop_signal, SIGKILL after stop_timeout)
 * and restarted with the usual back-off and restart accounting.
 *
 * A reload (supervise_reload) and an operator (supervise_restart) restart
 * programs one at a time (a rolling restart), each waiting for the
 * replacement to be ready before the next.
 *
 * Not caught: a process that another manager starts on the program's behalf
 * (systemd-run, at, a D-Bus activation) is not in the tree; and when the
 * keeper itself is SIGKILLed together with bulwark (an OOM kill of both,
 * a kill of every process), the program dies but what it forked survives.
 *
 * The state is written on the loop's thread under a mutex; any thread may
 * read it with supervise_snapshot(), supervise_evidence() and
 * supervise_last_stderr(). Workers call supervise_evidence() only on a
 * gateway error (as the /errors ring, the mutex is never taken by a request
 * that succeeds).
 */
#ifndef BULWARK_SUPERVISE_H
#define BULWARK_SUPERVISE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "core/core.h"

enum program_state {
    PROGRAM_STOPPED = 0, /* not started, or stopped by bulwark */
    PROGRAM_STARTING,    /* running, its server not answering yet */
    PROGRAM_RUNNING,
    PROGRAM_BACKOFF,  /* exited; waiting to restart */
    PROGRAM_STOPPING, /* stop_signal sent, waiting for it to exit */
    PROGRAM_EXITED,   /* exited and not restarted (restart policy) */
    PROGRAM_FATAL,    /* max_restarts within restart_window: given up */
};

/* "RUNNING", "BACKOFF", ... as /status shows them. */
const char *supervise_state_name(enum program_state state);

struct supervisor;

/* Start every program of cfg (a reference is kept) on loop. down_cause is
 * the enum cause (observe.h) recorded when a program's server is marked down
 * because it exited. Programs that cannot be started are retried as if they
 * had exited (127). Returns NULL only when out of memory; a cfg without
 * programs gives a supervisor with nothing to do. */
struct supervisor *supervise_start(struct loop *loop, struct config *cfg, int down_cause);

/* Block (without running the loop) until every program with ready_timeout
 * has its server accepting connections, or its ready_timeout passed, or it
 * exited. Call it between supervise_start and opening the listeners. */
void supervise_wait_ready(struct supervisor *sv);

/* Stop every program: stop_signal to its process group, SIGKILL to the group
 * after stop_timeout. Runs the loop until all have exited (or loop_stop()
 * from elsewhere, then the rest get SIGKILL at once), then frees sv. Call it
 * after loop_run returned. NULL: nothing. */
void supervise_stop(struct supervisor *sv);

/* Apply a reloaded configuration (a reference is kept while its programs
 * run). Matched by name: a program whose process would differ (command, cwd,
 * env, user, group, stdout, stderr, upstream/server) is restarted in turn,
 * one program at a time, each waiting for its replacement to be ready (its
 * server answering; at most ready_timeout, else 30 s) before the next. With
 * the same server address the old process must go first: its server is
 * marked down (requests go to the other servers), its requests in flight
 * finish (at most stop_timeout), it is stopped, then started again. With a
 * new address the new process starts beside the old one, which is stopped
 * once the new one is ready. A change of policy only (restart, backoff,
 * max_restarts, restart_window, stop_signal, stop_timeout, ready_timeout)
 * applies without a restart; unchanged programs keep running untouched.
 * Added programs start at once; removed ones are stopped (stop_signal,
 * SIGKILL after stop_timeout). Call it on the supervisor's loop thread. */
void supervise_reload(struct supervisor *sv, struct config *cfg);

/* Restart program name as a rolling restart does (its server marked down,
 * requests in flight finished, stop_signal, SIGKILL after stop_timeout,
 * started again; a program not running, FATAL included, starts at once).
 * Any thread: the request is posted to the supervisor's loop. sv NULL: the
 * supervisor that runs (the admin thread has no pointer to it). Returns 0
 * when the restart was asked for, -ENOENT when no such program runs. */
int supervise_restart(struct supervisor *sv, const char *name);

/* What /status shows of one program. */
struct program_info {
    char name[CONFIG_MAX_PROGRAM_NAME + 1];
    enum program_state state;
    pid_t pid;               /* 0 when not running */
    uint32_t restarts;       /* since bulwark started */
    int64_t started_wall_ms; /* when the current (or last) run began; 0: never */
    bool has_exit;           /* a run has ended: the fields below are set */
    char last_exit[96];      /* "exit code 1", "killed by SIGSEGV (core dumped)" */
    int exit_code;           /* -1 when a signal ended it */
    char exit_signal[16];    /* "SIGSEGV"; "" when it exited */
    bool core_dumped;
    int64_t exited_wall_ms; /* when the last run ended */
    uint64_t run_time_ms;   /* how long the last run lasted */
    bool hung;              /* bulwark stopped the last run: its server failed its health
                               checks while the process was alive */
    uint32_t max_restarts;  /* from its config, for "restart 2 of 10"; 0: no limit */
    uint32_t restart_window_ms;
};

/* Copy the state of up to max programs into out (thread safe). Returns how
 * many there are (may exceed max); 0 when no supervisor runs. */
size_t supervise_snapshot(struct program_info *out, size_t max);

/* A program that exited this recently is still named in gateway errors on
 * its server, even once it runs again (the error may be the restart's). */
#define SUPERVISE_EVIDENCE_MS 60000

/* Why the program bound to (group, server) is not serving, for a gateway
 * error on that server (error log, /errors, Proxy-Status details): e.g.
 * "program php exited on SIGSEGV (core dumped) 3 s ago, restart 2 of 10
 * (now BACKOFF)", "program php restarted after hanging 4 s ago, restart 1
 * of 10", "program php is FATAL after 10 restarts in 60 s (it last exited
 * with code 1 2 s ago)". server NULL: every program bound to the group that
 * is not serving, joined with "; ". Writes at most cap bytes (NUL
 * terminated) and returns the length; 0 (out "") when no such program, or
 * it is RUNNING and has not exited within SUPERVISE_EVIDENCE_MS. Any
 * thread; takes the supervisor's mutex: call it on the error path only. */
size_t supervise_evidence(const char *group, const char *server, char *out, size_t cap);

/* The same sentence for one program's snapshot at wall clock now_ms (ms
 * since the epoch); 0 (out "") when it is RUNNING and has not exited within
 * SUPERVISE_EVIDENCE_MS. Pure. */
size_t supervise_evidence_text(const struct program_info *p, int64_t now_ms, char *out, size_t cap);

/* The last stderr lines kept in memory per program. */
#define SUPERVISE_TAIL_LINES 20
#define SUPERVISE_TAIL_LINE_MAX 200 /* bytes of one line, cut mark included */
/* Room for every kept line with its newline and the final NUL. */
#define SUPERVISE_TAIL_BYTES ((SUPERVISE_TAIL_LINES + 1) * (SUPERVISE_TAIL_LINE_MAX + 1) + 1)

/* Program name's last SUPERVISE_TAIL_LINES stderr lines, oldest first (the
 * current run's and the runs before it), an unfinished one last, each
 * ending "\n", into
 * out (NUL terminated; a cap of SUPERVISE_TAIL_BYTES holds them all). Returns
 * the length; 0 when none or no such program. Any thread. */
size_t supervise_last_stderr(const char *name, char *out, size_t cap);

#endif
