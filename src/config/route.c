/* The routes section and config_match_route, the per-request lookup. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

/* Dot-separated labels of [a-z0-9_-], none empty, 253 bytes at most
 * (RFC 1035 2.3.4). The underscore is not in RFC 952 but container and
 * service names use it, and refusing them helps nobody. */
static bool valid_host_name(const char *s)
{
    size_t label = 0, len = strlen(s);

    if (len == 0 || len > 253)
        return false;
    for (; *s; s++) {
        if (*s == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_') {
            label++;
        } else {
            return false;
        }
    }
    return label > 0;
}

static bool valid_ipv6(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char bin[16];

    if (len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, bin) == 1;
}

/* A route's host in the form config_match_route compares: lowercase, no
 * trailing dot, IPv6 in brackets. NULL for "*" (any host) with *any set, or
 * NULL after an error. */
static char *normalize_host(struct cfg_ctx *ctx, const yaml_node_t *n, const char *s,
                            size_t route_no, bool *wildcard, bool *any)
{
    size_t len = strlen(s);
    char *h = malloc(len + 3);
    const char *why = "expected a name like example.com or *.example.com";
    bool ok;

    *wildcard = *any = false;
    if (!h) {
        ctx->out_of_memory = true;
        return NULL;
    }
    for (size_t i = 0; i <= len; i++)
        h[i] = ascii_lower(s[i]);
    if (len > 1 && h[len - 1] == '.')
        h[--len] = '\0';

    if (strcmp(h, "*") == 0) {
        free(h);
        *any = true;
        return NULL;
    }
    if (h[0] == '[') {
        ok = len > 2 && h[len - 1] == ']' && valid_ipv6(h + 1, len - 2);
        if (!ok && strstr(h, "]:"))
            why = "remove the port: routes match a host on any port";
    } else if (strchr(h, ':')) {
        if (valid_ipv6(h, len)) {
            memmove(h + 1, h, len);
            h[0] = '[';
            h[len + 1] = ']';
            h[len + 2] = '\0';
            return h;
        }
        ok = false;
        if (strchr(h, ':') == strrchr(h, ':'))
            why = "remove the port: routes match a host on any port";
    } else if (h[0] == '*') {
        *wildcard = true;
        ok = h[1] == '.' && valid_host_name(h + 2);
        if (!ok)
            why = "a wildcard is \"*.\" followed by a domain, e.g. *.example.com";
    } else {
        ok = valid_host_name(h);
    }
    if (!ok) {
        cfg_error(ctx, n, "bad host %s for route %zu: %s", cfg_quote(s).s, route_no, why);
        free(h);
        *wildcard = false;
        return NULL;
    }
    return h;
}

static void load_match(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                       const yaml_node_t *n)
{
    static const char *const keys[] = {"host", "path"};
    yaml_node_t *v[2];
    char where[64];
    const char *s;

    snprintf(where, sizeof(where), "match of route %zu", route_no);
    if (!cfg_fields(ctx, n, where, keys, 2, v))
        return;
    if (v[0] && (s = cfg_scalar(ctx, v[0], "host", "a host name (e.g. example.com)"))) {
        bool any;
        r->host = normalize_host(ctx, v[0], s, route_no, &r->host_wildcard, &any);
    }
    if (v[1] && (s = cfg_scalar(ctx, v[1], "path", "a path prefix (e.g. /api/)"))) {
        size_t i;
        for (i = 0; s[i] && (unsigned char)s[i] > 0x20 && s[i] != 0x7f; i++)
            ;
        if (s[0] != '/') {
            cfg_error(ctx, v[1], "bad path %s for route %zu: must start with \"/\"", cfg_quote(s).s,
                      route_no);
        } else if (s[i]) {
            cfg_error(ctx, v[1], "bad path %s for route %zu: contains a space or control character",
                      cfg_quote(s).s, route_no);
        } else {
            free(r->path);
            r->path = cfg_strdup(ctx, s);
            r->path_len = i;
        }
    }
}

