/* A request from its parsed head to its one ending.
 *
 * request_start routes the request, applies the route's limits, builds the
 * forwarded head and starts the first attempt. request_end is the only way
 * a request ends: it ends the attempt (the server's in-flight slot), gives
 * the connection back (to the pool only when the exchange ended exactly),
 * releases buffers and timers, logs, and then the session keeps the
 * connection, lingers or closes. */
#include "proxy/proxy_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limit/ratelimit.h"

/* Requests kept for reuse per worker. */
#define REQUEST_FREE_RESERVE 64

static void request_limits_release(struct request *r);

struct request *request_new(struct session *s)
{
    struct worker *w = s->w;
    struct request *r = w->free_requests;
    if (r) {
        w->free_requests = r->next_free;
        w->num_free_requests--;
    } else {
        r = malloc(sizeof(*r));
        if (!r)
            return NULL;
    }
    memset(r, 0, offsetof(struct request, logtext));
    memset(&r->rid, 0, sizeof(*r) - offsetof(struct request, rid));
    _Static_assert(offsetof(struct request, accept) ==
                           offsetof(struct request, logtext) + sizeof(r->logtext) &&
                       offsetof(struct request, rid) ==
                           offsetof(struct request, accept) + sizeof(r->accept),
                   "only the text copies are left uncleared");
    r->s = s;
    r->ex = &exchange_http1;
    r->state = REQ_FORWARD;
    r->t_start_ms = loop_now_ms(session_loop(s));
    timer_init(&r->at.timer, NULL);
    /* Until request_start reads X-Forwarded-For, the client is the
     * connection's address (a request refused before it has a head). */
    if (s->peer.sa.sa_family == AF_INET6)
        memcpy(&r->client_addr, &s->peer.sin6, sizeof(s->peer.sin6));
    else
        memcpy(&r->client_addr, &s->peer.sin, sizeof(s->peer.sin));
    memcpy(r->client_ip, s->ip, sizeof(r->client_ip));
    return r;
}

void request_free(struct worker *w, struct request *r)
{
    buf_release(&r->up_out.gen);
    buf_release(&r->req_stage);
    buf_release(&r->up_in);
    buf_release(&r->cl_out.gen);
    if (w->num_free_requests < REQUEST_FREE_RESERVE) {
        r->next_free = w->free_requests;
        w->free_requests = r;
        w->num_free_requests++;
    } else {
        free(r);
    }
}

/* 16 hex digits: worker id, a per-start salt, the worker's request count.
 * Unique per instance run without any shared counter. */
void request_new_id(struct request *r, struct worker *w)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = ((uint64_t)(w->id & 0xff) << 56) | ((uint64_t)(w->rid_salt & 0xffffff) << 32) |
                 (++w->request_seq & 0xffffffffull);
    for (int i = 15; i >= 0; i--, v >>= 4)
        r->rid[i] = hex[v & 15];
    r->rid[16] = '\0';
}

/* Hand the request's evidence to observe (access log, metrics, /errors). */
static void request_log(struct request *r)
{
    struct session *s = r->s;
    const char *t = r->logtext;
    const struct attempt *a = &r->at;
    uint64_t now = loop_now_ms(session_loop(s));
    struct request_record rec = {
        .rid = r->rid,
        .client_ip = r->client_ip,
        .method = t,
        .method_len = r->method_len,
        .target = t + r->method_len,
        .target_len = r->target_len,
        .referer = t + r->method_len + r->target_len,
        .referer_len = r->referer_len,
        .user_agent = t + r->method_len + r->target_len + r->referer_len,
        .user_agent_len = r->agent_len,
        .host = t + r->method_len + r->target_len + r->referer_len + r->agent_len,
        .host_len = r->host_len,
        .minor_version = r->minor_version,
        .status = r->status,
        .upstream_status = r->upstream_status,
        .cause = r->cause,
        .err = r->err,
        .aborted = r->aborted,
        .route = r->route ? r->route->label : "-",
        .upstream_group = r->group ? r->group->cfg->name : NULL,
        .upstream_server = a->server ? a->server->cfg->name : NULL,
        .num_attempts = r->attempts,
        .body_bytes_sent = r->resp_body.bytes,
        .request_body_bytes = r->req_body.bytes,
        .connect_ms = span_ms(a->t_connect_ms, a->t_connected_ms),
        .header_ms = span_ms(a->t_connect_ms, a->t_header_ms),
        .upstream_ms = a->t_connect_ms ? span_ms(a->t_connect_ms, now) : -1,
        .total_ms = span_ms(r->t_start_ms, now),
        .program = r->program_evidence[0] ? r->program_evidence : NULL,
    };
    int n = r->attempts < OBSERVE_MAX_ATTEMPTS ? r->attempts : OBSERVE_MAX_ATTEMPTS;
    memcpy(rec.attempts, r->evidence, (size_t)n * sizeof(rec.attempts[0]));
    observe_request(&rec);
    worker_defer_flush(s->w);
}

