/* Slow-client defences beyond header_timeout (README, "Slow clients").
 *
 * header_timeout alone lets 1,000 slowloris connections hold 1,000 slots for
 * its whole length, again and again; body_timeout lets a slow-body client
 * hold one for ever by sending a byte before each gap runs out. Three
 * defences, each costing nothing on the normal path (no syscall, no lock;
 * a normal head arrives in one read and never enters the header list):
 *
 *   min_body_rate           a request body must average bytes per `per`
 *                           once `per` has passed: a deadline moved by
 *                           every byte read, kept in the client's timer
 *   max_header_connections  connections waiting for (more of) a request
 *                           head, all workers: over it, the worker's oldest
 *                           one is closed (a normal head arrives at once,
 *                           so the oldest partial heads are the attack)
 *   reclaim_idle_at         from this share of the connection capacity,
 *                           each new connection closes the worker's oldest
 *                           idle keep-alive connection (nginx reuses idle
 *                           connections the same way when it runs out)
 */
#include "proxy/proxy_internal.h"

#include <stdio.h>

#define DEFENCE_LOG_INTERVAL_MS 1000

/* Derived limits, written by the main thread (start, reload), read by the
 * workers: 0 is "off". */
static _Atomic uint32_t header_cap;
static _Atomic uint32_t reclaim_mark;
/* Connections in some worker's header list: compared with header_cap. */
static _Atomic uint32_t header_conns;

/* The least max_header_connections: auto gives (see defence_configure). */
#define AUTO_HEADER_FLOOR 256

void defence_configure(const struct config *cfg, uint64_t fd_limit)
{
    /* Each proxied request holds a client and an upstream descriptor: without
     * max_connections, half the descriptors is what can be open. */
    uint64_t capacity = cfg->max_connections ? cfg->max_connections : fd_limit / 2;
    if (capacity > UINT32_MAX)
        capacity = UINT32_MAX;
    /* auto: half the capacity, but never below 256 (or the capacity when
     * smaller): with a small max_connections, half would close a normal
     * client's connection that was merely accepted before its first bytes. */
    uint64_t floor = capacity < AUTO_HEADER_FLOOR ? capacity : AUTO_HEADER_FLOOR;
    uint64_t cap = cfg->max_header_connections == CONFIG_AUTO
                       ? (capacity / 2 > floor ? capacity / 2 : floor)
                       : (uint64_t)cfg->max_header_connections;
    if (cfg->max_header_connections == CONFIG_AUTO && capacity && cap == 0)
        cap = 1;
    uint64_t mark = cfg->reclaim_idle_pct ? capacity * (uint64_t)cfg->reclaim_idle_pct / 100 : 0;
    if (cfg->reclaim_idle_pct && capacity && mark == 0)
        mark = 1;
    atomic_store_explicit(&header_cap, (uint32_t)cap, memory_order_relaxed);
    atomic_store_explicit(&reclaim_mark, (uint32_t)mark, memory_order_relaxed);
    log_info("slow-client defences: max_header_connections=%llu reclaim_idle_at=%llu "
             "(of %llu connections) min_body_rate=%u bytes per %u ms",
             (unsigned long long)cap, (unsigned long long)mark, (unsigned long long)capacity,
             cfg->min_body_rate_bytes, cfg->min_body_rate_per_ms);
}

/* ---- rate-limited log lines ---- */

static void defence_log_line(struct worker *w, enum observe_defence d, uint64_t now)
{
    struct defence_log *l = &w->defence_logs[d];
    const struct config *cfg = w->set->cfg;
    switch (d) {
    case DEFENCE_MIN_BODY_RATE:
        log_warn("cut %llu request(s) whose body came below client.min_body_rate (%u bytes per "
                 "%u ms), the last from %s; defence=min_body_rate closed=%llu",
                 (unsigned long long)l->pending, cfg->min_body_rate_bytes,
                 cfg->min_body_rate_per_ms, l->example, (unsigned long long)l->pending);
        break;
    case DEFENCE_MAX_HEADER_CONNECTIONS:
        log_warn("closed %llu connection(s) still sending their request header, oldest first: "
                 "%llu were waiting, over max_header_connections=%u; "
                 "defence=max_header_connections closed=%llu",
                 (unsigned long long)l->pending, (unsigned long long)l->open,
                 atomic_load_explicit(&header_cap, memory_order_relaxed),
                 (unsigned long long)l->pending);
        break;
    case DEFENCE_RECLAIM_IDLE:
        log_warn("closed %llu idle keep-alive connection(s), oldest first, to make room: %llu "
                 "client connections were open, at the reclaim_idle_at mark of %u; "
                 "defence=reclaim_idle_at closed=%llu",
                 (unsigned long long)l->pending, (unsigned long long)l->open,
                 atomic_load_explicit(&reclaim_mark, memory_order_relaxed),
                 (unsigned long long)l->pending);
        break;
    case DEFENCE__COUNT:
        break;
    }
    l->pending = 0;
    l->last_ms = now;
}

static void defence_event(struct worker *w, enum observe_defence d, uint64_t open)
{
    struct defence_log *l = &w->defence_logs[d];
    uint64_t now = loop_now_ms(w->loop);
    observe_client_defence(d);
    l->pending++;
    l->open = open;
    if (!l->last_ms || now - l->last_ms >= DEFENCE_LOG_INTERVAL_MS)
        defence_log_line(w, d, now);
}

