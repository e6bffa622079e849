#!/usr/bin/env python3
"""STAND-IN for the REST API of GitLab CE 15.10 (API v4, JSON; GitLab cannot
be installed here). It models the documented behaviour the installer relies
on and rejects what the real server rejects, with GitLab's status codes and
message shapes (checked against GitLab's lib/api sources of that era):

* routing: a path no route knows is 404 {"error": "404 Not Found"}; a known
  path with a method it lacks is 405 {"error": "405 Not Allowed"} with an
  Allow header (HEAD works wherever GET does). Path parameters are single
  URL segments, as in GitLab: a project path or file path must have its "/"
  encoded as %2F, else the route does not match (404). Request bodies are
  JSON or form-urlencoded (`scopes[]=api` form arrays too), merged with the
  query string as Grape does;
* auth: `PRIVATE-TOKEN: <t>`, `Authorization: Bearer <t>` (PAT or OAuth
  access token) or `?private_token=`. An unknown token is 401
  {"message": "401 Unauthorized"}; an expired one (PATs: expires_at <= today,
  they die at 00:00 UTC of that date; OAuth: 7200 s after issue) is 401
  {"error": "invalid_token", "error_description": "Token is expired. You can
  either do re-authorization or token refresh."}; a revoked one is 401
  {"error": "invalid_token", "error_description": "Token was revoked. You
  have to re-authorize from the user."}. A token is checked even on routes
  that do not need one. Scopes: `api` allows everything, `read_api` only
  GET/HEAD, `read_user` also GETs under /user and /users; anything else is
  403 {"error": "insufficient_scope", "error_description": "The request
  requires higher privileges than provided by the access token.", "scope":
  "<allowed scopes, space separated>"}. No token where one is needed: 401
  {"message": "401 Unauthorized"}; admin-only routes (applications, creating
  PATs for users) answer a non-admin 403 {"message": "403 Forbidden"}.
  Invisible groups/projects are 404 (as GitLab hides them);
* clock: "today" is the real UTC date shifted by /_standin/shift-days; every
  expiry uses it;
* state at start: user 1 `root` (admin, "Administrator", admin@example.com)
  with --root-password (default standin-root-password) and its personal
  namespace `root`; with --admin-token <t>, a PAT `bootstrap` [api, sudo] of
  user 1 expiring 365 days after today;
* POST /oauth/token (form or JSON): grant_type=password with username and
  password (no client credentials needed, as GitLab allows), or
  grant_type=refresh_token -> {access_token, token_type "Bearer", expires_in
  7200, refresh_token, scope "api", created_at}; wrong credentials 400
  {"error": "invalid_grant", ...}; missing/unknown grant_type 400
  invalid_request / unsupported_grant_type; an unknown `scope` 400
  invalid_scope;
* GET /api/v4/version; GET /-/readiness, /-/health (no auth);
* GET /api/v4/user ({id, username, name, email, state, ...}; `is_admin`
  only for admins, as GitLab's UserWithAdmin entity); GET /api/v4/users/:id
  (404 "404 User Not Found"; email and is_admin only for admins);
* personal access tokens: GET /api/v4/personal_access_tokens (admin: all,
  filters user_id (unknown 404), state active|inactive, revoked, search;
  non-admin: its own; a non-admin asking for another user_id is 401),
  paginated; GET .../personal_access_tokens/self (404 {"message": "404 Not
  Found"} for an OAuth token); DELETE .../self (204); GET|DELETE
  .../personal_access_tokens/:id (unknown 404 {"message": "404 Not found"},
  as ActiveRecord::RecordNotFound answers; revoking another user's token as a
  non-admin 400 {"message": "400 Bad request"}); POST
  /api/v4/users/:user_id/personal_access_tokens (admin) {name, scopes
  (array or comma string), expires_at?} -> 201 with `token` (glpat- + 20
  chars). Grape validation: `name is missing`, `scopes is missing`,
  `scopes does not have a valid value` (api, read_api, read_user,
  read_repository, write_repository, read_registry, write_registry, sudo,
  admin_mode), `expires_at is invalid` (YYYY-MM-DD, or a timestamp whose date
  is taken) - all 400 {"error"}; an empty scope list 400 `scopes is empty`;
  a date before today 400 {"message": {"expires_at": ["cannot be a date in
  the past"]}} (STAND-IN CHOICE: 15.10 may accept it);
* groups: GET /api/v4/groups (search, order_by name|path|id default name,
  sort asc|desc), paginated; GET /api/v4/groups/:id (numeric or encoded full
  path; 404 {"message": "404 Group Not Found"}); GET .../:id/projects,
  .../:id/subgroups (projects: include_subgroups=true adds those of every
  group below); POST /api/v4/groups {name, path, visibility?,
  parent_id?} -> 201 (non-admins 403; `name is missing, path is missing`;
  a top-level path GitLab reserves for its routes (admin, api, groups, ...)
  400 "Failed to save group {:path=>[\"admin is a reserved name\"]}";
  unknown parent 404; a taken path under the same parent 400 {"message":
  "Failed to save group {:path=>[\\"has already been taken\\"]}"} - GitLab
  renders the Ruby hash into the string); DELETE -> 202 {"message": "202
  Accepted"}, removing subgroups and projects at once;
* projects: GET /api/v4/projects (search, order_by id|name|path|created_at
  default created_at, sort default desc), paginated; GET /api/v4/projects/:id
  (numeric or encoded path; 404 {"message": "404 Project Not Found"});
  POST /api/v4/projects {name and/or path (`name, path are missing, at least
  one parameter must be provided`), namespace_id? (default: the user's
  namespace; unknown 404 "404 Namespace Not Found"), default_branch? (main),
  visibility? (private), initialize_with_readme?} -> 201; a taken name or
  path in the namespace 400 {"message": {"name": [...], "path": ["has
  already been taken"]}} (only the keys that clash); DELETE -> 202;
* deploy keys: GET|POST /projects/:id/deploy_keys, GET|DELETE .../:key_id
  (maintainers/admins only, else 403). The key must be an OpenSSH public key
  (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256|384|521, whose base64 decodes
  and names the same type) else 400 {"message": {"key": ["is invalid"],
  "fingerprint_sha256": ["cannot be generated"]}}. As in GitLab, POSTing the
  exact key string a project already has returns that entry (201, nothing
  changes), and a key known from another project is linked, not copied; the
  same key body with another comment is 400 {"message": {"fingerprint_sha256":
  ["has already been taken"]}}; DELETE 204, unknown 404 "404 Deploy Key Not
  Found";
* project access tokens: GET|POST /projects/:id/access_tokens, GET|DELETE
  .../:token_id. POST {name, scopes (api read_api read_repository
  write_repository read_registry write_registry), access_level? (10, 20, 30,
  40; default 40), expires_at?} -> 201 with `token`; it creates a bot user
  `project_<id>_bot[N]` that is a member of that project only. DELETE
  revokes the token (204); unknown 404 "404 Could not find project access
  token with token_id: N Not Found". Managing them needs maintainer/admin:
  403 for GET, 400 "400 Bad request - User does not have permission to
  create project access token" for POST;
* permissions inside a project: admin = owner; a bot has its access level;
  anonymous/others see public (and, logged in, internal) projects read-only.
  Reading code needs reporter (20); pushing needs developer (30), and
  maintainer (40) for the default branch, which is protected as GitLab
  protects it by default; a refused push is 403 {"message": "403 Forbidden
  - You are not allowed to push into this branch"};
* repository (per project: commits with whole file trees, branches naming
  commits; commit ids are 40-hex sha1; blob ids are git blob sha1s):
  GET .../repository/branches (paginated) and .../branches/:branch
  ({name, commit, merged, protected, developers_can_push,
  developers_can_merge, can_push, default, web_url}; 404 "404 Branch Not
  Found"); GET .../repository/files/:file_path?ref= ({file_name, file_path,
  size, encoding "base64", content, content_sha256, ref, blob_id,
  commit_id, last_commit_id}; `ref is missing` 400; unknown ref 404 "404
  Commit Not Found"; missing file 404 "404 File Not Found") and
  .../files/:file_path/raw; GET .../repository/tree?ref=&path=&recursive=
  (paginated [{id, name, type, path, mode}], trees first; unknown ref or
  empty repo 404 "404 Tree Not Found"; ref defaults to the default branch);
  GET .../repository/commits/:sha; POST .../repository/commits {branch,
  commit_message, actions: [{action create|update|delete|move|chmod,
  file_path, previous_path (move), content (required for update), encoding
  text|base64, execute_filemode (chmod)}], start_branch?, author_email?,
  author_name?} -> 201 commit {id, short_id, title, message, parent_ids,
  created_at, author_*, committer_*, stats {additions, deletions, total},
  ...}. Grape checks first (`branch is missing`, `actions is empty`,
  `actions[0][action] does not have a valid value`, `actions[0][content] is
  missing` ... as {"error"} 400), then the push permission (403), then the
  commit: in an EMPTY repo any branch is created; otherwise a missing
  branch needs an existing start_branch, else 400 {"message": "You can only
  create or edit files when you are on a branch"}; a branch that exists with
  another start_branch 400 "A branch called '<b>' already exists. Switch to
  that branch in order to make changes"; create of an existing path 400 "A
  file with this name already exists"; update/delete/move/chmod of a missing
  path 400 "A file with this name doesn't exist"; a path that is a
  directory 400 "A directory with this name already exists"; `..`, empty
  or absolute paths 400 {"error": "actions[0][file_path] should be a valid
  file path"}. A commit is atomic: any failing action changes nothing. An
  update with unchanged content still makes a commit (as Gitaly does);
* applications (admin; instance-wide OAuth apps): GET /api/v4/applications
  (paginated [{id, application_id, application_name, callback_url,
  confidential}] - no secret, no scopes, as in 15.10); POST {name,
  redirect_uri, scopes (space-separated string), confidential? (default
  true)} -> 201 {id, application_id (64 hex), application_name, secret (64
  hex), callback_url, confidential}; `name is missing`... / `scopes is
  empty` 400 {"error"}; unknown scope (api read_api read_user
  read_repository write_repository read_registry write_registry sudo
  admin_mode openid profile email) 400 {"message": {"scopes": ["doesn't
  match configured on the server."]}}; a redirect_uri that is not an
  absolute URI 400 {"message": {"redirect_uri": ["must be an absolute
  URI."]}}; DELETE /api/v4/applications/:id 204 (unknown 404 "404
  Application Not Found"). There is NO update endpoint in 15.10: PUT/PATCH
  on an application are 405;
* pagination of every list: page, per_page (default 20, at most 100; not
  integers: `page is invalid`), headers X-Total, X-Total-Pages (at least 1),
  X-Page, X-Per-Page, X-Next-Page, X-Prev-Page (empty when none) and Link
  with rel="next"/"prev"/"first"/"last";
* routes GitLab has but this stand-in does not model (PUT of groups,
  projects, deploy keys; file writes through the Files API; creating or
  deleting branches) answer 501 {"message": "stand-in: ... not modelled"};
* test controls (no auth, not logged): GET /_standin/requests (ordered log
  of every other request: method, path as sent, i.e. still percent-encoded,
  without the query, query, status, time; never bodies or tokens);
  POST /_standin/reset-log; GET /_standin/dump (users, PATs with their
  token values, OAuth tokens, groups, projects with branches and file
  contents, deploy keys, applications with scopes and secret, today);
  POST /_standin/reject-push {"project": "<full path>", "reject": bool};
  POST /_standin/edit-application {"id", "callback_url"?, "scopes"?,
  "name"?} (someone editing the app in the admin UI: application_id and
  secret kept); POST /_standin/set-token-expiry {"id" | "token",
  "expires_at": "YYYY-MM-DD" | null}; POST /_standin/shift-days {"days"};
  POST /_standin/runner {"script": "update-application", "uid",
  "redirect_uri"?, "scopes"?, "confidential"?, "name"?} - what `gitlab-rails
  runner` does on the GitLab host to update an app in place by its
  application_id (15.10 has no update API): 200 with the app, 404 unknown
  uid, 400 invalid scopes/redirect_uri or unknown script;
* crash injection: POST /_standin/hold {"method", "path": <regex matched
  against the whole path as sent>} arms a hold on the next matching API
  request: it is carried out (and logged) as usual, then its answer is held
  back - the connection stays open with nothing sent - until POST
  /_standin/release (or 300 s), so a test can kill the client at exactly
  "done, answer not received". GET /_standin/held lists the requests held
  so far ({method, path, status}).

* sign-in and OAuth authorization codes, as Dex's gitlab connector (v2.32)
  uses them: GET /users/sign_in (an HTML form); POST /users/sign_in
  (form `user[login]` = username or email, `user[password]`) -> 302 to `/`
  with a `_gitlab_session` cookie, or, on a wrong login, 302 back to
  /users/sign_in without one (Devise's failure redirect). GET
  /oauth/authorize (client_id, redirect_uri, response_type, scope, state)
  without a signed-in session -> 302 to /users/sign_in; an unknown
  client_id -> 401 error page (Doorkeeper's invalid_client), a redirect_uri
  the application does not list -> 400 error page (never redirected to);
  response_type other than `code` or a scope the application lacks -> 302
  to the redirect_uri with error=unsupported_response_type / invalid_scope
  and the state; else, for an application this user has not authorized
  for these scopes yet, 200 with the "Authorize <app>" page whose form
  POSTs the same fields to /oauth/authorize, and once authorized (or for
  that POST) 302 to redirect_uri?code=...&state=... (codes: single use,
  600 s, bound to client and redirect_uri). POST /oauth/token
  grant_type=authorization_code with client_id/client_secret (HTTP Basic,
  as golang.org/x/oauth2 tries first, or form fields), code and
  redirect_uri: a wrong or missing client secret 401 invalid_client; an
  unknown, used, expired code, another client's or another redirect_uri
  400 invalid_grant; else the access token for the grant's scopes.
  GET /oauth/userinfo (Bearer token with scope `openid`, else 401/403
  insufficient_scope) -> {sub, sub_legacy, name, nickname,
  preferred_username, email, email_verified, website, profile, picture,
  groups}: `groups` are the full paths of the user's groups and their
  descendants (GitLab's membership groups). Users other than root come
  from POST /_standin/add-user {username, name?, email?, password,
  groups: [full paths]} (groups made as needed; an existing user's groups
  and password replaced) -> {id}. Not modelled: CSRF authenticity tokens,
  remember-me, 2FA, PKCE, consent revocation;

Not modelled: sudo/impersonation, group
and project members APIs, merge requests, protected-branch APIs, webhooks,
keyset pagination, rate limits, HTML pages. Secrets (tokens, passwords,
application secrets) are never written to stdout or stderr.

Run: gitlab_standin.py --port-file F [--port P] [--root-password PW]
     [--admin-token T]   (port 0: any free port)
"""
import argparse, base64, binascii, copy, difflib, hashlib, json, math, re, secrets, threading, time
from datetime import date, datetime, timedelta, timezone
from standin_http import QuietHandler, QuietServer, publish_port
from urllib.parse import urlparse, parse_qsl, unquote, urlencode, quote

