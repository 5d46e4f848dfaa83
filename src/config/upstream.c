/* The upstreams section: named groups of servers and how to use them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

enum upstream_key {
    UP_SERVERS,
    UP_BALANCE,
    UP_HASH_KEY,
    UP_CONNECT_TIMEOUT,
    UP_READ_TIMEOUT,
    UP_SEND_TIMEOUT,
    UP_RETRIES,
    UP_KEEPALIVE,
    UP_MAX_CONNS,
    UP_MAX_PENDING,
    UP_QUEUE_TIMEOUT,
    UP_MAX_FAILS,
    UP_FAIL_WINDOW,
    UP_EJECT_TIME,
    UP_FAIL_STATUS,
    UP_RETRY_BUDGET,
    UP_HEALTH,
    UP_SLOW_START,
    UP_BACKUP,
    UP_PANIC_MODE,
    UP_PROTOCOL,
    NUM_UP_KEYS
};

/* clang-format off */
static const char *const upstream_keys[NUM_UP_KEYS] = {
    [UP_SERVERS] = "servers",
    [UP_BALANCE] = "balance",
    [UP_HASH_KEY] = "hash_key",
    [UP_CONNECT_TIMEOUT] = "connect_timeout",
    [UP_READ_TIMEOUT] = "read_timeout",
    [UP_SEND_TIMEOUT] = "send_timeout",
    [UP_RETRIES] = "retries",
    [UP_KEEPALIVE] = "keepalive",
    [UP_MAX_CONNS] = "max_conns",
    [UP_MAX_PENDING] = "max_pending",
    [UP_QUEUE_TIMEOUT] = "queue_timeout",
    [UP_MAX_FAILS] = "max_fails",
    [UP_FAIL_WINDOW] = "fail_window",
    [UP_EJECT_TIME] = "eject_time",
    [UP_FAIL_STATUS] = "fail_status",
    [UP_RETRY_BUDGET] = "retry_budget",
    [UP_HEALTH] = "health",
    [UP_SLOW_START] = "slow_start",
    [UP_BACKUP] = "backup",
    [UP_PANIC_MODE] = "panic_mode",
    [UP_PROTOCOL] = "protocol",
};
/* clang-format on */

static const char *const balance_names[] = {
    [BALANCE_ROUND_ROBIN] = "round_robin",
    [BALANCE_LEAST_CONN] = "least_conn",
    [BALANCE_HASH] = "hash",
};

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* RFC 9110 5.6.2: a header name is a token. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(is_name_char(*s) || strchr("!#$%&'*+^`|~", *s)))
            return false;
    return true;
}

static void load_server(struct cfg_ctx *ctx, struct config_upstream *up, const char *list,
                        const char *where, const yaml_node_t *item)
{
    static const char *const keys[] = {"address", "weight"};
    struct config_server *srv = &up->servers[up->num_servers];
    const yaml_node_t *address = item;
    char what[320];
    int weight = 1;
    bool weight_ok = true;

    if (item->type == YAML_MAPPING_NODE) {
        yaml_node_t *v[2];
        snprintf(what, sizeof(what), "%s of %s",
                 strcmp(list, "backup") == 0 ? "backup server" : "server", where);
        cfg_fields(ctx, item, what, keys, 2, v);
        if (!v[0]) {
            cfg_error(ctx, item, "missing required key \"address\" in %s", what);
            return;
        }
        address = v[0];
        weight_ok = cfg_get_int(ctx, v[1], "weight", 1, 1000, &weight);
    }
    snprintf(what, sizeof(what), "%s of %s", list, where);
    if (!cfg_get_server_addr(ctx, address, what, &srv->addr) || !weight_ok)
        return;
    srv->name = cfg_strdup(ctx, (const char *)address->data.scalar.value);
    srv->weight = weight;
    if (srv->name)
        up->num_servers++;
}

static void load_servers(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                         const yaml_node_t *n)
{
    yaml_node_item_t *items = NULL;
    bool single = false;
    size_t count;

    if (n->type == YAML_SCALAR_NODE && !cfg_node_is_null(n)) {
        single = true; /* one server may be written without the list brackets */
        count = 1;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        items = n->data.sequence.items.start;
        count = (size_t)(n->data.sequence.items.top - items);
    } else {
        cfg_error(ctx, n, "servers of %s: expected a list of addresses, got %s", where,
                  cfg_describe(n).s);
        return;
    }
    if (count == 0) {
        cfg_error(ctx, n, "servers of %s: needs at least one server", where);
        return;
    }
    up->servers = cfg_calloc(ctx, count, sizeof(*up->servers));
    if (!up->servers)
        return;
    for (size_t i = 0; i < count; i++)
        load_server(ctx, up, "servers", where, single ? n : cfg_node(ctx, items[i]));
}

