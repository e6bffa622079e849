"""The HTTP plumbing every Python stand-in shares, so each file holds only
what it stands in for: a handler that keeps request lines off stderr (they
may carry tokens), reads chunked or sized bodies and answers with a length;
a threading server whose connection errors are named without a traceback
or request data; TLS from a PEM pair; and the port written atomically to the
file the Rust side waits on (tests/support/port_file.rs)."""

import os
import ssl
import sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def read_body(self):
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, data=b"", headers=()):
        """Answer `status` with `data` (bytes) and `headers` (pairs or a
        dict); a HEAD request gets the headers only."""
        self.send_response(status)
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    label = "stand-in"

    def handle_error(self, request, client_address):
        # A client killed mid-answer (crash tests) is expected: name the
        # error only, no traceback, no request data (it may carry tokens).
        sys.stderr.write("%s: connection error: %s\n" % (self.label, sys.exc_info()[0].__name__))


def server_tls(cert, key, minimum=None, alpn=None):
    """A server-side TLS context for the PEM pair."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if minimum is not None:
        ctx.minimum_version = minimum
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def publish_port(server, port_file):
    """Write the port the server listens on where the test waits for it,
    atomically, so the test never reads half a number."""
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
