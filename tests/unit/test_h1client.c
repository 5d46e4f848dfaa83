/* Unit tests for upstream's HTTP/1 client against real loopback sockets:
 * each origin is a thread that accepts one connection and follows a script. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "observe/observe.h"
#include "upstream/upstream.h"

/* Every wait in these tests is bounded by this. */
#define TEST_DEADLINE_MS 5000

/* ---- scripted origins ---- */

struct origin {
    int lfd;
    int port;
    pthread_t thread;
    const char *reply;  /* sent once the request header is in; NULL: never answer */
    bool close_after;   /* close after the reply; else hold until the client closes */
    int *gather;        /* when set: wait until this many origins have a request */
    char request[2048]; /* what the client sent */
    size_t request_len;
};

static pthread_mutex_t gather_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gather_cond = PTHREAD_COND_INITIALIZER;
static int gathered;

static int listen_loopback(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, backlog), 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void set_timeout(int fd, int opt)
{
    struct timeval tv = {.tv_sec = TEST_DEADLINE_MS / 1000};
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv));
}

/* Wait (bounded) until *target origins have their request. */
static void gather(int target)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += TEST_DEADLINE_MS / 1000;
    pthread_mutex_lock(&gather_lock);
    gathered++;
    pthread_cond_broadcast(&gather_cond);
    while (gathered < target && pthread_cond_timedwait(&gather_cond, &gather_lock, &until) == 0)
        ;
    pthread_mutex_unlock(&gather_lock);
}

static void *origin_main(void *arg)
{
    struct origin *o = arg;
    set_timeout(o->lfd, SO_RCVTIMEO); /* bounds accept() too */
    int fd = accept(o->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    set_timeout(fd, SO_RCVTIMEO);
    while (o->request_len < sizeof(o->request) - 1 &&
           !memmem(o->request, o->request_len, "\r\n\r\n", 4)) {
        ssize_t n =
            recv(fd, o->request + o->request_len, sizeof(o->request) - 1 - o->request_len, 0);
        if (n <= 0)
            break;
        o->request_len += (size_t)n;
    }
    if (o->gather)
        gather(*o->gather);
    if (o->reply)
        send(fd, o->reply, strlen(o->reply), MSG_NOSIGNAL);
    if (!o->close_after) {
        char scratch[512];
        while (recv(fd, scratch, sizeof(scratch), 0) > 0)
            ; /* hold the connection until the client closes it */
    }
    close(fd);
    return NULL;
}

static void origin_start(struct origin *o, const char *reply, bool close_after)
{
    memset(o, 0, sizeof(*o));
    o->reply = reply;
    o->close_after = close_after;
    o->lfd = listen_loopback(16, &o->port);
    assert_int_equal(pthread_create(&o->thread, NULL, origin_main, o), 0);
}

static void origin_stop(struct origin *o)
{
    pthread_join(o->thread, NULL);
    close(o->lfd);
}

/* A port that takes no connection: its listener's queue (backlog 0) is full
 * with fillers, so a further SYN is dropped and connect() hangs. */
struct blackhole {
    int lfd, port;
    int fillers[8];
    int num_fillers;
};

static bool blackhole_open(struct blackhole *b)
{
    b->lfd = listen_loopback(0, &b->port);
    b->num_fillers = 0;
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)b->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < 8; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fd, (struct sockaddr *)&sin, sizeof(sin));
        fd_set w;
        FD_ZERO(&w);
        FD_SET(fd, &w);
        struct timeval tv = {0, 200 * 1000};
        if (select(fd + 1, NULL, &w, NULL, &tv) == 0) {
            close(fd); /* this one hangs: the queue is full */
            return true;
        }
        b->fillers[b->num_fillers++] = fd;
    }
    return false;
}

static void blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < b->num_fillers; i++)
        close(b->fillers[i]);
    close(b->lfd);
}

/* ---- driving the client ---- */

#define MAX_CLIENTS 8

