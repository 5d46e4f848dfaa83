/* Attempts: one try of a request on one upstream server.
 *
 * An attempt picks a server not yet tried, takes a pooled connection or
 * opens one, and ends exactly once (attempt_end): as the response head
 * arriving, or as a failure with its cause and evidence. Whether a failed
 * attempt may be followed by another is one pure function. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <stdio.h>
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
    if (!f->untried_left)
        return RETRY_NO;
    /* Retries cannot amplify an outage: beyond the group's budget the
     * client gets the failure. */
    return f->budget_ok ? RETRY_NEXT : RETRY_NO_BUDGET;
}

/* A retry after a connection that never reached a server process adds no
 * load anywhere: it is the request's first real try. */
static bool retry_costs_budget(enum cause cause)
{
    return cause != CAUSE_CONNECTION_REFUSED && cause != CAUSE_DESTINATION_IP_UNROUTABLE &&
           cause != CAUSE_DNS_ERROR;
}

static bool retry_budget_ok(struct request *r, enum cause cause)
{
    return !retry_costs_budget(cause) || upstream_retry_allowed(r->group);
}

/* The verdict is a retry on another server: spend the budget on it, or say
 * why none is made. Returns true when the request is retried. */
static bool retry_spend(struct request *r, enum retry_verdict v, enum cause cause)
{
    if (v == RETRY_NO_BUDGET) {
        observe_retry_refused(r->at.server->stats);
        log_warn("no retry after the failed attempt on %s (upstream \"%s\"): the retry budget "
                 "(%d%% of requests over 10 s) is spent; cause=%s attempt=%d rid=%s",
                 r->at.server->cfg->addr.text, r->group->cfg->name, r->group->cfg->retry_budget_pct,
                 cause_get(cause)->proxy_status, r->attempts, r->rid);
        return false;
    }
    if (v == RETRY_NEXT && retry_costs_budget(cause))
        upstream_count_retry(r->group);
    return v != RETRY_NO;
}

/* Once sent, this request may not be sent again (a non-idempotent method,
 * or a body): a pooled connection gets a look before it carries it. */
static bool may_not_resend(const struct request *r)
{
    return !method_is_idempotent(r->method) || !r->req_body_start.done;
}

/* Passive health checks: the server's own failures (not the client's, not
 * the idle-close race of a pooled connection, which gets the free retry)
 * and the statuses in fail_status count toward ejecting it. */
static void report_to_passive_checks(struct request *r, enum cause cause)
{
    struct attempt *a = &r->at;
    int failure = cause_is_server_failure(cause) && !a->free_pending ? (int)cause : 0;
    int status = cause == CAUSE_NONE && a->t_header_ms ? r->status : 0;
    uint64_t eject_ms = upstream_report_attempt(a->server, failure, status);
    if (!eject_ms)
        return;
    char why[40];
    if (failure)
        snprintf(why, sizeof(why), "%s", cause_get(cause)->proxy_status);
    else
        snprintf(why, sizeof(why), "status %d", status);
    const struct config_upstream *ucfg = r->group->cfg;
    log_warn("upstream server %s (upstream \"%s\") ejected for %llu ms: %d failures within "
             "%u ms, the last %s; state=ejected cause=%s rid=%s",
             a->server->cfg->addr.text, ucfg->name, (unsigned long long)eject_ms, ucfg->max_fails,
             ucfg->fail_window_ms, why, why, r->rid);
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
    int64_t connect_ms = span_ms(a->t_connect_ms, a->t_connected_ms);
    /* only an attempt whose head arrived has a header time (one the client
     * abandoned ends with CAUSE_NONE too, and must not skew the histogram) */
    int64_t header_ms = span_ms(a->t_connect_ms, a->t_header_ms);
    if (r->attempts >= 1 && r->attempts <= OBSERVE_MAX_ATTEMPTS)
        r->evidence[r->attempts - 1] =
            (struct attempt_evidence){a->server->cfg->name, cause, err, connect_ms, a->reused};
    observe_attempt_end(a->server->stats, cause, err, connect_ms, header_ms, r->rid);
    report_to_passive_checks(r, cause);
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
    char fpm[200];
    if (!detail && cause == CAUSE_CONNECTION_REFUSED &&
        r->group->cfg->protocol == PROTOCOL_FASTCGI && r->at.server) {
        /* the most common 502 behind PHP: say who is not there */
        snprintf(fpm, sizeof(fpm), "%s: PHP-FPM (FastCGI) is not listening on %s",
                 err ? strerror(err) : "refused", r->at.server->cfg->addr.text);
        detail = fpm;
    }
    if (!detail)
        detail = err ? strerror(err) : "no error code";
    uint64_t now = loop_now_ms(session_loop(r->s));
    request_note_program(r);
    const char *program = r->program_evidence;
    log_error("%s %s (upstream \"%s\") failed: %s%s%s%s. %s Next step: %s; cause=%s attempt=%d "
              "elapsed_ms=%llu client=%s rid=%s",
              what, r->at.server ? r->at.server->cfg->addr.text : "-", r->group->cfg->name, detail,
              program[0] ? " (" : "", program, program[0] ? ")" : "", ci->sentence, ci->fix,
              ci->proxy_status, r->attempts,
              (unsigned long long)(r->at.t_connect_ms ? now - r->at.t_connect_ms : 0), r->client_ip,
              r->rid);
}

