/* The event loop: epoll plus a binary heap of timers, one per thread that
 * runs one (each worker, and the main thread for signals and shutdown). */
#include "core/core.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

struct loop {
    int epfd;
    bool stopped;
    uint64_t now_ms;
    struct timer **heap; /* heap[1..count] */
    size_t count, cap;
    struct deferred *deferred;

    /* The event batch being dispatched: loop_del() drops the events of a
     * deleted io from its unprocessed part (batch[batch_next..batch_count)). */
    struct epoll_event *batch;
    int batch_next, batch_count;

    struct io signals_io; /* signalfd of every watched signal; fd -1 until one is */
    sigset_t signal_mask;
    struct signal_watch *signals;
    struct child_watch *children;
    struct signal_watch sigchld; /* watched once a child is */
    struct deferred reap;
};

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct loop *loop_new(void)
{
    struct loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->now_ms = monotonic_ms();
    loop->signals_io.fd = -1;
    sigemptyset(&loop->signal_mask);
    return loop;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
    if (loop->signals_io.fd >= 0)
        close(loop->signals_io.fd);
    close(loop->epfd);
    free(loop->heap);
    free(loop);
}

int loop_add(struct loop *loop, struct io *io)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0 ? -errno : 0;
}

int loop_add_listener(struct loop *loop, struct io *io)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0 ? -errno : 0;
}

int loop_listener_pause(struct loop *loop, struct io *io, bool paused)
{
    struct epoll_event ev = {.events = paused ? 0 : EPOLLIN, .data.ptr = io};
    return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0 ? -errno : 0;
}

void loop_del(struct loop *loop, struct io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    /* epoll may already have handed out an event for io in this batch: the
     * owner may free io as soon as we return. */
    for (int i = loop->batch_next; i < loop->batch_count; i++)
        if (loop->batch[i].data.ptr == io)
            loop->batch[i].data.ptr = NULL;
}

uint64_t loop_now_ms(const struct loop *loop)
{
    return loop->now_ms;
}

uint64_t loop_update_time(struct loop *loop)
{
    loop->now_ms = monotonic_ms();
    return loop->now_ms;
}

void loop_stop(struct loop *loop)
{
    loop->stopped = true;
}

/* ---- timer heap ---- */

static void heap_place(struct loop *loop, struct timer *t, size_t i)
{
    loop->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(struct loop *loop, size_t i)
{
    struct timer *t = loop->heap[i];
    while (i > 1 && loop->heap[i / 2]->deadline_ms > t->deadline_ms) {
        heap_place(loop, loop->heap[i / 2], i);
        i /= 2;
    }
    heap_place(loop, t, i);
}

static void heap_down(struct loop *loop, size_t i)
{
    struct timer *t = loop->heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > loop->count)
            break;
        if (c + 1 <= loop->count && loop->heap[c + 1]->deadline_ms < loop->heap[c]->deadline_ms)
            c++;
        if (loop->heap[c]->deadline_ms >= t->deadline_ms)
            break;
        heap_place(loop, loop->heap[c], i);
        i = c;
    }
    heap_place(loop, t, i);
}

void loop_timer_cancel(struct loop *loop, struct timer *t)
{
    size_t i = t->heap_index;
    if (!i)
        return;
    struct timer *last = loop->heap[loop->count--];
    t->heap_index = 0;
    if (last == t)
        return;
    heap_place(loop, last, i);
    heap_up(loop, i);
    heap_down(loop, last->heap_index);
}

void loop_timer_set(struct loop *loop, struct timer *t, uint64_t after_ms)
{
    uint64_t deadline = loop->now_ms + after_ms;
    if (t->heap_index) {
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline;
        if (deadline < old)
            heap_up(loop, t->heap_index);
        else if (deadline > old)
            heap_down(loop, t->heap_index);
        return;
    }
    if (loop->count + 1 >= loop->cap) {
        size_t cap = loop->cap ? loop->cap * 2 : 1024;
        struct timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (!h)
            abort(); /* a timer we cannot arm would leave a connection hanging forever */
        loop->heap = h;
        loop->cap = cap;
    }
    t->deadline_ms = deadline;
    loop->count++;
    heap_place(loop, t, loop->count);
    heap_up(loop, loop->count);
}

void loop_defer(struct loop *loop, struct deferred *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->next = loop->deferred;
    loop->deferred = d;
}

void loop_defer_cancel(struct loop *loop, struct deferred *d)
{
    if (!d->queued)
        return;
    for (struct deferred **p = &loop->deferred; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            break;
        }
    }
    d->queued = false;
    d->next = NULL;
}

void loop_run_deferred(struct loop *loop)
{
    while (loop->deferred) {
        struct deferred *d = loop->deferred;
        loop->deferred = d->next;
        d->queued = false;
        d->cb(d);
    }
}

static int next_timeout(struct loop *loop)
{
    if (loop->deferred)
        return 0;
    if (!loop->count)
        return 1000;
    uint64_t first = loop->heap[1]->deadline_ms;
    if (first <= loop->now_ms)
        return 0;
    uint64_t wait = first - loop->now_ms;
    return wait > 1000 ? 1000 : (int)wait;
}

