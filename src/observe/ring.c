/* The most recent gateway errors with their evidence, for GET /errors.
 *
 * Entries are kept as ready JSON objects: formatting happens on the
 * failing request's thread (the error path), and the admin thread only
 * concatenates. The mutex is taken by the error path and the admin thread,
 * never by a request that succeeded. */
#include <stdlib.h>

#include "observe/observe_internal.h"

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static char **ring;       /* ring_cap slots, NULL when empty */
static size_t ring_cap;   /* errors.ring_size */
static size_t ring_next;  /* slot the next error goes to */
static size_t ring_count; /* filled slots, at most ring_cap */
static _Atomic uint64_t ring_total;

void observe_ring_resize(size_t n)
{
    if (n == 0)
        n = 1;
    pthread_mutex_lock(&ring_lock);
    if (n == ring_cap) {
        pthread_mutex_unlock(&ring_lock);
        return;
    }
    char **grown = calloc(n, sizeof(*grown));
    if (!grown) {
        pthread_mutex_unlock(&ring_lock);
        return; /* keep the old size */
    }
    /* Keep the newest min(count, n) entries, oldest first. */
    size_t keep = ring_count < n ? ring_count : n;
    for (size_t i = 0; i < ring_count; i++) {
        size_t slot = (ring_next + ring_cap - ring_count + i) % ring_cap;
        if (i >= ring_count - keep)
            grown[i - (ring_count - keep)] = ring[slot];
        else
            free(ring[slot]);
    }
    free(ring);
    ring = grown;
    ring_cap = n;
    ring_count = keep;
    ring_next = keep % n;
    pthread_mutex_unlock(&ring_lock);
}

void observe_ring_push(const struct request_record *rec)
{
    size_t len;
    char *entry = observe_record_json(rec, observe_wall_ms(), &len);
    if (!entry)
        return;
    atomic_fetch_add_explicit(&ring_total, 1, memory_order_relaxed);
    pthread_mutex_lock(&ring_lock);
    if (!ring_cap) {
        /* Before observe_configure (unit tests): the default size. */
        ring = calloc(100, sizeof(*ring));
        if (ring)
            ring_cap = 100;
    }
    if (!ring_cap) {
        pthread_mutex_unlock(&ring_lock);
        free(entry);
        return;
    }
    char *old = ring[ring_next];
    ring[ring_next] = entry;
    ring_next = (ring_next + 1) % ring_cap;
    if (ring_count < ring_cap)
        ring_count++;
    pthread_mutex_unlock(&ring_lock);
    free(old);
}

void observe_ring_write(struct obuf *b)
{
    pthread_mutex_lock(&ring_lock);
    obuf_printf(b, "{\"total\":%llu,\"ring_size\":%zu,\"errors\":[",
                (unsigned long long)atomic_load(&ring_total), ring_cap);
    for (size_t i = 0; i < ring_count; i++) {
        size_t slot = (ring_next + ring_cap - 1 - i) % ring_cap;
        obuf_puts(b, i ? ",\n" : "\n");
        obuf_puts(b, ring[slot]);
    }
    pthread_mutex_unlock(&ring_lock);
    obuf_puts(b, "\n]}\n");
}

uint64_t observe_ring_total(void)
{
    return atomic_load_explicit(&ring_total, memory_order_relaxed);
}
