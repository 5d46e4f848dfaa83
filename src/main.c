/* bulwark: parse the command line and hand off. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "observe/observe.h"
#include "proxy/proxy.h"

#define BULWARK_VERSION "0.1.0"
#define DEFAULT_ADMIN "127.0.0.1:9901"

/* Exit codes (DESIGN.md): 0 ok, 1 runtime failure, 2 bad config or usage;
 * check adds 3: the config is valid but an upstream does not answer. */
enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static int usage(FILE *out, int status)
{
    fprintf(out,
            "usage: bulwark [-c FILE]                   run (default ./bulwark.yaml)\n"
            "       bulwark check [-c FILE] [--no-probe] validate the config, then probe every\n"
            "                                           upstream server (exit 3: unreachable)\n"
            "       bulwark status [--admin ADDR] [--token TOKEN] [-c FILE]\n"
            "                                           upstreams of a running instance, as a "
            "table\n"
            "       bulwark version\n");
    return status;
}

static void print_warnings(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->num_warnings; i++)
        fprintf(stderr, "warning: %s\n", cfg->warnings[i]);
}

static struct config *load(const char *path)
{
    struct config_errors errs = {0};
    struct config *cfg = config_load(path, &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.items[i].text);
        fprintf(stderr, "bulwark: %zu error(s) in %s\n", errs.count, path);
    }
    config_errors_free(&errs);
    return cfg;
}

static int check(const char *path, bool probe)
{
    struct config *cfg = load(path);
    if (!cfg)
        return EXIT_USAGE;
    print_warnings(cfg);
    printf("%s: configuration is valid (%zu upstream(s), %zu route(s))\n", path, cfg->num_upstreams,
           cfg->num_routes);
    fflush(stdout);
    int rc = EXIT_OK;
    if (probe) {
        int failed = observe_probe_config(cfg, false);
        if (failed < 0) {
            fprintf(stderr, "bulwark: cannot probe the upstream servers (out of memory)\n");
            rc = EXIT_RUNTIME;
        } else if (failed > 0) {
            printf("%d upstream server(s) unreachable\n", failed);
            rc = EXIT_UNREACHABLE;
        } else {
            printf("every upstream server answered\n");
        }
    }
    config_unref(cfg);
    return rc;
}

/* The admin address and token: --admin/--token win, then the config's. */
static int status(const char *path, bool path_given, const char *admin, const char *token)
{
    char addr[128];
    struct config *cfg = NULL;

    if (path_given || !admin) {
        struct config_errors errs = {0};
        cfg = config_load(path, &errs);
        if (!cfg && path_given) {
            for (size_t i = 0; i < errs.count; i++)
                fprintf(stderr, "%s\n", errs.items[i].text);
            config_errors_free(&errs);
            return EXIT_USAGE;
        }
        config_errors_free(&errs);
    }
    if (!admin)
        admin = cfg && cfg->has_admin ? cfg->admin.text : DEFAULT_ADMIN;
    snprintf(addr, sizeof(addr), "%s", admin);
    char *tok = NULL;
    if (token)
        tok = strdup(token);
    else if (cfg && cfg->admin_token)
        tok = strdup(cfg->admin_token);
    else if (getenv("BULWARK_ADMIN_TOKEN"))
        tok = strdup(getenv("BULWARK_ADMIN_TOKEN"));
    config_unref(cfg);
    int rc = observe_status_command(addr, tok);
    free(tok);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = "bulwark.yaml";
    const char *cmd = "run";
    const char *admin = NULL, *token = NULL;
    bool path_given = false, probe = true;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            path = argv[++i];
            path_given = true;
        } else if (i == 1 && (strcmp(argv[i], "check") == 0 || strcmp(argv[i], "version") == 0 ||
                              strcmp(argv[i], "status") == 0)) {
            cmd = argv[i];
        } else if (strcmp(cmd, "check") == 0 && strcmp(argv[i], "--no-probe") == 0) {
            probe = false;
        } else if (strcmp(cmd, "status") == 0 && strcmp(argv[i], "--admin") == 0 && i + 1 < argc) {
            admin = argv[++i];
        } else if (strcmp(cmd, "status") == 0 && strcmp(argv[i], "--token") == 0 && i + 1 < argc) {
            token = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return usage(stdout, EXIT_OK);
        } else {
            return usage(stderr, EXIT_USAGE);
        }
    }
    if (strcmp(cmd, "version") == 0) {
        printf("bulwark %s\n", BULWARK_VERSION);
        return EXIT_OK;
    }
    if (strcmp(cmd, "check") == 0)
        return check(path, probe);
    if (strcmp(cmd, "status") == 0)
        return status(path, path_given, admin, token);
    struct config *cfg = load(path);
    if (!cfg)
        return EXIT_USAGE;
    print_warnings(cfg);
    return proxy_run(cfg);
}
