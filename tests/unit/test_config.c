/* Unit tests for src/config: loading, validation messages, scalar parsers,
 * route matching and reference counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"

/* The smallest valid config, pieces of which tests replace. */
#define LISTEN "listen: [\"127.0.0.1:8080\"]\n"
#define UPSTREAMS                                                                                  \
    "upstreams:\n"                                                                                 \
    "  app:\n"                                                                                     \
    "    servers: [\"127.0.0.1:9000\"]\n"
#define ROUTES                                                                                     \
    "routes:\n"                                                                                    \
    "  - upstream: app\n"

static struct config *load(const char *yaml, struct config_errors *errs)
{
    memset(errs, 0, sizeof(*errs));
    return config_load_string("bulwark.yaml", yaml, strlen(yaml), errs);
}

static void print_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        print_message("  error: %s\n", errs->items[i].text);
}

/* Loads yaml, which must fail with expected among its errors. */
static void assert_error(const char *yaml, const char *expected)
{
    struct config_errors errs;
    struct config *cfg = load(yaml, &errs);
    bool found = false;

    assert_null(cfg);
    assert_true(errs.count > 0);
    for (size_t i = 0; i < errs.count; i++)
        found |= strcmp(errs.items[i].text, expected) == 0;
    if (!found) {
        print_message("expected: %s\n", expected);
        print_errors(&errs);
    }
    assert_true(found);
    config_errors_free(&errs);
}

/* Loads yaml, which must fail with exactly one error: expected. */
static void assert_only_error(const char *yaml, const char *expected)
{
    struct config_errors errs;
    struct config *cfg = load(yaml, &errs);

    assert_null(cfg);
    if (errs.count != 1)
        print_errors(&errs);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].text, expected);
    config_errors_free(&errs);
}

/* Loads yaml, which must succeed. */
static struct config *load_ok(const char *yaml)
{
    struct config_errors errs;
    struct config *cfg = load(yaml, &errs);

    if (!cfg)
        print_errors(&errs);
    assert_non_null(cfg);
    assert_int_equal(errs.count, 0);
    config_errors_free(&errs);
    return cfg;
}

static int addr_port(const struct config_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static const char *addr_ip(const struct config_addr *a, char *buf, size_t len)
{
    if (a->ss.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, buf,
                         (socklen_t)len);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, buf,
                     (socklen_t)len);
}

/* ---- valid configs ---- */

static const char full_config[] =
    "workers: 4\n"
    "listen: [\"127.0.0.1:8080\", \"[::1]:8443\"]\n"
    "admin: \"127.0.0.1:9901\"\n"
    "shutdown_timeout: 10s\n"
    "tunnel_timeout: 2h\n"
    "client:\n"
    "  header_timeout: 5s\n"
    "  body_timeout: 30s\n"
    "  keepalive_timeout: 90s\n"
    "  send_timeout: 45s\n"
    "  max_request_line: 4k\n"
    "  max_header_size: 32K\n"
    "  max_body_size: 100m\n"
    "forwarded:\n"
    "  x_forwarded_for: false\n"
    "  x_forwarded_proto: true\n"
    "  x_forwarded_host: false\n"
    "  via: false\n"
    "log:\n"
    "  access: /var/log/bulwark/access.log\n"
    "  error: /var/log/bulwark/error.log\n"
    "upstreams:\n"
    "  app:\n"
    "    servers: [\"127.0.0.1:9000\", \"[::1]:9002\", {address: \"127.0.0.1:9003\", weight: "
    "3}]\n"
    "    balance: hash\n"
    "    hash_key: \"header:X-User\"\n"
    "    connect_timeout: 250ms\n"
    "    read_timeout: 30s\n"
    "    send_timeout: 20s\n"
    "    retries: 0\n"
    "    keepalive: {max_idle: 8, idle_timeout: 15s, max_requests: 500}\n"
    "  api:\n"
    "    servers: [\"127.0.0.1:9100\"]\n"
    "    balance: least_conn\n"
    "    keepalive: 0\n"
    "routes:\n"
    "  - match: { host: \"Example.COM\", path: \"/api/\" }\n"
    "    upstream: api\n"
    "    max_body_size: 10m\n"
    "  - match: { host: \"*.example.com\" }\n"
    "    upstream: app\n"
    "  - upstream: app\n";

static void test_loads_full_config_with_every_key(void **state)
{
    struct config *cfg = load_ok(full_config);
    char ip[64];

    assert_string_equal(cfg->path, "bulwark.yaml");
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->num_listen, 2);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:8080");
    assert_int_equal(cfg->listen[0].ss.ss_family, AF_INET);
    assert_int_equal(cfg->listen[0].len, sizeof(struct sockaddr_in));
    assert_string_equal(addr_ip(&cfg->listen[0], ip, sizeof(ip)), "127.0.0.1");
    assert_int_equal(addr_port(&cfg->listen[0]), 8080);
    assert_string_equal(cfg->listen[1].text, "[::1]:8443");
    assert_int_equal(cfg->listen[1].ss.ss_family, AF_INET6);
    assert_int_equal(cfg->listen[1].len, sizeof(struct sockaddr_in6));
    assert_string_equal(addr_ip(&cfg->listen[1], ip, sizeof(ip)), "::1");
    assert_int_equal(addr_port(&cfg->listen[1]), 8443);
    assert_true(cfg->has_admin);
    assert_int_equal(addr_port(&cfg->admin), 9901);
    assert_int_equal(cfg->shutdown_timeout_ms, 10000);
    assert_int_equal(cfg->tunnel_timeout_ms, 2 * 3600 * 1000);

    assert_int_equal(cfg->client_header_timeout_ms, 5000);
    assert_int_equal(cfg->client_body_timeout_ms, 30000);
    assert_int_equal(cfg->keepalive_timeout_ms, 90000);
    assert_int_equal(cfg->send_timeout_ms, 45000);
    assert_int_equal(cfg->max_request_line, 4096);
    assert_int_equal(cfg->max_header_bytes, 32768);
    assert_int_equal(cfg->max_body_bytes, 100ull << 20);

    assert_false(cfg->x_forwarded_for);
    assert_true(cfg->x_forwarded_proto);
    assert_false(cfg->x_forwarded_host);
    assert_false(cfg->via);
    assert_string_equal(cfg->access_log, "/var/log/bulwark/access.log");
    assert_false(cfg->access_log_off);
    assert_string_equal(cfg->error_log, "/var/log/bulwark/error.log");

    assert_int_equal(cfg->num_upstreams, 2);
    struct config_upstream *app = &cfg->upstreams[0];
    assert_string_equal(app->name, "app");
    assert_int_equal(app->index, 0);
    assert_int_equal(app->num_servers, 3);
    assert_string_equal(app->servers[0].name, "127.0.0.1:9000");
    assert_string_equal(app->servers[0].addr.text, "127.0.0.1:9000");
    assert_int_equal(app->servers[0].weight, 1);
    assert_string_equal(app->servers[1].name, "[::1]:9002");
    assert_int_equal(app->servers[1].addr.ss.ss_family, AF_INET6);
    assert_string_equal(app->servers[2].name, "127.0.0.1:9003");
    assert_int_equal(app->servers[2].weight, 3);
    assert_int_equal(app->balance, BALANCE_HASH);
    assert_int_equal(app->hash_key, HASH_HEADER);
    assert_string_equal(app->hash_header, "X-User");
    assert_int_equal(app->connect_timeout_ms, 250);
    assert_int_equal(app->read_timeout_ms, 30000);
    assert_int_equal(app->send_timeout_ms, 20000);
    assert_int_equal(app->retries, 0);
    assert_int_equal(app->keepalive_max_idle, 8);
    assert_int_equal(app->keepalive_idle_timeout_ms, 15000);
    assert_int_equal(app->keepalive_max_requests, 500);
    assert_int_equal(app->line, 23);
    assert_int_equal(app->column, 3);

    struct config_upstream *api = &cfg->upstreams[1];
    assert_string_equal(api->name, "api");
    assert_int_equal(api->index, 1);
    assert_int_equal(api->balance, BALANCE_LEAST_CONN);
    assert_int_equal(api->keepalive_max_idle, 0);

    assert_int_equal(cfg->num_routes, 3);
    assert_string_equal(cfg->routes[0].host, "example.com");
    assert_false(cfg->routes[0].host_wildcard);
    assert_string_equal(cfg->routes[0].path, "/api/");
    assert_int_equal(cfg->routes[0].path_len, 5);
    assert_ptr_equal(cfg->routes[0].upstream, api);
    assert_int_equal(cfg->routes[0].max_body_bytes, 10ull << 20);
    assert_int_equal(cfg->routes[0].line, 37);
    assert_string_equal(cfg->routes[1].host, "*.example.com");
    assert_true(cfg->routes[1].host_wildcard);
    assert_string_equal(cfg->routes[1].path, "/");
    assert_ptr_equal(cfg->routes[1].upstream, app);
    assert_int_equal(cfg->routes[1].max_body_bytes, 100ull << 20);
    assert_null(cfg->routes[2].host);
    assert_int_equal(cfg->refs, 1);
    config_unref(cfg);
}

static void test_applies_defaults(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    assert_int_equal(cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_false(cfg->has_admin);
    assert_int_equal(cfg->admin.len, 0);
    assert_int_equal(cfg->shutdown_timeout_ms, 30000);
    assert_int_equal(cfg->tunnel_timeout_ms, 3600000);
    assert_int_equal(cfg->client_header_timeout_ms, 10000);
    assert_int_equal(cfg->client_body_timeout_ms, 60000);
    assert_int_equal(cfg->keepalive_timeout_ms, 75000);
    assert_int_equal(cfg->send_timeout_ms, 60000);
    assert_int_equal(cfg->max_request_line, 8192);
    assert_int_equal(cfg->max_header_bytes, 16384);
    assert_int_equal(cfg->max_body_bytes, 1ull << 30);
    assert_true(cfg->x_forwarded_for);
    assert_true(cfg->x_forwarded_proto);
    assert_true(cfg->x_forwarded_host);
    assert_true(cfg->via);
    assert_null(cfg->access_log);
    assert_false(cfg->access_log_off);
    assert_null(cfg->error_log);

    const struct config_upstream *up = &cfg->upstreams[0];
    assert_int_equal(up->balance, BALANCE_ROUND_ROBIN);
    assert_int_equal(up->hash_key, HASH_CLIENT_IP);
    assert_null(up->hash_header);
    assert_int_equal(up->connect_timeout_ms, 5000);
    assert_int_equal(up->read_timeout_ms, 60000);
    assert_int_equal(up->send_timeout_ms, 60000);
    assert_int_equal(up->retries, 2);
    assert_int_equal(up->keepalive_max_idle, 256);
    assert_int_equal(up->keepalive_idle_timeout_ms, 60000);
    assert_int_equal(up->keepalive_max_requests, 1000);
    assert_int_equal(up->servers[0].weight, 1);

    const struct config_route *r = &cfg->routes[0];
    assert_null(r->host);
    assert_string_equal(r->path, "/");
    assert_int_equal(r->path_len, 1);
    assert_ptr_equal(r->upstream, up);
    assert_int_equal(r->max_body_bytes, 1ull << 30);
    config_unref(cfg);
}

static void test_route_max_body_defaults_to_client_max_body_size(void **state)
{
    /* routes come before client in the file: the default must still apply */
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES "client:\n"
                                                         "  max_body_size: 0\n");
    assert_int_equal(cfg->max_body_bytes, 0);
    assert_int_equal(cfg->routes[0].max_body_bytes, 0);
    config_unref(cfg);
}

