/* Byte classes, error and status texts, and header-field helpers. */
#include "http/http.h"
#include "http/http_internal.h"

#include <string.h>

/* Generated from the RFC 9110 / RFC 3986 definitions; test_http.c recomputes
 * every entry from those definitions and compares. */
const uint8_t http_ctype[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x00-0x07 */
    0x00, 0xc2, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x08-0x0f */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x10-0x17 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 0x18-0x1f */
    0xc2, 0x97, 0x06, 0x87, 0x97, 0x87, 0x97, 0x97, /* 0x20-0x27 */
    0x96, 0x96, 0x97, 0x97, 0x96, 0x97, 0x97, 0x86, /* 0x28-0x2f */
    0xbf, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf, /* 0x30-0x37 */
    0xbf, 0xbf, 0x86, 0x96, 0x86, 0x96, 0x86, 0x86, /* 0x38-0x3f */
    0x86, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x97, /* 0x40-0x47 */
    0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, /* 0x48-0x4f */
    0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, /* 0x50-0x57 */
    0x97, 0x97, 0x97, 0x86, 0x06, 0x86, 0x87, 0x97, /* 0x58-0x5f */
    0x87, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x9f, 0x97, /* 0x60-0x67 */
    0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, /* 0x68-0x6f */
    0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, 0x97, /* 0x70-0x77 */
    0x97, 0x97, 0x97, 0x86, 0x87, 0x86, 0x97, 0x00, /* 0x78-0x7f */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0x80-0x87 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0x88-0x8f */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0x90-0x97 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0x98-0x9f */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xa0-0xa7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xa8-0xaf */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xb0-0xb7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xb8-0xbf */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xc0-0xc7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xc8-0xcf */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xd0-0xd7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xd8-0xdf */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xe0-0xe7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xe8-0xef */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xf0-0xf7 */
    0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, 0x82, /* 0xf8-0xff */
};

int http_error_status(enum http_error err)
{
    switch (err) {
    case HTTP_OK:
        return 200;
    case HTTP_ERR_BAD_VERSION:
        return 505; /* RFC 9110 15.6.6 */
    case HTTP_ERR_REQUEST_LINE_TOO_LONG:
        return 414; /* RFC 9112 3: a server SHOULD answer 414 for a long target */
    case HTTP_ERR_TOO_MANY_HEADERS:
    case HTTP_ERR_HEADERS_TOO_LARGE:
        return 431; /* RFC 6585 5 */
    case HTTP_ERR_UNKNOWN_TRANSFER_CODING:
        return 501; /* RFC 9112 6.1: unknown transfer coding => 501 */
    default:
        return 400;
    }
}

