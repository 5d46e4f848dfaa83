/* Loading a config: the entry points, the top level and its small sections
 * (listen, admin, client, forwarded, log, errors), error hand-over and
 * reference counting. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"

/* A config is a few KiB. Refusing anything over 16 MiB stops a mistyped -c
 * (a log file, /dev/zero) from eating memory before the first error. */
#define MAX_FILE_BYTES (16u << 20)

enum top_key {
    TOP_WORKERS,
    TOP_LISTEN,
    TOP_ADMIN,
    TOP_SHUTDOWN_TIMEOUT,
    TOP_TUNNEL_TIMEOUT,
    TOP_CLIENT,
    TOP_FORWARDED,
    TOP_LOG,
    TOP_ERRORS,
    TOP_PROBE_AT_START,
    TOP_MAX_CONNECTIONS,
    TOP_UPSTREAMS,
    TOP_ROUTES,
    TOP_PROGRAMS,
    TOP_TRUSTED_PROXIES,
    TOP_ALLOW,
    TOP_DENY,
    TOP_CONN_LIMIT,
    TOP_RATE_LIMIT,
    TOP_RATE_LIMIT_TABLE_SIZE,
    NUM_TOP_KEYS
};

/* clang-format off */
static const char *const top_keys[NUM_TOP_KEYS] = {
    [TOP_WORKERS] = "workers",
    [TOP_LISTEN] = "listen",
    [TOP_ADMIN] = "admin",
    [TOP_SHUTDOWN_TIMEOUT] = "shutdown_timeout",
    [TOP_TUNNEL_TIMEOUT] = "tunnel_timeout",
    [TOP_CLIENT] = "client",
    [TOP_FORWARDED] = "forwarded",
    [TOP_LOG] = "log",
    [TOP_ERRORS] = "errors",
    [TOP_PROBE_AT_START] = "probe_at_start",
    [TOP_MAX_CONNECTIONS] = "max_connections",
    [TOP_UPSTREAMS] = "upstreams",
    [TOP_ROUTES] = "routes",
    [TOP_PROGRAMS] = "programs",
    [TOP_TRUSTED_PROXIES] = "trusted_proxies",
    [TOP_ALLOW] = "allow",
    [TOP_DENY] = "deny",
    [TOP_CONN_LIMIT] = "conn_limit",
    [TOP_RATE_LIMIT] = "rate_limit",
    [TOP_RATE_LIMIT_TABLE_SIZE] = "rate_limit_table_size",
};
/* clang-format on */

static void set_defaults(struct config *cfg)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    cfg->workers = cpus < 1 ? 1 : cpus > 256 ? 256 : (int)cpus;
    cfg->client_header_timeout_ms = 10 * 1000;
    cfg->client_body_timeout_ms = 60 * 1000;
    cfg->keepalive_timeout_ms = 75 * 1000;
    cfg->send_timeout_ms = 60 * 1000;
    cfg->tunnel_timeout_ms = 60 * 60 * 1000;
    cfg->shutdown_timeout_ms = 30 * 1000;
    cfg->max_request_line = 8192;
    cfg->max_header_bytes = 16384;
    cfg->max_body_bytes = 1ull << 30;
    cfg->min_body_rate_bytes = 1024;
    cfg->min_body_rate_per_ms = 10 * 1000;
    cfg->max_header_connections = CONFIG_AUTO;
    cfg->reclaim_idle_pct = 90;
    cfg->x_forwarded_for = true;
    cfg->x_forwarded_proto = true;
    cfg->x_forwarded_host = true;
    cfg->via = true;
    cfg->log_format = LOG_FORMAT_COMBINED;
    cfg->error_ring_size = 100;
    cfg->probe_at_start = true;
    cfg->conn_limit.max_keys = LIMIT_DEFAULT_MAX_KEYS;
    cfg->rate_limit_table_size = CONFIG_RATE_TABLE_DEFAULT;
}

