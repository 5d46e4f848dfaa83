/* What a client sees of a generated error: the Proxy-Status field, the body
 * in the format its Accept asks for, and the request id it can quote. */
#include <string.h>
#include <strings.h>

#include "core/core.h"
#include "http/http.h"
#include "observe/observe_internal.h"

bool observe_request_id_valid(const char *p, size_t n)
{
    if (!p || n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

bool observe_expose_details(void)
{
    return atomic_load_explicit(&observe_details_exposed, memory_order_relaxed);
}

/* RFC 8941 3.3.3: an sf-string holds printable ASCII only, with '\' and '"'
 * escaped. Anything else (control bytes, UTF-8) is dropped: it could not be
 * sent in a field value, and a CR or LF would split the header. */
static void sf_string(struct sbuf *b, const char *s)
{
    sbuf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c > 0x7e)
            continue;
        if (c == '\\' || c == '"')
            sbuf_put(b, "\\", 1);
        sbuf_put(b, s, 1);
    }
    sbuf_put(b, "\"", 1);
}

size_t observe_proxy_status(char *out, size_t cap, enum cause cause, const char *server,
                            const char *details)
{
    struct sbuf b = {out, 0, cap, false};
    if (cap == 0)
        return 0;
    out[0] = '\0';
    /* RFC 9209 2: the list member is the proxy's name (an sf-token), the
     * error parameter a token from the registry. */
    sbuf_printf(&b, "bulwark; error=%s", cause_get(cause)->proxy_status);
    if (server) {
        sbuf_puts(&b, "; next-hop=");
        sf_string(&b, server);
    }
    if (details) {
        sbuf_puts(&b, "; details=");
        sf_string(&b, details);
    }
    if (b.overflow && details)
        return observe_proxy_status(out, cap, cause, server, NULL); /* never a cut string */
    if (b.overflow) {
        out[0] = '\0';
        return 0;
    }
    return b.len;
}

enum page_kind { PAGE_TEXT = 0, PAGE_JSON, PAGE_HTML };

static bool ieq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* The q-value of one Accept member's parameters ("1" when absent);
 * RFC 9110 12.4.2: "q=" 0 to 1 with up to 3 decimals. */
static int parse_q(const char *p, const char *end)
{
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        while (p < stop && (*p == ' ' || *p == '\t'))
            p++;
        if (stop - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            int q = 0, scale = 1000;
            p += 2;
            if (p < stop && *p == '1')
                return 1000;
            if (p < stop && *p == '0') {
                p++;
                if (p < stop && *p == '.') {
                    p++;
                    for (; p < stop && *p >= '0' && *p <= '9' && scale > 1; p++) {
                        scale /= 10;
                        q += (*p - '0') * scale;
                    }
                }
                return q;
            }
            return 0;
        }
        p = semi ? semi + 1 : end;
    }
    return 1000;
}

/* RFC 9110 12.5.1 content negotiation among the three formats we can
 * write. Each format takes the q of the most specific range that matches
 * it; the highest q wins; ties go to plain text, then JSON, then HTML, so
 * a wildcard-only Accept and a missing one get plain text. */
static enum page_kind negotiate(const char *accept, size_t len)
{
    static const char *const types[] = {"text/plain", "application/json", "text/html"};
    int q[3] = {-1, -1, -1}; /* -1: nothing matched yet */
    int spec[3] = {0, 0, 0}; /* specificity of the match: 3 exact, 2 type/x, 1 star */

    if (!accept || len == 0)
        return PAGE_TEXT;
    const char *p = accept, *end = accept + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(stop - p));
        const char *mt_end = semi ? semi : stop;
        while (p < mt_end && (*p == ' ' || *p == '\t'))
            p++;
        while (mt_end > p && (mt_end[-1] == ' ' || mt_end[-1] == '\t'))
            mt_end--;
        int qv = semi ? parse_q(semi + 1, stop) : 1000;
        size_t n = (size_t)(mt_end - p);
        for (int i = 0; i < 3; i++) {
            int s = 0;
            const char *slash = strchr(types[i], '/');
            size_t major = (size_t)(slash - types[i]);
            if (ieq(p, n, types[i]))
                s = 3;
            else if (n == major + 2 && strncasecmp(p, types[i], major + 1) == 0 &&
                     p[major + 1] == '*')
                s = 2;
            else if (ieq(p, n, "*/*"))
                s = 1;
            if (s > spec[i]) {
                spec[i] = s;
                q[i] = qv;
            }
        }
        p = comma ? comma + 1 : end;
    }
    int best = PAGE_TEXT;
    for (int i = 1; i < 3; i++)
        if (q[i] > q[best])
            best = i;
    return (enum page_kind)best;
}

