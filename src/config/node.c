/* Walking the YAML tree: error recording, type checks, typed values. */
#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_internal.h"

static void record(struct cfg_ctx *ctx, int line, int column, const char *fmt, va_list ap)
{
    char msg[1024];
    size_t need;
    char *text;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    need = strlen(ctx->name) + strlen(msg) + 32;
    text = malloc(need);
    if (!text) {
        ctx->out_of_memory = true;
        return;
    }
    snprintf(text, need, "%s:%d:%d: %s", ctx->name, line, column, msg);
    if (ctx->num_errors == ctx->cap_errors) {
        size_t cap = ctx->cap_errors ? ctx->cap_errors * 2 : 8;
        struct cfg_pending_error *grown = realloc(ctx->errors, cap * sizeof(*grown));
        if (!grown) {
            free(text);
            ctx->out_of_memory = true;
            return;
        }
        ctx->errors = grown;
        ctx->cap_errors = cap;
    }
    ctx->errors[ctx->num_errors] = (struct cfg_pending_error){
        .line = line, .column = column, .seq = ctx->num_errors, .text = text};
    ctx->num_errors++;
}

void cfg_error_at(struct cfg_ctx *ctx, int line, int column, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(ctx, line, column, fmt, ap);
    va_end(ap);
}

void cfg_error(struct cfg_ctx *ctx, const yaml_node_t *at, const char *fmt, ...)
{
    va_list ap;
    /* libyaml marks are 0-based; editors count from 1. */
    int line = at ? (int)at->start_mark.line + 1 : 1;
    int column = at ? (int)at->start_mark.column + 1 : 1;

    va_start(ap, fmt);
    record(ctx, line, column, fmt, ap);
    va_end(ap);
}

void cfg_warning(struct cfg_ctx *ctx, const yaml_node_t *at, const char *fmt, ...)
{
    struct config *cfg = ctx->cfg;
    char msg[1024], *text, **grown;
    int line = at ? (int)at->start_mark.line + 1 : 1;
    int column = at ? (int)at->start_mark.column + 1 : 1;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (asprintf(&text, "%s:%d:%d: %s", ctx->name, line, column, msg) < 0) {
        ctx->out_of_memory = true;
        return;
    }
    grown = realloc(cfg->warnings, (cfg->num_warnings + 1) * sizeof(*grown));
    if (!grown) {
        free(text);
        ctx->out_of_memory = true;
        return;
    }
    cfg->warnings = grown;
    cfg->warnings[cfg->num_warnings++] = text;
}

void *cfg_calloc(struct cfg_ctx *ctx, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        ctx->out_of_memory = true;
    return p;
}

char *cfg_strdup(struct cfg_ctx *ctx, const char *s)
{
    char *p = strdup(s);
    if (!p)
        ctx->out_of_memory = true;
    return p;
}

struct cfg_quoted cfg_quote(const char *s)
{
    struct cfg_quoted q;
    size_t o = 0, i;

