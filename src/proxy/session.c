/* One client connection: accept, read and parse each request head
 * (strict), hand it to request_start, and between requests keep-alive,
 * linger or close. What happens to a request from there is in forward.c
 * and request.c. */
#include "proxy/proxy_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "limit/limit.h"

/* How long a closing connection keeps reading (and dropping) what the client
 * still sends, so our last response is not destroyed by a reset. */
#define LINGER_MS 2000

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

static void session_free_deferred(struct deferred *d)
{
    struct worker *w = container_of(d, struct worker, sweep);
    while (w->graveyard) {
        struct session *s = w->graveyard;
        w->graveyard = s->next;
        free(s);
    }
}

/* Close the connection. A request still running ends first (request_end
 * is the only way out of a request), so nothing it holds is leaked. */
void session_close(struct session *s)
{
    if (s->closed)
        return;
    if (s->req) {
        request_client_gone(s->req, 499);
        if (s->closed)
            return;
    }
    s->closed = true;
    struct worker *w = s->w;
    if (s->conn_counted)
        limit_conn_release(&s->conn_key, 0, LIMIT_CONNECTIONS);
    defence_wait_end(s);
    loop_timer_cancel(w->loop, &s->timer);
    buf_release(&s->in);
    /* Deregister before close: a process forked meanwhile (a program's
     * keeper) may hold the socket, and epoll would report it after free. */
    loop_del(w->loop, &s->io);
    close(s->io.fd);
    s->io.fd = -1;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->num_sessions--;
    if (w->draining && w->num_sessions == 0)
        loop_timer_set(w->loop, &w->housekeeping, 0); /* the drain is over: stop now */
    observe_gauge_add(GAUGE_CLIENT_CONNECTIONS, -1);
    worker_client_closed();
    upstream_set_leave(s->set);
    s->next = w->graveyard;
    w->graveyard = s;
    w->sweep.cb = session_free_deferred;
    loop_defer(w->loop, &w->sweep);
}

static void client_event(struct io *io, uint32_t events)
{
    struct session *s = container_of(io, struct session, io);
    if (s->closed)
        return;
    /* A reset (or error) while a request runs: nothing can be delivered.
     * Stop the upstream work now instead of letting it run to its timeouts
     * and retries. A FIN alone is not an abort: a half-closed client may
     * still read the response (as HAProxy; nginx aborts on FIN too). */
    if ((events & (EPOLLHUP | EPOLLERR)) && s->req) {
        request_client_gone(s->req, 499);
        if (!s->closed)
            session_close(s);
        return;
    }
    transport_on_event(&s->t, events);
    session_drive(s);
}

static void client_timeout(struct timer *t);

/* Refusals of whole connections by our own rules are logged at most this
 * often per second per worker (then one line says how many were not): a
 * flood of refused connections must not become a flood of log lines. */
#define REFUSAL_LOGS_PER_SECOND 20
static __thread uint64_t refusal_log_second;
static __thread unsigned refusal_logs, refusal_logs_dropped;

static bool refusal_log_allowed(struct worker *w)
{
    uint64_t second = loop_now_ms(w->loop) / 1000;
    if (second != refusal_log_second) {
        if (refusal_logs_dropped)
            log_warn("%u more connection refusals were not logged in the last second",
                     refusal_logs_dropped);
        refusal_log_second = second;
        refusal_logs = refusal_logs_dropped = 0;
    }
    if (refusal_logs < REFUSAL_LOGS_PER_SECOND) {
        refusal_logs++;
        return true;
    }
    refusal_logs_dropped++;
    return false;
}

/* Answers to a connection refused before any request is read: written
 * with one non-blocking send(), then the connection is closed. */
static const char over_connections[] =
    "HTTP/1.1 429 Too Many Requests\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 63\r\n"
    "Retry-After: 1\r\n"
    "Proxy-Status: bulwark; error=http_request_denied; details=\"conn_limit connections\"\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Too many connections from your address: try again in a moment.\n";
