/* The FastCGI exchange with PHP-FPM (or any FastCGI responder), as nginx's
 * fastcgi_pass: the request becomes FCGI_BEGIN_REQUEST, FCGI_PARAMS (the
 * CGI/1.1 variables, RFC 3875 4.1) and FCGI_STDIN records; the response is
 * read from FCGI_STDOUT as a CGI response and relayed as HTTP/1.1.
 *
 * One request per connection at a time, request id 1, FCGI_KEEP_CONN when
 * the group pools connections: a connection goes back to the pool only
 * after a clean FCGI_END_REQUEST with nothing after it.
 *
 * Which script runs is decided here, not by PHP-FPM: the request path is
 * decoded and normalised (a ".." above the root is refused), split by
 * split_path_info, checked against the route's extensions, and (with
 * check_script) must be a regular file under root, (with follow_symlinks
 * false) also once its links are resolved. So the cgi.fix_pathinfo
 * hole stays closed whatever php.ini says: SCRIPT_FILENAME always names an
 * existing .php file, and PHP never walks back from /uploads/x.jpg/y.php to
 * run x.jpg. */
#include "proxy/proxy_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* One request at a time per connection: its id is always 1. */
#define FCGI_REQUEST_ID 1

/* Longest HTTP_* param name we pass on ("HTTP_" and the field name): a
 * longer field name is dropped (no application reads one). */
#define FCGI_MAX_PARAM_NAME 256

static void put_param(struct wbuf *w, const char *name, size_t name_len, const char *value,
                      size_t value_len)
{
    char pre[8];
    size_t n = http_fcgi_param_lengths(pre, name_len, value_len);
    if (!n) {
        w->overflow = true;
        return;
    }
    wbuf_put(w, pre, n);
    wbuf_put(w, name, name_len);
    wbuf_put(w, value, value_len);
}

static void put_param_s(struct wbuf *w, const char *name, const char *value)
{
    put_param(w, name, strlen(name), value, strlen(value));
}

static void put_param_u64(struct wbuf *w, const char *name, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    put_param(w, name, strlen(name), num, (size_t)n);
}

