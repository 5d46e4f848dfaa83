/* Unit tests for src/upstream: balancers (no sockets needed to pick), the
 * shared per-server records, and the keep-alive pool rules (on real
 * loopback sockets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upstream/upstream.h"

static struct config *load(const char *yaml)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("test.yaml", yaml, strlen(yaml), &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.items[i].text);
    config_errors_free(&errs);
    assert_non_null(cfg);
    return cfg;
}

static struct upstream_set *set_for(struct loop *loop, const char *yaml)
{
    struct config *cfg = load(yaml);
    struct upstream_set *set = upstream_set_new(loop, cfg);
    config_unref(cfg); /* the set holds its own reference */
    assert_non_null(set);
    return set;
}

#define GROUP(servers, extra)                                                                      \
    "listen: [\"127.0.0.1:1\"]\nupstreams:\n  app:\n    servers: " servers "\n" extra              \
    "routes:\n  - upstream: app\n"

static void test_round_robin_is_smooth_and_weighted(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set = set_for(
        loop,
        GROUP("[{address: \"127.0.0.1:10\", weight: 5}, \"127.0.0.1:11\", \"127.0.0.1:12\"]", ""));
    struct upstream_group *g = &set->groups[0];
    /* smooth weighted round robin spreads the heavy server out: a a b a c a a */
    const size_t expected[] = {0, 0, 1, 0, 2, 0, 0};
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < 7; i++)
            assert_int_equal(upstream_pick(g, 0, 0)->index, expected[i]);
    upstream_set_retire(set);
    loop_free(loop);
}

static void test_tried_servers_are_skipped_until_all_were_tried(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[\"127.0.0.1:10\", \"127.0.0.1:11\", \"127.0.0.1:12\"]", ""));
    struct upstream_group *g = &set->groups[0];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(upstream_pick(g, 0, 0x1 | 0x4)->index, 1);
        assert_int_not_equal(upstream_pick(g, 0, 0x2)->index, 1);
    }
    /* every server tried: start over instead of failing the request */
    assert_non_null(upstream_pick(g, 0, 0x7));
    upstream_set_retire(set);
    loop_free(loop);
}

static void test_least_conn_prefers_the_fewest_in_flight(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[\"127.0.0.1:10\", \"127.0.0.1:11\", \"127.0.0.1:12\"]",
                            "    balance: least_conn\n"));
    struct upstream_group *g = &set->groups[0];
    /* least_conn reads the in-flight count of all workers: the shared one */
    atomic_store(&g->servers[0].shared->in_flight, 5);
    atomic_store(&g->servers[1].shared->in_flight, 1);
    atomic_store(&g->servers[2].shared->in_flight, 3);
    for (int i = 0; i < 10; i++)
        assert_int_equal(upstream_pick(g, 0, 0)->index, 1);
    /* ties are shared, not always the first */
    for (size_t i = 0; i < 3; i++)
        atomic_store(&g->servers[i].shared->in_flight, 0);
    int seen[3] = {0};
    for (int i = 0; i < 30; i++)
        seen[upstream_pick(g, 0, 0)->index]++;
    assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    upstream_set_retire(set);
    loop_free(loop);
}

/* Rendezvous hashing: adding a server moves only the keys that go to it. */
static void test_hash_keeps_keys_when_a_server_is_added(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *three =
        set_for(loop, GROUP("[\"127.0.0.1:10\", \"127.0.0.1:11\", \"127.0.0.1:12\"]",
                            "    balance: hash\n    hash_key: uri\n"));
    struct upstream_set *four = set_for(
        loop, GROUP("[\"127.0.0.1:10\", \"127.0.0.1:11\", \"127.0.0.1:12\", \"127.0.0.1:13\"]",
                    "    balance: hash\n    hash_key: uri\n"));
    int moved = 0, counts[4] = {0};
    for (int k = 0; k < 4000; k++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "/item/%d", k);
        uint64_t h = upstream_hash(key, (size_t)n);
        size_t a = upstream_pick(&three->groups[0], h, 0)->index;
        size_t b = upstream_pick(&four->groups[0], h, 0)->index;
        assert_int_equal(upstream_pick(&three->groups[0], h, 0)->index, a); /* stable */
        counts[b]++;
        if (a != b) {
            assert_int_equal(b, 3); /* a key only ever moves to the new server */
            moved++;
        }
    }
    /* about a quarter of the keys move; every server gets its share */
    assert_true(moved > 700 && moved < 1300);
    for (int i = 0; i < 4; i++)
        assert_true(counts[i] > 700 && counts[i] < 1300);
    upstream_set_retire(three);
    upstream_set_retire(four);
    loop_free(loop);
}

static void test_hash_respects_weights(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[{address: \"127.0.0.1:10\", weight: 3}, \"127.0.0.1:11\"]",
                            "    balance: hash\n"));
    int counts[2] = {0};
    for (int k = 0; k < 4000; k++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "user-%d", k);
        counts[upstream_pick(&set->groups[0], upstream_hash(key, (size_t)n), 0)->index]++;
    }
    /* 3:1 within a few percent */
    assert_true(counts[0] > 2800 && counts[0] < 3200);
    upstream_set_retire(set);
    loop_free(loop);
}

/* ---- shared per-server state ---- */

