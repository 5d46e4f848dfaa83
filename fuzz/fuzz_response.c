/* libFuzzer harness for http_parse_response.
 *
 * The first byte picks the method of the request being answered (GET, HEAD,
 * CONNECT, POST) and the header limit; the rest is the response. Checks:
 * no crash or out-of-bounds read; a result is refused, incomplete, or one
 * framing consistent with the status; prefixes never disagree with the
 * whole; and the parsed response re-serialised parses to the same thing.
 * Any violation aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http_response resp, prefix_resp, again;

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

static void check_prefix(const char *buf, size_t k, size_t max, enum http_method m, int full,
                         enum http_error full_err)
{
    enum http_error e;
    char *copy = malloc(k ? k : 1);
    check(copy != NULL);
    memcpy(copy, buf, k);
    int r = http_parse_response(copy, k, max, m, &prefix_resp, &e);
    free(copy);
    if (r == HTTP_INCOMPLETE) {
        check(e == HTTP_OK);
        check(full < 0 || k < (size_t)full);
        return;
    }
    check(r == full && e == full_err);
}

static void check_reserialised(const struct http_response *r, enum http_method m, size_t section)
{
    size_t cap = 16 + r->reason_len + 4 * r->num_headers + 2 + section;
    char *out = malloc(cap);
    check(out != NULL);
    size_t n = (size_t)sprintf(out, "HTTP/1.%d %03d", r->minor_version, r->status);
    if (r->reason_len) {
        out[n++] = ' ';
        memcpy(out + n, r->reason, r->reason_len);
        n += r->reason_len;
    }
    memcpy(out + n, "\r\n", 2);
    n += 2;
    for (size_t i = 0; i < r->num_headers; i++) {
        memcpy(out + n, r->headers[i].name, r->headers[i].name_len);
        n += r->headers[i].name_len;
        memcpy(out + n, ": ", 2);
        n += 2;
        memcpy(out + n, r->headers[i].value, r->headers[i].value_len);
        n += r->headers[i].value_len;
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    memcpy(out + n, "\r\n", 2);
    n += 2;
    check(n <= cap);

    enum http_error e;
    int size = http_parse_response(out, n, 65536, m, &again, &e);
    check(size == (int)n && e == HTTP_OK);
    check(again.status == r->status && again.minor_version == r->minor_version);
    check(same_span(again.reason, again.reason_len, r->reason, r->reason_len));
    check(again.num_headers == r->num_headers);
    for (size_t i = 0; i < r->num_headers; i++) {
        const struct http_header *a = &again.headers[i], *b = &r->headers[i];
        check(same_span(a->name, a->name_len, b->name, b->name_len));
        check(same_span(a->value, a->value_len, b->value, b->value_len));
    }
    check(again.framing == r->framing && again.content_length == r->content_length);
    check(again.keep_alive == r->keep_alive);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum http_method methods[] = {HTTP_METHOD_GET, HTTP_METHOD_HEAD,
                                               HTTP_METHOD_CONNECT, HTTP_METHOD_POST};
    static const size_t limits[] = {0, 128, 4096, 16384};
    if (size < 1)
        return 0;
    enum http_method m = methods[data[0] & 3];
    size_t max = limits[(data[0] >> 2) & 3];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;

    enum http_error err = HTTP_ERR__COUNT;
    int r = http_parse_response(buf, len, max, m, &resp, &err);
    if (r == HTTP_INCOMPLETE) {
        check(err == HTTP_OK);
    } else if (r < 0) {
        check(r == -2 && err > HTTP_OK && err < HTTP_ERR__COUNT);
    } else {
        size_t section = (size_t)r;
        check(err == HTTP_OK && section <= len);
        check(resp.status >= 100 && resp.status <= 599);
        check(resp.minor_version == 0 || resp.minor_version == 1);
        check(within(resp.reason, resp.reason_len, buf, section));
        check(resp.num_headers <= HTTP_MAX_HEADERS);
        for (size_t i = 0; i < resp.num_headers; i++) {
            check(resp.headers[i].name_len > 0);
            check(within(resp.headers[i].name, resp.headers[i].name_len, buf, section));
            check(within(resp.headers[i].value, resp.headers[i].value_len, buf, section));
        }
        bool no_body = resp.status < 200 || resp.status == 204 || resp.status == 304 ||
                       m == HTTP_METHOD_HEAD || (m == HTTP_METHOD_CONNECT && resp.status < 300);
        check(!no_body || resp.framing == HTTP_FRAMING_NONE);
        check(no_body || resp.framing != HTTP_FRAMING_NONE);
        check(resp.framing == HTTP_FRAMING_LENGTH || resp.content_length == 0);
        check(resp.framing != HTTP_FRAMING_UNTIL_CLOSE || !resp.keep_alive);
        check(resp.content_length <= UINT64_C(0x7fffffffffffffff));
        (void)http_status_reason(resp.status);
        check_reserialised(&resp, m, section);
        check_prefix(buf, section - 1, max, m, r, err);
    }
    if (len > 0) {
        check_prefix(buf, len / 2, max, m, r, err);
        check_prefix(buf, len - 1, max, m, r, err);
    }
    return 0;
}