static void test_listen_accepts_a_single_string(void **state)
{
    struct config *cfg = load_ok("listen: 127.0.0.1:8080\n" UPSTREAMS ROUTES);
    assert_int_equal(cfg->num_listen, 1);
    assert_int_equal(addr_port(&cfg->listen[0]), 8080);
    config_unref(cfg);
}

static void test_listen_star_and_empty_host_mean_any_ipv4(void **state)
{
    struct config *cfg = load_ok("listen: [\"*:80\", \":81\"]\n" UPSTREAMS ROUTES);
    char ip[64];

    assert_int_equal(cfg->num_listen, 2);
    assert_string_equal(addr_ip(&cfg->listen[0], ip, sizeof(ip)), "0.0.0.0");
    assert_int_equal(addr_port(&cfg->listen[0]), 80);
    assert_string_equal(cfg->listen[0].text, "*:80");
    assert_string_equal(addr_ip(&cfg->listen[1], ip, sizeof(ip)), "0.0.0.0");
    assert_string_equal(cfg->listen[1].text, ":81");
    config_unref(cfg);
}

static void test_passive_checks_and_retry_budget_defaults(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  app:\n"
                                        "    servers: 127.0.0.1:9000\n" ROUTES);
    const struct config_upstream *up = &cfg->upstreams[0];
    assert_int_equal(up->max_fails, 5);
    assert_int_equal(up->fail_window_ms, 10000);
    assert_int_equal(up->eject_time_ms, 30000);
    assert_int_equal(up->retry_budget_pct, 20);
    for (int status = 100; status < 700; status++)
        assert_false(config_fail_status(up, status));
    assert_int_equal(cfg->max_connections, 0);
    config_unref(cfg);
}

static void test_passive_checks_and_retry_budget_are_read(void **state)
{
    struct config *cfg = load_ok("max_connections: 1000\n" LISTEN "upstreams:\n"
                                 "  app:\n"
                                 "    servers: 127.0.0.1:9000\n"
                                 "    max_fails: 0\n"
                                 "    fail_window: 5s\n"
                                 "    eject_time: 250ms\n"
                                 "    fail_status: [500, 502, 599, 400]\n"
                                 "    retry_budget: 35%\n" ROUTES);
    const struct config_upstream *up = &cfg->upstreams[0];
    assert_int_equal(up->max_fails, 0);
    assert_int_equal(up->fail_window_ms, 5000);
    assert_int_equal(up->eject_time_ms, 250);
    assert_int_equal(up->retry_budget_pct, 35);
    assert_true(config_fail_status(up, 500));
    assert_true(config_fail_status(up, 502));
    assert_true(config_fail_status(up, 599));
    assert_true(config_fail_status(up, 400));
    assert_false(config_fail_status(up, 501));
    assert_false(config_fail_status(up, 200));
    assert_int_equal(cfg->max_connections, 1000);
    config_unref(cfg);
}

static void test_bad_passive_checks_and_retry_budget_are_refused(void **state)
{
    const char *head = LISTEN "upstreams:\n  app:\n    servers: 127.0.0.1:9000\n";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%s    fail_status: [200]\n" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:5:19: fail_status 200 out of range 400-599");
    snprintf(yaml, sizeof(yaml), "%s    fail_status: 500\n" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:5:18: fail_status of upstream \"app\": expected a list "
                            "of statuses (e.g. [500, 503]), got \"500\"");
    snprintf(yaml, sizeof(yaml), "%s    retry_budget: 20\n" ROUTES, head);
    assert_only_error(
        yaml, "bulwark.yaml:5:19: bad retry_budget \"20\": expected a percentage such as 20%");
    snprintf(yaml, sizeof(yaml), "%s    retry_budget: 120%%\n" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:5:19: bad retry_budget \"120%\": expected a whole "
                            "percentage from 0% to 100%");
    snprintf(yaml, sizeof(yaml), "%s    eject_time: 0\n" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:5:17: eject_time must be at least 1ms: 0 would expire "
                            "at once");
    snprintf(yaml, sizeof(yaml), "%s    max_fails: -1\n" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:5:16: max_fails -1 out of range 0-1000");
    snprintf(yaml, sizeof(yaml), "max_connections: -5\n%s" ROUTES, head);
    assert_only_error(yaml, "bulwark.yaml:1:18: max_connections -5 out of range 0-10000000");
}

static void test_slow_client_defences_default_on(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    assert_int_equal(cfg->min_body_rate_bytes, 1024);
    assert_int_equal(cfg->min_body_rate_per_ms, 10000);
    assert_int_equal(cfg->max_header_connections, CONFIG_AUTO);
    assert_int_equal(cfg->reclaim_idle_pct, 90);
    config_unref(cfg);
}

static void test_slow_client_defences_are_read(void **state)
{
    struct config *cfg = load_ok("client:\n"
                                 "  min_body_rate: {bytes: 2k, per: 5s}\n"
                                 "  max_header_connections: 300\n"
                                 "  reclaim_idle_at: 75%\n" LISTEN UPSTREAMS ROUTES);
    assert_int_equal(cfg->min_body_rate_bytes, 2048);
    assert_int_equal(cfg->min_body_rate_per_ms, 5000);
    assert_int_equal(cfg->max_header_connections, 300);
    assert_int_equal(cfg->reclaim_idle_pct, 75);
    config_unref(cfg);
    cfg = load_ok("client:\n"
                  "  min_body_rate: {bytes: 0}\n"
                  "  max_header_connections: auto\n"
                  "  reclaim_idle_at: 0%\n" LISTEN UPSTREAMS ROUTES);
    assert_int_equal(cfg->min_body_rate_bytes, 0);
    assert_int_equal(cfg->max_header_connections, CONFIG_AUTO);
    assert_int_equal(cfg->reclaim_idle_pct, 0);
    config_unref(cfg);
}

static void test_bad_slow_client_defences_are_refused(void **state)
{
    assert_only_error("client:\n  min_body_rate: 1k\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:18: min_body_rate: expected a mapping such as "
                      "{bytes: 1k, per: 10s}, got \"1k\"");
    assert_only_error("client:\n  min_body_rate: {bytes: 1k, per: 0}\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:35: per must be at least 1ms: 0 would expire at once");
    assert_only_error("client:\n  min_body_rate: {byte: 1k}\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:19: unknown key \"byte\" in min_body_rate (did you mean "
                      "\"bytes\"?)");
    assert_only_error("client:\n  max_header_connections: -1\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:27: max_header_connections -1 out of range 0-10000000");
    assert_only_error("client:\n  reclaim_idle_at: 101%\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:20: bad reclaim_idle_at \"101%\": expected a whole "
                      "percentage from 0% to 100%");
    assert_only_error("client:\n  reclaim_idle_at: 90\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:2:20: bad reclaim_idle_at \"90\": expected a percentage "
                      "such as 90%");
}

static void test_programs_are_read_with_defaults(void **state)
{
    struct config_errors errs;
    struct config *cfg =
        load(LISTEN UPSTREAMS ROUTES "programs:\n"
                                     "  web:\n"
                                     "    command: [python3, app.py, \"--port\", 9000]\n"
                                     "    env: {PORT: \"9000\", MODE: prod}\n"
                                     "    restart: on-failure\n"
                                     "    backoff: {initial: 100ms, max: 2s}\n"
                                     "    stop_signal: SIGINT\n"
                                     "    upstream: app\n"
                                     "    server: \"127.0.0.1:9000\"\n"
                                     "    ready_timeout: 5s\n"
                                     "  job:\n"
                                     "    command: [/bin/true]\n",
             &errs);
    if (!cfg)
        print_errors(&errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->num_programs, 2);
    const struct config_program *web = &cfg->programs[0], *job = &cfg->programs[1];
    assert_string_equal(web->name, "web");
    assert_int_equal(web->argc, 4);
    assert_string_equal(web->argv[3], "9000");
    assert_null(web->argv[4]);
    assert_int_equal(web->num_env, 2);
    assert_string_equal(web->env[0], "PORT=9000");
    assert_int_equal(web->restart, PROGRAM_RESTART_ON_FAILURE);
    assert_int_equal(web->backoff_initial_ms, 100);
    assert_int_equal(web->backoff_max_ms, 2000);
    assert_int_equal(web->stop_signal, SIGINT);
    assert_ptr_equal(web->upstream, &cfg->upstreams[0]);
    assert_string_equal(web->server, "127.0.0.1:9000");
    assert_true(web->server_addr.len > 0);
    assert_int_equal(web->ready_timeout_ms, 5000);
    assert_int_equal(job->restart, PROGRAM_RESTART_ALWAYS);
    assert_int_equal(job->backoff_initial_ms, 1000);
    assert_int_equal(job->backoff_max_ms, 30000);
    assert_int_equal(job->max_restarts, 10);
    assert_int_equal(job->restart_window_ms, 60000);
    assert_int_equal(job->stop_signal, SIGTERM);
    assert_int_equal(job->stop_timeout_ms, 10000);
    assert_null(job->upstream);
    assert_null(job->stdout_path);
    config_unref(cfg);
}