static struct loop *loop;
static struct h1_client clients[MAX_CLIENTS];
static struct h1_result results[MAX_CLIENTS];
static char bodies[MAX_CLIENTS][H1_MAX_KEPT_BODY + 1];
static int reports[MAX_CLIENTS];
static int num_reports, want_reports;
static struct timer deadline;
static bool deadline_hit;

static void on_done(struct h1_client *c, const struct h1_result *r)
{
    int i = (int)(c - clients);
    results[i] = *r;
    memcpy(bodies[i], r->body, r->body_len);
    bodies[i][r->body_len] = 0;
    results[i].body = bodies[i];
    reports[i]++;
    if (++num_reports >= want_reports)
        loop_stop(loop);
}

static void deadline_fired(struct timer *t)
{
    deadline_hit = true;
    loop_stop(loop);
}

static int setup(void **state)
{
    loop = loop_new();
    assert_non_null(loop);
    for (int i = 0; i < MAX_CLIENTS; i++)
        h1_client_init(&clients[i], loop, on_done);
    memset(results, 0, sizeof(results));
    memset(reports, 0, sizeof(reports));
    num_reports = 0;
    deadline_hit = false;
    gathered = 0;
    timer_init(&deadline, deadline_fired);
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        h1_client_cancel(&clients[i]);
    loop_free(loop);
    return 0;
}

/* Run the loop until n reports arrived (bounded). */
static void run_until(int n)
{
    want_reports = n;
    loop_timer_set(loop, &deadline, TEST_DEADLINE_MS);
    loop_run(loop);
    loop_timer_cancel(loop, &deadline);
    assert_false(deadline_hit);
    assert_int_equal(num_reports, n);
}

static struct h1_request request_to(int port)
{
    struct h1_request req = {
        .connect_timeout_ms = 2000, .response_timeout_ms = 2000, .max_body_kept = 1024};
    char text[64], why[256];
    snprintf(text, sizeof(text), "127.0.0.1:%d", port);
    assert_int_equal(config_parse_addr(text, false, &req.addr, why, sizeof(why)), 0);
    return req;
}

/* Start client i and run it to its report. */
static const struct h1_result *exchange(int i, const struct h1_request *req)
{
    assert_int_equal(h1_client_start(&clients[i], req), 0);
    assert_true(h1_client_busy(&clients[i]));
    assert_int_equal(reports[i], 0); /* never reported from inside the start */
    run_until(num_reports + 1);
    assert_int_equal(reports[i], 1);
    assert_false(h1_client_busy(&clients[i]));
    return &results[i];
}

/* The same with the default request to port. */
static const struct h1_result *exchange_to(int i, int port)
{
    struct h1_request req = request_to(port);
    return exchange(i, &req);
}

/* ---- tests ---- */

static void test_content_length_response_ends_without_waiting_for_close(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false);
    struct h1_request req = request_to(o.port);
    req.path = "/health";
    req.host = "app.example";
    req.headers = "X-Check: 1\r\n";
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "hello");
    assert_int_equal(r->body_bytes, 5);
    assert_true(r->connect_ms >= 0 && r->total_ms >= r->connect_ms);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_NONE);
    o.request[o.request_len] = 0;
    assert_string_equal(o.request, "GET /health HTTP/1.1\r\nHost: app.example\r\n"
                                   "Connection: close\r\nX-Check: 1\r\n\r\n");
}

static void test_keep_alive_request_says_so(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 204 No Content\r\n\r\n", false);
    struct h1_request req = request_to(o.port);
    req.method = "HEAD";
    req.keep_alive = true;
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 204);
    o.request[o.request_len] = 0;
    assert_non_null(strstr(o.request, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1:"));
    assert_non_null(strstr(o.request, "\r\nConnection: keep-alive\r\n"));
}

static void test_head_response_has_no_body_whatever_its_length(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
    struct h1_request req = request_to(o.port);
    req.method = "HEAD";
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body_bytes, 0);
}

static void test_chunked_body_is_decoded(void **state)
{
    struct origin o;
    origin_start(&o,
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                 false);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_string_equal(r->body, "hello world");
    assert_int_equal(r->body_bytes, 11);
}

