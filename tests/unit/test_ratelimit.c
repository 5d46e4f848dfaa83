/* Unit tests for src/limit/ratelimit.c and hitters.c: GCRA decisions at
 * their exact boundaries, the bounded key table, Space-Saving, the
 * RateLimit header syntax, and the rate_limit config keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "limit/ratelimit.h"

#define SEC 1000000000ull
/* A start far from 0, as a monotonic clock is. */
#define T0 (1000 * SEC)

static struct config_rate_limit policy(uint32_t rate, uint32_t period_s, uint32_t burst,
                                       bool nodelay)
{
    return (struct config_rate_limit){
        .enabled = true,
        .rate = rate,
        .period_s = period_s,
        .interval_ns = (uint64_t)period_s * SEC / rate,
        .burst = burst,
        .nodelay = nodelay,
        .name = "default",
    };
}

static bool allowed(struct limit_table *t, const struct config_rate_limit *rl, uint64_t key,
                    uint64_t now, struct rate_verdict *v)
{
    limit_decide(t, rl, key, now, v);
    return v->allowed;
}

/* ---- GCRA ---- */

static void test_burst_plus_one_pass_at_once_then_refused(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(10, 1, 3, true); /* T = 100 ms, tau = 300 ms */
    struct rate_verdict v;
    for (int i = 0; i < 4; i++) {
        assert_true(allowed(t, &rl, 42, T0, &v));
        assert_int_equal(v.delay_ns, 0);
        assert_int_equal(v.remaining, 3 - i);
    }
    assert_false(allowed(t, &rl, 42, T0, &v));
    /* TAT = T0 + 400 ms: conforming again at TAT - tau = T0 + 100 ms */
    assert_int_equal(v.retry_after_ns, 100 * 1000000ull);
    assert_int_equal(v.reset_ns, 400 * 1000000ull);
    assert_int_equal(v.remaining, 0);
    limit_table_free(t);
}

static void test_refused_exactly_until_one_interval(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(10, 1, 0, true); /* one per 100 ms, no burst */
    struct rate_verdict v;
    assert_true(allowed(t, &rl, 7, T0, &v));
    assert_false(allowed(t, &rl, 7, T0 + 100 * 1000000ull - 1, &v));
    assert_int_equal(v.retry_after_ns, 1);
    assert_true(allowed(t, &rl, 7, T0 + 100 * 1000000ull, &v));
    limit_table_free(t);
}

static void test_refusals_do_not_cost_the_key(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(1, 1, 0, true);
    struct rate_verdict v;
    assert_true(allowed(t, &rl, 9, T0, &v));
    for (int i = 1; i < 1000; i++)
        assert_false(allowed(t, &rl, 9, T0 + (uint64_t)i * 1000000ull, &v));
    assert_true(allowed(t, &rl, 9, T0 + SEC, &v));
    limit_table_free(t);
}

static void test_twice_the_rate_gets_half_through(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(100, 1, 5, true);
    struct rate_verdict v;
    int passed = 0;
    for (int i = 0; i < 2000; i++) /* 200/s for 10 s */
        passed += allowed(t, &rl, 3, T0 + (uint64_t)i * 5000000ull, &v);
    /* 10 s at 100/s, plus the burst of 5, plus the first at 0 */
    assert_int_equal(passed, 1000 + 5 + 1 - 1);
    limit_table_free(t);
}

static void test_without_nodelay_the_burst_is_spaced_at_the_rate(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(5, 1, 3, false); /* T = 200 ms */
    struct rate_verdict v;
    for (uint64_t i = 0; i < 4; i++) {
        assert_true(allowed(t, &rl, 5, T0, &v));
        assert_int_equal(v.delay_ns, i * 200 * 1000000ull);
    }
    assert_false(allowed(t, &rl, 5, T0, &v));
    limit_table_free(t);
}

static void test_minute_rate(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit rl = policy(6000, 60, 0, true); /* 10 ms */
    assert_int_equal(rl.interval_ns, 10 * 1000000ull);
    struct rate_verdict v;
    assert_true(allowed(t, &rl, 1, T0, &v));
    assert_false(allowed(t, &rl, 1, T0 + 9999999, &v));
    assert_true(allowed(t, &rl, 1, T0 + 10000000, &v));
    limit_table_free(t);
}

