/* The configuration: a YAML file loaded into one immutable struct config.
 *
 * A loaded config is never changed. Reload builds a new one; connections keep
 * a reference to the config they started with (config_ref / config_unref), so
 * the old one is freed when the last of them finishes.
 *
 * Every error names file:line:column and what is wrong; all errors of a file
 * are collected, not only the first.
 */
#ifndef BULWARK_CONFIG_H
#define BULWARK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <regex.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "limit/limit.h"

enum balance { BALANCE_ROUND_ROBIN = 0, BALANCE_LEAST_CONN, BALANCE_HASH };

/* What the hash balancer hashes. */
enum hash_key { HASH_CLIENT_IP = 0, HASH_HEADER, HASH_URI };

struct config_addr {
    struct sockaddr_storage ss; /* AF_INET, AF_INET6, or AF_UNIX ("unix:/path", servers only) */
    socklen_t len;
    char text[96]; /* as written in the config, e.g. "127.0.0.1:9000", "[::1]:80" or
                      "unix:/run/php/php-fpm.sock" */
};

/* What an upstream group speaks (upstreams.<g>.protocol). */
enum upstream_protocol { PROTOCOL_HTTP = 0, PROTOCOL_FASTCGI };

struct config_server {
    char *name;              /* "host:port" as written (host may be a DNS name) */
    struct config_addr addr; /* resolved at load; addr.len == 0 when the name did not
                                resolve (a warning, not an error: requests to it fail
                                with dns_error). addr.text is set either way. */
    int weight;              /* 1..1000, default 1 */
    bool backup;             /* from the group's backup list: used only while every
                                primary is down (they follow the primaries in servers) */
};

/* A custom error page: the whole file, read at load (at most
 * CONFIG_MAX_ERROR_PAGE_BYTES: it must fit in one generated response). */
struct config_error_page {
    int status; /* 400..599 */
    char *path;
    char *body;
    size_t len;
};
#define CONFIG_MAX_ERROR_PAGE_BYTES (32 * 1024)

enum log_format { LOG_FORMAT_COMBINED = 0, LOG_FORMAT_JSON };

/* A count whose default is derived at run time (client.max_header_connections). */
#define CONFIG_AUTO (-1)

/* Statuses fail_status may name: error responses only. */
#define CONFIG_STATUS_MIN 400
#define CONFIG_STATUS_MAX 599
enum health_mode { HEALTH_HTTP = 0, HEALTH_TCP };

/* Most expect_status entries: a handful of codes is all a check needs. */
#define CONFIG_MAX_EXPECT_STATUS 16

/* upstreams.<g>.health: active checks, run once per process for all workers
 * (README, "Health checks"). Absent: enabled is false and nothing checks. */
struct config_health {
    bool enabled;
    enum health_mode mode; /* default http: GET path; tcp: connect only */
    char *path;            /* default "/"; printable ASCII, starts with "/" */
    char *host;            /* Host value; NULL: the server as written ("host:port") */
    uint32_t interval_ms;  /* default 5s, from the end of one check to the next */
    uint32_t timeout_ms;   /* default 2s, for the connect and again for the response */
    int fails;             /* default 3 consecutive failures: down */
    int passes;            /* default 2 consecutive passes: up again */
    int expect_status[CONFIG_MAX_EXPECT_STATUS];
    size_t num_expect_status; /* 0: any 2xx passes */
};

