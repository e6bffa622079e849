#!/usr/bin/env python3
"""STAND-IN for the REST API of Nexus Repository Manager OSS 3.39.0
(/service/rest/v1; Nexus is not published on any registry this machine
reaches). It models what the installer relies on, with Nexus' status codes
and error shapes, and refuses what Nexus refuses:

* first run: Nexus generates the admin password and writes it to
  <data>/admin.password; this stand-in does the same in --data-dir. Once
  the admin password is changed the file is deleted and the old password
  no longer logs in;
* auth: HTTP Basic everywhere but GET /v1/status; unknown credentials are
  401. Only admin may use the security and repository-administration
  routes (403 for others); GET /v1/repositories answers any user with the
  repositories their roles let them browse (privileges
  nx-repository-view-<format>-<repo>-<action>, `*` as a wildcard; admin
  sees all); GET /v1/status/check needs a user (admin);
* PUT /v1/security/users/{id}/change-password: the new password as a
  `text/plain` body (another content type 415, an empty body 400) -> 204;
* GET/PUT /v1/security/anonymous {enabled, userId, realmName}: PUT needs
  all three, answers 200 with the settings;
* repositories: GET /v1/repositories; GET/POST/PUT
  /v1/repositories/{maven|npm|pypi|docker}/{hosted|proxy}[/{name}]:
  POST 201, PUT 204, an unknown name 404 (also when the format or type
  differs), a taken name 400; fields Nexus requires (name, online,
  storage.blobStoreName, storage.strictContentTypeValidation, hosted:
  storage.writePolicy ALLOW|ALLOW_ONCE|DENY in any case, proxy:
  proxy.remoteUrl/contentMaxAge/metadataMaxAge, negativeCache.enabled/
  timeToLive, httpClient.blocked/autoBlock, maven: maven.versionPolicy/
  layoutPolicy, docker: docker.v1Enabled/forceBasicAuth, docker proxy:
  dockerProxy.indexType) missing are 400 [{"id": "PARAMETER <field>",
  "message": "may not be null"}]. GET answers the settings with format
  (maven2 for maven), type and url; DELETE /v1/repositories/{name} 204;
* roles: GET/PUT/DELETE /v1/security/roles/{id}, POST /v1/security/roles
  {id, name, description, privileges, roles} -> 200 with the role; a
  privilege that does not exist (nx-all, nx-anonymous-*, or a repository
  view privilege of an existing repository) or an unknown role is 400; a
  taken id 400; PUT 204 (the body's id must match, 400);
* users: GET /v1/security/users?userId=<prefix>&source=default, POST
  (userId, firstName, lastName, emailAddress, password, status, roles;
  unknown roles 400) -> 200 without the password, PUT /{id} 204 (source
  and userId must match), DELETE /{id} 204, unknown 404.

* components: GET /v1/components?repository=<name> -> {items: [{id,
  repository, format, group, name, version, assets}], continuationToken}
  in pages of 10; without `repository` 422, an unknown one 404. Deleting
  a repository deletes its components (Nexus asks nothing).

With --env-file F the stand-in starts only once F (the container's env as
JSON, which standin_controllers.py's `registries` controller writes once
the Deployment is available) exists, answering 503 until then; with
NEXUS_SECURITY_RANDOMPASSWORD=false there, as Nexus, the admin password is
the default admin123 and no admin.password file is written.

Control endpoints (no auth) under /_standin/: GET requests (every API
request as [method, path]), POST repositories/<name>/components {group,
name, version} (a component uploaded), GET state (repositories, roles, users and
whether anonymous access is on)."""

import argparse, base64, json, os, re, secrets, threading, uuid
from urllib.parse import urlparse, parse_qsl, unquote

from standin_http import QuietHandler, QuietServer, publish_port

