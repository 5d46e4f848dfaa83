/* A request meets its route's rate limit: passed, held to the rate
 * (nodelay false), or refused with 429 (a refusal counted for the heavy
 * hitters; request_start counts every request there).
 * The decision itself is src/limit's (limit_decide); this file only finds
 * the key and turns the verdict into what the client sees. */
#include "proxy/proxy_internal.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "limit/ratelimit.h"

/* Room for "<length>:<policy>|" of a store key. */
#define STORE_KEY_HEAD_MAX 160

/* A shared store's answer is awaited this long at most; then the request
 * is decided locally and the store is retried once a second. */
#define STORE_TIMEOUT_MS 100

/* The client's address as text. The one place that says which address a
 * limit keys on: the socket peer now; the client named by a trusted proxy
 * once requests carry it. */
static const char *rl_client_ip(const struct request *r)
{
    return r->client_ip;
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The bytes rl keys on. A header key the request lacks (or sends more than
 * once) falls back to the client's address: leaving the header out must not
 * escape the limit. */
static const char *rl_key_bytes(const struct request *r, const struct http_request *hr,
                                const struct config_rate_limit *rl, size_t *len)
{
    if (rl->key == RATE_KEY_ROUTE) {
        *len = strlen(r->route->label);
        return r->route->label;
    }
    if (rl->key == RATE_KEY_HEADER) {
        const struct http_header *h =
            http_find_header(hr->headers, hr->num_headers, rl->key_header);
        /* Sent twice, the header is no key: a fresh first value before the
         * one the application reads (many take the last) would escape the
         * limit with every request. Such a request is keyed on its client. */
        if (h && !http_find_header(h + 1, (size_t)(hr->headers + hr->num_headers - (h + 1)),
                                   rl->key_header)) {
            *len = h->value_len;
            return h->value;
        }
    }
    const char *ip = rl_client_ip(r);
    *len = strlen(ip);
    return ip;
}

static const char *key_kind(const struct config_rate_limit *rl)
{
    return rl->key == RATE_KEY_ROUTE    ? "route"
           : rl->key == RATE_KEY_HEADER ? "header"
                                        : "client_ip";
}

/* Refuse r with 429 for rl's verdict v. */
static void refuse(struct request *r, const struct config_rate_limit *rl,
                   const struct rate_verdict *v)
{
    struct session *s = r->s;
    const char *ip = rl_client_ip(r);
    limit_count_route(r->route->label, false);
    limit_hitters_note(ip, strlen(ip), true);
    r->retry_after_s = (uint32_t)((v->retry_after_ns + 999999999ull) / 1000000000ull);
    snprintf(r->limit_details, sizeof(r->limit_details),
             "rate limit %u/%s burst %u exceeded (key %s%s)", rl->rate,
             rl->period_s == 1 ? "s" : "m", rl->burst, key_kind(rl),
             rl->store_addr.len ? (r->store ? ", shared" : ", local fallback") : "");
    /* The body is not read: the connection closes after the answer (as
     * for a 404). Without one it stays open: a client slowed down by 429s
     * should not also pay a new connection for each. */
    if (!r->req_body.done)
        s->closing = true;
    r->req_body.done = true;
    r->continue_pending = false;
    r->cause = CAUSE_HTTP_REQUEST_DENIED;
    respond_local(r, 429, CAUSE_HTTP_REQUEST_DENIED);
}

/* The verdict's headers, and what follows: true when r was refused. */
static bool apply(struct request *r, const struct config_rate_limit *rl,
                  const struct rate_verdict *v)
{
    if (rl->headers)
        r->limit_headers_len =
            (uint16_t)limit_rate_headers(r->limit_headers, sizeof(r->limit_headers), rl, v);
    if (v->allowed) {
        if (v->delay_ns) {
            r->rate_delay_ms = (uint32_t)((v->delay_ns + 999999) / 1000000);
            limit_count_route(r->route->label, true);
        }
        return false;
    }
    refuse(r, rl, v);
    return true;
}

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Does the worker's current config still send checks to addr? */
static bool store_in_config(const struct worker *w, const struct config_addr *addr)
{
    const struct config *cfg = w->set->cfg;
    for (size_t i = 0; i < cfg->num_routes; i++) {
        const struct config_rate_limit *rl = cfg->routes[i].rate_limit;
        if (rl && rl->store_addr.len && same_addr(&rl->store_addr, addr))
            return true;
    }
    return false;
}

/* The worker's store for rl's Redis, made at first use; NULL when out of
 * memory or too many distinct stores (then limits stay local). A store
 * that reloads left behind (no route uses its address, no check waits on
 * it) gives its place up: else the ninth store URL of a process's life
 * would never be asked. */
static struct store *worker_store(struct worker *w, const struct config_rate_limit *rl)
{
    for (size_t i = 0; i < w->num_stores; i++)
        if (same_addr(&w->stores[i].addr, &rl->store_addr))
            return w->stores[i].st;
    size_t at = w->num_stores;
    for (size_t i = 0; at == WORKER_MAX_STORES && i < w->num_stores; i++)
        if (!store_busy(w->stores[i].st) && !store_in_config(w, &w->stores[i].addr))
            at = i;
    if (at == WORKER_MAX_STORES)
        return NULL;
    struct store *st = store_new(w->loop, &rl->store_addr, STORE_TIMEOUT_MS);
    if (!st)
        return NULL;
    if (at < w->num_stores)
        store_free(w->stores[at].st);
    else
        w->num_stores++;
    w->stores[at] = (struct worker_store){.addr = rl->store_addr, .st = st};
    return st;
}

/* Local GCRA: the table every worker of this process shares. false: no
 * table (out of memory at start, logged): nothing is limited. */
static bool decide_local(struct request *r, const struct config_rate_limit *rl, const char *key,
                         size_t len, struct rate_verdict *v)
{
    struct limit_table *t = limit_shared_table(session_cfg(r->s)->rate_limit_table_size);
    if (!t)
        return false;
    limit_decide(t, rl, limit_key(rl, key, len), monotonic_ns(), v);
    return true;
}

/* The shared store answered (or gave up: decide locally). r is
 * REQ_DELAYED with its forwarded head built, or still in request_start
 * (never: store callbacks run from the loop, after request_start). */
static void store_answered(struct store_waiter *wt, enum store_verdict sv, uint64_t wait_us)
{
    struct request *r = container_of(wt, struct request, store_wait);
    struct session *s = r->s;
    const struct config_rate_limit *rl = r->store_rl;
    assert(r->store_pending && s->req == r);
    r->store_pending = false;
    struct rate_verdict v;
    const uint64_t T = rl->interval_ns, tau = (uint64_t)rl->burst * T;
    /* GCRA bounds what Redis can mean: an allowed key runs at most tau
     * ahead, a refused one conforms again within tau + T (more only for a
     * key a looser policy of the same name left behind). A larger wait is
     * a broken or hostile store: it must not hold a request for days nor
     * overflow Retry-After. */
    const uint64_t wait_cap_us = (sv == STORE_ALLOW ? tau : tau + T) / 1000;
    if (wait_us > wait_cap_us)
        wait_us = wait_cap_us;
    if (sv == STORE_UNAVAILABLE) {
        r->store = NULL; /* says "local fallback" in a refusal's details */
        if (!decide_local(r, rl, r->store_key, r->store_key_len, &v))
            v = (struct rate_verdict){.allowed = true};
    } else if (sv == STORE_ALLOW) {
        uint64_t ahead = wait_us * 1000 + T; /* how far ahead of the rate, this one included */
        v = (struct rate_verdict){
            .allowed = true,
            .delay_ns = rl->nodelay ? 0 : wait_us * 1000,
            .remaining = ahead > tau + T ? 0 : (tau + T - ahead) / T,
            .reset_ns = ahead,
        };
    } else {
        v = (struct rate_verdict){
            .allowed = false,
            .retry_after_ns = wait_us * 1000,
            .reset_ns = wait_us * 1000 + tau,
        };
    }
    if (apply(r, rl, &v)) {
        session_drive(s);
        return;
    }
    if (r->rate_delay_ms) {
        request_delay(r);
        return;
    }
    r->state = REQ_FORWARD;
    attempt_start(r);
    session_drive(s);
}

/* "<policy length>:<policy>|<key>" into r->store_key: the length makes
 * it unambiguous when a policy name (a route's label) holds a "|". One too
 * long keeps its start and a 64-bit hash of the whole, so distinct long
 * keys stay distinct. */
static void store_key(struct request *r, const struct config_rate_limit *rl, const char *key,
                      size_t len)
{
    const char *name = rl->name ? rl->name : "";
    const size_t cap = sizeof(r->store_key);
    char head[STORE_KEY_HEAD_MAX];
    int hn = snprintf(head, sizeof(head), "%zu:%s|", strlen(name), name);
    size_t hlen = hn < 0 ? 0 : (size_t)hn < sizeof(head) ? (size_t)hn : sizeof(head) - 1;
    if (hlen + len <= cap && (size_t)hn < sizeof(head)) {
        memcpy(r->store_key, head, hlen);
        memcpy(r->store_key + hlen, key, len);
        r->store_key_len = (uint16_t)(hlen + len);
        return;
    }
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h = (h ^ '|') * 1099511628211ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    /* the start of head and key, then 17 bytes of "#" and hex */
    size_t keep = cap - 17, n = 0;
    size_t take = hlen < keep ? hlen : keep;
    memcpy(r->store_key, head, take);
    n = take;
    take = len < keep - n ? len : keep - n;
    memcpy(r->store_key + n, key, take);
    n += take;
    char tail[18];
    snprintf(tail, sizeof(tail), "#%016llx", (unsigned long long)h);
    memcpy(r->store_key + n, tail, 17);
    r->store_key_len = (uint16_t)(n + 17);
}

bool request_rate_limit(struct request *r, const struct http_request *hr)
{
    const struct config_rate_limit *rl = r->route->rate_limit;
    if (!rl)
        return false;
    size_t len;
    const char *key = rl_key_bytes(r, hr, rl, &len);
    if (rl->store_addr.len) {
        /* One budget for every instance: Redis decides, with its clock. The
         * key names the policy, so two policies never share a budget. The
         * request waits for the answer (one round trip, pipelined with the
         * others of this loop turn) once its head is built. */
        store_key(r, rl, key, len);
        struct store *st = worker_store(r->s->w, rl);
        r->store_wait.cb = store_answered;
        if (st && store_gcra(st, r->store_key, r->store_key_len, rl->interval_ns / 1000,
                             (uint64_t)rl->burst * rl->interval_ns / 1000, &r->store_wait) == 0) {
            r->store = st;
            r->store_rl = rl;
            r->store_pending = true;
            return false;
        }
        /* Redis down (retried once a second) or too busy: local, at once,
         * on the same key as a fallback after a timeout. */
        key = r->store_key;
        len = r->store_key_len;
    }
    struct rate_verdict v;
    if (!decide_local(r, rl, key, len, &v))
        return false;
    return apply(r, rl, &v);
}

void request_rate_limit_forget(struct request *r)
{
    if (r->store_pending) {
        store_cancel(r->store, &r->store_wait);
        r->store_pending = false;
    }
}

static void delay_done(struct timer *tm)
{
    struct attempt *a = container_of(tm, struct attempt, timer);
    struct request *r = container_of(a, struct request, at);
    struct session *s = r->s;
    if (r->state != REQ_DELAYED)
        return;
    r->state = REQ_FORWARD;
    attempt_start(r);
    session_drive(s);
}

void request_delay(struct request *r)
{
    /* The wait is ours: no client timer runs (none is armed between the
     * head and the first attempt), and the attempt timer is free until
     * attempt_start, which arms its own; request_end cancels it. */
    r->state = REQ_DELAYED;
    r->at.timer.cb = delay_done;
    loop_timer_set(session_loop(r->s), &r->at.timer, r->rate_delay_ms);
}
