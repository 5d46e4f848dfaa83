/* Unit tests for src/observe: Proxy-Status escaping, Accept negotiation of
 * error pages, request-id validation, access-log lines (combined and JSON)
 * and the metrics text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "core/core.h"
#include "observe/observe.h"

/* ---- Proxy-Status ---- */

static void test_proxy_status_with_next_hop(void **state)
{
    char out[256];
    size_t n =
        observe_proxy_status(out, sizeof(out), CAUSE_CONNECTION_REFUSED, "127.0.0.1:9000", NULL);
    assert_string_equal(out, "bulwark; error=connection_refused; next-hop=\"127.0.0.1:9000\"");
    assert_int_equal(n, strlen(out));
}

static void test_proxy_status_without_server(void **state)
{
    char out[256];
    observe_proxy_status(out, sizeof(out), CAUSE_DESTINATION_NOT_FOUND, NULL, NULL);
    assert_string_equal(out, "bulwark; error=destination_not_found");
}

static void test_proxy_status_escapes_quote_and_backslash(void **state)
{
    char out[256];
    observe_proxy_status(out, sizeof(out), CAUSE_CONNECTION_TERMINATED, "a\"b\\c",
                         "said \"no\" \\ bye");
    assert_string_equal(out, "bulwark; error=connection_terminated; next-hop=\"a\\\"b\\\\c\"; "
                             "details=\"said \\\"no\\\" \\\\ bye\"");
}

static void test_proxy_status_drops_non_printable_bytes(void **state)
{
    char out[256];
    /* CR LF would split the header; UTF-8 and DEL are not sf-string chars. */
    observe_proxy_status(out, sizeof(out), CAUSE_DNS_ERROR, "host\r\nX-Evil: 1",
                         "caf\xc3\xa9\x7f\x01!");
    assert_string_equal(out, "bulwark; error=dns_error; next-hop=\"hostX-Evil: 1\"; "
                             "details=\"caf!\"");
}

