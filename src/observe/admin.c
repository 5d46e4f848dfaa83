/* The admin listener: GET /metrics, /status and /errors on a thread of its
 * own. One poll loop over a bounded number of non-blocking connections, one
 * request per connection, a deadline for the whole request and another for
 * the whole response: it serves an operator and a scraper, not the public,
 * it must never take a worker's time or crash on what it is sent, and one
 * slow client must not keep the others waiting. A reload moves, opens or
 * closes the listener (observe_configure) and its token applies to the next
 * request. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "limit/limit.h"
#include "observe/observe_internal.h"
#include "supervise/supervise.h"
#include "upstream/upstream.h"

/* ---- /status ---- */

/* down: marked down (health checks), the balancers pass it over; failing:
 * up, but its last attempts failed; up. */
static const char *state_of(const struct server_stats *st, const struct upstream_shared *sh)
{
    if (sh && !atomic_load_explicit(&sh->up, memory_order_relaxed))
        return "down";
    if (sh && upstream_shared_ejected_for(sh, upstream_clock_ms()))
        return "ejected"; /* passive checks */
    return atomic_load_explicit(&st->consecutive_failures, memory_order_relaxed) ? "failing" : "up";
}

/* Why up last changed: an RFC 9209 type, "status 503" when a health check
 * got a status it does not expect, or NULL. */
static const char *change_cause_text(const struct upstream_shared *sh, char *out, size_t cap)
{
    int status = atomic_load_explicit(&sh->change_status, memory_order_relaxed);
    int cause = atomic_load_explicit(&sh->change_cause, memory_order_relaxed);
    if (status) {
        snprintf(out, cap, "status %d", status);
        return out;
    }
    if (cause > 0 && cause < CAUSE__COUNT)
        return cause_get((enum cause)cause)->proxy_status;
    return NULL;
}

static void json_ms_or_null(struct obuf *b, int64_t ms)
{
    if (ms < 0)
        obuf_puts(b, "null");
    else
        obuf_printf(b, "%lld", (long long)ms);
}

static void json_time(struct obuf *b, int64_t wall_ms)
{
    char when[40];
    if (wall_ms <= 0) {
        obuf_puts(b, "null");
        return;
    }
    observe_iso_time(wall_ms, when, sizeof(when));
    obuf_printf(b, "\"%s\"", when);
}

/* ,"ejected":...,"ejection":{...}: the passive checks' view of the server:
 * whether it is ejected and until when, why, how often, and its failures in
 * the current fail_window. */
static void status_ejection(struct obuf *b, const struct config_upstream *ucfg, const char *server)
{
    struct upstream_shared *sh = upstream_shared_get(ucfg->name, server);
    if (!sh)
        return;
    uint64_t now = upstream_clock_ms();
    uint64_t left = upstream_shared_ejected_for(sh, now);
    int cause = atomic_load_explicit(&sh->eject_cause, memory_order_relaxed);
    int status = atomic_load_explicit(&sh->eject_status, memory_order_relaxed);
    obuf_printf(b, ",\"ejected\":%s,\"ejection\":{\"until\":", left ? "true" : "false");
    json_time(b, left ? observe_wall_ms() + (int64_t)left : 0);
    obuf_printf(b, ",\"for_ms\":%llu,\"fails\":%u,\"max_fails\":%d,\"ejections\":%llu,\"last\":",
                (unsigned long long)left,
                upstream_window_sum(&sh->fails, now, upstream_window_slot_ms(ucfg->fail_window_ms)),
                ucfg->max_fails,
                (unsigned long long)atomic_load_explicit(&sh->ejections, memory_order_relaxed));
    json_time(b, atomic_load_explicit(&sh->ejected_ms, memory_order_relaxed));
    obuf_puts(b, ",\"cause\":");
    if (cause > 0 && cause < CAUSE__COUNT)
        obuf_printf(b, "\"%s\"}", cause_get((enum cause)cause)->proxy_status);
    else if (status)
        obuf_printf(b, "\"status %d\"}", status);
    else
        obuf_puts(b, "null}");
}

/* ,"balancer":{...}: the state all workers' balancers share for the server
 * (upstream_shared): whether it is up (down servers are passed over), the
 * exchanges in flight on it from every worker, and the last change of up. */
static void status_balancer(struct obuf *b, const struct upstream_shared *sh)
{
    if (!sh)
        return;
    bool up = atomic_load_explicit(&sh->up, memory_order_acquire);
    char text[32];
    const char *cause = change_cause_text(sh, text, sizeof(text));
    obuf_printf(b, ",\"balancer\":{\"up\":%s,\"in_flight\":%u,\"consecutive_failures\":%u,",
                up ? "true" : "false", atomic_load_explicit(&sh->in_flight, memory_order_relaxed),
                atomic_load_explicit(&sh->consecutive_failures, memory_order_relaxed));
    obuf_printf(b, "\"consecutive_passes\":%u,\"health_checked\":%s,\"changed\":",
                atomic_load_explicit(&sh->consecutive_passes, memory_order_relaxed),
                atomic_load_explicit(&sh->checked, memory_order_relaxed) ? "true" : "false");
    json_time(b, atomic_load_explicit(&sh->changed_ms, memory_order_relaxed));
    if (cause)
        obuf_printf(b, ",\"change_cause\":\"%s\"}", cause);
    else
        obuf_puts(b, ",\"change_cause\":null}");
}

/* ,"program":"...": why the program bound to the server (src/supervise) is
 * not serving, or null; the same sentence gateway errors on it carry. */
static void status_server_program(struct obuf *b, const char *group, const char *server)
{
    char text[320];
    obuf_puts(b, ",\"program\":");
    if (supervise_evidence(group, server, text, sizeof(text)))
        obuf_json_str(b, text, strlen(text));
    else
        obuf_puts(b, "null");
}

