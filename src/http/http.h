/* HTTP/1.x message parsing and serialisation helpers (RFC 9110, RFC 9112).
 *
 * The parser knows no sockets: it parses bytes. It never allocates and never
 * copies; every string it returns points into the caller's buffer, which must
 * stay unchanged while the parsed message is in use. Parsing is all or
 * nothing: a header section is parsed only once it is complete, so callers
 * call again with more bytes after HTTP_INCOMPLETE.
 *
 * Strictness is the point: an ambiguous message is refused, never guessed at
 * (RFC 9112 section 11: request smuggling lives in the gaps between lenient
 * parsers).
 */
#ifndef BULWARK_HTTP_H
#define BULWARK_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At most this many header fields per message; more is answered 431 (request)
 * or refused as a protocol error (response). 100 is what nginx and HAProxy
 * allow by default in practice and keeps struct http_request on one page. */
#define HTTP_MAX_HEADERS 100

struct http_header {
    const char *name;
    size_t name_len;
    const char *value; /* leading and trailing OWS already stripped */
    size_t value_len;
};

enum http_method {
    HTTP_METHOD_OTHER = 0, /* a valid token we do not know: forwarded as is */
    HTTP_METHOD_GET,
    HTTP_METHOD_HEAD,
    HTTP_METHOD_POST,
    HTTP_METHOD_PUT,
    HTTP_METHOD_DELETE,
    HTTP_METHOD_OPTIONS,
    HTTP_METHOD_TRACE,
    HTTP_METHOD_CONNECT,
    HTTP_METHOD_PATCH,
};

/* How the body of a message is delimited (RFC 9112 section 6.3). */
enum http_framing {
    HTTP_FRAMING_NONE = 0,   /* no body */
    HTTP_FRAMING_LENGTH,     /* Content-Length bytes follow (may be 0) */
    HTTP_FRAMING_CHUNKED,    /* chunked transfer coding is final */
    HTTP_FRAMING_UNTIL_CLOSE /* responses only: body ends when the connection closes */
};

/* Parse results. Non-negative is the size of the header section in bytes
 * (request line / status line through the empty line). */
#define HTTP_INCOMPLETE (-1) /* need more bytes; nothing wrong so far */

/* Why a message was refused. Each maps to a status (for requests) with
 * http_error_status() and to a sentence with http_error_text(). */
enum http_error {
    HTTP_OK = 0,
    HTTP_ERR_BAD_REQUEST_LINE,      /* malformed request line or status line */
    HTTP_ERR_BAD_METHOD,            /* method is not a token */
    HTTP_ERR_BAD_TARGET,            /* request-target has invalid bytes or form */
    HTTP_ERR_BAD_VERSION,           /* not HTTP/1.0 or HTTP/1.1 (505 for requests) */
    HTTP_ERR_BAD_HEADER_NAME,       /* empty name or non-token byte in a name */
    HTTP_ERR_WS_BEFORE_COLON,       /* RFC 9112 5.1: whitespace between name and colon */
    HTTP_ERR_BAD_HEADER_VALUE,      /* CTL or other invalid byte in a value */
    HTTP_ERR_OBS_FOLD,              /* RFC 9112 5.2: line folding */
    HTTP_ERR_BARE_CR,               /* CR not followed by LF */
    HTTP_ERR_BARE_LF,               /* reserved: lone LF line endings are accepted (RFC 9112 2.2) */
    HTTP_ERR_TOO_MANY_HEADERS,      /* more than HTTP_MAX_HEADERS fields */
    HTTP_ERR_REQUEST_LINE_TOO_LONG, /* request line longer than the limit: 414 */
    HTTP_ERR_HEADERS_TOO_LARGE,     /* header section longer than the limit: 431 */
    HTTP_ERR_CL_AND_TE,             /* RFC 9112 6.3: both Content-Length and Transfer-Encoding */
    HTTP_ERR_BAD_CONTENT_LENGTH,    /* malformed, or several differing values */
    HTTP_ERR_BAD_TRANSFER_ENCODING, /* final coding not chunked (request), unknown coding, chunked
                                       twice */
    HTTP_ERR_TE_IN_HTTP10,          /* Transfer-Encoding in an HTTP/1.0 message */
    HTTP_ERR_MISSING_HOST,          /* HTTP/1.1 request without Host */
    HTTP_ERR_MULTIPLE_HOST,         /* more than one Host field */
    HTTP_ERR_BAD_HOST,              /* Host value is not a valid uri-host[:port] */
    HTTP_ERR_BAD_STATUS,            /* status code not three digits, or < 100 */
    HTTP_ERR_BAD_CHUNK,             /* chunked coding: bad size, missing CRLF, bad trailer */
    HTTP_ERR_CHUNK_TOO_LARGE,       /* chunk size does not fit 63 bits */
    HTTP_ERR_UNKNOWN_TRANSFER_CODING, /* a transfer coding we do not implement: 501 */
    /* FastCGI records and the CGI response in them (src/http/fastcgi.c) */
    HTTP_ERR_FCGI_VERSION,     /* a record whose version is not 1 */
    HTTP_ERR_FCGI_REQUEST_ID,  /* a record for another request id */
    HTTP_ERR_FCGI_TYPE,        /* a record type a responder must not send us */
    HTTP_ERR_FCGI_END_REQUEST, /* FCGI_END_REQUEST body not 8 bytes, or an error status */
    HTTP_ERR_FCGI_AFTER_END,   /* bytes after FCGI_END_REQUEST, or stdout after its end */
    HTTP_ERR_FCGI_NO_OUTPUT,   /* FCGI_END_REQUEST without any response on stdout */
    HTTP_ERR_FCGI_HEAD_CUT,    /* FCGI_END_REQUEST before the CGI header section ended */
    HTTP_ERR_FCGI_BODY_LENGTH, /* stdout body longer or shorter than its Content-Length */
    HTTP_ERR__COUNT
};

