/* Private to src/config: the loader's state and the helpers its files share.
 *
 * Loading walks the libyaml document tree once, section by section. Every
 * problem is recorded with the position of the node it is about and loading
 * goes on, so one run reports everything wrong with a file. Errors are sorted
 * into file order before they are handed to the caller.
 */
#ifndef BULWARK_CONFIG_INTERNAL_H
#define BULWARK_CONFIG_INTERNAL_H

#include <yaml.h>

#include "config/config.h"

/* The most keys any one mapping in the schema knows (an upstream group has
 * the most: 20 once health, ejection and queue keys are in). */
#define CFG_MAX_KEYS 32

struct cfg_pending_error {
    int line, column; /* 1-based */
    size_t seq;       /* order of discovery, to keep the sort stable */
    char *text;       /* "file:line:column: message" */
};

struct cfg_ctx {
    const char *name; /* file name used in messages */
    yaml_document_t *doc;
    struct config *cfg;
    struct cfg_pending_error *errors;
    size_t num_errors, cap_errors;
    bool out_of_memory;
};

/* Results of the scalar parsers: a syntax error and a value out of the
 * representable range get different messages. */
enum cfg_parse { CFG_PARSE_OK = 0, CFG_PARSE_SYNTAX = -1, CFG_PARSE_RANGE = -2 };

enum cfg_parse cfg_parse_duration(const char *s, uint32_t *ms);
enum cfg_parse cfg_parse_size(const char *s, uint64_t *bytes);
/* An optional '-' and decimal digits, nothing else. */
enum cfg_parse cfg_parse_int(const char *s, long long *out);

bool cfg_dns_enabled(void);

/* config_parse_addr, telling a name that does not resolve apart: then, when
 * dns_why is not NULL, it gets the resolver's reason (non-empty), out->text
 * is set and out->len stays 0. dns_why is left alone for other errors. */
int cfg_parse_addr(const char *s, bool resolve, struct config_addr *out, char *why, size_t why_len,
                   char *dns_why, size_t dns_why_len);

/* A user string ready for a message: in double quotes, control characters
 * escaped, cut at 60 bytes. Use as cfg_quote(s).s inside one expression. */
struct cfg_quoted {
    char s[256];
};
struct cfg_quoted cfg_quote(const char *s);

/* Edit distance, for "did you mean". Strings longer than 64 bytes are
 * never close to anything. */
size_t cfg_edit_distance(const char *a, const char *b);
/* The candidate at most 2 edits away from word (closest first), or NULL. */
const char *cfg_suggest(const char *word, const char *const *candidates, size_t n);

void cfg_error(struct cfg_ctx *ctx, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cfg_error_at(struct cfg_ctx *ctx, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A problem that does not stop loading: "file:line:column: message" is
 * appended to cfg->warnings (in discovery order). */
void cfg_warning(struct cfg_ctx *ctx, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocation wrappers that record out of memory in ctx. */
void *cfg_calloc(struct cfg_ctx *ctx, size_t n, size_t size);
char *cfg_strdup(struct cfg_ctx *ctx, const char *s);

yaml_node_t *cfg_node(struct cfg_ctx *ctx, int id);
bool cfg_node_is_null(const yaml_node_t *n);
/* "a mapping", "a list", "nothing" or the quoted scalar. */
struct cfg_quoted cfg_describe(const yaml_node_t *n);

/* The text of a scalar node, or NULL after reporting "WHAT: expected
 * EXPECTED, got ..." (also for null and for scalars holding a NUL byte). */
const char *cfg_scalar(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                       const char *expected);

/* Spread a mapping over a fixed table of keys: values[i] is the value node
 * of keys[i] or NULL. Reports a node that is not a mapping, keys that are not
 * strings, unknown keys (with a suggestion) and duplicates. where names the
 * mapping in messages ("top level", "client", "upstream \"app\"").
 * Returns false only when map is not a mapping at all. */
bool cfg_fields(struct cfg_ctx *ctx, const yaml_node_t *map, const char *where,
                const char *const *keys, size_t num_keys, yaml_node_t **values);

/* Typed values. A NULL node leaves *out alone (the default stays) and
 * returns true; a bad value is reported against the node and returns false. */
bool cfg_get_duration(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint32_t *out);
/* A duration that bounds a wait: like cfg_get_duration, and 0 is refused. */
bool cfg_get_timeout(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint32_t *out);
bool cfg_get_size(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, uint64_t min,
                  uint64_t max, uint64_t *out);
bool cfg_get_int(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, long long min,
                 long long max, int *out);
bool cfg_get_bool(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key, bool *out);
/* allow_any: "*:port" and ":port" accepted (listening), else refused. */
bool cfg_get_addr(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what, bool allow_any,
                  struct config_addr *out);
/* An upstream server's address: like cfg_get_addr, but a name that does not
 * resolve is a warning and true, with out->len == 0 (the proxy answers
 * dns_error for it; the name may resolve later, or only on some hosts). */
bool cfg_get_server_addr(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                         struct config_addr *out);

/* Sections, each in its own file. */
void cfg_load_upstreams(struct cfg_ctx *ctx, const yaml_node_t *n);
void cfg_load_routes(struct cfg_ctx *ctx, const yaml_node_t *n);
/* programs (src/config/programs.c); after upstreams, which they bind to. */
void cfg_load_programs(struct cfg_ctx *ctx, const yaml_node_t *n);
void cfg_free_programs(struct config *cfg);
/* upstreams.<g>.health into up->health (src/config/health.c). */
void cfg_load_health(struct cfg_ctx *ctx, struct config_upstream *up, const char *where,
                     const yaml_node_t *n);

/* Client identity and access (src/config/access.c). A list of CIDR blocks
 * (or a single one) into out, sorted for matching; each bad entry is an
 * error at its own position. */
void cfg_get_cidr_list(struct cfg_ctx *ctx, const yaml_node_t *n, const char *what,
                       struct cidr_list *out);
/* conn_limit: {connections, requests, max_keys} (top level), or {requests}
 * (a route: route_no > 0). */
void cfg_load_conn_limit(struct cfg_ctx *ctx, const yaml_node_t *n, size_t route_no,
                         struct config_conn_limit *out);
/* A rate_limit map (src/config/rate_limit.c) into rl; name is the policy's
 * name ("default" or a route's label, copied). On a route, "off" leaves
 * rl->enabled false and sets *off. */
void cfg_load_rate_limit(struct cfg_ctx *ctx, struct config_rate_limit *rl, const char *name,
                         const yaml_node_t *n, bool *off);
void cfg_free_rate_limit(struct config_rate_limit *rl);
/* A route's FastCGI keys (src/config/route.c), from cfg_free. */
void cfg_free_route_fastcgi(struct config_route *r);

/* Frees everything a (possibly half-built) config owns, and the config. */
void cfg_free(struct config *cfg);

#endif
