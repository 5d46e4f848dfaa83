/* Upstream groups as one worker sees them: servers, balancers, and per-worker
 * keep-alive pools. Knows nothing about client sessions: it hands out
 * connections and takes them back. Also one small HTTP/1 client of our own
 * (struct h1_client), for probes and health checks.
 *
 * One struct upstream_set exists per worker per loaded config. It is built
 * when the worker starts using that config and freed (closing its idle
 * connections) when the last session that used it finishes.
 */
#ifndef BULWARK_UPSTREAM_H
#define BULWARK_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/core.h"
#include "http/http.h"

struct upstream_server;
struct server_stats; /* observe's shared counters; attached by the proxy */

/* Counts over a sliding window, shared by every worker without a lock: the
 * window is UPSTREAM_WINDOW_SLOTS slots of slot_ms each, a slot holding its
 * count and the number of the period it counts ((now / slot_ms) << 24 |
 * count, one atomic word: a slot of an older period is restarted, not
 * added to). The sum covers the last UPSTREAM_WINDOW_SLOTS periods, the
 * current one included, so it forgets in steps of slot_ms. Counts saturate
 * at 2^24 - 1 per slot. Zeroed memory is an empty window. */
#define UPSTREAM_WINDOW_SLOTS 10
struct upstream_window {
    _Atomic uint64_t slot[UPSTREAM_WINDOW_SLOTS];
};
/* The slot length for a window of window_ms (at least 1). */
static inline uint32_t upstream_window_slot_ms(uint32_t window_ms)
{
    return window_ms >= UPSTREAM_WINDOW_SLOTS ? window_ms / UPSTREAM_WINDOW_SLOTS : 1;
}
void upstream_window_add(struct upstream_window *w, uint64_t now_ms, uint32_t slot_ms);
uint32_t upstream_window_sum(struct upstream_window *w, uint64_t now_ms, uint32_t slot_ms);
void upstream_window_clear(struct upstream_window *w);

/* Per-server state shared by every worker and kept across reloads: one
 * record per (group name, server name as written in the config), created by
 * upstream_shared_get() when a set is built and never freed (as observe's
 * server_stats), so the balancers of all workers see one in_flight and a
 * server marked down stays down when a reload rebuilds the sets.
 *
 * Fields are atomics, read and written relaxed: each is a value of its own
 * and no reader needs two of them to agree, except that `up` is stored last
 * (release) by upstream_shared_set_up, after the time and cause of the
 * change. No lock is taken on the request path. */
struct upstream_shared {
    const char *group;                     /* owned by the record */
    const char *server;                    /* the server's name as written ("host:port") */
    _Atomic uint32_t in_flight;            /* exchanges on this server now, all workers */
    _Atomic uint32_t conns;                /* connections open to it now (busy and idle), all
                                              workers: a FastCGI group's max_conns caps these */
    _Atomic uint32_t idle;                 /* of them, pooled and idle */
    _Atomic uint32_t consecutive_failures; /* health checks failed in a row */
    _Atomic bool up;                       /* true by default; false: upstream_pick skips it
                                              while any other server of its group is up */
    _Atomic bool given_up;                 /* its program (src/supervise) is FATAL: never
                                              picked, not even by panic_mode */
    _Atomic int64_t changed_ms;            /* wall clock (ms since the epoch) of the last
                                              change of up; 0: never changed */
    _Atomic int change_cause;              /* why up last changed: an enum cause of observe.h
                                              (upstream does not interpret it); 0: none */

