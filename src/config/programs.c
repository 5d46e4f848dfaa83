/* programs.<name>: backend processes bulwark starts, restarts and stops
 * (src/supervise runs them; README, "Programs"). */
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config_internal.h"

enum program_key {
    PK_COMMAND,
    PK_CWD,
    PK_ENV,
    PK_RESTART,
    PK_BACKOFF,
    PK_MAX_RESTARTS,
    PK_RESTART_WINDOW,
    PK_STOP_SIGNAL,
    PK_STOP_TIMEOUT,
    PK_STDOUT,
    PK_STDERR,
    PK_UPSTREAM,
    PK_SERVER,
    PK_READY_TIMEOUT,
    PK_USER,
    PK_GROUP,
    NUM_PROGRAM_KEYS
};

/* clang-format off */
static const char *const program_keys[NUM_PROGRAM_KEYS] = {
    [PK_COMMAND] = "command",
    [PK_CWD] = "cwd",
    [PK_ENV] = "env",
    [PK_RESTART] = "restart",
    [PK_BACKOFF] = "backoff",
    [PK_MAX_RESTARTS] = "max_restarts",
    [PK_RESTART_WINDOW] = "restart_window",
    [PK_STOP_SIGNAL] = "stop_signal",
    [PK_STOP_TIMEOUT] = "stop_timeout",
    [PK_STDOUT] = "stdout",
    [PK_STDERR] = "stderr",
    [PK_UPSTREAM] = "upstream",
    [PK_SERVER] = "server",
    [PK_READY_TIMEOUT] = "ready_timeout",
    [PK_USER] = "user",
    [PK_GROUP] = "group",
};
/* clang-format on */

/* A command line is bounded so a config cannot make every restart copy an
 * unbounded argv; 256 arguments is far more than a backend needs. */
#define MAX_PROGRAM_ARGS 256
#define MAX_PROGRAM_ENV 256

/* The signals a stop may use: the ones servers treat as "shut down". */
static const struct {
    const char *name;
    int signo;
} stop_signals[] = {
    {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT}, {"SIGHUP", SIGHUP},
    {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2},
};

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_MAX_PROGRAM_NAME)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_.-", *s)))
            return false;
    return true;
}

static char *load_path(struct cfg_ctx *ctx, const yaml_node_t *n, const char *key)
{
    const char *s = cfg_scalar(ctx, n, key, "a path");
    if (!s)
        return NULL;
    if (!*s) {
        cfg_error(ctx, n, "%s: expected a path, got an empty string", key);
        return NULL;
    }
    return cfg_strdup(ctx, s);
}

static void load_command(struct cfg_ctx *ctx, struct config_program *pc, const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        cfg_error(ctx, n, "command: expected a list of arguments (e.g. [python3, app.py]), got %s",
                  cfg_describe(n).s);
        return;
    }
    yaml_node_item_t *items = n->data.sequence.items.start, *end = n->data.sequence.items.top;
    size_t count = (size_t)(end - items);
    if (count == 0 || count > MAX_PROGRAM_ARGS) {
        cfg_error(ctx, n, "command: expected 1 to %d arguments, got %zu", MAX_PROGRAM_ARGS, count);
        return;
    }
    pc->argv = cfg_calloc(ctx, count + 1, sizeof(*pc->argv));
    if (!pc->argv)
        return;
    for (; items < end; items++) {
        const char *s = cfg_scalar(ctx, cfg_node(ctx, *items), "command", "an argument");
        if (s)
            pc->argv[pc->argc++] = cfg_strdup(ctx, s);
    }
    if (pc->argc > 0 && !pc->argv[0][0])
        cfg_error(ctx, n, "command: the program name is empty");
}

static void load_env(struct cfg_ctx *ctx, struct config_program *pc, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "env: expected a mapping of variable names to values, got %s",
                  cfg_describe(n).s);
        return;
    }
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count > MAX_PROGRAM_ENV) {
        cfg_error(ctx, n, "env: at most %d variables", MAX_PROGRAM_ENV);
        return;
    }
    pc->env = cfg_calloc(ctx, count + 1, sizeof(*pc->env));
    if (!pc->env)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cfg_node(ctx, p->key), *v = cfg_node(ctx, p->value);
        const char *name = cfg_scalar(ctx, k, "env", "a variable name");
        const char *value = cfg_scalar(ctx, v, "env value", "a string");
        if (!name || !value)
            continue;
        if (!*name || strchr(name, '=')) {
            cfg_error(ctx, k, "env: bad variable name %s", cfg_quote(name).s);
            continue;
        }
        size_t len = strlen(name) + strlen(value) + 2;
        char *kv = cfg_calloc(ctx, len, 1);
        if (!kv)
            return;
        snprintf(kv, len, "%s=%s", name, value);
        pc->env[pc->num_env++] = kv;
    }
}

