/* One client connection and the requests it carries, from accept to log.
 *
 * The path of a request, in the order the functions below run it:
 *   client_event / upstream_event   readiness flags, then session_drive()
 *   session_drive                   does every step that can progress now
 *   read_request_header             read and parse (strict) the next request
 *   start_request                   route, limits, forwarded header
 *   connect_upstream                pick a server, pool or new connection
 *   drive_upstream                  request out (header, body), response in
 *   start_response                  response header for the client
 *   drive_client                    relay the body with backpressure
 *   finish_request                  pool, log, keep-alive, linger or close
 * Every failure goes through attempt_failed() (retry or not) and
 * fail_request(), which answers from a cause.
 *
 * Sockets are edge-triggered; the readable/writable flags remember readiness
 * until a read or write returns EAGAIN (or a short read shows the socket
 * drained).
 */
#include "proxy/proxy_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Requests kept for reuse per worker. */
#define REQUEST_FREE_RESERVE 64

/* How long a closing connection keeps reading (and dropping) what the client
 * still sends, so our last response is not destroyed by a reset. */
#define LINGER_MS 2000

static void session_drive(struct session *s);
static void session_linger(struct session *s);
static void upstream_event(struct io *io, uint32_t events);

/* ---------- small helpers ---------- */

static struct loop *session_loop(struct session *s)
{
    return s->w->loop;
}

static const struct config *session_cfg(struct session *s)
{
    return s->set->cfg;
}

static bool method_is_idempotent(enum http_method m)
{
    /* RFC 9110 9.2.2 */
    return m == HTTP_METHOD_GET || m == HTTP_METHOD_HEAD || m == HTTP_METHOD_PUT ||
           m == HTTP_METHOD_DELETE || m == HTTP_METHOD_OPTIONS || m == HTTP_METHOD_TRACE;
}

static void peer_text(const struct session *s, char *out, size_t len)
{
    if (s->peer.sa.sa_family == AF_INET6) {
        const struct in6_addr *a = &s->peer.sin6.sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)len);
    } else {
        inet_ntop(AF_INET, &s->peer.sin.sin_addr, out, (socklen_t)len);
    }
}

/* ---------- output queues ---------- */

/* Send what q holds. Returns 1 when q is empty, 0 when the socket is full,
 * or -errno. */
static int outq_flush(int fd, struct outq *q, bool *writable)
{
    while (!outq_empty(q)) {
        struct iovec iov[3];
        int n = 0;
        if (buf_len(&q->gen))
            iov[n++] = (struct iovec){buf_head(&q->gen), buf_len(&q->gen)};
        if (q->data_len)
            iov[n++] = (struct iovec){(void *)q->data, q->data_len};
        if (q->post_off < q->post_len)
            iov[n++] = (struct iovec){q->post + q->post_off, (size_t)(q->post_len - q->post_off)};
        if (n == 0) {
            /* only the consume of an empty chunk is left */
            buf_consume(q->src, q->src_consume);
            q->src_consume = 0;
            break;
        }
        if (!*writable)
            return 0;
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *writable = false;
                return 0;
            }
            if (errno == EINTR)
                continue;
            return -errno;
        }
        size_t left = (size_t)w;
        size_t g = buf_len(&q->gen);
        if (g) {
            size_t k = left < g ? left : g;
            buf_consume(&q->gen, k);
            left -= k;
        }
        if (q->data_len && left) {
            size_t k = left < q->data_len ? left : q->data_len;
            q->data += k;
            q->data_len -= k;
            left -= k;
        }
        if (left)
            q->post_off += (uint8_t)left;
        if (q->data_len == 0 && q->post_off == q->post_len && buf_len(&q->gen) == 0 &&
            q->src_consume) {
            buf_consume(q->src, q->src_consume);
            q->src_consume = 0;
        }
    }
    q->post_len = q->post_off = 0;
    return 1;
}

/* Queue the next piece of a body from src into q (which must be empty).
 * src_eof: the source has closed (ends an UNTIL_CLOSE body).
 * Returns 0, or -1 with *err on malformed chunked coding. */
static int body_prepare(struct body *b, struct buf *src, bool src_eof, struct outq *q,
                        enum http_error *err)
{
    size_t avail = buf_len(src);
    size_t data_len = 0, consume = 0;
    switch (b->framing) {
    case HTTP_FRAMING_NONE:
        b->done = true;
        break;
    case HTTP_FRAMING_LENGTH:
        data_len = avail < b->left ? avail : (size_t)b->left;
        consume = data_len;
        b->left -= data_len;
        b->done = b->left == 0;
        break;
    case HTTP_FRAMING_UNTIL_CLOSE:
        data_len = consume = avail;
        b->done = src_eof;
        break;
    case HTTP_FRAMING_CHUNKED: {
        if (!avail)
            break;
        size_t len = avail;
        ssize_t rc = http_chunked_decode(&b->chunked, buf_head(src), &len, err);
        if (rc == -2)
            return -1;
        data_len = len;
        consume = rc > 0 ? (size_t)rc : avail;
        b->done = rc > 0;
        break;
    }
    }
    b->bytes += data_len;
    q->data = buf_head(src);
    q->data_len = data_len;
    q->src = src;
    q->src_consume = consume;
    q->post_len = q->post_off = 0;
    if (b->chunked_out) {
        if (data_len) {
            char line[24];
            size_t n = http_chunk_header(line, data_len);
            buf_append(&q->gen, line, n);
            memcpy(q->post, "\r\n", 2);
            q->post_len = 2;
        }
        if (b->done) {
            memcpy(q->post + q->post_len, "0\r\n\r\n", 5);
            q->post_len += 5;
        }
    }
    return 0;
}

/* ---------- requests: allocation ---------- */

static struct request *request_new(struct session *s)
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
    timer_init(&r->up_timer, NULL);
    return r;
}

