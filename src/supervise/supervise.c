/* The supervisor: start, watch, restart and stop the configured programs. */
#include "supervise/supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervise/supervise_internal.h"
#include "upstream/upstream.h"

extern char **environ;

/* How often a starting program's server is tried: often enough that it is
 * back in rotation moments after it listens, rarely enough to cost nothing.
 * A rolling restart looks at its current step as often. */
#define READY_POLL_MS 50
/* A replacement without ready_timeout is waited for this long at most
 * before the rolling restart moves on to the next program. */
#define ROLL_READY_DEFAULT_MS 30000

/* What one output event reads at most before the loop serves others: a
 * program that floods its pipe cannot starve the health checks and the
 * other programs (the rest is read on the next iteration). */
#define OUTPUT_BATCH_BYTES (256 * 1024)

/* One of a program's output pipes (stdout, stderr), read on the loop. */
struct output {
    struct io io;      /* the pipe's read end; fd -1: none */
    struct timer more; /* a flood: read on after a bounded batch */
    struct program *p;
    int sink;       /* written on to: its file, or STDERR_FILENO; -1: none */
    bool is_stderr; /* its lines go to the program's tail */
};

/* What a keeper tells bulwark on its status pipe. */
enum keeper_msg_kind { KEEPER_PID = 1, KEEPER_STATUS };
struct keeper_msg {
    int kind;
    int value; /* the program's pid, or its waitpid() status */
};

/* The steps of one program's rolling restart (reload, admin restart). */
enum roll_phase {
    ROLL_DRAIN, /* its server is marked down; waiting for its requests in flight */
    ROLL_STOP,  /* stop_signal sent; it starts again when it has exited */
    ROLL_READY, /* the replacement runs; waiting for its server to answer */
};

struct program {
    struct supervisor *sv;
    struct program *next;                 /* sv->programs, in start order */
    struct config *cfg;                   /* a reference: pc lives in it */
    const struct config_program *pc;      /* the definition it runs with */
    struct config *next_cfg;              /* a reload's new definition, for the next */
    const struct config_program *next_pc; /* start; NULL: none */
    struct upstream_shared *sh;           /* its server's shared state; NULL: not bound */
    char **envp;                          /* environ with pc->env applied; NULL: environ */

    enum program_state state;
    pid_t pid;                /* the program, also its process group; 0: none */
    pid_t keeper;             /* its keeper, bulwark's child; 0: none */
    int status_fd;            /* the keeper's status pipe; -1: none */
    struct child_watch cw;    /* on the keeper */
    struct timer timer;       /* restart after back-off, or SIGKILL after stop_timeout */
    struct timer ready_timer; /* next readiness connect */
    struct io ready_io;       /* the connect in progress; fd -1: none */
    uint64_t started_ms;      /* monotonic, of the current run */
    uint32_t backoff_ms;      /* the nominal delay before the next restart */
    uint64_t *restart_ms;     /* ring of the last max_restarts restart times */
    uint32_t restart_ring;    /* its size */
    struct output out[2];     /* stdout, stderr */
    uint32_t check_fails;     /* health checks failed in a row while RUNNING */
    bool hang_stop;           /* bulwark is stopping this run because its server hangs */
    struct tail tail;         /* its last stderr lines; written under the lock */

    bool roll_pending;          /* waits for its turn in the rolling restart */
    bool restarting;            /* being stopped to start again at once */
    bool removing;              /* being stopped to be forgotten (reload removed it) */
    bool retiring;              /* replaced by another program of the same name */
    struct program *replaces;   /* started beside this one, which stops once it is ready */
    _Atomic bool restart_asked; /* supervise_restart from another thread */
    bool seen;                  /* matched by the reload in progress */

    /* Read by supervise_snapshot under the lock. */
    struct program_info info;
};

struct supervisor {
    struct loop *loop;
    int down_cause;
    struct program *programs; /* the list is changed under lock */
    size_t live;              /* programs with a process, while stopping */
    bool stopping;
    struct io wake;          /* eventfd: supervise_restart from another thread */
    struct timer roll_timer; /* the rolling restart's next look */
    struct program *rolling; /* the one program being restarted now; NULL: none */
    enum roll_phase roll_phase;
    uint64_t roll_deadline_ms;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct supervisor *current; /* under lock */

static void spawn(struct program *p, bool after_crash);
static void roll_step(struct supervisor *sv);

const char *supervise_state_name(enum program_state state)
{
    static const char *const names[] = {
        [PROGRAM_STOPPED] = "STOPPED",   [PROGRAM_STARTING] = "STARTING",
        [PROGRAM_RUNNING] = "RUNNING",   [PROGRAM_BACKOFF] = "BACKOFF",
        [PROGRAM_STOPPING] = "STOPPING", [PROGRAM_EXITED] = "EXITED",
        [PROGRAM_FATAL] = "FATAL",
    };
    return (unsigned)state < sizeof(names) / sizeof(names[0]) ? names[state] : "?";
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_state(struct program *p, enum program_state state)
{
    pthread_mutex_lock(&lock);
    p->state = state;
    p->info.state = state;
    /* A FATAL program's server is not tried even by panic_mode: nothing
     * will start it again (an admin restart or a reload does). */
    if (p->sh)
        atomic_store_explicit(&p->sh->given_up, state == PROGRAM_FATAL, memory_order_relaxed);
    p->info.pid = p->pid;
    pthread_mutex_unlock(&lock);
}

static void mark(struct program *p, bool up)
{
    if (!p->sh)
        return;
    upstream_shared_set_up(p->sh, up, up ? 0 : p->sv->down_cause);
}

/* ---- readiness: a TCP connect to its server ---- */

static void ready_stop(struct program *p)
{
    loop_timer_cancel(p->sv->loop, &p->ready_timer);
    if (p->ready_io.fd >= 0) {
        loop_del(p->sv->loop, &p->ready_io);
        close(p->ready_io.fd);
        p->ready_io.fd = -1;
    }
}

static void became_ready(struct program *p)
{
    ready_stop(p);
    set_state(p, PROGRAM_RUNNING);
    mark(p, true);
    if (p->sh)
        log_info("program %s is ready: upstream \"%s\" server %s is up pid=%d", p->pc->name,
                 p->pc->upstream->name, p->pc->server, (int)p->pid);
}

static void ready_try(struct program *p);

static void ready_event(struct io *io, uint32_t events)
{
    struct program *p = container_of(io, struct program, ready_io);
    int err = 0;
    socklen_t len = sizeof(err);

    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        return;
    if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    loop_del(p->sv->loop, io);
    close(io->fd);
    io->fd = -1;
    if (err == 0 && !(events & EPOLLERR))
        became_ready(p);
    else
        loop_timer_set(p->sv->loop, &p->ready_timer, READY_POLL_MS);
}

static void ready_timer_fired(struct timer *t)
{
    ready_try(container_of(t, struct program, ready_timer));
}

static void ready_try(struct program *p)
{
    const struct config_addr *a = &p->pc->server_addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        loop_timer_set(p->sv->loop, &p->ready_timer, READY_POLL_MS);
        return;
    }
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        close(fd);
        became_ready(p);
        return;
    }
    if (errno == EINPROGRESS) {
        p->ready_io.fd = fd;
        if (loop_add(p->sv->loop, &p->ready_io) == 0)
            return;
        p->ready_io.fd = -1;
    }
    close(fd);
    loop_timer_set(p->sv->loop, &p->ready_timer, READY_POLL_MS);
}