static void load_backoff(struct cfg_ctx *ctx, struct config_program *pc, const char *where,
                         const yaml_node_t *n)
{
    static const char *const keys[] = {"initial", "max"};
    yaml_node_t *v[2];
    char what[340];

    snprintf(what, sizeof(what), "backoff of %s", where);
    if (!cfg_fields(ctx, n, what, keys, 2, v))
        return;
    bool ok = cfg_get_timeout(ctx, v[0], "initial", &pc->backoff_initial_ms);
    ok &= cfg_get_timeout(ctx, v[1], "max", &pc->backoff_max_ms);
    if (ok && pc->backoff_max_ms < pc->backoff_initial_ms)
        cfg_error(ctx, v[1] ? v[1] : n, "backoff of %s: max (%u ms) is below initial (%u ms)",
                  where, pc->backoff_max_ms, pc->backoff_initial_ms);
}

/* upstream + server: which upstream server this program is. */
static void load_binding(struct cfg_ctx *ctx, struct config_program *pc, const char *where,
                         const yaml_node_t *up_node, const yaml_node_t *server_node,
                         const yaml_node_t *map)
{
    if (!up_node && !server_node)
        return;
    if (!up_node || !server_node) {
        cfg_error(ctx, up_node ? up_node : server_node,
                  "%s: upstream and server go together (which server of which group this "
                  "program is)",
                  where);
        return;
    }
    const char *group = cfg_scalar(ctx, up_node, "upstream", "an upstream name");
    const char *server = cfg_scalar(ctx, server_node, "server", "a server (\"host:port\")");
    if (!group || !server)
        return;
    struct config *cfg = ctx->cfg;
    for (size_t i = 0; i < cfg->num_upstreams; i++) {
        struct config_upstream *up = &cfg->upstreams[i];
        if (!up->name || strcmp(up->name, group) != 0)
            continue;
        for (size_t j = 0; j < up->num_servers; j++) {
            if (up->servers[j].name && strcmp(up->servers[j].name, server) == 0) {
                pc->upstream = up;
                pc->server = cfg_strdup(ctx, server);
                pc->server_addr = up->servers[j].addr;
                return;
            }
        }
        cfg_error(ctx, server_node, "%s: server %s is not a server of upstream %s", where,
                  cfg_quote(server).s, cfg_quote(group).s);
        return;
    }
    cfg_error(ctx, up_node, "%s: unknown upstream %s", where, cfg_quote(group).s);
    (void)map;
}

/* A numeric id ("1000"), or false for a name. */
static bool numeric_id(const char *s, unsigned long *id)
{
    char *end;
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    *id = strtoul(s, &end, 10);
    return *id < 0xffffffffUL;
}

/* Most supplementary groups a program gets: NGROUPS_MAX is 65536, but a
 * service account in more than this many groups is a mistake worth seeing. */
#define MAX_PROGRAM_GROUPS 256

/* user / group: resolved here, so a typo is a config error with its place,
 * and the forked child needs no NSS lookup (it runs in a copy of a threaded
 * process, where only async-signal-safe calls are allowed). */
