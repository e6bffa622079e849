#!/usr/bin/env python3
"""A request-logging relay in front of a real OpenBao server, for tests.

OpenBao's own audit devices can only be enabled after init (with the root
token), but the tests must count every request of the installer from the
first `sys/init` on. So the installer talks to this relay, which forwards
each request unchanged to OpenBao and logs method, path and status. It also
keeps the root token from the `sys/init` answer, so the test can read what
the installer wrote (the test has no other way to learn it before the
installer's output files exist).

Control endpoints (not forwarded): GET /_relay/requests, POST /_relay/reset-log,
GET /_relay/root-token.

Crash injection, as the GitLab stand-in's: POST /_relay/hold {"method",
"path": <regex matched against the whole path, without the query>} arms a
hold on the next matching request. That request is forwarded and carried
out by OpenBao as usual (and logged), then its answer is held back - the
connection stays open with nothing sent - until POST /_relay/release, or
until the client goes away (it was killed: the answer is dropped), or
300 s. With "before": true the request itself is held instead, before it
is forwarded: it reaches OpenBao only on release, and never if the client
goes away first ("the request never got there"). GET /_relay/held lists
the requests held so far ({method, path, status (null while not
forwarded), forwarded, client_gone}); client_gone turns true once the
relay saw the client's side close, so a test can wait for the kill to
have landed.

Run: vault_relay.py --upstream http://127.0.0.1:PORT --port-file F
"""
import argparse, json, os, re, select, socket, threading, time, urllib.error, urllib.request
from standin_http import QuietHandler, QuietServer, publish_port

ap = argparse.ArgumentParser()
ap.add_argument("--upstream", required=True)
ap.add_argument("--port-file", required=True)
args = ap.parse_args()
LOCK = threading.Lock()
LOG = []
ROOT = [""]
HOLDS = []      # armed holds: {"method", "path" (compiled regex)}
HELD = []       # requests whose answer was held back
RELEASE = threading.Event()
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Relay(QuietHandler):
    protocol_version = "HTTP/1.1"

    def any(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        path = self.path.split("?")[0]
        if path.startswith("/_relay/"):
            with LOCK:
                if path == "/_relay/requests":
                    return self.reply(200, json.dumps(LOG).encode())
                if path == "/_relay/reset-log":
                    LOG.clear()
                    return self.reply(200, b"{}")
                if path == "/_relay/root-token":
                    return self.reply(200, ROOT[0].encode())
                if path == "/_relay/held":
                    return self.reply(200, json.dumps(HELD).encode())
                if path == "/_relay/hold" and self.command == "POST":
                    try:
                        body = json.loads(raw)
                        HOLDS.append({"method": body["method"].upper(), "path": re.compile(body["path"]),
                                      "before": bool(body.get("before", False))})
                    except (ValueError, KeyError, TypeError, re.error) as e:
                        return self.reply(400, ("bad hold: %r" % e).encode())
                    RELEASE.clear()
                    return self.reply(200, b"{}")
                if path == "/_relay/release" and self.command == "POST":
                    RELEASE.set()
                    return self.reply(200, json.dumps({"held": len(HELD)}).encode())
            return self.reply(404, b"")
        received = time.time()
        with LOCK:
            early = take_hold(self.command, path, before=True)
            if early is not None:
                entry = {"method": self.command, "path": path, "status": None, "forwarded": False,
                         "client_gone": False}
                HELD.append(entry)
        if early is not None and not self.wait_release_or_client_gone():
            with LOCK:
                entry["client_gone"] = True
            self.close_connection = True
            return
        req = urllib.request.Request(args.upstream + self.path, data=raw if raw else None, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in HOP:
                req.add_header(k, v)
        try:
            resp = urllib.request.urlopen(req, timeout=60)
            code, body, headers = resp.status, resp.read(), resp.getheaders()
        except urllib.error.HTTPError as e:
            code, body, headers = e.code, e.read(), e.headers.items()
        except Exception as e:  # OpenBao down (a restart in progress): what a client would see
            return self.reply(502, str(e).encode())
        if path == "/v1/sys/init" and self.command in ("PUT", "POST") and code == 200:
            try:
                ROOT[0] = json.loads(body).get("root_token", "")
            except ValueError:
                pass
        with LOCK:
            LOG.append({"time": received, "method": self.command, "path": path, "status": code})
            if early is not None:
                entry.update(status=code, forwarded=True)
            held = take_hold(self.command, path, before=False)
            if held is not None:
                entry = {"method": self.command, "path": path, "status": code, "forwarded": True,
                         "client_gone": False}
                HELD.append(entry)
        if held is not None:
            # Done by OpenBao, and nobody is told: wait for the test to let
            # the answer go or for the client to die waiting.
            if not self.wait_release_or_client_gone():
                with LOCK:
                    entry["client_gone"] = True
                self.close_connection = True
                return
        self.reply(code, body, [(k, v) for k, v in headers if k.lower() not in HOP])

    def wait_release_or_client_gone(self):
        """True once released; False when the client closed its side first (or after 300 s).

        The client is looked at before the release each time round, and once
        more after it: a test kills the installer and then releases at once,
        and the kill's FIN is already here by then, so a release must never
        win against a client that is gone (that would carry out a request
        nobody is waiting for, e.g. Vault's init with its keys lost)."""
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.client_gone():
                return False
            if RELEASE.wait(0.05):
                return not self.client_gone()
        return False

    def client_gone(self):
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = any

    def do_LIST(self):
        self.any()


def take_hold(method, path, before):
    """The armed hold (of the request if `before`, else of its answer) this
    request matches, disarmed; None if none does."""
    for h in HOLDS:
        if h["before"] == before and h["method"] == method and h["path"].fullmatch(path):
            HOLDS.remove(h)
            return h
    return None


server = QuietServer(("127.0.0.1", 0), Relay)
server.label = "vault relay"
publish_port(server, args.port_file)
server.serve_forever()