static void unknown_upstream(struct cfg_ctx *ctx, const yaml_node_t *n, const char *name,
                             size_t route_no)
{
    const struct config *cfg = ctx->cfg;
    char defined[256];
    size_t len;

    len = (size_t)snprintf(defined, sizeof(defined), "defined: ");
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const char *up = cfg->upstreams[i].name;
        /* Keep room for ", ..." so a long list is visibly cut. */
        if (len + strlen(up) + 2 + 5 >= sizeof(defined)) {
            snprintf(defined + len, sizeof(defined) - len, "%s...", i ? ", " : "");
            break;
        }
        len += (size_t)snprintf(defined + len, sizeof(defined) - len, "%s%s", i ? ", " : "", up);
    }
    cfg_error(ctx, n, "route %zu refers to unknown upstream %s (%s)", route_no, cfg_quote(name).s,
              defined);
}

/* "host/path", or "*" + path for any host: a stable name for the route. */
static void route_label(struct cfg_ctx *ctx, struct config_route *r)
{
    const char *host = r->host ? r->host : "*";
    const char *path = r->path ? r->path : "/";
    size_t n = strlen(host) + strlen(path) + 1;
    r->label = cfg_calloc(ctx, n, 1);
    if (r->label)
        snprintf(r->label, n, "%s%s", host, path);
    if (r->label && r->own_rate_limit.enabled)
        r->own_rate_limit.name = cfg_strdup(ctx, r->label);
}

/* The route's own rate_limit, "off", or the top-level default. The
 * policy is named after the route once its label is known (route_label). */
static void load_route_rate_limit(struct cfg_ctx *ctx, struct config_route *r, const yaml_node_t *n)
{
    bool off = false;
    r->rate_limit = ctx->cfg->rate_limit.enabled ? &ctx->cfg->rate_limit : NULL;
    if (!n)
        return;
    cfg_load_rate_limit(ctx, &r->own_rate_limit, NULL, n, &off);
    r->rate_limit = off ? NULL : r->own_rate_limit.enabled ? &r->own_rate_limit : r->rate_limit;
}

/* ---- FastCGI route keys: root, index, params, split_path_info,
 * extensions, check_script, follow_symlinks ---- */

enum {
    FK_ROOT,
    FK_INDEX,
    FK_PARAMS,
    FK_SPLIT,
    FK_EXTENSIONS,
    FK_CHECK_SCRIPT,
    FK_FOLLOW_SYMLINKS,
    NUM_FK
};
static const char *const fastcgi_keys[NUM_FK] = {
    "root", "index", "params", "split_path_info", "extensions", "check_script", "follow_symlinks",
};

/* A string that becomes part of a file name or a param: no NUL (the
 * scalar reader refuses it) and no control characters. */
static bool plain_text(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static void load_root(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                      const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "root", "an absolute directory (e.g. /var/www/html)");
    if (!s)
        return;
    size_t len = strlen(s);
    if (s[0] != '/' || !plain_text(s) || strstr(s, "/../") || strstr(s, "/./") ||
        (len >= 3 && strcmp(s + len - 3, "/..") == 0)) {
        cfg_error(ctx, n,
                  "bad root %s for route %zu: expected an absolute directory without \".\" or "
                  "\"..\" segments (e.g. /var/www/html)",
                  cfg_quote(s).s, route_no);
        return;
    }
    while (len > 1 && s[len - 1] == '/')
        len--; /* the script name brings its own "/" */
    r->root = cfg_calloc(ctx, len + 1, 1);
    if (r->root)
        memcpy(r->root, len == 1 ? "" : s, len == 1 ? 0 : len);
}

