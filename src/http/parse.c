/* HTTP/1.x request and response header sections (RFC 9112 sections 2-6).
 *
 * One pass over the bytes, one table lookup per byte, no allocation: every
 * string in the result points into the caller's buffer. The parser starts
 * from the beginning on every call; a header section is small and bounded,
 * so keeping state between calls would cost more than it saves.
 *
 * A useful property the tests and the fuzzer check: the result for any
 * prefix of a message is either HTTP_INCOMPLETE or the result for the whole
 * message. Syntax errors are reported as soon as the offending byte is seen;
 * rules about the fields as a whole (framing, Host) once the section is
 * complete.
 */
#include "http/http.h"
#include "http/http_internal.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* 8 KiB of request line is what nginx and Apache accept by default; longer
 * targets are almost always attacks or bugs, and 414 tells the client why. */
#define DEFAULT_MAX_REQUEST_LINE 8192
/* 16 KiB of header section fits real browsers with large cookies and bounds
 * what one connection can make us hold before we know what it wants. */
#define DEFAULT_MAX_HEADER_BYTES 16384
/* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
 * request-line (clients that send CRLF after a POST body). A handful is
 * enough; an endless stream of them is just a way to hold a connection. */
#define MAX_LEADING_EMPTY_LINES 8

#define PARSE_ERROR (-2)

static int fail(enum http_error *err, enum http_error e)
{
    *err = e;
    return PARSE_ERROR;
}

/* The bytes ran out before the section ended. If the buffer held more than
 * the limit, they ran out at the limit: the section cannot fit. */
static int out_of_bytes(bool over_limit, enum http_error *err)
{
    return over_limit ? fail(err, HTTP_ERR_HEADERS_TOO_LARGE) : HTTP_INCOMPLETE;
}

/* p is at a CR or LF that ends a line: the terminator's length (1 or 2),
 * HTTP_INCOMPLETE or PARSE_ERROR. */
static int line_end(const char *p, const char *end, bool over_limit, enum http_error *err)
{
    if (*p == '\n')
        return 1; /* RFC 9112 2.2: a recipient MAY take a lone LF as the line end */
    if (p + 1 == end)
        return out_of_bytes(over_limit, err);
    if (p[1] == '\n')
        return 2;
    return fail(err, HTTP_ERR_BARE_CR); /* RFC 9112 2.2: bare CR is invalid */
}

/* The byte at p may not appear here. A bare CR is named as such; a CRLF
 * (the line ended too early) or any other byte is e. */
static int unexpected(const char *p, const char *end, bool over_limit, enum http_error e,
                      enum http_error *err)
{
    if (*p == '\r') {
        if (p + 1 == end)
            return out_of_bytes(over_limit, err);
        if (p[1] != '\n')
            return fail(err, HTTP_ERR_BARE_CR);
    }
    return fail(err, e);
}

/* First byte at or after p that may not appear in a field value, or end. */
static const char *scan_value(const char *p, const char *end)
{
#ifdef __SSE2__
    /* 16 bytes at a time while none is a CTL; HTAB (legal but a CTL) drops
     * to the table loop, which finishes the value. */
    const __m128i max_ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, max_ctl), v);
        int stop = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));
        if (stop) {
            p += __builtin_ctz((unsigned)stop);
            break;
        }
        p += 16;
    }
#endif
    while (p < end && http_is((unsigned char)*p, HTTP_C_VALUE))
        p++;
    return p;
}

/* First byte at or after p outside 0x21-0x7E, or end. */
static const char *scan_target(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i below = _mm_set1_epi8(0x20), above = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compares: bytes >= 0x80 are negative, so outside too */
        __m128i ok = _mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above));
        int stop = _mm_movemask_epi8(ok) ^ 0xffff;
        if (stop)
            return p + __builtin_ctz((unsigned)stop);
        p += 16;
    }
#endif
    while (p < end && http_is((unsigned char)*p, HTTP_C_TARGET))
        p++;
    return p;
}

/* A name was cut short at p by a byte that is neither tchar nor ':'. */
static int bad_name_end(const char *p, const char *end, bool over_limit, enum http_error *err)
{
    if (http_is((unsigned char)*p, HTTP_C_WS)) {
        while (p < end && http_is((unsigned char)*p, HTTP_C_WS))
            p++;
        if (p == end)
            return out_of_bytes(over_limit, err);
        if (*p == ':') /* RFC 9112 5.1: MUST reject whitespace before the colon */
            return fail(err, HTTP_ERR_WS_BEFORE_COLON);
    }
    return unexpected(p, end, over_limit, HTTP_ERR_BAD_HEADER_NAME, err);
}

