/* The HTTP/1.1 exchange with an upstream: the forwarded request head, body
 * framing both ways, the response head for the client, and whether the
 * connection may carry another exchange.
 *
 * The head builders are pure: they write into a bounded writer and either
 * the whole head fits or the writer overflows and nothing is sent. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <string.h>

static void put_field(struct wbuf *w, const struct http_header *h)
{
    wbuf_put(w, h->name, h->name_len);
    wbuf_put(w, ": ", 2);
    wbuf_put(w, h->value, h->value_len);
    wbuf_put(w, "\r\n", 2);
}

/* Every value of the forwarded (not hop-by-hop) fields with this name, each
 * followed by ", " (RFC 9110 5.3: several field lines are one list). */
static void put_values(struct wbuf *w, const struct http_request *hr, const char *name)
{
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (http_name_is(h, name) && h->value_len &&
            !http_is_hop_by_hop(h, hr->headers, hr->num_headers)) {
            wbuf_put(w, h->value, h->value_len);
            wbuf_put(w, ", ", 2);
        }
    }
}

void http1_build_request_head(struct wbuf *w, const struct http_request *hr,
                              const struct forward_opts *o)
{
    wbuf_put(w, hr->method, hr->method_len);
    wbuf_put(w, " ", 1);
    /* RFC 9112 3.2: the request-target is forwarded exactly as received
     * (a server must accept the absolute-form, 3.2.2); Host below agrees. */
    wbuf_put(w, hr->target, hr->target_len);
    wbuf_put(w, " HTTP/1.1\r\n", 11);
    /* RFC 9112 3.2: Host is always sent, first; for absolute-form the
     * parser set host to the target's authority (3.2.2). A Connection
     * option naming Host cannot remove it. */
    const char *host = hr->host ? hr->host : o->default_host;
    size_t host_len = hr->host ? hr->host_len : strlen(o->default_host);
    wbuf_put(w, "Host: ", 6);
    wbuf_put(w, host, host_len);
    wbuf_put(w, "\r\n", 2);
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (http_name_is(h, "Host"))
            continue;
        if (http_is_hop_by_hop(h, hr->headers, hr->num_headers))
            continue;
        if (http_name_is(h, "Content-Length") || http_name_is(h, "Expect") ||
            http_name_is(h, "X-Request-Id"))
            continue; /* framing is re-added below; 100-continue is ours to answer */
        if ((o->x_forwarded_for && http_name_is(h, "X-Forwarded-For")) ||
            (o->via && http_name_is(h, "Via")))
            continue; /* joined below, with our hop added */
        /* Set, not appended: a client must not choose what the app trusts. */
        if ((o->x_forwarded_proto && http_name_is(h, "X-Forwarded-Proto")) ||
            (o->x_forwarded_host && http_name_is(h, "X-Forwarded-Host")))
            continue;
        put_field(w, h);
    }
    if (hr->upgrade) {
        const struct http_header *up = http_find_header(hr->headers, hr->num_headers, "Upgrade");
        wbuf_put(w, "Connection: upgrade\r\nUpgrade: ", 30);
        wbuf_put(w, up->value, up->value_len);
        wbuf_put(w, "\r\n", 2);
    }
    if (o->x_forwarded_for) {
        wbuf_put(w, "X-Forwarded-For: ", 17);
        put_values(w, hr, "X-Forwarded-For");
        wbuf_puts(w, o->client_ip);
        wbuf_put(w, "\r\n", 2);
    }
    if (o->x_forwarded_proto)
        wbuf_put(w, "X-Forwarded-Proto: http\r\n", 25);
    if (o->x_forwarded_host && hr->host) {
        wbuf_put(w, "X-Forwarded-Host: ", 18);
        wbuf_put(w, hr->host, hr->host_len);
        wbuf_put(w, "\r\n", 2);
    }
    if (o->via) {
        wbuf_put(w, "Via: ", 5);
        put_values(w, hr, "Via");
        wbuf_put(w, hr->minor_version ? "1.1 bulwark\r\n" : "1.0 bulwark\r\n", 13);
    }
    if (hr->framing == HTTP_FRAMING_LENGTH) {
        wbuf_put(w, "Content-Length: ", 16);
        wbuf_u64(w, hr->content_length);
        wbuf_put(w, "\r\n", 2);
    } else if (hr->framing == HTTP_FRAMING_CHUNKED) {
        wbuf_put(w, "Transfer-Encoding: chunked\r\n", 28);
    }
    wbuf_put(w, "X-Request-Id: ", 14);
    wbuf_puts(w, o->rid);
    wbuf_put(w, "\r\n\r\n", 4);
}

