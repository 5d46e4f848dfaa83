/* Active health checks: one checker per process, on the main thread's
 * loop, for every server of every group with a health section.
 *
 * A check is one exchange of the HTTP/1 client (GET path, or connect only),
 * then a timer for the next one `interval` after it ended, so checks of one
 * server never overlap however slow it is. Every verdict goes into the
 * server's shared record (struct upstream_shared), so the state and its
 * counters live there, not here: a reload rebuilds the list of checks and
 * finds the state where it left it. */
#include "upstream/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct health_check {
    struct h1_client client;
    struct timer next; /* starts the next exchange */
    struct upstream_health *h;
    const struct config_upstream *up; /* in h->cfg */
    const struct config_server *srv;  /* in h->cfg */
    struct upstream_shared *sh;
    bool keep; /* reload: still wanted by the new config */
};

struct upstream_health {
    struct loop *loop;
    struct config *cfg; /* holds a reference; checks point into it */
    struct health_check **checks;
    size_t num_checks;
};

static int no_cause(const struct h1_result *r)
{
    return r->failure == H1_OK ? 0 : -1;
}

static const char *no_name(int cause)
{
    return cause ? "failed" : "none";
}

static struct upstream_health_hooks hooks = {no_cause, no_name};
static void (*verdict_hook)(struct upstream_shared *sh, bool passed, int fails);

void upstream_health_set_verdict_hook(void (*hook)(struct upstream_shared *sh, bool passed,
                                                   int fails))
{
    verdict_hook = hook;
}

void upstream_health_set_hooks(const struct upstream_health_hooks *h)
{
    hooks = *h;
}

bool upstream_health_record(struct upstream_shared *sh, bool passed, int fails, int passes,
                            int cause, int status)
{
    bool up = atomic_load_explicit(&sh->up, memory_order_relaxed);
    if (passed) {
        atomic_store_explicit(&sh->consecutive_failures, 0, memory_order_relaxed);
        uint32_t n = atomic_fetch_add_explicit(&sh->consecutive_passes, 1, memory_order_relaxed);
        if (up || n + 1 < (uint32_t)passes)
            return false;
        upstream_shared_set_up_status(sh, true, 0, 0);
        return true;
    }
    atomic_store_explicit(&sh->consecutive_passes, 0, memory_order_relaxed);
    uint32_t n = atomic_fetch_add_explicit(&sh->consecutive_failures, 1, memory_order_relaxed);
    if (!up || n + 1 < (uint32_t)fails)
        return false;
    upstream_shared_set_up_status(sh, false, cause, status);
    return true;
}

static bool status_expected(const struct config_health *hc, int status)
{
    if (!hc->num_expect_status)
        return status >= 200 && status <= 299;
    for (size_t i = 0; i < hc->num_expect_status; i++)
        if (hc->expect_status[i] == status)
            return true;
    return false;
}

static void log_change(const struct health_check *k, bool up, int cause, int status, int err)
{
    const struct config_health *hc = &k->up->health;
    const char *mode = hc->mode == HEALTH_TCP ? "tcp" : "http";
    if (up) {
        log_info("upstream \"%s\" server %s is up again: %d health check(s) passed in a row; "
                 "group=%s server=%s state=up check=%s passes=%d",
                 k->up->name, k->srv->name, hc->passes, k->up->name, k->srv->name, mode,
                 hc->passes);
        return;
    }
    char why[96];
    if (status)
        snprintf(why, sizeof(why), "status %d", status);
    else
        snprintf(why, sizeof(why), "%s", hooks.cause_name(cause));
    log_warn("upstream \"%s\" server %s is down: %d health check(s) failed in a row, the last "
             "with %s%s%s%s; requests go to the other servers; group=%s server=%s state=down "
             "cause=\"%s\" check=%s fails=%d",
             k->up->name, k->srv->name, hc->fails, why, err ? " (" : "", err ? strerror(err) : "",
             err ? ")" : "", k->up->name, k->srv->name, why, mode, hc->fails);
}

static void check_done(struct h1_client *c, const struct h1_result *r)
{
    struct health_check *k = container_of(c, struct health_check, client);
    const struct config_health *hc = &k->up->health;
    int cause = r->failure == H1_OK ? 0 : hooks.cause_of(r);
    int status = 0;
    bool passed = r->failure == H1_OK;
    if (passed && hc->mode == HEALTH_HTTP && !status_expected(hc, r->status)) {
        passed = false;
        status = r->status;
    }
    if (upstream_health_record(k->sh, passed, hc->fails, hc->passes, cause, status))
        log_change(k, passed, cause, status, r->err);
    /* A passed check also ends an ejection by the passive checks: the
     * server answers again, it need not sit out its eject_time. */
    if (passed && atomic_load_explicit(&k->sh->up, memory_order_relaxed) &&
        upstream_shared_passed(k->sh))
        log_info("upstream \"%s\" server %s is back in rotation: an active health check "
                 "passed during its ejection; group=%s server=%s state=up "
                 "cause=health_check_passed",
                 k->up->name, k->srv->name, k->up->name, k->srv->name);
    loop_timer_set(k->h->loop, &k->next, hc->interval_ms);
    /* Last: the hook may stop the server's program, which touches only
     * the shared record, never this check. */
    if (verdict_hook)
        verdict_hook(k->sh, passed, hc->fails);
}

