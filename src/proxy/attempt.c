/* Attempts: one try of a request on one upstream server.
 *
 * An attempt picks a server not yet tried, takes a pooled connection or
 * opens one, and ends exactly once (attempt_end): as the response head
 * arriving, or as a failure with its cause and evidence. Whether a failed
 * attempt may be followed by another is one pure function. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <string.h>

static bool method_is_idempotent(enum http_method m)
{
    /* RFC 9110 9.2.2 */
    return m == HTTP_METHOD_GET || m == HTTP_METHOD_HEAD || m == HTTP_METHOD_PUT ||
           m == HTTP_METHOD_DELETE || m == HTTP_METHOD_OPTIONS || m == HTTP_METHOD_TRACE;
}

enum retry_verdict attempt_retry_verdict(const struct retry_facts *f)
{
    /* Sending again is safe when nothing reached the upstream, or when the
     * same bytes can be sent again (the body is still held) and the method
     * is idempotent or the upstream went away before it had the whole
     * request (it cannot have acted on it). */
    bool may_resend = !f->request_sent || (f->replayable && (f->idempotent || f->partial));
    if (!may_resend)
        return RETRY_NO;
    /* A pooled connection that dies under a request was most likely closed
     * by the server while idle (the race with our reuse): one such retry
     * per request is free, so retries: 0 still survives it. */
    if (f->reused_conn && f->cause == CAUSE_CONNECTION_TERMINATED && !f->free_retry_used)
        return RETRY_FREE;
    if (f->attempts - f->free_retries > f->retries)
        return RETRY_NO;
    /* Never the same server twice: a lone refusing server costs one
     * connect, not retries + 1 of them. */
    return f->untried_left ? RETRY_NEXT : RETRY_NO;
}

static int64_t span_ms(uint64_t from, uint64_t to)
{
    return from && to && to >= from ? (int64_t)(to - from) : -1;
}

void attempt_end(struct request *r, enum cause cause, int err)
{
    struct attempt *a = &r->at;
    if (!a->open)
        return;
    a->open = false;
    if (cause != CAUSE_NONE) {
        a->last_cause = cause;
        a->last_err = err;
    }
    uint64_t now = loop_now_ms(session_loop(r->s));
    int64_t connect_ms = span_ms(a->t_connect_ms, a->t_connected_ms);
    int64_t header_ms = cause == CAUSE_NONE ? span_ms(a->t_connect_ms, now) : -1;
    if (r->attempts >= 1 && r->attempts <= OBSERVE_MAX_ATTEMPTS)
        r->evidence[r->attempts - 1] = (struct attempt_evidence){
            a->server->cfg->name, cause, err, connect_ms, a->uc && a->uc->reused};
    observe_attempt_end(a->server->stats, cause, err, connect_ms, header_ms, r->rid);
}

void attempt_release(struct request *r, bool reusable)
{
    struct attempt *a = &r->at;
    if (!a->uc)
        return;
    loop_timer_cancel(session_loop(r->s), &a->timer);
    a->uc->owner = NULL;
    upstream_release(a->uc, reusable);
    a->uc = NULL;
}

void attempt_log_failure(struct request *r, const char *what, enum cause cause, int err,
                         const char *detail)
{
    attempt_end(r, cause, err);
    const struct cause_info *ci = cause_get(cause);
    if (!detail)
        detail = err ? strerror(err) : "no error code";
    uint64_t now = loop_now_ms(session_loop(r->s));
    log_error("%s %s (upstream \"%s\") failed: %s. %s Next step: %s; cause=%s attempt=%d "
              "elapsed_ms=%llu client=%s rid=%s",
              what, r->at.server ? r->at.server->cfg->addr.text : "-", r->group->cfg->name, detail,
              ci->sentence, ci->fix, ci->proxy_status, r->attempts,
              (unsigned long long)(r->at.t_connect_ms ? now - r->at.t_connect_ms : 0), r->s->ip,
              r->rid);
}

static bool untried_left(const struct request *r)
{
    const struct upstream_group *g = r->group;
    for (size_t i = 0; i < g->num_servers; i++)
        if (i >= 64 || !(r->tried & (1ull << i)))
            return true;
    return false;
}

static void attempt_event(struct io *io, uint32_t events);
static void attempt_timeout(struct timer *t);

/* Rewind the request for another attempt: the head is still at the start
 * of up_out, the body bytes still in the client buffer. */
static void request_rewind(struct request *r)
{
    r->up_out.gen.start = 0;
    r->up_out.gen.end = r->up_hdr_len;
    outq_drop_body(&r->up_out);
    r->req_body = r->req_body_start;
}

