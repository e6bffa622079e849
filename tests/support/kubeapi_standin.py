#!/usr/bin/env python3
"""STAND-IN for a Kubernetes API server (none can be installed here), for the
core/v1 resources the K3s path uses: namespaces, nodes, configmaps, secrets,
services, pods. It enforces the parts of the real contract the product and
the K3s stand-in rely on, and rejects what the real API rejects:

* `Authorization: Bearer <token>` required (401 Status otherwise);
* server-side apply: PATCH with `application/apply-patch+yaml` and a
  `fieldManager` query parameter (400 without); creates or updates;
* merge patches (`application/merge-patch+json`,
  `application/strategic-merge-patch+json`); other patch types 415;
* namespaced objects need their namespace (404 NotFound otherwise);
  body kind/name must match the URL (400);
* resourceVersion bumps on every change; unknown resources 404;
* GET /_standin/requests: ordered log of every request (no auth), for tests.

Run: kubeapi_standin.py --port-file F --token T [--state-file S]
"""
import argparse, json, threading, time, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs

CLUSTER = {"namespaces": "Namespace", "nodes": "Node"}
NAMESPACED = {"configmaps": "ConfigMap", "secrets": "Secret", "services": "Service", "pods": "Pod"}
LOCK = threading.Lock()
STORE = {}  # (resource, ns, name) -> object
LOG = []
VERSION = [0]


def status(code, reason, message):
    return code, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}


def merge(dst, src):
    for k, v in src.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path == "/_standin/requests":
            with LOCK:
                return self.send(200, LOG)
        code, body = self.route(method, url.path, q, raw)
        with LOCK:
            LOG.append({"method": method, "path": url.path, "query": url.query,
                        "content_type": self.headers.get("Content-Type", ""), "status": code, "time": time.time()})
        self.send(code, body)

    def route(self, method, path, q, raw):
        if self.headers.get("Authorization") != "Bearer " + ARGS.token:
            return status(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return 200, {"major": "1", "minor": "27", "gitVersion": "v1.27.4-standin"}
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v1"]:
            return status(404, "NotFound", "the server could not find the requested resource")
        rest = parts[2:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            return status(404, "NotFound", "no resource")
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
        kinds = NAMESPACED if ns is not None else CLUSTER
        if resource not in kinds:
            return status(404, "NotFound", "the server could not find the requested resource (%s)" % resource)
        kind = kinds[resource]
        with LOCK:
            if ns is not None and ("namespaces", None, ns) not in STORE:
                return status(404, "NotFound", 'namespaces "%s" not found' % ns)
            key = (resource, ns, name)
            if method == "GET" and name is None:
                items = [o for (r, n, _), o in sorted(STORE.items(), key=lambda kv: str(kv[0])) if r == resource and (ns is None or n == ns)]
                return 200, {"apiVersion": "v1", "kind": kind + "List", "metadata": {"resourceVersion": str(VERSION[0])}, "items": items}
            if method == "GET":
                if key not in STORE:
                    return status(404, "NotFound", '%s "%s" not found' % (resource, name))
                return 200, STORE[key]
            if method == "POST" and name is None:
                obj = self.body(raw)
                if obj is None:
                    return status(400, "BadRequest", "body is not JSON")
                name = obj.get("metadata", {}).get("name")
                if not name or obj.get("kind") != kind:
                    return status(400, "BadRequest", "body must be a %s with metadata.name" % kind)
                key = (resource, ns, name)
                if key in STORE:
                    return status(409, "AlreadyExists", '%s "%s" already exists' % (resource, name))
                return 201, self.save(key, obj, ns)
            if method == "PATCH" and name:
                ctype = self.headers.get("Content-Type", "")
                patch = self.body(raw)
                if patch is None:
                    return status(400, "BadRequest", "patch body is not JSON")
                if ctype == "application/apply-patch+yaml":
                    if not q.get("fieldManager"):
                        return status(400, "BadRequest", "fieldManager is required for apply patch")
                    if patch.get("kind") != kind or patch.get("metadata", {}).get("name") != name:
                        return status(400, "BadRequest", "the name/kind in the body does not match the URL")
                    base = json.loads(json.dumps(STORE.get(key, {})))
                    return (200 if key in STORE else 201), self.save(key, merge(base, patch), ns)
                if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    if key not in STORE:
                        return status(404, "NotFound", '%s "%s" not found' % (resource, name))
                    return 200, self.save(key, merge(json.loads(json.dumps(STORE[key])), patch), ns)
                return status(415, "UnsupportedMediaType", "unsupported patch type %r" % ctype)
            if method == "DELETE" and name:
                if key not in STORE:
                    return status(404, "NotFound", '%s "%s" not found' % (resource, name))
                obj = STORE.pop(key)
                if resource == "namespaces":
                    for k in [k for k in STORE if k[1] == name]:
                        STORE.pop(k)
                self.persist()
                return 200, obj
        return status(405, "MethodNotAllowed", "%s not allowed here" % method)

    def body(self, raw):
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def save(self, key, obj, ns):
        VERSION[0] += 1
        meta = obj.setdefault("metadata", {})
        meta["name"] = key[2]
        if ns is not None:
            meta["namespace"] = ns
        meta["resourceVersion"] = str(VERSION[0])
        meta.setdefault("uid", "uid-%d" % VERSION[0])
        obj.setdefault("apiVersion", "v1")
        if key[0] == "namespaces":
            obj.setdefault("status", {})["phase"] = "Active"
        STORE[key] = obj
        self.persist()
        return obj

    def persist(self):
        if ARGS.state_file:
            with open(ARGS.state_file + ".tmp", "w") as f:
                json.dump([[list(k), v] for k, v in STORE.items()], f)
            import os
            os.replace(ARGS.state_file + ".tmp", ARGS.state_file)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--state-file")
    ARGS = p.parse_args()
    if ARGS.state_file:
        try:
            with open(ARGS.state_file) as f:
                for k, v in json.load(f):
                    STORE[tuple(k)] = v
        except OSError:
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    server.serve_forever()