static void test_keys_are_independent_and_named_by_policy(void **state)
{
    struct limit_table *t = limit_table_new(1024);
    struct config_rate_limit a = policy(1, 1, 0, true), b = policy(1, 1, 0, true);
    b.name = "*/api/";
    uint64_t ka = limit_key(&a, "10.0.0.1", 8), kb = limit_key(&b, "10.0.0.1", 8);
    assert_true(ka != kb);
    assert_true(ka != limit_key(&a, "10.0.0.2", 8));
    assert_int_equal(ka, limit_key(&a, "10.0.0.1", 8));
    struct rate_verdict v;
    assert_true(allowed(t, &a, ka, T0, &v));
    assert_false(allowed(t, &a, ka, T0, &v));
    assert_true(allowed(t, &b, kb, T0, &v));
    assert_true(allowed(t, &a, limit_key(&a, "10.0.0.2", 8), T0, &v));
    limit_table_free(t);
}

/* ---- the bounded table ---- */

static void test_flood_of_distinct_keys_stays_within_the_bound(void **state)
{
    struct limit_table *t = limit_table_new(4096);
    struct config_rate_limit rl = policy(1, 60, 0, true); /* every key stays live a minute */
    struct rate_verdict v;
    char ip[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(ip, sizeof(ip), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        assert_true(allowed(t, &rl, limit_key(&rl, ip, (size_t)n), T0 + (uint64_t)i, &v));
    }
    struct limit_table_stats st = limit_table_stats(t);
    assert_int_equal(st.capacity, 4096);
    assert_int_equal(st.entries, 4096);
    assert_int_equal(st.evictions, 100000 - 4096);
    limit_table_free(t);
}

static void test_expired_entries_are_reused_before_eviction(void **state)
{
    struct limit_table *t = limit_table_new(8); /* one bucket */
    struct config_rate_limit rl = policy(10, 1, 0, true);
    struct rate_verdict v;
    for (uint64_t k = 1; k <= 8; k++)
        assert_true(allowed(t, &rl, k, T0, &v));
    /* 100 ms later every TAT is past: new keys take those slots, no eviction */
    for (uint64_t k = 9; k <= 16; k++)
        assert_true(allowed(t, &rl, k, T0 + 100 * 1000000ull, &v));
    assert_int_equal(limit_table_stats(t).evictions, 0);
    assert_int_equal(limit_table_stats(t).entries, 8);
    /* full of live entries: the next key evicts one */
    assert_true(allowed(t, &rl, 17, T0 + 100 * 1000000ull, &v));
    assert_int_equal(limit_table_stats(t).evictions, 1);
    limit_table_free(t);
}

static void test_eviction_takes_the_oldest_tat(void **state)
{
    struct limit_table *t = limit_table_new(8);
    struct config_rate_limit rl = policy(1, 1, 10, true);
    struct rate_verdict v;
    /* key 1 has the oldest TAT (one request); the others have spent more */
    assert_true(allowed(t, &rl, 1, T0, &v));
    for (uint64_t k = 2; k <= 8; k++)
        for (int i = 0; i < 3; i++)
            assert_true(allowed(t, &rl, k, T0, &v));
    assert_true(allowed(t, &rl, 100, T0, &v)); /* evicts key 1 */
    /* key 2 kept its state: 11 at once, 4 spent with this one */
    assert_true(allowed(t, &rl, 2, T0, &v));
    assert_int_equal(v.remaining, 7);
    /* key 1 was forgotten: it starts with its whole burst again */
    assert_true(allowed(t, &rl, 1, T0, &v));
    assert_int_equal(v.remaining, 10);
    limit_table_free(t);
}

/* ---- headers ---- */

static void test_ratelimit_headers_follow_the_draft_syntax(void **state)
{
    struct config_rate_limit rl = policy(100, 60, 0, true);
    rl.name = "*/api/\"x\"";
    struct rate_verdict v = {.allowed = true, .remaining = 4, .reset_ns = 1500 * 1000000ull};
    char out[256];
    size_t n = limit_rate_headers(out, sizeof(out), &rl, &v);
    assert_string_equal(out, "RateLimit-Policy: \"*/api/\\\"x\\\"\";q=100;w=60\r\n"
                             "RateLimit: \"*/api/\\\"x\\\"\";r=4;t=2\r\n");
    assert_int_equal(n, strlen(out));
    assert_int_equal(limit_rate_headers(out, 20, &rl, &v), 0);
}

/* ---- Space-Saving ---- */

static void test_space_saving_keeps_a_heavy_key_among_many(void **state)
{
    struct limit_topk *t = calloc(1, sizeof(*t));
    char key[32];
    uint64_t heavy = 0;
    for (int i = 0; i < 20000; i++) {
        if (i % 5 == 0) {
            limit_topk_add(t, "flooder", 7, 1);
            heavy++;
        } else {
            int n = snprintf(key, sizeof(key), "client-%d", i);
            limit_topk_add(t, key, (size_t)n, 1);
        }
    }
    assert_int_equal(t->n, LIMIT_TOPK);
    const struct limit_topk_entry *found = NULL, *top = &t->e[0];
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->e[i].key, "flooder") == 0)
            found = &t->e[i];
        if (t->e[i].count > top->count)
            top = &t->e[i];
    }
    assert_non_null(found);
    assert_ptr_equal(found, top);
    /* the guarantee: count >= true count >= count - error */
    assert_true(found->count >= heavy);
    assert_true(found->count - found->error <= heavy);
    free(t);
}

