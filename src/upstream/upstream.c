/* Per-worker upstream groups: balancers and keep-alive pools. */
#include "upstream/upstream_internal.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connections are freed after the current event batch: epoll may still hold
 * an event for one closed earlier in the same batch. */
static __thread struct upstream_conn *graveyard;
static __thread struct deferred graveyard_sweep;

static void sweep_graveyard(struct deferred *d)
{
    (void)d;
    while (graveyard) {
        struct upstream_conn *c = graveyard;
        graveyard = c->next;
        free(c);
    }
}

static void no_hook(int delta)
{
    (void)delta;
}

static void (*conn_hook)(int delta) = no_hook;

void upstream_set_conn_hook(void (*hook)(int delta))
{
    conn_hook = hook ? hook : no_hook;
}

static void no_reclaim(void) {}

static void (*reclaim_hook)(void) = no_reclaim;

void upstream_set_reclaim_hook(void (*hook)(void))
{
    reclaim_hook = hook ? hook : no_reclaim;
}

bool upstream_counts_connections(const struct upstream_group *g)
{
    return g->cfg->protocol == PROTOCOL_FASTCGI && g->cfg->max_conns > 0;
}

static void ignore_event(struct io *io, uint32_t events)
{
    (void)io;
    (void)events;
}

static void conn_destroy(struct loop *loop, struct upstream_conn *c)
{
    loop_timer_cancel(loop, &c->idle_timer);
    if (c->io.fd >= 0) {
        /* Not only close(): a process forked meanwhile (a program's keeper,
         * until it closes what it inherited) keeps the socket open, and
         * epoll would go on reporting it for this freed io. */
        loop_del(loop, &c->io);
        close(c->io.fd);
        c->io.fd = -1;
        conn_hook(-1);
        struct upstream_server *s = c->server;
        struct upstream_group *g = s->group;
        atomic_fetch_sub_explicit(&s->shared->conns, 1, memory_order_release);
        /* A FastCGI connection's slot is free now (its PHP-FPM child too). */
        if (g->num_waiting && upstream_counts_connections(g))
            loop_defer(loop, &g->wait_wakeup);
    }
    c->io.on_event = ignore_event;
    c->next = graveyard;
    graveyard = c;
    graveyard_sweep.cb = sweep_graveyard;
    loop_defer(loop, &graveyard_sweep);
}

static void idle_unlink(struct upstream_conn *c)
{
    struct upstream_server *s = c->server;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    s->idle_count--;
    atomic_fetch_sub_explicit(&s->shared->idle, 1, memory_order_relaxed);
}

static void close_idle(struct upstream_server *s)
{
    while (s->idle) {
        struct upstream_conn *c = s->idle;
        idle_unlink(c);
        conn_destroy(s->group->set->loop, c);
    }
}

/* An ejection grows up to this many times eject_time, and a server that
 * stays in rotation that long after one ends starts over. */
#define EJECT_MAX_FACTOR 10

static void eject_timer_fired(struct timer *t);

struct upstream_set *upstream_set_new(struct loop *loop, struct config *cfg)
{
    struct upstream_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    set->loop = loop;
    set->cfg = config_ref(cfg);
    set->num_groups = cfg->num_upstreams;
    set->groups = calloc(cfg->num_upstreams ? cfg->num_upstreams : 1, sizeof(*set->groups));
    if (!set->groups)
        goto fail;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        struct upstream_group *g = &set->groups[i];
        g->cfg = &cfg->upstreams[i];
        g->set = set;
        upstream_queue_init(g);
        g->num_servers = g->cfg->num_servers;
        g->servers = calloc(g->num_servers, sizeof(*g->servers));
        if (!g->servers)
            goto fail;
        g->shared = upstream_group_shared_get(g->cfg->name);
        if (!g->shared) {
            g->own.group = g->cfg->name;
            g->shared = &g->own; /* this worker's budget alone, rather than none */
        }
        for (size_t j = 0; j < g->num_servers; j++) {
            struct upstream_server *s = &g->servers[j];
            s->cfg = &g->cfg->servers[j];
            s->group = g;
            s->index = j;
            timer_init(&s->eject_timer, eject_timer_fired);
            g->total_weight += s->cfg->weight;
            s->shared = upstream_shared_get(g->cfg->name, s->cfg->name);
            if (!s->shared) {
                /* Registry full or out of memory: this worker balances on
                 * its own count for this server, rather than not at all. */
                s->own.group = g->cfg->name;
                s->own.server = s->cfg->name;
                atomic_init(&s->own.up, true);
                s->shared = &s->own;
            }
            /* An ejection whose end no worker has logged yet (the set of
             * the worker that began it was retired by a reload): every
             * worker watches for its end, the first one logs it. */
            if (atomic_load_explicit(&s->shared->ejected, memory_order_relaxed))
                loop_timer_set(loop, &s->eject_timer,
                               upstream_shared_ejected_for(s->shared, loop_now_ms(loop)));
        }
    }
    return set;
