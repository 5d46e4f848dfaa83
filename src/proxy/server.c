/* Workers, listening sockets, signals, reload and graceful shutdown. */
#include "proxy/proxy_internal.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "supervise/supervise.h"

#define HOUSEKEEPING_MS 1000
#define DRAIN_CHECK_MS 20
#define ACCEPT_BATCH 64
#define ACCEPT_BACKOFF_MS 100
#define LISTEN_BACKLOG 4096

/* The main thread: a loop of its own for signals, the drain's deadline and
 * the workers' "finished" notifications. */
struct server {
    struct worker **workers;
    int num_workers;
    struct config *cfg;
    struct loop *loop;
    struct signal_watch sighup, sigterm, sigint, sigquit;
    struct io finished; /* eventfd: a worker thread ended */
    struct timer shutdown_deadline;
    bool draining;
    struct upstream_health *health; /* active checks, on this loop; NULL: none */
    struct supervisor *supervisor;  /* the programs, on this loop */
};

/* Open a listening socket. SO_REUSEPORT gives each worker its own socket
 * and accept queue: no thundering herd, no lock. */
static int open_listener(const struct config_addr *a, char *why, size_t why_len)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket(): %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        snprintf(why, why_len, "bind() to %s failed: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(why, why_len, "listen() on %s failed: %s", a->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void accept_resume(struct timer *t)
{
    struct worker *w = container_of(t, struct worker, accept_resume);
    for (struct listener *l = w->listeners; l; l = l->next)
        loop_listener_pause(w->loop, &l->io, false);
}

/* Client connections open now, all workers together (max_connections). */
static _Atomic uint32_t open_clients;

/* The answer to a connection over max_connections, written at accept
 * without reading the request: the client learns at once why, and when to
 * try again, instead of waiting in a full accept queue. */
static const char refusal[] = "HTTP/1.1 503 Service Unavailable\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 45\r\n"
                              "Retry-After: 1\r\n"
                              "Proxy-Status: bulwark; error=connection_limit_reached\r\n"
                              "Connection: close\r\n"
                              "\r\n"
                              "Too many connections: try again in a moment.\n";

/* One warning per second per worker at most: a flood of refusals must not
 * become a flood of log lines. */
static __thread uint64_t refusal_logged_ms;
static __thread uint64_t refusals_unlogged;

static void refuse_client(struct worker *w, int fd, uint32_t max)
{
    observe_client_refused();
    ssize_t n = send(fd, refusal, sizeof(refusal) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)n; /* a full or reset socket: the close below is the answer */
    /* Half-close, then drop what already arrived: closing with unread bytes
     * would send a reset that can destroy the 503 before it is read. */
    shutdown(fd, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    close(fd);
    refusals_unlogged++;
    uint64_t now = loop_now_ms(w->loop);
    if (refusal_logged_ms && now - refusal_logged_ms < 1000)
        return;
    log_warn("client connection refused with 503: max_connections (%u) are open; "
             "cause=connection_limit_reached refused=%llu",
             max, (unsigned long long)refusals_unlogged);
    refusal_logged_ms = now;
    refusals_unlogged = 0;
}

/* A slot under max_connections for a new client connection, or false after
 * answering it 503 and closing it. Of the connections already accepted only
 * an idle keep-alive one is ever closed to make room (reclaim_idle_at). */
static bool client_admit(struct worker *w, int fd)
{
    uint32_t max = w->set->cfg->max_connections;
    uint32_t open = atomic_fetch_add_explicit(&open_clients, 1, memory_order_relaxed);
    /* Under pressure the oldest idle keep-alive connection makes room
     * (reclaim_idle_at): a waiting client matters more than an idle one. */
    if (defence_reclaim_idle(w, open))
        open--;
    if (!max || open < max)
        return true;
    atomic_fetch_sub_explicit(&open_clients, 1, memory_order_relaxed);
    refuse_client(w, fd, max);
    return false;
}

void worker_client_closed(void)
{
    atomic_fetch_sub_explicit(&open_clients, 1, memory_order_relaxed);
}

static void listener_event(struct io *io, uint32_t events)
{
    struct listener *l = (struct listener *)io;
    struct worker *w = l->w;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of
                 * spinning on a ready listener; accepting resumes by itself. */
                log_error("accept() on %s failed: %s; pausing accepts for %d ms "
                          "open_connections=%zu",
                          l->addr.text, strerror(errno), ACCEPT_BACKOFF_MS, w->num_sessions);
                for (struct listener *p = w->listeners; p; p = p->next)
                    loop_listener_pause(w->loop, &p->io, true);
                loop_timer_set(w->loop, &w->accept_resume, ACCEPT_BACKOFF_MS);
                return;
            }
            log_error("accept() on %s failed: %s", l->addr.text, strerror(errno));
            return;
        }
        if (!client_admit(w, fd))
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        session_accept(w, fd, (struct sockaddr *)&ss, len, l->proxy_protocol);
    }
}

