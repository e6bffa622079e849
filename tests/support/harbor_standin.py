#!/usr/bin/env python3
"""STAND-IN for Harbor v2.5.1's REST API (/api/v2.0). Harbor's core cannot
be built here: the Go module proxy serves github.com/goharbor/harbor/src at
the v2.5.1 commit, but not its API server packages, which Harbor generates
with go-swagger from a spec outside that module. It models what the
installer relies on, as Harbor v2.5.1's handlers (src/server/v2.0/handler,
src/controller) do it, and refuses what they refuse:

* errors are {"errors": [{"code": "...", "message": "..."}]};
* auth: HTTP Basic on every route but /ping and /systeminfo; unknown
  credentials are 401 UNAUTHORIZED. Local users log in with their password;
  robots (`robot$<project>+<name>`) with their secret, and may only read
  their own project (GET /projects/{name}); anything else they ask is 403;
* users: `admin` (user_id 1) with --admin-password (Harbor's default
  Harbor12345 unless told). GET /users/current. PUT
  /users/{id}/password {old_password, new_password}: changing one's own
  needs the right old password (403 "Current password is incorrect"); the
  new one needs 8-128 characters with an upper-case letter, a lower-case
  letter and a digit (400), and must differ (400);
* projects: POST /projects {project_name, metadata: {public: "true"|
  "false"}, storage_limit} -> 201 with a Location header, names
  ^[a-z0-9]+(?:[._-][a-z0-9]+)*$ (400), a taken name 409. GET/PUT/DELETE
  /projects/{name_or_id} — a name only with `X-Is-Resource-Name: true`,
  else the segment must be a numeric id (400) — 404 when missing; PUT
  takes metadata.public; DELETE of a project holding repositories is 412;
* repositories: GET /projects/{project_name}/repositories (page,
  page_size <= 100, X-Total-Count) -> [{name: "<project>/<repo>",
  artifact_count, ...}]; DELETE .../repositories/{repository_name} -> 200
  with every artifact, the name without the project and encoded twice when
  it holds `/` (once is 404, as Harbor's router splits it), 404 when missing;
* robots: POST /robots {name, level: project, duration (-1 or >0),
  permissions: exactly one {kind: project, namespace, access: [...]}} ->
  201 {id, name: "robot$<project>+<name>", secret, creation_time,
  expires_at}: the secret is in that answer only, never listed or read
  back. Names ^[a-z0-9]+(?:[._-][a-z0-9]+)*$ (400); a taken name in the
  project 409. GET /robots?q=Level=project,ProjectID=<id> (400 without a
  ProjectID), GET/DELETE /robots/{id} (404 when missing);
* configurations: GET -> {key: {value, editable}} without secret keys
  (oidc_client_secret); PUT with any subset of known keys (an unknown key
  is 400); auth_mode may change only while admin is the only user (400
  "the auth mode cannot be modified as new users have been inserted into
  database"), and GET then shows auth_mode editable: false;
* members (src/controller/member): GET /projects/{p}/members (page,
  page_size) -> [{id, project_id, entity_name, entity_type "u"|"g",
  entity_id, role_id, role_name}]; the project's creator (admin) is a
  member with role 1 from the start. POST {role_id, member_group:
  {group_name, group_type}} -> 201 with a Location: a group unknown by
  (name, type) is onboarded only in oidc_auth (Harbor's OIDC
  authenticator accepts any name, as type 3), elsewhere 404 "<name> not
  found" (the DB authenticator searches no groups); a group already a
  member 409 "The project member specified already exist"; role_id not
  in 1..5 400. PUT /projects/{p}/members/{id} {role_id}, DELETE (404
  when missing).

With --admin-password-file F, admin's password is what F holds (core's
HARBOR_ADMIN_PASSWORD, which standin_controllers.py's `registries`
controller writes from the harbor-core Secret once the Deployment is
available), read once when F first exists; API requests answer 503 until
then, as a core that has not started.

Control endpoints (no auth) under /_standin/: GET requests (every API
request as [method, path] so far), POST users {username} (a user signed
in, as OIDC onboarding makes), POST projects/<name>/push [{repository}]
(the project now holds that repository), GET state (projects, robot names, configuration with
the client secret as whether it is set)."""

import argparse, base64, hashlib, json, re, secrets, threading
from datetime import datetime, timezone
from urllib.parse import urlparse, parse_qsl, unquote