static void test_proxy_status_is_never_cut(void **state)
{
    char out[20];
    memset(out, 'z', sizeof(out));
    size_t n =
        observe_proxy_status(out, sizeof(out), CAUSE_CONNECTION_REFUSED, "127.0.0.1:9000", NULL);
    assert_int_equal(n, 0); /* does not fit: nothing, never half a value */
    assert_int_equal(out[0], '\0');
    /* details that do not fit are left out, the rest stays whole */
    char big[400];
    memset(big, 'd', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char out2[128];
    n = observe_proxy_status(out2, sizeof(out2), CAUSE_CONNECTION_REFUSED, "app", big);
    assert_string_equal(out2, "bulwark; error=connection_refused; next-hop=\"app\"");
    assert_int_equal(n, strlen(out2));
}

/* ---- error pages and Accept ---- */

static const char *page_type(const char *accept)
{
    char out[8192];
    const char *type = NULL;
    observe_error_page(out, sizeof(out), 502, CAUSE_CONNECTION_REFUSED, "rid1", accept,
                       accept ? strlen(accept) : 0, NULL, &type);
    return type;
}

static void test_accept_negotiation(void **state)
{
    const char *html = "text/html; charset=utf-8", *json = "application/json",
               *text = "text/plain; charset=utf-8";
    assert_string_equal(page_type(NULL), text);
    assert_string_equal(page_type(""), text);
    assert_string_equal(page_type("*/*"), text);
    assert_string_equal(page_type("text/html,application/xhtml+xml,application/xml;q=0.9,"
                                  "image/avif,image/webp,*/*;q=0.8"),
                        html);
    assert_string_equal(page_type("application/json"), json);
    assert_string_equal(page_type("application/json, text/plain;q=0.5"), json);
    assert_string_equal(page_type("application/json;q=0.5, text/plain;q=0.9"), text);
    assert_string_equal(page_type("text/html;q=0, application/json"), json);
    assert_string_equal(page_type("TEXT/HTML"), html);
    assert_string_equal(page_type("text/*"), text);
    assert_string_equal(page_type("text/*;q=0.2, text/html;q=0.7"), html);
    assert_string_equal(page_type("image/png"), text);
    assert_string_equal(page_type("application/*"), json);
    assert_string_equal(page_type(" application/json ; q=1.0 , text/html ; q=0.3"), json);
}

static void test_json_page(void **state)
{
    char out[1024];
    const char *type;
    size_t n = observe_error_page(out, sizeof(out), 502, CAUSE_CONNECTION_REFUSED, "abc-1",
                                  "application/json", 16, NULL, &type);
    assert_int_equal(n, strlen("{\"status\":502,\"error\":\"connection_refused\","
                               "\"request_id\":\"abc-1\"}\n"));
    assert_memory_equal(
        out, "{\"status\":502,\"error\":\"connection_refused\",\"request_id\":\"abc-1\"}\n", n);
}

static void test_json_page_with_details_escaped(void **state)
{
    char out[1024];
    const char *type;
    size_t n = observe_error_page(out, sizeof(out), 504, CAUSE_HTTP_RESPONSE_TIMEOUT, "r",
                                  "application/json", 16, "no \"header\"\nin 30s", &type);
    out[n] = '\0';
    assert_string_equal(out, "{\"status\":504,\"error\":\"http_response_timeout\",\"request_id\":"
                             "\"r\",\"details\":\"no \\\"header\\\"\\u000ain 30s\"}\n");
}

static void test_html_page_is_self_contained_and_escaped(void **state)
{
    char out[8192];
    const char *type;
    size_t n = observe_error_page(out, sizeof(out) - 1, 503, CAUSE_DESTINATION_UNAVAILABLE,
                                  "rid-42", "text/html", 9, "<script>x</script>", &type);
    out[n] = '\0';
    assert_string_equal(type, "text/html; charset=utf-8");
    assert_non_null(strstr(out, "<title>503 Service Unavailable</title>"));
    assert_non_null(strstr(out, "destination_unavailable"));
    assert_non_null(strstr(out, "rid-42"));
    assert_non_null(strstr(out, cause_get(CAUSE_DESTINATION_UNAVAILABLE)->sentence));
    assert_non_null(strstr(out, "&lt;script&gt;x&lt;/script&gt;"));
    assert_null(strstr(out, "<script>"));
    /* No external assets: nothing to fetch from a server that is failing. */
    assert_null(strstr(out, "http://"));
    assert_null(strstr(out, "https://"));
    assert_null(strstr(out, "src="));
    assert_null(strstr(out, "<link"));
}

static void test_text_page(void **state)
{
    char out[1024];
    const char *type;
    size_t n = observe_error_page(out, sizeof(out), 502, CAUSE_CONNECTION_REFUSED, "rid-7", NULL, 0,
                                  NULL, &type);
    out[n] = '\0';
    assert_string_equal(type, "text/plain; charset=utf-8");
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "502 Bad Gateway\nconnection_refused\n%s\nrequest id: rid-7\n",
             cause_get(CAUSE_CONNECTION_REFUSED)->sentence);
    assert_string_equal(out, expected);
}

static void test_page_never_writes_past_cap(void **state)
{
    char out[64];
    const char *type;
    memset(out, 'Z', sizeof(out));
    size_t n = observe_error_page(out, 40, 502, CAUSE_CONNECTION_REFUSED, "rid", "text/html", 9,
                                  NULL, &type);
    assert_true(n <= 40);
    for (size_t i = 40; i < sizeof(out); i++)
        assert_int_equal(out[i], 'Z');
}