/* backup: more servers, appended after the primaries and marked. */
static void load_backups(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                         const yaml_node_t *n)
{
    yaml_node_item_t *items = NULL;
    size_t count = 1;

    if (n->type == YAML_SEQUENCE_NODE) {
        items = n->data.sequence.items.start;
        count = (size_t)(n->data.sequence.items.top - items);
    } else if (n->type != YAML_SCALAR_NODE || cfg_node_is_null(n)) {
        cfg_error(ctx, n, "backup of %s: expected a list of addresses, got %s", where,
                  cfg_describe(n).s);
        return;
    }
    struct config_server *all = realloc(up->servers, (up->num_servers + count) * sizeof(*all));
    if (!all) {
        ctx->out_of_memory = true;
        return;
    }
    memset(all + up->num_servers, 0, count * sizeof(*all));
    up->servers = all;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = items ? cfg_node(ctx, items[i]) : n;
        size_t primaries = up->num_servers - up->num_backup;
        load_server(ctx, up, "backup", where, item);
        if (up->num_servers == primaries + up->num_backup)
            continue; /* refused, reported */
        struct config_server *b = &up->servers[up->num_servers - 1];
        for (size_t j = 0; j < primaries; j++) {
            if (strcmp(up->servers[j].name, b->name) == 0) {
                /* One name is one shared state: it cannot be down as a
                 * primary and up as a backup. */
                cfg_error(ctx, item, "backup %s of %s is also one of its servers",
                          cfg_quote(b->name).s, where);
                free(b->name);
                up->num_servers--;
                b = NULL;
                break;
            }
        }
        if (b) {
            b->backup = true;
            up->num_backup++;
        }
    }
}

static void load_balance(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                         const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "balance", "round_robin, least_conn or hash");
    const char *hint;

    if (!s)
        return;
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, balance_names[i]) == 0) {
            up->balance = (enum balance)i;
            return;
        }
    }
    hint = cfg_suggest(s, balance_names, 3);
    cfg_error(ctx, n, "unknown balance %s for %s: expected round_robin, least_conn or hash%s%s%s",
              cfg_quote(s).s, where, hint ? " (did you mean \"" : "", hint ? hint : "",
              hint ? "\"?)" : "");
}

static void load_hash_key(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                          const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "hash_key", "client_ip, uri or header:NAME");

    if (!s)
        return;
    if (strcmp(s, "client_ip") == 0) {
        up->hash_key = HASH_CLIENT_IP;
    } else if (strcmp(s, "uri") == 0) {
        up->hash_key = HASH_URI;
    } else if (strncmp(s, "header:", 7) == 0 && is_token(s + 7)) {
        up->hash_key = HASH_HEADER;
        up->hash_header = cfg_strdup(ctx, s + 7);
    } else {
        cfg_error(ctx, n,
                  "bad hash_key %s for %s: expected client_ip, uri or header:NAME "
                  "(e.g. header:X-User)",
                  cfg_quote(s).s, where);
    }
}

static void load_keepalive(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                           const yaml_node_t *n)
{
    static const char *const keys[] = {"max_idle", "idle_timeout", "max_requests"};
    char what[320];
    yaml_node_t *v[3];
    int max_requests = (int)up->keepalive_max_requests;

    if (n->type == YAML_SCALAR_NODE) {
        cfg_get_int(ctx, n, "keepalive", 0, 10000, &up->keepalive_max_idle);
        return;
    }
    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n,
                  "keepalive: expected a number or a mapping with max_idle, idle_timeout and "
                  "max_requests, got %s",
                  cfg_describe(n).s);
        return;
    }
    snprintf(what, sizeof(what), "keepalive of %s", where);
    cfg_fields(ctx, n, what, keys, 3, v);
    cfg_get_int(ctx, v[0], "max_idle", 0, 10000, &up->keepalive_max_idle);
    cfg_get_timeout(ctx, v[1], "idle_timeout", &up->keepalive_idle_timeout_ms);
    if (cfg_get_int(ctx, v[2], "max_requests", 0, 1000000000, &max_requests))
        up->keepalive_max_requests = (uint32_t)max_requests;
}