/* ,"last_stderr":[...]: the program's last stderr lines, oldest first. */
static void status_last_stderr(struct obuf *b, const char *name)
{
    char *text = malloc(SUPERVISE_TAIL_BYTES);
    size_t len = text ? supervise_last_stderr(name, text, SUPERVISE_TAIL_BYTES) : 0;
    obuf_puts(b, ",\"last_stderr\":[");
    for (size_t i = 0, start = 0; i < len; i++) {
        if (text[i] != '\n')
            continue;
        obuf_puts(b, start ? "," : "");
        obuf_json_str(b, text + start, i - start);
        start = i + 1;
    }
    obuf_puts(b, "]");
    free(text);
}

static void status_server(struct obuf *b, const struct config_upstream *up,
                          const struct config_server *srv, uint64_t *attempts, uint64_t *failures)
{
    const char *group = up->name;
    struct server_stats *st = observe_server(group, srv->name);
    uint64_t fails = 0;
    int64_t now = observe_wall_ms();

    for (int c = 1; c < CAUSE__COUNT; c++)
        fails += atomic_load_explicit(&st->failures[c], memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&st->attempts, memory_order_relaxed);
    *attempts += n;
    *failures += fails;
    struct upstream_shared *sh = upstream_shared_get(group, srv->name);
    obuf_puts(b, "{\"server\":");
    obuf_json_str(b, srv->name, strlen(srv->name));
    status_balancer(b, sh);
    status_ejection(b, up, srv->name);
    status_server_program(b, group, srv->name);
    obuf_printf(b,
                ",\"backup\":%s,\"resolved\":%s,\"state\":\"%s\",\"in_flight\":%lld,"
                "\"attempts\":%llu,"
                "\"failures\":%llu,\"consecutive_failures\":%u,\"failures_by_cause\":{",
                srv->backup ? "true" : "false", srv->addr.len ? "true" : "false", state_of(st, sh),
                (long long)atomic_load_explicit(&st->in_flight, memory_order_relaxed),
                (unsigned long long)n, (unsigned long long)fails,
                atomic_load_explicit(&st->consecutive_failures, memory_order_relaxed));
    bool first = true;
    for (int c = 1; c < CAUSE__COUNT; c++) {
        uint64_t k = atomic_load_explicit(&st->failures[c], memory_order_relaxed);
        if (!k)
            continue;
        obuf_printf(b, "%s\"%s\":%llu", first ? "" : ",", cause_get((enum cause)c)->proxy_status,
                    (unsigned long long)k);
        first = false;
    }
    obuf_puts(b, "},\"last_ok\":");
    json_time(b, atomic_load_explicit(&st->last_ok_ms, memory_order_relaxed));
    obuf_puts(b, ",\"last_error\":");
    pthread_mutex_lock(&st->lock);
    struct last_error last = st->last;
    pthread_mutex_unlock(&st->lock);
    if (!last.set) {
        obuf_puts(b, "null}");
        return;
    }
    const struct cause_info *ci = cause_get(last.cause);
    obuf_puts(b, "{\"time\":");
    json_time(b, last.time_ms);
    obuf_printf(b, ",\"seconds_ago\":%lld,\"cause\":\"%s\",\"status\":%d,\"sentence\":",
                (long long)((now - last.time_ms) / 1000), ci->proxy_status, ci->status);
    obuf_json_str(b, ci->sentence, strlen(ci->sentence));
    if (last.err) {
        const char *text = strerror(last.err);
        obuf_printf(b, ",\"errno\":%d,\"errno_text\":", last.err);
        obuf_json_str(b, text, strlen(text));
    } else {
        obuf_puts(b, ",\"errno\":null,\"errno_text\":null");
    }
    obuf_puts(b, ",\"rid\":");
    obuf_json_str(b, last.rid, strlen(last.rid));
    obuf_puts(b, ",\"connect_ms\":");
    json_ms_or_null(b, last.connect_ms);
    obuf_puts(b, ",\"header_ms\":");
    json_ms_or_null(b, last.header_ms);
    obuf_puts(b, "}}");
}

/* "programs": what the supervisor runs, by name (src/supervise). */
/* ,"limits":{"denied":{"deny":N,...},"conn_limit":{"keys":N,"connections":N,"requests":N}} */
static void status_limits(struct obuf *b)
{
    struct limit_stats ls;
    limit_stats_get(&ls);
    obuf_puts(b, ",\n\"limits\":{\"denied\":{");
    for (int i = 0; i < DENIED__COUNT; i++)
        obuf_printf(b, "%s\"%s\":%llu", i ? "," : "", limit_denial_name((enum limit_denial)i),
                    (unsigned long long)ls.denied[i]);
    obuf_printf(b, "},\"conn_limit\":{\"keys\":%llu,\"connections\":%llu,\"requests\":%llu}}",
                (unsigned long long)ls.keys, (unsigned long long)ls.connections,
                (unsigned long long)ls.requests);
}