static void request_free(struct worker *w, struct request *r)
{
    buf_release(&r->up_out.gen);
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

/* ---------- session lifetime ---------- */

static void session_free_deferred(struct deferred *d)
{
    struct worker *w = container_of(d, struct worker, sweep);
    while (w->graveyard) {
        struct session *s = w->graveyard;
        w->graveyard = s->next;
        free(s);
    }
}

static void client_timeout(struct timer *t);

static void release_upstream(struct request *r, bool reusable)
{
    if (!r->uc)
        return;
    loop_timer_cancel(session_loop(r->s), &r->up_timer);
    upstream_release(r->uc, reusable);
    r->uc = NULL;
}

static void session_close(struct session *s)
{
    if (s->closed)
        return;
    s->closed = true;
    struct worker *w = s->w;
    if (s->req) {
        release_upstream(s->req, false);
        request_free(w, s->req);
        s->req = NULL;
    }
    loop_timer_cancel(w->loop, &s->timer);
    buf_release(&s->in);
    close(s->io.fd);
    s->io.fd = -1;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->num_sessions--;
    observe_gauge_add(GAUGE_CLIENT_CONNECTIONS, -1);
    upstream_set_leave(s->set);
    s->next = w->graveyard;
    w->graveyard = s;
    w->sweep.cb = session_free_deferred;
    loop_defer(w->loop, &w->sweep);
}

static void client_gone(struct session *s);

static void client_event(struct io *io, uint32_t events)
{
    struct session *s = (struct session *)io;
    if (s->closed)
        return;
    if ((events & (EPOLLHUP | EPOLLERR)) && s->req) {
        client_gone(s);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        s->writable = true;
    session_drive(s);
}

void session_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        log_error("out of memory accepting a connection; closed it");
        close(fd);
        return;
    }
    s->io.fd = fd;
    s->io.on_event = client_event;
    s->w = w;
    s->set = w->set;
    upstream_set_use(s->set);
    if (len <= sizeof(s->peer))
        memcpy(&s->peer, peer, len);
    timer_init(&s->timer, client_timeout);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->num_sessions++;
    observe_gauge_add(GAUGE_CLIENT_CONNECTIONS, 1);
    int rc = loop_add(w->loop, &s->io);
    if (rc < 0) {
        log_error("epoll_ctl() for a new client failed: %s", strerror(-rc));
        session_close(s);
        return;
    }
    /* The first request's header must arrive within header_timeout. */
    loop_timer_set(w->loop, &s->timer, session_cfg(s)->client_header_timeout_ms);
    s->readable = true; /* data often arrives with the handshake */
    s->writable = true;
    session_drive(s);
}

/* Close every session (the worker is stopping). */
void session_close_all(struct worker *w)
{
    while (w->sessions)
        session_close(w->sessions);
}

/* Close every idle keep-alive session (drain on shutdown). */
void session_close_idle(struct worker *w)
{
    struct session *s = w->sessions;
    while (s) {
        struct session *next = s->next;
        if (s->phase == PHASE_IDLE && !s->req)
            session_close(s);
        else
            s->closing = true;
        s = next;
    }
}

/* ---------- access log and evidence ---------- */

static int64_t span_ms(uint64_t from, uint64_t to)
{
    return from && to && to >= from ? (int64_t)(to - from) : -1;
}

/* The request is over: hand its evidence to observe (access log, metrics,
 * the /errors ring). */
static void log_request(struct request *r)
{
    struct session *s = r->s;
    char ip[INET6_ADDRSTRLEN];
    peer_text(s, ip, sizeof(ip));
    const char *t = r->logtext;
    uint64_t now = loop_now_ms(session_loop(s));
    struct request_record rec = {
        .rid = r->rid,
        .client_ip = ip,
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
        .upstream_server = r->server ? r->server->cfg->name : NULL,
        .num_attempts = r->attempts,
        .body_bytes_sent = r->resp_body.bytes,
        .request_body_bytes = r->req_body.bytes,
        .connect_ms = span_ms(r->t_connect_ms, r->t_connected_ms),
        .header_ms = span_ms(r->t_connect_ms, r->t_header_ms),
        .upstream_ms = r->t_connect_ms ? span_ms(r->t_connect_ms, now) : -1,
        .total_ms = span_ms(r->t_start_ms, now),
    };
    int n = r->attempts < OBSERVE_MAX_ATTEMPTS ? r->attempts : OBSERVE_MAX_ATTEMPTS;
    memcpy(rec.attempts, r->evidence, (size_t)n * sizeof(rec.attempts[0]));
    observe_request(&rec);
    worker_defer_flush(s->w);
}

/* The client reset the connection (or it failed) while its request was in
 * flight: nothing can be delivered any more. Stop the upstream work now
 * instead of letting it run to its timeouts and retries -- a flood of
 * "header then RST" must neither hold our sockets nor get a healthy backend
 * blamed. A FIN alone is not an abort: a half-closed client may still read
 * the response (as HAProxy; nginx aborts on FIN too). */
static void client_gone(struct session *s)
{
    struct request *r = s->req;
    if (r->attempt_open) {
        r->attempt_open = false;
        observe_attempt_end(r->server->stats, CAUSE_NONE, 0, -1, -1, r->rid);
    }
    if (!r->resp_started)
        r->status = 499; /* as nginx: the client closed the request */
    else
        r->aborted = true;
    log_request(r);
    session_close(s);
}

/* The current attempt is over: keep its evidence, count it per server. */
static void attempt_end(struct request *r, enum cause cause, int err)
{
    if (!r->attempt_open)
        return;
    r->attempt_open = false;
    uint64_t now = loop_now_ms(session_loop(r->s));
    int64_t connect_ms = span_ms(r->t_connect_ms, r->t_connected_ms);
    int64_t header_ms = cause == CAUSE_NONE ? span_ms(r->t_connect_ms, now) : -1;
    if (r->attempts >= 1 && r->attempts <= OBSERVE_MAX_ATTEMPTS)
        r->evidence[r->attempts - 1] = (struct attempt_evidence){
            r->server->cfg->name, cause, err, connect_ms, r->uc && r->uc->reused};
    observe_attempt_end(r->server->stats, cause, err, connect_ms, header_ms, r->rid);
}

/* Copy what the log and the error page need from the parsed header (its
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

/* ---------- generated responses ---------- */

/* Error pages are built here first: custom pages may be up to 32 KiB. */
static __thread char page[40 * 1024];

/* Build a whole response of ours (error page) in cl_out. */
static void respond_generated(struct request *r, int status, enum cause cause)
{
    struct session *s = r->s;
    r->status = status;
    r->generated = true;
    r->resp_started = true;
    r->resp_body.done = true;
    r->resp_body.framing = HTTP_FRAMING_NONE;
    if (buf_acquire(&r->cl_out.gen) < 0) {
        session_close(s);
        return;
    }
    /* Details (addresses, errno) reach the client only when the config
     * says so: never leak internal addresses to the public by default. */
    char details[320];
    bool exposed = observe_expose_details() && r->server;
    if (exposed)
        snprintf(details, sizeof(details), "%s: %s", r->server->cfg->addr.text,
                 r->err ? strerror(r->err) : cause_get(cause)->sentence);
    const char *ctype;
    size_t blen = observe_error_page(page, sizeof(page), status, cause, r->rid, r->accept,
                                     r->accept_len, exposed ? details : NULL, &ctype);
    char head[1024];
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 %d %s\r\n"
                        "Server: bulwark\r\n"
                        "Content-Type: %s\r\n"
                        "Content-Length: %zu\r\n"
                        "Cache-Control: no-store\r\n"
                        "Proxy-Status: ",
                        status, http_status_reason(status), ctype, blen);
    buf_append(&r->cl_out.gen, head, (size_t)hlen);
    size_t pl = observe_proxy_status(head, sizeof(head), cause,
                                     r->server ? r->server->cfg->addr.text : NULL,
                                     exposed ? details : NULL);
    buf_append(&r->cl_out.gen, head, pl);
    buf_append(&r->cl_out.gen, "\r\n", 2);
    hlen = snprintf(head, sizeof(head), "X-Request-Id: %s\r\n", r->rid);
    buf_append(&r->cl_out.gen, head, (size_t)hlen);
    if (s->closing || !r->client_keep_alive)
        buf_append(&r->cl_out.gen, "Connection: close\r\n", 19);
    else if (r->minor_version == 0)
        buf_append(&r->cl_out.gen, "Connection: keep-alive\r\n", 24);
    buf_append(&r->cl_out.gen, "\r\n", 2);
    if (r->method != HTTP_METHOD_HEAD) {
        buf_append(&r->cl_out.gen, page, blen);
        r->resp_body.bytes = blen;
    }
}

