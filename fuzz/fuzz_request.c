/* libFuzzer harness for http_parse_request.
 *
 * Beyond "no crash, no out-of-bounds read", it checks what the proxy relies
 * on against request smuggling:
 *  - every input is refused, incomplete, or parsed to exactly one framing;
 *  - a prefix of the input is incomplete or gives the same answer (so a
 *    message read in pieces is judged as when read whole);
 *  - differential: the parsed request re-serialised (request line, fields
 *    with CRLF, empty line) parses again to the same method, target, version,
 *    fields, framing, length, host and keep-alive. A difference would mean
 *    we forward something that a strict parser reads differently from us.
 * Any violation aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http_request req, prefix_req, again;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static bool within(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static bool same_span(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* A prefix of the input must be incomplete, or end the same way. */
static void check_prefix(const char *buf, size_t k, const struct http_limits *lim, int full,
                         enum http_error full_err)
{
    enum http_error e;
    /* an exact-size copy, so reading past the prefix is caught */
    char *copy = malloc(k ? k : 1);
    check(copy != NULL);
    memcpy(copy, buf, k);
    int r = http_parse_request(copy, k, lim, &prefix_req, &e);
    free(copy);
    if (r == HTTP_INCOMPLETE) {
        check(e == HTTP_OK);
        check(full < 0 || k < (size_t)full);
        return;
    }
    check(r == full && e == full_err);
}

static size_t put(char *out, const char *s, size_t n)
{
    memcpy(out, s, n);
    return n;
}

static void check_reserialised(const struct http_request *r, size_t section)
{
    /* request line + "HTTP/1.x" + CRLFs, and ": " + CRLF per field */
    size_t cap = r->method_len + r->target_len + 16 + 4 * r->num_headers + 2 + section;
    char *out = malloc(cap);
    check(out != NULL);
    size_t n = 0;
    n += put(out + n, r->method, r->method_len);
    out[n++] = ' ';
    n += put(out + n, r->target, r->target_len);
    n += put(out + n, r->minor_version ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n", 11);
    for (size_t i = 0; i < r->num_headers; i++) {
        n += put(out + n, r->headers[i].name, r->headers[i].name_len);
        n += put(out + n, ": ", 2);
        n += put(out + n, r->headers[i].value, r->headers[i].value_len);
        n += put(out + n, "\r\n", 2);
    }
    n += put(out + n, "\r\n", 2);
    check(n <= cap);

    /* the same request line; fields may have grown by ": " and CRLF */
    struct http_limits roomy = {8192, 65536};
    enum http_error e;
    int size = http_parse_request(out, n, &roomy, &again, &e);
    check(size == (int)n && e == HTTP_OK);
    check(same_span(again.method, again.method_len, r->method, r->method_len));
    check(again.method_id == r->method_id);
    check(same_span(again.target, again.target_len, r->target, r->target_len));
    check(again.minor_version == r->minor_version);
    check(again.num_headers == r->num_headers);
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *a = &again.headers[i], *b = &r->headers[i];
        check(same_span(a->name, a->name_len, b->name, b->name_len));
        check(same_span(a->value, a->value_len, b->value, b->value_len));
    }
    check(again.framing == r->framing);
    check(again.content_length == r->content_length);
    check((again.host == NULL) == (r->host == NULL));
    check(same_span(again.host, again.host_len, r->host, r->host_len));
    check(again.keep_alive == r->keep_alive);
    check(again.expect_continue == r->expect_continue);
    check(again.upgrade == r->upgrade);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    /* vary the limits too, so the limit paths see the same variety of input */
    static const struct http_limits limits[] = {{0, 0}, {64, 256}, {16, 64}, {8192, 16384}};
    const struct http_limits *lim = size % 8 == 0 ? NULL : &limits[size % 4];

    enum http_error err = HTTP_ERR__COUNT;
    int r = http_parse_request(buf, size, lim, &req, &err);

    if (r == HTTP_INCOMPLETE) {
        check(err == HTTP_OK);
    } else if (r < 0) {
        check(r == -2 && err > HTTP_OK && err < HTTP_ERR__COUNT);
        int status = http_error_status(err);
        check(status == 400 || status == 414 || status == 431 || status == 501 || status == 505);
        check(http_error_text(err) != NULL);
    } else {
        check(err == HTTP_OK && (size_t)r <= size);
        size_t section = (size_t)r;
        check(req.framing == HTTP_FRAMING_NONE || req.framing == HTTP_FRAMING_LENGTH ||
              req.framing == HTTP_FRAMING_CHUNKED);
        check(req.framing == HTTP_FRAMING_LENGTH || req.content_length == 0);
        check(req.content_length <= UINT64_C(0x7fffffffffffffff));
        check(req.minor_version == 0 || req.minor_version == 1);
        check(req.num_headers <= HTTP_MAX_HEADERS);
        check(req.method_len > 0 && within(req.method, req.method_len, buf, section));
        check(req.target_len > 0 && within(req.target, req.target_len, buf, section));
        check(req.host != NULL || req.minor_version == 0);
        check(req.host == NULL || within(req.host, req.host_len, buf, section));
        for (size_t i = 0; i < req.num_headers; i++) {
            const struct http_header *h = &req.headers[i];
            check(h->name_len > 0 && within(h->name, h->name_len, buf, section));
            check(within(h->value, h->value_len, buf, section));
            (void)http_is_hop_by_hop(h, req.headers, req.num_headers);
        }
        check(http_find_header(req.headers, req.num_headers, "host") != NULL ||
              req.minor_version == 0);
        check_reserialised(&req, section);
        check_prefix(buf, section - 1, lim, r, err);
    }

    /* a few prefixes: none may disagree with the whole */
    if (size > 0) {
        check_prefix(buf, size / 2, lim, r, err);
        check_prefix(buf, size - 1, lim, r, err);
        check_prefix(buf, (size * 7) / 11, lim, r, err);
    }
    return 0;
}