static void load_identity(struct cfg_ctx *ctx, struct config_program *pc, const char *where,
                          const yaml_node_t *user_node, const yaml_node_t *group_node)
{
    const char *user = user_node ? cfg_scalar(ctx, user_node, "user", "a user name or id") : NULL;
    const char *group =
        group_node ? cfg_scalar(ctx, group_node, "group", "a group name or id") : NULL;
    const struct passwd *pw = NULL;
    unsigned long id;
    char pw_name[256] = "";

    if (user) {
        pw = numeric_id(user, &id) ? getpwuid((uid_t)id) : getpwnam(user);
        if (pw) {
            pc->uid = pw->pw_uid;
            pc->gid = pw->pw_gid;
            snprintf(pw_name, sizeof(pw_name), "%s", pw->pw_name);
        } else if (numeric_id(user, &id) && group) {
            pc->uid = (uid_t)id; /* an id without a passwd entry: its group is given */
        } else {
            cfg_error(ctx, user_node, "%s: unknown user %s%s", where, cfg_quote(user).s,
                      numeric_id(user, &id) ? " (no passwd entry: set group too)" : "");
            return;
        }
        pc->has_user = true;
        pc->user_name = cfg_strdup(ctx, user);
    }
    if (group) {
        const struct group *gr = numeric_id(group, &id) ? NULL : getgrnam(group);
        if (!gr && !numeric_id(group, &id)) {
            cfg_error(ctx, group_node, "%s: unknown group %s", where, cfg_quote(group).s);
            return;
        }
        pc->gid = gr ? gr->gr_gid : (gid_t)id;
        pc->has_group = true;
    }
    if (!pc->has_user && !pc->has_group)
        return;
    if (geteuid() != 0) {
        /* Switching identity needs root; running as someone else than asked
         * would be worse than refusing. */
        if (pc->has_user && pc->uid != geteuid())
            cfg_error(ctx, user_node,
                      "%s: user %s (uid %u) needs bulwark to run as root (it runs as uid %u)",
                      where, cfg_quote(user).s, (unsigned)pc->uid, (unsigned)geteuid());
        if (pc->has_group && pc->gid != getegid())
            cfg_error(ctx, group_node,
                      "%s: group %s (gid %u) needs bulwark to run as root (it runs as gid %u)",
                      where, cfg_quote(group).s, (unsigned)pc->gid, (unsigned)getegid());
        return;
    }
    gid_t list[MAX_PROGRAM_GROUPS];
    int n = MAX_PROGRAM_GROUPS;
    if (pw_name[0]) {
        if (getgrouplist(pw_name, pc->gid, list, &n) < 0) {
            cfg_error(ctx, user_node, "%s: user %s is in more than %d groups", where,
                      cfg_quote(user).s, MAX_PROGRAM_GROUPS);
            return;
        }
    } else {
        list[0] = pc->gid; /* no user entry, or only group: that group alone */
        n = 1;
    }
    pc->groups = cfg_calloc(ctx, (size_t)n, sizeof(*pc->groups));
    if (!pc->groups)
        return;
    memcpy(pc->groups, list, (size_t)n * sizeof(*list));
    pc->num_groups = (size_t)n;
}

static void load_program(struct cfg_ctx *ctx, struct config_program *pc, const yaml_node_t *n)
{
    yaml_node_t *v[NUM_PROGRAM_KEYS];
    char where[300];

    snprintf(where, sizeof(where), "program %s", cfg_quote(pc->name).s);
    /* Defaults: a crash loop costs at most a restart a second at first and
     * one every 30 s later; 10 restarts in a minute is not going to heal by
     * itself (FATAL: an operator looks). */
    pc->restart = PROGRAM_RESTART_ALWAYS;
    pc->backoff_initial_ms = 1000;
    pc->backoff_max_ms = 30 * 1000;
    pc->max_restarts = 10;
    pc->restart_window_ms = 60 * 1000;
    pc->stop_signal = SIGTERM;
    pc->stop_timeout_ms = 10 * 1000;
    if (!cfg_fields(ctx, n, where, program_keys, NUM_PROGRAM_KEYS, v))
        return;
    if (!v[PK_COMMAND])
        cfg_error(ctx, n, "missing required key \"command\" in %s", where);
    else
        load_command(ctx, pc, v[PK_COMMAND]);
    if (v[PK_CWD])
        pc->cwd = load_path(ctx, v[PK_CWD], "cwd");
    if (v[PK_ENV])
        load_env(ctx, pc, v[PK_ENV]);
    if (v[PK_RESTART]) {
        const char *s = cfg_scalar(ctx, v[PK_RESTART], "restart", "always, on-failure or never");
        if (s && strcmp(s, "always") == 0)
            pc->restart = PROGRAM_RESTART_ALWAYS;
        else if (s && strcmp(s, "on-failure") == 0)
            pc->restart = PROGRAM_RESTART_ON_FAILURE;
        else if (s && strcmp(s, "never") == 0)
            pc->restart = PROGRAM_RESTART_NEVER;
        else if (s)
            cfg_error(ctx, v[PK_RESTART],
                      "unknown restart %s for %s: expected always, on-failure or never",
                      cfg_quote(s).s, where);
    }
    if (v[PK_BACKOFF])
        load_backoff(ctx, pc, where, v[PK_BACKOFF]);
    cfg_get_int(ctx, v[PK_MAX_RESTARTS], "max_restarts", 0, 1000000, &pc->max_restarts);
    cfg_get_timeout(ctx, v[PK_RESTART_WINDOW], "restart_window", &pc->restart_window_ms);
    if (v[PK_STOP_SIGNAL]) {
        const char *s = cfg_scalar(ctx, v[PK_STOP_SIGNAL], "stop_signal", "a signal name");
        size_t i, n_sig = sizeof(stop_signals) / sizeof(stop_signals[0]);
        for (i = 0; s && i < n_sig && strcmp(stop_signals[i].name, s) != 0; i++)
            ;
        if (s && i < n_sig)
            pc->stop_signal = stop_signals[i].signo;
        else if (s)
            cfg_error(ctx, v[PK_STOP_SIGNAL],
                      "unknown stop_signal %s for %s: expected SIGTERM, SIGINT, SIGQUIT, SIGHUP, "
                      "SIGKILL, SIGUSR1 or SIGUSR2",
                      cfg_quote(s).s, where);
    }
    cfg_get_timeout(ctx, v[PK_STOP_TIMEOUT], "stop_timeout", &pc->stop_timeout_ms);
    if (v[PK_STDOUT])
        pc->stdout_path = load_path(ctx, v[PK_STDOUT], "stdout");
    if (v[PK_STDERR])
        pc->stderr_path = load_path(ctx, v[PK_STDERR], "stderr");
    load_binding(ctx, pc, where, v[PK_UPSTREAM], v[PK_SERVER], n);
    cfg_get_timeout(ctx, v[PK_READY_TIMEOUT], "ready_timeout", &pc->ready_timeout_ms);
    if (v[PK_READY_TIMEOUT] && !pc->server)
        cfg_error(ctx, v[PK_READY_TIMEOUT],
                  "%s: ready_timeout needs upstream and server (readiness is its server "
                  "answering)",
                  where);
    if (v[PK_USER] || v[PK_GROUP])
        load_identity(ctx, pc, where, v[PK_USER], v[PK_GROUP]);
}

