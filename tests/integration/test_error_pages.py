"""What a client sees of a gateway error: a body in the format its Accept asks for
(HTML for browsers, JSON for APIs, plain text otherwise), a custom page per status
from config, and details (internal addresses, errno) only with errors.expose_details."""
import json

from conftest import simple_config
from origins import free_port
from origins.faulty import fetch

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def dead_config(extra_top=""):
    return simple_config([f"127.0.0.1:{free_port()}"], extra_upstream="    retries: 0\n",
                         extra_top=extra_top)


def test_browser_gets_a_self_contained_html_page(bulwark):
    b = bulwark(dead_config())
    resp = fetch(b.port, "/x", headers=[("Accept", BROWSER)])
    assert resp.status == 502
    assert resp.get("content-type") == "text/html; charset=utf-8"
    rid = resp.get("x-request-id")
    page = resp.data.decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "502 Bad Gateway" in page and "connection_refused" in page and rid in page
    assert "Nothing is listening" in page
    for external in ("http://", "https://", "src=", "<link"):
        assert external not in page


def test_api_client_gets_json(bulwark):
    b = bulwark(dead_config())
    resp = fetch(b.port, "/x", headers=[("Accept", "application/json")])
    assert resp.status == 502
    assert resp.get("content-type") == "application/json"
    assert json.loads(resp.data) == {"status": 502, "error": "connection_refused",
                                     "request_id": resp.get("x-request-id")}


def test_anything_else_gets_plain_text(bulwark):
    b = bulwark(dead_config())
    for accept in (None, "*/*", "image/png"):
        resp = fetch(b.port, "/x", headers=[("Accept", accept)] if accept else [])
        assert resp.status == 502
        assert resp.get("content-type") == "text/plain; charset=utf-8"
        assert resp.data.startswith(b"502 Bad Gateway\nconnection_refused\n")
        assert resp.get("x-request-id").encode() in resp.data


def test_details_are_hidden_by_default(bulwark):
    b = bulwark(dead_config())
    resp = fetch(b.port, "/x", headers=[("Accept", "application/json")])
    assert "details" not in json.loads(resp.data)
    assert "details=" not in resp.get("proxy-status")


def test_details_are_shown_when_exposed(bulwark):
    b = bulwark(dead_config("errors: {expose_details: true}\n"))
    resp = fetch(b.port, "/x", headers=[("Accept", "application/json")])
    body = json.loads(resp.data)
    assert body["details"], body
    assert "; details=\"" in resp.get("proxy-status")


def test_custom_page_per_status(bulwark, tmp_path):
    page = tmp_path / "502.html"
    page.write_text("<html><body>We are fixing it. Quote {{request_id}} ({{error}}, "
                    "{{status}})</body></html>")
    b = bulwark(dead_config(f"errors:\n  pages:\n    502: {page}\n"))
    resp = fetch(b.port, "/x", headers=[("Accept", BROWSER)])
    assert resp.status == 502
    rid = resp.get("x-request-id")
    assert resp.data.decode() == (f"<html><body>We are fixing it. Quote {rid} "
                                  "(connection_refused, 502)</body></html>")
    # An API client still gets JSON.
    resp = fetch(b.port, "/x", headers=[("Accept", "application/json")])
    assert json.loads(resp.data)["error"] == "connection_refused"