static void test_bad_programs_are_refused(void **state)
{
    const char *head = LISTEN UPSTREAMS ROUTES "programs:\n  web:\n";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%s    command: python3\n", head);
    assert_only_error(yaml, "bulwark.yaml:9:14: command: expected a list of arguments (e.g. "
                            "[python3, app.py]), got \"python3\"");
    snprintf(yaml, sizeof(yaml), "%s    cwd: /tmp\n", head);
    assert_only_error(yaml,
                      "bulwark.yaml:9:5: missing required key \"command\" in program \"web\"");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    restart: sometimes\n", head);
    assert_only_error(yaml, "bulwark.yaml:10:14: unknown restart \"sometimes\" for program "
                            "\"web\": expected always, on-failure or never");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    stop_signal: TERM\n", head);
    assert_only_error(yaml,
                      "bulwark.yaml:10:18: unknown stop_signal \"TERM\" for program \"web\": "
                      "expected SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, SIGUSR1 or SIGUSR2");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    upstream: api\n    server: x:1\n", head);
    assert_only_error(yaml, "bulwark.yaml:10:15: program \"web\": unknown upstream \"api\"");
    snprintf(yaml, sizeof(yaml),
             "%s    command: [a]\n    upstream: app\n    server: \"127.0.0.1:9001\"\n", head);
    assert_only_error(yaml, "bulwark.yaml:11:13: program \"web\": server \"127.0.0.1:9001\" is "
                            "not a server of upstream \"app\"");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    upstream: app\n", head);
    assert_only_error(yaml, "bulwark.yaml:10:15: program \"web\": upstream and server go together "
                            "(which server of which group this program is)");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    backoff: {initial: 2s, max: 1s}\n", head);
    assert_only_error(yaml, "bulwark.yaml:10:33: backoff of program \"web\": max (1000 ms) is "
                            "below initial (2000 ms)");
    snprintf(yaml, sizeof(yaml), "%s    command: [a]\n    comand: [b]\n", head);
    assert_error(yaml, "bulwark.yaml:10:5: unknown key \"comand\" in program \"web\" (did you mean "
                       "\"command\"?)");
}

static void test_program_user_and_group_are_resolved(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES "programs:\n"
                                                         "  web:\n"
                                                         "    command: [a]\n"
                                                         "    user: root\n"
                                                         "    group: \"0\"\n");
    const struct config_program *web = &cfg->programs[0];
    assert_true(web->has_user && web->has_group);
    assert_int_equal(web->uid, 0);
    assert_int_equal(web->gid, 0);
    assert_true(web->num_groups >= 1);
    config_unref(cfg);
}

static void test_unknown_program_user_or_group_is_refused(void **state)
{
    const char *head = LISTEN UPSTREAMS ROUTES "programs:\n  web:\n    command: [a]\n";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%s    user: no-such-user-here\n", head);
    assert_only_error(yaml,
                      "bulwark.yaml:10:11: program \"web\": unknown user \"no-such-user-here\"");
    snprintf(yaml, sizeof(yaml), "%s    group: no-such-group-here\n", head);
    assert_only_error(yaml,
                      "bulwark.yaml:10:12: program \"web\": unknown group \"no-such-group-here\"");
    snprintf(yaml, sizeof(yaml), "%s    user: \"4000000\"\n", head);
    assert_only_error(yaml, "bulwark.yaml:10:11: program \"web\": unknown user \"4000000\" (no "
                            "passwd entry: set group too)");
}

/* Not root: another user than bulwark's own is refused at load. Run in a
 * child that drops to uid/gid 65534 first (the test runs as root or not). */
static void test_program_user_needs_root(void **state)
{
    const char *yaml = LISTEN UPSTREAMS ROUTES "programs:\n  web:\n    command: [a]\n"
                                               "    user: \"0\"\n    group: \"0\"\n";
    const char *expected[] = {
        "bulwark.yaml:10:11: program \"web\": user \"0\" (uid 0) needs bulwark to run as root (it "
        "runs as uid 65534)",
        "bulwark.yaml:11:12: program \"web\": group \"0\" (gid 0) needs bulwark to run as root (it "
        "runs as gid 65534)",
    };
    if (geteuid() != 0 && geteuid() != 65534) {
        skip(); /* neither root nor 65534: cannot become 65534 */
        return;
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(2);
        struct config_errors errs;
        struct config *cfg = load(yaml, &errs);
        int ok = !cfg && errs.count == 2 && strcmp(errs.items[0].text, expected[0]) == 0 &&
                 strcmp(errs.items[1].text, expected[1]) == 0;
        if (!ok)
            print_errors(&errs);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

#define FCGI_HEAD                                                                                  \
    "listen: [\"127.0.0.1:8080\"]\n"                                                               \
    "upstreams:\n  php:\n    protocol: fastcgi\n    servers: [\"unix:/run/php.sock\"]\n"           \
    "routes:\n  - upstream: php\n    root: /var/www\n"

static void test_follow_symlinks_defaults_true_and_is_read(void **state)
{
    (void)state;
    struct config *cfg = load_ok(FCGI_HEAD);
    assert_true(cfg->routes[0].follow_symlinks);
    config_unref(cfg);
    cfg = load_ok(FCGI_HEAD "    follow_symlinks: false\n");
    assert_false(cfg->routes[0].follow_symlinks);
    assert_true(cfg->routes[0].check_script);
    config_unref(cfg);
}

/* The real path is resolved on bulwark's file system: without
 * check_script bulwark does not look at the files at all. */
static void test_follow_symlinks_off_needs_check_script(void **state)
{
    (void)state;
    assert_only_error(FCGI_HEAD "    check_script: false\n    follow_symlinks: false\n",
                      "bulwark.yaml:10:22: follow_symlinks: false in route 1 needs check_script: "
                      "true (bulwark must see the scripts to resolve their links)");
}

static void test_keepalive_accepts_a_plain_number(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  app:\n"
                                        "    servers: 127.0.0.1:9000\n"
                                        "    keepalive: 100\n" ROUTES);
    assert_int_equal(cfg->upstreams[0].keepalive_max_idle, 100);
    assert_int_equal(cfg->upstreams[0].keepalive_idle_timeout_ms, 60000);
    assert_int_equal(cfg->upstreams[0].num_servers, 1);
    config_unref(cfg);
}

static void test_keepalive_max_requests_zero_means_no_limit(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  app:\n"
                                        "    servers: 127.0.0.1:9000\n"
                                        "    keepalive: {max_requests: 0}\n" ROUTES);
    assert_int_equal(cfg->upstreams[0].keepalive_max_requests, 0);
    assert_int_equal(cfg->upstreams[0].keepalive_max_idle, 256); /* others keep defaults */
    config_unref(cfg);
}

static void test_keepalive_max_requests_out_of_range(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    keepalive: {max_requests: -1}\n" ROUTES,
                      "bulwark.yaml:5:31: max_requests -1 out of range 0-1000000000");
}

static void test_hash_key_uri_and_client_ip(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  a:\n"
                                        "    servers: [\"127.0.0.1:9000\"]\n"
                                        "    balance: hash\n"
                                        "    hash_key: uri\n"
                                        "  b:\n"
                                        "    servers: [\"127.0.0.1:9000\"]\n"
                                        "    balance: hash\n"
                                        "    hash_key: client_ip\n"
                                        "routes:\n"
                                        "  - upstream: a\n"
                                        "  - upstream: b\n"
                                        "    match: {path: /b/}\n");
    assert_int_equal(cfg->upstreams[0].hash_key, HASH_URI);
    assert_int_equal(cfg->upstreams[1].hash_key, HASH_CLIENT_IP);
    config_unref(cfg);
}

static void test_access_log_off_and_stderr(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES "log:\n"
                                                         "  access: \"off\"\n"
                                                         "  error: stderr\n");
    assert_true(cfg->access_log_off);
    assert_null(cfg->access_log);
    assert_null(cfg->error_log);
    config_unref(cfg);
}

static void test_route_ipv6_host_is_bracketed(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS "routes:\n"
                                                  "  - match: {host: \"::1\"}\n"
                                                  "    upstream: app\n"
                                                  "  - match: {host: \"[::2]\"}\n"
                                                  "    upstream: app\n");
    assert_string_equal(cfg->routes[0].host, "[::1]");
    assert_string_equal(cfg->routes[1].host, "[::2]");
    config_unref(cfg);
}

static void test_resolves_dns_names_preferring_ipv4(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  app:\n"
                                        "    servers: [\"localhost:9001\"]\n" ROUTES);
    const struct config_server *s = &cfg->upstreams[0].servers[0];
    char ip[64];

    assert_string_equal(s->name, "localhost:9001");
    assert_string_equal(s->addr.text, "localhost:9001");
    assert_int_equal(s->addr.ss.ss_family, AF_INET);
    assert_string_equal(addr_ip(&s->addr, ip, sizeof(ip)), "127.0.0.1");
    assert_int_equal(addr_port(&s->addr), 9001);
    config_unref(cfg);
}

static void test_dns_disabled_makes_names_an_error(void **state)
{
    config_set_dns(false);
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"localhost:9001\"]\n" ROUTES,
                      "bulwark.yaml:4:15: bad address \"localhost:9001\" for servers of upstream "
                      "\"app\": cannot resolve host \"localhost\": DNS disabled");
    config_set_dns(true);
}

static void test_unresolvable_server_is_a_warning_not_an_error(void **state)
{
    /* The name may resolve later (or only where the proxy runs): the server
     * is kept unresolved and its requests fail with dns_error. */
    const char *prefix = "bulwark.yaml:4:15: host \"no-such-host.invalid\" does not resolve: ";
    const char *suffix = "; requests to it will fail with dns_error";
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  app:\n"
                                        "    servers: [\"no-such-host.invalid:80\"]\n" ROUTES);
    const struct config_server *s = &cfg->upstreams[0].servers[0];

    assert_int_equal(cfg->upstreams[0].num_servers, 1);
    assert_string_equal(s->name, "no-such-host.invalid:80");
    assert_string_equal(s->addr.text, "no-such-host.invalid:80");
    assert_int_equal(s->addr.len, 0);
    assert_int_equal(cfg->num_warnings, 1);
    const char *w = cfg->warnings[0];
    assert_memory_equal(w, prefix, strlen(prefix));
    assert_true(strlen(w) > strlen(prefix) + strlen(suffix));
    assert_string_equal(w + strlen(w) - strlen(suffix), suffix);
    config_unref(cfg);
}

static void test_unresolvable_listen_address_stays_an_error(void **state)
{
    struct config_errors errs;
    const char *prefix = "bulwark.yaml:1:10: bad address \"no-such-host.invalid:80\" for listen: "
                         "cannot resolve host \"no-such-host.invalid\": ";
    struct config *cfg = load("listen: [\"no-such-host.invalid:80\"]\n" UPSTREAMS ROUTES, &errs);
    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_memory_equal(errs.items[0].text, prefix, strlen(prefix));
    config_errors_free(&errs);
}

static void test_unresolvable_admin_address_stays_an_error(void **state)
{
    struct config_errors errs;
    const char *prefix = "bulwark.yaml:2:8: bad address \"no-such-host.invalid:80\" for admin: ";
    struct config *cfg =
        load(LISTEN "admin: \"no-such-host.invalid:80\"\n" UPSTREAMS ROUTES, &errs);
    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_memory_equal(errs.items[0].text, prefix, strlen(prefix));
    config_errors_free(&errs);
}