static bool same_name(const struct http_header *a, const struct http_header *b)
{
    if (a->name_len != b->name_len)
        return false;
    for (size_t i = 0; i < a->name_len; i++) {
        char x = a->name[i], y = b->name[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (char)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

/* Which request fields become HTTP_* params. */
static bool header_passed(const struct http_request *hr, const struct http_header *h)
{
    /* Proxy: httpoxy (CVE-2016-5385), HTTP_PROXY is read as the proxy to
     * use by CGI libraries. Content-Type/-Length go as CONTENT_*; ours is
     * the X-Request-Id the logs know. */
    if (http_name_is(h, "Proxy") || http_name_is(h, "Content-Type") ||
        http_name_is(h, "Content-Length") || http_name_is(h, "X-Request-Id"))
        return false;
    /* Only letters, digits and "-": "X_Forwarded_For" would become the
     * same param as "X-Forwarded-For", and PHP turns "." (and " ", "[")
     * in a variable name into "_", so "X.Request.Id" would override our
     * HTTP_X_REQUEST_ID and "Content.Length" pass as HTTP_CONTENT_LENGTH.
     * nginx drops such fields too (ignore_invalid_headers,
     * underscores_in_headers off). */
    if (h->name_len + 5 > FCGI_MAX_PARAM_NAME)
        return false;
    for (size_t i = 0; i < h->name_len; i++) {
        char c = h->name[i];
        if (!(c == '-' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
              (c >= 'a' && c <= 'z')))
            return false;
    }
    return !http_is_hop_by_hop(h, hr->headers, hr->num_headers);
}

/* HTTP_<NAME> for each request field, several fields of one name joined
 * into one value (a param is set once: the application keeps the last). */
static void put_header_params(struct wbuf *w, const struct http_request *hr)
{
    for (size_t i = 0; i < hr->num_headers; i++) {
        const struct http_header *h = &hr->headers[i];
        if (!header_passed(hr, h))
            continue;
        bool first = true;
        for (size_t j = 0; j < i && first; j++)
            first = !same_name(h, &hr->headers[j]);
        if (!first)
            continue;
        /* RFC 9110 5.3 joins with ","; Cookie fields with "; " (RFC 6265 5.4) */
        const char *sep = http_name_is(h, "Cookie") ? "; " : ", ";
        size_t value_len = 0;
        bool any = false;
        for (size_t j = i; j < hr->num_headers; j++) {
            if (!same_name(h, &hr->headers[j]))
                continue;
            value_len += (any ? 2 : 0) + hr->headers[j].value_len;
            any = true;
        }
        char name[FCGI_MAX_PARAM_NAME];
        memcpy(name, "HTTP_", 5);
        for (size_t k = 0; k < h->name_len; k++) {
            char c = h->name[k];
            name[5 + k] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        }
        char pre[8];
        size_t n = http_fcgi_param_lengths(pre, h->name_len + 5, value_len);
        wbuf_put(w, pre, n);
        wbuf_put(w, name, h->name_len + 5);
        any = false;
        for (size_t j = i; j < hr->num_headers; j++) {
            if (!same_name(h, &hr->headers[j]))
                continue;
            if (any)
                wbuf_put(w, sep, 2);
            wbuf_put(w, hr->headers[j].value, hr->headers[j].value_len);
            any = true;
        }
    }
}

/* The path and query of the target: an absolute-form target's scheme and
 * authority are skipped (RFC 9112 3.2.2), as routing does. */
static void target_parts(const struct http_request *hr, const char **path, size_t *path_len,
                         const char **query, size_t *query_len, const char **req_uri,
                         size_t *req_uri_len)
{
    const char *t = hr->target, *end = hr->target + hr->target_len;
    if (t < end && *t != '/') {
        const char *p = memmem(t, hr->target_len, "://", 3);
        t = p ? p + 3 : end;
        while (t < end && *t != '/' && *t != '?')
            t++;
    }
    const char *q = memchr(t, '?', (size_t)(end - t));
    *path = t;
    *path_len = (size_t)((q ? q : end) - t);
    *query = q ? q + 1 : end;
    *query_len = (size_t)(end - *query);
    *req_uri = t;
    *req_uri_len = (size_t)(end - t);
    if (*path_len == 0) {
        *path = "/";
        *path_len = 1;
    }
}

static bool has_extension(const struct config_route *rt, const char *script, size_t len)
{
    const char *slash = memrchr(script, '/', len);
    const char *base = slash ? slash + 1 : script;
    size_t base_len = (size_t)(script + len - base);
    for (size_t i = 0; i < rt->num_extensions; i++) {
        size_t n = strlen(rt->extensions[i]);
        /* ".php" alone is a hidden file, not a script */
        if (base_len > n && memcmp(base + base_len - n, rt->extensions[i], n) == 0)
            return true;
    }
    return false;
}

/* follow_symlinks: false. stat() follows links, so root/x.php -> /etc/y.php
 * (or a linked directory on the way) would run a file outside root: the
 * script's real path must lie under root's real path instead. Links that
 * stay inside root pass. Both are resolved per request, so a root that is
 * itself a link a deploy switches (current -> releases/42) is followed at
 * once. Returns 0, or the status to refuse with (and why). */
static int check_real_path(const char *root, const char *file, char *why, size_t why_size)
{
    char real_root[PATH_MAX], real_file[PATH_MAX];
    if (!realpath(root[0] ? root : "/", real_root)) {
        snprintf(why, why_size, "cannot resolve root %s (follow_symlinks: false): %s", root,
                 strerror(errno));
        return 403;
    }
    if (!realpath(file, real_file)) {
        int e = errno;
        snprintf(why, why_size, "cannot resolve script %s (follow_symlinks: false): %s", file,
                 strerror(e));
        /* removed or replaced since the stat: as missing */
        return e == ENOENT || e == ENOTDIR ? 404 : 403;
    }
    size_t n = strlen(real_root);
    if (strncmp(real_file, real_root, n) == 0 && (real_file[n] == '/' || real_root[n - 1] == '/'))
        return 0;
    snprintf(why, why_size,
             "script %.1200s resolves to %.1200s, outside root %.1200s (follow_symlinks: false)",
             file, real_file, real_root);
    return 403;
}

/* Refuse the request ourselves (nothing reaches PHP-FPM); see build_request. */
static int refuse(struct request *r, int status, enum cause cause, const char *why)
{
    r->req_body.done = true;
    request_refuse(r, status, cause, why);
    return 1;
}

/* SERVER_ADDR, SERVER_PORT: the client connection's local end. */
static void put_server_addr(struct wbuf *w, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
            port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
            port = ntohs(sin6->sin6_port);
        }
    }
    put_param_s(w, "SERVER_ADDR", ip);
    put_param_u64(w, "SERVER_PORT", port);
}

static unsigned peer_port(const struct session *s)
{
    if (s->peer.sa.sa_family == AF_INET6)
        return ntohs(s->peer.sin6.sin6_port);
    return ntohs(s->peer.sin.sin_port);
}

/* Host without its port (and without the brackets' contents split). */
static void put_server_name(struct wbuf *w, const struct http_request *hr, const char *fallback)
{
    if (!hr->host || !hr->host_len) {
        put_param_s(w, "SERVER_NAME", fallback);
        return;
    }
    size_t n = hr->host_len;
    if (hr->host[0] == '[') {
        const char *close = memchr(hr->host, ']', n);
        n = close ? (size_t)(close - hr->host) + 1 : n;
    } else {
        const char *colon = memchr(hr->host, ':', n);
        n = colon ? (size_t)(colon - hr->host) : n;
    }
    put_param(w, "SERVER_NAME", 11, hr->host, n);
}

static int fcgi_build_request(struct request *r, const struct http_request *hr, struct buf *out)
{
    const struct config_route *rt = r->route;
    struct fcgi_state *st = &r->fcgi;
    struct session *s = r->s;
    char why[PATH_MAX + 200];

    http_fcgi_decoder_init(&st->dec, FCGI_REQUEST_ID);
    st->keep_conn = r->group->cfg->keepalive_max_idle > 0;
    /* FastCGI needs CONTENT_LENGTH before the body: a chunked body would
     * have to be spooled whole first. Refused, as nginx does with request
     * buffering off (RFC 9110 15.5.12). */
    if (hr->framing == HTTP_FRAMING_CHUNKED)
        return refuse(r, 411, CAUSE_HTTP_REQUEST_ERROR,
                      "chunked request body to a FastCGI route: send Content-Length");

    const char *path, *query, *req_uri;
    size_t path_len, query_len, req_uri_len;
    target_parts(hr, &path, &path_len, &query, &query_len, &req_uri, &req_uri_len);
    char uri[PATH_MAX];
    size_t index_len = strlen(rt->index);
    ssize_t n = http_normalize_path(path, path_len, uri, sizeof(uri) - index_len);
    if (n == -2)
        return refuse(r, 403, CAUSE_SCRIPT_DENIED,
                      "FastCGI script path climbs above the route's root");
    if (n == -3)
        return refuse(r, 414, CAUSE_HTTP_REQUEST_ERROR, "FastCGI script path too long");
    if (n < 0)
        return refuse(r, 400, CAUSE_HTTP_REQUEST_ERROR,
                      "bad percent escape or NUL byte in the FastCGI script path");
    size_t uri_len = (size_t)n;

    const char *script = uri, *path_info = "";
    size_t script_len = uri_len, path_info_len = 0;
    regmatch_t m[3];
    if (rt->split_path_info && regexec(rt->split_path_info, uri, 3, m, 0) == 0 && m[1].rm_so >= 0 &&
        m[2].rm_so >= 0) {
        script = uri + m[1].rm_so;
        script_len = (size_t)(m[1].rm_eo - m[1].rm_so);
        path_info = uri + m[2].rm_so;
        path_info_len = (size_t)(m[2].rm_eo - m[2].rm_so);
    }
    /* index goes on a script name ending in "/", after the split (as
     * nginx's fastcgi_index): "/a.php/" is a.php with PATH_INFO "/", not
     * a.php with PATH_INFO "/index.php". */
    char indexed[PATH_MAX];
    if (script_len && script[script_len - 1] == '/') {
        if (script_len + index_len >= sizeof(indexed))
            return refuse(r, 414, CAUSE_HTTP_REQUEST_ERROR, "FastCGI script path too long");
        memcpy(indexed, script, script_len);
        memcpy(indexed + script_len, rt->index, index_len + 1);
        script = indexed;
        script_len += index_len;
    }
    if (script_len == 0 || script[0] != '/') {
        snprintf(why, sizeof(why), "split_path_info gave script name \"%.*s\", not a path",
                 (int)script_len, script);
        return refuse(r, 403, CAUSE_SCRIPT_DENIED, why);
    }
    if (!has_extension(rt, script, script_len)) {
        snprintf(why, sizeof(why), "\"%.*s\" is not a script this route runs (extensions: %s%s)",
                 (int)script_len, script, rt->extensions[0], rt->num_extensions > 1 ? " ..." : "");
        return refuse(r, 403, CAUSE_SCRIPT_DENIED, why);
    }
    char file[PATH_MAX];
    int flen = snprintf(file, sizeof(file), "%s%.*s", rt->root, (int)script_len, script);
    if (flen < 0 || (size_t)flen >= sizeof(file))
        return refuse(r, 414, CAUSE_HTTP_REQUEST_ERROR, "FastCGI script path too long");
    struct stat sb;
    if (rt->check_script && (stat(file, &sb) < 0 || !S_ISREG(sb.st_mode))) {
        snprintf(why, sizeof(why), "no script %s under root (check_script)", file);
        return refuse(r, 404, CAUSE_SCRIPT_NOT_FOUND, why);
    }
    if (!rt->follow_symlinks) {
        int status = check_real_path(rt->root, file, why, sizeof(why));
        if (status)
            return refuse(r, status, status == 404 ? CAUSE_SCRIPT_NOT_FOUND : CAUSE_SCRIPT_DENIED,
                          why);
    }

    if (buf_acquire(out) < 0)
        return -ENOMEM;
    struct wbuf w = buf_writer(out);
    char rec[16];
    http_fcgi_begin_request(rec, FCGI_REQUEST_ID, st->keep_conn);
    wbuf_put(&w, rec, 16);
    size_t params_at = w.len;
    wbuf_put(&w, rec, HTTP_FCGI_HEADER_LEN); /* the PARAMS header, written below */

    put_param(&w, "SCRIPT_FILENAME", 15, file, (size_t)flen);
    put_param(&w, "SCRIPT_NAME", 11, script, script_len);
    put_param(&w, "PATH_INFO", 9, path_info, path_info_len);
    if (path_info_len) {
        char translated[PATH_MAX];
        int tl = snprintf(translated, sizeof(translated), "%s%.*s", rt->root, (int)path_info_len,
                          path_info);
        if (tl > 0 && (size_t)tl < sizeof(translated))
            put_param(&w, "PATH_TRANSLATED", 15, translated, (size_t)tl);
    }
    put_param(&w, "QUERY_STRING", 12, query, query_len);
    put_param(&w, "REQUEST_METHOD", 14, hr->method, hr->method_len);
    const struct http_header *ct = http_find_header(hr->headers, hr->num_headers, "Content-Type");
    put_param(&w, "CONTENT_TYPE", 12, ct ? ct->value : "", ct ? ct->value_len : 0);
    if (hr->framing == HTTP_FRAMING_LENGTH)
        put_param_u64(&w, "CONTENT_LENGTH", hr->content_length);
    else
        put_param_s(&w, "CONTENT_LENGTH", "");
    /* REQUEST_URI as the client sent it; DOCUMENT_URI decoded and
     * normalised, with the index a directory got */
    put_param(&w, "REQUEST_URI", 11, req_uri_len ? req_uri : "/", req_uri_len ? req_uri_len : 1);
    char doc_uri[2 * PATH_MAX];
    int dl = snprintf(doc_uri, sizeof(doc_uri), "%.*s%.*s", (int)script_len, script,
                      (int)path_info_len, path_info);
    put_param(&w, "DOCUMENT_URI", 12, doc_uri, dl > 0 ? (size_t)dl : 0);
    put_param_s(&w, "DOCUMENT_ROOT", rt->root[0] ? rt->root : "/");
    put_param_s(&w, "SERVER_PROTOCOL", hr->minor_version ? "HTTP/1.1" : "HTTP/1.0");
    put_param_s(&w, "REQUEST_SCHEME", "http");
    put_param_s(&w, "GATEWAY_INTERFACE", "CGI/1.1");
    put_param_s(&w, "SERVER_SOFTWARE", "bulwark");
    put_param_s(&w, "REMOTE_ADDR", s->ip);
    put_param_u64(&w, "REMOTE_PORT", peer_port(s));
    put_server_addr(&w, s->io.fd);
    put_server_name(&w, hr, r->group->cfg->name);
    /* PHP built with --enable-force-cgi-redirect refuses requests without it */
    put_param_s(&w, "REDIRECT_STATUS", "200");
    /* HTTPS is only sent for TLS connections (absent means http, as nginx's
     * "HTTPS $https if_not_empty"); bulwark's listeners are plain HTTP. */
    put_header_params(&w, hr);
    put_param_s(&w, "HTTP_X_REQUEST_ID", r->rid);
    /* the route's own params last: the application keeps the last value */
    for (size_t i = 0; i < rt->num_params; i++)
        put_param_s(&w, rt->params[2 * i], rt->params[2 * i + 1]);

    size_t params_len = w.len - params_at - HTTP_FCGI_HEADER_LEN;
    if (!wbuf_ok(&w) || params_len > HTTP_FCGI_MAX_CONTENT)
        return -ENOSPC;
    http_fcgi_header(w.p + params_at, HTTP_FCGI_PARAMS, FCGI_REQUEST_ID, (uint16_t)params_len, 0);
    http_fcgi_header(rec, HTTP_FCGI_PARAMS, FCGI_REQUEST_ID, 0, 0);
    wbuf_put(&w, rec, HTTP_FCGI_HEADER_LEN);
    if (r->req_body.done) {
        http_fcgi_header(rec, HTTP_FCGI_STDIN, FCGI_REQUEST_ID, 0, 0);
        wbuf_put(&w, rec, HTTP_FCGI_HEADER_LEN);
    }
    return buf_commit(out, &w) ? 0 : -ENOSPC;
}

/* The next piece of the client's body as one FCGI_STDIN record: the
 * record header goes before the bytes where they lie, the empty record
 * that ends the stream after the last piece. */
static int fcgi_encode_body(struct request *r, struct buf *src, struct outq *q,
                            enum http_error *err)
{
    struct body *b = &r->req_body;
    size_t n = buf_len(src);
    if (n > b->left)
        n = (size_t)b->left;
    if (n > HTTP_FCGI_MAX_CONTENT)
        n = HTTP_FCGI_MAX_CONTENT;
    b->left -= n;
    b->bytes += n;
    b->done = b->left == 0;
    q->data = buf_head(src);
    q->data_len = n;
    q->src = src;
    q->src_consume = n;
    q->pre_len = q->pre_off = 0;
    q->post_len = q->post_off = 0;
    if (n) {
        http_fcgi_header(q->pre, HTTP_FCGI_STDIN, FCGI_REQUEST_ID, (uint16_t)n, 0);
        q->pre_len = HTTP_FCGI_HEADER_LEN;
    }
    if (b->done) {
        http_fcgi_header(q->post, HTTP_FCGI_STDIN, FCGI_REQUEST_ID, 0, 0);
        q->post_len = HTTP_FCGI_HEADER_LEN;
    }
    return 0;
}

/* FCGI_STDERR goes to the error log one line at a time, with the request
 * id: lines are gathered across records and reads (a record may end
 * mid-line), a longer line is logged in FCGI_STDERR_LINE pieces. */
static void stderr_flush(struct request *r)
{
    struct fcgi_state *st = &r->fcgi;
    size_t n = st->err_len;
    st->err_len = 0;
    while (n && (st->err_line[n - 1] == '\r' || st->err_line[n - 1] == ' '))
        n--;
    if (!n)
        return;
    if (memmem(st->err_line, n, "Primary script unknown", 22))
        st->script_unknown = true;
    static const char hex[] = "0123456789abcdef";
    char text[FCGI_STDERR_LINE * 4 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)st->err_line[i];
        if (c < 0x20 || c >= 0x7f || c == '\\') {
            text[o++] = '\\';
            text[o++] = 'x';
            text[o++] = hex[c >> 4];
            text[o++] = hex[c & 15];
        } else {
            text[o++] = (char)c;
        }
    }
    text[o] = '\0';
    log_warn("FastCGI stderr from %s (upstream \"%s\"): %s; rid=%s",
             r->at.server ? r->at.server->cfg->addr.text : "-", r->group->cfg->name, text, r->rid);
}