FORMATS = {"maven": "maven2", "npm": "npm", "pypi": "pypi", "docker": "docker"}
ACTIONS = {"*", "browse", "read", "edit", "add", "delete"}
BUILTIN_ROLES = {"nx-admin", "nx-anonymous"}
BUILTIN_PRIVILEGES = {"nx-all", "nx-search-read", "nx-healthcheck-read"}


class Fail(Exception):
    def __init__(self, status, value):
        self.status, self.value = status, value


def bad(field, message="may not be null"):
    return Fail(400, [{"id": "PARAMETER " + field, "message": message}])


class State:
    def __init__(self, data_dir, base_url, env=None):
        self.lock = threading.Lock()
        self.data_dir = data_dir
        self.base_url = base_url
        if (env or {}).get("NEXUS_SECURITY_RANDOMPASSWORD") == "false":
            first = "admin123"  # Nexus' default, and no admin.password file
        else:
            first = str(uuid.uuid4())
            path = os.path.join(data_dir, "admin.password")
            with open(path + ".tmp", "w") as f:
                f.write(first)
            os.chmod(path + ".tmp", 0o600)
            os.replace(path + ".tmp", path)
        self.users = {
            "admin": {"userId": "admin", "firstName": "Administrator", "lastName": "User",
                      "emailAddress": "admin@example.org", "source": "default", "status": "active",
                      "readOnly": False, "roles": ["nx-admin"], "externalRoles": [], "password": first},
            "anonymous": {"userId": "anonymous", "firstName": "Anonymous", "lastName": "User",
                          "emailAddress": "anonymous@example.org", "source": "default", "status": "active",
                          "readOnly": False, "roles": ["nx-anonymous"], "externalRoles": [], "password": None},
        }
        self.anonymous = {"enabled": True, "userId": "anonymous", "realmName": "NexusAuthorizingRealm"}
        self.repos = {}
        self.components = {}
        self.roles = {}
        self.requests = []


STATE = None


def need(body, dotted):
    v = body
    for part in dotted.split("."):
        if not isinstance(v, dict) or v.get(part) is None:
            raise bad(dotted)
        v = v[part]
    return v


def privilege_exists(name):
    if name in BUILTIN_PRIVILEGES:
        return True
    m = re.match(r"^nx-repository-view-([a-z0-9*]+)-(.+)-([a-z*]+)$", name)
    if not m:
        return False
    fmt, repo, action = m.groups()
    if action not in ACTIONS:
        return False
    if repo == "*":
        return fmt == "*" or fmt in FORMATS.values()
    r = STATE.repos.get(repo)
    return r is not None and (fmt == "*" or fmt == r["format"])


def grants(roles, repo, action="browse"):
    for rid in roles:
        for priv in (STATE.roles.get(rid) or {}).get("privileges", []):
            m = re.match(r"^nx-repository-view-([a-z0-9*]+)-(.+)-([a-z*]+)$", priv)
            if not m:
                continue
            fmt, name, act = m.groups()
            if fmt in ("*", repo["format"]) and name in ("*", repo["name"]) and act in ("*", action):
                return True
    return False