static void load_index(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                       const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "index", "a file name (e.g. index.php)");
    if (!s)
        return;
    if (!*s || strchr(s, '/') || !plain_text(s) || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        cfg_error(ctx, n, "bad index %s for route %zu: expected a file name such as index.php",
                  cfg_quote(s).s, route_no);
        return;
    }
    free(r->index);
    r->index = cfg_strdup(ctx, s);
}

/* params: {NAME: value, ...}, sent after bulwark's own, so they override. */
static void load_params(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                        const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "params of route %zu: expected a mapping of names to values, got %s",
                  route_no, cfg_describe(n).s);
        return;
    }
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    r->params = cfg_calloc(ctx, count * 2 + 1, sizeof(*r->params));
    if (!r->params)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cfg_node(ctx, p->key), *v = cfg_node(ctx, p->value);
        const char *name = cfg_scalar(ctx, k, "params", "a param name (e.g. APP_ENV)");
        if (!name)
            continue;
        const char *value = cfg_node_is_null(v) ? "" : cfg_scalar(ctx, v, name, "a string");
        if (!value)
            continue;
        if (!*name || !plain_text(name) || !plain_text(value)) {
            cfg_error(ctx, k,
                      "bad param %s for route %zu: names and values are text without "
                      "control characters",
                      cfg_quote(name).s, route_no);
            continue;
        }
        r->params[r->num_params * 2] = cfg_strdup(ctx, name);
        r->params[r->num_params * 2 + 1] = cfg_strdup(ctx, value);
        r->num_params++;
    }
}

/* split_path_info: a POSIX extended regex with two groups, as nginx's
 * fastcgi_split_path_info: group 1 is the script name, group 2 PATH_INFO. */
static void load_split(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                       const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "split_path_info", "a regex such as ^(.+?\\.php)(/.*)$");
    if (!s)
        return;
    regex_t *re = cfg_calloc(ctx, 1, sizeof(*re));
    if (!re)
        return;
    int rc = regcomp(re, s, REG_EXTENDED);
    if (rc != 0) {
        char why[256];
        regerror(rc, re, why, sizeof(why));
        cfg_error(ctx, n, "bad split_path_info %s for route %zu: %s", cfg_quote(s).s, route_no,
                  why);
        free(re);
        return;
    }
    if (re->re_nsub < 2) {
        cfg_error(ctx, n,
                  "bad split_path_info %s for route %zu: needs two groups, the script name and "
                  "the path info, e.g. ^(.+\\.php)(/.*)$",
                  cfg_quote(s).s, route_no);
        regfree(re);
        free(re);
        return;
    }
    r->split_path_info = re;
}

/* extensions: [".php", ...]: the only scripts that are ever run. */
static void load_extensions(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                            const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE ||
        n->data.sequence.items.top == n->data.sequence.items.start) {
        cfg_error(ctx, n, "extensions of route %zu: expected a list such as [\".php\"], got %s",
                  route_no, cfg_describe(n).s);
        return;
    }
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    char **list = cfg_calloc(ctx, count, sizeof(*list));
    if (!list)
        return;
    for (size_t i = 0; i < r->num_extensions; i++)
        free(r->extensions[i]);
    free(r->extensions);
    r->extensions = list;
    r->num_extensions = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = cfg_node(ctx, *it);
        const char *s = cfg_scalar(ctx, item, "extensions", "an extension such as \".php\"");
        if (!s)
            continue;
        if (s[0] != '.' || !s[1] || strchr(s, '/') || !plain_text(s)) {
            cfg_error(ctx, item,
                      "bad extension %s for route %zu: expected a dot and a suffix, "
                      "such as \".php\"",
                      cfg_quote(s).s, route_no);
            continue;
        }
        list[r->num_extensions++] = cfg_strdup(ctx, s);
    }
}

