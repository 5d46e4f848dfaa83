/* The admin listener: GET /metrics, /status and /errors on a thread of its
 * own. Blocking I/O, one request per connection, a timeout on every read
 * and write: it serves an operator and a scraper, not the public, and it
 * must never take a worker's time or crash on what it is sent. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "observe/observe_internal.h"
#include "upstream/upstream.h"

/* A request head larger than this is refused: GETs with a token fit in far
 * less, and the bound keeps a garbage sender from growing our memory. */
#define ADMIN_MAX_HEAD 8192
/* A client that stalls longer holds the (single) admin thread no longer. */
#define ADMIN_IO_TIMEOUT_MS 5000

static int admin_fd = -1;

/* ---- /status ---- */

static const char *state_of(const struct server_stats *st)
{
    return atomic_load_explicit(&st->consecutive_failures, memory_order_relaxed) ? "failing" : "up";
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

/* ,"balancer":{...}: the state all workers' balancers share for the server
 * (upstream_shared): whether it is up (down servers are passed over), the
 * exchanges in flight on it from every worker, and the last change of up. */
static void status_balancer(struct obuf *b, const char *group, const char *server)
{
    struct upstream_shared *sh = upstream_shared_get(group, server);
    if (!sh)
        return;
    bool up = atomic_load_explicit(&sh->up, memory_order_acquire);
    int cause = atomic_load_explicit(&sh->change_cause, memory_order_relaxed);
    obuf_printf(b, ",\"balancer\":{\"up\":%s,\"in_flight\":%u,\"consecutive_failures\":%u,",
                up ? "true" : "false", atomic_load_explicit(&sh->in_flight, memory_order_relaxed),
                atomic_load_explicit(&sh->consecutive_failures, memory_order_relaxed));
    obuf_puts(b, "\"changed\":");
    json_time(b, atomic_load_explicit(&sh->changed_ms, memory_order_relaxed));
    if (cause > 0 && cause < CAUSE__COUNT)
        obuf_printf(b, ",\"change_cause\":\"%s\"}", cause_get((enum cause)cause)->proxy_status);
    else
        obuf_puts(b, ",\"change_cause\":null}");
}

static void status_server(struct obuf *b, const char *group, const struct config_server *srv,
                          uint64_t *attempts, uint64_t *failures)
{
    struct server_stats *st = observe_server(group, srv->name);
    uint64_t fails = 0;
    int64_t now = observe_wall_ms();

    for (int c = 1; c < CAUSE__COUNT; c++)
        fails += atomic_load_explicit(&st->failures[c], memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&st->attempts, memory_order_relaxed);
    *attempts += n;
    *failures += fails;
    obuf_puts(b, "{\"server\":");
    obuf_json_str(b, srv->name, strlen(srv->name));
    status_balancer(b, group, srv->name);
    obuf_printf(b,
                ",\"resolved\":%s,\"state\":\"%s\",\"in_flight\":%lld,\"attempts\":%llu,"
                "\"failures\":%llu,\"consecutive_failures\":%u,\"failures_by_cause\":{",
                srv->addr.len ? "true" : "false", state_of(st),
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
            status_server(b, up->name, &up->servers[j], &attempts, &failures);
            struct server_stats *st = observe_server(up->name, up->servers[j].name);
            if (!atomic_load_explicit(&st->consecutive_failures, memory_order_relaxed))
                up_count++;
        }
        obuf_printf(b, "],\"servers_up\":%zu,\"servers_total\":%zu}", up_count, up->num_servers);
    }
    observe_pool_counts(&reused, &fresh);
    obuf_printf(b,
                "},\n\"totals\":{\"requests\":%llu,\"gateway_errors\":%llu,"
                "\"upstream_attempts\":%llu,\"upstream_failures\":%llu,"
                "\"client_connections\":%lld,\"upstream_connections\":%lld,"
                "\"pool_reused\":%llu,\"pool_new\":%llu}}\n",
                (unsigned long long)observe_requests_total(),
                (unsigned long long)observe_ring_total(), (unsigned long long)attempts,
                (unsigned long long)failures,
                (long long)observe_gauge_get(GAUGE_CLIENT_CONNECTIONS),
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
            const char *state = state_of(st);
            if (!up->servers[j].addr.len)
                state = "unresolved";
            const char *row[TABLE_COLS] = {
                j ? "" : up->name, up->servers[j].name, state, inflight, att, fail, last};
            table_row(t, row);
        }
    }
    table_write(b, t);
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

