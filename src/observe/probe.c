/* Probing the upstreams of a config: does each server's name resolve, and
 * does something accept a TCP connection there within connect_timeout?
 * Catches a wrong port or a backend that is not started before a user
 * meets the 502. All servers are probed at once, each a connect-only
 * exchange of upstream's HTTP/1 client on one loop, so the whole probe
 * takes the longest connect_timeout at most. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "observe/observe_internal.h"
#include "upstream/upstream.h"

/* One probe run: its loop stops when the last probe reports. */
struct probe_run {
    struct loop *loop;
    size_t pending;
};

struct probe {
    const struct config_upstream *up;
    const struct config_server *srv;
    struct probe_run *run;
    struct h1_client client;
    enum cause cause; /* CAUSE_NONE once connected */
    int err;
    char why[512];      /* DNS failure text */
    int64_t connect_ms; /* -1 until known */
};

static void probe_done(struct h1_client *c, const struct h1_result *r)
{
    struct probe *p = container_of(c, struct probe, client);
    p->cause = observe_cause_from_h1(r);
    p->err = r->err;
    p->connect_ms = r->connect_ms;
    if (--p->run->pending == 0)
        loop_stop(p->run->loop);
}

/* Start p's connect, or settle it at once (DNS). */
static void probe_start(struct probe *p, struct probe_run *run)
{
    struct h1_request req = {
        .addr = p->srv->addr,
        .connect_only = true,
        .connect_timeout_ms = p->up->connect_timeout_ms ? p->up->connect_timeout_ms : 1,
    };
    p->run = run;
    p->connect_ms = -1;
    if (!req.addr.len) {
        /* It did not resolve at load: try again, it may have been fixed
         * since; the answer's text is the evidence. */
        if (config_parse_addr(p->srv->name, true, &req.addr, p->why, sizeof(p->why)) < 0) {
            p->cause = CAUSE_DNS_ERROR;
            return;
        }
    }
    h1_client_init(&p->client, run->loop, probe_done);
    int rc = h1_client_start(&p->client, &req);
    if (rc < 0) {
        p->cause = CAUSE_PROXY_INTERNAL_ERROR;
        p->err = -rc;
        return;
    }
    run->pending++;
}

/* Runs every probe to its end; returns how many failed. */
static size_t probe_all(struct probe *probes, size_t n)
{
    struct probe_run run = {.loop = loop_new()};
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!run.loop) {
            probes[i].cause = CAUSE_PROXY_INTERNAL_ERROR;
            probes[i].err = ENOMEM;
            continue;
        }
        probe_start(&probes[i], &run);
    }
    if (run.pending)
        loop_run(run.loop);
    loop_free(run.loop);
    for (size_t i = 0; i < n; i++)
        failed += probes[i].cause != CAUSE_NONE;
    return failed;
}

/* The program (programs.<name>) that is this server, or NULL: bulwark
 * starts it, so it is not probed (it is not listening yet at start-up;
 * the supervisor reports its readiness). */
static const struct config_program *bound_program(const struct config *cfg,
                                                  const struct config_upstream *up,
                                                  const struct config_server *srv)
{
    for (size_t i = 0; i < cfg->num_programs; i++) {
        const struct config_program *pc = &cfg->programs[i];
        if (pc->upstream == up && pc->server && strcmp(pc->server, srv->name) == 0)
            return pc;
    }
    return NULL;
}

/* Every server not bound to a program; with report, a line for each bound
 * one (bulwark check). */
static struct probe *collect(const struct config *cfg, size_t *count, bool report)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        n += cfg->upstreams[i].num_servers;
    struct probe *probes = calloc(n ? n : 1, sizeof(*probes));
    if (!probes)
        return NULL;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].num_servers; j++) {
            const struct config_upstream *up = &cfg->upstreams[i];
            const struct config_program *pc = bound_program(cfg, up, &up->servers[j]);
            if (pc) {
                if (report)
                    printf("skip  upstream \"%s\" server %s: started by program %s\n", up->name,
                           up->servers[j].name, pc->name);
                continue;
            }
            probes[k].up = up;
            probes[k++].srv = &up->servers[j];
        }
    *count = k;
    return probes;
}

/* "connection_refused (Connection refused)" or the DNS answer. */
static void failure_text(const struct probe *p, char *out, size_t cap)
{
    const struct cause_info *ci = cause_get(p->cause);
    if (p->cause == CAUSE_DNS_ERROR)
        snprintf(out, cap, "%s (%s)", ci->proxy_status, p->why);
    else if (p->cause == CAUSE_CONNECTION_TIMEOUT)
        snprintf(out, cap, "%s (no answer within connect_timeout %u ms)", ci->proxy_status,
                 p->up->connect_timeout_ms);
    else if (p->err)
        snprintf(out, cap, "%s (%s)", ci->proxy_status, strerror(p->err));
    else
        snprintf(out, cap, "%s", ci->proxy_status);
}

static void *probe_thread(void *arg)
{
    struct config *cfg = arg;
    size_t n = 0, failed;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    struct probe *probes = collect(cfg, &n, false);
    if (!probes) {
        config_unref(cfg);
        return NULL;
    }
    failed = probe_all(probes, n);
    for (size_t i = 0; i < n; i++) {
        const struct probe *p = &probes[i];
        char text[768];
        if (p->cause == CAUSE_NONE)
            continue;
        failure_text(p, text, sizeof(text));
        log_warn("upstream \"%s\" server %s is unreachable: %s: %s fix=\"%s\"", p->up->name,
                 p->srv->name, text, cause_get(p->cause)->sentence, cause_get(p->cause)->fix);
    }
    if (failed)
        log_warn("%zu of %zu upstream server(s) unreachable at start-up probe; requests to them "
                 "will fail until they come up",
                 failed, n);
    free(probes);
    config_unref(cfg);
    return NULL;
}

int observe_probe_config(const struct config *cfg, bool log_only)
{
    if (!cfg)
        return -1;
    if (log_only && !cfg->probe_at_start)
        return 0;
    if (log_only) {
        pthread_t t;
        pthread_attr_t attr;
        /* The thread keeps the config alive while it probes (a reload may
         * drop the caller's reference meanwhile). */
        struct config *ref = config_ref((struct config *)cfg);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&t, &attr, probe_thread, ref);
        pthread_attr_destroy(&attr);
        if (err) {
            log_warn("cannot start the upstream probe: %s", strerror(err));
            config_unref(ref);
            return -1;
        }
        return 0;
    }

    size_t n = 0;
    struct probe *probes = collect(cfg, &n, true);
    if (!probes)
        return -1;
    size_t failed = probe_all(probes, n);
    for (size_t i = 0; i < n; i++) {
        const struct probe *p = &probes[i];
        char text[768];
        if (p->cause == CAUSE_NONE) {
            printf("ok    upstream \"%s\" server %s: connected in %lld ms\n", p->up->name,
                   p->srv->name, (long long)p->connect_ms);
            continue;
        }
        failure_text(p, text, sizeof(text));
        printf("FAIL  upstream \"%s\" server %s: %s\n      %s\n      fix: %s\n", p->up->name,
               p->srv->name, text, cause_get(p->cause)->sentence, cause_get(p->cause)->fix);
    }
    fflush(stdout);
    free(probes);
    return (int)failed;
}