/* The one place an exchange failure becomes what the client sees: an error
 * response when nothing was sent yet, else an aborted connection (so a
 * truncated body is never mistaken for a whole one). */
static void fail_request(struct request *r, enum cause cause, int err)
{
    struct session *s = r->s;
    r->cause = cause;
    r->err = err;
    release_upstream(r, false);
    const struct cause_info *ci = cause_get(cause);
    if (r->resp_started || ci->status == 0) {
        if (!r->generated && r->server)
            log_error("response from %s (upstream \"%s\") aborted after %llu body bytes: %s; "
                      "cause=%s client connection closed rid=%s",
                      r->server->cfg->addr.text, r->group->cfg->name,
                      (unsigned long long)r->resp_body.bytes, err ? strerror(err) : ci->sentence,
                      ci->proxy_status, r->rid);
        if (!r->status)
            r->status = ci->status ? ci->status : 502;
        r->aborted = true;
        log_request(r);
        session_close(s);
        return;
    }
    /* The request body may be half read: the next request's start is unknown. */
    if (!r->req_body.done)
        s->closing = true;
    buf_release(&r->up_in);
    buf_release(&r->up_out.gen);
    r->up_out.data_len = 0;
    r->up_out.src_consume = 0;
    respond_generated(r, ci->status, cause);
}

/* A request refused before it was routed (bad syntax, too large...). */
static void refuse_request(struct session *s, struct request *r, int status, enum cause cause,
                           const char *why)
{
    char ip[INET6_ADDRSTRLEN];
    peer_text(s, ip, sizeof(ip));
    log_info("refused request from %s with %d: %s", ip, status, why);
    s->closing = true;
    r->cause = cause;
    respond_generated(r, status, cause);
}

/* ---------- upstream attempts ---------- */

/* One error-log line per failed attempt: what failed, the server, why
 * (errno text, the parser's verdict, or the cause's sentence), then
 * greppable key=value evidence. */
static void log_attempt_detail(struct request *r, const char *what, enum cause cause, int err,
                               const char *detail)
{
    attempt_end(r, cause, err);
    char ip[INET6_ADDRSTRLEN];
    peer_text(r->s, ip, sizeof(ip));
    const struct cause_info *ci = cause_get(cause);
    if (!detail)
        detail = err ? strerror(err) : "no error code";
    uint64_t now = loop_now_ms(session_loop(r->s));
    log_error("%s %s (upstream \"%s\") failed: %s. %s Next step: %s; cause=%s attempt=%d "
              "elapsed_ms=%llu client=%s rid=%s",
              what, r->server ? r->server->cfg->addr.text : "-", r->group->cfg->name, detail,
              ci->sentence, ci->fix, ci->proxy_status, r->attempts,
              (unsigned long long)(r->t_connect_ms ? now - r->t_connect_ms : 0), ip, r->rid);
}

static void log_attempt_failure(struct request *r, const char *what, enum cause cause, int err)
{
    log_attempt_detail(r, what, cause, err, NULL);
}

/* Every attempt's end goes through here or start_response. */

/* An upstream failure that no retry can mend: log its evidence, answer. */
static void upstream_failed(struct request *r, const char *what, enum cause cause, int err)
{
    log_attempt_failure(r, what, cause, err);
    fail_request(r, cause, err);
}

static void up_timeout(struct timer *t);
static void connect_upstream(struct request *r);

/* An attempt failed before any response byte: retry if the rules allow,
 * else fail the request. */
/* Another attempt is allowed by `retries` (a free retry does not count). */
static bool retry_left(const struct request *r)
{
    return r->attempts - r->free_retries <= r->group->cfg->retries;
}

/* An attempt failed before any response byte: retry on another server if
 * the rules allow, else answer with the cause.
 *   request_sent: some request bytes may have reached the upstream.
 *   partial: the upstream went away before it had the whole request (a
 *            write failed, or the body was not all sent), so it cannot have
 *            acted on it: safe to send again whatever the method. */
static void attempt_failed(struct request *r, enum cause cause, int err, bool request_sent,
                           bool partial)
{
    bool reused = r->uc && r->uc->reused;
    release_upstream(r, false);
    bool replayable = !r->body_consumed;
    bool allowed = !request_sent || (replayable && (method_is_idempotent(r->method) || partial));
    /* A pooled connection that dies under a request was most likely closed
     * by the server while idle (the race with our reuse): one such retry
     * per request is free, so retries: 0 still survives it. */
    const char *what = request_sent ? "request to" : "connect() to";
    if (allowed && reused && cause == CAUSE_CONNECTION_TERMINATED && !r->free_retries) {
        r->free_retries = 1;
        attempt_end(r, cause, err);
        log_info("pooled connection to %s (upstream \"%s\") was closed by the upstream; "
                 "sending the request again on a new connection rid=%s",
                 r->server->cfg->addr.text, r->group->cfg->name, r->rid);
    } else if (!allowed || !retry_left(r)) {
        log_attempt_failure(r, what, cause, err);
        fail_request(r, cause, err);
        return;
    } else {
        log_attempt_failure(r, what, cause, err);
    }
    /* Rewind the request for the next attempt: the header is still at the
     * start of up_out, the body bytes still in the client buffer. */
    r->up_out.gen.start = 0;
    r->up_out.gen.end = r->up_hdr_len;
    r->up_out.data_len = 0;
    r->up_out.src_consume = 0;
    r->up_out.post_len = r->up_out.post_off = 0;
    r->req_body = r->req_body_start;
    connect_upstream(r);
}

static void connect_upstream(struct request *r)
{
    struct session *s = r->s;
    for (;;) {
        struct upstream_server *srv = upstream_pick(r->group, r->hash, r->tried);
        if (!srv) {
            fail_request(r, CAUSE_DESTINATION_UNAVAILABLE, 0);
            return;
        }
        r->server = srv;
        if (srv->index < 64)
            r->tried |= 1ull << srv->index;
        r->attempts++;
        r->up_any_byte = r->up_sent_any = r->up_eof = r->up_rdhup = false;
        r->t_connect_ms = loop_now_ms(session_loop(s));
        r->t_connected_ms = r->t_header_ms = 0;
        observe_attempt_start(srv->stats);
        r->attempt_open = true;
        if (srv->cfg->addr.len == 0) {
            /* the name did not resolve at load */
            log_attempt_failure(r, "DNS lookup for", CAUSE_DNS_ERROR, 0);
            if (!retry_left(r)) {
                fail_request(r, CAUSE_DNS_ERROR, 0);
                return;
            }
            continue;
        }
        struct upstream_conn *uc;
        int rc = upstream_connect(srv, &uc);
        if (rc < 0) {
            enum cause c = cause_from_connect_errno(-rc);
            log_attempt_failure(r, "connect() to", c, -rc);
            if (!retry_left(r)) {
                fail_request(r, c, -rc);
                return;
            }
            continue;
        }
        observe_pool_acquire(uc->reused);
        r->uc = uc;
        uc->owner = r;
        uc->io.on_event = upstream_event;
        r->up_readable = false;
        r->up_writable = uc->connected;
        r->up_timer.cb = up_timeout;
        if (uc->connected)
            r->t_connected_ms = r->t_connect_ms;
        loop_timer_set(session_loop(s), &r->up_timer,
                       uc->connected ? r->group->cfg->send_timeout_ms
                                     : r->group->cfg->connect_timeout_ms);
        return;
    }
}