const char *http_error_text(enum http_error err)
{
    switch (err) {
    case HTTP_OK:
        return "no error";
    case HTTP_ERR_BAD_REQUEST_LINE:
        return "malformed request line or status line";
    case HTTP_ERR_BAD_METHOD:
        return "method is not a token";
    case HTTP_ERR_BAD_TARGET:
        return "request-target has an invalid byte or form";
    case HTTP_ERR_BAD_VERSION:
        return "HTTP version not supported";
    case HTTP_ERR_BAD_HEADER_NAME:
        return "empty or invalid header field name";
    case HTTP_ERR_WS_BEFORE_COLON:
        return "whitespace between header field name and colon";
    case HTTP_ERR_BAD_HEADER_VALUE:
        return "control character in header field value";
    case HTTP_ERR_OBS_FOLD:
        return "obsolete line folding or whitespace at start of header line";
    case HTTP_ERR_BARE_CR:
        return "CR not followed by LF";
    case HTTP_ERR_BARE_LF:
        return "LF without CR";
    case HTTP_ERR_TOO_MANY_HEADERS:
        return "too many header fields";
    case HTTP_ERR_REQUEST_LINE_TOO_LONG:
        return "request line too long";
    case HTTP_ERR_HEADERS_TOO_LARGE:
        return "header section too large";
    case HTTP_ERR_CL_AND_TE:
        return "Content-Length and Transfer-Encoding both present";
    case HTTP_ERR_BAD_CONTENT_LENGTH:
        return "invalid or conflicting Content-Length";
    case HTTP_ERR_BAD_TRANSFER_ENCODING:
        return "Transfer-Encoding is not a single final chunked coding";
    case HTTP_ERR_TE_IN_HTTP10:
        return "Transfer-Encoding in an HTTP/1.0 message";
    case HTTP_ERR_MISSING_HOST:
        return "HTTP/1.1 request without Host";
    case HTTP_ERR_MULTIPLE_HOST:
        return "more than one Host field";
    case HTTP_ERR_BAD_HOST:
        return "invalid Host value";
    case HTTP_ERR_BAD_STATUS:
        return "invalid status code";
    case HTTP_ERR_BAD_CHUNK:
        return "malformed chunked coding";
    case HTTP_ERR_CHUNK_TOO_LARGE:
        return "chunk size does not fit 63 bits";
    case HTTP_ERR_UNKNOWN_TRANSFER_CODING:
        return "unknown transfer coding";
    case HTTP_ERR_FCGI_VERSION:
        return "FastCGI record with a version other than 1";
    case HTTP_ERR_FCGI_REQUEST_ID:
        return "FastCGI record for another request id";
    case HTTP_ERR_FCGI_TYPE:
        return "FastCGI record of a type a responder must not send";
    case HTTP_ERR_FCGI_END_REQUEST:
        return "malformed or failed FastCGI END_REQUEST";
    case HTTP_ERR_FCGI_AFTER_END:
        return "FastCGI output after the end of the request or of stdout";
    case HTTP_ERR_FCGI_NO_OUTPUT:
        return "FastCGI request ended without any output on stdout";
    case HTTP_ERR_FCGI_HEAD_CUT:
        return "FastCGI request ended inside the CGI header section";
    case HTTP_ERR_FCGI_BODY_LENGTH:
        return "FastCGI stdout body does not match its Content-Length";
    case HTTP_ERR__COUNT:
        break;
    }
    return "unknown error";
}

/* RFC 9110 section 15, plus the registered codes a proxy meets in practice. */
static const char *const status_reasons[600] = {
    [100] = "Continue",
    [101] = "Switching Protocols",
    [102] = "Processing",
    [103] = "Early Hints",
    [200] = "OK",
    [201] = "Created",
    [202] = "Accepted",
    [203] = "Non-Authoritative Information",
    [204] = "No Content",
    [205] = "Reset Content",
    [206] = "Partial Content",
    [207] = "Multi-Status",
    [208] = "Already Reported",
    [226] = "IM Used",
    [300] = "Multiple Choices",
    [301] = "Moved Permanently",
    [302] = "Found",
    [303] = "See Other",
    [304] = "Not Modified",
    [305] = "Use Proxy",
    [307] = "Temporary Redirect",
    [308] = "Permanent Redirect",
    [400] = "Bad Request",
    [401] = "Unauthorized",
    [402] = "Payment Required",
    [403] = "Forbidden",
    [404] = "Not Found",
    [405] = "Method Not Allowed",
    [406] = "Not Acceptable",
    [407] = "Proxy Authentication Required",
    [408] = "Request Timeout",
    [409] = "Conflict",
    [410] = "Gone",
    [411] = "Length Required",
    [412] = "Precondition Failed",
    [413] = "Content Too Large",
    [414] = "URI Too Long",
    [415] = "Unsupported Media Type",
    [416] = "Range Not Satisfiable",
    [417] = "Expectation Failed",
    [421] = "Misdirected Request",
    [422] = "Unprocessable Content",
    [423] = "Locked",
    [424] = "Failed Dependency",
    [425] = "Too Early",
    [426] = "Upgrade Required",
    [428] = "Precondition Required",
    [429] = "Too Many Requests",
    [431] = "Request Header Fields Too Large",
    [451] = "Unavailable For Legal Reasons",
    [500] = "Internal Server Error",
    [501] = "Not Implemented",
    [502] = "Bad Gateway",
    [503] = "Service Unavailable",
    [504] = "Gateway Timeout",
    [505] = "HTTP Version Not Supported",
    [506] = "Variant Also Negotiates",
    [507] = "Insufficient Storage",
    [508] = "Loop Detected",
    [511] = "Network Authentication Required",
};

const char *http_status_reason(int status)
{
    if (status < 0 || status >= 600 || !status_reasons[status])
        return "Unknown";
    return status_reasons[status];
}

bool http_name_is(const struct http_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && http_ieq(h->name, name, n);
}

