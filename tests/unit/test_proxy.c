/* Unit tests for src/proxy: the retry rules, the head builders at their
 * exact-fit boundaries, and body framing (what a replay sends). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/proxy_internal.h"

/* ---- retry rules ---- */

static struct retry_facts connect_refused(void)
{
    return (struct retry_facts){
        .cause = CAUSE_CONNECTION_REFUSED,
        .replayable = true,
        .idempotent = true,
        .attempts = 1,
        .retries = 2,
        .untried_left = true,
        .budget_ok = true,
    };
}

static void test_retry_goes_to_an_untried_server(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NEXT);
}

static void test_retry_never_hits_the_same_server_twice(void **state)
{
    (void)state;
    /* one server, retries: 2: a refused connect is one attempt */
    struct retry_facts f = connect_refused();
    f.untried_left = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
}

static void test_retries_are_bounded_by_the_setting(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    f.retries = 0;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    f.retries = 1;
    f.attempts = 2;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    /* a free retry does not count against the setting */
    f.free_retries = 1;
    f.free_retry_used = true;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NEXT);
}

static void test_sent_post_is_not_resent(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    f.cause = CAUSE_CONNECTION_TERMINATED;
    f.request_sent = true;
    f.idempotent = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    /* unless the upstream went away before it had the whole request */
    f.partial = true;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NEXT);
}

static void test_body_no_longer_held_is_never_replayed(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    f.cause = CAUSE_CONNECTION_TERMINATED;
    f.request_sent = true;
    f.partial = true;
    f.replayable = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    f.reused_conn = true; /* not even the free retry */
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    /* nothing sent: nothing to replay, so any attempt may follow */
    f.request_sent = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_FREE);
}

static void test_stale_pooled_connection_gets_one_free_retry(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    f.cause = CAUSE_CONNECTION_TERMINATED;
    f.request_sent = true;
    f.reused_conn = true;
    f.retries = 0;
    f.untried_left = false; /* even to the same, lone server */
    assert_int_equal(attempt_retry_verdict(&f), RETRY_FREE);
    f.free_retry_used = true;
    f.free_retries = 1;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    /* a timeout on a pooled connection is not the idle-close race */
    f = connect_refused();
    f.cause = CAUSE_HTTP_RESPONSE_TIMEOUT;
    f.reused_conn = true;
    f.retries = 0;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
}

static void test_spent_retry_budget_stops_a_retry_but_not_the_free_one(void **state)
{
    (void)state;
    struct retry_facts f = connect_refused();
    f.cause = CAUSE_CONNECTION_TERMINATED;
    f.request_sent = true;
    f.budget_ok = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO_BUDGET);
    /* the idle-close race of a pooled connection is not a retry the budget counts */
    f.reused_conn = true;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_FREE);
    /* the budget is asked last: a request that may not be resent is a plain no */
    f = connect_refused();
    f.budget_ok = false;
    f.untried_left = false;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
    f = connect_refused();
    f.budget_ok = false;
    f.retries = 0;
    assert_int_equal(attempt_retry_verdict(&f), RETRY_NO);
}

/* ---- head builders ---- */

static struct http_request hr;

static void parse(const char *text)
{
    enum http_error err = HTTP_OK;
    int n = http_parse_request(text, strlen(text), NULL, &hr, &err);
    assert_int_equal(err, HTTP_OK);
    assert_int_equal(n, (int)strlen(text));
}

static const struct forward_opts fwd = {
    .x_forwarded_for = true,
    .x_forwarded_proto = true,
    .via = true,
    .client_ip = "192.0.2.7",
    .rid = "abc",
    .default_host = "app",
};

static char out[8192];

/* Build into a writer of exactly cap bytes. */
static bool build_request(size_t cap, const struct forward_opts *o)
{
    struct wbuf w = wbuf_make(out, cap);
    http1_build_request_head(&w, &hr, o);
    if (wbuf_ok(&w))
        out[w.len] = '\0';
    return wbuf_ok(&w);
}