fail:
    set->retired = true;
    upstream_set_retire(set);
    return NULL;
}

static void set_free(struct upstream_set *set)
{
    for (size_t i = 0; i < set->num_groups && set->groups; i++) {
        struct upstream_group *g = &set->groups[i];
        upstream_queue_fini(g);
        for (size_t j = 0; j < g->num_servers && g->servers; j++) {
            struct upstream_server *s = &g->servers[j];
            loop_timer_cancel(set->loop, &s->eject_timer);
            close_idle(s);
        }
        free(g->servers);
    }
    free(set->groups);
    config_unref(set->cfg);
    free(set);
}

void upstream_set_retire(struct upstream_set *set)
{
    set->retired = true;
    if (!set->users) {
        set_free(set);
        return;
    }
    /* Its pooled connections would never be taken again (new requests use
     * the new set), yet each holds a PHP-FPM child: close them now. */
    for (size_t i = 0; i < set->num_groups; i++)
        for (size_t j = 0; j < set->groups[i].num_servers; j++)
            close_idle(&set->groups[i].servers[j]);
}

void upstream_set_use(struct upstream_set *set)
{
    set->users++;
}

void upstream_set_leave(struct upstream_set *set)
{
    if (--set->users == 0 && set->retired)
        set_free(set);
}

uint64_t upstream_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Which servers a pick may take: those in [first, end) (the primaries or
 * the backups), not tried for this request, and (skip_down) not marked
 * down. */
struct skip {
    uint64_t tried;
    size_t first, end;
    bool skip_down;
    bool ignore_ejection; /* every up server is ejected: ejection is not a reason */
};

static bool is_tried(uint64_t tried, size_t i)
{
    return i < 64 && (tried & (1ull << i));
}

/* Marked up by the active checks (and the supervisor). */
static bool is_marked_up(const struct upstream_server *s)
{
    return atomic_load_explicit(&s->shared->up, memory_order_relaxed);
}

/* Up (active checks) and not ejected (passive checks). */
static bool is_up(const struct upstream_server *s)
{
    return is_marked_up(s) && !upstream_server_ejected(s);
}

static bool skipped(const struct upstream_group *g, struct skip k, size_t i)
{
    const struct upstream_server *s = &g->servers[i];
    return i < k.first || i >= k.end || is_tried(k.tried, i) ||
           (k.skip_down && !(k.ignore_ejection ? is_marked_up(s) : is_up(s))) ||
           atomic_load_explicit(&s->shared->given_up, memory_order_relaxed);
}

static uint32_t shared_in_flight(const struct upstream_server *s)
{
    return atomic_load_explicit(&s->shared->in_flight, memory_order_relaxed);
}

/* Weights are counted in hundredths, so a server in slow start can have a
 * hundredth of its weight and still be an integer. */
#define WEIGHT_SCALE 100

int upstream_weight_now(const struct upstream_server *s, uint64_t now_ms)
{
    int full = s->cfg->weight * WEIGHT_SCALE;
    uint32_t ramp_ms = s->group->cfg->slow_start_ms;
    if (!ramp_ms)
        return full;
    uint64_t since = atomic_load_explicit(&s->shared->up_since_ms, memory_order_relaxed);
    if (!since)
        return full; /* never came back: it was up from the start */
    /* The worker's clock is read once per event batch, so it may be a
     * little behind the checker's: that is no time at all. */
    uint64_t elapsed = now_ms > since ? now_ms - since : 0;
    if (elapsed >= ramp_ms)
        return full;
    int w = (int)((uint64_t)full * elapsed / ramp_ms);
    return w > 0 ? w : 1;
}

/* Smooth weighted round robin (as nginx): every pick adds each server's
 * weight to its current weight, takes the largest and subtracts the total.
 * A server in slow start adds its smaller weight now, so its share grows as
 * the weight does. */
