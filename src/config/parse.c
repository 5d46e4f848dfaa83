/* Scalar syntaxes of the config: durations, sizes, integers, addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "config/config_internal.h"

static atomic_bool dns_enabled = true;

void config_set_dns(bool enabled)
{
    atomic_store(&dns_enabled, enabled);
}

bool cfg_dns_enabled(void)
{
    return atomic_load(&dns_enabled);
}

/* Decimal digits at s. Returns how many; *overflow when they do not fit. */
static size_t parse_digits(const char *s, uint64_t *value, bool *overflow)
{
    uint64_t v = 0;
    size_t n = 0;

    *overflow = false;
    for (; s[n] >= '0' && s[n] <= '9'; n++) {
        unsigned d = (unsigned)(s[n] - '0');
        if (v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            v = v * 10 + d;
    }
    *value = v;
    return n;
}

enum cfg_parse cfg_parse_duration(const char *s, uint32_t *ms)
{
    uint64_t v, unit;
    bool overflow;
    size_t n = parse_digits(s, &v, &overflow);
    const char *u = s + n;

    if (n == 0)
        return CFG_PARSE_SYNTAX;
    /* A bare number has no unit, which is a guess waiting to go wrong;
     * zero is the same in every unit. */
    if (*u == '\0') {
        if (overflow || v != 0)
            return CFG_PARSE_SYNTAX;
        *ms = 0;
        return CFG_PARSE_OK;
    }
    if (strcmp(u, "ms") == 0)
        unit = 1;
    else if (strcmp(u, "s") == 0)
        unit = 1000;
    else if (strcmp(u, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(u, "h") == 0)
        unit = 60 * 60 * 1000;
    else
        return CFG_PARSE_SYNTAX;
    if (overflow || v > UINT32_MAX / unit)
        return CFG_PARSE_RANGE;
    *ms = (uint32_t)(v * unit);
    return CFG_PARSE_OK;
}

enum cfg_parse cfg_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v, unit = 1;
    bool overflow;
    size_t n = parse_digits(s, &v, &overflow);
    const char *u = s + n;

    if (n == 0)
        return CFG_PARSE_SYNTAX;
    if (*u != '\0') {
        if (u[1] != '\0')
            return CFG_PARSE_SYNTAX;
        switch (*u) {
        case 'k':
        case 'K':
            unit = 1ull << 10;
            break;
        case 'm':
        case 'M':
            unit = 1ull << 20;
            break;
        case 'g':
        case 'G':
            unit = 1ull << 30;
            break;
        default:
            return CFG_PARSE_SYNTAX;
        }
    }
    if (overflow || v > UINT64_MAX / unit)
        return CFG_PARSE_RANGE;
    *bytes = v * unit;
    return CFG_PARSE_OK;
}

enum cfg_parse cfg_parse_int(const char *s, long long *out)
{
    bool negative = *s == '-';
    uint64_t v;
    bool overflow;
    size_t n = parse_digits(s + negative, &v, &overflow);

    if (n == 0 || s[negative + n] != '\0')
        return CFG_PARSE_SYNTAX;
    if (overflow || v > (uint64_t)LLONG_MAX)
        return CFG_PARSE_RANGE;
    *out = negative ? -(long long)v : (long long)v;
    return CFG_PARSE_OK;
}

int config_parse_duration(const char *s, uint32_t *ms)
{
    return cfg_parse_duration(s, ms) == CFG_PARSE_OK ? 0 : -1;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    return cfg_parse_size(s, bytes) == CFG_PARSE_OK ? 0 : -1;
}

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static bool looks_numeric_v4(const char *host)
{
    for (const char *p = host; *p; p++)
        if (!(*p == '.' || (*p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* getaddrinfo for a name: the first IPv4 address if there is one, because
 * "localhost" meaning ::1 surprises backends that listen on 127.0.0.1 only. */
/* Resolves host into out. On failure why holds only the resolver's reason
 * (the caller says which host). */
static int resolve_host(const char *host, struct config_addr *out, char *why, size_t why_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL, *pick = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);

    if (rc != 0) {
        snprintf(why, why_len, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
        if (ai->ai_family == AF_INET6 && !pick)
            pick = ai;
    }
    if (!pick || pick->ai_addrlen > sizeof(out->ss)) {
        snprintf(why, why_len, "no IPv4 or IPv6 address");
        freeaddrinfo(res);
        return -1;
    }
    memcpy(&out->ss, pick->ai_addr, pick->ai_addrlen);
    out->len = pick->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int config_parse_addr(const char *s, bool resolve, struct config_addr *out, char *why,
                      size_t why_len)
{
    return cfg_parse_addr(s, resolve, out, why, why_len, NULL, 0);
}

int cfg_parse_addr(const char *s, bool resolve, struct config_addr *out, char *why, size_t why_len,
                   char *dns_why, size_t dns_why_len)
{
    const char *host, *port_text;
    size_t host_len;
    bool bracketed = s[0] == '[';
    char hostbuf[256];
    uint64_t port;
    bool overflow;

    memset(out, 0, sizeof(*out));
    if (strncmp(s, "unix:", 5) == 0) {
        /* A local socket (PHP-FPM's usual listen): no port, no DNS. */
        struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
        const char *path = s + 5;
        if (path[0] != '/') {
            snprintf(why, why_len,
                     "a unix socket path must be absolute, e.g. "
                     "unix:/run/php/php-fpm.sock");
            return -1;
        }
        if (strlen(path) >= sizeof(sun->sun_path)) {
            snprintf(why, why_len, "unix socket path longer than %zu bytes",
                     sizeof(sun->sun_path) - 1);
            return -1;
        }
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, path, strlen(path) + 1);
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        snprintf(out->text, sizeof(out->text), "%s", s);
        return 0;
    }
    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close) {
            snprintf(why, why_len, "missing \"]\" after the IPv6 address");
            return -1;
        }
        if (close[1] != ':') {
            snprintf(why, why_len, "%s",
                     close[1] ? "expected \":port\" after \"]\""
                              : "missing port (expected [v6]:port, "
                                "e.g. [::1]:8080)");
            return -1;
        }
        host = s + 1;
        host_len = (size_t)(close - host);
        port_text = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            snprintf(why, why_len, "missing port (expected host:port, e.g. 127.0.0.1:8080)");
            return -1;
        }
        if (memchr(s, ':', (size_t)(colon - s))) {
            snprintf(why, why_len, "an IPv6 address needs brackets, e.g. [::1]:8080");
            return -1;
        }
        host = s;
        host_len = (size_t)(colon - s);
        port_text = colon + 1;
    }

    if (*port_text == '\0') {
        snprintf(why, why_len, "missing port after \":\"");
        return -1;
    }
    if (parse_digits(port_text, &port, &overflow) != strlen(port_text)) {
        snprintf(why, why_len, "port %s is not a number", cfg_quote(port_text).s);
        return -1;
    }
    if (overflow || port < 1 || port > 65535) {
        snprintf(why, why_len, "port %.20s%s out of range 1-65535", port_text,
                 strlen(port_text) > 20 ? "..." : "");
        return -1;
    }
    if (host_len >= sizeof(hostbuf)) {
        snprintf(why, why_len, "host longer than %zu characters", sizeof(hostbuf) - 1);
        return -1;
    }
    memcpy(hostbuf, host, host_len);
    hostbuf[host_len] = '\0';

    if (bracketed) {
        /* getaddrinfo rather than inet_pton for the "%eth0" scope suffix of
         * link-local addresses; AI_NUMERICHOST keeps it off the network. */
        struct addrinfo hints = {.ai_family = AF_INET6, .ai_flags = AI_NUMERICHOST};
        struct addrinfo *res = NULL;
        if (host_len == 0 || getaddrinfo(hostbuf, NULL, &hints, &res) != 0 ||
            res->ai_addrlen > sizeof(out->ss)) {
            if (res)
                freeaddrinfo(res);
            snprintf(why, why_len, "%s is not an IPv6 address", cfg_quote(hostbuf).s);
            return -1;
        }
        memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
        out->len = res->ai_addrlen;
        freeaddrinfo(res);
    } else if (host_len == 0 || strcmp(hostbuf, "*") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        out->len = sizeof(*sin);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        if (inet_pton(AF_INET, hostbuf, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            out->len = sizeof(*sin);
        } else if (looks_numeric_v4(hostbuf)) {
            snprintf(why, why_len, "%s is not a valid IPv4 address", cfg_quote(hostbuf).s);
            return -1;
        } else {
            for (const char *p = hostbuf; *p; p++) {
                if (!is_host_char(*p)) {
                    snprintf(why, why_len, "%s is not a valid host name", cfg_quote(hostbuf).s);
                    return -1;
                }
            }
            if (!resolve) {
                snprintf(why, why_len, "host %s is not a numeric IP address", cfg_quote(hostbuf).s);
                return -1;
            }
            if (!cfg_dns_enabled()) {
                snprintf(why, why_len, "cannot resolve host %s: DNS disabled",
                         cfg_quote(hostbuf).s);
                return -1;
            }
            char reason[256];
            if (resolve_host(hostbuf, out, reason, sizeof(reason)) < 0) {
                if (strcmp(reason, "no IPv4 or IPv6 address") == 0)
                    snprintf(why, why_len, "host %s has no IPv4 or IPv6 address",
                             cfg_quote(hostbuf).s);
                else
                    snprintf(why, why_len, "cannot resolve host %s: %s", cfg_quote(hostbuf).s,
                             reason);
                if (dns_why) {
                    snprintf(dns_why, dns_why_len, "%s", reason);
                    /* Kept with len 0: the caller may go on with the name. */
                    snprintf(out->text, sizeof(out->text), "%s", s);
                }
                return -1;
            }
        }
    }

    if (out->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&out->ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons((uint16_t)port);
    /* Display text only: a longer name is still kept whole by the caller. */
    snprintf(out->text, sizeof(out->text), "%s", s);
    return 0;
}