static void check_start(struct timer *t)
{
    struct health_check *k = container_of(t, struct health_check, next);
    const struct config_health *hc = &k->up->health;
    struct h1_request req = {
        .addr = k->srv->addr,
        .connect_only = hc->mode == HEALTH_TCP,
        .path = hc->path,
        .host = hc->host,
        .headers = "User-Agent: bulwark-health-check\r\n",
        .connect_timeout_ms = hc->timeout_ms,
        .response_timeout_ms = hc->timeout_ms,
    };
    int rc = h1_client_start(&k->client, &req);
    if (rc < 0) {
        /* Our own shortage (a read block), not the server's fault: no
         * verdict, try again at the next interval. */
        log_error("health check of upstream \"%s\" server %s not started: %s", k->up->name,
                  k->srv->name, strerror(-rc));
        loop_timer_set(k->h->loop, &k->next, hc->interval_ms);
    }
}

/* A check for (up, srv), already running when found in old (a reload). */
static struct health_check *check_for(struct upstream_health *h, struct health_check **old,
                                      size_t num_old, const struct config_upstream *up,
                                      const struct config_server *srv)
{
    for (size_t i = 0; i < num_old; i++) {
        struct health_check *k = old[i];
        if (!k->keep && strcmp(k->up->name, up->name) == 0 &&
            strcmp(k->srv->name, srv->name) == 0) {
            k->keep = true;
            k->up = up;
            k->srv = srv;
            return k;
        }
    }
    struct upstream_shared *sh = upstream_shared_get(up->name, srv->name);
    struct health_check *k = sh ? calloc(1, sizeof(*k)) : NULL;
    if (!k)
        return NULL;
    k->h = h;
    k->up = up;
    k->srv = srv;
    k->sh = sh;
    k->keep = true;
    h1_client_init(&k->client, h->loop, check_done);
    timer_init(&k->next, check_start);
    atomic_store_explicit(&sh->checked, true, memory_order_relaxed);
    /* The first check at once: a server that is down at start must not get
     * traffic for longer than fails checks take. */
    loop_timer_set(h->loop, &k->next, 0);
    return k;
}

/* Stop k; its server is no longer checked, so nothing would ever bring it
 * back: it is marked up, with fresh counters. */
static void check_free(struct upstream_health *h, struct health_check *k)
{
    h1_client_cancel(&k->client);
    loop_timer_cancel(h->loop, &k->next);
    atomic_store_explicit(&k->sh->checked, false, memory_order_relaxed);
    atomic_store_explicit(&k->sh->consecutive_failures, 0, memory_order_relaxed);
    atomic_store_explicit(&k->sh->consecutive_passes, 0, memory_order_relaxed);
    if (!atomic_load_explicit(&k->sh->up, memory_order_relaxed)) {
        upstream_shared_set_up(k->sh, true, 0);
        log_info("upstream \"%s\" server %s is no longer health checked: marked up; group=%s "
                 "server=%s state=up",
                 k->sh->group, k->sh->server, k->sh->group, k->sh->server);
    }
    free(k);
}

static size_t count_checked(const struct config *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        if (cfg->upstreams[i].health.enabled)
            n += cfg->upstreams[i].num_servers;
    return n;
}

/* Build h's checks for cfg, reusing those of old that stay. 0, or -1 with
 * nothing changed (old untouched but for their keep marks). */
static int build(struct upstream_health *h, struct config *cfg, struct health_check **old,
                 size_t num_old)
{
    size_t n = count_checked(cfg), num = 0;
    struct health_check **checks = calloc(n ? n : 1, sizeof(*checks));
    if (!checks)
        return -1;
    for (size_t i = 0; i < num_old; i++)
        old[i]->keep = false;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        const struct config_upstream *up = &cfg->upstreams[i];
        if (!up->health.enabled)
            continue;
        for (size_t j = 0; j < up->num_servers; j++) {
            const struct config_server *srv = &up->servers[j];
            if (!srv->addr.len) {
                /* Did not resolve at load: its requests fail with
                 * dns_error at once; a check would only say the same. */
                continue;
            }
            struct health_check *k = check_for(h, old, num_old, up, srv);
            if (!k) {
                log_error("upstream \"%s\" server %s: no memory for its health check; it is "
                          "not checked",
                          up->name, srv->name);
                continue;
            }
            checks[num++] = k;
        }
    }
    for (size_t i = 0; i < num_old; i++)
        if (!old[i]->keep)
            check_free(h, old[i]);
    h->checks = checks;
    h->num_checks = num;
    return 0;
}

struct upstream_health *upstream_health_start(struct loop *loop, struct config *cfg)
{
    struct upstream_health *h = calloc(1, sizeof(*h));
    if (h)
        h->loop = loop;
    if (!h || build(h, cfg, NULL, 0) < 0) {
        free(h);
        log_error("no memory for health checks: none run");
        return NULL;
    }
    h->cfg = config_ref(cfg);
    return h;
}

void upstream_health_reload(struct upstream_health *h, struct config *cfg)
{
    struct health_check **old = h->checks;
    size_t num_old = h->num_checks;
    if (build(h, cfg, old, num_old) < 0) {
        log_error("no memory for the new health checks: the previous ones go on");
        return;
    }
    free(old);
    config_unref(h->cfg);
    h->cfg = config_ref(cfg);
}

void upstream_health_stop(struct upstream_health *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->num_checks; i++) {
        h1_client_cancel(&h->checks[i]->client);
        loop_timer_cancel(h->loop, &h->checks[i]->next);
        free(h->checks[i]);
    }
    free(h->checks);
    config_unref(h->cfg);
    free(h);
}