void http1_build_response_head(struct wbuf *w, const struct http_response *resp,
                               const struct relay_opts *o)
{
    char status[13] = "HTTP/1.1 000 ";
    status[9] = (char)('0' + resp->status / 100 % 10);
    status[10] = (char)('0' + resp->status / 10 % 10);
    status[11] = (char)('0' + resp->status % 10);
    wbuf_put(w, status, sizeof(status));
    wbuf_put(w, resp->reason, resp->reason_len);
    wbuf_put(w, "\r\n", 2);
    bool switching = resp->status == 101;
    for (size_t i = 0; i < resp->num_headers; i++) {
        const struct http_header *h = &resp->headers[i];
        if (http_is_hop_by_hop(h, resp->headers, resp->num_headers) &&
            !(switching && http_name_is(h, "Upgrade")))
            continue;
        if (http_name_is(h, "Content-Length") && resp->framing == HTTP_FRAMING_LENGTH)
            continue; /* re-added below */
        if (resp->status >= 200 && http_name_is(h, "X-Request-Id"))
            continue; /* ours is the one the client and the logs know */
        put_field(w, h);
    }
    if (resp->status < 200) {
        if (switching)
            wbuf_put(w, "Connection: upgrade\r\n", 21);
        wbuf_put(w, "\r\n", 2);
        return;
    }
    if (o->via)
        wbuf_put(w, resp->minor_version ? "Via: 1.1 bulwark\r\n" : "Via: 1.0 bulwark\r\n", 18);
    wbuf_put(w, "X-Request-Id: ", 14);
    wbuf_puts(w, o->rid);
    wbuf_put(w, "\r\n", 2);
    if (resp->framing == HTTP_FRAMING_LENGTH) {
        wbuf_put(w, "Content-Length: ", 16);
        wbuf_u64(w, resp->content_length);
        wbuf_put(w, "\r\n", 2);
    } else if (o->chunked_out) {
        wbuf_put(w, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (o->extra)
        wbuf_put(w, o->extra, o->extra_len);
    if (o->close)
        wbuf_put(w, "Connection: close\r\n", 19);
    else if (o->keep_alive_10)
        wbuf_put(w, "Connection: keep-alive\r\n", 24);
    wbuf_put(w, "\r\n", 2);
}

static int h1_build_request(struct request *r, const struct http_request *hr, struct buf *out)
{
    const struct config *cfg = session_cfg(r->s);
    struct forward_opts o = {
        .x_forwarded_for = cfg->x_forwarded_for,
        .x_forwarded_proto = cfg->x_forwarded_proto,
        .x_forwarded_host = cfg->x_forwarded_host,
        .via = cfg->via,
        .client_ip = r->s->ip, /* the hop we received, not r->client_ip (README) */
        .rid = r->rid,
        .default_host = r->group->cfg->name,
    };
    if (buf_acquire(out) < 0)
        return -ENOMEM;
    struct wbuf w = buf_writer(out);
    http1_build_request_head(&w, hr, &o);
    return buf_commit(out, &w) ? 0 : -ENOSPC;
}

static int h1_encode_body(struct request *r, struct buf *src, struct outq *q, enum http_error *err)
{
    return body_prepare(&r->req_body, src, false, q, err);
}

static int h1_parse_head(struct request *r, const char *p, size_t n, struct http_response *resp,
                         enum http_error *err)
{
    return http_parse_response(p, n, session_cfg(r->s)->max_header_bytes, r->method, resp, err);
}

static int h1_decode_body(struct request *r, struct buf *in, bool src_eof, struct outq *q,
                          enum http_error *err)
{
    return body_prepare(&r->resp_body, in, src_eof, q, err);
}

/* Reuse only a connection whose exchange ended exactly: the whole request
 * went out, the whole response came in, nothing more is buffered or
 * waiting in the socket, and the upstream allows it. Anything unread would
 * become the next client's response. */
static bool h1_reusable(struct request *r)
{
    return r->state == REQ_RELAY && r->resp_keep_alive && r->resp_body.done && r->req_body.done &&
           outq_empty(&r->up_out) && buf_len(&r->up_in) == 0 && transport_quiet(&r->at.t);
}

const struct exchange_ops exchange_http1 = {
    .name = "http",
    .build_request = h1_build_request,
    .encode_body = h1_encode_body,
    .parse_head = h1_parse_head,
    .decode_body = h1_decode_body,
    .reusable = h1_reusable,
};
