/* Observe: what the proxy reports about itself. The cause table (why a
 * response was generated instead of relayed), and later the access log
 * format, metrics, the admin API and diagnosis.
 *
 * observe records what the other modules report and never drives a request.
 */
#ifndef BULWARK_OBSERVE_H
#define BULWARK_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>

/* Why the proxy generated a response (or aborted one) instead of relaying
 * the upstream's. One row per situation; extend, never blur. */
enum cause {
    CAUSE_NONE = 0,
    /* upstream failures (DESIGN.md's cause table) */
    CAUSE_CONNECTION_REFUSED,
    CAUSE_DESTINATION_IP_UNROUTABLE,
    CAUSE_DNS_ERROR,
    CAUSE_CONNECTION_TIMEOUT,
    CAUSE_CONNECTION_TERMINATED,
    CAUSE_HTTP_RESPONSE_TIMEOUT,
    CAUSE_CONNECTION_READ_TIMEOUT,
    CAUSE_CONNECTION_WRITE_TIMEOUT,
    CAUSE_HTTP_RESPONSE_INCOMPLETE,
    CAUSE_HTTP_PROTOCOL_ERROR,
    CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE,
    CAUSE_DESTINATION_UNAVAILABLE,
    CAUSE_CONNECTION_LIMIT_REACHED,
    CAUSE_PROXY_INTERNAL_ERROR,
    /* answers to the client's own request */
    CAUSE_DESTINATION_NOT_FOUND,
    CAUSE_HTTP_REQUEST_DENIED,
    CAUSE_HTTP_REQUEST_ERROR, /* malformed request: 400/414/431/501/505 */
    CAUSE_REQUEST_TOO_LARGE,  /* body over max_body_size: 413 */
    CAUSE_CLIENT_TIMEOUT,     /* request header or body too slow: 408 */
    CAUSE_CLIENT_SLOW_BODY,   /* request body below client.min_body_rate: 408 */
    /* FastCGI routes: which script a path may run (src/proxy/exchange_fastcgi.c) */
    CAUSE_SCRIPT_DENIED,    /* above root, not a listed extension: 403 */
    CAUSE_SCRIPT_NOT_FOUND, /* no such script file under root: 404 */
    CAUSE__COUNT
};

struct cause_info {
    int status;               /* 0: no response is possible, the client connection is aborted */
    const char *proxy_status; /* RFC 9209 error type */
    const char *sentence;     /* what happened, for humans; %s is the server when present */
    const char *fix;          /* the likely next step for the operator */
};

const struct cause_info *cause_get(enum cause c);

/* Whether an attempt that failed with c is the upstream server's doing
 * (refused, unreachable, reset, timed out, broken response): such failures
 * count toward its passive ejection. The client's own failures and our own
 * limits (connection_limit_reached, proxy_internal_error) do not. */
bool cause_is_server_failure(enum cause c);

/* Map a connect()/socket errno to its cause. */
enum cause cause_from_connect_errno(int err);

/* The cause of an exchange of upstream's HTTP/1 client (a probe, a health
 * check): CAUSE_NONE when it succeeded, else the cause named next to its
 * enum h1_failure. Whether the status is acceptable is the caller's call. */
struct h1_result;
enum cause observe_cause_from_h1(const struct h1_result *r);

/* ---- what the proxy reports ---- */

#include <stddef.h>

struct config;

/* Evidence of one upstream attempt. */
struct attempt_evidence {
    const char *server; /* "host:port" as configured; NULL if none was picked */
    enum cause cause;   /* CAUSE_NONE when the attempt produced a response */
    int err;            /* errno of the failure, 0 if none */
    int64_t connect_ms; /* -1: not applicable */
    bool reused;        /* ran on a pooled keep-alive connection */
};

#define OBSERVE_MAX_ATTEMPTS 8

/* Everything known about one finished request. Filled by the proxy; the
 * strings are not owned and are valid only during the call. */