/* Header fields from p through the empty line ending the section.
 * Returns the section size counted from buf, HTTP_INCOMPLETE or PARSE_ERROR. */
static int parse_fields(const char *buf, const char *p, const char *end, bool over_limit,
                        struct http_header *headers, size_t *num_headers, enum http_error *err)
{
    size_t n = 0;
    for (;;) {
        if (p == end)
            return out_of_bytes(over_limit, err);
        unsigned char c = (unsigned char)*p;
        if (c == '\r' || c == '\n') {
            int eol = line_end(p, end, over_limit, err);
            if (eol < 0)
                return eol;
            *num_headers = n;
            return (int)(p + eol - buf);
        }
        /* RFC 9112 5.2 obs-fold, and RFC 9112 2.2 whitespace before the
         * first field: both are smuggling vectors, both refused. */
        if (http_is(c, HTTP_C_WS))
            return fail(err, HTTP_ERR_OBS_FOLD);
        if (n == HTTP_MAX_HEADERS)
            return fail(err, HTTP_ERR_TOO_MANY_HEADERS);

        const char *name = p;
        while (p < end && http_is((unsigned char)*p, HTTP_C_TCHAR))
            p++;
        if (p == end)
            return out_of_bytes(over_limit, err);
        if (*p != ':')
            return bad_name_end(p, end, over_limit, err);
        if (p == name)
            return fail(err, HTTP_ERR_BAD_HEADER_NAME);
        headers[n].name = name;
        headers[n].name_len = (size_t)(p - name);

        p++;
        while (p < end && http_is((unsigned char)*p, HTTP_C_WS))
            p++;
        const char *value = p;
        p = scan_value(p, end);
        if (p == end)
            return out_of_bytes(over_limit, err);
        if (*p != '\r' && *p != '\n')
            return fail(err, HTTP_ERR_BAD_HEADER_VALUE); /* RFC 9110 5.5: CTLs invalid */
        int eol = line_end(p, end, over_limit, err);
        if (eol < 0)
            return eol;
        const char *value_end = p;
        while (value_end > value && http_is((unsigned char)value_end[-1], HTTP_C_WS))
            value_end--;
        headers[n].value = value;
        headers[n].value_len = (size_t)(value_end - value);
        n++;
        p += eol;
    }
}

static enum http_method method_id(const char *m, size_t n)
{
    /* RFC 9110 9.1: method names are case-sensitive */
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return HTTP_METHOD_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return HTTP_METHOD_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0)
            return HTTP_METHOD_POST;
        if (memcmp(m, "HEAD", 4) == 0)
            return HTTP_METHOD_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return HTTP_METHOD_PATCH;
        if (memcmp(m, "TRACE", 5) == 0)
            return HTTP_METHOD_TRACE;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return HTTP_METHOD_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return HTTP_METHOD_OPTIONS;
        if (memcmp(m, "CONNECT", 7) == 0)
            return HTTP_METHOD_CONNECT;
        break;
    }
    return HTTP_METHOD_OTHER;
}

/* RFC 3986 3.2.2 IP-literal without the brackets: IPv6address / IPvFuture. */
static bool valid_ip_literal(const char *s, size_t n)
{
    if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
        /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
        size_t i = 1;
        while (i < n && http_is((unsigned char)s[i], HTTP_C_HEX))
            i++;
        if (i == 1 || i + 1 >= n || s[i] != '.')
            return false;
        for (i++; i < n; i++)
            if (!http_is((unsigned char)s[i], HTTP_C_REGNAME) && s[i] != ':')
                return false;
        return true;
    }
    char text[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    if (n == 0 || n >= sizeof text)
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(AF_INET6, text, &addr) == 1;
}

/* uri-host [ ":" port ] (RFC 9110 7.2, RFC 3986 3.2.2-3.2.3). The host may
 * not be empty (RFC 9110 4.2.1) and userinfo is not allowed (4.2.4). */
