/* One finished request: its access-log line (combined or JSON lines), its
 * metrics, and the error ring when it is a gateway error. */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "observe/observe_internal.h"

/* Combined-format escaping, as nginx's: quote, backslash, controls and
 * non-ASCII as \xHH, so a line is one line and quotes always balance. */
static void clf_bytes(struct sbuf *b, const char *p, size_t len)
{
    if (!p || !len) {
        sbuf_put(b, "-", 1);
        return;
    }
    for (size_t i = 0; i < len && b->len + 5 < b->cap; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f)
            sbuf_printf(b, "\\x%02X", c);
        else
            sbuf_put(b, (const char *)&c, 1);
    }
}

static void clf_secs(struct sbuf *b, const char *name, int64_t ms)
{
    if (ms < 0)
        sbuf_printf(b, " %s=-", name);
    else
        sbuf_printf(b, " %s=%lld.%03lld", name, (long long)(ms / 1000), (long long)(ms % 1000));
}

static void format_combined(struct sbuf *b, const struct request_record *rec)
{
    sbuf_printf(b, "%s - - %s \"", rec->client_ip ? rec->client_ip : "-", log_time_clf());
    clf_bytes(b, rec->method, rec->method_len);
    sbuf_put(b, " ", 1);
    clf_bytes(b, rec->target, rec->target_len);
    sbuf_printf(b, " HTTP/1.%d\" %d %llu \"", rec->minor_version, rec->status,
                (unsigned long long)rec->body_bytes_sent);
    clf_bytes(b, rec->referer, rec->referer_len);
    sbuf_puts(b, "\" \"");
    clf_bytes(b, rec->user_agent, rec->user_agent_len);
    sbuf_printf(b, "\" upstream=%s", rec->upstream_server ? rec->upstream_server : "-");
    if (rec->upstream_status)
        sbuf_printf(b, " upstream_status=%d", rec->upstream_status);
    else
        sbuf_puts(b, " upstream_status=-");
    clf_secs(b, "connect", rec->connect_ms);
    clf_secs(b, "header", rec->header_ms);
    clf_secs(b, "upstream_total", rec->upstream_ms);
    clf_secs(b, "total", rec->total_ms);
    sbuf_printf(b, " attempts=%d error=%s rid=%s", rec->num_attempts,
                rec->cause ? cause_get(rec->cause)->proxy_status : "-", rec->rid ? rec->rid : "-");
}

static void json_key_str(struct sbuf *b, const char *key, const char *s, size_t n)
{
    sbuf_printf(b, ",\"%s\":", key);
    sbuf_json_str(b, s, n);
}

static void json_key_cstr(struct sbuf *b, const char *key, const char *s)
{
    json_key_str(b, key, s, s ? strlen(s) : 0);
}

static void json_key_secs(struct sbuf *b, const char *key, int64_t ms)
{
    if (ms < 0)
        sbuf_printf(b, ",\"%s\":null", key);
    else
        sbuf_printf(b, ",\"%s\":%lld.%03lld", key, (long long)(ms / 1000), (long long)(ms % 1000));
}

/* The JSON object for rec. with_help adds what the ring keeps for the
 * operator: the cause's sentence and fix. */