    q.s[o++] = '"';
    /* Cut after 60 bytes, but never inside a UTF-8 sequence. */
    for (i = 0; s[i] && (i < 60 || ((unsigned char)s[i] & 0xc0) == 0x80); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            q.s[o++] = '\\';
            q.s[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(q.s + o, 5, "\\x%02x", c);
        } else {
            q.s[o++] = (char)c;
        }
    }
    if (s[i]) {
        memcpy(q.s + o, "...", 3);
        o += 3;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

size_t cfg_edit_distance(const char *a, const char *b)
{
    /* Optimal string alignment: Levenshtein plus adjacent transpositions,
     * so "vai" is one edit from "via". */
    size_t la = strlen(a), lb = strlen(b);
    size_t rows[3][65];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            char ca = (char)tolower((unsigned char)a[i - 1]);
            char cb = (char)tolower((unsigned char)b[j - 1]);
            size_t cost = ca != cb;
            size_t best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (prev[j - 1] + cost < best)
                best = prev[j - 1] + cost;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

const char *cfg_suggest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3;

    for (size_t i = 0; i < n; i++) {
        size_t d = cfg_edit_distance(word, candidates[i]);
        /* d < strlen(word): "x" is one edit from every one-letter key. */
        if (d < best_d && d < strlen(word)) {
            best = candidates[i];
            best_d = d;
        }
    }
    return best;
}

yaml_node_t *cfg_node(struct cfg_ctx *ctx, int id)
{
    return yaml_document_get_node(ctx->doc, id);
}

bool cfg_node_is_null(const yaml_node_t *n)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

struct cfg_quoted cfg_describe(const yaml_node_t *n)
{
    struct cfg_quoted q;

    if (n->type == YAML_MAPPING_NODE)
        snprintf(q.s, sizeof(q.s), "a mapping");
    else if (n->type == YAML_SEQUENCE_NODE)
        snprintf(q.s, sizeof(q.s), "a list");
    else if (n->type != YAML_SCALAR_NODE || cfg_node_is_null(n))
        snprintf(q.s, sizeof(q.s), "nothing");
    else
        q = cfg_quote((const char *)n->data.scalar.value);
    return q;
}

const char *cfg_scalar(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                       const char *expected)
{
    if (n->type != YAML_SCALAR_NODE || cfg_node_is_null(n)) {
        cfg_error(ctx, n, "%s: expected %s, got %s", what, expected, cfg_describe(n).s);
        return NULL;
    }
    /* A "\0" escape in a quoted scalar would silently cut the C string. */
    if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length) {
        cfg_error(ctx, n, "%s: contains a NUL character", what);
        return NULL;
    }
    return (const char *)n->data.scalar.value;
}

bool cfg_fields(struct cfg_ctx *ctx, const yaml_node_t *map, const char *where,
                const char *const *keys, size_t num_keys, yaml_node_t **values)
{
    const yaml_node_t *key_nodes[CFG_MAX_KEYS] = {0};

    assert(num_keys <= CFG_MAX_KEYS);
    for (size_t i = 0; i < num_keys; i++)
        values[i] = NULL;
    if (map->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, map, "%s: expected a mapping, got %s", where, cfg_describe(map).s);
        return false;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = cfg_node(ctx, p->key);
        const char *name;
        size_t i;

        if (!k || k->type != YAML_SCALAR_NODE) {
            cfg_error(ctx, k, "%s: keys must be plain names, got %s", where,
                      k ? cfg_describe(k).s : "nothing");
            continue;
        }
        name = (const char *)k->data.scalar.value;
        for (i = 0; i < num_keys && strcmp(name, keys[i]) != 0; i++)
            ;
        if (i == num_keys) {
            const char *hint = cfg_suggest(name, keys, num_keys);
            if (hint)
                cfg_error(ctx, k, "unknown key %s in %s (did you mean \"%s\"?)", cfg_quote(name).s,
                          where, hint);
            else
                cfg_error(ctx, k, "unknown key %s in %s", cfg_quote(name).s, where);
            continue;
        }
        if (key_nodes[i]) {
            cfg_error(ctx, k, "duplicate key %s in %s (first at line %d)", cfg_quote(name).s, where,
                      (int)key_nodes[i]->start_mark.line + 1);
            continue;
        }
        key_nodes[i] = k;
        values[i] = cfg_node(ctx, p->value);
    }
    return true;
}

bool cfg_get_duration(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint32_t *out)
{
    const char *s;
    uint32_t ms;

    if (!n)
        return true;
    s = cfg_scalar(ctx, n, key, "a duration (e.g. 250ms, 2s, 5m)");
    if (!s)
        return false;
    switch (cfg_parse_duration(s, &ms)) {
    case CFG_PARSE_OK:
        *out = ms;
        return true;
    case CFG_PARSE_RANGE:
        cfg_error(ctx, n, "duration %s for %s is too long: at most 4294967295ms (about 49 days)",
                  cfg_quote(s).s, key);
        return false;
    default:
        cfg_error(ctx, n,
                  "bad duration %s for %s: expected a number followed by ms, s, m or h "
                  "(e.g. 250ms, 2s, 5m)",
                  cfg_quote(s).s, key);
        return false;
    }
}

bool cfg_get_timeout(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint32_t *out)
{
    uint32_t ms = *out;

    if (!cfg_get_duration(ctx, n, key, &ms))
        return false;
    /* A timer of 0 fires at once: every request, connection or attempt the
     * key bounds would fail immediately, which is never what was meant. */
    if (n && ms == 0) {
        cfg_error(ctx, n, "%s must be at least 1ms: 0 would expire at once", key);
        return false;
    }
    *out = ms;
    return true;
}