void attempt_failed(struct request *r, enum cause cause, int err, const char *what,
                    const char *detail)
{
    struct attempt *a = &r->at;
    bool reused = a->uc && a->uc->reused;
    bool sent = a->sent_any;
    /* The upstream went away before it had the whole request. */
    bool partial = !outq_empty(&r->up_out) || !r->req_body.done;
    attempt_release(r, false);
    struct retry_facts f = {
        .cause = cause,
        .request_sent = sent,
        .partial = partial,
        .replayable = !r->body_consumed,
        .idempotent = method_is_idempotent(r->method),
        .reused_conn = reused,
        .free_retry_used = r->free_retries > 0,
        .attempts = r->attempts,
        .free_retries = r->free_retries,
        .retries = r->group->cfg->retries,
        .untried_left = untried_left(r),
    };
    enum retry_verdict v = attempt_retry_verdict(&f);
    if (v == RETRY_FREE) {
        r->free_retries++;
        a->free_pending = true;
        attempt_end(r, cause, err);
        log_info("pooled connection to %s (upstream \"%s\") was closed by the upstream; "
                 "sending the request again on a new connection rid=%s",
                 a->server->cfg->addr.text, r->group->cfg->name, r->rid);
    } else {
        attempt_log_failure(r, what, cause, err, detail);
    }
    if (v == RETRY_NO) {
        request_fail(r, cause, err);
        return;
    }
    observe_retry(a->server->stats, cause);
    request_rewind(r);
    attempt_start(r);
}

void attempt_start(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    for (;;) {
        struct upstream_server *srv = upstream_pick(r->group, r->hash, r->tried);
        /* A server already tried is taken again only for the free retry
         * of a stale pooled connection. */
        if (srv && srv->index < 64 && (r->tried & (1ull << srv->index)) && !a->free_pending)
            srv = NULL;
        a->free_pending = false;
        if (!srv) {
            if (r->attempts == 0) {
                log_error("no server of upstream \"%s\" is up: all %zu servers are "
                          "down, answered 503 without a connect attempt; "
                          "cause=destination_unavailable client=%s rid=%s",
                          r->group->cfg->name, r->group->num_servers, s->ip, r->rid);
                request_fail(r, CAUSE_DESTINATION_UNAVAILABLE, 0);
            } else
                request_fail(r, a->last_cause, a->last_err);
            return;
        }
        a->server = srv;
        if (srv->index < 64)
            r->tried |= 1ull << srv->index;
        r->attempts++;
        a->sent_any = a->got_any = a->waiting = a->write_dead = false;
        a->t_connect_ms = loop_now_ms(session_loop(s));
        a->t_connected_ms = a->t_header_ms = 0;
        observe_attempt_start(srv->stats);
        a->open = true;
        enum cause c;
        int err;
        const char *what = "connect() to";
        if (srv->cfg->addr.len == 0) {
            /* the name did not resolve at load */
            c = CAUSE_DNS_ERROR;
            err = 0;
            what = "DNS lookup for";
        } else {
            struct upstream_conn *uc;
            int rc = upstream_connect(srv, &uc);
            if (rc == 0) {
                observe_pool_acquire(uc->reused);
                a->uc = uc;
                uc->owner = r;
                uc->io.on_event = attempt_event;
                transport_init(&a->t, uc->io.fd);
                a->t.writable = uc->connected;
                a->timer.cb = attempt_timeout;
                if (uc->connected)
                    a->t_connected_ms = a->t_connect_ms;
                loop_timer_set(session_loop(s), &a->timer,
                               uc->connected ? r->group->cfg->send_timeout_ms
                                             : r->group->cfg->connect_timeout_ms);
                return;
            }
            c = cause_from_connect_errno(-rc);
            err = -rc;
        }
        /* failed at once: nothing was sent */
        struct retry_facts f = {
            .cause = c,
            .attempts = r->attempts,
            .free_retries = r->free_retries,
            .free_retry_used = true,
            .retries = r->group->cfg->retries,
            .untried_left = untried_left(r),
        };
        attempt_log_failure(r, what, c, err, NULL);
        if (attempt_retry_verdict(&f) == RETRY_NO) {
            request_fail(r, c, err);
            return;
        }
        observe_retry(srv->stats, c);
    }
}

static void attempt_timeout(struct timer *t)
{
    struct attempt *a = container_of(t, struct attempt, timer);
    struct request *r = container_of(a, struct request, at);
    struct session *s = r->s;
    if (!a->uc)
        return;
    if (!a->uc->connected) {
        attempt_failed(r, CAUSE_CONNECTION_TIMEOUT, ETIMEDOUT, "connect() to", NULL);
    } else if (r->state == REQ_TUNNEL) {
        request_end(r, END_ABORT);
    } else if (r->state == REQ_FORWARD && !outq_empty(&r->up_out)) {
        attempt_log_failure(r, "sending the request to", CAUSE_CONNECTION_WRITE_TIMEOUT, ETIMEDOUT,
                            NULL);
        request_fail(r, CAUSE_CONNECTION_WRITE_TIMEOUT, ETIMEDOUT);
    } else if (r->state == REQ_FORWARD) {
        attempt_log_failure(r, "waiting for the response header from", CAUSE_HTTP_RESPONSE_TIMEOUT,
                            ETIMEDOUT, NULL);
        request_fail(r, CAUSE_HTTP_RESPONSE_TIMEOUT, ETIMEDOUT);
    } else {
        request_fail(r, CAUSE_CONNECTION_READ_TIMEOUT, ETIMEDOUT);
    }
    if (!s->closed)
        session_drive(s);
}

static void attempt_event(struct io *io, uint32_t events)
{
    struct upstream_conn *uc = (struct upstream_conn *)io;
    struct request *r = uc->owner;
    if (!r)
        return;
    transport_on_event(&r->at.t, events);
    session_drive(r->s);
}