VERSION = "15.10.0"
LOCK = threading.RLock()         # one lock around all state, held for a whole request
S = {}                           # the store; see reset_store()
LOG = []
HOLDS = []                       # armed holds: {"method", "path" (compiled regex)}
HELD = []                        # requests whose answer was held back
RELEASE = threading.Event()
ARGS = None
BASE_URL = ""                    # http://127.0.0.1:<port>, GitLab's external_url here

PAT_SCOPES = ["api", "read_api", "read_user", "read_repository", "write_repository", "read_registry",
              "write_registry", "sudo", "admin_mode"]
BOT_SCOPES = ["api", "read_api", "read_repository", "write_repository", "read_registry", "write_registry"]
APP_SCOPES = ["api", "read_api", "read_user", "read_repository", "write_repository", "read_registry",
              "write_registry", "sudo", "admin_mode", "openid", "profile", "email"]
ACCESS_LEVELS = (10, 20, 30, 40)
OAUTH_TTL = 7200
INSUFFICIENT = "The request requires higher privileges than provided by the access token."
INVALID_GRANT = ("The provided authorization grant is invalid, expired, revoked, does not match the redirection "
                 "URI used in the authorization request, or was issued to another client.")
NO_PUSH = "403 Forbidden - You are not allowed to push into this branch"
PATH_RULE = ("can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', end in '.git' or end "
             "in '.atom'")
PATH_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*")


class Reply(Exception):
    """Raised anywhere to answer at once; body None means no body (204)."""

    def __init__(self, status, body=None, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def message(status, text):
    raise Reply(status, {"message": text})


def error(status, text):
    raise Reply(status, {"error": text})


def not_found(what=None):
    message(404, "404 %s Not Found" % what if what else "404 Not Found")


def forbidden():
    message(403, "403 Forbidden")


def unauthorized():
    message(401, "401 Unauthorized")


def not_modelled(ctx):
    message(501, "stand-in: %s %s is not modelled" % (ctx["method"], ctx["route"]))


# ---------------------------------------------------------------- clock

def now():
    return time.time() + S["offset_days"] * 86400


def today():
    return datetime.fromtimestamp(now(), timezone.utc).date()


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pat_expired(tok):
    # GitLab: a token expires on its date at 00:00 UTC, so a token dated today no longer works.
    return tok["expires_at"] is not None and date.fromisoformat(tok["expires_at"]) <= today()


# ---------------------------------------------------------------- store

def new_id(kind):
    S["next"][kind] = S["next"].get(kind, 0) + 1
    return S["next"][kind]


def reset_store():
    S.clear()
    S.update({"offset_days": 0, "next": {}, "users": {}, "namespaces": {}, "tokens": {}, "oauth": {},
              "refresh": {}, "projects": {}, "deploy_keys": {}, "apps": {}, "sessions": {}, "consents": {},
              "codes": {}, "members": {}})
    root = add_user("root", "Administrator", "admin@example.com", admin=True, password=ARGS.root_password)
    if ARGS.admin_token:
        tid = new_id("token")
        S["tokens"][tid] = {"id": tid, "name": "bootstrap", "token": ARGS.admin_token, "user_id": root["id"],
                            "scopes": ["api", "sudo"], "created_at": iso(now()), "revoked": False,
                            "expires_at": (today() + timedelta(days=365)).isoformat(), "last_used_at": None}


def add_user(username, name, email, admin=False, password=None, bot=None):
    uid = new_id("user")
    user = {"id": uid, "username": username, "name": name, "email": email, "is_admin": admin,
            "state": "active", "password": password, "bot": bot, "created_at": iso(now())}
    S["users"][uid] = user
    nid = new_id("namespace")
    S["namespaces"][nid] = {"id": nid, "name": username, "path": username, "kind": "user", "parent_id": None,
                            "visibility": "private", "owner_id": uid, "created_at": iso(now())}
    user["namespace_id"] = nid
    return user


def full_path(ns):
    parts = [ns["path"]]
    while ns["parent_id"]:
        ns = S["namespaces"][ns["parent_id"]]
        parts.append(ns["path"])
    return "/".join(reversed(parts))


def full_name(ns):
    parts = [ns["name"]]
    while ns["parent_id"]:
        ns = S["namespaces"][ns["parent_id"]]
        parts.append(ns["name"])
    return " / ".join(reversed(parts))


def ancestors(ns_id):
    out = []
    while ns_id:
        out.append(ns_id)
        ns_id = S["namespaces"][ns_id]["parent_id"]
    return out


def project_path(p):
    return full_path(S["namespaces"][p["namespace_id"]]) + "/" + p["path"]


# ---------------------------------------------------------------- parameters (Grape's rules)

def present(params, name):
    return name in params and params[name] is not None


def require(params, *names):
    missing = [n for n in names if not present(params, n)]
    if missing:
        error(400, ", ".join("%s is missing" % n for n in missing))


def as_int(params, name, default=None):
    if not present(params, name):
        return default
    v = params[name]
    if isinstance(v, bool):
        error(400, "%s is invalid" % name)
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
        return int(v)
    error(400, "%s is invalid" % name)


def as_bool(params, name, default=None):
    if not present(params, name):
        return default
    v = params[name]
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "t", "f", "yes", "no"):
        return v.lower() in ("true", "1", "t", "yes")
    if isinstance(v, int):
        return v != 0
    error(400, "%s is invalid" % name)


def as_str(params, name, default=None):
    if not present(params, name):
        return default
    v = params[name]
    if isinstance(v, (dict, list)):
        error(400, "%s is invalid" % name)
    return str(v) if not isinstance(v, bool) else ("true" if v else "false")


