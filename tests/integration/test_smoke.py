"""The basic path: one request through bulwark reaches the origin and comes back."""
import json
import urllib.request

from conftest import simple_config


def test_get_is_proxied_to_the_origin(bulwark, origin):
    o = origin()
    b = bulwark(simple_config([o.addr]))
    with urllib.request.urlopen(b.url("/echo?x=1")) as resp:
        assert resp.status == 200
        data = json.loads(resp.read())
    assert data["method"] == "GET"
    assert data["target"] == "/echo?x=1"
    names = [k.lower() for k, _ in data["headers"]]
    assert "x-forwarded-for" in names and "via" in names
    b.wait_log(r'"GET /echo\?x=1 HTTP/1.1" 200 .* upstream=' + o.addr, what="access")
