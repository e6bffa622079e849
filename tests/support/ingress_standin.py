#!/usr/bin/env python3
"""STAND-IN for the platform's ingress (Traefik on the websecure NodePort,
with the services behind it) as the installer's health check sees it; no
Kubernetes, Traefik, Dex or Argo CD can run here. It models:

* TLS: serves HTTPS only, with the certificate and key given (the
  certificate the installer put in Traefik's default TLSStore); a client
  that does not trust it fails the handshake, as against the real ingress
  (logged as a "tls-error" event);
* routing by the Host header (port stripped, case-insensitive), for every
  host alike:
  - GET /.well-known/openid-configuration: Dex's OpenID discovery document
    (the fields Dex v2.3x publishes); `issuer` is `https://<host>` (Dex's
    issuer https://dex.<domain>, no port), or --issuer when given, so a
    test can make the issuer differ from what the client expects;
  - GET /healthz: 200 `ok` (Argo CD's server, the Nautes API server);
  - GET /ping: 200 `ok` (oauth2-proxy);
  - GET /-/readiness: 200 {"status": "ok"} (GitLab);
  - GET /v1/sys/health: 200 {"initialized": true, "sealed": false, ...}
    (an active, unsealed Vault);
  - HEAD of those: the same status and headers, no body;
  - anything else (other paths, other methods): 404 `404 page not found`,
    Traefik's answer when no router matches;
  - a request without a Host header: 400, as HTTP/1.1 requires one;
* the Nautes API server's cluster registration (Cluster_SaveCluster of
  api-server v0.3): /api/v1/clusters/<name> — POST saves (Bearer token
  required, else 401; JSON body with api_server, cluster_kind
  "kubernetes", cluster_type physical|virtual, usage host|worker,
  host_cluster for a virtual cluster, kubeconfig for a physical one, else
  400), GET answers the saved cluster without its kubeconfig (404 when
  unknown), DELETE forgets it (404 when unknown). Nothing checks that the
  token is a real GitLab token or that the API server URL answers;
* a backend that never becomes healthy: every request whose host is named
  by --fail-host (repeatable) gets 503 `Service Unavailable`, Traefik's
  answer when a router's service has no ready endpoint;
* services that run as API stand-ins (Harbor, Nexus): --forward HOST=URL
  (repeatable) passes every request for HOST (method, path and query,
  headers, body) to the plain-HTTP URL and relays the answer, as Traefik
  proxies to a Service, with X-Forwarded-Proto https and
  X-Forwarded-Host HOST. With --routes-file, only while the file (a JSON
  list of host names, which standin_controllers.py's `ingresses`
  controller writes from the cluster's Ingresses routed on websecure)
  lists HOST: before that Traefik has no router for it, and this answers
  404 like any unknown host; a backend that does not answer is 502 `Bad
  Gateway`, as Traefik says.

Every request is appended to --log (when given) as one JSON object per
line: {"time", "method", "host", "path", "status"}; failed TLS handshakes as
{"time", "event": "tls-error", "peer", "error"}.

Run: ingress_standin.py --cert PEM --key PEM --port-file F [--bind 127.0.0.1]
     [--port P] [--log FILE] [--fail-host NAME]... [--issuer URL]
     [--forward HOST=URL]... [--routes-file F]
     (port 0: any free port; the chosen one is written to F)
"""
import argparse, json, ssl, threading, time, urllib.error, urllib.request
from standin_http import QuietHandler, QuietServer, publish_port, server_tls
from urllib.parse import urlsplit

ARGS = None
LOG_LOCK = threading.Lock()
CLUSTERS = {}
CLUSTERS_LOCK = threading.Lock()


def log(entry):
    if not ARGS.log:
        return
    entry = {"time": round(time.time(), 3), **entry}
    with LOG_LOCK, open(ARGS.log, "a") as f:
        f.write(json.dumps(entry) + "\n")