static void test_shared_record_is_one_per_group_and_server(void **state)
{
    (void)state;
    struct upstream_shared *a = upstream_shared_get("g1", "127.0.0.1:1");
    assert_non_null(a);
    assert_ptr_equal(upstream_shared_get("g1", "127.0.0.1:1"), a);
    assert_ptr_not_equal(upstream_shared_get("g2", "127.0.0.1:1"), a);
    assert_ptr_not_equal(upstream_shared_get("g1", "127.0.0.1:2"), a);
    assert_string_equal(a->group, "g1");
    assert_string_equal(a->server, "127.0.0.1:1");
    assert_true(atomic_load(&a->up)); /* up by default */
    assert_int_equal(atomic_load(&a->in_flight), 0);
    assert_int_equal(atomic_load(&a->changed_ms), 0);
    assert_null(upstream_shared_get(NULL, "x"));
}

/* Two workers' sets and a reload's set share the record of a server. */
static void test_workers_and_reloads_share_the_server_record(void **state)
{
    (void)state;
    const char *yaml = GROUP("[\"127.0.0.1:40\", \"127.0.0.1:41\"]", "");
    struct loop *l1 = loop_new(), *l2 = loop_new();
    struct upstream_set *w1 = set_for(l1, yaml), *w2 = set_for(l2, yaml);
    struct upstream_shared *sh = w1->groups[0].servers[1].shared;
    assert_ptr_equal(w2->groups[0].servers[1].shared, sh);
    assert_ptr_not_equal(w1->groups[0].servers[0].shared, sh);
    upstream_shared_set_up(sh, false, 3);
    upstream_set_retire(w1);
    struct upstream_set *reloaded =
        set_for(l1, GROUP("[\"127.0.0.1:41\", \"127.0.0.1:42\"]", "    retries: 1\n"));
    /* the server moved to index 0 in the new config: same record, still down */
    assert_ptr_equal(reloaded->groups[0].servers[0].shared, sh);
    assert_false(atomic_load(&reloaded->groups[0].servers[0].shared->up));
    upstream_shared_set_up(sh, true, 0);
    upstream_set_retire(w2);
    upstream_set_retire(reloaded);
    loop_free(l1);
    loop_free(l2);
}

static void test_set_up_records_when_and_why(void **state)
{
    (void)state;
    struct upstream_shared *sh = upstream_shared_get("g-state", "127.0.0.1:1");
    upstream_shared_set_up(sh, false, 7);
    int64_t t = atomic_load(&sh->changed_ms);
    assert_true(t > 1700000000000ll); /* wall clock in ms */
    assert_int_equal(atomic_load(&sh->change_cause), 7);
    assert_false(atomic_load(&sh->up));
    upstream_shared_set_up(sh, false, 9); /* no change: nothing recorded */
    assert_int_equal(atomic_load(&sh->change_cause), 7);
    upstream_shared_set_up(sh, true, 0);
    assert_true(atomic_load(&sh->up));
    assert_int_equal(atomic_load(&sh->change_cause), 0);
}

struct seen {
    int count;
    bool found;
};

static void count_record(const struct upstream_shared *sh, void *arg)
{
    struct seen *seen = arg;
    seen->count++;
    if (strcmp(sh->group, "g-each") == 0 && strcmp(sh->server, "127.0.0.1:5") == 0)
        seen->found = true;
}

static void test_foreach_visits_every_record(void **state)
{
    (void)state;
    struct seen before = {0}, after = {0};
    upstream_shared_foreach(count_record, &before);
    assert_false(before.found);
    upstream_shared_get("g-each", "127.0.0.1:5");
    upstream_shared_foreach(count_record, &after);
    assert_true(after.found);
    assert_int_equal(after.count, before.count + 1);
}

static void test_down_servers_are_skipped_while_one_is_up(void **state)
{
    (void)state;
    const char *const balances[] = {"", "    balance: least_conn\n", "    balance: hash\n"};
    for (size_t b = 0; b < 3; b++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 GROUP("[\"127.0.0.1:50\", \"127.0.0.1:51\", \"127.0.0.1:52\"]", "%s"),
                 balances[b]);
        struct loop *loop = loop_new();
        struct upstream_set *set = set_for(loop, yaml);
        struct upstream_group *g = &set->groups[0];
        upstream_shared_set_up(g->servers[0].shared, false, 1);
        upstream_shared_set_up(g->servers[2].shared, false, 1);
        for (uint64_t h = 0; h < 20; h++)
            assert_int_equal(upstream_pick(g, h * 7919, 0)->index, 1);
        /* the only up server was tried: it is tried again, not a down one */
        assert_int_equal(upstream_pick(g, 0, 0x2)->index, 1);
        /* all down: nothing to pick (the caller answers 503 at once) */
        upstream_shared_set_up(g->servers[1].shared, false, 1);
        assert_false(upstream_group_any_up(g));
        for (uint64_t h = 0; h < 20; h++)
            assert_null(upstream_pick(g, h * 7919, 0x1));
        for (size_t i = 0; i < 3; i++)
            upstream_shared_set_up(g->servers[i].shared, true, 0);
        upstream_set_retire(set);
        loop_free(loop);
    }
}

/* panic_mode: with every server down, the marks are ignored (a guess at a
 * server beats a sure 503); tried servers are still skipped. */