static void test_close_delimited_body_ends_at_the_close(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\n\r\nuntil close", true);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "until close");
}

static void test_body_beyond_max_body_kept_is_counted_and_dropped(void **state)
{
    static char reply[256];
    snprintf(reply, sizeof(reply), "HTTP/1.1 503 Busy\r\nContent-Length: 100\r\n\r\n%0100d", 7);
    struct origin o;
    origin_start(&o, reply, false);
    struct h1_request req = request_to(o.port);
    req.max_body_kept = 10;
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 503);
    assert_int_equal(r->body_len, 10);
    assert_int_equal(r->body_bytes, 100);
    assert_string_equal(r->body, "0000000000");
}

static void test_interim_responses_are_skipped(void **state)
{
    struct origin o;
    origin_start(&o,
                 "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 false);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ok");
}

static void test_connection_refused_is_reported_from_the_loop(void **state)
{
    int port;
    close(listen_loopback(1, &port)); /* nothing listens there any more */
    const struct h1_result *r = exchange_to(0, port);
    assert_int_equal(r->failure, H1_CONNECT_FAILED);
    assert_int_equal(r->err, ECONNREFUSED);
    assert_int_equal(r->connect_ms, -1);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_CONNECTION_REFUSED);
}

static void test_connect_to_a_port_that_never_answers_times_out(void **state)
{
    struct blackhole b;
    if (!blackhole_open(&b)) {
        blackhole_close(&b);
        skip();
    }
    struct h1_request req = request_to(b.port);
    req.connect_timeout_ms = 200;
    const struct h1_result *r = exchange(0, &req);
    blackhole_close(&b);
    assert_int_equal(r->failure, H1_CONNECT_TIMEOUT);
    assert_int_equal(r->err, ETIMEDOUT);
    assert_true(r->total_ms >= 190 && r->total_ms < 3000);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_CONNECTION_TIMEOUT);
}

static void test_server_that_never_answers_is_a_response_timeout(void **state)
{
    struct origin o;
    origin_start(&o, NULL, false);
    struct h1_request req = request_to(o.port);
    req.response_timeout_ms = 200;
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o); /* returns: the client closed */
    assert_int_equal(r->failure, H1_RESPONSE_TIMEOUT);
    assert_int_equal(r->status, 0);
    assert_true(r->connect_ms >= 0);
    assert_true(r->total_ms >= 190 && r->total_ms < 3000);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_HTTP_RESPONSE_TIMEOUT);
}

static void test_body_that_stalls_is_a_read_timeout(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", false);
    struct h1_request req = request_to(o.port);
    req.response_timeout_ms = 200;
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_READ_TIMEOUT);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "half");
}

static void test_malformed_status_line_is_a_protocol_error(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", false);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_PROTOCOL_ERROR);
    assert_int_not_equal(r->http_err, HTTP_OK);
    assert_int_equal(r->status, 0);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_HTTP_PROTOCOL_ERROR);
}

static void test_malformed_chunk_is_a_protocol_error(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_PROTOCOL_ERROR);
    assert_int_equal(r->http_err, HTTP_ERR_BAD_CHUNK);
}

static void test_close_mid_header_is_connection_terminated(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Le", true);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_CLOSED);
    assert_int_equal(r->status, 0);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_CONNECTION_TERMINATED);
}

static void test_close_mid_body_is_an_incomplete_response(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", true);
    const struct h1_result *r = exchange_to(0, o.port);
    origin_stop(&o);
    assert_int_equal(r->failure, H1_BODY_INCOMPLETE);
    assert_int_equal(r->status, 200);
    assert_int_equal(observe_cause_from_h1(r), CAUSE_HTTP_RESPONSE_INCOMPLETE);
}

