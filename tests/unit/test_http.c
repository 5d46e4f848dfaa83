/* Unit tests for src/http: every RFC 9112 rule the parser enforces, the
 * chunked decoder under every input split, and the header helpers.
 *
 * Messages are parsed from exact-size heap copies, so ASan and valgrind see
 * any read past the end. The request/response helpers also feed every proper
 * prefix of each message and require HTTP_INCOMPLETE or the same error as for
 * the whole message: that is what incremental parsing promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"
#include "http/http_internal.h"

static struct http_request req;
static struct http_response resp;
static char *held; /* heap copy the last parsed message points into */

static char *hold(const char *msg, size_t n)
{
    free(held);
    held = malloc(n ? n : 1);
    assert_non_null(held);
    memcpy(held, msg, n);
    return held;
}

/* Every proper prefix, placed at the end of an exact-size allocation. */
static void check_request_prefixes(const char *msg, size_t n, const struct http_limits *lim,
                                   int full, enum http_error full_err)
{
    static struct http_request scratch;
    char *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    size_t stride = n > 4096 ? 97 : 1;
    for (size_t k = 0; k < n; k += stride) {
        enum http_error e;
        memcpy(buf + n - k, msg, k);
        int r = http_parse_request(buf + n - k, k, lim, &scratch, &e);
        if (r == HTTP_INCOMPLETE && e == HTTP_OK)
            continue;
        if (full < 0 && r == full && e == full_err)
            continue;
        fail_msg("prefix of %zu/%zu bytes gave %d (%s), whole message %d (%s)", k, n, r,
                 http_error_text(e), full, http_error_text(full_err));
    }
    free(buf);
}

static int parse_req(const char *msg, size_t n, const struct http_limits *lim, enum http_error *err)
{
    int r = http_parse_request(hold(msg, n), n, lim, &req, err);
    check_request_prefixes(msg, n, lim, r, *err);
    /* the parse must not depend on state left by earlier calls */
    return r;
}

static void req_ok_n(const char *msg, size_t n, const struct http_limits *lim)
{
    enum http_error e;
    int r = parse_req(msg, n, lim, &e);
    if (r != (int)n)
        fail_msg("expected success for %.*s: got %d (%s)", (int)n, msg, r, http_error_text(e));
    assert_int_equal(e, HTTP_OK);
}

static void req_err_n(const char *msg, size_t n, const struct http_limits *lim,
                      enum http_error want)
{
    enum http_error e;
    int r = parse_req(msg, n, lim, &e);
    if (r != -2 || e != want)
        fail_msg("expected \"%s\" for %.*s: got %d (%s)", http_error_text(want), (int)n, msg, r,
                 http_error_text(e));
}

#define REQ_OK(m) req_ok_n(m, sizeof(m) - 1, NULL)
#define REQ_ERR(m, e) req_err_n(m, sizeof(m) - 1, NULL, e)
#define REQ_OK_S(s) req_ok_n(s, strlen(s), NULL)
#define REQ_ERR_S(s, e) req_err_n(s, strlen(s), NULL, e)

static void check_response_prefixes(const char *msg, size_t n, size_t max, enum http_method m,
                                    int full, enum http_error full_err)
{
    static struct http_response scratch;
    char *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    size_t stride = n > 4096 ? 97 : 1;
    for (size_t k = 0; k < n; k += stride) {
        enum http_error e;
        memcpy(buf + n - k, msg, k);
        int r = http_parse_response(buf + n - k, k, max, m, &scratch, &e);
        if (r == HTTP_INCOMPLETE && e == HTTP_OK)
            continue;
        if (full < 0 && r == full && e == full_err)
            continue;
        fail_msg("prefix of %zu/%zu bytes gave %d (%s), whole message %d (%s)", k, n, r,
                 http_error_text(e), full, http_error_text(full_err));
    }
    free(buf);
}

static int parse_resp(const char *msg, size_t n, size_t max, enum http_method m,
                      enum http_error *err)
{
    int r = http_parse_response(hold(msg, n), n, max, m, &resp, err);
    check_response_prefixes(msg, n, max, m, r, *err);
    return r;
}

static void resp_ok_n(const char *msg, size_t n, enum http_method m)
{
    enum http_error e;
    int r = parse_resp(msg, n, 0, m, &e);
    if (r != (int)n)
        fail_msg("expected success for %.*s: got %d (%s)", (int)n, msg, r, http_error_text(e));
}

static void resp_err_n(const char *msg, size_t n, enum http_method m, enum http_error want)
{
    enum http_error e;
    int r = parse_resp(msg, n, 0, m, &e);
    if (r != -2 || e != want)
        fail_msg("expected \"%s\" for %.*s: got %d (%s)", http_error_text(want), (int)n, msg, r,
                 http_error_text(e));
}

#define RESP_OK(m) resp_ok_n(m, sizeof(m) - 1, HTTP_METHOD_GET)
#define RESP_OK_FOR(meth, m) resp_ok_n(m, sizeof(m) - 1, meth)
#define RESP_ERR(m, e) resp_err_n(m, sizeof(m) - 1, HTTP_METHOD_GET, e)
#define RESP_ERR_S(s, e) resp_err_n(s, strlen(s), HTTP_METHOD_GET, e)

static void assert_span(const char *p, size_t n, const char *want)
{
    if (n != strlen(want) || memcmp(p, want, n) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)n, p ? p : "", want);
}

/* ---- request line ---- */

static void test_parses_simple_get(void **state)
{
    REQ_OK("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
    assert_span(req.method, req.method_len, "GET");
    assert_int_equal(req.method_id, HTTP_METHOD_GET);
    assert_span(req.target, req.target_len, "/index.html?q=1");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.num_headers, 2);
    assert_span(req.headers[0].name, req.headers[0].name_len, "Host");
    assert_span(req.headers[0].value, req.headers[0].value_len, "example.com");
    assert_span(req.headers[1].name, req.headers[1].name_len, "Accept");
    assert_span(req.headers[1].value, req.headers[1].value_len, "*/*");
    assert_span(req.host, req.host_len, "example.com");
    assert_int_equal(req.framing, HTTP_FRAMING_NONE);
    assert_true(req.keep_alive);
    assert_false(req.expect_continue);
    assert_false(req.upgrade);
}

