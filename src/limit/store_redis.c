/* The Redis store (store.h): our own non-blocking socket on the worker's
 * edge-triggered loop, hiredis for the wire format (command formatting and
 * the reply reader). */
#include "limit/store.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Checks waiting for a reply per store; more are decided locally. */
#define STORE_MAX_PENDING 4096
/* Bytes of commands queued but not written; more are decided locally. */
#define STORE_MAX_OUT (1024 * 1024)
/* After an outage, a new connection is tried this often. */
#define STORE_RETRY_MS 1000
/* Keys live under this prefix. */
#define STORE_KEY_PREFIX "bulwark:rl:"
/* Our replies are a few dozen bytes (an array of two integers, a 40-byte
 * SHA-1); a reply still incomplete after this many bytes is not one of
 * ours (a huge bulk string or array from a broken or hostile server):
 * the connection is dropped before it is buffered whole. Bytes are fed to
 * the reader in pieces of STORE_FEED_PIECE so the count stays exact. */
#define STORE_MAX_REPLY_BYTES 4096
#define STORE_FEED_PIECE 1024
/* Our replies hold arrays of two elements. hiredis 0.14 (Debian's) has no
 * bound of its own: "*100000000\r\n" is an 800 MB calloc, and freeing the
 * half-read array walks it all (seconds of a blocked worker, all of it
 * resident). Larger counts are refused before the reader sees them. */
#define STORE_MAX_ARRAY 16
/* Longest key stored as it is. */
#define STORE_KEY_MAX 200

/* GCRA on one key with Redis's clock, in microseconds. KEYS[1] the key,
 * ARGV[1] the emission interval, ARGV[2] the burst tolerance. Returns
 * {1, ahead} when allowed (ahead: how far the key runs ahead of the rate
 * before this request) or {0, wait} (wait: until a request would pass). */
static const char gcra_script[] = "local t = redis.call('TIME') "
                                  "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
                                  "local ti = tonumber(ARGV[1]) "
                                  "local tau = tonumber(ARGV[2]) "
                                  "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 "
                                  "if tat < now then tat = now end "
                                  "local wait = tat - now - tau "
                                  "if wait > 0 then return {0, string.format('%d', wait)} end "
                                  "local new = tat + ti "
                                  "redis.call('SET', KEYS[1], string.format('%d', new), 'PX', "
                                  "string.format('%d', math.floor((new - now) / 1000) + 1)) "
                                  "return {1, string.format('%d', tat - now)}";

enum store_conn { CONN_NONE = 0, CONN_CONNECTING, CONN_UP };

struct slot {
    struct store_waiter *w; /* NULL: cancelled, or the script load */
    uint64_t sent_ms;
    bool load; /* the SCRIPT LOAD sent first on each connection */
};

struct store {
    struct loop *loop;
    struct config_addr addr;
    uint32_t timeout_ms;
    struct io io;
    enum store_conn conn;
    bool up;         /* the last exchange worked (what the log said last) */
    bool ever_tried; /* a connection was tried before (for the log) */
    uint64_t retry_at_ms;
    char sha[41]; /* of gcra_script */
    redisReader *reader;
    size_t unreplied_bytes; /* fed since the last whole reply (a bound) */
    struct {
        enum { SCAN_LINE_START, SCAN_COUNT, SCAN_REST } state;
        uint32_t count;
    } scan;    /* where the aggregate-count check (counts_ok) is in the stream */
    char *out; /* formatted commands not yet written */
    size_t out_len, out_cap;
    struct slot *slots; /* ring of pending replies, in request order */
    uint32_t head, count;
    uint32_t waiting; /* slots whose waiter still expects its callback */
    uint32_t gen;
    struct deferred flush;
    struct timer timer; /* the oldest pending reply's deadline */
};

static atomic_uint_fast64_t stat_checks, stat_fallbacks, stat_outages;
static atomic_int_fast64_t stat_up;

void store_stats(struct store_stats *out)
{
    out->checks = atomic_load_explicit(&stat_checks, memory_order_relaxed);
    out->fallbacks = atomic_load_explicit(&stat_fallbacks, memory_order_relaxed);
    out->outages = atomic_load_explicit(&stat_outages, memory_order_relaxed);
    out->stores_up = atomic_load_explicit(&stat_up, memory_order_relaxed);
}