    /* Passive health (outlier ejection, upstream_report_attempt): the
     * server is passed over while now < ejected_until_ms, as if down. */
    struct upstream_window fails;      /* failed attempts in the group's fail_window */
    _Atomic uint64_t ejected_until_ms; /* monotonic ms (loop_now_ms); 0: never ejected. Also
                                          the end of the last ejection, for the back-off */
    _Atomic uint32_t eject_level;      /* ejection n of a series lasts eject_time << n */
    _Atomic bool ejected;              /* an ejection began and its end is not logged yet */
    _Atomic uint64_t ejections;        /* ejections since start, for /metrics */
    _Atomic int eject_cause;           /* enum cause of the failure that ejected it last;
                                          0 when a response status did (eject_status) */
    _Atomic int eject_status;          /* that status; 0 when a connection failure did */
    _Atomic int64_t ejected_ms;        /* wall clock of the last ejection; 0: never */
    /* Active health checks (src/upstream/health.c) and slow start: */
    _Atomic uint32_t consecutive_passes; /* health checks passed in a row */
    _Atomic int change_status;           /* the HTTP status that failed the check which took
                                            it down ("status 503"); 0: none */
    _Atomic uint64_t up_since_ms;        /* monotonic ms (as loop_now_ms) when up last went
                                            from false to true; 0: never (slow start) */
    _Atomic bool checked;                /* a health check runs for it now */
    struct upstream_shared *next;        /* registry list, append only */
};

/* The record for (group, server), created on first use (up, nothing in
 * flight). Thread safe; takes a mutex, so call it when building state (a
 * set, a health checker, an admin page), never per request. Returns NULL
 * when out of memory or when the registry is full (4096 records: a reload
 * loop that invents names must not grow memory without bound). */
struct upstream_shared *upstream_shared_get(const char *group, const char *server);

/* Mark a server up or down, recording when and why (cause: an enum cause).
 * Any thread. A no-op (time kept) when up does not change. Coming up starts
 * its slow start (up_since_ms). */
void upstream_shared_set_up(struct upstream_shared *sh, bool up, int cause);
/* The same, with the HTTP status that decided it (a health check answered
 * 503: cause 0, status 503); status 0: none. */
void upstream_shared_set_up_status(struct upstream_shared *sh, bool up, int cause, int status);

/* Call cb for every record, in creation order, without a lock (records are
 * only ever appended). cb must not call upstream_shared_get. */
void upstream_shared_foreach(void (*cb)(const struct upstream_shared *sh, void *arg), void *arg);

/* An active health check passed: an ejection in force ends now (the fail
 * count starts over). Any thread. Returns true when this call ended an
 * ejection (the caller logs the server's return), false when the server was
 * not ejected. */
bool upstream_shared_passed(struct upstream_shared *sh);

/* Milliseconds left of sh's ejection at monotonic now_ms (loop_now_ms or
 * upstream_clock_ms), 0 when it is not ejected. */
uint64_t upstream_shared_ejected_for(const struct upstream_shared *sh, uint64_t now_ms);

/* The monotonic clock loop_now_ms() reads, for threads without a loop. */
uint64_t upstream_clock_ms(void);

/* Worker threads that take part in the group queue's order across workers
 * (one slot each in upstream_group_shared.waiting_since_ms); the threads
 * beyond it queue in their own order only. */
#define UPSTREAM_MAX_THREADS 64

/* Per-group state shared by every worker and kept across reloads (found by
 * group name, never freed): the retry budget's counts, and each worker's
 * oldest waiter. */
struct upstream_group_shared {
    const char *group;               /* owned by the record */
    struct upstream_window requests; /* requests (first attempts) in the last 10 s */
    struct upstream_window retries;  /* retries the budget let through in the last 10 s */
    /* Per worker thread: when its oldest waiter in the group's queue was
     * queued (monotonic ms, loop_now_ms); 0: none waits. A FastCGI group
     * gives its connection slots to the oldest waiter of any worker. */
    _Atomic uint64_t waiting_since_ms[UPSTREAM_MAX_THREADS];
    struct upstream_group_shared *next;
};

/* The record for a group, created on first use; NULL when out of memory or
 * the registry is full. Takes a mutex: call it when building state. */
struct upstream_group_shared *upstream_group_shared_get(const char *group);

/* A connection to an upstream server. While a session uses it the session
 * sets io.on_event and owner; while pooled, the pool owns it. */