static void status_programs(struct obuf *b)
{
    struct program_info info[64];
    size_t n = supervise_snapshot(info, sizeof(info) / sizeof(info[0]));
    int64_t now = observe_wall_ms();

    if (n > sizeof(info) / sizeof(info[0]))
        n = sizeof(info) / sizeof(info[0]);
    obuf_puts(b, ",\n\"programs\":{");
    for (size_t i = 0; i < n; i++) {
        const struct program_info *p = &info[i];
        bool alive = p->pid != 0;
        obuf_puts(b, i ? ",\n" : "\n");
        obuf_json_str(b, p->name, strlen(p->name));
        obuf_printf(b, ":{\"pid\":%d,\"state\":\"%s\",\"restarts\":%u,\"uptime_s\":", (int)p->pid,
                    supervise_state_name(p->state), p->restarts);
        if (alive && p->started_wall_ms)
            obuf_printf(b, "%lld", (long long)((now - p->started_wall_ms) / 1000));
        else
            obuf_puts(b, "null");
        status_last_stderr(b, p->name);
        char evidence[320];
        obuf_puts(b, ",\"evidence\":");
        if (supervise_evidence_text(p, now, evidence, sizeof(evidence)))
            obuf_json_str(b, evidence, strlen(evidence));
        else
            obuf_puts(b, "null");
        obuf_puts(b, ",\"last_exit\":");
        if (!p->has_exit) {
            obuf_puts(b, "null}");
            continue;
        }
        obuf_puts(b, "{\"text\":");
        obuf_json_str(b, p->last_exit, strlen(p->last_exit));
        if (p->exit_signal[0])
            obuf_printf(b, ",\"code\":null,\"signal\":\"%s\"", p->exit_signal);
        else
            obuf_printf(b, ",\"code\":%d,\"signal\":null", p->exit_code);
        obuf_printf(b,
                    ",\"core_dumped\":%s,\"hung\":%s,\"time\":", p->core_dumped ? "true" : "false",
                    p->hung ? "true" : "false");
        json_time(b, p->exited_wall_ms);
        obuf_printf(b, ",\"seconds_ago\":%lld,\"run_time_ms\":%llu}}",
                    (long long)((now - p->exited_wall_ms) / 1000),
                    (unsigned long long)p->run_time_ms);
    }
    obuf_puts(b, "}");
}

void observe_status_json(struct obuf *b)
{
    struct config *cfg = observe_current_config();
    uint64_t attempts = 0, failures = 0, reused, fresh;
    char when[40];

    observe_iso_time(observe_wall_ms(), when, sizeof(when));
    obuf_printf(b, "{\"time\":\"%s\",\"pid\":%d,\"config\":", when, (int)getpid());
    if (cfg)
        obuf_json_str(b, cfg->path, strlen(cfg->path));
    else
        obuf_puts(b, "null");
    obuf_puts(b, ",\"upstreams\":{");
    for (size_t i = 0; cfg && i < cfg->num_upstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        size_t up_count = 0;
        obuf_puts(b, i ? ",\n" : "\n");
        obuf_json_str(b, up->name, strlen(up->name));
        obuf_printf(b,
                    ":{\"connect_timeout_ms\":%u,\"read_timeout_ms\":%u,\"retries\":%d,"
                    "\"servers\":[",
                    up->connect_timeout_ms, up->read_timeout_ms, up->retries);
        for (size_t j = 0; j < up->num_servers; j++) {
            obuf_puts(b, j ? ",\n  " : "\n  ");
            status_server(b, up, &up->servers[j], &attempts, &failures);
            struct server_stats *st = observe_server(up->name, up->servers[j].name);
            if (strcmp(state_of(st, upstream_shared_get(up->name, up->servers[j].name)), "up") == 0)
                up_count++;
        }
        obuf_printf(b, "],\"servers_up\":%zu,\"servers_total\":%zu}", up_count, up->num_servers);
    }
    obuf_puts(b, "}");
    status_programs(b);
    status_limits(b);
    observe_limits_status(b);
    observe_pool_counts(&reused, &fresh);
    obuf_printf(b,
                ",\n\"totals\":{\"requests\":%llu,\"gateway_errors\":%llu,"
                "\"upstream_attempts\":%llu,\"upstream_failures\":%llu,"
                "\"client_connections\":%lld,\"client_connections_refused\":%llu,"
                "\"upstream_connections\":%lld,\"pool_reused\":%llu,\"pool_new\":%llu}}\n",
                (unsigned long long)observe_requests_total(),
                (unsigned long long)observe_ring_total(), (unsigned long long)attempts,
                (unsigned long long)failures,
                (long long)observe_gauge_get(GAUGE_CLIENT_CONNECTIONS),
                (unsigned long long)observe_client_refused_total(),
                (long long)observe_gauge_get(GAUGE_UPSTREAM_CONNECTIONS),
                (unsigned long long)reused, (unsigned long long)fresh);
    config_unref(cfg);
}

/* ---- the same as a table, for bulwark status ---- */

#define TABLE_COLS 7

struct table {
    char *cells[256][TABLE_COLS];
    size_t rows;
};

static void table_row(struct table *t, const char *const *cells)
{
    if (t->rows >= sizeof(t->cells) / sizeof(t->cells[0]))
        return;
    for (int c = 0; c < TABLE_COLS; c++)
        t->cells[t->rows][c] = strdup(cells[c] ? cells[c] : "");
    t->rows++;
}

static void table_write(struct obuf *b, struct table *t)
{
    size_t width[TABLE_COLS] = {0};
    for (size_t r = 0; r < t->rows; r++)
        for (int c = 0; c < TABLE_COLS; c++)
            if (t->cells[r][c] && strlen(t->cells[r][c]) > width[c])
                width[c] = strlen(t->cells[r][c]);
    for (size_t r = 0; r < t->rows; r++) {
        for (int c = 0; c < TABLE_COLS; c++) {
            const char *cell = t->cells[r][c] ? t->cells[r][c] : "";
            if (c == TABLE_COLS - 1)
                obuf_printf(b, "%s", cell);
            else
                obuf_printf(b, "%-*s  ", (int)width[c], cell);
            free(t->cells[r][c]);
        }
        /* No trailing blanks when the last column is empty. */
        while (b->len && b->p[b->len - 1] == ' ')
            b->len--;
        obuf_puts(b, "\n");
    }
}

static void ago(char *out, size_t cap, int64_t ms)
{
    int64_t s = ms / 1000;
    if (s < 120)
        snprintf(out, cap, "%llds ago", (long long)s);
    else if (s < 7200)
        snprintf(out, cap, "%lldm ago", (long long)(s / 60));
    else
        snprintf(out, cap, "%lldh ago", (long long)(s / 3600));
}

