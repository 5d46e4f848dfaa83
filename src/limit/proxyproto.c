/* The PROXY protocol header (haproxy.org/download/2.9/doc/proxy-protocol.txt):
 * a load balancer in front of us names the client it accepted. Pure: bytes
 * in, a verdict out. Strict, because whoever can send this header chooses
 * the client address that allow/deny and every limit see. */
#include "limit/limit.h"

#include <arpa/inet.h>
#include <string.h>

static const char v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";

static int invalid(const char **why, const char *sentence)
{
    *why = sentence;
    return PROXY_INVALID;
}

/* A decimal port, 0..65535, without leading zeros (spec 2.1). */
static bool parse_port(const char *p, size_t n, uint16_t *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

static bool parse_ip(int family, const char *p, size_t n, uint16_t port,
                     struct sockaddr_storage *out)
{
    char text[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, p, n);
    text[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        return inet_pton(AF_INET, text, &sin->sin_addr) == 1;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    return inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
}

/* The line p[0..n) without its CRLF, after "PROXY ". */
static int parse_v1_line(const char *p, size_t n, struct proxy_header *out, const char **why)
{
    const char *tok[6];
    size_t len[6], count = 0, start = 0;

    if (n >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (n == 7 || p[7] == ' ')) {
        out->has_addr = false; /* spec 2.1: the rest of the line is ignored */
        return 0;
    }
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ' ')
            continue;
        if (count == 5)
            return invalid(why, "PROXY v1: too many fields");
        tok[count] = p + start;
        len[count++] = i - start;
        if (i == start)
            return invalid(why, "PROXY v1: empty field (two spaces, or a trailing space)");
        start = i + 1;
    }
    if (count != 5)
        return invalid(why, "PROXY v1: expected TCP4|TCP6 src dst sport dport");
    int family;
    if (len[0] == 4 && memcmp(tok[0], "TCP4", 4) == 0)
        family = AF_INET;
    else if (len[0] == 4 && memcmp(tok[0], "TCP6", 4) == 0)
        family = AF_INET6;
    else
        return invalid(why, "PROXY v1: unknown protocol (expected TCP4, TCP6 or UNKNOWN)");
    uint16_t sport, dport;
    if (!parse_port(tok[3], len[3], &sport) || !parse_port(tok[4], len[4], &dport))
        return invalid(why, "PROXY v1: bad port");
    if (!parse_ip(family, tok[1], len[1], sport, &out->src) ||
        !parse_ip(family, tok[2], len[2], dport, &out->dst))
        return invalid(why, "PROXY v1: bad address for the protocol");
    out->has_addr = true;
    return 0;
}

static int parse_v1(const char *p, size_t n, struct proxy_header *out, const char **why)
{
    static const char prefix[] = "PROXY ";
    size_t scan = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;

    if (memcmp(p, prefix, n < 6 ? n : 6) != 0)
        return invalid(why, "not a PROXY protocol header");
    for (size_t i = 0; i < scan; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            if (i + 2 > PROXY_V1_MAX)
                return invalid(why, "PROXY v1: no CRLF within 107 bytes");
            if (i + 1 == n)
                return PROXY_INCOMPLETE;
            if (p[i + 1] != '\n')
                return invalid(why, "PROXY v1: CR not followed by LF");
            if (i < 6)
                return invalid(why, "PROXY v1: line ends too early");
            out->version = 1;
            int rc = parse_v1_line(p + 6, i - 6, out, why);
            return rc < 0 ? rc : (int)(i + 2);
        }
        if (c < 0x20 || c > 0x7e)
            return invalid(why, "PROXY v1: control or non-ASCII byte in the line");
    }
    if (n >= PROXY_V1_MAX)
        return invalid(why, "PROXY v1: no CRLF within 107 bytes");
    return PROXY_INCOMPLETE;
}

static int parse_v2(const char *p, size_t n, struct proxy_header *out, const char **why)
{
    const unsigned char *u = (const unsigned char *)p;

    if (memcmp(p, v2_sig, n < 12 ? n : 12) != 0)
        return invalid(why, "not a PROXY protocol header");
    if (n >= 13) {
        if (u[12] >> 4 != 2)
            return invalid(why, "PROXY v2: version is not 2");
        if ((u[12] & 0xf) > 1)
            return invalid(why, "PROXY v2: command is neither LOCAL nor PROXY");
    }
    if (n >= 14 && u[12] == 0x21 && u[13] != 0x00 && u[13] != 0x11 && u[13] != 0x21)
        return invalid(why, "PROXY v2: unsupported address family (TCP over IPv4 or IPv6 only)");
    if (n < 16)
        return PROXY_INCOMPLETE;
    size_t len = (size_t)u[14] << 8 | u[15];
    if (16 + len > PROXY_V2_MAX)
        return invalid(why, "PROXY v2: header longer than we accept");
    if (u[12] == 0x21 && ((u[13] == 0x11 && len < 12) || (u[13] == 0x21 && len < 36)))
        return invalid(why, "PROXY v2: address block shorter than its family needs");
    if (n < 16 + len)
        return PROXY_INCOMPLETE;
    out->version = 2;
    out->has_addr = false;
    /* LOCAL (the balancer's own health check) and UNSPEC name no client:
     * spec 2.2, the receiver uses the connection's own addresses. */
    if (u[12] == 0x21 && u[13] == 0x11) {
        struct sockaddr_in *src = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *dst = (struct sockaddr_in *)&out->dst;
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        src->sin_family = dst->sin_family = AF_INET;
        memcpy(&src->sin_addr, u + 16, 4);
        memcpy(&dst->sin_addr, u + 20, 4);
        memcpy(&src->sin_port, u + 24, 2);
        memcpy(&dst->sin_port, u + 26, 2);
        out->has_addr = true;
    } else if (u[12] == 0x21 && u[13] == 0x21) {
        struct sockaddr_in6 *src = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *dst = (struct sockaddr_in6 *)&out->dst;
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        src->sin6_family = dst->sin6_family = AF_INET6;
        memcpy(&src->sin6_addr, u + 16, 16);
        memcpy(&dst->sin6_addr, u + 32, 16);
        memcpy(&src->sin6_port, u + 48, 2);
        memcpy(&dst->sin6_port, u + 50, 2);
        out->has_addr = true;
    }
    return (int)(16 + len);
}

int proxy_parse(const char *p, size_t n, struct proxy_header *out, const char **why)
{
    *why = NULL;
    if (n == 0)
        return PROXY_INCOMPLETE;
    if (p[0] == 'P')
        return parse_v1(p, n, out, why);
    if (p[0] == '\r')
        return parse_v2(p, n, out, why);
    return invalid(why, "not a PROXY protocol header");
}