struct upstream_conn {
    struct io io;
    struct upstream_server *server;
    void *owner;
    struct upstream_conn *next, *prev; /* idle list of the server */
    struct timer idle_timer;
    uint32_t requests;       /* exchanges completed on this connection */
    uint32_t requests_limit; /* from Keep-Alive max: retire at this many exchanges; 0: none */
    uint32_t hint_timeout_s; /* from Keep-Alive timeout: the backend's idle timeout; 0: none */
    bool reused;             /* came from the pool (a failure may be a stale connection) */
    bool connected;          /* the TCP handshake completed */
};

struct upstream_server {
    const struct config_server *cfg;
    struct timer eject_timer; /* logs the end of an ejection this worker began */
    struct upstream_group *group;
    size_t index;
    int current_weight;             /* smooth weighted round robin state */
    uint32_t in_flight;             /* exchanges on this worker now */
    struct upstream_shared *shared; /* all workers' state for this server (never NULL) */
    struct upstream_shared own;     /* shared points here when the registry had no room:
                                       then the state is this worker's and this config's */
    struct upstream_conn *idle;     /* head of idle connections, most recent first */
    uint32_t idle_count;
    struct server_stats *stats; /* not owned; set by whoever built the set */
};

/* A request waiting for a connection slot of its group (max_conns). The
 * owner embeds it and says how to wake it. */
struct upstream_waiter {
    struct upstream_waiter *next, *prev;
    /* A slot may be free: try again. Returns false when the request could
     * not get one and should stay first in the queue (it was not dequeued
     * by anything else). May free the owner otherwise. */
    bool (*wake)(struct upstream_waiter *w);
    bool queued;
    uint64_t since_ms; /* queued at (loop_now_ms), kept when it queues again at the front */
};

struct upstream_group {
    const struct config_upstream *cfg;
    struct upstream_set *set;
    struct upstream_server *servers; /* primaries, then cfg->num_backup backups */
    size_t num_servers;
    int total_weight;
    /* The per-worker part of the group's queue (FIFO); the bound
     * (max_pending) is counted across workers in *pending. */
    struct upstream_waiter *wait_head, *wait_tail;
    uint32_t num_waiting;
    _Atomic uint32_t *pending;
    struct timer wait_timer;              /* retries while slots are freed by other workers */
    struct deferred wait_wakeup;          /* a slot was freed here: wake after the event batch */
    uint64_t waking_since_ms;             /* while a woken waiter tries again: its since_ms */
    struct upstream_group_shared *shared; /* all workers' budget counts (never NULL) */
    struct upstream_group_shared own;     /* shared points here when the registry had no room */
    uint64_t ramp_draw; /* least_conn slow start: a Weyl sequence, one step per pick */
};

struct upstream_set {
    struct loop *loop;
    struct config *cfg;            /* holds a reference */
    struct upstream_group *groups; /* parallel to cfg->upstreams */
    size_t num_groups;
    uint32_t users; /* sessions using this set; freed when 0 and retired */
    bool retired;   /* a newer config replaced it */
};

/* Build the per-worker state for cfg (takes a config reference). */
struct upstream_set *upstream_set_new(struct loop *loop, struct config *cfg);
/* Mark as replaced; frees now if unused, else when the last user leaves. */
void upstream_set_retire(struct upstream_set *set);
void upstream_set_use(struct upstream_set *set);
void upstream_set_leave(struct upstream_set *set);

/* Pick a server for a request. hash is the request's key hash (for
 * BALANCE_HASH). tried marks servers already tried for this request (bit i
 * for server i, up to 64): they are skipped while untried ones remain (all
 * tried: one of them again). The candidates are the primaries whose shared
 * `up` is true; none: the backups that are up; none either: every server
 * when the group has panic_mode, else NULL (the caller answers 503
 * destination_unavailable without a connect). least_conn compares the
 * shared in_flight, i.e. the exchanges of every worker. A server within
 * slow_start of coming back up gets a share growing linearly from ~0
 * (round_robin: its weight; least_conn: how often it competes); hash
 * ignores slow start. */
