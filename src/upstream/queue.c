/* The group queue: requests waiting for a connection slot (max_conns).
 *
 * Each worker keeps its waiters in FIFO order on its own group; the bound
 * (max_pending) is one counter per group name across workers and reloads.
 * A slot freed on this worker wakes the first waiter after the event batch;
 * slots freed by other workers are found by a short timer that runs only
 * while this worker has waiters (no cross-thread wake-up on the request
 * path). */
#include "upstream/upstream_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* How often a worker with waiters looks for slots other workers freed. */
#define WAIT_POLL_MS 5

struct pending_count {
    struct pending_count *next;
    _Atomic uint32_t pending;
    char name[];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pending_count *registry;
static _Atomic uint32_t fallback_pending; /* when out of memory: one bound for all */

static _Atomic uint32_t *pending_for(const char *group)
{
    pthread_mutex_lock(&registry_lock);
    struct pending_count *p = registry;
    while (p && strcmp(p->name, group) != 0)
        p = p->next;
    if (!p) {
        size_t n = strlen(group) + 1;
        p = calloc(1, sizeof(*p) + n);
        if (p) {
            memcpy(p->name, group, n);
            p->next = registry;
            registry = p;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    return p ? &p->pending : &fallback_pending;
}

/* This thread's slot in waiting_since_ms: given on first use, in the order
 * threads come; -1 beyond UPSTREAM_MAX_THREADS. */
static _Atomic int threads_seen;
static __thread int thread_slot = -2;

static int my_slot(void)
{
    if (thread_slot == -2) {
        int n = atomic_fetch_add_explicit(&threads_seen, 1, memory_order_relaxed);
        thread_slot = n < UPSTREAM_MAX_THREADS ? n : -1;
    }
    return thread_slot;
}

/* Tell the other workers when this worker's oldest waiter was queued. */
static void publish_oldest(struct upstream_group *g)
{
    int slot = my_slot();
    if (slot >= 0)
        atomic_store_explicit(&g->shared->waiting_since_ms[slot],
                              g->wait_head ? g->wait_head->since_ms : 0, memory_order_relaxed);
}

uint64_t upstream_oldest_waiter_ms(const struct upstream_group *g, bool others_only)
{
    int n = atomic_load_explicit(&threads_seen, memory_order_relaxed);
    if (n > UPSTREAM_MAX_THREADS)
        n = UPSTREAM_MAX_THREADS;
    int me = my_slot();
    uint64_t oldest = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (others_only && i == me)
            continue;
        uint64_t v = atomic_load_explicit(&g->shared->waiting_since_ms[i], memory_order_relaxed);
        if (v && v < oldest)
            oldest = v;
    }
    if (!others_only && g->wait_head && g->wait_head->since_ms < oldest)
        oldest = g->wait_head->since_ms; /* this worker's own, even without a slot */
    return oldest;
}

uint32_t upstream_waiters_elsewhere(const struct upstream_group *g)
{
    uint32_t all = atomic_load_explicit(g->pending, memory_order_relaxed);
    return all > g->num_waiting ? all - g->num_waiting : 0;
}

static void unlink_waiter(struct upstream_group *g, struct upstream_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        g->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        g->wait_tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
    g->num_waiting--;
    atomic_fetch_sub_explicit(g->pending, 1, memory_order_relaxed);
    if (!g->num_waiting)
        loop_timer_cancel(g->set->loop, &g->wait_timer);
    publish_oldest(g);
}

/* Wake waiters in order until one finds no slot (it keeps its place). A
 * woken request may end at once and close its session, the last user of a
 * set a reload retired: the set is held until the loop is done with it. */
static void wake_waiters(struct upstream_group *g)
{
    struct upstream_set *set = g->set;
    upstream_set_use(set);
    while (g->wait_head) {
        struct upstream_waiter *w = g->wait_head;
        unlink_waiter(g, w);
        g->waking_since_ms = w->since_ms;
        bool served = w->wake(w);
        g->waking_since_ms = 0;
        if (!served)
            break; /* it queued itself again, at the front */
    }
    /* Also what a retired set of this thread may have overwritten. */
    publish_oldest(g);
    if (g->num_waiting)
        loop_timer_set(set->loop, &g->wait_timer, WAIT_POLL_MS);
    upstream_set_leave(set);
}

static void wait_wakeup(struct deferred *d)
{
    wake_waiters(container_of(d, struct upstream_group, wait_wakeup));
}

static void wait_poll(struct timer *t)
{
    wake_waiters(container_of(t, struct upstream_group, wait_timer));
}

void upstream_queue_init(struct upstream_group *g)
{
    g->pending = pending_for(g->cfg->name);
    timer_init(&g->wait_timer, wait_poll);
    g->wait_wakeup.cb = wait_wakeup;
}

void upstream_queue_fini(struct upstream_group *g)
{
    /* A waiter holds its session, which holds the set: none is left here.
     * A wake-up a freed slot deferred may still be queued: the set (and
     * this group) is freed before it would run. */
    loop_timer_cancel(g->set->loop, &g->wait_timer);
    loop_defer_cancel(g->set->loop, &g->wait_wakeup);
}

int upstream_wait(struct upstream_group *g, struct upstream_waiter *w, bool again)
{
    uint32_t cap = (uint32_t)g->cfg->max_pending;
    uint32_t cur = atomic_load_explicit(g->pending, memory_order_relaxed);
    do {
        if (cur >= cap && !again)
            return -EBUSY;
    } while (!atomic_compare_exchange_weak_explicit(g->pending, &cur, cur + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (again) {
        w->prev = NULL;
        w->next = g->wait_head;
        if (g->wait_head)
            g->wait_head->prev = w;
        else
            g->wait_tail = w;
        g->wait_head = w;
    } else {
        w->since_ms = loop_now_ms(g->set->loop);
        w->next = NULL;
        w->prev = g->wait_tail;
        if (g->wait_tail)
            g->wait_tail->next = w;
        else
            g->wait_head = w;
        g->wait_tail = w;
    }
    w->queued = true;
    g->num_waiting++;
    publish_oldest(g);
    if (!timer_armed(&g->wait_timer))
        loop_timer_set(g->set->loop, &g->wait_timer, WAIT_POLL_MS);
    return 0;
}

void upstream_unwait(struct upstream_group *g, struct upstream_waiter *w)
{
    if (w->queued)
        unlink_waiter(g, w);
}