static void load_fastcgi(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                         const yaml_node_t *route_node, yaml_node_t *const *v)
{
    const struct config_upstream *up = r->upstream;
    if (!up)
        return;
    if (up->protocol != PROTOCOL_FASTCGI) {
        for (size_t i = 0; i < NUM_FK; i++)
            if (v[i])
                cfg_error(ctx, v[i],
                          "%s in route %zu: only for FastCGI routes, and upstream %s speaks "
                          "http (set protocol: fastcgi on the upstream)",
                          fastcgi_keys[i], route_no, cfg_quote(up->name).s);
        return;
    }
    r->check_script = true;
    r->index = cfg_strdup(ctx, "index.php");
    r->extensions = cfg_calloc(ctx, 1, sizeof(*r->extensions));
    if (r->extensions && (r->extensions[0] = cfg_strdup(ctx, ".php")))
        r->num_extensions = 1;
    if (v[FK_ROOT])
        load_root(ctx, r, route_no, v[FK_ROOT]);
    else
        cfg_error(ctx, route_node,
                  "route %zu: upstream %s speaks FastCGI, so the route needs root (the "
                  "directory its scripts are in, as PHP-FPM sees it)",
                  route_no, cfg_quote(up->name).s);
    if (v[FK_INDEX])
        load_index(ctx, r, route_no, v[FK_INDEX]);
    if (v[FK_PARAMS])
        load_params(ctx, r, route_no, v[FK_PARAMS]);
    if (v[FK_SPLIT])
        load_split(ctx, r, route_no, v[FK_SPLIT]);
    if (v[FK_EXTENSIONS])
        load_extensions(ctx, r, route_no, v[FK_EXTENSIONS]);
    cfg_get_bool(ctx, v[FK_CHECK_SCRIPT], "check_script", &r->check_script);
    r->follow_symlinks = true;
    if (cfg_get_bool(ctx, v[FK_FOLLOW_SYMLINKS], "follow_symlinks", &r->follow_symlinks) &&
        !r->follow_symlinks && !r->check_script)
        /* the real path is found on bulwark's file system, as check_script's file */
        cfg_error(ctx, v[FK_FOLLOW_SYMLINKS],
                  "follow_symlinks: false in route %zu needs check_script: true (bulwark must "
                  "see the scripts to resolve their links)",
                  route_no);
}

void cfg_free_route_fastcgi(struct config_route *r)
{
    free(r->root);
    free(r->index);
    if (r->split_path_info) {
        regfree(r->split_path_info);
        free(r->split_path_info);
    }
    for (size_t i = 0; i < r->num_params * 2; i++)
        free(r->params[i]);
    free(r->params);
    for (size_t i = 0; i < r->num_extensions; i++)
        free(r->extensions[i]);
    free(r->extensions);
}

static void load_route(struct cfg_ctx *ctx, struct config_route *r, size_t route_no,
                       const yaml_node_t *n)
{
    static const char *const keys[] = {
        "match",        "upstream",        "max_body_size",   "root",
        "index",        "params",          "split_path_info", "extensions",
        "check_script", "follow_symlinks", "allow",           "deny",
        "conn_limit",   "rate_limit",
    };
    struct config *cfg = ctx->cfg;
    yaml_node_t *v[14];
    char where[32];
    const char *s;

    r->line = (int)n->start_mark.line + 1;
    r->column = (int)n->start_mark.column + 1;
    r->max_body_bytes = cfg->max_body_bytes;
    snprintf(where, sizeof(where), "route %zu", route_no);
    if (!cfg_fields(ctx, n, where, keys, 14, v))
        return;
    if (v[0])
        load_match(ctx, r, route_no, v[0]);
    if (!v[1]) {
        cfg_error(ctx, n, "missing required key \"upstream\" in route %zu", route_no);
    } else if ((s = cfg_scalar(ctx, v[1], "upstream", "an upstream name"))) {
        for (size_t i = 0; i < cfg->num_upstreams && !r->upstream; i++)
            if (strcmp(cfg->upstreams[i].name, s) == 0)
                r->upstream = &cfg->upstreams[i];
        /* With no upstreams at all, that section's own error says it. */
        if (!r->upstream && cfg->num_upstreams > 0)
            unknown_upstream(ctx, v[1], s, route_no);
    }
    cfg_get_size(ctx, v[2], "max_body_size", 0, UINT64_MAX, &r->max_body_bytes);
    load_fastcgi(ctx, r, route_no, n, v + 3);
    cfg_get_cidr_list(ctx, v[10], "allow", &r->allow);
    cfg_get_cidr_list(ctx, v[11], "deny", &r->deny);
    if (v[12]) {
        struct config_conn_limit cl = {0};
        cfg_load_conn_limit(ctx, v[12], route_no, &cl);
        r->conn_limit_requests = cl.requests;
    }
    load_route_rate_limit(ctx, r, v[13]);
}

