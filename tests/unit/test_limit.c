/* Unit tests for src/limit: CIDR parsing and matching, the client address
 * from X-Forwarded-For, the PROXY protocol parser (every truncation point
 * and malformed variants), the conn_limit table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "limit/limit.h"

static struct limit_addr addr(const char *text)
{
    struct sockaddr_storage ss;
    struct limit_addr a;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
        ss.ss_family = AF_INET6;
    }
    assert_true(limit_addr_from_sockaddr((struct sockaddr *)&ss, &a));
    return a;
}

static struct sockaddr_storage sockaddr_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    return ss;
}

static void list_of(struct cidr_list *l, const char *const *blocks, size_t n)
{
    char why[128];
    memset(l, 0, sizeof(*l));
    for (size_t i = 0; i < n; i++) {
        struct cidr_entry e;
        assert_int_equal(cidr_parse(blocks[i], &e, why, sizeof(why)), 0);
        assert_int_equal(cidr_list_add(l, &e), 0);
    }
    cidr_list_finish(l);
}

static const char *match(const struct cidr_list *l, const char *ip)
{
    struct limit_addr a = addr(ip);
    const struct cidr_entry *e = cidr_list_match(l, &a);
    return e ? e->text : NULL;
}

static void test_cidr_matches_v4_v6_and_bare_addresses(void **state)
{
    (void)state;
    static const char *const blocks[] = {"10.0.0.0/8", "::1/128", "192.0.2.7", "2001:db8::/32"};
    struct cidr_list l;
    list_of(&l, blocks, 4);
    assert_string_equal(match(&l, "10.1.2.3"), "10.0.0.0/8");
    assert_string_equal(match(&l, "10.255.255.255"), "10.0.0.0/8");
    assert_null(match(&l, "11.0.0.0"));
    assert_null(match(&l, "9.255.255.255"));
    assert_string_equal(match(&l, "192.0.2.7"), "192.0.2.7/32");
    assert_null(match(&l, "192.0.2.8"));
    assert_string_equal(match(&l, "::1"), "::1/128");
    assert_null(match(&l, "::2"));
    assert_string_equal(match(&l, "2001:db8:ffff::1"), "2001:db8::/32");
    assert_null(match(&l, "2001:db9::1"));
    cidr_list_free(&l);
}

static void test_ipv4_mapped_peer_matches_ipv4_entry(void **state)
{
    (void)state;
    static const char *const blocks[] = {"127.0.0.0/8"};
    struct cidr_list l;
    list_of(&l, blocks, 1);
    assert_string_equal(match(&l, "::ffff:127.0.0.2"), "127.0.0.0/8");
    assert_null(match(&l, "::ffff:128.0.0.1"));
    cidr_list_free(&l);
}

static void test_nested_blocks_match_the_wider_one(void **state)
{
    (void)state;
    static const char *const blocks[] = {"10.1.0.0/16", "10.0.0.0/8", "10.1.2.3", "0.0.0.0/0"};
    struct cidr_list l;
    list_of(&l, blocks, 3);
    assert_int_equal(l.count, 1);
    assert_string_equal(match(&l, "10.1.2.3"), "10.0.0.0/8");
    cidr_list_free(&l);
    list_of(&l, blocks + 3, 1);
    assert_string_equal(match(&l, "203.0.113.9"), "0.0.0.0/0");
    assert_null(match(&l, "2001:db8::1")); /* an IPv4 block holds no IPv6 address */
    cidr_list_free(&l);
}

static void test_cidr_rejects_bad_entries(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",         "10.0.0.0/33", "::/129",       "10.0.0.1/8", "10.0.0.0/",   "10.0.0.0/08",
        "10.0.0/8", "example.com", "10.0.0.0/8/8", "/8",         "10.0.0.0/-1", "[::1]/128"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cidr_entry e;
        char why[128] = "";
        assert_int_equal(cidr_parse(bad[i], &e, why, sizeof(why)), -1);
        assert_true(why[0] != '\0');
    }
}

static void test_thousands_of_entries_stay_exact(void **state)
{
    (void)state;
    struct cidr_list l = {0};
    char text[64], why[128];
    /* 4096 disjoint /24s: every other one of 10.0.0.0/11 */
    for (int i = 0; i < 8192; i += 2) {
        struct cidr_entry e;
        snprintf(text, sizeof(text), "10.%d.%d.0/24", i / 256, i % 256);
        assert_int_equal(cidr_parse(text, &e, why, sizeof(why)), 0);
        assert_int_equal(cidr_list_add(&l, &e), 0);
    }
    cidr_list_finish(&l);
    assert_int_equal(l.count, 4096);
    for (int i = 0; i < 8192; i++) {
        snprintf(text, sizeof(text), "10.%d.%d.77", i / 256, i % 256);
        if (i % 2 == 0)
            assert_non_null(match(&l, text));
        else
            assert_null(match(&l, text));
    }
    cidr_list_free(&l);
}