static struct listener *listener_add(struct worker *w, const struct config_addr *a, int fd,
                                     bool proxy_protocol)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return NULL;
    }
    l->io.fd = fd;
    l->io.on_event = listener_event;
    l->w = w;
    l->addr = *a;
    l->proxy_protocol = proxy_protocol;
    if (loop_add_listener(w->loop, &l->io) < 0) {
        close(fd);
        free(l);
        return NULL;
    }
    l->next = w->listeners;
    w->listeners = l;
    return l;
}

static void listener_closed_event(struct io *io, uint32_t events)
{
    (void)io;
    (void)events;
}

static void sweep_listeners(struct deferred *d)
{
    struct worker *w = container_of(d, struct worker, sweep_listeners);
    while (w->dead_listeners) {
        struct listener *l = w->dead_listeners;
        w->dead_listeners = l->next;
        free(l);
    }
}

/* Freed after the event batch: epoll may already have handed us an event
 * for this listener in the same batch. */
static void listener_close(struct worker *w, struct listener *l)
{
    loop_del(w->loop, &l->io);
    close(l->io.fd);
    l->io.fd = -1;
    l->io.on_event = listener_closed_event;
    l->next = w->dead_listeners;
    w->dead_listeners = l;
    w->sweep_listeners.cb = sweep_listeners;
    loop_defer(w->loop, &w->sweep_listeners);
}

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Make the worker's listeners match cfg: keep sockets whose address stays
 * (their accept queues keep every pending connection), open new ones,
 * close the rest. */
static int worker_sync_listeners(struct worker *w, const struct config *cfg)
{
    struct listener **pp = &w->listeners;
    while (*pp) {
        struct listener *l = *pp;
        bool keep = false;
        for (size_t i = 0; i < cfg->num_listen; i++) {
            if (same_addr(&l->addr, &cfg->listen[i])) {
                keep = true;
                /* a kept socket takes the new proxy_protocol setting */
                l->proxy_protocol = cfg->listen_proxy_protocol[i];
            }
        }
        if (keep) {
            pp = &l->next;
        } else {
            *pp = l->next;
            listener_close(w, l);
        }
    }
    int failures = 0;
    for (size_t i = 0; i < cfg->num_listen; i++) {
        bool have = false;
        for (struct listener *l = w->listeners; l; l = l->next)
            have |= same_addr(&l->addr, &cfg->listen[i]);
        if (have)
            continue;
        char why[256];
        int fd = open_listener(&cfg->listen[i], why, sizeof(why));
        if (fd < 0 || !listener_add(w, &cfg->listen[i], fd, cfg->listen_proxy_protocol[i])) {
            log_error("worker %d cannot listen: %s", w->id, fd < 0 ? why : "out of memory");
            failures++;
        }
    }
    return failures ? -1 : 0;
}

static void flush_logs(struct deferred *d)
{
    (void)d;
    log_access_flush();
}

void worker_defer_flush(struct worker *w)
{
    loop_defer(w->loop, &w->flush_logs);
}

static void housekeeping(struct timer *t)
{
    struct worker *w = container_of(t, struct worker, housekeeping);
    if (w->draining && w->num_sessions == 0) {
        loop_stop(w->loop);
        return;
    }
    buf_trim_free_list();
    log_access_flush();
    defence_log_flush(w);
    loop_timer_set(w->loop, t, w->draining ? DRAIN_CHECK_MS : HOUSEKEEPING_MS);
}

