/* Unit tests for src/http/fastcgi.c: record encoders, the in-place record
 * decoder under every input split, the CGI response head parser, and the
 * script-path normaliser that keeps FastCGI scripts under root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"

/* A record as the application would send it. Returns its size. */
static size_t record(char *out, int type, uint16_t id, const char *content, size_t len,
                     uint8_t padding)
{
    http_fcgi_header(out, (enum http_fcgi_type)type, id, (uint16_t)len, padding);
    memcpy(out + 8, content, len);
    memset(out + 8 + len, 0x55, padding);
    return 8 + len + padding;
}

static size_t end_request(char *out, uint8_t protocol_status)
{
    char body[8] = {0, 0, 0, 7, (char)protocol_status, 0, 0, 0};
    return record(out, HTTP_FCGI_END_REQUEST, 1, body, 8, 0);
}

static void test_header_and_begin_request_bytes(void **state)
{
    (void)state;
    char h[8], b[16];
    http_fcgi_header(h, HTTP_FCGI_STDIN, 1, 0x1234, 5);
    assert_memory_equal(h, "\x01\x05\x00\x01\x12\x34\x05\x00", 8);
    http_fcgi_begin_request(b, 1, true);
    assert_memory_equal(b, "\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x01\x00\x00\x00\x00\x00", 16);
    http_fcgi_begin_request(b, 1, false);
    assert_int_equal(b[10], 0); /* no FCGI_KEEP_CONN */
}

static void test_param_lengths_one_and_four_bytes(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(http_fcgi_param_lengths(out, 11, 127), 2);
    assert_memory_equal(out, "\x0b\x7f", 2);
    assert_int_equal(http_fcgi_param_lengths(out, 128, 3), 5);
    assert_memory_equal(out, "\x80\x00\x00\x80\x03", 5);
    assert_int_equal(http_fcgi_param_lengths(out, 70000, 70000), 8);
    assert_memory_equal(out, "\x80\x01\x11\x70\x80\x01\x11\x70", 8);
    assert_int_equal(http_fcgi_param_lengths(out, 1, (size_t)1 << 31), 0);
}

static size_t stderr_seen;
static char stderr_text[256];
static void collect_stderr(void *ctx, const char *p, size_t n)
{
    (void)ctx;
    memcpy(stderr_text + stderr_seen, p, n);
    stderr_seen += n;
}

/* One response (stderr, stdout in two records with padding, end): fed in
 * every split into two reads, the same stdout and stderr come out. */
static void test_decoder_every_split(void **state)
{
    (void)state;
    char msg[512];
    size_t n = 0;
    n += record(msg + n, HTTP_FCGI_STDERR, 1, "warn\n", 5, 3);
    n += record(msg + n, HTTP_FCGI_STDOUT, 1, "Status: 200\r\n\r\nhel", 18, 6);
    n += record(msg + n, HTTP_FCGI_STDOUT, 1, "lo", 2, 0);
    n += record(msg + n, HTTP_FCGI_STDOUT, 1, "", 0, 0);
    n += end_request(msg + n, 0);
    for (size_t cut = 0; cut <= n; cut++) {
        struct http_fcgi_decoder d;
        http_fcgi_decoder_init(&d, 1);
        char buf[512], out[64];
        enum http_error err;
        size_t got = 0;
        stderr_seen = 0;
        memcpy(buf, msg, n);
        size_t a = cut;
        assert_int_equal(http_fcgi_decode(&d, buf, &a, collect_stderr, NULL, &err), 0);
        memcpy(out, buf, a);
        got = a;
        size_t b = n - cut;
        assert_int_equal(http_fcgi_decode(&d, buf + cut, &b, collect_stderr, NULL, &err), 0);
        memcpy(out + got, buf + cut, b);
        got += b;
        assert_int_equal(got, 20);
        assert_memory_equal(out, "Status: 200\r\n\r\nhello", 20);
        assert_int_equal(stderr_seen, 5);
        assert_memory_equal(stderr_text, "warn\n", 5);
        assert_true(d.ended && d.stdout_closed);
        assert_int_equal(d.app_status, 7);
    }
}

static int decode_all(const char *msg, size_t n, enum http_error *err)
{
    struct http_fcgi_decoder d;
    char buf[256];
    http_fcgi_decoder_init(&d, 1);
    memcpy(buf, msg, n);
    return http_fcgi_decode(&d, buf, &n, NULL, NULL, err);
}

static void test_decoder_refuses_malformed_records(void **state)
{
    (void)state;
    char m[128];
    enum http_error err;
    size_t n = record(m, HTTP_FCGI_STDOUT, 1, "x", 1, 0);
    m[0] = 2;
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_VERSION);
    n = record(m, HTTP_FCGI_STDOUT, 2, "x", 1, 0);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_REQUEST_ID);
    n = record(m, HTTP_FCGI_PARAMS, 1, "x", 1, 0);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_TYPE);
    n = record(m, HTTP_FCGI_END_REQUEST, 1, "1234", 4, 0);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_END_REQUEST);
    n = end_request(m, HTTP_FCGI_OVERLOADED);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_END_REQUEST);
    n = end_request(m, 0);
    n += record(m + n, HTTP_FCGI_STDOUT, 1, "x", 1, 0);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_AFTER_END);
    n = record(m, HTTP_FCGI_STDOUT, 1, "", 0, 0);
    n += record(m + n, HTTP_FCGI_STDOUT, 1, "x", 1, 0);
    assert_int_equal(decode_all(m, n, &err), -2);
    assert_int_equal(err, HTTP_ERR_FCGI_AFTER_END);
}

static struct http_response resp;