static void test_resolved_config_has_no_warnings(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    assert_int_equal(cfg->num_warnings, 0);
    assert_null(cfg->warnings);
    config_unref(cfg);
}

static void test_admin_as_a_string_has_no_token(void **state)
{
    struct config *cfg = load_ok(LISTEN "admin: \"127.0.0.1:9901\"\n" UPSTREAMS ROUTES);
    assert_true(cfg->has_admin);
    assert_string_equal(cfg->admin.text, "127.0.0.1:9901");
    assert_null(cfg->admin_token);
    config_unref(cfg);
}

static void test_admin_mapping_with_address_and_token(void **state)
{
    struct config *cfg =
        load_ok(LISTEN "admin: {address: \"127.0.0.1:9902\", token: s3cr3t}\n" UPSTREAMS ROUTES);
    assert_true(cfg->has_admin);
    assert_string_equal(cfg->admin.text, "127.0.0.1:9902");
    assert_int_equal(addr_port(&cfg->admin), 9902);
    assert_string_equal(cfg->admin_token, "s3cr3t");
    assert_int_equal(cfg->num_warnings, 0);
    config_unref(cfg);
}

static void test_admin_mapping_needs_address(void **state)
{
    assert_only_error(LISTEN "admin: {token: x}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:8: missing required key \"address\" in admin");
}

static void test_admin_unknown_key_suggests(void **state)
{
    assert_only_error(LISTEN "admin: {address: \"127.0.0.1:9901\", tokn: x}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:36: unknown key \"tokn\" in admin (did you mean \"token\"?)");
}

static void test_admin_token_with_space_is_an_error(void **state)
{
    assert_only_error(LISTEN
                      "admin: {address: \"127.0.0.1:9901\", token: \"a b\"}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:43: token: expected a string of visible ASCII characters "
                      "without spaces");
}

static void test_admin_list_is_wrong_type(void **state)
{
    assert_only_error(LISTEN "admin: [\"127.0.0.1:9901\"]\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:8: admin: expected an address or a mapping with address "
                      "and token, got a list");
}

static void test_public_admin_without_token_is_a_warning(void **state)
{
    struct config *cfg = load_ok(LISTEN "admin: \"0.0.0.0:9901\"\n" UPSTREAMS ROUTES);
    assert_int_equal(cfg->num_warnings, 1);
    assert_non_null(
        strstr(cfg->warnings[0], "bulwark.yaml:2:8: admin listens on \"0.0.0.0:9901\""));
    config_unref(cfg);
}

static void test_errors_defaults(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    assert_false(cfg->expose_details);
    assert_int_equal(cfg->error_ring_size, 100);
    assert_int_equal(cfg->num_error_pages, 0);
    assert_int_equal(cfg->log_format, LOG_FORMAT_COMBINED);
    config_unref(cfg);
}

static void test_errors_section_with_pages(void **state)
{
    char dir[] = "/tmp/test_config_pages_XXXXXX";
    char path[256], yaml[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/502.html", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("<h1>down {{request_id}}</h1>", f);
    fclose(f);
    snprintf(yaml, sizeof(yaml),
             LISTEN "errors:\n  expose_details: true\n  ring_size: 7\n  pages:\n"
                    "    502: %s\n" UPSTREAMS ROUTES,
             path);
    struct config *cfg = load_ok(yaml);
    assert_true(cfg->expose_details);
    assert_int_equal(cfg->error_ring_size, 7);
    assert_int_equal(cfg->num_error_pages, 1);
    assert_int_equal(cfg->error_pages[0].status, 502);
    assert_string_equal(cfg->error_pages[0].body, "<h1>down {{request_id}}</h1>");
    assert_int_equal(cfg->error_pages[0].len, strlen("<h1>down {{request_id}}</h1>"));
    config_unref(cfg);
    unlink(path);
    rmdir(dir);
}

static void test_error_page_relative_to_the_config_file(void **state)
{
    char dir[] = "/tmp/test_config_pages_XXXXXX";
    char path[256], cfgpath[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/503.html", dir);
    snprintf(cfgpath, sizeof(cfgpath), "%s/bulwark.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("busy", f);
    fclose(f);
    f = fopen(cfgpath, "w");
    fputs(LISTEN "errors: {pages: {503: 503.html}}\n" UPSTREAMS ROUTES, f);
    fclose(f);
    struct config_errors errs = {0};
    struct config *cfg = config_load(cfgpath, &errs);
    if (!cfg)
        print_errors(&errs);
    assert_non_null(cfg);
    assert_string_equal(cfg->error_pages[0].body, "busy");
    assert_string_equal(cfg->error_pages[0].path, path);
    config_unref(cfg);
    config_errors_free(&errs);
    unlink(path);
    unlink(cfgpath);
    rmdir(dir);
}

static void test_unreadable_error_page_is_an_error(void **state)
{
    assert_only_error(LISTEN
                      "errors:\n  pages:\n    502: /nonexistent/page.html\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:4:10: cannot read error page \"/nonexistent/page.html\": "
                      "No such file or directory");
}

static void test_error_page_status_out_of_range(void **state)
{
    assert_only_error(LISTEN "errors:\n  pages:\n    302: /etc/hostname\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:4:5: error page status 302 out of range 400-599");
}

static void test_error_page_must_be_a_regular_file(void **state)
{
    assert_only_error(LISTEN "errors:\n  pages:\n    502: /tmp\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:4:10: cannot read error page \"/tmp\": not a regular file");
}

static void test_ring_size_out_of_range(void **state)
{
    assert_only_error(LISTEN "errors: {ring_size: 0}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:21: ring_size 0 out of range 1-100000");
    assert_only_error(LISTEN "errors: {ring_size: 100001}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:21: ring_size 100001 out of range 1-100000");
}

static void test_errors_unknown_key_suggests(void **state)
{
    assert_only_error(LISTEN "errors: {expose_detail: true}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:10: unknown key \"expose_detail\" in errors (did you mean "
                      "\"expose_details\"?)");
}

static void test_probe_at_start_defaults_to_on(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    assert_true(cfg->probe_at_start);
    config_unref(cfg);
    cfg = load_ok(LISTEN "probe_at_start: false\n" UPSTREAMS ROUTES);
    assert_false(cfg->probe_at_start);
    config_unref(cfg);
}

static void test_log_format_json(void **state)
{
    struct config *cfg = load_ok(LISTEN "log: {format: json}\n" UPSTREAMS ROUTES);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
    config_unref(cfg);
    cfg = load_ok(LISTEN "log: {format: combined}\n" UPSTREAMS ROUTES);
    assert_int_equal(cfg->log_format, LOG_FORMAT_COMBINED);
    config_unref(cfg);
}

static void test_unknown_log_format_suggests(void **state)
{
    assert_only_error(LISTEN "log: {format: jsno}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:2:15: unknown log format \"jsno\": expected combined or json "
                      "(did you mean \"json\"?)");
}

static void test_load_reads_a_file(void **state)
{
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    struct config_errors errs = {0};
    struct config *cfg;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, full_config, strlen(full_config)), (ssize_t)strlen(full_config));
    close(fd);
    cfg = config_load(path, &errs);
    unlink(path);
    assert_non_null(cfg);
    assert_int_equal(errs.count, 0);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->num_routes, 3);
    config_unref(cfg);
}

static void test_load_reports_a_file_that_cannot_be_opened(void **state)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load("/nonexistent/bulwark.yaml", &errs);

    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].text,
                        "/nonexistent/bulwark.yaml: cannot open: No such file or directory");
    config_errors_free(&errs);
}

static void test_load_reports_a_directory(void **state)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load("/tmp", &errs);

    assert_null(cfg);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].text, "/tmp: cannot read: Is a directory");
    config_errors_free(&errs);
}

/* ---- errors, each with its position ---- */

static void test_bad_duration_points_at_value(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    connect_timeout: 2 seconds\n" ROUTES,
                      "bulwark.yaml:5:22: bad duration \"2 seconds\" for connect_timeout: "
                      "expected a number followed by ms, s, m or h (e.g. 250ms, 2s, 5m)");
}

static void test_duration_overflow_is_an_error(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "tunnel_timeout: 1200h\n",
                      "bulwark.yaml:7:17: duration \"1200h\" for tunnel_timeout is too long: at "
                      "most 4294967295ms (about 49 days)");
}

/* Bug 15: a timeout of 0 was accepted and expired at once. */
static void test_zero_timeout_is_refused_with_its_position(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  header_timeout: 0\n",
                      "bulwark.yaml:8:19: header_timeout must be at least 1ms: 0 would expire "
                      "at once");
}

static void test_zero_timeout_in_any_unit_is_refused(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    connect_timeout: 0ms\n" ROUTES,
                      "bulwark.yaml:5:22: connect_timeout must be at least 1ms: 0 would expire "
                      "at once");
}

/* Every duration key of the schema bounds a wait; none documents 0. */
static void test_every_timeout_key_refuses_zero(void **state)
{
    static const char yaml[] = LISTEN "shutdown_timeout: 0s\n"
                                      "tunnel_timeout: 0\n"
                                      "client:\n"
                                      "  header_timeout: 0\n"
                                      "  body_timeout: 0\n"
                                      "  keepalive_timeout: 0m\n"
                                      "  send_timeout: 0h\n"
                                      "upstreams:\n"
                                      "  app:\n"
                                      "    servers: [\"127.0.0.1:9000\"]\n"
                                      "    connect_timeout: 0\n"
                                      "    read_timeout: 0\n"
                                      "    send_timeout: 0\n"
                                      "    keepalive: {idle_timeout: 0}\n" ROUTES;
    static const char *const keys[] = {"shutdown_timeout", "tunnel_timeout",    "header_timeout",
                                       "body_timeout",     "keepalive_timeout", "send_timeout",
                                       "connect_timeout",  "read_timeout",      "send_timeout",
                                       "idle_timeout"};
    struct config_errors errs;
    struct config *cfg = load(yaml, &errs);

    assert_null(cfg);
    if (errs.count != sizeof(keys) / sizeof(keys[0]))
        print_errors(&errs);
    assert_int_equal(errs.count, sizeof(keys) / sizeof(keys[0]));
    /* all reported at once, in file order, each at its line */
    for (size_t i = 0; i < errs.count; i++) {
        char expected[160];
        snprintf(expected, sizeof(expected), ":%d:", (int)i + (i < 2 ? 2 : i < 6 ? 3 : 6));
        assert_non_null(strstr(errs.items[i].text, expected));
        snprintf(expected, sizeof(expected), " %s must be at least 1ms", keys[i]);
        assert_non_null(strstr(errs.items[i].text, expected));
    }
    config_errors_free(&errs);
}

static void test_smallest_timeout_is_accepted(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES "client:\n"
                                                         "  header_timeout: 1ms\n");
    assert_int_equal(cfg->client_header_timeout_ms, 1);
    config_unref(cfg);
}

