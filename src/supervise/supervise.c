/* The supervisor: start, watch, restart and stop the configured programs. */
#include "supervise/supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "supervise/supervise_internal.h"
#include "upstream/upstream.h"

extern char **environ;

/* How often a starting program's server is tried: often enough that it is
 * back in rotation moments after it listens, rarely enough to cost nothing. */
#define READY_POLL_MS 50

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

struct program {
    struct supervisor *sv;
    const struct config_program *pc;
    struct upstream_shared *sh; /* its server's shared state; NULL: not bound */
    char **envp;                /* environ with pc->env applied; NULL: environ */

    enum program_state state;
    pid_t pid; /* also its process group; 0: none */
    struct child_watch cw;
    struct timer timer;       /* restart after back-off, or SIGKILL after stop_timeout */
    struct timer ready_timer; /* next readiness connect */
    struct io ready_io;       /* the connect in progress; fd -1: none */
    uint64_t started_ms;      /* monotonic, of the current run */
    uint32_t backoff_ms;      /* the nominal delay before the next restart */
    uint64_t *restart_ms;     /* ring of the last max_restarts restart times */
    struct output out[2];     /* stdout, stderr */
    uint32_t check_fails;     /* health checks failed in a row while RUNNING */
    bool hang_stop;           /* bulwark is stopping this run because its server hangs */
    struct tail tail;         /* its last stderr lines; written under the lock */

    /* Read by supervise_snapshot under the lock. */
    struct program_info info;
};

struct supervisor {
    struct loop *loop;
    struct config *cfg;
    int down_cause;
    struct program *programs;
    size_t num_programs;
    size_t live; /* programs with a process, while stopping */
    bool stopping;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct supervisor *current; /* under lock */

static void spawn(struct program *p);

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
    in->pid = 0;
    pthread_mutex_unlock(&lock);
}