/* A listen entry: "host:port", or {address: "host:port", proxy_protocol: true}. */
static const yaml_node_t *listen_entry(struct cfg_ctx *ctx, const yaml_node_t *item,
                                       bool *proxy_protocol)
{
    static const char *const keys[] = {"address", "proxy_protocol"};
    yaml_node_t *v[2];

    *proxy_protocol = false;
    if (item->type != YAML_MAPPING_NODE)
        return item;
    if (!cfg_fields(ctx, item, "listen entry", keys, 2, v))
        return NULL;
    cfg_get_bool(ctx, v[1], "proxy_protocol", proxy_protocol);
    if (!v[0])
        cfg_error(ctx, item, "missing required key \"address\" in listen entry");
    else if (*proxy_protocol && cidr_list_empty(&ctx->cfg->trusted_proxies))
        cfg_error(ctx, v[1],
                  "proxy_protocol on %s needs trusted_proxies: the addresses of the load "
                  "balancers allowed to send the PROXY header",
                  cfg_describe(v[0]).s);
    return v[0];
}

static void load_listen(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;
    yaml_node_item_t *items = NULL;
    bool single = false;
    size_t count;
    int *lines;

    if (n->type == YAML_SCALAR_NODE && !cfg_node_is_null(n)) {
        /* One address may be written without the list brackets. */
        single = true;
        count = 1;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        items = n->data.sequence.items.start;
        count = (size_t)(n->data.sequence.items.top - items);
    } else {
        cfg_error(ctx, n, "listen: expected a list of addresses, got %s", cfg_describe(n).s);
        return;
    }
    if (count == 0) {
        cfg_error(ctx, n, "listen: needs at least one address");
        return;
    }
    cfg->listen = cfg_calloc(ctx, count, sizeof(*cfg->listen));
    lines = cfg_calloc(ctx, count, sizeof(*lines));
    cfg->listen_proxy_protocol = cfg_calloc(ctx, count, sizeof(*cfg->listen_proxy_protocol));
    if (!cfg->listen || !lines || !cfg->listen_proxy_protocol) {
        free(lines);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = single ? n : cfg_node(ctx, items[i]);
        struct config_addr *addr = &cfg->listen[cfg->num_listen];
        const yaml_node_t *address;
        bool proxy_protocol;
        size_t j;

        address = listen_entry(ctx, item, &proxy_protocol);
        if (!address || !cfg_get_addr(ctx, address, "listen", true, addr))
            continue;
        for (j = 0; j < cfg->num_listen; j++)
            if (cfg->listen[j].len == addr->len &&
                !memcmp(&cfg->listen[j].ss, &addr->ss, addr->len))
                break;
        if (j < cfg->num_listen) {
            cfg_error(ctx, item, "listen address %s is listed twice (first at line %d)",
                      cfg_quote(addr->text).s, lines[j]);
            continue;
        }
        cfg->listen_proxy_protocol[cfg->num_listen] = proxy_protocol;
        lines[cfg->num_listen++] = (int)item->start_mark.line + 1;
    }
    free(lines);
}

enum client_key {
    CLIENT_HEADER_TIMEOUT,
    CLIENT_BODY_TIMEOUT,
    CLIENT_KEEPALIVE_TIMEOUT,
    CLIENT_SEND_TIMEOUT,
    CLIENT_MAX_REQUEST_LINE,
    CLIENT_MAX_HEADER_SIZE,
    CLIENT_MAX_BODY_SIZE,
    CLIENT_MIN_BODY_RATE,
    CLIENT_MAX_HEADER_CONNECTIONS,
    CLIENT_RECLAIM_IDLE_AT,
    NUM_CLIENT_KEYS
};