def as_date(params, name):
    if not present(params, name):
        return None
    v = params[name]
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?)?", str(v).strip())
    if not isinstance(v, str) or not m:
        error(400, "%s is invalid" % name)
    try:
        return date.fromisoformat(m.group(1))
    except ValueError:
        error(400, "%s is invalid" % name)


def one_of(params, name, values, default=None):
    v = as_str(params, name, default)
    if v is not None and v not in values:
        error(400, "%s does not have a valid value" % name)
    return v


def scope_list(params, name, valid):
    """Array[String] coerced from an array or a comma-separated string."""
    v = params.get(name)
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if not isinstance(v, list) or any(not isinstance(s, str) for s in v):
        error(400, "%s is invalid" % name)
    if not v:
        error(400, "%s is empty" % name)
    if any(s not in valid for s in v):
        error(400, "%s does not have a valid value" % name)
    return list(dict.fromkeys(v))


# ---------------------------------------------------------------- pagination

def paginate(ctx, items):
    page = as_int(ctx["params"], "page", 1)
    per_page = as_int(ctx["params"], "per_page", 20)
    page = max(page, 1)
    per_page = 20 if per_page < 1 else min(per_page, 100)
    total = len(items)
    pages = max(1, math.ceil(total / per_page))
    chunk = items[(page - 1) * per_page: page * per_page]
    query = {k: v for k, v in ctx["query"].items() if k not in ("page", "per_page")}

    def link(n):
        return "<%s%s?%s>" % (BASE_URL, ctx["raw_path"], urlencode(dict(query, page=n, per_page=per_page)))

    links = []
    if page < pages:
        links.append(link(page + 1) + '; rel="next"')
    if 1 < page <= pages:
        links.append(link(page - 1) + '; rel="prev"')
    links += [link(1) + '; rel="first"', link(pages) + '; rel="last"']
    headers = {"X-Total": str(total), "X-Total-Pages": str(pages), "X-Page": str(page),
               "X-Per-Page": str(per_page), "X-Next-Page": str(page + 1) if page < pages else "",
               "X-Prev-Page": str(page - 1) if 1 < page <= pages else "", "Link": ", ".join(links)}
    return 200, chunk, headers


# ---------------------------------------------------------------- authentication

def token_of(ctx):
    h = ctx["headers"]
    t = h.get("PRIVATE-TOKEN") or ctx["query"].get("private_token") or ctx["query"].get("access_token")
    if t:
        return t
    auth = h.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def invalid_token(description):
    raise Reply(401, {"error": "invalid_token", "error_description": description},
                {"WWW-Authenticate": 'Bearer realm="Protected by OAuth 2.0", error="invalid_token", '
                                     'error_description="%s"' % description})


def authenticate(ctx):
    """Sets ctx user/token from the request's token (if any); checks expiry, revocation, scopes."""
    raw = token_of(ctx)
    ctx["user"] = ctx["pat"] = ctx["oauth"] = None
    if raw is None:
        return
    pat = next((t for t in S["tokens"].values() if t["token"] == raw), None)
    if pat is not None:
        if pat_expired(pat):
            invalid_token("Token is expired. You can either do re-authorization or token refresh.")
        if pat["revoked"]:
            invalid_token("Token was revoked. You have to re-authorize from the user.")
        scopes, user_id = pat["scopes"], pat["user_id"]
    elif raw in S["oauth"]:
        o = S["oauth"][raw]
        if now() >= o["created_at"] + o["expires_in"]:
            invalid_token("Token is expired. You can either do re-authorization or token refresh.")
        if o["revoked"]:
            invalid_token("Token was revoked. You have to re-authorize from the user.")
        scopes, user_id = o["scopes"], o["user_id"]
    else:
        unauthorized()
    allowed = ["api"]
    if ctx["method"] in ("GET", "HEAD"):
        allowed = (["read_user"] if ctx["users_api"] else []) + ["api", "read_api"]
    if not set(scopes) & set(allowed):
        raise Reply(403, {"error": "insufficient_scope", "error_description": INSUFFICIENT,
                          "scope": " ".join(allowed)},
                    {"WWW-Authenticate": 'Bearer realm="Protected by OAuth 2.0", error="insufficient_scope", '
                                         'error_description="%s", scope="%s"' % (INSUFFICIENT, " ".join(allowed))})
    user = S["users"].get(user_id)
    if user is None or user["state"] != "active":
        unauthorized()
    ctx["user"] = user
    if pat is not None:
        ctx["pat"] = pat
        pat["last_used_at"] = iso(now())
    else:
        ctx["oauth"] = S["oauth"][raw]


def need_user(ctx):
    if ctx["user"] is None:
        unauthorized()
    return ctx["user"]


def need_admin(ctx):
    if not need_user(ctx)["is_admin"]:
        forbidden()
    return ctx["user"]


# ---------------------------------------------------------------- permissions

def member_level(user, p):
    if user is None:
        return 0
    if user["is_admin"]:
        return 50
    bot = user["bot"]
    if bot and bot["project_id"] == p["id"]:
        return bot["access_level"]
    return 0


def read_level(user, p):
    """Effective level for reading: members by role, others by visibility."""
    level = member_level(user, p)
    if p["visibility"] == "public" or (p["visibility"] == "internal" and user is not None):
        level = max(level, 20)
    return level


def can_see_group(user, g):
    if user is not None and user["is_admin"]:
        return True
    if g["visibility"] == "public" or (g["visibility"] == "internal" and user is not None):
        return True
    # Members of a project can see the groups above it.
    return any(member_level(user, p) > 0 and g["id"] in ancestors(p["namespace_id"]) for p in S["projects"].values())


def find_group(ctx, ref):
    g = None
    if re.fullmatch(r"\d+", ref):
        g = S["namespaces"].get(int(ref))
    else:
        g = next((n for n in S["namespaces"].values() if full_path(n).lower() == ref.lower()), None)
    if g is None or g["kind"] != "group" or not can_see_group(ctx["user"], g):
        not_found("Group")
    return g


def find_project(ctx, ref):
    p = None
    if re.fullmatch(r"\d+", ref):
        p = S["projects"].get(int(ref))
    else:
        p = next((q for q in S["projects"].values() if project_path(q).lower() == ref.lower()), None)
    if p is None or read_level(ctx["user"], p) == 0:
        not_found("Project")
    return p


def project_for_code(ctx):
    p = find_project(ctx, ctx["args"]["id"])
    if read_level(ctx["user"], p) < 20:
        forbidden()
    return p


def project_for_admin(ctx):
    need_user(ctx)
    p = find_project(ctx, ctx["args"]["id"])
    if member_level(ctx["user"], p) < 40:
        forbidden()
    return p


def can_push(user, p, branch):
    level = member_level(user, p)
    if branch == default_branch(p) and p["branches"]:
        return level >= 40
    return level >= 30


# ---------------------------------------------------------------- entities

def user_entity(user, viewer, full=False):
    e = {"id": user["id"], "username": user["username"], "name": user["name"], "state": user["state"],
         "avatar_url": None, "web_url": "%s/%s" % (BASE_URL, user["username"]), "bot": bool(user["bot"])}
    if full or (viewer is not None and viewer["is_admin"]):
        e.update(email=user["email"], created_at=user["created_at"])
    if viewer is not None and viewer["is_admin"]:
        e["is_admin"] = user["is_admin"]
    return e


def token_entity(t, with_token=False):
    e = {"id": t["id"], "name": t["name"], "revoked": t["revoked"], "created_at": t["created_at"],
         "scopes": list(t["scopes"]), "user_id": t["user_id"], "last_used_at": t["last_used_at"],
         "active": not t["revoked"] and not pat_expired(t), "expires_at": t["expires_at"]}
    if "access_level" in t:
        e["access_level"] = t["access_level"]
    if with_token:
        e["token"] = t["token"]
    return e


def group_entity(g):
    return {"id": g["id"], "web_url": "%s/groups/%s" % (BASE_URL, full_path(g)), "name": g["name"],
            "path": g["path"], "description": g.get("description", ""), "visibility": g["visibility"],
            "full_name": full_name(g), "full_path": full_path(g), "parent_id": g["parent_id"],
            "created_at": g["created_at"]}


def default_branch(p):
    if p["default_branch"] in p["branches"] or not p["branches"]:
        return p["default_branch"]
    return sorted(p["branches"])[0]


def project_entity(p, viewer):
    ns = S["namespaces"][p["namespace_id"]]
    path = project_path(p)
    e = {"id": p["id"], "description": p["description"], "name": p["name"],
         "name_with_namespace": "%s / %s" % (full_name(ns), p["name"]), "path": p["path"],
         "path_with_namespace": path, "created_at": p["created_at"],
         "ssh_url_to_repo": "git@%s:%s.git" % (urlparse(BASE_URL).hostname, path),
         "http_url_to_repo": "%s/%s.git" % (BASE_URL, path), "web_url": "%s/%s" % (BASE_URL, path),
         "visibility": p["visibility"], "empty_repo": not p["branches"], "archived": False,
         "namespace": {"id": ns["id"], "name": ns["name"], "path": ns["path"], "kind": ns["kind"],
                       "full_path": full_path(ns), "parent_id": ns["parent_id"]}}
    if read_level(viewer, p) >= 20:
        e["default_branch"] = default_branch(p)
    return e


def commit_entity(p, c):
    return {"id": c["id"], "short_id": c["id"][:8], "created_at": c["created_at"], "parent_ids": c["parent_ids"],
            "title": c["message"].split("\n", 1)[0], "message": c["message"], "author_name": c["author_name"],
            "author_email": c["author_email"], "authored_date": c["created_at"],
            "committer_name": c["author_name"], "committer_email": c["author_email"],
            "committed_date": c["created_at"], "trailers": {},
            "web_url": "%s/%s/-/commit/%s" % (BASE_URL, project_path(p), c["id"])}


def blob_sha(content):
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


# ---------------------------------------------------------------- /oauth/token