/* fail_status: a list of error statuses, e.g. [500, 502, 503, 504]. */
static void load_fail_status(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                             const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        cfg_error(ctx, n,
                  "fail_status of %s: expected a list of statuses (e.g. [500, 503]), got %s", where,
                  cfg_describe(n).s);
        return;
    }
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        int status;
        if (!cfg_get_int(ctx, cfg_node(ctx, *it), "fail_status", CONFIG_STATUS_MIN,
                         CONFIG_STATUS_MAX, &status))
            continue;
        unsigned i = (unsigned)(status - CONFIG_STATUS_MIN);
        up->fail_status[i / 64] |= 1ull << (i % 64);
    }
}

/* retry_budget: "20%" (a whole percentage, 0% to 100%). */
static void load_retry_budget(struct cfg_ctx *ctx, struct config_upstream *up, const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "retry_budget", "a percentage (e.g. 20%)");
    long long v;
    char digits[16];
    size_t len;

    if (!s)
        return;
    len = strlen(s);
    if (len < 2 || len > sizeof(digits) || s[len - 1] != '%') {
        cfg_error(ctx, n, "bad retry_budget %s: expected a percentage such as 20%%",
                  cfg_quote(s).s);
        return;
    }
    memcpy(digits, s, len - 1);
    digits[len - 1] = '\0';
    if (cfg_parse_int(digits, &v) != CFG_PARSE_OK || v < 0 || v > 100) {
        cfg_error(ctx, n, "bad retry_budget %s: expected a whole percentage from 0%% to 100%%",
                  cfg_quote(s).s);
        return;
    }
    up->retry_budget_pct = (int)v;
}

/* protocol: http (default) | fastcgi. */
static void load_protocol(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                          const yaml_node_t *n)
{
    static const char *const names[] = {[PROTOCOL_HTTP] = "http", [PROTOCOL_FASTCGI] = "fastcgi"};
    const char *s = cfg_scalar(ctx, n, "protocol", "http or fastcgi");
    const char *hint;

    if (!s)
        return;
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(s, names[i]) == 0) {
            up->protocol = (enum upstream_protocol)i;
            return;
        }
    }
    hint = cfg_suggest(s, names, 2);
    cfg_error(ctx, n, "unknown protocol %s for %s: expected http or fastcgi%s%s%s", cfg_quote(s).s,
              where, hint ? " (did you mean \"" : "", hint ? hint : "", hint ? "\"?)" : "");
}

static void load_upstream(struct cfg_ctx *ctx, struct config_upstream *up, const yaml_node_t *n)
{
    yaml_node_t *v[NUM_UP_KEYS];
    char where[300];

    snprintf(where, sizeof(where), "upstream %s", cfg_quote(up->name).s);
    if (!cfg_fields(ctx, n, where, upstream_keys, NUM_UP_KEYS, v))
        return;
    if (v[UP_SERVERS])
        load_servers(ctx, up, where, v[UP_SERVERS]);
    else
        cfg_error(ctx, n, "missing required key \"servers\" in %s", where);
    if (v[UP_BALANCE])
        load_balance(ctx, up, where, v[UP_BALANCE]);
    /* hash_key without balance: hash is accepted and ignored, so switching
     * the balancer back and forth needs one edit, not two. */
    if (v[UP_HASH_KEY])
        load_hash_key(ctx, up, where, v[UP_HASH_KEY]);
    cfg_get_timeout(ctx, v[UP_CONNECT_TIMEOUT], "connect_timeout", &up->connect_timeout_ms);
    cfg_get_timeout(ctx, v[UP_READ_TIMEOUT], "read_timeout", &up->read_timeout_ms);
    cfg_get_timeout(ctx, v[UP_SEND_TIMEOUT], "send_timeout", &up->send_timeout_ms);
    cfg_get_int(ctx, v[UP_RETRIES], "retries", 0, 10, &up->retries);
    if (v[UP_KEEPALIVE])
        load_keepalive(ctx, up, where, v[UP_KEEPALIVE]);
    cfg_get_int(ctx, v[UP_MAX_CONNS], "max_conns", 0, 1000000, &up->max_conns);
    cfg_get_int(ctx, v[UP_MAX_PENDING], "max_pending", 0, 1000000, &up->max_pending);
    cfg_get_timeout(ctx, v[UP_QUEUE_TIMEOUT], "queue_timeout", &up->queue_timeout_ms);
    cfg_get_int(ctx, v[UP_MAX_FAILS], "max_fails", 0, 1000, &up->max_fails);
    cfg_get_timeout(ctx, v[UP_FAIL_WINDOW], "fail_window", &up->fail_window_ms);
    cfg_get_timeout(ctx, v[UP_EJECT_TIME], "eject_time", &up->eject_time_ms);
    if (v[UP_FAIL_STATUS])
        load_fail_status(ctx, up, where, v[UP_FAIL_STATUS]);
    if (v[UP_RETRY_BUDGET])
        load_retry_budget(ctx, up, v[UP_RETRY_BUDGET]);
    if (v[UP_PROTOCOL])
        load_protocol(ctx, up, where, v[UP_PROTOCOL]);
    /* A PHP-FPM child serves one connection, idle or not, so a FastCGI
     * group counts connections against max_conns (src/upstream) and has a
     * cap unless told otherwise: 5 is pm.max_children in the www.conf that
     * PHP ships. max_conns: 0 removes it. */
    if (up->protocol == PROTOCOL_FASTCGI && !v[UP_MAX_CONNS])
        up->max_conns = 5;
    if (v[UP_HEALTH]) /* after protocol: a FastCGI group's default check is tcp */
        cfg_load_health(ctx, up, where, v[UP_HEALTH]);
    cfg_get_duration(ctx, v[UP_SLOW_START], "slow_start", &up->slow_start_ms);
    if (v[UP_BACKUP])
        load_backups(ctx, up, where, v[UP_BACKUP]);
    cfg_get_bool(ctx, v[UP_PANIC_MODE], "panic_mode", &up->panic_mode);
}