static struct upstream_server *pick_round_robin(struct upstream_group *g, struct skip k,
                                                uint64_t now_ms)
{
    struct upstream_server *best = NULL;
    int total = 0;
    for (size_t i = 0; i < g->num_servers; i++) {
        struct upstream_server *s = &g->servers[i];
        if (skipped(g, k, i))
            continue;
        int w = upstream_weight_now(s, now_ms);
        s->current_weight += w;
        total += w;
        if (!best || s->current_weight > best->current_weight)
            best = s;
    }
    if (best)
        best->current_weight -= total;
    return best;
}

/* Fewest in-flight exchanges (of all workers) relative to weight; ties go
 * round robin so idle servers share the load. The counts of other workers
 * may move while we compare: a pick is a good guess, never a promise.
 * Slow start cannot scale in-flight counts (an idle server wins whatever
 * its weight), so a server in slow start competes only in a growing
 * fraction of picks (ramp: the draw of this pick, 0..1). */
static struct upstream_server *pick_least_conn(struct upstream_group *g, struct skip k,
                                               uint64_t now_ms, double ramp)
{
    struct upstream_server *best = NULL;
    uint32_t best_in_flight = 0;
    size_t start = (size_t)(g->servers[0].current_weight++) % g->num_servers;
    for (size_t n = 0; n < g->num_servers; n++) {
        size_t i = (start + n) % g->num_servers;
        struct upstream_server *s = &g->servers[i];
        if (skipped(g, k, i))
            continue;
        if (ramp < 1.0) {
            int full = s->cfg->weight * WEIGHT_SCALE;
            if (ramp * full >= upstream_weight_now(s, now_ms))
                continue;
        }
        uint32_t in_flight = shared_in_flight(s);
        if (!best || (uint64_t)in_flight * (uint64_t)best->cfg->weight <
                         (uint64_t)best_in_flight * (uint64_t)s->cfg->weight) {
            best = s;
            best_in_flight = in_flight;
        }
    }
    return best;
}

/* Weighted rendezvous hashing: a key keeps its server while others come and
 * go, and a retry moves to the key's next-best server. */
