/* The proxy: worker threads, client sessions, upstream exchanges, and the
 * one place where failures become error responses.
 *
 * A reader follows one request through src/proxy/session.c: accept ->
 * read and parse -> route -> pick upstream -> connect/reuse -> send ->
 * parse response -> relay -> log -> keep-alive or close.
 */
#ifndef BULWARK_PROXY_H
#define BULWARK_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "observe/observe.h"

/* Run the proxy with this config until SIGTERM (drain, exit 0) or SIGQUIT
 * (exit now). SIGHUP reloads from cfg->path. Takes the config reference.
 * Returns the process exit status. */
int proxy_run(struct config *cfg);

#endif