static void set_up(struct store *st, bool up, const char *why)
{
    if (up == st->up) {
        if (!up && !st->ever_tried)
            log_warn("rate_limit store redis://%s unreachable (%s): local limits until it is back",
                     st->addr.text, why);
        st->ever_tried = true;
        return;
    }
    st->ever_tried = true;
    st->up = up;
    atomic_fetch_add_explicit(&stat_up, up ? 1 : -1, memory_order_relaxed);
    if (up) {
        log_info("rate_limit store redis://%s is back: shared limits again", st->addr.text);
    } else {
        atomic_fetch_add_explicit(&stat_outages, 1, memory_order_relaxed);
        log_warn("rate_limit store redis://%s unreachable (%s): local limits until it is back",
                 st->addr.text, why);
    }
}

/* SHA1 of the script, for EVALSHA (computed once: the script is constant). */
static void sha1_hex(const char *msg, size_t len, char out[41]);

static void answer(struct store *st, struct slot *sl, enum store_verdict v, uint64_t wait_us)
{
    struct store_waiter *w = sl->w;
    sl->w = NULL;
    if (!w)
        return;
    st->waiting--;
    if (v == STORE_UNAVAILABLE)
        atomic_fetch_add_explicit(&stat_fallbacks, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&stat_checks, 1, memory_order_relaxed);
    w->cb(w, v, wait_us);
}

static void arm_timer(struct store *st)
{
    if (st->count == 0) {
        loop_timer_cancel(st->loop, &st->timer);
        return;
    }
    uint64_t deadline = st->slots[st->head].sent_ms + st->timeout_ms;
    uint64_t now = loop_now_ms(st->loop);
    loop_timer_set(st->loop, &st->timer, deadline > now ? deadline - now : 0);
}

/* Drop the connection: every pending check is decided locally. */
static void drop(struct store *st, const char *why)
{
    if (st->io.fd >= 0) {
        loop_del(st->loop, &st->io);
        close(st->io.fd);
        st->io.fd = -1;
    }
    st->conn = CONN_NONE;
    st->out_len = 0;
    if (st->reader) {
        redisReaderFree(st->reader);
        st->reader = NULL;
    }
    st->retry_at_ms = loop_now_ms(st->loop) + STORE_RETRY_MS;
    set_up(st, false, why);
    /* Callbacks may ask again: take the ring first. */
    while (st->count > 0) {
        struct slot *sl = &st->slots[st->head];
        st->head = (st->head + 1) % STORE_MAX_PENDING;
        st->count--;
        answer(st, sl, STORE_UNAVAILABLE, 0);
    }
    loop_timer_cancel(st->loop, &st->timer);
}

static int out_append(struct store *st, const char *p, size_t n)
{
    if (st->out_len + n > STORE_MAX_OUT)
        return -1;
    if (st->out_len + n > st->out_cap) {
        size_t cap = st->out_cap ? st->out_cap : 4096;
        while (cap < st->out_len + n)
            cap *= 2;
        char *o = realloc(st->out, cap);
        if (!o)
            return -1;
        st->out = o;
        st->out_cap = cap;
    }
    memcpy(st->out + st->out_len, p, n);
    st->out_len += n;
    return 0;
}

static void flush_out(struct store *st)
{
    if (st->conn != CONN_UP)
        return;
    size_t off = 0;
    while (off < st->out_len) {
        ssize_t n = send(st->io.fd, st->out + off, st->out_len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break; /* EPOLLOUT (edge) brings us back */
        char why[64];
        snprintf(why, sizeof(why), "write: %s", strerror(n < 0 ? errno : EPIPE));
        drop(st, why);
        return;
    }
    memmove(st->out, st->out + off, st->out_len - off);
    st->out_len -= off;
}

static void flush_cb(struct deferred *d)
{
    flush_out(container_of(d, struct store, flush));
}

static int reply_int(const redisReply *r, long long *v)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *v = r->integer;
        return 0;
    }
    if (r->type == REDIS_REPLY_STRING) {
        char *end;
        errno = 0;
        long long x = strtoll(r->str, &end, 10);
        if (errno || end == r->str || *end)
            return -1;
        *v = x;
        return 0;
    }
    return -1;
}

/* One reply, for the oldest pending slot. 0, or -1: the store refuses or
 * speaks something we do not understand (why says which; the caller drops
 * the connection: every pending check is decided locally). */