static struct upstream_server *pick_hash(struct upstream_group *g, uint64_t hash, struct skip k)
{
    struct upstream_server *best = NULL;
    double best_score = 0;
    for (size_t i = 0; i < g->num_servers; i++) {
        if (skipped(g, k, i))
            continue;
        uint64_t x = hash ^ ((uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull);
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdull;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ull;
        x ^= x >> 33;
        double u = ((double)(x >> 11) + 0.5) / 9007199254740992.0; /* (0,1) */
        double score = -(double)g->servers[i].cfg->weight / log(u);
        if (!best || score > best_score) {
            best = &g->servers[i];
            best_score = score;
        }
    }
    return best;
}

static bool any_up_in(const struct upstream_group *g, size_t first, size_t end,
                      bool ignore_ejection)
{
    for (size_t i = first; i < end; i++)
        if (ignore_ejection ? is_marked_up(&g->servers[i]) : is_up(&g->servers[i]))
            return true;
    return false;
}

bool upstream_group_any_up(const struct upstream_group *g)
{
    return any_up_in(g, 0, g->num_servers, true);
}

/* The servers a pick may choose from (k), or false when there are none. */
static bool candidates(const struct upstream_group *g, uint64_t tried, struct skip *out)
{
    if (g->num_servers == 0)
        return false;
    size_t primaries = g->num_servers - g->cfg->num_backup;
    struct skip k = {.tried = tried, .skip_down = true};
    /* Passive ejection routes around outliers; it never makes a group
     * unavailable: when every server the active checks hold up is ejected,
     * they are picked as if none were (only active checks, or the
     * supervisor, can take the whole group down). */
    k.ignore_ejection = !any_up_in(g, 0, g->num_servers, false);
    if (any_up_in(g, 0, primaries, k.ignore_ejection)) {
        k.end = primaries;
    } else if (any_up_in(g, primaries, g->num_servers, k.ignore_ejection)) {
        /* Backups only while every primary is down: the first primary
         * back takes the traffic again at its next pick. */
        k.first = primaries;
        k.end = g->num_servers;
    } else if (g->cfg->panic_mode) {
        /* All down, and a guess at a server beats a sure 503. */
        k.end = g->num_servers;
        k.skip_down = false;
    } else {
        return false;
    }
    *out = k;
    return true;
}

bool upstream_untried_left(const struct upstream_group *g, uint64_t tried)
{
    struct skip k;
    if (!candidates(g, tried, &k))
        return false;
    for (size_t i = k.first; i < k.end; i++)
        if (!skipped(g, k, i))
            return true;
    return false;
}

struct upstream_server *upstream_pick(struct upstream_group *g, uint64_t hash, uint64_t tried)
{
    struct skip k;
    if (!candidates(g, tried, &k))
        return NULL;
    bool untried = false;
    for (size_t i = k.first; i < k.end && !untried; i++)
        untried = !skipped(g, k, i);
    /* Every candidate tried: start over rather than give up. */
    if (!untried)
        k.tried = 0;
    uint64_t now_ms = g->set->loop ? loop_now_ms(g->set->loop) : 0;
    switch (g->cfg->balance) {
    case BALANCE_LEAST_CONN: {
        /* The fractional part of n times the golden ratio: spread evenly
         * over [0, 1) whatever n, so a server at 30% of its weight
         * competes in 30% of picks, without a random generator. */
        g->ramp_draw += 0x9e3779b97f4a7c15ull;
        double ramp =
            g->cfg->slow_start_ms ? (double)(g->ramp_draw >> 11) / 9007199254740992.0 : 1.0;
        struct upstream_server *s = pick_least_conn(g, k, now_ms, ramp);
        /* Only servers in slow start were left, none drawn: take one. */
        return s ? s : pick_least_conn(g, k, now_ms, 1.0);
    }
    case BALANCE_HASH:
        return pick_hash(g, hash, k);
    case BALANCE_ROUND_ROBIN:
    default:
        return pick_round_robin(g, k, now_ms);
    }
}

static void idle_conn_event(struct io *io, uint32_t events)
{
    /* An idle upstream connection has nothing to say: any readiness means
     * it closed, reset or sent stray bytes. Either way it is unusable. */
    struct upstream_conn *c = (struct upstream_conn *)io;
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
        return;
    struct loop *loop = c->server->group->set->loop;
    idle_unlink(c);
    conn_destroy(loop, c);
}

static void idle_conn_timeout(struct timer *t)
{
    struct upstream_conn *c = container_of(t, struct upstream_conn, idle_timer);
    struct loop *loop = c->server->group->set->loop;
    idle_unlink(c);
    conn_destroy(loop, c);
}

/* An exchange begins on s: with capped true, only while fewer than
 * max_conns are in flight on it (all workers; an HTTP group's cap), else
 * counted only (least_conn reads it). */
static bool exchange_begin(struct upstream_server *s, bool capped)
{
    uint32_t cap = (uint32_t)s->group->cfg->max_conns;
    if (!capped || !cap) {
        atomic_fetch_add_explicit(&s->shared->in_flight, 1, memory_order_relaxed);
        return true;
    }
    uint32_t cur = atomic_load_explicit(&s->shared->in_flight, memory_order_relaxed);
    do {
        if (cur >= cap)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&s->shared->in_flight, &cur, cur + 1,
                                                    memory_order_acq_rel, memory_order_relaxed));
    return true;
}

/* The exchange ended: a slot (HTTP) or a pooled connection (FastCGI) may be
 * there for a waiter of this worker. */
static void exchange_end(struct upstream_server *s)
{
    atomic_fetch_sub_explicit(&s->shared->in_flight, 1, memory_order_release);
    struct upstream_group *g = s->group;
    if (g->num_waiting)
        loop_defer(g->set->loop, &g->wait_wakeup);
}

/* A new connection to s may open: always in an HTTP group (its cap is on
 * exchanges); in a FastCGI group with max_conns, only while fewer than
 * max_conns connections are open to s (all workers) and no older request
 * of any worker waits for one. since_ms: when the request asking began to
 * wait (now for one that never waited). Counts the connection. */