def host_of(header):
    """Host header without its port; None when absent or empty."""
    if not header:
        return None
    h = header.strip().lower()
    if h.startswith("["):  # [v6]:port
        end = h.find("]")
        return h[: end + 1] if end > 0 else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def discovery(issuer):
    """Dex's /.well-known/openid-configuration for `issuer`."""
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/auth",
        "token_endpoint": issuer + "/token",
        "jwks_uri": issuer + "/keys",
        "userinfo_endpoint": issuer + "/userinfo",
        "device_authorization_endpoint": issuer + "/device/code",
        "grant_types_supported": ["authorization_code", "refresh_token",
                                  "urn:ietf:params:oauth:grant-type:device_code"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "scopes_supported": ["openid", "email", "groups", "profile", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "email", "email_verified",
                             "locale", "name", "preferred_username", "at_hash"],
    }


VAULT_HEALTH = {"initialized": True, "sealed": False, "standby": False,
                "performance_standby": False, "replication_performance_mode": "disabled",
                "replication_dr_mode": "disabled", "server_time_utc": 0,
                "version": "1.10.4", "cluster_name": "vault-cluster-standin",
                "cluster_id": "00000000-0000-0000-0000-000000000000"}


FORWARD = {}


def routed(host):
    """Whether Traefik has a router for `host` (always without --routes-file)."""
    if not ARGS.routes_file:
        return True
    try:
        with open(ARGS.routes_file) as f:
            return host in json.load(f)
    except (OSError, ValueError):
        return False