static int dispatch(struct store *st, redisReply *r, char *why, size_t why_len)
{
    snprintf(why, why_len, "unexpected reply");
    if (st->count == 0)
        return -1; /* a reply nobody asked for */
    struct slot *sl = &st->slots[st->head];
    st->head = (st->head + 1) % STORE_MAX_PENDING;
    st->count--;
    if (r->type == REDIS_REPLY_ERROR) {
        /* Redis refuses (-OOM, -NOSCRIPT after SCRIPT FLUSH, -READONLY, ...):
         * an outage like any other, logged once by drop() and not once per
         * request; the new connection loads the script again. */
        snprintf(why, why_len, "error reply: %.*s", (int)(r->len > 80 ? 80 : r->len), r->str);
        answer(st, sl, STORE_UNAVAILABLE, 0);
        return -1;
    }
    if (sl->load) {
        /* SCRIPT LOAD answers the script's SHA-1: it names what we send. */
        if (r->type != REDIS_REPLY_STRING || r->len != 40 || memcmp(r->str, st->sha, 40) != 0) {
            snprintf(why, why_len, "the limit script did not load as expected");
            return -1;
        }
        return 0;
    }
    long long ok, wait;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || reply_int(r->element[0], &ok) ||
        reply_int(r->element[1], &wait) || wait < 0 || (ok != 0 && ok != 1)) {
        answer(st, sl, STORE_UNAVAILABLE, 0);
        return -1;
    }
    set_up(st, true, NULL);
    answer(st, sl, ok ? STORE_ALLOW : STORE_REFUSE, (uint64_t)wait);
    return 0;
}

/* false when p[0..n) declares an array (or a RESP3 map, set, push,
 * attribute) of more than STORE_MAX_ARRAY elements. A type byte opens a
 * line; a bulk string's payload may look like one too, which at worst
 * drops a connection whose reply was not ours anyway. */
static bool counts_ok(struct store *st, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n') {
            st->scan.state = SCAN_LINE_START;
            continue;
        }
        if (st->scan.state == SCAN_LINE_START) {
            st->scan.state = strchr("*%~|>", c) ? SCAN_COUNT : SCAN_REST;
            st->scan.count = 0;
        } else if (st->scan.state == SCAN_COUNT) {
            if (c < '0' || c > '9') {
                st->scan.state = SCAN_REST;
                continue;
            }
            st->scan.count = st->scan.count * 10 + (uint32_t)(c - '0');
            if (st->scan.count > STORE_MAX_ARRAY)
                return false;
        }
    }
    return true;
}

static void on_readable(struct store *st)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(st->io.fd, buf, sizeof(buf), 0);
        for (size_t off = 0; n > 0 && off < (size_t)n; off += STORE_FEED_PIECE) {
            size_t piece = (size_t)n - off < STORE_FEED_PIECE ? (size_t)n - off : STORE_FEED_PIECE;
            if (!counts_ok(st, buf + off, piece)) {
                drop(st, "reply too large");
                return;
            }
            if (redisReaderFeed(st->reader, buf + off, piece) != REDIS_OK) {
                drop(st, "bad reply");
                return;
            }
            bool replied = false;
            for (;;) {
                void *reply = NULL;
                if (redisReaderGetReply(st->reader, &reply) != REDIS_OK) {
                    drop(st, "malformed reply");
                    return;
                }
                if (!reply)
                    break;
                replied = true;
                char why[128];
                int rc = dispatch(st, reply, why, sizeof(why));
                freeReplyObject(reply);
                if (rc < 0) {
                    drop(st, why);
                    return;
                }
                if (st->conn != CONN_UP)
                    return; /* a callback's check dropped it */
            }
            /* A reply that ended in this piece leaves at most the piece's
             * bytes of the next one. */
            st->unreplied_bytes = replied ? piece : st->unreplied_bytes + piece;
            if (st->unreplied_bytes > STORE_MAX_REPLY_BYTES) {
                drop(st, "reply too large");
                return;
            }
        }
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        drop(st, n == 0 ? "connection closed" : strerror(errno));
        return;
    }
    arm_timer(st);
}

static void on_event(struct io *io, uint32_t events)
{
    struct store *st = container_of(io, struct store, io);
    if (st->conn == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            drop(st, strerror(err));
            return;
        }
        if (!(events & EPOLLOUT) && !(events & (EPOLLERR | EPOLLHUP)))
            return;
        st->conn = CONN_UP;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        on_readable(st);
    if (st->conn == CONN_UP && (events & EPOLLOUT))
        flush_out(st);
}