/* clang-format off */
static const char *const client_keys[NUM_CLIENT_KEYS] = {
    [CLIENT_HEADER_TIMEOUT] = "header_timeout",
    [CLIENT_BODY_TIMEOUT] = "body_timeout",
    [CLIENT_KEEPALIVE_TIMEOUT] = "keepalive_timeout",
    [CLIENT_SEND_TIMEOUT] = "send_timeout",
    [CLIENT_MAX_REQUEST_LINE] = "max_request_line",
    [CLIENT_MAX_HEADER_SIZE] = "max_header_size",
    [CLIENT_MAX_BODY_SIZE] = "max_body_size",
    [CLIENT_MIN_BODY_RATE] = "min_body_rate",
    [CLIENT_MAX_HEADER_CONNECTIONS] = "max_header_connections",
    [CLIENT_RECLAIM_IDLE_AT] = "reclaim_idle_at",
};
/* clang-format on */

/* client.min_body_rate: {bytes: 1k, per: 10s}. A slow-body attack sends a
 * large Content-Length and then a few bytes now and then, each gap under
 * body_timeout: only a rate over the whole body catches it. */
static void load_min_body_rate(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    static const char *const keys[] = {"bytes", "per"};
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[2];
    uint64_t bytes = cfg->min_body_rate_bytes;

    if (!n)
        return;
    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "min_body_rate: expected a mapping such as {bytes: 1k, per: 10s}, got %s",
                  cfg_describe(n).s);
        return;
    }
    if (!cfg_fields(ctx, n, "min_body_rate", keys, 2, v))
        return;
    if (cfg_get_size(ctx, v[0], "bytes", 0, 1u << 30, &bytes))
        cfg->min_body_rate_bytes = (uint32_t)bytes;
    cfg_get_timeout(ctx, v[1], "per", &cfg->min_body_rate_per_ms);
}

/* client.max_header_connections: a number, or "auto" (the default). */
static void load_max_header_connections(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    if (n && n->type == YAML_SCALAR_NODE && strcmp((const char *)n->data.scalar.value, "auto") == 0)
        return;
    cfg_get_int(ctx, n, "max_header_connections", 0, 10000000, &ctx->cfg->max_header_connections);
}

/* client.reclaim_idle_at: "90%", a whole percentage from 0% (never) to 100%. */
static void load_reclaim_idle_at(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    if (!n)
        return;
    const char *s = cfg_scalar(ctx, n, "reclaim_idle_at", "a percentage (e.g. 90%)");
    if (!s)
        return;
    size_t len = strlen(s);
    char num[16];
    long long v;
    if (len < 2 || len > sizeof(num) || s[len - 1] != '%') {
        cfg_error(ctx, n, "bad reclaim_idle_at %s: expected a percentage such as 90%%",
                  cfg_quote(s).s);
        return;
    }
    memcpy(num, s, len - 1);
    num[len - 1] = '\0';
    if (cfg_parse_int(num, &v) != CFG_PARSE_OK || v < 0 || v > 100) {
        cfg_error(ctx, n, "bad reclaim_idle_at %s: expected a whole percentage from 0%% to 100%%",
                  cfg_quote(s).s);
        return;
    }
    ctx->cfg->reclaim_idle_pct = (int)v;
}

static void load_client(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[NUM_CLIENT_KEYS];
    uint64_t line = cfg->max_request_line, header = cfg->max_header_bytes;

    if (!cfg_fields(ctx, n, "client", client_keys, NUM_CLIENT_KEYS, v))
        return;
    cfg_get_timeout(ctx, v[CLIENT_HEADER_TIMEOUT], "header_timeout",
                    &cfg->client_header_timeout_ms);
    cfg_get_timeout(ctx, v[CLIENT_BODY_TIMEOUT], "body_timeout", &cfg->client_body_timeout_ms);
    cfg_get_timeout(ctx, v[CLIENT_KEEPALIVE_TIMEOUT], "keepalive_timeout",
                    &cfg->keepalive_timeout_ms);
    cfg_get_timeout(ctx, v[CLIENT_SEND_TIMEOUT], "send_timeout", &cfg->send_timeout_ms);
    /* The upper bounds are the proxy's 64 KiB I/O buffers: a request line or
     * header section must fit in one. */
    if (cfg_get_size(ctx, v[CLIENT_MAX_REQUEST_LINE], "max_request_line", 256, 65536, &line))
        cfg->max_request_line = (size_t)line;
    if (cfg_get_size(ctx, v[CLIENT_MAX_HEADER_SIZE], "max_header_size", 1024, 65536, &header))
        cfg->max_header_bytes = (size_t)header;
    cfg_get_size(ctx, v[CLIENT_MAX_BODY_SIZE], "max_body_size", 0, UINT64_MAX,
                 &cfg->max_body_bytes);
    load_min_body_rate(ctx, v[CLIENT_MIN_BODY_RATE]);
    load_max_header_connections(ctx, v[CLIENT_MAX_HEADER_CONNECTIONS]);
    load_reclaim_idle_at(ctx, v[CLIENT_RECLAIM_IDLE_AT]);
}