void cfg_load_upstreams(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;
    size_t count;

    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "upstreams: expected a mapping of names to upstream groups, got %s",
                  cfg_describe(n).s);
        return;
    }
    count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0) {
        cfg_error(ctx, n, "upstreams: define at least one upstream");
        return;
    }
    /* Sized once: routes keep pointers into this array. */
    cfg->upstreams = cfg_calloc(ctx, count, sizeof(*cfg->upstreams));
    if (!cfg->upstreams)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cfg_node(ctx, p->key);
        struct config_upstream *up;
        const char *name;
        size_t i;

        if (!(name = cfg_scalar(ctx, k, "upstreams", "an upstream name")))
            continue;
        for (i = 0; i < cfg->num_upstreams && strcmp(cfg->upstreams[i].name, name) != 0; i++)
            ;
        if (i < cfg->num_upstreams) {
            cfg_error(ctx, k, "duplicate key %s in upstreams (first at line %d)", cfg_quote(name).s,
                      cfg->upstreams[i].line);
            continue;
        }
        /* A bad name is still defined, so routes naming it do not pile
         * "unknown upstream" errors on top of this one. */
        for (i = 0; name[i] && is_name_char(name[i]); i++)
            ;
        if (!*name || name[i])
            cfg_error(ctx, k,
                      "bad upstream name %s: use only letters, digits, \"_\", \".\" and \"-\"",
                      cfg_quote(name).s);

        up = &cfg->upstreams[cfg->num_upstreams];
        if (!(up->name = cfg_strdup(ctx, name)))
            return;
        up->index = cfg->num_upstreams++;
        up->line = (int)k->start_mark.line + 1;
        up->column = (int)k->start_mark.column + 1;
        up->balance = BALANCE_ROUND_ROBIN;
        up->hash_key = HASH_CLIENT_IP;
        up->connect_timeout_ms = 5 * 1000;
        up->read_timeout_ms = 60 * 1000;
        up->send_timeout_ms = 60 * 1000;
        up->retries = 2;
        up->keepalive_max_idle = 256;
        up->keepalive_idle_timeout_ms = 60 * 1000;
        /* As nginx's keepalive_requests: a connection that lives for ever
         * keeps whatever per-connection state the backend leaks; a new
         * one every 1000 exchanges costs nothing measurable. */
        up->keepalive_max_requests = 1000;
        /* No cap by default; with one, requests beyond it wait (as HAProxy's
         * queue, but bounded and answered with Retry-After when full). */
        up->max_conns = 0;
        up->max_pending = 100;
        up->queue_timeout_ms = 5 * 1000;
        /* Passive checks: five failures in ten seconds is a server in
         * trouble, not bad luck; thirty seconds out gives it time to
         * recover (nginx: max_fails 1, fail_timeout 10s, which ejects on a
         * single failure). fail_status stays empty: a 500 is often one bad
         * URL, not a bad server. */
        up->max_fails = 5;
        up->fail_window_ms = 10 * 1000;
        up->eject_time_ms = 30 * 1000;
        up->retry_budget_pct = 20;
        load_upstream(ctx, up, cfg_node(ctx, p->value));
    }
}
