/* upstreams.<g>.health: how a group's servers are actively checked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

enum health_key {
    HK_MODE,
    HK_PATH,
    HK_HOST,
    HK_INTERVAL,
    HK_TIMEOUT,
    HK_FAILS,
    HK_PASSES,
    HK_EXPECT_STATUS,
    NUM_HEALTH_KEYS
};

/* clang-format off */
static const char *const health_keys[NUM_HEALTH_KEYS] = {
    [HK_MODE] = "mode",
    [HK_PATH] = "path",
    [HK_HOST] = "host",
    [HK_INTERVAL] = "interval",
    [HK_TIMEOUT] = "timeout",
    [HK_FAILS] = "fails",
    [HK_PASSES] = "passes",
    [HK_EXPECT_STATUS] = "expect_status",
};
/* clang-format on */

/* A path or Host goes into the check's request as written: anything but
 * visible ASCII (a space, CR, LF) would let the config inject a second
 * request line or header, so it is refused here. 1 KiB is far more than a
 * health endpoint needs and keeps the request in one small write. */
#define MAX_CHECK_FIELD 1024

static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return false;
    return true;
}

static char *load_field(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key,
                        const char *expected, bool is_path)
{
    const char *s = cfg_scalar(ctx, n, key, expected);
    if (!s)
        return NULL;
    if (!*s || strlen(s) > MAX_CHECK_FIELD || !visible_ascii(s) || (is_path && s[0] != '/')) {
        cfg_error(ctx, n, "bad health %s %s: expected %s, at most %d visible ASCII characters", key,
                  cfg_quote(s).s, expected, MAX_CHECK_FIELD);
        return NULL;
    }
    return cfg_strdup(ctx, s);
}

static void load_expect_status(struct cfg_ctx *ctx, struct config_health *h, const yaml_node_t *n)
{
    yaml_node_item_t *items, *end;

    if (n->type == YAML_SCALAR_NODE) { /* one code may be written without brackets */
        if (cfg_get_int(ctx, n, "expect_status", 100, 599, &h->expect_status[0]))
            h->num_expect_status = 1;
        return;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        cfg_error(ctx, n,
                  "expect_status: expected a list of status codes (e.g. [200, 204]), got %s",
                  cfg_describe(n).s);
        return;
    }
    items = n->data.sequence.items.start;
    end = n->data.sequence.items.top;
    if (items == end) {
        cfg_error(ctx, n,
                  "expect_status: needs at least one status code (leave it out for any 2xx)");
        return;
    }
    if (end - items > CONFIG_MAX_EXPECT_STATUS) {
        cfg_error(ctx, n, "expect_status: at most %d status codes", CONFIG_MAX_EXPECT_STATUS);
        return;
    }
    for (; items < end; items++) {
        int code;
        if (cfg_get_int(ctx, cfg_node(ctx, *items), "expect_status", 100, 599, &code))
            h->expect_status[h->num_expect_status++] = code;
    }
}

void cfg_load_health(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                     const yaml_node_t *n)
{
    struct config_health *h = &up->health;
    yaml_node_t *v[NUM_HEALTH_KEYS];
    char what[320];

    snprintf(what, sizeof(what), "health of %s", where);
    if (!cfg_fields(ctx, n, what, health_keys, NUM_HEALTH_KEYS, v))
        return;
    /* Defaults: a check every 5 s judged within 2 s; 3 failures take a
     * server out (one lost packet does not), 2 passes bring it back (one
     * lucky answer from a flapping backend does not). */
    h->enabled = true;
    /* A FastCGI server answers no HTTP: a connect is what can be checked. */
    h->mode = up->protocol == PROTOCOL_FASTCGI ? HEALTH_TCP : HEALTH_HTTP;
    h->path = cfg_strdup(ctx, "/");
    h->interval_ms = 5 * 1000;
    h->timeout_ms = 2 * 1000;
    h->fails = 3;
    h->passes = 2;
    if (v[HK_MODE]) {
        const char *s = cfg_scalar(ctx, v[HK_MODE], "mode", "http or tcp");
        if (s && strcmp(s, "http") == 0 && up->protocol == PROTOCOL_FASTCGI)
            cfg_error(ctx, v[HK_MODE],
                      "health mode http for %s: it speaks FastCGI, not HTTP; use mode: tcp "
                      "(the default for FastCGI groups)",
                      where);
        else if (s && strcmp(s, "http") == 0)
            h->mode = HEALTH_HTTP;
        else if (s && strcmp(s, "tcp") == 0)
            h->mode = HEALTH_TCP;
        else if (s)
            cfg_error(ctx, v[HK_MODE], "unknown health mode %s for %s: expected http or tcp",
                      cfg_quote(s).s, where);
    }
    if (v[HK_PATH]) {
        char *path = load_field(ctx, v[HK_PATH], "path", "a path starting with \"/\"", true);
        if (path) {
            free(h->path);
            h->path = path;
        }
    }
    if (v[HK_HOST])
        h->host = load_field(ctx, v[HK_HOST], "host", "a host name", false);
    cfg_get_timeout(ctx, v[HK_INTERVAL], "interval", &h->interval_ms);
    cfg_get_timeout(ctx, v[HK_TIMEOUT], "timeout", &h->timeout_ms);
    cfg_get_int(ctx, v[HK_FAILS], "fails", 1, 1000, &h->fails);
    cfg_get_int(ctx, v[HK_PASSES], "passes", 1, 1000, &h->passes);
    if (v[HK_EXPECT_STATUS])
        load_expect_status(ctx, h, v[HK_EXPECT_STATUS]);
}