static int cgi(const char *s, enum http_method m, enum http_error *err)
{
    return http_parse_cgi_response(s, strlen(s), 0, m, &resp, err);
}

static void test_cgi_status_location_and_default(void **state)
{
    (void)state;
    enum http_error err;
    assert_int_equal(cgi("Status: 404 Not Found\r\nX-A: 1\r\n\r\nbody", HTTP_METHOD_GET, &err), 33);
    assert_int_equal(resp.status, 404);
    assert_int_equal(resp.reason_len, 9);
    assert_int_equal(resp.num_headers, 1); /* Status is not an HTTP field */
    assert_int_equal(resp.framing, HTTP_FRAMING_UNTIL_CLOSE);
    assert_true(cgi("Location: https://x.test/\n\n", HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.status, 302);
    assert_true(cgi("Location: /local\r\n\r\n", HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.status, 302);
    assert_true(cgi("Content-Type: text/html\r\n\r\n", HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.reason, "OK");
    assert_true(cgi("Status: 301\r\nLocation: /x\r\n\r\n", HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.status, 301);
}

static void test_cgi_several_set_cookie_and_length(void **state)
{
    (void)state;
    enum http_error err;
    assert_true(cgi("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 5\r\n\r\n",
                    HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.num_headers, 3);
    assert_int_equal(resp.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(resp.content_length, 5);
    assert_true(cgi("Content-Length: 5\r\n\r\n", HTTP_METHOD_HEAD, &err) > 0);
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
    assert_true(cgi("Status: 204\r\n\r\n", HTTP_METHOD_GET, &err) > 0);
    assert_int_equal(resp.framing, HTTP_FRAMING_NONE);
}

static void test_cgi_refuses_what_is_ambiguous(void **state)
{
    (void)state;
    enum http_error err;
    assert_int_equal(cgi("Status: 2000\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(err, HTTP_ERR_BAD_STATUS);
    assert_int_equal(cgi("Status: 101 Switching\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(cgi("Status: 200\r\nStatus: 500\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(cgi("Transfer-Encoding: chunked\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(err, HTTP_ERR_BAD_TRANSFER_ENCODING);
    assert_int_equal(cgi("Content-Length: 1\r\nContent-Length: 2\r\n\r\n", HTTP_METHOD_GET, &err),
                     -2);
    assert_int_equal(err, HTTP_ERR_BAD_CONTENT_LENGTH);
    assert_int_equal(cgi("X-A : 1\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(err, HTTP_ERR_WS_BEFORE_COLON);
    assert_int_equal(cgi("X-A: 1\r\n folded\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(err, HTTP_ERR_OBS_FOLD);
    assert_int_equal(cgi("X-A: a\rb\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(cgi("nocolon\r\n\r\n", HTTP_METHOD_GET, &err), -2);
    assert_int_equal(err, HTTP_ERR_BAD_HEADER_NAME);
    assert_int_equal(cgi("X-A: 1\r\n", HTTP_METHOD_GET, &err), HTTP_INCOMPLETE);
}

static void test_cgi_head_over_the_limit(void **state)
{
    (void)state;
    enum http_error err;
    char big[300];
    memset(big, 'a', sizeof(big));
    memcpy(big, "X-Big: ", 7);
    assert_int_equal(http_parse_cgi_response(big, sizeof(big), 256, HTTP_METHOD_GET, &resp, &err),
                     -2);
    assert_int_equal(err, HTTP_ERR_HEADERS_TOO_LARGE);
}

static ssize_t norm(const char *in, char *out)
{
    return http_normalize_path(in, strlen(in), out, 256);
}

static void test_normalize_resolves_dots_and_decodes(void **state)
{
    (void)state;
    char out[256];
    static const char *const cases[][2] = {
        {"/index.php", "/index.php"},
        {"/a//b.php", "/a/b.php"},
        {"/a/./b.php", "/a/b.php"},
        {"/a/x/../b.php", "/a/b.php"},
        {"/%61%2Fb.php", "/a/b.php"},
        {"/", "/"},
        {"/dir/", "/dir/"},
        {"/a/..", "/"},
        {"/a/.", "/a/"},
        {"/a%20b.php", "/a b.php"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ssize_t n = norm(cases[i][0], out);
        assert_true(n > 0);
        assert_string_equal(out, cases[i][1]);
        assert_int_equal((size_t)n, strlen(cases[i][1]));
    }
}

static void test_normalize_refuses_escapes_and_bad_bytes(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(norm("/../etc/passwd", out), -2);
    assert_int_equal(norm("/a/../../x.php", out), -2);
    assert_int_equal(norm("/%2e%2e/x.php", out), -2);
    assert_int_equal(norm("/..%2fx.php", out), -2);
    assert_int_equal(norm("/x%00.php", out), -1);
    assert_int_equal(norm("/x%zz.php", out), -1);
    assert_int_equal(norm("/x%4", out), -1);
    assert_int_equal(norm("relative.php", out), -1);
    char small[8];
    assert_int_equal(http_normalize_path("/longer.php", 11, small, sizeof(small)), -3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_begin_request_bytes),
        cmocka_unit_test(test_param_lengths_one_and_four_bytes),
        cmocka_unit_test(test_decoder_every_split),
        cmocka_unit_test(test_decoder_refuses_malformed_records),
        cmocka_unit_test(test_cgi_status_location_and_default),
        cmocka_unit_test(test_cgi_several_set_cookie_and_length),
        cmocka_unit_test(test_cgi_refuses_what_is_ambiguous),
        cmocka_unit_test(test_cgi_head_over_the_limit),
        cmocka_unit_test(test_normalize_resolves_dots_and_decodes),
        cmocka_unit_test(test_normalize_refuses_escapes_and_bad_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