static void test_panic_mode_picks_among_all_when_all_are_down(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[\"127.0.0.1:53\", \"127.0.0.1:54\", \"127.0.0.1:55\"]",
                            "    panic_mode: true\n"));
    struct upstream_group *g = &set->groups[0];
    for (size_t i = 0; i < 3; i++)
        upstream_shared_set_up(g->servers[i].shared, false, 1);
    int seen[3] = {0};
    for (int i = 0; i < 30; i++)
        seen[upstream_pick(g, 0, 0x1)->index]++;
    assert_int_equal(seen[0], 0);
    assert_true(seen[1] > 0 && seen[2] > 0);
    /* one back up: only it again */
    upstream_shared_set_up(g->servers[0].shared, true, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(upstream_pick(g, 0, 0)->index, 0);
    for (size_t i = 0; i < 3; i++)
        upstream_shared_set_up(g->servers[i].shared, true, 0);
    upstream_set_retire(set);
    loop_free(loop);
}

/* Backups follow the primaries in servers and are picked only while every
 * primary is down; the first primary back takes the traffic again. */
static void test_backups_serve_only_while_every_primary_is_down(void **state)
{
    (void)state;
    const char *const balances[] = {"", "    balance: least_conn\n", "    balance: hash\n"};
    for (size_t b = 0; b < 3; b++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 GROUP("[\"127.0.0.1:60\", \"127.0.0.1:61\"]",
                       "    backup: [\"127.0.0.1:62\", \"127.0.0.1:63\"]\n%s"),
                 balances[b]);
        struct loop *loop = loop_new();
        struct upstream_set *set = set_for(loop, yaml);
        struct upstream_group *g = &set->groups[0];
        assert_int_equal(g->num_servers, 4);
        assert_int_equal(g->cfg->num_backup, 2);
        assert_false(g->cfg->servers[1].backup);
        assert_true(g->cfg->servers[2].backup);
        for (uint64_t h = 0; h < 40; h++)
            assert_true(upstream_pick(g, h * 7919, 0)->index < 2);
        /* a tried primary is tried again rather than a backup */
        upstream_shared_set_up(g->servers[0].shared, false, 1);
        assert_int_equal(upstream_pick(g, 0, 0x2)->index, 1);
        upstream_shared_set_up(g->servers[1].shared, false, 1);
        int seen[4] = {0};
        for (uint64_t h = 0; h < 40; h++)
            seen[upstream_pick(g, h * 7919, 0)->index]++;
        assert_int_equal(seen[0] + seen[1], 0);
        assert_true(seen[2] > 0 && seen[3] > 0);
        /* backups down too: nothing */
        upstream_shared_set_up(g->servers[2].shared, false, 1);
        upstream_shared_set_up(g->servers[3].shared, false, 1);
        assert_null(upstream_pick(g, 0, 0));
        /* one backup back: it serves; then a primary back: it takes over */
        upstream_shared_set_up(g->servers[3].shared, true, 0);
        assert_int_equal(upstream_pick(g, 0, 0)->index, 3);
        upstream_shared_set_up(g->servers[1].shared, true, 0);
        for (uint64_t h = 0; h < 20; h++)
            assert_int_equal(upstream_pick(g, h * 7919, 0)->index, 1);
        for (size_t i = 0; i < 4; i++) {
            upstream_shared_set_up(g->servers[i].shared, true, 0);
            atomic_store(&g->servers[i].shared->up_since_ms, 0);
        }
        upstream_set_retire(set);
        loop_free(loop);
    }
}

/* ---- health checks: the state machine ---- */

static void test_health_goes_down_after_fails_failures_in_a_row(void **state)
{
    (void)state;
    struct upstream_shared *sh = upstream_shared_get("g-health", "127.0.0.1:1");
    /* two failures, a pass: the count starts again */
    assert_false(upstream_health_record(sh, false, 3, 2, 1, 0));
    assert_false(upstream_health_record(sh, false, 3, 2, 1, 0));
    assert_int_equal(atomic_load(&sh->consecutive_failures), 2);
    assert_false(upstream_health_record(sh, true, 3, 2, 0, 0));
    assert_int_equal(atomic_load(&sh->consecutive_failures), 0);
    assert_true(atomic_load(&sh->up));
    assert_false(upstream_health_record(sh, false, 3, 2, 1, 0));
    assert_false(upstream_health_record(sh, false, 3, 2, 1, 0));
    assert_true(atomic_load(&sh->up));
    /* the third in a row: down, with the last failure's cause */
    assert_true(upstream_health_record(sh, false, 3, 2, 0, 503));
    assert_false(atomic_load(&sh->up));
    assert_int_equal(atomic_load(&sh->change_status), 503);
    assert_int_equal(atomic_load(&sh->change_cause), 0);
    /* more failures: no new change */
    assert_false(upstream_health_record(sh, false, 3, 2, 4, 0));
    assert_int_equal(atomic_load(&sh->change_status), 503);
    upstream_shared_set_up(sh, true, 0);
}