from standin_http import QuietHandler, QuietServer, publish_port

NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
CONFIG_KEYS = {
    "auth_mode": "db_auth", "oidc_name": "", "oidc_endpoint": "", "oidc_client_id": "",
    "oidc_groups_claim": "", "oidc_admin_group": "", "oidc_scope": "", "oidc_user_claim": "",
    "oidc_verify_cert": True, "oidc_auto_onboard": False, "oidc_extra_redirect_parms": "{}",
    "project_creation_restriction": "everyone", "self_registration": False,
    "robot_name_prefix": "robot$", "robot_token_duration": 30, "read_only": False,
    "token_expiration": 30, "notification_enable": True, "quota_per_project_enable": True,
    "storage_per_project": -1,
}
SECRET_KEYS = {"oidc_client_secret", "ldap_search_password", "email_password", "uaa_client_secret"}
AUTH_MODES = {"db_auth", "ldap_auth", "uaa_auth", "oidc_auth", "http_auth"}


class State:
    def __init__(self, admin_password):
        self.lock = threading.Lock()
        self.users = {"admin": {"user_id": 1, "password": admin_password}}
        self.projects = {}  # name -> dict
        self.robots = {}  # id -> dict (with secret)
        self.config = dict(CONFIG_KEYS)
        self.secrets = {}
        self.next_project = 2  # library is 1 in Harbor; not modelled
        self.next_robot = 1
        self.groups = {}  # (name, type) -> id
        self.members = {}  # project name -> [member dict]
        self.next_member = 1
        self.requests = []
        self.initialised = False


STATE = None


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def valid_secret(s):
    return (isinstance(s, str) and 8 <= len(s) <= 128 and re.search("[a-z]", s)
            and re.search("[A-Z]", s) and re.search("[0-9]", s))


class Fail(Exception):
    def __init__(self, status, code, message):
        self.status, self.code, self.message = status, code, message


