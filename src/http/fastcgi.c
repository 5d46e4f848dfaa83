/* FastCGI records and the CGI response they carry: encoders, an in-place
 * record decoder, the CGI header parser, and the script-path normaliser.
 *
 * Pure functions over bytes, unit-tested alone (tests/unit/test_fastcgi.c).
 * Every length a record announces is checked before it is used: a record
 * may not claim bytes it does not have, and nothing after FCGI_END_REQUEST
 * is accepted (it would be read as the next request's response). */
#include "http/http.h"
#include "http/http_internal.h"

#include <string.h>

void http_fcgi_header(char out[HTTP_FCGI_HEADER_LEN], enum http_fcgi_type type, uint16_t request_id,
                      uint16_t content_len, uint8_t padding)
{
    out[0] = 1; /* FCGI_VERSION_1 */
    out[1] = (char)type;
    out[2] = (char)(request_id >> 8);
    out[3] = (char)(request_id & 0xff);
    out[4] = (char)(content_len >> 8);
    out[5] = (char)(content_len & 0xff);
    out[6] = (char)padding;
    out[7] = 0;
}

void http_fcgi_begin_request(char out[16], uint16_t request_id, bool keep_conn)
{
    http_fcgi_header(out, HTTP_FCGI_BEGIN_REQUEST, request_id, 8, 0);
    memset(out + 8, 0, 8);
    out[9] = 1;                  /* FCGI_RESPONDER */
    out[10] = keep_conn ? 1 : 0; /* FCGI_KEEP_CONN */
}

static size_t put_length(char *out, size_t n)
{
    if (n < 128) {
        out[0] = (char)n;
        return 1;
    }
    out[0] = (char)(0x80 | (n >> 24));
    out[1] = (char)((n >> 16) & 0xff);
    out[2] = (char)((n >> 8) & 0xff);
    out[3] = (char)(n & 0xff);
    return 4;
}

size_t http_fcgi_param_lengths(char out[8], size_t name_len, size_t value_len)
{
    if (name_len > 0x7fffffff || value_len > 0x7fffffff)
        return 0;
    size_t n = put_length(out, name_len);
    return n + put_length(out + n, value_len);
}

void http_fcgi_decoder_init(struct http_fcgi_decoder *d, uint16_t request_id)
{
    memset(d, 0, sizeof(*d));
    d->request_id = request_id;
}

/* A complete record header in d->hdr: check it and start its content. */
static int record_start(struct http_fcgi_decoder *d, enum http_error *err)
{
    const uint8_t *h = d->hdr;
    uint16_t id = (uint16_t)(h[2] << 8 | h[3]);
    uint16_t clen = (uint16_t)(h[4] << 8 | h[5]);
    if (h[0] != 1) {
        *err = HTTP_ERR_FCGI_VERSION;
        return -2;
    }
    if (id != d->request_id) {
        *err = HTTP_ERR_FCGI_REQUEST_ID;
        return -2;
    }
    switch (h[1]) {
    case HTTP_FCGI_STDOUT:
        if (d->stdout_closed) {
            *err = HTTP_ERR_FCGI_AFTER_END;
            return -2;
        }
        if (clen == 0)
            d->stdout_closed = true;
        break;
    case HTTP_FCGI_STDERR:
        break;
    case HTTP_FCGI_END_REQUEST:
        if (clen != 8) {
            *err = HTTP_ERR_FCGI_END_REQUEST;
            return -2;
        }
        d->end_have = 0;
        break;
    default:
        *err = HTTP_ERR_FCGI_TYPE;
        return -2;
    }
    d->type = h[1];
    d->content_left = clen;
    d->padding_left = h[6];
    d->hdr_have = 0;
    return 0;
}