void request_end(struct request *r, enum request_ending how)
{
    struct session *s = r->s;
    assert(s->req == r);
    request_limits_release(r);
    /* The attempt still open here produced no response we relay whole:
     * its slot is given back, counted without a cause of its own. */
    attempt_end(r, CAUSE_NONE, 0);
    if (r->waiter.queued)
        upstream_unwait(r->group, &r->waiter);
    loop_timer_cancel(session_loop(s), &r->at.timer);
    request_rate_limit_forget(r);
    bool reusable = how == END_COMPLETE && r->at.uc && r->ex->reusable(r);
    if (reusable && (r->ka_timeout_s || r->ka_max))
        upstream_conn_keepalive_hint(r->at.uc, r->ka_timeout_s, r->ka_max);
    attempt_release(r, reusable);
    if (how != END_COMPLETE) {
        if (!r->status)
            r->status = 499;
        if (request_head_sent(r) && r->state != REQ_TUNNEL)
            r->aborted = true;
    }
    request_log(r);
    enum session_next next = NEXT_CLOSE;
    if (how == END_COMPLETE && r->state != REQ_TUNNEL) {
        if (r->client_keep_alive && !s->closing && !request_body_pending(r) && !s->t.eof)
            next = NEXT_KEEP;
        else if (!s->t.eof &&
                 (r->state == REQ_LOCAL || request_body_pending(r) || session_input_pending(s)))
            /* We close while the client may still be sending (a refused
             * request, an unread body, pipelined requests): linger, or its
             * unread bytes make our close a reset that can destroy the
             * response before the client reads it. */
            next = NEXT_LINGER;
    } else if (how == END_CUT) {
        /* A body without length or chunking (HTTP/1.0 client) ends with the
         * close: only a reset tells the client it was cut. Otherwise its
         * framing shows the cut, and lingering lets earlier pipelined
         * responses still in the kernel reach it. */
        bool framed = r->state != REQ_RELAY || r->resp_body.coding == BODY_RECHUNK ||
                      r->resp_body.framing == HTTP_FRAMING_LENGTH;
        next = !framed ? NEXT_RESET : s->t.eof ? NEXT_CLOSE : NEXT_LINGER;
    }
    s->req = NULL;
    request_free(s->w, r);
    session_request_done(s, next);
}

void request_client_gone(struct request *r, int status)
{
    if (!r->status || !request_head_sent(r))
        r->status = status;
    request_end(r, END_ABORT);
}

/* Copy what the log and the error page need from the parsed head (its
 * strings point into a buffer that is reused while the body streams), in
 * one pass over the fields. Returns the client's X-Request-Id field, if any. */