/* The programs (src/supervise), after the servers: name, state, pid,
 * restarts, uptime, how the last run ended, and its last stderr line. */
static void status_table_programs(struct obuf *b, struct table *t, int64_t now)
{
    struct program_info info[64];
    size_t n = supervise_snapshot(info, sizeof(info) / sizeof(info[0]));
    if (n == 0)
        return;
    if (n > sizeof(info) / sizeof(info[0]))
        n = sizeof(info) / sizeof(info[0]);
    t->rows = 0;
    static const char *const head[TABLE_COLS] = {"PROGRAM", "STATE",     "PID",        "RESTARTS",
                                                 "UPTIME",  "LAST EXIT", "LAST STDERR"};
    table_row(t, head);
    char *tail = malloc(SUPERVISE_TAIL_BYTES);
    for (size_t i = 0; i < n; i++) {
        const struct program_info *p = &info[i];
        char pid[24] = "-", restarts[24], uptime[32] = "-", last[160] = "-", line[84] = "";
        if (p->pid)
            snprintf(pid, sizeof(pid), "%d", (int)p->pid);
        snprintf(restarts, sizeof(restarts), "%u", p->restarts);
        if (p->pid && p->started_wall_ms) {
            int64_t s = (now - p->started_wall_ms) / 1000;
            snprintf(uptime, sizeof(uptime), "%lldh%02lldm%02llds", (long long)(s / 3600),
                     (long long)(s / 60 % 60), (long long)(s % 60));
        }
        if (p->has_exit) {
            char when[32];
            ago(when, sizeof(when), now - p->exited_wall_ms);
            snprintf(last, sizeof(last), "%s%s %s", p->last_exit, p->hung ? " (hung)" : "", when);
        }
        size_t len = tail ? supervise_last_stderr(p->name, tail, SUPERVISE_TAIL_BYTES) : 0;
        if (len) {
            /* the last line (each ends with a newline) */
            size_t start = len - 1;
            while (start > 0 && tail[start - 1] != '\n')
                start--;
            size_t n_line = len - 1 - start;
            snprintf(line, sizeof(line), "%.*s%s", (int)(n_line > 80 ? 77 : n_line), tail + start,
                     n_line > 80 ? "..." : "");
        }
        const char *row[TABLE_COLS] = {
            p->name, supervise_state_name(p->state), pid, restarts, uptime, last, line};
        table_row(t, row);
    }
    free(tail);
    obuf_puts(b, "\n");
    table_write(b, t);
}

void observe_status_table(struct obuf *b)
{
    struct config *cfg = observe_current_config();
    struct table *t = calloc(1, sizeof(*t));
    uint64_t reused, fresh, attempts = 0, failures = 0;
    int64_t now = observe_wall_ms();

    if (!t) {
        config_unref(cfg);
        b->failed = true;
        return;
    }
    static const char *const head[TABLE_COLS] = {"UPSTREAM", "SERVER",   "STATE",     "IN-FLIGHT",
                                                 "ATTEMPTS", "FAILURES", "LAST ERROR"};
    table_row(t, head);
    for (size_t i = 0; cfg && i < cfg->num_upstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        for (size_t j = 0; j < up->num_servers; j++) {
            struct server_stats *st = observe_server(up->name, up->servers[j].name);
            char inflight[24], att[24], fail[24], last[512] = "-";
            uint64_t fails = 0;
            for (int c = 1; c < CAUSE__COUNT; c++)
                fails += atomic_load_explicit(&st->failures[c], memory_order_relaxed);
            uint64_t n = atomic_load_explicit(&st->attempts, memory_order_relaxed);
            attempts += n;
            failures += fails;
            snprintf(inflight, sizeof(inflight), "%lld",
                     (long long)atomic_load_explicit(&st->in_flight, memory_order_relaxed));
            snprintf(att, sizeof(att), "%llu", (unsigned long long)n);
            snprintf(fail, sizeof(fail), "%llu", (unsigned long long)fails);
            pthread_mutex_lock(&st->lock);
            struct last_error le = st->last;
            pthread_mutex_unlock(&st->lock);
            if (le.set) {
                char when[32];
                ago(when, sizeof(when), now - le.time_ms);
                snprintf(last, sizeof(last), "%s %s%s%s%s rid=%s",
                         cause_get(le.cause)->proxy_status, when, le.err ? " (" : "",
                         le.err ? strerror(le.err) : "", le.err ? ")" : "", le.rid);
            }
            const struct upstream_shared *sh = upstream_shared_get(up->name, up->servers[j].name);
            char state[80], why[32];
            const char *cause = sh ? change_cause_text(sh, why, sizeof(why)) : NULL;
            const char *now_state = state_of(st, sh);
            /* "down (status 503)", "up backup": why it is down, and which
             * servers only serve while every primary is down. */
            if (strcmp(now_state, "down") == 0 && cause)
                snprintf(state, sizeof(state), "down (%s)%s", cause,
                         up->servers[j].backup ? " backup" : "");
            else
                snprintf(state, sizeof(state), "%s%s", now_state,
                         up->servers[j].backup ? " backup" : "");
            if (!up->servers[j].addr.len)
                snprintf(state, sizeof(state), "unresolved");
            const char *row[TABLE_COLS] = {
                j ? "" : up->name, up->servers[j].name, state, inflight, att, fail, last};
            table_row(t, row);
        }
    }
    table_write(b, t);
    status_table_programs(b, t, now);
    free(t);
    observe_pool_counts(&reused, &fresh);
    obuf_printf(b,
                "\nrequests %llu, gateway errors %llu, upstream attempts %llu (%llu failed)\n"
                "connections: %lld client, %lld upstream; pool reuse %.0f%% (%llu reused, %llu "
                "new)\n",
                (unsigned long long)observe_requests_total(),
                (unsigned long long)observe_ring_total(), (unsigned long long)attempts,
                (unsigned long long)failures,
                (long long)observe_gauge_get(GAUGE_CLIENT_CONNECTIONS),
                (long long)observe_gauge_get(GAUGE_UPSTREAM_CONNECTIONS),
                reused + fresh ? 100.0 * (double)reused / (double)(reused + fresh) : 0.0,
                (unsigned long long)reused, (unsigned long long)fresh);
    config_unref(cfg);
}