static void html_page(struct sbuf *b, int status, const char *reason, const struct cause_info *ci,
                      const char *rid, const char *details)
{
    sbuf_printf(b,
                "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                "<title>%d %s</title>\n"
                "<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;"
                "padding:0 1em;color:#222;line-height:1.5}h1{font-size:1.6em}"
                "code{background:#f2f2f2;padding:.1em .3em;border-radius:3px}"
                ".small{color:#666;font-size:.9em}</style>\n</head>\n<body>\n"
                "<h1>%d %s</h1>\n<p>",
                status, reason, status, reason);
    sbuf_html(b, ci->sentence);
    sbuf_printf(b, "</p>\n<p class=\"small\">Error: <code>%s</code><br>\n", ci->proxy_status);
    sbuf_puts(b, "Request id: <code>");
    sbuf_html(b, rid ? rid : "-");
    sbuf_puts(b, "</code></p>\n");
    if (details) {
        sbuf_puts(b, "<p class=\"small\">Details: <code>");
        sbuf_html(b, details);
        sbuf_puts(b, "</code></p>\n");
    }
    sbuf_puts(b, "<p class=\"small\">Quote the request id when you report this problem.</p>\n"
                 "</body>\n</html>\n");
}

/* A custom page may name {{status}}, {{error}} and {{request_id}}: they are
 * replaced, so a static page can still show the id to quote. */
static void custom_page(struct sbuf *b, const char *page, size_t len, int status,
                        const struct cause_info *ci, const char *rid)
{
    const char *p = page, *end = page + len;
    while (p < end) {
        const char *open = memmem(p, (size_t)(end - p), "{{", 2);
        if (!open) {
            sbuf_put(b, p, (size_t)(end - p));
            break;
        }
        sbuf_put(b, p, (size_t)(open - p));
        size_t left = (size_t)(end - open);
        if (left >= 10 && memcmp(open, "{{status}}", 10) == 0) {
            sbuf_printf(b, "%d", status);
            p = open + 10;
        } else if (left >= 9 && memcmp(open, "{{error}}", 9) == 0) {
            sbuf_puts(b, ci->proxy_status);
            p = open + 9;
        } else if (left >= 14 && memcmp(open, "{{request_id}}", 14) == 0) {
            sbuf_html(b, rid ? rid : "-");
            p = open + 14;
        } else {
            sbuf_put(b, open, 2);
            p = open + 2;
        }
    }
}

size_t observe_error_page(char *out, size_t cap, int status, enum cause cause, const char *rid,
                          const char *accept, size_t accept_len, const char *details,
                          const char **content_type)
{
    const struct cause_info *ci = cause_get(cause);
    const char *reason = http_status_reason(status);
    /* sbuf keeps the last byte for a NUL: at most cap bytes are written. */
    struct sbuf b = {out, 0, cap, false};
    enum page_kind kind = negotiate(accept, accept_len);

    if (!reason || !*reason)
        reason = "Error";
    switch (kind) {
    case PAGE_HTML: {
        *content_type = "text/html; charset=utf-8";
        /* The settings lock keeps the config's page alive while it is
         * copied; only generated errors take it. */
        const struct config_error_page *page = NULL;
        pthread_mutex_lock(&observe_settings.lock);
        const struct config *cfg = observe_settings.cfg;
        for (size_t i = 0; cfg && i < cfg->num_error_pages; i++)
            if (cfg->error_pages[i].status == status)
                page = &cfg->error_pages[i];
        if (page)
            custom_page(&b, page->body, page->len, status, ci, rid);
        pthread_mutex_unlock(&observe_settings.lock);
        if (!page)
            html_page(&b, status, reason, ci, rid, details);
        break;
    }
    case PAGE_JSON:
        *content_type = "application/json";
        sbuf_printf(&b, "{\"status\":%d,\"error\":\"%s\",\"request_id\":", status,
                    ci->proxy_status);
        sbuf_json_str(&b, rid ? rid : "", rid ? strlen(rid) : 0);
        if (details) {
            sbuf_puts(&b, ",\"details\":");
            sbuf_json_str(&b, details, strlen(details));
        }
        sbuf_puts(&b, "}\n");
        break;
    default:
        *content_type = "text/plain; charset=utf-8";
        sbuf_printf(&b, "%d %s\n%s\n%s\n", status, reason, ci->proxy_status, ci->sentence);
        if (details)
            sbuf_printf(&b, "details: %s\n", details);
        sbuf_printf(&b, "request id: %s\n", rid ? rid : "-");
        break;
    }
    if (b.overflow) {
        /* A custom page that does not fit with its substitutions: the
         * plain page instead, never a cut one. */
        log_warn("error page for status %d does not fit %zu bytes; sent the plain text page",
                 status, cap);
        b = (struct sbuf){out, 0, cap, false};
        *content_type = "text/plain; charset=utf-8";
        sbuf_printf(&b, "%d %s\n%s\nrequest id: %s\n", status, reason, ci->proxy_status,
                    rid ? rid : "-");
    }
    return b.len;
}
