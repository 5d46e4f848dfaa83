/* libFuzzer harness for the config loader: any bytes in, errors or a config
 * out, nothing leaked, nothing read out of bounds. DNS is off so inputs
 * naming hosts never reach the network (and runs stay reproducible). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    config_set_dns(false);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const hosts[] = {"",         "example.com", "WWW.Example.com:8080",
                                        "[::1]:80", "a.b.c.d.e",   "["};
    struct config_errors errs = {0};
    struct config *cfg = config_load_string("fuzz.yaml", (const char *)data, size, &errs);

    if (cfg) {
        /* Exercise the lookup every request makes against whatever routes
         * the input built. */
        for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
            const struct config_route *r =
                config_match_route(cfg, hosts[i], strlen(hosts[i]), "/api/x", 6);
            if (r && !r->upstream)
                __builtin_trap();
        }
        config_ref(cfg);
        config_unref(cfg);
    } else if (errs.count == 0) {
        __builtin_trap(); /* a failed load must say why */
    }
    config_unref(cfg);
    config_errors_free(&errs);
    return 0;
}