class Handler(QuietHandler):
    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def send_json(self, status, value):
        data = b"" if value is None else json.dumps(value).encode()
        self.reply(status, data, [("Content-Type", "application/json")] if data else [])

    def route(self):
        url = urlparse(self.path)
        self.query = dict(parse_qsl(url.query))
        raw = self.read_body()
        self.raw = raw
        if url.path.startswith("/_standin/"):
            return self.control(url.path[len("/_standin/"):])
        prefix = "/service/rest/v1/"
        if not url.path.startswith(prefix):
            return self.send_json(404, None)
        rel = url.path[len(prefix):].rstrip("/")
        if not started():
            return self.send_json(503, None)
        with STATE.lock:
            STATE.requests.append([self.command, url.path])
            self.raw = raw
            try:
                status, value = self.api([unquote(p) for p in rel.split("/")])
            except Fail as f:
                return self.send_json(f.status, f.value)
        self.send_json(status, value)

    def json_body(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/json":
            raise Fail(415, None)
        try:
            return json.loads(self.raw)
        except ValueError:
            raise Fail(400, [{"id": "*", "message": "Could not process the input: malformed JSON"}])

    def who(self):
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            raise Fail(401, None)
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            raise Fail(401, None)
        u = STATE.users.get(user)
        if u is None or u["password"] is None or u["password"] != password or u["status"] != "active":
            raise Fail(401, None)
        return u

    def api(self, parts):
        m = self.command
        if parts == ["status"] and m == "GET":
            return 200, None
        user = self.who()
        if parts == ["repositories"] and m == "GET":
            visible = [r for r in STATE.repos.values()
                       if user["userId"] == "admin" or grants(user["roles"], r)]
            return 200, [{"name": r["name"], "format": r["format"], "type": r["type"], "url": r["url"],
                          "attributes": {}} for r in visible]
        if user["userId"] != "admin":
            raise Fail(403, None)
        if parts == ["status", "check"] and m == "GET":
            return 200, {}
        if parts[:2] == ["security", "users"]:
            return self.users(parts[2:])
        if parts == ["security", "anonymous"]:
            if m == "GET":
                return 200, STATE.anonymous
            if m == "PUT":
                b = self.json_body()
                for k in ("enabled", "userId", "realmName"):
                    need(b, k)
                STATE.anonymous = {"enabled": bool(b["enabled"]), "userId": b["userId"], "realmName": b["realmName"]}
                return 200, STATE.anonymous
        if parts[:2] == ["security", "roles"]:
            return self.roles(parts[2:])
        if parts == ["components"] and m == "GET":
            return self.components()
        if parts[0] == "repositories":
            return self.repositories(parts[1:])
        raise Fail(404 if m == "GET" else 405, None)

    def users(self, rest):
        m = self.command
        if not rest:
            if m == "GET":
                prefix = self.query.get("userId", "")
                return 200, [{k: v for k, v in u.items() if k != "password"}
                             for u in STATE.users.values() if u["userId"].startswith(prefix)]
            if m == "POST":
                b = self.json_body()
                for k in ("userId", "firstName", "lastName", "emailAddress", "password", "status", "roles"):
                    need(b, k)
                if b["userId"] in STATE.users:
                    raise bad("userId", "User '%s' already exists" % b["userId"])
                self.check_roles(b["roles"])
                u = {"userId": b["userId"], "firstName": b["firstName"], "lastName": b["lastName"],
                     "emailAddress": b["emailAddress"], "source": "default", "status": b["status"],
                     "readOnly": False, "roles": list(b["roles"]), "externalRoles": [], "password": b["password"]}
                STATE.users[u["userId"]] = u
                return 200, {k: v for k, v in u.items() if k != "password"}
        uid = rest[0]
        u = STATE.users.get(uid)
        if len(rest) == 2 and rest[1] == "change-password" and m == "PUT":
            if u is None:
                raise Fail(404, None)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "text/plain":
                raise Fail(415, None)
            new = self.raw.decode()
            if not new:
                raise bad("password", "Password must be supplied")
            u["password"] = new
            if uid == "admin":
                path = os.path.join(STATE.data_dir, "admin.password")
                if os.path.exists(path):
                    os.remove(path)
            return 204, None
        if len(rest) != 1:
            raise Fail(404, None)
        if u is None:
            raise Fail(404, [{"id": "*", "message": "User '%s' not found." % uid}])
        if m == "PUT":
            b = self.json_body()
            for k in ("userId", "firstName", "lastName", "emailAddress", "status", "roles", "source"):
                need(b, k)
            if b["userId"] != uid:
                raise bad("userId", "The path's userId does not match the body")
            self.check_roles(b["roles"])
            for k in ("firstName", "lastName", "emailAddress", "status", "roles"):
                u[k] = b[k]
            return 204, None
        if m == "DELETE":
            if uid in ("admin", "anonymous"):
                raise Fail(400, [{"id": "*", "message": "cannot delete %s" % uid}])
            del STATE.users[uid]
            return 204, None
        raise Fail(405, None)

    def check_roles(self, roles):
        for r in roles:
            if r not in BUILTIN_ROLES and r not in STATE.roles:
                raise bad("roles", "Unable to locate roleId: %s" % r)

    def check_role_body(self, b):
        for k in ("id", "name", "privileges", "roles"):
            if b.get(k) is None:
                raise bad(k)
        for p in b["privileges"]:
            if not privilege_exists(p):
                raise bad("privileges", "Unable to locate privilege: %s" % p)
        self.check_roles(b["roles"])

    def roles(self, rest):
        m = self.command
        if not rest:
            if m == "GET":
                return 200, list(STATE.roles.values())
            if m == "POST":
                b = self.json_body()
                self.check_role_body(b)
                if b["id"] in STATE.roles or b["id"] in BUILTIN_ROLES:
                    raise bad("id", "Role '%s' already exists" % b["id"])
                role = {"id": b["id"], "source": "default", "name": b["name"],
                        "description": b.get("description") or "", "privileges": list(b["privileges"]),
                        "roles": list(b["roles"])}
                STATE.roles[role["id"]] = role
                return 200, role
            raise Fail(405, None)
        rid = rest[0]
        role = STATE.roles.get(rid)
        if role is None:
            raise Fail(404, [{"id": "*", "message": "Role '%s' not found" % rid}])
        if m == "GET":
            return 200, role
        if m == "PUT":
            b = self.json_body()
            self.check_role_body(b)
            if b["id"] != rid:
                raise bad("id", "The role id in the path does not match the body")
            role.update({"name": b["name"], "description": b.get("description") or "",
                         "privileges": list(b["privileges"]), "roles": list(b["roles"])})
            return 204, None
        if m == "DELETE":
            del STATE.roles[rid]
            return 204, None
        raise Fail(405, None)

    def repositories(self, rest):
        m = self.command
        if len(rest) == 1 and m == "DELETE":
            if STATE.repos.pop(rest[0], None) is None:
                raise Fail(404, None)
            STATE.components.pop(rest[0], None)     # a repository goes with its content
            return 204, None
        if len(rest) < 2 or rest[0] not in FORMATS or rest[1] not in ("hosted", "proxy"):
            raise Fail(404, None)
        fmt, kind = FORMATS[rest[0]], rest[1]
        if len(rest) == 2 and m == "POST":
            b = self.json_body()
            self.validate_repo(b, rest[0], kind)
            if b["name"] in STATE.repos:
                raise bad("name", "Name is already used, must be unique (ignoring case)")
            STATE.repos[b["name"]] = self.stored_repo(b, fmt, kind)
            return 201, None
        if len(rest) != 3:
            raise Fail(404, None)
        r = STATE.repos.get(rest[2])
        if r is None or r["format"] != fmt or r["type"] != kind:
            raise Fail(404, None)
        if m == "GET":
            return 200, {k: v for k, v in r.items()}
        if m == "PUT":
            b = self.json_body()
            self.validate_repo(b, rest[0], kind)
            if b["name"] != rest[2]:
                raise bad("name", "Renaming a repository is not supported")
            STATE.repos[rest[2]] = self.stored_repo(b, fmt, kind)
            return 204, None
        raise Fail(405, None)

    def components(self):
        # Nexus needs ?repository= (else 422) and answers 404 for one it does
        # not have; pages of 10 with a continuationToken.
        name = self.query.get("repository")
        if not name:
            raise Fail(422, [{"id": "PARAMETER repository", "message": "may not be null"}])
        if name not in STATE.repos:
            raise Fail(404, None)
        items = STATE.components.get(name, [])
        start = int(self.query.get("continuationToken") or 0) if (self.query.get("continuationToken") or "0").isdigit() else 0
        page = items[start:start + 10]
        token = str(start + 10) if start + 10 < len(items) else None
        return 200, {"items": [dict(c, id="c%d" % (start + i), repository=name, format=STATE.repos[name]["format"],
                                    assets=[]) for i, c in enumerate(page)],
                     "continuationToken": token}

    def validate_repo(self, b, fmt, kind):
        for f in ("name", "online", "storage.blobStoreName", "storage.strictContentTypeValidation"):
            need(b, f)
        if kind == "hosted":
            if str(need(b, "storage.writePolicy")).upper() not in ("ALLOW", "ALLOW_ONCE", "DENY"):
                raise bad("storage.writePolicy", "must be one of ALLOW, ALLOW_ONCE, DENY")
        else:
            for f in ("proxy.remoteUrl", "proxy.contentMaxAge", "proxy.metadataMaxAge", "negativeCache.enabled",
                      "negativeCache.timeToLive", "httpClient.blocked", "httpClient.autoBlock"):
                need(b, f)
        if fmt == "maven":
            need(b, "maven.versionPolicy")
            need(b, "maven.layoutPolicy")
        if fmt == "docker":
            need(b, "docker.v1Enabled")
            need(b, "docker.forceBasicAuth")
            if kind == "proxy":
                need(b, "dockerProxy.indexType")

    def stored_repo(self, b, fmt, kind):
        r = json.loads(json.dumps(b))
        r.update({"format": fmt, "type": kind, "url": "%s/repository/%s" % (STATE.base_url, b["name"])})
        if kind == "hosted":
            r["storage"]["writePolicy"] = r["storage"]["writePolicy"].lower()
        return r

    def control(self, what):
        if STATE is None:  # not started (--env-file): nothing asked yet
            return self.send_json(200, [] if what == "requests" else {"started": False})
        with STATE.lock:
            if what == "requests" and self.command == "GET":
                return self.send_json(200, STATE.requests)
            m = re.match(r"^repositories/([^/]+)/components$", what)
            if m and self.command == "POST":
                if m.group(1) not in STATE.repos:
                    return self.send_json(404, None)
                c = json.loads(self.raw or b"{}")
                STATE.components.setdefault(m.group(1), []).append(
                    {"group": c.get("group", ""), "name": c.get("name", "lib"), "version": c.get("version", "1.0")})
                return self.send_json(200, {})
            if what == "state" and self.command == "GET":
                return self.send_json(200, {
                    "repositories": sorted(STATE.repos),
                    "components": {k: len(v) for k, v in STATE.components.items()},
                    "roles": {k: sorted(v["privileges"]) for k, v in STATE.roles.items()},
                    "users": {k: u["roles"] for k, u in STATE.users.items()},
                    "anonymous": STATE.anonymous["enabled"],
                })
        self.send_json(404, None)


ENV_FILE = None
START_LOCK = threading.Lock()


def started():
    """With --env-file, Nexus starts (and makes its admin password) only
    once the file with its container's env exists; until then 503, as a
    Service without a ready pod behind the ingress."""
    global STATE
    if STATE is not None:
        return True
    with START_LOCK:
        if STATE is None:
            try:
                with open(ENV_FILE) as f:
                    env = json.load(f)
            except (OSError, ValueError):
                return False
            STATE = State(*ENV_FILE_STATE, env=env)
    return True


def main():
    global STATE, ENV_FILE, ENV_FILE_STATE
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--env-file", help="JSON env of the Nexus container; start only once it exists")
    args = p.parse_args()
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.label = "Nexus stand-in"
    base = "http://127.0.0.1:%d" % server.server_address[1]
    ENV_FILE = args.env_file
    ENV_FILE_STATE = (args.data_dir, base)
    if not ENV_FILE:
        STATE = State(args.data_dir, base)
    publish_port(server, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