static void test_health_comes_back_after_passes_passes_in_a_row(void **state)
{
    (void)state;
    struct upstream_shared *sh = upstream_shared_get("g-health", "127.0.0.1:2");
    assert_true(upstream_health_record(sh, false, 1, 3, 1, 0));
    assert_false(atomic_load(&sh->up));
    assert_int_equal(atomic_load(&sh->change_cause), 1);
    assert_false(upstream_health_record(sh, true, 1, 3, 0, 0));
    assert_false(upstream_health_record(sh, true, 1, 3, 0, 0));
    /* a failure between: the passes start again */
    assert_false(upstream_health_record(sh, false, 1, 3, 1, 0));
    assert_int_equal(atomic_load(&sh->consecutive_passes), 0);
    assert_false(upstream_health_record(sh, true, 1, 3, 0, 0));
    assert_false(upstream_health_record(sh, true, 1, 3, 0, 0));
    assert_false(atomic_load(&sh->up));
    uint64_t before = (uint64_t)atomic_load(&sh->up_since_ms);
    assert_true(upstream_health_record(sh, true, 1, 3, 0, 0));
    assert_true(atomic_load(&sh->up));
    assert_int_equal(atomic_load(&sh->change_cause), 0);
    assert_int_equal(atomic_load(&sh->change_status), 0);
    /* coming back starts the slow start clock */
    assert_true(atomic_load(&sh->up_since_ms) > before);
    assert_int_equal(atomic_load(&sh->consecutive_failures), 0);
}

/* ---- slow start ---- */

static void test_slow_start_weight_ramps_linearly(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[{address: \"127.0.0.1:70\", weight: 4}, \"127.0.0.1:71\"]",
                            "    slow_start: 10s\n"));
    struct upstream_server *s = &set->groups[0].servers[0];
    /* up from the start: full weight, in hundredths */
    assert_int_equal(upstream_weight_now(s, 123456), 400);
    atomic_store(&s->shared->up_since_ms, 1000000);
    assert_int_equal(upstream_weight_now(s, 1000000), 1); /* ~0, never 0 */
    assert_int_equal(upstream_weight_now(s, 999000), 1);  /* a clock a little behind */
    assert_int_equal(upstream_weight_now(s, 1002500), 100);
    assert_int_equal(upstream_weight_now(s, 1005000), 200);
    assert_int_equal(upstream_weight_now(s, 1009000), 360);
    assert_int_equal(upstream_weight_now(s, 1010000), 400);
    assert_int_equal(upstream_weight_now(s, 9000000), 400);
    atomic_store(&s->shared->up_since_ms, 0);
    upstream_set_retire(set);
    loop_free(loop);
}

static void test_slow_start_off_keeps_full_weight(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set = set_for(loop, GROUP("[\"127.0.0.1:72\"]", ""));
    struct upstream_server *s = &set->groups[0].servers[0];
    atomic_store(&s->shared->up_since_ms, 1000000);
    assert_int_equal(upstream_weight_now(s, 1000001), 100);
    atomic_store(&s->shared->up_since_ms, 0);
    upstream_set_retire(set);
    loop_free(loop);
}

/* How many of n picks go to server 0 of g, which came back ago_ms ago. */
static int share_of_first(struct upstream_group *g, uint64_t ago_ms, int n)
{
    uint64_t now = loop_now_ms(g->set->loop);
    atomic_store(&g->servers[0].shared->up_since_ms, now - ago_ms);
    int count = 0;
    for (int i = 0; i < n; i++)
        count += upstream_pick(g, 0, 0)->index == 0;
    return count;
}

/* Two servers of equal weight, one back for 10%, 50%, 100% of slow_start.
 * round_robin gives it its weight now: 0.1/1.1, 0.5/1.5, then half of the
 * picks. least_conn lets it compete in 10%, 50%, all picks, and it wins
 * half of those (idle servers tie): 5%, 25%, then half. */
static void test_slow_start_share_grows_round_robin_and_least_conn(void **state)
{
    (void)state;
    const char *const balances[] = {"", "    balance: least_conn\n"};
    for (size_t b = 0; b < 2; b++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 GROUP("[\"127.0.0.1:73\", \"127.0.0.1:74\"]", "    slow_start: 100s\n%s"),
                 balances[b]);
        struct loop *loop = loop_new();
        struct upstream_set *set = set_for(loop, yaml);
        struct upstream_group *g = &set->groups[0];
        loop_update_time(loop);
        int early = share_of_first(g, 10000, 1100);
        int middle = share_of_first(g, 50000, 1500);
        int done = share_of_first(g, 200000, 1000);
        if (b == 0) {
            assert_in_range(early, 80, 120);   /* ~100 */
            assert_in_range(middle, 450, 550); /* ~500 */
        } else {
            assert_in_range(early, 35, 75);    /* ~55 */
            assert_in_range(middle, 300, 450); /* ~375 */
        }
        assert_in_range(done, 450, 550); /* ~500 */
        atomic_store(&g->servers[0].shared->up_since_ms, 0);
        upstream_set_retire(set);
        loop_free(loop);
    }
}

/* A server in slow start that is the only candidate is still picked. */
static void test_slow_start_alone_is_still_picked(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    struct upstream_set *set =
        set_for(loop, GROUP("[\"127.0.0.1:75\", \"127.0.0.1:76\"]",
                            "    slow_start: 100s\n    balance: least_conn\n"));
    struct upstream_group *g = &set->groups[0];
    atomic_store(&g->servers[0].shared->up_since_ms, loop_now_ms(loop));
    upstream_shared_set_up(g->servers[1].shared, false, 1);
    for (int i = 0; i < 20; i++)
        assert_int_equal(upstream_pick(g, 0, 0)->index, 0);
    upstream_shared_set_up(g->servers[1].shared, true, 0);
    atomic_store(&g->servers[0].shared->up_since_ms, 0);
    atomic_store(&g->servers[1].shared->up_since_ms, 0);
    upstream_set_retire(set);
    loop_free(loop);
}

/* ---- connections and the pool, on loopback ---- */

