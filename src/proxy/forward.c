/* Driving one request: the request out to the upstream, the response head
 * in, the body relayed both ways with backpressure, until request_end.
 *
 * request_drive runs every step that can progress now, on readiness flags
 * kept by each side's transport (edge-triggered epoll):
 *   upstream_send     request head and body pieces from the client buffer
 *   receive_head      response heads (1xx, then the final one)
 *   receive_body      response body (or tunnel) bytes, as the client takes them
 *   client_send       the response head and body pieces to the client
 * and ends the request when its state says it is complete. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <string.h>

static uint64_t now_ms(const struct request *r)
{
    return loop_now_ms(session_loop(r->s));
}

static void set_attempt_timer(struct request *r, uint32_t ms)
{
    loop_timer_set(session_loop(r->s), &r->at.timer, ms);
}

/* Queue the next piece of the request body. False when the request ended
 * or was refused (malformed chunked coding, over max_body_size). */
static bool queue_request_body(struct request *r)
{
    struct session *s = r->s;
    enum http_error herr = HTTP_OK;
    if (r->ex->encode_body(r, &s->in, &r->up_out, &herr) < 0) {
        if (request_head_sent(r)) {
            request_end(r, END_ABORT);
            return false;
        }
        if (herr == HTTP_OK)
            request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
        else
            request_refuse(r, 400, CAUSE_HTTP_REQUEST_ERROR, http_error_text(herr));
        return false;
    }
    uint64_t max_body = r->route->max_body_bytes;
    if (max_body && r->req_body.framing == HTTP_FRAMING_CHUNKED && r->req_body.bytes > max_body) {
        if (request_head_sent(r))
            request_end(r, END_ABORT);
        else
            request_refuse(r, 413, CAUSE_REQUEST_TOO_LARGE, "chunked body over max_body_size");
        return false;
    }
    return true;
}

/* Request head and body to the upstream; client body bytes read as the
 * upstream takes them. Returns true on progress (or when r changed). */
static bool upstream_send(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    const struct config_upstream *ucfg = r->group->cfg;
    bool progress = false;
    for (;;) {
        /* body bytes behind the head, so both leave in one writev() */
        if (!r->req_body.done && !r->continue_pending && !a->write_dead &&
            !outq_has_body(&r->up_out) && buf_len(&s->in)) {
            if (!queue_request_body(r))
                return true;
            progress = true;
        }
        if (!outq_empty(&r->up_out) && !a->write_dead) {
            bool had_body = outq_has_body(&r->up_out);
            bool wrote = false;
            int rc = outq_flush(&a->t, &r->up_out, &wrote);
            a->sent_any |= wrote;
            if (rc < 0) {
                /* The upstream stopped reading. Its response may already be
                 * waiting in the socket (an early 403 before a reset): read
                 * it before judging the attempt (receive_head does). What
                 * the client still sends is not read: close after. The
                 * queue is kept as it is: it tells a retry what was sent. */
                a->write_dead = true;
                a->write_err = -rc;
                a->t.readable = true;
                s->closing = true;
                break;
            }
            if (rc == 0) {
                if (r->state == REQ_FORWARD) {
                    set_attempt_timer(r, ucfg->send_timeout_ms);
                    /* the upstream is slow to take the body: not the client's fault */
                    loop_timer_cancel(session_loop(s), &s->timer);
                }
                break;
            }
            progress = true;
            if (had_body)
                r->body_consumed = true; /* gone from the client buffer: no replay */
            if (r->state == REQ_FORWARD) {
                if (r->req_body.done) {
                    /* all sent: read_timeout now bounds the whole response head */
                    if (!a->waiting) {
                        a->waiting = true;
                        set_attempt_timer(r, ucfg->read_timeout_ms);
                    }
                } else {
                    /* more body to come: the client's body timer governs */
                    loop_timer_cancel(session_loop(s), &a->timer);
                }
            }
        }
        if (r->req_body.done || a->write_dead)
            break;
        if (r->continue_pending) {
            if (buf_acquire(&r->cl_out.gen) < 0 ||
                !buf_append(&r->cl_out.gen, "HTTP/1.1 100 Continue\r\n\r\n", 25)) {
                request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
                return true;
            }
            r->continue_pending = false;
            r->body_rate_start_ms = now_ms(r); /* the client sends its body from now */
            progress = true;
            continue;
        }
        if (buf_len(&s->in))
            continue;
        if (s->t.eof)
            break;
        if (!s->t.readable) {
            /* waiting for the client's next body bytes */
            if (r->state != REQ_TUNNEL && !timer_armed(&s->timer))
                loop_timer_set(session_loop(s), &s->timer, defence_body_timer_ms(r, now_ms(r)));
            break;
        }
        if (buf_acquire(&s->in) < 0) {
            request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
            return true;
        }
        ssize_t n = transport_read(&s->t, buf_tail(&s->in), buf_room(&s->in));
        if (n == -EAGAIN) {
            if (r->state != REQ_TUNNEL)
                loop_timer_set(session_loop(s), &s->timer, defence_body_timer_ms(r, now_ms(r)));
            break;
        }
        if (n <= 0) {
            if (r->state == REQ_TUNNEL) {
                /* the client closed its side of the tunnel: pass it on */
                transport_shutdown_write(&a->t);
                r->req_body.done = true;
                break;
            }
            /* the client gave up in the middle of its body */
            request_client_gone(r, 400);
            return true;
        }
        s->in.end += (uint32_t)n;
        r->body_rate_bytes += (uint64_t)n;
        if (r->state == REQ_TUNNEL)
            set_attempt_timer(r, session_cfg(s)->tunnel_timeout_ms);
        else
            loop_timer_set(session_loop(s), &s->timer, defence_body_timer_ms(r, now_ms(r)));
    }
    return progress;
}