static bool untried_left(const struct request *r)
{
    return upstream_untried_left(r->group, r->tried);
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
    bool reused = a->reused;
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
        .budget_ok = retry_budget_ok(r, cause),
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
    if (!retry_spend(r, v, cause)) {
        request_fail(r, cause, err);
        return;
    }
    observe_retry(a->server->stats, cause);
    request_rewind(r);
    attempt_start(r);
}

static bool server_bit(const struct upstream_server *srv, uint64_t mask)
{
    return srv->index < 64 && (mask & (1ull << srv->index));
}

static void queue_timeout(struct timer *t);
static bool queue_wake(struct upstream_waiter *w);

/* Every server the request may use has max_conns exchanges in flight: wait
 * in the group's queue (bounded by max_pending, for at most queue_timeout),
 * or be told at once to come back later. */
static void request_queue(struct request *r, bool again)
{
    struct attempt *a = &r->at;
    const struct config_upstream *ucfg = r->group->cfg;
    if (upstream_wait(r->group, &r->waiter, again) < 0) {
        observe_queue_event(r->group->servers[0].stats, QUEUE_REJECTED);
        log_warn("upstream \"%s\": every server has max_conns=%d %s and "
                 "max_pending=%d wait already; answered 503 "
                 "cause=connection_limit_reached client=%s rid=%s",
                 ucfg->name, ucfg->max_conns,
                 upstream_counts_connections(r->group) ? "connections open (PHP-FPM children)"
                                                       : "requests in flight",
                 ucfg->max_pending, r->client_ip, r->rid);
        request_fail(r, CAUSE_CONNECTION_LIMIT_REACHED, 0);
        return;
    }
    /* The wait is ours, not the client's: its body timer (armed while a
     * failed attempt waited for body bytes) must not answer 408 while we
     * read nothing; upstream_send arms it again when it waits for the client. */
    loop_timer_cancel(session_loop(r->s), &r->s->timer);
    if (!again) {
        observe_queue_event(r->group->servers[0].stats, QUEUE_QUEUED);
        a->timer.cb = queue_timeout;
        loop_timer_set(session_loop(r->s), &a->timer, ucfg->queue_timeout_ms);
    }
    r->waiter.wake = queue_wake;
    r->state = REQ_QUEUED;
}

static void queue_timeout(struct timer *t)
{
    struct attempt *a = container_of(t, struct attempt, timer);
    struct request *r = container_of(a, struct request, at);
    struct session *s = r->s;
    if (r->state != REQ_QUEUED)
        return;
    upstream_unwait(r->group, &r->waiter);
    r->state = REQ_FORWARD;
    observe_queue_event(r->group->servers[0].stats, QUEUE_TIMEOUT);
    log_warn("upstream \"%s\": no connection slot (max_conns=%d) within queue_timeout=%ums; "
             "answered 503 cause=connection_limit_reached client=%s rid=%s",
             r->group->cfg->name, r->group->cfg->max_conns, r->group->cfg->queue_timeout_ms,
             r->client_ip, r->rid);
    request_fail(r, CAUSE_CONNECTION_LIMIT_REACHED, 0);
    session_drive(s);
}