static void run_timers(struct loop *loop)
{
    while (loop->count && loop->heap[1]->deadline_ms <= loop->now_ms) {
        struct timer *t = loop->heap[1];
        loop_timer_cancel(loop, t);
        t->cb(t);
    }
}

void loop_run(struct loop *loop)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    while (!loop->stopped) {
        int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, next_timeout(loop));
        loop->now_ms = monotonic_ms();
        loop->batch = events;
        loop->batch_count = n > 0 ? n : 0;
        for (int i = 0; i < loop->batch_count; i++) {
            struct io *io = events[i].data.ptr;
            loop->batch_next = i + 1;
            if (io)
                io->on_event(io, events[i].events);
        }
        loop->batch_count = 0;
        loop_run_deferred(loop);
        run_timers(loop);
        loop_run_deferred(loop);
    }
    loop->stopped = false; /* the loop may run again (a probe, a test) */
}

/* ---- signals ---- */

static void signals_event(struct io *io, uint32_t events)
{
    struct loop *loop = container_of(io, struct loop, signals_io);
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t n = read(io->fd, si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
            struct signal_watch *sw = loop->signals, *next;
            for (; sw; sw = next) {
                next = sw->next; /* the callback may unwatch sw */
                if (sw->signo == (int)si[i].ssi_signo)
                    sw->cb(sw);
            }
        }
    }
}

int loop_watch_signal(struct loop *loop, struct signal_watch *sw, int signo,
                      void (*cb)(struct signal_watch *sw))
{
    sigset_t one;
    sigemptyset(&one);
    if (sigaddset(&one, signo) < 0)
        return -errno;
    int rc = pthread_sigmask(SIG_BLOCK, &one, NULL);
    if (rc)
        return -rc;
    sigset_t mask = loop->signal_mask;
    sigaddset(&mask, signo);
    /* With an existing fd, signalfd() only replaces its mask. */
    int fd = signalfd(loop->signals_io.fd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (loop->signals_io.fd < 0) {
        loop->signals_io.fd = fd;
        loop->signals_io.on_event = signals_event;
        rc = loop_add_listener(loop, &loop->signals_io);
        if (rc < 0) {
            close(fd);
            loop->signals_io.fd = -1;
            return rc;
        }
    }
    loop->signal_mask = mask;
    sw->signo = signo;
    sw->cb = cb;
    sw->next = loop->signals;
    loop->signals = sw;
    return 0;
}

void loop_unwatch_signal(struct loop *loop, struct signal_watch *sw)
{
    for (struct signal_watch **pp = &loop->signals; *pp; pp = &(*pp)->next) {
        if (*pp == sw) {
            *pp = sw->next;
            return;
        }
    }
}

/* ---- child processes ---- */

static void reap_children(struct deferred *d)
{
    struct loop *loop = container_of(d, struct loop, reap);
    for (struct child_watch *cw = loop->children; cw; cw = cw->next) {
        if (cw->exited)
            continue;
        int st;
        pid_t r = waitpid(cw->pid, &st, WNOHANG);
        if (r == cw->pid) {
            cw->exited = true;
            cw->wstatus = st;
        } else if (r < 0 && errno == ECHILD) {
            cw->exited = true;
            cw->wstatus = -1;
        }
    }
    /* One at a time from the head: a callback may watch or unwatch others. */
    for (;;) {
        struct child_watch **pp = &loop->children;
        while (*pp && !(*pp)->exited)
            pp = &(*pp)->next;
        struct child_watch *cw = *pp;
        if (!cw)
            return;
        *pp = cw->next;
        cw->next = NULL;
        cw->cb(cw, cw->wstatus);
    }
}

static void sigchld_received(struct signal_watch *sw)
{
    struct loop *loop = container_of(sw, struct loop, sigchld);
    loop_defer(loop, &loop->reap);
}

int loop_watch_child(struct loop *loop, struct child_watch *cw, pid_t pid,
                     void (*cb)(struct child_watch *cw, int wstatus))
{
    if (!loop->sigchld.cb) {
        int rc = loop_watch_signal(loop, &loop->sigchld, SIGCHLD, sigchld_received);
        if (rc < 0)
            return rc;
        loop->reap.cb = reap_children;
    }
    /* The child may have exited before we watched SIGCHLD, or its SIGCHLD
     * may have been read for another child: look now. */
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r < 0)
        return -errno;
    cw->pid = pid;
    cw->cb = cb;
    cw->exited = r == pid;
    cw->wstatus = cw->exited ? st : 0;
    cw->next = loop->children;
    loop->children = cw;
    if (cw->exited)
        loop_defer(loop, &loop->reap);
    return 0;
}

void loop_unwatch_child(struct loop *loop, struct child_watch *cw)
{
    for (struct child_watch **pp = &loop->children; *pp; pp = &(*pp)->next) {
        if (*pp == cw) {
            *pp = cw->next;
            cw->next = NULL;
            return;
        }
    }
}