/* A listening socket on 127.0.0.1 (connections wait in its backlog). */
static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

struct pool_fixture {
    struct loop *loop;
    int listen_fd;
    struct upstream_set *set;
    struct upstream_server *server;
};

static void pool_start(struct pool_fixture *f, const char *keepalive)
{
    char yaml[512];
    int port;
    f->loop = loop_new();
    f->listen_fd = listen_loopback(&port);
    snprintf(yaml, sizeof(yaml),
             "listen: [\"127.0.0.1:1\"]\nupstreams:\n  app:\n    servers: [\"127.0.0.1:%d\"]\n"
             "    keepalive: %s\nroutes:\n  - upstream: app\n",
             port, keepalive);
    f->set = set_for(f->loop, yaml);
    f->server = &f->set->groups[0].servers[0];
}

static void pool_stop(struct pool_fixture *f)
{
    upstream_set_retire(f->set);
    loop_run_deferred(f->loop); /* frees closed connections */
    close(f->listen_fd);
    loop_free(f->loop);
}

static struct upstream_conn *connect_ok(struct pool_fixture *f)
{
    struct upstream_conn *c = NULL;
    assert_int_equal(upstream_connect(f->server, &c, 0), 0);
    assert_non_null(c);
    return c;
}

/* One exchange on a connection, with the hint its response carried. */
static struct upstream_conn *exchange(struct pool_fixture *f, uint32_t timeout_s, uint32_t max)
{
    struct upstream_conn *c = connect_ok(f);
    upstream_conn_keepalive_hint(c, timeout_s, max);
    upstream_release(c, true);
    return c; /* not to be touched unless it is f->server->idle */
}

static uint64_t idle_timer_ms(struct pool_fixture *f)
{
    assert_non_null(f->server->idle);
    assert_true(timer_armed(&f->server->idle->idle_timer));
    return f->server->idle->idle_timer.deadline_ms - loop_now_ms(f->loop);
}

static void test_in_flight_is_counted_per_worker_and_shared(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "4");
    struct upstream_shared *sh = f.server->shared;
    uint32_t before = atomic_load(&sh->in_flight);
    struct upstream_conn *a = connect_ok(&f), *b = connect_ok(&f);
    assert_int_equal(f.server->in_flight, 2);
    assert_int_equal(atomic_load(&sh->in_flight), before + 2);
    upstream_release(a, true);
    assert_int_equal(f.server->in_flight, 1);
    assert_int_equal(atomic_load(&sh->in_flight), before + 1);
    /* from the pool counts too */
    struct upstream_conn *c = connect_ok(&f);
    assert_true(c->reused);
    assert_int_equal(atomic_load(&sh->in_flight), before + 2);
    upstream_release(c, false);
    upstream_release(b, false);
    assert_int_equal(f.server->in_flight, 0);
    assert_int_equal(atomic_load(&sh->in_flight), before);
    pool_stop(&f);
}

/* Another worker's exchanges steer this worker's least_conn away. */
static void test_least_conn_sees_other_workers_in_flight(void **state)
{
    (void)state;
    const char *yaml = GROUP("[\"127.0.0.1:60\", \"127.0.0.1:61\"]", "    balance: least_conn\n");
    struct loop *l1 = loop_new(), *l2 = loop_new();
    struct upstream_set *w1 = set_for(l1, yaml), *w2 = set_for(l2, yaml);
    /* worker 1 has 3 exchanges on server 0 (as upstream_connect counts them) */
    atomic_fetch_add(&w1->groups[0].servers[0].shared->in_flight, 3);
    for (int i = 0; i < 10; i++)
        assert_int_equal(upstream_pick(&w2->groups[0], 0, 0)->index, 1);
    atomic_fetch_sub(&w1->groups[0].servers[0].shared->in_flight, 3);
    upstream_set_retire(w1);
    upstream_set_retire(w2);
    loop_free(l1);
    loop_free(l2);
}

static void test_max_requests_retires_a_connection(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "{max_requests: 2}");
    struct upstream_conn *first = exchange(&f, 0, 0);
    assert_int_equal(f.server->idle_count, 1); /* 1 of 2: pooled */
    struct upstream_conn *again = connect_ok(&f);
    assert_ptr_equal(again, first);
    upstream_release(again, true); /* 2 of 2: closed, not pooled */
    assert_int_equal(f.server->idle_count, 0);
    struct upstream_conn *fresh = connect_ok(&f);
    assert_false(fresh->reused);
    upstream_release(fresh, true);
    assert_int_equal(f.server->idle_count, 1);
    pool_stop(&f);
}

static void test_max_requests_zero_is_unlimited(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "{max_requests: 0}");
    struct upstream_conn *first = exchange(&f, 0, 0);
    for (int i = 0; i < 2000; i++)
        assert_ptr_equal(exchange(&f, 0, 0), first);
    assert_int_equal(f.server->idle_count, 1);
    pool_stop(&f);
}

/* Apache counts down: max=2 on the first response means two more. */
static void test_keep_alive_max_hint_retires_a_connection(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "{max_requests: 0}");
    struct upstream_conn *c = exchange(&f, 0, 2);
    assert_int_equal(f.server->idle_count, 1);
    assert_ptr_equal(exchange(&f, 0, 1), c);
    assert_int_equal(f.server->idle_count, 1);
    /* the third response says max=0 (absent): the limit from before holds */
    struct upstream_conn *third = connect_ok(&f);
    assert_ptr_equal(third, c);
    upstream_release(third, true);
    assert_int_equal(f.server->idle_count, 0);
    pool_stop(&f);
}