static void up_timeout(struct timer *t)
{
    struct request *r = container_of(t, struct request, up_timer);
    struct session *s = r->s;
    if (!r->uc)
        return;
    if (!r->uc->connected)
        attempt_failed(r, CAUSE_CONNECTION_TIMEOUT, ETIMEDOUT, false, false);
    else if (r->tunnel)
        session_close(s);
    else if (!outq_empty(&r->up_out) && !r->resp_started)
        upstream_failed(r, "sending the request to", CAUSE_CONNECTION_WRITE_TIMEOUT, ETIMEDOUT);
    else if (!r->resp_started)
        upstream_failed(r, "waiting for the response header from", CAUSE_HTTP_RESPONSE_TIMEOUT,
                        ETIMEDOUT);
    else
        fail_request(r, CAUSE_CONNECTION_READ_TIMEOUT, ETIMEDOUT);
    if (!s->closed)
        session_drive(s);
}

static void upstream_event(struct io *io, uint32_t events)
{
    struct upstream_conn *uc = (struct upstream_conn *)io;
    struct request *r = uc->owner;
    if (!r)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        r->up_readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        r->up_rdhup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        r->up_writable = true;
    session_drive(r->s);
}

/* ---------- the forwarded request header ---------- */

static void append_u64(struct buf *b, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, digits + sizeof(digits) - n, n);
}

static void append_header(struct buf *b, const struct http_header *h)
{
    buf_append(b, h->name, h->name_len);
    buf_append(b, ": ", 2);
    buf_append(b, h->value, h->value_len);
    buf_append(b, "\r\n", 2);
}

/* Append every value of the fields with this name, each followed by ", "
 * (RFC 9110 5.3: several field lines are one comma-separated list). */
static void append_values(struct buf *b, const struct http_request *hr, const char *name)
{
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (http_name_is(h, name) && h->value_len) {
            buf_append(b, h->value, h->value_len);
            buf_append(b, ", ", 2);
        }
    }
}

static int build_upstream_request(struct request *r, const struct http_request *hr)
{
    struct session *s = r->s;
    const struct config *cfg = session_cfg(s);
    struct buf *b = &r->up_out.gen;
    if (buf_acquire(b) < 0)
        return -1;
    /* RFC 9112 3.2: the request-target is forwarded exactly as received. */
    buf_append(b, hr->method, hr->method_len);
    buf_append(b, " ", 1);
    buf_append(b, hr->target, hr->target_len);
    buf_append(b, " HTTP/1.1\r\n", 11);
    size_t xff_len = 0, via_len = 0; /* earlier hops' values, all fields joined */
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (http_is_hop_by_hop(h, hr->headers, hr->num_headers))
            continue;
        if (http_name_is(h, "Content-Length") || http_name_is(h, "Expect") ||
            http_name_is(h, "X-Request-Id"))
            continue; /* framing is re-added below; 100-continue is ours to answer */
        if (cfg->x_forwarded_for && http_name_is(h, "X-Forwarded-For")) {
            xff_len += h->value_len + 2;
            continue;
        }
        if (cfg->via && http_name_is(h, "Via")) {
            via_len += h->value_len + 2;
            continue;
        }
        /* Set, not appended: a client must not choose what the app trusts. */
        if ((cfg->x_forwarded_proto && http_name_is(h, "X-Forwarded-Proto")) ||
            (cfg->x_forwarded_host && http_name_is(h, "X-Forwarded-Host")))
            continue;
        if (buf_room(b) < h->name_len + h->value_len + 4)
            return -1;
        append_header(b, h);
    }
    /* what is added below, with room for the framing and request id */
    if (buf_room(b) < xff_len + via_len + hr->host_len + REQUEST_ID_MAX + 400)
        return -1;
    if (r->upgrade) {
        const struct http_header *up = http_find_header(hr->headers, hr->num_headers, "Upgrade");
        if (buf_room(b) < up->value_len + 400)
            return -1;
        buf_append(b, "Connection: upgrade\r\nUpgrade: ", 30);
        buf_append(b, up->value, up->value_len);
        buf_append(b, "\r\n", 2);
    }
    if (cfg->x_forwarded_for) {
        char ip[INET6_ADDRSTRLEN];
        peer_text(s, ip, sizeof(ip));
        buf_append(b, "X-Forwarded-For: ", 17);
        append_values(b, hr, "X-Forwarded-For");
        buf_append(b, ip, strlen(ip));
        buf_append(b, "\r\n", 2);
    }
    if (cfg->x_forwarded_proto)
        buf_append(b, "X-Forwarded-Proto: http\r\n", 25);
    if (cfg->x_forwarded_host && hr->host) {
        buf_append(b, "X-Forwarded-Host: ", 18);
        buf_append(b, hr->host, hr->host_len);
        buf_append(b, "\r\n", 2);
    }
    if (cfg->via) {
        buf_append(b, "Via: ", 5);
        append_values(b, hr, "Via");
        buf_append(b, hr->minor_version ? "1.1 bulwark\r\n" : "1.0 bulwark\r\n", 13);
    }
    if (hr->framing == HTTP_FRAMING_LENGTH) {
        buf_append(b, "Content-Length: ", 16);
        append_u64(b, hr->content_length);
        buf_append(b, "\r\n", 2);
    } else if (hr->framing == HTTP_FRAMING_CHUNKED) {
        buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
    }
    buf_append(b, "X-Request-Id: ", 14);
    buf_append(b, r->rid, strlen(r->rid));
    buf_append(b, "\r\n\r\n", 4);
    r->up_hdr_len = (uint32_t)buf_len(b);
    return 0;
}

/* ---------- start of a request ---------- */

/* 16 hex digits: worker id, a per-start salt, the worker's request count.
 * Unique per instance run without any shared counter. */
static void new_request_id(struct request *r, struct worker *w)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = ((uint64_t)(w->id & 0xff) << 56) | ((uint64_t)(w->rid_salt & 0xffffff) << 32) |
                 (++w->request_seq & 0xffffffffull);
    for (int i = 15; i >= 0; i--, v >>= 4)
        r->rid[i] = hex[v & 15];
    r->rid[16] = '\0';
}

