"""What bulwark changes in a forwarded message: hop-by-hop fields removed,
X-Forwarded-*, Via; and what it must not change: the request-target."""
import pytest

from conftest import simple_config
from origins import client, read_request, read_response


def echo(b, raw):
    """Send a raw request, return (response, what the origin saw)."""
    c = client(b.port)
    c.sock.sendall(raw)
    r = read_response(c)
    assert r.status == 200, r
    return r, r.json()


def names(data):
    return [k.lower() for k, _ in data["headers"]]


def values(data, name):
    return [v for k, v in data["headers"] if k.lower() == name.lower()]


HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "proxy-connection", "upgrade",
              "x-named-in-connection", "x-also-named"]


def test_hop_by_hop_request_headers_are_removed(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    r, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n"
                   b"Connection: keep-alive, X-Named-In-Connection\r\n"
                   b"Connection: X-Also-Named\r\n"
                   b"X-Named-In-Connection: secret\r\n"
                   b"X-Also-Named: secret2\r\n"
                   b"Keep-Alive: timeout=5, max=100\r\n"
                   b"TE: trailers\r\n"
                   b"Trailer: X-Checksum\r\n"
                   b"Proxy-Connection: keep-alive\r\n"
                   b"Upgrade: h2c\r\n"
                   b"X-End-To-End: kept\r\n\r\n")
    seen = names(d)
    for h in HOP_BY_HOP:
        assert h not in seen, f"{h} forwarded: {d['headers']}"
    assert values(d, "X-End-To-End") == ["kept"]
    assert values(d, "Host") == ["t"]


def test_connection_named_headers_case_insensitive(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    r, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: x-FOO\r\n"
                   b"X-Foo: 1\r\nx-foo: 2\r\nX-Foobar: kept\r\n\r\n")
    assert "x-foo" not in names(d)
    assert values(d, "X-Foobar") == ["kept"]


def test_hop_by_hop_response_headers_are_removed(bulwark, origin):
    def handler(c, o):
        read_request(c)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                       b"Connection: X-Upstream-Private\r\n"
                       b"X-Upstream-Private: internal\r\n"
                       b"Keep-Alive: timeout=60\r\n"
                       b"Proxy-Connection: keep-alive\r\n"
                       b"Trailer: X-T\r\n"
                       b"Upgrade: h2c\r\n"
                       b"X-Public: yes\r\n\r\nok")
        c.read_some(1)

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.body == b"ok"
    got = [k.lower() for k, _ in r.headers]
    for h in ("x-upstream-private", "keep-alive", "proxy-connection", "trailer", "upgrade"):
        assert h not in got, f"{h} relayed to the client: {r.headers}"
    assert all(v.lower() in ("close", "keep-alive") for v in r.all("Connection")), r.headers
    assert r.header("X-Public") == "yes"


def test_x_forwarded_for_is_appended(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
    assert values(d, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert values(d, "X-Forwarded-For") == ["127.0.0.1"]


def test_x_forwarded_for_keeps_every_earlier_hop(bulwark, origin):
    """Two X-Forwarded-For lines are one list (RFC 9110 5.3): none is dropped."""
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.1\r\n"
                   b"X-Forwarded-For: 203.0.113.7, 192.0.2.9\r\n\r\n")
    joined = ", ".join(values(d, "X-Forwarded-For"))
    assert joined == "198.51.100.1, 203.0.113.7, 192.0.2.9, 127.0.0.1", d["headers"]


def test_x_forwarded_proto_and_host_are_set_not_trusted(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: shop.example:8080\r\n"
                   b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\r\n")
    assert values(d, "X-Forwarded-Proto") == ["http"]
    assert values(d, "X-Forwarded-Host") == ["shop.example:8080"]
    assert values(d, "Host") == ["shop.example:8080"]


def test_via_is_added_both_ways(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    r, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert values(d, "Via") == ["1.1 bulwark"]
    assert r.header("Via") == "1.1 bulwark"
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\nVia: 1.0 fred\r\n\r\n")
    assert values(d, "Via") == ["1.0 fred, 1.1 bulwark"]
    _, d = echo(b, b"GET /echo HTTP/1.0\r\n\r\n")
    assert values(d, "Via") == ["1.0 bulwark"]
    assert d["version"] == "HTTP/1.1"


def test_via_keeps_every_earlier_hop(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\nVia: 1.0 fred\r\nVia: 1.1 cdn\r\n\r\n")
    assert ", ".join(values(d, "Via")) == "1.0 fred, 1.1 cdn, 1.1 bulwark", d["headers"]


def test_via_from_the_upstream_is_kept(bulwark, origin):
    def handler(c, o):
        read_request(c)
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 cdn\r\n\r\nok")
        c.read_some(1)

    o = origin(handler)
    b = bulwark(simple_config([o.addr]))
    c = client(b.port)
    c.sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    via = ", ".join(r.all("Via"))
    assert "1.1 cdn" in via and "bulwark" in via
    assert via.index("1.1 cdn") < via.index("bulwark")


@pytest.mark.parametrize("target", [
    b"/a/../b/%2e%2E/?q=%20&x",
    b"/%2F%2f//double//slash/./?a=b&a=c#frag",
    b"/caf%C3%A9/%00/%zz?%%",
    b"/echo;matrix=1/x?y=~!$'()*+,;=:@",
    b"http://example.com/x/../y?z=%41",
    b"http://Example.COM:8080",
])
def test_request_target_is_forwarded_byte_for_byte(bulwark, origin, target):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert d["target"].encode() == target


def test_header_values_are_forwarded_unchanged(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    _, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n"
                   b"Cookie: a=1; b=\"x y\"\r\nX-Dup: one\r\nX-Dup: two\r\n"
                   b"X-Latin1: caf\xe9\r\nUser-Agent: test/1.0 (tab\there)\r\n\r\n")
    assert values(d, "Cookie") == ['a=1; b="x y"']
    assert values(d, "X-Dup") == ["one", "two"]
    assert values(d, "X-Latin1") == ["caf\xe9"]
    assert values(d, "User-Agent") == ["test/1.0 (tab\there)"]


@pytest.mark.parametrize("switch,header", [
    ("x_forwarded_for", "X-Forwarded-For"),
    ("x_forwarded_proto", "X-Forwarded-Proto"),
    ("x_forwarded_host", "X-Forwarded-Host"),
    ("via", "Via"),
])
def test_each_forwarded_switch_turns_its_header_off(bulwark, origin, switch, header):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top=f"forwarded:\n  {switch}: false\n"))
    r, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert header.lower() not in names(d), d["headers"]
    if header == "Via":
        assert r.header("Via") is None
    # the others stay on
    others = {"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via"} - {header}
    for h in others:
        assert h.lower() in names(d), f"{h} missing with only {switch} off"


def test_all_forwarded_switches_off(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr], extra_top="forwarded:\n  x_forwarded_for: false\n"
                              "  x_forwarded_proto: false\n  x_forwarded_host: false\n"
                              "  via: false\n"))
    r, d = echo(b, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    for h in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"):
        assert h not in names(d)
    assert r.header("Via") is None