static void test_unknown_key_suggests_close_name(void **state)
{
    assert_error(LISTEN "upstream:\n"
                        "  app:\n"
                        "    servers: [\"127.0.0.1:9000\"]\n" ROUTES,
                 "bulwark.yaml:2:1: unknown key \"upstream\" in top level (did you mean "
                 "\"upstreams\"?)");
}

static void test_unknown_key_without_close_name_has_no_suggestion(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "frobnicate: 1\n",
                      "bulwark.yaml:7:1: unknown key \"frobnicate\" in top level");
}

static void test_unknown_key_in_nested_mapping_points_at_key(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    keepalive: {max_idle: 1, idle_timout: 5s}\n" ROUTES,
                      "bulwark.yaml:5:30: unknown key \"idle_timout\" in keepalive of upstream "
                      "\"app\" (did you mean \"idle_timeout\"?)");
}

static void test_unknown_key_in_client_suggests_transposition(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  heaedr_timeout: 1s\n",
                      "bulwark.yaml:8:3: unknown key \"heaedr_timeout\" in client (did you mean "
                      "\"header_timeout\"?)");
}

static void test_route_to_unknown_upstream_lists_defined_ones(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "  api:\n"
                             "    servers: [\"127.0.0.1:9001\"]\n"
                             "routes:\n"
                             "  - upstream: ap\n",
                      "bulwark.yaml:8:15: route 1 refers to unknown upstream \"ap\" (defined: "
                      "app, api)");
}

static void test_port_out_of_range(void **state)
{
    assert_only_error("listen: [\"127.0.0.1:70000\"]\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:1:10: bad address \"127.0.0.1:70000\" for listen: port 70000 "
                      "out of range 1-65535");
}

static void test_duplicate_key_points_at_second(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "listen: [\"127.0.0.1:8081\"]\n",
                      "bulwark.yaml:7:1: duplicate key \"listen\" in top level (first at line 1)");
}

static void test_duplicate_upstream_name(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "  app:\n"
                                       "    servers: [\"127.0.0.1:9001\"]\n" ROUTES,
                      "bulwark.yaml:5:3: duplicate key \"app\" in upstreams (first at line 3)");
}

static void test_yaml_syntax_error_has_libyaml_position(void **state)
{
    assert_only_error("listen: [\"127.0.0.1:8080\"\n"
                      "upstreams: {\n",
                      "bulwark.yaml:2:1: YAML syntax error: did not find expected ',' or ']' "
                      "(while parsing a flow sequence at line 1, column 9)");
}

static void test_yaml_bad_indentation_is_a_syntax_error(void **state)
{
    assert_only_error("listen: x\n"
                      "  bad: 1\n",
                      "bulwark.yaml:2:6: YAML syntax error: mapping values are not allowed in this "
                      "context");
}

static void test_invalid_utf8_reports_line_and_column(void **state)
{
    assert_only_error("listen: x\n"
                      "admin: \"\xff\"\n",
                      "bulwark.yaml:2:9: YAML syntax error: invalid leading UTF-8 octet (byte "
                      "0xff)");
}

static void test_listen_mapping_is_wrong_type(void **state)
{
    assert_only_error("listen: {a: 1}\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:1:9: listen: expected a list of addresses, got a mapping");
}

static void test_missing_required_keys_are_all_reported(void **state)
{
    struct config_errors errs;
    struct config *cfg = load("workers: 2\n", &errs);

    assert_null(cfg);
    assert_int_equal(errs.count, 3);
    assert_string_equal(errs.items[0].text,
                        "bulwark.yaml:1:1: missing required key \"listen\" in top level");
    assert_string_equal(errs.items[1].text,
                        "bulwark.yaml:1:1: missing required key \"upstreams\" in top level");
    assert_string_equal(errs.items[2].text,
                        "bulwark.yaml:1:1: missing required key \"routes\" in top level");
    config_errors_free(&errs);
}

static void test_empty_file_is_an_error(void **state)
{
    assert_only_error("# nothing here\n",
                      "bulwark.yaml:1:1: empty config: expected a mapping with listen, upstreams "
                      "and routes");
}

static void test_top_level_list_is_an_error(void **state)
{
    assert_only_error("- a\n- b\n", "bulwark.yaml:1:1: expected a mapping with listen, upstreams "
                                    "and routes at the top level, got a list");
}

static void test_second_yaml_document_is_an_error(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "---\n"
                                              "workers: 1\n",
                      "bulwark.yaml:8:1: a second YAML document; a config is one document");
}

static void test_empty_listen_list_is_an_error(void **state)
{
    assert_only_error("listen: []\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:1:9: listen: needs at least one address");
}

static void test_null_value_is_reported_as_nothing(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "admin:\n",
                      "bulwark.yaml:7:7: admin: expected an address (e.g. 127.0.0.1:8080), got "
                      "nothing");
}

static void test_duplicate_listen_address(void **state)
{
    assert_only_error("listen: [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:1:26: listen address \"127.0.0.1:80\" is listed twice (first "
                      "at line 1)");
}

static void test_workers_out_of_range(void **state)
{
    assert_only_error("workers: 0\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:1:10: workers 0 out of range 1-256");
}

static void test_workers_not_a_number(void **state)
{
    assert_only_error("workers: 2.5\n" LISTEN UPSTREAMS ROUTES,
                      "bulwark.yaml:1:10: bad number \"2.5\" for workers: expected a whole number");
}

static void test_bad_size(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  max_body_size: 10 MB\n",
                      "bulwark.yaml:8:18: bad size \"10 MB\" for max_body_size: expected a number "
                      "of bytes, optionally followed by k, m or g (e.g. 512, 16k, 10m, 1g)");
}

static void test_size_out_of_range_shows_bytes(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  max_header_size: 1m\n",
                      "bulwark.yaml:8:20: max_header_size 1m (1048576 bytes) out of range "
                      "1024-65536 bytes");
}

static void test_request_line_below_minimum(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  max_request_line: 100\n",
                      "bulwark.yaml:8:21: max_request_line 100 out of range 256-65536 bytes");
}

static void test_size_overflow_is_an_error(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client:\n"
                                              "  max_body_size: 17179869184g\n",
                      "bulwark.yaml:8:18: size \"17179869184g\" for max_body_size is too large");
}

static void test_bad_boolean(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "forwarded:\n"
                                              "  via: maybe\n",
                      "bulwark.yaml:8:8: bad value \"maybe\" for via: expected true or false");
}

static void test_section_of_wrong_type(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "client: 10s\n",
                      "bulwark.yaml:7:9: client: expected a mapping, got \"10s\"");
}

static void test_error_log_cannot_be_off(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "log: {error: \"off\"}\n",
                      "bulwark.yaml:7:14: the error log cannot be \"off\": use \"stderr\" or a "
                      "file path");
}

static void test_unknown_balance_suggests(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    balance: least_con\n" ROUTES,
                      "bulwark.yaml:5:14: unknown balance \"least_con\" for upstream \"app\": "
                      "expected round_robin, least_conn or hash (did you mean \"least_conn\"?)");
}

static void test_bad_hash_key(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    hash_key: \"header:\"\n" ROUTES,
                      "bulwark.yaml:5:15: bad hash_key \"header:\" for upstream \"app\": expected "
                      "client_ip, uri or header:NAME (e.g. header:X-User)");
}

static void test_weight_out_of_range(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [{address: \"127.0.0.1:9000\", weight: 1001}]\n" ROUTES,
                      "bulwark.yaml:4:51: weight 1001 out of range 1-1000");
}

static void test_server_mapping_needs_address(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [{weight: 2}]\n" ROUTES,
                      "bulwark.yaml:4:15: missing required key \"address\" in server of upstream "
                      "\"app\"");
}

static void test_retries_out_of_range(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    retries: -1\n" ROUTES,
                      "bulwark.yaml:5:14: retries -1 out of range 0-10");
}

static void test_keepalive_list_is_wrong_type(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "    keepalive: [1]\n" ROUTES,
                      "bulwark.yaml:5:16: keepalive: expected a number or a mapping with max_idle, "
                      "idle_timeout and max_requests, got a list");
}

static void test_upstream_without_servers(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    retries: 1\n" ROUTES,
                      "bulwark.yaml:4:5: missing required key \"servers\" in upstream \"app\"");
}

static void test_empty_servers_list(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: []\n" ROUTES,
                      "bulwark.yaml:4:14: servers of upstream \"app\": needs at least one server");
}

static void test_bad_upstream_name(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  \"my app\":\n"
                             "    servers: [\"127.0.0.1:9000\"]\n"
                             "routes:\n"
                             "  - upstream: my app\n",
                      "bulwark.yaml:3:3: bad upstream name \"my app\": use only letters, digits, "
                      "\"_\", \".\" and \"-\"");
}

static void test_server_cannot_be_any_address(void **state)
{
    assert_only_error(LISTEN "upstreams:\n"
                             "  app:\n"
                             "    servers: [\"*:9000\"]\n" ROUTES,
                      "bulwark.yaml:4:15: bad address \"*:9000\" for servers of upstream \"app\": "
                      "a missing host or \"*\" means any address, which only listen and admin "
                      "accept");
}

static void test_ipv6_without_brackets(void **state)
{
    assert_only_error("listen: \"::1:80\"\n" UPSTREAMS ROUTES,
                      "bulwark.yaml:1:9: bad address \"::1:80\" for listen: an IPv6 address needs "
                      "brackets, e.g. [::1]:8080");
}

static void test_route_path_must_start_with_slash(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "routes:\n"
                                       "  - match: {path: api}\n"
                                       "    upstream: app\n",
                      "bulwark.yaml:6:19: bad path \"api\" for route 1: must start with \"/\"");
}

static void test_route_host_with_port(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "routes:\n"
                                       "  - match: {host: \"example.com:8080\"}\n"
                                       "    upstream: app\n",
                      "bulwark.yaml:6:19: bad host \"example.com:8080\" for route 1: remove the "
                      "port: routes match a host on any port");
}

static void test_route_bad_wildcard(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "routes:\n"
                                       "  - match: {host: \"*example.com\"}\n"
                                       "    upstream: app\n",
                      "bulwark.yaml:6:19: bad host \"*example.com\" for route 1: a wildcard is "
                      "\"*.\" followed by a domain, e.g. *.example.com");
}

static void test_route_without_upstream(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "routes:\n"
                                       "  - match: {path: /}\n",
                      "bulwark.yaml:6:5: missing required key \"upstream\" in route 1");
}

static void test_empty_routes_list(void **state)
{
    assert_only_error(LISTEN UPSTREAMS "routes: []\n",
                      "bulwark.yaml:5:9: routes: needs at least one route");
}