def oauth_token(ctx):
    params = ctx["params"]
    grant = as_str(params, "grant_type")
    if not grant:
        raise Reply(400, {"error": "invalid_request", "error_description": "Missing required parameter: grant_type."})
    if grant == "authorization_code":
        return code_grant(ctx)
    scope = as_str(params, "scope") or "api"
    if any(s not in APP_SCOPES for s in scope.split()):
        raise Reply(400, {"error": "invalid_scope",
                          "error_description": "The requested scope is invalid, unknown, or malformed."})
    if grant == "password":
        user = next((u for u in S["users"].values() if u["username"] == as_str(params, "username")
                     or u["email"] == as_str(params, "username")), None)
        if user is None or user["password"] is None or user["password"] != as_str(params, "password"):
            raise Reply(400, {"error": "invalid_grant", "error_description": INVALID_GRANT})
    elif grant == "refresh_token":
        old = S["refresh"].pop(as_str(params, "refresh_token") or "", None)
        if old is None:
            raise Reply(400, {"error": "invalid_grant", "error_description": INVALID_GRANT})
        S["oauth"][old]["revoked"] = True
        user = S["users"][S["oauth"][old]["user_id"]]
    else:
        raise Reply(400, {"error": "unsupported_grant_type",
                          "error_description": "The authorization grant type is not supported by the "
                                               "authorization server."})
    access, refresh = secrets.token_hex(32), secrets.token_hex(32)
    created = int(now())
    S["oauth"][access] = {"user_id": user["id"], "scopes": scope.split(), "created_at": created,
                          "expires_in": OAUTH_TTL, "revoked": False, "refresh_token": refresh}
    S["refresh"][refresh] = access
    return 200, {"access_token": access, "token_type": "Bearer", "expires_in": OAUTH_TTL,
                 "refresh_token": refresh, "scope": scope, "created_at": created}


# ---------------------------------------------------------------- sign-in and authorization codes

SESSION_COOKIE = "_gitlab_session"
CODE_TTL = 600
INVALID_CLIENT = ("Client authentication failed due to unknown client, no client authentication included, or "
                  "unsupported authentication method.")


def html(status, title, body, headers=None):
    page = "<!DOCTYPE html><html><head><title>%s</title></head><body>%s</body></html>" % (title, body)
    raise Reply(status, RawBody(page.encode(), "text/html; charset=utf-8"), headers)