int http_fcgi_decode(struct http_fcgi_decoder *d, char *buf, size_t *len,
                     void (*on_stderr)(void *ctx, const char *p, size_t n), void *ctx,
                     enum http_error *err)
{
    size_t in = 0, out = 0, n = *len;
    *err = HTTP_OK;
    while (in < n) {
        if (d->ended) {
            *err = HTTP_ERR_FCGI_AFTER_END;
            return -2;
        }
        if (d->content_left == 0 && d->padding_left == 0) {
            /* between records: gather the next header, possibly across calls */
            while (in < n && d->hdr_have < HTTP_FCGI_HEADER_LEN)
                d->hdr[d->hdr_have++] = (uint8_t)buf[in++];
            if (d->hdr_have < HTTP_FCGI_HEADER_LEN)
                break;
            if (record_start(d, err) < 0)
                return -2;
            continue;
        }
        if (d->content_left) {
            size_t k = n - in < d->content_left ? n - in : d->content_left;
            if (d->type == HTTP_FCGI_STDOUT) {
                memmove(buf + out, buf + in, k); /* out <= in: moves left only */
                out += k;
                d->stdout_bytes += k;
            } else if (d->type == HTTP_FCGI_STDERR) {
                d->stderr_bytes += k;
                if (on_stderr)
                    on_stderr(ctx, buf + in, k);
            } else {
                memcpy(d->end_body + d->end_have, buf + in, k);
                d->end_have = (uint8_t)(d->end_have + k);
            }
            in += k;
            d->content_left = (uint16_t)(d->content_left - k);
        } else {
            size_t k = n - in < d->padding_left ? n - in : d->padding_left;
            in += k;
            d->padding_left = (uint16_t)(d->padding_left - k);
        }
        if (d->type == HTTP_FCGI_END_REQUEST && d->content_left == 0 && d->padding_left == 0) {
            const uint8_t *b = d->end_body;
            d->app_status =
                (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
            d->protocol_status = b[4];
            d->ended = true;
            if (d->protocol_status != HTTP_FCGI_REQUEST_COMPLETE) {
                *err = HTTP_ERR_FCGI_END_REQUEST;
                return -2;
            }
        }
    }
    *len = out;
    return 0;
}

/* ---- the CGI response head ---- */

static int cgi_fail(enum http_error *err, enum http_error e)
{
    *err = e;
    return -2;
}

/* "404 Not Found" or "404": three digits, then SP and a reason or nothing. */
static bool parse_status(const char *v, size_t n, struct http_response *resp)
{
    if (n < 3 || !http_is((unsigned char)v[0], HTTP_C_DIGIT) ||
        !http_is((unsigned char)v[1], HTTP_C_DIGIT) || !http_is((unsigned char)v[2], HTTP_C_DIGIT))
        return false;
    if (n > 3 && v[3] != ' ')
        return false;
    int status = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
    /* a final response only: 1xx would start a tunnel or an interim loop */
    if (status < 200 || status > 599)
        return false;
    resp->status = status;
    resp->reason = n > 4 ? v + 4 : NULL;
    resp->reason_len = n > 4 ? n - 4 : 0;
    return true;
}

int http_parse_cgi_response(const char *buf, size_t len, size_t max_header_bytes,
                            enum http_method request_method, struct http_response *resp,
                            enum http_error *err)
{
    size_t max = max_header_bytes ? max_header_bytes : 16384;
    bool has_status = false, has_location = false, has_length = false;
    uint64_t length = 0;
    size_t pos = 0;

