/* Counters: requests by route, status class and cause; upstream attempts,
 * failures and header time per server and group; connection gauges; pool
 * reuse. And their Prometheus text.
 *
 * The request path only does relaxed atomic adds on counters found once
 * (servers: by the proxy when it builds a worker's state; routes: by a
 * lock-free lookup in a table that only grows). No mutex per request: the
 * server lock is taken on a failed attempt only, to keep its last error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limit/limit.h"
#include "observe/observe_internal.h"
#include "upstream/upstream.h"

#define RELAXED memory_order_relaxed

/* ---- servers and groups: a registry that only grows ---- */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct server_stats *) servers_head;
static _Atomic(struct group_stats *) groups_head;
static size_t num_servers;

/* Servers come from configs; each distinct group/server name pair costs one
 * entry for the life of the process. The bound stops a reload loop that
 * generates names from growing memory and /metrics without limit. */
#define MAX_SERVERS 4096
static struct server_stats overflow_server = {
    .group = "-", .server = "-", .lock = PTHREAD_MUTEX_INITIALIZER};

struct server_stats *observe_servers(void)
{
    return atomic_load_explicit(&servers_head, memory_order_acquire);
}

struct group_stats *observe_groups(void)
{
    return atomic_load_explicit(&groups_head, memory_order_acquire);
}

static struct group_stats *find_group(const char *name)
{
    for (struct group_stats *g = observe_groups(); g; g = OBS_NEXT(g))
        if (strcmp(g->name, name) == 0)
            return g;
    return NULL;
}

struct server_stats *observe_find_server(const char *group, const char *server)
{
    for (struct server_stats *s = observe_servers(); s; s = OBS_NEXT(s))
        if (strcmp(s->group, group) == 0 && strcmp(s->server, server) == 0)
            return s;
    return NULL;
}

struct server_stats *observe_server(const char *group, const char *server)
{
    struct server_stats *st;

    if (!group || !server)
        return &overflow_server;
    if ((st = observe_find_server(group, server)))
        return st;
    pthread_mutex_lock(&registry_lock);
    if ((st = observe_find_server(group, server)))
        goto out;
    struct group_stats *g = find_group(group);
    if (!g) {
        g = calloc(1, sizeof(*g));
        if (!g || !(g->name = strdup(group))) {
            free(g);
            st = &overflow_server;
            goto out;
        }
        g->next = atomic_load(&groups_head);
        atomic_store_explicit(&groups_head, g, memory_order_release);
    }
    if (num_servers >= MAX_SERVERS || !(st = calloc(1, sizeof(*st)))) {
        st = &overflow_server;
        goto out;
    }
    st->group = g->name;
    st->server = strdup(server);
    if (!st->server) {
        free(st);
        st = &overflow_server;
        goto out;
    }
    st->gs = g;
    pthread_mutex_init(&st->lock, NULL);
    /* Appended at the tail so /metrics lists servers in config order. */
    struct server_stats *tail = atomic_load(&servers_head);
    if (!tail) {
        atomic_store_explicit(&servers_head, st, memory_order_release);
    } else {
        while (tail->next)
            tail = tail->next; /* writers hold registry_lock */
        __atomic_store_n(&tail->next, st, __ATOMIC_RELEASE);
    }
    num_servers++;
out:
    pthread_mutex_unlock(&registry_lock);
    return st;
}

const int64_t observe_hist_bounds_ms[OBSERVE_HIST_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000};

void observe_attempt_start(struct server_stats *st)
{
    if (!st)
        return;
    atomic_fetch_add_explicit(&st->in_flight, 1, RELAXED);
    atomic_fetch_add_explicit(&st->attempts, 1, RELAXED);
}