/* ---- the listener ---- */

/* A request head larger than this is refused (431): GETs with a token fit in
 * far less, and the bound keeps a garbage sender from growing our memory. */
#define ADMIN_MAX_HEAD 8192
/* A request target longer than this is refused (414): ours are a few bytes. */
#define ADMIN_MAX_TARGET 1023
/* The whole request head must arrive within this, counted from accept and
 * not per read: a client dripping a byte at a time is cut here. */
#define ADMIN_REQUEST_TIMEOUT_MS 5000
/* The whole response must be taken within this: a client that never reads
 * loses its connection, not the other clients' time. */
#define ADMIN_SEND_TIMEOUT_MS 5000
/* After the response, what the client still sends (a pipelined request, the
 * rest of a refused head) is read and dropped, at most this long and this
 * much: closing with unread input sends an RST, which can destroy the answer
 * before the client reads it. */
#define ADMIN_LINGER_MS 500
#define ADMIN_LINGER_BYTES (64 * 1024)
/* Connections served at once; one more is answered 503 and closed. An
 * operator, `bulwark status` and a scraper need a handful; the bound caps
 * memory (a head buffer each) and the poll set. */
#define ADMIN_MAX_CONNS 32
/* Per read and write of `bulwark status`, the client side. */
#define ADMIN_IO_TIMEOUT_MS 5000

enum admin_phase { PHASE_FREE = 0, PHASE_READ, PHASE_SEND, PHASE_LINGER };

struct admin_conn {
    int fd;
    enum admin_phase phase;
    int64_t deadline_ms; /* monotonic: the end of the current phase */
    size_t len;          /* head bytes read (PHASE_READ), bytes dropped (PHASE_LINGER) */
    struct obuf out;     /* the whole response (PHASE_SEND) */
    size_t sent;
    char head[ADMIN_MAX_HEAD + 1];
};

/* Admin thread only. */
static struct admin_conn conns[ADMIN_MAX_CONNS];
static int listen_fd = -1;
static int64_t accept_paused_until_ms; /* out of descriptors: retry then */

/* The main thread hands a new listener (or -1: close it) to the admin
 * thread, which owns the descriptors it polls and closes the old one itself
 * (closing a descriptor another thread polls could close a reused number).
 * The main thread waits for the switch, so when a reload is logged done the
 * old address no longer answers. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t taken;
    bool pending; /* fd waits for the admin thread */
    int fd;
} handover = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, -1};
static int wake_fd = -1; /* eventfd: wakes the admin thread's poll */

/* Main thread only: what the admin thread was last told to listen on. */
static bool admin_started; /* observe_admin_start ran: later configs move the listener */
static bool thread_running;
static bool listening;
static struct config_addr listen_addr;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_timeouts(int fd)
{
    struct timeval tv = {ADMIN_IO_TIMEOUT_MS / 1000, (ADMIN_IO_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void respond(struct obuf *out, int status, const char *reason, const char *type,
                    const char *extra, const char *body, size_t len, bool head_only)
{
    obuf_printf(out,
                "HTTP/1.1 %d %s\r\nServer: bulwark\r\nContent-Type: %s\r\n"
                "Content-Length: %zu\r\nCache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                status, reason, type, len, extra ? extra : "");
    if (!head_only)
        obuf_put(out, body, len);
}

static void respond_text(struct obuf *out, int status, const char *reason, const char *text,
                         const char *extra)
{
    respond(out, status, reason, "text/plain; charset=utf-8", extra, text, strlen(text), false);
}

/* Compares without an early exit, so response time says nothing about how
 * much of a guess was right. */
static bool token_matches(const char *given, size_t n, const char *token)
{
    size_t tn = strlen(token);
    unsigned char diff = (unsigned char)(n != tn);
    for (size_t i = 0; i < tn; i++)
        diff |= (unsigned char)(token[i] ^ (i < n ? given[i] : 0));
    return diff == 0;
}

/* The value of header name in a request head (case-insensitive name), or
 * NULL. The head is NUL terminated after its last field line. */
static const char *find_header(const char *head, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    const char *p = strchr(head, '\n');
    while (p && *++p) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            eol = p + strlen(p);
        if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *len = (size_t)(e - v);
            return v;
        }
        p = *eol ? eol : NULL;
    }
    return NULL;
}

/* The token is read per request: a reload's new token applies to the next
 * request, on every connection. */
static bool authorized(const char *head)
{
    bool ok = true;
    pthread_mutex_lock(&observe_settings.lock);
    const char *token = observe_settings.admin_token;
    if (token) {
        size_t len;
        const char *v = find_header(head, "Authorization", &len);
        /* RFC 6750 2.1: "Bearer" is case-insensitive, then one space. */
        ok = v && len > 7 && strncasecmp(v, "Bearer ", 7) == 0 &&
             token_matches(v + 7, len - 7, token);
    }
    pthread_mutex_unlock(&observe_settings.lock);
    return ok;
}

/* Where the head's empty line starts (just after the last field line's
 * LF), or 0 while it is incomplete. Bytes after it (a pipelined request)
 * are not part of this request: its fields are searched only up to here. */
static size_t head_end(const char *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n' || (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n'))
            return i + 1;
    }
    return 0;
}