/* Limits applied while parsing; 0 means the built-in default, and a NULL
 * limits pointer means all defaults. */
struct http_limits {
    size_t max_request_line; /* bytes, default 8192: over it the request gets 414 */
    size_t max_header_bytes; /* whole header section, default 16384: over it 431 */
};

struct http_request {
    const char *method;
    size_t method_len;
    enum http_method method_id;
    const char *target; /* request-target exactly as sent, never normalised */
    size_t target_len;
    int minor_version; /* 0 or 1 */

    struct http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;

    /* Derived from the header fields. */
    enum http_framing framing; /* NONE, LENGTH or CHUNKED (never UNTIL_CLOSE) */
    uint64_t content_length;   /* when framing == HTTP_FRAMING_LENGTH */
    const char *host;          /* Host value, or NULL for HTTP/1.0 without Host */
    size_t host_len;
    bool keep_alive;      /* per version default and Connection: close / keep-alive */
    bool expect_continue; /* Expect: 100-continue */
    bool upgrade;         /* Connection names "upgrade" and an Upgrade field is present */
};

struct http_response {
    int status;
    const char *reason;
    size_t reason_len;
    int minor_version;

    struct http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;

    enum http_framing framing; /* NONE for 1xx, 204, 304 and responses to HEAD */
    uint64_t content_length;
    bool keep_alive; /* the upstream lets us reuse the connection after this response */
};

/* Parse a request header section from buf[0..len).
 * Returns the header section size (> 0), HTTP_INCOMPLETE, or -2 with *err set
 * (also set to HTTP_OK on success). When the section is incomplete but already
 * over a limit, the limit error is returned at once (so a slowloris cannot
 * hold a full buffer). */
int http_parse_request(const char *buf, size_t len, const struct http_limits *limits,
                       struct http_request *req, enum http_error *err);

/* Parse a response header section. request_method is the method of the
 * request this answers (HEAD and CONNECT change the framing).
 * max_header_bytes 0 means 16384. Same return convention as
 * http_parse_request. */
int http_parse_response(const char *buf, size_t len, size_t max_header_bytes,
                        enum http_method request_method, struct http_response *resp,
                        enum http_error *err);

/* The status a server answers a request refused with this error
 * (400, 414, 431, 501, 505). */
int http_error_status(enum http_error err);

/* A short, precise sentence for logs and error pages, e.g.
 * "Content-Length and Transfer-Encoding both present". Never NULL. */
const char *http_error_text(enum http_error err);

/* Reason phrase for a status code ("Bad Gateway"); "Unknown" if none. */
const char *http_status_reason(int status);

