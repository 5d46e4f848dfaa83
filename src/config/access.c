/* Client identity and access keys: CIDR lists (trusted_proxies, allow,
 * deny) and conn_limit, top level and per route. */
#include <stdio.h>

#include "config/config_internal.h"

static void add_entry(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                      struct cidr_list *out)
{
    const char *s = cfg_scalar(ctx, n, what, "an address or a CIDR block like 10.0.0.0/8");
    struct cidr_entry e;
    char why[128];

    if (!s)
        return;
    if (cidr_parse(s, &e, why, sizeof(why)) < 0) {
        cfg_error(ctx, n, "%s: bad entry %s: %s", what, cfg_quote(s).s, why);
        return;
    }
    if (cidr_list_add(out, &e) < 0)
        ctx->out_of_memory = true;
}

void cfg_get_cidr_list(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                       struct cidr_list *out)
{
    if (!n)
        return;
    if (n->type == YAML_SCALAR_NODE && !cfg_node_is_null(n)) {
        add_entry(ctx, n, what, out); /* one block without the list brackets */
    } else if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top;
             i++)
            add_entry(ctx, cfg_node(ctx, *i), what, out);
    } else {
        cfg_error(ctx, n, "%s: expected a list of addresses or CIDR blocks, got %s", what,
                  cfg_describe(n).s);
        return;
    }
    cidr_list_finish(out);
}

void cfg_load_conn_limit(struct cfg_ctx *ctx, const yaml_node_t *n, size_t route_no,
                         struct config_conn_limit *out)
{
    static const char *const keys[] = {"requests", "connections", "max_keys"};
    yaml_node_t *v[3];
    char where[48];
    int value;

    if (route_no)
        snprintf(where, sizeof(where), "conn_limit of route %zu", route_no);
    else
        snprintf(where, sizeof(where), "conn_limit");
    /* A route counts requests only: connections exist before any route. */
    if (!cfg_fields(ctx, n, where, keys, route_no ? 1 : 3, v))
        return;
    value = 0;
    if (v[0] && cfg_get_int(ctx, v[0], "requests", 1, 10000000, &value))
        out->requests = (uint32_t)value;
    if (route_no)
        return;
    value = 0;
    if (v[1] && cfg_get_int(ctx, v[1], "connections", 1, 10000000, &value))
        out->connections = (uint32_t)value;
    value = 0;
    if (v[2] && cfg_get_int(ctx, v[2], "max_keys", 1000, 100000000, &value))
        out->max_keys = (uint32_t)value;
}