struct upstream_server *upstream_pick(struct upstream_group *g, uint64_t hash, uint64_t tried);

/* Whether a pick could still choose a server not in tried (the same
 * candidates as upstream_pick: up primaries, else up backups...). For the
 * retry rule: a retry is possible only when this is true. No side effect. */
bool upstream_untried_left(const struct upstream_group *g, uint64_t tried);

/* Whether some server of g (primary or backup) is up: false means a pick
 * finds nothing unless panic_mode. */
bool upstream_group_any_up(const struct upstream_group *g);

/* s's weight now, in hundredths (weight 3 is 300): less while it is within
 * slow_start of coming back up, at least 1. now_ms: loop_now_ms(). */
int upstream_weight_now(const struct upstream_server *s, uint64_t now_ms);

/* ---- passive health checks: outlier ejection ----
 *
 * Every attempt on a server reports how it ended. Failures are counted per
 * server over the group's fail_window (shared by all workers); max_fails of
 * them eject the server for eject_time: upstream_pick passes over it as if
 * it were down. A server ejected again within 10 x eject_time of the end of
 * its last ejection is ejected twice as long as the last time, up to
 * 10 x eject_time; after a quiet spell that long it starts over at
 * eject_time. It comes back when the time runs out (or an active check
 * passes: upstream_shared_passed). Failures reported while it is ejected
 * (stragglers in flight) are not counted. */

/* The length of an ejection at level n (0: the first of a series). */
uint64_t upstream_eject_duration_ms(uint32_t eject_time_ms, uint32_t level);

/* An attempt on s ended. failure_cause: an enum cause of observe.h (not
 * interpreted here) when the attempt failed in a way that is the server's
 * doing (connect failure, reset, timeout), else 0. status: the final
 * response status, 0 when none arrived. A status in the group's fail_status
 * counts as a failure too; an attempt with neither (the client went away
 * first) counts as nothing. Returns the length of the ejection this report
 * began (the caller logs it: it knows the cause's name), 0 when it began
 * none. With max_fails 0 nothing is counted. Worker thread of s's set. */
uint64_t upstream_report_attempt(struct upstream_server *s, int failure_cause, int status);

/* Whether s is ejected now (its worker's clock). */
bool upstream_server_ejected(const struct upstream_server *s);

/* ---- retry budget ----
 *
 * Retries of a group are at most retry_budget percent of its requests over
 * the last 10 s (all workers together), plus a floor of
 * UPSTREAM_RETRY_FLOOR retries per 10 s so that a quiet group can still
 * retry. A retry after a connection that was refused or unroutable costs
 * the budget nothing: the first attempt reached no server, so the retry
 * adds no load (the proxy decides which retries it spends the budget on).
 * Check, then count: two workers may both pass the check for the last
 * retry, so the budget can be exceeded by at most one retry per worker. */
#define UPSTREAM_RETRY_WINDOW_MS 10000
#define UPSTREAM_RETRY_FLOOR 10

/* A request of g makes its first attempt. */
void upstream_count_request(struct upstream_group *g);
/* Whether one more retry fits g's budget now (counts nothing). */
bool upstream_retry_allowed(struct upstream_group *g);
/* A retry is made on g (after upstream_retry_allowed said yes). */
void upstream_count_retry(struct upstream_group *g);
/* The rule alone: retries so far vs requests, for budget_pct. */
bool upstream_budget_allows(uint32_t requests, uint32_t retries, int budget_pct);

/* 64-bit FNV-1a hash of bytes, for hash keys. */
uint64_t upstream_hash(const void *p, size_t n);

/* Get a connection to s: an idle pooled one if any (unless fresh), else a new non-blocking
 * connect (registered with the loop; completion is reported as EPOLLOUT on
 * io). Returns 0 with *out set, or -errno when connect() failed at once
 * (ECONNREFUSED, ENETUNREACH, EMFILE...). The caller owns *out and must set
 * io.on_event and owner. -EBUSY: the server has max_conns exchanges in
 * flight across all workers (nothing was taken); in a FastCGI group with
 * max_conns: no idle connection here and max_conns connections open across
 * all workers, or an older waiter of the group's queue (any worker) comes
 * first (an idle connection here may then be closed for it). s->in_flight and s->shared->in_flight
 * are incremented. */