static bool valid_host_port(const char *s, size_t n, bool port_required)
{
    const char *p = s, *end = s + n;
    if (n == 0)
        return false;
    if (*p == '[') {
        const char *close = memchr(p, ']', n);
        if (!close || !valid_ip_literal(p + 1, (size_t)(close - p - 1)))
            return false;
        p = close + 1;
    } else {
        while (p < end) {
            if (http_is((unsigned char)*p, HTTP_C_REGNAME))
                p++;
            else if (*p == '%' && end - p >= 3 && http_is((unsigned char)p[1], HTTP_C_HEX) &&
                     http_is((unsigned char)p[2], HTTP_C_HEX))
                p += 3;
            else
                break;
        }
        if (p == s)
            return false;
    }
    if (p == end)
        return !port_required;
    if (*p != ':')
        return false;
    p++;
    if (end - p < 1 || end - p > 5)
        return false;
    unsigned port = 0;
    for (; p < end; p++) {
        if (!http_is((unsigned char)*p, HTTP_C_DIGIT))
            return false;
        port = port * 10 + (unsigned)(*p - '0');
    }
    return port <= 65535;
}

/* RFC 9112 3.2: which request-target form is allowed with which method. */
static enum http_error check_target(struct http_request *req)
{
    const char *t = req->target;
    size_t n = req->target_len;

    /* RFC 9112 3.2.3: CONNECT takes authority-form, host and port, only */
    if (req->method_id == HTTP_METHOD_CONNECT)
        return valid_host_port(t, n, true) ? HTTP_OK : HTTP_ERR_BAD_TARGET;
    if (t[0] == '/')
        return HTTP_OK;        /* 3.2.1 origin-form */
    if (n == 1 && t[0] == '*') /* 3.2.4 asterisk-form: OPTIONS only */
        return req->method_id == HTTP_METHOD_OPTIONS ? HTTP_OK : HTTP_ERR_BAD_TARGET;

    /* 3.2.2 absolute-form; we proxy http and https URIs only */
    size_t scheme_len;
    if (n >= 7 && http_ieq(t, "http://", 7))
        scheme_len = 7;
    else if (n >= 8 && http_ieq(t, "https://", 8))
        scheme_len = 8;
    else
        return HTTP_ERR_BAD_TARGET;
    const char *authority = t + scheme_len, *end = t + n, *a = authority;
    while (a < end && *a != '/' && *a != '?' && *a != '#')
        a++;
    if (!valid_host_port(authority, (size_t)(a - authority), false))
        return HTTP_ERR_BAD_TARGET;
    /* 3.2.2: the authority replaces Host */
    req->host = authority;
    req->host_len = (size_t)(a - authority);
    return HTTP_OK;
}

/* What the fields say about framing and the connection, gathered in one
 * pass over the headers. */
struct field_summary {
    const struct http_header *host;
    unsigned host_count;
    bool has_cl, cl_bad, cl_known;
    uint64_t cl;
    bool has_te, te_last_chunked, te_chunked_not_last, te_unknown, te_malformed;
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool has_upgrade, expect_continue;
};

/* RFC 9110 8.6: Content-Length = 1*DIGIT. Repeated fields or a list of one
 * identical value may be taken as that value; anything else is invalid, and
 * RFC 9112 6.3 says a recipient MUST treat it as an unrecoverable error. */
static void add_content_length(struct field_summary *f, const struct http_header *h)
{
    const char *pos = h->value, *end = pos + h->value_len, *elem;
    size_t elem_len;
    bool started = false;
    f->has_cl = true;
    while (http_list_next(&pos, end, &started, &elem, &elem_len)) {
        uint64_t v = 0;
        if (elem_len == 0) {
            f->cl_bad = true;
            return;
        }
        for (size_t i = 0; i < elem_len; i++) {
            unsigned d = (unsigned)((unsigned char)elem[i] - '0');
            if (d > 9 || v > (UINT64_C(0x7fffffffffffffff) - d) / 10) {
                f->cl_bad = true; /* not a digit, or over 63 bits */
                return;
            }
            v = v * 10 + d;
        }
        if (f->cl_known && v != f->cl) {
            f->cl_bad = true;
            return;
        }
        f->cl_known = true;
        f->cl = v;
    }
}

/* Transfer-Encoding fields are one list in field order (RFC 9110 5.3).
 * RFC 9112 6.1: chunked must be the final coding and applied only once. */