static const struct http_header *request_log_text(struct request *r, const struct http_request *hr)
{
    size_t cap = sizeof(r->logtext), n = 0;
    const struct http_header *ref = NULL, *ua = NULL, *acc = NULL, *rid = NULL;
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (!ref && http_name_is(h, "Referer"))
            ref = h;
        else if (!ua && http_name_is(h, "User-Agent"))
            ua = h;
        else if (!acc && http_name_is(h, "Accept"))
            acc = h;
        else if (!rid && http_name_is(h, "X-Request-Id"))
            rid = h;
    }
    struct {
        const char *p;
        size_t len;
        uint16_t *out;
        size_t max;
    } parts[] = {
        {hr->method, hr->method_len, &r->method_len, 32},
        {hr->target, hr->target_len, &r->target_len, 1024},
        {ref ? ref->value : NULL, ref ? ref->value_len : 0, &r->referer_len, 256},
        {ua ? ua->value : NULL, ua ? ua->value_len : 0, &r->agent_len, 200},
        {hr->host, hr->host ? hr->host_len : 0, &r->host_len, 128},
    };
    r->accept_len = 0;
    if (acc) {
        r->accept_len =
            (uint16_t)(acc->value_len < sizeof(r->accept) ? acc->value_len : sizeof(r->accept));
        memcpy(r->accept, acc->value, r->accept_len);
    }
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        size_t len = parts[i].len < parts[i].max ? parts[i].len : parts[i].max;
        if (len > cap - n)
            len = cap - n;
        if (len)
            memcpy(r->logtext + n, parts[i].p, len);
        *parts[i].out = (uint16_t)len;
        n += len;
    }
    return rid;
}

/* The path a route matches: the target's path, without the scheme and
 * authority of an absolute-form target (RFC 9112 3.2.2) and without the
 * query (a "?" ends the path, even one inside the authority's place). */
static void target_path(const struct http_request *hr, const char **path, size_t *path_len)
{
    const char *t = hr->target;
    size_t n = hr->target_len;
    if (n && t[0] != '/') {
        const char *p = memmem(t, n, "://", 3);
        if (p) {
            const char *end = t + n, *a = p + 3;
            while (a < end && *a != '/' && *a != '?' && *a != '#')
                a++;
            n = (size_t)(end - a);
            t = a;
            if (n == 0 || *t != '/') {
                *path = "/";
                *path_len = 1;
                return;
            }
        }
    }
    const char *q = memchr(t, '?', n);
    *path = t;
    *path_len = q ? (size_t)(q - t) : n;
}

static uint64_t request_hash(const struct request *r, const struct http_request *hr)
{
    const struct config_upstream *u = r->group->cfg;
    if (u->hash_key == HASH_URI)
        return upstream_hash(hr->target, hr->target_len);
    if (u->hash_key == HASH_HEADER) {
        const struct http_header *h =
            http_find_header(hr->headers, hr->num_headers, u->hash_header);
        return h ? upstream_hash(h->value, h->value_len) : 0;
    }
    /* The client, as the logs name it (X-Forwarded-For from a trusted proxy). */
    if (r->client_addr.ss_family == AF_INET6)
        return upstream_hash(&((const struct sockaddr_in6 *)&r->client_addr)->sin6_addr, 16);
    return upstream_hash(&((const struct sockaddr_in *)&r->client_addr)->sin_addr, 4);
}

/* ---- client identity and access (src/limit; README, "Client identity and access") ---- */

/* The client of this request: X-Forwarded-For is read only when the
 * connection comes from trusted_proxies (limit_client_addr). */
static void request_identify(struct request *r, const struct http_request *hr)
{
    const struct config *cfg = session_cfg(r->s);
    struct sockaddr_storage conn = r->client_addr;
    if (limit_client_addr(&cfg->trusted_proxies, &conn, hr->headers, hr->num_headers,
                          &r->client_addr))
        limit_addr_text(&r->client_addr, r->client_ip, sizeof(r->client_ip));
}

/* Refuse the request by one of our own rules: 403 or 429, with the rule in
 * Proxy-Status details and in one log line. The connection stays open
 * unless a body would be left unread. */
static void request_deny(struct request *r, int status, enum limit_denial why)
{
    struct session *s = r->s;
    if (!r->req_body.done)
        s->closing = true; /* we will not read the body */
    r->req_body.done = true;
    limit_count_denied(why);
    limit_hitters_note(r->client_ip, strlen(r->client_ip), true);
    log_info("denied request from %s with %d: %s; client=%s reason=%s rid=%s", r->client_ip, status,
             r->deny_details, r->client_ip, limit_denial_name(why), r->rid);
    r->cause = CAUSE_HTTP_REQUEST_DENIED;
    respond_local(r, status, CAUSE_HTTP_REQUEST_DENIED);
}