enum {
    UPSTREAM_FRESH = 1,  /* a new connection, not a pooled one */
    UPSTREAM_VERIFY = 2, /* peek at a pooled connection before reuse (one syscall): for a
                            request that cannot be sent again once its body is out */
};
__attribute__((warn_unused_result)) int upstream_connect(struct upstream_server *s,
                                                         struct upstream_conn **out, int flags);

/* Give a connection back (in_flight - 1). reusable: the exchange ended
 * cleanly and the upstream allows keep-alive; it goes to the idle pool, else
 * it is closed. It is closed anyway when the pool is full (keepalive
 * max_idle), or when it has now served keepalive max_requests exchanges or
 * the limit a Keep-Alive max hint set. Pooled, it is closed after
 * keepalive idle_timeout idle, or sooner per the Keep-Alive timeout hint.
 * Never touch c after. */
void upstream_release(struct upstream_conn *c, bool reusable);

/* The response said Keep-Alive: timeout=N, max=M (0 = absent): the connection is retired
 * before N seconds minus a margin idle, or once it has served M requests.
 * Call while the exchange whose response carried the header is in progress
 * (before upstream_release). A 0 leaves what an earlier response said.
 * M is read as the backend's count of requests it still takes after this
 * one (Apache sends max=100, 99, 98... on one connection and closes when it
 * reaches 0), so the limit is this exchange + M; the smallest limit any
 * response set stays. A server that sends its total (Node.js) is safe too:
 * its last response says Connection: close. */
void upstream_conn_keepalive_hint(struct upstream_conn *c, uint32_t timeout_s, uint32_t max);

/* Called with +1 when a connection to an upstream opens and -1 when it
 * closes (for a gauge). Set once at start-up, before workers run. */
void upstream_set_conn_hook(void (*hook)(int delta));

/* ---- FastCGI groups: max_conns counts connections ----
 *
 * A PHP-FPM child serves one connection from accept to close, idle or not,
 * so in a group with protocol fastcgi and max_conns > 0 a connection holds
 * one of its server's max_conns slots (upstream_shared.conns, all workers)
 * from connect until close, pooled or busy; a pooled one is reused without
 * taking another. When the slots are taken, requests wait in the group's
 * queue, and the slots go to the oldest waiter of any worker: a worker
 * closes a connection it releases (rather than pooling it) when another
 * worker's waiter is older than its own, a new connection is not opened
 * ahead of an older waiter, and a worker that finds the server full while
 * other workers hold idle connections asks them to close theirs
 * (upstream_reclaim_idle, through the hook below). PHP-FPM then never has
 * more than max_conns connections, so none waits in its backlog. */

/* Whether g's max_conns counts connections (FastCGI with a cap) rather
 * than exchanges. */
bool upstream_counts_connections(const struct upstream_group *g);

/* Called (on a worker thread) when a worker found a server full while other
 * workers hold idle connections to it: the hook makes every worker call
 * upstream_reclaim_idle() on its current set soon. Set once at start-up,
 * before workers run; NULL: none (idle ones then go at their idle_timeout). */
void upstream_set_reclaim_hook(void (*hook)(void));

/* Close the idle connections of set that a waiter of another worker needs:
 * per FastCGI group with max_conns whose queue has an older waiter in
 * another worker than in this one, as many idle connections (oldest
 * first) as other workers have waiters. The set's worker thread only. */
void upstream_reclaim_idle(struct upstream_set *set);

/* Queue w on g (at the front when again is true: a woken waiter that found
 * no slot keeps its place). 0, or -EBUSY when max_pending requests already
 * wait across all workers. */
__attribute__((warn_unused_result)) int upstream_wait(struct upstream_group *g,
                                                      struct upstream_waiter *w, bool again);
