"""Routing: host (exact, wildcard, any), longest path prefix, file order on
ties, and 404 destination_not_found when nothing matches."""
import pytest

from origins import client, read_response


def config(upstreams, routes):
    """upstreams: {name: origin}; routes: list of (host or None, path or None, upstream)."""
    text = 'workers: 1\nlisten: ["127.0.0.1:{port}"]\nupstreams:\n'
    for name, o in upstreams.items():
        text += f'  {name}:\n    servers: ["{o.addr}"]\n'
    text += "routes:\n"
    for host, path, up in routes:
        match = []
        if host:
            match.append(f'host: "{host}"')
        if path:
            match.append(f'path: "{path}"')
        text += "  - "
        if match:
            text += "match: { " + ", ".join(match) + " }\n    "
        text += f"upstream: {up}\n"
    return text


def fetch(b, host, target="/echo"):
    c = client(b.port)
    c.sock.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                   b"\r\n\r\n")
    return read_response(c)


def landed(b, origins_by_port, host, target="/echo"):
    """Which upstream name served the request."""
    r = fetch(b, host, target)
    assert r.status == 200, r
    d = r.json()
    assert d["target"] == target
    return origins_by_port[d["port"]]


@pytest.fixture
def three(origin):
    os_ = {"a": origin(), "b": origin(), "c": origin()}
    return os_, {o.port: name for name, o in os_.items()}


def test_exact_host_routes(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("api.example.com", None, "a"), ("www.example.com", None, "b"),
                             (None, None, "c")]))
    assert landed(b, by_port, "api.example.com") == "a"
    assert landed(b, by_port, "www.example.com") == "b"
    assert landed(b, by_port, "other.example.com") == "c"
    # any case, any port, a trailing dot
    assert landed(b, by_port, "API.Example.COM") == "a"
    assert landed(b, by_port, "api.example.com:8443") == "a"
    assert landed(b, by_port, "api.example.com.") == "a"


def test_wildcard_host(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("*.example.com", None, "a"), (None, None, "c")]))
    assert landed(b, by_port, "x.example.com") == "a"
    assert landed(b, by_port, "a.b.example.com") == "a"
    assert landed(b, by_port, "X.EXAMPLE.com:80") == "a"
    # the wildcard needs a label before the suffix, and a whole suffix
    assert landed(b, by_port, "example.com") == "c"
    assert landed(b, by_port, "badexample.com") == "c"
    assert landed(b, by_port, "example.com.evil.net") == "c"


def test_exact_host_beats_wildcard_beats_any(bulwark, three):
    os_, by_port = three
    # deliberately listed from least to most specific
    b = bulwark(config(os_, [(None, None, "c"), ("*.example.com", None, "b"),
                             ("api.example.com", None, "a")]))
    assert landed(b, by_port, "api.example.com") == "a"
    assert landed(b, by_port, "web.example.com") == "b"
    assert landed(b, by_port, "example.org") == "c"


def test_longer_wildcard_suffix_wins(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("*.example.com", None, "a"), ("*.api.example.com", None, "b")]))
    assert landed(b, by_port, "v1.api.example.com") == "b"
    assert landed(b, by_port, "api.example.com") == "a"


def test_longest_path_prefix_wins(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [(None, "/", "c"), (None, "/api/", "a"), (None, "/api/v2/", "b")]))
    assert landed(b, by_port, "t", "/api/v2/users") == "b"
    assert landed(b, by_port, "t", "/api/v2/") == "b"
    assert landed(b, by_port, "t", "/api/v1/users") == "a"
    assert landed(b, by_port, "t", "/api/") == "a"
    assert landed(b, by_port, "t", "/api") == "c"
    assert landed(b, by_port, "t", "/apix") == "c"
    assert landed(b, by_port, "t", "/") == "c"
    # the query is not part of the path
    assert landed(b, by_port, "t", "/api?x=/api/v2/") == "c"
    assert landed(b, by_port, "t", "/api/v2?x") == "a"


def test_path_match_is_case_sensitive_and_not_decoded(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [(None, "/", "c"), (None, "/api/", "a")]))
    assert landed(b, by_port, "t", "/API/x") == "c"
    assert landed(b, by_port, "t", "/%61pi/x") == "c"


def test_first_route_in_file_wins_on_equal_match(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("h.example", "/p/", "b"), ("h.example", "/p/", "a"),
                             (None, "/q/", "a"), (None, "/q/", "b"), (None, "/", "c")]))
    assert landed(b, by_port, "h.example", "/p/1") == "b"
    assert landed(b, by_port, "x", "/q/1") == "a"


def test_host_and_path_together(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("api.example.com", "/v2/", "b"), ("api.example.com", None, "a"),
                             (None, "/v2/", "c")]))
    assert landed(b, by_port, "api.example.com", "/v2/x") == "b"
    assert landed(b, by_port, "api.example.com", "/v1/x") == "a"
    assert landed(b, by_port, "www.example.com", "/v2/x") == "c"


def test_absolute_form_target_routes_by_its_authority(bulwark, three):
    """RFC 9112 3.2.2: the authority of an absolute-form target replaces Host."""
    os_, by_port = three
    b = bulwark(config(os_, [("api.example.com", None, "a"), (None, None, "c")]))
    c = client(b.port)
    c.sock.sendall(b"GET http://api.example.com/echo HTTP/1.1\r\nHost: other.example\r\n\r\n")
    r = read_response(c)
    assert r.status == 200
    assert by_port[r.json()["port"]] == "a"


def test_http10_without_host_uses_the_hostless_route(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("api.example.com", None, "a"), (None, None, "c")]))
    c = client(b.port)
    c.sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
    r = read_response(c)
    assert r.status == 200 and by_port[r.json()["port"]] == "c"


def test_no_matching_route_is_404_destination_not_found(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [("api.example.com", None, "a"), ("*.shop.example", "/cart/", "b")]))
    for host, target in [("www.example.com", "/echo"), ("x.shop.example", "/echo"),
                         ("shop.example", "/cart/1")]:
        r = fetch(b, host, target)
        assert r.status == 404, (host, target, r)
        assert r.header("Proxy-Status", "").startswith("bulwark; error=destination_not_found")
        assert b"destination_not_found" in r.body
        assert r.header("X-Request-Id")
    assert all(o.requests == [] for o in os_.values())
    b.wait_log(r'"GET /cart/1 HTTP/1.1" 404 .* upstream=- .*error=destination_not_found',
               what="access")


def test_404_keeps_the_connection_usable(bulwark, three):
    os_, by_port = three
    b = bulwark(config(os_, [(None, "/api/", "a")]))
    c = client(b.port)
    c.sock.sendall(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(c).status == 404
    c.sock.sendall(b"GET /api/echo HTTP/1.1\r\nHost: t\r\n\r\n")
    r = read_response(c)
    assert r.status == 200 and r.json()["target"] == "/api/echo"


def test_404_for_a_request_with_a_body(bulwark, three):
    """The unread body must not be taken for the next request."""
    os_, by_port = three
    b = bulwark(config(os_, [(None, "/api/", "a")]))
    c = client(b.port)
    inner = b"GET /api/smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    c.sock.sendall(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(inner) +
                   inner)
    r = read_response(c)
    assert r.status == 404
    assert r.header("Connection", "").lower() == "close"
    c.sock.settimeout(2)
    rest = b""
    try:
        while True:
            d = c.sock.recv(65536)
            if not d:
                break
            rest += d
    except (OSError, TimeoutError):
        pass
    assert b"HTTP/1.1 200" not in rest
    assert os_["a"].requests == []