    *err = HTTP_OK;
    memset(resp, 0, offsetof(struct http_response, headers));
    resp->num_headers = 0;
    resp->minor_version = 1;
    for (;;) {
        const char *line = buf + pos;
        const char *lf = memchr(line, '\n', len - pos);
        if (!lf)
            return len > max ? cgi_fail(err, HTTP_ERR_HEADERS_TOO_LARGE) : HTTP_INCOMPLETE;
        size_t line_len = (size_t)(lf - line);
        pos += line_len + 1;
        if (pos > max)
            return cgi_fail(err, HTTP_ERR_HEADERS_TOO_LARGE);
        if (line_len && line[line_len - 1] == '\r')
            line_len--;
        if (line_len == 0)
            break;
        if (http_is((unsigned char)line[0], HTTP_C_WS))
            return cgi_fail(err, HTTP_ERR_OBS_FOLD);
        size_t name_len = 0;
        while (name_len < line_len && http_is((unsigned char)line[name_len], HTTP_C_TCHAR))
            name_len++;
        if (name_len == line_len || name_len == 0)
            return cgi_fail(err, HTTP_ERR_BAD_HEADER_NAME);
        if (line[name_len] != ':')
            return cgi_fail(err, http_is((unsigned char)line[name_len], HTTP_C_WS)
                                     ? HTTP_ERR_WS_BEFORE_COLON
                                     : HTTP_ERR_BAD_HEADER_NAME);
        const char *v = line + name_len + 1, *end = line + line_len;
        while (v < end && http_is((unsigned char)*v, HTTP_C_WS))
            v++;
        while (end > v && http_is((unsigned char)end[-1], HTTP_C_WS))
            end--;
        for (const char *c = v; c < end; c++) {
            if (*c == '\r')
                return cgi_fail(err, HTTP_ERR_BARE_CR);
            if (!http_is((unsigned char)*c, HTTP_C_VALUE))
                return cgi_fail(err, HTTP_ERR_BAD_HEADER_VALUE);
        }
        struct http_header h = {line, name_len, v, (size_t)(end - v)};
        if (http_name_is(&h, "Status")) {
            if (has_status || !parse_status(h.value, h.value_len, resp))
                return cgi_fail(err, HTTP_ERR_BAD_STATUS);
            has_status = true;
            continue; /* RFC 3875 6.3.3: a CGI field, not an HTTP one */
        }
        if (http_name_is(&h, "Transfer-Encoding"))
            return cgi_fail(err, HTTP_ERR_BAD_TRANSFER_ENCODING);
        if (http_name_is(&h, "Content-Length")) {
            uint64_t v64 = 0;
            if (h.value_len == 0 || h.value_len > 18)
                return cgi_fail(err, HTTP_ERR_BAD_CONTENT_LENGTH);
            for (size_t i = 0; i < h.value_len; i++) {
                if (!http_is((unsigned char)h.value[i], HTTP_C_DIGIT))
                    return cgi_fail(err, HTTP_ERR_BAD_CONTENT_LENGTH);
                v64 = v64 * 10 + (uint64_t)(h.value[i] - '0');
            }
            if (has_length && v64 != length)
                return cgi_fail(err, HTTP_ERR_BAD_CONTENT_LENGTH);
            has_length = true;
            length = v64;
        }
        if (http_name_is(&h, "Location"))
            has_location = true;
        if (resp->num_headers == HTTP_MAX_HEADERS)
            return cgi_fail(err, HTTP_ERR_TOO_MANY_HEADERS);
        resp->headers[resp->num_headers++] = h;
    }
    if (!has_status)
        resp->status = has_location ? 302 : 200;
    if (!resp->reason_len) {
        resp->reason = http_status_reason(resp->status);
        resp->reason_len = strlen(resp->reason);
    }
    if (request_method == HTTP_METHOD_HEAD || resp->status == 204 || resp->status == 304) {
        resp->framing = HTTP_FRAMING_NONE;
    } else if (has_length) {
        resp->framing = HTTP_FRAMING_LENGTH;
        resp->content_length = length;
    } else {
        resp->framing = HTTP_FRAMING_UNTIL_CLOSE;
    }
    return (int)pos;
}

/* ---- script paths ---- */

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = http_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

ssize_t http_normalize_path(const char *path, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    if (len == 0 || path[0] != '/')
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '%') {
            int hi = i + 1 < len ? hex_value((unsigned char)path[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value((unsigned char)path[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            if (c == 0)
                return -1; /* a NUL would cut the file name the script runs as */
            i += 2;
        }
        if (n + 2 >= cap)
            return -3;
        out[n++] = (char)c;
    }
    /* Segments in place (the write index never passes the read index):
     * "//" merged, "." dropped, ".." removes the segment before it. A
     * decoded %2F separates segments like "/": what the file system sees. */
    size_t w = 0, r = 0;
    bool dir = false; /* the result names a directory: keep a trailing "/" */
    while (r < n) {
        while (r < n && out[r] == '/')
            r++;
        size_t s = r;
        while (r < n && out[r] != '/')
            r++;
        size_t seg = r - s;
        dir = r < n || seg == 0;
        if (seg == 0)
            break;
        if (seg == 1 && out[s] == '.') {
            dir = true;
        } else if (seg == 2 && out[s] == '.' && out[s + 1] == '.') {
            if (w == 0)
                return -2; /* above the root */
            while (w > 0 && out[w - 1] != '/')
                w--;
            w--; /* the "/" before the removed segment */
            dir = true;
        } else {
            out[w++] = '/';
            memmove(out + w, out + s, seg);
            w += seg;
        }
    }
    if (w == 0 || dir)
        out[w++] = '/';
    out[w] = '\0';
    return (ssize_t)w;
}