/* ---- X-Forwarded-For ---- */

static const char *client_of(const char *peer, const char *const *xff, size_t n)
{
    static const char *const trusted_blocks[] = {"127.0.0.2/32", "10.0.0.0/8"};
    static char out[INET6_ADDRSTRLEN];
    struct cidr_list trusted;
    struct http_header h[4];
    list_of(&trusted, trusted_blocks, 2);
    for (size_t i = 0; i < n; i++)
        h[i] = (struct http_header){"X-Forwarded-For", 15, xff[i], strlen(xff[i])};
    struct sockaddr_storage p = sockaddr_of(peer), c;
    limit_client_addr(&trusted, &p, h, n, &c);
    limit_addr_text(&c, out, sizeof(out));
    cidr_list_free(&trusted);
    return out;
}

static void test_xff_from_untrusted_peer_is_ignored(void **state)
{
    (void)state;
    const char *xff[] = {"203.0.113.9"};
    assert_string_equal(client_of("127.0.0.1", xff, 1), "127.0.0.1");
}

static void test_xff_from_trusted_peer_names_rightmost_untrusted(void **state)
{
    (void)state;
    const char *one[] = {"198.51.100.1, 203.0.113.9, 10.1.1.1"};
    assert_string_equal(client_of("127.0.0.2", one, 1), "203.0.113.9");
    /* several field lines are one list, the last line rightmost */
    const char *two[] = {"198.51.100.1", "203.0.113.9,10.2.2.2"};
    assert_string_equal(client_of("127.0.0.2", two, 2), "203.0.113.9");
    const char *v6[] = {"2001:db8::7"};
    assert_string_equal(client_of("127.0.0.2", v6, 1), "2001:db8::7");
}

static void test_xff_all_trusted_names_the_leftmost(void **state)
{
    (void)state;
    const char *xff[] = {"10.9.9.9, 10.1.1.1"};
    assert_string_equal(client_of("127.0.0.2", xff, 1), "10.9.9.9");
}

static void test_malformed_xff_from_trusted_peer_is_the_peer(void **state)
{
    (void)state;
    static const char *const bad[] = {"203.0.113.9:8080",       "unknown",       "",
                                      "203.0.113.9,",           "[2001:db8::1]", "1.2.3",
                                      "203.0.113.9, , 10.1.1.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *xff[] = {bad[i]};
        assert_string_equal(client_of("127.0.0.2", xff, 1), "127.0.0.2");
    }
    /* garbage left of the client is never read */
    const char *left[] = {"garbage, 203.0.113.9"};
    assert_string_equal(client_of("127.0.0.2", left, 1), "203.0.113.9");
}

/* ---- PROXY protocol ---- */

