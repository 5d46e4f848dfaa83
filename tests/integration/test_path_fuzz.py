"""The whole request path under random traffic, judged by invariants.

The parsers are fuzzed alone with libFuzzer (fuzz/); this drives the real binary.
A scripted origin (two ports: one group, two servers, so retries happen) answers
each request from a random script derived from (seed, request id, attempt): every
framing (Content-Length, chunked with random chunk sizes, extensions and
trailers, close-delimited), 1xx interims, 204/304, HEAD, HTTP/1.0 answers,
Keep-Alive hints it then honours by closing idle connections, and faults: reset
or close before or in the middle of the head or the body, garbage, stray bytes
behind a complete response, early answers before the request body, stalls
shorter than the timeouts. Client threads send random pipelined batches
(GET/HEAD/POST/PUT, Content-Length or chunked bodies, Expect, HTTP/1.0, random
X-Request-Id, some malformed requests), split at random points and sent with
small random delays, over several concurrent connections.

Every request carries an id (path, X-Fuzz-Id, body) that the origin echoes
(X-Echo, X-Echo-Attempt, body), and the test checks:
  - every response is well-formed HTTP/1.1 (parsed strictly here), hop-by-hop
    fields removed; a chunked body parses; nothing follows `Connection: close`;
  - every response belongs to its own request, in order;
  - a relayed body is byte-identical to what the origin sent for that attempt,
    or the connection is cut before the body looks complete (a truncated body
    never ends with the last chunk);
  - every request the origin receives is well-formed, has one Host, no hop-by-hop
    field, the client's end-to-end fields, and a body byte-identical to what the
    client sent (raw chunked framing included: a retry sends the same bytes);
  - a generated error carries Proxy-Status and X-Request-Id (the client's own
    when it sent a valid one), and is explained by what the origin did on the
    last attempt (a request the origin answered whole is never a 5xx);
  - a request the origin received is answered (or its answer cut mid-body);
  - afterwards: bulwark_client_connections and every bulwark_upstream_in_flight
    are back to 0, upstream connections drain once the origin closes them, the
    fd count is back to its start and RSS grew within a bound; bulwark exits 0
    on SIGTERM and printed no sanitizer report.

BULWARK_FUZZ_SEED replays a seed (every failure message names it),
BULWARK_FUZZ_SECONDS runs longer (default 20), BULWARK_FUZZ_CONNS sets the
number of concurrent client connections (default 6), BULWARK_FUZZ_STRICT=1
fails on the known bugs too. Known bugs (KNOWN) are violations with a narrow
signature and a minimal reproduction at the end of this file (xfail, strict):
the run counts and names them instead of failing; any other violation fails
it, with the evidence (request and response bytes, the origin's script) in
violations.txt beside the test's logs. The request sequence of
each connection and each origin answer follow from the seed; thread timing does
not, so a replay reproduces the traffic, not always the interleaving.
"""
import fcntl
import json
import os
import random
import re
import signal
import socket
import struct
import termios
import threading
import time

from conftest import BIN
from origins import wait_for
from origins.faulty import fetch

# Bugs this test found, each with its minimal reproduction below (all pass).
# Their narrow signatures stay so that a regression is named in the summary.
# One still shows now and then in fuzz runs though its reproduction passes
# (http10_cut_looks_whole: a reset right after a close-delimited body can be
# read as a clean end): matches are counted and named, and fail the run only
# with BULWARK_FUZZ_STRICT=1. Anything else fails it always.
KNOWN = {
    "interim_then_eof": "the upstream closes while its final head waits behind a 1xx not yet "
                        "relayed: 502 connection_terminated instead of the response "
                        "(test_repro_interim_then_close)",
    "http10_cut_looks_whole": "a body cut mid-way, relayed close-delimited to an HTTP/1.0 "
                              "client, ends with a FIN: it looks whole "
                              "(test_repro_http10_cut_body_ends_with_fin)",
    "refused_head_gets_body": "the error page of a refused HEAD request carries a body "
                              "(test_repro_refused_head_gets_no_body)",
    "free_retry_reuses_pool": "the free retry after a stale pooled connection takes another "
                              "pooled connection, which may be stale too "
                              "(test_repro_free_retry_takes_a_new_connection)",
    "close_resets_pipelined": "closing a connection (an abort, or after a last response) with "
                              "pipelined requests still unread in the socket sends a reset, "
                              "which destroys the response bytes still in flight "
                              "(test_repro_abort_keeps_earlier_responses)",
    "early_response_lost": "an upstream that answers before reading the whole request body, "
                           "then resets: the reset reaches the body write first, and the "
                           "answer waiting in the socket becomes a 502 "
                           "(test_repro_early_response_then_reset_is_relayed)",
    "reset_after_write_error_looks_clean": "a reset first reported to a write (the request body "
                                           "still going out) makes the next read return 0: a "
                                           "close-delimited body cut by it is relayed as whole "
                                           "(test_repro_reset_seen_by_write_is_not_a_clean_end)",
    "failed_attempt_not_marked_reused": "attempt_details[].reused is false for every failed "
                                        "attempt, pooled or not "
                                        "(test_repro_failed_attempt_evidence_marks_reused)",
}
STRICT = os.environ.get("BULWARK_FUZZ_STRICT", "0") == "1"

