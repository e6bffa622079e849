#!/usr/bin/env python3
"""STAND-IN for a Kubernetes API server (none can be installed here). It
models the documented behaviour nautes-install relies on and rejects what
the real API rejects:

* `Authorization: Bearer <token>` required (401 Status otherwise);
* discovery: /version, /api, /api/v1, /apis, /apis/<group>/<version> for the
  built-in kinds below plus every CRD once it is Established (after
  --crd-delay seconds); before that its kinds are 404, as on a real server;
* namespaced and cluster-scoped CRUD; namespaced objects need their
  namespace (404); body kind/name must match the URL (400);
* server-side apply: PATCH `application/apply-patch+yaml` with `fieldManager`
  (400 without); fields are owned per manager (leaf paths); applying a field
  another manager owns with a different value is 409 Conflict naming the
  fields and manager, unless `force=true` (ownership moves); fields a manager
  stops applying are removed; a no-op apply changes nothing (no new
  resourceVersion); merge patches too; other patch types 415;
* resourceVersion on every change, generation on spec changes; PUT with a
  stale resourceVersion is 409;
* a controller marks Deployments/StatefulSets/DaemonSets rolled out and Jobs
  complete (after --ready-delay), CRDs Established, Namespaces Active;
  POST /_standin/never-ready {"kind":..,"name":..} keeps one from becoming ready;
* GET /_standin/requests: the ordered log of every request (no auth).

Run: kubeapi_standin.py --port-file F --token T [--crd-delay S] [--ready-delay S]
"""
import argparse, json, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs

BUILTIN = {
    ("", "v1"): {"namespaces": ("Namespace", False), "nodes": ("Node", False), "configmaps": ("ConfigMap", True),
                 "secrets": ("Secret", True), "services": ("Service", True), "pods": ("Pod", True),
                 "serviceaccounts": ("ServiceAccount", True)},
    ("apps", "v1"): {"deployments": ("Deployment", True), "statefulsets": ("StatefulSet", True),
                     "daemonsets": ("DaemonSet", True)},
    ("batch", "v1"): {"jobs": ("Job", True)},
    ("rbac.authorization.k8s.io", "v1"): {"roles": ("Role", True), "rolebindings": ("RoleBinding", True),
                                          "clusterroles": ("ClusterRole", False),
                                          "clusterrolebindings": ("ClusterRoleBinding", False)},
    ("apiextensions.k8s.io", "v1"): {"customresourcedefinitions": ("CustomResourceDefinition", False)},
    ("networking.k8s.io", "v1"): {"ingresses": ("Ingress", True)},
}
LOCK = threading.RLock()
STORE = {}     # (group, version, resource, ns, name) -> object
MANAGED = {}   # same key -> {manager: set(paths)}
LOG = []
NEVER_READY = set()
VERSION = [0]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def status(code, reason, message):
    return code, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}


def resources():
    """Every served group/version -> {plural: (kind, namespaced)}."""
    out = {k: dict(v) for k, v in BUILTIN.items()}
    for key, crd in STORE.items():
        if key[2] != "customresourcedefinitions":
            continue
        conds = crd.get("status", {}).get("conditions", [])
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
            continue
        spec = crd.get("spec", {})
        for v in spec.get("versions", []):
            if v.get("served", True):
                out.setdefault((spec.get("group"), v["name"]), {})[spec["names"]["plural"]] = (
                    spec["names"]["kind"], spec.get("scope", "Namespaced") == "Namespaced")
    return out


def leaf_paths(obj, prefix=()):
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(leaf_paths(v, prefix + (k,)))
        return out
    return {prefix: obj}


def get_path(obj, path):
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    return obj


def set_path(obj, path, value):
    for p in path[:-1]:
        obj = obj.setdefault(p, {})
        if not isinstance(obj, dict):
            return
    obj[path[-1]] = value


def del_path(obj, path):
    parents = []
    for p in path[:-1]:
        if not isinstance(obj, dict) or p not in obj:
            return
        parents.append((obj, p))
        obj = obj[p]
    if isinstance(obj, dict):
        obj.pop(path[-1], None)
    for parent, key in reversed(parents):
        if parent[key] == {}:
            parent.pop(key)


def owned(body):
    """Paths a manager owns: everything but identity fields."""
    skip = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
    return {p: v for p, v in leaf_paths(body).items() if p not in skip and p[:1] != ("status",)}