static void test_request_head_fits_exactly_or_not_at_all(void **state)
{
    (void)state;
    parse("POST /p?q=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\n"
          "Content-Length: 3\r\nConnection: keep-alive\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    size_t len = strlen(out);
    assert_string_equal(out, "POST /p?q=1 HTTP/1.1\r\nHost: a.example\r\n"
                             "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"
                             "X-Forwarded-Proto: http\r\nVia: 1.1 bulwark\r\n"
                             "Content-Length: 3\r\nX-Request-Id: abc\r\n\r\n");
    assert_true(build_request(len, &fwd));
    assert_false(build_request(len - 1, &fwd));
    for (size_t cap = 0; cap < len; cap++)
        assert_false(build_request(cap, &fwd));
}

static void test_connection_cannot_remove_host(void **state)
{
    (void)state;
    parse("GET / HTTP/1.1\r\nHost: a.example\r\nConnection: host\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    assert_non_null(strstr(out, "\r\nHost: a.example\r\n"));
}

static void test_http10_without_host_gets_one(void **state)
{
    (void)state;
    parse("GET / HTTP/1.0\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    assert_non_null(strstr(out, "GET / HTTP/1.1\r\nHost: app\r\n"));
    assert_non_null(strstr(out, "Via: 1.0 bulwark\r\n"));
}

static void test_absolute_form_host_is_the_authority(void **state)
{
    (void)state;
    parse("GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    assert_non_null(strstr(out, "\r\nHost: public.example\r\n"));
    assert_null(strstr(out, "internal.example"));
}

static void test_hop_by_hop_forwarded_for_is_dropped_not_joined(void **state)
{
    (void)state;
    parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for\r\n"
          "X-Forwarded-For: 6.6.6.6\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    assert_null(strstr(out, "6.6.6.6"));
    assert_non_null(strstr(out, "X-Forwarded-For: 192.0.2.7\r\n"));
}

static void test_framing_and_request_id_are_ours(void **state)
{
    (void)state;
    parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
          "X-Request-Id: evil\r\n\r\n");
    assert_true(build_request(sizeof(out), &fwd));
    assert_non_null(strstr(out, "Transfer-Encoding: chunked\r\n"));
    assert_null(strstr(out, "Expect"));
    assert_null(strstr(out, "evil"));
    assert_non_null(strstr(out, "X-Request-Id: abc\r\n\r\n"));
}

static struct http_response resp;

static void parse_response(const char *text, enum http_method m)
{
    enum http_error err = HTTP_OK;
    int n = http_parse_response(text, strlen(text), 0, m, &resp, &err);
    assert_int_equal(err, HTTP_OK);
    assert_int_equal(n, (int)strlen(text));
}

static bool build_response(size_t cap, const struct relay_opts *o)
{
    struct wbuf w = wbuf_make(out, cap);
    http1_build_response_head(&w, &resp, o);
    if (wbuf_ok(&w))
        out[w.len] = '\0';
    return wbuf_ok(&w);
}

static void test_response_head_fits_exactly_or_not_at_all(void **state)
{
    (void)state;
    parse_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: theirs\r\n"
                   "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=b\r\n\r\n",
                   HTTP_METHOD_GET);
    struct relay_opts o = {.via = true, .rid = "abc", .close = true};
    assert_true(build_response(sizeof(out), &o));
    size_t len = strlen(out);
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nVia: 1.1 bulwark\r\n"
                             "X-Request-Id: abc\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
    for (size_t cap = 0; cap < len; cap++)
        assert_false(build_response(cap, &o));
    assert_true(build_response(len, &o));
}

static void test_response_rechunked_for_the_client(void **state)
{
    (void)state;
    parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_METHOD_GET);
    struct relay_opts o = {.rid = "r", .chunked_out = true, .keep_alive_10 = false};
    assert_true(build_response(sizeof(out), &o));
    assert_string_equal(out, "HTTP/1.1 200 OK\r\nX-Request-Id: r\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
}

static void test_interim_and_switching_heads(void **state)
{
    (void)state;
    struct relay_opts o = {.via = true, .rid = "r"};
    parse_response("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
                   HTTP_METHOD_GET);
    assert_true(build_response(sizeof(out), &o));
    assert_string_equal(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
    parse_response("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: upgrade\r\n\r\n",
                   HTTP_METHOD_GET);
    assert_true(build_response(sizeof(out), &o));
    assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: upgrade\r\n\r\n");
}

/* ---- body framing ---- */

static struct buf src;
static struct outq q;

static void fill(const char *bytes, size_t n)
{
    buf_release(&src);
    assert_int_equal(buf_acquire(&src), 0);
    assert_true(buf_append(&src, bytes, n));
    buf_release(&q.gen);
    memset(&q, 0, sizeof(q));
}

static struct buf stage;

/* A chunked request body as the proxy sets it up: decoded on a stage. */
static struct body chunked_request(void)
{
    struct body b = {.framing = HTTP_FRAMING_CHUNKED, .coding = BODY_RECHUNK, .stage = &stage};
    http_chunked_init(&b.chunked);
    return b;
}

/* What q sends, as one string. */
static size_t queued(char *dst)
{
    size_t n = 0;
    memcpy(dst + n, q.pre, q.pre_len);
    n += q.pre_len;
    memcpy(dst + n, q.data, q.data_len);
    n += q.data_len;
    memcpy(dst + n, q.post, q.post_len);
    n += q.post_len;
    return n;
}

static void test_chunked_request_is_reframed_and_the_source_kept(void **state)
{
    (void)state;
    /* the attack of a replay that re-decodes: data that looks like framing */
    static const char body[] = "26\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n"
                               "GET /next HTTP/1.1\r\n";
    size_t msg_len = strlen(body) - strlen("GET /next HTTP/1.1\r\n");
    struct body b = chunked_request();
    struct body start = b;
    fill(body, strlen(body));
    enum http_error err = HTTP_OK;
    char sent[256], again[256];
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
    assert_true(b.done);
    assert_int_equal(q.src_consume, msg_len); /* the next request stays */
    size_t n = queued(sent);
    assert_int_equal(n, 4 + 0x26 + 2 + 5);
    assert_memory_equal(sent, "26\r\n0\r\n\r\nGET /smuggled", 4 + 18);
    assert_memory_equal(sent + 4 + 0x26, "\r\n0\r\n\r\n", 7);
    assert_int_equal(b.bytes, 0x26);
    assert_memory_equal(buf_head(&src), body, strlen(body)); /* as received: replayable */
    /* a replay from the saved start sends the very same bytes */
    b = start;
    memset(&q, 0, sizeof(q));
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
    assert_int_equal(queued(again), n);
    assert_memory_equal(again, sent, n);
    buf_release(&src);
    buf_release(&stage);
}

static void test_chunked_request_framing_is_ours_not_the_clients(void **state)
{
    (void)state;
    /* bare LF, an extension and a trailer field: none of it reaches the next hop */
    static const char body[] = "5;ext=\"v\"\nhello\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    struct body b = chunked_request();
    fill(body, strlen(body));
    enum http_error err = HTTP_OK;
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
    char sent[256];
    size_t n = queued(sent);
    assert_true(b.done);
    assert_int_equal(n, strlen("5\r\nhello\r\n0\r\n\r\n"));
    assert_memory_equal(sent, "5\r\nhello\r\n0\r\n\r\n", n);
    buf_release(&src);
    buf_release(&stage);
}

static void test_chunked_request_split_anywhere_is_the_same_data(void **state)
{
    (void)state;
    static const char body[] = "5;ext=\"v\"\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n";
    size_t n = strlen(body);
    for (size_t split = 1; split < n; split++) {
        struct body b = chunked_request();
        enum http_error err = HTTP_OK;
        char data[64];
        size_t got = 0;
        fill(body, split);
        assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
        memcpy(data + got, q.data, q.data_len);
        got += q.data_len;
        assert_false(b.done);
        fill(body + split, n - split);
        assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
        memcpy(data + got, q.data, q.data_len);
        got += q.data_len;
        assert_true(b.done);
        assert_int_equal(got, 8);
        assert_memory_equal(data, "helloabc", 8);
        assert_int_equal(b.bytes, 8);
    }
    buf_release(&src);
    buf_release(&stage);
}

static void test_malformed_chunk_queues_nothing(void **state)
{
    (void)state;
    struct body b = chunked_request();
    fill("5\r\nhello\r\nZ\r\n", 14);
    enum http_error err = HTTP_OK;
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), -1);
    assert_int_equal(err, HTTP_ERR_BAD_CHUNK);
    assert_int_equal(q.data_len, 0);
    assert_int_equal(q.pre_len, 0);
    buf_release(&src);
    buf_release(&stage);
}

static void test_length_body_stops_at_its_end(void **state)
{
    (void)state;
    struct body b = {.framing = HTTP_FRAMING_LENGTH, .left = 3, .coding = BODY_RAW};
    fill("abcGET", 6);
    enum http_error err = HTTP_OK;
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
    assert_true(b.done);
    assert_int_equal(q.data_len, 3);
    assert_int_equal(q.src_consume, 3);
    buf_release(&src);
}

static void test_min_body_rate_deadline_is_a_grace_plus_credit_per_byte(void **state)
{
    (void)state;
    /* 1024 bytes per 10 s: the first 10 s are free, each byte buys 10000/1024 ms */
    assert_int_equal(defence_body_deadline_ms(5000, 0, 1024, 10000), 15000);
    assert_int_equal(defence_body_deadline_ms(5000, 1024, 1024, 10000), 25000);
    assert_int_equal(defence_body_deadline_ms(5000, 512, 1024, 10000), 20000);
    assert_int_equal(defence_body_deadline_ms(5000, 3 * 1024 + 1, 1024, 10000), 45009);
    /* exactly at the rate, the deadline stays one grace ahead of the clock */
    for (uint64_t t = 0; t <= 600000; t += 10000)
        assert_true(defence_body_deadline_ms(0, t / 10000 * 1024, 1024, 10000) == t + 10000);
}

static void test_min_body_rate_off_or_huge_credit_never_expires(void **state)
{
    (void)state;
    assert_true(defence_body_deadline_ms(5000, 0, 0, 10000) == UINT64_MAX);
    assert_true(defence_body_deadline_ms(5000, UINT64_MAX, 1, 4000000000u) == UINT64_MAX);
    assert_true(defence_body_deadline_ms(UINT64_MAX - 10, 1 << 20, 1, 1000) == UINT64_MAX);
}

static void test_rechunk_frames_each_piece_and_the_end(void **state)
{
    (void)state;
    struct body b = {.framing = HTTP_FRAMING_UNTIL_CLOSE, .coding = BODY_RECHUNK};
    fill("hello", 5);
    enum http_error err = HTTP_OK;
    assert_int_equal(body_prepare(&b, &src, false, &q, &err), 0);
    assert_int_equal(q.pre_len, 3);
    assert_memory_equal(q.pre, "5\r\n", 3);
    assert_int_equal(buf_len(&q.gen), 0); /* framing never goes into gen */
    assert_int_equal(q.post_len, 2);
    assert_false(b.done);
    fill("!", 1);
    assert_int_equal(body_prepare(&b, &src, true, &q, &err), 0);
    assert_true(b.done);
    assert_int_equal(q.post_len, 7);
    assert_memory_equal(q.post, "\r\n0\r\n\r\n", 7);
    buf_release(&q.gen);
    buf_release(&src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_min_body_rate_deadline_is_a_grace_plus_credit_per_byte),
        cmocka_unit_test(test_min_body_rate_off_or_huge_credit_never_expires),
        cmocka_unit_test(test_retry_goes_to_an_untried_server),
        cmocka_unit_test(test_retry_never_hits_the_same_server_twice),
        cmocka_unit_test(test_retries_are_bounded_by_the_setting),
        cmocka_unit_test(test_sent_post_is_not_resent),
        cmocka_unit_test(test_body_no_longer_held_is_never_replayed),
        cmocka_unit_test(test_stale_pooled_connection_gets_one_free_retry),
        cmocka_unit_test(test_spent_retry_budget_stops_a_retry_but_not_the_free_one),
        cmocka_unit_test(test_request_head_fits_exactly_or_not_at_all),
        cmocka_unit_test(test_connection_cannot_remove_host),
        cmocka_unit_test(test_http10_without_host_gets_one),
        cmocka_unit_test(test_absolute_form_host_is_the_authority),
        cmocka_unit_test(test_hop_by_hop_forwarded_for_is_dropped_not_joined),
        cmocka_unit_test(test_framing_and_request_id_are_ours),
        cmocka_unit_test(test_response_head_fits_exactly_or_not_at_all),
        cmocka_unit_test(test_response_rechunked_for_the_client),
        cmocka_unit_test(test_interim_and_switching_heads),
        cmocka_unit_test(test_chunked_request_is_reframed_and_the_source_kept),
        cmocka_unit_test(test_chunked_request_framing_is_ours_not_the_clients),
        cmocka_unit_test(test_chunked_request_split_anywhere_is_the_same_data),
        cmocka_unit_test(test_malformed_chunk_queues_nothing),
        cmocka_unit_test(test_length_body_stops_at_its_end),
        cmocka_unit_test(test_rechunk_frames_each_piece_and_the_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
