/* Probing the upstreams of a config: does each server's name resolve, and
 * does something accept a TCP connection there within connect_timeout?
 * Catches a wrong port or a backend that is not started before a user
 * meets the 502. All servers are probed at once with non-blocking
 * connects, so the whole probe takes the longest connect_timeout at most. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "observe/observe_internal.h"

struct probe {
    const struct config_upstream *up;
    const struct config_server *srv;
    struct config_addr addr;
    int fd;
    uint64_t deadline_ms;
    enum cause cause; /* CAUSE_NONE once connected */
    int err;
    char why[512];      /* DNS failure text */
    int64_t connect_ms; /* -1 until known */
    bool done;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void finish(struct probe *p, enum cause cause, int err, uint64_t start)
{
    p->cause = cause;
    p->err = err;
    p->connect_ms = (int64_t)(mono_ms() - start);
    p->done = true;
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
}

static void probe_start(struct probe *p, uint64_t start)
{
    p->fd = -1;
    p->connect_ms = -1;
    p->deadline_ms = start + (p->up->connect_timeout_ms ? p->up->connect_timeout_ms : 1);
    p->addr = p->srv->addr;
    if (!p->addr.len) {
        /* It did not resolve at load: try again, it may have been fixed
         * since; the answer's text is the evidence. */
        if (config_parse_addr(p->srv->name, true, &p->addr, p->why, sizeof(p->why)) < 0) {
            finish(p, CAUSE_DNS_ERROR, 0, start);
            return;
        }
    }
    p->fd = socket(p->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        finish(p, cause_from_connect_errno(errno), errno, start);
        return;
    }
    if (connect(p->fd, (const struct sockaddr *)&p->addr.ss, p->addr.len) == 0)
        finish(p, CAUSE_NONE, 0, start);
    else if (errno != EINPROGRESS)
        finish(p, cause_from_connect_errno(errno), errno, start);
}

/* Runs every probe to its end; returns how many failed. */
static size_t probe_all(struct probe *probes, size_t n)
{
    uint64_t start = mono_ms();
    struct pollfd *pfd = calloc(n ? n : 1, sizeof(*pfd));
    size_t *which = calloc(n ? n : 1, sizeof(*which));
    size_t failed = 0;

    if (!pfd || !which) {
        free(pfd);
        free(which);
        for (size_t i = 0; i < n; i++) {
            probes[i].done = true;
            probes[i].cause = CAUSE_PROXY_INTERNAL_ERROR;
            probes[i].err = ENOMEM;
        }
        return n;
    }
    for (size_t i = 0; i < n; i++)
        probe_start(&probes[i], start);
    for (;;) {
        size_t k = 0;
        uint64_t now = mono_ms(), next = UINT64_MAX;
        for (size_t i = 0; i < n; i++) {
            struct probe *p = &probes[i];
            if (p->done)
                continue;
            if (now >= p->deadline_ms) {
                finish(p, CAUSE_CONNECTION_TIMEOUT, ETIMEDOUT, start);
                continue;
            }
            if (p->deadline_ms < next)
                next = p->deadline_ms;
            pfd[k] = (struct pollfd){.fd = p->fd, .events = POLLOUT};
            which[k++] = i;
        }
        if (!k)
            break;
        int rc = poll(pfd, k, (int)(next - now));
        if (rc < 0 && errno != EINTR)
            break;
        for (size_t j = 0; rc > 0 && j < k; j++) {
            if (!pfd[j].revents)
                continue;
            struct probe *p = &probes[which[j]];
            int err = 0;
            socklen_t len = sizeof(err);
            if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            finish(p, err ? cause_from_connect_errno(err) : CAUSE_NONE, err, start);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!probes[i].done)
            finish(&probes[i], CAUSE_PROXY_INTERNAL_ERROR, errno, start);
        failed += probes[i].cause != CAUSE_NONE;
    }
    free(pfd);
    free(which);
    return failed;
}

static struct probe *collect(const struct config *cfg, size_t *count)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        n += cfg->upstreams[i].num_servers;
    struct probe *probes = calloc(n ? n : 1, sizeof(*probes));
    if (!probes)
        return NULL;
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].num_servers; j++) {
            probes[k].up = &cfg->upstreams[i];
            probes[k++].srv = &cfg->upstreams[i].servers[j];
        }
    *count = n;
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
    struct probe *probes = collect(cfg, &n);
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
    struct probe *probes = collect(cfg, &n);
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