/* allow/deny of one level (where: "top level" or the route's label).
 * Returns true after answering 403. */
static bool access_check(struct request *r, const struct cidr_list *allow,
                         const struct cidr_list *deny, const struct limit_addr *a,
                         const char *where)
{
    const struct cidr_entry *e = cidr_list_match(deny, a);
    if (e) {
        snprintf(r->deny_details, sizeof(r->deny_details), "client %s matches deny %s (%s)",
                 r->client_ip, e->text, where);
        request_deny(r, 403, DENIED_DENY);
        return true;
    }
    if (!cidr_list_empty(allow) && !cidr_list_match(allow, a)) {
        snprintf(r->deny_details, sizeof(r->deny_details), "client %s is not in allow (%s)",
                 r->client_ip, where);
        request_deny(r, 403, DENIED_ALLOW);
        return true;
    }
    return false;
}

/* Top level, then the route. Returns true after answering 403. */
static bool request_access_denied(struct request *r)
{
    const struct config *cfg = session_cfg(r->s);
    if (!limit_addr_from_sockaddr((const struct sockaddr *)&r->client_addr, &r->limit_key))
        return false;
    if (access_check(r, &cfg->allow, &cfg->deny, &r->limit_key, "top level"))
        return true;
    return r->route &&
           access_check(r, &r->route->allow, &r->route->deny, &r->limit_key, r->route->label);
}

/* One conn_limit.requests unit of the client at scope (bit: what
 * limit_held records). Returns true after answering 429 or 503. */
static bool conn_limit_take(struct request *r, uint32_t scope, uint32_t max, uint8_t bit,
                            const char *where)
{
    const struct config *cfg = session_cfg(r->s);
    enum limit_verdict v =
        limit_conn_acquire(&r->limit_key, scope, LIMIT_REQUESTS, max, cfg->conn_limit.max_keys);
    if (v == LIMIT_OK) {
        r->limit_held |= bit;
        return false;
    }
    if (v == LIMIT_OVER) {
        snprintf(r->deny_details, sizeof(r->deny_details),
                 "client %s has conn_limit.requests (%u) in progress (%s)", r->client_ip, max,
                 where);
        r->retry_after_s = 1;
        request_deny(r, 429, DENIED_CONN_LIMIT_REQUESTS);
    } else {
        snprintf(r->deny_details, sizeof(r->deny_details),
                 "the conn_limit table holds max_keys (%u) clients", cfg->conn_limit.max_keys);
        request_deny(r, 503, DENIED_TABLE_FULL);
    }
    return true;
}

/* conn_limit.requests, top level then the route: requests in progress per
 * client across all workers. Returns true after answering. */
static bool request_over_conn_limit(struct request *r)
{
    const struct config *cfg = session_cfg(r->s);
    if (cfg->conn_limit.requests && conn_limit_take(r, 0, cfg->conn_limit.requests, 1, "top level"))
        return true;
    return r->route->conn_limit_requests &&
           conn_limit_take(r, r->route->limit_scope, r->route->conn_limit_requests, 2,
                           r->route->label);
}

/* What conn_limit counted for this request goes back (request_end). */
static void request_limits_release(struct request *r)
{
    if (r->limit_held & 1)
        limit_conn_release(&r->limit_key, 0, LIMIT_REQUESTS);
    if (r->limit_held & 2)
        limit_conn_release(&r->limit_key, r->route->limit_scope, LIMIT_REQUESTS);
    r->limit_held = 0;
}