/* ---- output: pipes read on the loop, written on, stderr's tail kept ---- */

static void output_close(struct output *o)
{
    struct loop *loop = o->p->sv->loop;
    loop_timer_cancel(loop, &o->more);
    if (o->io.fd >= 0) {
        loop_del(loop, &o->io);
        close(o->io.fd);
        o->io.fd = -1;
    }
    if (o->sink >= 0 && o->sink != STDERR_FILENO)
        close(o->sink);
    o->sink = -1;
}

static void output_write(struct output *o, const char *p, size_t n)
{
    if (o->is_stderr) {
        pthread_mutex_lock(&lock);
        tail_feed(&o->p->tail, p, n);
        pthread_mutex_unlock(&lock);
    }
    /* A blocking write: a file, or bulwark's stderr as before the pipe. */
    while (n) {
        ssize_t w = write(o->sink, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report it; the tail still has it */
        p += w;
        n -= (size_t)w;
    }
}

/* Read what the pipe holds, at most OUTPUT_BATCH_BYTES (the rest on the
 * next iteration of the loop). The end of the pipe closes it. */
static void output_read(struct output *o)
{
    char chunk[16384];
    size_t total = 0;
    while (o->io.fd >= 0) {
        if (total >= OUTPUT_BATCH_BYTES) {
            loop_timer_set(o->p->sv->loop, &o->more, 0);
            return;
        }
        ssize_t n = read(o->io.fd, chunk, sizeof(chunk));
        if (n > 0) {
            total += (size_t)n;
            output_write(o, chunk, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else {
            output_close(o);
        }
    }
}

static void output_event(struct io *io, uint32_t events)
{
    (void)events;
    output_read(container_of(io, struct output, io));
}

static void output_more(struct timer *t)
{
    output_read(container_of(t, struct output, more));
}

/* The fd the child writes stream to: a pipe whose read end o reads on the
 * loop, writing on to path (or bulwark's stderr). Without a pipe: path
 * itself (or -1: the child inherits bulwark's). The caller closes the
 * returned fd once the child has it. */
static int output_start(struct program *p, struct output *o, const char *path)
{
    int sink = -1, fds[2];
    if (path) {
        sink = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (sink < 0)
            log_error("program %s: cannot open %s: %s; using bulwark's stderr", p->pc->name, path,
                      strerror(errno));
    }
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_warn("program %s: no pipe for its output (%s): it writes directly, and no stderr "
                 "lines are kept",
                 p->pc->name, strerror(errno));
        return sink;
    }
    /* Only our end is non-blocking: the program's writes block as usual
     * when we fall behind. */
    fcntl(fds[1], F_SETFL, 0);
    o->io.fd = fds[0];
    if (loop_add(p->sv->loop, &o->io) < 0) {
        o->io.fd = -1;
        close(fds[0]);
        close(fds[1]);
        return sink;
    }
    o->sink = sink >= 0 ? sink : STDERR_FILENO;
    return fds[1];
}

/* ---- exits and restarts ---- */

static const char *signal_name(int signo, char *buf, size_t cap)
{
    const char *abbrev = sigabbrev_np(signo);
    if (abbrev)
        snprintf(buf, cap, "SIG%s", abbrev);
    else
        snprintf(buf, cap, "signal %d", signo);
    return buf;
}

static void record_exit(struct program *p, int wstatus, uint64_t now_ms)
{
    struct program_info *in = &p->info;
    pthread_mutex_lock(&lock);
    in->has_exit = true;
    in->exited_wall_ms = wall_ms();
    in->run_time_ms = now_ms - p->started_ms;
    in->exit_signal[0] = '\0';
    in->core_dumped = false;
    in->exit_code = -1;
    in->hung = p->hang_stop;
    if (wstatus == -1) {
        snprintf(in->last_exit, sizeof(in->last_exit), "reaped elsewhere");
    } else if (WIFSIGNALED(wstatus)) {
        signal_name(WTERMSIG(wstatus), in->exit_signal, sizeof(in->exit_signal));
        in->core_dumped = WCOREDUMP(wstatus);
        snprintf(in->last_exit, sizeof(in->last_exit), "killed by %s%s", in->exit_signal,
                 in->core_dumped ? " (core dumped)" : "");
    } else {
        in->exit_code = WEXITSTATUS(wstatus);
        snprintf(in->last_exit, sizeof(in->last_exit), "exit code %d", in->exit_code);
    }
    p->pid = 0;
    p->keeper = 0;
    in->pid = 0;
    pthread_mutex_unlock(&lock);
}

/* max_restarts within restart_window already: give up. */
static bool too_many_restarts(const struct program *p, uint64_t now_ms)
{
    uint32_t max = p->restart_ring;
    if (max == 0 || p->info.restarts < max)
        return false;
    uint64_t oldest = p->restart_ms[p->info.restarts % max];
    return now_ms - oldest < p->pc->restart_window_ms;
}

/* The nominal delay, jittered within +-50% so programs that failed together
 * (their database went away) do not come back in lockstep. */
static uint32_t jittered(uint32_t ms)
{
    return ms / 2 + (uint32_t)((uint64_t)ms * (uint64_t)(random() % 1000) / 1000);
}

static void restart_timer_fired(struct timer *t)
{
    struct program *p = container_of(t, struct program, timer);
    if (p->state == PROGRAM_BACKOFF)
        spawn(p, true);
}

static void stop_timeout_fired(struct timer *t)
{
    struct program *p = container_of(t, struct program, timer);
    log_warn("program %s did not stop within stop_timeout (%u ms): SIGKILL to its process group "
             "pid=%d",
             p->pc->name, p->pc->stop_timeout_ms, (int)p->pid);
    if (p->pid)
        killpg(p->pid, SIGKILL);
}

/* stop_signal to its process group, SIGKILL after stop_timeout; its keeper
 * reports the exit (child_exited). */
static void stop_process(struct program *p, const char *why)
{
    char name[32];
    ready_stop(p);
    log_info("stopping program %s%s: %s to process group %d", p->pc->name, why,
             signal_name(p->pc->stop_signal, name, sizeof(name)), (int)p->pid);
    killpg(p->pid, p->pc->stop_signal);
    set_state(p, PROGRAM_STOPPING);
    p->timer.cb = stop_timeout_fired;
    loop_timer_set(p->sv->loop, &p->timer, p->pc->stop_timeout_ms);
}

static void program_free(struct program *p)
{
    free(p->restart_ms);
    free(p->envp);
    config_unref(p->cfg);
    config_unref(p->next_cfg);
    free(p);
}

/* Take p off the list (so /status no longer shows it) and free it. */
static void program_forget(struct program *p)
{
    struct supervisor *sv = p->sv;
    if (p->sh && !p->retiring)
        atomic_store_explicit(&p->sh->given_up, false, memory_order_relaxed);
    pthread_mutex_lock(&lock);
    for (struct program **pp = &sv->programs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    for (struct program *q = sv->programs; q; q = q->next)
        if (q->replaces == p)
            q->replaces = NULL;
    if (sv->rolling == p)
        sv->rolling = NULL;
    ready_stop(p);
    loop_timer_cancel(sv->loop, &p->timer);
    output_close(&p->out[0]);
    output_close(&p->out[1]);
    program_free(p);
}

/* What the keeper said ended the program: its last status message, else
 * (the keeper itself was killed) the keeper's own status. */
static int read_exit_status(struct program *p, int keeper_status)
{
    int status = keeper_status;
    struct keeper_msg m;
    if (p->status_fd < 0)
        return status;
    /* The keeper has exited: everything it wrote is in the pipe. */
    while (read(p->status_fd, &m, sizeof(m)) == (ssize_t)sizeof(m))
        if (m.kind == KEEPER_STATUS)
            status = m.value;
    close(p->status_fd);
    p->status_fd = -1;
    return status;
}

/* The end of p's stderr tail as one log field: the last lines joined with
 * " | ", at most cap - 1 bytes (the newest kept whole when they do not all
 * fit). "" when it wrote nothing. */
static const char *tail_for_log(const struct program *p, char *out, size_t cap)
{
    char text[SUPERVISE_TAIL_BYTES];
    size_t len = tail_text(&p->tail, text, sizeof(text));
    size_t start = len > cap - 1 ? len - (cap - 1) : 0;
    /* begin at a line start, so no line is shown cut in two */
    while (start > 0 && start < len && text[start - 1] != '\n')
        start++;
    size_t n = 0;
    for (size_t i = start; i < len && n + 1 < cap; i++) {
        if (text[i] != '\n') {
            out[n++] = text[i];
        } else if (i + 1 < len && n + 4 < cap) {
            memcpy(out + n, " | ", 3);
            n += 3;
        }
    }
    out[n] = '\0';
    return out;
}

/* Use the definition a reload left for the next start. */
static void apply_next(struct program *p);

static void child_exited(struct child_watch *cw, int keeper_status)
{
    struct program *p = container_of(cw, struct program, cw);
    struct supervisor *sv = p->sv;
    const struct config_program *pc = p->pc;
    uint64_t now = loop_update_time(sv->loop);
    pid_t pid = p->pid;
    int wstatus = read_exit_status(p, keeper_status);
    bool hung = p->hang_stop;

    /* The keeper has killed and reaped the rest of the tree: no worker it
     * forked keeps the port, nor outlives it as an orphan. */
    record_exit(p, wstatus, now);
    /* Its last words are in the pipes: read them before telling of its end. */
    for (int i = 0; i < 2; i++) {
        output_read(&p->out[i]);
        output_close(&p->out[i]);
    }
    ready_stop(p);
    loop_timer_cancel(sv->loop, &p->timer);
    mark(p, false);

    char tail[640];
    tail_for_log(p, tail, sizeof(tail));
    const char *tail_key = tail[0] ? " last_stderr=\"" : "";
    const char *tail_end = tail[0] ? "\"" : "";

    if (sv->stopping) {
        log_info("program %s stopped: %s pid=%d", pc->name, p->info.last_exit, (int)pid);
        set_state(p, PROGRAM_STOPPED);
        if (--sv->live == 0)
            loop_stop(sv->loop);
        return;
    }
    if (p->removing) {
        log_info("program %s stopped and removed: %s pid=%d", pc->name, p->info.last_exit,
                 (int)pid);
        /* Its server, if it stays in the upstream, is no longer this
         * program's: nothing here would bring it back up. */
        if (!p->retiring)
            mark(p, true);
        program_forget(p);
        return;
    }
    if (p->restarting) {
        p->restarting = false;
        log_info("program %s stopped for its restart: %s pid=%d", pc->name, p->info.last_exit,
                 (int)pid);
        apply_next(p);
        p->backoff_ms = p->pc->backoff_initial_ms;
        spawn(p, false);
        if (sv->rolling == p) {
            sv->roll_phase = ROLL_READY;
            sv->roll_deadline_ms =
                now + (p->pc->ready_timeout_ms ? p->pc->ready_timeout_ms : ROLL_READY_DEFAULT_MS);
        }
        return;
    }
    bool failed = hung || wstatus == -1 || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0;
    const char *bound = p->sh ? "; its server is down" : "";
    const char *why = hung ? " (stopped by bulwark: its server hung)" : "";
    if (pc->restart == PROGRAM_RESTART_NEVER ||
        (pc->restart == PROGRAM_RESTART_ON_FAILURE && !failed)) {
        log_warn("program %s exited: %s%s%s; not restarted (restart: %s) pid=%d "
                 "run_time_ms=%llu%s%s%s",
                 pc->name, p->info.last_exit, why, bound,
                 pc->restart == PROGRAM_RESTART_NEVER ? "never" : "on-failure", (int)pid,
                 (unsigned long long)p->info.run_time_ms, tail_key, tail, tail_end);
        set_state(p, PROGRAM_EXITED);
        return;
    }
    if (too_many_restarts(p, now)) {
        log_error("program %s FATAL: %s%s, and it was restarted %d times within %u ms; giving "
                  "up%s pid=%d%s%s%s",
                  pc->name, p->info.last_exit, why, pc->max_restarts, pc->restart_window_ms, bound,
                  (int)pid, tail_key, tail, tail_end);
        set_state(p, PROGRAM_FATAL);
        return;
    }
    /* A run that lasted as long as the longest back-off was healthy: the
     * next crash starts the series over. */
    if (p->info.run_time_ms >= pc->backoff_max_ms)
        p->backoff_ms = pc->backoff_initial_ms;
    uint32_t delay = jittered(p->backoff_ms);
    p->backoff_ms = p->backoff_ms > pc->backoff_max_ms / 2 ? pc->backoff_max_ms : p->backoff_ms * 2;
    log_warn("program %s exited: %s%s%s; restarting in %u ms pid=%d run_time_ms=%llu "
             "restarts=%u%s%s%s",
             pc->name, p->info.last_exit, why, bound, delay, (int)pid,
             (unsigned long long)p->info.run_time_ms, p->info.restarts, tail_key, tail, tail_end);
    set_state(p, PROGRAM_BACKOFF);
    p->timer.cb = restart_timer_fired;
    loop_timer_set(sv->loop, &p->timer, delay);
}

/* ---- hangs: the bound server fails its health checks while it runs ---- */

/* The checks run on the supervisor's loop (proxy_run starts both on the
 * main thread), so this reads current without the lock: only this thread
 * writes it. */
static void health_verdict(struct upstream_shared *sh, bool passed, int fails)
{
    struct supervisor *sv = current;
    for (struct program *p = sv && !sv->stopping ? sv->programs : NULL; p; p = p->next) {
        if (p->sh != sh)
            continue;
        /* Only a run that was serving can hang: the failures of one that
         * is starting, or being restarted or removed, say nothing of it. */
        if (passed || p->state != PROGRAM_RUNNING || !p->pid || p->removing || p->retiring ||
            sv->rolling == p) {
            p->check_fails = 0;
            continue;
        }
        if (++p->check_fails < (uint32_t)fails)
            continue;
        log_warn("program %s: server %s failed %u health checks while running (pid %d): "
                 "restarting it (hang) cause=hang",
                 p->pc->name, p->pc->server, p->check_fails, (int)p->pid);
        p->hang_stop = true;
        p->check_fails = 0;
        stop_process(p, " (hang)");
        /* A stopped process (SIGSTOP) acts on the signal only once it
         * runs again. */
        killpg(p->pid, SIGCONT);
    }
}

/* ---- starting: bulwark -> keeper -> program ---- */

/* argv[0] as execve wants it: a name without "/" is looked up in PATH here,
 * before fork, since the child may only make async-signal-safe calls. */
static bool resolve(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/')) {
        snprintf(out, cap, "%s", name);
        return true;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        snprintf(out, cap, "%.*s%s%s", (int)len, len ? path : ".", "/", name);
        if (access(out, X_OK) == 0)
            return true;
        path += len + (end ? 1 : 0);
    }
    snprintf(out, cap, "%s", name);
    return false;
}

/* In the program (forked by its keeper): only async-signal-safe calls until
 * execve. A failure is written to report (errno) before exiting 127. */
static void program_exec(const struct program *p, const char *path, int out, int err, int report,
                         pid_t keeper)
{
    const struct config_program *pc = p->pc;
    sigset_t none;
    int e;

    setpgid(0, 0);
    /* The identity first: a change of credentials clears the parent-death
     * signal, which is set after it. Groups were resolved at config load. */
    if (geteuid() == 0 && (pc->has_user || pc->has_group)) {
        if (setgroups(pc->num_groups, pc->groups) < 0 || setgid(pc->gid) < 0 ||
            (pc->has_user && setuid(pc->uid) < 0))
            goto fail;
    }
    /* Dies with its keeper even on SIGKILL; and the keeper may have died
     * between fork and here. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != keeper)
        _exit(127);
    /* bulwark blocks the signals its loops read from signalfds, and ignores
     * SIGPIPE: both survive execve, and a program needs defaults. */
    signal(SIGPIPE, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if ((out >= 0 && dup2(out, STDOUT_FILENO) < 0) || (err >= 0 && dup2(err, STDERR_FILENO) < 0))
        goto fail;
    if (pc->cwd && chdir(pc->cwd) < 0)
        goto fail;
    execve(path, pc->argv, p->envp ? p->envp : environ);
fail:
    e = errno;
    if (write(report, &e, sizeof(e)) < 0) {
        /* nothing left to tell it with */
    }
    _exit(127);
}

/* Close every descriptor above stderr but the few in keep (bulwark's
 * sockets would otherwise stay open in the keeper: a client connection
 * bulwark closed would get no FIN). */
static void close_all_but(int *keep, int n)
{
    for (int i = 1; i < n; i++) /* a few: insertion sort */
        for (int j = i; j > 0 && keep[j] < keep[j - 1]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned from = 3;
    for (int i = 0; i < n; i++) {
        if (keep[i] < (int)from)
            continue;
        if ((unsigned)keep[i] > from)
            close_range(from, (unsigned)keep[i] - 1, 0);
        from = (unsigned)keep[i] + 1;
    }
    close_range(from, ~0U, 0);
}

/* Kill every process of the program's tree and reap them: its process
 * group, then whatever the subreaper adopted (a grandchild whose parent
 * died, one in a session of its own), round after round, until no child is
 * left. Returns the program's wait status if it was reaped here. */
static int kill_tree(pid_t pgid, pid_t program, int status)
{
    char path[64], list[4096];
    int n = snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
    (void)n;
    killpg(pgid, SIGKILL);
    for (;;) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read(fd, list, sizeof(list) - 1) : -1;
        if (fd >= 0)
            close(fd);
        for (ssize_t i = 0; i < len;) {
            pid_t child = 0;
            while (i < len && list[i] >= '0' && list[i] <= '9')
                child = child * 10 + (list[i++] - '0');
            if (child > 0)
                kill(child, SIGKILL);
            while (i < len && (list[i] < '0' || list[i] > '9'))
                i++;
        }
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return status; /* ECHILD: the tree is gone */
        if (r == program)
            status = st;
    }
}

/* The keeper: bulwark's child, the program's parent, and a subreaper for
 * the program's whole tree. It execs nothing (a fork of a threaded process:
 * async-signal-safe calls only) and holds no descriptor of bulwark's but the
 * ones below. Its parent-death signal is SIGTERM, which it waits for (with
 * SIGCHLD) in sigwaitinfo: when bulwark dies, even of SIGKILL, it kills the
 * tree and exits. When the program exits, it kills the rest of the tree,
 * sends the program's status to bulwark and exits. */
static void keeper_main(const struct program *p, const char *path, int out, int err, int report,
                        int status_fd, pid_t parent)
{
    sigset_t all;
    siginfo_t si;
    int keep[] = {out, err, report, status_fd};

    setpgid(0, 0); /* out of bulwark's group: a terminal's Ctrl-C is for bulwark */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(0); /* bulwark died before the line above */
    close_all_but(keep, 4);
    pid_t self = getpid();
    pid_t pid = fork();
    if (pid == 0)
        program_exec(p, path, out, err, report, self);
    if (pid < 0) {
        struct keeper_msg m = {KEEPER_STATUS, 127 << 8};
        ssize_t w = write(status_fd, &m, sizeof(m));
        (void)w;
        _exit(0);
    }
    setpgid(pid, pid); /* also here: no kill of the group may race the child's own call */
    close(report);
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    struct keeper_msg m = {KEEPER_PID, (int)pid};
    ssize_t w = write(status_fd, &m, sizeof(m));
    (void)w;
    for (;;) {
        if (sigwaitinfo(&all, &si) < 0)
            continue;
        if (si.si_signo == SIGCHLD) {
            int st, program_status = -1;
            pid_t r;
            while ((r = waitpid(-1, &st, WNOHANG)) > 0)
                if (r == pid)
                    program_status = st;
            if (program_status == -1)
                continue; /* an adopted orphan ended: the program runs on */
            m = (struct keeper_msg){KEEPER_STATUS, kill_tree(pid, pid, program_status)};
            w = write(status_fd, &m, sizeof(m));
            _exit(0);
        }
        if (si.si_signo == SIGTERM && getppid() != parent) {
            kill_tree(pid, pid, 0);
            _exit(0);
        }
        /* Any other signal: ignored, bulwark stops the program itself. */
    }
}

static void spawn(struct program *p, bool after_crash)
{
    struct supervisor *sv = p->sv;
    const struct config_program *pc = p->pc;
    char path[4096];
    int report[2], status[2];
    uint64_t now = loop_update_time(sv->loop);

    if (p->info.started_wall_ms) { /* not the first start */
        /* Only crashes count towards FATAL: a reload or an operator's
         * restart is not the program failing. */
        if (after_crash && p->restart_ring)
            p->restart_ms[p->info.restarts % p->restart_ring] = now;
        pthread_mutex_lock(&lock);
        p->info.restarts++;
        pthread_mutex_unlock(&lock);
    }
    resolve(pc->argv[0], path, sizeof(path));
    /* A previous run's pipes were read to their end when it exited. */
    output_close(&p->out[0]);
    output_close(&p->out[1]);
    int out = output_start(p, &p->out[0], pc->stdout_path);
    int err = output_start(p, &p->out[1], pc->stderr_path);
    if (pipe2(report, O_CLOEXEC) < 0)
        report[0] = report[1] = -1;
    if (pipe2(status, O_CLOEXEC) < 0)
        status[0] = status[1] = -1;
    pid_t parent = getpid();
    pid_t keeper = report[0] >= 0 && status[0] >= 0 ? fork() : -1;
    if (keeper == 0)
        keeper_main(p, path, out, err, report[1], status[1], parent);
    int fork_errno = errno;
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    if (report[1] >= 0)
        close(report[1]);
    if (status[1] >= 0)
        close(status[1]);
    struct keeper_msg m = {0};
    if (keeper > 0) {
        /* The keeper writes the program's pid right after its fork, or
         * exits (EOF). */
        while (read(status[0], &m, sizeof(m)) < 0 && errno == EINTR)
            ;
    }
    if (keeper < 0 || m.kind != KEEPER_PID) {
        if (report[0] >= 0)
            close(report[0]);
        if (status[0] >= 0)
            close(status[0]);
        if (keeper > 0)
            waitpid(keeper, NULL, 0);
        output_close(&p->out[0]);
        output_close(&p->out[1]);
        log_error("program %s: cannot start it: %s; retrying in %u ms", pc->name,
                  keeper < 0 ? strerror(fork_errno) : "fork failed in its keeper", p->backoff_ms);
        set_state(p, PROGRAM_BACKOFF);
        p->timer.cb = restart_timer_fired;
        loop_timer_set(sv->loop, &p->timer, p->backoff_ms);
        return;
    }
    int exec_errno = 0;
    /* EOF once execve succeeded (the pipe is close-on-exec). */
    while (read(report[0], &exec_errno, sizeof(exec_errno)) < 0 && errno == EINTR)
        ;
    close(report[0]);
    p->check_fails = 0;
    p->hang_stop = false;
    pthread_mutex_lock(&lock);
    p->pid = (pid_t)m.value;
    p->keeper = keeper;
    p->status_fd = status[0];
    p->started_ms = now;
    p->info.started_wall_ms = wall_ms();
    pthread_mutex_unlock(&lock);
    if (exec_errno)
        log_error("program %s: cannot run %s: %s (cwd %s)", pc->name, path, strerror(exec_errno),
                  pc->cwd ? pc->cwd : ".");
    else
        log_info("program %s started: pid=%d command=%s restarts=%u", pc->name, (int)p->pid, path,
                 p->info.restarts);
    if (loop_watch_child(sv->loop, &p->cw, keeper, child_exited) < 0) {
        log_error("program %s: cannot watch its keeper %d: %s", pc->name, (int)keeper,
                  strerror(errno));
        killpg(p->pid, SIGKILL);
    }
    if (p->sh && p->pc->server_addr.len) {
        set_state(p, PROGRAM_STARTING);
        mark(p, false);
        if (!exec_errno)
            ready_try(p);
    } else {
        set_state(p, PROGRAM_RUNNING);
    }
}

/* environ with the program's variables added or replaced. */
static char **build_env(const struct config_program *pc)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + pc->num_env + 1, sizeof(*envp));
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < pc->num_env && !replaced; j++) {
            size_t len = (size_t)(strchr(pc->env[j], '=') - pc->env[j]) + 1;
            replaced = strncmp(environ[i], pc->env[j], len) == 0;
        }
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < pc->num_env; j++)
        envp[k++] = pc->env[j];
    return envp;
}