static void load_forwarded(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    static const char *const keys[] = {"x_forwarded_for", "x_forwarded_proto", "x_forwarded_host",
                                       "via"};
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[4];

    if (!cfg_fields(ctx, n, "forwarded", keys, 4, v))
        return;
    cfg_get_bool(ctx, v[0], keys[0], &cfg->x_forwarded_for);
    cfg_get_bool(ctx, v[1], keys[1], &cfg->x_forwarded_proto);
    cfg_get_bool(ctx, v[2], keys[2], &cfg->x_forwarded_host);
    cfg_get_bool(ctx, v[3], keys[3], &cfg->via);
}

static void load_log(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    static const char *const keys[] = {"access", "error", "format"};
    static const char *const formats[] = {
        [LOG_FORMAT_COMBINED] = "combined", [LOG_FORMAT_JSON] = "json"};
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[3];
    const char *s;

    if (!cfg_fields(ctx, n, "log", keys, 3, v))
        return;
    if (v[0] && (s = cfg_scalar(ctx, v[0], "access", "a file path, \"stderr\" or \"off\""))) {
        if (!*s)
            cfg_error(ctx, v[0], "access: expected a file path, \"stderr\" or \"off\", got \"\"");
        else if (strcmp(s, "off") == 0)
            cfg->access_log_off = true;
        else if (strcmp(s, "stderr") != 0)
            cfg->access_log = cfg_strdup(ctx, s);
    }
    if (v[1] && (s = cfg_scalar(ctx, v[1], "error", "a file path or \"stderr\""))) {
        if (!*s)
            cfg_error(ctx, v[1], "error: expected a file path or \"stderr\", got \"\"");
        else if (strcmp(s, "off") == 0)
            cfg_error(ctx, v[1], "the error log cannot be \"off\": use \"stderr\" or a file path");
        else if (strcmp(s, "stderr") != 0)
            cfg->error_log = cfg_strdup(ctx, s);
    }
    if (v[2] && (s = cfg_scalar(ctx, v[2], "format", "combined or json"))) {
        size_t i;
        for (i = 0; i < 2 && strcmp(s, formats[i]) != 0; i++)
            ;
        if (i < 2) {
            cfg->log_format = (enum log_format)i;
        } else {
            const char *hint = cfg_suggest(s, formats, 2);
            cfg_error(ctx, v[2], "unknown log format %s: expected combined or json%s%s%s",
                      cfg_quote(s).s, hint ? " (did you mean \"" : "", hint ? hint : "",
                      hint ? "\"?)" : "");
        }
    }
}

static bool is_loopback(const struct config_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr) >> 24) == 127;
    if (a->ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
    return false;
}

