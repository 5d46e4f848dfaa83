/* A request meets its route's rate limit: passed, held to the rate
 * (nodelay false), or refused with 429 (a refusal counted for the heavy
 * hitters; request_start counts every request there).
 * The decision itself is src/limit's (limit_decide); this file only finds
 * the key and turns the verdict into what the client sees. */
#include "proxy/proxy_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "limit/ratelimit.h"

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

bool request_rate_limit(struct request *r, const struct http_request *hr)
{
    struct session *s = r->s;
    const struct config_rate_limit *rl = r->route->rate_limit;
    if (!rl)
        return false;
    struct limit_table *t = limit_shared_table(session_cfg(s)->rate_limit_table_size);
    if (!t)
        return false; /* no memory for the table: nothing is limited (logged at start) */
    size_t len;
    const char *key = rl_key_bytes(r, hr, rl, &len);
    struct rate_verdict v;
    limit_decide(t, rl, limit_key(rl, key, len), monotonic_ns(), &v);
    if (rl->headers)
        r->limit_headers_len =
            (uint16_t)limit_rate_headers(r->limit_headers, sizeof(r->limit_headers), rl, &v);
    if (v.allowed) {
        if (v.delay_ns) {
            r->rate_delay_ms = (uint32_t)((v.delay_ns + 999999) / 1000000);
            limit_count_route(r->route->label, true);
        }
        return false;
    }
    limit_count_route(r->route->label, false);
    const char *ip = rl_client_ip(r);
    limit_hitters_note(ip, strlen(ip), true);
    r->retry_after_s = (uint32_t)((v.retry_after_ns + 999999999ull) / 1000000000ull);
    snprintf(r->limit_details, sizeof(r->limit_details),
             "rate limit %u/%s burst %u exceeded (key %s)", rl->rate, rl->period_s == 1 ? "s" : "m",
             rl->burst, key_kind(rl));
    /* The body is not read: the connection closes after the answer (as
     * for a 404). Without one it stays open: a client slowed down by 429s
     * should not also pay a new connection for each. */
    if (!r->req_body.done)
        s->closing = true;
    r->req_body.done = true;
    r->cause = CAUSE_HTTP_REQUEST_DENIED;
    respond_local(r, 429, CAUSE_HTTP_REQUEST_DENIED);
    return true;
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
