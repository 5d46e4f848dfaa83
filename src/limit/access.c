/* CIDR lists and the client address of a request (trusted proxies and
 * X-Forwarded-For). */
#include "limit/limit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void addr_from_bytes(const unsigned char b[16], struct limit_addr *out)
{
    out->hi = out->lo = 0;
    for (int i = 0; i < 8; i++) {
        out->hi = out->hi << 8 | b[i];
        out->lo = out->lo << 8 | b[8 + i];
    }
}

static void addr_from_v4(const struct in_addr *in, struct limit_addr *out)
{
    out->hi = 0;
    out->lo = 0xffff00000000ull | ntohl(in->s_addr);
}

bool limit_addr_from_sockaddr(const struct sockaddr *sa, struct limit_addr *out)
{
    if (sa->sa_family == AF_INET) {
        addr_from_v4(&((const struct sockaddr_in *)sa)->sin_addr, out);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        addr_from_bytes(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, out);
        return true;
    }
    return false;
}

static int addr_cmp(const struct limit_addr *a, const struct limit_addr *b)
{
    if (a->hi != b->hi)
        return a->hi < b->hi ? -1 : 1;
    if (a->lo != b->lo)
        return a->lo < b->lo ? -1 : 1;
    return 0;
}

/* The mask of the host bits of a /prefix over 128 bits. */
static void host_mask(unsigned prefix, struct limit_addr *m)
{
    m->hi = prefix >= 64 ? 0 : prefix == 0 ? UINT64_MAX : UINT64_MAX >> prefix;
    m->lo = prefix >= 128 ? 0 : prefix <= 64 ? UINT64_MAX : UINT64_MAX >> (prefix - 64);
}

int cidr_parse(const char *s, struct cidr_entry *out, char *why, size_t why_len)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hlen = slash ? (size_t)(slash - s) : strlen(s);
    unsigned char b[16];
    unsigned prefix, max;

    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(why, why_len, "expected an address or a block like 10.0.0.0/8 or 2001:db8::/32");
        return -1;
    }
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(b, 0, sizeof(b));
    if (inet_pton(AF_INET, host, b + 12) == 1) {
        b[10] = b[11] = 0xff;
        max = 32;
    } else if (inet_pton(AF_INET6, host, b) == 1) {
        max = 128;
    } else {
        snprintf(why, why_len, "not an IPv4 or IPv6 address");
        return -1;
    }
    prefix = max;
    if (slash) {
        const char *d = slash + 1;
        unsigned v = 0;
        size_t nd = 0;
        for (; *d >= '0' && *d <= '9' && nd < 4; d++, nd++)
            v = v * 10 + (unsigned)(*d - '0');
        if (nd == 0 || *d || (nd > 1 && slash[1] == '0') || v > max) {
            snprintf(why, why_len, "bad prefix length: expected /0 to /%u", max);
            return -1;
        }
        prefix = v;
    }
    struct limit_addr a, m;
    addr_from_bytes(b, &a);
    /* An IPv4 /p is the IPv4-mapped /(96 + p). */
    host_mask(max == 32 ? prefix + 96 : prefix, &m);
    if ((a.hi & m.hi) || (a.lo & m.lo)) {
        snprintf(why, why_len,
                 "host bits set after the /%u prefix: did you mean the block's first "
                 "address?",
                 prefix);
        return -1;
    }
    out->first = a;
    out->last.hi = a.hi | m.hi;
    out->last.lo = a.lo | m.lo;
    snprintf(out->text, sizeof(out->text), "%s/%u", host, prefix);
    return 0;
}

int cidr_list_add(struct cidr_list *l, const struct cidr_entry *e)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct cidr_entry *grown = realloc(l->entries, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        l->entries = grown;
        l->cap = cap;
    }
    l->entries[l->count++] = *e;
    return 0;
}

/* By first address, the wider block first when two start together. */
static int by_first(const void *x, const void *y)
{
    const struct cidr_entry *a = x, *b = y;
    int c = addr_cmp(&a->first, &b->first);
    return c ? c : -addr_cmp(&a->last, &b->last);
}

void cidr_list_finish(struct cidr_list *l)
{
    size_t kept = 0;

    if (l->count == 0)
        return;
    qsort(l->entries, l->count, sizeof(*l->entries), by_first);
    /* Two CIDR blocks are nested or disjoint: after the sort, a block that
     * does not end after the last one kept lies inside it. */
    for (size_t i = 0; i < l->count; i++) {
        if (kept && addr_cmp(&l->entries[i].last, &l->entries[kept - 1].last) <= 0)
            continue;
        l->entries[kept++] = l->entries[i];
    }
    l->count = kept;
}

const struct cidr_entry *cidr_list_match(const struct cidr_list *l, const struct limit_addr *a)
{
    size_t lo = 0, hi;

    if (!l)
        return NULL;
    hi = l->count;
    /* The last block whose first address is <= a. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (addr_cmp(&l->entries[mid].first, a) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const struct cidr_entry *e = &l->entries[lo - 1];
    return addr_cmp(a, &e->last) <= 0 ? e : NULL;
}

void cidr_list_free(struct cidr_list *l)
{
    free(l->entries);
    l->entries = NULL;
    l->count = l->cap = 0;
}

void limit_addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)len);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)len);
    } else if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)len);
    } else {
        snprintf(out, len, "-");
    }
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* One X-Forwarded-For element p[0..n) (OWS trimmed) as an address: a bare
 * IPv4 or IPv6 address, nothing else (no port, no brackets, no "unknown"). */
static bool xff_element(const char *p, size_t n, struct sockaddr_storage *out)
{
    char text[INET6_ADDRSTRLEN + 1];

    while (n && is_ows(*p))
        p++, n--;
    while (n && is_ows(p[n - 1]))
        n--;
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, p, n);
    text[n] = '\0';
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

static bool trusted_addr(const struct cidr_list *trusted, const struct sockaddr_storage *ss)
{
    struct limit_addr a;
    return limit_addr_from_sockaddr((const struct sockaddr *)ss, &a) &&
           cidr_list_match(trusted, &a) != NULL;
}

bool limit_client_addr(const struct cidr_list *trusted, const struct sockaddr_storage *peer,
                       const struct http_header *headers, size_t num_headers,
                       struct sockaddr_storage *client)
{
    struct sockaddr_storage found, leftmost;
    bool any = false;

    *client = *peer;
    if (cidr_list_empty(trusted) || !trusted_addr(trusted, peer))
        return false;
    /* From the last field line to the first, each from its right end. */
    for (size_t i = num_headers; i-- > 0;) {
        const struct http_header *h = &headers[i];
        if (!http_name_is(h, "X-Forwarded-For"))
            continue;
        const char *v = h->value;
        size_t end = h->value_len;
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            if (!xff_element(v + start, end - start, &found))
                return false; /* malformed: the peer is the client, never a guess */
            if (!trusted_addr(trusted, &found)) {
                *client = found;
                return true;
            }
            leftmost = found;
            any = true;
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    if (!any)
        return false;
    *client = leftmost;
    return true;
}
