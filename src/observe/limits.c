/* What the limits (src/limit) counted, for /metrics and /status: rate
 * limit refusals and delays per route, the key table, and the top clients. */
#include <stdio.h>
#include <string.h>

#include "limit/ratelimit.h"
#include "limit/store.h"
#include "observe/observe_internal.h"

/* /metrics names only the top few clients: a label per client would let a
 * flood of addresses grow the scrape without bound. */
#define METRICS_TOP_CLIENTS 10
/* /status lists more of them, still bounded by the counters kept. */
#define STATUS_TOP_CLIENTS 20

/* Exposition format 0.0.4: label values escape backslash, quote, newline. */
static void label_value(struct obuf *b, const char *v)
{
    obuf_put(b, "\"", 1);
    for (; *v; v++) {
        if (*v == '\\')
            obuf_puts(b, "\\\\");
        else if (*v == '"')
            obuf_puts(b, "\\\"");
        else if (*v == '\n')
            obuf_puts(b, "\\n");
        else
            obuf_put(b, v, 1);
    }
    obuf_put(b, "\"", 1);
}

struct route_pass {
    struct obuf *b;
    bool delayed;
};

static void route_line(const char *route, uint64_t limited, uint64_t delayed, void *arg)
{
    struct route_pass *p = arg;
    obuf_puts(p->b, p->delayed ? "bulwark_rate_limit_delayed_total{route="
                               : "bulwark_rate_limited_total{route=");
    label_value(p->b, route);
    obuf_printf(p->b, "} %llu\n", (unsigned long long)(p->delayed ? delayed : limited));
}

static void top_clients_metric(struct obuf *b, bool rejected)
{
    struct limit_hitter top[METRICS_TOP_CLIENTS];
    size_t n = limit_hitters_top(rejected, top, METRICS_TOP_CLIENTS);
    const char *name = rejected ? "bulwark_top_client_rejected" : "bulwark_top_client_requests";
    obuf_printf(b,
                "# HELP %s Requests %sof the %d clients sending the most, over a window that "
                "halves every %d s (Space-Saving: may overcount by its error bound).\n"
                "# TYPE %s gauge\n",
                name, rejected ? "refused (429/403) " : "", METRICS_TOP_CLIENTS,
                LIMIT_HITTERS_HALF_LIFE_S, name);
    for (size_t i = 0; i < n; i++) {
        obuf_printf(b, "%s{client=", name);
        label_value(b, top[i].key);
        obuf_printf(b, "} %llu\n", (unsigned long long)top[i].count);
    }
}

void observe_limits_metrics(struct obuf *b)
{
    struct route_pass p = {b, false};
    obuf_puts(b, "# HELP bulwark_rate_limited_total Requests refused with 429 by their route's "
                 "rate_limit.\n# TYPE bulwark_rate_limited_total counter\n");
    limit_foreach_route(route_line, &p);
    p.delayed = true;
    obuf_puts(b, "# HELP bulwark_rate_limit_delayed_total Requests held to the rate before "
                 "being forwarded (rate_limit nodelay: false).\n"
                 "# TYPE bulwark_rate_limit_delayed_total counter\n");
    limit_foreach_route(route_line, &p);
    struct limit_table_stats st = limit_shared_stats();
    obuf_printf(b,
                "# HELP bulwark_rate_limit_entries Keys in the rate limit table (past ones are "
                "reused first).\n# TYPE bulwark_rate_limit_entries gauge\n"
                "bulwark_rate_limit_entries %llu\n"
                "# HELP bulwark_rate_limit_capacity Keys the rate limit table can hold "
                "(rate_limit_table_size).\n# TYPE bulwark_rate_limit_capacity gauge\n"
                "bulwark_rate_limit_capacity %llu\n"
                "# HELP bulwark_rate_limit_evictions_total Live keys dropped from the full rate "
                "limit table to make room for a new one.\n"
                "# TYPE bulwark_rate_limit_evictions_total counter\n"
                "bulwark_rate_limit_evictions_total %llu\n",
                (unsigned long long)st.entries, (unsigned long long)st.capacity,
                (unsigned long long)st.evictions);
    struct store_stats ss;
    store_stats(&ss);
    obuf_printf(b,
                "# HELP bulwark_rate_limit_store_checks_total Rate limit decisions answered by "
                "the shared store (Redis).\n# TYPE bulwark_rate_limit_store_checks_total counter\n"
                "bulwark_rate_limit_store_checks_total %llu\n"
                "# HELP bulwark_rate_limit_store_fallbacks_total Decisions taken locally because "
                "the shared store was down, slow or busy.\n"
                "# TYPE bulwark_rate_limit_store_fallbacks_total counter\n"
                "bulwark_rate_limit_store_fallbacks_total %llu\n"
                "# HELP bulwark_rate_limit_store_outages_total Times a shared store went from "
                "answering to not answering.\n"
                "# TYPE bulwark_rate_limit_store_outages_total counter\n"
                "bulwark_rate_limit_store_outages_total %llu\n"
                "# HELP bulwark_rate_limit_store_up Connections to a shared store that answer "
                "(one per worker and store).\n# TYPE bulwark_rate_limit_store_up gauge\n"
                "bulwark_rate_limit_store_up %lld\n",
                (unsigned long long)ss.checks, (unsigned long long)ss.fallbacks,
                (unsigned long long)ss.outages, (long long)ss.stores_up);
    top_clients_metric(b, false);
    top_clients_metric(b, true);
}

static void top_clients_json(struct obuf *b, bool rejected)
{
    struct limit_hitter top[STATUS_TOP_CLIENTS];
    size_t n = limit_hitters_top(rejected, top, STATUS_TOP_CLIENTS);
    obuf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        obuf_puts(b, i ? ",{\"key\":" : "{\"key\":");
        obuf_json_str(b, top[i].key, strlen(top[i].key));
        obuf_printf(b, ",\"count\":%llu,\"error\":%llu}", (unsigned long long)top[i].count,
                    (unsigned long long)top[i].error);
    }
    obuf_puts(b, "]");
}

void observe_limits_status(struct obuf *b)
{
    struct limit_table_stats st = limit_shared_stats();
    obuf_printf(b,
                ",\n\"rate_limit\":{\"entries\":%llu,\"capacity\":%llu,\"evictions\":%llu}"
                ",\n\"top_clients\":{\"half_life_s\":%d,\"by_requests\":",
                (unsigned long long)st.entries, (unsigned long long)st.capacity,
                (unsigned long long)st.evictions, LIMIT_HITTERS_HALF_LIFE_S);
    top_clients_json(b, false);
    obuf_puts(b, ",\"by_rejected\":");
    top_clients_json(b, true);
    obuf_puts(b, "}");
}
