/* Text builders shared by observe's files: a bounded one for lines and
 * pages built on the request path, a growable one for admin answers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "observe/observe_internal.h"

static bool obuf_reserve(struct obuf *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->len + n + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void obuf_put(struct obuf *b, const char *s, size_t n)
{
    if (!obuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void obuf_puts(struct obuf *b, const char *s)
{
    obuf_put(b, s, strlen(s));
}

void obuf_printf(struct obuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !obuf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* One byte of a JSON string body into tmp; returns its length. */
static size_t json_byte(unsigned char c, char tmp[8])
{
    if (c == '"' || c == '\\') {
        tmp[0] = '\\';
        tmp[1] = (char)c;
        return 2;
    }
    if (c < 0x20 || c >= 0x7f)
        return (size_t)snprintf(tmp, 8, "\\u%04x", c);
    tmp[0] = (char)c;
    return 1;
}

void obuf_json_str(struct obuf *b, const char *s, size_t n)
{
    char tmp[8];
    if (!s) {
        obuf_puts(b, "null");
        return;
    }
    obuf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++)
        obuf_put(b, tmp, json_byte((unsigned char)s[i], tmp));
    obuf_put(b, "\"", 1);
}

void obuf_json_secs(struct obuf *b, int64_t ms)
{
    if (ms < 0)
        obuf_puts(b, "null");
    else
        obuf_printf(b, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
}

void sbuf_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->cap == 0)
        return;
    size_t room = b->cap - 1 - b->len;
    if (n > room) {
        n = room;
        b->overflow = true;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_put(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->cap == 0 || b->len + 1 >= b->cap) {
        b->overflow = true;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > b->cap - 1 - b->len)
        b->overflow = true;
    b->len += (size_t)n < b->cap - 1 - b->len ? (size_t)n : b->cap - 1 - b->len;
}

void sbuf_json_str(struct sbuf *b, const char *s, size_t n)
{
    char tmp[8];
    if (!s) {
        sbuf_puts(b, "null");
        return;
    }
    sbuf_put(b, "\"", 1);
    size_t i = 0;
    for (; i < n && b->len + 8 < b->cap; i++)
        sbuf_put(b, tmp, json_byte((unsigned char)s[i], tmp));
    if (i < n)
        b->overflow = true;
    sbuf_put(b, "\"", 1);
}

void sbuf_html(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            sbuf_puts(b, "&lt;");
            break;
        case '>':
            sbuf_puts(b, "&gt;");
            break;
        case '&':
            sbuf_puts(b, "&amp;");
            break;
        case '"':
            sbuf_puts(b, "&quot;");
            break;
        default:
            sbuf_put(b, s, 1);
        }
    }
}

int64_t observe_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void observe_iso_time(int64_t wall_ms, char *out, size_t cap)
{
    /* Cached per thread per second: the access log asks once per request. */
    static __thread time_t cached_sec = -1;
    static __thread char cached[24];
    time_t sec = (time_t)(wall_ms / 1000);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    snprintf(out, cap, "%s.%03dZ", cached, (int)(wall_ms % 1000));
}
