"""Regressions of the old request engine, one test per reported bug, each driven
through the real binary with raw sockets against origins on 127.0.0.1.

Every test here FAILED against the old engine (the build before "Request engine v2",
BULWARK_BIN=/work/wt-old/bulwark) and passes against engine v2 (make -j2 all;
BULWARK_BIN=$PWD/bulwark). Checked on 2026-12-03; what the old engine did:

  test_1_request_header_over_64k_is_431...        no response within 5 s (worker stuck)
  test_2_response_head_near_the_limit...           65,450-byte head: a cut 200 head ran
                                                   into a 502 page on the same connection
  test_2_five_16k_early_hints...                   the fifth 103 head was cut short and a
                                                   502 page followed it on the connection
  test_3_request_head_at_the_limit...              origin got "X-Forwarded-Hostx-Injected"
                                                   and "X-Also": body bytes as header lines
  test_4_chunked_body...[second_server]            origin got an empty POST + GET /smuggled
  test_4_chunked_body...[stale_pooled_connection]  the same, on the stale-pool retry
  test_5_bytes_after_a_response...                 second client got "junk!"
  test_6_failed_uploads...                         in-flight 1 after a client closed
                                                   mid-upload (also after 408, bad chunk, 413)
  test_7_absolute_form...                          origin got Host: internal.example; and
                                                   "http://public.example?x=/b" went to /b
  test_8_reset_during_a_close_delimited_body...    the cut body ended with 0\r\n\r\n
  test_9_host_is_always_forwarded                  no Host upstream (both cases)
  test_11_lone_refusing_server_is_tried_once       three connect attempts (attempt=3)
  test_11_lone_blackholed_server_times_out_once    504 after 3.0 s (connect_timeout 1s)
  test_12_dripping_response_head...                no response within 5 s

Bugs found in engine v2 itself are in test_engine_v2_findings.py.
"""
import json
import re
import socket
import threading
import time

import pytest

from conftest import simple_config
from origins import client, free_port, iter_body, read_request, read_response, wait_for
from origins.faulty import Blackhole, fetch, record, reset, wait_peer_close

BIG_HEADERS = "client:\n  max_header_size: 64k\n"


def proxy_status_error(resp):
    m = re.search(r"error=([a-z_]+)", resp.header("Proxy-Status") or "")
    return m.group(1) if m else None


