/* GCRA rate limiting over one bounded key table that every worker shares,
 * and the per-route counters of what it refused and delayed.
 *
 * Why GCRA: it is exact (no window edges where twice the rate gets
 * through, as with fixed windows), it needs one 64-bit time per key (a
 * sliding log needs one per request, a sliding window two counters and is
 * approximate), and one decision is a read, a compare and a write under a
 * lock held for a few nanoseconds. */
#include "limit/ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/random.h>
#include <time.h>

struct limit_slot {
    uint64_t key; /* 0: empty */
    uint64_t tat; /* theoretical arrival time, ns */
};

struct limit_bucket {
    struct limit_slot slot[LIMIT_BUCKET_SLOTS];
};

struct limit_table {
    size_t num_buckets;
    struct limit_bucket *buckets;
    atomic_flag *locks; /* one per bucket */
    _Atomic uint64_t entries, evictions;
};

struct limit_table *limit_table_new(size_t entries)
{
    struct limit_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->num_buckets = (entries + LIMIT_BUCKET_SLOTS - 1) / LIMIT_BUCKET_SLOTS;
    if (t->num_buckets == 0)
        t->num_buckets = 1;
    /* calloc: the kernel's zero pages, so a million-key table costs memory
     * only as keys arrive. */
    t->buckets = calloc(t->num_buckets, sizeof(*t->buckets));
    t->locks = calloc(t->num_buckets, sizeof(*t->locks));
    if (!t->buckets || !t->locks) {
        limit_table_free(t);
        return NULL;
    }
    for (size_t i = 0; i < t->num_buckets; i++)
        atomic_flag_clear(&t->locks[i]);
    return t;
}

void limit_table_free(struct limit_table *t)
{
    if (!t)
        return;
    free(t->buckets);
    free((void *)t->locks);
    free(t);
}

struct limit_table_stats limit_table_stats(const struct limit_table *t)
{
    struct limit_table_stats st = {0};
    if (t) {
        st.capacity = (uint64_t)t->num_buckets * LIMIT_BUCKET_SLOTS;
        st.entries = atomic_load_explicit(&t->entries, memory_order_relaxed);
        st.evictions = atomic_load_explicit(&t->evictions, memory_order_relaxed);
    }
    return st;
}

/* ---- keys ---- */