/* Where a response head's body goes, and how it is framed for the client. */
static void setup_response_body(struct request *r, const struct http_response *resp)
{
    struct session *s = r->s;
    struct body *b = &r->resp_body;
    *b = (struct body){.framing = resp->framing, .left = resp->content_length, .coding = BODY_RAW};
    if (resp->framing == HTTP_FRAMING_CHUNKED)
        http_chunked_init(&b->chunked);
    if (resp->status == 101) {
        b->framing = HTTP_FRAMING_UNTIL_CLOSE;
    } else if (resp->framing == HTTP_FRAMING_CHUNKED || resp->framing == HTTP_FRAMING_UNTIL_CLOSE) {
        if (r->minor_version == 1) {
            b->coding = BODY_RECHUNK;
        } else {
            /* HTTP/1.0: the body is sent decoded and our close ends it */
            b->coding = resp->framing == HTTP_FRAMING_CHUNKED ? BODY_DECODE : BODY_RAW;
            s->closing = true;
        }
    }
    b->done = resp->status != 101 && !r->resp_drain &&
              (resp->framing == HTTP_FRAMING_NONE ||
               (resp->framing == HTTP_FRAMING_LENGTH && resp->content_length == 0));
}

/* The client has its whole response, but the rest of the upstream's
 * (resp_drain) did not come cleanly or in time: the connection is closed,
 * not pooled, and the request ends (once its head has left) as the
 * success it is for the client. */
static void drain_abandon(struct request *r, const char *why)
{
    log_info("upstream connection to %s (upstream \"%s\") closed instead of pooled: %s after "
             "a complete response without body; rid=%s",
             r->at.server->cfg->addr.text, r->group->cfg->name, why, r->rid);
    attempt_release(r, false);
    r->resp_body.done = true;
}

void request_drain_timeout(struct request *r)
{
    drain_abandon(r, "its end did not arrive within the drain bound");
}

/* The upstream's Keep-Alive hints (timeout=, max=) for the pool. */
static void note_keep_alive(struct request *r, const struct http_response *resp)
{
    const struct http_header *ka = http_find_header(resp->headers, resp->num_headers, "Keep-Alive");
    r->ka_timeout_s = r->ka_max = 0;
    if (ka)
        http_parse_keep_alive(ka->value, ka->value_len, &r->ka_timeout_s, &r->ka_max);
}

/* A complete response head (interim or final) at the head of up_in.
 * Returns false when the request failed. */
