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

/* ---- sliding windows ---- */

/* A slot is (period << COUNT_BITS) | count: one word, so a slot is restarted
 * for a new period and counted in one compare-and-swap. 40 bits of period
 * cover 34 years of milliseconds since boot. */
#define COUNT_BITS 24
#define COUNT_MASK ((1ull << COUNT_BITS) - 1)

void upstream_window_add(struct upstream_window *w, uint64_t now_ms, uint32_t slot_ms)
{
    uint64_t period = now_ms / (slot_ms ? slot_ms : 1);
    _Atomic uint64_t *slot = &w->slot[period % UPSTREAM_WINDOW_SLOTS];
    uint64_t old = atomic_load_explicit(slot, memory_order_relaxed), next;
    do {
        if (old >> COUNT_BITS == period) {
            if ((old & COUNT_MASK) == COUNT_MASK)
                return; /* saturated */
            next = old + 1;
        } else if (old >> COUNT_BITS > period) {
            return; /* another worker's clock read is a little ahead: count it there */
        } else {
            next = period << COUNT_BITS | 1;
        }
    } while (!atomic_compare_exchange_weak_explicit(slot, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

uint32_t upstream_window_sum(struct upstream_window *w, uint64_t now_ms, uint32_t slot_ms)
{
    uint64_t period = now_ms / (slot_ms ? slot_ms : 1), sum = 0;
    for (size_t i = 0; i < UPSTREAM_WINDOW_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&w->slot[i], memory_order_relaxed);
        uint64_t p = v >> COUNT_BITS;
        /* A slot from the future (a reload changed slot_ms) counts as old. */
        if (p <= period && period - p < UPSTREAM_WINDOW_SLOTS)
            sum += v & COUNT_MASK;
    }
    return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

void upstream_window_clear(struct upstream_window *w)
{
    for (size_t i = 0; i < UPSTREAM_WINDOW_SLOTS; i++)
        atomic_store_explicit(&w->slot[i], 0, memory_order_relaxed);
}

/* ---- ejection, as the admin thread and the health checks see it ---- */

uint64_t upstream_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t upstream_shared_ejected_for(const struct upstream_shared *sh, uint64_t now_ms)
{
    uint64_t until = atomic_load_explicit(&sh->ejected_until_ms, memory_order_relaxed);
    return now_ms < until ? until - now_ms : 0;
}

bool upstream_shared_passed(struct upstream_shared *sh)
{
    /* A second back: the workers compare with their loop's clock, read
     * once per event batch, which may lag this one. */
    uint64_t now = upstream_clock_ms();
    now = now > 1000 ? now - 1000 : 1;
    uint64_t until = atomic_load_explicit(&sh->ejected_until_ms, memory_order_relaxed);
    /* End it now (not 0: the end of the last ejection times the back-off). */
    while (now < until &&
           !atomic_compare_exchange_weak_explicit(&sh->ejected_until_ms, &until, now,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    if (!atomic_load_explicit(&sh->ejected, memory_order_relaxed))
        return false;
    upstream_window_clear(&sh->fails);
    /* Whoever clears the flag reports the return: this call, or the timer
     * of the worker that ejected it, never both. */
    return atomic_exchange_explicit(&sh->ejected, false, memory_order_relaxed);
}

/* ---- per-group records (the retry budget) ---- */

static struct upstream_group_shared *group_head; /* written under registry_lock */
static size_t group_count;                       /* guarded by registry_lock */

struct upstream_group_shared *upstream_group_shared_get(const char *group)
{
    struct upstream_group_shared *gs;

    if (!group)
        return NULL;
    pthread_mutex_lock(&registry_lock);
    for (gs = __atomic_load_n(&group_head, __ATOMIC_ACQUIRE); gs; gs = gs->next)
        if (strcmp(gs->group, group) == 0)
            goto out;
    if (group_count >= MAX_SHARED || !(gs = calloc(1, sizeof(*gs))))
        goto out; /* gs is NULL */
    if (!(gs->group = strdup(group))) {
        free(gs);
        gs = NULL;
        goto out;
    }
    gs->next = group_head;
    __atomic_store_n(&group_head, gs, __ATOMIC_RELEASE);
    group_count++;
out:
    pthread_mutex_unlock(&registry_lock);
    return gs;
}