static void test_custom_page_from_config(void **state)
{
    char dir[] = "/tmp/test_observe_XXXXXX";
    char page[256], yaml[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(page, sizeof(page), "%s/502.html", dir);
    FILE *f = fopen(page, "w");
    assert_non_null(f);
    fputs("<p>{{status}} {{error}} id={{request_id}} {{other}}</p>", f);
    fclose(f);
    snprintf(yaml, sizeof(yaml),
             "listen: [\"127.0.0.1:8080\"]\nerrors: {pages: {502: %s}}\n"
             "upstreams: {app: {servers: [\"127.0.0.1:9000\"]}}\nroutes: [{upstream: app}]\n",
             page);
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("t.yaml", yaml, strlen(yaml), &errs);
    assert_non_null(cfg);
    assert_int_equal(observe_configure(cfg), 0);
    config_unref(cfg); /* observe keeps its own reference */

    char out[1024];
    const char *type;
    size_t n = observe_error_page(out, sizeof(out), 502, CAUSE_CONNECTION_REFUSED, "q-1",
                                  "text/html", 9, NULL, &type);
    out[n] = '\0';
    assert_string_equal(type, "text/html; charset=utf-8");
    assert_string_equal(out, "<p>502 connection_refused id=q-1 {{other}}</p>");
    /* Another status, or a client asking for JSON, gets the built-in page. */
    n = observe_error_page(out, sizeof(out), 504, CAUSE_CONNECTION_TIMEOUT, "q-1", "text/html", 9,
                           NULL, &type);
    out[n] = '\0';
    assert_non_null(strstr(out, "<title>504 Gateway Timeout</title>"));
    n = observe_error_page(out, sizeof(out), 502, CAUSE_CONNECTION_REFUSED, "q-1",
                           "application/json", 16, NULL, &type);
    assert_string_equal(type, "application/json");
    unlink(page);
    rmdir(dir);
}

/* ---- request ids ---- */

static void test_request_id_validation(void **state)
{
    char long_id[130];
    memset(long_id, 'a', sizeof(long_id));
    assert_true(observe_request_id_valid("abc", 3));
    assert_true(observe_request_id_valid("Req-1.2_3:4", 11));
    assert_true(observe_request_id_valid(long_id, 128));
    assert_false(observe_request_id_valid(long_id, 129));
    assert_false(observe_request_id_valid("", 0));
    assert_false(observe_request_id_valid(NULL, 0));
    assert_false(observe_request_id_valid("a b", 3));
    assert_false(observe_request_id_valid("a\r\nX: y", 7));
    assert_false(observe_request_id_valid("a\"b", 3));
    assert_false(observe_request_id_valid("a/b", 3));
    assert_false(observe_request_id_valid("caf\xc3\xa9", 5));
    assert_false(observe_request_id_valid("a\0b", 3));
}

/* ---- access log ---- */

static struct request_record sample(void)
{
    struct request_record r = {0};
    r.rid = "0a00000100000001";
    r.client_ip = "192.0.2.7";
    r.method = "GET";
    r.method_len = 3;
    r.target = "/x?q=1";
    r.target_len = 6;
    r.host = "example.com";
    r.host_len = 11;
    r.minor_version = 1;
    r.status = 502;
    r.cause = CAUSE_CONNECTION_REFUSED;
    r.err = ECONNREFUSED;
    r.route = "example.com/";
    r.upstream_group = "app";
    r.upstream_server = "127.0.0.1:9000";
    r.num_attempts = 1;
    r.attempts[0] = (struct attempt_evidence){"127.0.0.1:9000", CAUSE_CONNECTION_REFUSED,
                                              ECONNREFUSED, 0, false};
    r.body_bytes_sent = 98;
    r.connect_ms = 0;
    r.header_ms = -1;
    r.upstream_ms = 1;
    r.total_ms = 1234;
    return r;
}

/* The part of a combined line after its "[time] ". */
static const char *after_time(const char *line)
{
    const char *p = strstr(line, "] \"");
    assert_non_null(p);
    return p + 2;
}

static void test_combined_line(void **state)
{
    struct request_record r = sample();
    char line[4096];
    size_t n = observe_format_access(line, sizeof(line), &r, false);
    assert_int_equal(n, strlen(line));
    assert_memory_equal(line, "192.0.2.7 - - [", 15);
    assert_string_equal(after_time(line),
                        "\"GET /x?q=1 HTTP/1.1\" 502 98 \"-\" \"-\" upstream=127.0.0.1:9000 "
                        "upstream_status=- connect=0.000 header=- upstream_total=0.001 "
                        "total=1.234 attempts=1 error=connection_refused rid=0a00000100000001\n");
}

static void test_combined_line_of_a_relayed_response(void **state)
{
    struct request_record r = sample();
    r.status = 200;
    r.upstream_status = 200;
    r.cause = CAUSE_NONE;
    r.err = 0;
    r.referer = "http://a/";
    r.referer_len = 9;
    r.user_agent = "curl/8";
    r.user_agent_len = 6;
    r.header_ms = 12;
    char line[4096];
    observe_format_access(line, sizeof(line), &r, false);
    assert_string_equal(after_time(line),
                        "\"GET /x?q=1 HTTP/1.1\" 200 98 \"http://a/\" \"curl/8\" "
                        "upstream=127.0.0.1:9000 upstream_status=200 connect=0.000 header=0.012 "
                        "upstream_total=0.001 total=1.234 attempts=1 error=- "
                        "rid=0a00000100000001\n");
}

static void test_combined_line_escapes_client_strings(void **state)
{
    struct request_record r = sample();
    r.target = "/a\"b\\c\nd\x7f\xc3\xa9";
    r.target_len = strlen(r.target);
    r.user_agent = "evil\"\r\n127.0.0.1 - - fake";
    r.user_agent_len = strlen(r.user_agent);
    r.upstream_server = NULL;
    r.num_attempts = 0;
    r.connect_ms = r.upstream_ms = -1;
    r.cause = CAUSE_DESTINATION_NOT_FOUND;
    r.status = 404;
    char line[4096];
    size_t n = observe_format_access(line, sizeof(line), &r, false);
    assert_non_null(strstr(line, "\"GET /a\\x22b\\x5Cc\\x0Ad\\x7F\\xC3\\xA9 HTTP/1.1\" 404 "));
    assert_non_null(strstr(line, "\"evil\\x22\\x0D\\x0A127.0.0.1 - - fake\""));
    assert_non_null(strstr(line, " upstream=- upstream_status=- connect=- header=- "
                                 "upstream_total=- total=1.234 attempts=0 "
                                 "error=destination_not_found "));
    assert_int_equal(strchr(line, '\n') - line, (long)n - 1);
}

static void test_combined_line_is_bounded_and_one_line(void **state)
{
    struct request_record r = sample();
    char target[3000];
    memset(target, '\n', sizeof(target));
    r.target = target;
    r.target_len = sizeof(target);
    char line[512];
    size_t n = observe_format_access(line, sizeof(line), &r, false);
    assert_true(n < sizeof(line));
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(strchr(line, '\n') - line, (long)n - 1);
}

static void test_json_line_has_every_evidence_field(void **state)
{
    struct request_record r = sample();
    r.num_attempts = 2;
    r.attempts[1] = (struct attempt_evidence){"127.0.0.1:9001", CAUSE_CONNECTION_TERMINATED,
                                              ECONNRESET, 3, true};
    r.request_body_bytes = 5;
    char line[8192];
    size_t n = observe_format_access(line, sizeof(line), &r, true);
    assert_int_equal(line[n - 1], '\n');
    assert_int_equal(strchr(line, '\n') - line, (long)n - 1);
    assert_memory_equal(line, "{\"time\":\"", 9);
    static const char *const fields[] = {
        "\"rid\":\"0a00000100000001\"",
        "\"client\":\"192.0.2.7\"",
        "\"method\":\"GET\"",
        "\"target\":\"/x?q=1\"",
        "\"protocol\":\"HTTP/1.1\"",
        "\"host\":\"example.com\"",
        "\"status\":502",
        "\"body_bytes\":98",
        "\"request_body_bytes\":5",
        "\"referer\":null",
        "\"user_agent\":null",
        "\"route\":\"example.com/\"",
        "\"upstream_group\":\"app\"",
        "\"upstream\":\"127.0.0.1:9000\"",
        "\"upstream_status\":null",
        "\"connect\":0.000",
        "\"header\":null",
        "\"upstream_total\":0.001",
        "\"total\":1.234",
        "\"attempts\":2",
        "\"error\":\"connection_refused\"",
        "\"errno_text\":\"Connection refused\"",
        "\"aborted\":false",
        "\"attempt_details\":[{\"server\":\"127.0.0.1:9000\",\"error\":\"connection_refused\"",
        "{\"server\":\"127.0.0.1:9001\",\"error\":\"connection_terminated\"",
        "\"errno_text\":\"Connection reset by peer\",\"connect\":0.003,\"reused\":true}]}\n",
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (!strstr(line, fields[i]))
            print_message("missing %s in %s", fields[i], line);
        assert_non_null(strstr(line, fields[i]));
    }
}

static void test_json_line_escapes_client_strings(void **state)
{
    struct request_record r = sample();
    r.target = "/\"\\\n\x01\xff";
    r.target_len = strlen(r.target);
    char line[8192];
    observe_format_access(line, sizeof(line), &r, true);
    assert_non_null(strstr(line, "\"target\":\"/\\\"\\\\\\u000a\\u0001\\u00ff\""));
}

/* ---- metrics ---- */

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static void assert_metric(const char *text, const char *line)
{
    if (!has_line(text, line))
        print_message("no line \"%s\" in:\n%s", line, text);
    assert_true(has_line(text, line));
}

static void test_metrics_count_requests_attempts_and_pool(void **state)
{
    struct server_stats *st = observe_server("mgroup", "127.0.0.1:7001");
    assert_ptr_equal(st, observe_server("mgroup", "127.0.0.1:7001"));

    struct request_record r = sample();
    r.route = "metrics.test/";
    observe_attempt_start(st);
    observe_attempt_end(st, CAUSE_CONNECTION_REFUSED, ECONNREFUSED, 0, -1, r.rid);
    observe_request(&r);
    observe_request(&r);
    r.status = 200;
    r.cause = CAUSE_NONE;
    observe_attempt_start(st);
    observe_attempt_end(st, CAUSE_NONE, 0, 1, 30, r.rid);
    observe_request(&r);
    r.status = 413;
    r.cause = CAUSE_REQUEST_TOO_LARGE;
    observe_request(&r);
    r.status = 400;
    r.cause = CAUSE_HTTP_REQUEST_ERROR;
    observe_request(&r);
    r.route = "quote\"d\\";
    observe_request(&r);
    observe_pool_acquire(true);
    observe_pool_acquire(false);
    observe_pool_acquire(false);
    observe_pool_acquire(false);
    observe_gauge_add(GAUGE_CLIENT_CONNECTIONS, 3);
    observe_gauge_add(GAUGE_CLIENT_CONNECTIONS, -1);

    size_t len;
    char *text = observe_metrics_text(&len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_metric(text, "# TYPE bulwark_requests_total counter");
    assert_metric(text, "bulwark_requests_total{route=\"metrics.test/\",class=\"5xx\","
                        "cause=\"connection_refused\"} 2");
    assert_metric(text, "bulwark_requests_total{route=\"metrics.test/\",class=\"2xx\","
                        "cause=\"none\"} 1");
    /* 413 and 400 share the RFC 9209 type: one series each class. */
    assert_metric(text, "bulwark_requests_total{route=\"metrics.test/\",class=\"4xx\","
                        "cause=\"http_request_error\"} 2");
    assert_metric(text, "bulwark_requests_total{route=\"quote\\\"d\\\\\",class=\"4xx\","
                        "cause=\"http_request_error\"} 1");
    assert_metric(text, "bulwark_upstream_attempts_total{group=\"mgroup\","
                        "server=\"127.0.0.1:7001\"} 2");
    assert_metric(text, "bulwark_upstream_failures_total{group=\"mgroup\","
                        "server=\"127.0.0.1:7001\",cause=\"connection_refused\"} 1");
    assert_metric(text, "bulwark_upstream_in_flight{group=\"mgroup\",server=\"127.0.0.1:7001\"} 0");
    assert_metric(text, "bulwark_upstream_header_seconds_bucket{group=\"mgroup\",le=\"0.025\"} 0");
    assert_metric(text, "bulwark_upstream_header_seconds_bucket{group=\"mgroup\",le=\"0.05\"} 1");
    assert_metric(text, "bulwark_upstream_header_seconds_bucket{group=\"mgroup\",le=\"+Inf\"} 1");
    assert_metric(text, "bulwark_upstream_header_seconds_sum{group=\"mgroup\"} 0.030");
    assert_metric(text, "bulwark_upstream_header_seconds_count{group=\"mgroup\"} 1");
    assert_metric(text, "bulwark_client_connections 2");
    assert_metric(text, "bulwark_upstream_pool_acquired_total{kind=\"reused\"} 1");
    assert_metric(text, "bulwark_upstream_pool_acquired_total{kind=\"new\"} 3");
    assert_metric(text, "bulwark_upstream_pool_reuse_ratio 0.2500");
    /* Two 502s from a cause went to the error ring. */
    assert_metric(text, "bulwark_gateway_errors_total 2");
    free(text);
}

static void test_metrics_count_retries_by_group_and_cause(void **state)
{
    struct server_stats *a = observe_server("rgroup", "127.0.0.1:7101");
    struct server_stats *b = observe_server("rgroup", "127.0.0.1:7102");
    struct server_stats *other = observe_server("rgroup2", "127.0.0.1:7101");

    observe_retry(a, CAUSE_CONNECTION_REFUSED);
    observe_retry(b, CAUSE_CONNECTION_REFUSED); /* same group: one series */
    observe_retry(a, CAUSE_CONNECTION_TERMINATED);
    observe_retry(other, CAUSE_CONNECTION_TIMEOUT);
    observe_retry(NULL, CAUSE_CONNECTION_TIMEOUT); /* ignored */

    char *text = observe_metrics_text(NULL);
    assert_non_null(text);
    assert_metric(text, "# TYPE bulwark_upstream_retries_total counter");
    assert_metric(
        text, "bulwark_upstream_retries_total{group=\"rgroup\",cause=\"connection_refused\"} 2");
    assert_metric(
        text, "bulwark_upstream_retries_total{group=\"rgroup\",cause=\"connection_terminated\"} 1");
    assert_metric(
        text, "bulwark_upstream_retries_total{group=\"rgroup2\",cause=\"connection_timeout\"} 1");
    /* no series for a cause that never caused a retry */
    assert_null(strstr(text, "{group=\"rgroup2\",cause=\"connection_refused\"}"));
    free(text);
}

static int quiet_access_log(void **state)
{
    return log_open_access(NULL, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_status_with_next_hop),
        cmocka_unit_test(test_proxy_status_without_server),
        cmocka_unit_test(test_proxy_status_escapes_quote_and_backslash),
        cmocka_unit_test(test_proxy_status_drops_non_printable_bytes),
        cmocka_unit_test(test_proxy_status_is_never_cut),
        cmocka_unit_test(test_accept_negotiation),
        cmocka_unit_test(test_json_page),
        cmocka_unit_test(test_json_page_with_details_escaped),
        cmocka_unit_test(test_html_page_is_self_contained_and_escaped),
        cmocka_unit_test(test_text_page),
        cmocka_unit_test(test_page_never_writes_past_cap),
        cmocka_unit_test(test_custom_page_from_config),
        cmocka_unit_test(test_request_id_validation),
        cmocka_unit_test(test_combined_line),
        cmocka_unit_test(test_combined_line_of_a_relayed_response),
        cmocka_unit_test(test_combined_line_escapes_client_strings),
        cmocka_unit_test(test_combined_line_is_bounded_and_one_line),
        cmocka_unit_test(test_json_line_has_every_evidence_field),
        cmocka_unit_test(test_json_line_escapes_client_strings),
        cmocka_unit_test(test_metrics_count_requests_attempts_and_pool),
        cmocka_unit_test(test_metrics_count_retries_by_group_and_cause),
    };
    return cmocka_run_group_tests(tests, quiet_access_log, NULL);
}