void cfg_load_programs(struct cfg_ctx *ctx, const yaml_node_t *n)
{
    struct config *cfg = ctx->cfg;

    if (n->type != YAML_MAPPING_NODE) {
        cfg_error(ctx, n, "programs: expected a mapping of names to programs, got %s",
                  cfg_describe(n).s);
        return;
    }
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0)
        return;
    cfg->programs = cfg_calloc(ctx, count, sizeof(*cfg->programs));
    if (!cfg->programs)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = cfg_node(ctx, p->key);
        const char *name = cfg_scalar(ctx, k, "programs", "a program name");
        size_t i;
        if (!name)
            continue;
        for (i = 0; i < cfg->num_programs && strcmp(cfg->programs[i].name, name) != 0; i++)
            ;
        if (i < cfg->num_programs) {
            cfg_error(ctx, k, "duplicate key %s in programs (first at line %d)", cfg_quote(name).s,
                      cfg->programs[i].line);
            continue;
        }
        if (!name_ok(name))
            cfg_error(ctx, k,
                      "bad program name %s: use 1 to %d letters, digits, \"_\", \".\" and \"-\"",
                      cfg_quote(name).s, CONFIG_MAX_PROGRAM_NAME);
        struct config_program *pc = &cfg->programs[cfg->num_programs];
        if (!(pc->name = cfg_strdup(ctx, name)))
            return;
        cfg->num_programs++;
        pc->line = (int)k->start_mark.line + 1;
        pc->column = (int)k->start_mark.column + 1;
        load_program(ctx, pc, cfg_node(ctx, p->value));
    }
    /* Two programs claiming one server would mark it up and down in turn. */
    for (size_t i = 0; i < cfg->num_programs; i++)
        for (size_t j = 0; j < i; j++)
            if (cfg->programs[i].server && cfg->programs[j].server &&
                cfg->programs[i].upstream == cfg->programs[j].upstream &&
                strcmp(cfg->programs[i].server, cfg->programs[j].server) == 0)
                cfg_error_at(ctx, cfg->programs[i].line, cfg->programs[i].column,
                             "program %s: server %s of upstream %s is already program %s",
                             cfg_quote(cfg->programs[i].name).s,
                             cfg_quote(cfg->programs[i].server).s,
                             cfg_quote(cfg->programs[i].upstream->name).s,
                             cfg_quote(cfg->programs[j].name).s);
}

void cfg_free_programs(struct config *cfg)
{
    for (size_t i = 0; i < cfg->num_programs; i++) {
        struct config_program *pc = &cfg->programs[i];
        for (size_t j = 0; pc->argv && pc->argv[j]; j++)
            free(pc->argv[j]);
        free(pc->argv);
        for (size_t j = 0; j < pc->num_env; j++)
            free(pc->env[j]);
        free(pc->env);
        free(pc->name);
        free(pc->cwd);
        free(pc->stdout_path);
        free(pc->stderr_path);
        free(pc->server);
        free(pc->groups);
        free(pc->user_name);
    }
    free(cfg->programs);
}