static void on_timer(struct timer *t)
{
    struct store *st = container_of(t, struct store, timer);
    if (st->count == 0)
        return;
    char why[64];
    snprintf(why, sizeof(why), "no reply within %u ms", st->timeout_ms);
    drop(st, why);
}

/* Start a connection and queue the script load first. 0 or -1. */
static int connect_store(struct store *st)
{
    int fd = socket(st->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&st->addr.ss, st->addr.len) < 0 &&
        errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        st->retry_at_ms = loop_now_ms(st->loop) + STORE_RETRY_MS;
        set_up(st, false, strerror(e));
        return -1;
    }
    st->reader = redisReaderCreate();
    st->unreplied_bytes = 0;
    st->scan.state = SCAN_LINE_START;
    if (!st->reader) {
        close(fd);
        return -1;
    }
    st->io.fd = fd;
    st->io.on_event = on_event;
    if (loop_add(st->loop, &st->io) < 0) {
        close(fd);
        st->io.fd = -1;
        redisReaderFree(st->reader);
        st->reader = NULL;
        return -1;
    }
    st->conn = CONN_CONNECTING;
    char *cmd;
    int n = redisFormatCommand(&cmd, "SCRIPT LOAD %s", gcra_script);
    if (n < 0 || out_append(st, cmd, (size_t)n) < 0) {
        if (n >= 0)
            redisFreeCommand(cmd);
        drop(st, "out of memory");
        return -1;
    }
    redisFreeCommand(cmd);
    /* The load's reply takes the first slot; nobody waits for it. */
    uint32_t i = (st->head + st->count) % STORE_MAX_PENDING;
    st->slots[i] = (struct slot){.w = NULL, .sent_ms = loop_now_ms(st->loop), .load = true};
    st->count++;
    return 0;
}

struct store *store_new(struct loop *loop, const struct config_addr *addr, uint32_t timeout_ms)
{
    struct store *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->slots = calloc(STORE_MAX_PENDING, sizeof(*st->slots));
    if (!st->slots) {
        free(st);
        return NULL;
    }
    st->loop = loop;
    st->addr = *addr;
    st->timeout_ms = timeout_ms ? timeout_ms : 1;
    st->io.fd = -1;
    st->up = false;
    st->flush.cb = flush_cb;
    timer_init(&st->timer, on_timer);
    sha1_hex(gcra_script, sizeof(gcra_script) - 1, st->sha);
    return st;
}

void store_free(struct store *st)
{
    if (!st)
        return;
    loop_defer_cancel(st->loop, &st->flush);
    if (st->up) /* going away is not an outage: no log, no count */
        atomic_fetch_add_explicit(&stat_up, -1, memory_order_relaxed);
    st->up = false;
    st->ever_tried = true;
    drop(st, "shutting down");
    free(st->out);
    free(st->slots);
    free(st);
}

bool store_up(const struct store *st)
{
    return st->up;
}

bool store_busy(const struct store *st)
{
    return st->waiting > 0;
}