static const char v1_tcp4[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
static const char v1_tcp6[] = "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n";

static size_t v2_header(unsigned char *b, unsigned char cmd, unsigned char fam, size_t addr_len)
{
    memcpy(b, "\r\n\r\n\0\r\nQUIT\n", 12);
    b[12] = cmd;
    b[13] = fam;
    b[14] = (unsigned char)(addr_len >> 8);
    b[15] = (unsigned char)addr_len;
    for (size_t i = 0; i < addr_len; i++)
        b[16 + i] = (unsigned char)(i + 1);
    return 16 + addr_len;
}

static void assert_every_prefix_incomplete(const char *p, size_t n)
{
    struct proxy_header ph;
    const char *why;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(proxy_parse(p, i, &ph, &why), PROXY_INCOMPLETE);
}

static void test_proxy_v1_tcp4_and_tcp6(void **state)
{
    (void)state;
    struct proxy_header ph;
    const char *why;
    char text[INET6_ADDRSTRLEN];
    char with_http[128];
    snprintf(with_http, sizeof(with_http), "%sGET / HTTP/1.1\r\n", v1_tcp4);
    assert_int_equal(proxy_parse(with_http, strlen(with_http), &ph, &why), strlen(v1_tcp4));
    assert_int_equal(ph.version, 1);
    assert_true(ph.has_addr);
    limit_addr_text(&ph.src, text, sizeof(text));
    assert_string_equal(text, "192.0.2.1");
    assert_int_equal(ntohs(((struct sockaddr_in *)&ph.src)->sin_port), 56324);
    assert_int_equal(proxy_parse(v1_tcp6, strlen(v1_tcp6), &ph, &why), strlen(v1_tcp6));
    limit_addr_text(&ph.src, text, sizeof(text));
    assert_string_equal(text, "2001:db8::1");
    const char unknown[] = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(proxy_parse(unknown, strlen(unknown), &ph, &why), strlen(unknown));
    assert_false(ph.has_addr);
}

static void test_proxy_v1_every_truncation_is_incomplete(void **state)
{
    (void)state;
    assert_every_prefix_incomplete(v1_tcp4, strlen(v1_tcp4));
    assert_every_prefix_incomplete(v1_tcp6, strlen(v1_tcp6));
}

static void test_proxy_v1_malformed_variants(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",       /* bare LF */
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX",      /* CR without LF */
        "PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",    /* two spaces */
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",    /* trailing space */
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",         /* a field missing */
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",   /* a field more */
        "PROXY TCP4 2001:db8::1 198.51.100.2 56324 443\r\n",   /* v6 in TCP4 */
        "PROXY TCP6 192.0.2.1 2001:db8::2 56324 443\r\n",      /* v4 in TCP6 */
        "PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",    /* leading zero */
        "PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",     /* port range */
        "PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",        /* sign */
        "PROXY TCP4 192.0.2.256 198.51.100.2 1 443\r\n",       /* octet range */
        "PROXY UDP4 192.0.2.1 198.51.100.2 56324 443\r\n",     /* protocol */
        "PROXY tcp4 192.0.2.1 198.51.100.2 56324 443\r\n",     /* case */
        "PROXY\r\n",                                           /* nothing */
        "PROXY \r\n",                                          /* empty */
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\x01\r\n", /* control byte */
        "PROXX TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",     /* signature */
        "GET / HTTP/1.1\r\n",                                  /* plain HTTP */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct proxy_header ph;
        const char *why = NULL;
        assert_int_equal(proxy_parse(bad[i], strlen(bad[i]), &ph, &why), PROXY_INVALID);
        assert_non_null(why);
    }
}

static void test_proxy_v1_longer_than_107_bytes_is_refused(void **state)
{
    (void)state;
    char line[200];
    struct proxy_header ph;
    const char *why;
    /* 107 bytes without CRLF: refused without waiting for more */
    memset(line, 'A', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    assert_int_equal(proxy_parse(line, PROXY_V1_MAX, &ph, &why), PROXY_INVALID);
    assert_int_equal(proxy_parse(line, PROXY_V1_MAX - 1, &ph, &why), PROXY_INCOMPLETE);
    /* exactly 107 with its CRLF is accepted, 108 is not */
    line[105] = '\r';
    line[106] = '\n';
    assert_int_equal(proxy_parse(line, 107, &ph, &why), 107);
    line[105] = 'A';
    line[106] = '\r';
    line[107] = '\n';
    assert_int_equal(proxy_parse(line, 108, &ph, &why), PROXY_INVALID);
}

static void test_proxy_v2_tcp4_tcp6_local_unspec(void **state)
{
    (void)state;
    unsigned char b[128];
    struct proxy_header ph;
    const char *why;
    char text[INET6_ADDRSTRLEN];
    size_t n = v2_header(b, 0x21, 0x11, 12);
    b[16] = 203, b[17] = 0, b[18] = 113, b[19] = 9;
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), (int)n);
    assert_int_equal(ph.version, 2);
    assert_true(ph.has_addr);
    limit_addr_text(&ph.src, text, sizeof(text));
    assert_string_equal(text, "203.0.113.9");
    /* TLVs after the addresses are skipped */
    n = v2_header(b, 0x21, 0x21, 36 + 7);
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), (int)n);
    assert_int_equal(ph.src.ss_family, AF_INET6);
    n = v2_header(b, 0x20, 0x11, 12); /* LOCAL: the balancer's own check */
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), (int)n);
    assert_false(ph.has_addr);
    n = v2_header(b, 0x21, 0x00, 0); /* UNSPEC */
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), (int)n);
    assert_false(ph.has_addr);
}

static void test_proxy_v2_every_truncation_is_incomplete(void **state)
{
    (void)state;
    unsigned char b[128];
    size_t n = v2_header(b, 0x21, 0x11, 12);
    assert_every_prefix_incomplete((char *)b, n);
    n = v2_header(b, 0x21, 0x21, 36);
    assert_every_prefix_incomplete((char *)b, n);
}