struct config_upstream {
    char *name;
    size_t index; /* position in config.upstreams */
    struct config_server *servers;
    size_t num_servers;
    enum balance balance;
    enum hash_key hash_key;
    char *hash_header;           /* header name when hash_key == HASH_HEADER */
    uint32_t connect_timeout_ms; /* default 5s */
    uint32_t read_timeout_ms;    /* default 60s: header wait and between body reads */
    uint32_t send_timeout_ms;    /* default 60s: between writes that make progress */
    int retries;                 /* extra attempts after the first, default 2 */
    int keepalive_max_idle; /* idle connections kept per server per worker, default 256; 0 disables
                             */
    uint32_t keepalive_idle_timeout_ms; /* default 60s */
    uint32_t keepalive_max_requests;    /* a connection is closed after this many exchanges,
                                           default 1000; 0: no limit */
    int max_conns;             /* concurrent exchanges per server, all workers; 0: no cap */
    int max_pending;           /* requests waiting for a slot per group, all workers (100) */
    uint32_t queue_timeout_ms; /* longest wait in that queue (5s), then 503 */
    /* Passive health checks (outlier ejection): max_fails failures within
     * fail_window eject a server for eject_time (longer on repeats). */
    int max_fails;           /* default 5; 0: passive ejection off */
    uint32_t fail_window_ms; /* default 10s */
    uint32_t eject_time_ms;  /* default 30s */
    /* fail_status as a set: bit (status - CONFIG_STATUS_MIN) is set when a
     * response with that status counts as a failure; default none. Read it
     * with config_fail_status(). */
    uint64_t fail_status[(CONFIG_STATUS_MAX - CONFIG_STATUS_MIN + 64) / 64];
    int retry_budget_pct;            /* retries at most this % of requests over 10 s; default 20 */
    struct config_health health;     /* active checks; health.enabled false: none */
    uint32_t slow_start_ms;          /* a server back up ramps its weight over this; 0: off */
    size_t num_backup;               /* the last num_backup of servers are backups */
    bool panic_mode;                 /* all down: pick among all servers anyway, not 503 */
    enum upstream_protocol protocol; /* default http; fastcgi: PHP-FPM and the like */
    int line, column;                /* where it was defined, for messages */
};

/* rate_limit (top level: the default for routes without one; per route):
 * GCRA over a table shared by all workers (src/limit, README "Rate
 * limiting"). */
enum rate_limit_key { RATE_KEY_CLIENT_IP = 0, RATE_KEY_HEADER, RATE_KEY_ROUTE };

struct config_rate_limit {
    bool enabled;                  /* false: not configured (or "off" on a route) */
    uint32_t rate;                 /* requests per period ("100/s": 100) */
    uint32_t period_s;             /* 1 ("/s") or 60 ("/m") */
    uint64_t interval_ns;          /* period / rate: GCRA's emission interval */
    uint32_t burst;                /* requests beyond the rate accepted at once, default 0 */
    enum rate_limit_key key;       /* default client_ip */
    char *key_header;              /* RATE_KEY_HEADER: the header's name */
    bool nodelay;                  /* false (default, as nginx): the burst is delayed to the rate */
    bool headers;                  /* RateLimit-Policy and RateLimit on responses, default false */
    char *store;                   /* NULL or "local": this process; else "redis://host:port" */
    struct config_addr store_addr; /* that Redis (src/limit/store.h); len 0: local */
    char *name;                    /* "default" or the route's label: the policy's name in keys,
                                      headers and messages */
    int line, column;
};

/* Default rate_limit_table_size: keys tracked at once, all policies. */
#define CONFIG_RATE_TABLE_DEFAULT 1000000

struct config_route {
    char *host;         /* NULL: any host; "*.example.com" when host_wildcard */
    bool host_wildcard; /* host is "*.suffix": matches any name ending in ".suffix" */
    char *path;         /* path prefix, default "/" */
    size_t path_len;
    struct config_upstream *upstream;
    uint64_t max_body_bytes; /* 0: unlimited; default: client.max_body_size */
    char *label; /* "host/path" ("*" for any host): names the route in metrics and logs */
    /* FastCGI routes (upstream protocol fastcgi; README "FastCGI"). */
    char *root;               /* document root: absolute, no trailing "/"; required */
    char *index;              /* appended to a path ending in "/"; default "index.php" */
    regex_t *split_path_info; /* POSIX ERE, two groups: script name, PATH_INFO; NULL: none */
    char **params;            /* extra or overriding params: name, value, name, value... */
    size_t num_params;        /* pairs */
    char **extensions;        /* script names must end in one; default {".php"} */
    size_t num_extensions;
    bool check_script;    /* default true: the script must be a regular file (else 404) */
    bool follow_symlinks; /* default true; false: the script's real path (links resolved)
                             must lie under root's real path (else 403); needs check_script */
    int line, column;

    /* access (README, "Client identity and access"): checked after the
     * top level's lists; empty lists check nothing. */
    struct cidr_list allow, deny;
    uint32_t conn_limit_requests; /* conn_limit.requests per client on this route; 0: none */
    uint32_t limit_scope;         /* limit_scope(label): the route's key in the limit table */
    /* The route's rate limit: its own, the top-level default, or NULL
     * (none, or "rate_limit: off"). Points into this config. */
    const struct config_rate_limit *rate_limit;
    struct config_rate_limit own_rate_limit;
};

/* programs.<name>: a backend process bulwark starts and restarts (README,
 * "Programs"; src/supervise). */
