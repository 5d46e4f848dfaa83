/* The observe settings of the current config, applied by observe_configure()
 * on the main thread and read by the workers and the admin thread. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "observe/observe_internal.h"

struct observe_settings observe_settings = {.lock = PTHREAD_MUTEX_INITIALIZER};
_Atomic int observe_log_format = LOG_FORMAT_COMBINED;
_Atomic bool observe_details_exposed = false;

struct config *observe_current_config(void)
{
    pthread_mutex_lock(&observe_settings.lock);
    struct config *cfg = config_ref(observe_settings.cfg);
    pthread_mutex_unlock(&observe_settings.lock);
    return cfg;
}

int observe_configure(const struct config *cfg)
{
    char *token = NULL;

    if (!cfg)
        return -1;
    if (cfg->admin_token && !(token = strdup(cfg->admin_token))) {
        log_error("out of memory applying the observe settings");
        return -1;
    }
    /* The admin address first: when a new one cannot be opened, the listener
     * stays where it was with the token it had (a token removed along with a
     * move must not open the old address to anyone). */
    struct admin_change admin;
    bool admin_applies = observe_admin_prepare(cfg, &admin) == 0;
    if (!admin_applies) {
        free(token);
        token = NULL;
    }
    atomic_store(&observe_log_format, (int)cfg->log_format);
    atomic_store(&observe_details_exposed, cfg->expose_details);
    observe_ring_resize(cfg->error_ring_size > 0 ? (size_t)cfg->error_ring_size : 100);

    /* The config is immutable and reference counted: holding one keeps
     * its groups (for /status) and error pages alive. */
    pthread_mutex_lock(&observe_settings.lock);
    struct config *old = observe_settings.cfg;
    char *old_token = observe_settings.admin_token;
    observe_settings.cfg = config_ref((struct config *)cfg);
    if (admin_applies)
        observe_settings.admin_token = token; /* checked per request: the next one uses it */
    else
        old_token = NULL;
    pthread_mutex_unlock(&observe_settings.lock);
    bool token_changed = !token != !old_token || (token && strcmp(token, old_token) != 0);
    if (old && admin_applies && cfg->has_admin && token_changed) {
        const char *what = !old_token ? "set" : !token ? "removed" : "changed";
        log_info("admin token %s: applies from the next request", what);
    }
    config_unref(old);
    free(old_token);
    observe_admin_commit(cfg, &admin);

    /* Register every server now, so /metrics and /status list servers that
     * have seen no request yet. */
    for (size_t i = 0; i < cfg->num_upstreams; i++)
        for (size_t j = 0; j < cfg->upstreams[i].num_servers; j++)
            observe_server(cfg->upstreams[i].name, cfg->upstreams[i].servers[j].name);
    return 0;
}