static void test_connect_only_sends_nothing(void **state)
{
    struct origin o;
    origin_start(&o, NULL, false);
    struct h1_request req = request_to(o.port);
    req.connect_only = true;
    const struct h1_result *r = exchange(0, &req);
    origin_stop(&o); /* returns when the client closed */
    assert_int_equal(r->failure, H1_OK);
    assert_int_equal(r->status, 0);
    assert_true(r->connect_ms >= 0);
    assert_int_equal(o.request_len, 0);
}

static void test_exchanges_run_at_once_on_one_loop(void **state)
{
    /* Each origin answers only once all have a request: run one at a time,
     * the first would wait for the others until its deadline. */
    enum { N = 4 };
    static int target = N;
    struct origin o[N];
    for (int i = 0; i < N; i++) {
        memset(&o[i], 0, sizeof(o[i]));
        o[i].reply = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nall";
        o[i].gather = &target;
        o[i].lfd = listen_loopback(4, &o[i].port);
        assert_int_equal(pthread_create(&o[i].thread, NULL, origin_main, &o[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        struct h1_request req = request_to(o[i].port);
        assert_int_equal(h1_client_start(&clients[i], &req), 0);
    }
    run_until(N);
    for (int i = 0; i < N; i++) {
        origin_stop(&o[i]);
        assert_int_equal(results[i].failure, H1_OK);
        assert_string_equal(results[i].body, "all");
    }
    assert_int_equal(gathered, N);
}

static void test_cancelled_exchange_reports_nothing(void **state)
{
    struct origin silent, ok;
    origin_start(&silent, NULL, false);
    origin_start(&ok, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    struct h1_request req = request_to(silent.port);
    assert_int_equal(h1_client_start(&clients[0], &req), 0);
    req = request_to(ok.port);
    assert_int_equal(h1_client_start(&clients[1], &req), 0);
    h1_client_cancel(&clients[0]);
    h1_client_cancel(&clients[0]); /* twice is harmless */
    assert_false(h1_client_busy(&clients[0]));
    run_until(1);
    origin_stop(&silent); /* returns: the cancel closed the connection */
    origin_stop(&ok);
    assert_int_equal(reports[0], 0);
    assert_int_equal(reports[1], 1);
    assert_int_equal(results[1].status, 200);
}

static void test_start_while_running_is_refused(void **state)
{
    struct origin o;
    origin_start(&o, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    struct h1_request req = request_to(o.port);
    assert_int_equal(h1_client_start(&clients[0], &req), 0);
    assert_int_equal(h1_client_start(&clients[0], &req), -EBUSY);
    run_until(1);
    origin_stop(&o);
    assert_int_equal(reports[0], 1);
    assert_int_equal(results[0].failure, H1_OK);
}

/* on_done may start the same client again: a check that repeats. */
static struct h1_request again_req;
static int again_count;
static void start_again(struct h1_client *c, const struct h1_result *r)
{
    again_count++;
    if (again_count == 1)
        assert_int_equal(h1_client_start(c, &again_req), 0);
    else
        loop_stop(loop);
}

static void test_client_can_start_again_from_its_callback(void **state)
{
    int port;
    close(listen_loopback(1, &port));
    again_req = request_to(port);
    again_count = 0;
    h1_client_init(&clients[0], loop, start_again);
    assert_int_equal(h1_client_start(&clients[0], &again_req), 0);
    loop_timer_set(loop, &deadline, TEST_DEADLINE_MS);
    loop_run(loop);
    assert_false(deadline_hit);
    assert_int_equal(again_count, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_content_length_response_ends_without_waiting_for_close,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_request_says_so, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_response_has_no_body_whatever_its_length, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_is_decoded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_delimited_body_ends_at_the_close, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_body_beyond_max_body_kept_is_counted_and_dropped,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_responses_are_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused_is_reported_from_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_to_a_port_that_never_answers_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_server_that_never_answers_is_a_response_timeout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_body_that_stalls_is_a_read_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_status_line_is_a_protocol_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_chunk_is_a_protocol_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_header_is_connection_terminated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_body_is_an_incomplete_response, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_connect_only_sends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exchanges_run_at_once_on_one_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_exchange_reports_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_while_running_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_can_start_again_from_its_callback, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