static void test_space_saving_counts_exactly_while_there_is_room(void **state)
{
    struct limit_topk t = {0};
    for (int i = 0; i < 10; i++)
        limit_topk_add(&t, "a", 1, 1);
    limit_topk_add(&t, "b", 1, 3);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.e[0].count, 10);
    assert_int_equal(t.e[0].error, 0);
    assert_int_equal(t.e[1].count, 3);
    limit_topk_decay(&t, 1);
    assert_int_equal(t.e[0].count, 5);
    assert_int_equal(t.e[1].count, 1);
    limit_topk_decay(&t, 1);
    assert_int_equal(t.n, 1); /* b reached 0 and went */
}

static void test_space_saving_cuts_long_keys(void **state)
{
    struct limit_topk t = {0};
    char key[200];
    memset(key, 'k', sizeof(key));
    limit_topk_add(&t, key, sizeof(key), 1);
    limit_topk_add(&t, key, sizeof(key), 1);
    assert_int_equal(t.n, 1);
    assert_int_equal(strlen(t.e[0].key), LIMIT_KEY_MAX);
    assert_int_equal(t.e[0].count, 2);
}

static void test_hitters_name_the_top_client(void **state)
{
    for (int i = 0; i < 50; i++)
        limit_hitters_note("192.0.2.7", 9, false);
    for (int i = 0; i < 5; i++)
        limit_hitters_note("192.0.2.8", 9, false);
    limit_hitters_note("192.0.2.7", 9, true);
    struct limit_hitter top[4];
    size_t n = limit_hitters_top(false, top, 4);
    assert_int_equal(n, 2);
    assert_string_equal(top[0].key, "192.0.2.7");
    /* a half-life may pass during the test: counts can only have halved */
    assert_true(top[0].count == 50 || top[0].count == 25);
    assert_true(top[0].count > top[1].count);
    n = limit_hitters_top(true, top, 4);
    assert_int_equal(n, 1);
    assert_string_equal(top[0].key, "192.0.2.7");
}

/* ---- config ---- */

#define BASE                                                                                       \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n  app:\n    servers: [\"127.0.0.1:9000\"]\n"

static struct config *load(const char *yaml, struct config_errors *errs)
{
    config_set_dns(false);
    memset(errs, 0, sizeof(*errs));
    return config_load_string("t.yaml", yaml, strlen(yaml), errs);
}

