/* Supervise: the backend programs bulwark starts, restarts and stops
 * (config programs.<name>; README, "Programs").
 *
 * One supervisor per process, driven by the main thread's loop: each program
 * is fork+exec'd in a process group of its own, with PR_SET_PDEATHSIG
 * (SIGKILL) so it dies with bulwark. When it exits, what ended it is kept,
 * the rest of its process group is killed, the upstream server it is bound
 * to is marked down at once, and it is restarted after an exponential
 * back-off (jitter within +-50%). It is marked up again when a TCP connect to
 * its server succeeds (polled on the loop). Too many restarts within
 * restart_window: FATAL, no more restarts.
 *
 * The state is written on the loop's thread under a mutex; any thread may
 * read it with supervise_snapshot().
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
};

/* Copy the state of up to max programs into out (thread safe). Returns how
 * many there are (may exceed max); 0 when no supervisor runs. */
size_t supervise_snapshot(struct program_info *out, size_t max);

#endif