static void respond(int fd, int status, const char *reason, const char *type, const char *extra,
                    const char *body, size_t len, bool head_only)
{
    char head[512];
    int n =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nServer: bulwark\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nCache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                 status, reason, type, len, extra ? extra : "");
    send_all(fd, head, (size_t)n);
    if (!head_only)
        send_all(fd, body, len);
}

static void respond_text(int fd, int status, const char *reason, const char *text,
                         const char *extra)
{
    respond(fd, status, reason, "text/plain; charset=utf-8", extra, text, strlen(text), false);
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
 * NULL. The head is NUL terminated. */
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

/* After an early answer, read what the client still sends (bounded, briefly)
 * before closing: closing with unread input sends an RST, which can destroy
 * the answer before the client reads it. */
static void linger_close(int fd)
{
    char sink[4096];
    size_t total = 0;
    struct timeval tv = {0, 500 * 1000};

    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (total < (1u << 20)) {
        ssize_t r = recv(fd, sink, sizeof(sink), 0);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
}

static void serve(int fd)
{
    char head[ADMIN_MAX_HEAD + 1];
    size_t len = 0;

    for (;;) {
        ssize_t r = recv(fd, head + len, ADMIN_MAX_HEAD - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return; /* closed, reset or timed out: nothing to answer */
        len += (size_t)r;
        head[len] = '\0';
        if (memchr(head, '\0', len)) {
            respond_text(fd, 400, "Bad Request", "bad request\n", NULL);
            linger_close(fd);
            return;
        }
        if (strstr(head, "\r\n\r\n") || strstr(head, "\n\n"))
            break;
        if (len == ADMIN_MAX_HEAD) {
            respond_text(fd, 431, "Request Header Fields Too Large", "request head too large\n",
                         NULL);
            linger_close(fd);
            return;
        }
    }

    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    char method[16], target[1024], version[16];
    const char *eol = strpbrk(head, "\r\n");
    size_t line_len = (size_t)(eol - head);
    char line[ADMIN_MAX_HEAD + 1];
    memcpy(line, head, line_len);
    line[line_len] = '\0';
    if (sscanf(line, "%15s %1023s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0 || target[0] != '/') {
        respond_text(fd, 400, "Bad Request", "bad request\n", NULL);
        return;
    }
    bool head_only = strcmp(method, "HEAD") == 0;
    if (!head_only && strcmp(method, "GET") != 0) {
        respond_text(fd, 405, "Method Not Allowed", "only GET and HEAD\n", "Allow: GET, HEAD\r\n");
        return;
    }
    if (!authorized(head)) {
        respond_text(fd, 401, "Unauthorized",
                     "this admin listener needs \"Authorization: Bearer <admin.token>\"\n",
                     "WWW-Authenticate: Bearer realm=\"bulwark\"\r\n");
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
        respond_text(fd, 404, "Not Found", "not found: try /metrics, /status or /errors\n", NULL);
        return;
    }
    if (b.failed) {
        respond_text(fd, 500, "Internal Server Error", "out of memory\n", NULL);
    } else {
        respond(fd, 200, "OK", type, NULL, b.p ? b.p : "", b.len, head_only);
    }
    free(b.p);
}

static void *admin_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    /* Signals belong to the main thread's sigwaitinfo(). */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        int fd = accept4(admin_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: wait instead of spinning. */
                struct timespec ts = {0, 100 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        set_timeouts(fd);
        serve(fd);
        close(fd);
    }
    return NULL;
}

int observe_admin_start(const struct config *cfg)
{
    pthread_t thread;
    int one = 1, err;

    if (!cfg || !cfg->has_admin)
        return 0;
    if (admin_fd >= 0)
        return 0; /* started once: a changed address takes a restart */
    int fd = socket(cfg->admin.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = errno;
        log_error("admin listener: socket(): %s", strerror(err));
        return -err;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&cfg->admin.ss, cfg->admin.len) < 0 ||
        listen(fd, 64) < 0) {
        err = errno;
        log_error("admin listener: cannot listen on %s: %s", cfg->admin.text, strerror(err));
        close(fd);
        return -err;
    }
    admin_fd = fd;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(&thread, &attr, admin_main, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        log_error("admin listener: cannot start its thread: %s", strerror(err));
        close(fd);
        admin_fd = -1;
        return -err;
    }
    log_info("admin listening on %s%s", cfg->admin.text,
             cfg->admin_token ? " (bearer token required)" : "");
    return 0;
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