void cfg_load_routes(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;
    yaml_node_item_t *items;
    size_t count;

    if (n->type != YAML_SEQUENCE_NODE) {
        cfg_error(ctx, n, "routes: expected a list of routes, got %s", cfg_describe(n).s);
        return;
    }
    items = n->data.sequence.items.start;
    count = (size_t)(n->data.sequence.items.top - items);
    if (count == 0) {
        cfg_error(ctx, n, "routes: needs at least one route");
        return;
    }
    cfg->routes = cfg_calloc(ctx, count, sizeof(*cfg->routes));
    if (!cfg->routes)
        return;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item = cfg_node(ctx, items[i]);
        struct config_route *r = &cfg->routes[cfg->num_routes++];

        r->path = cfg_strdup(ctx, "/");
        r->path_len = 1;
        load_route(ctx, r, i + 1, item);
        route_label(ctx, r);
        if (r->label)
            r->limit_scope = limit_scope(r->label);
    }
}

/* The host part of a Host header value: no ":port", no trailing dot. */
static size_t host_without_port(const char *host, size_t len)
{
    if (len == 0)
        return 0;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', len);
        return close ? (size_t)(close - host) + 1 : len;
    }
    const char *colon = memchr(host, ':', len);
    if (colon)
        len = (size_t)(colon - host);
    if (len > 0 && host[len - 1] == '.')
        len--;
    return len;
}

/* a is request text in any case, b a route host already in lowercase. */
static bool same_lower(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (ascii_lower(a[i]) != b[i])
            return false;
    return true;
}

/* How specifically a route's host matches: 0 no match, 1 any host, then
 * wildcards by suffix length, exact above all. */
static size_t host_rank(const struct config_route *r, const char *host, size_t len)
{
    size_t rlen;

    if (!r->host)
        return 1;
    rlen = strlen(r->host);
    if (!r->host_wildcard)
        return rlen == len && same_lower(host, r->host, len) ? SIZE_MAX : 0;
    /* "*.example.com" needs at least one label before ".example.com". */
    rlen--;
    if (len <= rlen || host[len - rlen - 1] == '.' ||
        !same_lower(host + len - rlen, r->host + 1, rlen))
        return 0;
    return 2 + rlen;
}

const struct config_route *config_match_route(const struct config *cfg, const char *host,
                                              size_t host_len, const char *path, size_t path_len)
{
    const struct config_route *best = NULL;
    size_t best_rank = 0, best_path = 0;

    if (!host)
        host_len = 0;
    host_len = host_without_port(host, host_len);
    for (size_t i = 0; i < cfg->num_routes; i++) {
        const struct config_route *r = &cfg->routes[i];
        size_t rank;

        if (r->path_len > path_len || memcmp(r->path, path, r->path_len) != 0)
            continue;
        rank = host_rank(r, host, host_len);
        if (rank == 0)
            continue;
        /* Strictly better only: on a tie the earlier route stays. */
        if (rank > best_rank || (rank == best_rank && r->path_len > best_path)) {
            best = r;
            best_rank = rank;
            best_path = r->path_len;
        }
    }
    return best;
}