/* max_restarts within restart_window already: give up. */
static bool too_many_restarts(const struct program *p, uint64_t now_ms)
{
    uint32_t max = (uint32_t)p->pc->max_restarts;
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
        spawn(p);
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

static void child_exited(struct child_watch *cw, int wstatus)
{
    struct program *p = container_of(cw, struct program, cw);
    struct supervisor *sv = p->sv;
    const struct config_program *pc = p->pc;
    uint64_t now = loop_update_time(sv->loop);
    pid_t pid = p->pid;
    bool hung = p->hang_stop;

    record_exit(p, wstatus, now);
    /* The rest of its tree: a worker it forked must not keep the port, nor
     * outlive it as an orphan. */
    if (killpg(pid, SIGKILL) < 0 && errno != ESRCH)
        log_warn("program %s: cannot kill its process group %d: %s", pc->name, (int)pid,
                 strerror(errno));
    /* Its last words are in the pipes: read them before telling of its end. */
    for (int i = 0; i < 2; i++) {
        output_read(&p->out[i]);
        output_close(&p->out[i]);
    }
    ready_stop(p);
    loop_timer_cancel(sv->loop, &p->timer);
    p->timer.cb = restart_timer_fired; /* it was stop_timeout_fired during a hang stop */
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
    loop_timer_set(sv->loop, &p->timer, delay);
}

/* ---- hangs: the bound server fails its health checks while it runs ---- */

static void stop_timeout_fired(struct timer *t);

/* The checks run on the supervisor's loop (proxy_run starts both on the
 * main thread), so this reads current without the lock: only this thread
 * writes it. */
static void health_verdict(struct upstream_shared *sh, bool passed, int fails)
{
    struct supervisor *sv = current;
    for (size_t i = 0; sv && !sv->stopping && i < sv->num_programs; i++) {
        struct program *p = &sv->programs[i];
        if (p->sh != sh)
            continue;
        /* Only a run that was serving can hang: the failures of one that
         * is starting say only that it is not up yet. */
        if (passed || p->state != PROGRAM_RUNNING || !p->pid) {
            p->check_fails = 0;
            continue;
        }
        if (++p->check_fails < (uint32_t)fails)
            continue;
        char sig[32];
        log_warn("program %s: server %s failed %u health checks while running (pid %d): "
                 "restarting it (hang); %s to its process group, SIGKILL after %u ms "
                 "cause=hang",
                 p->pc->name, p->pc->server, p->check_fails, (int)p->pid,
                 signal_name(p->pc->stop_signal, sig, sizeof(sig)), p->pc->stop_timeout_ms);
        p->hang_stop = true;
        p->check_fails = 0;
        killpg(p->pid, p->pc->stop_signal);
        /* A stopped process (SIGSTOP) acts on the signal only once it
         * runs again. */
        killpg(p->pid, SIGCONT);
        set_state(p, PROGRAM_STOPPING);
        loop_timer_cancel(sv->loop, &p->timer);
        p->timer.cb = stop_timeout_fired;
        loop_timer_set(sv->loop, &p->timer, p->pc->stop_timeout_ms);
    }
}

/* ---- starting ---- */

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

/* In the forked child: only async-signal-safe calls until execve. A failure
 * is written to report (errno) before exiting 127. */
static void child_exec(const struct program *p, const char *path, int out, int err, int report,
                       pid_t parent)
{
    sigset_t none;
    int e;

    setpgid(0, 0);
    /* Dies with bulwark even on SIGKILL; and bulwark may have died between
     * fork and here. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* bulwark blocks the signals its loops read from signalfds, and ignores
     * SIGPIPE: both survive execve, and a program needs defaults. */
    signal(SIGPIPE, SIG_DFL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if ((out >= 0 && dup2(out, STDOUT_FILENO) < 0) || (err >= 0 && dup2(err, STDERR_FILENO) < 0))
        goto fail;
    if (p->pc->cwd && chdir(p->pc->cwd) < 0)
        goto fail;
    execve(path, p->pc->argv, p->envp ? p->envp : environ);
fail:
    e = errno;
    if (write(report, &e, sizeof(e)) < 0) {
        /* nothing left to tell it with */
    }
    _exit(127);
}

static void spawn(struct program *p)
{
    struct supervisor *sv = p->sv;
    const struct config_program *pc = p->pc;
    char path[4096];
    int report[2];
    uint64_t now = loop_update_time(sv->loop);

    if (p->info.started_wall_ms) { /* not the first start */
        if (pc->max_restarts > 0)
            p->restart_ms[p->info.restarts % (uint32_t)pc->max_restarts] = now;
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
    if (pipe2(report, O_CLOEXEC) < 0) {
        report[0] = report[1] = -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(p, path, out, err, report[1], parent);
    int fork_errno = errno;
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    if (report[1] >= 0)
        close(report[1]);
    if (pid < 0) {
        if (report[0] >= 0)
            close(report[0]);
        output_close(&p->out[0]);
        output_close(&p->out[1]);
        log_error("program %s: fork failed: %s; retrying in %u ms", pc->name, strerror(fork_errno),
                  p->backoff_ms);
        set_state(p, PROGRAM_BACKOFF);
        loop_timer_set(sv->loop, &p->timer, p->backoff_ms);
        return;
    }
    setpgid(pid, pid); /* also here: no kill of the group may race the child's own call */
    int exec_errno = 0;
    if (report[0] >= 0) {
        /* EOF once execve succeeded (the pipe is close-on-exec). */
        while (read(report[0], &exec_errno, sizeof(exec_errno)) < 0 && errno == EINTR)
            ;
        close(report[0]);
    }
    p->check_fails = 0;
    p->hang_stop = false;
    pthread_mutex_lock(&lock);
    p->pid = pid;
    p->started_ms = now;
    p->info.started_wall_ms = wall_ms();
    pthread_mutex_unlock(&lock);
    if (exec_errno)
        log_error("program %s: cannot run %s: %s (cwd %s)", pc->name, path, strerror(exec_errno),
                  pc->cwd ? pc->cwd : ".");
    else
        log_info("program %s started: pid=%d command=%s restarts=%u", pc->name, (int)pid, path,
                 p->info.restarts);
    if (loop_watch_child(sv->loop, &p->cw, pid, child_exited) < 0) {
        log_error("program %s: cannot watch pid %d: %s", pc->name, (int)pid, strerror(errno));
        kill(pid, SIGKILL);
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

struct supervisor *supervise_start(struct loop *loop, struct config *cfg, int down_cause)
{
    struct supervisor *sv = calloc(1, sizeof(*sv));
    if (!sv)
        return NULL;
    sv->loop = loop;
    sv->cfg = config_ref(cfg);
    sv->down_cause = down_cause;
    sv->num_programs = cfg->num_programs;
    sv->programs = calloc(cfg->num_programs ? cfg->num_programs : 1, sizeof(*sv->programs));
    if (!sv->programs) {
        config_unref(cfg);
        free(sv);
        return NULL;
    }
    srandom((unsigned)(getpid() ^ wall_ms()));
    for (size_t i = 0; i < sv->num_programs; i++) {
        struct program *p = &sv->programs[i];
        const struct config_program *pc = &cfg->programs[i];
        p->sv = sv;
        p->pc = pc;
        snprintf(p->info.name, sizeof(p->info.name), "%s", pc->name);
        p->backoff_ms = pc->backoff_initial_ms;
        p->ready_io.fd = -1;
        p->ready_io.on_event = ready_event;
        p->info.max_restarts = (uint32_t)pc->max_restarts;
        p->info.restart_window_ms = pc->restart_window_ms;
        for (int k = 0; k < 2; k++) {
            p->out[k].p = p;
            p->out[k].io.fd = -1;
            p->out[k].io.on_event = output_event;
            p->out[k].sink = -1;
            p->out[k].is_stderr = k == 1;
            timer_init(&p->out[k].more, output_more);
        }
        timer_init(&p->timer, restart_timer_fired);
        timer_init(&p->ready_timer, ready_timer_fired);
        if (pc->max_restarts > 0)
            p->restart_ms = calloc((size_t)pc->max_restarts, sizeof(*p->restart_ms));
        if (pc->num_env)
            p->envp = build_env(pc);
        if (pc->upstream)
            p->sh = upstream_shared_get(pc->upstream->name, pc->server);
    }
    pthread_mutex_lock(&lock);
    current = sv;
    pthread_mutex_unlock(&lock);
    upstream_health_set_verdict_hook(health_verdict);
    for (size_t i = 0; i < sv->num_programs; i++)
        spawn(&sv->programs[i]);
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
    for (size_t i = 0; sv && i < sv->num_programs; i++) {
        struct program *p = &sv->programs[i];
        if (!p->pc->ready_timeout_ms || p->state != PROGRAM_STARTING)
            continue;
        uint64_t deadline = loop_update_time(sv->loop) + p->pc->ready_timeout_ms;
        for (;;) {
            siginfo_t si = {0};
            /* Peek (WNOWAIT): the loop's child watch reaps and reports it. */
            if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid) {
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

static void stop_timeout_fired(struct timer *t)
{
    struct program *p = container_of(t, struct program, timer);
    log_warn("program %s did not stop within stop_timeout (%u ms): SIGKILL to its process group "
             "pid=%d",
             p->pc->name, p->pc->stop_timeout_ms, (int)p->pid);
    killpg(p->pid, SIGKILL);
}

void supervise_stop(struct supervisor *sv)
{
    if (!sv)
        return;
    upstream_health_set_verdict_hook(NULL);
    sv->stopping = true;
    sv->live = 0;
    for (size_t i = 0; i < sv->num_programs; i++) {
        struct program *p = &sv->programs[i];
        ready_stop(p);
        loop_timer_cancel(sv->loop, &p->timer);
        if (!p->pid) {
            if (p->state == PROGRAM_BACKOFF)
                set_state(p, PROGRAM_STOPPED);
            continue;
        }
        char name[32];
        log_info("stopping program %s: %s to process group %d", p->pc->name,
                 signal_name(p->pc->stop_signal, name, sizeof(name)), (int)p->pid);
        killpg(p->pid, p->pc->stop_signal);
        set_state(p, PROGRAM_STOPPING);
        p->timer.cb = stop_timeout_fired;
        loop_timer_set(sv->loop, &p->timer, p->pc->stop_timeout_ms);
        sv->live++;
    }
    if (sv->live)
        loop_run(sv->loop);
    /* Stopped early (SIGQUIT): whatever is left is killed now. */
    for (size_t i = 0; i < sv->num_programs; i++) {
        struct program *p = &sv->programs[i];
        loop_timer_cancel(sv->loop, &p->timer);
        if (!p->pid)
            continue;
        loop_unwatch_child(sv->loop, &p->cw);
        killpg(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        set_state(p, PROGRAM_STOPPED);
    }
    for (size_t i = 0; i < sv->num_programs; i++) {
        output_close(&sv->programs[i].out[0]);
        output_close(&sv->programs[i].out[1]);
    }
    pthread_mutex_lock(&lock);
    current = NULL;
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; i < sv->num_programs; i++) {
        free(sv->programs[i].restart_ms);
        free(sv->programs[i].envp);
    }
    free(sv->programs);
    config_unref(sv->cfg);
    free(sv);
}

size_t supervise_snapshot(struct program_info *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&lock);
    if (current) {
        n = current->num_programs;
        for (size_t i = 0; i < n && i < max; i++)
            out[i] = current->programs[i].info;
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
    for (size_t i = 0; current && i < current->num_programs; i++) {
        const struct program *p = &current->programs[i];
        const struct config_program *pc = p->pc;
        if (!pc->upstream || strcmp(pc->upstream->name, group) != 0 ||
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
    for (size_t i = 0; current && i < current->num_programs; i++)
        if (strcmp(current->programs[i].info.name, name) == 0) {
            len = tail_text(&current->programs[i].tail, out, cap);
            break;
        }
    pthread_mutex_unlock(&lock);
    return len;
}