enum program_restart {
    PROGRAM_RESTART_ALWAYS = 0,
    PROGRAM_RESTART_ON_FAILURE,
    PROGRAM_RESTART_NEVER
};

/* A program name is a JSON key and a log word: letters, digits, "_.-". */
#define CONFIG_MAX_PROGRAM_NAME 63

struct config_program {
    char *name;
    char **argv; /* command, NULL-terminated; argv[0] a path or a PATH name */
    size_t argc; /* at least 1 */
    char *cwd;   /* NULL: bulwark's working directory */
    char **env;  /* "NAME=value" added to (or replacing in) bulwark's
                    environment, num_env of them */
    size_t num_env;
    enum program_restart restart; /* default always */
    uint32_t backoff_initial_ms;  /* default 1s: first delay before a restart */
    uint32_t backoff_max_ms;      /* default 30s: the delay doubles up to this */
    int max_restarts;             /* default 10 within restart_window, then FATAL; 0: no limit */
    uint32_t restart_window_ms;   /* default 60s */
    int stop_signal;              /* default SIGTERM */
    uint32_t stop_timeout_ms;     /* default 10s, then SIGKILL to the process group */
    char *stdout_path;            /* NULL: bulwark's stderr */
    char *stderr_path;            /* NULL: bulwark's stderr */
    struct config_upstream *upstream; /* the group its server is in; NULL: not bound */
    char *server;                     /* that server's name as written ("host:port"); NULL: none */
    struct config_addr server_addr;   /* where readiness is polled (a TCP connect) */
    uint32_t ready_timeout_ms;        /* 0: start without waiting for it to be ready */
    /* user / group, resolved at load (names or numeric ids). Only when
     * bulwark runs as root are they switched to (setgroups, setgid, setuid
     * before exec); otherwise they must be bulwark's own (else a config
     * error). */
    bool has_user, has_group;
    uid_t uid;     /* has_user */
    gid_t gid;     /* has_user or has_group: the group (user's primary by default) */
    gid_t *groups; /* the supplementary groups to set (the user's, or just gid) */
    size_t num_groups;
    char *user_name; /* as written, for messages; NULL: none */
    int line, column;
};

struct config {
    char *path;  /* the file it was loaded from */
    int workers; /* default: number of online CPUs */

    struct config_addr *listen;
    size_t num_listen;
    bool *listen_proxy_protocol; /* [num_listen]: that listener requires a PROXY header */
    struct config_addr admin;    /* admin.len == 0 when not configured */
    bool has_admin;
    char *admin_token; /* NULL: no token; else "Authorization: Bearer <token>" is required */

    struct config_upstream *upstreams;
    size_t num_upstreams;
    struct config_route *routes; /* in file order */
    size_t num_routes;
    struct config_program *programs; /* in file order */
    size_t num_programs;

    /* client side */
    uint32_t client_header_timeout_ms; /* default 10s (slowloris) */
    uint32_t client_body_timeout_ms;   /* default 60s between body reads */
    uint32_t keepalive_timeout_ms;     /* default 75s idle between requests */
    uint32_t send_timeout_ms;          /* default 60s writing to the client */
    uint32_t tunnel_timeout_ms;        /* default 1h idle in a WebSocket/Upgrade tunnel */
    uint32_t shutdown_timeout_ms;      /* default 30s to finish in-flight requests on SIGTERM */
    size_t max_request_line;           /* default 8192 (414) */
    size_t max_header_bytes;           /* default 16384 (431) */
    uint64_t max_body_bytes;           /* default for routes, 0 = unlimited; default 1 GiB */

    /* Slow-client defences beyond header_timeout (README, "Slow clients"). */
    uint32_t min_body_rate_bytes;  /* client.min_body_rate.bytes: a request body must average
                                      this much per min_body_rate_per_ms once that long has
                                      passed; default 1024; 0: off */
    uint32_t min_body_rate_per_ms; /* client.min_body_rate.per, default 10s */
    int max_header_connections;    /* connections still sending their request header, all
                                      workers: over it the oldest is closed.
                                      CONFIG_AUTO (default): half the connection capacity;
                                      0: no cap */
    int reclaim_idle_pct;          /* client.reclaim_idle_at: from this share of the
                                      connection capacity open, each new connection closes
                                      the oldest idle keep-alive one; default 90; 0: never */

    /* forwarding */
    bool x_forwarded_for;   /* default true */
    bool x_forwarded_proto; /* default true */
    bool x_forwarded_host;  /* default true */
    bool via;               /* default true */