/* Case-insensitive comparison of a header name with a NUL-terminated name. */
bool http_name_is(const struct http_header *h, const char *name);

/* Find the first header with this name, or NULL. */
const struct http_header *http_find_header(const struct http_header *headers, size_t n,
                                           const char *name);

/* True if a comma-separated field value contains this token
 * (case-insensitive, OWS around commas ignored). */
bool http_list_has_token(const char *value, size_t len, const char *token);

/* The parameters of a Keep-Alive field value, "timeout=5, max=100": how
 * long the sender keeps an idle connection open (seconds) and how many more
 * requests it takes on it. No current RFC defines the field (RFC 2068
 * 19.7.1.1 sketched it); Apache, Node.js and others send it. Tolerant of the
 * form: OWS around commas and "=", any case, unknown parameters (also with
 * quoted values) and bare words are skipped. Strict on the numbers: only
 * 1*DIGIT that fits 32 bits counts; anything else (a sign, a fraction, a
 * quoted number, trailing junk) is ignored, as if absent. A repeated
 * parameter keeps its smaller value. Outputs are 0 when absent. Returns
 * whether a valid timeout or max was found. */
bool http_parse_keep_alive(const char *value, size_t len, uint32_t *timeout_s, uint32_t *max);

/* True for hop-by-hop fields a proxy must not forward (RFC 9110 7.6.1):
 * Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade; and any field named in the message's Connection header(s). */
bool http_is_hop_by_hop(const struct http_header *h, const struct http_header *headers, size_t n);

/* Incremental chunked-coding decoder (RFC 9112 section 7.1).
 * Decodes in place: chunk-size lines, extensions, CRLFs and the trailer
 * section are removed, data is moved to the front of the buffer. */
struct http_chunked {
    int state;            /* private */
    uint64_t bytes_left;  /* private: data bytes left in the current chunk */
    size_t line_len;      /* private: bytes of the current size/trailer line, to bound it */
    size_t trailer_bytes; /* private: bound on the trailer section */
};

void http_chunked_init(struct http_chunked *d);

/* Decode buf[0..*len) in place. On return *len is the number of data bytes
 * now at buf[0..*len). Returns:
 *   > 0  the message is complete; the value is how many of the *input* bytes
 *        were consumed (bytes after that belong to the next message and have
 *        been left where they were: at buf[value..original len) -- the caller
 *        must treat them as unread, they are NOT moved),
 *   HTTP_INCOMPLETE  all input consumed, more needed,
 *   -2   malformed; *err says why (HTTP_ERR_BAD_CHUNK, or HTTP_ERR_CHUNK_TOO_LARGE).
 * Chunk extensions are ignored; trailer fields are validated and dropped.
 * Once a message is complete, further calls fail (HTTP_ERR_BAD_CHUNK) until
 * http_chunked_init starts the next one. */
ssize_t http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, enum http_error *err);

/* Write a chunk-size line "<hex>\r\n" for a chunk of n bytes into out (at
 * least 19 bytes). Returns its length. */
size_t http_chunk_header(char *out, uint64_t n);

/* ---- FastCGI 1.0 (the FastCGI Specification, Open Market 1996) ----
 *
 * The record layer and the CGI response (RFC 3875 6) carried in FCGI_STDOUT,
 * as pure functions over bytes, like the HTTP parser: no sockets, no
 * allocation. src/proxy/exchange_fastcgi.c speaks the protocol with them. */

#define HTTP_FCGI_HEADER_LEN 8
#define HTTP_FCGI_MAX_CONTENT 65535 /* a record's contentLength is 16 bits */

enum http_fcgi_type {
    HTTP_FCGI_BEGIN_REQUEST = 1,
    HTTP_FCGI_ABORT_REQUEST = 2,
    HTTP_FCGI_END_REQUEST = 3,
    HTTP_FCGI_PARAMS = 4,
    HTTP_FCGI_STDIN = 5,
    HTTP_FCGI_STDOUT = 6,
    HTTP_FCGI_STDERR = 7,
};

/* FCGI_END_REQUEST protocolStatus values. */
enum http_fcgi_status {
    HTTP_FCGI_REQUEST_COMPLETE = 0,
    HTTP_FCGI_CANT_MPX_CONN = 1,
    HTTP_FCGI_OVERLOADED = 2,
    HTTP_FCGI_UNKNOWN_ROLE = 3,
};