struct request_record {
    const char *rid;
    const char *client_ip;
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *host;
    size_t host_len;
    const char *referer;
    size_t referer_len;
    const char *user_agent;
    size_t user_agent_len;
    int minor_version;
    int status;          /* sent to the client (499: client went away first) */
    int upstream_status; /* 0: none */
    enum cause cause;    /* CAUSE_NONE when the upstream's response was relayed whole */
    int err;
    bool aborted;               /* the client connection was cut mid-response */
    const char *route;          /* a label for the route: "host/path" as configured, or "-" */
    const char *upstream_group; /* NULL when no upstream was involved */
    const char *upstream_server;
    struct attempt_evidence attempts[OBSERVE_MAX_ATTEMPTS];
    int num_attempts;            /* may exceed OBSERVE_MAX_ATTEMPTS; only the first are kept */
    uint64_t body_bytes_sent;    /* response body bytes to the client */
    uint64_t request_body_bytes; /* request body bytes from the client */
    int64_t connect_ms, header_ms, upstream_ms, total_ms; /* -1: not applicable */
    const char *program; /* why the server's program was not serving (supervise_evidence),
                            for /errors; NULL: none */
};

/* Apply a config's observe settings (access log format, error pages,
 * expose_details, ring size, admin token) and, once observe_admin_start has
 * run, the admin address: a new address is opened and the old one closed
 * before this returns, a removed admin closes the listener, an unchanged
 * address keeps its socket; the token applies from the next request. A new
 * admin address that cannot be bound is logged, and the listener stays where
 * it was with its previous token (the rest applies). Called at start and
 * after each reload, from the main thread. Returns 0 or -1 (errors logged). */
int observe_configure(const struct config *cfg);

/* One finished request, on its worker thread: writes the access-log line,
 * counts it in the metrics, and keeps gateway errors (5xx from a cause, or an
 * aborted response) in the ring served by GET /errors. */
void observe_request(const struct request_record *rec);

/* The access-log line for rec (with its newline) into out, at most cap
 * bytes; returns the length. json false: the combined format followed by
 * key=value evidence (upstream= upstream_status= connect= header=
 * upstream_total= total= attempts= error= rid=); true: one JSON object with
 * every evidence field. Client strings are escaped: always one line. */
size_t observe_format_access(char *out, size_t cap, const struct request_record *rec, bool json);

/* Shared per-server counters, created on first use and never freed, found
 * by group and server name so they survive reloads. Thread safe. Call when
 * building per-worker state, not per request. */
struct server_stats;
struct server_stats *observe_server(const char *group, const char *server);
/* An attempt starts (in-flight + 1) and ends (in-flight - 1, counted by
 * cause; a failure becomes the server's last error with its evidence). */
void observe_attempt_start(struct server_stats *st);
void observe_attempt_end(struct server_stats *st, enum cause cause, int err, int64_t connect_ms,
                         int64_t header_ms, const char *rid);

/* An attempt on st's server failed with cause and the request goes on to
 * another attempt (a retry; the free one after a pooled connection died
 * too): counts bulwark_upstream_retries_total{group,cause} for st's group.
 * One relaxed atomic add; NULL st is ignored. */
void observe_retry(struct server_stats *st, enum cause cause);

/* A retry after a failed attempt on st's server was refused because the
 * group's retry budget is spent: counts
 * bulwark_upstream_retries_refused_total{group}. NULL st is ignored. */
void observe_retry_refused(struct server_stats *st);

/* A client connection was refused at accept because max_connections were
 * open: counts bulwark_client_connections_refused_total. */
void observe_client_refused(void);

/* The slow-client defences (README, "Slow clients"), each named in metrics
 * by its config key. */
enum observe_defence {
    DEFENCE_MIN_BODY_RATE = 0,      /* a request body below client.min_body_rate: 408 or cut */
    DEFENCE_MAX_HEADER_CONNECTIONS, /* the oldest connection still sending its header closed */
    DEFENCE_RECLAIM_IDLE,           /* an idle keep-alive connection closed under pressure */
    DEFENCE__COUNT
};
/* A defence closed a client connection (or refused its request): counts
 * bulwark_client_defence_total{defence}. One relaxed atomic add. */