    /* logging: NULL path means stderr; access_log_off disables it */
    char *access_log;
    bool access_log_off;
    char *error_log;
    enum log_format log_format; /* log.format, default combined */

    /* errors: what generated error responses show, and how many are kept */
    bool expose_details; /* errors.expose_details, default false */
    int error_ring_size; /* errors.ring_size: GET /errors keeps this many, default 100 */
    struct config_error_page *error_pages; /* errors.pages, read at load */
    size_t num_error_pages;

    /* max_connections: client connections open at once, all workers together;
     * one more is answered 503 and closed at once. 0: no limit (default). */
    uint32_t max_connections;

    /* Client identity and access (src/limit; README, "Client identity and
     * access"). trusted_proxies: peers whose X-Forwarded-For or PROXY
     * header names the client. allow/deny: checked before each route's. */
    struct cidr_list trusted_proxies, allow, deny;
    struct config_conn_limit {
        uint32_t connections; /* open connections per client address; 0: no limit */
        uint32_t requests;    /* requests in progress per client address; 0: no limit */
        uint32_t max_keys;    /* clients the table holds at most (1 million) */
    } conn_limit;
    /* rate_limit: the default for routes without their own (enabled false:
     * none); rate_limit_table_size bounds the keys tracked at once. */
    struct config_rate_limit rate_limit;
    uint32_t rate_limit_table_size;

    /* probe_at_start: at start and after each reload, connect once to every
     * upstream server and log a warning per unreachable one. Default true. */
    bool probe_at_start;

    /* Problems that do not stop the config from loading ("file:line:column:
     * message"), e.g. a server name that does not resolve. Owned here. */
    char **warnings;
    size_t num_warnings;

    int refs; /* atomic; see config_ref */
};

/* One config error: "file:line:column: message". */
struct config_error {
    char *text;
};

struct config_errors {
    struct config_error *items;
    size_t count;
};

/* Load and validate a config file. Returns a config with one reference, or
 * NULL with errs filled (at least one error). DNS names in servers and listen
 * are resolved here; a listen or admin name that does not resolve is an
 * error, a server name that does not resolve is a warning (cfg->warnings). */
struct config *config_load(const char *path, struct config_errors *errs);

/* The same from a string (for tests and fuzzing); name is used in messages. */
struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs);

void config_errors_free(struct config_errors *errs);

/* Whether a response with this status counts as a failed attempt for the
 * group's passive health checks (its fail_status list). */
static inline bool config_fail_status(const struct config_upstream *up, int status)
{
    if (status < CONFIG_STATUS_MIN || status > CONFIG_STATUS_MAX)
        return false;
    unsigned i = (unsigned)(status - CONFIG_STATUS_MIN);
    return (up->fail_status[i / 64] >> (i % 64)) & 1;
}

/* Reference counting, thread safe. The last unref frees. */
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);

/* Parse "250ms", "2s", "5m", "1h" (also "0"). Returns 0 and *ms, or -1. */
int config_parse_duration(const char *s, uint32_t *ms);

/* Parse "1024", "10k", "64m", "1g" (binary units). Returns 0 or -1. */
int config_parse_size(const char *s, uint64_t *bytes);

/* Parse "host:port", "[v6]:port", "*:port", ":port" or "unix:/abs/path"
 * (AF_UNIX; the loader accepts it for upstream servers only). Numeric hosts only
 * unless resolve is true (then DNS is used). Returns 0, or -1 with a reason
 * copied into why (at least 128 bytes). */
int config_parse_addr(const char *s, bool resolve, struct config_addr *out, char *why,
                      size_t why_len);

/* Process-wide switch for DNS in config_parse_addr and the loader, default
 * on. With DNS off a host that is not a numeric IP is an error ("DNS
 * disabled") instead of a lookup: the fuzzer must never touch the network. */
void config_set_dns(bool enabled);

/* Find the route for a request: host (without port, any case) and path.
 * Longest path prefix among routes whose host matches (exact beats
 * wildcard beats any); first in file order when equal. NULL: no route.
 * host may be the raw Host header value: a ":port" suffix (also after
 * "[v6]") and a trailing dot are ignored. Between two matching wildcards the
 * longer suffix wins ("*.api.example.com" over "*.example.com"), as in nginx.
 * Allocates nothing; safe to call from any thread. */
const struct config_route *config_match_route(const struct config *cfg, const char *host,
                                              size_t host_len, const char *path, size_t path_len);

#endif
