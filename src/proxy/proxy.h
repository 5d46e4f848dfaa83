/* The proxy: worker threads, client sessions, upstream exchanges, and the
 * one place where failures become error responses.
 *
 * A reader follows one request through a handful of functions (the map is
 * at the top of src/proxy/proxy_internal.h): session_accept and
 * session_read_header (read and parse) -> request_start (route, limits,
 * forwarded head) -> attempt_start (pick, queue, connect/reuse) ->
 * request_drive (send, response head, relay) -> request_end (log, then
 * keep-alive, linger or close).
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