static void respond_unauthorized(struct obuf *out)
{
    respond_text(out, 401, "Unauthorized",
                 "this admin listener needs \"Authorization: Bearer <admin.token>\"\n",
                 "WWW-Authenticate: Bearer realm=\"bulwark\"\r\n");
}

/* POST /programs/<name>/restart: the supervisor restarts the program (a
 * rolling restart of one). It changes what runs, so it needs admin.token
 * even where the pages do not: 403 without one configured, 401 without
 * the right one; then 405 for another method, 404 for an unknown program
 * or action, 202 once the supervisor was asked (it restarts on its own
 * loop; /status shows the progress). */
static void answer_program(struct obuf *out, const char *head, size_t method_len, const char *rest)
{
    char name[CONFIG_MAX_PROGRAM_NAME + 1];
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : 0;
    bool has_token;

    pthread_mutex_lock(&observe_settings.lock);
    has_token = observe_settings.admin_token != NULL;
    pthread_mutex_unlock(&observe_settings.lock);
    if (!has_token) {
        respond_text(out, 403, "Forbidden",
                     "restarting a program needs admin.token in the configuration\n", NULL);
        return;
    }
    if (!authorized(head)) {
        respond_unauthorized(out);
        return;
    }
    if (!(method_len == 4 && memcmp(head, "POST", 4) == 0)) {
        respond_text(out, 405, "Method Not Allowed", "only POST\n", "Allow: POST\r\n");
        return;
    }
    if (!slash || len == 0 || len >= sizeof(name) || strcmp(slash, "/restart") != 0) {
        respond_text(out, 404, "Not Found", "not found: try POST /programs/<name>/restart\n", NULL);
        return;
    }
    memcpy(name, rest, len);
    name[len] = '\0';
    if (supervise_restart(NULL, name) < 0) {
        respond_text(out, 404, "Not Found", "no such program\n", NULL);
        return;
    }
    log_info("admin: restart of program %s asked", name);
    struct obuf b = {0};
    obuf_puts(&b, "{\"program\":");
    obuf_json_str(&b, name, len);
    obuf_puts(&b, ",\"restart\":\"accepted\"}\n");
    if (b.failed)
        respond_text(out, 500, "Internal Server Error", "out of memory\n", NULL);
    else
        respond(out, 202, "Accepted", "application/json", NULL, b.p, b.len, false);
    free(b.p);
}

/* The answer to the complete request head in c->head (NUL terminated at
 * its end), into c->out. */