/* Per-worker upstream state for cfg, with each server's shared counters. */
static struct upstream_set *worker_set_new(struct worker *w, struct config *cfg)
{
    struct upstream_set *set = upstream_set_new(w->loop, cfg);
    for (size_t i = 0; set && i < set->num_groups; i++) {
        struct upstream_group *g = &set->groups[i];
        for (size_t j = 0; j < g->num_servers; j++)
            g->servers[j].stats = observe_server(g->cfg->name, g->servers[j].cfg->name);
    }
    return set;
}

static void upstream_conn_gauge(int delta)
{
    observe_gauge_add(GAUGE_UPSTREAM_CONNECTIONS, delta);
}

static void worker_command(struct io *io, uint32_t events)
{
    struct worker *w = container_of(io, struct worker, notify);
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_error("worker %d: reading its command eventfd failed: %s", w->id, strerror(errno));
    int cmds = atomic_exchange(&w->commands, 0);
    if (cmds & WORKER_CMD_RELOAD) {
        struct config *cfg = atomic_exchange(&w->pending, NULL);
        if (cfg) {
            struct upstream_set *set = worker_set_new(w, cfg);
            if (set) {
                struct upstream_set *old = w->set;
                w->set = set;
                upstream_set_use(set);
                upstream_set_leave(old);
                upstream_set_retire(old);
                if (!w->draining)
                    worker_sync_listeners(w, cfg);
            } else {
                log_error("worker %d: out of memory applying the new config; keeping the old one",
                          w->id);
            }
            config_unref(cfg);
        }
    }
    if (cmds & WORKER_CMD_DRAIN && !w->draining) {
        w->draining = true;
        while (w->listeners) {
            struct listener *l = w->listeners;
            w->listeners = l->next;
            listener_close(w, l);
        }
        session_close_idle(w);
        loop_timer_set(w->loop, &w->housekeeping, 0);
    }
    if (cmds & WORKER_CMD_RECLAIM && w->set)
        upstream_reclaim_idle(w->set);
    if (cmds & WORKER_CMD_STOP)
        loop_stop(w->loop);
}

static void worker_post(struct worker *w, int cmd)
{
    atomic_fetch_or(&w->commands, cmd);
    uint64_t one = 1;
    if (write(w->notify.fd, &one, sizeof(one)) < 0)
        log_error("worker %d: posting a command failed: %s", w->id, strerror(errno));
}

/* Every worker, for upstream's reclaim hook (set before the threads start,
 * never changed after). */
static struct worker **all_workers;
static int num_all_workers;

/* A worker found a FastCGI server full while others hold idle connections
 * to it: every worker closes those another worker's waiters need. A
 * command already posted and not yet read is not posted again. */
static void reclaim_idle_everywhere(void)
{
    for (int i = 0; i < num_all_workers; i++) {
        struct worker *w = all_workers[i];
        if (!(atomic_load(&w->commands) & WORKER_CMD_RECLAIM))
            worker_post(w, WORKER_CMD_RECLAIM);
    }
}

/* Release what the worker thread owns, on that thread (its buffer free
 * list and deferred frees are thread-local). */
static void worker_teardown(struct worker *w)
{
    while (w->listeners) {
        struct listener *l = w->listeners;
        w->listeners = l->next;
        listener_close(w, l);
    }
    session_close_all(w);
    upstream_set_leave(w->set);
    upstream_set_retire(w->set);
    w->set = NULL;
    loop_run_deferred(w->loop);
    while (w->free_requests) {
        struct request *r = w->free_requests;
        w->free_requests = r->next_free;
        free(r);
    }
    for (size_t i = 0; i < w->num_stores; i++)
        store_free(w->stores[i].st);
    w->num_stores = 0;
    buf_free_all();
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    loop_run(w->loop);
    worker_teardown(w);
    log_access_flush();
    atomic_store(&w->finished, true);
    uint64_t one = 1;
    if (write(w->finished_fd, &one, sizeof(one)) < 0)
        log_error("worker %d: notifying its end failed: %s", w->id, strerror(errno));
    return NULL;
}