void observe_client_defence(enum observe_defence d);
uint64_t observe_client_defence_total(enum observe_defence d);
/* The config key that names d ("min_body_rate", ...). */
const char *observe_defence_name(enum observe_defence d);

enum observe_gauge {
    GAUGE_CLIENT_CONNECTIONS = 0,
    GAUGE_UPSTREAM_CONNECTIONS,
    GAUGE_CLIENT_HEADER_CONNECTIONS, /* waiting for (more of) a request head */
    GAUGE__COUNT
};
void observe_gauge_add(enum observe_gauge g, int delta);
/* The group queue (max_conns): a request waited, was refused because
 * max_pending wait already, or gave up after queue_timeout. st is any
 * server of the group (it knows its group). */
enum observe_queue_event { QUEUE_QUEUED = 0, QUEUE_REJECTED, QUEUE_TIMEOUT, QUEUE__COUNT };
void observe_queue_event(struct server_stats *st, enum observe_queue_event e);

/* Upstream connection taken from the pool (reused) or newly opened. */
void observe_pool_acquire(bool reused);

/* The body of a generated error response, in the format the client's
 * Accept asks for (HTML, JSON or plain text; a custom page from config when
 * one is set for the status). Writes at most cap bytes into out and returns
 * the length; *content_type is set to a static string. details is NULL
 * unless errors.expose_details is on. */
size_t observe_error_page(char *out, size_t cap, int status, enum cause cause, const char *rid,
                          const char *accept, size_t accept_len, const char *details,
                          const char **content_type);

/* The Proxy-Status field value (RFC 9209, RFC 8941 string escaping):
 * 'bulwark; error=<type>; next-hop="<server>"' plus '; details="..."' when
 * details is not NULL (server is the next hop's name: the proxy passes the
 * upstream group, or the address when details are exposed). Never cut: when
 * details do not fit they are left out; when the rest does not fit, 0.
 * Returns the length written (at most cap - 1, NUL terminated). */
size_t observe_proxy_status(char *out, size_t cap, enum cause cause, const char *server,
                            const char *details);

/* Whether errors.expose_details is on (for the proxy to build details). */
bool observe_expose_details(void);

/* A client-sent X-Request-Id is reused only if it is 1-128 bytes of
 * [A-Za-z0-9._:-] (nothing that could inject into logs or headers). */
bool observe_request_id_valid(const char *p, size_t n);

/* Admin listener (GET /metrics, /status, /errors) on its own thread: a
 * bounded number of connections served at once, each with a deadline for the
 * whole request and another for the whole response (README, Admin API).
 * Call once, after the first observe_configure(); later observe_configure()
 * calls open, move or close it. Returns 0 or -errno (logged). */
int observe_admin_start(const struct config *cfg);

/* The Prometheus text (format 0.0.4) GET /metrics serves. Caller frees.
 * NULL when out of memory. */
char *observe_metrics_text(size_t *len);

/* Probe every upstream server of cfg: DNS (a server whose name did not
 * resolve at load is looked up again) and a TCP connect within its group's
 * connect_timeout, all servers in parallel with non-blocking connects.
 * log_only false: wait, print one line per server to stdout (failures with
 * the cause sentence) and return how many are unreachable (bulwark check).
 * log_only true: return 0 at once; a background thread probes and logs a
 * warning per unreachable server (start and reload: never blocks start-up,
 * the backend may come up later); nothing when cfg->probe_at_start is off.
 * -1 on a local failure. */
int observe_probe_config(const struct config *cfg, bool log_only);

/* bulwark status: GET /status from the admin listener at addr (with token
 * when not NULL) and print it as a table to stdout. Returns an exit status:
 * 0, or 1 when the admin listener cannot be reached or answers an error. */
int observe_status_command(const char *addr, const char *token);

#endif