static void answer(struct admin_conn *c)
{
    struct obuf *out = &c->out;
    const char *head = c->head;

    /* Request line: METHOD SP TARGET SP HTTP/1.x, nothing else. */
    const char *eol = strpbrk(head, "\r\n");
    size_t line_len = eol ? (size_t)(eol - head) : strlen(head);
    const char *sp1 = memchr(head, ' ', line_len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', line_len - (size_t)(sp1 + 1 - head)) : NULL;
    const char *version = sp2 ? sp2 + 1 : NULL;
    size_t version_len = version ? line_len - (size_t)(version - head) : 0;
    if (!sp2 || sp1 == head || sp2 == sp1 + 1 || sp1[1] != '/' || version_len != 8 ||
        (memcmp(version, "HTTP/1.1", 8) != 0 && memcmp(version, "HTTP/1.0", 8) != 0)) {
        respond_text(out, 400, "Bad Request", "bad request\n", NULL);
        return;
    }
    size_t target_len = (size_t)(sp2 - sp1 - 1);
    if (target_len > ADMIN_MAX_TARGET) {
        respond_text(out, 414, "URI Too Long", "request target too long\n", NULL);
        return;
    }
    char target[ADMIN_MAX_TARGET + 1];
    memcpy(target, sp1 + 1, target_len);
    target[target_len] = '\0';
    size_t method_len = (size_t)(sp1 - head);
    if (strncmp(target, "/programs/", 10) == 0) {
        answer_program(out, head, method_len, target + 10);
        return;
    }
    bool head_only = method_len == 4 && memcmp(head, "HEAD", 4) == 0;
    if (!head_only && !(method_len == 3 && memcmp(head, "GET", 3) == 0)) {
        respond_text(out, 405, "Method Not Allowed", "only GET and HEAD\n", "Allow: GET, HEAD\r\n");
        return;
    }
    if (!authorized(head)) {
        respond_unauthorized(out);
        return;
    }
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';

    struct obuf b = {0};
    const char *type = "application/json";
    if (strcmp(target, "/metrics") == 0) {
        observe_metrics_write(&b);
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(target, "/status") == 0) {
        if (query && strstr(query, "format=text")) {
            observe_status_table(&b);
            type = "text/plain; charset=utf-8";
        } else {
            observe_status_json(&b);
        }
    } else if (strcmp(target, "/errors") == 0) {
        observe_ring_write(&b);
    } else if (strcmp(target, "/") == 0) {
        obuf_puts(&b, "bulwark admin: GET /metrics (Prometheus), /status (JSON; "
                      "?format=text for a table), /errors (recent gateway errors, JSON)\n");
        type = "text/plain; charset=utf-8";
    } else {
        respond_text(out, 404, "Not Found", "not found: try /metrics, /status or /errors\n", NULL);
        return;
    }
    if (b.failed)
        respond_text(out, 500, "Internal Server Error", "out of memory\n", NULL);
    else
        respond(out, 200, "OK", type, NULL, b.p ? b.p : "", b.len, head_only);
    free(b.p);
}

static void conn_close(struct admin_conn *c)
{
    close(c->fd);
    free(c->out.p);
    c->out = (struct obuf){0};
    c->fd = -1;
    c->phase = PHASE_FREE;
}

static void conn_linger(struct admin_conn *c)
{
    free(c->out.p);
    c->out = (struct obuf){0};
    shutdown(c->fd, SHUT_WR);
    c->phase = PHASE_LINGER;
    c->deadline_ms = mono_ms() + ADMIN_LINGER_MS;
    c->len = 0;
}

static void conn_send(struct admin_conn *c)
{
    while (c->sent < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* poll says when the client has taken some */
        if (w <= 0) {
            conn_close(c);
            return;
        }
        c->sent += (size_t)w;
    }
    conn_linger(c);
}

/* The response is ready in c->out (or could not be built): send it. */
static void conn_respond(struct admin_conn *c)
{
    if (c->out.failed) {
        conn_close(c); /* out of memory: nothing sensible to send */
        return;
    }
    c->phase = PHASE_SEND;
    c->sent = 0;
    c->deadline_ms = mono_ms() + ADMIN_SEND_TIMEOUT_MS;
    conn_send(c);
}

static void conn_read(struct admin_conn *c)
{
    ssize_t r = recv(c->fd, c->head + c->len, ADMIN_MAX_HEAD - c->len, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r <= 0) {
        conn_close(c); /* closed or reset before a whole head: nothing to answer */
        return;
    }
    c->len += (size_t)r;
    size_t end = head_end(c->head, c->len);
    if (memchr(c->head, '\0', end ? end : c->len)) {
        respond_text(&c->out, 400, "Bad Request", "bad request\n", NULL);
    } else if (end) {
        c->head[end] = '\0';
        answer(c);
    } else if (c->len == ADMIN_MAX_HEAD) {
        respond_text(&c->out, 431, "Request Header Fields Too Large", "request head too large\n",
                     NULL);
    } else {
        return; /* wait for more, until the request deadline */
    }
    conn_respond(c);
}

static void conn_drop_input(struct admin_conn *c)
{
    char sink[4096];
    ssize_t r = recv(c->fd, sink, sizeof(sink), 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r <= 0 || (c->len += (size_t)r) > ADMIN_LINGER_BYTES)
        conn_close(c);
}

static void conn_event(struct admin_conn *c)
{
    switch (c->phase) {
    case PHASE_READ:
        conn_read(c);
        break;
    case PHASE_SEND:
        conn_send(c);
        break;
    case PHASE_LINGER:
        conn_drop_input(c);
        break;
    case PHASE_FREE:
        break;
    }
}

static void accept_all(void)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nServer: bulwark\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
                               "Cache-Control: no-store\r\nRetry-After: 1\r\n"
                               "Connection: close\r\n\r\nadmin listener busy\n";
    /* Bounded per round, so a flood of connections cannot keep the thread
     * from serving the ones it holds. */
    for (int round = 0; round < 2 * ADMIN_MAX_CONNS; round++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_paused_until_ms = mono_ms() + 100; /* wait instead of spinning */
            return;
        }
        struct admin_conn *c = NULL;
        for (int i = 0; i < ADMIN_MAX_CONNS && !c; i++)
            if (conns[i].phase == PHASE_FREE)
                c = &conns[i];
        if (!c) {
            /* Over the bound: say so at once (best effort, on an empty send
             * buffer) rather than keep the client waiting. */
            ssize_t ignored = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL);
            (void)ignored;
            close(fd);
            continue;
        }
        c->fd = fd;
        c->phase = PHASE_READ;
        c->len = 0;
        c->deadline_ms = mono_ms() + ADMIN_REQUEST_TIMEOUT_MS;
    }
}

/* Adopt the listener the main thread handed over, closing the previous one. */
static void take_handover(void)
{
    pthread_mutex_lock(&handover.lock);
    if (handover.pending) {
        if (listen_fd >= 0)
            close(listen_fd);
        listen_fd = handover.fd;
        handover.fd = -1;
        handover.pending = false;
        pthread_cond_broadcast(&handover.taken);
    }
    pthread_mutex_unlock(&handover.lock);
}

/* One poll loop: every connection has its own deadline, so a slow client
 * costs the others nothing; pages are built in memory, then sent without
 * blocking. */
static void *admin_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    /* Signals belong to the main thread's sigwaitinfo(). */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (int i = 0; i < ADMIN_MAX_CONNS; i++)
        conns[i].fd = -1;
    for (;;) {
        struct pollfd pfd[2 + ADMIN_MAX_CONNS];
        struct admin_conn *who[2 + ADMIN_MAX_CONNS];
        int n = 0, listen_at = -1;
        int64_t now = mono_ms(), next = -1;

        take_handover();
        pfd[n] = (struct pollfd){.fd = wake_fd, .events = POLLIN};
        who[n++] = NULL;
        if (listen_fd >= 0 && now >= accept_paused_until_ms) {
            listen_at = n;
            pfd[n] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
            who[n++] = NULL;
        } else if (listen_fd >= 0) {
            next = accept_paused_until_ms;
        }
        for (int i = 0; i < ADMIN_MAX_CONNS; i++) {
            struct admin_conn *c = &conns[i];
            if (c->phase == PHASE_FREE)
                continue;
            if (now >= c->deadline_ms) {
                conn_close(c); /* the request, the response or the linger took too long */
                continue;
            }
            if (next < 0 || c->deadline_ms < next)
                next = c->deadline_ms;
            pfd[n] =
                (struct pollfd){.fd = c->fd, .events = c->phase == PHASE_SEND ? POLLOUT : POLLIN};
            who[n++] = c;
        }
        int timeout = next < 0 ? -1 : (int)(next - now);
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            /* EINTR, or ENOMEM: try again shortly rather than spin. */
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (pfd[0].revents) {
            uint64_t count;
            ssize_t ignored = read(wake_fd, &count, sizeof(count));
            (void)ignored;
        }
        for (int i = 1; i < n; i++)
            if (who[i] && pfd[i].revents)
                conn_event(who[i]);
        if (listen_at >= 0 && pfd[listen_at].revents)
            accept_all();
    }
    return NULL;
}

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