/* Take w out of the queue (it gave up, timed out or the client left). */
void upstream_unwait(struct upstream_group *g, struct upstream_waiter *w);

/* Check a just-finished non-blocking connect: 0 or -errno (SO_ERROR). */
int upstream_connect_result(struct upstream_conn *c);

/* ---- one small HTTP/1 client (src/upstream/h1client.c) ----
 *
 * One exchange = one call: connect to an address (with a timeout), send one
 * request, read the response with the strict parser of src/http, close, and
 * report once through a callback. Non-blocking on a struct loop; any number
 * may run on one loop, each in its own struct h1_client, which the caller
 * embeds and owns (no allocation per exchange but the read block, taken from
 * the thread's buffer free list). h1_client_cancel() ends one without a
 * report (a reload drops the checks of the old config).
 *
 * It reports what happened as an enum h1_failure and an errno; it speaks no
 * enum cause: observe maps a result to its cause (observe_cause_from_h1()),
 * so dependencies point one way (observe reads upstream, not the reverse).
 */

/* Body bytes kept for the caller; the rest of the body is read and dropped.
 * They sit at the front of the read block, so 48 KiB are left for reads. */
#define H1_MAX_KEPT_BODY (16 * 1024)

/* Where an exchange failed. The comment names the cause observe maps it to. */
enum h1_failure {
    H1_OK = 0,           /* the whole response arrived (or, connect_only, the handshake) */
    H1_CONNECT_FAILED,   /* socket() or connect() failed: err (ECONNREFUSED...) decides */
    H1_CONNECT_TIMEOUT,  /* no handshake within connect_timeout_ms: connection_timeout */
    H1_SEND_FAILED,      /* the request could not be sent: connection_terminated */
    H1_SEND_TIMEOUT,     /* response_timeout_ms ran out sending: connection_write_timeout */
    H1_RESPONSE_TIMEOUT, /* no complete response header in time: http_response_timeout */
    H1_CLOSED,           /* closed or reset before a complete header: connection_terminated */
    H1_PROTOCOL_ERROR,   /* the parser refused header or chunked body: http_protocol_error */
    H1_HEADER_TOO_LARGE, /* header over max_header_bytes: http_response_header_section_size */
    H1_READ_TIMEOUT,     /* the body did not end in time: connection_read_timeout */
    H1_BODY_INCOMPLETE,  /* closed before the framed body ended: http_response_incomplete */
};

/* What to do. Strings are only read by h1_client_start() (the request is
 * serialised there), so they need not outlive that call. */
struct h1_request {
    struct config_addr addr;      /* where to connect */
    bool connect_only;            /* report once the TCP handshake completes; no HTTP */
    const char *method;           /* "GET" when NULL; "HEAD" expects no body */
    const char *path;             /* "/" when NULL */
    const char *host;             /* the Host value; addr.text when NULL */
    const char *headers;          /* extra header lines, each ending "\r\n", or NULL */
    bool keep_alive;              /* send Connection: keep-alive, not close (the client
                                     closes after the response either way) */
    uint32_t connect_timeout_ms;  /* 0: no limit */
    uint32_t response_timeout_ms; /* from the handshake to the end of the response; 0: no limit */
    size_t max_header_bytes;      /* response header limit; 0: 16384, at most 32768 */
    size_t max_body_kept;         /* body bytes kept for the report, at most H1_MAX_KEPT_BODY */
};

struct h1_result {
    enum h1_failure failure;
    int err;                  /* errno of the failure (ETIMEDOUT for timeouts), 0 if none */
    enum http_error http_err; /* why the parser refused, for H1_PROTOCOL_ERROR and
                                 H1_HEADER_TOO_LARGE; HTTP_OK otherwise */
    int status;               /* final status code, 0 when no final header arrived */
    int64_t connect_ms;       /* start to handshake, -1 when not connected */
    int64_t total_ms;         /* start to report */
    uint64_t body_bytes;      /* body bytes received (decoded), kept or not */
    const char *body;         /* the first max_body_kept of them; valid during the callback */
    size_t body_len;
};

