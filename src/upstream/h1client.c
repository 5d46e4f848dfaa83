/* One small HTTP/1 client: one exchange per call, non-blocking on a loop.
 * For the start-up probe (connect only) and health checks. Responses go
 * through the same strict parser and chunked decoder as the proxy's, so a
 * check fails on exactly what a request would fail on. */
#include "upstream/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The default response header limit, the parser's own. Above 32 KiB the
 * header and the kept body could not share one read block. */
#define H1_DEFAULT_HEADER_BYTES 16384
#define H1_MAX_HEADER_BYTES 32768

enum h1_state {
    H1_IDLE = 0,
    H1_REPORTING,  /* failed or done before any event: the report waits for the timer */
    H1_CONNECTING, /* the handshake is in progress */
    H1_SENDING,    /* the request is in the block, sending */
    H1_HEADER,     /* reading the response header (1xx skipped) */
    H1_BODY,       /* reading the body */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void close_socket(struct h1_client *c)
{
    if (c->io.fd < 0)
        return;
    loop_del(c->loop, &c->io);
    close(c->io.fd);
    c->io.fd = -1;
}

/* Close, then report. Touches nothing of c after the callback, which may
 * start c again or free it; the kept body stays readable until it returns. */
static void finish(struct h1_client *c, enum h1_failure failure, int err, enum http_error herr)
{
    loop_timer_cancel(c->loop, &c->timer);
    close_socket(c);
    struct h1_result r = c->res;
    r.failure = failure;
    r.err = err;
    r.http_err = herr;
    r.total_ms = (int64_t)(mono_ms() - c->start_ms);
    struct buf block = c->in;
    r.body = block.data ? block.data : "";
    r.body_len = block.data ? c->kept : 0;
    c->in = (struct buf){0};
    c->state = H1_IDLE;
    c->on_done(c, &r);
    buf_release(&block);
}

/* Report from the loop, not from inside h1_client_start(). */
static void report_soon(struct h1_client *c, enum h1_failure failure, int err)
{
    close_socket(c);
    c->res.failure = failure;
    c->res.err = err;
    c->state = H1_REPORTING;
    loop_timer_set(c->loop, &c->timer, 0);
}

static void timer_fired(struct timer *t)
{
    struct h1_client *c = container_of(t, struct h1_client, timer);
    switch (c->state) {
    case H1_REPORTING:
        finish(c, c->res.failure, c->res.err, HTTP_OK);
        break;
    case H1_CONNECTING:
        finish(c, H1_CONNECT_TIMEOUT, ETIMEDOUT, HTTP_OK);
        break;
    case H1_SENDING:
        finish(c, H1_SEND_TIMEOUT, ETIMEDOUT, HTTP_OK);
        break;
    case H1_HEADER:
        finish(c, H1_RESPONSE_TIMEOUT, ETIMEDOUT, HTTP_OK);
        break;
    case H1_BODY:
        finish(c, H1_READ_TIMEOUT, ETIMEDOUT, HTTP_OK);
        break;
    }
}

/* Input bytes [start, start+n) are processed: drop them. When nothing is
 * left unread, reads start again right after the kept body. */
static void consume(struct h1_client *c, size_t n)
{
    c->in.start += (uint32_t)n;
    if (c->in.start == c->in.end)
        c->in.start = c->in.end = c->kept;
}

/* Count n body bytes at p (inside the unread input) and keep what still
 * fits the excerpt at the front of the block. p is at or after
 * data + kept, so memmove only ever moves bytes down. */
static void keep_body(struct h1_client *c, const char *p, size_t n)
{
    c->res.body_bytes += n;
    size_t room = c->max_kept - c->kept;
    size_t k = n < room ? n : room;
    memmove(c->in.data + c->kept, p, k);
    c->kept += (uint32_t)k;
}

/* Process the body bytes read so far. Returns true once c is reported. */
static bool body_input(struct h1_client *c)
{
    char *p = buf_head(&c->in);
    size_t len = buf_len(&c->in);
    if (c->framing == HTTP_FRAMING_LENGTH) {
        /* Bytes after Content-Length are the server's problem: we close. */
        size_t n = len < c->body_left ? len : (size_t)c->body_left;
        keep_body(c, p, n);
        c->body_left -= n;
        consume(c, len);
        if (c->body_left == 0) {
            finish(c, H1_OK, 0, HTTP_OK);
            return true;
        }
        return false;
    }
    if (c->framing == HTTP_FRAMING_CHUNKED) {
        size_t data_len = len;
        enum http_error herr = HTTP_OK;
        ssize_t rc = http_chunked_decode(&c->chunked, p, &data_len, &herr);
        if (rc == -2) {
            finish(c, H1_PROTOCOL_ERROR, 0, herr);
            return true;
        }
        keep_body(c, p, data_len);
        consume(c, len);
        if (rc > 0) {
            finish(c, H1_OK, 0, HTTP_OK);
            return true;
        }
        return false;
    }
    keep_body(c, p, len); /* HTTP_FRAMING_UNTIL_CLOSE: the end is the close */
    consume(c, len);
    return false;
}

/* Parse the response header once it is complete. Returns true once c is
 * reported. */
static bool header_input(struct h1_client *c)
{
    for (;;) {
        struct http_response resp;
        enum http_error herr = HTTP_OK;
        int n = http_parse_response(buf_head(&c->in), buf_len(&c->in), c->max_header_bytes,
                                    c->method, &resp, &herr);
        if (n == HTTP_INCOMPLETE)
            return false;
        if (n < 0) {
            finish(c, herr == HTTP_ERR_HEADERS_TOO_LARGE ? H1_HEADER_TOO_LARGE : H1_PROTOCOL_ERROR,
                   0, herr);
            return true;
        }
        consume(c, (size_t)n);
        /* RFC 9110 15.2: interim responses precede the final one; 101
         * would switch protocols, which we never ask for: it ends the
         * exchange like a final response without a body. */
        if (resp.status < 200 && resp.status != 101)
            continue;
        c->res.status = resp.status;
        c->framing = (uint8_t)resp.framing;
        c->body_left = resp.content_length;
        http_chunked_init(&c->chunked);
        if (resp.status == 101 || resp.framing == HTTP_FRAMING_NONE ||
            (resp.framing == HTTP_FRAMING_LENGTH && resp.content_length == 0)) {
            finish(c, H1_OK, 0, HTTP_OK);
            return true;
        }
        c->state = H1_BODY;
        return buf_len(&c->in) ? body_input(c) : false;
    }
}

/* Read until EAGAIN (the socket is edge-triggered). */
static void read_response(struct h1_client *c)
{
    for (;;) {
        /* Interim responses were consumed from the front: reuse that room
         * (no body is kept before the final header). */
        if (c->state == H1_HEADER && c->in.start)
            buf_compact(&c->in);
        ssize_t n = read(c->io.fd, buf_tail(&c->in), buf_room(&c->in));
        if (n > 0) {
            c->in.end += (uint32_t)n;
            bool done = c->state == H1_HEADER ? header_input(c) : body_input(c);
            if (done)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        int err = n < 0 ? errno : 0;
        if (c->state == H1_HEADER)
            finish(c, H1_CLOSED, err, HTTP_OK);
        else if (c->framing == HTTP_FRAMING_UNTIL_CLOSE && !err)
            finish(c, H1_OK, 0, HTTP_OK);
        else
            finish(c, H1_BODY_INCOMPLETE, err, HTTP_OK);
        return;
    }
}

/* Send what is left of the request. Returns false once c is reported. */
static bool send_request(struct h1_client *c)
{
    while (buf_len(&c->in)) {
        ssize_t n = send(c->io.fd, buf_head(&c->in), buf_len(&c->in), MSG_NOSIGNAL);
        if (n > 0) {
            c->in.start += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true; /* the next EPOLLOUT edge resumes */
        finish(c, H1_SEND_FAILED, n < 0 ? errno : EPIPE, HTTP_OK);
        return false;
    }
    c->in.start = c->in.end = 0;
    c->state = H1_HEADER;
    return true;
}

/* The handshake is done. Returns false once c is reported. */
static bool connected(struct h1_client *c)
{
    c->res.connect_ms = (int64_t)(mono_ms() - c->start_ms);
    if (c->connect_only) {
        finish(c, H1_OK, 0, HTTP_OK);
        return false;
    }
    c->state = H1_SENDING;
    if (c->response_timeout_ms)
        loop_timer_set(c->loop, &c->timer, c->response_timeout_ms);
    else
        loop_timer_cancel(c->loop, &c->timer);
    return true;
}

static void on_event(struct io *io, uint32_t events)
{
    struct h1_client *c = container_of(io, struct h1_client, io);
    if (c->state == H1_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            finish(c, H1_CONNECT_FAILED, err, HTTP_OK);
            return;
        }
        if (!connected(c))
            return;
    }
    if (c->state == H1_SENDING && !send_request(c))
        return;
    if (c->state == H1_HEADER || c->state == H1_BODY)
        read_response(c);
}

void h1_client_init(struct h1_client *c, struct loop *loop,
                    void (*on_done)(struct h1_client *c, const struct h1_result *r))
{
    memset(c, 0, sizeof(*c));
    c->io.fd = -1;
    c->io.on_event = on_event;
    c->loop = loop;
    c->on_done = on_done;
    timer_init(&c->timer, timer_fired);
}

bool h1_client_busy(const struct h1_client *c)
{
    return c->state != H1_IDLE;
}

/* Serialise the request into the block. 0 or -E2BIG. */
static int build_request(struct h1_client *c, const struct h1_request *req)
{
    const char *method = req->method ? req->method : "GET";
    /* "unix:/path" is no host: a local socket's server is localhost */
    const char *host = req->host                           ? req->host
                       : req->addr.ss.ss_family == AF_UNIX ? "localhost"
                                                           : req->addr.text;
    int n = snprintf(buf_tail(&c->in), buf_room(&c->in),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n%s\r\n", method,
                     req->path ? req->path : "/", host, req->keep_alive ? "keep-alive" : "close",
                     req->headers ? req->headers : "");
    if (n < 0 || (size_t)n >= buf_room(&c->in))
        return -E2BIG;
    c->in.end += (uint32_t)n;
    c->method = strcmp(method, "HEAD") == 0 ? HTTP_METHOD_HEAD : HTTP_METHOD_GET;
    return 0;
}

int h1_client_start(struct h1_client *c, const struct h1_request *req)
{
    if (c->state != H1_IDLE)
        return -EBUSY;
    memset(&c->res, 0, sizeof(c->res));
    c->res.connect_ms = -1;
    c->connect_only = req->connect_only;
    c->response_timeout_ms = req->response_timeout_ms;
    size_t hdr = req->max_header_bytes ? req->max_header_bytes : H1_DEFAULT_HEADER_BYTES;
    c->max_header_bytes = (uint32_t)(hdr < H1_MAX_HEADER_BYTES ? hdr : H1_MAX_HEADER_BYTES);
    c->max_kept =
        (uint32_t)(req->max_body_kept < H1_MAX_KEPT_BODY ? req->max_body_kept : H1_MAX_KEPT_BODY);
    c->kept = 0;
    c->framing = HTTP_FRAMING_NONE;
    if (!req->connect_only) {
        if (buf_acquire(&c->in) < 0)
            return -ENOMEM;
        c->in.start = c->in.end = 0;
        if (build_request(c, req) < 0) {
            buf_release(&c->in);
            return -E2BIG;
        }
    }
    /* Fresh, and the loop's too: the timeouts below count from now even
     * when the caller did blocking work (DNS) since the loop last woke. */
    c->start_ms = loop_update_time(c->loop);

    const struct config_addr *a = &req->addr;
    c->io.fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->io.fd < 0) {
        report_soon(c, H1_CONNECT_FAILED, errno);
        return 0;
    }
    if (connect(c->io.fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        report_soon(c, H1_CONNECT_FAILED, errno);
        return 0;
    }
    int rc = loop_add(c->loop, &c->io);
    if (rc < 0) {
        report_soon(c, H1_CONNECT_FAILED, -rc);
        return 0;
    }
    /* Even a connect that completed at once is reported by the EPOLLOUT
     * that registering a connected socket produces. */
    c->state = H1_CONNECTING;
    if (req->connect_timeout_ms)
        loop_timer_set(c->loop, &c->timer, req->connect_timeout_ms);
    return 0;
}

void h1_client_cancel(struct h1_client *c)
{
    if (c->state == H1_IDLE)
        return;
    loop_timer_cancel(c->loop, &c->timer);
    close_socket(c);
    buf_release(&c->in);
    c->state = H1_IDLE;
}
