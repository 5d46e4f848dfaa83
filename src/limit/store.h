/* A shared rate-limit store: one budget for several bulwark instances,
 * kept in Redis (config rate_limit.store: "redis://host:port").
 *
 * One store per worker loop, one non-blocking connection each. A decision
 * is a GCRA step on one key, done atomically by a Lua script on the Redis
 * side with Redis's own clock (so the instances' clocks do not matter):
 * the key holds the theoretical arrival time (TAT) in microseconds.
 *
 * Every check asked during one loop iteration goes out in one write (the
 * commands are pipelined); replies come back in order. A request waits one
 * round trip to Redis at most, never more.
 *
 * Redis down, refusing or slower than the store's timeout: every pending
 * check is answered STORE_UNAVAILABLE at once (the caller decides locally),
 * the connection is dropped, and the store tries again once per retry
 * interval; the first check answered again means the shared budget is back.
 * Both changes are logged once and counted (store_stats).
 *
 * Everything runs on the loop's thread; only the counters are shared.
 */
#ifndef BULWARK_LIMIT_STORE_H
#define BULWARK_LIMIT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/core.h"

enum store_verdict {
    STORE_ALLOW = 0,   /* within the budget; wait_us: how far ahead of the rate
                          the key runs (the delay a nodelay: false limit applies) */
    STORE_REFUSE,      /* over the budget; wait_us: when a retry would pass */
    STORE_UNAVAILABLE, /* no answer from the store: decide locally */
};

/* One pending check, owned by the caller (embedded in its request). The
 * callback runs on the loop, once, unless store_cancel() came first. */
struct store_waiter {
    void (*cb)(struct store_waiter *w, enum store_verdict v, uint64_t wait_us);
    uint32_t slot; /* private */
    uint32_t gen;  /* private */
};

struct store;

/* A store for addr on loop (nothing is connected until the first check).
 * timeout_ms bounds a check's wait for its reply. NULL when out of memory. */
struct store *store_new(struct loop *loop, const struct config_addr *addr, uint32_t timeout_ms);
/* Close the connection and free; pending checks are answered UNAVAILABLE. */
void store_free(struct store *st);

/* Ask for one GCRA step on key: emission interval t_us (1 s / rate), burst
 * tolerance tau_us (burst * t_us). w->cb runs later with the verdict, never
 * from inside this call. Returns 0, or -EAGAIN when the store is down or
 * too many checks are pending: decide locally now (no callback). */
int store_gcra(struct store *st, const char *key, size_t key_len, uint64_t t_us, uint64_t tau_us,
               struct store_waiter *w);
/* Forget w's check (its owner is going away): no callback. */
void store_cancel(struct store *st, struct store_waiter *w);

/* Is the connection up (the last exchange succeeded)? */
bool store_up(const struct store *st);
/* Does a check still wait for its callback (store_free would run it)? */
bool store_busy(const struct store *st);

/* Counters of all stores of the process, for /metrics. */
struct store_stats {
    uint64_t checks;    /* answered by the store */
    uint64_t fallbacks; /* decided locally because the store did not answer */
    uint64_t outages;   /* times a store went from up to down */
    int64_t stores_up;  /* stores connected now (one per worker and URL) */
};
void store_stats(struct store_stats *out);

/* Parse "redis://host:port" (host an IPv4/IPv6 literal or a name resolved
 * now; port default 6379) into addr. 0, or -1 with a message in err. */
int store_parse_url(const char *url, struct config_addr *addr, char *err, size_t err_len);

#endif
