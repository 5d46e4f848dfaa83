/* Observe: what the proxy reports about itself. The cause table (why a
 * response was generated instead of relayed), and later the access log
 * format, metrics, the admin API and diagnosis.
 *
 * observe records what the other modules report and never drives a request.
 */
#ifndef BULWARK_OBSERVE_H
#define BULWARK_OBSERVE_H

#include <stdbool.h>
#include <stdint.h>

/* Why the proxy generated a response (or aborted one) instead of relaying
 * the upstream's. One row per situation; extend, never blur. */
enum cause {
    CAUSE_NONE = 0,
    /* upstream failures (DESIGN.md's cause table) */
    CAUSE_CONNECTION_REFUSED,
    CAUSE_DESTINATION_IP_UNROUTABLE,
    CAUSE_DNS_ERROR,
    CAUSE_CONNECTION_TIMEOUT,
    CAUSE_CONNECTION_TERMINATED,
    CAUSE_HTTP_RESPONSE_TIMEOUT,
    CAUSE_CONNECTION_READ_TIMEOUT,
    CAUSE_CONNECTION_WRITE_TIMEOUT,
    CAUSE_HTTP_RESPONSE_INCOMPLETE,
    CAUSE_HTTP_PROTOCOL_ERROR,
    CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE,
    CAUSE_DESTINATION_UNAVAILABLE,
    CAUSE_CONNECTION_LIMIT_REACHED,
    CAUSE_PROXY_INTERNAL_ERROR,
    /* answers to the client's own request */
    CAUSE_DESTINATION_NOT_FOUND,
    CAUSE_HTTP_REQUEST_DENIED,
    CAUSE_HTTP_REQUEST_ERROR, /* malformed request: 400/414/431/501/505 */
    CAUSE_REQUEST_TOO_LARGE,  /* body over max_body_size: 413 */
    CAUSE_CLIENT_TIMEOUT,     /* request header or body too slow: 408 */
    CAUSE__COUNT
};

struct cause_info {
    int status;               /* 0: no response is possible, the client connection is aborted */
    const char *proxy_status; /* RFC 9209 error type */
    const char *sentence;     /* what happened, for humans; %s is the server when present */
    const char *fix;          /* the likely next step for the operator */
};

const struct cause_info *cause_get(enum cause c);

/* Map a connect()/socket errno to its cause. */
enum cause cause_from_connect_errno(int err);

#endif
