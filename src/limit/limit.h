/* Limit: who the client is and whether it may go on.
 *
 * - CIDR lists (trusted_proxies, allow, deny): parsed at config load, then
 *   matched in O(log n) by a binary search over disjoint ranges.
 * - The client address of a request: the connection's address, or the one
 *   X-Forwarded-For names when the connection comes from a trusted proxy.
 * - The PROXY protocol (v1 text, v2 binary) header parser: pure, no I/O.
 * - conn_limit: concurrent connections and requests per client address,
 *   counted in one table shared by every worker (lock-striped, bounded).
 *
 * Rate limiting (GCRA) lives in its own header, limit/ratelimit.h.
 * Dependencies: limit -> http (header fields), core. Nothing here reads the
 * config: callers hand in the lists and numbers.
 */
#ifndef BULWARK_LIMIT_H
#define BULWARK_LIMIT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http/http.h"

/* An IP address as 128 bits; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), so
 * an IPv4-mapped peer of a dual-stack listener matches IPv4 entries. */
struct limit_addr {
    uint64_t hi, lo;
};

/* The address of sa (AF_INET or AF_INET6); false for other families. */
bool limit_addr_from_sockaddr(const struct sockaddr *sa, struct limit_addr *out);

/* One CIDR block, inclusive bounds, with its text as written (for logs). */
struct cidr_entry {
    struct limit_addr first, last;
    char text[INET6_ADDRSTRLEN + 5]; /* "10.0.0.0/8", "::1/128" */
};

/* A list of blocks. After cidr_list_finish() the entries are sorted and
 * disjoint (a block inside another is dropped: the wider one matches for
 * it), which is what the binary search needs. Owns entries. */
struct cidr_list {
    struct cidr_entry *entries;
    size_t count, cap;
};

/* "10.0.0.0/8", "2001:db8::/32", "::1/128", a bare address (/32 or /128).
 * Host bits set under the prefix ("10.0.0.1/8") are refused: such an entry
 * is nearly always a typo for a narrower block. Returns 0, or -1 with a
 * reason in why. */
int cidr_parse(const char *s, struct cidr_entry *out, char *why, size_t why_len);
/* Append a parsed block. 0 or -ENOMEM. */
int cidr_list_add(struct cidr_list *l, const struct cidr_entry *e);
/* Sort and drop nested blocks; call once after the last add. */
void cidr_list_finish(struct cidr_list *l);
/* The block that holds a, or NULL. Allocates nothing; any thread. */
const struct cidr_entry *cidr_list_match(const struct cidr_list *l, const struct limit_addr *a);
void cidr_list_free(struct cidr_list *l);

static inline bool cidr_list_empty(const struct cidr_list *l)
{
    return !l || l->count == 0;
}

/* ---- the client address ---- */

/* The client of a request that arrived on a connection from peer, as
 * nginx's realip module with real_ip_recursive on: when peer is in trusted
 * and the request carries X-Forwarded-For, walk its addresses from the right
 * (all field lines, in order, as one list) and take the first that is not
 * itself trusted; when every one is trusted, the leftmost. A malformed list
 * (an element that is not an IP address, empty elements, a port) from a
 * trusted peer is never guessed at: the client is the peer. From a peer
 * that is not trusted, X-Forwarded-For says nothing about the client.
 * Returns true when the client is not the peer (XFF named it). */
bool limit_client_addr(const struct cidr_list *trusted, const struct sockaddr_storage *peer,
                       const struct http_header *headers, size_t num_headers,
                       struct sockaddr_storage *client);

/* The text form of an address ("192.0.2.1", "2001:db8::1"; IPv4-mapped
 * IPv6 written as IPv4) into out (INET6_ADDRSTRLEN bytes). */
void limit_addr_text(const struct sockaddr_storage *ss, char *out, size_t len);

/* ---- PROXY protocol (haproxy.org proxy-protocol.txt, v1 and v2) ---- */

/* The longest v1 line, CRLF included (the spec's bound). */
#define PROXY_V1_MAX 107
/* The longest v2 header we accept: 16 bytes and the address block with its
 * TLVs. Load balancers send well under 1 KiB; a larger one is refused
 * rather than buffered. */