/* Point p at definition pc of cfg (a reference is taken): what the next
 * start runs, and the policy (back-off, restarts, stop) from now on. */
static void program_define(struct program *p, struct config *cfg, const struct config_program *pc)
{
    struct config *old = p->cfg;
    p->cfg = config_ref(cfg);
    p->pc = pc;
    free(p->envp);
    p->envp = pc->num_env ? build_env(pc) : NULL;
    struct upstream_shared *sh =
        pc->upstream ? upstream_shared_get(pc->upstream->name, pc->server) : NULL;
    if (p->sh && p->sh != sh) /* no longer this program's server */
        atomic_store_explicit(&p->sh->given_up, false, memory_order_relaxed);
    p->sh = sh;
    uint32_t ring = pc->max_restarts > 0 ? (uint32_t)pc->max_restarts : 0;
    if (ring != p->restart_ring) {
        free(p->restart_ms);
        p->restart_ms = ring ? calloc(ring, sizeof(*p->restart_ms)) : NULL;
        p->restart_ring = p->restart_ms ? ring : 0;
    }
    pthread_mutex_lock(&lock);
    p->info.max_restarts = (uint32_t)(pc->max_restarts > 0 ? pc->max_restarts : 0);
    p->info.restart_window_ms = pc->restart_window_ms;
    pthread_mutex_unlock(&lock);
    if (old)
        config_unref(old);
}