def merge(dst, src):
    for k, v in src.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def bump(obj, old):
    VERSION[0] += 1
    meta = obj.setdefault("metadata", {})
    meta["resourceVersion"] = str(VERSION[0])
    meta.setdefault("uid", "uid-%d" % VERSION[0])
    meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    gen = (old or {}).get("metadata", {}).get("generation", 0)
    if old is None or old.get("spec") != obj.get("spec"):
        gen += 1
    meta["generation"] = max(gen, 1)


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
        if url.path == "/_standin/never-ready" and method == "POST":
            body = json.loads(raw or b"{}")
            with LOCK:
                NEVER_READY.add((body.get("kind"), body.get("name")))
            return self.send(200, {})
        with LOCK:
            code, body = self.route(method, url.path, q, raw)
            entry = {"method": method, "path": url.path, "query": url.query,
                     "content_type": self.headers.get("Content-Type", ""), "status": code, "time": time.time()}
            LOG.append(entry)
        self.send(code, body)

    def route(self, method, path, q, raw):
        if self.headers.get("Authorization") != "Bearer " + ARGS.token:
            return status(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return 200, {"major": "1", "minor": "27", "gitVersion": "v1.27.4-standin", "platform": "linux/amd64"}
        served = resources()
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = {}
            for (g, v) in served:
                if g:
                    groups.setdefault(g, []).append(v)
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": "%s/%s" % (g, vs[0]), "version": vs[0]}} for g, vs in sorted(groups.items())]}
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            g, v, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            g, v, rest = parts[1], parts[2], parts[3:]
        else:
            return status(404, "NotFound", "the server could not find the requested resource")
        if (g, v) not in served:
            return status(404, "NotFound", "the server could not find the requested resource (%s/%s)" % (g, v))
        kinds = served[(g, v)]
        if not rest:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (g, v) if g else v,
                         "resources": [{"name": r, "singularName": k.lower(), "namespaced": ns, "kind": k,
                                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                                       for r, (k, ns) in sorted(kinds.items())]}
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
        subresource = rest[2] if len(rest) > 2 else None
        if subresource not in (None, "status"):
            return status(404, "NotFound", "the server could not find the requested resource (%s/%s)" % (resource, subresource))
        if resource not in kinds or kinds[resource][1] != (ns is not None) and not (name is None and method == "GET"):
            return status(404, "NotFound", "the server could not find the requested resource (%s)" % resource)
        kind = kinds[resource][0]
        api_version = "%s/%s" % (g, v) if g else v
        if ns is not None and ("", "v1", "namespaces", None, ns) not in STORE:
            return status(404, "NotFound", 'namespaces "%s" not found' % ns)
        key = (g, v, resource, ns, name)
        if method == "GET" and name is None:
            items = [o for k, o in sorted(STORE.items(), key=lambda kv: str(kv[0]))
                     if k[:3] == (g, v, resource) and (ns is None or k[3] == ns)]
            sel = (q.get("labelSelector") or [""])[0]
            for term in [t for t in sel.split(",") if t]:
                lk, _, lv = term.partition("=")
                items = [o for o in items if o.get("metadata", {}).get("labels", {}).get(lk) == lv]
            return 200, {"apiVersion": api_version, "kind": kind + "List", "metadata": {"resourceVersion": str(VERSION[0])}, "items": items}
        if method == "GET":
            if key not in STORE:
                return status(404, "NotFound", '%s "%s" not found' % (resource, name))
            return 200, STORE[key]
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return status(400, "BadRequest", "the body is not JSON (YAML bodies are not supported by this stand-in)")
        if method == "POST" and name is None:
            name = (body or {}).get("metadata", {}).get("name")
            if not name or body.get("kind") != kind:
                return status(400, "BadRequest", "body must be a %s with metadata.name" % kind)
            key = (g, v, resource, ns, name)
            if key in STORE:
                return status(409, "AlreadyExists", '%s "%s" already exists' % (resource, name))
            return 201, self.save(key, body, None, ns)
        if method == "PUT" and name:
            if key not in STORE:
                return status(404, "NotFound", '%s "%s" not found' % (resource, name))
            rv = (body or {}).get("metadata", {}).get("resourceVersion")
            if rv and rv != STORE[key]["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
            return 200, self.save(key, body, STORE[key], ns)
        if method == "PATCH" and name:
            ctype = self.headers.get("Content-Type", "")
            if body is None:
                return status(400, "BadRequest", "empty patch")
            if subresource == "status":
                # Status is written by controllers/kubelets through its own subresource.
                if key not in STORE:
                    return status(404, "NotFound", '%s "%s" not found' % (resource, name))
                if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                    return status(415, "UnsupportedMediaType", "unsupported patch type %r" % ctype)
                obj = json.loads(json.dumps(STORE[key]))
                merge(obj.setdefault("status", {}), body.get("status", {}))
                return 200, self.save(key, obj, STORE[key], ns)
            if ctype == "application/apply-patch+yaml":
                manager = (q.get("fieldManager") or [""])[0]
                if not manager:
                    return status(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                if body.get("kind") != kind or body.get("metadata", {}).get("name") != name or body.get("apiVersion") != api_version:
                    return status(400, "BadRequest", "the apiVersion/kind/name in the body does not match the URL")
                return self.apply(key, body, manager, (q.get("force") or ["false"])[0] == "true", ns)
            if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if key not in STORE:
                    return status(404, "NotFound", '%s "%s" not found' % (resource, name))
                return 200, self.save(key, merge(json.loads(json.dumps(STORE[key])), body), STORE[key], ns)
            return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        if method == "DELETE" and name:
            if key not in STORE:
                return status(404, "NotFound", '%s "%s" not found' % (resource, name))
            obj = STORE.pop(key)
            MANAGED.pop(key, None)
            if resource == "namespaces":
                for k in [k for k in STORE if k[3] == name]:
                    STORE.pop(k)
                    MANAGED.pop(k, None)
            return 200, obj
        return status(405, "MethodNotAllowed", "%s is not allowed here" % method)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def apply(self, key, body, manager, force, ns):
        live = STORE.get(key)
        managers = MANAGED.setdefault(key, {})
        mine = owned(body)
        conflicts = []
        for p, v in mine.items():
            for other, paths in managers.items():
                if other != manager and p in paths and get_path(live or {}, p) != v:
                    conflicts.append((other, p))
        if conflicts and not force:
            causes = [{"reason": "FieldManagerConflict", "message": 'conflict with "%s"' % m, "field": "." + ".".join(p)} for m, p in conflicts]
            msg = "Apply failed with %d conflict%s: %s" % (len(conflicts), "s" if len(conflicts) > 1 else "",
                  "; ".join('conflict with "%s": .%s' % (m, ".".join(p)) for m, p in conflicts))
            code, st = status(409, "Conflict", msg)
            st["details"] = {"causes": causes}
            return code, st
        new = json.loads(json.dumps(live or {}))
        for p in managers.get(manager, set()) - set(mine):
            if not any(p in paths for m, paths in managers.items() if m != manager):
                del_path(new, p)
        for p, v in mine.items():
            set_path(new, p, v)
        new["apiVersion"], new["kind"] = body["apiVersion"], body["kind"]
        new.setdefault("metadata", {})["name"] = key[4]
        for m, paths in managers.items():
            if m != manager:
                paths.difference_update(mine)
        managers[manager] = set(mine)
        if live is not None and new == live:
            return 200, live
        return (200 if live else 201), self.save(key, new, live, ns)

    def save(self, key, obj, old, ns):
        meta = obj.setdefault("metadata", {})
        meta["name"] = key[4]
        if ns is not None:
            meta["namespace"] = ns
        if old is not None:
            for k in ("uid", "creationTimestamp", "generation"):
                if k in old.get("metadata", {}):
                    meta.setdefault(k, old["metadata"][k])
            if "status" in old and "status" not in obj:
                obj["status"] = old["status"]
        bump(obj, old)
        meta["managedFields"] = [{"manager": m, "operation": "Apply", "fieldsType": "FieldsV1"} for m in sorted(MANAGED.get(key, {}))]
        if key[2] == "namespaces":
            obj.setdefault("status", {})["phase"] = "Active"
        STORE[key] = obj
        return obj


def controller():
    """What controllers on a real cluster would do, after a delay."""
    while True:
        time.sleep(0.05)
        now = time.time()
        with LOCK:
            for key, obj in list(STORE.items()):
                kind = obj.get("kind")
                meta = obj.get("metadata", {})
                if kind == "CustomResourceDefinition":
                    if not obj.get("status", {}).get("conditions") and now - meta.get("_created", now) >= 0:
                        meta.setdefault("_seen", now)
                        if now - meta["_seen"] >= ARGS.crd_delay:
                            obj["status"] = {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}],
                                             "acceptedNames": obj.get("spec", {}).get("names", {})}
                    continue
                if kind not in WORKLOADS or (kind, meta.get("name")) in NEVER_READY:
                    continue
                gen = meta.get("generation", 1)
                st = obj.setdefault("status", {})
                if st.get("observedGeneration") == gen:
                    continue
                meta.setdefault("_changed", {})
                seen = meta["_changed"].setdefault(str(gen), now)
                if now - seen < ARGS.ready_delay:
                    continue
                replicas = obj.get("spec", {}).get("replicas", 1)
                st["observedGeneration"] = gen
                if kind in ("Deployment", "StatefulSet"):
                    st.update({"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                               "availableReplicas": replicas, "currentReplicas": replicas,
                               "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
                elif kind == "DaemonSet":
                    st.update({"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1})
                elif kind == "Job":
                    st.update({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--crd-delay", type=float, default=0.3)
    p.add_argument("--ready-delay", type=float, default=0.2)
    ARGS = p.parse_args()
    threading.Thread(target=controller, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    import os
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    server.serve_forever()