static void test_nul_character_in_scalar(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "admin: \"127.0.0.1\\0:80\"\n",
                      "bulwark.yaml:7:8: admin: contains a NUL character");
}

static void test_non_scalar_key(void **state)
{
    assert_only_error(LISTEN UPSTREAMS ROUTES "? [a]\n"
                                              ": 1\n",
                      "bulwark.yaml:7:3: top level: keys must be plain names, got a list");
}

static void test_collects_multiple_errors_in_file_order(void **state)
{
    struct config_errors errs;
    /* routes come first so the loader sees them last: output must still be
     * sorted by position */
    struct config *cfg = load("routes:\n"
                              "  - upstream: nope\n"
                              "workers: 999\n"
                              "listen: [\"127.0.0.1:0\", \"1.2.3.4\"]\n"
                              "upstreams:\n"
                              "  app:\n"
                              "    servers: [\"127.0.0.1:9000\"]\n"
                              "    read_timeout: soon\n",
                              &errs);

    assert_null(cfg);
    if (errs.count != 5)
        print_errors(&errs);
    assert_int_equal(errs.count, 5);
    assert_string_equal(errs.items[0].text, "bulwark.yaml:2:15: route 1 refers to unknown "
                                            "upstream \"nope\" (defined: app)");
    assert_string_equal(errs.items[1].text, "bulwark.yaml:3:10: workers 999 out of range 1-256");
    assert_string_equal(errs.items[2].text, "bulwark.yaml:4:10: bad address \"127.0.0.1:0\" for "
                                            "listen: port 0 out of range 1-65535");
    assert_string_equal(errs.items[3].text, "bulwark.yaml:4:25: bad address \"1.2.3.4\" for "
                                            "listen: missing port (expected host:port, e.g. "
                                            "127.0.0.1:8080)");
    assert_string_equal(errs.items[4].text,
                        "bulwark.yaml:8:19: bad duration \"soon\" for read_timeout: expected a "
                        "number followed by ms, s, m or h (e.g. 250ms, 2s, 5m)");
    config_errors_free(&errs);
}

static void test_errors_are_appended_to_existing_ones(void **state)
{
    struct config_errors errs = {0};

    assert_null(config_load_string("a.yaml", "", 0, &errs));
    assert_null(config_load_string("b.yaml", "x: 1\n", 5, &errs));
    assert_int_equal(errs.count, 5);
    assert_memory_equal(errs.items[0].text, "a.yaml:", 7);
    assert_string_equal(errs.items[1].text, "b.yaml:1:1: unknown key \"x\" in top level");
    config_errors_free(&errs);
    assert_int_equal(errs.count, 0);
    assert_null(errs.items);
}

static void test_null_input_is_an_empty_config(void **state)
{
    struct config_errors errs = {0};

    assert_null(config_load_string("x.yaml", NULL, 0, &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].text, "x.yaml:1:1: empty config: expected a mapping with "
                                            "listen, upstreams and routes");
    config_errors_free(&errs);
}

static void test_long_values_are_cut_in_messages(void **state)
{
    char yaml[512];
    struct config_errors errs;

    snprintf(yaml, sizeof(yaml), LISTEN UPSTREAMS ROUTES "tunnel_timeout: %0100d\n", 7);
    assert_null(load(yaml, &errs));
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.items[0].text, "\"000000000000000000000000000000000000000000000000"
                                               "000000000000...\" for tunnel_timeout"));
    config_errors_free(&errs);
}

/* ---- scalar parsers ---- */