void request_start(struct session *s, struct request *r, const struct http_request *hr,
                   size_t hdr_len)
{
    const struct config *cfg = session_cfg(s);
    request_identify(r, hr);
    /* Every request counts for the heavy hitters, refused or not: a client
     * refused by deny or conn_limit must be named as much as one over its
     * rate (request_deny and the rate limit count the refusals). */
    limit_hitters_note(r->client_ip, strlen(r->client_ip), false);
    r->method = hr->method_id;
    r->minor_version = hr->minor_version;
    r->client_keep_alive = hr->keep_alive;
    r->upgrade = hr->upgrade;
    const struct http_header *rid = request_log_text(r, hr);
    if (rid && observe_request_id_valid(rid->value, rid->value_len)) {
        memcpy(r->rid, rid->value, rid->value_len);
        r->rid[rid->value_len] = '\0';
    }
    r->req_body.framing = hr->framing;
    r->req_body.left = hr->content_length;
    r->req_body.coding = BODY_RAW;
    if (hr->framing == HTTP_FRAMING_CHUNKED) {
        /* RFC 9112 7.1: the next hop gets framing we wrote (CRLF only, no
         * extensions, no trailer fields), never the client's as received. */
        r->req_body.coding = BODY_RECHUNK;
        r->req_body.stage = &r->req_stage;
    }
    r->req_body.done = hr->framing == HTTP_FRAMING_NONE ||
                       (hr->framing == HTTP_FRAMING_LENGTH && hr->content_length == 0);
    if (hr->framing == HTTP_FRAMING_CHUNKED)
        http_chunked_init(&r->req_body.chunked);

    const char *path;
    size_t path_len;
    target_path(hr, &path, &path_len);
    r->route = config_match_route(cfg, hr->host, hr->host ? hr->host_len : 0, path, path_len);
    buf_consume(&s->in, hdr_len);
    /* Our own rules, in this order: allow/deny, conn_limit, then rate_limit. */
    if (request_access_denied(r))
        return;
    if (!r->route) {
        if (!r->req_body.done)
            s->closing = true; /* we will not read the body */
        r->req_body.done = true;
        r->cause = CAUSE_DESTINATION_NOT_FOUND;
        respond_local(r, 404, CAUSE_DESTINATION_NOT_FOUND);
        return;
    }
    if (request_over_conn_limit(r))
        return;
    if (request_rate_limit(r, hr))
        return;
    uint64_t max_body = r->route->max_body_bytes;
    if (max_body && hr->framing == HTTP_FRAMING_LENGTH && hr->content_length > max_body) {
        r->req_body.done = true;
        request_refuse(r, 413, CAUSE_REQUEST_TOO_LARGE, "body larger than max_body_size");
        return;
    }
    r->group = &s->set->groups[r->route->upstream->index];
    if (r->group->cfg->protocol == PROTOCOL_FASTCGI)
        r->ex = &exchange_fastcgi;
    if (r->group->cfg->balance == BALANCE_HASH)
        r->hash = request_hash(r, hr);
    int rc = r->ex->build_request(r, hr, &r->up_out.gen);
    if (rc > 0)
        return; /* refused by the exchange itself */
    if (rc < 0) {
        r->req_body.done = true;
        request_refuse(r, rc == -ENOSPC ? 431 : 500,
                       rc == -ENOSPC ? CAUSE_HTTP_REQUEST_ERROR : CAUSE_PROXY_INTERNAL_ERROR,
                       rc == -ENOSPC ? "forwarded header section would not fit the buffer"
                                     : "out of memory");
        return;
    }
    r->up_hdr_len = (uint32_t)buf_len(&r->up_out.gen);
    if (r->req_body.done && buf_len(&s->in) == 0)
        buf_release(&s->in); /* nothing more to read for this request */
    r->req_body_start = r->req_body;
    /* client.min_body_rate counts from the head; body bytes that came with it count */
    r->body_rate_start_ms = r->t_start_ms;
    r->body_rate_bytes = buf_len(&s->in);
    /* RFC 9110 10.1.1: we answer the expectation ourselves once the request
     * is accepted, so the client starts sending the body. */
    if (hr->expect_continue && !r->req_body.done && hr->minor_version == 1)
        r->continue_pending = true;
    if (s->w->draining)
        s->closing = true;
    if (r->store_pending)
        r->state = REQ_DELAYED; /* a shared rate limit answers first (store_answered) */
    else if (r->rate_delay_ms)
        request_delay(r); /* rate_limit nodelay false: attempt_start when its turn comes */
    else
        attempt_start(r);
}
