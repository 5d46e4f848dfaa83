/* The cause table: every response the proxy generates instead of relaying
 * one, with its RFC 9209 error type, a sentence and the likely fix. */
#include <errno.h>

#include "observe/observe.h"
#include "upstream/upstream.h"

static const struct cause_info causes[CAUSE__COUNT] = {
    [CAUSE_NONE] = {0, "-", "no error", "-"},
    [CAUSE_CONNECTION_REFUSED] =
        {502, "connection_refused",
         "Nothing is listening on the upstream address (connection refused): the backend is not "
         "started or has crashed.",
         "Start the backend or check that it listens on this address and port."},
    [CAUSE_DESTINATION_IP_UNROUTABLE] =
        {502, "destination_ip_unroutable",
         "The upstream address cannot be reached from this host (no route): the address is "
         "probably wrong.",
         "Check the server address in the upstream's servers list."},
    [CAUSE_DNS_ERROR] = {502, "dns_error", "The upstream host name does not resolve.",
                         "Fix the name in the config or the DNS record, then reload."},
    [CAUSE_CONNECTION_TIMEOUT] =
        {504, "connection_timeout",
         "The upstream did not complete the TCP handshake within connect_timeout: the host is "
         "down, firewalled, or its accept queue is full.",
         "Check that the host is up and reachable; raise connect_timeout only for a distant host."},
    [CAUSE_CONNECTION_TERMINATED] =
        {502, "connection_terminated",
         "The upstream closed or reset the connection before sending a complete response "
         "header: it crashed or restarted while handling the request.",
         "Look at the backend's own log for a crash at this time."},
    [CAUSE_HTTP_RESPONSE_TIMEOUT] =
        {504, "http_response_timeout",
         "The backend accepted the request but sent no response header within read_timeout: it "
         "is too slow or stuck.",
         "Find the slow handler; raise read_timeout for this route only if the work is "
         "legitimately slow."},
    [CAUSE_CONNECTION_READ_TIMEOUT] =
        {504, "connection_read_timeout",
         "The upstream stalled in the middle of the response body for longer than "
         "read_timeout; the client connection was aborted.",
         "Find why the backend stalls while streaming (a slow query, a blocked worker)."},
    [CAUSE_CONNECTION_WRITE_TIMEOUT] =
        {504, "connection_write_timeout",
         "The upstream stopped reading the request for longer than send_timeout.",
         "The backend is overloaded or stuck reading the request body."},
    [CAUSE_HTTP_RESPONSE_INCOMPLETE] =
        {502, "http_response_incomplete",
         "The upstream closed the connection before the end of the response body (shorter "
         "than declared, or broken chunked coding); the client connection was aborted.",
         "The backend crashed or was killed while sending the response; check its log."},
    [CAUSE_HTTP_PROTOCOL_ERROR] =
        {502, "http_protocol_error",
         "The upstream sent a response that is not valid HTTP/1.1 (bad status line, bad "
         "header, or conflicting framing).",
         "Check that the upstream port speaks HTTP (not FastCGI, TLS or another protocol)."},
    [CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE] =
        {502, "http_response_header_section_size",
         "The upstream's response header section is larger than the limit.",
         "Reduce the headers the backend sends (large cookies?) or raise client.max_header_size."},
    [CAUSE_DESTINATION_UNAVAILABLE] =
        {503, "destination_unavailable",
         "All servers of the upstream group are down (marked by their health checks), so no "
         "connection was attempted.",
         "Bring at least one server of the group back: the error log says why each went down."},
    [CAUSE_CONNECTION_LIMIT_REACHED] =
        {503, "connection_limit_reached", "The upstream group is at its connection limit.",
         "The backend is overloaded: add capacity or lower the traffic."},
    [CAUSE_PROXY_INTERNAL_ERROR] = {500, "proxy_internal_error",
                                    "The proxy ran out of a resource (memory or descriptors).",
                                    "Check the proxy's error log and system limits."},
    [CAUSE_DESTINATION_NOT_FOUND] = {404, "destination_not_found",
                                     "No route matches the request's host and path.",
                                     "Add a route for this host and path."},
    [CAUSE_HTTP_REQUEST_DENIED] = {429, "http_request_denied",
                                   "The client is over its rate or connection limit.",
                                   "If this is legitimate traffic, raise the limit."},
    [CAUSE_HTTP_REQUEST_ERROR] = {400, "http_request_error",
                                  "The client sent a malformed or ambiguous request.",
                                  "Nothing to do on the server side: the client is at fault."},
    [CAUSE_REQUEST_TOO_LARGE] = {413, "http_request_error",
                                 "The request body is larger than max_body_size.",
                                 "Raise max_body_size for this route if such bodies are expected."},
    [CAUSE_CLIENT_TIMEOUT] = {408, "http_request_error",
                              "The client did not send its request in time.",
                              "Nothing to do unless many clients are slow (a slowloris attack?)."},
    [CAUSE_CLIENT_SLOW_BODY] =
        {408, "http_request_error",
         "The client sent its request body more slowly than client.min_body_rate allows.",
         "Nothing to do unless real uploads are cut (very slow links): then lower "
         "client.min_body_rate."},
    [CAUSE_SCRIPT_DENIED] = {403, "http_request_denied",
                             "The path names no script this FastCGI route may run: it climbs "
                             "above root, or its extension is not one the route runs.",
                             "Request a script under the route's root, or add the extension to "
                             "the route's extensions."},
    [CAUSE_SCRIPT_NOT_FOUND] = {404, "destination_not_found",
                                "No script under the FastCGI route's root has this path.",
                                "Check the URL, or the route's root, index and split_path_info."},
};

