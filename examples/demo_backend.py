#!/usr/bin/python3
"""A tiny HTTP/1.1 backend for the bulwark demo (scripts/demo.sh). Python stdlib only.

usage: demo_backend.py PORT [NAME]

Listens on 127.0.0.1:PORT and answers:
  /        a short page naming this backend (HTML for browsers, plain text otherwise)
  /slow    the same after sleeping 2 s
  /crash   nothing: the whole process exits at once (os._exit), so the proxy sees the
           connection close before a response header and answers 502 with a Proxy-Status
           cause; later requests to this port are refused (connection_refused).
"""
import html
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
NAME = sys.argv[2] if len(sys.argv) > 2 else f"backend-{PORT}"
STARTED = time.time()


def log(msg):
    print(f"[{NAME} :{PORT}] {msg}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so bulwark can pool upstream connections
    server_version = "demo-backend"
    # Header and body go out in two writes: without TCP_NODELAY the body waits for the
    # proxy's delayed ACK (~40 ms) on a reused connection.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # bulwark's access log already shows every request
        pass

    def answer(self, send_body):
        path = self.path.split("?", 1)[0]
        if path == "/crash":
            log(f"{self.command} /crash: exiting now, without answering")
            os._exit(3)
        # a request body (POST, PUT) is read and ignored, so the connection stays usable
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        slept = ""
        if path == "/slow":
            time.sleep(2)
            slept = " after sleeping 2 s"
        via = self.headers.get("Via", "-")
        fwd = self.headers.get("X-Forwarded-For", "-")
        text = (f"Hello from {NAME} (127.0.0.1:{PORT}, pid {os.getpid()}){slept}.\n"
                f"You asked for {self.command} {self.path}; Via: {via}; X-Forwarded-For: {fwd}\n")
        if "text/html" in self.headers.get("Accept", ""):
            body = ("<!doctype html><meta charset=utf-8><title>bulwark demo</title>\n"
                    f"<h1>{html.escape(NAME)}</h1>\n<pre>{html.escape(text)}</pre>\n"
                    "<p>Reload to see the other backend answer (round robin). Try "
                    '<a href="/slow">/slow</a>; <a href="/crash">/crash</a> stops a backend.</p>\n'
                    ).encode()
            ctype = "text/html; charset=utf-8"
        else:
            body = text.encode()
            ctype = "text/plain; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", NAME)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def do_POST(self):
        self.answer(True)

    do_PUT = do_DELETE = do_POST


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    try:
        srv = Server(("127.0.0.1", PORT), Handler)
    except OSError as e:
        log(f"cannot listen on 127.0.0.1:{PORT}: {e.strerror}")
        sys.exit(1)
    log("listening")
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
