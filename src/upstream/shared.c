/* Per-server state shared by all workers and kept across reloads: a
 * registry of records that only grows. The mutex guards creation only;
 * readers walk the list without it (records are published with a release
 * store and never removed). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upstream/upstream.h"

/* Records come from configs: each distinct group/server name pair costs one
 * for the life of the process. The bound (as observe's) stops a reload loop
 * that generates names from growing memory without limit. */
#define MAX_SHARED 4096

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upstream_shared *head; /* written under the lock, read with acquire loads */
static struct upstream_shared *tail; /* guarded by registry_lock */
static size_t count;                 /* guarded by registry_lock */

static struct upstream_shared *first(void)
{
    return __atomic_load_n(&head, __ATOMIC_ACQUIRE);
}

static struct upstream_shared *next_of(const struct upstream_shared *sh)
{
    return __atomic_load_n(&sh->next, __ATOMIC_ACQUIRE);
}

struct upstream_shared *upstream_shared_get(const char *group, const char *server)
{
    struct upstream_shared *sh;

    if (!group || !server)
        return NULL;
    pthread_mutex_lock(&registry_lock);
    for (sh = first(); sh; sh = next_of(sh))
        if (strcmp(sh->group, group) == 0 && strcmp(sh->server, server) == 0)
            goto out;
    if (count >= MAX_SHARED || !(sh = calloc(1, sizeof(*sh))))
        goto out; /* sh is NULL */
    char *g = strdup(group), *s = strdup(server);
    if (!g || !s) {
        free(g);
        free(s);
        free(sh);
        sh = NULL;
        goto out;
    }
    sh->group = g;
    sh->server = s;
    atomic_init(&sh->up, true);
    /* Appended at the tail, so foreach lists servers in config order. */
    if (tail)
        __atomic_store_n(&tail->next, sh, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&head, sh, __ATOMIC_RELEASE);
    tail = sh;
    count++;
out:
    pthread_mutex_unlock(&registry_lock);
    return sh;
}

void upstream_shared_set_up_status(struct upstream_shared *sh, bool up, int cause, int status)
{
    if (atomic_load_explicit(&sh->up, memory_order_relaxed) == up)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(&sh->changed_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    atomic_store_explicit(&sh->change_cause, cause, memory_order_relaxed);
    atomic_store_explicit(&sh->change_status, status, memory_order_relaxed);
    if (up) {
        /* The clock of loop_now_ms(), so workers compare without a call. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        atomic_store_explicit(&sh->up_since_ms, now_ms ? now_ms : 1, memory_order_relaxed);
    }
    atomic_store_explicit(&sh->up, up, memory_order_release);
}

void upstream_shared_set_up(struct upstream_shared *sh, bool up, int cause)
{
    upstream_shared_set_up_status(sh, up, cause, 0);
}

void upstream_shared_foreach(void (*cb)(const struct upstream_shared *sh, void *arg), void *arg)
{
    for (struct upstream_shared *sh = first(); sh; sh = next_of(sh))
        cb(sh, arg);
}