static void on_stderr(void *ctx, const char *p, size_t n)
{
    struct request *r = ctx;
    struct fcgi_state *st = &r->fcgi;
    st->stderr_seen = true;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            stderr_flush(r);
            continue;
        }
        if (st->err_len == FCGI_STDERR_LINE)
            stderr_flush(r);
        st->err_line[st->err_len++] = p[i];
    }
}

/* Decode the records that arrived since the last call: up_in becomes
 * [decoded stdout][nothing], st->decoded its length. */
static int fcgi_take(struct request *r, enum http_error *err)
{
    struct fcgi_state *st = &r->fcgi;
    struct buf *in = &r->up_in;
    size_t raw = buf_len(in) - st->decoded;
    if (!raw)
        return 0;
    if (http_fcgi_decode(&st->dec, buf_head(in) + st->decoded, &raw, on_stderr, r, err) < 0) {
        stderr_flush(r);
        return -1;
    }
    in->end = in->start + st->decoded + (uint32_t)raw;
    st->decoded += (uint32_t)raw;
    if (st->dec.ended)
        stderr_flush(r); /* a last line without its newline */
    return 0;
}

/* FCGI_END_REQUEST and not one byte on stdout: PHP-FPM's answer to a
 * missing script (stderr "Primary script unknown") is 404, a crash that
 * only wrote stderr is 500, and silence is a broken responder (502). */