static const char table_full[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 63\r\n"
    "Retry-After: 1\r\n"
    "Proxy-Status: bulwark; error=http_request_denied; details=\"conn_limit table full\"\r\n"
    "Connection: close\r\n"
    "\r\n"
    "The proxy is tracking too many clients: try again in a moment.\n";

/* Close s after sending what (may be NULL): half-close and drop what
 * already arrived first, or the close resets the answer away. */
static void session_refuse(struct session *s, const char *what, size_t len)
{
    if (what) {
        ssize_t n = send(s->io.fd, what, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n; /* a full or reset socket: the close is the answer */
        shutdown(s->io.fd, SHUT_WR);
        char sink[4096];
        for (int i = 0; i < 16 && recv(s->io.fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
            ;
    }
    session_close(s);
}

/* conn_limit.connections for the connection's address (the PROXY header's
 * once it is read). Connections from trusted_proxies are not counted: one
 * load balancer carries many clients. Returns false after refusing it. */
static bool session_admit(struct session *s)
{
    const struct config *cfg = session_cfg(s);
    const struct config_conn_limit *cl = &cfg->conn_limit;
    struct limit_addr a;

    if (!cl->connections || !limit_addr_from_sockaddr(&s->peer.sa, &a) ||
        cidr_list_match(&cfg->trusted_proxies, &a))
        return true;
    enum limit_verdict v =
        limit_conn_acquire(&a, 0, LIMIT_CONNECTIONS, cl->connections, cl->max_keys);
    if (v == LIMIT_OK) {
        s->conn_counted = true;
        s->conn_key = a;
        return true;
    }
    if (v == LIMIT_OVER) {
        limit_count_denied(DENIED_CONN_LIMIT_CONNECTIONS);
        if (refusal_log_allowed(s->w))
            log_warn("client connection refused with 429: %s has conn_limit.connections (%u) "
                     "open; client=%s rule=conn_limit.connections",
                     s->ip, cl->connections, s->ip);
        session_refuse(s, over_connections, sizeof(over_connections) - 1);
    } else {
        limit_count_denied(DENIED_TABLE_FULL);
        if (refusal_log_allowed(s->w))
            log_error("client connection refused with 503: the conn_limit table holds "
                      "max_keys (%u) clients; client=%s",
                      cl->max_keys, s->ip);
        session_refuse(s, table_full, sizeof(table_full) - 1);
    }
    return false;
}

static void proxy_refused(struct session *s, const char *why)
{
    limit_count_denied(DENIED_PROXY_PROTOCOL);
    if (refusal_log_allowed(s->w))
        log_warn("client connection closed: %s; peer=%s cause=proxy_protocol_rejected", why, s->ip);
    session_refuse(s, NULL, 0);
}

/* A PROXY protocol listener: read the header before any HTTP byte (under
 * the header timeout set at accept). Returns true when it is done (the
 * session may be closed), false to wait for more bytes. */
static bool session_read_proxy(struct session *s)
{
    for (;;) {
        struct proxy_header ph;
        const char *why = NULL;
        /* Nothing read yet: no block either (buf_head would be NULL + 0). */
        int n = buf_len(&s->in) ? proxy_parse(buf_head(&s->in), buf_len(&s->in), &ph, &why)
                                : PROXY_INCOMPLETE;
        if (n == PROXY_INVALID) {
            proxy_refused(s, why);
            return true;
        }
        if (n > 0) {
            buf_consume(&s->in, (size_t)n);
            if (ph.has_addr) {
                if (ph.src.ss_family == AF_INET6)
                    memcpy(&s->peer.sin6, &ph.src, sizeof(s->peer.sin6));
                else
                    memcpy(&s->peer.sin, &ph.src, sizeof(s->peer.sin));
                peer_text(s, s->ip, sizeof(s->ip));
            }
            s->phase = PHASE_IDLE;
            session_admit(s);
            return true;
        }
        if (!s->t.readable)
            return false;
        if (s->t.eof) {
            proxy_refused(s, "the connection closed before its PROXY header was complete");
            return true;
        }
        if (buf_acquire(&s->in) < 0) {
            log_error("out of memory reading a PROXY header from %s; closing the connection",
                      s->ip);
            session_close(s);
            return true;
        }
        /* HTTP bytes read after the header stay in the block, where the
         * request parser takes them. */
        ssize_t got = transport_read(&s->t, buf_tail(&s->in), buf_room(&s->in));
        if (got == -EAGAIN)
            return false;
        if (got <= 0) {
            proxy_refused(s, "the connection closed before its PROXY header was complete");
            return true;
        }
        s->in.end += (uint32_t)got;
    }
}

void session_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len,
                    bool proxy_protocol)
{
    struct session *s = calloc(1, sizeof(*s));
    if (!s) {
        log_error("out of memory accepting a connection; closed it");
        close(fd);
        worker_client_closed();
        return;
    }
    s->io.fd = fd;
    s->io.on_event = client_event;
    transport_init(&s->t, fd);
    s->w = w;
    s->set = w->set;
    upstream_set_use(s->set);
    if (len <= sizeof(s->peer))
        memcpy(&s->peer, peer, len);
    peer_text(s, s->ip, sizeof(s->ip));
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
    /* The first request's header must arrive within header_timeout (the
     * PROXY header too, on such a listener). */
    loop_timer_set(w->loop, &s->timer, session_cfg(s)->client_header_timeout_ms);
    s->t.readable = true; /* data often arrives with the handshake */
    s->t.writable = true;
    if (proxy_protocol) {
        struct limit_addr a;
        /* Whoever sends the header chooses the client address: only the
         * load balancers named in trusted_proxies may. */
        if (!limit_addr_from_sockaddr(&s->peer.sa, &a) ||
            !cidr_list_match(&session_cfg(s)->trusted_proxies, &a)) {
            proxy_refused(s, "PROXY protocol listener: the peer is not in trusted_proxies");
            return;
        }
        s->phase = PHASE_PROXY;
    } else if (!session_admit(s)) {
        return;
    }
    session_drive(s);
}

void session_close_all(struct worker *w)
{
    while (w->sessions)
        session_close(w->sessions);
}

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

/* Our response is sent and we are closing: half-close, then read and drop
 * what the client still sends until it closes, for at most LINGER_MS
 * (a fixed bound: a client cannot extend it). */
static void session_linger(struct session *s)
{
    s->phase = PHASE_LINGER;
    transport_shutdown_write(&s->t);
    buf_release(&s->in);
    loop_timer_set(session_loop(s), &s->timer, LINGER_MS);
    s->t.readable = true;
}

bool session_input_pending(const struct session *s)
{
    int n = 0;
    return buf_len(&s->in) || (ioctl(s->io.fd, FIONREAD, &n) == 0 && n > 0);
}

void session_request_done(struct session *s, enum session_next next)
{
    s->requests++;
    if (s->closed)
        return;
    switch (next) {
    case NEXT_LINGER:
        session_linger(s);
        return;
    case NEXT_RESET: {
        struct linger lg = {1, 0}; /* close() sends RST */
        setsockopt(s->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        session_close(s);
        return;
    }
    case NEXT_CLOSE:
        session_close(s);
        return;
    case NEXT_KEEP:
        break;
    }
    s->phase = PHASE_IDLE;
    if (buf_len(&s->in) == 0) {
        buf_release(&s->in); /* idle connections hold no buffer */
        defence_idle_wait(s);
    }
    loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->keepalive_timeout_ms);
}

static void linger_read(struct session *s)
{
    char sink[4096];
    while (s->t.readable) {
        ssize_t n = transport_read(&s->t, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n == -EAGAIN)
            return;
        session_close(s); /* EOF or error: the client is done */
        return;
    }
}

/* A new request for this session (the head arrived, or it never will). */
static struct request *session_new_request(struct session *s)
{
    struct request *r = request_new(s);
    if (!r) {
        log_error("out of memory for a request from %s; closing the connection", s->ip);
        session_close(s);
        return NULL;
    }
    s->req = r;
    s->phase = PHASE_REQUEST;
    defence_wait_end(s); /* its head is over, whole or refused */
    request_new_id(r, s->w);
    return r;
}

static void client_timeout(struct timer *t)
{
    struct session *s = container_of(t, struct session, timer);
    struct request *r = s->req;
    if (s->phase == PHASE_LINGER) {
        session_close(s);
        return;
    }
    if (s->phase == PHASE_PROXY) {
        proxy_refused(s, "no complete PROXY header within header_timeout");
        return;
    }
    if (!r) {
        if (s->phase == PHASE_HEADER) {
            /* RFC 9110 15.5.9: 408 for a request header that never completed */
            r = session_new_request(s);
            if (!r)
                return;
            r->minor_version = 1;
            r->req_body.done = true;
            request_refuse(r, 408, CAUSE_CLIENT_TIMEOUT, "request header timeout");
            session_drive(s);
            return;
        }
        session_close(s);
        return;
    }
    uint64_t now = loop_now_ms(session_loop(s));
    bool too_slow = defence_body_too_slow(r, now);
    if (too_slow)
        defence_body_cut(r, now);
    if (!request_head_sent(r) && !r->req_body.done) {
        request_refuse(r, 408, too_slow ? CAUSE_CLIENT_SLOW_BODY : CAUSE_CLIENT_TIMEOUT,
                       too_slow ? "request body below client.min_body_rate"
                                : "request body timeout");
        session_drive(s);
        return;
    }
    /* the client stopped reading our response */
    request_client_gone(r, 499);
}

/* Nothing more to read now and no whole head: a new connection, or one
 * with part of a head, waits in the header list (max_header_connections);
 * an idle keep-alive connection stays in the idle list. */
static void session_wait_head(struct session *s)
{
    if (s->wait == WAIT_NONE && !s->t.eof && (s->requests == 0 || buf_len(&s->in)))
        defence_header_wait(s);
}

/* Read and parse the next request head. Returns true if a request started
 * (or was refused, or the session closed). */
static bool session_read_header(struct session *s)
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
            if (hl == HTTP_INCOMPLETE && buf_len(&s->in) == BUF_SIZE) {
                /* The head fills the whole buffer and is not complete: it
                 * can never be, whatever max_header_size says. */
                hl = -2;
                herr = HTTP_ERR_HEADERS_TOO_LARGE;
            }
            if (hl != HTTP_INCOMPLETE) {
                struct request *r = session_new_request(s);
                if (!r)
                    return true;
                loop_timer_cancel(session_loop(s), &s->timer);
                if (hl < 0) {
                    r->minor_version = 1;
                    r->req_body.done = true;
                    /* RFC 9110 9.3.2: the answer to a HEAD has no body, even a
                     * refusal (the request line may be all that parsed). */
                    if (buf_len(&s->in) >= 5 && memcmp(buf_head(&s->in), "HEAD ", 5) == 0)
                        r->method = HTTP_METHOD_HEAD;
                    request_refuse(r, http_error_status(herr), CAUSE_HTTP_REQUEST_ERROR,
                                   http_error_text(herr));
                    return true;
                }
                request_start(s, r, hr, (size_t)hl);
                return true;
            }
            if (s->phase == PHASE_IDLE) {
                /* a new connection's header timer runs since accept */
                s->phase = PHASE_HEADER;
                if (s->requests)
                    loop_timer_set(session_loop(s), &s->timer, cfg->client_header_timeout_ms);
            }
        }
        if (!s->t.readable || s->t.eof) {
            session_wait_head(s);
            return false;
        }
        if (buf_acquire(&s->in) < 0) {
            log_error("out of memory reading a request from %s; closing the connection", s->ip);
            session_close(s);
            return true;
        }
        if (buf_room(&s->in) == 0)
            buf_compact(&s->in);
        ssize_t n = transport_read(&s->t, buf_tail(&s->in), buf_room(&s->in));
        if (n == -EAGAIN) {
            session_wait_head(s);
            return false;
        }
        if (n <= 0) {
            session_close(s);
            return true;
        }
        s->in.end += (uint32_t)n;
        if (s->wait == WAIT_IDLE)
            defence_wait_end(s); /* no longer idle: its next request is coming */
    }
}

void session_drive(struct session *s)
{
    while (!s->closed) {
        if (s->phase == PHASE_LINGER) {
            linger_read(s);
            return;
        }
        if (s->phase == PHASE_PROXY) {
            if (!session_read_proxy(s))
                return;
            continue;
        }
        if (s->req) {
            request_drive(s->req);
            if (s->req || s->closed)
                return;
            continue; /* finished: a pipelined request may already be buffered */
        }
        if (s->w->draining && s->phase == PHASE_IDLE && buf_len(&s->in) == 0) {
            session_close(s);
            return;
        }
        if (!session_read_header(s)) {
            if (s->phase == PHASE_IDLE && buf_len(&s->in) == 0)
                buf_release(&s->in);
            return;
        }
    }
}
