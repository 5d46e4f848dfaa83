/* Core: the per-thread event loop, timers, I/O buffers, clocks and logging.
 * Knows nothing about HTTP.
 *
 * One struct loop per worker thread; nothing in it is shared between threads,
 * so nothing here takes a lock. A file descriptor is registered once,
 * edge-triggered for input and output, and the owner keeps its own readiness
 * flags: no epoll_ctl() per state change on the request path.
 */
#ifndef BULWARK_CORE_H
#define BULWARK_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* The struct that embeds member (an io, a timer) at p. */
#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* ---- event loop ---- */

struct loop;

/* Embedded in whatever owns an fd. on_event receives epoll event bits. */
struct io {
    int fd;
    void (*on_event)(struct io *io, uint32_t events);
};

struct loop *loop_new(void);
void loop_free(struct loop *loop);

/* Register fd edge-triggered for EPOLLIN|EPOLLOUT|EPOLLRDHUP. 0 or -errno. */
int loop_add(struct loop *loop, struct io *io);
/* Register level-triggered for EPOLLIN only (listening sockets, eventfds). */
int loop_add_listener(struct loop *loop, struct io *io);
/* Stop or restart polling a listener (fd limit back-off, shutdown). */
int loop_listener_pause(struct loop *loop, struct io *io, bool paused);
/* Stop polling io. Events for it already fetched in the current batch are
 * dropped too, so the owner may close and free it at once, even from the
 * callback of another io of the same batch. */
void loop_del(struct loop *loop, struct io *io);

/* Run until loop_stop() (which may also come before the run). Once it
 * returns, the loop can run again. */
void loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

/* Milliseconds on the monotonic clock, refreshed once per loop iteration
 * (so a burst of events shares one clock_gettime). */
uint64_t loop_now_ms(const struct loop *loop);
/* Refresh and return it (use after blocking work). */
uint64_t loop_update_time(struct loop *loop);

/* ---- timers: a binary heap per loop ---- */

struct timer {
    uint64_t deadline_ms;
    size_t heap_index; /* 0 when not armed, else 1-based position */
    void (*cb)(struct timer *t);
};

static inline void timer_init(struct timer *t, void (*cb)(struct timer *t))
{
    t->deadline_ms = 0;
    t->heap_index = 0;
    t->cb = cb;
}
static inline bool timer_armed(const struct timer *t)
{
    return t->heap_index != 0;
}
/* Arm (or re-arm) to fire after_ms from the loop's now. */
void loop_timer_set(struct loop *loop, struct timer *t, uint64_t after_ms);
void loop_timer_cancel(struct loop *loop, struct timer *t);

/* Run cb on the loop thread at the end of the current iteration (once). */
struct deferred {
    struct deferred *next;
    bool queued;
    void (*cb)(struct deferred *d);
};
void loop_defer(struct loop *loop, struct deferred *d);
/* Take d back if it is queued (its owner is about to be freed). */
void loop_defer_cancel(struct loop *loop, struct deferred *d);
/* Run what is deferred now (teardown, after the loop stopped). */
void loop_run_deferred(struct loop *loop);

/* ---- signals and child processes as loop events ----
 *
 * A watched signal is read from a signalfd, so its callback runs on the loop
 * like any event, with no async-signal-safety rules. A signalfd only sees a
 * signal that is blocked in every thread: block it (pthread_sigmask) before
 * creating any thread, since threads inherit the mask. loop_watch_signal()
 * also blocks it in the calling thread. Children inherit the mask too, even
 * across exec: a process spawner must unblock them in the child.
 * Deliveries of one signal that arrive before the loop reads them may run
 * the callback once (the kernel coalesces standard signals). */

struct signal_watch {
    int signo;
    void (*cb)(struct signal_watch *sw);
    struct signal_watch *next; /* private */
};

/* Run cb on the loop for each delivery of signo. Several watches may name
 * the same signal; each runs. 0 or -errno. */
int loop_watch_signal(struct loop *loop, struct signal_watch *sw, int signo,
                      void (*cb)(struct signal_watch *sw));
/* Stop running sw (a callback may unwatch its own watch). The signal stays
 * blocked: unblocking would bring back its default action (SIGTERM kills). */
void loop_unwatch_signal(struct loop *loop, struct signal_watch *sw);

/* Exit notification for one child process (for a process supervisor). */
struct child_watch {
    pid_t pid;
    void (*cb)(struct child_watch *cw, int wstatus);
    struct child_watch *next; /* private */
    bool exited;              /* private: reaped, callback pending */
    int wstatus;              /* private */
};

/* Run cb once, on the loop, when child pid exits; cb gets waitpid()'s status
 * (WIFEXITED, WEXITSTATUS...), or -1 when something else reaped the child
 * first. The loop watches SIGCHLD (same blocking rule as above) and reaps
 * with waitpid(pid, WNOHANG) only the pids it watches: children that other
 * code waits for are left alone. A child that already exited is reported
 * too (after the current iteration, never from inside this call). The watch
 * ends when cb runs; cb may free cw. 0, or -ECHILD when pid is not a child
 * of this process, or -errno. */
int loop_watch_child(struct loop *loop, struct child_watch *cw, pid_t pid,
                     void (*cb)(struct child_watch *cw, int wstatus));
/* Forget cw before its child exited (no callback; the child stays unreaped). */
void loop_unwatch_child(struct loop *loop, struct child_watch *cw);

/* ---- I/O buffers ---- */

