/* Incremental, in-place chunked transfer coding decoder (RFC 9112 7.1).
 *
 * A byte-at-a-time state machine for the framing (size lines, CRLFs,
 * trailers: a few bytes per chunk) and one memmove per run of data bytes.
 * The state lives in struct http_chunked, so input may be split anywhere.
 */
#include "http/http.h"
#include "http/http_internal.h"

#include <string.h>

/* A chunk-size line with extensions longer than this is an attack, not a
 * client: real extensions are rare and short. */
#define MAX_SIZE_LINE 4096
/* Trailer fields are dropped, but still read: bound what a peer can make us
 * parse after the last chunk, as for a header section. */
#define MAX_TRAILER_BYTES 16384
#define MAX_CHUNK_SIZE UINT64_C(0x7fffffffffffffff)

enum chunk_state {
    CK_SIZE_START,    /* expecting the first HEXDIG of chunk-size */
    CK_SIZE,          /* in chunk-size */
    CK_EXT_BWS,       /* BWS, then only ";" may follow */
    CK_EXT_NAME_BWS,  /* after ";": BWS then chunk-ext-name */
    CK_EXT_NAME,      /* in chunk-ext-name */
    CK_EXT_EQ_BWS,    /* BWS after a name: "=" or ";" follows */
    CK_EXT_VAL_BWS,   /* after "=": BWS then token or quoted-string */
    CK_EXT_TOKEN,     /* in a token chunk-ext-val */
    CK_EXT_QUOTED,    /* in a quoted-string chunk-ext-val */
    CK_EXT_QPAIR,     /* after a backslash in a quoted-string */
    CK_EXT_QUOTE_END, /* just after the closing quote */
    CK_SIZE_LF,       /* CR ended the size line, LF must follow */
    CK_DATA,          /* bytes_left data bytes to pass through */
    CK_DATA_CR,       /* CRLF after the data */
    CK_DATA_LF,
    CK_TRAILER_START, /* start of a trailer line, or the final empty line */
    CK_TRAILER_NAME,
    CK_TRAILER_VALUE,
    CK_TRAILER_LF,
    CK_END_LF, /* CR of the final empty line seen, LF must follow */
    CK_DONE,
};

void http_chunked_init(struct http_chunked *d)
{
    memset(d, 0, sizeof *d);
    d->state = CK_SIZE_START;
}