static void format_json(struct sbuf *b, const struct request_record *rec, int64_t wall_ms,
                        bool with_help)
{
    char when[40];
    observe_iso_time(wall_ms, when, sizeof(when));
    sbuf_printf(b, "{\"time\":\"%s\"", when);
    json_key_cstr(b, "rid", rec->rid);
    json_key_cstr(b, "client", rec->client_ip);
    json_key_str(b, "method", rec->method, rec->method_len);
    json_key_str(b, "target", rec->target, rec->target_len);
    sbuf_printf(b, ",\"protocol\":\"HTTP/1.%d\"", rec->minor_version);
    json_key_str(b, "host", rec->host, rec->host_len);
    sbuf_printf(b, ",\"status\":%d,\"body_bytes\":%llu,\"request_body_bytes\":%llu", rec->status,
                (unsigned long long)rec->body_bytes_sent,
                (unsigned long long)rec->request_body_bytes);
    json_key_str(b, "referer", rec->referer, rec->referer_len);
    json_key_str(b, "user_agent", rec->user_agent, rec->user_agent_len);
    json_key_cstr(b, "route", rec->route);
    json_key_cstr(b, "upstream_group", rec->upstream_group);
    json_key_cstr(b, "upstream", rec->upstream_server);
    if (rec->upstream_status)
        sbuf_printf(b, ",\"upstream_status\":%d", rec->upstream_status);
    else
        sbuf_puts(b, ",\"upstream_status\":null");
    json_key_secs(b, "connect", rec->connect_ms);
    json_key_secs(b, "header", rec->header_ms);
    json_key_secs(b, "upstream_total", rec->upstream_ms);
    json_key_secs(b, "total", rec->total_ms);
    sbuf_printf(b, ",\"attempts\":%d", rec->num_attempts);
    if (rec->cause)
        json_key_cstr(b, "error", cause_get(rec->cause)->proxy_status);
    else
        sbuf_puts(b, ",\"error\":null");
    if (rec->err) {
        sbuf_printf(b, ",\"errno\":%d", rec->err);
        json_key_cstr(b, "errno_text", strerror(rec->err));
    } else {
        sbuf_puts(b, ",\"errno\":null,\"errno_text\":null");
    }
    sbuf_printf(b, ",\"aborted\":%s", rec->aborted ? "true" : "false");
    if (with_help && rec->cause) {
        json_key_cstr(b, "sentence", cause_get(rec->cause)->sentence);
        json_key_cstr(b, "fix", cause_get(rec->cause)->fix);
    }
    if (with_help)
        json_key_cstr(b, "program", rec->program);
    sbuf_puts(b, ",\"attempt_details\":[");
    int n = rec->num_attempts < OBSERVE_MAX_ATTEMPTS ? rec->num_attempts : OBSERVE_MAX_ATTEMPTS;
    for (int i = 0; i < n; i++) {
        const struct attempt_evidence *a = &rec->attempts[i];
        sbuf_puts(b, i ? ",{" : "{");
        sbuf_puts(b, "\"server\":");
        sbuf_json_str(b, a->server, a->server ? strlen(a->server) : 0);
        if (a->cause)
            json_key_cstr(b, "error", cause_get(a->cause)->proxy_status);
        else
            sbuf_puts(b, ",\"error\":null");
        if (a->err) {
            sbuf_printf(b, ",\"errno\":%d", a->err);
            json_key_cstr(b, "errno_text", strerror(a->err));
        } else {
            sbuf_puts(b, ",\"errno\":null,\"errno_text\":null");
        }
        json_key_secs(b, "connect", a->connect_ms);
        sbuf_printf(b, ",\"reused\":%s}", a->reused ? "true" : "false");
    }
    sbuf_puts(b, "]}");
}

/* A line cut by the bound still ends with its newline (and, for JSON, is
 * then not valid JSON: the bound is far above what the proxy passes, which
 * caps every client string), and says it was cut. */
static size_t finish_line(struct sbuf *b)
{
    if (b->cap < 2)
        return 0;
    if (b->overflow && b->cap > 16) {
        static const char mark[] = " [truncated]";
        if (b->len + sizeof(mark) >= b->cap)
            b->len = b->cap - sizeof(mark) - 1;
        memcpy(b->p + b->len, mark, sizeof(mark) - 1);
        b->len += sizeof(mark) - 1;
    }
    if (b->len + 1 >= b->cap)
        b->len = b->cap - 2;
    b->p[b->len++] = '\n';
    b->p[b->len] = '\0';
    return b->len;
}

size_t observe_format_access(char *out, size_t cap, const struct request_record *rec, bool json)
{
    struct sbuf b = {out, 0, cap, false};
    if (cap == 0)
        return 0;
    if (json)
        format_json(&b, rec, observe_wall_ms(), false);
    else
        format_combined(&b, rec);
    return finish_line(&b);
}

char *observe_record_json(const struct request_record *rec, int64_t wall_ms, size_t *len)
{
    char tmp[8192];
    struct sbuf b = {tmp, 0, sizeof(tmp), false};
    format_json(&b, rec, wall_ms, true);
    *len = b.len;
    return strndup(tmp, b.len);
}

void observe_request(const struct request_record *rec)
{
    if (log_access_enabled()) {
        /* 8 KiB: the proxy caps the target at 1 KiB and the other client
         * strings at a few hundred bytes, escaping at most quadruples them. */
        char line[8192];
        bool json =
            atomic_load_explicit(&observe_log_format, memory_order_relaxed) == LOG_FORMAT_JSON;
        size_t n = observe_format_access(line, sizeof(line), rec, json);
        log_access_write(line, n);
    }
    observe_count_request(rec->route, rec->status, rec->cause);
    if ((rec->cause != CAUSE_NONE && rec->status >= 500) || rec->aborted)
        observe_ring_push(rec);
}