/* Private fields: initialise with h1_client_init(), then use the functions. */
struct h1_client {
    struct io io;
    struct loop *loop;
    struct timer timer;
    struct buf in; /* the request while sending, then [kept body][unread input] */
    void (*on_done)(struct h1_client *c, const struct h1_result *r);
    struct h1_result res;
    uint64_t start_ms;
    uint32_t response_timeout_ms;
    uint32_t max_header_bytes;
    uint32_t max_kept, kept;
    uint64_t body_left;
    struct http_chunked chunked;
    enum http_method method;
    uint8_t state;
    uint8_t framing;
    bool connect_only;
};

/* Prepare c for use on loop; on_done receives every report. */
void h1_client_init(struct h1_client *c, struct loop *loop,
                    void (*on_done)(struct h1_client *c, const struct h1_result *r));

/* Start one exchange. Returns 0 and then reports exactly once through
 * on_done, from the loop (never from inside this call, even when connect()
 * fails at once); or returns -EBUSY (c is running), -ENOMEM (no read block),
 * -E2BIG (the request does not fit a block) and reports nothing. on_done may
 * start c again or free it; the result lives until on_done returns. */
int h1_client_start(struct h1_client *c, const struct h1_request *req);

/* End a running exchange now, without a report. Harmless on an idle c. */
void h1_client_cancel(struct h1_client *c);

/* An exchange is running (started, not reported or cancelled yet). */
bool h1_client_busy(const struct h1_client *c);

/* ---- active health checks (src/upstream/health.c) ----
 *
 * One checker per process, on one loop (the main thread's), for every group
 * with a health section: each server is checked every interval by one
 * exchange of the HTTP/1 client (GET path, or a connect only in tcp mode),
 * judged within timeout against expect_status. The verdict goes into the
 * server's struct upstream_shared, which every worker's upstream_pick reads:
 * `fails` failures in a row mark it down, `passes` passes in a row up. Each
 * change is logged (warn when down, info when up) with its cause. */

/* How a check speaks of causes: upstream knows none (they are observe's),
 * so the proxy hands in the mapping once, before the first start. */
struct upstream_health_hooks {
    int (*cause_of)(const struct h1_result *r); /* an enum cause; 0 for H1_OK */
    const char *(*cause_name)(int cause);       /* its RFC 9209 type, for logs */
};
void upstream_health_set_hooks(const struct upstream_health_hooks *hooks);

/* Told of every verdict of an active check on sh, after it is recorded, on
 * the checker's loop: passed, and the group's `fails` setting. The
 * supervisor restarts a program whose server hangs through it, so upstream
 * does not depend on supervise. Set once (NULL: none), on the checker's
 * thread or before it starts. */
void upstream_health_set_verdict_hook(void (*hook)(struct upstream_shared *sh, bool passed,
                                                   int fails));

struct upstream_health;

/* Start checking cfg's groups on loop (takes a config reference). NULL when
 * out of memory (logged; nothing is checked). */
struct upstream_health *upstream_health_start(struct loop *loop, struct config *cfg);

/* Switch to cfg: checks of servers (group and server names) that stay keep
 * their state, counters, schedule and any exchange in flight; new ones
 * start; those no longer checked stop and their server is marked up again
 * (nothing would ever bring it back). On out of memory the old checks go
 * on (logged). */
void upstream_health_reload(struct upstream_health *h, struct config *cfg);

/* Stop every check and free h. NULL is harmless. */
void upstream_health_stop(struct upstream_health *h);

/* One check's verdict applied to sh (the state machine, pure but for sh):
 * a pass counts toward `passes` and clears the failures, a failure toward
 * `fails` and clears the passes; reaching the count flips `up`, recording
 * cause and status (0 for a pass). Returns true when up changed. */
bool upstream_health_record(struct upstream_shared *sh, bool passed, int fails, int passes,
                            int cause, int status);

#endif