static void test_returns_header_size_leaving_body_unread(void **state)
{
    static const char msg[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    enum http_error e;
    int r = http_parse_request(msg, sizeof msg - 1, NULL, &req, &e);
    assert_int_equal(r, sizeof msg - 1 - 5);
    assert_int_equal(e, HTTP_OK);
}

static void test_sets_known_method_ids(void **state)
{
    static const struct {
        const char *name;
        enum http_method id;
    } cases[] = {
        {"GET", HTTP_METHOD_GET},        {"HEAD", HTTP_METHOD_HEAD},
        {"POST", HTTP_METHOD_POST},      {"PUT", HTTP_METHOD_PUT},
        {"DELETE", HTTP_METHOD_DELETE},  {"OPTIONS", HTTP_METHOD_OPTIONS},
        {"TRACE", HTTP_METHOD_TRACE},    {"PATCH", HTTP_METHOD_PATCH},
        {"PROPFIND", HTTP_METHOD_OTHER}, {"M-SEARCH", HTTP_METHOD_OTHER},
        {"get", HTTP_METHOD_OTHER},      {"Get", HTTP_METHOD_OTHER},
        {"GETS", HTTP_METHOD_OTHER},     {"!#$%&'*+-.^_`|~", HTTP_METHOD_OTHER},
    };
    char msg[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(msg, sizeof msg, "%s / HTTP/1.1\r\nHost: a\r\n\r\n", cases[i].name);
        REQ_OK_S(msg);
        assert_int_equal(req.method_id, cases[i].id);
        assert_span(req.method, req.method_len, cases[i].name);
    }
}

static void test_rejects_non_token_method(void **state)
{
    REQ_ERR("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_METHOD);
    REQ_ERR("G\"ET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_METHOD);
    REQ_ERR("\x16\x03\x01\x02\x00 / HTTP/1.1\r\n\r\n", HTTP_ERR_BAD_METHOD);
    REQ_ERR("G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_METHOD);
}

static void test_rejects_extra_space_in_request_line(void **state)
{
    REQ_ERR("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
}

static void test_rejects_tab_as_request_line_separator(void **state)
{
    REQ_ERR("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
}

static void test_rejects_request_line_missing_parts(void **state)
{
    REQ_ERR("GET\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET /\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE); /* HTTP/0.9 */
    REQ_ERR("GET / \r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET \r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
}

static void test_rejects_other_http_versions_with_505(void **state)
{
    REQ_ERR("GET / HTTP/1.2\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_VERSION);
    REQ_ERR("GET / HTTP/2.0\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_VERSION);
    REQ_ERR("GET / HTTP/0.9\r\n\r\n", HTTP_ERR_BAD_VERSION);
    REQ_ERR("GET / HTTP/9.9\r\n\r\n", HTTP_ERR_BAD_VERSION);
    assert_int_equal(http_error_status(HTTP_ERR_BAD_VERSION), 505);
}

static void test_rejects_malformed_version(void **state)
{
    REQ_ERR("GET / http/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/1.10\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/2\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/a.b\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTPS/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    REQ_ERR("GET / HTTP/1,1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    assert_int_equal(http_error_status(HTTP_ERR_BAD_REQUEST_LINE), 400);
}

static void test_accepts_http10(void **state)
{
    REQ_OK("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(req.minor_version, 0);
    assert_null(req.host);
    assert_int_equal(req.host_len, 0);
    assert_false(req.keep_alive);
}

static void test_rejects_invalid_byte_in_target(void **state)
{
    REQ_ERR("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    /* the same bytes past the 16-byte fast path */
    REQ_ERR("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
            HTTP_ERR_BAD_TARGET);
}

static void test_accepts_every_visible_ascii_byte_in_target(void **state)
{
    char msg[256];
    char *p = msg + sprintf(msg, "GET /");
    for (int c = 0x21; c <= 0x7e; c++)
        *p++ = (char)c;
    strcpy(p, " HTTP/1.1\r\nHost: a\r\n\r\n");
    REQ_OK_S(msg);
    assert_int_equal(req.target_len, 1 + 0x7e - 0x21 + 1);
}

static void test_rejects_origin_form_without_leading_slash(void **state)
{
    REQ_ERR("GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET ?x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET http:/example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
}

static void test_absolute_form_authority_replaces_host(void **state)
{
    REQ_OK("GET http://example.com:8080/a?b HTTP/1.1\r\nHost: other.org\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com:8080");
    assert_span(req.target, req.target_len, "http://example.com:8080/a?b");
    REQ_OK("GET https://example.com HTTP/1.1\r\nHost: other.org\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com");
    REQ_OK("GET http://[::1]?x HTTP/1.1\r\nHost: other.org\r\n\r\n");
    assert_span(req.host, req.host_len, "[::1]");
}

static void test_absolute_form_scheme_is_case_insensitive(void **state)
{
    REQ_OK("GET HTTP://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com");
    REQ_OK("GET hTtPs://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com");
}

static void test_absolute_form_still_needs_one_host_field(void **state)
{
    REQ_ERR("GET http://example.com/ HTTP/1.1\r\n\r\n", HTTP_ERR_MISSING_HOST);
    REQ_ERR("GET http://example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            HTTP_ERR_MULTIPLE_HOST);
    REQ_OK("GET http://example.com/ HTTP/1.0\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com");
}

static void test_rejects_absolute_form_with_bad_authority(void **state)
{
    REQ_ERR("GET http:///path HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET http://user:pw@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET http://example.com:99999/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
}

static void test_authority_form_only_with_connect(void **state)
{
    REQ_OK("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_int_equal(req.method_id, HTTP_METHOD_CONNECT);
    assert_span(req.target, req.target_len, "example.com:443");
    REQ_OK("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: x\r\n\r\n");
    REQ_ERR("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("OPTIONS example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
}

static void test_connect_requires_authority_form_with_port(void **state)
{
    REQ_ERR("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("CONNECT http://example.com:443/ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
}

static void test_asterisk_form_only_with_options(void **state)
{
    REQ_OK("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_span(req.target, req.target_len, "*");
    REQ_ERR("GET * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("options * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_ERR("OPTIONS ** HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BAD_TARGET);
    REQ_OK("OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_skips_up_to_eight_leading_empty_lines(void **state)
{
    REQ_OK("\r\n\r\n\n\r\n\r\n\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_span(req.method, req.method_len, "GET");
    REQ_ERR("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            HTTP_ERR_BAD_REQUEST_LINE);
}

static void test_leading_empty_lines_count_toward_header_limit(void **state)
{
    static const char msg[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_limits lim = {0, sizeof msg - 1};
    req_ok_n(msg, sizeof msg - 1, &lim);
    lim.max_header_bytes = sizeof msg - 2;
    req_err_n(msg, sizeof msg - 1, &lim, HTTP_ERR_HEADERS_TOO_LARGE);
}

/* ---- line endings ---- */

static void test_accepts_lone_lf_line_endings(void **state)
{
    REQ_OK("GET / HTTP/1.1\nHost: a\nX: y\n\n");
    assert_int_equal(req.num_headers, 2);
    assert_span(req.headers[1].value, req.headers[1].value_len, "y");
    REQ_OK("GET / HTTP/1.1\r\nHost: a\n\r\n");
    REQ_OK("GET / HTTP/1.1\nHost: a\r\n\n");
}

static void test_rejects_bare_cr_in_request_line(void **state)
{
    REQ_ERR("GET / HTTP/1.1\rHost: a\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GE\rT / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_ERR_BARE_CR);
}

static void test_rejects_bare_cr_in_header(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX\r: y\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", HTTP_ERR_BARE_CR);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\rX", HTTP_ERR_BARE_CR);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", HTTP_ERR_BARE_CR);
}

/* ---- header fields ---- */

static void test_strips_ows_around_value(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost:a\r\nX: \t value with  spaces \t \r\nY:\t\r\n\r\n");
    assert_span(req.headers[0].value, req.headers[0].value_len, "a");
    assert_span(req.headers[1].value, req.headers[1].value_len, "value with  spaces");
    assert_int_equal(req.headers[2].value_len, 0);
}

static void test_accepts_empty_value(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n");
    assert_span(req.headers[1].name, req.headers[1].name_len, "X-Empty");
    assert_int_equal(req.headers[1].value_len, 0);
}

static void test_rejects_ws_before_colon(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HTTP_ERR_WS_BEFORE_COLON);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n", HTTP_ERR_WS_BEFORE_COLON);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX \t : 5\r\n\r\n", HTTP_ERR_WS_BEFORE_COLON);
}

static void test_rejects_empty_header_name(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n: value\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
}

static void test_rejects_non_token_header_name(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX y: 1\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\n\xc3\xa9: 1\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX\"y: 1\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX\0: 1\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
}

static void test_rejects_header_line_without_colon(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nNoColon \r\n\r\n", HTTP_ERR_BAD_HEADER_NAME);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nNoColon\n\n", HTTP_ERR_BAD_HEADER_NAME);
}

static void test_rejects_control_byte_in_value(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", HTTP_ERR_BAD_HEADER_VALUE);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", HTTP_ERR_BAD_HEADER_VALUE);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", HTTP_ERR_BAD_HEADER_VALUE);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: a\0z\r\n\r\n", HTTP_ERR_BAD_HEADER_VALUE);
    /* past the 16-byte fast path, and right at its boundary */
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef0123456789\x7f\r\n\r\n",
            HTTP_ERR_BAD_HEADER_VALUE);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdef\x0b\r\n\r\n",
            HTTP_ERR_BAD_HEADER_VALUE);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcde\t\x0c\r\n\r\n",
            HTTP_ERR_BAD_HEADER_VALUE);
}

static void test_accepts_obs_text_and_htab_in_value(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tand\xff more\x80 text after tab\r\n\r\n");
    assert_span(req.headers[1].value, req.headers[1].value_len,
                "caf\xc3\xa9\tand\xff more\x80 text after tab");
}

static void test_rejects_obs_fold(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n", HTTP_ERR_OBS_FOLD);
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n\ttwo\r\n\r\n", HTTP_ERR_OBS_FOLD);
    REQ_ERR("GET / HTTP/1.1\nHost: a\nX: one\n two\n\n", HTTP_ERR_OBS_FOLD);
}

static void test_rejects_whitespace_before_first_header(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", HTTP_ERR_OBS_FOLD);
    REQ_ERR("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", HTTP_ERR_OBS_FOLD);
}

static char *build_request_with_headers(size_t n)
{
    char *msg = malloc(64 + n * 16);
    assert_non_null(msg);
    char *p = msg + sprintf(msg, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i < n; i++)
        p += sprintf(p, "X-%zu: %zu\r\n", i, i);
    strcpy(p, "\r\n");
    return msg;
}

static void test_accepts_max_headers(void **state)
{
    char *msg = build_request_with_headers(HTTP_MAX_HEADERS);
    REQ_OK_S(msg);
    assert_int_equal(req.num_headers, HTTP_MAX_HEADERS);
    free(msg);
}

static void test_rejects_too_many_headers_with_431(void **state)
{
    char *msg = build_request_with_headers(HTTP_MAX_HEADERS + 1);
    REQ_ERR_S(msg, HTTP_ERR_TOO_MANY_HEADERS);
    assert_int_equal(http_error_status(HTTP_ERR_TOO_MANY_HEADERS), 431);
    free(msg);
}

/* ---- limits ---- */

static char *build_request_with_target(size_t target_len, const char *line_end)
{
    char *msg = malloc(target_len + 64);
    assert_non_null(msg);
    char *p = msg + sprintf(msg, "GET /");
    memset(p, 'a', target_len - 1);
    p += target_len - 1;
    sprintf(p, " HTTP/1.1%sHost: a\r\n\r\n", line_end);
    return msg;
}

static void test_accepts_request_line_at_limit(void **state)
{
    /* "GET " + target + " HTTP/1.1" is exactly 8192 bytes */
    char *msg = build_request_with_target(8192 - 13, "\r\n");
    REQ_OK_S(msg);
    free(msg);
    msg = build_request_with_target(8192 - 13, "\n");
    REQ_OK_S(msg);
    free(msg);
}

static void test_rejects_long_request_line_with_414(void **state)
{
    char *msg = build_request_with_target(8192 - 12, "\r\n");
    REQ_ERR_S(msg, HTTP_ERR_REQUEST_LINE_TOO_LONG);
    free(msg);
    msg = build_request_with_target(8192 - 12, "\n");
    REQ_ERR_S(msg, HTTP_ERR_REQUEST_LINE_TOO_LONG);
    free(msg);
    assert_int_equal(http_error_status(HTTP_ERR_REQUEST_LINE_TOO_LONG), 414);
}

static void test_rejects_long_request_line_before_it_ends(void **state)
{
    char *msg = malloc(9000);
    memcpy(msg, "GET /", 5);
    memset(msg + 5, 'a', 9000 - 5);
    enum http_error e;
    /* 8192 bytes may still be a request line at the limit */
    assert_int_equal(http_parse_request(msg, 8192, NULL, &req, &e), HTTP_INCOMPLETE);
    /* one more byte is over it, unless that byte is the CR of CRLF */
    assert_int_equal(http_parse_request(msg, 8193, NULL, &req, &e), -2);
    assert_int_equal(e, HTTP_ERR_REQUEST_LINE_TOO_LONG);
    msg[8192] = '\r';
    assert_int_equal(http_parse_request(msg, 8193, NULL, &req, &e), HTTP_INCOMPLETE);
    assert_int_equal(http_parse_request(msg, 8194, NULL, &req, &e), -2);
    assert_int_equal(e, HTTP_ERR_REQUEST_LINE_TOO_LONG);
    free(msg);
}

static void test_applies_custom_request_line_limit(void **state)
{
    struct http_limits lim = {20, 0};
    static const char ok[] = "GET /0123456 HTTP/1.1\r\nHost: a\r\n\r\n";  /* 21 bytes */
    static const char fits[] = "GET /012345 HTTP/1.1\r\nHost: a\r\n\r\n"; /* 20 bytes */
    req_err_n(ok, sizeof ok - 1, &lim, HTTP_ERR_REQUEST_LINE_TOO_LONG);
    req_ok_n(fits, sizeof fits - 1, &lim);
}

static void test_rejects_large_header_section_with_431(void **state)
{
    size_t n = 20000;
    char *msg = malloc(n);
    char *p = msg + sprintf(msg, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(p, 'v', n - (size_t)(p - msg) - 4);
    memcpy(msg + n - 4, "\r\n\r\n", 4);
    req_err_n(msg, n, NULL, HTTP_ERR_HEADERS_TOO_LARGE);
    /* at once, long before the section ends */
    enum http_error e;
    assert_int_equal(http_parse_request(msg, 16385, NULL, &req, &e), -2);
    assert_int_equal(e, HTTP_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(http_parse_request(msg, 16384, NULL, &req, &e), HTTP_INCOMPLETE);
    assert_int_equal(http_error_status(HTTP_ERR_HEADERS_TOO_LARGE), 431);
    free(msg);
}

static void test_accepts_header_section_at_limit(void **state)
{
    size_t n = 16384;
    char *msg = malloc(n + 10);
    char *p = msg + sprintf(msg, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(p, 'v', n - (size_t)(p - msg) - 4);
    memcpy(msg + n - 4, "\r\n\r\nBODY", 8);
    req_ok_n(msg, n, NULL);
    enum http_error e;
    /* trailing body bytes beyond the limit do not matter */
    assert_int_equal(http_parse_request(msg, n + 4, NULL, &req, &e), (int)n);
    /* one more byte in the section does */
    struct http_limits lim = {0, n - 1};
    req_err_n(msg, n, &lim, HTTP_ERR_HEADERS_TOO_LARGE);
    free(msg);
}

static void test_null_limits_and_zero_fields_use_defaults(void **state)
{
    char *msg = build_request_with_target(8192 - 13, "\r\n");
    struct http_limits zero = {0, 0};
    enum http_error e;
    assert_true(http_parse_request(msg, strlen(msg), &zero, &req, &e) > 0);
    assert_true(http_parse_request(msg, strlen(msg), NULL, &req, &e) > 0);
    free(msg);
}

/* ---- framing ---- */

static void test_no_body_without_content_length_or_te(void **state)
{
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_NONE);
    assert_int_equal(req.content_length, 0);
}

static void test_content_length_sets_length_framing(void **state)
{
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(req.content_length, 42);
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(req.content_length, 0);
    REQ_OK("POST / HTTP/1.0\r\nCONTENT-LENGTH: 007\r\n\r\n");
    assert_int_equal(req.content_length, 7);
}

static void test_collapses_identical_content_lengths(void **state)
{
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(req.content_length, 5);
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5,5\r\n\r\n");
    assert_int_equal(req.content_length, 5);
}

static void test_rejects_differing_content_lengths(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            HTTP_ERR_BAD_CONTENT_LENGTH);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            HTTP_ERR_BAD_CONTENT_LENGTH);
}

static void test_rejects_malformed_content_length(void **state)
{
    static const char *const bad[] = {"-1", "+5",   "5a",  "0x10", "1.5",      "",    "5,",
                                      ",5", "5,,5", "5 5", "1e3",  "\xd9\xa5", "five"};
    char msg[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(msg, sizeof msg, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 bad[i]);
        REQ_ERR_S(msg, HTTP_ERR_BAD_CONTENT_LENGTH);
    }
}

static void test_rejects_content_length_over_63_bits(void **state)
{
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n");
    assert_true(req.content_length == UINT64_C(9223372036854775807));
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
            HTTP_ERR_BAD_CONTENT_LENGTH);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
            HTTP_ERR_BAD_CONTENT_LENGTH);
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000000000000001\r\n\r\n");
    assert_int_equal(req.content_length, 1);
}

static void test_rejects_te_with_content_length(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: "
            "chunked\r\n\r\n",
            HTTP_ERR_CL_AND_TE);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: "
            "0\r\n\r\n",
            HTTP_ERR_CL_AND_TE);
    assert_int_equal(http_error_status(HTTP_ERR_CL_AND_TE), 400);
}

static void test_rejects_te_in_http10(void **state)
{
    REQ_ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_ERR_TE_IN_HTTP10);
}

static void test_chunked_te_sets_chunked_framing(void **state)
{
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_CHUNKED);
    REQ_OK("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD \r\n\r\n");
    assert_int_equal(req.framing, HTTP_FRAMING_CHUNKED);
}

static void test_rejects_unknown_transfer_coding_with_501(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n",
            HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x;q=1, chunked\r\n\r\n",
            HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    assert_int_equal(http_error_status(HTTP_ERR_UNKNOWN_TRANSFER_CODING), 501);
}

static void test_combines_transfer_encoding_fields_in_order(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
            "chunked\r\n\r\n",
            HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
            "chunked\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
}

static void test_rejects_chunked_twice_or_not_final_with_400(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    assert_int_equal(http_error_status(HTTP_ERR_BAD_TRANSFER_ENCODING), 400);
}

static void test_rejects_empty_transfer_encoding_elements(void **state)
{
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
    REQ_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked x\r\n\r\n",
            HTTP_ERR_BAD_TRANSFER_ENCODING);
}

/* ---- Host ---- */

static void test_rejects_http11_without_host(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", HTTP_ERR_MISSING_HOST);
}

static void test_accepts_http10_without_host(void **state)
{
    REQ_OK("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n");
    assert_null(req.host);
    REQ_OK("GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
    assert_span(req.host, req.host_len, "example.com");
}

static void test_rejects_multiple_host(void **state)
{
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", HTTP_ERR_MULTIPLE_HOST);
    REQ_ERR("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", HTTP_ERR_MULTIPLE_HOST);
}

static void test_accepts_valid_host_values(void **state)
{
    static const char *const good[] = {
        "example.com",
        "example.com:8080",
        "EXAMPLE.COM:0",
        "127.0.0.1",
        "127.0.0.1:65535",
        "[::1]",
        "[::1]:443",
        "[2001:db8::ff00:42:8329]",
        "[::ffff:192.0.2.1]:80",
        "[v1.fe80::a+en1]",
        "a%20b.example",
        "xn--bcher-kva.example",
        "under_score",
        "sub!$&'()*+,;=delims",
        "~x-y.z",
        "h:00080",
    };
    char msg[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(msg, sizeof msg, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        REQ_OK_S(msg);
        assert_span(req.host, req.host_len, good[i]);
    }
}

static void test_rejects_invalid_host_values(void **state)
{
    static const char *const bad[] = {
        "",
        ":80",
        "example.com:",
        "example.com:65536",
        "a:123456",
        "a:-1",
        "a:8o",
        "user@example.com",
        "exa mple",
        "a/b",
        "a?b",
        "a#b",
        "a%2",
        "a%zz",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[]",
        "[zz::1]",
        "[1.2.3.4]",
        "[v1.]",
        "[v.x]",
        "[fe80::1%25eth0]",
        "a:80:80",
        "a\"b",
        "a<b>",
        "\xc3\xa9.example",
        "a\tb",
        "a,b c",
        "[::1]]",
    };
    char msg[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(msg, sizeof msg, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        REQ_ERR_S(msg, HTTP_ERR_BAD_HOST);
    }
}

/* ---- connection semantics ---- */

static void test_http11_keeps_alive_unless_close(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_true(req.keep_alive);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_false(req.keep_alive);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n");
    assert_false(req.keep_alive);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n");
    assert_false(req.keep_alive);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n");
    assert_true(req.keep_alive);
}

static void test_http10_keeps_alive_only_with_keep_alive(void **state)
{
    REQ_OK("GET / HTTP/1.0\r\n\r\n");
    assert_false(req.keep_alive);
    REQ_OK("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_true(req.keep_alive);
    REQ_OK("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    assert_false(req.keep_alive);
}

static void test_sets_expect_continue(void **state)
{
    REQ_OK("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert_true(req.expect_continue);
    REQ_OK("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-ish\r\n\r\n");
    assert_false(req.expect_continue);
    REQ_OK("PUT / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_false(req.expect_continue);
}

static void test_upgrade_needs_connection_token_and_upgrade_field(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_true(req.upgrade);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert_false(req.upgrade);
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n");
    assert_false(req.upgrade);
}

/* ---- incremental parsing ---- */

static void test_request_fed_byte_by_byte_is_incomplete_until_complete(void **state)
{
    static const char msg[] = "POST /upload?id=7 HTTP/1.1\r\nHost: example.com:8080\r\n"
                              "User-Agent: test/1.0\r\nContent-Length: 11\r\n"
                              "Cookie: a=b; c=d\r\n\r\nhello world";
    size_t head = sizeof msg - 1 - 11;
    char *buf = malloc(sizeof msg);
    for (size_t k = 0; k <= sizeof msg - 1; k++) {
        /* a fresh exact-size buffer per step, as a reader filling it would */
        char *b = buf + sizeof msg - k;
        memcpy(b, msg, k);
        enum http_error e = HTTP_ERR__COUNT;
        int r = http_parse_request(b, k, NULL, &req, &e);
        assert_int_equal(e, HTTP_OK);
        if (k < head)
            assert_int_equal(r, HTTP_INCOMPLETE);
        else
            assert_int_equal(r, (int)head);
    }
    assert_int_equal(req.content_length, 11);
    free(buf);
}

static void test_reports_syntax_error_before_section_is_complete(void **state)
{
    static const char msg[] = "GET / HTTP/1.1\r\nHo st: a\r\n";
    enum http_error e;
    assert_int_equal(http_parse_request(msg, sizeof msg - 1, NULL, &req, &e), -2);
    assert_int_equal(e, HTTP_ERR_BAD_HEADER_NAME);
}

static void test_parse_of_one_message_ignores_earlier_calls(void **state)
{
    enum http_error e;
    static const char a[] = "GET http://x.org/ HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n";
    static const char b[] = "GET / HTTP/1.0\r\n\r\n";
    assert_true(http_parse_request(a, sizeof a - 1, NULL, &req, &e) > 0);
    assert_true(http_parse_request(b, sizeof b - 1, NULL, &req, &e) > 0);
    assert_null(req.host);
    assert_int_equal(req.num_headers, 0);
    assert_false(req.keep_alive);
}

/* ---- responses ---- */

static void test_parses_simple_response(void **state)
{
    RESP_OK("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n");
    assert_int_equal(resp.status, 200);
    assert_span(resp.reason, resp.reason_len, "OK");
    assert_int_equal(resp.minor_version, 1);
    assert_int_equal(resp.num_headers, 2);
    assert_int_equal(resp.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(resp.content_length, 12);
    assert_true(resp.keep_alive);
}

static void test_accepts_status_line_without_reason(void **state)
{
    RESP_OK("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.reason_len, 0);
    RESP_OK("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(resp.status, 404);
    assert_int_equal(resp.reason_len, 0);
}

static void test_accepts_reason_with_spaces_tabs_and_obs_text(void **state)
{
    RESP_OK("HTTP/1.0 503 Service \tUn\xe4vailable  \r\n\r\n");
    assert_span(resp.reason, resp.reason_len, "Service \tUn\xe4vailable  ");
    assert_int_equal(resp.minor_version, 0);
}

static void test_rejects_control_byte_in_reason(void **state)
{
    RESP_ERR("HTTP/1.1 200 O\x01K\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("HTTP/1.1 200 O\x7fK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("HTTP/1.1 200 O\rK\r\n\r\n", HTTP_ERR_BARE_CR);
}

static void test_rejects_bad_status_code(void **state)
{
    static const char *const bad[] = {
        "HTTP/1.1 099 X\r\n\r\n",   "HTTP/1.1 600 X\r\n\r\n",   "HTTP/1.1 000\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",   "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 2O0 OK\r\n\r\n",  "HTTP/1.1 \r\n\r\n",        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1 -20 OK\r\n\r\n",  "HTTP/1.1 999\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        RESP_ERR_S(bad[i], HTTP_ERR_BAD_STATUS);
    RESP_OK("HTTP/1.1 100 Continue\r\n\r\n");
    RESP_OK("HTTP/1.1 599 Custom\r\n\r\n");
}

static void test_rejects_bad_response_version(void **state)
{
    RESP_ERR("HTTP/2.0 200 OK\r\n\r\n", HTTP_ERR_BAD_VERSION);
    RESP_ERR("HTTP/1.2 200 OK\r\n\r\n", HTTP_ERR_BAD_VERSION);
    RESP_ERR("HTTP/2 200 OK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("http/1.1 200 OK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("HTTP/1.1\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("HTTP/1.1x200 OK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("ICY 200 OK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("\r\nHTTP/1.1 200 OK\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
    RESP_ERR("HTTP\r\n\r\n", HTTP_ERR_BAD_REQUEST_LINE);
}

static void test_refuses_non_http_response_at_once(void **state)
{
    enum http_error e;
    assert_int_equal(http_parse_response("SSH-", 4, 0, HTTP_METHOD_GET, &resp, &e), -2);
    assert_int_equal(e, HTTP_ERR_BAD_REQUEST_LINE);
    assert_int_equal(http_parse_response("HTT", 3, 0, HTTP_METHOD_GET, &resp, &e), HTTP_INCOMPLETE);
    assert_int_equal(http_parse_response("", 0, 0, HTTP_METHOD_GET, &resp, &e), HTTP_INCOMPLETE);
}

static void test_response_headers_follow_request_rules(void **state)
{
    RESP_ERR("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", HTTP_ERR_WS_BEFORE_COLON);
    RESP_ERR("HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", HTTP_ERR_OBS_FOLD);
    RESP_ERR("HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n", HTTP_ERR_BAD_HEADER_VALUE);
    RESP_ERR("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", HTTP_ERR_BARE_CR);
    RESP_OK("HTTP/1.1 200 OK\nContent-Length: 1\n\n");
}

static void test_response_no_body_for_1xx_204_304(void **state)
{
    RESP_OK("HTTP/1.1 100 Continue\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    RESP_OK("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    RESP_OK("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    assert_int_equal(resp.content_length, 0);
    RESP_OK("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    assert_true(resp.keep_alive);
}

static void test_response_to_head_has_no_body(void **state)
{
    RESP_OK_FOR(HTTP_METHOD_HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    RESP_OK_FOR(HTTP_METHOD_HEAD, "HTTP/1.1 200 OK\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    assert_true(resp.keep_alive);
}

static void test_response_to_connect_2xx_has_no_body(void **state)
{
    RESP_OK_FOR(HTTP_METHOD_CONNECT, "HTTP/1.1 200 Connection Established\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    RESP_OK_FOR(HTTP_METHOD_CONNECT, "HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_LENGTH);
}

static void test_response_without_framing_reads_until_close(void **state)
{
    RESP_OK("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_UNTIL_CLOSE);
    assert_false(resp.keep_alive);
}

static void test_response_chunked(void **state)
{
    RESP_OK("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_CHUNKED);
    assert_true(resp.keep_alive);
}

static void test_response_rejects_cl_and_te(void **state)
{
    RESP_ERR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
             HTTP_ERR_CL_AND_TE);
    /* even where the status means no body: conflicting framing is not trusted */
    RESP_ERR("HTTP/1.1 204 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
             HTTP_ERR_CL_AND_TE);
}

static void test_response_rejects_other_transfer_codings(void **state)
{
    RESP_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
             HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    RESP_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
             HTTP_ERR_UNKNOWN_TRANSFER_CODING);
    RESP_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
             HTTP_ERR_BAD_TRANSFER_ENCODING);
    RESP_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
             HTTP_ERR_BAD_TRANSFER_ENCODING);
}

static void test_response_rejects_te_in_http10(void **state)
{
    RESP_ERR("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_ERR_TE_IN_HTTP10);
}

static void test_response_validates_content_length_without_body(void **state)
{
    RESP_ERR("HTTP/1.1 304 Not Modified\r\nContent-Length: 5, 6\r\n\r\n",
             HTTP_ERR_BAD_CONTENT_LENGTH);
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n";
    resp_err_n(head, sizeof head - 1, HTTP_METHOD_HEAD, HTTP_ERR_BAD_CONTENT_LENGTH);
    RESP_OK("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
    assert_int_equal(resp.content_length, 5);
}

static void test_response_keep_alive_rules(void **state)
{
    RESP_OK("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_false(resp.keep_alive);
    RESP_OK("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_false(resp.keep_alive);
    RESP_OK("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(resp.keep_alive);
    RESP_OK("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(resp.framing, HTTP_FRAMING_UNTIL_CLOSE);
    assert_false(resp.keep_alive);
}

static void test_response_header_section_limit(void **state)
{
    size_t n = 17000;
    char *msg = malloc(n);
    char *p = msg + sprintf(msg, "HTTP/1.1 200 OK\r\nX: ");
    memset(p, 'v', n - (size_t)(p - msg) - 4);
    memcpy(msg + n - 4, "\r\n\r\n", 4);
    enum http_error e;
    assert_int_equal(http_parse_response(msg, n, 0, HTTP_METHOD_GET, &resp, &e), -2);
    assert_int_equal(e, HTTP_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(http_parse_response(msg, 16385, 0, HTTP_METHOD_GET, &resp, &e), -2);
    assert_int_equal(e, HTTP_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(http_parse_response(msg, n, n, HTTP_METHOD_GET, &resp, &e), (int)n);
    assert_int_equal(http_parse_response(msg, n, n - 1, HTTP_METHOD_GET, &resp, &e), -2);
    free(msg);
}

static void test_response_fed_byte_by_byte_is_incomplete_until_complete(void **state)
{
    static const char msg[] = "HTTP/1.1 200 OK\r\nServer: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n";
    size_t head = sizeof msg - 1 - 15;
    for (size_t k = 0; k <= sizeof msg - 1; k++) {
        char *b = hold(msg, k);
        enum http_error e = HTTP_ERR__COUNT;
        int r = http_parse_response(b, k, 0, HTTP_METHOD_GET, &resp, &e);
        assert_int_equal(e, HTTP_OK);
        assert_int_equal(r, k < head ? HTTP_INCOMPLETE : (int)head);
    }
    assert_int_equal(resp.framing, HTTP_FRAMING_CHUNKED);
}

/* ---- helpers ---- */

static void test_error_status_mapping(void **state)
{
    for (int e = HTTP_ERR_BAD_REQUEST_LINE; e < HTTP_ERR__COUNT; e++) {
        int s = http_error_status((enum http_error)e);
        assert_true(s == 400 || s == 414 || s == 431 || s == 501 || s == 505);
    }
    assert_int_equal(http_error_status(HTTP_ERR_BAD_HOST), 400);
    assert_int_equal(http_error_status(HTTP_ERR_OBS_FOLD), 400);
    assert_int_equal(http_error_status(HTTP_ERR_BARE_CR), 400);
}

static void test_error_text_is_distinct_and_never_null(void **state)
{
    for (int a = 0; a <= HTTP_ERR__COUNT; a++) {
        const char *t = http_error_text((enum http_error)a);
        assert_non_null(t);
        assert_true(strlen(t) > 0);
        for (int b = 0; b < a; b++)
            assert_string_not_equal(t, http_error_text((enum http_error)b));
    }
    assert_string_equal(http_error_text(HTTP_ERR_CL_AND_TE),
                        "Content-Length and Transfer-Encoding both present");
    assert_non_null(http_error_text((enum http_error)1000));
}

static void test_status_reason(void **state)
{
    assert_string_equal(http_status_reason(200), "OK");
    assert_string_equal(http_status_reason(502), "Bad Gateway");
    assert_string_equal(http_status_reason(504), "Gateway Timeout");
    assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_reason(299), "Unknown");
    assert_string_equal(http_status_reason(-1), "Unknown");
    assert_string_equal(http_status_reason(600), "Unknown");
    assert_string_equal(http_status_reason(1000000), "Unknown");
}

static void test_name_is_case_insensitive(void **state)
{
    struct http_header h = {"Content-Length", 14, "5", 1};
    assert_true(http_name_is(&h, "content-length"));
    assert_true(http_name_is(&h, "CONTENT-LENGTH"));
    assert_false(http_name_is(&h, "content-lengt"));
    assert_false(http_name_is(&h, "content-lengthx"));
    struct http_header odd = {"[", 1, "", 0}; /* '[' is 'A'-1 + 26: not a letter */
    assert_false(http_name_is(&odd, "{"));
}

static void test_find_header_returns_first_match(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    const struct http_header *h = http_find_header(req.headers, req.num_headers, "X-a");
    assert_ptr_equal(h, &req.headers[1]);
    assert_null(http_find_header(req.headers, req.num_headers, "X-B"));
    assert_null(http_find_header(req.headers, 0, "Host"));
}

static void test_list_has_token(void **state)
{
    static const char v[] = " keep-alive ,\tUpgrade,close  ";
    assert_true(http_list_has_token(v, sizeof v - 1, "keep-alive"));
    assert_true(http_list_has_token(v, sizeof v - 1, "upgrade"));
    assert_true(http_list_has_token(v, sizeof v - 1, "CLOSE"));
    assert_false(http_list_has_token(v, sizeof v - 1, "clos"));
    assert_false(http_list_has_token(v, sizeof v - 1, "keep"));
    assert_false(http_list_has_token("", 0, "close"));
    assert_false(http_list_has_token("closed", 6, "close"));
    assert_true(http_list_has_token(",,close,,", 9, "close"));
}

/* ---- Keep-Alive: timeout=N, max=M ---- */

/* Parses s; returns the result, outputs in *t and *m. */
static bool keep_alive(const char *s, uint32_t *t, uint32_t *m)
{
    *t = *m = 12345; /* the parser must overwrite both */
    return http_parse_keep_alive(s, strlen(s), t, m);
}

static void test_keep_alive_timeout_and_max(void **state)
{
    uint32_t t, m;
    assert_true(keep_alive("timeout=5, max=100", &t, &m));
    assert_int_equal(t, 5);
    assert_int_equal(m, 100);
    assert_true(keep_alive("max=7,timeout=15", &t, &m));
    assert_int_equal(t, 15);
    assert_int_equal(m, 7);
}

static void test_keep_alive_one_parameter_alone(void **state)
{
    uint32_t t, m;
    assert_true(keep_alive("timeout=5", &t, &m)); /* nginx, Node.js without a limit */
    assert_int_equal(t, 5);
    assert_int_equal(m, 0);
    assert_true(keep_alive("max=3", &t, &m));
    assert_int_equal(t, 0);
    assert_int_equal(m, 3);
}

static void test_keep_alive_tolerates_spaces_case_and_empty_elements(void **state)
{
    uint32_t t, m;
    assert_true(keep_alive(" \tTimeOut = 5 ,\t MAX= 9 \t", &t, &m));
    assert_int_equal(t, 5);
    assert_int_equal(m, 9);
    assert_true(keep_alive(",, timeout=4 ,,", &t, &m));
    assert_int_equal(t, 4);
}

static void test_keep_alive_skips_unknown_parameters(void **state)
{
    uint32_t t, m;
    assert_true(keep_alive("foo=bar, timeout=5, x=\"a, max=1\", 300, max=8, ext", &t, &m));
    assert_int_equal(t, 5);
    assert_int_equal(m, 8); /* the max inside the quoted value is not a parameter */
    assert_true(keep_alive("y=\"q\\\"uote, max=1\", timeout=2", &t, &m)); /* escaped quote */
    assert_int_equal(t, 2);
    assert_int_equal(m, 0);
}

static void test_keep_alive_ignores_invalid_numbers(void **state)
{
    static const char *const bad[] = {
        "timeout=",
        "timeout=-5",
        "timeout=+5",
        "timeout=5.5",
        "timeout=5s",
        "timeout=\"5\"",
        "timeout=0x10",
        "timeout=5 6",
        "timeout=4294967296",
        "timeout=99999999999999999999",
        "timeout",
        "timeout 5",
        "timeout:5",
        "time out=5",
        "timeout==5",
    };
    uint32_t t, m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (keep_alive(bad[i], &t, &m))
            print_message("accepted: %s\n", bad[i]);
        assert_false(keep_alive(bad[i], &t, &m));
        assert_int_equal(t, 0);
        assert_int_equal(m, 0);
    }
    /* a bad one does not spoil a good one */
    assert_true(keep_alive("timeout=abc, max=4", &t, &m));
    assert_int_equal(t, 0);
    assert_int_equal(m, 4);
    assert_true(keep_alive("timeout=4294967295", &t, &m));
    assert_int_equal(t, 4294967295u);
}

static void test_keep_alive_repeated_parameter_keeps_the_smaller(void **state)
{
    uint32_t t, m;
    assert_true(keep_alive("timeout=10, timeout=3, max=5, max=50", &t, &m));
    assert_int_equal(t, 3);
    assert_int_equal(m, 5);
}

static void test_keep_alive_nothing_found(void **state)
{
    uint32_t t, m;
    assert_false(keep_alive("", &t, &m));
    assert_int_equal(t, 0);
    assert_int_equal(m, 0);
    assert_false(keep_alive("300", &t, &m)); /* the old client-side form: no parameter */
    assert_false(keep_alive(" , ,", &t, &m));
    /* only len bytes are read */
    assert_false(http_parse_keep_alive("timeout=5", 7, &t, &m));
    assert_true(http_parse_keep_alive("timeout=59", 9, &t, &m));
    assert_int_equal(t, 5);
}

static void test_hop_by_hop_fixed_fields(void **state)
{
    static const char *const names[] = {"Connection", "keep-alive",        "Proxy-Connection", "TE",
                                        "Trailer",    "Transfer-Encoding", "upgrade"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct http_header h = {names[i], strlen(names[i]), "", 0};
        assert_true(http_is_hop_by_hop(&h, NULL, 0));
    }
    struct http_header h = {"Content-Type", 12, "x", 1};
    assert_false(http_is_hop_by_hop(&h, NULL, 0));
    struct http_header trailers = {"Trailers", 8, "x", 1};
    assert_false(http_is_hop_by_hop(&trailers, NULL, 0));
}

static void test_hop_by_hop_fields_named_in_connection(void **state)
{
    REQ_OK("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\nConnection: "
           "x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nX-Public: 3\r\n\r\n");
    assert_true(http_is_hop_by_hop(&req.headers[3], req.headers, req.num_headers));
    assert_true(http_is_hop_by_hop(&req.headers[4], req.headers, req.num_headers));
    assert_false(http_is_hop_by_hop(&req.headers[5], req.headers, req.num_headers));
    assert_false(http_is_hop_by_hop(&req.headers[0], req.headers, req.num_headers));
}

static void test_char_table_matches_rfc_definitions(void **state)
{
    for (int c = 0; c < 256; c++) {
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool digit = c >= '0' && c <= '9';
        bool tchar = alpha || digit || (c && strchr("!#$%&'*+-.^_`|~", c));
        bool vchar = c >= 0x21 && c <= 0x7e;
        bool value = c == '\t' || c == ' ' || vchar || c >= 0x80;
        bool hex = digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        bool regname = alpha || digit || (c && strchr("-._~!$&'()*+,;=", c));
        bool ws = c == ' ' || c == '\t';
        bool qdtext = c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
                      (c >= 0x5d && c <= 0x7e) || c >= 0x80;
        unsigned char u = (unsigned char)c;
        assert_int_equal(http_is(u, HTTP_C_TCHAR), tchar);
        assert_int_equal(http_is(u, HTTP_C_VALUE), value);
        assert_int_equal(http_is(u, HTTP_C_TARGET), vchar);
        assert_int_equal(http_is(u, HTTP_C_HEX), hex);
        assert_int_equal(http_is(u, HTTP_C_REGNAME), regname);
        assert_int_equal(http_is(u, HTTP_C_DIGIT), digit);
        assert_int_equal(http_is(u, HTTP_C_WS), ws);
        assert_int_equal(http_is(u, HTTP_C_QDTEXT), qdtext);
        assert_int_equal(http_lower(u), alpha && c <= 'Z' ? c + 32 : c);
    }
}

/* ---- chunked ---- */

struct decoded {
    ssize_t result; /* last return value */
    enum http_error err;
    size_t consumed; /* input bytes consumed when complete */
    char data[4096];
    size_t data_len;
};

/* Feed msg[0..n) to a fresh decoder in pieces ending at cuts[] (ascending,
 * the last piece ends at n), each piece in its own exact-size buffer.
 * Bytes left after completion must still be where they were. */
static void decode_pieces(const char *msg, size_t n, const size_t *cuts, size_t ncuts,
                          struct decoded *out)
{
    struct http_chunked d;
    http_chunked_init(&d);
    memset(out, 0, sizeof *out);
    size_t start = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t stop = i < ncuts ? cuts[i] : n;
        size_t len = stop - start;
        char *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        memcpy(buf, msg + start, len);
        size_t data_len = len;
        out->result = http_chunked_decode(&d, buf, &data_len, &out->err);
        assert_true(data_len <= len);
        assert_true(out->data_len + data_len <= sizeof out->data);
        memcpy(out->data + out->data_len, buf, data_len);
        out->data_len += data_len;
        if (out->result > 0) {
            size_t used = (size_t)out->result;
            assert_true(used <= len);
            assert_memory_equal(buf + used, msg + start + used, len - used);
            out->consumed = start + used;
        }
        free(buf);
        if (out->result != HTTP_INCOMPLETE)
            return;
        assert_int_equal(out->err, HTTP_OK);
        start = stop;
    }
}

static void decode_whole(const char *msg, size_t n, struct decoded *out)
{
    decode_pieces(msg, n, NULL, 0, out);
}

/* Same outcome: complete / incomplete / error alike, same error, same input
 * consumed in total, same data. (The return value itself counts bytes of the
 * last piece only, so it differs between splits.) */
static void assert_same_outcome(const struct decoded *got, const struct decoded *want,
                                const char *what, size_t at)
{
    bool same_kind = (got->result > 0) == (want->result > 0) &&
                     (got->result < 0 ? got->result == want->result : true);
    if (!same_kind || got->err != want->err || got->consumed != want->consumed ||
        got->data_len != want->data_len || memcmp(got->data, want->data, got->data_len) != 0)
        fail_msg("%s %zu: result %zd (%s), consumed %zu, %zu data bytes; whole: %zd (%s), %zu, "
                 "%zu",
                 what, at, got->result, http_error_text(got->err), got->consumed, got->data_len,
                 want->result, http_error_text(want->err), want->consumed, want->data_len);
}

/* Every two-way split, every three-way split (short messages only), byte by
 * byte: all must give what the whole message in one piece gives. */
static void check_every_split(const char *msg, size_t n, const struct decoded *want)
{
    struct decoded got;
    size_t cuts[2];
    size_t stride = n > 1024 ? 61 : 1; /* long messages: a spread of splits, not all */
    for (size_t i = 0; i <= n; i += stride) {
        cuts[0] = i;
        decode_pieces(msg, n, cuts, 1, &got);
        assert_same_outcome(&got, want, "split at", i);
        if (n > 64)
            continue;
        for (size_t j = i; j <= n; j++) {
            cuts[1] = j;
            decode_pieces(msg, n, cuts, 2, &got);
            assert_same_outcome(&got, want, "second split at", j);
        }
    }
    size_t *all = malloc((n ? n : 1) * sizeof *all);
    for (size_t i = 0; i < n; i++)
        all[i] = i + 1;
    decode_pieces(msg, n, all, n ? n - 1 : 0, &got);
    free(all);
    assert_same_outcome(&got, want, "byte by byte, length", n);
}

static void chunked_ok(const char *msg, size_t n, const char *data, size_t consumed)
{
    struct decoded got;
    decode_whole(msg, n, &got);
    if (got.result <= 0)
        fail_msg("decode failed: %zd %s", got.result, http_error_text(got.err));
    assert_int_equal(got.consumed, consumed);
    assert_int_equal(got.data_len, strlen(data));
    assert_memory_equal(got.data, data, got.data_len);
    check_every_split(msg, n, &got);
}

static void chunked_err(const char *msg, size_t n, enum http_error want)
{
    struct decoded got;
    decode_whole(msg, n, &got);
    if (got.result != -2 || got.err != want)
        fail_msg("expected \"%s\" for %.*s: got %zd (%s)", http_error_text(want), (int)n, msg,
                 got.result, http_error_text(got.err));
    check_every_split(msg, n, &got);
}

#define CHUNKED_OK(m, data) chunked_ok(m, sizeof(m) - 1, data, sizeof(m) - 1)
#define CHUNKED_ERR(m, e) chunked_err(m, sizeof(m) - 1, e)

static void test_chunked_decodes_in_place(void **state)
{
    char buf[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    size_t len = sizeof buf - 1;
    struct http_chunked d;
    enum http_error e;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, buf, &len, &e), sizeof buf - 1);
    assert_int_equal(e, HTTP_OK);
    assert_int_equal(len, 11);
    assert_memory_equal(buf, "hello world", 11);
}

static void test_chunked_every_split_gives_same_result(void **state)
{
    CHUNKED_OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    CHUNKED_OK("1;a=b\r\nx\r\n2 ; q=\"v\\\"w\"\r\nyz\r\n0\r\nT: v\r\n\r\n", "xyz");
    CHUNKED_OK("A\nabcdefghij\n0\nX-Trailer: 1\n\n", "abcdefghij");
}

static void test_chunked_fed_byte_by_byte(void **state)
{
    static const char msg[] = "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    struct http_chunked d;
    http_chunked_init(&d);
    char out[64];
    size_t out_len = 0;
    for (size_t i = 0; i < sizeof msg - 1; i++) {
        char b = msg[i];
        size_t len = 1;
        enum http_error e;
        ssize_t r = http_chunked_decode(&d, &b, &len, &e);
        if (len)
            out[out_len++] = b;
        if (i < sizeof msg - 2)
            assert_int_equal(r, HTTP_INCOMPLETE);
        else
            assert_int_equal(r, 1);
    }
    assert_int_equal(out_len, 19);
    assert_memory_equal(out, "abc0123456789abcdef", 19);
}

static void test_chunked_random_splits_of_long_body(void **state)
{
    static char msg[32768];
    char expect[2048];
    size_t n = 0, m = 0;
    uint32_t seed = 12345;
    while (m < 1500) {
        seed = seed * 1103515245 + 12345;
        size_t size = 1 + (seed >> 16) % 97;
        n += (size_t)sprintf(msg + n, "%zx%s\r\n", size, (seed & 1) ? ";ext=1" : "");
        for (size_t i = 0; i < size; i++, m++)
            msg[n++] = expect[m] = (char)('a' + (i + m) % 26);
        msg[n++] = '\r';
        msg[n++] = '\n';
    }
    n += (size_t)sprintf(msg + n, "0\r\nA: b\r\n\r\nNEXT");
    expect[m] = '\0';
    struct decoded want, got;
    decode_whole(msg, n, &want);
    assert_int_equal(want.result, n - 4);
    assert_int_equal(want.data_len, m);
    assert_memory_equal(want.data, expect, m);
    for (int round = 0; round < 200; round++) {
        size_t cuts[16], k = 0, pos = 0;
        while (k < 16) {
            seed = seed * 1103515245 + 12345;
            pos += (seed >> 16) % 400;
            if (pos > n)
                break;
            cuts[k++] = pos;
        }
        decode_pieces(msg, n, cuts, k, &got);
        assert_int_equal(got.result > 0, 1);
        assert_int_equal(got.consumed, n - 4);
        assert_int_equal(got.data_len, m);
        assert_memory_equal(got.data, expect, m);
    }
}

static void test_chunked_leaves_next_message_in_place(void **state)
{
    char buf[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    size_t len = sizeof buf - 1;
    struct http_chunked d;
    enum http_error e;
    http_chunked_init(&d);
    ssize_t r = http_chunked_decode(&d, buf, &len, &e);
    assert_int_equal(r, 13);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "abc", 3);
    assert_memory_equal(buf + r, "GET / HTTP/1.1\r\n", 16);
    chunked_ok("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", sizeof buf - 1, "abc", 13);
}

static void test_chunked_decode_after_completion_is_an_error(void **state)
{
    char buf[] = "0\r\n\r\n";
    size_t len = 5;
    struct http_chunked d;
    enum http_error e;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, buf, &len, &e), 5);
    len = 1;
    assert_int_equal(http_chunked_decode(&d, buf, &len, &e), -2);
    assert_int_equal(e, HTTP_ERR_BAD_CHUNK);
    assert_int_equal(len, 0);
}

static void test_chunked_empty_input_is_incomplete(void **state)
{
    char buf[1];
    size_t len = 0;
    struct http_chunked d;
    enum http_error e;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, buf, &len, &e), HTTP_INCOMPLETE);
    assert_int_equal(e, HTTP_OK);
    assert_int_equal(len, 0);
}

static void test_chunked_accepts_extensions(void **state)
{
    CHUNKED_OK("3;foo\r\nabc\r\n0\r\n\r\n", "abc");
    CHUNKED_OK("3;foo=bar;baz\r\nabc\r\n0\r\n\r\n", "abc");
    CHUNKED_OK("3 ; foo = bar ; x=\"quoted ; \\\" value\"\r\nabc\r\n0;last\r\n\r\n", "abc");
    CHUNKED_OK("3\t;\tfoo\t=\t\"\"\r\nabc\r\n0\r\n\r\n", "abc");
}

static void test_chunked_rejects_bad_extensions(void **state)
{
    CHUNKED_ERR("3;\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;=x\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=b c\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=\"b\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=\"b\x01\"\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a\x7f\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=b\rX\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a=\"b\"c\r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3;a \r\nabc\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
}

static void test_chunked_rejects_bad_size(void **state)
{
    static const char *const bad[] = {
        "\r\nabc\r\n0\r\n\r\n",    "-3\r\nabc\r\n0\r\n\r\n", "+3\r\nabc\r\n0\r\n\r\n",
        "0x3\r\nabc\r\n0\r\n\r\n", " 3\r\nabc\r\n0\r\n\r\n", "3 \r\nabc\r\n0\r\n\r\n",
        "g\r\nabc\r\n0\r\n\r\n",   "3\rabc\r\n0\r\n\r\n",    "3\r\r\nabc\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        chunked_err(bad[i], strlen(bad[i]), HTTP_ERR_BAD_CHUNK);
}

static void test_chunked_accepts_leading_zeros_and_uppercase_hex(void **state)
{
    CHUNKED_OK("0003\r\nabc\r\n00000\r\n\r\n", "abc");
    CHUNKED_OK("A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
    CHUNKED_OK("0000000000000000000000000000000a\r\n0123456789\r\n0\r\n\r\n", "0123456789");
}

static void test_chunked_rejects_size_over_63_bits(void **state)
{
    CHUNKED_ERR("8000000000000000\r\n", HTTP_ERR_CHUNK_TOO_LARGE);
    CHUNKED_ERR("10000000000000000\r\n", HTTP_ERR_CHUNK_TOO_LARGE);
    CHUNKED_ERR("fffffffffffffffff\r\n", HTTP_ERR_CHUNK_TOO_LARGE);
    /* the largest size is valid: the data just has not arrived */
    struct decoded got;
    decode_whole("7fffffffffffffff\r\nabc", 21, &got);
    assert_int_equal(got.result, HTTP_INCOMPLETE);
    assert_int_equal(got.data_len, 3);
}

static void test_chunked_rejects_missing_crlf_after_data(void **state)
{
    CHUNKED_ERR("3\r\nabcd\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3\r\nabc\rX0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3\r\nabc0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("3\r\nabc\r\r\n0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
}

static void test_chunked_accepts_lone_lf(void **state)
{
    CHUNKED_OK("3\nabc\n0\n\n", "abc");
    CHUNKED_OK("3\r\nabc\n0\r\n\n", "abc");
}

static void test_chunked_validates_and_drops_trailers(void **state)
{
    CHUNKED_OK("3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: \t1 2\xff\t\r\nEmpty:\r\n\r\n", "abc");
}

static void test_chunked_rejects_bad_trailers(void **state)
{
    CHUNKED_ERR("0\r\nX: a\r\n b\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\n X: a\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\nNoColon\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\n: empty\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\nX : a\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\nX: a\x01\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\nX: a\rb\r\n\r\n", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\n\rX", HTTP_ERR_BAD_CHUNK);
    CHUNKED_ERR("0\r\nX: a\0\r\n\r\n", HTTP_ERR_BAD_CHUNK);
}

static void test_chunked_bounds_size_line_at_4096(void **state)
{
    char *msg = malloc(5000);
    memset(msg, '0', 4095);
    memcpy(msg + 4095, "3\r\nabc\r\n0\r\n\r\n", 13);
    chunked_ok(msg, 4108, "abc", 4108);
    memset(msg, '0', 4096);
    memcpy(msg + 4096, "3\r\nabc\r\n0\r\n\r\n", 13);
    chunked_err(msg, 4109, HTTP_ERR_BAD_CHUNK);
    /* extensions count too */
    size_t n = (size_t)sprintf(msg, "3;x=");
    memset(msg + n, 'v', 4100);
    chunked_err(msg, n + 4100, HTTP_ERR_BAD_CHUNK);
    free(msg);
}

static void test_chunked_bounds_trailer_section(void **state)
{
    char *msg = malloc(20000);
    /* 3 + 16376 + 2 + 2 = 16383 trailer bytes: fits, 16385: does not */
    size_t n = (size_t)sprintf(msg, "0\r\nX: ");
    memset(msg + n, 'v', 16376);
    memcpy(msg + n + 16376, "\r\n\r\n", 4);
    chunked_ok(msg, n + 16380, "", n + 16380);
    memset(msg + n, 'v', 16378);
    memcpy(msg + n + 16378, "\r\n\r\n", 4);
    chunked_err(msg, n + 16382, HTTP_ERR_BAD_CHUNK);
    free(msg);
}

static void test_chunk_header_is_lowercase_hex_crlf(void **state)
{
    char out[19];
    assert_int_equal(http_chunk_header(out, 0), 3);
    assert_memory_equal(out, "0\r\n", 3);
    assert_int_equal(http_chunk_header(out, 255), 4);
    assert_memory_equal(out, "ff\r\n", 4);
    assert_int_equal(http_chunk_header(out, 0xABCDEF), 8);
    assert_memory_equal(out, "abcdef\r\n", 8);
    assert_int_equal(http_chunk_header(out, UINT64_MAX), 18);
    assert_memory_equal(out, "ffffffffffffffff\r\n", 18);
}

static void test_chunk_header_round_trips_through_decoder(void **state)
{
    char msg[128];
    size_t n = http_chunk_header(msg, 26);
    memcpy(msg + n, "abcdefghijklmnopqrstuvwxyz\r\n", 28);
    n += 28;
    n += http_chunk_header(msg + n, 0);
    memcpy(msg + n, "\r\n", 2);
    chunked_ok(msg, n + 2, "abcdefghijklmnopqrstuvwxyz", n + 2);
}

static int free_held(void **state)
{
    free(held);
    held = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_simple_get),
        cmocka_unit_test(test_returns_header_size_leaving_body_unread),
        cmocka_unit_test(test_sets_known_method_ids),
        cmocka_unit_test(test_rejects_non_token_method),
        cmocka_unit_test(test_rejects_extra_space_in_request_line),
        cmocka_unit_test(test_rejects_tab_as_request_line_separator),
        cmocka_unit_test(test_rejects_request_line_missing_parts),
        cmocka_unit_test(test_rejects_other_http_versions_with_505),
        cmocka_unit_test(test_rejects_malformed_version),
        cmocka_unit_test(test_accepts_http10),
        cmocka_unit_test(test_rejects_invalid_byte_in_target),
        cmocka_unit_test(test_accepts_every_visible_ascii_byte_in_target),
        cmocka_unit_test(test_rejects_origin_form_without_leading_slash),
        cmocka_unit_test(test_absolute_form_authority_replaces_host),
        cmocka_unit_test(test_absolute_form_scheme_is_case_insensitive),
        cmocka_unit_test(test_absolute_form_still_needs_one_host_field),
        cmocka_unit_test(test_rejects_absolute_form_with_bad_authority),
        cmocka_unit_test(test_authority_form_only_with_connect),
        cmocka_unit_test(test_connect_requires_authority_form_with_port),
        cmocka_unit_test(test_asterisk_form_only_with_options),
        cmocka_unit_test(test_skips_up_to_eight_leading_empty_lines),
        cmocka_unit_test(test_leading_empty_lines_count_toward_header_limit),
        cmocka_unit_test(test_accepts_lone_lf_line_endings),
        cmocka_unit_test(test_rejects_bare_cr_in_request_line),
        cmocka_unit_test(test_rejects_bare_cr_in_header),
        cmocka_unit_test(test_strips_ows_around_value),
        cmocka_unit_test(test_accepts_empty_value),
        cmocka_unit_test(test_rejects_ws_before_colon),
        cmocka_unit_test(test_rejects_empty_header_name),
        cmocka_unit_test(test_rejects_non_token_header_name),
        cmocka_unit_test(test_rejects_header_line_without_colon),
        cmocka_unit_test(test_rejects_control_byte_in_value),
        cmocka_unit_test(test_accepts_obs_text_and_htab_in_value),
        cmocka_unit_test(test_rejects_obs_fold),
        cmocka_unit_test(test_rejects_whitespace_before_first_header),
        cmocka_unit_test(test_accepts_max_headers),
        cmocka_unit_test(test_rejects_too_many_headers_with_431),
        cmocka_unit_test(test_accepts_request_line_at_limit),
        cmocka_unit_test(test_rejects_long_request_line_with_414),
        cmocka_unit_test(test_rejects_long_request_line_before_it_ends),
        cmocka_unit_test(test_applies_custom_request_line_limit),
        cmocka_unit_test(test_rejects_large_header_section_with_431),
        cmocka_unit_test(test_accepts_header_section_at_limit),
        cmocka_unit_test(test_null_limits_and_zero_fields_use_defaults),
        cmocka_unit_test(test_no_body_without_content_length_or_te),
        cmocka_unit_test(test_content_length_sets_length_framing),
        cmocka_unit_test(test_collapses_identical_content_lengths),
        cmocka_unit_test(test_rejects_differing_content_lengths),
        cmocka_unit_test(test_rejects_malformed_content_length),
        cmocka_unit_test(test_rejects_content_length_over_63_bits),
        cmocka_unit_test(test_rejects_te_with_content_length),
        cmocka_unit_test(test_rejects_te_in_http10),
        cmocka_unit_test(test_chunked_te_sets_chunked_framing),
        cmocka_unit_test(test_rejects_unknown_transfer_coding_with_501),
        cmocka_unit_test(test_combines_transfer_encoding_fields_in_order),
        cmocka_unit_test(test_rejects_chunked_twice_or_not_final_with_400),
        cmocka_unit_test(test_rejects_empty_transfer_encoding_elements),
        cmocka_unit_test(test_rejects_http11_without_host),
        cmocka_unit_test(test_accepts_http10_without_host),
        cmocka_unit_test(test_rejects_multiple_host),
        cmocka_unit_test(test_accepts_valid_host_values),
        cmocka_unit_test(test_rejects_invalid_host_values),
        cmocka_unit_test(test_http11_keeps_alive_unless_close),
        cmocka_unit_test(test_http10_keeps_alive_only_with_keep_alive),
        cmocka_unit_test(test_sets_expect_continue),
        cmocka_unit_test(test_upgrade_needs_connection_token_and_upgrade_field),
        cmocka_unit_test(test_request_fed_byte_by_byte_is_incomplete_until_complete),
        cmocka_unit_test(test_reports_syntax_error_before_section_is_complete),
        cmocka_unit_test(test_parse_of_one_message_ignores_earlier_calls),
        cmocka_unit_test(test_parses_simple_response),
        cmocka_unit_test(test_accepts_status_line_without_reason),
        cmocka_unit_test(test_accepts_reason_with_spaces_tabs_and_obs_text),
        cmocka_unit_test(test_rejects_control_byte_in_reason),
        cmocka_unit_test(test_rejects_bad_status_code),
        cmocka_unit_test(test_rejects_bad_response_version),
        cmocka_unit_test(test_refuses_non_http_response_at_once),
        cmocka_unit_test(test_response_headers_follow_request_rules),
        cmocka_unit_test(test_response_no_body_for_1xx_204_304),
        cmocka_unit_test(test_response_to_head_has_no_body),
        cmocka_unit_test(test_response_to_connect_2xx_has_no_body),
        cmocka_unit_test(test_response_without_framing_reads_until_close),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_rejects_cl_and_te),
        cmocka_unit_test(test_response_rejects_other_transfer_codings),
        cmocka_unit_test(test_response_rejects_te_in_http10),
        cmocka_unit_test(test_response_validates_content_length_without_body),
        cmocka_unit_test(test_response_keep_alive_rules),
        cmocka_unit_test(test_response_header_section_limit),
        cmocka_unit_test(test_response_fed_byte_by_byte_is_incomplete_until_complete),
        cmocka_unit_test(test_error_status_mapping),
        cmocka_unit_test(test_error_text_is_distinct_and_never_null),
        cmocka_unit_test(test_status_reason),
        cmocka_unit_test(test_name_is_case_insensitive),
        cmocka_unit_test(test_find_header_returns_first_match),
        cmocka_unit_test(test_list_has_token),
        cmocka_unit_test(test_keep_alive_timeout_and_max),
        cmocka_unit_test(test_keep_alive_one_parameter_alone),
        cmocka_unit_test(test_keep_alive_tolerates_spaces_case_and_empty_elements),
        cmocka_unit_test(test_keep_alive_skips_unknown_parameters),
        cmocka_unit_test(test_keep_alive_ignores_invalid_numbers),
        cmocka_unit_test(test_keep_alive_repeated_parameter_keeps_the_smaller),
        cmocka_unit_test(test_keep_alive_nothing_found),
        cmocka_unit_test(test_hop_by_hop_fixed_fields),
        cmocka_unit_test(test_hop_by_hop_fields_named_in_connection),
        cmocka_unit_test(test_char_table_matches_rfc_definitions),
        cmocka_unit_test(test_chunked_decodes_in_place),
        cmocka_unit_test(test_chunked_every_split_gives_same_result),
        cmocka_unit_test(test_chunked_fed_byte_by_byte),
        cmocka_unit_test(test_chunked_random_splits_of_long_body),
        cmocka_unit_test(test_chunked_leaves_next_message_in_place),
        cmocka_unit_test(test_chunked_decode_after_completion_is_an_error),
        cmocka_unit_test(test_chunked_empty_input_is_incomplete),
        cmocka_unit_test(test_chunked_accepts_extensions),
        cmocka_unit_test(test_chunked_rejects_bad_extensions),
        cmocka_unit_test(test_chunked_rejects_bad_size),
        cmocka_unit_test(test_chunked_accepts_leading_zeros_and_uppercase_hex),
        cmocka_unit_test(test_chunked_rejects_size_over_63_bits),
        cmocka_unit_test(test_chunked_rejects_missing_crlf_after_data),
        cmocka_unit_test(test_chunked_accepts_lone_lf),
        cmocka_unit_test(test_chunked_validates_and_drops_trailers),
        cmocka_unit_test(test_chunked_rejects_bad_trailers),
        cmocka_unit_test(test_chunked_bounds_size_line_at_4096),
        cmocka_unit_test(test_chunked_bounds_trailer_section),
        cmocka_unit_test(test_chunk_header_is_lowercase_hex_crlf),
        cmocka_unit_test(test_chunk_header_round_trips_through_decoder),
    };
    return cmocka_run_group_tests(tests, NULL, free_held);
}