def send_quietly(sock, data):
    """sendall that tolerates the proxy having closed (it may refuse early)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False



def serve_loop(answer):
    """A keep-alive origin handler: answer(c, o, method, target, headers, body) per
    request (body read whole first); answer returns False to close."""
    def handler(c, o):
        while True:
            method, target, _v, headers = read_request(c)
            body = b"".join(iter_body(c, headers))
            record(o, method, target, headers)
            if answer(c, o, method, target, headers, body) is False:
                return
    return handler


def read_whole(c, what, method="GET"):
    """read_response, with a mangled or missing response as an assertion failure."""
    try:
        return read_response(c, method)
    except (EOFError, ValueError, AssertionError, socket.timeout, ConnectionResetError) as e:
        raise AssertionError(f"{what}: no well-formed response ({e!r}); "
                             f"buffered {c.buf[:120]!r}...")


def ok(c, body, extra=b""):
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body)


# ---------------------------------------------------------------------------
# 1. A request header larger than the buffer with max_header_size: 64k
# ---------------------------------------------------------------------------

def test_1_request_header_over_64k_is_431_and_the_worker_goes_on(bulwark, origin):
    """old engine: the worker spun at 100% CPU on the full buffer; no 431 ever came
    and the next connection was never served (client timed out)."""
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=BIG_HEADERS))
    head = (b"GET /echo HTTP/1.1\r\nHost: test.local\r\n" +
            b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"a" * 1000) for i in range(70)) + b"\r\n")
    assert len(head) > 70000
    c = client(b.port, timeout=5)
    send_quietly(c.sock, head)
    try:
        r = read_response(c)
    except socket.timeout:
        raise AssertionError("no response to a 70 KB header within 5 s")
    assert r.status == 431, r
    assert proxy_status_error(r) == "http_request_error"
    assert not o.requests
    c.sock.close()
    c2 = client(b.port, timeout=5)
    c2.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: test.local\r\n\r\n")
    r2 = read_response(c2)
    assert r2.status == 200 and r2.json()["target"] == "/echo"


# ---------------------------------------------------------------------------
# 2. Response heads near the buffer size; big interim responses
# ---------------------------------------------------------------------------

def head_of_size(n, body=b"hello"):
    """A 200 head of exactly n bytes (CRLFCRLF included), then body."""
    start = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Big: " % len(body)
    pad = n - len(start) - 4
    return start + b"b" * pad + b"\r\n\r\n" + body, pad


def test_2_response_head_near_the_limit_is_whole_or_a_clean_502(bulwark, origin):
    """old engine: at 65,400+ bytes the head plus Via/X-Request-Id/Content-Length/
    Connection was cut short: the client got a truncated head (no 502)."""
    def answer(c, o, method, target, headers, body):
        c.sock.sendall(head_of_size(int(target.strip("/")))[0])
    o = origin(serve_loop(answer))
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 0\n", extra_top=BIG_HEADERS))
    outcomes = {}
    for n in (60000, 65300, 65400, 65450, 65480, 65500, 65520, 65531):
        c = client(b.port, timeout=5)
        c.sock.sendall(b"GET /%d HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n" % n)
        r = read_whole(c, f"head of {n} bytes")
        rest = c.sock.recv(65536)
        assert rest == b"", f"head of {n}: bytes after the response: {rest[:200]!r}"
        if r.status == 200:
            assert r.header("X-Big") == "b" * head_of_size(n)[1], f"head of {n}: X-Big altered"
            assert r.body == b"hello" and r.header("X-Request-Id"), r
            assert r.raw_head.endswith(b"\r\n\r\n") and r.header("Connection") == "close"
        else:
            assert r.status == 502, f"head of {n}: {r!r}"
            assert proxy_status_error(r) == "http_response_header_section_size", r
            assert r.framing == "length" and len(r.body) == int(r.header("Content-Length"))
        outcomes[n] = r.status
    assert outcomes[60000] == 200 and outcomes[65531] == 502, outcomes


def test_2_five_16k_early_hints_then_a_pipelined_request(bulwark, origin):
    """old engine: interims read in one go were appended to one buffer: the fifth
    was cut short, then a 502 page followed it."""
    hints = [b"</hint-%d/" % i + b"h" * 16000 + b">; rel=preload" for i in range(5)]

    def answer(c, o, method, target, headers, body):
        if target == "/early":
            # all in one write: the proxy reads several interims at once
            c.sock.sendall(b"".join(b"HTTP/1.1 103 Early Hints\r\nLink: " + h + b"\r\n\r\n"
                                    for h in hints) +
                           b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nfinal for /early")
        else:
            ok(c, b"final for " + target.encode())
    o = origin(serve_loop(answer))
    b = bulwark(simple_config([o.addr], extra_top=BIG_HEADERS))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"GET /early HTTP/1.1\r\nHost: test.local\r\n\r\n"
                   b"GET /second HTTP/1.1\r\nHost: test.local\r\n\r\n")
    for i, h in enumerate(hints):
        r = read_whole(c, f"interim {i}")
        assert r.status == 103, f"interim {i}: {r!r}"
        assert r.header("Link") == h.decode(), f"interim {i}: Link altered"
    r = read_whole(c, "final response")
    assert r.status == 200 and r.body == b"final for /early", r
    r = read_whole(c, "pipelined response")
    assert r.status == 200 and r.body == b"final for /second", r
    assert [t for _m, t, _h in o.requests] == ["/early", "/second"]


# ---------------------------------------------------------------------------
# 3. A request head at the limit with a hop-by-hop X-Forwarded-For
# ---------------------------------------------------------------------------

def test_3_request_head_at_the_limit_is_forwarded_whole_or_refused(bulwark, origin):
    """old engine: the forwarded head was cut short and the body's bytes became
    header lines upstream (the origin saw X-Injected)."""
    seen = []

    def handler(c, o):
        raw = c.read_until(b"\r\n\r\n", limit=1 << 20)
        lines = raw[:-4].split(b"\r\n")
        headers = [tuple(x.strip() for x in l.split(b":", 1)) for l in lines[1:]]
        cl = int(dict((k.lower(), v) for k, v in headers).get(b"content-length", b"0"))
        body = c.read_exact(cl)
        with o.lock:
            seen.append((raw, headers, body))
        ok(c, b"ok", b"Connection: close\r\n")
        wait_peer_close(c, bound=5.0)
    o = origin(handler)
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 0\n", extra_top=BIG_HEADERS))
    body = b"X-Injected: yes\r\nX-Also: 1\r\n\r\n"
    results = []
    for xff_len in (40, 200, 3000):
        start = (b"POST /upload HTTP/1.1\r\nHost: test.local\r\nConnection: x-forwarded-for\r\n"
                 b"X-Forwarded-For: " + b"1" * xff_len + b"\r\n"
                 b"Content-Length: %d\r\n" % len(body))
        pad = 65535 - len(start) - len(b"X-Pad: \r\n\r\n")
        head = start + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"
        assert len(head) == 65535
        before = len(seen)
        c = client(b.port, timeout=5)
        send_quietly(c.sock, head + body)
        r = read_response(c)
        c.sock.close()
        if r.status == 431:
            results.append(431)
            continue
        assert r.status == 200, r
        raw, headers, got = seen[before]
        names = [k.lower() for k, _v in headers]
        assert b"x-injected" not in names and b"x-also" not in names, f"xff {xff_len}: injected"
        assert all(re.fullmatch(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+", k) for k, _v in headers), \
            f"xff {xff_len}: malformed field names"
        assert dict(headers)[b"X-Pad"] == b"p" * pad
        assert names.count(b"content-length") == 1 and got == body
        assert b"1" * xff_len not in raw, "a hop-by-hop X-Forwarded-For was forwarded"
        results.append(200)
    assert len(results) == 3


# ---------------------------------------------------------------------------
# 4. Replaying a chunked request body after the upstream went away
# ---------------------------------------------------------------------------

CHUNK = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n"
assert len(CHUNK) == 0x26


def smuggling_origin():
    """A handler shared by every connection: the first connection that sees a POST
    reads its head (and what came with it), then closes; every other request is
    decoded and recorded (target, decoded body, bytes after it)."""
    state = {"posts": 0, "closed": threading.Event()}
    log = []

    def handler(c, o):
        while True:
            method, target, _v, headers = read_request(c)
            if method == "POST":
                with o.lock:
                    state["posts"] += 1
                    first = state["posts"] == 1
                if first:
                    # gone before the chunk data: the new engine sends "26\r\n" with the
                    # head, the old one decoded it away and sent the head alone
                    c.sock.close()
                    state["closed"].set()
                    return
            body = b"".join(iter_body(c, headers))
            with o.lock:
                log.append((method, target, body))
            ok(c, b"got " + target.encode())
    return handler, state, log


@pytest.mark.parametrize("how", ["second_server", "stale_pooled_connection"])
def test_4_chunked_body_is_never_replayed_as_framing(bulwark, origin, how):
    """old engine: the retry decoded the chunk data as framing: the origin saw an empty
    POST and then a separate GET /smuggled."""
    handler, state, log = smuggling_origin()
    if how == "second_server":
        o1, o2 = origin(handler), origin(handler)
        b = bulwark(simple_config([o1.addr, o2.addr], extra_upstream="    retries: 2\n"))
    else:
        o1 = origin(handler)
        b = bulwark(simple_config([o1.addr], extra_upstream="    retries: 0\n"))
        warm = fetch(b.port, "/warm")  # leaves one pooled connection
        assert warm.status == 200, warm.head
    c = client(b.port, timeout=5)
    c.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: test.local\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n26\r\n")
    assert state["closed"].wait(5), "the first upstream never saw the POST"
    time.sleep(0.3)  # the bug needs the retry to happen before the chunk data arrives
    send_quietly(c.sock, CHUNK + b"\r\n0\r\n\r\n")
    responses = []
    while True:
        try:
            r = read_response(c)
        except (EOFError, ConnectionResetError, socket.timeout):
            break
        responses.append(r)
        if (r.header("Connection") or "").lower() == "close":
            break
    assert responses, "no response to the POST"
    first = responses[0]
    assert [t for _m, t, _b in log if t == "/smuggled"] == [], f"smuggled: {log!r}"
    posts = [body for m, _t, body in log if m == "POST"]
    if first.status == 200:
        assert posts == [CHUNK], f"the replayed body differs: {log!r}"
    else:
        assert first.status == 502, first
        assert proxy_status_error(first) == "connection_terminated"
        assert posts == [], log
    assert len(responses) == 1, f"more responses than requests: {responses!r}"


# ---------------------------------------------------------------------------
# 5. Unread bytes behind a response must not go to the pool
# ---------------------------------------------------------------------------

JUNK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\njunk!"


def test_5_bytes_after_a_response_that_fills_the_buffer_never_reach_the_next_client(
        bulwark, origin):
    """old engine: the connection was pooled with the junk unread and the second
    client got "junk!" as its response."""
    def answer(c, o, method, target, headers, body):
        if target == "/big":
            # head + body end exactly at 64 KiB, then junk in the same write
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %05d\r\n\r\n" % 0
            n = 65536 - len(head)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %05d\r\n\r\n" % n
            c.sock.sendall(head + b"B" * n + JUNK)
        else:
            ok(c, b"own response for " + target.encode())
    o = origin(serve_loop(answer))
    b = bulwark(simple_config([o.addr]))
    for i in range(5):
        c1 = client(b.port, timeout=5)
        c1.sock.sendall(b"GET /big HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r1 = read_response(c1)
        assert r1.status == 200 and r1.body == b"B" * (65536 - 42), r1
        c2 = client(b.port, timeout=5)
        c2.sock.sendall(b"GET /second-%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % i)
        r2 = read_response(c2)
        assert r2.body == b"own response for /second-%d" % i, f"round {i}: {r2!r}"
        c1.sock.close()
        c2.sock.close()


# ---------------------------------------------------------------------------
# 6. The in-flight gauge after refused or abandoned uploads
# ---------------------------------------------------------------------------

def admin_metrics(port):
    return fetch(port, "/metrics").data.decode()


def in_flight(admin_port):
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'(?m)^bulwark_upstream_in_flight\{[^}]*server="([^"]+)"[^}]*\} (-?\d+)$',
        admin_metrics(admin_port))}


def test_6_failed_uploads_give_their_in_flight_slot_back(bulwark, origin):
    """old engine: bulwark_upstream_in_flight stayed above 0 after these uploads."""
    o1, o2 = origin(), origin()
    admin = free_port()
    b = bulwark(simple_config(
        [o1.addr, o2.addr], extra_upstream="    balance: least_conn\n",
        extra_top=f'admin: "127.0.0.1:{admin}"\nclient:\n  body_timeout: 300ms\n'
                  "  max_body_size: 1k\n"))
    post = b"POST /sink HTTP/1.1\r\nHost: test.local\r\n"

    def wait_started(n):
        wait_for(lambda: len(o1.requests) + len(o2.requests) >= n, "the upstream request")

    def close_mid_upload():
        c = client(b.port)
        c.sock.sendall(post + b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
        wait_started(1)
        c.sock.close()

    def reset_mid_upload():
        c = client(b.port)
        c.sock.sendall(post + b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
        wait_started(2)
        reset(c.sock)

    def body_timeout():
        c = client(b.port)
        c.sock.sendall(post + b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
        wait_started(3)
        assert read_response(c).status == 408

    def bad_chunk():
        c = client(b.port)
        c.sock.sendall(post + b"Transfer-Encoding: chunked\r\n\r\n")
        wait_started(4)
        c.sock.sendall(b"zz\r\n")
        assert read_response(c).status == 400

    def chunked_too_large():
        c = client(b.port)
        c.sock.sendall(post + b"Transfer-Encoding: chunked\r\n\r\n")
        wait_started(5)
        send_quietly(c.sock, b"800\r\n" + b"y" * 0x800 + b"\r\n")
        assert read_response(c).status == 413

    for scenario in (close_mid_upload, reset_mid_upload, body_timeout, bad_chunk,
                     chunked_too_large):
        scenario()
        try:
            wait_for(lambda: in_flight(admin) and not any(in_flight(admin).values()),
                     "in-flight 0", timeout=5)
        except AssertionError:
            raise AssertionError(f"after {scenario.__name__}: in flight {in_flight(admin)}")
    # least_conn is not skewed: sequential requests alternate between the servers
    ports = []
    for i in range(4):
        r = fetch(b.port, f"/echo?i={i}")
        assert r.status == 200, r.head
        ports.append(json.loads(r.data)["port"])
    assert sorted(ports) == sorted([o1.port, o2.port] * 2), ports


# ---------------------------------------------------------------------------
# 7. Absolute-form targets and queries in routing
# ---------------------------------------------------------------------------

def test_7_absolute_form_routes_by_its_authority_and_queries_are_not_paths(bulwark, origin):
    """old engine: "http://public.example?x=/b" took "/b" from the query as its path
    and went to the /b route."""
    pub, internal, a, bb = origin(), origin(), origin(), origin()
    cfg = ('workers: 1\nlisten: ["127.0.0.1:{port}"]\nupstreams:\n'
           f'  pub:\n    servers: ["{pub.addr}"]\n'
           f'  internal:\n    servers: ["{internal.addr}"]\n'
           f'  a:\n    servers: ["{a.addr}"]\n'
           f'  b:\n    servers: ["{bb.addr}"]\n'
           "routes:\n"
           "  - match: { host: public.example, path: /b }\n    upstream: b\n"
           "  - match: { host: public.example }\n    upstream: pub\n"
           "  - match: { host: internal.example }\n    upstream: internal\n"
           "  - match: { path: /b }\n    upstream: b\n"
           "  - match: { path: /a }\n    upstream: a\n")
    b = bulwark(cfg)

    def get(target, host):
        c = client(b.port)
        c.sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host))
        r = read_response(c)
        c.sock.close()
        assert r.status == 200, r
        return r.json()

    e = get(b"http://public.example/", b"internal.example")
    assert e["port"] == pub.port
    assert [v for k, v in e["headers"] if k.lower() == "host"] == ["public.example"]
    e = get(b"http://public.example?x=/b", b"public.example")
    assert e["port"] == pub.port, "the query is not the path"
    e = get(b"/a?x=/b", b"test.local")
    assert e["port"] == a.port
    e = get(b"/b?x=/a", b"test.local")
    assert e["port"] == bb.port
    assert not internal.requests


# ---------------------------------------------------------------------------
# 8. An upstream reset ends a close-delimited body as an abort
# ---------------------------------------------------------------------------

def test_8_reset_during_a_close_delimited_body_aborts_the_client(bulwark, origin):
    """old engine: the reset ended the client's chunked body with a clean 0\\r\\n\\r\\n."""
    seen_body = threading.Event()

    def handler(c, o):
        record(o, *read_request(c)[:2], [])
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"d" * 1000)
        seen_body.wait(5)
        reset(c.sock)
    o = origin(handler)
    b = bulwark(simple_config([o.addr], extra_upstream="    retries: 0\n"))
    c = client(b.port, timeout=5)
    c.sock.sendall(b"GET /x HTTP/1.1\r\nHost: test.local\r\n\r\n")
    head = c.read_until(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head, head
    c.read_until(b"\r\n")  # first chunk-size line
    seen_body.set()
    rest = c.buf
    c.sock.settimeout(5)
    while b"0\r\n\r\n" not in rest:
        try:
            d = c.sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError("the client connection was neither aborted nor ended")
        if not d:
            break
        rest += d
    assert b"0\r\n\r\n" not in rest, f"the truncated body was ended cleanly: {rest[-40:]!r}"
    assert rest.count(b"d") <= 1000


# ---------------------------------------------------------------------------
# 9. Host is always sent upstream
# ---------------------------------------------------------------------------

def test_9_host_is_always_forwarded(bulwark, origin):
    """old engine: "Connection: host" removed Host, and an HTTP/1.0 request without
    Host went upstream without one."""
    o = origin()
    b = bulwark(simple_config([o.addr]))

    def hosts(req):
        c = client(b.port)
        c.sock.sendall(req)
        r = read_response(c)
        c.sock.close()
        assert r.status == 200, r
        return [v for k, v in r.json()["headers"] if k.lower() == "host"]

    assert hosts(b"GET /echo HTTP/1.1\r\nHost: test.local\r\nConnection: host\r\n\r\n") == \
        ["test.local"]
    assert hosts(b"GET /echo HTTP/1.0\r\n\r\n") == ["app"]


# ---------------------------------------------------------------------------
# 11. Retries never hammer a lone server
# ---------------------------------------------------------------------------

def test_11_lone_refusing_server_is_tried_once(bulwark):
    """old engine: retries: 2 connected three times to the one refusing server."""
    dead = f"127.0.0.1:{free_port()}"
    b = bulwark(simple_config([dead], extra_upstream="    retries: 2\n"))
    r = fetch(b.port, "/x")
    assert r.status == 502 and r.get("proxy-status", "").startswith(
        "bulwark; error=connection_refused"), r.head
    rid = r.get("x-request-id")
    b.wait_log(rf"rid={rid}$", what="access")
    attempts = re.findall(rf"(?m)^.*attempt=\d+ .*rid={rid}$", b.error_log())
    assert len(attempts) == 1, attempts


def test_11_lone_blackholed_server_times_out_once(bulwark):
    """old engine: the 504 came after 3 x connect_timeout (three connects)."""
    hole = Blackhole()
    try:
        b = bulwark(simple_config([hole.addr],
                                  extra_upstream="    retries: 2\n    connect_timeout: 1s\n"))
        r = fetch(b.port, "/x")
    finally:
        hole.close()
    assert r.status == 504 and "error=connection_timeout" in r.get("proxy-status", ""), r.head
    assert 0.9 <= r.elapsed < 2.0, f"504 after {r.elapsed:.2f}s with connect_timeout 1s"


# ---------------------------------------------------------------------------
# 12. read_timeout bounds the whole response head
# ---------------------------------------------------------------------------

def test_12_dripping_response_head_gets_504_after_read_timeout(bulwark, origin):
    """old engine: each byte rearmed read_timeout; the client waited for the whole
    drip (no 504 within 5 s)."""
    def handler(c, o):
        record(o, *read_request(c)[:2], [])
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 60:
            try:
                c.sock.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)  # the misbehaviour under test: one byte every 0.2 s
    o = origin(handler)
    b = bulwark(simple_config([o.addr],
                              extra_upstream="    retries: 0\n    read_timeout: 1s\n"))
    try:
        r = fetch(b.port, "/x", timeout=5)
    except socket.timeout:
        raise AssertionError("no response within 5 s with read_timeout 1s")
    assert r.status == 504, (r.head, r.elapsed)
    assert "error=http_response_timeout" in r.get("proxy-status", "")
    assert r.elapsed < 3.0, f"504 after {r.elapsed:.2f}s with read_timeout 1s"