static void apply_next(struct program *p)
{
    if (!p->next_pc)
        return;
    program_define(p, p->next_cfg, p->next_pc);
    config_unref(p->next_cfg);
    p->next_cfg = NULL;
    p->next_pc = NULL;
}

static struct program *program_new(struct supervisor *sv, struct config *cfg,
                                   const struct config_program *pc)
{
    struct program *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->sv = sv;
    snprintf(p->info.name, sizeof(p->info.name), "%s", pc->name);
    p->status_fd = -1;
    p->ready_io.fd = -1;
    p->ready_io.on_event = ready_event;
    timer_init(&p->timer, restart_timer_fired);
    timer_init(&p->ready_timer, ready_timer_fired);
    for (int k = 0; k < 2; k++) {
        p->out[k].p = p;
        p->out[k].io.fd = -1;
        p->out[k].io.on_event = output_event;
        p->out[k].sink = -1;
        p->out[k].is_stderr = k == 1;
        timer_init(&p->out[k].more, output_more);
    }
    program_define(p, cfg, pc);
    p->backoff_ms = pc->backoff_initial_ms;
    return p;
}

/* Append p to the list, after `after` when given. */
static void program_insert(struct supervisor *sv, struct program *p, struct program *after)
{
    pthread_mutex_lock(&lock);
    struct program **pp = after ? &after->next : &sv->programs;
    if (!after)
        while (*pp)
            pp = &(*pp)->next;
    p->next = *pp;
    *pp = p;
    pthread_mutex_unlock(&lock);
}