void observe_attempt_end(struct server_stats *st, enum cause cause, int err, int64_t connect_ms,
                         int64_t header_ms, const char *rid)
{
    if (!st)
        return;
    atomic_fetch_sub_explicit(&st->in_flight, 1, RELAXED);
    if ((unsigned)cause >= CAUSE__COUNT)
        cause = CAUSE_PROXY_INTERNAL_ERROR;
    if (header_ms >= 0 && st->gs) {
        int i = 0;
        while (i < OBSERVE_HIST_BUCKETS && header_ms > observe_hist_bounds_ms[i])
            i++;
        atomic_fetch_add_explicit(&st->gs->hist[i], 1, RELAXED);
        atomic_fetch_add_explicit(&st->gs->hist_sum_ms, (uint64_t)header_ms, RELAXED);
        atomic_fetch_add_explicit(&st->gs->hist_count, 1, RELAXED);
    }
    if (cause == CAUSE_NONE) {
        atomic_store_explicit(&st->consecutive_failures, 0, RELAXED);
        atomic_store_explicit(&st->last_ok_ms, observe_wall_ms(), RELAXED);
        return;
    }
    atomic_fetch_add_explicit(&st->failures[cause], 1, RELAXED);
    atomic_fetch_add_explicit(&st->consecutive_failures, 1, RELAXED);
    pthread_mutex_lock(&st->lock);
    st->last.set = true;
    st->last.time_ms = observe_wall_ms();
    st->last.cause = cause;
    st->last.err = err;
    snprintf(st->last.rid, sizeof(st->last.rid), "%s", rid ? rid : "-");
    st->last.connect_ms = connect_ms;
    st->last.header_ms = header_ms;
    pthread_mutex_unlock(&st->lock);
}

void observe_retry(struct server_stats *st, enum cause cause)
{
    if (!st || !st->gs)
        return;
    if ((unsigned)cause >= CAUSE__COUNT)
        cause = CAUSE_PROXY_INTERNAL_ERROR;
    atomic_fetch_add_explicit(&st->gs->retries[cause], 1, RELAXED);
}

void observe_queue_event(struct server_stats *st, enum observe_queue_event e)
{
    if (!st || !st->gs || (unsigned)e >= QUEUE__COUNT)
        return;
    atomic_fetch_add_explicit(&st->gs->queue[e], 1, RELAXED);
}

void observe_retry_refused(struct server_stats *st)
{
    if (st && st->gs)
        atomic_fetch_add_explicit(&st->gs->retries_refused, 1, RELAXED);
}

static _Atomic uint64_t client_refused;

void observe_client_refused(void)
{
    atomic_fetch_add_explicit(&client_refused, 1, RELAXED);
}

uint64_t observe_client_refused_total(void)
{
    return atomic_load_explicit(&client_refused, RELAXED);
}

/* ---- slow-client defences ---- */

static _Atomic uint64_t defence_closed[DEFENCE__COUNT];
static const char *const defence_names[DEFENCE__COUNT] = {
    [DEFENCE_MIN_BODY_RATE] = "min_body_rate",
    [DEFENCE_MAX_HEADER_CONNECTIONS] = "max_header_connections",
    [DEFENCE_RECLAIM_IDLE] = "reclaim_idle_at",
};

void observe_client_defence(enum observe_defence d)
{
    if ((unsigned)d < DEFENCE__COUNT)
        atomic_fetch_add_explicit(&defence_closed[d], 1, RELAXED);
}

uint64_t observe_client_defence_total(enum observe_defence d)
{
    return (unsigned)d < DEFENCE__COUNT ? atomic_load_explicit(&defence_closed[d], RELAXED) : 0;
}

const char *observe_defence_name(enum observe_defence d)
{
    return (unsigned)d < DEFENCE__COUNT ? defence_names[d] : "?";
}