static void test_duration_units(void **state)
{
    uint32_t ms;

    assert_int_equal(config_parse_duration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(config_parse_duration("2s", &ms), 0);
    assert_int_equal(ms, 2000);
    assert_int_equal(config_parse_duration("5m", &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(config_parse_duration("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(config_parse_duration("007s", &ms), 0);
    assert_int_equal(ms, 7000);
}

static void test_duration_zero_alone_is_allowed(void **state)
{
    uint32_t ms = 1;

    assert_int_equal(config_parse_duration("0", &ms), 0);
    assert_int_equal(ms, 0);
    ms = 1;
    assert_int_equal(config_parse_duration("0s", &ms), 0);
    assert_int_equal(ms, 0);
}

static void test_duration_rejects_bad_syntax(void **state)
{
    static const char *const bad[] = {"",    "5",   "s",  "1.5s", "-1s",  "+1s",  " 1s",
                                      "1s ", "1 s", "1S", "1d",   "1sec", "1ms1", "0x10s"};
    uint32_t ms;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_parse_duration(bad[i], &ms) != -1)
            print_message("accepted \"%s\"\n", bad[i]);
        assert_int_equal(config_parse_duration(bad[i], &ms), -1);
    }
}

static void test_duration_overflow_of_uint32_ms(void **state)
{
    uint32_t ms;

    assert_int_equal(config_parse_duration("4294967295ms", &ms), 0);
    assert_int_equal(ms, UINT32_MAX);
    assert_int_equal(config_parse_duration("4294967296ms", &ms), -1);
    assert_int_equal(config_parse_duration("1193h", &ms), 0);
    assert_int_equal(config_parse_duration("1194h", &ms), -1);
    assert_int_equal(config_parse_duration("99999999999999999999999s", &ms), -1);
}

static void test_size_units_are_binary_and_case_insensitive(void **state)
{
    uint64_t b;

    assert_int_equal(config_parse_size("0", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(config_parse_size("1024", &b), 0);
    assert_int_equal(b, 1024);
    assert_int_equal(config_parse_size("10k", &b), 0);
    assert_int_equal(b, 10240);
    assert_int_equal(config_parse_size("10K", &b), 0);
    assert_int_equal(b, 10240);
    assert_int_equal(config_parse_size("64m", &b), 0);
    assert_int_equal(b, 64ull << 20);
    assert_int_equal(config_parse_size("1G", &b), 0);
    assert_int_equal(b, 1ull << 30);
}

static void test_size_rejects_bad_syntax(void **state)
{
    static const char *const bad[] = {"", "k", "10kb", "10 k", "1.5m", "-1", "10t", "0x10", " 1"};
    uint64_t b;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_parse_size(bad[i], &b) != -1)
            print_message("accepted \"%s\"\n", bad[i]);
        assert_int_equal(config_parse_size(bad[i], &b), -1);
    }
}

static void test_size_overflow(void **state)
{
    uint64_t b;

    assert_int_equal(config_parse_size("18446744073709551615", &b), 0);
    assert_true(b == UINT64_MAX);
    assert_int_equal(config_parse_size("18446744073709551616", &b), -1);
    assert_int_equal(config_parse_size("17179869183g", &b), 0);
    assert_true(b == 17179869183ull << 30);
    assert_int_equal(config_parse_size("17179869184g", &b), -1);
}

static void test_addr_ipv4_and_ipv6(void **state)
{
    struct config_addr a;
    char why[128], ip[64];

    assert_int_equal(config_parse_addr("10.1.2.3:443", false, &a, why, sizeof(why)), 0);
    assert_int_equal(a.ss.ss_family, AF_INET);
    assert_string_equal(addr_ip(&a, ip, sizeof(ip)), "10.1.2.3");
    assert_int_equal(addr_port(&a), 443);
    assert_string_equal(a.text, "10.1.2.3:443");

    assert_int_equal(config_parse_addr("[2001:db8::1]:65535", false, &a, why, sizeof(why)), 0);
    assert_int_equal(a.ss.ss_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    assert_string_equal(addr_ip(&a, ip, sizeof(ip)), "2001:db8::1");
    assert_int_equal(addr_port(&a), 65535);
    assert_string_equal(a.text, "[2001:db8::1]:65535");
}

static void test_addr_any_forms(void **state)
{
    struct config_addr a;
    char why[128], ip[64];

    assert_int_equal(config_parse_addr("*:8080", false, &a, why, sizeof(why)), 0);
    assert_string_equal(addr_ip(&a, ip, sizeof(ip)), "0.0.0.0");
    assert_int_equal(addr_port(&a), 8080);
    assert_int_equal(config_parse_addr(":1", false, &a, why, sizeof(why)), 0);
    assert_string_equal(addr_ip(&a, ip, sizeof(ip)), "0.0.0.0");
    assert_int_equal(addr_port(&a), 1);
}

static void assert_addr_error(const char *s, bool resolve, const char *expected)
{
    struct config_addr a;
    char why[256];

    assert_int_equal(config_parse_addr(s, resolve, &a, why, sizeof(why)), -1);
    assert_string_equal(why, expected);
}

static void test_addr_port_errors(void **state)
{
    assert_addr_error("1.2.3.4:0", false, "port 0 out of range 1-65535");
    assert_addr_error("1.2.3.4:65536", false, "port 65536 out of range 1-65535");
    assert_addr_error("1.2.3.4:99999999999999999999999", false,
                      "port 99999999999999999999... out of range 1-65535");
    assert_addr_error("1.2.3.4:", false, "missing port after \":\"");
    assert_addr_error("1.2.3.4", false, "missing port (expected host:port, e.g. 127.0.0.1:8080)");
    assert_addr_error("1.2.3.4:http", false, "port \"http\" is not a number");
    assert_addr_error("1.2.3.4:-1", false, "port \"-1\" is not a number");
}

static void test_addr_host_errors(void **state)
{
    assert_addr_error("999.1.1.1:80", false, "\"999.1.1.1\" is not a valid IPv4 address");
    assert_addr_error("127.1:80", false, "\"127.1\" is not a valid IPv4 address");
    assert_addr_error("[::1:80", false, "missing \"]\" after the IPv6 address");
    assert_addr_error("[::1]", false, "missing port (expected [v6]:port, e.g. [::1]:8080)");
    assert_addr_error("[::1]80", false, "expected \":port\" after \"]\"");
    assert_addr_error("[1.2.3.4]:80", false, "\"1.2.3.4\" is not an IPv6 address");
    assert_addr_error("[]:80", false, "\"\" is not an IPv6 address");
    assert_addr_error("fe80::1:80", false, "an IPv6 address needs brackets, e.g. [::1]:8080");
    assert_addr_error("exa mple:80", true, "\"exa mple\" is not a valid host name");
}

static void test_addr_names_need_resolve(void **state)
{
    assert_addr_error("localhost:80", false, "host \"localhost\" is not a numeric IP address");
}

static void test_addr_text_is_cut_to_fit(void **state)
{
    struct config_addr a;
    char why[128], s[200];

    memset(s, 'a', sizeof(s));
    memcpy(s + 150, ":80", 4); /* a long name needs DNS; use dns off to stop early */
    config_set_dns(false);
    assert_int_equal(config_parse_addr(s, true, &a, why, sizeof(why)), -1);
    config_set_dns(true);
    assert_non_null(strstr(why, "DNS disabled"));
}

/* ---- route matching ---- */

static const char routing_config[] = LISTEN "upstreams:\n"
                                            "  exact: {servers: 127.0.0.1:9001}\n"
                                            "  exact_api: {servers: 127.0.0.1:9002}\n"
                                            "  wild: {servers: 127.0.0.1:9003}\n"
                                            "  deep_wild: {servers: 127.0.0.1:9004}\n"
                                            "  any: {servers: 127.0.0.1:9005}\n"
                                            "  any_static: {servers: 127.0.0.1:9006}\n"
                                            "  any_static2: {servers: 127.0.0.1:9007}\n"
                                            "  v6: {servers: 127.0.0.1:9008}\n"
                                            "routes:\n"
                                            "  - upstream: any\n"
                                            "  - match: {path: /static/}\n"
                                            "    upstream: any_static\n"
                                            "  - match: {host: \"*.static.net\", path: /s}\n"
                                            "    upstream: any_static2\n"
                                            "  - match: {host: \"*.example.com\"}\n"
                                            "    upstream: wild\n"
                                            "  - match: {host: \"*.api.example.com\"}\n"
                                            "    upstream: deep_wild\n"
                                            "  - match: {host: Example.com}\n"
                                            "    upstream: exact\n"
                                            "  - match: {host: example.com, path: /api/}\n"
                                            "    upstream: exact_api\n"
                                            "  - match: {host: \"*.static.net\", path: /t}\n"
                                            "    upstream: any_static\n"
                                            "  - match: {host: \"[::1]\"}\n"
                                            "    upstream: v6\n";

static int setup_routing(void **state)
{
    struct config_errors errs;
    *state = load(routing_config, &errs);
    print_errors(&errs);
    config_errors_free(&errs);
    return *state ? 0 : -1;
}

static int teardown_routing(void **state)
{
    config_unref(*state);
    return 0;
}

static const char *route_for(void **state, const char *host, const char *path)
{
    const struct config_route *r =
        config_match_route(*state, host, host ? strlen(host) : 0, path, strlen(path));
    return r ? r->upstream->name : NULL;
}

static void test_match_exact_host_beats_wildcard_and_any(void **state)
{
    assert_string_equal(route_for(state, "example.com", "/x"), "exact");
}

static void test_match_wildcard_beats_any(void **state)
{
    assert_string_equal(route_for(state, "www.example.com", "/x"), "wild");
    assert_string_equal(route_for(state, "a.b.example.com", "/x"), "wild");
}

static void test_match_wildcard_needs_a_label_before_suffix(void **state)
{
    assert_string_equal(route_for(state, "notexample.com", "/x"), "any");
    assert_string_equal(route_for(state, ".example.com", "/x"), "any");
}

static void test_match_longer_wildcard_suffix_wins(void **state)
{
    assert_string_equal(route_for(state, "v1.api.example.com", "/x"), "deep_wild");
}

static void test_match_any_host(void **state)
{
    assert_string_equal(route_for(state, "other.org", "/x"), "any");
    assert_string_equal(route_for(state, "", "/x"), "any");
    assert_string_equal(route_for(state, NULL, "/x"), "any");
}

static void test_match_longest_path_prefix(void **state)
{
    assert_string_equal(route_for(state, "example.com", "/api/users"), "exact_api");
    assert_string_equal(route_for(state, "example.com", "/api"), "exact");
    assert_string_equal(route_for(state, "other.org", "/static/app.js"), "any_static");
}

static void test_match_host_specificity_beats_path_length(void **state)
{
    /* "/static/" on any host is longer than "/" on example.com */
    assert_string_equal(route_for(state, "example.com", "/static/app.js"), "exact");
}

static void test_match_file_order_breaks_ties(void **state)
{
    struct config *cfg = load_ok(LISTEN "upstreams:\n"
                                        "  first: {servers: 127.0.0.1:9001}\n"
                                        "  second: {servers: 127.0.0.1:9002}\n"
                                        "routes:\n"
                                        "  - match: {host: \"*.a.com\", path: /x}\n"
                                        "    upstream: first\n"
                                        "  - match: {host: \"*.a.com\", path: /y}\n"
                                        "    upstream: second\n"
                                        "  - match: {host: \"*.A.com.\", path: /x}\n"
                                        "    upstream: second\n");
    const struct config_route *r = config_match_route(cfg, "w.a.com", 7, "/x1", 3);
    assert_non_null(r);
    assert_string_equal(r->upstream->name, "first");
    config_unref(cfg);
}

static void test_match_ignores_port_in_host(void **state)
{
    assert_string_equal(route_for(state, "example.com:8080", "/api/x"), "exact_api");
    assert_string_equal(route_for(state, "www.example.com:443", "/"), "wild");
    assert_string_equal(route_for(state, "[::1]:8080", "/"), "v6");
    assert_string_equal(route_for(state, "[::1]", "/"), "v6");
}

static void test_match_is_case_insensitive(void **state)
{
    assert_string_equal(route_for(state, "EXAMPLE.Com", "/x"), "exact");
    assert_string_equal(route_for(state, "WWW.EXAMPLE.COM", "/x"), "wild");
}

static void test_match_ignores_trailing_dot(void **state)
{
    assert_string_equal(route_for(state, "example.com.", "/x"), "exact");
    assert_string_equal(route_for(state, "example.com.:80", "/x"), "exact");
}

static void test_match_path_is_case_sensitive(void **state)
{
    assert_string_equal(route_for(state, "example.com", "/API/x"), "exact");
}

static void test_match_host_length_is_respected(void **state)
{
    struct config *cfg = *state;
    /* only the first 11 bytes are the host */
    const struct config_route *r = config_match_route(cfg, "example.comXYZ", 11, "/api/", 5);
    assert_string_equal(r->upstream->name, "exact_api");
}

static void test_match_returns_null_without_candidates(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS "routes:\n"
                                                  "  - match: {host: a.com, path: /app/}\n"
                                                  "    upstream: app\n");
    assert_null(config_match_route(cfg, "b.com", 5, "/app/", 5));
    assert_null(config_match_route(cfg, "a.com", 5, "/ap", 3));
    assert_null(config_match_route(cfg, "a.com", 5, "/", 1));
    assert_non_null(config_match_route(cfg, "a.com", 5, "/app/x", 6));
    config_unref(cfg);
}

/* ---- reference counting ---- */

static void test_ref_and_unref_count(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);

    assert_int_equal(cfg->refs, 1);
    assert_ptr_equal(config_ref(cfg), cfg);
    assert_int_equal(cfg->refs, 2);
    config_unref(cfg);
    assert_int_equal(cfg->refs, 1);
    config_unref(cfg); /* frees: valgrind and ASan check there is no leak */
    assert_null(config_ref(NULL));
    config_unref(NULL);
}

static void *ref_unref_many(void *arg)
{
    for (int i = 0; i < 100000; i++)
        config_unref(config_ref(arg));
    return NULL;
}

static void test_refs_are_thread_safe(void **state)
{
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    pthread_t threads[4];

    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, ref_unref_many, cfg), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    assert_int_equal(cfg->refs, 1);
    config_unref(cfg);
}

/* ---- health checks, slow start, backups, panic mode ---- */

#define GROUP_WITH(extra)                                                                          \
    LISTEN "upstreams:\n  app:\n    servers: [\"127.0.0.1:9000\"]\n" extra ROUTES

static void test_health_absent_means_no_checks(void **state)
{
    (void)state;
    struct config *cfg = load_ok(LISTEN UPSTREAMS ROUTES);
    const struct config_upstream *up = &cfg->upstreams[0];
    assert_false(up->health.enabled);
    assert_int_equal(up->slow_start_ms, 0);
    assert_int_equal(up->num_backup, 0);
    assert_false(up->panic_mode);
    assert_false(up->servers[0].backup);
    config_unref(cfg);
}

static void test_health_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(GROUP_WITH("    health: {}\n"));
    const struct config_health *h = &cfg->upstreams[0].health;
    assert_true(h->enabled);
    assert_int_equal(h->mode, HEALTH_HTTP);
    assert_string_equal(h->path, "/");
    assert_null(h->host);
    assert_int_equal(h->interval_ms, 5000);
    assert_int_equal(h->timeout_ms, 2000);
    assert_int_equal(h->fails, 3);
    assert_int_equal(h->passes, 2);
    assert_int_equal(h->num_expect_status, 0);
    config_unref(cfg);
}

static void test_health_every_key(void **state)
{
    (void)state;
    struct config *cfg = load_ok(GROUP_WITH(
        "    health: {mode: tcp, path: /healthz?full=1, host: app.internal, interval: 250ms,\n"
        "             timeout: 100ms, fails: 5, passes: 4, expect_status: [200, 204]}\n"
        "    slow_start: 30s\n    panic_mode: true\n"));
    const struct config_upstream *up = &cfg->upstreams[0];
    assert_int_equal(up->health.mode, HEALTH_TCP);
    assert_string_equal(up->health.path, "/healthz?full=1");
    assert_string_equal(up->health.host, "app.internal");
    assert_int_equal(up->health.interval_ms, 250);
    assert_int_equal(up->health.timeout_ms, 100);
    assert_int_equal(up->health.fails, 5);
    assert_int_equal(up->health.passes, 4);
    assert_int_equal(up->health.num_expect_status, 2);
    assert_int_equal(up->health.expect_status[1], 204);
    assert_int_equal(up->slow_start_ms, 30000);
    assert_true(up->panic_mode);
    config_unref(cfg);
}

static void test_health_bad_values(void **state)
{
    (void)state;
    assert_only_error(GROUP_WITH("    health: {mode: udp}\n"),
                      "bulwark.yaml:5:20: unknown health mode \"udp\" for upstream \"app\": "
                      "expected http or tcp");
    assert_only_error(GROUP_WITH("    health: {path: \"/a b\"}\n"),
                      "bulwark.yaml:5:20: bad health path \"/a b\": expected a path starting "
                      "with \"/\", at most 1024 visible ASCII characters");
    assert_only_error(GROUP_WITH("    health: {path: health}\n"),
                      "bulwark.yaml:5:20: bad health path \"health\": expected a path starting "
                      "with \"/\", at most 1024 visible ASCII characters");
    assert_only_error(GROUP_WITH("    health: {fails: 0}\n"),
                      "bulwark.yaml:5:21: fails 0 out of range 1-1000");
    assert_only_error(GROUP_WITH("    health: {interval: 0}\n"),
                      "bulwark.yaml:5:24: interval must be at least 1ms: 0 would expire at once");
    assert_only_error(GROUP_WITH("    health: {expect_status: [200, 700]}\n"),
                      "bulwark.yaml:5:35: expect_status 700 out of range 100-599");
    assert_only_error(GROUP_WITH("    health: {intervall: 1s}\n"),
                      "bulwark.yaml:5:14: unknown key \"intervall\" in health of upstream \"app\" "
                      "(did you mean \"interval\"?)");
}