const struct http_header *http_find_header(const struct http_header *headers, size_t n,
                                           const char *name)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (headers[i].name_len == name_len && http_ieq(headers[i].name, name, name_len))
            return &headers[i];
    return NULL;
}

bool http_list_has_token(const char *value, size_t len, const char *token)
{
    size_t token_len = strlen(token);
    const char *pos = value, *end = value + len, *elem;
    size_t elem_len;
    bool started = false;
    while (http_list_next(&pos, end, &started, &elem, &elem_len))
        if (elem_len == token_len && http_ieq(elem, token, token_len))
            return true;
    return false;
}

/* Case-insensitive compare of a header name with a lowercase literal. */
static bool name_eq(const struct http_header *h, const char *lower, size_t n)
{
    return h->name_len == n && http_ieq(h->name, lower, n);
}

bool http_is_hop_by_hop(const struct http_header *h, const struct http_header *headers, size_t n)
{
    /* RFC 9110 7.6.1: Connection, Proxy-Connection, Keep-Alive, TE,
     * Transfer-Encoding, Upgrade. Trailer too (hop-by-hop in RFC 2616
     * 13.5.1): it describes a chunked body we may decode or re-chunk. The
     * length picks the candidates, as this runs for every forwarded field. */
    switch (h->name_len) {
    case 2:
        if (name_eq(h, "te", 2))
            return true;
        break;
    case 7:
        if (name_eq(h, "trailer", 7) || name_eq(h, "upgrade", 7))
            return true;
        break;
    case 10:
        if (name_eq(h, "connection", 10) || name_eq(h, "keep-alive", 10))
            return true;
        break;
    case 16:
        if (name_eq(h, "proxy-connection", 16))
            return true;
        break;
    case 17:
        if (name_eq(h, "transfer-encoding", 17))
            return true;
        break;
    }
    for (size_t i = 0; i < n; i++) {
        if (!name_eq(&headers[i], "connection", 10))
            continue;
        const char *pos = headers[i].value, *end = pos + headers[i].value_len, *elem;
        size_t elem_len;
        bool started = false;
        while (http_list_next(&pos, end, &started, &elem, &elem_len))
            if (elem_len == h->name_len && http_ieq(elem, h->name, elem_len))
                return true;
    }
    return false;
}

/* End of one element of a comma-separated list starting at p: the next
 * comma outside a quoted-string (RFC 9110 5.6.4), or end. */
static const char *element_end(const char *p, const char *end)
{
    bool quoted = false;
    for (; p < end; p++) {
        if (quoted && *p == '\\' && p + 1 < end)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == ',' && !quoted)
            break;
    }
    return p;
}

/* p[0..n) as a decimal number that fits 32 bits: digits only. */
static bool parse_u32(const char *p, size_t n, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!http_is((unsigned char)p[i], HTTP_C_DIGIT))
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

bool http_parse_keep_alive(const char *value, size_t len, uint32_t *timeout_s, uint32_t *max)
{
    const char *p = value, *end = value + len;
    bool have_timeout = false, have_max = false;

    *timeout_s = *max = 0;
    while (p < end) {
        const char *stop = element_end(p, end);
        const char *name = p, *v;
        while (name < stop && http_is((unsigned char)*name, HTTP_C_WS))
            name++;
        const char *name_end = name;
        while (name_end < stop && http_is((unsigned char)*name_end, HTTP_C_TCHAR))
            name_end++;
        v = name_end;
        while (v < stop && http_is((unsigned char)*v, HTTP_C_WS))
            v++;
        p = stop < end ? stop + 1 : stop;
        if (v == stop || *v != '=')
            continue; /* a bare word, or junk after the name */
        v++;
        while (v < stop && http_is((unsigned char)*v, HTTP_C_WS))
            v++;
        const char *v_end = stop;
        while (v_end > v && http_is((unsigned char)v_end[-1], HTTP_C_WS))
            v_end--;
        size_t name_len = (size_t)(name_end - name);
        uint32_t n;
        if (!parse_u32(v, (size_t)(v_end - v), &n))
            continue;
        if (name_len == 7 && http_ieq(name, "timeout", 7)) {
            if (!have_timeout || n < *timeout_s)
                *timeout_s = n;
            have_timeout = true;
        } else if (name_len == 3 && http_ieq(name, "max", 3)) {
            if (!have_max || n < *max)
                *max = n;
            have_max = true;
        }
    }
    return have_timeout || have_max;
}