def esc(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def session_user(ctx):
    for part in (ctx["headers"].get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value in S["sessions"]:
            user = S["users"].get(S["sessions"][value])
            if user is not None and user["state"] == "active":
                return user
    return None


def sign_in_page(ctx):
    html(200, "Sign in · GitLab", '<form method="post" action="/users/sign_in">'
         '<input name="user[login]"><input type="password" name="user[password]">'
         '<button type="submit">Sign in</button></form>')


def sign_in(ctx):
    params = ctx["params"]
    login, password = as_str(params, "user[login]"), as_str(params, "user[password]")
    user = next((u for u in S["users"].values() if login and (u["username"] == login or u["email"] == login)),
                None)
    if user is None or user["password"] is None or user["password"] != password or user["state"] != "active":
        raise Reply(302, None, {"Location": BASE_URL + "/users/sign_in"})
    sid = secrets.token_hex(16)
    S["sessions"][sid] = user["id"]
    raise Reply(302, None, {"Location": BASE_URL + "/",
                            "Set-Cookie": "%s=%s; path=/; HttpOnly; SameSite=Lax" % (SESSION_COOKIE, sid)})


def authorization_request(ctx):
    """The application and the checked request fields, or an error reply as GitLab gives it."""
    params = ctx["params"]
    client_id, redirect_uri = as_str(params, "client_id"), as_str(params, "redirect_uri")
    app = next((a for a in S["apps"].values() if a["uid"] == client_id), None)
    if app is None:
        html(401, "An error has occurred", "<p>Client authentication failed due to unknown client.</p>")
    if not redirect_uri or redirect_uri not in app["redirect_uri"].split():
        html(400, "An error has occurred", "<p>The redirect uri included is not valid.</p>")
    state = as_str(params, "state")

    def back(**query):
        if state:
            query["state"] = state
        sep = "&" if "?" in redirect_uri else "?"
        raise Reply(302, None, {"Location": redirect_uri + sep + urlencode(query)})

    if as_str(params, "response_type") != "code":
        back(error="unsupported_response_type",
             error_description="The authorization server does not support this response type.")
    scopes = (as_str(params, "scope") or app["scopes"]).split()
    if not scopes or any(s not in app["scopes"].split() for s in scopes):
        back(error="invalid_scope", error_description="The requested scope is invalid, unknown, or malformed.")
    return app, redirect_uri, scopes, back


def authorize(ctx):
    user = session_user(ctx)
    if user is None:
        raise Reply(302, None, {"Location": BASE_URL + "/users/sign_in"})
    app, redirect_uri, scopes, back = authorization_request(ctx)
    granted = S["consents"].get((user["id"], app["id"]), set())
    if ctx["method"] == "GET" and not set(scopes) <= granted:
        p = ctx["params"]
        fields = "".join('<input type="hidden" name="%s" value="%s">' % (k, esc(as_str(p, k) or ""))
                         for k in ("client_id", "redirect_uri", "state", "response_type", "scope"))
        html(200, "Authorize %s" % esc(app["name"]),
             '<h1>Authorize %s to use your account?</h1><form method="post" action="/oauth/authorize">%s'
             '<button type="submit">Authorize</button></form>' % (esc(app["name"]), fields))
    S["consents"][(user["id"], app["id"])] = granted | set(scopes)
    code = secrets.token_hex(32)
    S["codes"][code] = {"app_id": app["id"], "user_id": user["id"], "redirect_uri": redirect_uri,
                        "scopes": scopes, "expires": now() + CODE_TTL}
    back(code=code)


def code_grant(ctx):
    params = ctx["params"]
    client_id, client_secret = as_str(params, "client_id"), as_str(params, "client_secret")
    auth = ctx["headers"].get("Authorization") or ""
    if auth[:6].lower() == "basic ":
        try:
            client_id, _, client_secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            client_id, client_secret = unquote(client_id.replace("+", " ")), unquote(client_secret.replace("+", " "))
        except (binascii.Error, UnicodeDecodeError):
            client_id = client_secret = None
    app = next((a for a in S["apps"].values() if a["uid"] == client_id), None)
    if app is None or (app["confidential"] and not secrets.compare_digest(app["secret"], client_secret or "")):
        raise Reply(401, {"error": "invalid_client", "error_description": INVALID_CLIENT},
                    {"WWW-Authenticate": 'Bearer realm="Doorkeeper", error="invalid_client", '
                                         'error_description="%s"' % INVALID_CLIENT})
    grant = S["codes"].pop(as_str(params, "code") or "", None)
    if (grant is None or grant["app_id"] != app["id"] or now() >= grant["expires"]
            or grant["redirect_uri"] != as_str(params, "redirect_uri")):
        raise Reply(400, {"error": "invalid_grant", "error_description": INVALID_GRANT})
    access, refresh = secrets.token_hex(32), secrets.token_hex(32)
    created = int(now())
    S["oauth"][access] = {"user_id": grant["user_id"], "scopes": grant["scopes"], "created_at": created,
                          "expires_in": OAUTH_TTL, "revoked": False, "refresh_token": refresh,
                          "app_id": app["id"]}
    S["refresh"][refresh] = access
    return 200, {"access_token": access, "token_type": "Bearer", "expires_in": OAUTH_TTL,
                 "refresh_token": refresh, "scope": " ".join(grant["scopes"]), "created_at": created}


def membership_groups(user):
    """Full paths of the user's groups and of every group below one (GitLab's membership groups)."""
    direct = S["members"].get(user["id"], [])
    paths = {full_path(n) for n in S["namespaces"].values() if n["kind"] == "group"}
    return sorted(p for p in paths if any(p == d or p.startswith(d + "/") for d in direct))


def userinfo(ctx):
    raw = token_of(ctx)
    o = S["oauth"].get(raw or "")
    if o is None or o["revoked"] or now() >= o["created_at"] + o["expires_in"]:
        invalid_token("The access token is invalid")
    if "openid" not in o["scopes"]:
        raise Reply(403, {"error": "insufficient_scope", "error_description": INSUFFICIENT, "scope": "openid"},
                    {"WWW-Authenticate": 'Bearer realm="Doorkeeper", error="insufficient_scope", '
                                         'error_description="%s", scope="openid"' % INSUFFICIENT})
    user = S["users"][o["user_id"]]
    return 200, {"sub": str(user["id"]), "sub_legacy": hashlib.sha256(str(user["id"]).encode()).hexdigest(),
                 "name": user["name"], "nickname": user["username"], "preferred_username": user["username"],
                 "email": user["email"], "email_verified": True, "website": "",
                 "profile": "%s/%s" % (BASE_URL, user["username"]),
                 "picture": "%s/uploads/-/system/user/avatar/%d/avatar.png" % (BASE_URL, user["id"]),
                 "groups": membership_groups(user)}


def ensure_group(path):
    parent = None
    for i, part in enumerate(path.split("/")):
        here = "/".join(path.split("/")[:i + 1])
        ns = next((n for n in S["namespaces"].values() if n["kind"] == "group" and full_path(n) == here), None)
        if ns is None:
            nid = new_id("namespace")
            ns = {"id": nid, "name": part, "path": part, "kind": "group", "parent_id": parent,
                  "visibility": "private", "owner_id": None, "created_at": iso(now()), "description": ""}
            S["namespaces"][nid] = ns
        parent = ns["id"]


def add_test_user(body):
    username = body["username"]
    user = next((u for u in S["users"].values() if u["username"] == username), None)
    if user is None:
        user = add_user(username, body.get("name", username), body.get("email", "%s@example.com" % username),
                        password=body["password"])
    user["password"] = body["password"]
    for g in body.get("groups", []):
        ensure_group(g)
    S["members"][user["id"]] = list(body.get("groups", []))
    return 200, {"id": user["id"]}


# ---------------------------------------------------------------- users and tokens

def get_version(ctx):
    need_user(ctx)
    return 200, {"version": VERSION, "revision": "standin", "kas": {"enabled": False, "externalUrl": None,
                                                                     "version": None}, "enterprise": False}


def get_current_user(ctx):
    return 200, user_entity(need_user(ctx), ctx["user"], full=True)


def get_user(ctx):
    need_user(ctx)
    uid = ctx["args"]["user_id"]
    user = S["users"].get(int(uid)) if re.fullmatch(r"\d+", uid) else None
    if user is None:
        not_found("User")
    return 200, user_entity(user, ctx["user"], full=user["id"] == ctx["user"]["id"])


def list_pats(ctx):
    viewer = need_user(ctx)
    params = ctx["params"]
    user_id = as_int(params, "user_id")
    state = one_of(params, "state", ("active", "inactive"))
    revoked = as_bool(params, "revoked")
    search = as_str(params, "search")
    if viewer["is_admin"]:
        if user_id is not None and user_id not in S["users"]:
            not_found()
        owner = user_id
    else:
        if user_id is not None and user_id != viewer["id"]:
            unauthorized()
        owner = viewer["id"]
    tokens = [t for t in sorted(S["tokens"].values(), key=lambda t: t["id"])
              if (owner is None or t["user_id"] == owner)
              and (state is None or (state == "active") == token_entity(t)["active"])
              and (revoked is None or t["revoked"] == revoked)
              and (search is None or search.lower() in t["name"].lower())]
    status, chunk, headers = paginate(ctx, tokens)
    return status, [token_entity(t) for t in chunk], headers


def pat_self(ctx):
    need_user(ctx)
    if ctx["pat"] is None:
        not_found()
    if ctx["method"] == "DELETE":
        ctx["pat"]["revoked"] = True
        return 204, None
    return 200, token_entity(ctx["pat"])


def find_pat(ctx):
    tid = ctx["args"]["token_id"]
    if not re.fullmatch(r"\d+", tid):
        error(400, "id is invalid")
    tok = S["tokens"].get(int(tid))
    if tok is None:
        message(404, "404 Not found")
    return tok


def get_pat(ctx):
    viewer = need_user(ctx)
    tok = S["tokens"].get(int(ctx["args"]["token_id"])) if ctx["args"]["token_id"].isdigit() else None
    if tok is not None and (viewer["is_admin"] or tok["user_id"] == viewer["id"]):
        return 200, token_entity(tok)
    if viewer["is_admin"]:
        not_found()
    unauthorized()


def revoke_pat(ctx):
    viewer = need_user(ctx)
    tok = find_pat(ctx)
    if not viewer["is_admin"] and tok["user_id"] != viewer["id"]:
        message(400, "400 Bad request")
    tok["revoked"] = True
    return 204, None


def check_expiry(params):
    expires = as_date(params, "expires_at")
    if expires is not None and expires < today():
        message(400, {"expires_at": ["cannot be a date in the past"]})
    return expires.isoformat() if expires else None


def new_pat_value():
    return "glpat-" + secrets.token_urlsafe(15)[:20]


def create_user_pat(ctx):
    need_admin(ctx)
    params = ctx["params"]
    uid = ctx["args"]["user_id"]
    if not re.fullmatch(r"\d+", uid):
        error(400, "user_id is invalid")
    require(params, "name", "scopes")
    name = as_str(params, "name")
    scopes = scope_list(params, "scopes", PAT_SCOPES)
    as_date(params, "expires_at")
    user = S["users"].get(int(uid))
    if user is None:
        not_found("User")
    expires = check_expiry(params)
    tid = new_id("token")
    tok = {"id": tid, "name": name, "token": new_pat_value(), "user_id": user["id"], "scopes": scopes,
           "created_at": iso(now()), "revoked": False, "expires_at": expires, "last_used_at": None}
    S["tokens"][tid] = tok
    return 201, token_entity(tok, with_token=True)


# ---------------------------------------------------------------- groups

def list_groups(ctx):
    params = ctx["params"]
    search = as_str(params, "search")
    order_by = one_of(params, "order_by", ("name", "path", "id", "similarity"), "name")
    sort = one_of(params, "sort", ("asc", "desc"), "asc")
    groups = [g for g in S["namespaces"].values() if g["kind"] == "group" and can_see_group(ctx["user"], g)
              and (search is None or search.lower() in g["name"].lower() or search.lower() in g["path"].lower())]
    return list_of(ctx, groups, order_by if order_by != "similarity" else "name", sort, group_entity)


def list_of(ctx, items, order_by, sort, entity):
    items.sort(key=lambda x: (x[order_by] if order_by != "created_at" else x["id"], x["id"]),
               reverse=sort == "desc")
    status, chunk, headers = paginate(ctx, items)
    return status, [entity(x) for x in chunk], headers


def get_group(ctx):
    return 200, group_entity(find_group(ctx, ctx["args"]["id"]))


def group_projects(ctx):
    g = find_group(ctx, ctx["args"]["id"])
    # include_subgroups=true: the projects of every group below too.
    under = ({n["id"] for n in S["namespaces"].values() if g["id"] in ancestors(n["id"])}
             if as_bool(ctx["params"], "include_subgroups", False) else {g["id"]})
    projects = [p for p in S["projects"].values() if p["namespace_id"] in under and read_level(ctx["user"], p)]
    return list_of(ctx, projects, "created_at", "desc", lambda p: project_entity(p, ctx["user"]))


def group_subgroups(ctx):
    g = find_group(ctx, ctx["args"]["id"])
    subs = [s for s in S["namespaces"].values() if s["parent_id"] == g["id"] and can_see_group(ctx["user"], s)]
    return list_of(ctx, subs, "name", "asc", group_entity)


# Top-level paths GitLab 15 keeps for its own routes (Gitlab::PathRegex
# TOP_LEVEL_ROUTES, the part a group could take): 400 "... is a reserved name".
TOP_LEVEL_ROUTES = {"-", ".well-known", "404.html", "422.html", "500.html", "502.html", "503.html", "admin",
                    "api", "apple-touch-icon.png", "assets", "dashboard", "deploy.html", "explore", "favicon.ico",
                    "favicon.png", "files", "groups", "health_check", "help", "import", "jwt", "login", "oauth",
                    "profile", "projects", "public", "robots.txt", "s", "search", "sitemap", "snippets",
                    "unsubscribes", "uploads", "users", "v2"}


def valid_path(path):
    return bool(PATH_RE.fullmatch(path)) and not path.endswith((".git", ".atom", "."))


def create_group(ctx):
    need_user(ctx)
    if not ctx["user"]["is_admin"]:
        forbidden()        # only root exists besides bots, and bots cannot create groups
    params = ctx["params"]
    require(params, "name", "path")
    name, path = as_str(params, "name"), as_str(params, "path")
    visibility = one_of(params, "visibility", ("private", "internal", "public"), "private")
    parent_id = as_int(params, "parent_id")
    if parent_id is not None:
        find_group(ctx, str(parent_id))
    errors = {}
    if not name:
        errors["name"] = ["can't be blank"]
    if not valid_path(path):
        errors["path"] = [PATH_RULE]
    elif parent_id is None and path.lower() in TOP_LEVEL_ROUTES:
        errors["path"] = ["%s is a reserved name" % path]
    elif any(n["path"].lower() == path.lower() and n["parent_id"] == parent_id for n in S["namespaces"].values()):
        errors["path"] = ["has already been taken"]
    if errors:
        # GitLab renders the Ruby hash of model errors into the message string.
        rendered = ", ".join(":%s=>[%s]" % (k, ", ".join(json.dumps(m) for m in v)) for k, v in errors.items())
        message(400, "Failed to save group {%s}" % rendered)
    gid = new_id("namespace")
    g = {"id": gid, "name": name, "path": path, "kind": "group", "parent_id": parent_id, "visibility": visibility,
         "owner_id": None, "created_at": iso(now()), "description": as_str(params, "description", "")}
    S["namespaces"][gid] = g
    return 201, group_entity(g)


def delete_group(ctx):
    need_user(ctx)
    g = find_group(ctx, ctx["args"]["id"])
    if not ctx["user"]["is_admin"]:
        forbidden()
    doomed = {n["id"] for n in S["namespaces"].values() if g["id"] in ancestors(n["id"])}
    for pid in [p["id"] for p in S["projects"].values() if p["namespace_id"] in doomed]:
        drop_project(pid)
    for nid in doomed:
        del S["namespaces"][nid]
    return 202, {"message": "202 Accepted"}


# ---------------------------------------------------------------- projects

def list_projects(ctx):
    params = ctx["params"]
    search = as_str(params, "search")
    order_by = one_of(params, "order_by", ("id", "name", "path", "created_at", "updated_at", "last_activity_at"),
                      "created_at")
    sort = one_of(params, "sort", ("asc", "desc"), "desc")
    projects = [p for p in S["projects"].values() if read_level(ctx["user"], p)
                and (search is None or search.lower() in p["name"].lower() or search.lower() in p["path"].lower())]
    key = order_by if order_by in ("id", "name", "path") else "created_at"
    return list_of(ctx, projects, key, sort, lambda p: project_entity(p, ctx["user"]))


def get_project(ctx):
    return 200, project_entity(find_project(ctx, ctx["args"]["id"]), ctx["user"])


def slug(name):
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9_.]+", "-", name.lower())).strip("-")


def create_project(ctx):
    user = need_user(ctx)
    if user["bot"]:
        forbidden()
    params = ctx["params"]
    if not present(params, "name") and not present(params, "path"):
        error(400, "name, path are missing, at least one parameter must be provided")
    name, path = as_str(params, "name"), as_str(params, "path")
    path = path or slug(name)
    name = name or path
    visibility = one_of(params, "visibility", ("private", "internal", "public"), "private")
    branch = as_str(params, "default_branch") or "main"
    readme = as_bool(params, "initialize_with_readme", False)
    ns_id = as_int(params, "namespace_id", user["namespace_id"])
    ns = S["namespaces"].get(ns_id)
    if ns is None or (ns["kind"] == "group" and not can_see_group(user, ns)):
        not_found("Namespace")
    errors = {}
    siblings = [p for p in S["projects"].values() if p["namespace_id"] == ns_id]
    if any(p["name"] == name for p in siblings):
        errors["name"] = ["has already been taken"]
    if not valid_path(path):
        errors["path"] = [PATH_RULE]
    elif any(p["path"].lower() == path.lower() for p in siblings) or \
            any(n["parent_id"] == (ns_id if ns["kind"] == "group" else -1) and n["path"].lower() == path.lower()
                for n in S["namespaces"].values()):
        errors["path"] = ["has already been taken"]
    if errors:
        message(400, errors)
    pid = new_id("project")
    p = {"id": pid, "name": name, "path": path, "namespace_id": ns_id, "visibility": visibility,
         "description": as_str(params, "description"), "default_branch": branch, "created_at": iso(now()),
         "branches": {}, "commits": {}, "deploy_keys": {}, "reject_push": False, "bots": []}
    S["projects"][pid] = p
    if readme:
        content = ("# %s\n" % name).encode()
        write_commit(p, branch, None, {"README.md": content}, "Initial commit", user["name"], user["email"])
    return 201, project_entity(p, user)


def drop_project(pid):
    p = S["projects"].pop(pid)
    for uid in p["bots"]:
        for t in S["tokens"].values():
            if t["user_id"] == uid:
                t["revoked"] = True
        S["users"][uid]["state"] = "blocked"


def delete_project(ctx):
    need_user(ctx)
    p = find_project(ctx, ctx["args"]["id"])
    if member_level(ctx["user"], p) < 50:
        forbidden()
    drop_project(p["id"])
    return 202, {"message": "202 Accepted"}


# ---------------------------------------------------------------- deploy keys

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


def parse_ssh_key(text):
    """(type, blob) of an OpenSSH public key line, or None."""
    parts = text.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if n < 0 or blob[4:4 + n] != parts[0].encode():
        return None
    return parts[0], blob


def deploy_key_entity(k, link):
    return {"id": k["id"], "title": k["title"], "created_at": k["created_at"], "expires_at": None,
            "key": k["key"], "fingerprint": k["fingerprint"], "fingerprint_sha256": k["fingerprint_sha256"],
            "can_push": link["can_push"]}


def list_deploy_keys(ctx):
    p = project_for_admin(ctx)
    keys = sorted(p["deploy_keys"].items())
    status, chunk, headers = paginate(ctx, keys)
    return status, [deploy_key_entity(S["deploy_keys"][kid], link) for kid, link in chunk], headers


def get_deploy_key(ctx):
    p = project_for_admin(ctx)
    kid = as_int({"key_id": ctx["args"]["key_id"]}, "key_id")
    if kid not in p["deploy_keys"]:
        message(404, "404 Not found")
    return 200, deploy_key_entity(S["deploy_keys"][kid], p["deploy_keys"][kid])


def add_deploy_key(ctx):
    p = project_for_admin(ctx)
    params = ctx["params"]
    require(params, "key", "title")
    key, title = as_str(params, "key").strip(), as_str(params, "title")
    can = as_bool(params, "can_push", False)
    for kid in p["deploy_keys"]:
        if S["deploy_keys"][kid]["key"] == key:
            return 201, deploy_key_entity(S["deploy_keys"][kid], p["deploy_keys"][kid])
    known = next((k for k in S["deploy_keys"].values() if k["key"] == key), None)
    if known is not None:
        p["deploy_keys"][known["id"]] = {"can_push": can}
        return 201, deploy_key_entity(known, p["deploy_keys"][known["id"]])
    parsed = parse_ssh_key(key)
    if parsed is None:
        message(400, {"key": ["is invalid"], "fingerprint_sha256": ["cannot be generated"]})
    sha = "SHA256:" + base64.b64encode(hashlib.sha256(parsed[1]).digest()).decode().rstrip("=")
    if any(k["fingerprint_sha256"] == sha for k in S["deploy_keys"].values()):
        message(400, {"fingerprint_sha256": ["has already been taken"]})
    md5 = hashlib.md5(parsed[1]).hexdigest()
    kid = new_id("deploy_key")
    S["deploy_keys"][kid] = {"id": kid, "title": title, "key": key, "created_at": iso(now()),
                             "fingerprint": ":".join(md5[i:i + 2] for i in range(0, 32, 2)),
                             "fingerprint_sha256": sha}
    p["deploy_keys"][kid] = {"can_push": can}
    return 201, deploy_key_entity(S["deploy_keys"][kid], p["deploy_keys"][kid])


def delete_deploy_key(ctx):
    p = project_for_admin(ctx)
    kid = as_int({"key_id": ctx["args"]["key_id"]}, "key_id")
    if kid not in p["deploy_keys"]:
        not_found("Deploy Key")
    del p["deploy_keys"][kid]
    if not any(kid in q["deploy_keys"] for q in S["projects"].values()):
        del S["deploy_keys"][kid]
    return 204, None


# ---------------------------------------------------------------- project access tokens

def project_tokens(p):
    return [t for t in S["tokens"].values() if t["user_id"] in p["bots"]]


def list_project_tokens(ctx):
    p = project_for_admin(ctx)
    live = [t for t in sorted(project_tokens(p), key=lambda t: t["id"]) if token_entity(t)["active"]]
    status, chunk, headers = paginate(ctx, live)
    return status, [token_entity(t) for t in chunk], headers


def get_project_token(ctx):
    p = project_for_admin(ctx)
    tok = find_project_token(p, ctx["args"]["token_id"])
    return 200, token_entity(tok)


def find_project_token(p, tid):
    tok = S["tokens"].get(int(tid)) if tid.isdigit() else None
    if tok is None or tok not in project_tokens(p):
        not_found("Could not find project access token with token_id: %s" % tid)
    return tok


def create_project_token(ctx):
    need_user(ctx)
    p = find_project(ctx, ctx["args"]["id"])
    params = ctx["params"]
    require(params, "name", "scopes")
    name = as_str(params, "name")
    scopes = scope_list(params, "scopes", BOT_SCOPES)
    level = as_int(params, "access_level", 40)
    if level not in ACCESS_LEVELS:
        error(400, "access_level does not have a valid value")
    expires = check_expiry(params)
    if member_level(ctx["user"], p) < 40 or ctx["user"]["bot"]:
        message(400, "400 Bad request - User does not have permission to create project access token")
    base = "project_%d_bot" % p["id"]
    taken = {u["username"] for u in S["users"].values()}
    username = base if base not in taken else next("%s%d" % (base, i) for i in range(1, 10000)
                                                   if "%s%d" % (base, i) not in taken)
    bot = add_user(username, name, "%s@noreply.%s" % (username, urlparse(BASE_URL).hostname),
                   bot={"project_id": p["id"], "access_level": level})
    p["bots"].append(bot["id"])
    tid = new_id("token")
    tok = {"id": tid, "name": name, "token": new_pat_value(), "user_id": bot["id"], "scopes": scopes,
           "created_at": iso(now()), "revoked": False, "expires_at": expires, "last_used_at": None,
           "access_level": level}
    S["tokens"][tid] = tok
    return 201, token_entity(tok, with_token=True)


def revoke_project_token(ctx):
    need_user(ctx)
    p = find_project(ctx, ctx["args"]["id"])
    tok = find_project_token(p, ctx["args"]["token_id"])
    if member_level(ctx["user"], p) < 40:
        message(400, "400 Bad request - %s cannot delete %s" % (ctx["user"]["username"],
                                                               S["users"][tok["user_id"]]["username"]))
    tok["revoked"] = True
    S["users"][tok["user_id"]]["state"] = "blocked"
    return 204, None


# ---------------------------------------------------------------- repository

def head(p, ref):
    """The commit a ref names: a branch or a full/short commit id."""
    if ref in p["branches"]:
        return p["commits"][p["branches"][ref]]
    if re.fullmatch(r"[0-9a-f]{7,40}", ref or ""):
        found = [c for cid, c in p["commits"].items() if cid.startswith(ref)]
        if len(found) == 1:
            return found[0]
    return None


def branch_entity(ctx, p, name):
    c = p["commits"][p["branches"][name]]
    protected = name == default_branch(p)
    return {"name": name, "commit": commit_entity(p, c), "merged": False, "protected": protected,
            "developers_can_push": False, "developers_can_merge": False,
            "can_push": can_push(ctx["user"], p, name), "default": protected,
            "web_url": "%s/%s/-/tree/%s" % (BASE_URL, project_path(p), quote(name))}


def list_branches(ctx):
    p = project_for_code(ctx)
    status, chunk, headers = paginate(ctx, sorted(p["branches"]))
    return status, [branch_entity(ctx, p, b) for b in chunk], headers


def get_branch(ctx):
    p = project_for_code(ctx)
    if ctx["args"]["branch"] not in p["branches"]:
        not_found("Branch")
    return 200, branch_entity(ctx, p, ctx["args"]["branch"])


def last_commit_for(p, c, path):
    blob = c["tree"].get(path)
    while c["parent_ids"]:
        parent = p["commits"][c["parent_ids"][0]]
        if parent["tree"].get(path) != blob:
            break
        c = parent
    return c["id"]


def file_at(ctx):
    p = project_for_code(ctx)
    ref = as_str(ctx["params"], "ref")
    if ref is None:
        error(400, "ref is missing")
    c = head(p, ref)
    if c is None:
        not_found("Commit")
    path = ctx["args"]["file_path"]
    if path not in c["tree"]:
        not_found("File")
    return p, ref, c, path, c["tree"][path]["content"]


def get_file(ctx):
    p, ref, c, path, content = file_at(ctx)
    return 200, {"file_name": path.rsplit("/", 1)[-1], "file_path": path, "size": len(content),
                 "encoding": "base64", "content_sha256": hashlib.sha256(content).hexdigest(), "ref": ref,
                 "blob_id": blob_sha(content), "commit_id": c["id"], "last_commit_id": last_commit_for(p, c, path),
                 "execute_filemode": c["tree"][path]["exec"], "content": base64.b64encode(content).decode()}


def get_raw_file(ctx):
    if "ref" not in ctx["params"]:
        p = project_for_code(ctx)
        ctx["params"]["ref"] = default_branch(p)
    content = file_at(ctx)[4]
    return 200, RawBody(content)


class RawBody:
    def __init__(self, data, ctype="text/plain; charset=utf-8"):
        self.data, self.ctype = data, ctype


def tree_entries(c, base, recursive):
    prefix = base.strip("/") + "/" if base.strip("/") else ""
    dirs, blobs = {}, {}
    for path, blob in c["tree"].items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            d = prefix + "/".join(rest[:depth])
            if recursive or depth == 1:
                dirs[d] = hashlib.sha1(("tree:" + c["id"] + d).encode()).hexdigest()
        if recursive or len(rest) == 1:
            blobs[path] = blob
    out = [{"id": sha, "name": d.rsplit("/", 1)[-1], "type": "tree", "path": d, "mode": "040000"}
           for d, sha in sorted(dirs.items())]
    out += [{"id": blob_sha(b["content"]), "name": path.rsplit("/", 1)[-1], "type": "blob", "path": path,
             "mode": "100755" if b["exec"] else "100644"} for path, b in sorted(blobs.items())]
    return out


def get_tree(ctx):
    p = project_for_code(ctx)
    params = ctx["params"]
    ref = as_str(params, "ref") or default_branch(p)
    c = head(p, ref)
    if c is None:
        not_found("Tree")
    entries = tree_entries(c, as_str(params, "path", ""), as_bool(params, "recursive", False))
    return paginate(ctx, entries)


def get_commit(ctx):
    p = project_for_code(ctx)
    c = head(p, ctx["args"]["sha"])
    if c is None:
        not_found("Commit")
    return 200, dict(commit_entity(p, c), stats=c["stats"])


def valid_file_path(path):
    return bool(path) and not path.startswith("/") and all(part not in ("", ".", "..") for part in path.split("/"))


def check_actions(actions):
    """Grape's validation of the actions array: {"error"} 400s, in GitLab's order."""
    if not isinstance(actions, list):
        error(400, "actions is invalid")
    if not actions:
        error(400, "actions is empty")
    for i, a in enumerate(actions):
        name = "actions[%d]" % i
        if not isinstance(a, dict):
            error(400, "%s is invalid" % name)
        if not present(a, "action"):
            error(400, "%s[action] is missing" % name)
        if a["action"] not in ("create", "update", "move", "delete", "chmod"):
            error(400, "%s[action] does not have a valid value" % name)
        if not present(a, "file_path"):
            error(400, "%s[file_path] is missing" % name)
        if not isinstance(a["file_path"], str) or not valid_file_path(a["file_path"]):
            error(400, "%s[file_path] should be a valid file path" % name)
        if a["action"] == "move":
            if not present(a, "previous_path"):
                error(400, "%s[previous_path] is missing" % name)
            if not isinstance(a["previous_path"], str) or not valid_file_path(a["previous_path"]):
                error(400, "%s[previous_path] should be a valid file path" % name)
        if a["action"] == "update" and not present(a, "content"):
            error(400, "%s[content] is missing" % name)
        if present(a, "content") and not isinstance(a["content"], str):
            error(400, "%s[content] is invalid" % name)
        if a.get("encoding", "text") not in ("text", "base64"):
            error(400, "%s[encoding] does not have a valid value" % name)
        if a["action"] == "chmod":
            if not present(a, "execute_filemode"):
                error(400, "%s[execute_filemode] is missing" % name)
            as_bool(a, "execute_filemode")


def decode_content(a):
    text = a.get("content")
    if text is None:
        return b""
    if a.get("encoding", "text") == "base64":
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    return text.encode()


def apply_actions(tree, actions):
    """New tree after the actions, or a 400 naming the first that fails (the old tree is untouched)."""
    tree = dict(tree)

    def is_dir(path):
        return any(f.startswith(path + "/") for f in tree)

    def blocked_by_file(path):
        parts = path.split("/")
        return any("/".join(parts[:i]) in tree for i in range(1, len(parts)))

    for a in actions:
        kind, path = a["action"], a["file_path"]
        if kind in ("create", "move"):
            if kind == "move" and a["previous_path"] not in tree:
                message(400, "A file with this name doesn't exist")
            if path in tree and not (kind == "move" and path == a["previous_path"]):
                message(400, "A file with this name already exists")
            if is_dir(path):
                message(400, "A directory with this name already exists")
            if blocked_by_file(path):
                message(400, "A file with this name already exists")
            if kind == "move":
                old = tree.pop(a["previous_path"])
                tree[path] = {"content": decode_content(a) if present(a, "content") else old["content"],
                              "exec": old["exec"]}
            else:
                tree[path] = {"content": decode_content(a), "exec": False}
        else:
            if path not in tree:
                message(400, "A file with this name doesn't exist")
            if kind == "update":
                tree[path] = dict(tree[path], content=decode_content(a))
            elif kind == "chmod":
                tree[path] = dict(tree[path], exec=as_bool(a, "execute_filemode"))
            else:
                del tree[path]
    return tree


def line_stats(old, new):
    adds = dels = 0
    for path in set(old) | set(new):
        a = old[path]["content"].decode(errors="replace").splitlines() if path in old else []
        b = new[path]["content"].decode(errors="replace").splitlines() if path in new else []
        for line in difflib.ndiff(a, b):
            adds += line.startswith("+ ")
            dels += line.startswith("- ")
    return {"additions": adds, "deletions": dels, "total": adds + dels}


def write_commit(p, branch, parent, files_or_tree, msg, author_name, author_email):
    if isinstance(next(iter(files_or_tree.values()), {}), bytes):
        tree = {path: {"content": c, "exec": False} for path, c in files_or_tree.items()}
    else:
        tree = files_or_tree
    old = parent["tree"] if parent else {}
    seed = json.dumps([parent["id"] if parent else None, msg, sorted((k, blob_sha(v["content"]), v["exec"])
                                                                    for k, v in tree.items()), new_id("commit")])
    cid = hashlib.sha1(seed.encode()).hexdigest()
    c = {"id": cid, "parent_ids": [parent["id"]] if parent else [], "message": msg, "tree": tree,
         "created_at": iso(now()), "author_name": author_name, "author_email": author_email,
         "stats": line_stats(old, tree)}
    p["commits"][cid] = c
    p["branches"][branch] = cid
    return c


def create_commit(ctx):
    user = need_user(ctx)
    p = find_project(ctx, ctx["args"]["id"])
    if read_level(user, p) < 20:
        forbidden()          # GitLab's before block (download_code) runs ahead of parameter validation
    params = ctx["params"]
    require(params, "branch", "commit_message", "actions")
    branch = as_str(params, "branch")
    if branch == "":
        error(400, "branch is empty")
    msg = as_str(params, "commit_message")
    check_actions(params["actions"])
    start = as_str(params, "start_branch") or branch
    if p["reject_push"] or not can_push(user, p, branch):
        message(403, NO_PUSH)
    parent = None
    if p["branches"]:
        if start not in p["branches"]:
            message(400, "You can only create or edit files when you are on a branch")
        if branch != start and branch in p["branches"]:
            message(400, "A branch called '%s' already exists. Switch to that branch in order to make changes"
                    % branch)
        parent = p["commits"][p["branches"][start]]
    tree = apply_actions(parent["tree"] if parent else {}, params["actions"])
    c = write_commit(p, branch, parent, tree, msg, as_str(params, "author_name") or user["name"],
                     as_str(params, "author_email") or user["email"])
    return 201, dict(commit_entity(p, c), stats=c["stats"], status=None, project_id=p["id"], last_pipeline=None)


# ---------------------------------------------------------------- applications

def app_entity(a, secret=False):
    e = {"id": a["id"], "application_id": a["uid"], "application_name": a["name"],
         "callback_url": a["redirect_uri"], "confidential": a["confidential"]}
    if secret:
        e["secret"] = a["secret"]
    return e


def app_errors(redirect_uri, scopes):
    errors = {}
    for uri in (redirect_uri or "").split():
        u = urlparse(uri)
        if not u.scheme or not (u.netloc or u.scheme not in ("http", "https")):
            errors["redirect_uri"] = ["must be an absolute URI."]
        elif u.fragment:
            errors["redirect_uri"] = ["cannot contain a fragment."]
    if not (redirect_uri or "").strip():
        errors["redirect_uri"] = ["can't be blank"]
    if scopes is not None and (not scopes.split() or any(s not in APP_SCOPES for s in scopes.split())):
        errors["scopes"] = ["doesn't match configured on the server."]
    return errors


def list_apps(ctx):
    need_admin(ctx)
    status, chunk, headers = paginate(ctx, [S["apps"][k] for k in sorted(S["apps"])])
    return status, [app_entity(a) for a in chunk], headers


def create_app(ctx):
    need_admin(ctx)
    params = ctx["params"]
    require(params, "name", "redirect_uri", "scopes")
    scopes = as_str(params, "scopes")
    if not scopes.strip():
        error(400, "scopes is empty")
    confidential = as_bool(params, "confidential", True)
    name, redirect_uri = as_str(params, "name"), as_str(params, "redirect_uri")
    errors = app_errors(redirect_uri, scopes)
    if not name.strip():
        errors["name"] = ["can't be blank"]
    if errors:
        message(400, errors)
    aid = new_id("app")
    a = {"id": aid, "uid": secrets.token_hex(32), "secret": secrets.token_hex(32), "name": name,
         "redirect_uri": redirect_uri, "scopes": " ".join(scopes.split()), "confidential": confidential,
         "created_at": iso(now())}
    S["apps"][aid] = a
    return 201, app_entity(a, secret=True)


def delete_app(ctx):
    need_admin(ctx)
    aid = ctx["args"]["app_id"]
    if not aid.isdigit():
        error(400, "id is invalid")
    if int(aid) not in S["apps"]:
        not_found("Application")
    del S["apps"][int(aid)]
    return 204, None


# ---------------------------------------------------------------- routing

SEG = r"([^/]+)"
P = r"/api/v4/projects/(?P<id>[^/]+)"
ROUTES = [(re.compile(pattern), methods) for pattern, methods in [
    (r"/oauth/token", {"POST": oauth_token}),
    (r"/oauth/authorize", {"GET": authorize, "POST": authorize}),
    (r"/oauth/userinfo", {"GET": userinfo, "POST": userinfo}),
    (r"/users/sign_in", {"GET": sign_in_page, "POST": sign_in}),
    (r"/-/readiness", {"GET": lambda ctx: (200, {"status": "ok", "master_check": [{"status": "ok"}]})}),
    (r"/-/health", {"GET": lambda ctx: (200, RawBody(b"GitLab OK"))}),
    (r"/api/v4/version", {"GET": get_version}),
    (r"/api/v4/user", {"GET": get_current_user}),
    (r"/api/v4/users/(?P<user_id>[^/]+)", {"GET": get_user, "PUT": not_modelled, "DELETE": not_modelled}),
    (r"/api/v4/users/(?P<user_id>[^/]+)/personal_access_tokens", {"POST": create_user_pat}),
    (r"/api/v4/personal_access_tokens", {"GET": list_pats}),
    (r"/api/v4/personal_access_tokens/self", {"GET": pat_self, "DELETE": pat_self}),
    (r"/api/v4/personal_access_tokens/(?P<token_id>[^/]+)", {"GET": get_pat, "DELETE": revoke_pat}),
    (r"/api/v4/groups", {"GET": list_groups, "POST": create_group}),
    (r"/api/v4/groups/(?P<id>[^/]+)", {"GET": get_group, "PUT": not_modelled, "DELETE": delete_group}),
    (r"/api/v4/groups/(?P<id>[^/]+)/projects", {"GET": group_projects}),
    (r"/api/v4/groups/(?P<id>[^/]+)/subgroups", {"GET": group_subgroups}),
    (r"/api/v4/projects", {"GET": list_projects, "POST": create_project}),
    (P, {"GET": get_project, "PUT": not_modelled, "DELETE": delete_project}),
    (P + r"/deploy_keys", {"GET": list_deploy_keys, "POST": add_deploy_key}),
    (P + r"/deploy_keys/(?P<key_id>[^/]+)", {"GET": get_deploy_key, "PUT": not_modelled,
                                               "DELETE": delete_deploy_key}),
    (P + r"/access_tokens", {"GET": list_project_tokens, "POST": create_project_token}),
    (P + r"/access_tokens/(?P<token_id>[^/]+)", {"GET": get_project_token, "DELETE": revoke_project_token}),
    (P + r"/repository/branches", {"GET": list_branches, "POST": not_modelled}),
    (P + r"/repository/branches/(?P<branch>[^/]+)", {"GET": get_branch, "DELETE": not_modelled}),
    (P + r"/repository/files/(?P<file_path>[^/]+)", {"GET": get_file, "POST": not_modelled,
                                                       "PUT": not_modelled, "DELETE": not_modelled}),
    (P + r"/repository/files/(?P<file_path>[^/]+)/raw", {"GET": get_raw_file}),
    (P + r"/repository/tree", {"GET": get_tree}),
    (P + r"/repository/commits", {"GET": not_modelled, "POST": create_commit}),
    (P + r"/repository/commits/(?P<sha>[^/]+)", {"GET": get_commit}),
    (r"/api/v4/applications", {"GET": list_apps, "POST": create_app}),
    (r"/api/v4/applications/(?P<app_id>[^/]+)", {"DELETE": delete_app}),
]]


def parse_params(ctx, raw):
    params = dict(ctx["query"])
    ctype = (ctx["headers"].get("Content-Type") or "").split(";")[0].strip().lower()
    if not raw.strip():
        return params
    if ctype == "application/json":
        try:
            body = json.loads(raw)
        except ValueError:
            message(400, "400 Bad request - Invalid JSON in the request body")
        if not isinstance(body, dict):
            message(400, "400 Bad request - the request body must be a JSON object")
        params.update(body)
    elif ctype in ("application/x-www-form-urlencoded", ""):
        for k, v in parse_qsl(raw.decode(errors="replace"), keep_blank_values=True):
            if k.endswith("[]"):
                params.setdefault(k[:-2], [])
                if isinstance(params[k[:-2]], list):
                    params[k[:-2]].append(v)
            else:
                params[k] = v
    return params


def dispatch(method, raw_path, query, raw, headers):
    """(status, body, headers) for one request; body None means no body."""
    for pattern, methods in ROUTES:
        m = pattern.fullmatch(raw_path)
        if m:
            break
    else:
        error(404, "404 Not Found")
    handler = methods.get("GET" if method == "HEAD" else method)
    if handler is None:
        allow = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
        raise Reply(405, {"error": "405 Not Allowed"}, {"Allow": ", ".join(allow)})
    ctx = {"method": method, "raw_path": raw_path, "route": pattern.pattern,
           "args": {k: unquote(v) for k, v in m.groupdict().items()},
           "query": dict(parse_qsl(query, keep_blank_values=True)), "headers": headers,
           "users_api": raw_path == "/api/v4/user" or raw_path.startswith("/api/v4/users/")}
    ctx["params"] = parse_params(ctx, raw)
    if raw_path.startswith("/api/"):
        authenticate(ctx)
    result = handler(ctx)
    return result if len(result) == 3 else (result[0], result[1], {})


# ---------------------------------------------------------------- controls

def dump():
    def tree_view(tree):
        out = {}
        for path, b in sorted(tree.items()):
            try:
                out[path] = b["content"].decode()
            except UnicodeDecodeError:
                out[path] = {"base64": base64.b64encode(b["content"]).decode()}
        return out

    projects = []
    for p in sorted(S["projects"].values(), key=lambda p: p["id"]):
        projects.append({"id": p["id"], "name": p["name"], "path_with_namespace": project_path(p),
                         "visibility": p["visibility"], "default_branch": default_branch(p),
                         "reject_push": p["reject_push"], "bots": p["bots"],
                         "branches": {b: {"commit": cid, "files": tree_view(p["commits"][cid]["tree"])}
                                      for b, cid in sorted(p["branches"].items())},
                         "commits": len(p["commits"]),
                         "deploy_keys": [dict(S["deploy_keys"][k], can_push=v["can_push"])
                                         for k, v in sorted(p["deploy_keys"].items())]})
    return {"today": today().isoformat(),
            "users": [{k: v for k, v in u.items() if k != "password"} for u in S["users"].values()],
            "tokens": [dict(t, active=token_entity(t)["active"]) for t in S["tokens"].values()],
            "oauth_tokens": [dict(o, access_token=k) for k, o in S["oauth"].items()],
            "groups": [group_entity(n) for n in S["namespaces"].values() if n["kind"] == "group"],
            "projects": projects, "deploy_keys": list(S["deploy_keys"].values()),
            "applications": [dict(a) for a in S["apps"].values()]}


def control(method, path, raw):
    """The test's side door: no auth, not logged. Returns (status, body)."""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return 400, {"error": "control bodies are JSON"}
    gets = {"/_standin/requests": lambda: LOG, "/_standin/dump": dump, "/_standin/held": lambda: HELD}
    posts = {"/_standin/reset-log": reset_log, "/_standin/reject-push": reject_push,
             "/_standin/edit-application": edit_application, "/_standin/set-token-expiry": set_token_expiry,
             "/_standin/shift-days": shift_days, "/_standin/runner": runner, "/_standin/hold": hold,
             "/_standin/release": release, "/_standin/add-user": add_test_user}
    if method == "GET" and path in gets:
        return 200, copy.deepcopy(gets[path]())
    if method == "POST" and path in posts:
        try:
            return posts[path](body)
        except Reply as r:
            return r.status, r.body
        except (KeyError, TypeError, ValueError) as e:
            return 400, {"error": "bad control request: %r" % e}
    if path in gets or path in posts:
        return 405, {"error": "method not allowed"}
    return 404, {"error": "no such control endpoint"}


def hold(body):
    HOLDS.append({"method": body["method"].upper(), "path": re.compile(body["path"])})
    RELEASE.clear()
    return 200, {}


def release(body):
    RELEASE.set()
    return 200, {"held": len(HELD)}


def take_hold(method, path):
    """The armed hold this request matches, disarmed; None if none does."""
    for h in HOLDS:
        if h["method"] == method and h["path"].fullmatch(path):
            HOLDS.remove(h)
            return h
    return None


def reset_log(body):
    LOG.clear()
    return 200, {}


def reject_push(body):
    p = next((q for q in S["projects"].values() if project_path(q) == body["project"]), None)
    if p is None:
        return 404, {"error": "no such project"}
    p["reject_push"] = bool(body.get("reject", True))
    return 200, {}


def edit_application(body):
    a = S["apps"].get(int(body["id"]))
    if a is None:
        return 404, {"error": "no such application"}
    for field, key in (("callback_url", "redirect_uri"), ("scopes", "scopes"), ("name", "name")):
        if field in body:
            a[key] = body[field]
    return 200, app_entity(a)


def set_token_expiry(body):
    if "id" in body:
        tok = S["tokens"].get(int(body["id"]))
    else:
        tok = next((t for t in S["tokens"].values() if t["token"] == body["token"]), None)
    if tok is None:
        return 404, {"error": "no such token"}
    expires = body["expires_at"]
    tok["expires_at"] = None if expires is None else date.fromisoformat(expires).isoformat()
    return 200, {"id": tok["id"], "expires_at": tok["expires_at"]}


def shift_days(body):
    S["offset_days"] += int(body["days"])
    return 200, {"today": today().isoformat()}


def runner(body):
    if body.get("script") != "update-application":
        return 400, {"error": "unknown runner script"}
    a = next((x for x in S["apps"].values() if x["uid"] == body.get("uid")), None)
    if a is None:
        return 404, {"error": "no application with that uid"}
    errors = app_errors(body.get("redirect_uri", a["redirect_uri"]), body.get("scopes", a["scopes"]))
    if errors:
        return 400, {"message": errors}
    if "redirect_uri" in body:
        a["redirect_uri"] = body["redirect_uri"]
    if "scopes" in body:
        a["scopes"] = " ".join(body["scopes"].split())
    if "confidential" in body:
        a["confidential"] = bool(body["confidential"])
    if "name" in body:
        a["name"] = body["name"]
    return 200, dict(app_entity(a), scopes=a["scopes"])


# ---------------------------------------------------------------- HTTP

class Handler(QuietHandler):  # nothing on stderr: a request line may carry ?private_token=
    protocol_version = "HTTP/1.1"

    def serve(self, method):
        url = urlparse(self.path)
        raw = self.read_body()
        if url.path.startswith("/_standin/"):
            with LOCK:
                status, body = control(method, url.path, raw)
                data = json.dumps(body).encode()
            return self.respond(method, status, data, {})
        with LOCK:
            try:
                status, body, headers = dispatch(method, url.path, url.query, raw, self.headers)
            except Reply as r:
                status, body, headers = r.status, r.body, r.headers
            except Exception as e:  # a stand-in bug: say so, keep serving
                status, body, headers = 500, {"message": "stand-in internal error: %r" % e}, {}
            LOG.append({"method": method, "path": url.path, "query": url.query, "status": status,
                        "time": time.time()})
            held = take_hold(method, url.path) is not None
            if held:
                HELD.append({"method": method, "path": url.path, "status": status})
            if body is None:
                data = None
            elif isinstance(body, RawBody):
                data, headers = body.data, dict(headers, **{"Content-Type": body.ctype})
            else:
                data = json.dumps(body).encode()
        if held:
            # Done, and nobody is told: the client dies waiting (or gets the
            # answer late, on release).
            RELEASE.wait(300)
        self.respond(method, status, data, headers)

    def respond(self, method, status, data, headers):
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        for k, v in headers.items():
            self.send_header(k, v)
        if data is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "Content-Type" not in headers:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        self.serve("GET")

    def do_HEAD(self):
        self.serve("HEAD")

    def do_POST(self):
        self.serve("POST")

    def do_PUT(self):
        self.serve("PUT")

    def do_DELETE(self):
        self.serve("DELETE")

    def do_PATCH(self):
        self.serve("PATCH")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--root-password", default="standin-root-password")
    p.add_argument("--admin-token", default=None)
    ARGS = p.parse_args()
    server = QuietServer(("127.0.0.1", ARGS.port), Handler)
    server.label = "gitlab stand-in"
    BASE_URL = "http://127.0.0.1:%d" % server.server_address[1]
    reset_store()
    publish_port(server, ARGS.port_file)
    server.serve_forever()
