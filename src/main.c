/* bulwark: parse the command line and hand off. */
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "proxy/proxy.h"

#define BULWARK_VERSION "0.1.0"

static int usage(void)
{
    fprintf(stderr, "usage: bulwark [-c FILE]          run (default ./bulwark.yaml)\n"
                    "       bulwark check [-c FILE]    validate the config\n"
                    "       bulwark version\n");
    return 2;
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

int main(int argc, char **argv)
{
    const char *path = "bulwark.yaml";
    const char *cmd = "run";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (i == 1 && (strcmp(argv[i], "check") == 0 || strcmp(argv[i], "version") == 0))
            cmd = argv[i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return usage(), 0;
        else
            return usage();
    }
    if (strcmp(cmd, "version") == 0) {
        printf("bulwark %s\n", BULWARK_VERSION);
        return 0;
    }
    struct config *cfg = load(path);
    if (!cfg)
        return 2;
    if (strcmp(cmd, "check") == 0) {
        printf("%s: configuration is valid (%zu upstream(s), %zu route(s))\n", path,
               cfg->num_upstreams, cfg->num_routes);
        config_unref(cfg);
        return 0;
    }
    return proxy_run(cfg);
}