/* A hint never extends a limit: the smallest stays (config's too). */
static void test_smallest_request_limit_wins(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "{max_requests: 3}");
    struct upstream_conn *c = exchange(&f, 0, 1); /* limit 2 */
    assert_ptr_equal(exchange(&f, 0, 100), c);    /* would be 102: stays 2 */
    assert_int_equal(f.server->idle_count, 0);
    c = exchange(&f, 0, 100); /* config's 3 */
    assert_ptr_equal(exchange(&f, 0, 100), c);
    assert_int_equal(f.server->idle_count, 1);
    upstream_release(connect_ok(&f), true);
    assert_int_equal(f.server->idle_count, 0);
    pool_stop(&f);
}

static void test_keep_alive_timeout_hint_shortens_the_idle_timer(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "{idle_timeout: 30s}");
    exchange(&f, 0, 0);
    assert_int_equal(idle_timer_ms(&f), 30000); /* no hint: idle_timeout */
    exchange(&f, 5, 0);
    assert_int_equal(idle_timer_ms(&f), 4000); /* 5 s less a 1 s margin */
    exchange(&f, 0, 0);
    assert_int_equal(idle_timer_ms(&f), 4000); /* a response without the hint keeps it */
    exchange(&f, 2, 0);
    assert_int_equal(idle_timer_ms(&f), 1000); /* short: half */
    exchange(&f, 1, 0);
    assert_int_equal(idle_timer_ms(&f), 500);
    exchange(&f, 300, 0);
    assert_int_equal(idle_timer_ms(&f), 30000); /* idle_timeout is shorter */
    exchange(&f, 4294967295u, 0);
    assert_int_equal(idle_timer_ms(&f), 30000); /* no overflow */
    pool_stop(&f);
}

static void test_not_reusable_is_closed_whatever_the_hints(void **state)
{
    (void)state;
    struct pool_fixture f;
    pool_start(&f, "4");
    struct upstream_conn *c = connect_ok(&f);
    upstream_conn_keepalive_hint(c, 60, 100);
    upstream_release(c, false);
    assert_int_equal(f.server->idle_count, 0);
    assert_null(f.server->idle);
    pool_stop(&f);
}

/* ---- sliding windows, passive ejection, retry budget ---- */

static void test_window_counts_the_last_slots_and_forgets_in_steps(void **state)
{
    (void)state;
    struct upstream_window w = {0};
    /* 10 slots of 100 ms: a 1 s window */
    for (int i = 0; i < 3; i++)
        upstream_window_add(&w, 5000, 100);
    upstream_window_add(&w, 5150, 100);
    upstream_window_add(&w, 5950, 100);
    assert_int_equal(upstream_window_sum(&w, 5950, 100), 5);
    /* 5000..5099 is still in the window at 5999, gone at 6000 */
    assert_int_equal(upstream_window_sum(&w, 5999, 100), 5);
    assert_int_equal(upstream_window_sum(&w, 6000, 100), 2);
    assert_int_equal(upstream_window_sum(&w, 6899, 100), 1);
    assert_int_equal(upstream_window_sum(&w, 6900, 100), 0);
    /* a slot reused a window later starts over instead of adding */
    upstream_window_add(&w, 6000, 100);
    assert_int_equal(upstream_window_sum(&w, 6000, 100), 3);
    upstream_window_clear(&w);
    assert_int_equal(upstream_window_sum(&w, 6000, 100), 0);
    assert_int_equal(upstream_window_slot_ms(10000), 1000);
    assert_int_equal(upstream_window_slot_ms(5), 1);
}

static void test_ejection_doubles_up_to_ten_times_eject_time(void **state)
{
    (void)state;
    const uint64_t expected[] = {30000, 60000, 120000, 240000, 300000, 300000};
    for (uint32_t level = 0; level < 6; level++)
        assert_int_equal(upstream_eject_duration_ms(30000, level), expected[level]);
    assert_int_equal(upstream_eject_duration_ms(30000, 40), 300000);
}

static void test_retry_budget_is_a_share_of_requests_with_a_floor(void **state)
{
    (void)state;
    /* a quiet group may still retry UPSTREAM_RETRY_FLOOR times */
    assert_true(upstream_budget_allows(0, 0, 20));
    assert_true(upstream_budget_allows(3, UPSTREAM_RETRY_FLOOR - 1, 20));
    assert_false(upstream_budget_allows(3, UPSTREAM_RETRY_FLOOR, 20));
    /* a busy one 20% of its requests */
    assert_true(upstream_budget_allows(1000, 199, 20));
    assert_false(upstream_budget_allows(1000, 200, 20));
    assert_false(upstream_budget_allows(1000, UPSTREAM_RETRY_FLOOR, 0));
    assert_true(upstream_budget_allows(1000, 999, 100));
}

#define EJECT_GROUP(name, extra)                                                                   \
    "listen: [\"127.0.0.1:1\"]\nupstreams:\n  " name ":\n    servers: [\"127.0.0.1:50\", "         \
    "\"127.0.0.1:51\"]\n" extra "routes:\n  - upstream: " name "\n"