/* admin: "127.0.0.1:9901", or {address: "127.0.0.1:9901", token: "secret"}. */
static void load_admin(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    static const char *const keys[] = {"address", "token"};
    struct config *cfg = ctx->cfg;
    const yaml_node_t *address = n;
    yaml_node_t *v[2] = {NULL, NULL};

    if (n->type == YAML_MAPPING_NODE) {
        cfg_fields(ctx, n, "admin", keys, 2, v);
        if (!v[0]) {
            cfg_error(ctx, n, "missing required key \"address\" in admin");
            return;
        }
        address = v[0];
    } else if (n->type != YAML_SCALAR_NODE) {
        cfg_error(ctx, n, "admin: expected an address or a mapping with address and token, got %s",
                  cfg_describe(n).s);
        return;
    }
    if (v[1]) {
        const char *t = cfg_scalar(ctx, v[1], "token", "a string of visible characters");
        bool ok = t && *t;
        /* It travels in a header: no spaces, controls or non-ASCII. */
        for (const char *p = t; ok && *p; p++)
            ok = *p > 0x20 && *p < 0x7f;
        if (t && !ok)
            cfg_error(ctx, v[1],
                      "token: expected a string of visible ASCII characters without spaces");
        else if (t)
            cfg->admin_token = cfg_strdup(ctx, t);
    }
    cfg->has_admin = cfg_get_addr(ctx, address, "admin", true, &cfg->admin);
    if (cfg->has_admin && !cfg->admin_token && !is_loopback(&cfg->admin))
        cfg_warning(ctx, address,
                    "admin listens on %s, not a loopback address, without a token: anyone who "
                    "can reach it can read /status and /errors; set admin.token",
                    cfg_quote(cfg->admin.text).s);
}

/* Resolve a page path relative to the config file's directory. */
static void page_path(const struct cfg_ctx *ctx, const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(ctx->name, '/');
    if (path[0] == '/' || !slash)
        snprintf(out, cap, "%s", path);
    else
        snprintf(out, cap, "%.*s/%s", (int)(slash - ctx->name), ctx->name, path);
}

static void load_page(struct cfg_ctx *ctx, struct config_error_page *page, const yaml_node_t *n)
{
    char full[4096];
    const char *path = cfg_scalar(ctx, n, "error page", "a file path");
    struct stat st;
    int fd;

    if (!path)
        return;
    page_path(ctx, path, full, sizeof(full));
    /* O_NONBLOCK: a FIFO named by mistake must not hang the load. */
    fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        cfg_error(ctx, n, "cannot read error page %s: %s", cfg_quote(full).s, strerror(errno));
        return;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        cfg_error(ctx, n, "cannot read error page %s: not a regular file", cfg_quote(full).s);
        close(fd);
        return;
    }
    if (st.st_size > CONFIG_MAX_ERROR_PAGE_BYTES) {
        cfg_error(ctx, n, "error page %s is %lld bytes: at most %d", cfg_quote(full).s,
                  (long long)st.st_size, CONFIG_MAX_ERROR_PAGE_BYTES);
        close(fd);
        return;
    }
    page->body = cfg_calloc(ctx, 1, (size_t)st.st_size + 1);
    page->path = cfg_strdup(ctx, full);
    size_t len = 0;
    while (page->body && len < (size_t)st.st_size) {
        ssize_t got = read(fd, page->body + len, (size_t)st.st_size - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            cfg_error(ctx, n, "cannot read error page %s: %s", cfg_quote(full).s, strerror(errno));
            break;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    page->len = len;
    close(fd);
}

static void load_pages(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;
    size_t count;

    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "pages: expected a mapping of status codes to files, got %s",
                  cfg_describe(n).s);
        return;
    }
    count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    cfg->error_pages = cfg_calloc(ctx, count, sizeof(*cfg->error_pages));
    if (!cfg->error_pages)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cfg_node(ctx, p->key);
        int status = 0;
        size_t i;

        if (!k || !cfg_get_int(ctx, k, "error page status", 400, 599, &status))
            continue;
        for (i = 0; i < cfg->num_error_pages && cfg->error_pages[i].status != status; i++)
            ;
        if (i < cfg->num_error_pages) {
            cfg_error(ctx, k, "duplicate key \"%d\" in pages", status);
            continue;
        }
        struct config_error_page *page = &cfg->error_pages[cfg->num_error_pages++];
        page->status = status;
        load_page(ctx, page, cfg_node(ctx, p->value));
    }
}