SEED = int(os.environ.get("BULWARK_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
SECONDS = float(os.environ.get("BULWARK_FUZZ_SECONDS") or 20)
CONNS = int(os.environ.get("BULWARK_FUZZ_CONNS") or 6)

READ_TIMEOUT_S = 5       # bulwark's read_timeout: every origin stall is far below it
HANG_S = 30              # a client or origin read waiting this long is a hang
STALL_MAX_S = 0.3        # longest origin stall
MAX_VIOLATIONS = 200     # keep the first ones: one bug often repeats

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RE_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
RE_FIELD = re.compile(rb"(" + RE_TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*"
                      rb"[\x21-\x7e\x80-\xff])?)?)[ \t]*")
HOP_BY_HOP = {b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"proxy-connection",
              b"transfer-encoding"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class Bad(Exception):
    """The peer sent something that is not well-formed HTTP/1.1."""


class Ended(Exception):
    """The connection ended (FIN or reset) before the message did."""


class Hang(Exception):
    """Nothing arrived for HANG_S."""


class Reader:
    """Buffered reads from a socket, keeping every byte read for reports."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        self.reset = False

    def fill(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Hang(f"nothing for {HANG_S}s")
        except (ConnectionResetError, BrokenPipeError):
            self.reset = True
            raise Ended("reset")
        if not data:
            raise Ended("closed")
        self.buf += data

    def line(self, limit=20000):
        """One CRLF-terminated line, without the CRLF. A bare LF is malformed."""
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                break
            if len(self.buf) - self.pos > limit:
                raise Bad("line too long")
            self.fill()
        if i == self.pos or self.buf[i - 1] != 0x0D:
            raise Bad(f"bare LF in {bytes(self.buf[self.pos:i + 1])[-80:]!r}")
        out = bytes(self.buf[self.pos:i - 1])
        self.pos = i + 1
        return out

    def exact(self, n):
        while len(self.buf) - self.pos < n:
            self.fill()
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def some(self, n):
        if self.pos == len(self.buf):
            self.fill()
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += len(out)
        return out

    def at_eof(self):
        """True if the peer closes with nothing more; False if bytes follow
        (or nothing happens for HANG_S)."""
        if self.pos < len(self.buf):
            return False
        try:
            self.fill()
        except Ended:
            return True
        except Hang:
            return False
        return False


def parse_fields(rd):
    fields = []
    while True:
        line = rd.line()
        if line == b"":
            return fields
        m = RE_FIELD.fullmatch(line)
        if not m:
            raise Bad(f"malformed field line {line[:100]!r}")
        fields.append((m.group(1).lower(), m.group(2)))


def field(fields, name, default=None):
    vals = [v for k, v in fields if k == name]
    if len(vals) > 1:
        raise Bad(f"{name.decode()} repeated: {vals}")
    return vals[0] if vals else default


def read_chunked(rd, data_out, trailers_ok):
    """A chunked body into data_out (a bytearray, kept on failure too)."""
    while True:
        line = rd.line()
        m = re.fullmatch(rb"([0-9a-fA-F]{1,16})((?:[ \t]*;[^\r\n]*)?)", line)
        if not m:
            raise Bad(f"bad chunk-size line {line[:60]!r}")
        if m.group(2) and not trailers_ok:
            raise Bad(f"chunk extension relayed: {line[:60]!r}")
        size = int(m.group(1), 16)
        if size == 0:
            break
        data_out += rd.exact(size)
        if rd.exact(2) != b"\r\n":
            raise Bad("chunk data not followed by CRLF")
    trailers = parse_fields(rd)
    if trailers and not trailers_ok:
        raise Bad(f"trailer fields relayed: {trailers}")
    return trailers


class Response:
    def __init__(self):
        self.interims = []      # statuses of 1xx heads
        self.status = None
        self.fields = []
        self.body = bytearray()
        self.complete = False   # the framing said the body ended
        self.framing = None
        self.raw_start = 0

    def get(self, name):
        return field(self.fields, name.lower().encode())

    def text(self, name):
        v = self.get(name)
        return v.decode("latin-1") if v is not None else None


def read_response(rd, req, resp):
    """One response (1xx interims, then the final one) for req into resp.
    Raises Bad, Ended (resp tells how far it got) or Hang."""
    resp.raw_start = rd.pos
    while True:
        line = rd.line()
        m = re.fullmatch(rb"HTTP/1\.1 ([1-9][0-9][0-9]) ([\t \x21-\x7e\x80-\xff]*)", line)
        if not m:
            raise Bad(f"bad status line {line[:100]!r}")
        status = int(m.group(1))
        fields = parse_fields(rd)
        if 100 <= status < 200:
            if status == 101:
                raise Bad("101 to a request that asked no upgrade")
            if any(k in (b"content-length", b"transfer-encoding") for k, _ in fields):
                raise Bad(f"framing fields on a {status}")
            resp.interims.append(status)
            continue
        break
    resp.status, resp.fields = status, fields
    for name in (b"x-request-id", b"x-echo", b"x-echo-attempt", b"proxy-status",
                 b"content-length", b"transfer-encoding", b"connection"):
        field(fields, name)  # Bad when repeated
    for k, _ in fields:
        if k in HOP_BY_HOP and k != b"connection" and not (
                k == b"transfer-encoding" and status not in (204, 304)):
            raise Bad(f"hop-by-hop field {k.decode()} in a response")
    conn = resp.get("Connection")
    if conn is not None and conn.lower() not in (b"close", b"keep-alive"):
        raise Bad(f"Connection: {conn!r} relayed")
    te, cl = resp.get("Transfer-Encoding"), resp.get("Content-Length")
    if te is not None and cl is not None:
        raise Bad("both Transfer-Encoding and Content-Length")
    if req.method == "HEAD" or status in (204, 304):
        resp.framing = "none"
        if status == 204 and (te is not None or cl is not None):
            raise Bad("framing fields on a 204")
        resp.complete = True
        return resp
    if te is not None:
        if te.lower() != b"chunked":
            raise Bad(f"Transfer-Encoding: {te!r}")
        if req.minor == 0:
            raise Bad("chunked response to an HTTP/1.0 request")
        resp.framing = "chunked"
        read_chunked(rd, resp.body, trailers_ok=False)
        resp.complete = True
        return resp
    if cl is not None:
        if not re.fullmatch(rb"[0-9]{1,18}", cl):
            raise Bad(f"Content-Length: {cl!r}")
        resp.framing = "length"
        n = int(cl)
        while len(resp.body) < n:
            resp.body += rd.some(n - len(resp.body))
        resp.complete = True
        return resp
    # RFC 9112 6.3 item 8: until the close. bulwark re-chunks such bodies for
    # HTTP/1.1 clients, so for them this is a broken promise.
    if req.minor == 1:
        raise Bad("close-delimited response to an HTTP/1.1 request")
    resp.framing = "close"
    try:
        while True:
            resp.body += rd.some(65536)
    except Ended:
        if rd.reset:
            raise
    resp.complete = True
    return resp


# ---------------------------------------------------------------- requests

def rand_token(rng, lo=1, hi=12):
    return "".join(rng.choice(TCHAR) for _ in range(rng.randint(lo, hi)))


def rand_value(rng):
    n = rng.randint(0, 40)
    chars = [chr(rng.randint(0x21, 0x7E)) if rng.random() < 0.85 else " " for _ in range(n)]
    v = "".join(chars).strip()
    if rng.random() < 0.05:
        v += "\xe9t\xe9"  # obs-text
    return v


def chunk_ext(rng):
    if rng.random() < 0.7:
        return ""
    out = ""
    for _ in range(rng.randint(1, 2)):
        ws = rng.choice(["", "", " ", "\t"])
        out += f"{ws};{ws}{rand_token(rng, 1, 6)}"
        if rng.random() < 0.6:
            val = rand_token(rng, 1, 6) if rng.random() < 0.6 else '"q \\" s"'
            out += f"{ws}={ws}{val}"
    return out


def chunked_encode(rng, data, trailers=True, bounds=None):
    """data in random chunks with random size spellings, extensions, trailers.
    bounds (a list) receives the offset of every chunk-size line."""
    out = bytearray()
    i = 0
    while i < len(data):
        if bounds is not None:
            bounds.append(len(out))
        n = min(len(data) - i, rng.choice([1, 2, 7, 100, 1000, 4096, 20000, 70000]))
        size = format(n, "x")
        if rng.random() < 0.3:
            size = size.upper()
        if rng.random() < 0.1:
            size = "0" * rng.randint(1, 3) + size
        out += f"{size}{chunk_ext(rng)}\r\n".encode() + data[i:i + n] + b"\r\n"
        i += n
    if bounds is not None:
        bounds.append(len(out))
    out += f"0{chunk_ext(rng)}\r\n".encode()
    if trailers and rng.random() < 0.3:
        for _ in range(rng.randint(1, 2)):
            out += f"X-T-{rand_token(rng, 1, 5)}: {rand_value(rng)}\r\n".encode("latin-1")
    out += b"\r\n"
    return bytes(out)


def body_size(rng):
    r = rng.random()
    if r < 0.3:
        return 0
    if r < 0.8:
        return rng.randint(1, 2000)
    if r < 0.95:
        return rng.randint(2000, 70000)
    return rng.randint(70000, 300000)


def payload(rng, rid, n):
    """n bytes starting with the id (as far as it fits), then random bytes."""
    head = f"<{rid}>".encode()[:n]
    return head + rng.randbytes(n - len(head))


class Request:
    """One request as the client sends it, and what the client expects of it."""

    def __init__(self, rid):
        self.id = rid
        self.method = "GET"
        self.minor = 1
        self.target = ""
        self.raw = b""
        self.body = b""          # body data
        self.body_raw = b""      # body as sent (chunked framing included)
        self.chunked = False
        self.malformed = None    # "head": never reaches the origin; "body": may partly
        self.close = False       # the request asks to close (Connection: close, or 1.0)
        self.keep_alive = True   # the connection may stay open after it
        self.client_rid = None   # the X-Request-Id the client sent
        self.e2e = []            # (name, value) end-to-end fields the origin must see
        self.hop = []            # names the origin must not see
        self.host = ""
        self.sent_host = True
        self.bounds = []         # offsets of chunk-size lines in body_raw


MALFORMED_HEADS = [
    ("cl_and_te", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ("differing_cl", "Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
    ("bad_cl", "Content-Length: 5x\r\n", b"hello"),
    ("te_gzip", "Transfer-Encoding: gzip\r\n", b""),
    ("obs_fold", "X-Folded: a\r\n  b\r\n", b""),
    ("bare_cr", "X-Bare: a\rb\r\n", b""),
    ("ws_before_colon", "X-Space : a\r\n", b""),
    ("bad_name", "X-B\x01d: a\r\n", b""),
    ("repeated_host", "Host: again.example\r\n", b""),
]


def make_request(rng, rid):
    r = Request(rid)
    r.method = rng.choices(["GET", "HEAD", "POST", "PUT", "DELETE"], [45, 15, 25, 10, 5])[0]
    r.minor = 0 if rng.random() < 0.05 else 1
    query = f"?q={rand_token(rng, 1, 8).replace('#', '').replace('%', '')}" \
        if rng.random() < 0.3 else ""
    r.host = rng.choice(["app.example", "fuzz.test:8080", "h"])
    path = f"/fz/{rid}{query}"
    r.target = f"http://{r.host}{path}" if rng.random() < 0.05 else path
    lines = [f"{r.method} {r.target} HTTP/1.{r.minor}"]
    host_line = f"Host: {r.host}"
    r.sent_host = r.minor == 1 or rng.random() < 0.7
    if r.sent_host:
        lines.append(host_line)
    lines.append(f"X-Fuzz-Id: {rid}")
    r.e2e.append(("x-fuzz-id", rid))
    x = rng.random()
    if x < 0.5:
        r.client_rid = f"cr-{rid}-{rng.randrange(1 << 30):x}"
    elif x < 0.6:
        r.client_rid = rng.choice(["has space", "x" * 129, "semi;colon", "é"])
    if r.client_rid is not None:
        lines.append(f"X-Request-Id: {r.client_rid}")
    for i in range(rng.randint(0, 3)):
        name, value = f"X-R{i}-{rand_token(rng, 1, 6)}", rand_value(rng)
        lines.append(f"{name}: {value}")
        r.e2e.append((name.lower(), value))
    if rng.random() < 0.2:
        lines.append(f"Accept: {rng.choice(['application/json', 'text/html', '*/*'])}")
    conn_opts = []
    if rng.random() < 0.1:
        hop = f"X-Hop-{rand_token(rng, 1, 4)}"
        lines.append(f"{hop}: drop me")
        conn_opts.append(hop)
        r.hop.append(hop.lower())
    if rng.random() < 0.05:
        lines.append("Keep-Alive: timeout=5")
        r.hop.append("keep-alive")
    if r.minor == 1:
        r.close = rng.random() < 0.08
        if r.close:
            conn_opts.append("close")
        elif rng.random() < 0.1:
            conn_opts.append("keep-alive")
        r.keep_alive = not r.close
    else:
        r.keep_alive = rng.random() < 0.5
        r.close = not r.keep_alive
        if r.keep_alive:
            conn_opts.append("keep-alive")
    if conn_opts:
        lines.append("Connection: " + ", ".join(conn_opts))

    has_body = r.method in ("POST", "PUT") or rng.random() < 0.05
    if has_body:
        r.body = payload(rng, rid, body_size(rng))
        r.chunked = r.minor == 1 and rng.random() < 0.4
        if r.chunked:
            lines.append("Transfer-Encoding: chunked")
            r.bounds = []
            r.body_raw = chunked_encode(rng, r.body, bounds=r.bounds)
        else:
            lines.append(f"Content-Length: {len(r.body)}")
            r.body_raw = r.body
        if r.minor == 1 and len(r.body) and rng.random() < 0.15:
            lines.append("Expect: 100-continue")

    x = rng.random()
    if x < 0.03 and r.minor == 1:
        name, extra, body = rng.choice(MALFORMED_HEADS)
        r.malformed = "head"
        r.body, r.body_raw, r.chunked = b"", body, False
        lines = [l for l in lines if not l.startswith(("Content-Length", "Transfer-Encoding",
                                                       "Expect"))]
        lines.append(extra.rstrip("\r\n"))
    elif x < 0.05 and r.minor == 1 and r.method == "GET":
        r.malformed = "head"
        lines = [l for l in lines if not l.startswith("Host:")]
        if lines[0].split(" ")[1].startswith("http://"):
            lines[0] = f"{r.method} {path} HTTP/1.1"
    elif x < 0.07 and r.chunked:
        # a valid head, then broken chunked framing: refused (or cut) mid-body
        r.malformed = "body"
        cut = rng.choice(r.bounds)
        r.body_raw = r.body_raw[:cut] + b"zz\r\n"
    head = "\r\n".join(lines) + "\r\n\r\n"
    r.raw = head.encode("latin-1") + r.body_raw
    if r.malformed:
        r.keep_alive = False
    return r


# ---------------------------------------------------------------- the origin

INTERIMS = [b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            b"HTTP/1.1 102 Processing\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n"]

GARBAGE_HEADS = [
    b"HTTP/1.1 2OO OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"\x00\x01\x02garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Bare: a\rb\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
]

# What bulwark may answer when an attempt failed this way before a whole head.
CAUSES_TERMINATED = {"connection_terminated"}
CAUSES_GARBAGE = {"http_protocol_error", "connection_terminated"}


class Script:
    """What the origin does for one attempt, decided before it writes a byte."""

    def __init__(self):
        self.kind = "ok"
        self.status = 200
        self.interims = []       # non-100 interim statuses it sends
        self.any_interim = False
        self.framing = "length"
        self.body = b""          # body data it sends (whole, or up to the fault)
        self.complete = True     # the response it sends is whole and valid
        self.head_complete = True
        self.causes = set()      # Proxy-Status errors a generated answer may carry
        self.steps = []          # ("send", bytes) | ("sleep", s) | ("rst",) | ("close",)
        self.keep_open = True    # serve more requests on the connection after this
        self.early = False       # answer before reading the request body
        self.idle_close_s = None  # close the connection when idle this long
        self.max_left = None     # close after this many more answers

    def summary(self):
        return (f"kind={self.kind} status={self.status} interims={self.interims} "
                f"body={len(self.body)}B complete={self.complete} early={self.early} "
                f"any_interim={self.any_interim} keep_open={self.keep_open} causes={sorted(self.causes)} "
                f"steps={[s[0] if s[0] != 'send' else ('send', len(s[1])) for s in self.steps]}")


def make_script(seed, rid, attempt, method):
    rng = random.Random(f"{seed}/origin/{rid}/{attempt}")
    s = Script()
    head_only = method == "HEAD"
    s.kind = rng.choices(
        ["ok", "fault_before_head", "fault_mid_head", "fault_mid_body", "garbage",
         "stray_after", "bad_chunk"], [62, 7, 6, 11, 5, 5, 4])[0]
    if head_only and s.kind in ("fault_mid_body", "bad_chunk"):
        s.kind = "fault_mid_head"
    s.status = rng.choices([200, 201, 206, 404, 500, 503, 204, 304], [50, 5, 3, 8, 5, 3, 4, 4])[0]
    if s.kind in ("fault_mid_body", "bad_chunk") and s.status in (204, 304):
        s.status = 200
    v10 = rng.random() < 0.07
    framing = "none" if s.status in (204, 304) else rng.choices(
        ["length", "chunked", "close"], [50, 35, 15])[0]
    if v10 and framing == "chunked":
        framing = "length"
    if s.kind == "bad_chunk":
        v10, framing = False, "chunked"
    if s.kind == "stray_after" and framing == "close":
        framing = "length"
    if s.kind == "fault_mid_body" and framing == "none":
        framing = "length"

    body = payload(rng, f"{rid}/{attempt}", body_size(rng))
    if s.kind == "fault_mid_body" and framing == "length" and not body:
        s.kind = "fault_mid_head"
    if head_only or framing == "none":
        sent_body = b""
    else:
        sent_body = body
    reason = rng.choice([b"OK", b"", b"Whatever Reason", b"\xe9t\xe9"]) if rng.random() < 0.2 \
        else {200: b"OK", 201: b"Created", 206: b"Partial Content", 404: b"Not Found",
              500: b"Internal Server Error", 503: b"Service Unavailable",
              204: b"No Content", 304: b"Not Modified"}[s.status]
    head = [b"HTTP/1.%d %d %s" % (0 if v10 else 1, s.status, reason),
            b"X-Echo: " + rid.encode(), b"X-Echo-Attempt: %d" % attempt]
    for i in range(rng.randint(0, 3)):
        head.append(f"X-O{i}-{rand_token(rng, 1, 6)}: {rand_value(rng)}".encode("latin-1"))
    if rng.random() < 0.2:
        head.append(b"X-Request-Id: origin-" + rid.encode())
    conn_opts = []
    if v10:
        s.keep_open = rng.random() < 0.5 and framing != "close"
        if s.keep_open:
            conn_opts.append(b"keep-alive")
    elif framing == "close" or rng.random() < 0.08:
        s.keep_open = False
        conn_opts.append(b"close")
    if s.keep_open and rng.random() < 0.2:
        # a Keep-Alive hint, honoured: idle connections closed soon, and
        # after a few answers (racing with bulwark's reuse of them)
        t = rng.choice([1, 2])
        head.append(b"Keep-Alive: timeout=%d, max=%d" % (t, rng.randint(1, 5)))
        s.idle_close_s = rng.uniform(0.02, 0.6)
        s.max_left = rng.randint(0, 4)
    if rng.random() < 0.1:
        hop = b"X-Ohop-" + rand_token(rng, 1, 4).encode()
        head.append(hop + b": dropped")
        conn_opts.append(hop)
    if conn_opts:
        head.append(b"Connection: " + b", ".join(conn_opts))
    bounds = []
    if framing == "length" or (framing == "none" and s.status == 304 and rng.random() < 0.5):
        # a 304 may carry the Content-Length the 200 would have (RFC 9110 8.6)
        head.append(b"Content-Length: %d" % len(body))
        encoded = sent_body
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        encoded = b"" if head_only else chunked_encode(rng, sent_body, bounds=bounds)
    else:
        encoded = sent_body
    head_bytes = b"\r\n".join(head) + b"\r\n\r\n"
    interims = b""
    if not v10 and rng.random() < 0.15:
        for _ in range(rng.randint(1, 3)):
            i = rng.choice(INTERIMS)
            interims += i
            st = int(i[9:12])
            if st != 100:
                s.interims.append(st)
    s.any_interim = bool(interims)
    s.framing = framing
    s.body = sent_body
    if framing == "close":
        s.keep_open = False
    s.early = rng.random() < 0.1

    stream = interims + head_bytes + encoded
    hstart = len(interims)
    hend = len(interims) + len(head_bytes)
    if s.kind == "ok":
        s.steps = [("send", stream)]
    elif s.kind == "fault_before_head":
        s.steps = [("rst" if rng.random() < 0.5 else "close",)]
        s.complete = s.head_complete = False
        s.interims, s.body = [], b""
        s.causes = CAUSES_TERMINATED
    elif s.kind == "fault_mid_head":
        cut = rng.randrange(hstart, hend - 1)
        s.steps = [("send", stream[:cut]), ("rst" if rng.random() < 0.5 else "close",)]
        s.complete = s.head_complete = False
        s.body = b""
        s.causes = CAUSES_TERMINATED
    elif s.kind == "fault_mid_body":
        if framing == "close":
            # a reset is never the end of a close-delimited body
            cut = rng.randrange(hend, len(stream) + 1)
            end = ("rst",)
        else:
            cut = rng.randrange(hend, len(stream))
            end = ("rst",) if rng.random() < 0.5 else ("close",)
        s.steps = [("send", stream[:cut]), end]
        s.complete = False
        s.body = decode_prefix(stream[hend:cut], framing)
    elif s.kind == "bad_chunk":
        # a chunk-size line that is not one, where one starts
        cut = hend + rng.choice(bounds)
        s.steps = [("send", stream[:cut] + b"zz\r\n"), ("close",)]
        s.complete = False
        s.body = decode_prefix(stream[hend:cut], framing)
    elif s.kind == "garbage":
        s.steps = [("send", interims + rng.choice(GARBAGE_HEADS)), ("close",)]
        s.complete = s.head_complete = False
        s.body = b""
        s.causes = CAUSES_GARBAGE
    elif s.kind == "stray_after":
        s.steps = [("send", stream)]
    if s.kind in ("ok", "stray_after", "fault_mid_body", "bad_chunk", "fault_mid_head") \
            and rng.random() < 0.15:
        # a stall, far shorter than the timeouts, at a random point
        first = s.steps[0]
        if first[0] == "send" and len(first[1]) > 1:
            at = rng.randrange(1, len(first[1]))
            s.steps[0:1] = [("send", first[1][:at]), ("sleep", rng.uniform(0.01, STALL_MAX_S)),
                            ("send", first[1][at:])]
        else:
            s.steps.insert(0, ("sleep", rng.uniform(0.01, STALL_MAX_S)))
    if s.kind == "stray_after":
        # a whole response, then stray bytes in the same write: whatever
        # bulwark does with them, they must never answer another request.
        # (Stray bytes sent later are indistinguishable from the answer to
        # the connection's next request: no proxy can tell them apart.)
        stray = (b"HTTP/1.1 200 OK\r\nX-Echo: stray-" + rid.encode() +
                 b"\r\nContent-Length: 5\r\n\r\nstray")
        s.steps[-1] = ("send", s.steps[-1][1] + stray)
    if not s.complete:
        s.keep_open = False
    return s


def wait_sent(sock, timeout=5.0):
    """Wait until the peer's kernel has every byte written to sock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
            return
        time.sleep(0.001)


def decode_prefix(data, framing):
    """The body data within a cut-off encoded body."""
    if framing != "chunked":
        return data
    out = bytearray()
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return bytes(out)
        size = int(data[i:j].split(b";")[0].strip(b" \t"), 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2:j + 2 + size]
        if j + 2 + size + 2 > len(data):
            return bytes(out)
        i = j + 2 + size + 2


class Attempt:
    """What the origin saw and did for one attempt of one request."""

    def __init__(self, n, port, script):
        self.n = n
        self.port = port
        self.script = script
        self.body_raw = bytearray()
        self.body_whole = False
        self.conn_ended = False  # bulwark closed the connection during the body


class ScriptedOrigin:
    """An HTTP/1.1 origin on two ports, answering each request from its script
    and checking every request it receives against what the client sent."""

    def __init__(self, seed):
        self.seed = seed
        self.lock = threading.Lock()
        self.sent = {}        # id -> Request (registered before the client sends)
        self.attempts = {}    # id -> [Attempt]
        self.violations = []
        self.idle_closes = 0  # kept-alive connections it closed while idle
        self.socks = set()
        self.closing = False
        self.listeners = []
        self.threads = []
        for _ in range(2):
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", 0))
            ls.listen(256)
            self.listeners.append(ls)
            t = threading.Thread(target=self.accept_loop, args=(ls,), daemon=True)
            t.start()
            self.threads.append(t)

    @property
    def addrs(self):
        return [f"127.0.0.1:{ls.getsockname()[1]}" for ls in self.listeners]

    def violation(self, what, rid=None, **evidence):
        with self.lock:
            if len(self.violations) < MAX_VIOLATIONS:
                self.violations.append(dict(side="origin", what=what, id=rid, **evidence))

    def accept_loop(self, ls):
        port = ls.getsockname()[1]
        while not self.closing:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            with self.lock:
                if self.closing:
                    s.close()
                    return
                self.socks.add(s)
            threading.Thread(target=self.serve, args=(s, port), daemon=True).start()

    def close(self):
        self.closing = True
        for ls in self.listeners:
            ls.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(self, sock, port):
        rd = Reader(sock)
        ctx = {}
        idle_close, max_left = None, None
        try:
            while not self.closing:
                sock.settimeout(idle_close if idle_close is not None else None)
                try:
                    if rd.pos == len(rd.buf):
                        rd.fill()
                except Hang:
                    with self.lock:
                        self.idle_closes += 1
                    return  # idle: the close the Keep-Alive hint announced
                sock.settimeout(HANG_S)
                ctx.clear()
                keep, script = self.serve_one(sock, rd, port, ctx)
                if not keep:
                    return
                if script.idle_close_s is not None:
                    idle_close = script.idle_close_s
                if script.max_left is not None:
                    max_left = script.max_left if max_left is None else min(max_left,
                                                                            script.max_left)
                if max_left is not None:
                    if max_left == 0:
                        with self.lock:
                            self.idle_closes += 1
                        return
                    max_left -= 1
        except (Ended, Hang, OSError):
            pass
        except Bad as e:
            self.violation(f"malformed request from bulwark: {e}", ctx.get("id"),
                           context=dict(ctx), at=bytes(rd.buf[rd.pos:rd.pos + 100]),
                           before=bytes(rd.buf[max(0, rd.pos - 300):rd.pos]))
        finally:
            with self.lock:
                self.socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def serve_one(self, sock, rd, port, ctx):
        """One request: (keep the connection?, its script)."""
        start = rd.pos
        ctx["phase"] = "head"
        line = rd.line()
        m = re.fullmatch(rb"([A-Z]+) (\S+) HTTP/1\.1", line)
        if not m:
            raise Bad(f"request line {line[:100]!r}")
        method, target = m.group(1).decode(), m.group(2).decode("latin-1")
        fields = parse_fields(rd)
        head = bytes(rd.buf[start:rd.pos])
        idm = re.search(r"/fz/([A-Za-z0-9.]+)", target)
        if not idm:
            raise Bad(f"request for {target!r}, not one the client sends")
        rid = idm.group(1)
        with self.lock:
            req = self.sent.get(rid)
            atts = self.attempts.setdefault(rid, [])
            n = len(atts) + 1
            script = make_script(self.seed, rid, n, method)
            att = Attempt(n, port, script)
            atts.append(att)
        ctx.update(id=rid, attempt=n, script=script.summary(), method=method,
                   phase="body" if not script.early else "answer")
        if req is None:
            self.violation("request with an id the client never sent", rid, head=head)
            return False, script
        self.check_head(req, method, target, fields, head)
        te = field(fields, b"transfer-encoding")
        cl = field(fields, b"content-length")
        if not script.early:
            self.read_body(rd, att, te, cl, req)
            if att.conn_ended:
                self.check_body(req, att)
                return False, script
        for step in script.steps:
            if step[0] == "send":
                sock.sendall(step[1])
            elif step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "rst":
                # what was sent must arrive: a reset drops what is still queued
                wait_sent(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.check_body(req, att)
                return False, script
            elif step[0] == "close":
                self.check_body(req, att)
                return False, script
        if script.early:
            self.read_body(rd, att, te, cl, req)
        self.check_body(req, att)
        return script.keep_open and not att.conn_ended, script

    def check_head(self, req, method, target, fields, head):
        def bad(what):
            self.violation(what, req.id, head=head, client_request=req.raw[:2000])
        if req.malformed == "head":
            bad("a malformed request reached the origin")
            return
        if method != req.method or target != req.target:
            bad(f"request line changed: {method} {target!r}, client sent {req.method} "
                f"{req.target!r}")
        hosts = [v for k, v in fields if k == b"host"]
        if len(hosts) != 1:
            bad(f"{len(hosts)} Host fields")
        else:
            want = req.host if req.sent_host or req.target.startswith("http://") else "app"
            if hosts[0].decode("latin-1") != want:
                bad(f"Host {hosts[0]!r}, expected {want!r}")
        for k, _ in fields:
            if k in HOP_BY_HOP and k != b"transfer-encoding":
                bad(f"hop-by-hop field {k.decode()} forwarded")
            if k.decode("latin-1") in req.hop:
                bad(f"field {k.decode()} named by Connection forwarded")
            if k == b"expect":
                bad("Expect forwarded (bulwark answers 100-continue itself)")
        got = {}
        for k, v in fields:
            got.setdefault(k.decode("latin-1"), []).append(v.decode("latin-1"))
        for name, value in req.e2e:
            if value not in got.get(name, []):
                bad(f"end-to-end field {name}: {value!r} not forwarded as sent "
                    f"(got {got.get(name)})")
        rids = got.get("x-request-id", [])
        if len(rids) != 1:
            bad(f"{len(rids)} X-Request-Id fields")
        elif req.client_rid and REQUEST_ID.fullmatch(req.client_rid) and \
                rids[0] != req.client_rid:
            bad(f"X-Request-Id {rids[0]!r}, client sent {req.client_rid!r}")
        elif not REQUEST_ID.fullmatch(rids[0]):
            bad(f"X-Request-Id {rids[0]!r}")
        te, cl = got.get("transfer-encoding"), got.get("content-length")
        if te and cl:
            bad("both Transfer-Encoding and Content-Length")
        if req.chunked and te != ["chunked"]:
            bad(f"a chunked body forwarded with Transfer-Encoding {te}")
        if not req.chunked and req.body_raw and req.malformed is None and \
                cl != [str(len(req.body))]:
            bad(f"Content-Length {cl}, client sent {len(req.body)} bytes")
        if not req.body_raw and (te or (cl and cl != ["0"])):
            bad(f"framing for a request without body: te={te} cl={cl}")

    def read_body(self, rd, att, te, cl, req):
        """The raw body bytes into att.body_raw; stops quietly at the connection's end."""
        try:
            if te is not None:
                start = rd.pos
                try:
                    data = bytearray()
                    read_chunked(rd, data, trailers_ok=True)
                    att.body_whole = True
                finally:
                    att.body_raw += rd.buf[start:rd.pos]
            elif cl is not None:
                n = int(cl)
                while len(att.body_raw) < n:
                    att.body_raw += rd.some(n - len(att.body_raw))
                att.body_whole = True
            else:
                att.body_whole = True
        except Ended:
            att.conn_ended = True
        except Bad as e:
            if req.malformed != "body":
                self.violation(f"malformed chunked request body from bulwark: {e}", req.id,
                               got=bytes(att.body_raw[-300:]), sent_len=len(req.body_raw),
                               got_len=len(att.body_raw))
            raise

    def check_body(self, req, att):
        """A Content-Length body arrives byte for byte. A chunked one arrives re-framed
        by bulwark (RFC 9112 7.1: CRLF line ends, no extensions, no trailer fields):
        its data is the client's data, and its framing is only what bulwark writes."""
        got = bytes(att.body_raw)
        if req.chunked:
            if att.body_whole and not canonical_chunked(got):
                self.violation("chunked request framing not bulwark's own (extensions, "
                               "trailers or bare LF passed through)", req.id, got=got[:300])
            sent, got = req.body, decode_prefix(got, "chunked")
        else:
            sent = req.body_raw
        if req.malformed == "body":
            if not sent.startswith(got):
                self.violation("broken chunked body: the origin got bytes the client did not "
                               "send", req.id, got=got[:300], sent=sent[:300])
            return
        if att.body_whole and got != sent:
            self.violation("request body differs from what the client sent", req.id,
                           got_len=len(got), sent_len=len(sent), got=got[:300], sent=sent[:300])
        elif not att.body_whole and not sent.startswith(got):
            self.violation("partial request body is not a prefix of what the client sent",
                           req.id, got=got[:300], sent=sent[:300])


def canonical_chunked(data):
    """Whether a whole chunked body uses only lower-level framing bulwark writes:
    hex sizes, CRLF line ends, no extensions, an empty trailer section."""
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0 or not re.fullmatch(rb"[0-9a-fA-F]+", data[i:j]):
            return False
        size = int(data[i:j], 16)
        if size == 0:
            return data[j + 2:] == b"\r\n"
        if data[j + 2 + size:j + 4 + size] != b"\r\n":
            return False
        i = j + 4 + size


# ---------------------------------------------------------------- clients

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.violations = []
        self.outcomes = {}  # id -> "relayed" | "cut" | "error" | "unanswered"
        self.known = {}     # KNOWN key -> count
        self.unreached = []  # (req, rid, cause, raw): errors for requests the origin never saw

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def violation(self, what, req=None, resp_raw=None, known=None, **evidence):
        with self.lock:
            if known and not STRICT:
                self.known[known] = self.known.get(known, 0) + 1
                return
            if known:
                what = f"[known: {known}] {what}"
            if len(self.violations) < MAX_VIOLATIONS:
                v = dict(side="client", what=what, id=req.id if req else None, **evidence)
                if req is not None:
                    v["request"] = req.raw[:1500]
                if resp_raw is not None:
                    v["response"] = resp_raw[:1500]
                self.violations.append(v)


def send_pieces(sock, data, rng_seed, abort):
    """Send data split at random points, with small random delays."""
    rng = random.Random(rng_seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 8))))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    for p in pieces:
        if abort.is_set():
            return
        try:
            sock.sendall(p)
        except OSError:
            return
        if rng.random() < 0.5:
            time.sleep(rng.random() * 0.004)


class Client:
    def __init__(self, k, port, origin, stats, deadline):
        self.k = k
        self.port = port
        self.origin = origin
        self.stats = stats
        self.deadline = deadline
        self.rng = random.Random(f"{SEED}/client/{k}")

    def run(self):
        conn = 0
        while time.monotonic() < self.deadline:
            conn += 1
            try:
                self.connection(conn)
            except Exception as e:  # a bug in the test itself must not pass silently
                self.stats.violation(f"client thread error: {e!r}")
                raise

    def connection(self, conn):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=HANG_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rd = Reader(sock)
        self.prev = None  # the request answered last on this connection
        self.stats.count("connections")
        try:
            for batch in range(self.rng.randint(1, 8)):
                if time.monotonic() >= self.deadline:
                    return
                if not self.batch(sock, rd, f"c{self.k}n{conn}b{batch}"):
                    return
        finally:
            sock.close()

    def batch(self, sock, rd, prefix):
        """A pipelined batch; False when the connection is over."""
        reqs = []
        for i in range(self.rng.choices([1, 2, 3, 4], [55, 20, 15, 10])[0]):
            r = make_request(self.rng, f"{prefix}r{i}")
            reqs.append(r)
            if not r.keep_alive and not r.malformed:
                break  # RFC 9112 9.6: nothing more after asking to close
        with self.origin.lock:
            for r in reqs:
                self.origin.sent[r.id] = r
        data = b"".join(r.raw for r in reqs)
        abort = threading.Event()
        sender = threading.Thread(target=send_pieces,
                                  args=(sock, data, self.rng.randrange(1 << 30), abort),
                                  daemon=True)
        sender.start()
        more = False
        try:
            more = self.read_answers(rd, reqs)
            return more
        finally:
            if not more:
                abort.set()  # the connection is over: stop sending
            sender.join(HANG_S)
            if sender.is_alive():
                self.stats.violation(f"the client could not send its batch within {HANG_S}s",
                                     reqs[0])
                return False

    def read_answers(self, rd, reqs):
        for i, req in enumerate(reqs):
            resp = Response()
            try:
                read_response(rd, req, resp)
            except Hang:
                self.stats.violation(f"no answer within {HANG_S}s", req,
                                     bytes(rd.buf[resp.raw_start:]))
                return False
            except Bad as e:
                self.stats.violation(f"malformed response: {e}", req,
                                     bytes(rd.buf[resp.raw_start:]))
                return False
            except Ended as e:
                self.ended(req, resp, rd, str(e), reqs[i + 1:])
                return False
            raw = bytes(rd.buf[resp.raw_start:rd.pos])
            self.judge(req, resp, raw)
            self.prev = req
            close = resp.get("Connection")
            closing = (close is not None and close.lower() == b"close") or (
                req.minor == 0 and close is None)
            generated = resp.get("X-Echo") is None
            if req.malformed and generated and not closing:
                self.stats.violation("a refused request's answer does not say "
                                     "Connection: close", req, raw)
            if req.close and not closing:
                self.stats.violation("the client asked to close but the answer does not say "
                                     "Connection: close", req, raw)
            if closing or resp.framing == "close":
                if req.malformed == "head" and req.method == "HEAD" and resp.status >= 400:
                    cl = int(resp.get("Content-Length") or 0)
                    extra = rd.buf[rd.pos:rd.pos + cl]
                    try:
                        while len(extra) < cl:
                            rd.fill()
                            extra = rd.buf[rd.pos:rd.pos + cl]
                    except (Ended, Hang):
                        pass
                    if cl and len(extra) == cl and b"request id" in extra:
                        rd.pos += cl
                        self.stats.violation("the error page of a refused HEAD has a body", req,
                                             raw, known="refused_head_gets_body")
                if not rd.at_eof():
                    self.stats.violation("bytes after a Connection: close answer", req,
                                         bytes(rd.buf[resp.raw_start:]))
                for later in reqs[i + 1:]:
                    self.unanswered(later)
                return False
        return True

    def unanswered(self, req):
        with self.stats.lock:
            self.stats.outcomes[req.id] = "unanswered"
        self.stats.count("unanswered (after a close)")

    def ended(self, req, resp, rd, how, later):
        """The connection ended before req's answer was whole."""
        raw = bytes(rd.buf[resp.raw_start:])
        if rd.reset and resp.get("X-Echo") == req.id.encode() and later and \
                self.origin_answered_whole(req):
            # the known bug: a later request's abort reset the connection
            self.stats.violation("a response was destroyed by a reset, with pipelined requests "
                                 "sent behind it", req, raw, known="close_resets_pipelined")
            with self.stats.lock:
                for r in [req] + later:
                    self.stats.outcomes[r.id] = "reset"
            return
        for r in later:
            self.unanswered(r)
        if resp.status is None:
            # no final head: the connection went away between answers, or
            # mid-way through an interim
            with self.stats.lock:
                self.stats.outcomes[req.id] = "unanswered"
            if raw:
                self.stats.violation(f"connection {how} in the middle of a response head", req,
                                     raw)
            else:
                self.stats.count("closed between answers")
            return
        if resp.get("X-Echo") is None:
            self.stats.violation(f"connection {how} in the middle of bulwark's own answer",
                                 req, raw)
            return
        with self.stats.lock:
            self.stats.outcomes[req.id] = "cut"
        self.stats.count("cut mid-body")
        self.judge_relayed(req, resp, raw)

    def origin_answered_whole(self, req):
        with self.origin.lock:
            atts = self.origin.attempts.get(req.id)
            return bool(atts) and atts[-1].script.complete

    def judge(self, req, resp, raw):
        with self.stats.lock:
            self.stats.outcomes[req.id] = "relayed" if resp.get("X-Echo") is not None \
                else "error"
        ps = resp.text("Proxy-Status") or ""
        if resp.get("X-Echo") is None and "error=http_request_error" in ps and \
                req.malformed is None:
            # a well-formed request refused: the connection lost its framing
            # (a body left in the buffer, parsed as a request)
            self.stats.violation(f"a well-formed request refused with {resp.status}", req, raw,
                                 previous=self.prev.raw[:600] if self.prev else None)
            return
        xrid = resp.text("X-Request-Id")
        if xrid is None or not REQUEST_ID.fullmatch(xrid):
            self.stats.violation(f"X-Request-Id {xrid!r} on an answer", req, raw)
        elif req.client_rid and REQUEST_ID.fullmatch(req.client_rid) and \
                req.malformed != "head" and xrid != req.client_rid:
            self.stats.violation(f"X-Request-Id {xrid!r}, the client sent {req.client_rid!r}",
                                 req, raw)
        if req.minor == 0 and resp.interims:
            self.stats.violation("1xx sent to an HTTP/1.0 client", req, raw)
        if resp.get("X-Echo") is not None:
            self.stats.count("relayed whole")
            self.judge_relayed(req, resp, raw)
        else:
            self.judge_generated(req, resp, raw)

    def judge_relayed(self, req, resp, raw):
        echo = resp.text("X-Echo")
        if echo != req.id:
            self.stats.violation(f"answer echoes request {echo!r}: it belongs to another "
                                 "request", req, raw)
            return
        if req.malformed == "head":
            self.stats.violation("a malformed request was answered by the origin", req, raw)
            return
        n = int(resp.text("X-Echo-Attempt") or 0)
        with self.origin.lock:
            atts = list(self.origin.attempts.get(req.id, []))
        if not 1 <= n <= len(atts):
            self.stats.violation(f"answer from attempt {n}, the origin saw {len(atts)}", req,
                                 raw)
            return
        if n != len(atts):
            self.stats.violation(f"attempt {len(atts)} was made after attempt {n} answered",
                                 req, raw)
        s = atts[n - 1].script
        if resp.status != s.status:
            self.stats.violation(f"status {resp.status}, the origin sent {s.status}", req, raw,
                                 script=s.summary())
        if req.minor == 1:
            interims = [st for st in resp.interims if st != 100]
            if interims != s.interims:
                self.stats.violation(f"interims {interims}, the origin sent {s.interims}", req,
                                     raw, script=s.summary())
        if resp.complete:
            want = b"" if req.method == "HEAD" else s.body
            if not s.complete:
                known = "http10_cut_looks_whole" if req.minor == 0 and \
                    resp.framing == "close" and s.body.startswith(bytes(resp.body)) else \
                    "reset_after_write_error_looks_clean" if s.early and \
                    s.framing == "close" and s.body == bytes(resp.body) else None
                self.stats.violation("a cut response was relayed as whole", req, raw,
                                     script=s.summary(), got_len=len(resp.body),
                                     origin_len=len(want), known=known)
            elif bytes(resp.body) != want:
                self.stats.violation("relayed body differs from the origin's", req, raw,
                                     script=s.summary(), got_len=len(resp.body),
                                     origin_len=len(want))
        else:
            if s.complete and not (req.malformed == "body" or s.early):
                self.stats.violation("a whole response was cut", req, raw, script=s.summary(),
                                     got_len=len(resp.body))
            if not s.body.startswith(bytes(resp.body)):
                self.stats.violation("cut body is not a prefix of the origin's", req, raw,
                                     script=s.summary())

    def judge_generated(self, req, resp, raw):
        ps = resp.text("Proxy-Status")
        self.stats.count(f"generated {resp.status}")
        if ps is None:
            self.stats.violation(f"a {resp.status} with neither X-Echo (relayed) nor "
                                 "Proxy-Status (generated)", req, raw)
            return
        m = re.match(r"bulwark; error=([a-z_]+)", ps)
        if not m:
            self.stats.violation(f"Proxy-Status {ps!r}", req, raw)
            return
        cause = m.group(1)
        if req.malformed == "head":
            if resp.status not in (400, 501, 505) or cause != "http_request_error":
                self.stats.violation(f"malformed request answered {resp.status} {cause}", req,
                                     raw)
            return
        if req.malformed == "body":
            return  # refused when found, or answered: anything well-formed will do
        with self.origin.lock:
            atts = list(self.origin.attempts.get(req.id, []))
        if not atts:
            # judged at the end, from the access log's evidence
            with self.stats.lock:
                self.stats.unreached.append((req, resp.text("X-Request-Id"), resp.status, cause,
                                             raw))
            return
        s = atts[-1].script
        known = None
        if s.head_complete and cause == "connection_terminated":
            known = "early_response_lost" if s.early else \
                "interim_then_eof" if s.any_interim else None
        if s.complete:
            self.stats.violation(f"{resp.status} {cause} although the origin answered attempt "
                                 f"{len(atts)} whole", req, raw, script=s.summary(), known=known)
        elif s.head_complete:
            self.stats.violation(f"{resp.status} {cause} after the origin sent a whole head "
                                 f"(attempt {len(atts)})", req, raw, script=s.summary(),
                                 known=known)
        elif cause not in s.causes:
            self.stats.violation(f"{resp.status} {cause}, expected one of {sorted(s.causes)}",
                                 req, raw, script=s.summary())


# ---------------------------------------------------------------- the test

def judge_unreached(stats, access_log, error_log, idle_closes):
    """Errors for requests that never reached the origin. The only honest one
    is a request that met a stale pooled connection (the origin closes idle
    kept-alive connections, as servers do) and that bulwark may not send again
    (RFC 9110 9.2.2: not idempotent, or its body already left bulwark's buffer).
    A request without body and with an idempotent method gets the free retry
    on a new connection. bulwark's evidence does not say which failed attempt
    ran on a pooled connection (known bug failed_attempt_not_marked_reused), so
    such errors are bounded by the number of kept-alive connections the origin
    closed."""
    records = {}
    with open(access_log, errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            records[rec.get("rid")] = rec
    with open(error_log, errors="replace") as f:
        free_retried = set(re.findall(r"\[info\] pooled connection .* sending the request again "
                                      r"on a new connection rid=(\S+)", f.read()))
    stale = 0
    for req, rid, status, cause, raw in stats.unreached:
        rec = records.get(rid)
        if rec is None:
            stats.violation(f"{status} {cause} although no attempt reached the origin, and no "
                            f"access-log line for rid {rid}", req, raw)
            continue
        atts = rec.get("attempt_details") or []
        evidence = dict(attempts=json.dumps(atts))
        if cause != "connection_terminated" or not atts:
            stats.violation(f"{status} {cause} although no attempt reached the origin", req, raw,
                            **evidence)
        elif req.method == "POST" or req.body_raw:
            stale += 1
        elif len(atts) >= 2 and rid in free_retried:
            stats.violation(f"{status} {cause}: the free retry met a stale pooled connection too",
                            req, raw, known="free_retry_reuses_pool", **evidence)
        else:
            stats.violation(f"{status} {cause} although no attempt reached the origin, and the "
                            "request could be sent again", req, raw, **evidence)
    stats.count("502 on a stale pooled connection, not replayable", stale)
    if stale > idle_closes:
        stats.violation(f"{stale} requests met a stale pooled connection, but the origin closed "
                        f"only {idle_closes} kept-alive connections")


def metrics(port):
    return fetch(port, "/metrics").data.decode()


def gauges(text):
    """(client connections, upstream connections, {server: in-flight})"""
    cc = re.search(r"^bulwark_client_connections (\S+)$", text, re.M)
    uc = re.search(r"^bulwark_upstream_connections (\S+)$", text, re.M)
    inflight = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^bulwark_upstream_in_flight\{.*server="([^"]+)".*\} (\S+)$', text, re.M)}
    return float(cc.group(1)), float(uc.group(1)), inflight


def wait_metrics(port, cond, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        text = metrics(port)
        if cond(*gauges(text)):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"seed={SEED}: {what} within {timeout}s:\n" + "\n".join(
                l for l in text.splitlines() if "connections" in l or "in_flight" in l))
        time.sleep(0.05)


def proc_usage(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def is_sanitized():
    with open(BIN, "rb") as f:
        return b"__asan_init" in f.read()


SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def format_violation(v):
    out = []
    for k, val in v.items():
        if isinstance(val, (bytes, bytearray)):
            val = repr(bytes(val))
        out.append(f"  {k}: {val}")
    return "\n".join(out)


def test_request_path_fuzz(bulwark, tmp_path):
    origin = ScriptedOrigin(SEED)
    admin = socket.socket()
    admin.bind(("127.0.0.1", 0))
    admin_port = admin.getsockname()[1]
    admin.close()
    servers = ", ".join(f'"{a}"' for a in origin.addrs)
    access_log = tmp_path / "access.log"
    b = bulwark(f'workers: 2\nlisten: ["127.0.0.1:{{port}}"]\n'
                f'admin: "127.0.0.1:{admin_port}"\nshutdown_timeout: 10s\n'
                f'upstreams:\n  app:\n    servers: [{servers}]\n'
                f'    connect_timeout: 5s\n    read_timeout: {READ_TIMEOUT_S}s\n'
                f'    send_timeout: 10s\n    retries: 1\n    keepalive: 16\n'
                f'routes:\n  - upstream: app\n'
                f'log:\n  access: {access_log}\n  error: {tmp_path / "error.log"}\n'
                f'  format: json\n')
    stats = Stats()
    try:
        rss0, fds0 = proc_usage(b.pid)
        print(f"seed={SEED} seconds={SECONDS} conns={CONNS} bin={BIN}")
        deadline = time.monotonic() + SECONDS
        clients = [Client(k, b.port, origin, stats, deadline) for k in range(CONNS)]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        for t in threads:
            t.start()
        rss_mid = None
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
            if rss_mid is None and time.monotonic() > deadline - SECONDS * 2 / 3:
                rss_mid = proc_usage(b.pid)[0]
            if time.monotonic() > deadline + HANG_S * 3:
                break
        assert not any(t.is_alive() for t in threads), \
            f"seed={SEED}: a client thread still runs {HANG_S * 3}s after the deadline"
        assert b.proc.poll() is None, f"seed={SEED}: bulwark died:\n{b.output()[-5000:]}"

        # every request the origin received was answered (or cut mid-body)
        with origin.lock:
            reached = {rid for rid, atts in origin.attempts.items() if atts}
        for rid in sorted(reached):
            if stats.outcomes.get(rid) == "unanswered":
                stats.violation("the origin received a request whose answer never came",
                                origin.sent.get(rid))

        # quiesce: no client connection, nothing in flight, then no upstream connection
        # once the origin has closed them all
        text = wait_metrics(admin_port, lambda cc, uc, inf: cc == 0 and all(
            v == 0 for v in inf.values()), "client connections and in-flight back to 0")
        _, _, inflight = gauges(text)
        assert len(inflight) == 2, f"seed={SEED}: in-flight gauges {inflight}"
        origin.close()
        wait_metrics(admin_port, lambda cc, uc, inf: uc == 0,
                     "upstream connections back to 0 after the origin closed them")
        # the admin listener lingers briefly after each answer (its last
        # /metrics connection): wait for the count to settle, not for a fixed time
        deadline = time.monotonic() + 10
        rss1, fds1 = proc_usage(b.pid)
        while fds1 > fds0 and time.monotonic() < deadline:
            time.sleep(0.05)
            rss1, fds1 = proc_usage(b.pid)
    finally:
        origin.close()
    judge_unreached(stats, access_log, tmp_path / "error.log", origin.idle_closes)

    violations = origin.violations + stats.violations
    summary = (f"seed={SEED} (BULWARK_FUZZ_SEED={SEED} to replay) counts="
               f"{json.dumps(stats.counts, sort_keys=True)} requests_at_origin="
               f"{sum(len(a) for a in origin.attempts.values())} rss {rss0 >> 20}->"
               f"{(rss_mid or 0) >> 20}->{rss1 >> 20} MiB fds {fds0}->{fds1}")
    known = "".join(f"\n  known bug, {n} times: {KNOWN[k]}" for k, n in sorted(stats.known.items()))
    summary += known
    print(summary)
    if violations:
        report = tmp_path / "violations.txt"
        report.write_text("\n\n".join(format_violation(v) for v in violations))
        raise AssertionError(f"{summary}\n{len(violations)} invariant violations (all in "
                             f"{report}); the first:\n\n" +
                             "\n\n".join(format_violation(v) for v in violations[:6]))
    assert stats.counts.get("relayed whole", 0) >= 50, f"too little traffic: {summary}"

    assert fds1 <= fds0, f"fd count grew {fds0} -> {fds1}: {summary}"
    # RSS: the block free lists and allocator arenas settle early; a leak per
    # request keeps growing. An ASan build keeps freed memory in quarantine.
    bound = (320 if is_sanitized() else 48) << 20
    assert rss1 - (rss_mid or rss0) <= bound, f"RSS grew beyond {bound >> 20} MiB: {summary}"

    rc = b.stop()
    out = b.output()
    report = SANITIZER_REPORT.search(out)
    assert not report, f"seed={SEED}: sanitizer report:\n{out[max(0, report.start() - 200):][:8000]}"
    assert rc == 0, f"seed={SEED}: bulwark exited {rc} on SIGTERM:\n{out[-3000:]}"


# ---------------------------------------------------------------- minimal reproductions
#
# One per known bug the fuzz run found (KNOWN above). Each asserts the right
# behaviour and is expected to fail until the bug is fixed; strict, so a fix
# shows up as XPASS: then drop the marker and the KNOWN entry.

def serve_raw(handler, rcvbuf=None):
    """A listener on 127.0.0.1 calling handler(sock, n) for the n-th connection
    (from 0) in a thread of its own; returns (address, requests seen, stop)."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    seen = []

    def run():
        n = 0
        while True:
            try:
                s, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=guarded, args=(s, n), daemon=True).start()
            n += 1

    def guarded(s, n):
        try:
            handler(s, n, seen)
        except OSError:
            pass
        finally:
            s.close()

    threading.Thread(target=run, daemon=True).start()
    return f"127.0.0.1:{ls.getsockname()[1]}", seen, ls.close


def read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise Ended("closed")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def config_for(addr, extra_upstream="", tmp_path=None):
    text = (f'workers: 1\nlisten: ["127.0.0.1:{{port}}"]\n'
            f'upstreams:\n  app:\n    servers: ["{addr}"]\n    retries: 0\n{extra_upstream}'
            f'routes:\n  - upstream: app\n')
    if tmp_path is not None:
        text += (f'log:\n  access: {tmp_path / "access.log"}\n  error: {tmp_path / "error.log"}\n'
                 f'  format: json\n')
    return text


def client_exchange(port, data, timeout=10.0, pause=None):
    """Send data, read until the connection ends or stays quiet for timeout;
    (bytes received, reset?)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rd = Reader(c)
    c.sendall(data)
    if pause:
        pause(c)
    try:
        while True:
            rd.fill()
    except (Ended, Hang):
        pass
    finally:
        c.close()
    return bytes(rd.buf), rd.reset


def test_repro_interim_then_close(bulwark):
    got_head, go = threading.Event(), threading.Event()

    def handler(s, n, seen):
        read_head(s)
        got_head.set()
        go.wait(10)
        s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    addr, _, stop = serve_raw(handler)
    try:
        b = bulwark(config_for(addr))
        c = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert got_head.wait(10)
        # the 103, the final answer and the close all wait for bulwark at once
        with stopped(b, lambda: go.set() or not upstream_established(port_of(addr))):
            pass
        got = read_to_end(c)
        assert got.startswith(b"HTTP/1.1 103 "), got
        assert b"HTTP/1.1 200 OK\r\n" in got and got.endswith(b"\r\n\r\nhello"), got
    finally:
        stop()


def test_repro_http10_cut_body_ends_with_fin(bulwark):
    def handler(s, n, seen):
        read_head(s)
        s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    addr, _, stop = serve_raw(handler)
    try:
        b = bulwark(config_for(addr))
        got, reset = client_exchange(b.port, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
        assert got.endswith(b"\r\n\r\nhello"), got
        # close-delimited: only a reset tells the HTTP/1.0 client the body is cut
        assert reset, f"the cut body ended with a FIN, as a whole one does: {got!r}"
    finally:
        stop()


def test_repro_refused_head_gets_no_body(bulwark):
    addr, _, stop = serve_raw(lambda s, n, seen: None)
    try:
        b = bulwark(config_for(addr))
        got, _ = client_exchange(b.port, b"HEAD / HTTP/1.1\r\nHost: a\r\nX-Bad : x\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), got
        assert body == b"", f"a response to HEAD carries {len(body)} body bytes: {got!r}"
    finally:
        stop()


def keepalive_then_drop(s, n, seen):
    """First request of a connection: answered, kept alive (after a pause, so
    that concurrent requests need connections of their own). Any later one: the
    connection is closed unanswered, as a server closing it while idle does."""
    head, _ = read_head(s)
    seen.append((n, head.split(b"\r\n")[0]))
    time.sleep(0.3)
    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    try:
        read_head(s)
    except Ended:
        return


def test_repro_free_retry_takes_a_new_connection(bulwark):
    addr, seen, stop = serve_raw(keepalive_then_drop)
    try:
        b = bulwark(config_for(addr, "    keepalive: 8\n"))
        req = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        # two requests at once: two upstream connections, both pooled after
        out = [None, None]
        ts = [threading.Thread(target=lambda i=i: out.__setitem__(
            i, client_exchange(b.port, req))) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert all(o and o[0].startswith(b"HTTP/1.1 200 ") for o in out), out
        assert len(seen) == 2, seen
        # both pooled connections are stale now: the first try on one of them
        # fails, the free retry must take a new connection
        got, _ = client_exchange(b.port, req)
        assert got.startswith(b"HTTP/1.1 200 "), got
    finally:
        stop()


def test_repro_failed_attempt_evidence_marks_reused(bulwark, tmp_path):
    addr, seen, stop = serve_raw(keepalive_then_drop)
    try:
        b = bulwark(config_for(addr, "    keepalive: 8\n", tmp_path))
        got, _ = client_exchange(b.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 "), got
        # a POST is not sent again: it fails on the stale pooled connection
        got, _ = client_exchange(b.port, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                                         b"Connection: close\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 502 "), got
        deadline = time.monotonic() + 10
        rec = None
        while rec is None and time.monotonic() < deadline:
            with open(tmp_path / "access.log") as f:
                recs = [json.loads(l) for l in f if '"POST"' in l]
            rec = recs[0] if recs else None
            time.sleep(0.05)
        assert rec, "no access-log line for the POST"
        assert rec["attempt_details"][0]["reused"] is True, rec["attempt_details"]
    finally:
        stop()


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def unread(sock):
    """Bytes waiting in sock's receive queue."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


class stopped:
    """with stopped(b, ready): bulwark is stopped (SIGSTOP) until ready()
    returns true, so that all that ready() waits for reaches it at once."""

    def __init__(self, b, ready, timeout=10.0):
        self.b, self.ready, self.timeout = b, ready, timeout

    def __enter__(self):
        self.b.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: all_stopped(self.b.pid), "bulwark did not stop")
            wait_for(self.ready, "the condition bulwark was stopped for", self.timeout)
        except BaseException:
            self.b.proc.send_signal(signal.SIGCONT)
            raise

    def __exit__(self, *exc):
        self.b.proc.send_signal(signal.SIGCONT)


def all_stopped(pid):
    """Every thread of pid is stopped (a signal's delivery is asynchronous)."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return bool(states) and all(st == "T" for st in states)


def read_to_end(c):
    rd = Reader(c)
    try:
        while True:
            rd.fill()
    except (Ended, Hang):
        pass
    c.close()
    return bytes(rd.buf)


def upstream_established(origin_port):
    """Established connections to origin_port, from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        rows = [l.split() for l in f.readlines()[1:]]
    return [r for r in rows if r[3] == "01" and int(r[2].split(":")[1], 16) == origin_port]



def test_failed_body_write_does_not_desync(bulwark):
    """Found by the fuzz run: a request body queued for an upstream whose write
    then failed stayed in the client buffer while the connection was kept
    alive, and was parsed as the client's next requests (request smuggling: a
    POST body carrying requests had them forwarded)."""
    got_head, reset_now = threading.Event(), threading.Event()

    def handler(s, n, seen):
        head, _ = read_head(s)
        seen.append(head.split(b"\r\n")[0])
        if n == 0:
            got_head.set()
            reset_now.wait(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!")
    addr, seen, stop = serve_raw(handler)
    origin_port = int(addr.split(":")[1])
    try:
        b = bulwark(config_for(addr))
        inner = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        body = inner * (60000 // len(inner))
        c = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        c.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert got_head.wait(10), "the head did not reach the origin"
        # While bulwark is stopped, the body arrives and then the upstream
        # resets: when it resumes, it queues the whole body (the last piece)
        # and its write fails.
        b.proc.send_signal(signal.SIGSTOP)
        try:
            c.sendall(body)
            reset_now.set()
            wait_for(lambda: not upstream_established(origin_port), "no reset")
        finally:
            b.proc.send_signal(signal.SIGCONT)
        rd = Reader(c)
        try:
            while True:
                rd.fill()
        except (Ended, Hang):
            pass
        c.close()
        got = bytes(rd.buf)
        assert got.startswith(b"HTTP/1.1 502 "), got[:300]
        assert got.count(b"HTTP/1.1 ") == 1, f"more than one answer to one request: {got[:600]!r}"
        assert not any(b"/smuggled" in line for line in seen), \
            f"the request body was forwarded as requests: {seen[:5]}"
    finally:
        stop()


def test_repro_abort_keeps_earlier_responses(bulwark):
    big = 300_000

    def handler(s, n, seen):
        buf = b""
        while True:
            head, buf = read_head(s, buf)
            if b" /big " in head.split(b"\r\n")[0]:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big)
                continue
            # a response cut mid-body: bulwark aborts the client connection
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
            time.sleep(0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
    addr, _, stop = serve_raw(handler)
    try:
        b = bulwark(config_for(addr))

        def slow_reader(c):
            # a third request arrives after bulwark read the first two; the
            # client reads slowly, so /big's tail is still in bulwark's socket
            time.sleep(0.2)
            c.sendall(b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.5)
        got, _ = client_exchange(b.port, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n"
                                         b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n", pause=slow_reader)
        head, _, rest = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), got[:300]
        assert len(rest) >= big, f"the whole /big response was sent, {len(rest)} of {big} " \
                                 "body bytes arrived"
    finally:
        stop()


def post_streaming(port, size, timeout=10.0):
    """POST a body of size bytes from a thread of its own (bulwark may stop
    reading it); return (bytes received until the end or quiet, reset?)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send():
        try:
            c.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = b"z" * 65536
            for _ in range(size // len(chunk)):
                c.sendall(chunk)
        except OSError:
            pass
    t = threading.Thread(target=send, daemon=True)
    t.start()
    rd = Reader(c)
    try:
        while True:
            rd.fill()
    except (Ended, Hang):
        pass
    finally:
        c.close()
        t.join(timeout)
    return bytes(rd.buf), rd.reset


def test_repro_early_response_then_reset_is_relayed(bulwark):
    full, go = threading.Event(), threading.Event()

    def handler(s, n, seen):
        read_head(s)
        # wait until bulwark's body writes are blocked: the body fills the
        # pipe (the receive queue stops growing; how far depends on the kernel)
        deadline = time.monotonic() + 10
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline and unread(s) < 1 << 20:
            n = unread(s)
            if n != last:
                last, still_since = n, time.monotonic()
            elif n > 0 and time.monotonic() - still_since > 0.5:
                break
            time.sleep(0.01)
        full.set()
        go.wait(10)
        # answers without reading the body (as a 403 or 413 does), then resets
        s.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\n"
                  b"denied")
        wait_sent(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    addr, _, stop = serve_raw(handler)
    try:
        b = bulwark(config_for(addr))
        out = []
        t = threading.Thread(target=lambda: out.append(post_streaming(b.port, 16 << 20, timeout=3)),
                             daemon=True)
        t.start()
        assert full.wait(20), "the origin's receive buffer did not fill"
        # the answer and the reset arrive together, while a body write waits
        with stopped(b, lambda: go.set() or not upstream_established(port_of(addr))):
            pass
        t.join(20)
        got = out[0][0]
        assert got.startswith(b"HTTP/1.1 403 "), got[:400]
    finally:
        stop()


def test_repro_reset_seen_by_write_is_not_a_clean_end(bulwark):
    def handler(s, n, seen):
        read_head(s)
        # an early answer, close-delimited, while the body still comes...
        s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1-")
        time.sleep(0.5)
        # ...then more of it and a reset: the body is cut, not ended
        s.sendall(b"part2")
        wait_sent(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    addr, _, stop = serve_raw(handler)
    try:
        b = bulwark(config_for(addr))
        got, _ = post_streaming(b.port, 8 << 20, timeout=5)
        assert got.startswith(b"HTTP/1.1 200 "), got[:400]
        assert b"Transfer-Encoding: chunked" in got, got[:400]
        assert not got.endswith(b"\r\n0\r\n\r\n"), \
            f"a body cut by a reset ends with the last chunk: {got[-200:]!r}"
    finally:
        stop()