static void test_proxy_v2_malformed_variants(void **state)
{
    (void)state;
    unsigned char b[PROXY_V2_MAX + 64];
    struct proxy_header ph;
    const char *why;
    size_t n;

    n = v2_header(b, 0x11, 0x11, 12); /* version 1 */
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x22, 0x11, 12); /* command 2 */
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x21, 0x12, 12); /* UDP */
    assert_int_equal(proxy_parse((char *)b, 14, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x21, 0x31, 216); /* UNIX */
    assert_int_equal(proxy_parse((char *)b, n, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x21, 0x11, 11); /* address block too short */
    assert_int_equal(proxy_parse((char *)b, 16, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x21, 0x21, 35);
    assert_int_equal(proxy_parse((char *)b, 16, &ph, &why), PROXY_INVALID);
    n = v2_header(b, 0x21, 0x11, PROXY_V2_MAX); /* longer than we accept */
    assert_int_equal(proxy_parse((char *)b, 16, &ph, &why), PROXY_INVALID);
    (void)n;
    v2_header(b, 0x21, 0x11, 12);
    b[5] = 'X'; /* signature */
    assert_int_equal(proxy_parse((char *)b, 6, &ph, &why), PROXY_INVALID);
}

/* ---- conn_limit table ---- */

static void test_conn_limit_counts_and_returns_to_zero(void **state)
{
    (void)state;
    struct limit_addr a = addr("192.0.2.50"), b = addr("192.0.2.51");
    struct limit_stats st;
    assert_int_equal(limit_conn_acquire(&a, 0, LIMIT_REQUESTS, 2, 0), LIMIT_OK);
    assert_int_equal(limit_conn_acquire(&a, 0, LIMIT_REQUESTS, 2, 0), LIMIT_OK);
    assert_int_equal(limit_conn_acquire(&a, 0, LIMIT_REQUESTS, 2, 0), LIMIT_OVER);
    /* another scope (a route) and another client are counted apart */
    assert_int_equal(limit_conn_acquire(&a, 7, LIMIT_REQUESTS, 1, 0), LIMIT_OK);
    assert_int_equal(limit_conn_acquire(&b, 0, LIMIT_REQUESTS, 2, 0), LIMIT_OK);
    limit_stats_get(&st);
    assert_int_equal(st.keys, 3);
    assert_int_equal(st.requests, 4);
    limit_conn_release(&a, 0, LIMIT_REQUESTS);
    limit_conn_release(&a, 0, LIMIT_REQUESTS);
    limit_conn_release(&a, 7, LIMIT_REQUESTS);
    limit_conn_release(&b, 0, LIMIT_REQUESTS);
    limit_stats_get(&st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.requests, 0);
}

static void test_conn_limit_full_table_refuses_new_keys(void **state)
{
    (void)state;
    struct limit_addr keys[5];
    char text[32];
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof(text), "198.51.100.%d", i + 1);
        keys[i] = addr(text);
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(limit_conn_acquire(&keys[i], 0, LIMIT_CONNECTIONS, 10, 4), LIMIT_OK);
    assert_int_equal(limit_conn_acquire(&keys[4], 0, LIMIT_CONNECTIONS, 10, 4), LIMIT_TABLE_FULL);
    /* a key already in the table still counts */
    assert_int_equal(limit_conn_acquire(&keys[0], 0, LIMIT_CONNECTIONS, 10, 4), LIMIT_OK);
    limit_conn_release(&keys[0], 0, LIMIT_CONNECTIONS);
    limit_conn_release(&keys[3], 0, LIMIT_CONNECTIONS); /* its entry goes at zero */
    assert_int_equal(limit_conn_acquire(&keys[4], 0, LIMIT_CONNECTIONS, 10, 4), LIMIT_OK);
    for (int i = 0; i < 5; i++)
        if (i != 3)
            limit_conn_release(&keys[i], 0, LIMIT_CONNECTIONS);
    struct limit_stats st;
    limit_stats_get(&st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.connections, 0);
}

static void test_conn_limit_many_keys_grow_the_stripes(void **state)
{
    (void)state;
    struct limit_addr a;
    for (uint64_t i = 0; i < 50000; i++) {
        a = (struct limit_addr){0, 0xffff00000000ull | i};
        assert_int_equal(limit_conn_acquire(&a, 0, LIMIT_REQUESTS, 1, 0), LIMIT_OK);
    }
    for (uint64_t i = 0; i < 50000; i++) {
        a = (struct limit_addr){0, 0xffff00000000ull | i};
        assert_int_equal(limit_conn_acquire(&a, 0, LIMIT_REQUESTS, 1, 0), LIMIT_OVER);
        limit_conn_release(&a, 0, LIMIT_REQUESTS);
    }
    struct limit_stats st;
    limit_stats_get(&st);
    assert_int_equal(st.keys, 0);
}

/* ---- config ---- */

static struct config *load(const char *yaml, struct config_errors *errs)
{
    config_set_dns(false);
    memset(errs, 0, sizeof(*errs));
    return config_load_string("t.yaml", yaml, strlen(yaml), errs);
}

static void test_config_access_keys_load(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg = load("listen:\n"
                              "  - 127.0.0.1:8080\n"
                              "  - {address: \"127.0.0.1:8081\", proxy_protocol: true}\n"
                              "trusted_proxies: [\"127.0.0.2/32\", \"10.0.0.0/8\"]\n"
                              "deny: 192.0.2.0/24\n"
                              "conn_limit: {connections: 10, requests: 5}\n"
                              "upstreams: {app: {servers: [\"127.0.0.1:9000\"]}}\n"
                              "routes:\n"
                              "  - upstream: app\n"
                              "    allow: [\"::1\", \"127.0.0.0/8\"]\n"
                              "    conn_limit: {requests: 2}\n",
                              &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->num_listen, 2);
    assert_false(cfg->listen_proxy_protocol[0]);
    assert_true(cfg->listen_proxy_protocol[1]);
    assert_int_equal(cfg->trusted_proxies.count, 2);
    assert_int_equal(cfg->deny.count, 1);
    assert_int_equal(cfg->conn_limit.connections, 10);
    assert_int_equal(cfg->conn_limit.requests, 5);
    assert_int_equal(cfg->conn_limit.max_keys, LIMIT_DEFAULT_MAX_KEYS);
    assert_int_equal(cfg->routes[0].allow.count, 2);
    assert_int_equal(cfg->routes[0].conn_limit_requests, 2);
    assert_int_not_equal(cfg->routes[0].limit_scope, 0);
    config_unref(cfg);
}

static void test_config_access_errors_name_their_position(void **state)
{
    (void)state;
    struct config_errors errs;
    struct config *cfg = load("listen:\n"
                              "  - {address: \"127.0.0.1:8081\", proxy_protocol: true}\n"
                              "deny: [\"10.0.0.0/8\", \"10.0.0.1/8\", \"nonsense\"]\n"
                              "upstreams: {app: {servers: [\"127.0.0.1:9000\"]}}\n"
                              "routes:\n"
                              "  - upstream: app\n"
                              "    conn_limit: {connections: 3}\n",
                              &errs);
    assert_null(cfg);
    assert_int_equal(errs.count, 4);
    assert_non_null(strstr(errs.items[0].text, "t.yaml:2:"));
    assert_non_null(strstr(errs.items[0].text, "needs trusted_proxies"));
    assert_non_null(strstr(errs.items[1].text, "t.yaml:3:22: deny: bad entry \"10.0.0.1/8\""));
    assert_non_null(strstr(errs.items[2].text, "t.yaml:3:36: deny: bad entry \"nonsense\""));
    assert_non_null(strstr(errs.items[3].text, "t.yaml:7:"));
    config_errors_free(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_matches_v4_v6_and_bare_addresses),
        cmocka_unit_test(test_ipv4_mapped_peer_matches_ipv4_entry),
        cmocka_unit_test(test_nested_blocks_match_the_wider_one),
        cmocka_unit_test(test_cidr_rejects_bad_entries),
        cmocka_unit_test(test_thousands_of_entries_stay_exact),
        cmocka_unit_test(test_xff_from_untrusted_peer_is_ignored),
        cmocka_unit_test(test_xff_from_trusted_peer_names_rightmost_untrusted),
        cmocka_unit_test(test_xff_all_trusted_names_the_leftmost),
        cmocka_unit_test(test_malformed_xff_from_trusted_peer_is_the_peer),
        cmocka_unit_test(test_proxy_v1_tcp4_and_tcp6),
        cmocka_unit_test(test_proxy_v1_every_truncation_is_incomplete),
        cmocka_unit_test(test_proxy_v1_malformed_variants),
        cmocka_unit_test(test_proxy_v1_longer_than_107_bytes_is_refused),
        cmocka_unit_test(test_proxy_v2_tcp4_tcp6_local_unspec),
        cmocka_unit_test(test_proxy_v2_every_truncation_is_incomplete),
        cmocka_unit_test(test_proxy_v2_malformed_variants),
        cmocka_unit_test(test_conn_limit_counts_and_returns_to_zero),
        cmocka_unit_test(test_conn_limit_full_table_refuses_new_keys),
        cmocka_unit_test(test_conn_limit_many_keys_grow_the_stripes),
        cmocka_unit_test(test_config_access_keys_load),
        cmocka_unit_test(test_config_access_errors_name_their_position),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
