/* The event loop: epoll plus a binary heap of timers, one per worker thread. */
#include "core/core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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
    return loop;
}

void loop_free(struct loop *loop)
{
    if (!loop)
        return;
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
        for (int i = 0; i < n; i++) {
            struct io *io = events[i].data.ptr;
            io->on_event(io, events[i].events);
        }
        loop_run_deferred(loop);
        run_timers(loop);
        loop_run_deferred(loop);
    }
}
