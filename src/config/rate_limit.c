/* rate_limit: {rate, burst, key, nodelay, headers, store}, top level (the
 * default for routes without one) and per route. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

enum rate_key { RK_RATE, RK_BURST, RK_KEY, RK_NODELAY, RK_HEADERS, RK_STORE, NUM_RATE_KEYS };

/* clang-format off */
static const char *const rate_keys[NUM_RATE_KEYS] = {
    [RK_RATE] = "rate",
    [RK_BURST] = "burst",
    [RK_KEY] = "key",
    [RK_NODELAY] = "nodelay",
    [RK_HEADERS] = "headers",
    [RK_STORE] = "store",
};
/* clang-format on */

/* A million requests a second per key is far beyond any client worth
 * limiting, and keeps the emission interval at 1000 ns or more, so
 * nanosecond arithmetic stays exact to 0.1%. */
#define MAX_RATE_PER_SECOND 1000000u
/* A burst this large is no limit; bounded so burst x interval fits 64 bits. */
#define MAX_BURST 1000000

/* "100/s", "6000/m" (also nginx's "100r/s"). 0, or -1 with why set. */
static int parse_rate(const char *s, uint32_t *rate, uint32_t *period_s, const char **why)
{
    uint64_t n = 0;
    const char *p = s;
    *why = "expected requests per second or minute, e.g. \"100/s\" or \"6000/m\"";
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > 0xffffffffu) {
            *why = "the number of requests is too large";
            return -1;
        }
    }
    if (*p == 'r')
        p++;
    if (*p++ != '/')
        return -1;
    if (strcmp(p, "s") == 0)
        *period_s = 1;
    else if (strcmp(p, "m") == 0)
        *period_s = 60;
    else
        return -1;
    if (n == 0) {
        *why = "the rate must be at least 1 request per period";
        return -1;
    }
    if (n > (uint64_t)MAX_RATE_PER_SECOND * *period_s) {
        *why = "at most 1000000 requests per second";
        return -1;
    }
    *rate = (uint32_t)n;
    return 0;
}

/* An HTTP field name (RFC 9110 5.1: a token). */
static bool valid_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(extra, *s)))
            return false;
    return true;
}

static void load_key(struct cfg_ctx *ctx, struct config_rate_limit *rl, const yaml_node_t *n)
{
    static const char *const kinds[] = {"client_ip", "route", "header:"};
    const char *s = cfg_scalar(ctx, n, "rate_limit key", "client_ip, route or \"header:NAME\"");
    if (!s)
        return;
    if (strcmp(s, "client_ip") == 0) {
        rl->key = RATE_KEY_CLIENT_IP;
    } else if (strcmp(s, "route") == 0) {
        rl->key = RATE_KEY_ROUTE;
    } else if (strncmp(s, "header:", 7) == 0) {
        if (!valid_token(s + 7)) {
            cfg_error(ctx, n,
                      "bad rate_limit key %s: \"header:\" must be followed by a header name",
                      cfg_quote(s).s);
            return;
        }
        rl->key = RATE_KEY_HEADER;
        free(rl->key_header);
        rl->key_header = cfg_strdup(ctx, s + 7);
    } else {
        const char *hint = cfg_suggest(s, kinds, 2);
        cfg_error(
            ctx, n, "unknown rate_limit key %s: expected client_ip, route or \"header:NAME\"%s%s%s",
            cfg_quote(s).s, hint ? " (did you mean \"" : "", hint ? hint : "", hint ? "\"?)" : "");
    }
}

/* "local" or "redis://host:port": the URL is kept for the shared store. */
static void load_store(struct cfg_ctx *ctx, struct config_rate_limit *rl, const yaml_node_t *n)
{
    const char *s = cfg_scalar(ctx, n, "rate_limit store", "\"local\" or \"redis://host:port\"");
    if (!s)
        return;
    if (strcmp(s, "local") == 0)
        return;
    struct config_addr addr;
    char why[160];
    if (strncmp(s, "redis://", 8) != 0 ||
        config_parse_addr(s + 8, false, &addr, why, sizeof(why))) {
        cfg_error(ctx, n, "bad rate_limit store %s: expected \"local\" or \"redis://host:port\"",
                  cfg_quote(s).s);
        return;
    }
    free(rl->store);
    rl->store = cfg_strdup(ctx, s);
    rl->store_addr = addr;
}

void cfg_load_rate_limit(struct cfg_ctx *ctx, struct config_rate_limit *rl, const char *name,
                         const yaml_node_t *n, bool *off)
{
    yaml_node_t *v[NUM_RATE_KEYS];
    const char *s;

    rl->line = (int)n->start_mark.line + 1;
    rl->column = (int)n->start_mark.column + 1;
    if (off && n->type == YAML_SCALAR_NODE &&
        strcmp((const char *)n->data.scalar.value, "off") == 0) {
        *off = true;
        return;
    }
    if (!cfg_fields(ctx, n, "rate_limit", rate_keys, NUM_RATE_KEYS, v))
        return;
    if (!v[RK_RATE]) {
        cfg_error(ctx, n, "missing required key \"rate\" in rate_limit (e.g. rate: \"100/s\")");
    } else if ((s = cfg_scalar(ctx, v[RK_RATE], "rate", "a rate like \"100/s\" or \"6000/m\""))) {
        const char *why;
        if (parse_rate(s, &rl->rate, &rl->period_s, &why) < 0)
            cfg_error(ctx, v[RK_RATE], "bad rate %s: %s", cfg_quote(s).s, why);
        else
            rl->interval_ns = (uint64_t)rl->period_s * 1000000000ull / rl->rate;
    }
    if (v[RK_BURST]) {
        int burst = 0;
        long long raw;
        s = cfg_scalar(ctx, v[RK_BURST], "burst", "a number of requests (0 or more)");
        if (s && cfg_parse_int(s, &raw) == CFG_PARSE_OK && raw < 0)
            cfg_error(ctx, v[RK_BURST], "burst must be 0 or more, got %s", cfg_quote(s).s);
        else if (s && cfg_get_int(ctx, v[RK_BURST], "burst", 0, MAX_BURST, &burst))
            rl->burst = (uint32_t)burst;
    }
    if (v[RK_KEY])
        load_key(ctx, rl, v[RK_KEY]);
    cfg_get_bool(ctx, v[RK_NODELAY], "nodelay", &rl->nodelay);
    cfg_get_bool(ctx, v[RK_HEADERS], "headers", &rl->headers);
    if (v[RK_STORE])
        load_store(ctx, rl, v[RK_STORE]);
    rl->enabled = rl->interval_ns > 0;
    if (name) {
        free(rl->name);
        rl->name = cfg_strdup(ctx, name);
    }
}

void cfg_free_rate_limit(struct config_rate_limit *rl)
{
    free(rl->key_header);
    free(rl->store);
    free(rl->name);
}