int observe_admin_prepare(const struct config *cfg, struct admin_change *next)
{
    int one = 1, err;

    *next = (struct admin_change){.fd = -1};
    if (!admin_started)
        return 0; /* the first config: observe_admin_start opens the listener */
    if (!cfg->has_admin) {
        next->apply = listening; /* close it */
        return 0;
    }
    if (listening && same_addr(&cfg->admin, &listen_addr))
        return 0; /* unchanged: the socket and its accept queue stay */
    int fd = socket(cfg->admin.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        err = errno;
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, (const struct sockaddr *)&cfg->admin.ss, cfg->admin.len) == 0 &&
            listen(fd, 64) == 0) {
            next->apply = true;
            next->fd = fd;
            next->addr = cfg->admin;
            return 0;
        }
        err = errno;
        close(fd);
    }
    if (listening)
        log_error("admin listener: cannot listen on %s: %s%s; still listening on %s with the "
                  "previous admin token (the rest of the configuration applies)",
                  cfg->admin.text, strerror(err),
                  err == EADDRINUSE ? " (is another server running on it?)" : "", listen_addr.text);
    else
        log_error("admin listener: cannot listen on %s: %s%s", cfg->admin.text, strerror(err),
                  err == EADDRINUSE ? " (is another server running on it?)" : "");
    return -err;
}

int observe_admin_commit(const struct config *cfg, struct admin_change *next)
{
    if (!next->apply)
        return 0;
    if (!thread_running && next->fd >= 0) {
        pthread_t thread;
        pthread_attr_t attr;
        int err = 0;
        wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake_fd < 0) {
            err = errno;
        } else {
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            err = pthread_create(&thread, &attr, admin_main, NULL);
            pthread_attr_destroy(&attr);
        }
        if (err) {
            log_error("admin listener: cannot start its thread: %s", strerror(err));
            if (wake_fd >= 0)
                close(wake_fd);
            wake_fd = -1;
            close(next->fd);
            return -err;
        }
        thread_running = true;
    }
    if (thread_running) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2; /* the admin thread only ever builds a page between polls */
        pthread_mutex_lock(&handover.lock);
        if (handover.pending && handover.fd >= 0)
            close(handover.fd); /* an earlier change the admin thread never took */
        handover.fd = next->fd;
        handover.pending = true;
        uint64_t one = 1;
        ssize_t ignored = write(wake_fd, &one, sizeof(one));
        (void)ignored;
        while (handover.pending &&
               pthread_cond_timedwait(&handover.taken, &handover.lock, &until) == 0)
            ;
        pthread_mutex_unlock(&handover.lock);
    }
    if (next->fd >= 0) {
        if (listening)
            log_info("admin listener moved from %s to %s%s", listen_addr.text, next->addr.text,
                     cfg->admin_token ? " (bearer token required)" : "");
        else
            log_info("admin listening on %s%s", next->addr.text,
                     cfg->admin_token ? " (bearer token required)" : "");
        listening = true;
        listen_addr = next->addr;
    } else {
        log_info("admin listener on %s closed: admin is no longer in the configuration",
                 listen_addr.text);
        listening = false;
    }
    return 0;
}

int observe_admin_start(const struct config *cfg)
{
    struct admin_change next;

    if (!cfg || admin_started)
        return 0;
    admin_started = true;
    int rc = observe_admin_prepare(cfg, &next);
    if (rc < 0)
        return rc;
    return observe_admin_commit(cfg, &next);
}

/* ---- bulwark status ---- */

int observe_status_command(const char *addr, const char *token)
{
    struct config_addr a;
    char why[512];

    if (config_parse_addr(addr, true, &a, why, sizeof(why)) < 0) {
        fprintf(stderr, "bulwark status: bad admin address \"%s\": %s\n", addr, why);
        return 2;
    }
    if (a.ss.ss_family == AF_INET &&
        ((struct sockaddr_in *)&a.ss)->sin_addr.s_addr == htonl(INADDR_ANY))
        ((struct sockaddr_in *)&a.ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "bulwark status: socket(): %s\n", strerror(errno));
        return 1;
    }
    set_timeouts(fd);
    if (connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
        fprintf(stderr,
                "bulwark status: cannot reach the admin listener at %s: %s\n"
                "(is bulwark running, with admin: set in its config?)\n",
                addr, strerror(errno));
        close(fd);
        return 1;
    }
    char req[1024];
    int n = snprintf(
        req, sizeof(req),
        "GET /status?format=text HTTP/1.1\r\nHost: %s\r\n%s%s%sConnection: close\r\n\r\n", addr,
        token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(req)) {
        fprintf(stderr, "bulwark status: admin token too long\n");
        close(fd);
        return 2;
    }
    send_all(fd, req, (size_t)n);
    struct obuf b = {0};
    char chunk[16384];
    for (;;) {
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        obuf_put(&b, chunk, (size_t)r);
    }
    close(fd);
    int status = 0;
    char *body = b.p ? strstr(b.p, "\r\n\r\n") : NULL;
    if (!b.p || sscanf(b.p, "HTTP/1.%*d %d", &status) != 1 || !body) {
        fprintf(stderr, "bulwark status: no valid answer from %s\n", addr);
        free(b.p);
        return 1;
    }
    body += 4;
    if (status != 200) {
        fprintf(stderr, "bulwark status: %s answered %d: %s", addr, status, body);
        if (status == 401)
            fprintf(stderr, "(pass the token with --token, or -c the config that sets "
                            "admin.token)\n");
        free(b.p);
        return 1;
    }
    fputs(body, stdout);
    free(b.p);
    return 0;
}