int store_gcra(struct store *st, const char *key, size_t key_len, uint64_t t_us, uint64_t tau_us,
               struct store_waiter *w)
{
    if (st->conn == CONN_NONE) {
        if (loop_now_ms(st->loop) < st->retry_at_ms || connect_store(st) < 0) {
            atomic_fetch_add_explicit(&stat_fallbacks, 1, memory_order_relaxed);
            return -EAGAIN;
        }
    }
    if (st->count >= STORE_MAX_PENDING) {
        atomic_fetch_add_explicit(&stat_fallbacks, 1, memory_order_relaxed);
        return -EAGAIN;
    }
    /* A key longer than STORE_KEY_MAX is stored as its first bytes and a
     * hash of the whole, so long keys stay distinct and bounded. */
    char kbuf[sizeof(STORE_KEY_PREFIX) + STORE_KEY_MAX + 1 + 16];
    size_t plen = sizeof(STORE_KEY_PREFIX) - 1;
    memcpy(kbuf, STORE_KEY_PREFIX, plen);
    if (key_len > STORE_KEY_MAX) {
        uint64_t hsh = 1469598103934665603ULL;
        for (size_t i = 0; i < key_len; i++)
            hsh = (hsh ^ (unsigned char)key[i]) * 1099511628211ULL;
        memcpy(kbuf + plen, key, STORE_KEY_MAX);
        snprintf(kbuf + plen + STORE_KEY_MAX, 18, "#%016llx", (unsigned long long)hsh);
        key_len = STORE_KEY_MAX + 17;
    } else {
        memcpy(kbuf + plen, key, key_len);
    }
    char ti[24], tau[24];
    snprintf(ti, sizeof(ti), "%llu", (unsigned long long)t_us);
    snprintf(tau, sizeof(tau), "%llu", (unsigned long long)tau_us);
    const char *argv[] = {"EVALSHA", st->sha, "1", kbuf, ti, tau};
    size_t argl[] = {7, 40, 1, plen + key_len, strlen(ti), strlen(tau)};
    char *cmd;
    int n = redisFormatCommandArgv(&cmd, 6, argv, argl);
    if (n < 0) {
        atomic_fetch_add_explicit(&stat_fallbacks, 1, memory_order_relaxed);
        return -EAGAIN;
    }
    int rc = out_append(st, cmd, (size_t)n);
    redisFreeCommand(cmd);
    if (rc < 0) {
        atomic_fetch_add_explicit(&stat_fallbacks, 1, memory_order_relaxed);
        return -EAGAIN;
    }
    uint32_t i = (st->head + st->count) % STORE_MAX_PENDING;
    st->slots[i] = (struct slot){.w = w, .sent_ms = loop_now_ms(st->loop)};
    st->count++;
    st->waiting++;
    w->slot = i;
    w->gen = ++st->gen;
    if (st->count == 1 || !timer_armed(&st->timer))
        arm_timer(st);
    loop_defer(st->loop, &st->flush);
    return 0;
}

void store_cancel(struct store *st, struct store_waiter *w)
{
    if (w->slot < STORE_MAX_PENDING && st->slots[w->slot].w == w) {
        st->slots[w->slot].w = NULL;
        st->waiting--;
    }
}

int store_parse_url(const char *url, struct config_addr *addr, char *err, size_t err_len)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        snprintf(err, err_len, "store must be \"redis://host:port\", not \"%s\"", url);
        return -1;
    }
    const char *hp = url + sizeof(scheme) - 1;
    char host[256];
    const char *port = "6379";
    const char *colon;
    if (*hp == '[') {
        const char *close_br = strchr(hp, ']');
        if (!close_br || (size_t)(close_br - hp - 1) >= sizeof(host)) {
            snprintf(err, err_len, "store \"%s\": unterminated [IPv6 address]", url);
            return -1;
        }
        memcpy(host, hp + 1, (size_t)(close_br - hp - 1));
        host[close_br - hp - 1] = '\0';
        colon = close_br[1] == ':' ? close_br + 1 : NULL;
        if (close_br[1] && !colon) {
            snprintf(err, err_len, "store \"%s\": expected :port after ]", url);
            return -1;
        }
    } else {
        colon = strrchr(hp, ':');
        size_t hl = colon ? (size_t)(colon - hp) : strlen(hp);
        if (hl == 0 || hl >= sizeof(host)) {
            snprintf(err, err_len, "store \"%s\": no host", url);
            return -1;
        }
        memcpy(host, hp, hl);
        host[hl] = '\0';
    }
    if (colon) {
        port = colon + 1;
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end || p < 1 || p > 65535) {
            snprintf(err, err_len, "store \"%s\": port must be 1..65535", url);
            return -1;
        }
    }
    if (strpbrk(host, "/?#@")) {
        snprintf(err, err_len, "store \"%s\": only redis://host:port is supported", url);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, err_len, "store \"%s\": cannot resolve %s: %s", url, host,
                 rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memset(addr, 0, sizeof(*addr));
    memcpy(&addr->ss, res->ai_addr, res->ai_addrlen);
    addr->len = res->ai_addrlen;
    snprintf(addr->text, sizeof(addr->text), "%s", hp);
    freeaddrinfo(res);
    return 0;
}

/* ---- SHA-1 (FIPS 180-4), only to name the script for EVALSHA ---- */

static uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1_hex(const char *msg, size_t len, char out[41])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = (const unsigned char *)msg;
    size_t left = len;
    while (left >= 64) {
        sha1_block(h, p);
        p += 64;
        left -= 64;
    }
    unsigned char tail[128] = {0};
    memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t tl = left + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tl == 128)
        sha1_block(h, tail + 64);
    for (int i = 0; i < 5; i++)
        snprintf(out + 8 * i, 9, "%08x", h[i]);
}