static bool conn_slot_take(struct upstream_server *s, uint64_t since_ms)
{
    struct upstream_group *g = s->group;
    if (!upstream_counts_connections(g)) {
        atomic_fetch_add_explicit(&s->shared->conns, 1, memory_order_relaxed);
        return true;
    }
    if (upstream_oldest_waiter_ms(g, false) < since_ms)
        return false; /* first come, first served, across workers */
    uint32_t cap = (uint32_t)g->cfg->max_conns;
    uint32_t cur = atomic_load_explicit(&s->shared->conns, memory_order_relaxed);
    do {
        if (cur >= cap) {
            /* Full. Idle connections of other workers (this one has none,
             * or it would have taken one) hold children that nobody uses:
             * ask their workers to close them. */
            if (atomic_load_explicit(&s->shared->idle, memory_order_relaxed) > s->idle_count)
                reclaim_hook();
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->shared->conns, &cur, cur + 1,
                                                    memory_order_acq_rel, memory_order_relaxed));
    return true;
}

static void conn_slot_give(struct upstream_server *s)
{
    atomic_fetch_sub_explicit(&s->shared->conns, 1, memory_order_release);
}

/* upstream_connect found no slot: the exchange it counted never began (no
 * wake-up: a woken waiter that finds none must not wake itself again). */
static void exchange_undo(struct upstream_server *s)
{
    atomic_fetch_sub_explicit(&s->shared->in_flight, 1, memory_order_relaxed);
}

/* The oldest of s's idle connections (the list is most recent first). */
static struct upstream_conn *oldest_idle(struct upstream_server *s)
{
    struct upstream_conn *c = s->idle;
    while (c && c->next)
        c = c->next;
    return c;
}

/* The failed connect of upstream_connect gives back what it took. */
static int connect_failed(struct upstream_server *s, int err)
{
    conn_slot_give(s);
    exchange_end(s);
    return err;
}

/* An idle connection whose close (or stray bytes) arrived but whose event
 * this worker has not handled yet (the same event batch, or a busy loop):
 * reusing it would fail a request that, once its body is sent, cannot be
 * sent again. One peek before reuse. */