static struct worker *worker_new(int id, struct config *cfg, int finished_fd)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->id = id;
    w->finished_fd = finished_fd;
    w->loop = loop_new();
    w->notify.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->loop || w->notify.fd < 0)
        return NULL;
    w->notify.on_event = worker_command;
    loop_add_listener(w->loop, &w->notify);
    w->set = worker_set_new(w, cfg);
    if (!w->set)
        return NULL;
    upstream_set_use(w->set);
    timer_init(&w->housekeeping, housekeeping);
    timer_init(&w->accept_resume, accept_resume);
    w->flush_logs.cb = flush_logs;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    w->rid_salt = (uint32_t)(ts.tv_nsec ^ ts.tv_sec ^ (getpid() << 8) ^ id);
    loop_timer_set(w->loop, &w->housekeeping, HOUSEKEEPING_MS);
    if (worker_sync_listeners(w, cfg) < 0)
        return NULL;
    return w;
}

/* The descriptors bulwark may open: the soft RLIMIT_NOFILE, first raised to
 * the hard limit (each client needs one, and one more upstream; a 1024
 * default would cap a slowloris defence long before max_connections). */
static uint64_t fd_limit;

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn("getrlimit(RLIMIT_NOFILE) failed: %s", strerror(errno));
        fd_limit = 1024;
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            log_info("raised the open-file limit from %llu to the hard limit %llu",
                     (unsigned long long)was, (unsigned long long)rl.rlim_max);
        else
            log_warn("cannot raise the open-file limit from %llu to %llu: %s",
                     (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    fd_limit = rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (uint64_t)rl.rlim_cur;
}

static void apply_logs(const struct config *cfg)
{
    int rc = log_open_error(cfg->error_log);
    if (rc < 0)
        log_error("cannot open error log %s: %s", cfg->error_log, strerror(-rc));
    rc = log_open_access(cfg->access_log, cfg->access_log_off);
    if (rc < 0)
        log_error("cannot open access log %s: %s", cfg->access_log, strerror(-rc));
}

/* Is another process (another bulwark, nginx...) on this address? Our own
 * listeners use SO_REUSEPORT, which would silently share the port with a
 * second instance started by mistake; a plain bind() refuses. */
static int probe_address_free(const struct config_addr *a, char *why, size_t why_len)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket(): %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, (const struct sockaddr *)&a->ss, a->len);
    if (rc < 0)
        snprintf(why, why_len, "cannot listen on %s: %s%s", a->text, strerror(errno),
                 errno == EADDRINUSE ? " (is another server running on it?)" : "");
    close(fd);
    return rc < 0 ? -1 : 0;
}

/* Refuse a reload whose new listen addresses cannot be bound. */
static int check_new_listeners(const struct config *old, const struct config *cfg)
{
    int bad = 0;
    for (size_t i = 0; i < cfg->num_listen; i++) {
        bool existing = false;
        for (size_t j = 0; j < old->num_listen; j++)
            existing |= same_addr(&old->listen[j], &cfg->listen[i]);
        if (existing)
            continue;
        char why[256];
        if (probe_address_free(&cfg->listen[i], why, sizeof(why)) < 0) {
            log_error("reload refused: %s", why);
            bad++;
        }
    }
    return bad ? -1 : 0;
}

