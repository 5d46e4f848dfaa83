/* Where failures become what the client sees: our own responses (error
 * pages with Proxy-Status, refusals), or an aborted connection when part of
 * the upstream's response already went out (a truncated body must never
 * look whole). */
#include "proxy/proxy_internal.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "supervise/supervise.h"

/* Error pages are built here first: custom pages may be up to 32 KiB. */
static __thread char page[40 * 1024];

void respond_local(struct request *r, int status, enum cause cause)
{
    struct session *s = r->s;
    /* A request answered while it waits for a slot (a client timeout)
     * leaves the queue now: a wake-up must never find it. */
    if (r->waiter.queued)
        upstream_unwait(r->group, &r->waiter);
    /* Likewise a request refused after its rate-limit check went out (413,
     * 431): the store's verdict, arriving while this answer is still being
     * written, would answer it again or forward it. */
    request_rate_limit_forget(r);
    r->state = REQ_LOCAL;
    r->status = status;
    r->resp_body = (struct body){.framing = HTTP_FRAMING_NONE, .done = true};
    outq_drop_body(&r->cl_out);
    if (buf_acquire(&r->cl_out.gen) < 0) {
        r->aborted = true;
        request_end(r, END_ABORT);
        return;
    }
    /* Details (addresses, errno) reach the client only when the config
     * says so: never leak internal addresses to the public by default.
     * RFC 9209 next-hop names the upstream group unless details are on. */
    char details[512];
    const struct upstream_server *srv = r->at.server;
    const char *program = r->program_evidence;
    bool exposed = observe_expose_details() && (srv || program[0]);
    if (exposed && srv)
        snprintf(details, sizeof(details), "%s: %s%s%s", srv->cfg->addr.text,
                 r->err ? strerror(r->err) : cause_get(cause)->sentence, program[0] ? "; " : "",
                 program);
    else if (exposed)
        snprintf(details, sizeof(details), "%s", program);
    const char *next_hop = NULL;
    if (srv)
        next_hop = exposed ? srv->cfg->addr.text : r->group->cfg->name;
    const char *shown = exposed ? details : NULL;
    /* A refusal of ours (a limit) names its own reason, with the same rule. */
    if (!srv && r->limit_details[0] && observe_expose_details())
        shown = r->limit_details;
    if (r->deny_details[0])
        shown = r->deny_details; /* our own access rule: the client may know which */
    const char *ctype;
    size_t blen = observe_error_page(page, sizeof(page), status, cause, r->rid, r->accept,
                                     r->accept_len, shown, &ctype);
    char ps[1536];
    size_t pl = observe_proxy_status(ps, sizeof(ps), cause, next_hop, shown);
    assert(pl > 0); /* a group name and 512 bytes of details always fit 1.5 KiB */

    struct wbuf w = buf_writer(&r->cl_out.gen);
    wbuf_puts(&w, "HTTP/1.1 ");
    wbuf_u64(&w, (uint64_t)status);
    wbuf_put(&w, " ", 1);
    wbuf_puts(&w, http_status_reason(status));
    wbuf_puts(&w, "\r\nServer: bulwark\r\nContent-Type: ");
    wbuf_puts(&w, ctype);
    wbuf_puts(&w, "\r\nContent-Length: ");
    wbuf_u64(&w, blen);
    wbuf_puts(&w, "\r\nCache-Control: no-store\r\nProxy-Status: ");
    wbuf_put(&w, ps, pl);
    if (status == 503) {
        /* RFC 9110 10.2.3: overload and unavailable servers are temporary;
         * say when to come back (the queue's wait, at least a second). */
        uint32_t after_ms = r->group ? r->group->cfg->queue_timeout_ms : 1000;
        wbuf_puts(&w, "\r\nRetry-After: ");
        wbuf_u64(&w, after_ms < 1000 ? 1 : (after_ms + 999) / 1000);
    } else if (r->retry_after_s) {
        /* RFC 6585 4: when the client's limit allows its next request. */
        wbuf_puts(&w, "\r\nRetry-After: ");
        wbuf_u64(&w, r->retry_after_s);
    }
    wbuf_puts(&w, "\r\nX-Request-Id: ");
    wbuf_puts(&w, r->rid);
    wbuf_put(&w, "\r\n", 2);
    if (r->limit_headers_len)
        wbuf_put(&w, r->limit_headers, r->limit_headers_len);
    if (s->closing || !r->client_keep_alive)
        wbuf_puts(&w, "Connection: close\r\n");
    else if (r->minor_version == 0)
        wbuf_puts(&w, "Connection: keep-alive\r\n");
    wbuf_put(&w, "\r\n", 2);
    if (r->method != HTTP_METHOD_HEAD) {
        wbuf_put(&w, page, blen);
        r->resp_body.bytes = blen;
    }
    if (!buf_commit(&r->cl_out.gen, &w)) {
        /* A custom page larger than the block: never half a response. */
        log_error("error page for status %d does not fit the %d-byte buffer; closing the "
                  "connection rid=%s",
                  status, BUF_SIZE, r->rid);
        r->aborted = true;
        request_end(r, END_ABORT);
    }
}

void request_note_program(struct request *r)
{
    char ev[240];
    r->program_evidence[0] = '\0';
    if (!r->group)
        return;
    const char *group = r->group->cfg->name;
    if (r->at.server) {
        supervise_evidence(group, r->at.server->cfg->name, r->program_evidence,
                           sizeof(r->program_evidence));
        return;
    }
    /* No server was picked: every one is down. */
    if (supervise_evidence(group, NULL, ev, sizeof(ev)))
        snprintf(r->program_evidence, sizeof(r->program_evidence),
                 "every server of group %.40s is down: %s", group, ev);
}

void request_fail(struct request *r, enum cause cause, int err)
{
    struct session *s = r->s;
    r->cause = cause;
    r->err = err;
    int status = cause_get(cause)->status;
    /* A gateway error: was the server's program down? (error path only) */
    if (status == 502 || status == 503 || status == 504)
        request_note_program(r);
    attempt_end(r, cause, err);
    attempt_release(r, false);
    const struct cause_info *ci = cause_get(cause);
    if (request_head_sent(r) || ci->status == 0) {
        if (r->state != REQ_LOCAL && r->at.server)
            log_error("response from %s (upstream \"%s\") aborted after %llu body bytes: %s; "
                      "cause=%s client connection closed rid=%s",
                      r->at.server->cfg->addr.text, r->group->cfg->name,
                      (unsigned long long)r->resp_body.bytes, err ? strerror(err) : ci->sentence,
                      ci->proxy_status, r->rid);
        if (!r->status)
            r->status = ci->status ? ci->status : 502;
        r->aborted = true;
        request_end(r, END_CUT);
        return;
    }
    /* The request body may be half read or half sent: the next request's
     * start is unknown. */
    if (request_body_pending(r))
        s->closing = true;
    buf_release(&r->up_in);
    buf_release(&r->up_out.gen);
    outq_drop_body(&r->up_out);
    respond_local(r, ci->status, cause);
}

void request_refuse(struct request *r, int status, enum cause cause, const char *why)
{
    struct session *s = r->s;
    log_info("refused request from %s with %d: %s rid=%s", r->client_ip, status, why, r->rid);
    attempt_end(r, CAUSE_NONE, 0);
    attempt_release(r, false);
    s->closing = true;
    r->cause = cause;
    buf_release(&r->up_out.gen);
    outq_drop_body(&r->up_out);
    respond_local(r, status, cause);
}