static void write_client_defences(struct obuf *b)
{
    obuf_puts(b, "# HELP bulwark_client_defence_total Client connections closed (or requests "
                 "refused) by a slow-client defence, named by its config key.\n"
                 "# TYPE bulwark_client_defence_total counter\n");
    for (int d = 0; d < DEFENCE__COUNT; d++)
        obuf_printf(b, "bulwark_client_defence_total{defence=\"%s\"} %llu\n", defence_names[d],
                    (unsigned long long)observe_client_defence_total((enum observe_defence)d));
    obuf_printf(b,
                "# HELP bulwark_client_header_connections Client connections waiting for (more "
                "of) a request header: what max_header_connections caps.\n"
                "# TYPE bulwark_client_header_connections gauge\n"
                "bulwark_client_header_connections %lld\n",
                (long long)observe_gauge_get(GAUGE_CLIENT_HEADER_CONNECTIONS));
}

/* ---- gauges and pool ---- */

static _Atomic int64_t gauges[GAUGE__COUNT];
static _Atomic uint64_t pool_reused, pool_new;

void observe_gauge_add(enum observe_gauge g, int delta)
{
    if ((unsigned)g < GAUGE__COUNT)
        atomic_fetch_add_explicit(&gauges[g], delta, RELAXED);
}

int64_t observe_gauge_get(enum observe_gauge g)
{
    return (unsigned)g < GAUGE__COUNT ? atomic_load_explicit(&gauges[g], RELAXED) : 0;
}

void observe_pool_acquire(bool reused)
{
    atomic_fetch_add_explicit(reused ? &pool_reused : &pool_new, 1, RELAXED);
}

void observe_pool_counts(uint64_t *reused, uint64_t *fresh)
{
    *reused = atomic_load_explicit(&pool_reused, RELAXED);
    *fresh = atomic_load_explicit(&pool_new, RELAXED);
}

/* ---- requests by route, class and cause ---- */

