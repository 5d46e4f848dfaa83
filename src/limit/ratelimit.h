/* Rate limiting (GCRA over a bounded key table shared by all workers) and
 * heavy hitters (the clients sending, and refused, the most).
 *
 * The limit module knows configs and keys, never sessions or requests: the
 * proxy hands it the bytes a policy keys on and gets a verdict back
 * (src/proxy/ratelimited.c). observe reads its counters for /metrics and
 * /status. Everything here is safe to call from any thread.
 */
#ifndef BULWARK_LIMIT_RATELIMIT_H
#define BULWARK_LIMIT_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* ---- GCRA decisions ---- */

/* What one request under one policy gets. */
struct rate_verdict {
    bool allowed;
    uint64_t delay_ns;       /* allowed, nodelay false: hold the request this long first */
    uint64_t retry_after_ns; /* refused: until a request of this key would conform */
    uint64_t remaining;      /* requests this key could still send now, after this one */
    uint64_t reset_ns;       /* until the key's whole burst is available again */
};

/* A fixed-size table of (key fingerprint, theoretical arrival time), in
 * buckets of LIMIT_BUCKET_SLOTS slots, each bucket behind its own spin lock.
 * It never grows: capacity is fixed at creation (rounded up to whole
 * buckets). Eviction: an entry whose TAT is past is the same as no entry and
 * is reused first; a bucket full of live entries loses the one with the
 * oldest TAT (the nearest to expiry), counted in evictions. */
#define LIMIT_BUCKET_SLOTS 8
struct limit_table;

/* NULL when out of memory. Free with limit_table_free (no thread may use it). */
struct limit_table *limit_table_new(size_t entries);
void limit_table_free(struct limit_table *t);

struct limit_table_stats {
    uint64_t capacity;  /* slots */
    uint64_t entries;   /* slots in use (live or past: past ones are reused first) */
    uint64_t evictions; /* live entries dropped for a new key */
};
struct limit_table_stats limit_table_stats(const struct limit_table *t);

/* The fingerprint of a key under a policy: the policy's name and the key's
 * bytes, hashed with a per-process random seed (a client cannot aim its
 * keys at one bucket from outside). Never 0. */
uint64_t limit_key(const struct config_rate_limit *rl, const void *key, size_t len);

/* THE decision for one key: the one place a shared store (Redis) will
 * replace. GCRA (RFC-less, from ATM's I.371): with emission interval T =
 * period / rate and tolerance tau = burst * T, a request at now conforms
 * when max(TAT, now) - now <= tau; it then moves TAT to max(TAT, now) + T.
 * So burst + 1 requests pass at once, then one per T. With nodelay false an
 * accepted request waits max(TAT, now) - now, which spaces the burst at T.
 * now_ns: any monotonic clock, the same for every call on a table. */
void limit_decide(struct limit_table *t, const struct config_rate_limit *rl, uint64_t key,
                  uint64_t now_ns, struct rate_verdict *v);

/* The process's table for rate_limit_table_size entries, created on first
 * use (its size is fixed then: a reload keeps it; a new size applies at the
 * next start). NULL when it cannot be allocated (then nothing is limited). */
struct limit_table *limit_shared_table(size_t entries);
/* Stats of the shared table (zeros before its first use). */
struct limit_table_stats limit_shared_stats(void);

/* "RateLimit-Policy: ...\r\nRateLimit: ...\r\n" for rl after verdict v
 * (draft-ietf-httpapi-ratelimit-headers-10: q/w for the policy, r/t for the
 * state), into out. Returns the length, 0 when it does not fit. */
size_t limit_rate_headers(char *out, size_t cap, const struct config_rate_limit *rl,
                          const struct rate_verdict *v);

/* ---- per-route counters (/metrics) ---- */

/* Count a request refused (429) or delayed by a route's rate limit. Routes
 * are bounded (beyond 1024 labels they count under "other"). */
void limit_count_route(const char *route, bool delayed);
/* fn for every route counted so far, in first-seen order. */
void limit_foreach_route(void (*fn)(const char *route, uint64_t limited, uint64_t delayed,
                                    void *arg),
                         void *arg);

/* ---- heavy hitters ---- */

/* Space-Saving (Metwally et al. 2005) over at most LIMIT_TOPK keys: a key
 * counted n times is kept with count >= n, and count - error <= n. Keys
 * longer than LIMIT_KEY_MAX bytes are cut. Not thread safe: one per thread
 * (limit_hitters_note keeps one per worker and merges them to read). */
#define LIMIT_TOPK 64
#define LIMIT_KEY_MAX 63
struct limit_topk_entry {
    uint64_t hash;
    uint64_t count, error;
    uint8_t len;
    char key[LIMIT_KEY_MAX + 1];
};
struct limit_topk {
    struct limit_topk_entry e[LIMIT_TOPK];
    size_t n;
};
void limit_topk_add(struct limit_topk *t, const char *key, size_t len, uint64_t by);
/* Halve every count and error `halvings` times (entries reaching 0 go). */
void limit_topk_decay(struct limit_topk *t, unsigned halvings);

/* Count one request from a client key (its address), and whether it was
 * refused (429 or 403): the rate limit counts its own, and access and
 * connection limits call it for theirs. Counts decay by half every
 * LIMIT_HITTERS_HALF_LIFE_S, so they follow what is happening now. */
#define LIMIT_HITTERS_HALF_LIFE_S 10
void limit_hitters_note(const char *key, size_t len, bool rejected);

struct limit_hitter {
    char key[LIMIT_KEY_MAX + 1];
    uint64_t count, error; /* the true count is between count - error and count */
};
/* The top clients over all threads, most first: by requests or by refused
 * requests. Returns how many were written (at most max). */
size_t limit_hitters_top(bool rejected, struct limit_hitter *out, size_t max);

#endif