static int hex_value(unsigned char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* The size line ended (its LF consumed): data follows, or the trailer
 * section after the last chunk. */
static int size_line_done(struct http_chunked *d)
{
    d->line_len = 0;
    d->trailer_bytes = 0;
    return d->bytes_left ? CK_DATA : CK_TRAILER_START;
}

/* One framing byte: the next state, or -1 if the byte is invalid here. */
static int step(struct http_chunked *d, unsigned char c)
{
    switch (d->state) {
    case CK_SIZE_START:
        /* RFC 9112 7.1: chunk-size = 1*HEXDIG; no sign, prefix or space */
        if (!http_is(c, HTTP_C_HEX))
            return -1;
        d->bytes_left = (uint64_t)hex_value(c);
        return CK_SIZE;
    case CK_SIZE:
        if (http_is(c, HTTP_C_HEX)) {
            unsigned h = (unsigned)hex_value(c);
            if (d->bytes_left > (MAX_CHUNK_SIZE - h) / 16)
                return -2;
            d->bytes_left = d->bytes_left * 16 + h;
            return CK_SIZE;
        }
        if (c == ';')
            return CK_EXT_NAME_BWS;
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_BWS;
        break; /* line end handled by the caller */
    /* RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
     *                               [ BWS "=" BWS chunk-ext-val ] ) */
    case CK_EXT_BWS:
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_BWS;
        return c == ';' ? CK_EXT_NAME_BWS : -1;
    case CK_EXT_NAME_BWS:
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_NAME_BWS;
        return http_is(c, HTTP_C_TCHAR) ? CK_EXT_NAME : -1;
    case CK_EXT_NAME:
        if (http_is(c, HTTP_C_TCHAR))
            return CK_EXT_NAME;
        if (c == '=')
            return CK_EXT_VAL_BWS;
        if (c == ';')
            return CK_EXT_NAME_BWS;
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_EQ_BWS;
        break;
    case CK_EXT_EQ_BWS:
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_EQ_BWS;
        if (c == '=')
            return CK_EXT_VAL_BWS;
        return c == ';' ? CK_EXT_NAME_BWS : -1;
    case CK_EXT_VAL_BWS:
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_VAL_BWS;
        if (c == '"')
            return CK_EXT_QUOTED;
        return http_is(c, HTTP_C_TCHAR) ? CK_EXT_TOKEN : -1;
    case CK_EXT_TOKEN:
        if (http_is(c, HTTP_C_TCHAR))
            return CK_EXT_TOKEN;
        if (c == ';')
            return CK_EXT_NAME_BWS;
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_BWS;
        break;
    case CK_EXT_QUOTED: /* RFC 9110 5.6.4 quoted-string */
        if (c == '"')
            return CK_EXT_QUOTE_END;
        if (c == '\\')
            return CK_EXT_QPAIR;
        return http_is(c, HTTP_C_QDTEXT) ? CK_EXT_QUOTED : -1;
    case CK_EXT_QPAIR:
        return http_is(c, HTTP_C_VALUE) ? CK_EXT_QUOTED : -1;
    case CK_EXT_QUOTE_END:
        if (c == ';')
            return CK_EXT_NAME_BWS;
        if (http_is(c, HTTP_C_WS))
            return CK_EXT_BWS;
        break;
    case CK_SIZE_LF:
        return c == '\n' ? size_line_done(d) : -1;
    case CK_DATA_CR:
        if (c == '\r')
            return CK_DATA_LF;
        return c == '\n' ? CK_SIZE_START : -1; /* RFC 9112 2.2: lone LF */
    case CK_DATA_LF:
        return c == '\n' ? CK_SIZE_START : -1;
    /* RFC 9112 7.1.2: trailer-section = *( field-line CRLF ), validated as
     * header fields are, then dropped */
    case CK_TRAILER_START:
        if (c == '\r')
            return CK_END_LF;
        if (c == '\n')
            return CK_DONE;
        return http_is(c, HTTP_C_TCHAR) ? CK_TRAILER_NAME : -1; /* no obs-fold, no empty name */
    case CK_TRAILER_NAME:
        if (http_is(c, HTTP_C_TCHAR))
            return CK_TRAILER_NAME;
        return c == ':' ? CK_TRAILER_VALUE : -1;
    case CK_TRAILER_VALUE:
        if (http_is(c, HTTP_C_VALUE))
            return CK_TRAILER_VALUE;
        if (c == '\r')
            return CK_TRAILER_LF;
        return c == '\n' ? CK_TRAILER_START : -1;
    case CK_TRAILER_LF:
        return c == '\n' ? CK_TRAILER_START : -1;
    case CK_END_LF:
        return c == '\n' ? CK_DONE : -1;
    default:
        return -1;
    }

    /* A size line (chunk-size or an extension) may end here. */
    if (c == '\r')
        return CK_SIZE_LF;
    if (c == '\n')
        return size_line_done(d);
    return -1;
}

ssize_t http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, enum http_error *err)
{
    size_t in = 0, out = 0, n = *len;
    *err = HTTP_OK;
    if (d->state == CK_DONE) {
        *len = 0;
        *err = HTTP_ERR_BAD_CHUNK; /* nothing may follow the end of a message */
        return -2;
    }
    while (in < n) {
        if (d->state == CK_DATA) {
            size_t take = n - in;
            if (d->bytes_left < take)
                take = (size_t)d->bytes_left;
            if (out != in)
                memmove(buf + out, buf + in, take);
            out += take;
            in += take;
            d->bytes_left -= take;
            if (d->bytes_left == 0)
                d->state = CK_DATA_CR;
            continue;
        }

        int state = d->state;
        unsigned char c = (unsigned char)buf[in++];
        int next = step(d, c);
        if (next < 0) {
            *len = out;
            *err = next == -2 ? HTTP_ERR_CHUNK_TOO_LARGE : HTTP_ERR_BAD_CHUNK;
            return -2;
        }
        /* bytes of the size line itself, terminator excluded */
        if (state < CK_SIZE_LF && next < CK_SIZE_LF && ++d->line_len > MAX_SIZE_LINE) {
            *len = out;
            *err = HTTP_ERR_BAD_CHUNK;
            return -2;
        }
        if (state >= CK_TRAILER_START && ++d->trailer_bytes > MAX_TRAILER_BYTES) {
            *len = out;
            *err = HTTP_ERR_BAD_CHUNK;
            return -2;
        }
        d->state = next;
        if (next == CK_DONE) {
            *len = out;
            return (ssize_t)in;
        }
    }
    *len = out;
    return HTTP_INCOMPLETE;
}

size_t http_chunk_header(char *out, uint64_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t digits = 0;
    do {
        tmp[digits++] = hex[n & 0xf];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < digits; i++)
        out[i] = tmp[digits - 1 - i];
    out[digits] = '\r';
    out[digits + 1] = '\n';
    return digits + 2;
}