static void test_config_rate_limit_default_and_per_route(void **state)
{
    struct config_errors errs;
    struct config *cfg =
        load(BASE "rate_limit: {rate: \"6000/m\", burst: 20, headers: true}\n"
                  "routes:\n"
                  "  - upstream: app\n"
                  "  - match: {path: /api/}\n    upstream: app\n"
                  "    rate_limit: {rate: \"100r/s\", key: \"header:X-Api-Key\", nodelay: true,"
                  " store: \"redis://127.0.0.1:6379\"}\n"
                  "  - match: {path: /free/}\n    upstream: app\n    rate_limit: off\n",
             &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->rate_limit_table_size, CONFIG_RATE_TABLE_DEFAULT);
    const struct config_rate_limit *d = cfg->routes[0].rate_limit;
    assert_ptr_equal(d, &cfg->rate_limit);
    assert_int_equal(d->rate, 6000);
    assert_int_equal(d->period_s, 60);
    assert_int_equal(d->interval_ns, 10000000);
    assert_int_equal(d->burst, 20);
    assert_false(d->nodelay);
    assert_true(d->headers);
    assert_int_equal(d->key, RATE_KEY_CLIENT_IP);
    assert_string_equal(d->name, "default");
    const struct config_rate_limit *api = cfg->routes[1].rate_limit;
    assert_ptr_equal(api, &cfg->routes[1].own_rate_limit);
    assert_int_equal(api->rate, 100);
    assert_int_equal(api->key, RATE_KEY_HEADER);
    assert_string_equal(api->key_header, "X-Api-Key");
    assert_true(api->nodelay);
    assert_string_equal(api->store, "redis://127.0.0.1:6379");
    assert_string_equal(api->name, "*/api/");
    assert_null(cfg->routes[2].rate_limit);
    config_unref(cfg);
}

static void test_config_rate_limit_errors_have_positions(void **state)
{
    struct config_errors errs;
    struct config *cfg = load(BASE "rate_limit: {rate: \"100/h\", burst: -1, key: clientip,"
                                   " store: \"memcached://x\"}\n"
                                   "rate_limit_table_size: 10\n"
                                   "routes:\n"
                                   "  - upstream: app\n"
                                   "    rate_limit: {burst: 2}\n",
                              &errs);
    assert_null(cfg);
    char all[4096] = "";
    for (size_t i = 0; i < errs.count; i++) {
        strncat(all, errs.items[i].text, sizeof(all) - strlen(all) - 2);
        strcat(all, "\n");
    }
    assert_non_null(strstr(all, "t.yaml:5:20: bad rate \"100/h\""));
    assert_non_null(strstr(all, "burst must be 0 or more"));
    assert_non_null(strstr(all, "unknown rate_limit key \"clientip\""));
    assert_non_null(strstr(all, "did you mean \"client_ip\""));
    assert_non_null(strstr(all, "bad rate_limit store \"memcached://x\""));
    assert_non_null(strstr(all, "rate_limit_table_size"));
    assert_non_null(strstr(all, "missing required key \"rate\" in rate_limit"));
    assert_int_equal(errs.count, 6);
    config_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_plus_one_pass_at_once_then_refused),
        cmocka_unit_test(test_refused_exactly_until_one_interval),
        cmocka_unit_test(test_refusals_do_not_cost_the_key),
        cmocka_unit_test(test_twice_the_rate_gets_half_through),
        cmocka_unit_test(test_without_nodelay_the_burst_is_spaced_at_the_rate),
        cmocka_unit_test(test_minute_rate),
        cmocka_unit_test(test_keys_are_independent_and_named_by_policy),
        cmocka_unit_test(test_flood_of_distinct_keys_stays_within_the_bound),
        cmocka_unit_test(test_expired_entries_are_reused_before_eviction),
        cmocka_unit_test(test_eviction_takes_the_oldest_tat),
        cmocka_unit_test(test_ratelimit_headers_follow_the_draft_syntax),
        cmocka_unit_test(test_space_saving_keeps_a_heavy_key_among_many),
        cmocka_unit_test(test_space_saving_counts_exactly_while_there_is_room),
        cmocka_unit_test(test_space_saving_cuts_long_keys),
        cmocka_unit_test(test_hitters_name_the_top_client),
        cmocka_unit_test(test_config_rate_limit_default_and_per_route),
        cmocka_unit_test(test_config_rate_limit_errors_have_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