static void load_errors(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    static const char *const keys[] = {"expose_details", "ring_size", "pages"};
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[3];

    if (!cfg_fields(ctx, n, "errors", keys, 3, v))
        return;
    cfg_get_bool(ctx, v[0], keys[0], &cfg->expose_details);
    /* Each kept error is ~1-2 KiB of JSON: 100000 bounds it near 200 MiB. */
    cfg_get_int(ctx, v[1], keys[1], 1, 100000, &cfg->error_ring_size);
    if (v[2])
        load_pages(ctx, v[2]);
}

static void load_top(struct cfg_ctx *ctx, const yaml_node_t *root)
{
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[NUM_TOP_KEYS];
    static const enum top_key required[] = {TOP_LISTEN, TOP_UPSTREAMS, TOP_ROUTES};

    if (root->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, root,
                  "expected a mapping with listen, upstreams and routes at the top level, got %s",
                  cfg_describe(root).s);
        return;
    }
    cfg_fields(ctx, root, "top level", top_keys, NUM_TOP_KEYS, v);
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!v[required[i]])
            cfg_error(ctx, root, "missing required key \"%s\" in top level", top_keys[required[i]]);

    cfg_get_int(ctx, v[TOP_WORKERS], "workers", 1, 256, &cfg->workers);
    /* trusted_proxies before listen: a PROXY protocol listener needs it. */
    cfg_get_cidr_list(ctx, v[TOP_TRUSTED_PROXIES], "trusted_proxies", &cfg->trusted_proxies);
    cfg_get_cidr_list(ctx, v[TOP_ALLOW], "allow", &cfg->allow);
    cfg_get_cidr_list(ctx, v[TOP_DENY], "deny", &cfg->deny);
    if (v[TOP_CONN_LIMIT])
        cfg_load_conn_limit(ctx, v[TOP_CONN_LIMIT], 0, &cfg->conn_limit);
    if (v[TOP_LISTEN])
        load_listen(ctx, v[TOP_LISTEN]);
    if (v[TOP_ADMIN])
        load_admin(ctx, v[TOP_ADMIN]);
    cfg_get_timeout(ctx, v[TOP_SHUTDOWN_TIMEOUT], "shutdown_timeout", &cfg->shutdown_timeout_ms);
    cfg_get_timeout(ctx, v[TOP_TUNNEL_TIMEOUT], "tunnel_timeout", &cfg->tunnel_timeout_ms);
    /* client before routes: its max_body_size is the routes' default. */
    if (v[TOP_CLIENT])
        load_client(ctx, v[TOP_CLIENT]);
    if (v[TOP_FORWARDED])
        load_forwarded(ctx, v[TOP_FORWARDED]);
    if (v[TOP_LOG])
        load_log(ctx, v[TOP_LOG]);
    if (v[TOP_ERRORS])
        load_errors(ctx, v[TOP_ERRORS]);
    cfg_get_bool(ctx, v[TOP_PROBE_AT_START], "probe_at_start", &cfg->probe_at_start);
    int max_connections = 0;
    if (cfg_get_int(ctx, v[TOP_MAX_CONNECTIONS], "max_connections", 0, 10000000, &max_connections))
        cfg->max_connections = (uint32_t)max_connections;
    /* The default rate limit before routes: they point to it. */
    if (v[TOP_RATE_LIMIT])
        cfg_load_rate_limit(ctx, &cfg->rate_limit, "default", v[TOP_RATE_LIMIT], NULL);
    /* 16 bytes a key: the default million is 16 MiB; 100 million (1.6 GiB)
     * is more than one machine should hold for this. */
    int table_size = 0;
    if (v[TOP_RATE_LIMIT_TABLE_SIZE] &&
        cfg_get_int(ctx, v[TOP_RATE_LIMIT_TABLE_SIZE], "rate_limit_table_size", 1024, 100000000,
                    &table_size))
        cfg->rate_limit_table_size = (uint32_t)table_size;
    /* upstreams before routes: routes point into them. */
    if (v[TOP_UPSTREAMS])
        cfg_load_upstreams(ctx, v[TOP_UPSTREAMS]);
    if (v[TOP_ROUTES])
        cfg_load_routes(ctx, v[TOP_ROUTES]);
    if (v[TOP_PROGRAMS])
        cfg_load_programs(ctx, v[TOP_PROGRAMS]);
}