class Handler(QuietHandler):
    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def do_PATCH(self):
        self.route()

    def send_json(self, status, value, headers=()):
        data = b"" if value is None else json.dumps(value).encode()
        h = [("Content-Type", "application/json")] + list(headers)
        self.reply(status, data, h)

    def route(self):
        url = urlparse(self.path)
        path = url.path
        self.query = dict(parse_qsl(url.query))
        raw = self.read_body()
        if path.startswith("/_standin/"):
            return self.control(path[len("/_standin/"):], raw)
        if not path.startswith("/api/v2.0/"):
            return self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        rel = path[len("/api/v2.0/"):].rstrip("/")
        if not started():
            return self.send_json(503, {"errors": [{"code": "UNAVAILABLE", "message": "core is starting"}]})
        with STATE.lock:
            STATE.requests.append([self.command, path])
            try:
                self.body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return self.send_json(400, {"errors": [{"code": "BAD_REQUEST", "message": "invalid JSON body"}]})
            try:
                status, value, headers = self.api(rel)
            except Fail as f:
                return self.send_json(f.status, {"errors": [{"code": f.code, "message": f.message}]})
        self.send_json(status, value, headers)

    # --- auth -------------------------------------------------------------

    def principal(self):
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            raise Fail(401, "UNAUTHORIZED", "unauthorized")
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except Exception:
            raise Fail(401, "UNAUTHORIZED", "unauthorized")
        u = STATE.users.get(user)
        if u is not None and u["password"] == password:
            return ("user", user)
        for r in STATE.robots.values():
            if r["name"] == user and r["secret"] == password and not r["disable"]:
                return ("robot", r)
        raise Fail(401, "UNAUTHORIZED", "unauthorized")

    def admin_only(self, who):
        if who[0] != "user" or who[1] != "admin":
            raise Fail(403, "FORBIDDEN", "forbidden")

    # --- API --------------------------------------------------------------

    def api(self, rel):
        m = self.command
        if rel == "ping" and m == "GET":
            return 200, "Pong", []
        if rel == "systeminfo" and m == "GET":
            return 200, {"harbor_version": "v2.5.1-b0506782", "auth_mode": STATE.config["auth_mode"]}, []
        who = self.principal()
        parts = rel.split("/")
        if rel == "users/current" and m == "GET":
            if who[0] != "user":
                raise Fail(403, "FORBIDDEN", "forbidden")
            u = STATE.users[who[1]]
            return 200, {"user_id": u["user_id"], "username": who[1], "sysadmin_flag": who[1] == "admin"}, []
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "password" and m == "PUT":
            return self.change_password(who, parts[1])
        if rel == "projects":
            if m == "POST":
                self.admin_only(who)
                return self.create_project()
            if m in ("GET", "HEAD"):
                self.admin_only(who)
                return 200, [self.project_view(p) for p in STATE.projects.values()], []
        if len(parts) == 2 and parts[0] == "projects":
            return self.project(who, unquote(parts[1]))
        if len(parts) in (3, 4) and parts[0] == "projects" and parts[2] == "repositories":
            self.admin_only(who)
            return self.repositories(unquote(parts[1]), parts[3] if len(parts) == 4 else None)
        if len(parts) in (3, 4) and parts[0] == "projects" and parts[2] == "members":
            self.admin_only(who)
            return self.members(unquote(parts[1]), parts[3] if len(parts) == 4 else None)
        if rel == "robots":
            self.admin_only(who)
            if m == "POST":
                return self.create_robot()
            if m == "GET":
                return self.list_robots()
        if len(parts) == 2 and parts[0] == "robots":
            self.admin_only(who)
            return self.robot(parts[1])
        if rel == "configurations":
            self.admin_only(who)
            if m == "GET":
                return 200, self.config_view(), []
            if m == "PUT":
                return self.set_config()
        raise Fail(404 if m == "GET" else 405, "NOT_FOUND" if m == "GET" else "METHOD_NOT_ALLOWED", "not found")

    def change_password(self, who, uid):
        b = self.body or {}
        user = next((n for n, u in STATE.users.items() if str(u["user_id"]) == uid), None)
        if user is None:
            raise Fail(404, "NOT_FOUND", "user %s not found" % uid)
        if who[0] != "user" or (who[1] != "admin" and who[1] != user):
            raise Fail(403, "FORBIDDEN", "forbidden")
        if who[1] == user and b.get("old_password") != STATE.users[user]["password"]:
            raise Fail(403, "FORBIDDEN", "Current password is incorrect")
        new = b.get("new_password")
        if not valid_secret(new):
            raise Fail(400, "BAD_REQUEST", "the password or secret must be longer than 8 chars with at least 1 uppercase letter, 1 lowercase letter and 1 number")
        if new == STATE.users[user]["password"]:
            raise Fail(400, "BAD_REQUEST", "New password is identical to old password")
        STATE.users[user]["password"] = new
        return 200, None, []

    def project_view(self, p):
        return {"project_id": p["project_id"], "name": p["name"], "owner_name": "admin",
                "metadata": {"public": p["public"]}, "repo_count": len(p["repos"]),
                "creation_time": p["creation_time"], "update_time": p["creation_time"]}

    def create_project(self):
        b = self.body
        if not isinstance(b, dict) or not isinstance(b.get("project_name"), str):
            raise Fail(400, "BAD_REQUEST", "project_name in body is required")
        name = b["project_name"]
        if not NAME.match(name) or len(name) > 255:
            raise Fail(400, "BAD_REQUEST", "project name is not in lower case or contains illegal characters")
        if name in STATE.projects:
            raise Fail(409, "CONFLICT", "The project named %s already exists" % name)
        public = (b.get("metadata") or {}).get("public", "false")
        if public not in ("true", "false"):
            raise Fail(400, "BAD_REQUEST", "invalid metadata public")
        pid = STATE.next_project
        STATE.next_project += 1
        STATE.projects[name] = {"project_id": pid, "name": name, "public": public, "repos": [],
                                "creation_time": now()}
        STATE.members[name] = [self.new_member("admin", "u", 1, 1)]
        return 201, None, [("Location", "/api/v2.0/projects/%d" % pid)]

    def find_project(self, key):
        if (self.headers.get("X-Is-Resource-Name") or "").lower() == "true":
            return STATE.projects.get(key)
        if not key.isdigit():
            raise Fail(400, "BAD_REQUEST", "project_name_or_id in path must be of type int64: \"%s\"" % key)
        return next((p for p in STATE.projects.values() if p["project_id"] == int(key)), None)

    def project(self, who, key):
        m = self.command
        p = self.find_project(key)
        if who[0] == "robot":
            if m != "GET" or p is None or who[1]["project"] != p["name"]:
                raise Fail(403, "FORBIDDEN", "forbidden")
        else:
            self.admin_only(who)
        if p is None:
            raise Fail(404, "NOT_FOUND", "project %s not found" % key)
        if m in ("GET", "HEAD"):
            return 200, self.project_view(p), []
        if m == "PUT":
            public = ((self.body or {}).get("metadata") or {}).get("public")
            if public is not None:
                if public not in ("true", "false"):
                    raise Fail(400, "BAD_REQUEST", "invalid metadata public")
                p["public"] = public
            return 200, None, []
        if m == "DELETE":
            if p["repos"]:
                raise Fail(412, "PRECONDITION", "the project contains repositories, can not be deleted")
            for rid in [i for i, r in STATE.robots.items() if r["project"] == p["name"]]:
                del STATE.robots[rid]
            del STATE.projects[p["name"]]
            STATE.members.pop(p["name"], None)
            return 200, None, []
        raise Fail(405, "METHOD_NOT_ALLOWED", "method not allowed")

    ROLES = {1: "projectAdmin", 2: "developer", 3: "guest", 4: "maintainer", 5: "limitedGuest"}

    def new_member(self, name, kind, entity_id, role):
        mid = STATE.next_member
        STATE.next_member += 1
        return {"id": mid, "entity_name": name, "entity_type": kind, "entity_id": entity_id, "role_id": role}

    def member_view(self, p, m):
        return dict(m, project_id=p["project_id"], role_name=self.ROLES[m["role_id"]])

    def members(self, key, mid):
        m = self.command
        p = self.find_project(key)
        if p is None:
            raise Fail(400 if m != "GET" else 404, "BAD_REQUEST" if m != "GET" else "NOT_FOUND",
                       "project is not found")
        members = STATE.members[p["name"]]
        if mid is None and m == "GET":
            size = int(self.query.get("page_size", "10"))
            page = int(self.query.get("page", "1"))
            items = [self.member_view(p, x) for x in members][(page - 1) * size:page * size]
            return 200, items, [("X-Total-Count", str(len(members)))]
        if mid is None and m == "POST":
            b = self.body or {}
            group = b.get("member_group") or {}
            gname, gtype = group.get("group_name") or "", group.get("group_type") or 0
            if not gname:
                raise Fail(400, "BAD_REQUEST", "can not get valid member entity")
            gid = STATE.groups.get((gname, gtype))
            if gid is None:
                if STATE.config["auth_mode"] != "oidc_auth":
                    raise Fail(404, "NOT_FOUND", "%s not found" % gname)
                gid = STATE.groups.get((gname, 3)) or len(STATE.groups) + 1
                STATE.groups[(gname, 3)] = gid
            if any(x["entity_type"] == "g" and x["entity_id"] == gid for x in members):
                raise Fail(409, "CONFLICT", "The project member specified already exist")
            role = b.get("role_id")
            if role not in self.ROLES:
                raise Fail(400, "BAD_REQUEST", "Failed to update project member, role is not in 1,2,3")
            new = self.new_member(gname, "g", gid, role)
            members.append(new)
            return 201, None, [("Location", "/api/v2.0/projects/%s/members/%d" % (key, new["id"]))]
        if mid is None:
            raise Fail(405, "METHOD_NOT_ALLOWED", "method not allowed")
        if not mid.isdigit():
            raise Fail(400, "BAD_REQUEST", "mid in path must be of type int64")
        found = next((x for x in members if x["id"] == int(mid)), None)
        if found is None:
            raise Fail(404, "NOT_FOUND", "member %s not found" % mid)
        if m == "GET":
            return 200, self.member_view(p, found), []
        if m == "PUT":
            role = (self.body or {}).get("role_id")
            if role not in self.ROLES:
                raise Fail(400, "BAD_REQUEST", "Failed to update project member, role is not in 1,2,3")
            found["role_id"] = role
            return 200, None, []
        if m == "DELETE":
            members.remove(found)
            return 200, None, []
        raise Fail(405, "METHOD_NOT_ALLOWED", "method not allowed")

    def repositories(self, project, repo):
        # {project_name} is a name here (no X-Is-Resource-Name); a repository
        # name holding `/` comes encoded twice, so one decode leaves %2F.
        m = self.command
        p = STATE.projects.get(project)
        if p is None:
            raise Fail(404, "NOT_FOUND", "project %s not found" % project)
        if repo is None and m == "GET":
            page = int(self.query.get("page") or 1)
            size = int(self.query.get("page_size") or 10)
            if page < 1 or not 0 < size <= 100:
                raise Fail(400, "BAD_REQUEST", "bad page or page_size")
            names = p["repos"][(page - 1) * size:page * size]
            return 200, [{"id": i, "name": "%s/%s" % (project, n), "project_id": p["project_id"],
                          "artifact_count": 1, "pull_count": 0} for i, n in enumerate(names)], \
                [("X-Total-Count", str(len(p["repos"])))]
        if repo is not None and m == "DELETE":
            name = unquote(unquote(repo))
            if "/" in unquote(repo):
                raise Fail(404, "NOT_FOUND", "repository %s not found" % name)
            if name not in p["repos"]:
                raise Fail(404, "NOT_FOUND", "repository %s/%s not found" % (project, name))
            p["repos"].remove(name)
            return 200, None, []
        raise Fail(405, "METHOD_NOT_ALLOWED", "method not allowed")

    def robot_view(self, r):
        return {"id": r["id"], "name": r["name"], "description": r["description"], "level": "project",
                "duration": r["duration"], "editable": True, "disable": r["disable"], "expires_at": -1,
                "permissions": [{"kind": "project", "namespace": r["project"], "access": r["access"]}],
                "creation_time": r["creation_time"], "update_time": r["creation_time"]}

    def create_robot(self):
        b = self.body
        if not isinstance(b, dict):
            raise Fail(400, "BAD_REQUEST", "robot in body is required")
        name = b.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise Fail(400, "BAD_REQUEST", "robot name is not in lower case or contains illegal characters")
        duration = b.get("duration")
        if not isinstance(duration, int) or duration < -1:
            raise Fail(400, "BAD_REQUEST", "bad request error duration input: %s" % duration)
        if b.get("level") not in ("system", "project"):
            raise Fail(400, "BAD_REQUEST", "bad request error level input: %s" % b.get("level"))
        perms = b.get("permissions") or []
        if not perms:
            raise Fail(400, "BAD_REQUEST", "bad request empty permission")
        if any(not p.get("access") for p in perms):
            raise Fail(400, "BAD_REQUEST", "bad request empty access")
        if b["level"] == "project" and len(perms) > 1:
            raise Fail(400, "BAD_REQUEST", "bad request permission")
        if b["level"] != "project":
            raise Fail(400, "BAD_REQUEST", "system robots are not modelled by this stand-in")
        perm = perms[0]
        if perm.get("kind") != "project" or perm.get("namespace") not in STATE.projects:
            raise Fail(404, "NOT_FOUND", "project %s not found" % perm.get("namespace"))
        for a in perm["access"]:
            if set(a) - {"resource", "action", "effect"} or not a.get("resource") or not a.get("action"):
                raise Fail(400, "BAD_REQUEST", "bad request access")
        project = perm["namespace"]
        full = "%s%s+%s" % (STATE.config["robot_name_prefix"], project, name)
        if any(r["name"] == full for r in STATE.robots.values()):
            raise Fail(409, "CONFLICT", "robot account %s already exists" % full)
        rid = STATE.next_robot
        STATE.next_robot += 1
        secret = secrets.token_urlsafe(24) + "Aa1"
        STATE.robots[rid] = {"id": rid, "name": full, "project": project, "secret": secret,
                             "access": [{"resource": a["resource"], "action": a["action"]} for a in perm["access"]],
                             "description": b.get("description", ""), "duration": duration,
                             "disable": bool(b.get("disable", False)), "creation_time": now()}
        return 201, {"id": rid, "name": full, "secret": secret, "creation_time": now(), "expires_at": -1}, \
            [("Location", "/api/v2.0/robots/%d" % rid)]

    def list_robots(self):
        q = dict(kv.split("=", 1) for kv in (self.query.get("q") or "").split(",") if "=" in kv)
        if q.get("Level") != "project":
            return 200, [], [("X-Total-Count", "0")]
        if "ProjectID" not in q:
            raise Fail(400, "BAD_REQUEST", "must with project ID when to query project robots")
        if not q["ProjectID"].isdigit():
            raise Fail(400, "BAD_REQUEST", "Project ID must be int type.")
        project = next((p["name"] for p in STATE.projects.values() if p["project_id"] == int(q["ProjectID"])), None)
        items = [self.robot_view(r) for r in STATE.robots.values() if r["project"] == project]
        return 200, items, [("X-Total-Count", str(len(items)))]

    def robot(self, rid):
        if not rid.isdigit():
            raise Fail(400, "BAD_REQUEST", "robot_id in path must be of type int64")
        r = STATE.robots.get(int(rid))
        if r is None:
            raise Fail(404, "NOT_FOUND", "robot %s not found" % rid)
        if self.command == "GET":
            return 200, self.robot_view(r), []
        if self.command == "DELETE":
            del STATE.robots[r["id"]]
            return 200, None, []
        raise Fail(405, "METHOD_NOT_ALLOWED", "method not allowed")

    def auth_mode_editable(self):
        return len(STATE.users) == 1

    def config_view(self):
        v = {k: {"value": val, "editable": True} for k, val in STATE.config.items()}
        v["auth_mode"]["editable"] = self.auth_mode_editable()
        return v

    def set_config(self):
        b = self.body
        if not isinstance(b, dict):
            raise Fail(400, "BAD_REQUEST", "configurations in body is required")
        for k, val in b.items():
            if k not in CONFIG_KEYS and k not in SECRET_KEYS:
                raise Fail(400, "BAD_REQUEST", "failed to validate configuration: the key %s is not defined" % k)
            default = CONFIG_KEYS.get(k, "")
            if type(val) is not type(default):
                raise Fail(400, "BAD_REQUEST", "failed to validate configuration: %s has a wrong type" % k)
        mode = b.get("auth_mode")
        if mode is not None:
            if mode not in AUTH_MODES:
                raise Fail(400, "BAD_REQUEST", "invalid auth_mode %s" % mode)
            if mode != STATE.config["auth_mode"] and not self.auth_mode_editable():
                raise Fail(400, "BAD_REQUEST", "the auth mode cannot be modified as new users have been inserted into database")
        for k, val in b.items():
            if k in SECRET_KEYS:
                STATE.secrets[k] = val
            else:
                STATE.config[k] = val
        return 200, None, []

    # --- control ----------------------------------------------------------

    def control(self, what, raw):
        with STATE.lock:
            if what == "requests" and self.command == "GET":
                return self.send_json(200, STATE.requests)
            if what == "users" and self.command == "POST":
                name = json.loads(raw)["username"]
                STATE.users[name] = {"user_id": len(STATE.users) + 1, "password": secrets.token_hex(8)}
                return self.send_json(200, {"user_id": STATE.users[name]["user_id"]})
            m = re.match(r"^projects/([^/]+)/push$", what)
            if m and self.command == "POST":
                p = STATE.projects.get(m.group(1))
                if p is None:
                    return self.send_json(404, {})
                repo = (json.loads(raw or b"{}") or {}).get("repository") or "image-%d" % (len(p["repos"]) + 1)
                if repo not in p["repos"]:
                    p["repos"].append(repo)
                return self.send_json(200, {})
            if what == "state" and self.command == "GET":
                return self.send_json(200, {
                    "projects": {n: {"public": p["public"], "repos": len(p["repos"]), "repositories": p["repos"]}
                                 for n, p in STATE.projects.items()},
                    "robots": sorted(r["name"] for r in STATE.robots.values()),
                    "config": STATE.config,
                    "secretsSet": sorted(STATE.secrets),
                    "users": sorted(STATE.users),
                    "members": {n: {x["entity_name"]: [x["entity_type"], x["role_id"]] for x in ms}
                                for n, ms in STATE.members.items()},
                    "clientSecretSha256": hashlib.sha256(
                        STATE.secrets.get("oidc_client_secret", "").encode()).hexdigest(),
                })
        self.send_json(404, {})


ADMIN_FILE = None


def started():
    """With --admin-password-file, core initialises (setting admin's
    password from the file, once) only when the file exists."""
    if ADMIN_FILE is None or STATE.initialised:
        return True
    with STATE.lock:
        if not STATE.initialised:
            try:
                with open(ADMIN_FILE) as f:
                    STATE.users["admin"]["password"] = f.read()
            except OSError:
                return False
            STATE.initialised = True
    return True


def main():
    global STATE, ADMIN_FILE
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--admin-password", default="Harbor12345")
    p.add_argument("--admin-password-file", help="HARBOR_ADMIN_PASSWORD as core's pod gets it; start once it exists")
    args = p.parse_args()
    STATE = State(args.admin_password)
    ADMIN_FILE = args.admin_password_file
    server = QuietServer(("127.0.0.1", 0), Handler)
    server.label = "Harbor stand-in"
    publish_port(server, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
