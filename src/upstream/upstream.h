/* Upstream groups as one worker sees them: servers, balancers, and per-worker
 * keep-alive pools. Knows nothing about client sessions: it hands out
 * connections and takes them back.
 *
 * One struct upstream_set exists per worker per loaded config. It is built
 * when the worker starts using that config and freed (closing its idle
 * connections) when the last session that used it finishes.
 */
#ifndef BULWARK_UPSTREAM_H
#define BULWARK_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/core.h"

struct upstream_server;
struct server_stats; /* observe's shared counters; attached by the proxy */

/* A connection to an upstream server. While a session uses it the session
 * sets io.on_event and owner; while pooled, the pool owns it. */
struct upstream_conn {
    struct io io;
    struct upstream_server *server;
    void *owner;
    struct upstream_conn *next, *prev; /* idle list of the server */
    struct timer idle_timer;
    uint32_t requests; /* exchanges completed on this connection */
    bool reused;       /* came from the pool (a failure may be a stale connection) */
    bool connected;    /* the TCP handshake completed */
};

struct upstream_server {
    const struct config_server *cfg;
    struct upstream_group *group;
    size_t index;
    int current_weight;         /* smooth weighted round robin state */
    uint32_t in_flight;         /* exchanges on this worker now (least_conn) */
    struct upstream_conn *idle; /* head of idle connections, most recent first */
    uint32_t idle_count;
    struct server_stats *stats; /* not owned; set by whoever built the set */
};

struct upstream_group {
    const struct config_upstream *cfg;
    struct upstream_set *set;
    struct upstream_server *servers;
    size_t num_servers;
    int total_weight;
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
 * for server i, up to 64): they are skipped while untried ones remain. */
struct upstream_server *upstream_pick(struct upstream_group *g, uint64_t hash, uint64_t tried);

/* 64-bit FNV-1a hash of bytes, for hash keys. */
uint64_t upstream_hash(const void *p, size_t n);

/* Get a connection to s: an idle pooled one if any, else a new non-blocking
 * connect (registered with the loop; completion is reported as EPOLLOUT on
 * io). Returns 0 with *out set, or -errno when connect() failed at once
 * (ECONNREFUSED, ENETUNREACH, EMFILE...). The caller owns *out and must set
 * io.on_event and owner. s->in_flight is incremented. */
int upstream_connect(struct upstream_server *s, struct upstream_conn **out);

/* Give a connection back. reusable: the exchange ended cleanly and the
 * upstream allows keep-alive; it goes to the idle pool (bounded by
 * keepalive max_idle, idle timeout), else it is closed. Never touch c after. */
void upstream_release(struct upstream_conn *c, bool reusable);

/* Called with +1 when a connection to an upstream opens and -1 when it
 * closes (for a gauge). Set once at start-up, before workers run. */
void upstream_set_conn_hook(void (*hook)(int delta));

/* Check a just-finished non-blocking connect: 0 or -errno (SO_ERROR). */
int upstream_connect_result(struct upstream_conn *c);

#endif