/* ---- rolling restarts: one program at a time ---- */

static void roll_timer_fired(struct timer *t)
{
    roll_step(container_of(t, struct supervisor, roll_timer));
}

static uint64_t ready_wait_ms(const struct program *p)
{
    return p->pc->ready_timeout_ms ? p->pc->ready_timeout_ms : ROLL_READY_DEFAULT_MS;
}

/* Stop p to forget it; its server is marked down first. */
static void program_remove(struct program *p, const char *why)
{
    p->removing = true;
    p->roll_pending = false;
    if (p->sv->rolling == p)
        p->sv->rolling = NULL;
    if (!p->keeper) {
        log_info("program %s removed%s", p->pc->name, why);
        program_forget(p);
        return;
    }
    mark(p, false);
    if (p->state != PROGRAM_STOPPING)
        stop_process(p, why);
}

/* Begin the restart of p, the head of the queue. */
static void roll_begin(struct supervisor *sv, struct program *p, uint64_t now)
{
    sv->rolling = p;
    p->roll_pending = false;
    if (p->replaces) {
        /* Another address than the one it replaces: both run side by side
         * until the new one answers, then the old one stops. */
        log_info("program %s: starting its new definition beside the running one (pid=%d) "
                 "before stopping that",
                 p->pc->name, (int)p->replaces->pid);
        spawn(p, false);
        sv->roll_phase = ROLL_READY;
        sv->roll_deadline_ms = now + ready_wait_ms(p);
    } else if (p->keeper && p->state != PROGRAM_STOPPING) {
        /* One address: the old process must go before the new one can
         * listen. Its server is marked down first, so new requests go to
         * the other servers, and the ones in flight may finish. */
        mark(p, false);
        log_info("program %s restarting: its server is marked down, waiting for its requests in "
                 "flight pid=%d",
                 p->pc->name, (int)p->pid);
        sv->roll_phase = ROLL_DRAIN;
        sv->roll_deadline_ms = now + p->pc->stop_timeout_ms;
    } else if (p->keeper) {
        p->restarting = true; /* already stopping: start again once it exited */
        sv->roll_phase = ROLL_STOP;
    } else {
        /* Not running (back-off, exited, FATAL): start it now. */
        loop_timer_cancel(sv->loop, &p->timer);
        apply_next(p);
        p->backoff_ms = p->pc->backoff_initial_ms;
        spawn(p, false);
        sv->roll_phase = ROLL_READY;
        sv->roll_deadline_ms = now + ready_wait_ms(p);
    }
}