#define PROXY_V2_MAX (16 + 2048)

#define PROXY_INCOMPLETE 0 /* a valid prefix so far: read more */
#define PROXY_INVALID (-1)

struct proxy_header {
    int version; /* 1 or 2 */
    /* false: LOCAL (v2), UNKNOWN (v1) or AF_UNSPEC (v2): the sender names
     * no client (its own health check); the connection keeps its address. */
    bool has_addr;
    struct sockaddr_storage src, dst;
};

/* Parse a PROXY header at p[0..n). Returns its length (> 0) with out
 * filled, PROXY_INCOMPLETE while p is a valid prefix of a header (at most
 * PROXY_V1_MAX or PROXY_V2_MAX bytes are ever needed), or PROXY_INVALID with
 * *why a static sentence. Strict: v1 is "PROXY TCP4|TCP6 src dst sport
 * dport\r\n" with single spaces, addresses of the named family, decimal
 * ports without leading zeros, or "PROXY UNKNOWN...\r\n"; v2 is version 2,
 * command LOCAL or PROXY, family UNSPEC, TCP over IPv4 or TCP over IPv6
 * with an address block at least as long as the family needs. */
int proxy_parse(const char *p, size_t n, struct proxy_header *out, const char **why);

/* ---- conn_limit: concurrent connections and requests per client ---- */

/* The default bound on keys (distinct client addresses, or client and
 * route) the table holds: ~100 MiB at most, whatever a flood of spoofed
 * sources does. */
#define LIMIT_DEFAULT_MAX_KEYS 1000000u

/* What a counter counts. A key is (address, scope): scope 0 counts for the
 * whole server, another scope (limit_scope() of a route's label) for one
 * route only. */
enum limit_kind { LIMIT_CONNECTIONS = 0, LIMIT_REQUESTS };

enum limit_verdict {
    LIMIT_OK = 0,     /* counted: release it exactly once */
    LIMIT_OVER,       /* at max already: not counted */
    LIMIT_TABLE_FULL, /* a new key would exceed max_keys: not counted */
};

/* A stable scope id for a route label (survives reloads). Never 0. */
uint32_t limit_scope(const char *label);

/* Count one connection or request of a at scope if fewer than max are
 * counted now (max 0: no limit, but still counted). Entries are created on
 * first use and removed when their counts return to zero; while max_keys
 * keys exist, a new key is refused (LIMIT_TABLE_FULL), never evicted from
 * under a client that holds it. Thread safe: one mutex per stripe of keys. */
enum limit_verdict limit_conn_acquire(const struct limit_addr *a, uint32_t scope,
                                      enum limit_kind kind, uint32_t max, uint32_t max_keys);
/* Give back one unit that limit_conn_acquire counted (LIMIT_OK). */
void limit_conn_release(const struct limit_addr *a, uint32_t scope, enum limit_kind kind);

/* Why a client was refused, for /metrics. */
enum limit_denial {
    DENIED_DENY = 0,               /* the address is in a deny list */
    DENIED_ALLOW,                  /* an allow list is set and the address is not in it */
    DENIED_CONN_LIMIT_CONNECTIONS, /* over conn_limit.connections */
    DENIED_CONN_LIMIT_REQUESTS,    /* over conn_limit.requests (top level or route) */
    DENIED_PROXY_PROTOCOL,         /* a PROXY header missing, malformed or from an untrusted peer */
    DENIED_TABLE_FULL,             /* the conn_limit table is full: 503 */
    DENIED__COUNT
};
void limit_count_denied(enum limit_denial why);

struct limit_stats {
    uint64_t denied[DENIED__COUNT];
    uint64_t keys;        /* entries in the conn_limit table now */
    uint64_t connections; /* connections counted in it now */
    uint64_t requests;    /* requests counted in it now */
};
void limit_stats_get(struct limit_stats *out);
/* "deny", "allow", "conn_limit_connections", ...: the metrics label. */
const char *limit_denial_name(enum limit_denial why);

#endif