static void add_transfer_encoding(struct field_summary *f, const struct http_header *h)
{
    const char *pos = h->value, *end = pos + h->value_len, *elem;
    size_t elem_len;
    bool started = false;
    f->has_te = true;
    while (http_list_next(&pos, end, &started, &elem, &elem_len)) {
        if (f->te_last_chunked)
            f->te_chunked_not_last = true;
        f->te_last_chunked = false;
        const char *p = elem, *elem_end = elem + elem_len;
        while (p < elem_end && http_is((unsigned char)*p, HTTP_C_TCHAR))
            p++;
        if (p == elem) {
            f->te_malformed = true; /* empty element or not a token */
            continue;
        }
        bool chunked = p - elem == 7 && http_ieq(elem, "chunked", 7);
        if (p < elem_end) {
            /* transfer-coding = token *( OWS ";" OWS transfer-parameter ):
             * chunked takes no parameters, other codings we do not know */
            while (p < elem_end && http_is((unsigned char)*p, HTTP_C_WS))
                p++;
            if (p == elem_end || *p != ';' || chunked)
                f->te_malformed = true;
            else
                f->te_unknown = true;
            continue;
        }
        if (chunked)
            f->te_last_chunked = true;
        else
            f->te_unknown = true;
    }
}

static enum http_error te_verdict(const struct field_summary *f)
{
    if (f->te_malformed || f->te_chunked_not_last)
        return HTTP_ERR_BAD_TRANSFER_ENCODING;
    if (f->te_unknown) /* RFC 9112 6.1: unknown coding => 501 */
        return HTTP_ERR_UNKNOWN_TRANSFER_CODING;
    return HTTP_OK;
}

static void add_connection(struct field_summary *f, const struct http_header *h)
{
    const char *pos = h->value, *end = pos + h->value_len, *elem;
    size_t n;
    bool started = false;
    while (http_list_next(&pos, end, &started, &elem, &n)) {
        if (n == 5 && http_ieq(elem, "close", 5))
            f->conn_close = true;
        else if (n == 10 && http_ieq(elem, "keep-alive", 10))
            f->conn_keep_alive = true;
        else if (n == 7 && http_ieq(elem, "upgrade", 7))
            f->conn_upgrade = true;
    }
}

static void summarise(const struct http_header *headers, size_t n, struct field_summary *f)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < n; i++) {
        const struct http_header *h = &headers[i];
        /* the length picks the one candidate, so each field costs one compare */
        switch (h->name_len) {
        case 4:
            if (http_ieq(h->name, "host", 4)) {
                f->host = h;
                f->host_count++;
            }
            break;
        case 6:
            if (http_ieq(h->name, "expect", 6) && h->value_len == 12 &&
                http_ieq(h->value, "100-continue", 12))
                f->expect_continue = true;
            break;
        case 7:
            if (http_ieq(h->name, "upgrade", 7))
                f->has_upgrade = true;
            break;
        case 10:
            if (http_ieq(h->name, "connection", 10))
                add_connection(f, h);
            break;
        case 14:
            if (http_ieq(h->name, "content-length", 14))
                add_content_length(f, h);
            break;
        case 17:
            if (http_ieq(h->name, "transfer-encoding", 17))
                add_transfer_encoding(f, h);
            break;
        }
    }
}

/* Framing errors common to requests and responses, in the order a reader of
 * a log wants them: the smuggling signature first. */
static enum http_error framing_error(const struct field_summary *f, int minor_version)
{
    if (f->has_te) {
        if (f->has_cl) /* RFC 9112 6.1, 11.2: the request smuggling classic */
            return HTTP_ERR_CL_AND_TE;
        if (minor_version == 0) /* RFC 9112 6.1: MUST treat the framing as faulty */
            return HTTP_ERR_TE_IN_HTTP10;
        enum http_error e = te_verdict(f);
        if (e != HTTP_OK)
            return e;
    }
    if (f->cl_bad)
        return HTTP_ERR_BAD_CONTENT_LENGTH;
    return HTTP_OK;
}

/* RFC 9112 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with
 * "keep-alive" (RFC 9112 C.2.2). */
static bool persistent(const struct field_summary *f, int minor_version)
{
    if (f->conn_close)
        return false;
    return minor_version == 1 || f->conn_keep_alive;
}

static int finish_request(struct http_request *req, int size, enum http_error *err)
{
    struct field_summary f;
    summarise(req->headers, req->num_headers, &f);

    enum http_error e = framing_error(&f, req->minor_version);
    if (e != HTTP_OK)
        return fail(err, e);
    /* RFC 9112 6.3: chunked, else Content-Length, else no body */
    if (f.has_te) {
        req->framing = HTTP_FRAMING_CHUNKED;
        req->content_length = 0;
    } else if (f.has_cl) {
        req->framing = HTTP_FRAMING_LENGTH;
        req->content_length = f.cl;
    } else {
        req->framing = HTTP_FRAMING_NONE;
        req->content_length = 0;
    }

    /* RFC 9112 3.2: MUST respond 400 to HTTP/1.1 without Host, to more than
     * one Host, or to an invalid Host value. */
    if (f.host_count > 1)
        return fail(err, HTTP_ERR_MULTIPLE_HOST);
    if (f.host_count == 0 && req->minor_version == 1)
        return fail(err, HTTP_ERR_MISSING_HOST);
    if (f.host && !valid_host_port(f.host->value, f.host->value_len, false))
        return fail(err, HTTP_ERR_BAD_HOST);
    if (!req->host && f.host) {
        req->host = f.host->value;
        req->host_len = f.host->value_len;
    }

    req->keep_alive = persistent(&f, req->minor_version);
    req->expect_continue = f.expect_continue;
    req->upgrade = f.conn_upgrade && f.has_upgrade;
    return size;
}