static void reload(struct server *srv)
{
    struct config_errors errs = {0};
    log_info("reloading configuration from %s", srv->cfg->path);
    struct config *cfg = config_load(srv->cfg->path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.count; i++)
            log_error("reload refused: %s", errs.items[i].text);
        log_error("reload refused: %zu error(s) in %s; still serving the previous configuration",
                  errs.count, srv->cfg->path);
        config_errors_free(&errs);
        return;
    }
    config_errors_free(&errs);
    if (check_new_listeners(srv->cfg, cfg) < 0) {
        config_unref(cfg);
        return;
    }
    if (cfg->workers != srv->num_workers)
        log_warn("workers changed from %d to %d: takes effect at the next restart",
                 srv->num_workers, cfg->workers);
    apply_logs(cfg);
    for (size_t i = 0; i < cfg->num_warnings; i++)
        log_warn("%s", cfg->warnings[i]);
    observe_configure(cfg);
    observe_probe_config(cfg, true);
    defence_configure(cfg, fd_limit);
    if (srv->health)
        upstream_health_reload(srv->health, cfg);
    /* Before the workers see the new upstreams: an added program's server
     * is marked down until its program answers. */
    supervise_reload(srv->supervisor, cfg);
    for (int i = 0; i < srv->num_workers; i++) {
        struct config *old = atomic_exchange(&srv->workers[i]->pending, config_ref(cfg));
        if (old)
            config_unref(old);
        worker_post(srv->workers[i], WORKER_CMD_RELOAD);
    }
    config_unref(srv->cfg);
    srv->cfg = cfg;
    log_info("configuration reloaded: %zu upstream(s), %zu route(s)", cfg->num_upstreams,
             cfg->num_routes);
}

static bool all_finished(struct server *srv)
{
    for (int i = 0; i < srv->num_workers; i++)
        if (!atomic_load(&srv->workers[i]->finished))
            return false;
    return true;
}

static void drain_start(struct server *srv, const char *signal_name)
{
    if (srv->draining) {
        /* A second SIGTERM does not shorten the drain: SIGQUIT does. */
        log_info("%s ignored: already shutting down (SIGQUIT exits now)", signal_name);
        return;
    }
    srv->draining = true;
    uint32_t timeout_ms = srv->cfg->shutdown_timeout_ms;
    log_info("shutting down: finishing in-flight requests (up to %u ms)", timeout_ms);
    for (int i = 0; i < srv->num_workers; i++)
        worker_post(srv->workers[i], WORKER_CMD_DRAIN);
    loop_timer_set(srv->loop, &srv->shutdown_deadline, timeout_ms);
}

static void shutdown_deadline(struct timer *t)
{
    struct server *srv = container_of(t, struct server, shutdown_deadline);
    log_warn("shutdown_timeout reached: closing the remaining connections");
    loop_stop(srv->loop);
}

/* A worker thread ended (it drained): stop once all have. */
static void worker_finished(struct io *io, uint32_t events)
{
    struct server *srv = container_of(io, struct server, finished);
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_error("reading the workers' eventfd failed: %s", strerror(errno));
    if (all_finished(srv))
        loop_stop(srv->loop);
}

static void on_sighup(struct signal_watch *sw)
{
    struct server *srv = container_of(sw, struct server, sighup);
    if (srv->draining) {
        log_info("SIGHUP ignored: shutting down, not reloading");
        return;
    }
    reload(srv);
}

static void on_sigterm(struct signal_watch *sw)
{
    drain_start(container_of(sw, struct server, sigterm), "SIGTERM");
}

static void on_sigint(struct signal_watch *sw)
{
    drain_start(container_of(sw, struct server, sigint), "SIGINT");
}

static void on_sigquit(struct signal_watch *sw)
{
    struct server *srv = container_of(sw, struct server, sigquit);
    log_info("SIGQUIT: exiting now");
    loop_stop(srv->loop);
}

/* Health checks speak of causes through observe's table. */
static int health_cause_of(const struct h1_result *r)
{
    return (int)observe_cause_from_h1(r);
}

static const char *health_cause_name(int cause)
{
    return cause_get((enum cause)cause)->proxy_status;
}

/* The main loop, its signal watches and the workers' eventfd. */
static int server_loop_init(struct server *srv)
{
    srv->loop = loop_new();
    srv->finished.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!srv->loop || srv->finished.fd < 0)
        return -1;
    srv->finished.on_event = worker_finished;
    timer_init(&srv->shutdown_deadline, shutdown_deadline);
    if (loop_add_listener(srv->loop, &srv->finished) < 0 ||
        loop_watch_signal(srv->loop, &srv->sighup, SIGHUP, on_sighup) < 0 ||
        loop_watch_signal(srv->loop, &srv->sigterm, SIGTERM, on_sigterm) < 0 ||
        loop_watch_signal(srv->loop, &srv->sigint, SIGINT, on_sigint) < 0 ||
        loop_watch_signal(srv->loop, &srv->sigquit, SIGQUIT, on_sigquit) < 0)
        return -1;
    return 0;
}