static void test_backup_servers_follow_the_primaries(void **state)
{
    (void)state;
    struct config *cfg = load_ok(
        GROUP_WITH("    backup: [\"127.0.0.1:9100\", {address: \"127.0.0.1:9101\", weight: 2}]\n"));
    const struct config_upstream *up = &cfg->upstreams[0];
    assert_int_equal(up->num_servers, 3);
    assert_int_equal(up->num_backup, 2);
    assert_false(up->servers[0].backup);
    assert_true(up->servers[1].backup);
    assert_string_equal(up->servers[2].name, "127.0.0.1:9101");
    assert_int_equal(up->servers[2].weight, 2);
    config_unref(cfg);
}

static void test_backup_cannot_also_be_a_primary(void **state)
{
    (void)state;
    assert_only_error(GROUP_WITH("    backup: [\"127.0.0.1:9000\"]\n"),
                      "bulwark.yaml:5:14: backup \"127.0.0.1:9000\" of upstream \"app\" is also "
                      "one of its servers");
    assert_only_error(GROUP_WITH("    backup: [\"nope\"]\n"),
                      "bulwark.yaml:5:14: bad address \"nope\" for backup of upstream \"app\": "
                      "missing port (expected host:port, e.g. 127.0.0.1:8080)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_absent_means_no_checks),
        cmocka_unit_test(test_health_defaults),
        cmocka_unit_test(test_health_every_key),
        cmocka_unit_test(test_health_bad_values),
        cmocka_unit_test(test_backup_servers_follow_the_primaries),
        cmocka_unit_test(test_backup_cannot_also_be_a_primary),
        cmocka_unit_test(test_loads_full_config_with_every_key),
        cmocka_unit_test(test_applies_defaults),
        cmocka_unit_test(test_route_max_body_defaults_to_client_max_body_size),
        cmocka_unit_test(test_listen_accepts_a_single_string),
        cmocka_unit_test(test_listen_star_and_empty_host_mean_any_ipv4),
        cmocka_unit_test(test_passive_checks_and_retry_budget_defaults),
        cmocka_unit_test(test_passive_checks_and_retry_budget_are_read),
        cmocka_unit_test(test_bad_passive_checks_and_retry_budget_are_refused),
        cmocka_unit_test(test_slow_client_defences_default_on),
        cmocka_unit_test(test_slow_client_defences_are_read),
        cmocka_unit_test(test_bad_slow_client_defences_are_refused),
        cmocka_unit_test(test_programs_are_read_with_defaults),
        cmocka_unit_test(test_bad_programs_are_refused),
        cmocka_unit_test(test_program_user_and_group_are_resolved),
        cmocka_unit_test(test_unknown_program_user_or_group_is_refused),
        cmocka_unit_test(test_program_user_needs_root),
        cmocka_unit_test(test_follow_symlinks_defaults_true_and_is_read),
        cmocka_unit_test(test_follow_symlinks_off_needs_check_script),
        cmocka_unit_test(test_keepalive_accepts_a_plain_number),
        cmocka_unit_test(test_keepalive_max_requests_zero_means_no_limit),
        cmocka_unit_test(test_keepalive_max_requests_out_of_range),
        cmocka_unit_test(test_hash_key_uri_and_client_ip),
        cmocka_unit_test(test_access_log_off_and_stderr),
        cmocka_unit_test(test_route_ipv6_host_is_bracketed),
        cmocka_unit_test(test_resolves_dns_names_preferring_ipv4),
        cmocka_unit_test(test_dns_disabled_makes_names_an_error),
        cmocka_unit_test(test_unresolvable_server_is_a_warning_not_an_error),
        cmocka_unit_test(test_unresolvable_listen_address_stays_an_error),
        cmocka_unit_test(test_unresolvable_admin_address_stays_an_error),
        cmocka_unit_test(test_resolved_config_has_no_warnings),
        cmocka_unit_test(test_admin_as_a_string_has_no_token),
        cmocka_unit_test(test_admin_mapping_with_address_and_token),
        cmocka_unit_test(test_admin_mapping_needs_address),
        cmocka_unit_test(test_admin_unknown_key_suggests),
        cmocka_unit_test(test_admin_token_with_space_is_an_error),
        cmocka_unit_test(test_admin_list_is_wrong_type),
        cmocka_unit_test(test_public_admin_without_token_is_a_warning),
        cmocka_unit_test(test_errors_defaults),
        cmocka_unit_test(test_errors_section_with_pages),
        cmocka_unit_test(test_error_page_relative_to_the_config_file),
        cmocka_unit_test(test_unreadable_error_page_is_an_error),
        cmocka_unit_test(test_error_page_status_out_of_range),
        cmocka_unit_test(test_error_page_must_be_a_regular_file),
        cmocka_unit_test(test_ring_size_out_of_range),
        cmocka_unit_test(test_errors_unknown_key_suggests),
        cmocka_unit_test(test_probe_at_start_defaults_to_on),
        cmocka_unit_test(test_log_format_json),
        cmocka_unit_test(test_unknown_log_format_suggests),
        cmocka_unit_test(test_load_reads_a_file),
        cmocka_unit_test(test_load_reports_a_file_that_cannot_be_opened),
        cmocka_unit_test(test_load_reports_a_directory),

        cmocka_unit_test(test_bad_duration_points_at_value),
        cmocka_unit_test(test_duration_overflow_is_an_error),
        cmocka_unit_test(test_zero_timeout_is_refused_with_its_position),
        cmocka_unit_test(test_zero_timeout_in_any_unit_is_refused),
        cmocka_unit_test(test_every_timeout_key_refuses_zero),
        cmocka_unit_test(test_smallest_timeout_is_accepted),
        cmocka_unit_test(test_unknown_key_suggests_close_name),
        cmocka_unit_test(test_unknown_key_without_close_name_has_no_suggestion),
        cmocka_unit_test(test_unknown_key_in_nested_mapping_points_at_key),
        cmocka_unit_test(test_unknown_key_in_client_suggests_transposition),
        cmocka_unit_test(test_route_to_unknown_upstream_lists_defined_ones),
        cmocka_unit_test(test_port_out_of_range),
        cmocka_unit_test(test_duplicate_key_points_at_second),
        cmocka_unit_test(test_duplicate_upstream_name),
        cmocka_unit_test(test_yaml_syntax_error_has_libyaml_position),
        cmocka_unit_test(test_yaml_bad_indentation_is_a_syntax_error),
        cmocka_unit_test(test_invalid_utf8_reports_line_and_column),
        cmocka_unit_test(test_listen_mapping_is_wrong_type),
        cmocka_unit_test(test_missing_required_keys_are_all_reported),
        cmocka_unit_test(test_empty_file_is_an_error),
        cmocka_unit_test(test_top_level_list_is_an_error),
        cmocka_unit_test(test_second_yaml_document_is_an_error),
        cmocka_unit_test(test_empty_listen_list_is_an_error),
        cmocka_unit_test(test_null_value_is_reported_as_nothing),
        cmocka_unit_test(test_duplicate_listen_address),
        cmocka_unit_test(test_workers_out_of_range),
        cmocka_unit_test(test_workers_not_a_number),
        cmocka_unit_test(test_bad_size),
        cmocka_unit_test(test_size_out_of_range_shows_bytes),
        cmocka_unit_test(test_request_line_below_minimum),
        cmocka_unit_test(test_size_overflow_is_an_error),
        cmocka_unit_test(test_bad_boolean),
        cmocka_unit_test(test_section_of_wrong_type),
        cmocka_unit_test(test_error_log_cannot_be_off),
        cmocka_unit_test(test_unknown_balance_suggests),
        cmocka_unit_test(test_bad_hash_key),
        cmocka_unit_test(test_weight_out_of_range),
        cmocka_unit_test(test_server_mapping_needs_address),
        cmocka_unit_test(test_retries_out_of_range),
        cmocka_unit_test(test_keepalive_list_is_wrong_type),
        cmocka_unit_test(test_upstream_without_servers),
        cmocka_unit_test(test_empty_servers_list),
        cmocka_unit_test(test_bad_upstream_name),
        cmocka_unit_test(test_server_cannot_be_any_address),
        cmocka_unit_test(test_ipv6_without_brackets),
        cmocka_unit_test(test_route_path_must_start_with_slash),
        cmocka_unit_test(test_route_host_with_port),
        cmocka_unit_test(test_route_bad_wildcard),
        cmocka_unit_test(test_route_without_upstream),
        cmocka_unit_test(test_empty_routes_list),
        cmocka_unit_test(test_nul_character_in_scalar),
        cmocka_unit_test(test_non_scalar_key),
        cmocka_unit_test(test_collects_multiple_errors_in_file_order),
        cmocka_unit_test(test_errors_are_appended_to_existing_ones),
        cmocka_unit_test(test_null_input_is_an_empty_config),
        cmocka_unit_test(test_long_values_are_cut_in_messages),

        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_zero_alone_is_allowed),
        cmocka_unit_test(test_duration_rejects_bad_syntax),
        cmocka_unit_test(test_duration_overflow_of_uint32_ms),
        cmocka_unit_test(test_size_units_are_binary_and_case_insensitive),
        cmocka_unit_test(test_size_rejects_bad_syntax),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_addr_ipv4_and_ipv6),
        cmocka_unit_test(test_addr_any_forms),
        cmocka_unit_test(test_addr_port_errors),
        cmocka_unit_test(test_addr_host_errors),
        cmocka_unit_test(test_addr_names_need_resolve),
        cmocka_unit_test(test_addr_text_is_cut_to_fit),

        cmocka_unit_test_setup_teardown(test_match_exact_host_beats_wildcard_and_any, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_wildcard_beats_any, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_wildcard_needs_a_label_before_suffix,
                                        setup_routing, teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_longer_wildcard_suffix_wins, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_any_host, setup_routing, teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_longest_path_prefix, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_host_specificity_beats_path_length,
                                        setup_routing, teardown_routing),
        cmocka_unit_test(test_match_file_order_breaks_ties),
        cmocka_unit_test_setup_teardown(test_match_ignores_port_in_host, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_is_case_insensitive, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_ignores_trailing_dot, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_path_is_case_sensitive, setup_routing,
                                        teardown_routing),
        cmocka_unit_test_setup_teardown(test_match_host_length_is_respected, setup_routing,
                                        teardown_routing),
        cmocka_unit_test(test_match_returns_null_without_candidates),

        cmocka_unit_test(test_ref_and_unref_count),
        cmocka_unit_test(test_refs_are_thread_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