void defence_log_flush(struct worker *w)
{
    uint64_t now = loop_now_ms(w->loop);
    for (int d = 0; d < DEFENCE__COUNT; d++) {
        struct defence_log *l = &w->defence_logs[d];
        if (l->pending && now - l->last_ms >= DEFENCE_LOG_INTERVAL_MS)
            defence_log_line(w, (enum observe_defence)d, now);
    }
}

/* ---- the wait lists ---- */

static void list_append(struct session_list *l, struct session *s)
{
    s->wait_next = NULL;
    s->wait_prev = l->tail;
    if (l->tail)
        l->tail->wait_next = s;
    else
        l->head = s;
    l->tail = s;
}

static void list_remove(struct session_list *l, struct session *s)
{
    if (s->wait_prev)
        s->wait_prev->wait_next = s->wait_next;
    else
        l->head = s->wait_next;
    if (s->wait_next)
        s->wait_next->wait_prev = s->wait_prev;
    else
        l->tail = s->wait_prev;
    s->wait_prev = s->wait_next = NULL;
}

void defence_wait_end(struct session *s)
{
    switch (s->wait) {
    case WAIT_HEADER:
        list_remove(&s->w->header_waits, s);
        atomic_fetch_sub_explicit(&header_conns, 1, memory_order_relaxed);
        observe_gauge_add(GAUGE_CLIENT_HEADER_CONNECTIONS, -1);
        break;
    case WAIT_IDLE:
        list_remove(&s->w->idle_waits, s);
        break;
    }
    s->wait = WAIT_NONE;
}

void defence_header_wait(struct session *s)
{
    struct worker *w = s->w;
    if (s->wait == WAIT_HEADER)
        return;
    defence_wait_end(s);
    s->wait = WAIT_HEADER;
    list_append(&w->header_waits, s);
    uint32_t n = atomic_fetch_add_explicit(&header_conns, 1, memory_order_relaxed) + 1;
    observe_gauge_add(GAUGE_CLIENT_HEADER_CONNECTIONS, 1);
    uint32_t cap = atomic_load_explicit(&header_cap, memory_order_relaxed);
    if (!cap || n <= cap)
        return;
    /* Over the cap: the oldest partial head of this worker goes (the
     * newcomer is the likeliest to be a normal client about to finish). If
     * it is the only one here, the other workers' newcomers evict theirs. */
    struct session *oldest = w->header_waits.head;
    if (oldest == s)
        return;
    defence_event(w, DEFENCE_MAX_HEADER_CONNECTIONS, n);
    session_close(oldest);
}

void defence_idle_wait(struct session *s)
{
    if (s->wait == WAIT_IDLE)
        return;
    defence_wait_end(s);
    s->wait = WAIT_IDLE;
    list_append(&s->w->idle_waits, s);
}

/* Idle connections looked at for one reclaim. */
#define RECLAIM_LOOK 8

bool defence_reclaim_idle(struct worker *w, uint32_t open)
{
    uint32_t mark = atomic_load_explicit(&reclaim_mark, memory_order_relaxed);
    if (!mark || open < mark)
        return false;
    /* The oldest idle connection whose next request is not already in the
     * kernel (closing that one would cut a request the client sent); a few
     * are looked at, under pressure only. */
    struct session *oldest = w->idle_waits.head;
    for (int i = 0; oldest && i < RECLAIM_LOOK; i++, oldest = oldest->wait_next) {
        if (session_input_pending(oldest))
            continue;
        defence_event(w, DEFENCE_RECLAIM_IDLE, open);
        session_close(oldest);
        return true;
    }
    return false;
}

/* ---- min_body_rate ---- */

uint64_t defence_body_deadline_ms(uint64_t start_ms, uint64_t bytes, uint32_t min_bytes,
                                  uint32_t per_ms)
{
    if (!min_bytes || !per_ms)
        return UINT64_MAX;
    /* Every min_bytes read buys per_ms more; the first per_ms is free (a
     * connection's slow start, a phone between cells). */
    uint64_t whole = bytes / min_bytes;
    if (whole > (UINT64_MAX / 4) / per_ms)
        return UINT64_MAX;
    uint64_t credit = whole * per_ms + (bytes % min_bytes) * per_ms / min_bytes;
    uint64_t deadline = start_ms + per_ms + credit;
    return deadline < start_ms ? UINT64_MAX : deadline;
}

static uint64_t body_deadline(const struct request *r)
{
    const struct config *cfg = session_cfg(r->s);
    return defence_body_deadline_ms(r->body_rate_start_ms, r->body_rate_bytes,
                                    cfg->min_body_rate_bytes, cfg->min_body_rate_per_ms);
}

uint64_t defence_body_timer_ms(const struct request *r, uint64_t now)
{
    uint64_t gap = session_cfg(r->s)->client_body_timeout_ms;
    uint64_t deadline = body_deadline(r);
    if (deadline <= now)
        return 0;
    return deadline - now < gap ? deadline - now : gap;
}

bool defence_body_too_slow(const struct request *r, uint64_t now)
{
    return r->state != REQ_TUNNEL && !r->req_body.done && body_deadline(r) <= now;
}

void defence_body_cut(struct request *r, uint64_t now)
{
    struct worker *w = r->s->w;
    struct defence_log *l = &w->defence_logs[DEFENCE_MIN_BODY_RATE];
    snprintf(l->example, sizeof(l->example), "%s: %llu bytes in %llu ms", r->s->ip,
             (unsigned long long)r->body_rate_bytes,
             (unsigned long long)(now - r->body_rate_start_ms));
    defence_event(w, DEFENCE_MIN_BODY_RATE, 0);
}