/* A record header: version 1, type, request id, content length, padding. */
void http_fcgi_header(char out[HTTP_FCGI_HEADER_LEN], enum http_fcgi_type type, uint16_t request_id,
                      uint16_t content_len, uint8_t padding);

/* FCGI_BEGIN_REQUEST for the responder role, header and body (16 bytes).
 * keep_conn: FCGI_KEEP_CONN, the application keeps the connection open
 * after FCGI_END_REQUEST so it can carry the next request. */
void http_fcgi_begin_request(char out[16], uint16_t request_id, bool keep_conn);

/* The length prefix of one name-value pair (spec 3.4: one byte below 128,
 * else four with the high bit set). Returns its size (2..8), or 0 when a
 * length does not fit 31 bits. The name and value bytes follow it. */
size_t http_fcgi_param_lengths(char out[8], size_t name_len, size_t value_len);

/* Incremental decoder of the records an application sends back for one
 * request. Partial record headers are kept inside, so a caller's buffer
 * always ends on decoded bytes. */
struct http_fcgi_decoder {
    uint16_t request_id;   /* the id records must carry */
    uint8_t hdr[8];        /* private: a record header being read */
    uint8_t hdr_have;      /* private */
    uint8_t type;          /* private: of the record whose content is read */
    uint16_t content_left; /* private */
    uint16_t padding_left; /* private */
    uint8_t end_body[8];   /* private: FCGI_END_REQUEST body being read */
    uint8_t end_have;      /* private */
    bool stdout_closed;    /* the empty FCGI_STDOUT record arrived */
    bool ended;            /* FCGI_END_REQUEST arrived whole */
    uint32_t app_status;   /* from FCGI_END_REQUEST */
    uint8_t protocol_status;
    uint64_t stdout_bytes, stderr_bytes; /* content seen so far */
};

void http_fcgi_decoder_init(struct http_fcgi_decoder *d, uint16_t request_id);

/* Decode the records in buf[0..*len) in place: the FCGI_STDOUT content is
 * moved to buf's start and *len becomes its length; each piece of
 * FCGI_STDERR content is handed to on_stderr (a pointer into buf, valid
 * during the call) when on_stderr is not NULL. Returns 0, or -2 with *err
 * for a record of another version or request id, a type other than
 * STDOUT, STDERR and END_REQUEST, an END_REQUEST body that is not 8 bytes
 * or a protocolStatus other than REQUEST_COMPLETE, STDOUT after its end,
 * and any byte after FCGI_END_REQUEST (the connection is then unusable). */
int http_fcgi_decode(struct http_fcgi_decoder *d, char *buf, size_t *len,
                     void (*on_stderr)(void *ctx, const char *p, size_t n), void *ctx,
                     enum http_error *err);

/* Parse a CGI response header section (RFC 3875 6.2, 6.3) from
 * buf[0..len): lines end with LF or CRLF, an empty line ends the section.
 * "Status: 404 Not Found" gives the status (200..599) and reason, and is
 * not among resp->headers; without it a Location gives 302 (6.2.3; a
 * local path, 6.2.2's local redirect, is answered the same way) and
 * anything else 200. Content-Length gives HTTP_FRAMING_LENGTH, HEAD and
 * 204/304 HTTP_FRAMING_NONE, otherwise HTTP_FRAMING_UNTIL_CLOSE (the
 * body ends with the stream: the caller frames it). Transfer-Encoding is
 * refused. Strict as http_parse_response about names and values. Returns
 * the section size, HTTP_INCOMPLETE, or -2 with *err. */
int http_parse_cgi_response(const char *buf, size_t len, size_t max_header_bytes,
                            enum http_method request_method, struct http_response *resp,
                            enum http_error *err);

/* A request path as a script path: percent-decoded, "//" merged, "." and
 * ".." segments resolved (RFC 3986 5.2.4), into out (NUL-terminated).
 * Returns the length, -1 for a path that is not "/"-rooted or has a bad
 * or NUL escape (%zz, %00), -2 for one whose ".." climbs above "/", -3
 * when out (cap bytes) is too small. */
ssize_t http_normalize_path(const char *path, size_t len, char *out, size_t cap);

#endif