static void test_max_fails_failures_eject_a_server_the_picks_pass_over(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    loop_update_time(loop);
    struct upstream_set *set =
        set_for(loop, EJECT_GROUP("ej1", "    max_fails: 3\n    eject_time: 10s\n"
                                         "    fail_status: [503]\n"));
    struct upstream_group *g = &set->groups[0];
    struct upstream_server *bad = &g->servers[0];
    struct upstream_shared *sh = bad->shared;
    /* successes, statuses outside fail_status and attempts without an
     * outcome count for nothing */
    assert_int_equal(upstream_report_attempt(bad, 0, 200), 0);
    assert_int_equal(upstream_report_attempt(bad, 0, 500), 0);
    assert_int_equal(upstream_report_attempt(bad, 0, 0), 0);
    assert_int_equal(upstream_report_attempt(bad, 1, 0), 0); /* a connection failure */
    assert_int_equal(upstream_report_attempt(bad, 0, 503), 0);
    assert_false(upstream_server_ejected(bad));
    assert_int_equal(upstream_report_attempt(bad, 0, 503), 10000);
    assert_true(upstream_server_ejected(bad));
    assert_true(atomic_load(&sh->ejected));
    assert_int_equal(atomic_load(&sh->ejections), 1);
    assert_int_equal(atomic_load(&sh->eject_status), 503);
    assert_int_equal(atomic_load(&sh->eject_cause), 0);
    assert_true(timer_armed(&bad->eject_timer)); /* to log its return */
    for (int i = 0; i < 10; i++)
        assert_ptr_equal(upstream_pick(g, 0, 0), &g->servers[1]);
    /* stragglers that fail while it is out prove nothing new */
    assert_int_equal(upstream_report_attempt(bad, 5, 0), 0);
    assert_int_equal(upstream_window_sum(&sh->fails, loop_now_ms(loop), 1000), 0);

    /* its time runs out (as the clock would have it): back in rotation */
    atomic_store(&sh->ejected_until_ms, loop_now_ms(loop));
    assert_false(upstream_server_ejected(bad));
    bool seen = false;
    for (int i = 0; i < 4; i++)
        seen |= upstream_pick(g, 0, 0) == bad;
    assert_true(seen);
    /* failing again right after: ejected twice as long */
    for (int i = 0; i < 2; i++)
        assert_int_equal(upstream_report_attempt(bad, 4, 0), 0);
    assert_int_equal(upstream_report_attempt(bad, 4, 0), 20000);
    assert_int_equal(atomic_load(&sh->eject_cause), 4);
    assert_int_equal(atomic_load(&sh->eject_status), 0);
    /* an active check that passes ends it at once, reported once */
    assert_true(upstream_shared_passed(sh));
    assert_false(upstream_server_ejected(bad));
    assert_false(upstream_shared_passed(sh));
    upstream_set_retire(set);
    loop_free(loop);
}

static void test_max_fails_zero_never_ejects(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    loop_update_time(loop);
    struct upstream_set *set = set_for(loop, EJECT_GROUP("ej2", "    max_fails: 0\n"));
    struct upstream_server *s = &set->groups[0].servers[0];
    for (int i = 0; i < 100; i++)
        assert_int_equal(upstream_report_attempt(s, 1, 0), 0);
    assert_false(upstream_server_ejected(s));
    upstream_set_retire(set);
    loop_free(loop);
}

static void test_retry_budget_is_shared_by_the_workers_of_a_group(void **state)
{
    (void)state;
    const char *yaml = EJECT_GROUP("budget", "    retry_budget: 50%\n");
    struct loop *l1 = loop_new(), *l2 = loop_new();
    loop_update_time(l1);
    loop_update_time(l2);
    struct upstream_set *w1 = set_for(l1, yaml), *w2 = set_for(l2, yaml);
    struct upstream_group *g1 = &w1->groups[0], *g2 = &w2->groups[0];
    assert_ptr_equal(g1->shared, g2->shared);
    for (int i = 0; i < 20; i++)
        upstream_count_request(i % 2 ? g1 : g2);
    int made = 0;
    while (upstream_retry_allowed(made % 2 ? g1 : g2) && made < 100) {
        upstream_count_retry(made % 2 ? g1 : g2);
        made++;
    }
    assert_int_equal(made, 10); /* 50% of 20, the floor being 10 too */
    for (int i = 0; i < 20; i++)
        upstream_count_request(g1);
    assert_true(upstream_retry_allowed(g2)); /* 50% of 40 now */
    upstream_set_retire(w1);
    upstream_set_retire(w2);
    loop_free(l1);
    loop_free(l2);
}

/* ---- the checker, on a real loop ---- */

struct watch {
    struct timer t;
    struct loop *loop;
    struct upstream_shared *sh;
    bool want_up;
    uint64_t deadline_ms;
    bool reached;
};

static void watch_tick(struct timer *t)
{
    struct watch *w = container_of(t, struct watch, t);
    if (atomic_load(&w->sh->up) == w->want_up) {
        w->reached = true;
        loop_stop(w->loop);
    } else if (loop_now_ms(w->loop) >= w->deadline_ms) {
        loop_stop(w->loop);
    } else {
        loop_timer_set(w->loop, t, 5);
    }
}

/* Run loop until sh's up is want_up (true) or 5 s pass (false). */
static bool run_until_up_is(struct loop *loop, struct upstream_shared *sh, bool want_up)
{
    struct watch w = {.loop = loop, .sh = sh, .want_up = want_up};
    timer_init(&w.t, watch_tick);
    w.deadline_ms = loop_update_time(loop) + 5000;
    loop_timer_set(loop, &w.t, 0);
    loop_run(loop);
    loop_timer_cancel(loop, &w.t);
    return w.reached;
}