static void roll_step(struct supervisor *sv)
{
    uint64_t now = loop_update_time(sv->loop);
    loop_timer_cancel(sv->loop, &sv->roll_timer);
    if (sv->stopping)
        return;
    for (;;) {
        struct program *p = sv->rolling;
        if (!p) {
            for (p = sv->programs; p && !(p->roll_pending && !p->removing); p = p->next)
                ;
            if (!p)
                return; /* nothing left to restart */
            roll_begin(sv, p, now);
            if (!sv->rolling)
                continue;
        }
        if (sv->roll_phase == ROLL_DRAIN) {
            uint32_t in_flight =
                p->sh ? atomic_load_explicit(&p->sh->in_flight, memory_order_relaxed) : 0;
            if (in_flight && now < sv->roll_deadline_ms)
                break;
            p->restarting = true;
            sv->roll_phase = ROLL_STOP;
            stop_process(p, " for its restart");
            break;
        }
        if (sv->roll_phase == ROLL_STOP)
            break; /* child_exited starts it again and moves on to ROLL_READY */
        /* ROLL_READY */
        bool done = p->state == PROGRAM_RUNNING;
        bool failed = p->state == PROGRAM_BACKOFF || p->state == PROGRAM_EXITED ||
                      p->state == PROGRAM_FATAL || p->state == PROGRAM_STOPPED;
        if (!done && !failed && now < sv->roll_deadline_ms)
            break;
        if (done)
            log_info("program %s restarted and ready pid=%d", p->pc->name, (int)p->pid);
        else
            log_warn("program %s: its replacement is not ready (%s): the rolling restart goes on",
                     p->pc->name, failed ? supervise_state_name(p->state) : "timed out");
        if (p->replaces) {
            struct program *old = p->replaces;
            p->replaces = NULL;
            program_remove(old, ": replaced by its new definition");
        }
        sv->rolling = NULL;
    }
    loop_timer_set(sv->loop, &sv->roll_timer, READY_POLL_MS);
}

