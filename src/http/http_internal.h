/* Private to src/http: the byte classes and small helpers the parser, the
 * chunked decoder and the header utilities share. */
#ifndef BULWARK_HTTP_INTERNAL_H
#define BULWARK_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bits of http_ctype[]: one table lookup per byte answers "may this byte
 * appear here?" for every grammar rule the parser scans. */
enum {
    HTTP_C_TCHAR = 0x01,   /* RFC 9110 5.6.2 tchar */
    HTTP_C_VALUE = 0x02,   /* RFC 9110 5.5 field-vchar / SP / HTAB (obs-text included) */
    HTTP_C_TARGET = 0x04,  /* request-target byte: visible ASCII 0x21-0x7E */
    HTTP_C_HEX = 0x08,     /* HEXDIG */
    HTTP_C_REGNAME = 0x10, /* RFC 3986 unreserved / sub-delims (reg-name without pct) */
    HTTP_C_DIGIT = 0x20,   /* DIGIT */
    HTTP_C_WS = 0x40,      /* SP / HTAB (OWS, BWS) */
    HTTP_C_QDTEXT = 0x80,  /* RFC 9110 5.6.4 qdtext */
};

extern const uint8_t http_ctype[256];

static inline bool http_is(unsigned char c, unsigned cls)
{
    return (http_ctype[c] & cls) != 0;
}

/* ASCII-only lowercase: header names and tokens are ASCII (RFC 9110 5.1). */
static inline unsigned char http_lower(unsigned char c)
{
    return (unsigned char)(c + ((unsigned)(c - 'A') < 26u ? 32 : 0));
}

/* Case-insensitive equality of a[0..n) with b[0..n). */
static inline bool http_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (http_lower((unsigned char)a[i]) != http_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* Iterate a comma-separated list (RFC 9110 5.6.1). *pos starts at value and
 * advances; each call yields one element with OWS trimmed (possibly empty).
 * Returns false when the list is exhausted. An empty value yields one empty
 * element, so callers that refuse empty elements see it. */
static inline bool http_list_next(const char **pos, const char *end, bool *started,
                                  const char **elem, size_t *elem_len)
{
    const char *p = *pos;
    if (p == end && *started)
        return false;
    if (*started)
        p++; /* skip the comma that ended the previous element */
    *started = true;
    while (p < end && http_is((unsigned char)*p, HTTP_C_WS))
        p++;
    const char *start = p;
    while (p < end && *p != ',')
        p++;
    const char *stop = p;
    while (stop > start && http_is((unsigned char)stop[-1], HTTP_C_WS))
        stop--;
    *elem = start;
    *elem_len = (size_t)(stop - start);
    *pos = p;
    return true;
}

#endif