/* A port where nothing listens: connects are refused. */
static int closed_port(void)
{
    int port;
    int fd = listen_loopback(&port);
    close(fd);
    return port;
}

static struct config *health_config(int down_port, int up_port, bool with_health)
{
    char yaml[768];
    snprintf(yaml, sizeof(yaml),
             "listen: [\"127.0.0.1:1\"]\nupstreams:\n  app:\n"
             "    servers: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n%s"
             "routes:\n  - upstream: app\n",
             down_port, up_port,
             with_health ? "    health: {mode: tcp, interval: 10ms, timeout: 500ms, fails: 2, "
                           "passes: 1}\n"
                         : "");
    return load(yaml);
}

/* tcp checks: the refusing server goes down, the listening one stays up;
 * a reload that drops the health section marks it up again. */
static void test_checker_marks_a_refusing_server_down(void **state)
{
    (void)state;
    int up_port, down_port = closed_port();
    int listen_fd = listen_loopback(&up_port);
    struct loop *loop = loop_new();
    struct config *cfg = health_config(down_port, up_port, true);
    char name[32];
    snprintf(name, sizeof(name), "127.0.0.1:%d", down_port);
    struct upstream_shared *down = upstream_shared_get("app", name);
    snprintf(name, sizeof(name), "127.0.0.1:%d", up_port);
    struct upstream_shared *up = upstream_shared_get("app", name);

    struct upstream_health *h = upstream_health_start(loop, cfg);
    assert_non_null(h);
    assert_true(atomic_load(&down->checked));
    assert_true(run_until_up_is(loop, down, false));
    assert_true(atomic_load(&down->consecutive_failures) >= 2);
    assert_true(atomic_load(&up->up));
    assert_true(atomic_load(&up->consecutive_passes) >= 1);

    /* same servers, same health: the state and counters stay */
    struct config *same = health_config(down_port, up_port, true);
    upstream_health_reload(h, same);
    assert_false(atomic_load(&down->up));
    assert_true(atomic_load(&down->consecutive_failures) >= 2);

    /* no health section: not checked, so marked up */
    struct config *none = health_config(down_port, up_port, false);
    upstream_health_reload(h, none);
    assert_true(atomic_load(&down->up));
    assert_false(atomic_load(&down->checked));
    assert_int_equal(atomic_load(&down->consecutive_failures), 0);

    upstream_health_stop(h);
    config_unref(cfg);
    config_unref(same);
    config_unref(none);
    loop_run_deferred(loop);
    loop_free(loop);
    close(listen_fd);
}

int main(void)
{
    config_set_dns(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_is_smooth_and_weighted),
        cmocka_unit_test(test_tried_servers_are_skipped_until_all_were_tried),
        cmocka_unit_test(test_least_conn_prefers_the_fewest_in_flight),
        cmocka_unit_test(test_hash_keeps_keys_when_a_server_is_added),
        cmocka_unit_test(test_hash_respects_weights),
        cmocka_unit_test(test_shared_record_is_one_per_group_and_server),
        cmocka_unit_test(test_workers_and_reloads_share_the_server_record),
        cmocka_unit_test(test_set_up_records_when_and_why),
        cmocka_unit_test(test_foreach_visits_every_record),
        cmocka_unit_test(test_down_servers_are_skipped_while_one_is_up),
        cmocka_unit_test(test_panic_mode_picks_among_all_when_all_are_down),
        cmocka_unit_test(test_backups_serve_only_while_every_primary_is_down),
        cmocka_unit_test(test_health_goes_down_after_fails_failures_in_a_row),
        cmocka_unit_test(test_health_comes_back_after_passes_passes_in_a_row),
        cmocka_unit_test(test_slow_start_weight_ramps_linearly),
        cmocka_unit_test(test_slow_start_off_keeps_full_weight),
        cmocka_unit_test(test_slow_start_share_grows_round_robin_and_least_conn),
        cmocka_unit_test(test_slow_start_alone_is_still_picked),
        cmocka_unit_test(test_in_flight_is_counted_per_worker_and_shared),
        cmocka_unit_test(test_least_conn_sees_other_workers_in_flight),
        cmocka_unit_test(test_max_requests_retires_a_connection),
        cmocka_unit_test(test_max_requests_zero_is_unlimited),
        cmocka_unit_test(test_keep_alive_max_hint_retires_a_connection),
        cmocka_unit_test(test_smallest_request_limit_wins),
        cmocka_unit_test(test_keep_alive_timeout_hint_shortens_the_idle_timer),
        cmocka_unit_test(test_not_reusable_is_closed_whatever_the_hints),
        cmocka_unit_test(test_window_counts_the_last_slots_and_forgets_in_steps),
        cmocka_unit_test(test_ejection_doubles_up_to_ten_times_eject_time),
        cmocka_unit_test(test_retry_budget_is_a_share_of_requests_with_a_floor),
        cmocka_unit_test(test_max_fails_failures_eject_a_server_the_picks_pass_over),
        cmocka_unit_test(test_max_fails_zero_never_ejects),
        cmocka_unit_test(test_retry_budget_is_shared_by_the_workers_of_a_group),
        cmocka_unit_test(test_checker_marks_a_refusing_server_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