static int answer_without_output(struct request *r, struct http_response *resp,
                                 enum http_error *err)
{
    struct fcgi_state *st = &r->fcgi;
    int status = st->script_unknown ? 404 : st->stderr_seen ? 500 : 0;
    if (!status) {
        *err = HTTP_ERR_FCGI_NO_OUTPUT;
        return -2;
    }
    memset(resp, 0, offsetof(struct http_response, headers));
    resp->num_headers = 0;
    resp->status = status;
    resp->reason = http_status_reason(status);
    resp->reason_len = strlen(resp->reason);
    resp->minor_version = 1;
    resp->framing = HTTP_FRAMING_LENGTH;
    resp->content_length = 0;
    log_error("FastCGI response from %s (upstream \"%s\") has no output on stdout; its stderr "
              "%s; answered %d; rid=%s",
              r->at.server->cfg->addr.text, r->group->cfg->name,
              st->script_unknown ? "says \"Primary script unknown\": SCRIPT_FILENAME names no "
                                   "script PHP-FPM can open"
                                 : "has the error (logged above)",
              status, r->rid);
    return 0;
}

static int fcgi_parse_head(struct request *r, const char *p, size_t n, struct http_response *resp,
                           enum http_error *err)
{
    struct fcgi_state *st = &r->fcgi;
    const struct http_fcgi_decoder *d = &st->dec;
    if (fcgi_take(r, err) < 0)
        return -2;
    if (st->decoded == 0)
        return d->ended ? answer_without_output(r, resp, err) : HTTP_INCOMPLETE;
    int hl = http_parse_cgi_response(buf_head(&r->up_in), st->decoded,
                                     session_cfg(r->s)->max_header_bytes, r->method, resp, err);
    if (hl == HTTP_INCOMPLETE && d->ended) {
        *err = HTTP_ERR_FCGI_HEAD_CUT;
        return -2;
    }
    if (hl < 0)
        return hl;
    uint64_t have = st->decoded - (uint32_t)hl;
    if (resp->framing == HTTP_FRAMING_NONE) {
        /* HEAD, 204, 304: the client gets no body, whatever the script
         * printed; what came is dropped, and until END_REQUEST the rest
         * is read and dropped too (resp_drain), so the connection can go
         * back to the pool instead of being closed under PHP-FPM. */
        r->up_in.end = r->up_in.start + (uint32_t)hl;
        st->decoded = (uint32_t)hl;
        r->resp_drain = !d->ended && st->keep_conn;
    } else if (resp->framing == HTTP_FRAMING_LENGTH) {
        if (have > resp->content_length || (d->ended && have != resp->content_length)) {
            *err = HTTP_ERR_FCGI_BODY_LENGTH;
            return -2;
        }
        st->body_left = resp->content_length;
    } else if (resp->framing == HTTP_FRAMING_UNTIL_CLOSE) {
        if (d->ended) {
            /* the whole response is here: the client gets a length */
            resp->framing = HTTP_FRAMING_LENGTH;
            resp->content_length = have;
            st->body_left = have;
        } else {
            /* FCGI_END_REQUEST ends it, never a close: framed as chunked
             * so a close before it is seen as a cut body */
            resp->framing = HTTP_FRAMING_CHUNKED;
        }
    }
    st->decoded -= (uint32_t)hl; /* the caller consumes the head */
    return hl;
}