static bool idle_conn_quiet(const struct upstream_conn *c)
{
    char b;
    ssize_t n = recv(c->io.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int upstream_connect(struct upstream_server *s, struct upstream_conn **out, int flags)
{
    struct upstream_group *g = s->group;
    struct loop *loop = g->set->loop;
    bool per_conn = upstream_counts_connections(g);
    /* A woken waiter asks with the time it began to wait (once). */
    uint64_t since_ms = g->waking_since_ms ? g->waking_since_ms : loop_now_ms(loop);
    g->waking_since_ms = 0;
    if (!exchange_begin(s, !per_conn))
        return -EBUSY;
    if (per_conn && s->idle && upstream_oldest_waiter_ms(g, true) < since_ms) {
        /* A request of another worker waits longer than this one: the
         * slot of an idle connection here is its turn, not ours. */
        struct upstream_conn *c = oldest_idle(s);
        idle_unlink(c);
        conn_destroy(loop, c);
        exchange_undo(s);
        return -EBUSY;
    }
    while (s->idle && !(flags & UPSTREAM_FRESH)) {
        struct upstream_conn *c = s->idle;
        idle_unlink(c);
        loop_timer_cancel(loop, &c->idle_timer);
        if ((flags & UPSTREAM_VERIFY) && !idle_conn_quiet(c)) {
            conn_destroy(loop, c);
            continue;
        }
        c->reused = true;
        c->owner = NULL;
        s->in_flight++;
        *out = c;
        return 0;
    }
    if (!conn_slot_take(s, since_ms)) {
        exchange_undo(s);
        return -EBUSY;
    }
    const struct config_addr *a = &s->cfg->addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return connect_failed(s, -errno);
    int one = 1;
    if (a->ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bool connected = true;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        if (errno != EINPROGRESS) {
            int err = errno;
            close(fd);
            return connect_failed(s, -err);
        }
        connected = false;
    }
    struct upstream_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return connect_failed(s, -ENOMEM);
    }
    c->io.fd = fd;
    c->server = s;
    c->connected = connected;
    timer_init(&c->idle_timer, idle_conn_timeout);
    int rc = loop_add(loop, &c->io);
    if (rc < 0) {
        close(fd);
        free(c);
        return connect_failed(s, rc);
    }
    conn_hook(1);
    s->in_flight++;
    *out = c;
    return 0;
}

int upstream_connect_result(struct upstream_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

/* How long a pooled connection may stay idle: idle_timeout, or less when
 * the backend said when it closes idle connections (Keep-Alive: timeout=N).
 * Its idle clock starts when it has sent the response, a little before ours;
 * if we reuse the connection just as it expires, the backend closes it under
 * our request (which fails as connection_terminated, and a request with a
 * streamed body cannot be sent again). So the connection is retired a margin
 * before: 1 s covers the transit and both sides' timer granularity (Apache
 * and Node.js check idle timeouts per second or coarser); a short timeout
 * gets half of it, so a 1 s backend timeout still leaves 500 ms of reuse. */
static uint32_t idle_timeout_ms(const struct upstream_conn *c, uint32_t configured_ms)
{
    if (!c->hint_timeout_s)
        return configured_ms;
    uint64_t hint_ms = (uint64_t)c->hint_timeout_s * 1000;
    uint64_t margin_ms = c->hint_timeout_s <= 2 ? hint_ms / 2 : 1000;
    uint64_t ms = hint_ms - margin_ms;
    return ms < configured_ms ? (uint32_t)ms : configured_ms;
}

void upstream_conn_keepalive_hint(struct upstream_conn *c, uint32_t timeout_s, uint32_t max)
{
    if (timeout_s)
        c->hint_timeout_s = timeout_s;
    if (max) {
        /* This exchange (c->requests + 1), then max more. */
        uint64_t limit = (uint64_t)c->requests + 1 + max;
        if (limit > UINT32_MAX)
            limit = UINT32_MAX;
        if (!c->requests_limit || limit < c->requests_limit)
            c->requests_limit = (uint32_t)limit;
    }
}

void upstream_release(struct upstream_conn *c, bool reusable)
{
    struct upstream_server *s = c->server;
    struct upstream_set *set = s->group->set;
    struct upstream_group *g = s->group;
    s->in_flight--;
    exchange_end(s);
    c->owner = NULL;
    c->requests++;
    const struct config_upstream *ucfg = g->cfg;
    bool worn_out = (ucfg->keepalive_max_requests && c->requests >= ucfg->keepalive_max_requests) ||
                    (c->requests_limit && c->requests >= c->requests_limit);
    /* FastCGI: a waiter of another worker, older than any of ours, gets
     * this connection's slot (and its PHP-FPM child) by our closing it. */
    bool yield =
        upstream_counts_connections(g) &&
        upstream_oldest_waiter_ms(g, true) < (g->wait_head ? g->wait_head->since_ms : UINT64_MAX);
    if (!reusable || set->retired || worn_out || yield ||
        (int)s->idle_count >= ucfg->keepalive_max_idle) {
        conn_destroy(set->loop, c);
        return;
    }
    c->io.on_event = idle_conn_event;
    c->prev = NULL;
    c->next = s->idle;
    if (s->idle)
        s->idle->prev = c;
    s->idle = c;
    s->idle_count++;
    atomic_fetch_add_explicit(&s->shared->idle, 1, memory_order_relaxed);
    loop_timer_set(set->loop, &c->idle_timer, idle_timeout_ms(c, ucfg->keepalive_idle_timeout_ms));
}

void upstream_reclaim_idle(struct upstream_set *set)
{
    for (size_t i = 0; i < set->num_groups; i++) {
        struct upstream_group *g = &set->groups[i];
        if (!upstream_counts_connections(g))
            continue;
        uint32_t wanted = upstream_waiters_elsewhere(g);
        if (!wanted || upstream_oldest_waiter_ms(g, true) >=
                           (g->wait_head ? g->wait_head->since_ms : UINT64_MAX))
            continue;
        for (size_t j = 0; j < g->num_servers && wanted; j++) {
            struct upstream_server *s = &g->servers[j];
            while (s->idle && wanted) {
                struct upstream_conn *c = oldest_idle(s);
                idle_unlink(c);
                conn_destroy(set->loop, c);
                wanted--;
            }
        }
    }
}

/* ---- passive health checks ---- */

uint64_t upstream_eject_duration_ms(uint32_t eject_time_ms, uint32_t level)
{
    uint64_t cap = (uint64_t)eject_time_ms * EJECT_MAX_FACTOR;
    uint64_t ms = level >= 4 ? cap : (uint64_t)eject_time_ms << level;
    return ms < cap ? ms : cap;
}

bool upstream_server_ejected(const struct upstream_server *s)
{
    return upstream_shared_ejected_for(s->shared, loop_now_ms(s->group->set->loop)) > 0;
}

uint64_t upstream_report_attempt(struct upstream_server *s, int failure_cause, int status)
{
    const struct config_upstream *cfg = s->group->cfg;
    if (!cfg->max_fails || (!failure_cause && !config_fail_status(cfg, status)))
        return 0;
    struct upstream_shared *sh = s->shared;
    struct loop *loop = s->group->set->loop;
    uint64_t now = loop_now_ms(loop);
    uint64_t until = atomic_load_explicit(&sh->ejected_until_ms, memory_order_relaxed);
    if (now < until)
        return 0; /* already out: failures of requests still in flight prove nothing new */
    uint32_t slot_ms = upstream_window_slot_ms(cfg->fail_window_ms);
    upstream_window_add(&sh->fails, now, slot_ms);
    if (upstream_window_sum(&sh->fails, now, slot_ms) < (uint32_t)cfg->max_fails)
        return 0;
    /* Ejected again soon after the last ejection ended: the server did not
     * recover, so it stays out longer each time (up to the cap). */
    uint64_t series_ms = (uint64_t)cfg->eject_time_ms * EJECT_MAX_FACTOR;
    uint32_t level = 0;
    if (until && now - until < series_ms) {
        level = atomic_load_explicit(&sh->eject_level, memory_order_relaxed) + 1;
        if (level > 8)
            level = 8;
    }
    uint64_t ms = upstream_eject_duration_ms(cfg->eject_time_ms, level);
    /* Workers race to eject: one wins, the others see it ejected. */
    if (!atomic_compare_exchange_strong_explicit(&sh->ejected_until_ms, &until, now + ms,
                                                 memory_order_relaxed, memory_order_relaxed))
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(&sh->ejected_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    atomic_store_explicit(&sh->eject_level, level, memory_order_relaxed);
    atomic_store_explicit(&sh->eject_cause, failure_cause, memory_order_relaxed);
    atomic_store_explicit(&sh->eject_status, failure_cause ? 0 : status, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->ejections, 1, memory_order_relaxed);
    atomic_store_explicit(&sh->ejected, true, memory_order_relaxed);
    /* Back with a clean slate: old failures must not eject it again at once. */
    upstream_window_clear(&sh->fails);
    loop_timer_set(loop, &s->eject_timer, ms);
    return ms;
}

/* The ejection this worker watches is over: log the server's return, once
 * for all workers (an active check that ended it early logged it already). */
static void eject_timer_fired(struct timer *t)
{
    struct upstream_server *s = container_of(t, struct upstream_server, eject_timer);
    struct upstream_shared *sh = s->shared;
    struct loop *loop = s->group->set->loop;
    uint64_t left = upstream_shared_ejected_for(sh, loop_now_ms(loop));
    if (left) {
        loop_timer_set(loop, t, left); /* ejected again meanwhile */
        return;
    }
    if (atomic_exchange_explicit(&sh->ejected, false, memory_order_relaxed))
        log_warn("upstream server %s (upstream \"%s\") is back in rotation: its ejection "
                 "ended; state=up cause=eject_time_elapsed ejections=%llu",
                 s->cfg->addr.text, s->group->cfg->name,
                 (unsigned long long)atomic_load_explicit(&sh->ejections, memory_order_relaxed));
}

/* ---- retry budget ---- */

bool upstream_budget_allows(uint32_t requests, uint32_t retries, int budget_pct)
{
    uint64_t allowed = (uint64_t)requests * (uint64_t)budget_pct / 100;
    if (allowed < UPSTREAM_RETRY_FLOOR)
        allowed = UPSTREAM_RETRY_FLOOR;
    return retries < allowed;
}

static const uint32_t budget_slot_ms = UPSTREAM_RETRY_WINDOW_MS / UPSTREAM_WINDOW_SLOTS;

void upstream_count_request(struct upstream_group *g)
{
    upstream_window_add(&g->shared->requests, loop_now_ms(g->set->loop), budget_slot_ms);
}

bool upstream_retry_allowed(struct upstream_group *g)
{
    uint64_t now = loop_now_ms(g->set->loop);
    return upstream_budget_allows(upstream_window_sum(&g->shared->requests, now, budget_slot_ms),
                                  upstream_window_sum(&g->shared->retries, now, budget_slot_ms),
                                  g->cfg->retry_budget_pct);
}

void upstream_count_retry(struct upstream_group *g)
{
    upstream_window_add(&g->shared->retries, loop_now_ms(g->set->loop), budget_slot_ms);
}