bool cfg_get_size(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint64_t min,
                  uint64_t max, uint64_t *out)
{
    const char *s;
    uint64_t v;
    enum cfg_parse rc;

    if (!n)
        return true;
    s = cfg_scalar(ctx, n, key, "a size (e.g. 512, 16k, 10m, 1g)");
    if (!s)
        return false;
    rc = cfg_parse_size(s, &v);
    if (rc == CFG_PARSE_SYNTAX) {
        cfg_error(ctx, n,
                  "bad size %s for %s: expected a number of bytes, optionally followed by "
                  "k, m or g (e.g. 512, 16k, 10m, 1g)",
                  cfg_quote(s).s, key);
        return false;
    }
    if (rc == CFG_PARSE_RANGE) {
        cfg_error(ctx, n, "size %s for %s is too large", cfg_quote(s).s, key);
        return false;
    }
    if (v < min || v > max) {
        char bytes[48] = "";
        /* Say what "1m" came to, so the range makes sense. */
        if (s[strlen(s) - 1] > '9')
            snprintf(bytes, sizeof(bytes), " (%llu bytes)", (unsigned long long)v);
        cfg_error(ctx, n, "%s %s%s out of range %llu-%llu bytes", key, s, bytes,
                  (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool cfg_get_int(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, long long min,
                 long long max, int *out)
{
    const char *s;
    long long v;
    enum cfg_parse rc;

    if (!n)
        return true;
    s = cfg_scalar(ctx, n, key, "a whole number");
    if (!s)
        return false;
    rc = cfg_parse_int(s, &v);
    if (rc == CFG_PARSE_SYNTAX) {
        cfg_error(ctx, n, "bad number %s for %s: expected a whole number", cfg_quote(s).s, key);
        return false;
    }
    if (rc == CFG_PARSE_RANGE || v < min || v > max) {
        cfg_error(ctx, n, "%s %.30s%s out of range %lld-%lld", key, s, strlen(s) > 30 ? "..." : "",
                  min, max);
        return false;
    }
    *out = (int)v;
    return true;
}

bool cfg_get_bool(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    const char *s;

    if (!n)
        return true;
    s = cfg_scalar(ctx, n, key, "true or false");
    if (!s)
        return false;
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    cfg_error(ctx, n, "bad value %s for %s: expected true or false", cfg_quote(s).s, key);
    return false;
}

bool cfg_get_addr(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what, bool allow_any,
                  struct config_addr *out)
{
    char why[512];
    const char *s = cfg_scalar(ctx, n, what, "an address (e.g. 127.0.0.1:8080)");

    if (!s)
        return false;
    if (!allow_any && (s[0] == ':' || strncmp(s, "*:", 2) == 0)) {
        cfg_error(ctx, n,
                  "bad address %s for %s: a missing host or \"*\" means any address, which "
                  "only listen and admin accept",
                  cfg_quote(s).s, what);
        return false;
    }
    if (strncmp(s, "unix:", 5) == 0) {
        cfg_error(ctx, n,
                  "bad address %s for %s: unix sockets are for upstream servers; %s takes "
                  "host:port",
                  cfg_quote(s).s, what, what);
        return false;
    }
    if (config_parse_addr(s, true, out, why, sizeof(why)) < 0) {
        cfg_error(ctx, n, "bad address %s for %s: %s", cfg_quote(s).s, what, why);
        return false;
    }
    return true;
}

bool cfg_get_server_addr(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                         struct config_addr *out)
{
    char why[512], dns_why[256] = "";
    const char *s =
        cfg_scalar(ctx, n, what, "an address (e.g. 127.0.0.1:8080 or unix:/run/app.sock)");

    if (!s)
        return false;
    if (s[0] == ':' || strncmp(s, "*:", 2) == 0) {
        cfg_error(ctx, n,
                  "bad address %s for %s: a missing host or \"*\" means any address, which "
                  "only listen and admin accept",
                  cfg_quote(s).s, what);
        return false;
    }
    if (cfg_parse_addr(s, true, out, why, sizeof(why), dns_why, sizeof(dns_why)) == 0)
        return true;
    if (dns_why[0]) {
        char host[256];
        const char *colon = strrchr(s, ':');
        snprintf(host, sizeof(host), "%.*s", (int)(colon ? colon - s : (long)strlen(s)), s);
        cfg_warning(ctx, n, "host %s does not resolve: %s; requests to it will fail with dns_error",
                    cfg_quote(host).s, dns_why);
        return true;
    }
    cfg_error(ctx, n, "bad address %s for %s: %s", cfg_quote(s).s, what, why);
    return false;
}