static void host_and_path(const struct http_request *hr, const char **path, size_t *path_len)
{
    const char *t = hr->target;
    size_t n = hr->target_len;
    if (n && t[0] != '/') {
        /* absolute-form: skip "scheme://authority" */
        const char *p = memmem(t, n, "://", 3);
        if (p) {
            const char *slash = memchr(p + 3, '/', (size_t)(t + n - (p + 3)));
            if (slash) {
                n -= (size_t)(slash - t);
                t = slash;
            } else {
                t = "/";
                n = 1;
            }
        }
    }
    const char *q = memchr(t, '?', n);
    *path = t;
    *path_len = q ? (size_t)(q - t) : n;
}

/* A complete request header is in s->in: route it and set the exchange up. */
static void start_request(struct session *s, struct request *r, const struct http_request *hr,
                          size_t hdr_len)
{
    struct worker *w = s->w;
    const struct config *cfg = session_cfg(s);
    r->method = hr->method_id;
    r->minor_version = hr->minor_version;
    r->client_keep_alive = hr->keep_alive;
    r->upgrade = hr->upgrade;
    const struct http_header *rid = request_log_text(r, hr);
    if (rid && observe_request_id_valid(rid->value, rid->value_len)) {
        memcpy(r->rid, rid->value, rid->value_len);
        r->rid[rid->value_len] = '\0';
    }

    const char *path;
    size_t path_len;
    host_and_path(hr, &path, &path_len);
    r->route = config_match_route(cfg, hr->host, hr->host ? hr->host_len : 0, path, path_len);
    if (!r->route) {
        buf_consume(&s->in, hdr_len);
        r->req_body.framing = hr->framing;
        r->req_body.left = hr->content_length;
        if (hr->framing != HTTP_FRAMING_NONE)
            s->closing = true; /* we will not read the body */
        r->req_body.done = true;
        r->cause = CAUSE_DESTINATION_NOT_FOUND;
        respond_generated(r, 404, CAUSE_DESTINATION_NOT_FOUND);
        return;
    }
    uint64_t max_body = r->route->max_body_bytes;
    if (max_body && hr->framing == HTTP_FRAMING_LENGTH && hr->content_length > max_body) {
        buf_consume(&s->in, hdr_len);
        r->req_body.done = true;
        refuse_request(s, r, 413, CAUSE_REQUEST_TOO_LARGE, "body larger than max_body_size");
        return;
    }
    r->group = &s->set->groups[r->route->upstream->index];
    if (r->group->cfg->balance == BALANCE_HASH) {
        const struct config_upstream *u = r->group->cfg;
        if (u->hash_key == HASH_URI) {
            r->hash = upstream_hash(hr->target, hr->target_len);
        } else if (u->hash_key == HASH_HEADER) {
            const struct http_header *h =
                http_find_header(hr->headers, hr->num_headers, u->hash_header);
            r->hash = h ? upstream_hash(h->value, h->value_len) : 0;
        } else if (s->peer.sa.sa_family == AF_INET6) {
            r->hash = upstream_hash(&s->peer.sin6.sin6_addr, 16);
        } else {
            r->hash = upstream_hash(&s->peer.sin.sin_addr, 4);
        }
    }
    if (build_upstream_request(r, hr) < 0) {
        buf_consume(&s->in, hdr_len);
        r->req_body.done = true;
        refuse_request(s, r, 431, CAUSE_HTTP_REQUEST_ERROR,
                       "forwarded header section would not fit the buffer");
        return;
    }
    buf_consume(&s->in, hdr_len);
    if (hr->framing == HTTP_FRAMING_NONE && buf_len(&s->in) == 0)
        buf_release(&s->in); /* nothing more to read for this request */

    r->req_body.framing = hr->framing;
    r->req_body.left = hr->content_length;
    r->req_body.chunked_out = hr->framing == HTTP_FRAMING_CHUNKED;
    r->req_body.done = hr->framing == HTTP_FRAMING_NONE ||
                       (hr->framing == HTTP_FRAMING_LENGTH && hr->content_length == 0);
    if (hr->framing == HTTP_FRAMING_CHUNKED)
        http_chunked_init(&r->req_body.chunked);
    r->req_body_start = r->req_body;
    /* RFC 9110 10.1.1: we answer the expectation ourselves once the request
     * is accepted, so the client starts sending the body. */
    if (hr->expect_continue && !r->req_body.done && hr->minor_version == 1)
        r->continue_pending = true;
    if (w->draining)
        s->closing = true;
    connect_upstream(r);
}

/* ---------- the response header for the client ---------- */

