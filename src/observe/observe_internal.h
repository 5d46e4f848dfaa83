/* Private to src/observe: state shared by its files (settings applied by
 * observe_configure, the stats registry, the error ring) and the small text
 * builders they all use. */
#ifndef BULWARK_OBSERVE_INTERNAL_H
#define BULWARK_OBSERVE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "observe/observe.h"

/* ---- a growable output buffer (admin pages, ring entries; never the request path) ---- */

struct obuf {
    char *p;
    size_t len, cap;
    bool failed; /* an allocation failed: the text is cut */
};

void obuf_put(struct obuf *b, const char *s, size_t n);
void obuf_puts(struct obuf *b, const char *s);
void obuf_printf(struct obuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string, in quotes; bytes that are not printable ASCII become
 * \u00XX so the output is valid JSON whatever the client sent. NULL: null. */
void obuf_json_str(struct obuf *b, const char *s, size_t n);
/* Seconds with 3 decimals from milliseconds, or null when ms < 0. */
void obuf_json_secs(struct obuf *b, int64_t ms);

/* ---- bounded writers into a fixed buffer (access log lines, pages) ---- */

struct sbuf {
    char *p;
    size_t len, cap; /* len never exceeds cap - 1: room for a NUL */
    bool overflow;   /* something did not fit: the text is cut, callers must check */
};

void sbuf_put(struct sbuf *b, const char *s, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_json_str(struct sbuf *b, const char *s, size_t n);
void sbuf_html(struct sbuf *b, const char *s);

/* ---- settings from the current config (observe_configure) ---- */

struct observe_settings {
    pthread_mutex_t lock; /* guards everything below but the atomics */
    struct config *cfg;   /* a reference to the current config: /status reads its groups */
    char *admin_token;    /* NULL: no token required */
};
extern struct observe_settings observe_settings;
extern _Atomic int observe_log_format; /* enum log_format */
extern _Atomic bool observe_details_exposed;

/* Take a reference to the current config (NULL before observe_configure). */
struct config *observe_current_config(void);

/* ---- the admin listener's address (admin.c), main thread only ---- */

struct admin_change {
    bool apply;              /* hand a listener change to the admin thread */
    int fd;                  /* the new listener; -1: close the current one */
    struct config_addr addr; /* the new listener's address */
};

/* What cfg's admin settings change for the listener: nothing before
 * observe_admin_start (it opens the first one) or when the address is
 * unchanged (the socket and its accept queue stay); a new address is bound
 * here, so a failure is known before anything changes. Returns 0 (then call
 * observe_admin_commit) or -errno, logged: the listener keeps its address,
 * and the caller keeps the previous token with it. */
int observe_admin_prepare(const struct config *cfg, struct admin_change *next);
/* Hand the prepared change to the admin thread (started on the first
 * listener) and wait until it has switched: after this returns, a closed or
 * moved address no longer answers. Returns 0 or -errno (logged). */
int observe_admin_commit(const struct config *cfg, struct admin_change *next);

/* ---- stats (stats.c) ---- */

/* Upstream header-time histogram bounds in milliseconds (Prometheus "le"
 * in seconds): from a local backend's few ms to a minute-long report. */
#define OBSERVE_HIST_BUCKETS 14
extern const int64_t observe_hist_bounds_ms[OBSERVE_HIST_BUCKETS];

struct group_stats {
    struct group_stats *next;
    char *name;
    _Atomic uint64_t hist[OBSERVE_HIST_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t hist_sum_ms;
    _Atomic uint64_t hist_count;
    _Atomic uint64_t retries[CAUSE__COUNT]; /* by the cause of the failed attempt */
    _Atomic uint64_t queue[QUEUE__COUNT];   /* by enum observe_queue_event */
    _Atomic uint64_t retries_refused;       /* by the retry budget */
};

struct last_error {
    bool set;
    int64_t time_ms; /* wall clock, ms since the epoch */
    enum cause cause;
    int err;
    char rid[129];
    int64_t connect_ms, header_ms;
};

struct server_stats {
    struct server_stats *next;
    char *group;
    char *server;
    struct group_stats *gs;
    _Atomic int64_t in_flight;
    _Atomic uint64_t attempts;
    _Atomic uint64_t failures[CAUSE__COUNT];
    _Atomic uint32_t consecutive_failures;
    _Atomic int64_t last_ok_ms; /* wall clock of the last successful attempt, 0: none */
    pthread_mutex_t lock;       /* last error: taken on the failure path only */
    struct last_error last;
};

/* The registry lists grow while others read them. */
#define OBS_NEXT(p) __atomic_load_n(&(p)->next, __ATOMIC_ACQUIRE)

/* Looks a server up without creating it (NULL if never seen). */
struct server_stats *observe_find_server(const char *group, const char *server);
/* The registry head (a list that only grows; read without a lock). */
struct server_stats *observe_servers(void);
struct group_stats *observe_groups(void);

/* Requests counted by route label, status class and cause. */
void observe_count_request(const char *route, int status, enum cause cause);

/* Client connections refused by max_connections since start. */
uint64_t observe_client_refused_total(void);

/* Gauges and pool counters, and totals for /status. */
int64_t observe_gauge_get(enum observe_gauge g);
void observe_pool_counts(uint64_t *reused, uint64_t *fresh);
uint64_t observe_requests_total(void);

/* The metrics text, Prometheus format 0.0.4, into b. */
void observe_metrics_write(struct obuf *b);

/* ---- the error ring (ring.c) ---- */

/* rec as the JSON object the ring keeps (with the cause's sentence and
 * fix). Allocated; NULL when out of memory. (record.c) */
char *observe_record_json(const struct request_record *rec, int64_t wall_ms, size_t *len);

void observe_ring_resize(size_t n);
/* Keep one gateway error (formatted as a JSON object). */
void observe_ring_push(const struct request_record *rec);
/* {"total":N,"ring_size":N,"errors":[...]}, most recent first. */
void observe_ring_write(struct obuf *b);
uint64_t observe_ring_total(void);

/* ---- admin pages (admin.c) ---- */

void observe_status_json(struct obuf *b);
/* The limits' counters (src/observe/limits.c): Prometheus lines, and the
 * "rate_limit" and "top_clients" members of /status (with a leading comma). */
void observe_limits_metrics(struct obuf *b);
void observe_limits_status(struct obuf *b);
void observe_status_table(struct obuf *b);

/* Wall-clock milliseconds since the epoch. */
int64_t observe_wall_ms(void);
/* "2024-05-01T12:00:00.123Z" into out (at least 32 bytes). */
void observe_iso_time(int64_t wall_ms, char *out, size_t cap);

#endif