static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    }
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* splitmix64's finalizer: FNV's low bits are weak, and buckets use them all. */
static uint64_t mix(uint64_t h)
{
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

uint64_t limit_key(const struct config_rate_limit *rl, const void *key, size_t len)
{
    pthread_once(&seed_once, seed_init);
    uint64_t h = 1469598103934665603ull ^ seed;
    if (rl && rl->name)
        h = fnv1a(h, rl->name, strlen(rl->name) + 1); /* the NUL separates name and key */
    h = mix(fnv1a(h, key, len));
    return h ? h : 1;
}

/* ---- decisions ---- */

static void bucket_lock(atomic_flag *l)
{
    /* Held for a scan of 8 slots: spinning is cheaper than sleeping, but
     * a holder preempted on a busy machine must not make us burn a slice. */
    for (unsigned spins = 0; atomic_flag_test_and_set_explicit(l, memory_order_acquire); spins++)
        if (spins >= 64)
            sched_yield();
}

static void bucket_unlock(atomic_flag *l)
{
    atomic_flag_clear_explicit(l, memory_order_release);
}

/* The slot for key in b: its own, else an empty or expired one (the same
 * as absent), else the live one with the oldest TAT, evicted. *found says
 * whether the slot already held key. */
static struct limit_slot *bucket_slot(struct limit_table *t, struct limit_bucket *b, uint64_t key,
                                      uint64_t now, bool *found)
{
    struct limit_slot *free_slot = NULL, *oldest = NULL;
    for (int i = 0; i < LIMIT_BUCKET_SLOTS; i++) {
        struct limit_slot *s = &b->slot[i];
        if (s->key == key) {
            *found = true;
            return s;
        }
        if (!free_slot && (s->key == 0 || s->tat <= now))
            free_slot = s;
        if (!oldest || s->tat < oldest->tat)
            oldest = s;
    }
    *found = false;
    if (free_slot) {
        if (free_slot->key == 0)
            atomic_fetch_add_explicit(&t->entries, 1, memory_order_relaxed);
        return free_slot;
    }
    atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
    return oldest;
}

void limit_decide(struct limit_table *t, const struct config_rate_limit *rl, uint64_t key,
                  uint64_t now, struct rate_verdict *v)
{
    const uint64_t T = rl->interval_ns;
    const uint64_t tau = (uint64_t)rl->burst * T;
    size_t i = (size_t)(((unsigned __int128)key * t->num_buckets) >> 64);
    struct limit_bucket *b = &t->buckets[i];
    bool found;

    bucket_lock(&t->locks[i]);
    struct limit_slot *s = bucket_slot(t, b, key, now, &found);
    uint64_t tat = found && s->tat > now ? s->tat : now;
    if (tat - now > tau) {
        /* Refused: TAT stays, so a refused request costs the key nothing. */
        bucket_unlock(&t->locks[i]);
        *v = (struct rate_verdict){
            .allowed = false,
            .retry_after_ns = tat - tau - now,
            .remaining = 0,
            .reset_ns = tat - now,
        };
        return;
    }
    s->key = key;
    s->tat = tat + T;
    bucket_unlock(&t->locks[i]);
    uint64_t ahead = tat + T - now; /* <= tau + T */
    *v = (struct rate_verdict){
        .allowed = true,
        .delay_ns = rl->nodelay ? 0 : tat - now,
        .remaining = (tau + T - ahead) / T,
        .reset_ns = ahead,
    };
}

static _Atomic(struct limit_table *) shared_table;
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static bool shared_failed;

struct limit_table *limit_shared_table(size_t entries)
{
    struct limit_table *t = atomic_load_explicit(&shared_table, memory_order_acquire);
    if (t)
        return t;
    pthread_mutex_lock(&shared_lock);
    t = atomic_load_explicit(&shared_table, memory_order_acquire);
    if (!t && !shared_failed) {
        t = limit_table_new(entries);
        if (t)
            atomic_store_explicit(&shared_table, t, memory_order_release);
        else
            shared_failed = true; /* logged once by the caller's NULL */
    }
    pthread_mutex_unlock(&shared_lock);
    return t;
}

struct limit_table_stats limit_shared_stats(void)
{
    return limit_table_stats(atomic_load_explicit(&shared_table, memory_order_acquire));
}

/* RFC 8941 3.3.3: an sf-string escapes only DQUOTE and backslash. */
static size_t sf_string(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    if (cap < 2)
        return 0;
    out[n++] = '"';
    for (; *s && n + 3 < cap; s++) {
        if (*s == '"' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s;
    }
    out[n++] = '"';
    return n;
}

size_t limit_rate_headers(char *out, size_t cap, const struct config_rate_limit *rl,
                          const struct rate_verdict *v)
{
    char name[96];
    size_t nl = sf_string(name, sizeof(name), rl->name ? rl->name : "default");
    uint64_t t_s = (v->reset_ns + 999999999ull) / 1000000000ull;
    int n =
        snprintf(out, cap, "RateLimit-Policy: %.*s;q=%u;w=%u\r\nRateLimit: %.*s;r=%llu;t=%llu\r\n",
                 (int)nl, name, rl->rate, rl->period_s, (int)nl, name,
                 (unsigned long long)v->remaining, (unsigned long long)t_s);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- per-route counters ---- */

/* Route labels come from configs: bounded like observe's route table, so a
 * reload loop that invents names cannot grow memory or /metrics. Slots are
 * published with a release store and never removed: lookups take no lock. */
#define MAX_ROUTES 1024
#define ROUTE_SLOTS 2048

struct route_counts {
    char *label;
    _Atomic uint64_t limited, delayed;
};

static _Atomic(struct route_counts *) route_slots[ROUTE_SLOTS];
static struct route_counts *route_order[MAX_ROUTES];
static _Atomic size_t route_order_len;
static pthread_mutex_t route_lock = PTHREAD_MUTEX_INITIALIZER;
static struct route_counts other_route = {.label = "other"};

static struct route_counts *route_find(const char *label)
{
    uint64_t h = mix(fnv1a(1469598103934665603ull, label, strlen(label)));
    for (size_t probe = 0; probe < ROUTE_SLOTS; probe++) {
        size_t i = (size_t)(h + probe) & (ROUTE_SLOTS - 1);
        struct route_counts *r = atomic_load_explicit(&route_slots[i], memory_order_acquire);
        if (!r) {
            pthread_mutex_lock(&route_lock);
            r = atomic_load_explicit(&route_slots[i], memory_order_acquire);
            if (!r) {
                size_t n = atomic_load_explicit(&route_order_len, memory_order_relaxed);
                if (n >= MAX_ROUTES || !(r = calloc(1, sizeof(*r))) ||
                    !(r->label = strdup(label))) {
                    free(r);
                    pthread_mutex_unlock(&route_lock);
                    return &other_route;
                }
                route_order[n] = r;
                atomic_store_explicit(&route_slots[i], r, memory_order_release);
                atomic_store_explicit(&route_order_len, n + 1, memory_order_release);
            }
            pthread_mutex_unlock(&route_lock);
        }
        if (strcmp(r->label, label) == 0)
            return r;
    }
    return &other_route;
}

void limit_count_route(const char *route, bool delayed)
{
    struct route_counts *r = route_find(route ? route : "-");
    atomic_fetch_add_explicit(delayed ? &r->delayed : &r->limited, 1, memory_order_relaxed);
}

void limit_foreach_route(void (*fn)(const char *route, uint64_t limited, uint64_t delayed,
                                    void *arg),
                         void *arg)
{
    size_t n = atomic_load_explicit(&route_order_len, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        fn(route_order[i]->label,
           atomic_load_explicit(&route_order[i]->limited, memory_order_relaxed),
           atomic_load_explicit(&route_order[i]->delayed, memory_order_relaxed), arg);
    uint64_t ol = atomic_load_explicit(&other_route.limited, memory_order_relaxed);
    uint64_t od = atomic_load_explicit(&other_route.delayed, memory_order_relaxed);
    if (ol || od)
        fn(other_route.label, ol, od, arg);
}