int http_parse_request(const char *buf, size_t len, const struct http_limits *limits,
                       struct http_request *req, enum http_error *err)
{
    size_t max_line =
        limits && limits->max_request_line ? limits->max_request_line : DEFAULT_MAX_REQUEST_LINE;
    size_t max_bytes =
        limits && limits->max_header_bytes ? limits->max_header_bytes : DEFAULT_MAX_HEADER_BYTES;
    if (max_bytes > INT_MAX)
        max_bytes = INT_MAX;
    if (max_line > INT_MAX)
        max_line = INT_MAX;
    bool over_limit = len > max_bytes;
    const char *end = buf + (over_limit ? max_bytes : len);
    const char *p = buf;
    *err = HTTP_OK;

    /* RFC 9112 2.2: skip empty lines before the request-line */
    for (int empty = 0; p == end || *p == '\r' || *p == '\n'; empty++) {
        if (p == end)
            return out_of_bytes(over_limit, err);
        if (empty == MAX_LEADING_EMPTY_LINES)
            return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
        int eol = line_end(p, end, over_limit, err);
        if (eol < 0)
            return eol;
        p += eol;
    }

    /* Find the line end first (memchr is fast), so the long-line limit is
     * applied as soon as the limit is passed and the line is then parsed
     * with its end known. */
    const char *line = p;
    size_t avail = (size_t)(end - line);
    const char *lf = memchr(line, '\n', avail < max_line + 2 ? avail : max_line + 2);
    if (!lf) {
        /* over the limit unless the one byte past it may be a CR of CRLF */
        if (avail > max_line + 1 || (avail == max_line + 1 && line[max_line] != '\r'))
            return fail(err, HTTP_ERR_REQUEST_LINE_TOO_LONG);
        return out_of_bytes(over_limit, err);
    }
    const char *le = lf > line && lf[-1] == '\r' ? lf - 1 : lf;
    if ((size_t)(le - line) > max_line)
        return fail(err, HTTP_ERR_REQUEST_LINE_TOO_LONG);

    /* RFC 9112 3: method SP request-target SP HTTP-version, one SP each.
     * A CR before le is a bare CR: the line's own CR is at le. */
    const char *q = line;
    while (q < le && http_is((unsigned char)*q, HTTP_C_TCHAR))
        q++;
    if (q == line || q == le || *q != ' ') {
        if (q == le || *q == ' ' || *q == '\t')
            return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
        return fail(err, *q == '\r' ? HTTP_ERR_BARE_CR : HTTP_ERR_BAD_METHOD);
    }
    req->method = line;
    req->method_len = (size_t)(q - line);
    req->method_id = method_id(line, req->method_len);

    const char *target = ++q;
    q = scan_target(q, le);
    if (q == target || q == le || *q != ' ') {
        if (q == le || *q == ' ' || *q == '\t')
            return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
        return fail(err, *q == '\r' ? HTTP_ERR_BARE_CR : HTTP_ERR_BAD_TARGET);
    }
    req->target = target;
    req->target_len = (size_t)(q - target);

    /* RFC 9112 2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive */
    const char *v = q + 1;
    if (le - v != 8 || memcmp(v, "HTTP/", 5) != 0 || !http_is((unsigned char)v[5], HTTP_C_DIGIT) ||
        v[6] != '.' || !http_is((unsigned char)v[7], HTTP_C_DIGIT))
        return fail(err, memchr(v, '\r', (size_t)(le - v)) ? HTTP_ERR_BARE_CR
                                                           : HTTP_ERR_BAD_REQUEST_LINE);
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(err, HTTP_ERR_BAD_VERSION);
    req->minor_version = v[7] - '0';

    req->host = NULL;
    req->host_len = 0;
    enum http_error e = check_target(req);
    if (e != HTTP_OK)
        return fail(err, e);