int proxy_run(struct config *cfg)
{
    struct server srv = {.cfg = cfg, .num_workers = cfg->workers};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    /* SIGCHLD too: a child watch on the main loop needs it blocked in every
     * thread, and threads (admin, probe, workers) inherit this mask. */
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    apply_logs(cfg);
    raise_fd_limit();
    defence_configure(cfg, fd_limit);
    upstream_set_conn_hook(upstream_conn_gauge);
    if (observe_configure(cfg) < 0 || observe_admin_start(cfg) < 0)
        return 1;
    observe_probe_config(cfg, true);

    for (size_t i = 0; i < cfg->num_listen; i++) {
        char why[256];
        if (probe_address_free(&cfg->listen[i], why, sizeof(why)) < 0) {
            log_error("%s", why);
            return 1;
        }
    }
    if (server_loop_init(&srv) < 0) {
        log_error("cannot set up the main event loop: %s", strerror(errno));
        return 1;
    }
    upstream_health_set_hooks(&(struct upstream_health_hooks){.cause_of = health_cause_of,
                                                              .cause_name = health_cause_name});
    srv.health = upstream_health_start(srv.loop, cfg);
    /* Programs before the listeners: the first requests find them started
     * (and, with ready_timeout, answering). */
    srv.supervisor = supervise_start(srv.loop, cfg, CAUSE_DESTINATION_UNAVAILABLE);
    if (!srv.supervisor) {
        log_error("cannot start the programs: out of memory");
        return 1;
    }
    supervise_wait_ready(srv.supervisor);
    srv.workers = calloc((size_t)srv.num_workers, sizeof(*srv.workers));
    if (!srv.workers)
        return 1;
    for (int i = 0; i < srv.num_workers; i++) {
        srv.workers[i] = worker_new(i, cfg, srv.finished.fd);
        if (!srv.workers[i]) {
            log_error("cannot start worker %d; exiting", i);
            return 1;
        }
    }
    all_workers = srv.workers;
    num_all_workers = srv.num_workers;
    upstream_set_reclaim_hook(reclaim_idle_everywhere);
    for (int i = 0; i < srv.num_workers; i++) {
        if (pthread_create(&srv.workers[i]->thread, NULL, worker_main, srv.workers[i]) != 0) {
            log_error("cannot start worker thread %d: %s", i, strerror(errno));
            return 1;
        }
    }
    char addrs[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < cfg->num_listen && n < sizeof(addrs) - 100; i++)
        n += (size_t)snprintf(addrs + n, sizeof(addrs) - n, "%s%s", i ? ", " : "",
                              cfg->listen[i].text);
    log_info("bulwark started: pid=%d workers=%d listen=%s config=%s", (int)getpid(),
             srv.num_workers, addrs, cfg->path);

    /* Until SIGQUIT, the shutdown deadline, or the last worker's end. */
    loop_run(srv.loop);
    log_access_flush();
    /* After the drain: the requests in flight needed their backends. */
    supervise_stop(srv.supervisor);
    if (!all_finished(&srv)) {
        /* Workers are still inside their loops (shutdown_timeout or
         * SIGQUIT): end the process without running exit handlers under
         * their feet; the kernel closes every socket. */
        log_info("bulwark stopped");
        log_access_flush();
        _exit(0);
    }
    num_all_workers = 0;
    for (int i = 0; i < srv.num_workers; i++) {
        struct worker *w = srv.workers[i];
        pthread_join(w->thread, NULL);
        close(w->notify.fd);
        loop_free(w->loop);
        free(w);
    }
    free(srv.workers);
    upstream_health_stop(srv.health);
    loop_free(srv.loop);
    close(srv.finished.fd);
    config_unref(srv.cfg);
    log_info("bulwark stopped");
    return 0;
}