/* Requests from other threads (supervise_restart), read on the loop. */
static void wake_event(struct io *io, uint32_t events)
{
    struct supervisor *sv = container_of(io, struct supervisor, wake);
    uint64_t v;
    (void)events;
    if (read(io->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_error("supervisor: reading its eventfd failed: %s", strerror(errno));
    for (struct program *p = sv->programs; p; p = p->next) {
        if (!atomic_exchange(&p->restart_asked, false) || p->removing || p->retiring)
            continue;
        if (sv->rolling == p || p->roll_pending) {
            log_info("program %s: restart asked; one is already under way", p->pc->name);
            continue;
        }
        log_info("program %s: restart asked (admin) pid=%d", p->pc->name, (int)p->pid);
        p->roll_pending = true;
    }
    roll_step(sv);
}

/* ---- the supervisor ---- */

struct supervisor *supervise_start(struct loop *loop, struct config *cfg, int down_cause)
{
    struct supervisor *sv = calloc(1, sizeof(*sv));
    if (!sv)
        return NULL;
    sv->loop = loop;
    sv->down_cause = down_cause;
    timer_init(&sv->roll_timer, roll_timer_fired);
    sv->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    sv->wake.on_event = wake_event;
    if (sv->wake.fd < 0 || loop_add_listener(loop, &sv->wake) < 0) {
        if (sv->wake.fd >= 0)
            close(sv->wake.fd);
        free(sv);
        return NULL;
    }
    srandom((unsigned)(getpid() ^ wall_ms()));
    for (size_t i = 0; i < cfg->num_programs; i++) {
        struct program *p = program_new(sv, cfg, &cfg->programs[i]);
        if (!p)
            continue; /* out of memory: logged by nobody, but /status lacks it */
        program_insert(sv, p, NULL);
    }
    pthread_mutex_lock(&lock);
    current = sv;
    pthread_mutex_unlock(&lock);
    upstream_health_set_verdict_hook(health_verdict);
    for (struct program *p = sv->programs; p; p = p->next)
        spawn(p, false);
    return sv;
}

/* Whether a TCP connect to a succeeds within timeout_ms. */
static bool answers(const struct config_addr *a, int timeout_ms)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool ok = false;
    if (fd < 0)
        return false;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof(err);
        ok = poll(&pfd, 1, timeout_ms) == 1 &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
    close(fd);
    return ok;
}

void supervise_wait_ready(struct supervisor *sv)
{
    for (struct program *p = sv ? sv->programs : NULL; p; p = p->next) {
        if (!p->pc->ready_timeout_ms || p->state != PROGRAM_STARTING)
            continue;
        uint64_t deadline = loop_update_time(sv->loop) + p->pc->ready_timeout_ms;
        for (;;) {
            siginfo_t si = {0};
            /* Peek (WNOWAIT): the loop's child watch reaps and reports it. */
            if (waitid(P_PID, (id_t)p->keeper, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid) {
                log_warn("program %s exited before it was ready", p->pc->name);
                break;
            }
            if (answers(&p->pc->server_addr, READY_POLL_MS)) {
                became_ready(p);
                break;
            }
            if (loop_update_time(sv->loop) >= deadline) {
                log_warn("program %s is not ready after ready_timeout (%u ms): starting anyway",
                         p->pc->name, p->pc->ready_timeout_ms);
                break;
            }
            nanosleep(&(struct timespec){.tv_nsec = READY_POLL_MS * 1000000L}, NULL);
        }
    }
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Whether the process itself would differ: what it runs, where, as whom,
 * with what environment and output, and which server it is. Policy (restart,
 * backoff, max_restarts, stop_*, ready_timeout) applies without a restart. */
static bool process_differs(const struct config_program *a, const struct config_program *b)
{
    if (a->argc != b->argc || a->num_env != b->num_env || !same_str(a->cwd, b->cwd) ||
        !same_str(a->stdout_path, b->stdout_path) || !same_str(a->stderr_path, b->stderr_path) ||
        !same_str(a->server, b->server) ||
        !same_str(a->upstream ? a->upstream->name : NULL, b->upstream ? b->upstream->name : NULL) ||
        a->has_user != b->has_user || a->has_group != b->has_group ||
        (a->has_user && a->uid != b->uid) || ((a->has_user || a->has_group) && a->gid != b->gid))
        return true;
    for (size_t i = 0; i < a->argc; i++)
        if (strcmp(a->argv[i], b->argv[i]) != 0)
            return true;
    for (size_t i = 0; i < a->num_env; i++)
        if (strcmp(a->env[i], b->env[i]) != 0)
            return true;
    return false;
}

static bool same_address(const struct config_program *a, const struct config_program *b)
{
    return a->server_addr.len == b->server_addr.len &&
           memcmp(&a->server_addr.ss, &b->server_addr.ss, a->server_addr.len) == 0;
}

void supervise_reload(struct supervisor *sv, struct config *cfg)
{
    if (!sv || sv->stopping)
        return;
    for (struct program *p = sv->programs; p; p = p->next)
        p->seen = false;
    size_t added = 0, changed = 0, removed = 0;
    for (size_t i = 0; i < cfg->num_programs; i++) {
        const struct config_program *pc = &cfg->programs[i];
        struct program *p = sv->programs;
        while (p && (p->removing || p->retiring || strcmp(p->pc->name, pc->name) != 0))
            p = p->next;
        if (!p) {
            struct program *q = program_new(sv, cfg, pc);
            if (!q) {
                log_error("program %s: out of memory: not started", pc->name);
                continue;
            }
            program_insert(sv, q, NULL);
            q->seen = true;
            log_info("program %s added by the reload: starting it", pc->name);
            spawn(q, false);
            added++;
            continue;
        }
        p->seen = true;
        const struct config_program *was = p->next_pc ? p->next_pc : p->pc;
        if (!process_differs(was, pc)) {
            if (p->next_pc) { /* a change still waiting for its turn: this one replaces it */
                config_unref(p->next_cfg);
                p->next_cfg = config_ref(cfg);
                p->next_pc = pc;
            } else {
                program_define(p, cfg, pc); /* same process: the new policy, no restart */
            }
            continue;
        }
        changed++;
        if (p->keeper && p->pc->server && pc->server && !same_address(p->pc, pc) && !p->replaces &&
            sv->rolling != p) {
            /* Another address: start the new one beside it. */
            struct program *q = program_new(sv, cfg, pc);
            if (!q) {
                log_error("program %s: out of memory: keeps its old definition", pc->name);
                continue;
            }
            q->seen = true;
            q->replaces = p;
            q->roll_pending = true;
            p->retiring = true;
            p->roll_pending = false;
            program_insert(sv, q, p);
            log_info("program %s changed: its new definition starts beside the old one in turn",
                     pc->name);
            continue;
        }
        config_unref(p->next_cfg);
        p->next_cfg = config_ref(cfg);
        p->next_pc = pc;
        /* Rolling already: before its stop, the restart picks this
         * definition up; once the replacement runs (ROLL_READY) it is too
         * late for that one, so it restarts again after it. */
        if (sv->rolling != p || sv->roll_phase == ROLL_READY)
            p->roll_pending = true;
        log_info("program %s changed: restarting it in turn (one program at a time)", pc->name);
    }
    for (struct program *p = sv->programs, *next; p; p = next) {
        next = p->next;
        if (p->seen || p->removing || p->retiring)
            continue;
        removed++;
        program_remove(p, ": no longer in the configuration");
    }
    if (added || changed || removed)
        log_info("programs reloaded: %zu added, %zu changed, %zu removed", added, changed, removed);
    roll_step(sv);
}

int supervise_restart(struct supervisor *sv, const char *name)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&lock);
    if (!sv)
        sv = current;
    for (struct program *p = sv && !sv->stopping ? sv->programs : NULL; p; p = p->next) {
        if (p->removing || p->retiring || strcmp(p->info.name, name) != 0)
            continue;
        atomic_store(&p->restart_asked, true);
        uint64_t one = 1;
        /* Under the lock: supervise_stop closes the eventfd only after it. */
        if (write(sv->wake.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            log_error("supervisor: posting a restart failed: %s", strerror(errno));
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

void supervise_stop(struct supervisor *sv)
{
    if (!sv)
        return;
    upstream_health_set_verdict_hook(NULL);
    sv->stopping = true;
    sv->live = 0;
    loop_timer_cancel(sv->loop, &sv->roll_timer);
    for (struct program *p = sv->programs; p; p = p->next) {
        ready_stop(p);
        loop_timer_cancel(sv->loop, &p->timer);
        if (!p->keeper) {
            if (p->state == PROGRAM_BACKOFF)
                set_state(p, PROGRAM_STOPPED);
            continue;
        }
        stop_process(p, "");
        sv->live++;
    }
    if (sv->live)
        loop_run(sv->loop);
    /* Stopped early (SIGQUIT): whatever is left is killed now; the keeper
     * kills the rest of the tree and exits. */
    for (struct program *p = sv->programs; p; p = p->next) {
        loop_timer_cancel(sv->loop, &p->timer);
        if (!p->keeper)
            continue;
        loop_unwatch_child(sv->loop, &p->cw);
        killpg(p->pid, SIGKILL);
        waitpid(p->keeper, NULL, 0);
        set_state(p, PROGRAM_STOPPED);
    }
    pthread_mutex_lock(&lock);
    current = NULL;
    pthread_mutex_unlock(&lock);
    while (sv->programs) {
        struct program *p = sv->programs;
        sv->programs = p->next;
        if (p->status_fd >= 0)
            close(p->status_fd);
        output_close(&p->out[0]);
        output_close(&p->out[1]);
        program_free(p);
    }
    loop_del(sv->loop, &sv->wake);
    close(sv->wake.fd);
    free(sv);
}

size_t supervise_snapshot(struct program_info *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&lock);
    for (struct program *p = current ? current->programs : NULL; p; p = p->next) {
        if (p->retiring)
            continue; /* its replacement, of the same name, is shown */
        if (n < max)
            out[n] = p->info;
        n++;
    }
    pthread_mutex_unlock(&lock);
    return n;
}

size_t supervise_evidence(const char *group, const char *server, char *out, size_t cap)
{
    size_t len = 0;
    int64_t now = wall_ms();
    if (cap == 0)
        return 0;
    out[0] = '\0';
    pthread_mutex_lock(&lock);
    for (const struct program *p = current ? current->programs : NULL; p; p = p->next) {
        const struct config_program *pc = p->pc;
        if (p->retiring || !pc->upstream || strcmp(pc->upstream->name, group) != 0 ||
            (server && strcmp(pc->server, server) != 0))
            continue;
        char one[256];
        size_t n = supervise_evidence_text(&p->info, now, one, sizeof(one));
        if (!n)
            continue;
        int w = snprintf(out + len, cap - len, "%s%s", len ? "; " : "", one);
        if (w < 0 || (size_t)w >= cap - len) {
            len = strlen(out);
            break;
        }
        len += (size_t)w;
    }
    pthread_mutex_unlock(&lock);
    return len;
}

size_t supervise_last_stderr(const char *name, char *out, size_t cap)
{
    size_t len = 0;
    if (cap)
        out[0] = '\0';
    pthread_mutex_lock(&lock);
    for (const struct program *p = current ? current->programs : NULL; p; p = p->next)
        if (!p->retiring && strcmp(p->info.name, name) == 0) {
            len = tail_text(&p->tail, out, cap);
            break;
        }
    pthread_mutex_unlock(&lock);
    return len;
}