    int size = parse_fields(buf, lf + 1, end, over_limit, req->headers, &req->num_headers, err);
    if (size < 0)
        return size;
    return finish_request(req, size, err);
}

static int finish_response(struct http_response *resp, enum http_method request_method, int size,
                           enum http_error *err)
{
    struct field_summary f;
    summarise(resp->headers, resp->num_headers, &f);

    /* Validated even when the status says there is no body: an upstream
     * that sends conflicting framing is not one to trust with the next
     * response on the connection either. */
    enum http_error e = framing_error(&f, resp->minor_version);
    if (e != HTTP_OK)
        return fail(err, e);

    int status = resp->status;
    resp->content_length = 0;
    /* RFC 9112 6.3 rules 1 and 2 */
    if (status < 200 || status == 204 || status == 304 || request_method == HTTP_METHOD_HEAD ||
        (request_method == HTTP_METHOD_CONNECT && status < 300)) {
        resp->framing = HTTP_FRAMING_NONE;
    } else if (f.has_te) {
        resp->framing = HTTP_FRAMING_CHUNKED;
    } else if (f.has_cl) {
        resp->framing = HTTP_FRAMING_LENGTH;
        resp->content_length = f.cl;
    } else {
        resp->framing = HTTP_FRAMING_UNTIL_CLOSE; /* rule 8 */
    }
    resp->keep_alive =
        persistent(&f, resp->minor_version) && resp->framing != HTTP_FRAMING_UNTIL_CLOSE;
    return size;
}

int http_parse_response(const char *buf, size_t len, size_t max_header_bytes,
                        enum http_method request_method, struct http_response *resp,
                        enum http_error *err)
{
    size_t max_bytes = max_header_bytes ? max_header_bytes : DEFAULT_MAX_HEADER_BYTES;
    if (max_bytes > INT_MAX)
        max_bytes = INT_MAX;
    bool over_limit = len > max_bytes;
    const char *end = buf + (over_limit ? max_bytes : len);
    size_t avail = (size_t)(end - buf);
    *err = HTTP_OK;

    if (avail == 0)
        return HTTP_INCOMPLETE;
    /* Something that does not start like a status line is refused at once,
     * rather than waiting for a line end that may never come. */
    if (memcmp(buf, "HTTP/", avail < 5 ? avail : 5) != 0)
        return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
    const char *lf = memchr(buf, '\n', avail);
    if (!lf)
        return out_of_bytes(over_limit, err);
    const char *le = lf > buf && lf[-1] == '\r' ? lf - 1 : lf;
    size_t n = (size_t)(le - buf);
    if (n < 5)
        return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
    if (memchr(buf, '\r', n))
        return fail(err, HTTP_ERR_BARE_CR);

    /* RFC 9112 4: HTTP-version SP status-code SP [ reason-phrase ]; we also
     * take the status line without the second SP, as senders omit it. */
    if (n < 8 || !http_is((unsigned char)buf[5], HTTP_C_DIGIT) || buf[6] != '.' ||
        !http_is((unsigned char)buf[7], HTTP_C_DIGIT) || (n > 8 && buf[8] != ' '))
        return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
    if (buf[5] != '1' || (buf[7] != '0' && buf[7] != '1'))
        return fail(err, HTTP_ERR_BAD_VERSION);
    if (n == 8)
        return fail(err, HTTP_ERR_BAD_REQUEST_LINE);
    resp->minor_version = buf[7] - '0';

    const char *s = buf + 9;
    if (n < 12 || !http_is((unsigned char)s[0], HTTP_C_DIGIT) ||
        !http_is((unsigned char)s[1], HTTP_C_DIGIT) ||
        !http_is((unsigned char)s[2], HTTP_C_DIGIT) || (n > 12 && s[3] != ' '))
        return fail(err, HTTP_ERR_BAD_STATUS);
    resp->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (resp->status < 100 || resp->status > 599) /* RFC 9110 15 */
        return fail(err, HTTP_ERR_BAD_STATUS);
    resp->reason = n > 12 ? s + 4 : le;
    resp->reason_len = (size_t)(le - resp->reason);
    if (scan_value(resp->reason, le) != le)
        return fail(err, HTTP_ERR_BAD_REQUEST_LINE);

    int size = parse_fields(buf, lf + 1, end, over_limit, resp->headers, &resp->num_headers, err);
    if (size < 0)
        return size;
    return finish_response(resp, request_method, size, err);
}
