/* Unit tests for src/limit/store_redis.c against a real redis-server started
 * here (Debian's redis-server): GCRA verdicts at the burst boundary, checks
 * pipelined in one write, long keys kept distinct, cancellation, Redis down
 * at start, Redis stopped (SIGSTOP) mid-way and back, URL parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "limit/store.h"

#define MAX_ANSWERS 64

struct probe {
    struct store_waiter w;
    bool answered;
    enum store_verdict v;
    uint64_t wait_us;
};

static struct loop *loop;
static struct probe probes[MAX_ANSWERS];
static int expected, answered;
static struct timer guard;

static void on_answer(struct store_waiter *w, enum store_verdict v, uint64_t wait_us)
{
    struct probe *p = container_of(w, struct probe, w);
    assert_false(p->answered);
    p->answered = true;
    p->v = v;
    p->wait_us = wait_us;
    if (++answered >= expected)
        loop_stop(loop);
}

static void on_guard(struct timer *t)
{
    (void)t;
    loop_stop(loop);
}

/* Run the loop until n answers came or ms passed. */
static void run_until(int n, uint64_t ms)
{
    expected = n;
    if (answered >= expected)
        return;
    loop_timer_set(loop, &guard, ms);
    loop_run(loop);
    loop_timer_cancel(loop, &guard);
}