static int fcgi_decode_body(struct request *r, struct buf *in, bool src_eof, struct outq *q,
                            enum http_error *err)
{
    struct fcgi_state *st = &r->fcgi;
    struct body *b = &r->resp_body;
    if (fcgi_take(r, err) < 0)
        return -1;
    size_t n = st->decoded;
    if (r->resp_drain) {
        buf_consume(in, n);
        st->decoded = 0;
        b->done = st->dec.ended;
        q->data_len = q->src_consume = 0; /* nothing for the client */
        q->pre_len = q->pre_off = q->post_len = q->post_off = 0;
        return 0;
    }
    if (b->framing == HTTP_FRAMING_LENGTH) {
        if (n > st->body_left) {
            *err = HTTP_ERR_FCGI_BODY_LENGTH;
            return -1;
        }
        st->body_left -= n;
    }
    b->done = st->dec.ended;
    if (b->done && b->framing == HTTP_FRAMING_LENGTH && st->body_left) {
        *err = HTTP_ERR_FCGI_BODY_LENGTH;
        return -1;
    }
    b->bytes += n;
    q->data = buf_head(in);
    q->data_len = n;
    q->src = in;
    q->src_consume = n;
    q->pre_len = q->pre_off = 0;
    q->post_len = q->post_off = 0;
    if (b->coding == BODY_RECHUNK) {
        if (n) {
            q->pre_len = (uint8_t)http_chunk_header(q->pre, n);
            memcpy(q->post, "\r\n", 2);
            q->post_len = 2;
        }
        if (b->done) {
            memcpy(q->post + q->post_len, "0\r\n\r\n", 5);
            q->post_len += 5;
        }
    }
    st->decoded = 0; /* all queued: consumed once sent, before the next read */
    return 0;
}

/* Pooled only after a clean FCGI_END_REQUEST of a FCGI_KEEP_CONN request,
 * with the whole request sent and nothing more buffered or waiting. */
static bool fcgi_reusable(struct request *r)
{
    const struct fcgi_state *st = &r->fcgi;
    return r->state == REQ_RELAY && st->keep_conn && st->dec.ended && r->resp_body.done &&
           r->req_body.done && outq_empty(&r->up_out) && buf_len(&r->up_in) == 0 &&
           transport_quiet(&r->at.t);
}

const struct exchange_ops exchange_fastcgi = {
    .name = "fastcgi",
    .build_request = fcgi_build_request,
    .encode_body = fcgi_encode_body,
    .parse_head = fcgi_parse_head,
    .decode_body = fcgi_decode_body,
    .reusable = fcgi_reusable,
};