/* Every socket buffer is this big: a whole request or response header
 * section must fit (max_header_size is capped at 64 KiB), and 16 KiB+ reads
 * keep syscalls per byte low when streaming bodies. */
#define BUF_SIZE (64 * 1024)

/* A byte buffer: data lives in [start, end) of a BUF_SIZE block. */
struct buf {
    char *data; /* NULL while the owner is idle: idle connections hold no buffer */
    uint32_t start;
    uint32_t end;
};

static inline size_t buf_len(const struct buf *b)
{
    return b->end - b->start;
}
static inline size_t buf_room(const struct buf *b)
{
    return BUF_SIZE - b->end;
}
static inline char *buf_head(const struct buf *b)
{
    return b->data + b->start;
}
static inline char *buf_tail(const struct buf *b)
{
    return b->data + b->end;
}
static inline void buf_consume(struct buf *b, size_t n)
{
    b->start += (uint32_t)n;
    if (b->start == b->end)
        b->start = b->end = 0;
}

/* Get a block from the calling thread's free list (or malloc). 0 or -ENOMEM.
 * A no-op when b already has one. */
__attribute__((warn_unused_result)) int buf_acquire(struct buf *b);
/* Return b's block to the free list; b becomes empty with data NULL. */
void buf_release(struct buf *b);
/* Move the data to the start of the block to make room at the end. */
void buf_compact(struct buf *b);
/* Append all n bytes, compacting first if needed. Returns false, and
 * appends nothing, when they do not fit: a caller never sends half of
 * something it built. */
__attribute__((warn_unused_result)) bool buf_append(struct buf *b, const void *p, size_t n);
/* Give back free blocks beyond a small reserve to the system (call when idle). */
void buf_trim_free_list(void);
/* Free every block of the calling thread's free list (thread exit). */
void buf_free_all(void);

/* ---- bounded writer ---- */

/* Builds bytes into a fixed region with a sticky overflow flag: each put
 * fits whole or marks the writer failed (and every later put is dropped).
 * The builder checks wbuf_ok() once, before the bytes are used, so a
 * header section is either whole or not sent at all. */
struct wbuf {
    char *p;
    size_t len, cap;
    bool overflow;
};

static inline struct wbuf wbuf_make(char *p, size_t cap)
{
    return (struct wbuf){p, 0, cap, false};
}
void wbuf_put(struct wbuf *w, const void *s, size_t n);
void wbuf_puts(struct wbuf *w, const char *s);
void wbuf_u64(struct wbuf *w, uint64_t v);
static inline bool wbuf_ok(const struct wbuf *w)
{
    return !w->overflow;
}
/* A writer over the free room at the end of b; buf_commit() adds what it
 * wrote to b if it did not overflow (returns false otherwise, b unchanged). */
struct wbuf buf_writer(struct buf *b);
__attribute__((warn_unused_result)) bool buf_commit(struct buf *b, const struct wbuf *w);

/* ---- transport: bytes over a connected socket ---- */

/* What the request path uses to move bytes, so a TLS transport can slide in
 * under it. The transport keeps the socket's readiness (edge-triggered
 * epoll: set by transport_on_event, cleared when the kernel says EAGAIN):
 * whether a short read means "drained" is the transport's business, since
 * only a plain socket can tell from the read alone. */
struct transport;
struct transport_ops {
    ssize_t (*read)(struct transport *t, void *p, size_t n);
    ssize_t (*writev)(struct transport *t, const struct iovec *iov, int n);
    int (*shutdown_write)(struct transport *t);
};
struct transport {
    int fd;
    const struct transport_ops *ops;
    bool readable, writable;
    bool rdhup; /* FIN or error signalled: the next read that returns 0 is the end */
    bool eof;   /* a read returned 0 */
};

extern const struct transport_ops transport_plain;
static inline void transport_init(struct transport *t, int fd)
{
    *t = (struct transport){.fd = fd, .ops = &transport_plain};
}
/* Fold epoll event bits into the readiness flags. */
void transport_on_event(struct transport *t, uint32_t events);
/* Read into p: > 0 bytes, 0 at end of stream (sets eof), -EAGAIN (clears
 * readable), or -errno. */
static inline ssize_t transport_read(struct transport *t, void *p, size_t n)
{
    return t->ops->read(t, p, n);
}
/* Write: bytes written (>= 0), -EAGAIN (clears writable), or -errno. */
static inline ssize_t transport_writev(struct transport *t, const struct iovec *iov, int n)
{
    return t->ops->writev(t, iov, n);
}
static inline int transport_shutdown_write(struct transport *t)
{
    return t->ops->shutdown_write(t);
}
/* Nothing is waiting to be read and the peer has not closed: the
 * connection can carry another exchange. May peek at the socket. */
bool transport_quiet(struct transport *t);

/* ---- logging ---- */

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Where the error log goes: a path, or NULL for stderr. Returns 0 or -errno.
 * Safe to call again on reload. */
int log_open_error(const char *path);
/* The access log: a path, NULL for stderr, or disabled. */
int log_open_access(const char *path, bool disabled);
bool log_access_enabled(void);
void log_set_level(enum log_level level);

/* One line "<time> [level] message"; message is printf-formatted.
 * Lines are written with one write() so threads do not interleave. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Append a finished access-log line (with its newline) to the calling
 * thread's access-log buffer; flushed when full and by log_access_flush(). */
void log_access_write(const char *line, size_t len);
void log_access_flush(void);

/* Current wall-clock time formatted for logs:
 * common log format "[10/Oct/2000:13:55:36 +0000]" (cached per second). */
const char *log_time_clf(void);

#endif