static void syntax_error(struct cfg_ctx *ctx, const yaml_parser_t *parser,
                         const unsigned char *data, size_t len)
{
    int line = (int)parser->problem_mark.line + 1;
    int column = (int)parser->problem_mark.column + 1;
    const char *problem = parser->problem ? parser->problem : "cannot parse";
    char detail[160] = "";

    if (parser->error == YAML_MEMORY_ERROR) {
        ctx->out_of_memory = true;
        return;
    }
    if (parser->error == YAML_READER_ERROR) {
        /* The reader reports a byte offset, not a line and column. */
        line = column = 1;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
            if (data[i] == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
        if (parser->problem_value != -1)
            snprintf(detail, sizeof(detail), " (byte 0x%02x)", parser->problem_value & 0xff);
    } else if (parser->context) {
        snprintf(detail, sizeof(detail), " (%s at line %d, column %d)", parser->context,
                 (int)parser->context_mark.line + 1, (int)parser->context_mark.column + 1);
    }
    cfg_error_at(ctx, line, column, "YAML syntax error: %s%s", problem, detail);
}

static int by_position(const void *a, const void *b)
{
    const struct cfg_pending_error *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void push_error(struct config_errors *errs, char *text)
{
    struct config_error *grown;

    if (!text)
        return;
    if (!errs) {
        free(text);
        return;
    }
    grown = realloc(errs->items, (errs->count + 1) * sizeof(*grown));
    if (!grown) {
        free(text);
        return;
    }
    errs->items = grown;
    errs->items[errs->count++].text = text;
}

static void file_error(struct config_errors *errs, const char *name, const char *what,
                       const char *why)
{
    size_t need = strlen(name) + strlen(what) + strlen(why) + 8;
    char *text = malloc(need);

    if (text)
        snprintf(text, need, "%s: %s: %s", name, what, why);
    push_error(errs, text);
}

/* Hands the collected errors to the caller in file order. */
static void flush_errors(struct cfg_ctx *ctx, struct config_errors *errs)
{
    if (ctx->num_errors > 0)
        qsort(ctx->errors, ctx->num_errors, sizeof(*ctx->errors), by_position);
    for (size_t i = 0; i < ctx->num_errors; i++)
        push_error(errs, ctx->errors[i].text);
    free(ctx->errors);
    ctx->errors = NULL;
    if (ctx->out_of_memory)
        file_error(errs, ctx->name, "cannot load", "out of memory");
}

struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs)
{
    struct cfg_ctx ctx = {.name = name};
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    /* libyaml asserts on a NULL input even when it is empty. */
    const unsigned char *data = (const unsigned char *)(yaml ? yaml : "");
    struct config *cfg;
    bool failed;

    if (!yaml_parser_initialize(&parser)) {
        file_error(errs, name, "cannot load", "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, data, len);
    ctx.cfg = cfg = cfg_calloc(&ctx, 1, sizeof(*cfg));
    if (cfg) {
        set_defaults(cfg);
        cfg->path = cfg_strdup(&ctx, name);
    }
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&ctx, &parser, data, len);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        ctx.doc = &doc;
        if (!root)
            cfg_error_at(&ctx, 1, 1,
                         "empty config: expected a mapping with listen, upstreams "
                         "and routes");
        else if (cfg)
            load_top(&ctx, root);
        /* A second "---" document would be silently ignored; say so. */
        if (root) {
            if (!yaml_parser_load(&parser, &extra)) {
                syntax_error(&ctx, &parser, data, len);
            } else {
                yaml_node_t *second = yaml_document_get_root_node(&extra);
                if (second)
                    cfg_error(&ctx, second, "a second YAML document; a config is one document");
                yaml_document_delete(&extra);
            }
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);

    failed = ctx.num_errors > 0 || ctx.out_of_memory;
    flush_errors(&ctx, errs);
    if (failed) {
        if (cfg)
            cfg_free(cfg);
        return NULL;
    }
    cfg->refs = 1;
    return cfg;
}

struct config *config_load(const char *path, struct config_errors *errs)
{
    struct stat st;
    char *data = NULL;
    size_t len = 0, cap = 0;
    struct config *cfg;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        file_error(errs, path, "cannot open", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        file_error(errs, path, "cannot read", strerror(EISDIR));
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t got;
        if (len == cap) {
            char *grown;
            if (cap >= MAX_FILE_BYTES) {
                file_error(errs, path, "cannot load", "larger than 16 MiB");
                goto fail;
            }
            cap = cap ? cap * 2 : 16384;
            grown = realloc(data, cap);
            if (!grown) {
                file_error(errs, path, "cannot load", "out of memory");
                goto fail;
            }
            data = grown;
        }
        got = read(fd, data + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            file_error(errs, path, "cannot read", strerror(errno));
            goto fail;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    close(fd);
    cfg = config_load_string(path, data ? data : "", len, errs);
    free(data);
    return cfg;

fail:
    close(fd);
    free(data);
    return NULL;
}

void config_errors_free(struct config_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->items[i].text);
    free(errs->items);
    errs->items = NULL;
    errs->count = 0;
}

void cfg_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        struct config_upstream *up = &cfg->upstreams[i];
        for (size_t j = 0; j < up->num_servers; j++)
            free(up->servers[j].name);
        free(up->servers);
        free(up->name);
        free(up->hash_header);
        free(up->health.path);
        free(up->health.host);
    }
    free(cfg->upstreams);
    for (size_t i = 0; i < cfg->num_routes; i++) {
        free(cfg->routes[i].host);
        free(cfg->routes[i].path);
        free(cfg->routes[i].label);
        cidr_list_free(&cfg->routes[i].allow);
        cidr_list_free(&cfg->routes[i].deny);
        cfg_free_rate_limit(&cfg->routes[i].own_rate_limit);
        cfg_free_route_fastcgi(&cfg->routes[i]);
    }
    cfg_free_rate_limit(&cfg->rate_limit);
    free(cfg->routes);
    cfg_free_programs(cfg);
    free(cfg->listen);
    free(cfg->listen_proxy_protocol);
    cidr_list_free(&cfg->trusted_proxies);
    cidr_list_free(&cfg->allow);
    cidr_list_free(&cfg->deny);
    free(cfg->access_log);
    free(cfg->error_log);
    free(cfg->admin_token);
    for (size_t i = 0; i < cfg->num_error_pages; i++) {
        free(cfg->error_pages[i].path);
        free(cfg->error_pages[i].body);
    }
    free(cfg->error_pages);
    for (size_t i = 0; i < cfg->num_warnings; i++)
        free(cfg->warnings[i]);
    free(cfg->warnings);
    free(cfg->path);
    free(cfg);
}

struct config *config_ref(struct config *cfg)
{
    if (cfg)
        __atomic_add_fetch(&cfg->refs, 1, __ATOMIC_RELAXED);
    return cfg;
}

void config_unref(struct config *cfg)
{
    /* Release so every user's last reads happen before the free; the
     * acquire half makes the freeing thread see them. */
    if (cfg && __atomic_sub_fetch(&cfg->refs, 1, __ATOMIC_ACQ_REL) == 0)
        cfg_free(cfg);
}
