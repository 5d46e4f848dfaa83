/* Unit tests for src/upstream: balancers (no sockets needed to pick). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

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
    g->servers[0].in_flight = 5;
    g->servers[1].in_flight = 1;
    g->servers[2].in_flight = 3;
    for (int i = 0; i < 10; i++)
        assert_int_equal(upstream_pick(g, 0, 0)->index, 1);
    /* ties are shared, not always the first */
    g->servers[0].in_flight = g->servers[1].in_flight = g->servers[2].in_flight = 0;
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

int main(void)
{
    config_set_dns(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin_is_smooth_and_weighted),
        cmocka_unit_test(test_tried_servers_are_skipped_until_all_were_tried),
        cmocka_unit_test(test_least_conn_prefers_the_fewest_in_flight),
        cmocka_unit_test(test_hash_keeps_keys_when_a_server_is_added),
        cmocka_unit_test(test_hash_respects_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