def cluster_problem(body):
    """Why a cluster registration body is refused, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for field in ("api_server", "cluster_kind", "cluster_type", "usage"):
        if not isinstance(body.get(field), str) or not body[field]:
            return f"{field} is required"
    if body["cluster_kind"] != "kubernetes":
        return "cluster_kind must be kubernetes"
    if body["cluster_type"] not in ("physical", "virtual"):
        return "cluster_type must be physical or virtual"
    if body["usage"] not in ("host", "worker"):
        return "usage must be host or worker"
    if body["cluster_type"] == "virtual" and not body.get("host_cluster"):
        return "a virtual cluster needs host_cluster"
    if body["cluster_type"] == "physical" and not body.get("kubeconfig"):
        return "a physical cluster needs its kubeconfig"
    return None


class Handler(QuietHandler):  # stderr stays quiet; the --log file is the record
    server_version = "ingress-standin"
    sys_version = ""

    def answer(self, host, path, status, body, ctype):
        self.reply(status, body if isinstance(body, bytes) else body.encode(), {"Content-Type": ctype})
        log({"method": self.command, "host": host, "path": path, "status": status})

    def route(self):
        path = urlsplit(self.path).path
        host = host_of(self.headers.get("Host"))
        if host is None:
            return self.answer(None, path, 400, "400 Bad Request: missing Host header\n", "text/plain; charset=utf-8")
        if host in ARGS.fail_host:
            return self.answer(host, path, 503, "Service Unavailable", "text/plain; charset=utf-8")
        if host in FORWARD and routed(host):
            return self.forward(host, path)
        if path.startswith("/api/v1/clusters/"):
            return self.clusters(host, path, path[len("/api/v1/clusters/"):])
        if self.command in ("GET", "HEAD"):
            if path == "/.well-known/openid-configuration":
                issuer = ARGS.issuer or f"https://{host}"
                return self.answer(host, path, 200, json.dumps(discovery(issuer), indent=2), "application/json")
            if path in ("/healthz", "/ping"):
                return self.answer(host, path, 200, "ok", "text/plain; charset=utf-8")
            if path == "/-/readiness":
                return self.answer(host, path, 200, json.dumps({"status": "ok"}), "application/json")
            if path == "/v1/sys/health":
                body = dict(VAULT_HEALTH, server_time_utc=int(time.time()))
                return self.answer(host, path, 200, json.dumps(body), "application/json")
        return self.answer(host, path, 404, "404 page not found\n", "text/plain; charset=utf-8")

    def forward(self, host, path):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        req = urllib.request.Request(FORWARD[host] + self.path, data=body, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in ("host", "content-length", "connection"):
                req.add_header(k, v)
        req.add_header("X-Forwarded-Proto", "https")
        req.add_header("X-Forwarded-Host", host)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, data, headers = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, data, headers = e.code, e.read(), e.headers
        except OSError:
            return self.answer(host, path, 502, "Bad Gateway", "text/plain; charset=utf-8")
        extra = {k: v for k, v in headers.items()
                 if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date")}
        self.reply(status, data, extra)
        log({"method": self.command, "host": host, "path": path, "status": status})

    def clusters(self, host, path, name):
        as_json = "application/json"
        if not name or "/" in name:
            return self.answer(host, path, 404, json.dumps({"code": 404, "reason": "NOT_FOUND"}), as_json)
        if self.command in ("POST", "DELETE"):
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return self.answer(host, path, 401, json.dumps({"code": 401, "reason": "UNAUTHORIZED",
                                                                "message": "missing access token"}), as_json)
        with CLUSTERS_LOCK:
            if self.command == "GET":
                if name not in CLUSTERS:
                    return self.answer(host, path, 404, json.dumps({"code": 404, "reason": "CLUSTER_NOT_FOUND"}), as_json)
                shown = {k: v for k, v in CLUSTERS[name].items() if k != "kubeconfig"}
                return self.answer(host, path, 200, json.dumps(shown), as_json)
            if self.command == "DELETE":
                if CLUSTERS.pop(name, None) is None:
                    return self.answer(host, path, 404, json.dumps({"code": 404, "reason": "CLUSTER_NOT_FOUND"}), as_json)
                return self.answer(host, path, 200, json.dumps({"msg": "success"}), as_json)
            if self.command == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = None
                problem = cluster_problem(body)
                if problem:
                    return self.answer(host, path, 400, json.dumps({"code": 400, "reason": "BAD_REQUEST",
                                                                    "message": problem}), as_json)
                CLUSTERS[name] = dict(body, name=name)
                return self.answer(host, path, 200, json.dumps({"msg": "success"}), as_json)
        return self.answer(host, path, 405, "405 method not allowed\n", "text/plain; charset=utf-8")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = route


class Server(QuietServer):
    label = "ingress stand-in"

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's thread, so one slow
        # or failing client holds up no one else.
        try:
            request.settimeout(10)
            request.do_handshake()
            request.settimeout(None)
        except (ssl.SSLError, OSError) as e:
            log({"event": "tls-error", "peer": f"{client_address[0]}:{client_address[1]}", "error": str(e)})
            return
        super().finish_request(request, client_address)


def main():
    global ARGS
    p = argparse.ArgumentParser(description="HTTPS stand-in for the platform's ingress (tests only)")
    p.add_argument("--cert", required=True, help="PEM certificate (chain) the ingress presents")
    p.add_argument("--key", required=True, help="PEM private key of --cert")
    p.add_argument("--port-file", required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", help="append one JSON line per request here")
    p.add_argument("--fail-host", action="append", default=[], type=str.lower,
                   help="answer 503 for this host (repeatable)")
    p.add_argument("--issuer", help="issuer Dex reports (default: https://<Host without port>)")
    p.add_argument("--forward", action="append", default=[], help="HOST=URL: proxy HOST's requests to URL")
    p.add_argument("--routes-file", help="JSON list of the hosts Ingresses route (see --forward)")
    ARGS = p.parse_args()
    for f in ARGS.forward:
        h, _, url = f.partition("=")
        FORWARD[h.lower()] = url.rstrip("/")

    ctx = server_tls(ARGS.cert, ARGS.key, minimum=ssl.TLSVersion.TLSv1_2, alpn=["http/1.1"])

    srv = Server((ARGS.bind, ARGS.port), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    publish_port(srv, ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