static bool handle_head(struct request *r, const struct http_response *resp, size_t hdr_len)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    r->upstream_status = resp->status;
    if (resp->status == 101 && !r->upgrade) {
        attempt_log_failure(r, "reading the response from", CAUSE_HTTP_PROTOCOL_ERROR, 0,
                            "101 Switching Protocols to a request that asked no upgrade");
        request_fail(r, CAUSE_HTTP_PROTOCOL_ERROR, 0);
        return false;
    }
    struct relay_opts o = {
        .via = session_cfg(s)->via,
        .rid = r->rid,
        .extra = r->limit_headers_len ? r->limit_headers : NULL,
        .extra_len = r->limit_headers_len,
    };
    if (resp->status < 200 && resp->status != 101) {
        /* 1xx interim: forwarded to HTTP/1.1 clients, except 100 Continue,
         * which we answered ourselves. cl_out is empty here: the next head
         * is parsed only once this one has reached the client. */
        if (r->minor_version == 1 && resp->status != 100) {
            if (buf_acquire(&r->cl_out.gen) < 0) {
                request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
                return false;
            }
            struct wbuf w = buf_writer(&r->cl_out.gen);
            http1_build_response_head(&w, resp, &o);
            if (!buf_commit(&r->cl_out.gen, &w)) {
                attempt_log_failure(r, "relaying the interim response from",
                                    CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0,
                                    "interim response header too large for the buffer");
                request_fail(r, CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
                return false;
            }
        }
        buf_consume(&r->up_in, hdr_len);
        return true;
    }
    r->status = resp->status;
    a->t_header_ms = now_ms(r);
    attempt_end(r, CAUSE_NONE, 0);
    r->resp_keep_alive = resp->keep_alive;
    if (resp->keep_alive)
        note_keep_alive(r, resp);
    setup_response_body(r, resp);
    bool tunnel = resp->status == 101;
    /* The request is all sent and can no longer be retried: its block
     * carries the response head instead (one block fewer per request). */
    if (outq_empty(&r->up_out) && r->req_body.done && !tunnel && !r->cl_out.gen.data) {
        r->cl_out.gen.data = r->up_out.gen.data;
        r->cl_out.gen.start = r->cl_out.gen.end = 0;
        r->up_out.gen.data = NULL;
    }
    if (buf_acquire(&r->cl_out.gen) < 0) {
        request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
        return false;
    }
    o.chunked_out = r->resp_body.coding == BODY_RECHUNK;
    o.close = s->closing || !r->client_keep_alive;
    o.keep_alive_10 = !o.close && r->minor_version == 0;
    struct wbuf w = buf_writer(&r->cl_out.gen);
    http1_build_response_head(&w, resp, &o);
    if (!buf_commit(&r->cl_out.gen, &w)) {
        log_error("response header from %s (upstream \"%s\") with bulwark's fields does not fit "
                  "the %d-byte buffer; cause=http_response_header_section_size rid=%s",
                  a->server->cfg->addr.text, r->group->cfg->name, BUF_SIZE, r->rid);
        request_fail(r, CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
        return false;
    }
    buf_consume(&r->up_in, hdr_len);
    if (tunnel) {
        r->state = REQ_TUNNEL;
        r->req_body = (struct body){.framing = HTTP_FRAMING_UNTIL_CLOSE, .coding = BODY_RAW};
        set_attempt_timer(r, session_cfg(s)->tunnel_timeout_ms);
    } else {
        r->state = REQ_RELAY;
        uint32_t ms = r->group->cfg->read_timeout_ms;
        if (r->resp_drain && ms > UPSTREAM_DRAIN_MS)
            ms = UPSTREAM_DRAIN_MS; /* the whole drain, not re-armed by reads */
        set_attempt_timer(r, ms);
    }
    return true;
}

/* The upstream closed or reset before a whole response head: another
 * attempt if nothing came back (the retry rules decide), else a 502. */
static void upstream_gone_before_head(struct request *r, int err)
{
    struct attempt *a = &r->at;
    if (!err)
        err = a->write_err;
    if (!a->got_any) {
        attempt_failed(r, CAUSE_CONNECTION_TERMINATED, err, "request to", NULL);
        return;
    }
    attempt_log_failure(r, "reading the response header from", CAUSE_CONNECTION_TERMINATED, err,
                        err ? NULL : "closed before the end of the header");
    request_fail(r, CAUSE_CONNECTION_TERMINATED, err);
}

/* Response heads: parse what is buffered, read more. */
static bool receive_head(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    bool progress = false;
    for (;;) {
        while (r->state == REQ_FORWARD && buf_len(&r->up_in) && outq_empty(&r->cl_out)) {
            enum http_error herr = HTTP_OK;
            struct http_response *resp = &s->w->scratch_resp;
            int hl = r->ex->parse_head(r, buf_head(&r->up_in), buf_len(&r->up_in), resp, &herr);
            if (hl == HTTP_INCOMPLETE)
                break;
            if (hl < 0) {
                enum cause c =
                    herr == HTTP_ERR_HEADERS_TOO_LARGE || herr == HTTP_ERR_TOO_MANY_HEADERS
                        ? CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE
                        : CAUSE_HTTP_PROTOCOL_ERROR;
                attempt_log_failure(r, "parsing the response from", c, 0, http_error_text(herr));
                request_fail(r, c, 0);
                return true;
            }
            if (!handle_head(r, resp, (size_t)hl))
                return true;
            progress = true;
        }
        if (r->state != REQ_FORWARD)
            return progress;
        if (a->t.eof || a->read_err) {
            /* The upstream closed: what it sent before is still to be
             * parsed, once the interim response ahead of it has left. */
            if (buf_len(&r->up_in) && !outq_empty(&r->cl_out))
                return progress;
            upstream_gone_before_head(r, a->read_err);
            return true;
        }
        if (!a->t.readable)
            return progress;
        if (buf_acquire(&r->up_in) < 0) {
            request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
            return true;
        }
        if (buf_room(&r->up_in) == 0)
            buf_compact(&r->up_in);
        if (buf_room(&r->up_in) == 0) {
            if (!outq_empty(&r->cl_out))
                return progress; /* an interim response is on its way to the client */
            attempt_log_failure(r, "reading the response from",
                                CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0,
                                "response header section larger than the buffer");
            request_fail(r, CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE, 0);
            return true;
        }
        ssize_t n = transport_read(&a->t, buf_tail(&r->up_in), buf_room(&r->up_in));
        if (n == -EAGAIN)
            return progress;
        if (n < 0) {
            a->read_err = (int)-n;
            a->t.readable = false;
        }
        if (n <= 0) {
            progress = true;
            continue; /* judged above, after what is buffered is parsed */
        }
        r->up_in.end += (uint32_t)n;
        a->got_any = true;
        progress = true;
        /* no timer here: read_timeout bounds the whole head, not each byte */
    }
}

/* Response body bytes (or tunnel bytes) into up_in, when the client has
 * taken the previous piece. */
static bool receive_body(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    if (!a->t.readable || a->t.eof || !outq_empty(&r->cl_out) || buf_len(&r->up_in))
        return false;
    if (r->state == REQ_RELAY && r->resp_body.done)
        return false;
    if (buf_acquire(&r->up_in) < 0) {
        request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
        return true;
    }
    ssize_t n = transport_read(&a->t, buf_tail(&r->up_in), buf_room(&r->up_in));
    if (n == -EAGAIN)
        return false;
    if (n == 0 && a->write_err == ECONNRESET)
        n = -ECONNRESET; /* the write saw the reset: this end is not a clean close */
    if (n < 0) {
        if (r->resp_drain) {
            drain_abandon(r, strerror((int)-n));
            return true;
        }
        /* A reset is never the end of a body, not even a close-delimited
         * one: the client must not take a truncated body as whole. */
        if (r->state == REQ_TUNNEL)
            request_end(r, END_ABORT);
        else
            request_fail(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, (int)-n);
        return true;
    }
    if (n > 0) {
        r->up_in.end += (uint32_t)n;
        if (!r->resp_drain)
            set_attempt_timer(r, r->state == REQ_TUNNEL ? session_cfg(s)->tunnel_timeout_ms
                                                        : r->group->cfg->read_timeout_ms);
    }
    return true;
}

/* The connection's side: connect completion, request out, response in. */
static bool upstream_step(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    struct upstream_conn *uc = a->uc;
    bool progress = false;
    if (!uc->connected) {
        if (!a->t.writable && !a->t.readable)
            return false;
        int rc = upstream_connect_result(uc);
        if (rc < 0) {
            attempt_failed(r, cause_from_connect_errno(-rc), -rc, "connect() to", NULL);
            return true;
        }
        uc->connected = true;
        a->t_connected_ms = now_ms(r);
        set_attempt_timer(r, r->group->cfg->send_timeout_ms);
        progress = true;
    }
    progress |= upstream_send(r);
    if (s->req != r || a->uc != uc)
        return true;
    if (r->state == REQ_FORWARD) {
        progress |= receive_head(r);
        if (s->req != r || a->uc != uc)
            return true;
    }
    if (r->state == REQ_RELAY || r->state == REQ_TUNNEL)
        progress |= receive_body(r);
    return progress;
}

/* The client's side: the response (ours or relayed) out, with backpressure. */
static bool client_send(struct request *r)
{
    struct session *s = r->s;
    struct attempt *a = &r->at;
    bool progress = false;
    for (;;) {
        if ((r->state == REQ_RELAY || r->state == REQ_TUNNEL) && !r->resp_body.done &&
            !outq_has_body(&r->cl_out) && buf_len(&r->up_in)) {
            enum http_error herr = HTTP_OK;
            if (r->ex->decode_body(r, &r->up_in, a->t.eof, &r->cl_out, &herr) < 0) {
                if (r->resp_drain && herr != HTTP_OK) {
                    drain_abandon(r, http_error_text(herr));
                    return true;
                }
                if (herr == HTTP_OK) {
                    request_fail(r, CAUSE_PROXY_INTERNAL_ERROR, ENOMEM);
                    return true;
                }
                attempt_log_failure(r, "reading the response body from",
                                    CAUSE_HTTP_RESPONSE_INCOMPLETE, 0, http_error_text(herr));
                /* the head (and what was relayed) still goes out before the abort */
                outq_drop_body(&r->cl_out);
                outq_flush(&s->t, &r->cl_out, NULL);
                request_fail(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, 0);
                return true;
            }
            progress = true;
        }
        if (outq_empty(&r->cl_out))
            break;
        int rc = outq_flush(&s->t, &r->cl_out, NULL);
        if (rc < 0) {
            request_client_gone(r, 499); /* nothing more can be delivered */
            return true;
        }
        if (rc == 0) {
            loop_timer_set(session_loop(s), &s->timer, session_cfg(s)->send_timeout_ms);
            /* We stop reading the upstream until the client catches up:
             * the wait is the client's, so only its send_timeout runs. */
            if (r->state == REQ_RELAY)
                loop_timer_cancel(session_loop(s), &a->timer);
            break;
        }
        progress = true;
        if (timer_armed(&s->timer) && r->req_body.done)
            loop_timer_cancel(session_loop(s), &s->timer);
    }
    /* Waiting for the upstream's body again after the client caught up:
     * read_timeout runs again. */
    if (r->state == REQ_RELAY && a->uc && !r->resp_body.done && outq_empty(&r->cl_out) &&
        !timer_armed(&a->timer))
        set_attempt_timer(r, r->group->cfg->read_timeout_ms);
    return progress;
}

static bool request_complete(const struct request *r)
{
    if (!outq_empty(&r->cl_out))
        return false;
    switch (r->state) {
    case REQ_LOCAL:
        return true;
    case REQ_RELAY:
        return r->resp_body.done;
    case REQ_TUNNEL:
        return r->at.t.eof && buf_len(&r->up_in) == 0;
    case REQ_FORWARD:
    case REQ_QUEUED:
    case REQ_DELAYED:
        return false;
    }
    return false;
}

void request_drive(struct request *r)
{
    struct session *s = r->s;
    if (r->state == REQ_DELAYED) {
        /* Held by the rate limit: nothing to send or read yet. A client
         * that closes meanwhile gave up: the request ends here and never
         * reaches the upstream. */
        if (s->t.rdhup)
            request_client_gone(r, 499);
        return;
    }
    for (;;) {
        bool progress = false;
        if (r->at.uc) {
            progress |= upstream_step(r);
            if (s->req != r)
                return;
        }
        progress |= client_send(r);
        if (s->req != r)
            return;
        if (r->state == REQ_RELAY && r->at.t.eof && !r->resp_body.done && buf_len(&r->up_in) == 0 &&
            outq_empty(&r->cl_out)) {
            if (r->resp_drain) {
                drain_abandon(r, "the upstream closed");
                continue;
            }
            if (r->resp_body.framing != HTTP_FRAMING_UNTIL_CLOSE) {
                request_fail(r, CAUSE_HTTP_RESPONSE_INCOMPLETE, 0);
                return;
            }
            /* a clean close ends a close-delimited body */
            r->resp_body.done = true;
            if (r->resp_body.coding == BODY_RECHUNK) {
                memcpy(r->cl_out.post, "0\r\n\r\n", 5);
                r->cl_out.post_len = 5;
                r->cl_out.post_off = 0;
            }
            continue;
        }
        if (request_complete(r)) {
            request_end(r, END_COMPLETE);
            return;
        }
        if (!progress)
            return;
    }
}