/* Status classes 1xx..5xx, and "other" for a status outside 100-599. */
#define NUM_CLASSES 6
static const char *const class_names[NUM_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

struct route_stats {
    const char *label;
    _Atomic uint64_t count[NUM_CLASSES][CAUSE__COUNT];
};

/* Routes come from the config; the table bounds their label cardinality
 * (and memory: ~1 KiB each) whatever the reload history. Beyond it they
 * are counted under route="other". Open addressing, slots published with
 * a release store and never removed, so lookups take no lock. */
#define MAX_ROUTES 1024
#define ROUTE_SLOTS 2048
static _Atomic(struct route_stats *) route_slots[ROUTE_SLOTS];
static size_t num_routes;
static pthread_mutex_t route_lock = PTHREAD_MUTEX_INITIALIZER;
static struct route_stats other_route = {.label = "other"};
/* Insertion order, for stable /metrics output. */
static struct route_stats *route_order[MAX_ROUTES];
static _Atomic size_t route_order_len;

static uint64_t label_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static struct route_stats *route_find(const char *label, bool create)
{
    uint64_t h = label_hash(label);
    for (size_t probe = 0; probe < ROUTE_SLOTS; probe++) {
        size_t i = (size_t)(h + probe) & (ROUTE_SLOTS - 1);
        struct route_stats *r = atomic_load_explicit(&route_slots[i], memory_order_acquire);
        if (!r) {
            if (!create)
                return NULL;
            pthread_mutex_lock(&route_lock);
            /* Another thread may have filled this slot meanwhile. */
            r = atomic_load_explicit(&route_slots[i], memory_order_acquire);
            if (!r) {
                if (num_routes >= MAX_ROUTES || !(r = calloc(1, sizeof(*r))) ||
                    !(r->label = strdup(label))) {
                    free(r);
                    pthread_mutex_unlock(&route_lock);
                    return &other_route;
                }
                route_order[num_routes++] = r;
                atomic_store_explicit(&route_slots[i], r, memory_order_release);
                atomic_store_explicit(&route_order_len, num_routes, memory_order_release);
            }
            pthread_mutex_unlock(&route_lock);
        }
        if (strcmp(r->label, label) == 0)
            return r;
    }
    return &other_route;
}

static _Atomic uint64_t requests_total;

void observe_count_request(const char *route, int status, enum cause cause)
{
    struct route_stats *r = route_find(route && *route ? route : "-", true);
    int cls = status >= 100 && status <= 599 ? status / 100 - 1 : NUM_CLASSES - 1;
    if ((unsigned)cause >= CAUSE__COUNT)
        cause = CAUSE_PROXY_INTERNAL_ERROR;
    atomic_fetch_add_explicit(&r->count[cls][cause], 1, RELAXED);
    atomic_fetch_add_explicit(&requests_total, 1, RELAXED);
}

uint64_t observe_requests_total(void)
{
    return atomic_load_explicit(&requests_total, RELAXED);
}

/* ---- Prometheus text ---- */

/* Exposition format 0.0.4: label values escape backslash, quote, newline. */
static void label(struct obuf *b, const char *name, const char *value, bool first)
{
    obuf_printf(b, "%s%s=\"", first ? "" : ",", name);
    for (; *value; value++) {
        if (*value == '\\')
            obuf_puts(b, "\\\\");
        else if (*value == '"')
            obuf_puts(b, "\\\"");
        else if (*value == '\n')
            obuf_puts(b, "\\n");
        else
            obuf_put(b, value, 1);
    }
    obuf_put(b, "\"", 1);
}

/* Several causes share one RFC 9209 type (413, 408 and 400 are all
 * http_request_error): a label value must name one series, so they are
 * summed under it. first_of_type[c] is the first cause with c's type. */
static bool cause_is_first_of_type(enum cause c)
{
    for (int i = 0; i < (int)c; i++)
        if (strcmp(cause_get((enum cause)i)->proxy_status, cause_get(c)->proxy_status) == 0)
            return false;
    return true;
}

static const char *cause_label(enum cause c)
{
    return c == CAUSE_NONE ? "none" : cause_get(c)->proxy_status;
}

static void write_route(struct obuf *b, const struct route_stats *r)
{
    for (int cls = 0; cls < NUM_CLASSES; cls++) {
        for (int c = 0; c < CAUSE__COUNT; c++) {
            if (!cause_is_first_of_type((enum cause)c))
                continue;
            uint64_t n = 0;
            for (int d = c; d < CAUSE__COUNT; d++)
                if (d == c || strcmp(cause_get((enum cause)d)->proxy_status,
                                     cause_get((enum cause)c)->proxy_status) == 0)
                    n += atomic_load_explicit(&r->count[cls][d], RELAXED);
            if (!n)
                continue;
            obuf_puts(b, "bulwark_requests_total{");
            label(b, "route", r->label, true);
            label(b, "class", class_names[cls], false);
            label(b, "cause", cause_label((enum cause)c), false);
            obuf_printf(b, "} %llu\n", (unsigned long long)n);
        }
    }
}

/* counts[] summed over the causes that share c's RFC 9209 type. */
static uint64_t sum_of_type(const _Atomic uint64_t *counts, enum cause c)
{
    uint64_t n = 0;
    for (int d = c; d < CAUSE__COUNT; d++)
        if (d == (int)c ||
            strcmp(cause_get((enum cause)d)->proxy_status, cause_get(c)->proxy_status) == 0)
            n += atomic_load_explicit(&counts[d], RELAXED);
    return n;
}

static void write_retries(struct obuf *b)
{
    obuf_puts(b, "# HELP bulwark_upstream_retries_total Attempts that failed and were followed "
                 "by another attempt, by the cause of the failure.\n"
                 "# TYPE bulwark_upstream_retries_total counter\n");
    for (struct group_stats *g = observe_groups(); g; g = OBS_NEXT(g)) {
        for (int c = 1; c < CAUSE__COUNT; c++) {
            if (!cause_is_first_of_type((enum cause)c))
                continue;
            uint64_t n = sum_of_type(g->retries, (enum cause)c);
            if (!n)
                continue;
            obuf_puts(b, "bulwark_upstream_retries_total{");
            label(b, "group", g->name, true);
            label(b, "cause", cause_label((enum cause)c), false);
            obuf_printf(b, "} %llu\n", (unsigned long long)n);
        }
    }
}

static void write_queue(struct obuf *b)
{
    static const char *const outcome[QUEUE__COUNT] = {"queued", "rejected", "timeout"};
    obuf_puts(b, "# HELP bulwark_upstream_queue_total Requests that found every server at "
                 "max_conns: queued, rejected (max_pending reached) or timed out "
                 "(queue_timeout).\n"
                 "# TYPE bulwark_upstream_queue_total counter\n");
    for (struct group_stats *g = observe_groups(); g; g = OBS_NEXT(g)) {
        for (int e = 0; e < QUEUE__COUNT; e++) {
            uint64_t n = atomic_load_explicit(&g->queue[e], RELAXED);
            if (!n)
                continue;
            obuf_puts(b, "bulwark_upstream_queue_total{");
            label(b, "group", g->name, true);
            label(b, "outcome", outcome[e], false);
            obuf_printf(b, "} %llu\n", (unsigned long long)n);
        }
    }
}

static void write_ejection(const struct upstream_shared *sh, void *arg)
{
    struct obuf *b = arg;
    obuf_puts(b, "bulwark_upstream_ejections_total{");
    label(b, "group", sh->group, true);
    label(b, "server", sh->server, false);
    obuf_printf(b, "} %llu\n", (unsigned long long)atomic_load_explicit(&sh->ejections, RELAXED));
}

/* Passive health and overload: ejections per server, retries the budget
 * refused per group, client connections refused by max_connections. */
static void write_protection(struct obuf *b)
{
    obuf_puts(b, "# HELP bulwark_upstream_ejections_total Times a server was ejected by the "
                 "passive health checks (max_fails failures within fail_window).\n"
                 "# TYPE bulwark_upstream_ejections_total counter\n");
    upstream_shared_foreach(write_ejection, b);
    obuf_puts(b, "# HELP bulwark_upstream_retries_refused_total Retries not made because the "
                 "group's retry budget was spent (the client got the failure).\n"
                 "# TYPE bulwark_upstream_retries_refused_total counter\n");
    for (struct group_stats *g = observe_groups(); g; g = OBS_NEXT(g)) {
        obuf_puts(b, "bulwark_upstream_retries_refused_total{");
        label(b, "group", g->name, true);
        obuf_printf(b, "} %llu\n",
                    (unsigned long long)atomic_load_explicit(&g->retries_refused, RELAXED));
    }
    obuf_printf(b,
                "# HELP bulwark_client_connections_refused_total Client connections answered "
                "503 and closed at accept because max_connections were open.\n"
                "# TYPE bulwark_client_connections_refused_total counter\n"
                "bulwark_client_connections_refused_total %llu\n",
                (unsigned long long)observe_client_refused_total());
}

/* Client identity and access (src/limit): requests and connections refused
 * by our own rules, by reason, and what conn_limit counts right now (all
 * back to 0 once every client is gone). */
static void write_limits(struct obuf *b)
{
    struct limit_stats ls;
    limit_stats_get(&ls);
    obuf_puts(b, "# HELP bulwark_denied_total Requests and connections refused by allow, deny, "
                 "conn_limit or the PROXY protocol rules, by reason.\n"
                 "# TYPE bulwark_denied_total counter\n");
    for (int i = 0; i < DENIED__COUNT; i++)
        obuf_printf(b, "bulwark_denied_total{reason=\"%s\"} %llu\n",
                    limit_denial_name((enum limit_denial)i), (unsigned long long)ls.denied[i]);
    obuf_printf(b,
                "# HELP bulwark_conn_limit_keys Clients (address, scope) in the conn_limit table.\n"
                "# TYPE bulwark_conn_limit_keys gauge\n"
                "bulwark_conn_limit_keys %llu\n"
                "# HELP bulwark_conn_limit_connections Connections conn_limit counts now.\n"
                "# TYPE bulwark_conn_limit_connections gauge\n"
                "bulwark_conn_limit_connections %llu\n"
                "# HELP bulwark_conn_limit_requests Requests in progress conn_limit counts now.\n"
                "# TYPE bulwark_conn_limit_requests gauge\n"
                "bulwark_conn_limit_requests %llu\n",
                (unsigned long long)ls.keys, (unsigned long long)ls.connections,
                (unsigned long long)ls.requests);
}

/* 1 while the balancers may pick the server, 0 while it is marked down
 * (health checks): the servers of the running config, backups included. */
static void write_server_up(struct obuf *b)
{
    struct config *cfg = observe_current_config();
    obuf_puts(b, "# HELP bulwark_upstream_server_up Whether the server is up (1) or marked down "
                 "by its health checks (0).\n"
                 "# TYPE bulwark_upstream_server_up gauge\n");
    for (size_t i = 0; cfg && i < cfg->num_upstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        for (size_t j = 0; j < up->num_servers; j++) {
            const struct upstream_shared *sh = upstream_shared_get(up->name, up->servers[j].name);
            bool is_up = !sh || atomic_load_explicit(&sh->up, RELAXED);
            obuf_puts(b, "bulwark_upstream_server_up{");
            label(b, "group", up->name, true);
            label(b, "server", up->servers[j].name, false);
            obuf_printf(b, "} %d\n", is_up ? 1 : 0);
        }
    }
    config_unref(cfg);
}

void observe_metrics_write(struct obuf *b)
{
    obuf_puts(b, "# HELP bulwark_requests_total Requests answered, by route, status class and "
                 "cause (none: the upstream's response was relayed).\n"
                 "# TYPE bulwark_requests_total counter\n");
    size_t nr = atomic_load_explicit(&route_order_len, memory_order_acquire);
    for (size_t i = 0; i < nr; i++)
        write_route(b, route_order[i]);
    write_route(b, &other_route);

    obuf_puts(b, "# HELP bulwark_upstream_attempts_total Attempts to get a response from an "
                 "upstream server.\n# TYPE bulwark_upstream_attempts_total counter\n");
    for (struct server_stats *s = observe_servers(); s; s = OBS_NEXT(s)) {
        obuf_puts(b, "bulwark_upstream_attempts_total{");
        label(b, "group", s->group, true);
        label(b, "server", s->server, false);
        obuf_printf(b, "} %llu\n", (unsigned long long)atomic_load_explicit(&s->attempts, RELAXED));
    }
    obuf_puts(b, "# HELP bulwark_upstream_failures_total Failed upstream attempts, by cause.\n"
                 "# TYPE bulwark_upstream_failures_total counter\n");
    for (struct server_stats *s = observe_servers(); s; s = OBS_NEXT(s)) {
        for (int c = 1; c < CAUSE__COUNT; c++) {
            if (!cause_is_first_of_type((enum cause)c))
                continue;
            uint64_t n = 0;
            for (int d = c; d < CAUSE__COUNT; d++)
                if (d == c || strcmp(cause_get((enum cause)d)->proxy_status,
                                     cause_get((enum cause)c)->proxy_status) == 0)
                    n += atomic_load_explicit(&s->failures[d], RELAXED);
            if (!n)
                continue;
            obuf_puts(b, "bulwark_upstream_failures_total{");
            label(b, "group", s->group, true);
            label(b, "server", s->server, false);
            label(b, "cause", cause_label((enum cause)c), false);
            obuf_printf(b, "} %llu\n", (unsigned long long)n);
        }
    }
    obuf_puts(b, "# HELP bulwark_upstream_in_flight Upstream attempts in progress.\n"
                 "# TYPE bulwark_upstream_in_flight gauge\n");
    for (struct server_stats *s = observe_servers(); s; s = OBS_NEXT(s)) {
        obuf_puts(b, "bulwark_upstream_in_flight{");
        label(b, "group", s->group, true);
        label(b, "server", s->server, false);
        obuf_printf(b, "} %lld\n", (long long)atomic_load_explicit(&s->in_flight, RELAXED));
    }

    write_retries(b);
    write_queue(b);
    write_protection(b);
    write_limits(b);
    observe_limits_metrics(b);
    write_client_defences(b);
    write_server_up(b);

    obuf_puts(b, "# HELP bulwark_upstream_header_seconds Time from the start of an attempt to "
                 "the upstream's response header.\n"
                 "# TYPE bulwark_upstream_header_seconds histogram\n");
    for (struct group_stats *g = observe_groups(); g; g = OBS_NEXT(g)) {
        uint64_t cum = 0;
        for (int i = 0; i <= OBSERVE_HIST_BUCKETS; i++) {
            char le[32];
            cum += atomic_load_explicit(&g->hist[i], RELAXED);
            if (i < OBSERVE_HIST_BUCKETS)
                snprintf(le, sizeof(le), "%g", (double)observe_hist_bounds_ms[i] / 1000.0);
            else
                snprintf(le, sizeof(le), "+Inf");
            obuf_puts(b, "bulwark_upstream_header_seconds_bucket{");
            label(b, "group", g->name, true);
            label(b, "le", le, false);
            obuf_printf(b, "} %llu\n", (unsigned long long)cum);
        }
        uint64_t sum = atomic_load_explicit(&g->hist_sum_ms, RELAXED);
        obuf_puts(b, "bulwark_upstream_header_seconds_sum{");
        label(b, "group", g->name, true);
        obuf_printf(b, "} %llu.%03llu\n", (unsigned long long)(sum / 1000),
                    (unsigned long long)(sum % 1000));
        obuf_puts(b, "bulwark_upstream_header_seconds_count{");
        label(b, "group", g->name, true);
        obuf_printf(b, "} %llu\n",
                    (unsigned long long)atomic_load_explicit(&g->hist_count, RELAXED));
    }

    obuf_printf(b,
                "# HELP bulwark_client_connections Open client connections.\n"
                "# TYPE bulwark_client_connections gauge\n"
                "bulwark_client_connections %lld\n"
                "# HELP bulwark_upstream_connections Open upstream connections (in use and "
                "idle).\n"
                "# TYPE bulwark_upstream_connections gauge\n"
                "bulwark_upstream_connections %lld\n",
                (long long)observe_gauge_get(GAUGE_CLIENT_CONNECTIONS),
                (long long)observe_gauge_get(GAUGE_UPSTREAM_CONNECTIONS));
    uint64_t reused, fresh;
    observe_pool_counts(&reused, &fresh);
    obuf_printf(b,
                "# HELP bulwark_upstream_pool_acquired_total Upstream connections used for an "
                "attempt: reused from the keep-alive pool or newly opened.\n"
                "# TYPE bulwark_upstream_pool_acquired_total counter\n"
                "bulwark_upstream_pool_acquired_total{kind=\"reused\"} %llu\n"
                "bulwark_upstream_pool_acquired_total{kind=\"new\"} %llu\n"
                "# HELP bulwark_upstream_pool_reuse_ratio Reused / all acquired upstream "
                "connections since start.\n"
                "# TYPE bulwark_upstream_pool_reuse_ratio gauge\n"
                "bulwark_upstream_pool_reuse_ratio %.4f\n",
                (unsigned long long)reused, (unsigned long long)fresh,
                reused + fresh ? (double)reused / (double)(reused + fresh) : 0.0);
    obuf_printf(b,
                "# HELP bulwark_gateway_errors_total Gateway errors kept for GET /errors.\n"
                "# TYPE bulwark_gateway_errors_total counter\n"
                "bulwark_gateway_errors_total %llu\n",
                (unsigned long long)observe_ring_total());
}

char *observe_metrics_text(size_t *len)
{
    struct obuf b = {0};
    observe_metrics_write(&b);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.p;
}