static void reset_probes(void)
{
    memset(probes, 0, sizeof(probes));
    for (int i = 0; i < MAX_ANSWERS; i++)
        probes[i].w.cb = on_answer;
    answered = 0;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_answers(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static pid_t start_redis(int port)
{
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        dup2(devnull, 1);
        execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    /* Ready when it accepts a connection (10 s is generous on a busy machine). */
    for (int i = 0; i < 1000 && !port_answers(port); i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_true(port_answers(port));
    return pid;
}

static void stop_redis(pid_t pid)
{
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static struct config_addr addr_of(int port)
{
    char url[64], err[256];
    struct config_addr a;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    assert_int_equal(store_parse_url(url, &a, err, sizeof(err)), 0);
    return a;
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    loop = loop_new();
    assert_non_null(loop);
    timer_init(&guard, on_guard);
    reset_probes();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    loop_free(loop);
    return 0;
}

static void test_gcra_allows_the_burst_then_refuses_with_the_wait(void **state)
{
    (void)state;
    int port = free_port();
    pid_t redis = start_redis(port);
    struct config_addr a = addr_of(port);
    struct store *st = store_new(loop, &a, 2000);
    /* 1 per second, burst 2: three pass at once, the fourth waits ~1 s.
     * All five are asked in one loop turn: one pipelined write. */
    const uint64_t t = 1000000, tau = 2 * t;
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_gcra(st, "k1", 2, t, tau, &probes[i].w), 0);
    assert_int_equal(store_gcra(st, "other", 5, t, tau, &probes[4].w), 0);
    run_until(5, 10000);
    assert_int_equal(answered, 5);
    for (int i = 0; i < 3; i++)
        assert_int_equal(probes[i].v, STORE_ALLOW);
    /* ahead-of-rate grows by one interval per allowed request */
    assert_true(probes[0].wait_us < t / 2);
    assert_true(probes[2].wait_us > t && probes[2].wait_us <= 2 * t);
    assert_int_equal(probes[3].v, STORE_REFUSE);
    assert_true(probes[3].wait_us > 0 && probes[3].wait_us <= t);
    assert_int_equal(probes[4].v, STORE_ALLOW); /* another key, its own budget */
    assert_true(store_up(st));
    store_free(st);
    stop_redis(redis);
}

static void test_long_keys_stay_distinct(void **state)
{
    (void)state;
    int port = free_port();
    pid_t redis = start_redis(port);
    struct config_addr a = addr_of(port);
    struct store *st = store_new(loop, &a, 2000);
    char k1[600], k2[600];
    memset(k1, 'x', sizeof(k1));
    memcpy(k2, k1, sizeof(k2));
    k2[599] = 'y';               /* differs only past the stored prefix */
    const uint64_t t = 10000000; /* 1 per 10 s, no burst */
    assert_int_equal(store_gcra(st, k1, sizeof(k1), t, 0, &probes[0].w), 0);
    assert_int_equal(store_gcra(st, k2, sizeof(k2), t, 0, &probes[1].w), 0);
    assert_int_equal(store_gcra(st, k1, sizeof(k1), t, 0, &probes[2].w), 0);
    run_until(3, 10000);
    assert_int_equal(probes[0].v, STORE_ALLOW);
    assert_int_equal(probes[1].v, STORE_ALLOW);
    assert_int_equal(probes[2].v, STORE_REFUSE);
    store_free(st);
    stop_redis(redis);
}

static void test_cancelled_check_gets_no_callback(void **state)
{
    (void)state;
    int port = free_port();
    pid_t redis = start_redis(port);
    struct config_addr a = addr_of(port);
    struct store *st = store_new(loop, &a, 2000);
    assert_int_equal(store_gcra(st, "c", 1, 1000, 0, &probes[0].w), 0);
    assert_int_equal(store_gcra(st, "c", 1, 1000, 0, &probes[1].w), 0);
    assert_true(store_busy(st));
    store_cancel(st, &probes[0].w);
    assert_true(store_busy(st)); /* probes[1] still waits */
    run_until(1, 10000);
    assert_false(probes[0].answered);
    assert_true(probes[1].answered);
    assert_false(store_busy(st)); /* no callback left to run: it may be freed */
    store_free(st);
    stop_redis(redis);
}

static void test_redis_down_means_local_at_once(void **state)
{
    (void)state;
    int port = free_port(); /* nothing listens there */
    struct config_addr a = addr_of(port);
    struct store *st = store_new(loop, &a, 2000);
    struct store_stats before, after;
    store_stats(&before);
    int rc = store_gcra(st, "d", 1, 1000, 0, &probes[0].w);
    if (rc == 0) {
        run_until(1, 10000);
        assert_true(probes[0].answered);
        assert_int_equal(probes[0].v, STORE_UNAVAILABLE);
    } else {
        assert_int_equal(rc, -EAGAIN);
    }
    /* Within the retry interval no new connection is tried: local at once. */
    assert_int_equal(store_gcra(st, "d", 1, 1000, 0, &probes[1].w), -EAGAIN);
    assert_false(store_up(st));
    store_stats(&after);
    assert_true(after.fallbacks >= before.fallbacks + 2);
    store_free(st);
}

static void test_stopped_redis_times_out_then_comes_back(void **state)
{
    (void)state;
    int port = free_port();
    pid_t redis = start_redis(port);
    struct config_addr a = addr_of(port);
    struct store *st = store_new(loop, &a, 200);
    assert_int_equal(store_gcra(st, "s", 1, 1000, 1000000, &probes[0].w), 0);
    run_until(1, 10000);
    assert_int_equal(probes[0].v, STORE_ALLOW);

    kill(redis, SIGSTOP);
    assert_int_equal(store_gcra(st, "s", 1, 1000, 1000000, &probes[1].w), 0);
    uint64_t t0 = loop_update_time(loop);
    run_until(2, 10000);
    assert_int_equal(probes[1].v, STORE_UNAVAILABLE);
    assert_true(loop_update_time(loop) - t0 < 5000); /* the timeout, not the guard */
    assert_false(store_up(st));

    kill(redis, SIGCONT);
    /* Once the retry interval has passed, a new connection is made and the
     * shared budget is back. */
    bool back = false;
    for (int i = 2; i < MAX_ANSWERS && !back; i++) {
        struct timer wait;
        timer_init(&wait, on_guard);
        loop_timer_set(loop, &wait, 300);
        loop_run(loop);
        if (store_gcra(st, "s", 1, 1000, 1000000, &probes[i].w) == 0) {
            run_until(answered + 1, 10000);
            back = probes[i].v == STORE_ALLOW;
        }
    }
    assert_true(back);
    assert_true(store_up(st));
    store_free(st);
    stop_redis(redis);
}

static void test_url_parsing(void **state)
{
    (void)state;
    struct config_addr a;
    char err[256];
    assert_int_equal(store_parse_url("redis://127.0.0.1:6380", &a, err, sizeof(err)), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 6380);
    assert_int_equal(store_parse_url("redis://127.0.0.1", &a, err, sizeof(err)), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 6379);
    assert_int_equal(store_parse_url("redis://[::1]:7000", &a, err, sizeof(err)), 0);
    assert_int_equal(a.ss.ss_family, AF_INET6);
    assert_int_equal(store_parse_url("http://127.0.0.1:6379", &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redis://host:port"));
    assert_int_equal(store_parse_url("redis://127.0.0.1:0", &a, err, sizeof(err)), -1);
    assert_int_equal(store_parse_url("redis://127.0.0.1:99999", &a, err, sizeof(err)), -1);
    assert_int_equal(store_parse_url("redis://:6379", &a, err, sizeof(err)), -1);
    assert_int_equal(store_parse_url("redis://user@127.0.0.1:6379", &a, err, sizeof(err)), -1);
    assert_int_equal(store_parse_url("redis://[::1", &a, err, sizeof(err)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gcra_allows_the_burst_then_refuses_with_the_wait,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_keys_stay_distinct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_check_gets_no_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_means_local_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_redis_times_out_then_comes_back, setup,
                                        teardown),
        cmocka_unit_test(test_url_parsing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