/* Build the client's copy of an upstream response header (final or 1xx). */
static int build_client_response(struct request *r, const struct http_response *resp)
{
    struct session *s = r->s;
    const struct config *cfg = session_cfg(s);
    struct buf *b = &r->cl_out.gen;
    if (buf_acquire(b) < 0)
        return -1;
    char status[13] = "HTTP/1.1 000 ";
    status[9] = (char)('0' + resp->status / 100);
    status[10] = (char)('0' + resp->status / 10 % 10);
    status[11] = (char)('0' + resp->status % 10);
    buf_append(b, status, sizeof(status));
    buf_append(b, resp->reason, resp->reason_len);
    buf_append(b, "\r\n", 2);
    bool switching = resp->status == 101;
    for (size_t i = 0; i < resp->num_headers; i++) {
        const struct http_header *h = &resp->headers[i];
        if (http_is_hop_by_hop(h, resp->headers, resp->num_headers)) {
            if (!(switching && http_name_is(h, "Upgrade")))
                continue;
        }
        if (http_name_is(h, "Content-Length") && resp->framing == HTTP_FRAMING_LENGTH)
            continue; /* re-added below */
        if (resp->status >= 200 && http_name_is(h, "X-Request-Id"))
            continue; /* ours is the one the client and the logs know */
        if (buf_room(b) < h->name_len + h->value_len + 128)
            return -1;
        append_header(b, h);
    }
    if (resp->status < 200) {
        if (switching)
            buf_append(b, "Connection: upgrade\r\n", 21);
        buf_append(b, "\r\n", 2);
        return 0;
    }
    if (cfg->via)
        buf_append(b, resp->minor_version ? "Via: 1.1 bulwark\r\n" : "Via: 1.0 bulwark\r\n", 18);
    buf_append(b, "X-Request-Id: ", 14);
    buf_append(b, r->rid, strlen(r->rid));
    buf_append(b, "\r\n", 2);
    if (resp->framing == HTTP_FRAMING_LENGTH) {
        buf_append(b, "Content-Length: ", 16);
        append_u64(b, resp->content_length);
        buf_append(b, "\r\n", 2);
    } else if (r->resp_body.chunked_out) {
        buf_append(b, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (s->closing || !r->client_keep_alive)
        buf_append(b, "Connection: close\r\n", 19);
    else if (r->minor_version == 0)
        buf_append(b, "Connection: keep-alive\r\n", 24);
    buf_append(b, "\r\n", 2);
    return 0;
}

/* A complete response header is at the head of up_in. Returns false when
 * the request failed. */
static bool start_response(struct request *r, const struct http_response *resp, size_t hdr_len)
{
    struct session *s = r->s;
    r->upstream_status = resp->status;
    if (resp->status == 101 && !r->upgrade) {
        log_attempt_detail(r, "reading the response from", CAUSE_HTTP_PROTOCOL_ERROR, 0,
                           "101 Switching Protocols to a request that asked no upgrade");
        fail_request(r, CAUSE_HTTP_PROTOCOL_ERROR, 0);
        return false;
    }
    if (resp->status < 200 && resp->status != 101) {
        /* 1xx interim: forward to HTTP/1.1 clients, except 100 Continue,
         * which we answered ourselves. */
        if (r->minor_version == 1 && resp->status != 100) {
            if (build_client_response(r, resp) < 0) {
                upstream_failed(r, "relaying the interim response from",
                                CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
                return false;
            }
        }
        buf_consume(&r->up_in, hdr_len);
        return true;
    }
    r->status = resp->status;
    r->t_header_ms = loop_now_ms(session_loop(s));
    attempt_end(r, CAUSE_NONE, 0);
    r->resp_keep_alive = resp->keep_alive;
    struct body *b = &r->resp_body;
    b->framing = resp->framing;
    b->left = resp->content_length;
    if (resp->framing == HTTP_FRAMING_CHUNKED)
        http_chunked_init(&b->chunked);
    if (resp->status == 101) {
        r->tunnel = true;
        b->framing = HTTP_FRAMING_UNTIL_CLOSE;
    } else if (resp->framing == HTTP_FRAMING_CHUNKED || resp->framing == HTTP_FRAMING_UNTIL_CLOSE) {
        if (r->minor_version == 1)
            b->chunked_out = true;
        else
            s->closing = true; /* HTTP/1.0: the close ends the body */
    }
    b->done = !r->tunnel && (resp->framing == HTTP_FRAMING_NONE ||
                             (resp->framing == HTTP_FRAMING_LENGTH && resp->content_length == 0));
    /* The request is all sent and can no longer be retried: its block
     * carries the response header instead (one block fewer per request). */
    if (outq_empty(&r->up_out) && r->req_body.done && !r->tunnel) {
        if (!r->cl_out.gen.data) {
            r->cl_out.gen.data = r->up_out.gen.data;
            r->cl_out.gen.start = r->cl_out.gen.end = 0;
            r->up_out.gen.data = NULL;
        }
        buf_release(&r->up_out.gen);
    }
    if (build_client_response(r, resp) < 0) {
        upstream_failed(r, "relaying the response header from",
                        CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
        return false;
    }
    r->resp_started = true;
    buf_consume(&r->up_in, hdr_len);
    if (r->tunnel) {
        r->req_body.framing = HTTP_FRAMING_UNTIL_CLOSE;
        r->req_body.chunked_out = false;
        r->req_body.done = false;
        loop_timer_set(session_loop(s), &r->up_timer, session_cfg(s)->tunnel_timeout_ms);
    } else {
        loop_timer_set(session_loop(s), &r->up_timer, r->group->cfg->read_timeout_ms);
    }
    return true;
}

/* ---------- reading ---------- */

/* Read from fd into b. Returns bytes read (>0), 0 on EOF, -EAGAIN when
 * nothing is there (clears *readable), or -errno. A short read means the
 * socket is drained -- unless the peer's FIN came with the same edge
 * (rdhup): then only reading the 0 tells us, and no new edge will come. */
static ssize_t read_into(int fd, struct buf *b, bool *readable, bool rdhup)
{
    if (buf_room(b) == 0)
        buf_compact(b);
    size_t room = buf_room(b);
    if (room == 0)
        return -ENOBUFS;
    for (;;) {
        ssize_t n = read(fd, buf_tail(b), room);
        if (n > 0) {
            b->end += (uint32_t)n;
            if ((size_t)n < room && !rdhup)
                *readable = false; /* drained: edge-triggered will tell us of more */
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            *readable = false;
            return -EAGAIN;
        }
        return -errno;
    }
}

/* ---------- driving one request ---------- */

static void finish_request(struct session *s);

/* Queue the next piece of the request body from the client buffer.
 * Returns false when the request was refused (bad chunking, too large). */
static bool prepare_request_body(struct request *r)
{
    struct session *s = r->s;
    enum http_error herr = HTTP_OK;
    if (body_prepare(&r->req_body, &s->in, false, &r->up_out, &herr) < 0) {
        if (r->resp_started) {
            session_close(s);
            return false;
        }
        release_upstream(r, false);
        refuse_request(s, r, 400, CAUSE_HTTP_REQUEST_ERROR, http_error_text(herr));
        return false;
    }
    uint64_t max_body = r->route->max_body_bytes;
    if (max_body && r->req_body.framing == HTTP_FRAMING_CHUNKED && r->req_body.bytes > max_body &&
        !r->resp_started) {
        release_upstream(r, false);
        refuse_request(s, r, 413, CAUSE_REQUEST_TOO_LARGE, "chunked body over max_body_size");
        return false;
    }
    return true;
}

/* Steps on the upstream side. Returns true if something progressed. */
static bool drive_upstream(struct request *r)
{
    struct session *s = r->s;
    struct upstream_conn *uc = r->uc;
    bool progress = false;
    if (!uc)
        return false;

    if (!uc->connected) {
        if (!r->up_writable && !r->up_readable)
            return false;
        int rc = upstream_connect_result(uc);
        if (rc < 0) {
            attempt_failed(r, cause_from_connect_errno(-rc), -rc, false, false);
            return true;
        }
        uc->connected = true;
        r->t_connected_ms = loop_now_ms(session_loop(s));
        loop_timer_set(session_loop(s), &r->up_timer, r->group->cfg->send_timeout_ms);
        progress = true;
    }

    /* request: header, then body pieces taken from the client buffer */
    for (;;) {
        /* Queue body bytes behind the header so both leave in one writev(). */
        if (!r->req_body.done && !r->continue_pending && !outq_has_body(&r->up_out) &&
            buf_len(&s->in)) {
            if (!prepare_request_body(r))
                return true;
            progress = true;
        }
        if (!outq_empty(&r->up_out)) {
            int rc = outq_flush(uc->io.fd, &r->up_out, &r->up_writable);
            if (rc < 0) {
                if (!r->up_any_byte && !r->resp_started) {
                    attempt_failed(r, CAUSE_CONNECTION_TERMINATED, -rc, true, true);
                    return true;
                }
                /* the upstream stopped reading; its response may still come */
                r->req_body.done = true;
                s->closing = true;
                break;
            }
            r->up_sent_any = true;
            if (rc == 0) {
                if (!r->tunnel) {
                    loop_timer_set(session_loop(s), &r->up_timer, r->group->cfg->send_timeout_ms);
                    /* the upstream is slow to take the body: not the client's fault */
                    if (!r->resp_started)
                        loop_timer_cancel(session_loop(s), &s->timer);
                }
                break;
            }
            progress = true;
            if (r->req_body.bytes)
                r->body_consumed = true; /* gone from the client buffer: no replay */
            if (!r->resp_started && !r->tunnel) {
                /* all sent: now waiting for the response (or, with more
                 * body to come, for the client, whose timer governs) */
                if (r->req_body.done)
                    loop_timer_set(session_loop(s), &r->up_timer, r->group->cfg->read_timeout_ms);
                else
                    loop_timer_cancel(session_loop(s), &r->up_timer);
            }
        }
        if (r->req_body.done)
            break;
        if (r->continue_pending) {
            if (buf_acquire(&r->cl_out.gen) < 0) {
                session_close(s);
                return true;
            }
            buf_append(&r->cl_out.gen, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            r->continue_pending = false;
            progress = true;
            continue;
        }
        if (buf_len(&s->in))
            continue;
        if (s->eof)
            break;
        if (!s->readable) {
            /* waiting for the client's next body bytes */
            if (!r->tunnel && !timer_armed(&s->timer))
                loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->client_body_timeout_ms);
            break;
        }
        if (buf_acquire(&s->in) < 0) {
            session_close(s);
            return true;
        }
        ssize_t n = read_into(s->io.fd, &s->in, &s->readable, s->rdhup);
        if (n == -EAGAIN) {
            if (!r->tunnel)
                loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->client_body_timeout_ms);
            break;
        }
        if (n <= 0) {
            s->eof = true;
            if (r->tunnel) {
                /* client closed the tunnel: pass the close on */
                shutdown(uc->io.fd, SHUT_WR);
                r->req_body.done = true;
                break;
            }
            /* the client gave up in the middle of its body */
            r->status = 400;
            log_request(r);
            session_close(s);
            return true;
        }
        if (r->tunnel)
            loop_timer_set(session_loop(s), &r->up_timer, session_cfg(s)->tunnel_timeout_ms);
        else
            loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->client_body_timeout_ms);
    }

    /* Waiting for the upstream's body again after the client caught up:
     * read_timeout runs again (drive_client stopped it meanwhile). */
    if (r->resp_started && !r->tunnel && !r->resp_body.done && outq_empty(&r->cl_out) &&
        !timer_armed(&r->up_timer))
        loop_timer_set(session_loop(s), &r->up_timer, r->group->cfg->read_timeout_ms);

    /* response: header, then body into up_in */
    while (r->uc && r->up_readable && !r->up_eof) {
        if (r->resp_started && !outq_empty(&r->cl_out))
            break; /* backpressure: the client has not taken the last piece */
        if (r->resp_started && r->resp_body.done && !r->tunnel)
            break;
        if (buf_acquire(&r->up_in) < 0) {
            fail_request(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
            return true;
        }
        ssize_t n = read_into(uc->io.fd, &r->up_in, &r->up_readable, r->up_rdhup);
        if (n == -EAGAIN)
            break;
        if (n == -ENOBUFS && !r->resp_started) {
            log_attempt_detail(r, "reading the response from",
                               CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0,
                               "response header section larger than the buffer");
            fail_request(r, CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
            return true;
        }
        if (n <= 0) {
            r->up_eof = true;
            if (!r->resp_started && !r->up_any_byte) {
                attempt_failed(r, CAUSE_CONNECTION_TERMINATED, n < 0 ? (int)-n : 0, r->up_sent_any,
                               !outq_empty(&r->up_out) || !r->req_body.done);
                return true;
            }
            if (!r->resp_started) {
                log_attempt_detail(r, "reading the response header from",
                                   CAUSE_CONNECTION_TERMINATED, n < 0 ? (int)-n : 0,
                                   n < 0 ? NULL : "closed before the end of the header");
                fail_request(r, CAUSE_CONNECTION_TERMINATED, n < 0 ? (int)-n : 0);
                return true;
            }
            if (n < 0 && r->resp_body.framing != HTTP_FRAMING_UNTIL_CLOSE) {
                fail_request(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, (int)-n);
                return true;
            }
            progress = true;
            break;
        }
        r->up_any_byte = true;
        progress = true;
        loop_timer_set(session_loop(s), &r->up_timer,
                       r->tunnel ? session_cfg(s)->tunnel_timeout_ms
                                 : r->group->cfg->read_timeout_ms);
        if (r->resp_started)
            break;
        /* parse as many header sections as there are (1xx then final) */
        while (!r->resp_started && buf_len(&r->up_in)) {
            enum http_error herr = HTTP_OK;
            struct http_response *resp = &s->w->scratch_resp;
            int hl = http_parse_response(buf_head(&r->up_in), buf_len(&r->up_in),
                                         session_cfg(s)->max_header_bytes, r->method, resp, &herr);
            if (hl == HTTP_INCOMPLETE)
                break;
            if (hl < 0) {
                enum cause c =
                    herr == HTTP_ERR_HEADERS_TOO_LARGE || herr == HTTP_ERR_TOO_MANY_HEADERS
                        ? CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE
                        : CAUSE_HTTP_PROTOCOL_ERROR;
                log_attempt_detail(r, "parsing the response from", c, 0, http_error_text(herr));
                fail_request(r, c, 0);
                return true;
            }
            if (!start_response(r, resp, (size_t)hl))
                return true;
        }
        if (r->resp_started)
            break;
    }
    return progress;
}

/* Client side of a request in progress. */
static bool drive_client(struct request *r)
{
    struct session *s = r->s;
    bool progress = false;
    for (;;) {
        /* Queue the next body piece behind whatever is pending (often the
         * response header), so both leave in one writev(). */
        if (r->resp_started && !r->generated && !r->resp_body.done && !outq_has_body(&r->cl_out) &&
            buf_len(&r->up_in)) {
            enum http_error herr = HTTP_OK;
            if (body_prepare(&r->resp_body, &r->up_in, r->up_eof, &r->cl_out, &herr) < 0) {
                log_attempt_detail(r, "reading the response body from",
                                   CAUSE_HTTP_RESPONSE_INCOMPLETE, 0, http_error_text(herr));
                /* the header (and what was relayed) still goes out before the abort */
                r->cl_out.data_len = r->cl_out.src_consume = 0;
                r->cl_out.post_len = r->cl_out.post_off = 0;
                outq_flush(s->io.fd, &r->cl_out, &s->writable);
                fail_request(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, 0);
                return true;
            }
            progress = true;
        }
        if (outq_empty(&r->cl_out))
            break; /* wait for the upstream (an EOF is judged by drive_request) */
        int rc = outq_flush(s->io.fd, &r->cl_out, &s->writable);
        if (rc < 0) {
            /* the client went away: nothing more to deliver */
            if (!r->status)
                r->status = 499;
            log_request(r);
            session_close(s);
            return true;
        }
        if (rc == 0) {
            loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->send_timeout_ms);
            /* We stop reading the upstream until the client catches up:
             * the wait is the client's, so only its send_timeout runs. */
            if (r->resp_started && !r->tunnel && !r->generated)
                loop_timer_cancel(session_loop(s), &r->up_timer);
            break;
        }
        progress = true;
        if (timer_armed(&s->timer) && r->req_body.done)
            loop_timer_cancel(session_loop(s), &s->timer);
    }
    return progress;
}

static bool request_complete(const struct request *r)
{
    if (!outq_empty(&r->cl_out))
        return false;
    if (r->generated)
        return true;
    if (r->tunnel)
        return r->up_eof && buf_len(&r->up_in) == 0;
    return r->resp_started && r->resp_body.done;
}

static void drive_request(struct session *s)
{
    struct request *r = s->req;
    for (;;) {
        bool progress = false;
        if (r->uc)
            progress |= drive_upstream(r);
        if (s->closed || s->req != r)
            return;
        progress |= drive_client(r);
        if (s->closed || s->req != r)
            return;
        if (r->up_eof && r->resp_started && !r->resp_body.done && !r->tunnel &&
            buf_len(&r->up_in) == 0 && outq_empty(&r->cl_out)) {
            if (r->resp_body.framing == HTTP_FRAMING_UNTIL_CLOSE) {
                r->resp_body.done = true;
                if (r->resp_body.chunked_out) {
                    memcpy(r->cl_out.post, "0\r\n\r\n", 5);
                    r->cl_out.post_len = 5;
                    r->cl_out.post_off = 0;
                }
                continue;
            }
            fail_request(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, 0);
            return;
        }
        if (request_complete(r)) {
            finish_request(s);
            return;
        }
        if (!progress)
            return;
    }
}

static void finish_request(struct session *s)
{
    struct request *r = s->req;
    if (r->tunnel) {
        log_request(r);
        session_close(s);
        return;
    }
    bool upstream_clean = r->resp_body.done && r->req_body.done && outq_empty(&r->up_out) &&
                          r->resp_keep_alive && buf_len(&r->up_in) == 0 && !r->up_eof &&
                          !r->up_rdhup; /* a FIN seen while ours: no edge will tell the pool */
    release_upstream(r, upstream_clean);
    log_request(r);
    bool keep = r->client_keep_alive && !s->closing && r->req_body.done && !s->eof;
    /* We close while the client may still be sending (a refused request,
     * an unread body): linger, or its unread bytes make our close a reset
     * that can destroy the response before the client reads it. */
    bool linger = !keep && !s->eof && (r->generated || !r->req_body.done || buf_len(&s->in));
    request_free(s->w, r);
    s->req = NULL;
    s->requests++;
    if (linger) {
        session_linger(s);
        return;
    }
    if (!keep) {
        session_close(s);
        return;
    }
    s->phase = PHASE_IDLE;
    if (buf_len(&s->in) == 0)
        buf_release(&s->in); /* idle connections hold no buffer */
    loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->keepalive_timeout_ms);
}

/* ---------- the client side between requests ---------- */

/* Our response is sent and we are closing: half-close, then read and drop
 * what the client still sends until it closes, for at most LINGER_MS
 * (a fixed bound: a client cannot extend it). */
static void session_linger(struct session *s)
{
    s->phase = PHASE_LINGER;
    shutdown(s->io.fd, SHUT_WR);
    buf_release(&s->in);
    loop_timer_set(session_loop(s), &s->timer, LINGER_MS);
    s->readable = true;
}

static void linger_read(struct session *s)
{
    char sink[4096];
    while (s->readable) {
        ssize_t n = read(s->io.fd, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->readable = false;
            return;
        }
        session_close(s); /* EOF or error: the client is done */
        return;
    }
}

static void client_timeout(struct timer *t)
{
    struct session *s = container_of(t, struct session, timer);
    struct request *r = s->req;
    if (s->phase == PHASE_LINGER) {
        session_close(s);
        return;
    }
    if (!r) {
        if (s->phase == PHASE_HEADER) {
            /* RFC 9110 15.5.9: 408 for a request header that never completed */
            r = request_new(s);
            if (r) {
                s->req = r;
                r->t_start_ms = loop_now_ms(session_loop(s));
                new_request_id(r, s->w);
                s->phase = PHASE_REQUEST;
                r->req_body.done = true;
                refuse_request(s, r, 408, CAUSE_CLIENT_TIMEOUT, "request header timeout");
                session_drive(s);
                return;
            }
        }
        session_close(s);
        return;
    }
    if (!r->resp_started && !r->req_body.done) {
        release_upstream(r, false);
        refuse_request(s, r, 408, CAUSE_CLIENT_TIMEOUT, "request body timeout");
        session_drive(s);
        return;
    }
    /* the client stopped reading our response */
    if (!r->status)
        r->status = 499;
    log_request(r);
    session_close(s);
}

/* Read and parse the next request header. Returns true if a request
 * started (or was refused). */
static bool read_request_header(struct session *s)
{
    /* A reload applies to a kept-alive connection from its next request. */
    if (s->set != s->w->set && s->phase == PHASE_IDLE) {
        upstream_set_leave(s->set);
        s->set = s->w->set;
        upstream_set_use(s->set);
    }
    const struct config *cfg = session_cfg(s);
    for (;;) {
        if (buf_len(&s->in)) {
            struct http_request *hr = &s->w->scratch_req;
            enum http_error herr = HTTP_OK;
            struct http_limits limits = {cfg->max_request_line, cfg->max_header_bytes};
            int hl = http_parse_request(buf_head(&s->in), buf_len(&s->in), &limits, hr, &herr);
            if (hl != HTTP_INCOMPLETE) {
                struct request *r = request_new(s);
                if (!r) {
                    session_close(s);
                    return true;
                }
                s->req = r;
                s->phase = PHASE_REQUEST;
                r->t_start_ms = loop_now_ms(session_loop(s));
                new_request_id(r, s->w);
                if (hl < 0) {
                    r->minor_version = 1;
                    r->req_body.done = true;
                    refuse_request(s, r, http_error_status(herr), CAUSE_HTTP_REQUEST_ERROR,
                                   http_error_text(herr));
                    return true;
                }
                loop_timer_cancel(session_loop(s), &s->timer);
                start_request(s, r, hr, (size_t)hl);
                return true;
            }
            if (s->phase == PHASE_IDLE) {
                /* a new connection's header timer runs since accept */
                s->phase = PHASE_HEADER;
                if (s->requests)
                    loop_timer_set(session_loop(s), &s->timer, cfg->client_header_timeout_ms);
            }
        }
        if (!s->readable || s->eof)
            return false;
        if (buf_acquire(&s->in) < 0) {
            session_close(s);
            return true;
        }
        ssize_t n = read_into(s->io.fd, &s->in, &s->readable, s->rdhup);
        if (n == -EAGAIN)
            return false;
        if (n == -ENOBUFS)
            continue; /* the parser reports the over-limit header */
        if (n <= 0) {
            s->eof = true;
            session_close(s);
            return true;
        }
    }
}

static void session_drive(struct session *s)
{
    while (!s->closed) {
        if (s->phase == PHASE_LINGER) {
            linger_read(s);
            return;
        }
        if (s->req) {
            drive_request(s);
            if (s->req || s->closed)
                return;
            continue; /* finished: a pipelined request may already be buffered */
        }
        if (s->w->draining && s->phase == PHASE_IDLE && buf_len(&s->in) == 0) {
            session_close(s);
            return;
        }
        if (!read_request_header(s)) {
            if (s->phase == PHASE_IDLE && buf_len(&s->in) == 0)
                buf_release(&s->in);
            return;
        }
    }
}