const struct cause_info *cause_get(enum cause c)
{
    if ((unsigned)c >= CAUSE__COUNT)
        c = CAUSE_PROXY_INTERNAL_ERROR;
    return &causes[c];
}

bool cause_is_server_failure(enum cause c)
{
    switch (c) {
    case CAUSE_CONNECTION_REFUSED:
    case CAUSE_DESTINATION_IP_UNROUTABLE:
    case CAUSE_DNS_ERROR:
    case CAUSE_CONNECTION_TIMEOUT:
    case CAUSE_CONNECTION_TERMINATED:
    case CAUSE_HTTP_RESPONSE_TIMEOUT:
    case CAUSE_CONNECTION_READ_TIMEOUT:
    case CAUSE_CONNECTION_WRITE_TIMEOUT:
    case CAUSE_HTTP_RESPONSE_INCOMPLETE:
    case CAUSE_HTTP_PROTOCOL_ERROR:
    case CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE:
        return true;
    default:
        return false;
    }
}

enum cause cause_from_connect_errno(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ENOENT: /* unix socket: no socket file, nothing listens */
    case EAGAIN: /* unix socket: its listen backlog is full; nothing reached the server */
        return CAUSE_CONNECTION_REFUSED;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
    case EAFNOSUPPORT:
    case EINVAL:
    case EACCES:
    case EPERM:
        return CAUSE_DESTINATION_IP_UNROUTABLE;
    case ETIMEDOUT:
        return CAUSE_CONNECTION_TIMEOUT;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOBUFS:
        return CAUSE_PROXY_INTERNAL_ERROR;
    default:
        return CAUSE_CONNECTION_TERMINATED;
    }
}

enum cause observe_cause_from_h1(const struct h1_result *r)
{
    switch (r->failure) {
    case H1_OK:
        return CAUSE_NONE;
    case H1_CONNECT_FAILED:
        return cause_from_connect_errno(r->err);
    case H1_CONNECT_TIMEOUT:
        return CAUSE_CONNECTION_TIMEOUT;
    case H1_SEND_FAILED:
    case H1_CLOSED:
        return CAUSE_CONNECTION_TERMINATED;
    case H1_SEND_TIMEOUT:
        return CAUSE_CONNECTION_WRITE_TIMEOUT;
    case H1_RESPONSE_TIMEOUT:
        return CAUSE_HTTP_RESPONSE_TIMEOUT;
    case H1_PROTOCOL_ERROR:
        return CAUSE_HTTP_PROTOCOL_ERROR;
    case H1_HEADER_TOO_LARGE:
        return CAUSE_HTTP_RESPONSE_HEADER_SECTION_SIZE;
    case H1_READ_TIMEOUT:
        return CAUSE_CONNECTION_READ_TIMEOUT;
    case H1_BODY_INCOMPLETE:
        return CAUSE_HTTP_RESPONSE_INCOMPLETE;
    }
    return CAUSE_PROXY_INTERNAL_ERROR;
}