/* A slot may be free: try again (the waiter was taken out of the queue). */
static bool queue_wake(struct upstream_waiter *w)
{
    struct request *r = container_of(w, struct request, waiter);
    struct session *s = r->s;
    r->state = REQ_FORWARD;
    r->requeue_front = true;
    attempt_start(r);
    r->requeue_front = false;
    bool still_waiting = r->state == REQ_QUEUED;
    session_drive(s);
    return !still_waiting;
}

void attempt_start(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    uint64_t full = 0; /* servers found at max_conns: passed over, not tried */
    if (r->attempts == 0 && !r->requeue_front)
        upstream_count_request(r->group); /* the retry budget is a share of these */
    for (;;) {
        struct upstream_server *srv = upstream_pick(r->group, r->hash, r->tried | full);
        if (srv && server_bit(srv, full)) {
            srv = NULL; /* every candidate left is full */
        } else if (srv && server_bit(srv, r->tried) && !a->free_pending) {
            /* A server already tried is taken again only for the free
             * retry of a stale pooled connection. */
            srv = NULL;
        }
        if (!srv) {
            if (full) {
                request_queue(r, r->requeue_front);
                return;
            }
            if (r->attempts == 0) {
                request_note_program(r);
                log_error("no server of upstream \"%s\" is up: all %zu servers are "
                          "down%s%s, answered 503 without a connect attempt; "
                          "cause=destination_unavailable client=%s rid=%s",
                          r->group->cfg->name, r->group->num_servers,
                          r->program_evidence[0] ? "; " : "", r->program_evidence, r->client_ip,
                          r->rid);
                request_fail(r, CAUSE_DESTINATION_UNAVAILABLE, 0);
            } else
                request_fail(r, a->last_cause, a->last_err);
            return;
        }
        enum cause c;
        int err;
        const char *what = "connect() to";
        struct upstream_conn *uc = NULL;
        int rc = 0;
        if (srv->cfg->addr.len == 0) {
            /* the name did not resolve at load */
            c = CAUSE_DNS_ERROR;
            err = 0;
            what = "DNS lookup for";
            rc = -1;
        } else {
            /* The free retry follows a pooled connection the server had
             * closed: the next pooled one may be as stale. A new one. */
            rc = upstream_connect(srv, &uc,
                                  (a->free_pending ? UPSTREAM_FRESH : 0) |
                                      (may_not_resend(r) ? UPSTREAM_VERIFY : 0));
            if (rc == -EBUSY) {
                if (srv->index >= 64) {
                    request_queue(r, r->requeue_front);
                    return;
                }
                full |= 1ull << srv->index;
                continue;
            }
            c = rc < 0 ? cause_from_connect_errno(-rc) : CAUSE_NONE;
            err = rc < 0 ? -rc : 0;
        }
        a->free_pending = false;
        a->server = srv;
        if (srv->index < 64)
            r->tried |= 1ull << srv->index;
        r->attempts++;
        a->sent_any = a->got_any = a->waiting = a->write_dead = a->reused = false;
        a->write_err = a->read_err = 0;
        a->t_connect_ms = loop_now_ms(session_loop(s));
        a->t_connected_ms = a->t_header_ms = 0;
        observe_attempt_start(srv->stats);
        a->open = true;
        if (rc == 0) {
            observe_pool_acquire(uc->reused);
            a->uc = uc;
            a->reused = uc->reused;
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
        /* failed at once: nothing was sent */
        struct retry_facts f = {
            .cause = c,
            .attempts = r->attempts,
            .free_retries = r->free_retries,
            .free_retry_used = true,
            .retries = r->group->cfg->retries,
            .untried_left = untried_left(r),
            .budget_ok = retry_budget_ok(r, c),
        };
        attempt_log_failure(r, what, c, err, NULL);
        if (!retry_spend(r, attempt_retry_verdict(&f), c)) {
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
    } else if (r->state == REQ_RELAY && r->resp_drain) {
        request_drain_timeout(r);
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
