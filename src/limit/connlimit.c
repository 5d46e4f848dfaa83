/* conn_limit: concurrent connections and requests per client, one table
 * for all workers, and the denial counters /metrics shows.
 *
 * The table is split into stripes, each a chained hash table under its own
 * mutex: two workers contend only when their clients hash to the same
 * stripe, and a lock is held for a lookup and an add, nothing more. An
 * entry exists only while something is counted in it (removed at zero), so
 * the table's size is the number of clients active right now; max_keys
 * bounds it against a flood of distinct (spoofed) sources: a new key past
 * it is refused, an existing client is never evicted. The hash is seeded
 * at start so nobody can aim a flood at one chain. */
#include "limit/limit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#define STRIPES 256
#define MIN_BUCKETS 64

struct entry {
    struct entry *next;
    struct limit_addr a;
    uint32_t scope;
    uint32_t count[2]; /* by enum limit_kind */
};

struct stripe {
    pthread_mutex_t lock;
    struct entry **buckets;
    size_t num_buckets, num_entries;
} __attribute__((aligned(64))); /* one cache line each: no false sharing of locks */

static struct stripe stripes[STRIPES];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static uint64_t seed;

static _Atomic uint64_t num_keys;
static _Atomic uint64_t num_held[2];
static _Atomic uint64_t denied[DENIED__COUNT];

static void table_init(void)
{
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&stripes[i].lock, NULL);
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
        seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t key_hash(const struct limit_addr *a, uint32_t scope)
{
    return mix(mix(a->hi ^ seed) ^ a->lo ^ ((uint64_t)scope << 32)) ^ mix(a->lo + seed);
}

uint32_t limit_scope(const char *label)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)label; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h ? h : 1;
}

static bool same_key(const struct entry *e, const struct limit_addr *a, uint32_t scope)
{
    return e->scope == scope && e->a.hi == a->hi && e->a.lo == a->lo;
}

static void stripe_grow(struct stripe *st)
{
    size_t n = st->num_buckets ? st->num_buckets * 2 : MIN_BUCKETS;
    struct entry **b = calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < st->num_buckets; i++) {
        while (st->buckets[i]) {
            struct entry *e = st->buckets[i];
            st->buckets[i] = e->next;
            size_t j = key_hash(&e->a, e->scope) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->num_buckets = n;
}

static struct stripe *stripe_of(uint64_t h)
{
    return &stripes[(h >> 56) % STRIPES];
}

enum limit_verdict limit_conn_acquire(const struct limit_addr *a, uint32_t scope,
                                      enum limit_kind kind, uint32_t max, uint32_t max_keys)
{
    pthread_once(&table_once, table_init);
    uint64_t h = key_hash(a, scope);
    struct stripe *st = stripe_of(h);
    enum limit_verdict v = LIMIT_OK;

    pthread_mutex_lock(&st->lock);
    struct entry **pp = NULL, *e = NULL;
    if (st->num_buckets) {
        pp = &st->buckets[h & (st->num_buckets - 1)];
        for (e = *pp; e && !same_key(e, a, scope); e = e->next)
            ;
    }
    if (e) {
        if (max && e->count[kind] >= max)
            v = LIMIT_OVER;
        else
            e->count[kind]++;
        goto out;
    }
    if (max_keys == 0)
        max_keys = LIMIT_DEFAULT_MAX_KEYS;
    if (atomic_fetch_add_explicit(&num_keys, 1, memory_order_relaxed) >= max_keys) {
        atomic_fetch_sub_explicit(&num_keys, 1, memory_order_relaxed);
        v = LIMIT_TABLE_FULL;
        goto out;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        atomic_fetch_sub_explicit(&num_keys, 1, memory_order_relaxed);
        v = LIMIT_TABLE_FULL;
        goto out;
    }
    if (st->num_entries >= st->num_buckets * 2)
        stripe_grow(st);
    if (!st->num_buckets) {
        free(e);
        atomic_fetch_sub_explicit(&num_keys, 1, memory_order_relaxed);
        v = LIMIT_TABLE_FULL;
        goto out;
    }
    pp = &st->buckets[h & (st->num_buckets - 1)];
    e->a = *a;
    e->scope = scope;
    e->count[kind] = 1;
    e->next = *pp;
    *pp = e;
    st->num_entries++;
out:
    pthread_mutex_unlock(&st->lock);
    if (v == LIMIT_OK)
        atomic_fetch_add_explicit(&num_held[kind], 1, memory_order_relaxed);
    return v;
}

void limit_conn_release(const struct limit_addr *a, uint32_t scope, enum limit_kind kind)
{
    pthread_once(&table_once, table_init);
    uint64_t h = key_hash(a, scope);
    struct stripe *st = stripe_of(h);
    bool found = false;

    pthread_mutex_lock(&st->lock);
    if (st->num_buckets) {
        struct entry **pp = &st->buckets[h & (st->num_buckets - 1)];
        while (*pp && !same_key(*pp, a, scope))
            pp = &(*pp)->next;
        struct entry *e = *pp;
        if (e && e->count[kind] > 0) {
            found = true;
            e->count[kind]--;
            if (e->count[LIMIT_CONNECTIONS] == 0 && e->count[LIMIT_REQUESTS] == 0) {
                *pp = e->next;
                st->num_entries--;
                free(e);
                atomic_fetch_sub_explicit(&num_keys, 1, memory_order_relaxed);
            }
        }
    }
    pthread_mutex_unlock(&st->lock);
    if (found)
        atomic_fetch_sub_explicit(&num_held[kind], 1, memory_order_relaxed);
}

void limit_count_denied(enum limit_denial why)
{
    if ((unsigned)why < DENIED__COUNT)
        atomic_fetch_add_explicit(&denied[why], 1, memory_order_relaxed);
}

void limit_stats_get(struct limit_stats *out)
{
    for (int i = 0; i < DENIED__COUNT; i++)
        out->denied[i] = atomic_load_explicit(&denied[i], memory_order_relaxed);
    out->keys = atomic_load_explicit(&num_keys, memory_order_relaxed);
    out->connections = atomic_load_explicit(&num_held[LIMIT_CONNECTIONS], memory_order_relaxed);
    out->requests = atomic_load_explicit(&num_held[LIMIT_REQUESTS], memory_order_relaxed);
}

const char *limit_denial_name(enum limit_denial why)
{
    static const char *const names[DENIED__COUNT] = {
        [DENIED_DENY] = "deny",
        [DENIED_ALLOW] = "allow",
        [DENIED_CONN_LIMIT_CONNECTIONS] = "conn_limit_connections",
        [DENIED_CONN_LIMIT_REQUESTS] = "conn_limit_requests",
        [DENIED_PROXY_PROTOCOL] = "proxy_protocol_rejected",
        [DENIED_TABLE_FULL] = "conn_limit_table_full",
    };
    return (unsigned)why < DENIED__COUNT ? names[why] : "-";
}
