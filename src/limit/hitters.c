/* Heavy hitters: the clients sending the most requests, and the most
 * refused ones, in bounded memory whatever the number of clients.
 *
 * Space-Saving keeps LIMIT_TOPK counters: a new key takes over the
 * smallest counter and inherits its count as its error, so a key that
 * sends more than 1/LIMIT_TOPK of the traffic is always kept. Each worker
 * thread has its own pair of tables behind its own mutex (only /status and
 * /metrics contend for it); readers merge them. Counts halve every
 * LIMIT_HITTERS_HALF_LIFE_S, so yesterday's flooder fades out. */
#include "limit/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ull;
    }
    return h;
}

void limit_topk_add(struct limit_topk *t, const char *key, size_t len, uint64_t by)
{
    if (len > LIMIT_KEY_MAX)
        len = LIMIT_KEY_MAX;
    uint64_t h = key_hash(key, len);
    struct limit_topk_entry *min = NULL;
    for (size_t i = 0; i < t->n; i++) {
        struct limit_topk_entry *e = &t->e[i];
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
            e->count += by;
            return;
        }
        if (!min || e->count < min->count)
            min = e;
    }
    struct limit_topk_entry *e = min;
    uint64_t error = 0;
    if (t->n < LIMIT_TOPK) {
        e = &t->e[t->n++];
    } else {
        error = min->count; /* Space-Saving: the newcomer may have had that many */
    }
    e->hash = h;
    e->len = (uint8_t)len;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->count = error + by;
    e->error = error;
}

void limit_topk_decay(struct limit_topk *t, unsigned halvings)
{
    if (halvings == 0)
        return;
    size_t kept = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct limit_topk_entry e = t->e[i];
        e.count = halvings >= 64 ? 0 : e.count >> halvings;
        e.error = halvings >= 64 ? 0 : e.error >> halvings;
        if (e.count)
            t->e[kept++] = e;
    }
    t->n = kept;
}

struct hitters {
    pthread_mutex_t lock;
    struct limit_topk by_requests, by_rejected;
    uint64_t epoch; /* half-lives since the clock's origin, at the last decay */
    struct hitters *next;
};

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hitters *all; /* every thread's tables: a worker's live as long as the process */
static __thread struct hitters *mine;

static uint64_t epoch_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec / LIMIT_HITTERS_HALF_LIFE_S;
}

/* Bring h's counts to the current half-life (h->lock held). */
static void decay(struct hitters *h, uint64_t epoch)
{
    if (epoch <= h->epoch)
        return;
    uint64_t n = epoch - h->epoch;
    limit_topk_decay(&h->by_requests, n > 64 ? 64 : (unsigned)n);
    limit_topk_decay(&h->by_rejected, n > 64 ? 64 : (unsigned)n);
    h->epoch = epoch;
}

static struct hitters *thread_hitters(void)
{
    if (mine)
        return mine;
    struct hitters *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    pthread_mutex_init(&h->lock, NULL);
    h->epoch = epoch_now();
    pthread_mutex_lock(&list_lock);
    h->next = all;
    all = h;
    pthread_mutex_unlock(&list_lock);
    mine = h;
    return h;
}

void limit_hitters_note(const char *key, size_t len, bool rejected)
{
    struct hitters *h = thread_hitters();
    if (!h)
        return;
    uint64_t epoch = epoch_now();
    pthread_mutex_lock(&h->lock);
    decay(h, epoch);
    if (rejected)
        limit_topk_add(&h->by_rejected, key, len, 1);
    else
        limit_topk_add(&h->by_requests, key, len, 1);
    pthread_mutex_unlock(&h->lock);
}

static int by_count_desc(const void *a, const void *b)
{
    const struct limit_topk_entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->key, y->key);
}

size_t limit_hitters_top(bool rejected, struct limit_hitter *out, size_t max)
{
    /* Threads are merged by summing counts and errors per key. A key can
     * also be missing from a thread's table after having been counted
     * there and displaced: what it lost is not in the error bound. With a
     * few workers and a flooder in every table this does not matter. */
    struct limit_topk_entry *merged = NULL;
    size_t n = 0, cap = 0;
    uint64_t epoch = epoch_now();
    pthread_mutex_lock(&list_lock);
    for (struct hitters *h = all; h; h = h->next) {
        pthread_mutex_lock(&h->lock);
        decay(h, epoch);
        const struct limit_topk *t = rejected ? &h->by_rejected : &h->by_requests;
        for (size_t i = 0; i < t->n; i++) {
            const struct limit_topk_entry *e = &t->e[i];
            size_t j;
            for (j = 0; j < n; j++)
                if (merged[j].hash == e->hash && merged[j].len == e->len &&
                    memcmp(merged[j].key, e->key, e->len) == 0)
                    break;
            if (j < n) {
                merged[j].count += e->count;
                merged[j].error += e->error;
                continue;
            }
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : LIMIT_TOPK;
                struct limit_topk_entry *g = realloc(merged, ncap * sizeof(*g));
                if (!g)
                    continue;
                merged = g;
                cap = ncap;
            }
            merged[n++] = *e;
        }
        pthread_mutex_unlock(&h->lock);
    }
    pthread_mutex_unlock(&list_lock);
    if (n)
        qsort(merged, n, sizeof(*merged), by_count_desc);
    size_t k = n < max ? n : max;
    for (size_t i = 0; i < k; i++) {
        memcpy(out[i].key, merged[i].key, (size_t)merged[i].len + 1);
        out[i].count = merged[i].count;
        out[i].error = merged[i].error;
    }
    free(merged);
    return k;
}
