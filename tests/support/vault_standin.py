#!/usr/bin/env python3
"""STAND-IN for the HTTP API of HashiCorp Vault 1.10.4 (Vault cannot be
installed here). It models the documented behaviour the installer relies on
and rejects what the real server rejects, with the real status codes and
error texts (checked against Vault's sources of that era):

* lifecycle: starts uninitialised and sealed; every /v1 path but the four
  below answers 503 `Vault is sealed` until initialised AND unsealed (real
  Vault says "sealed" for an uninitialised server too);
* GET|HEAD /v1/sys/health: 501 uninitialised, 503 sealed, 200 active
  (`uninitcode`, `sealedcode`, `activecode` override, as in Vault);
* /v1/sys/init: GET {"initialized"}; PUT|POST {"secret_shares",
  "secret_threshold", "pgp_keys"?, "root_token_pgp_key"?}. Checked in
  Vault's order: `incorrect number of PGP keys`, then
  `invalid seal configuration: ...` (shares >= 1, threshold >= 1, threshold
  > 1 when shares > 1, both < 256, threshold <= shares, PGP keys standard
  base64 of an OpenPGP packet), THEN `Vault is already initialized` - all
  400. Non-integer numbers are JSON errors (400). Shares are 33 random
  bytes whose last byte is a distinct Shamir x-coordinate (a single share is
  the 32-byte key itself), as real keys are; the root token is
  `hvs.` + 24 characters; after init Vault is sealed;
* PGP: a real server returns each share encrypted for its PGP key. Here the
  "encrypted" bytes are the MARKER `stand-in-pgp:<first 16 chars of that
  pgp_keys entry>:<hex share>` (no real encryption): `keys` is their hex,
  `keys_base64` their base64, exactly as Vault encodes ciphertext; unseal
  still needs the real hex/base64 share. root_token_pgp_key likewise makes
  root_token the base64 of `stand-in-pgp:<16 chars>:<token>`;
* GET /v1/sys/seal-status; PUT|POST /v1/sys/unseal {"key"} or {"reset":
  true} (field names case-insensitive, as Go decodes them). The key is hex
  (16-33 bytes) else standard base64, else 400; shorter than 16 / longer
  than 33 bytes is 400 `invalid key: ...`; 400 `Vault is not initialized`.
  The same share twice does not count twice. As on real Vault a share
  cannot be judged alone: a wrong one is ACCEPTED into the progress, and
  only when `t` shares are in does the attempt fail - 400 `invalid key:
  failed to compute combined key: duplicate part detected` when two shares
  have the same x-coordinate, else 500 `unable to retrieve stored keys:
  failed to decrypt keys from storage: cipher: message authentication
  failed` (Vault 1.3-1.12 answer 500 here) - and progress resets either
  way. `t` genuine distinct shares unseal. reset while unsealed is 400;
* auth: X-Vault-Token (or `Authorization: Bearer`) must be the root token
  or a live token from an AppRole login, else 403 `permission denied`.
  Policies are stored and validated but NOT enforced: any live token may
  do anything. Token TTL and token_num_uses are enforced;
* secrets engines: GET /v1/sys/mounts (map under "data" and at top level;
  sys/, cubbyhole/, identity/ built in); POST|PUT /v1/sys/mounts/<p>
  {"type", "options"?, "description"?, "config"?}: type required, kv-v1 /
  kv-v2 aliases, `version` only for kv, protected prefixes (sys/, auth/,
  audit/, cubbyhole/, identity/), singleton types, `path is already in use
  at <p>/` in both nesting directions, unknown types `plugin not found in
  the catalog` - all 400, as real Vault returns them; DELETE (204, drops the
  data; missing is 204; built-ins 400); GET|POST .../tune (options.version
  1->2 upgrades a KV mount with a warning, 2->1 is 400);
* auth methods: GET /v1/sys/auth (+ top level), POST|PUT|DELETE
  /v1/sys/auth/<p> (token/ cannot be enabled again or disabled; disabling
  drops roles, secret IDs, config and the tokens it issued), .../tune;
* ACL policies: /v1/sys/policies/acl (LIST, or GET ?list=true: sorted names
  then "root") and /v1/sys/policies/acl/<name> (GET, PUT|POST, DELETE);
  legacy /v1/sys/policy[/<name>] too. Names are lower-cased; `policy` may be
  base64; the text is parsed (HCL or JSON): only `name`/`path` at top level,
  only Vault's keys inside a path, only Vault's capabilities, else 400
  `failed to parse policy: ...`; "root" cannot be changed or deleted,
  "default" cannot be deleted (400); PUT /v1/sys/seal seals (204);
* AppRole at an approle mount <m>: role/<name> (GET, POST|PUT merging into
  the existing role with Vault's defaults and field types - lists as JSON
  arrays or comma strings, TTLs as seconds or "1h"; policies lower-cased,
  de-duplicated, sorted; deprecated `policies`/`period` aliases), DELETE,
  LIST role; role/<name>/role-id (GET; POST sets one), role/<name>/secret-id
  (POST; LIST gives accessors); POST login {"role_id", "secret_id"} without
  a token -> auth block, 400 `missing role_id` / `invalid role or secret
  ID`; secret_id_ttl and secret_id_num_uses are enforced;
* Kubernetes auth at a kubernetes mount <m>: config (POST|PUT replaces it:
  kubernetes_host required (`no host provided`), token_reviewer_jwt must be
  a well-formed JWT (500 as in Vault), pem_keys must be PEM public keys; GET
  never returns token_reviewer_jwt; 404 before any write); roles like
  AppRole's with bound_service_account_names / _namespaces required and "*"
  not mixed with names. login is NOT modelled (501);
* KV v2 (kv mount with options.version "2") at <m>: data/<p> GET (?version=)
  / POST|PUT {"data", "options": {"cas"}} / PATCH (merge patch, needs
  Content-Type application/merge-patch+json) / DELETE (soft delete, a read
  is then 404 with metadata); metadata/<p> GET / POST|PUT (max_versions,
  cas_required, delete_version_after, custom_metadata) / DELETE / LIST;
  delete/, undelete/, destroy/ {"versions"}; config. `no data provided`,
  `check-and-set parameter did not match the current version`,
  `check-and-set parameter required for this call` are 400; versions beyond
  max_versions (default 10) are pruned; any other path under a v2 mount is
  404 with Vault's "Invalid path for a versioned K/V secrets engine" warning;
  LIST on data/ is 405;
* KV v1 (kv without version): GET/PUT|POST/DELETE/LIST <m>/<p>; an empty
  write is 400 `missing data fields`;
* a path under no mount is 404 `no handler for route "<path>". route entry
  not found.`; a path a backend lacks is 404 `unsupported path`; a method a
  path lacks is 405 `unsupported operation`; LIST method == GET ?list=true;
  an empty LIST is 404 {"errors": []}; malformed JSON is 400; engines and
  auth methods of other types can be mounted but their paths answer 501;
* test controls (no auth, not logged): POST /_standin/seal seals (what a
  restart does: unseal progress lost, data and tokens kept);
  GET /_standin/requests, the ordered log of /v1 requests (method, path,
  query, status, time; never bodies or tokens); POST /_standin/reset-log;
  GET /_standin/dump, the whole store (init state with the unseal keys and
  root token, mounts, auth, policies, roles, secret IDs, Kubernetes configs
  with their JWT, KV data, issued tokens) as JSON.

Not modelled: response wrapping, namespaces, leases, audit devices, other
engines' and auth methods' own paths, Vault's "Endpoint ignored these
unrecognized parameters" warning (unknown fields are silently ignored).

Run: vault_standin.py --port-file F [--port P]   (port 0: any free port)
"""
import argparse, base64, binascii, copy, json, os, re, secrets, string, threading, time, uuid
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs, unquote

VERSION = "1.10.4"
SYSTEM_TTL = 768 * 3600          # Vault's default (and max) lease TTL: 32 days
LOCK = threading.RLock()         # one lock around all state, held for a whole request
S = {}                           # the store; see reset_store()
LOG = []

PROTECTED_MOUNTS = ("audit/", "auth/", "sys/", "cubbyhole/", "identity/")
UNTUNABLE = ("cubbyhole/", "sys/", "audit/", "identity/")
SINGLETONS = ("cubbyhole", "system", "token", "identity")
SECRET_TYPES = {"kv", "generic", "pki", "transit", "database", "ssh", "totp", "aws", "azure", "gcp", "gcpkms",
                "consul", "nomad", "rabbitmq", "ldap", "openldap", "ad", "kubernetes", "terraform", "alicloud",
                "mongodbatlas"}
AUTH_TYPES = {"approle", "kubernetes", "userpass", "ldap", "jwt", "oidc", "github", "cert", "aws", "azure", "gcp",
              "okta", "radius", "alicloud", "cf", "kerberos", "oci"}
INVALID_LOGIN = "invalid role or secret ID"
DECRYPT_FAILED = "unable to retrieve stored keys: failed to decrypt keys from storage: cipher: message authentication failed"
KV2_INVALID_PATH = ("Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API "
                    "endpoints to use. If using the Vault CLI, use 'vault kv %s' for this operation.")
NAME = r"\w(?:[\w\-.]*\w)?"      # Vault's GenericNameRegex
NAME_AT = r"\w(?:[\w\-.@]*\w)?"  # ...WithAtRegex, used by AppRole
DEFAULT_POLICY = """
# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}
"""


class Reply(Exception):
    """Raised anywhere to answer at once; body None means no body (204)."""

    def __init__(self, status, body=None):
        super().__init__(status)
        self.status, self.body = status, body


def fail(status, *messages):
    raise Reply(status, {"errors": list(messages)})


def allow(op, *ops):
    # Vault's framework: a path that lacks the operation answers 405.
    if op not in ops:
        fail(405, "unsupported operation")


def ok(data=None, warnings=None, auth=None, top_level=False, lease=0, status=200):
    """A logical response as Vault shapes it. sys/ responses also repeat
    their data at top level (legacy format real Vault keeps)."""
    body = {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": lease,
            "data": data, "wrap_info": None, "warnings": warnings, "auth": auth}
    if top_level and isinstance(data, dict):
        for k, v in data.items():
            body.setdefault(k, v)
    return status, body


NO_CONTENT = (204, None)


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_duration(seconds):
    """Go's time.Duration.String() for whole seconds, as Vault echoes durations."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return "%dh%dm%ds" % (h, m, s) if h else ("%dm%ds" % (m, s) if m else "%ds" % s)


def new_token():
    alphabet = string.ascii_letters + string.digits
    return "hvs." + "".join(secrets.choice(alphabet) for _ in range(24))


# ---------------------------------------------------------------- store

def mount_entry(kind, description="", options=None, local=False, config=None):
    return {"type": kind, "description": description, "accessor": "%s_%s" % (kind, secrets.token_hex(4)),
            "uuid": str(uuid.uuid4()), "local": local, "seal_wrap": False, "external_entropy_access": False,
            "options": options, "config": dict({"default_lease_ttl": 0, "max_lease_ttl": 0,
                                                "force_no_cache": False}, **(config or {}))}


def reset_store():
    S.clear()
    S.update({
        "initialized": False, "sealed": True, "shares": 0, "threshold": 0,
        "unseal_keys": [],   # the genuine shares (bytes); kept even when PGP-"encrypted" ones were returned
        "root_token": None,
        "progress": [],      # distinct shares given in the current unseal attempt
        "nonce": "",
        "cluster_id": str(uuid.uuid4()),
        "tokens": {},        # login tokens -> {"accessor", "policies", "mount", "role", "expires", "uses_left"}
        "mounts": {"cubbyhole/": mount_entry("cubbyhole", "per-token private secret storage", local=True),
                   "identity/": mount_entry("identity", "identity store"),
                   "sys/": mount_entry("system", "system endpoints used for control, policy and debugging")},
        "auth": {"token/": mount_entry("token", "token based credentials")},
        "policies": {"default": DEFAULT_POLICY},
        "kv": {},            # kv mount path -> {secret path -> v1 data dict | v2 record}
        "roles": {},         # auth mount path -> {role name -> fields}
        "secret_ids": {},    # approle mount path -> {secret_id -> {...}}
        "k8s_config": {},    # kubernetes mount path -> config as written
    })


def kv_version(entry):
    return "2" if str((entry.get("options") or {}).get("version", "")) == "2" else "1"


def match_mount(table, path):
    """Longest mount prefix of path (Vault's router); `secret` finds `secret/` too."""
    best = None
    for m in table:
        if (path + "/").startswith(m) and (best is None or len(m) > len(best)):
            best = m
    if best is None:
        return None, None
    return best, path[len(best):] if len(path) >= len(best) else ""


# ---------------------------------------------------------------- field parsing (Vault's framework types)

def bad_field(field, value, why):
    fail(400, 'Field validation failed: error converting input %s for field "%s": %s' % (value, field, why))


def as_bool(field, v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "t", "true", "0", "f", "false"):
        return v.lower() in ("1", "t", "true")
    if isinstance(v, int):
        return v != 0
    bad_field(field, v, "cannot parse as bool")


def as_int(field, v):
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
        return int(v)
    bad_field(field, v, "cannot parse as int")


DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def as_duration(field, v):
    """parseutil.ParseDurationSecond: a number is seconds, else Go syntax (1h30m, 90s, 2d)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        text = v.strip()
        if text == "":
            return 0
        if re.fullmatch(r"\d+", text):
            return int(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", text)
        if parts and "".join(n + u for n, u in parts) == text:
            return int(sum(float(n) * DURATION_UNITS[u] for n, u in parts))
        bad_field(field, v, 'time: invalid duration "%s"' % text)
    bad_field(field, v, "cannot parse as duration")


def as_str(field, v):
    if isinstance(v, (dict, list)) or v is None:
        bad_field(field, v, "expected a string")
    return str(v).lower() if isinstance(v, bool) else str(v)


def as_list(field, v):
    """TypeCommaStringSlice: a JSON array or a comma string; trimmed, empties dropped."""
    if isinstance(v, str):
        items = v.split(",")
    elif isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
        items = [str(x) for x in v]
    else:
        bad_field(field, v, "expected a list of strings or a comma separated string")
    return [x.strip() for x in items if x.strip()]


def as_policies(field, v):
    """policyutil.SanitizePolicies without adding default: lower-cased, de-duplicated, sorted."""
    names = [p.lower() for p in as_list(field, v)]
    return ["root"] if "root" in names else sorted(set(names))


def as_token_type(field, v):
    v = as_str(field, v)
    if v not in ("default", "service", "batch", "default-service", "default-batch"):
        fail(400, "invalid 'token_type' value \"%s\"" % v)
    return v


TOKEN_FIELDS = {"token_policies": as_policies, "token_ttl": as_duration, "token_max_ttl": as_duration,
                "token_explicit_max_ttl": as_duration, "token_period": as_duration, "token_num_uses": as_int,
                "token_no_default_policy": as_bool, "token_bound_cidrs": as_list, "token_type": as_token_type}
TOKEN_DEFAULTS = {"token_policies": [], "token_ttl": 0, "token_max_ttl": 0, "token_explicit_max_ttl": 0,
                  "token_period": 0, "token_num_uses": 0, "token_no_default_policy": False,
                  "token_bound_cidrs": [], "token_type": "default"}


def parse_fields(body, schema, aliases):
    """Known fields converted; a deprecated alias counts only when its new
    name is absent (tokenutil.UpgradeValue). Unknown fields are ignored."""
    out, legacy = {}, set()
    for k, conv in schema.items():
        if k in body:
            out[k] = conv(k, body[k])
    for old, new in aliases.items():
        if old in body and new not in body:
            out[new] = schema[new](old, body[old])
            legacy.add(old)
        elif new in body:
            legacy.discard(old)
    return out, legacy


def merge_role(existing, defaults, fields, legacy, aliases):
    """Vault updates an existing role field by field; new roles start from defaults."""
    role = copy.deepcopy(existing) if existing else dict(copy.deepcopy(defaults), _legacy=[])
    role.update(fields)
    kept = set(role["_legacy"]) - {old for old, new in aliases.items() if new in fields}
    role["_legacy"] = sorted(kept | legacy)
    return role


def role_view(role, aliases):
    """What a role read returns: its fields, plus deprecated names only if used."""
    out = {k: v for k, v in role.items() if not k.startswith("_")}
    for old in role["_legacy"]:
        out[old] = role[aliases[old]]
    return out


# ---------------------------------------------------------------- init / unseal / health (raw handlers, no token)

def go_json_error(field, value, want):
    kind = {bool: "bool", str: "string", list: "array", dict: "object", float: "number"}.get(type(value), "value")
    fail(400, "failed to parse JSON input: json: cannot unmarshal %s into Go struct field InitRequest.%s of type %s"
         % (kind, field, want))


def init_int(body, field):
    v = body.get(field, 0)
    if isinstance(v, bool) or not isinstance(v, int):
        go_json_error(field, v, "int")
    return v


def pgp_problem(keys):
    """SealConfig.Validate's PGP checks: standard base64 of an OpenPGP packet."""
    for k in keys:
        try:
            data = base64.b64decode(k, validate=True)
        except (binascii.Error, ValueError):
            return "error decoding given PGP key: illegal base64 data"
        if not data or not data[0] & 0x80:
            return "error parsing given PGP key: openpgp: invalid data: tag byte does not have MSB set"
    return None


def seal_config_problem(shares, threshold, pgp):
    """vault.SealConfig.Validate, in its order."""
    if shares < 1:
        return "shares must be at least one"
    if threshold < 1:
        return "threshold must be at least one"
    if shares > 1 and threshold == 1:
        return "threshold must be greater than one for multiple shares"
    if shares > 255:
        return "shares must be less than 256"
    if threshold > 255:
        return "threshold must be less than 256"
    if threshold > shares:
        return "threshold cannot be larger than shares"
    return pgp_problem(pgp)


def make_shares(n):
    # One share is the 32-byte key itself; Shamir shares carry one more byte,
    # a distinct x-coordinate in 1..255, which is what lets Vault spot
    # "duplicate part" errors.
    if n == 1:
        return [secrets.token_bytes(32)]
    xs = list(range(1, 256))
    secrets.SystemRandom().shuffle(xs)
    return [secrets.token_bytes(32) + bytes([xs[i]]) for i in range(n)]


def pgp_marker(pgp_key, secret_text):
    """Stand-in 'ciphertext' (no real encryption; see the module docstring)."""
    return ("stand-in-pgp:%s:%s" % (pgp_key[:16], secret_text)).encode()


def sys_init(method, body):
    if method == "GET":
        return 200, {"initialized": S["initialized"]}
    if method not in ("PUT", "POST"):
        fail(405)
    shares, threshold = init_int(body, "secret_shares"), init_int(body, "secret_threshold")
    pgp = body.get("pgp_keys") or []
    if not isinstance(pgp, list) or not all(isinstance(k, str) for k in pgp):
        go_json_error("pgp_keys", pgp, "[]string")
    if body.get("recovery_shares") or body.get("recovery_threshold") or body.get("recovery_pgp_keys"):
        fail(400, "parameters specific to auto unseal seals present")
    if pgp and len(pgp) != shares:
        fail(400, "incorrect number of PGP keys")
    problem = seal_config_problem(shares, threshold, pgp)
    if problem:
        fail(400, "invalid seal configuration: " + problem)
    root_pgp = body.get("root_token_pgp_key") or ""
    if root_pgp and pgp_problem([root_pgp]):
        fail(400, pgp_problem([root_pgp]))
    # Real Vault validates first and only then looks at whether it is initialised.
    if S["initialized"]:
        fail(400, "Vault is already initialized")
    return 200, initialise(shares, threshold, pgp, root_pgp)


def initialise(shares, threshold, pgp, root_pgp):
    keys = make_shares(shares)
    S.update(initialized=True, sealed=True, shares=shares, threshold=threshold, unseal_keys=keys,
             root_token=new_token(), progress=[], nonce="")
    shown = [pgp_marker(pgp[i], k.hex()) for i, k in enumerate(keys)] if pgp else keys
    root = S["root_token"]
    if root_pgp:
        root = base64.b64encode(pgp_marker(root_pgp, root)).decode()
    return {"keys": [k.hex() for k in shown], "keys_base64": [base64.b64encode(k).decode() for k in shown],
            "root_token": root}


def seal_status():
    st = {"type": "shamir", "initialized": S["initialized"], "sealed": S["sealed"], "t": S["threshold"],
          "n": S["shares"], "progress": len(S["progress"]), "nonce": S["nonce"] if S["progress"] else "",
          "version": VERSION, "migration": False, "recovery_seal": False, "storage_type": "raft"}
    if not S["sealed"]:
        st.update(cluster_name="vault-cluster-standin", cluster_id=S["cluster_id"])
    return st


def decode_share(text):
    """The unseal handler: hex if it decodes to 16-33 bytes, else standard base64."""
    try:
        raw = binascii.a2b_hex(text)
        if 16 <= len(raw) <= 33:
            return raw
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        fail(400, "'key' must be a valid hex or base64 string")


def sys_unseal(method, body):
    if method not in ("PUT", "POST"):
        fail(405)
    body = {k.lower(): v for k, v in body.items()}  # Go matches untagged fields case-insensitively
    if body.get("reset") is True:
        if S["initialized"] and not S["sealed"]:
            fail(400, "vault is unsealed")
        S.update(progress=[], nonce="")
        return 200, seal_status()
    key = body.get("key")
    if not isinstance(key, str) or key == "":
        fail(400, "'key' must be specified in request body as JSON, or 'reset' set to true")
    share = decode_share(key)
    if not S["initialized"]:
        fail(400, "Vault is not initialized")
    if len(share) < 16:
        fail(400, "invalid key: key is shorter than minimum 16 bytes")
    if len(share) > 33:
        fail(400, "invalid key: key is longer than maximum 33 bytes")
    if S["sealed"]:
        add_share(share)
    return 200, seal_status()


def add_share(share):
    if share in S["progress"]:
        return  # the same share again does not count
    if not S["progress"]:
        S["nonce"] = str(uuid.uuid4())
    S["progress"].append(share)
    if len(S["progress"]) < S["threshold"]:
        return
    parts, S["progress"], S["nonce"] = S["progress"], [], ""  # Vault forgets the attempt, good or bad
    check_combination(parts)
    S["sealed"] = False


def check_combination(parts):
    """What combining the shares would do: only genuine shares give the key."""
    genuine = S["unseal_keys"]
    if len(parts) == 1:
        if len(parts[0]) not in (16, 24, 32):
            fail(400, "invalid key: failed to setup unseal key: crypto/aes: invalid key size %d" % len(parts[0]))
    else:
        if len({len(p) for p in parts}) != 1:
            fail(400, "invalid key: failed to compute combined key: all parts must be the same length")
        if len({p[-1] for p in parts}) != len(parts):
            fail(400, "invalid key: failed to compute combined key: duplicate part detected")
    if any(p not in genuine for p in parts):
        fail(500, DECRYPT_FAILED)


def query_code(q, name, default):
    try:
        return int(q.get(name, [default])[0])
    except ValueError:
        fail(400, "bad code")


def sys_health(method, q):
    if method not in ("GET", "HEAD"):
        fail(405)
    if not S["initialized"]:
        code = query_code(q, "uninitcode", 501)
    elif S["sealed"]:
        code = query_code(q, "sealedcode", 503)
    else:
        code = query_code(q, "activecode", 200)
    body = {"initialized": S["initialized"], "sealed": S["sealed"], "standby": False,
            "performance_standby": False, "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled", "server_time_utc": int(time.time()), "version": VERSION}
    if S["initialized"] and not S["sealed"]:
        body.update(cluster_name="vault-cluster-standin", cluster_id=S["cluster_id"])
    return code, body


RAW_HANDLERS = {"sys/init": lambda m, q, b: sys_init(m, b), "sys/unseal": lambda m, q, b: sys_unseal(m, b),
                "sys/health": lambda m, q, b: sys_health(m, q),
                "sys/seal-status": lambda m, q, b: (200, seal_status()) if m == "GET" else fail(405)}


# ---------------------------------------------------------------- tokens

def token_of(headers):
    token = headers.get("X-Vault-Token") or ""
    auth = headers.get("Authorization") or ""
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    return token


def live_token(token):
    """The root token or an unexpired login token (spending one use)."""
    if token and token == S["root_token"]:
        return {"policies": ["root"]}
    info = S["tokens"].get(token) if token else None
    if info is None or (info["expires"] and time.time() >= info["expires"]):
        S["tokens"].pop(token, None)
        fail(403, "permission denied")
    if info["uses_left"]:
        info["uses_left"] -= 1
        if info["uses_left"] == 0:  # its last use: revoked once this request is done
            S["tokens"].pop(token)
    return info


def issue_token(mount, role_name, role):
    """A login token; policies get "default" unless the role says not to."""
    policies = set(role["token_policies"])
    if not role["token_no_default_policy"] and "root" not in policies:
        policies.add("default")
    ttl = role["token_ttl"] or SYSTEM_TTL
    if role["token_max_ttl"]:
        ttl = min(ttl, role["token_max_ttl"])
    token, accessor = new_token(), secrets.token_urlsafe(18)
    S["tokens"][token] = {"accessor": accessor, "policies": sorted(policies), "mount": mount, "role": role_name,
                          "expires": time.time() + ttl, "uses_left": role["token_num_uses"] or None,
                          "issued": now_iso()}
    return {"client_token": token, "accessor": accessor, "policies": sorted(policies),
            "token_policies": sorted(policies), "metadata": {"role_name": role_name}, "lease_duration": ttl,
            "renewable": True, "entity_id": str(uuid.uuid4()), "token_type": "service", "orphan": True,
            "mfa_requirement": None, "num_uses": role["token_num_uses"]}


def token_backend(op, rest, token, t):
    if rest != "lookup-self":
        fail(501, "stand-in: auth/token/%s is not modelled" % rest)
    allow(op, "read", "update")
    if token == S["root_token"]:
        info = {"policies": ["root"], "display_name": "root", "path": "auth/token/root", "ttl": 0,
                "expire_time": None, "accessor": "root"}
    else:
        info = {"policies": t["policies"], "display_name": "approle", "path": "auth/%slogin" % t["mount"],
                "ttl": max(0, int(t["expires"] - time.time())), "accessor": t["accessor"],
                "expire_time": datetime.fromtimestamp(t["expires"], timezone.utc).isoformat()}
    info.update(id=token, type="service", orphan=True, renewable=info["policies"] != ["root"], meta=None,
                num_uses=0, entity_id="", explicit_max_ttl=0)
    return ok(info)


# ---------------------------------------------------------------- sys/mounts, sys/auth, tune

def clean_mount_path(raw):
    # sanitizeMountPath: one trailing slash, no leading one.
    path = raw if raw.endswith("/") else raw + "/"
    return path[1:] if path.startswith("/") else path


def conflict(table, path):
    # Vault refuses a mount inside another one and one that would contain another.
    for existing in table:
        if existing.startswith(path) or path.startswith(existing):
            fail(400, "path is already in use at %s" % existing)


def string_map(field, v):
    if v is None:
        return {}
    if not isinstance(v, dict):
        bad_field(field, v, "expected a map")
    return {k: as_str(field, x) for k, x in v.items()}


def mount_config(body):
    """The `config` of a new mount: lease TTLs as durations, the rest kept."""
    raw = body.get("config") or {}
    if not isinstance(raw, dict):
        fail(400, "unable to convert given mount config information")
    out = dict(raw)
    for k in ("default_lease_ttl", "max_lease_ttl"):
        if k in raw:
            out[k] = 0 if raw[k] in ("", "system") else as_duration(k, raw[k])
    return out


def enable_secrets(raw_path, body):
    path = clean_mount_path(raw_path)
    kind = body.get("type") if isinstance(body.get("type"), str) else ""
    options = string_map("options", body.get("options"))
    if not kind:
        fail(400, "backend type must be specified as a string")
    if kind in ("kv-v1", "kv-v2"):
        kind, options["version"] = "kv", kind[-1]
    elif kind != "kv" and options.get("version"):
        fail(400, 'secrets engine "%s" does not allow setting a version' % kind)
    if kind == "kv" and options.get("version", "1") not in ("1", "2"):
        fail(400, "invalid version provided: %s" % options["version"])
    if any(path.startswith(p) for p in PROTECTED_MOUNTS):
        fail(400, 'cannot mount "%s"' % path)
    if kind in SINGLETONS:
        fail(400, 'mount type of "%s" is not mountable' % kind)
    conflict(S["mounts"], path)
    if kind not in SECRET_TYPES:
        fail(400, "plugin not found in the catalog: %s" % kind)
    S["mounts"][path] = mount_entry(kind, str(body.get("description") or ""), options or None,
                                    as_bool("local", body.get("local", False)), mount_config(body))
    if kind in ("kv", "generic"):
        S["kv"][path] = {}
    return NO_CONTENT


def disable_secrets(raw_path):
    path = clean_mount_path(raw_path)
    if path not in S["mounts"]:
        return NO_CONTENT  # Vault does not reveal whether a mount existed
    if any(path.startswith(p) for p in PROTECTED_MOUNTS):
        fail(400, 'cannot unmount "%s"' % path)
    del S["mounts"][path]
    S["kv"].pop(path, None)
    return NO_CONTENT


def enable_auth(raw_path, body):
    path = clean_mount_path(raw_path)
    kind = body.get("type") if isinstance(body.get("type"), str) else ""
    if not kind:
        fail(400, "backend type must be specified as a string")
    conflict(S["auth"], path)
    if kind == "token":
        fail(400, "token credential backend cannot be instantiated")
    if kind not in AUTH_TYPES:
        fail(400, "plugin not found in the catalog: %s" % kind)
    S["auth"][path] = mount_entry(kind, str(body.get("description") or ""),
                                  string_map("options", body.get("options")) or None,
                                  as_bool("local", body.get("local", False)), mount_config(body))
    S["roles"][path] = {}
    if kind == "approle":
        S["secret_ids"][path] = {}
    return NO_CONTENT


def disable_auth(raw_path):
    path = clean_mount_path(raw_path)
    if path == "token/":
        fail(400, "token credential backend cannot be disabled")
    if path not in S["auth"]:
        return NO_CONTENT
    del S["auth"][path]
    for table in ("roles", "secret_ids", "k8s_config"):
        S[table].pop(path, None)
    # Disabling an auth method revokes every token it issued.
    for token in [t for t, info in S["tokens"].items() if info["mount"] == path]:
        del S["tokens"][token]
    return NO_CONTENT


def mount_table(table):
    return ok(copy.deepcopy(table), top_level=True)


def tune_view(entry):
    cfg = entry["config"]
    data = {"default_lease_ttl": cfg.get("default_lease_ttl") or SYSTEM_TTL,
            "max_lease_ttl": cfg.get("max_lease_ttl") or SYSTEM_TTL, "force_no_cache": cfg.get("force_no_cache", False),
            "description": entry["description"]}
    if entry["options"]:
        data["options"] = entry["options"]
    return ok(data, top_level=True)


def tune(op, table, raw_path, body, prefix):
    path = clean_mount_path(raw_path)
    full = prefix + path
    entry = table.get(path)
    if op == "read":
        if entry is None:
            fail(400, 'cannot fetch sysview for path "%s"' % full)
        return tune_view(entry)
    allow(op, "update")
    if any(full.startswith(p) for p in UNTUNABLE):
        fail(400, 'cannot tune "%s"' % full)
    if entry is None:
        fail(400, 'tune of path "%s" failed: no mount entry found' % full)
    for k in ("default_lease_ttl", "max_lease_ttl"):
        if k in body:
            entry["config"][k] = 0 if body[k] in ("", "system") else as_duration(k, body[k])
    if "description" in body:
        entry["description"] = as_str("description", body["description"])
    options = string_map("options", body.get("options"))
    warning = tune_version(entry, path, options) if "version" in options else None
    if options:
        merged = dict(entry["options"] or {})
        merged.update({k: v for k, v in options.items() if v or k == "version"})
        for k in [k for k, v in options.items() if not v and k != "version"]:
            merged.pop(k, None)
        entry["options"] = merged
    return ok(None, warnings=[warning]) if warning else NO_CONTENT


def tune_version(entry, path, options):
    """KV can be upgraded from version 1 to 2 (data kept as version 1), never back."""
    have, want = int(kv_version(entry)), options["version"]
    if want not in ("1", "2"):
        fail(400, "invalid version provided: %s" % want)
    if have > int(want):
        fail(400, "cannot downgrade mount from version %d" % have)
    if have == int(want):
        return None
    stamp = now_iso()
    if path in S["kv"] and entry["type"] in ("kv", "generic"):
        S["kv"][path] = {key: new_kv2_record(data, stamp) for key, data in S["kv"][path].items()}
    return ("Upgrading mount from version %d to version %s. This mount will be unavailable for a brief period "
            "and will resume service shortly." % (have, want))


# ---------------------------------------------------------------- policies (with a small HCL reader)

class HclError(Exception):
    pass


class Obj(list):
    """An HCL object: a list of (key, labels, value, line) items (keys may repeat)."""


HCL_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<heredoc><<-?(?P<tag>[A-Za-z_]\w*)\n.*?\n[ \t]*(?P=tag)(?=\n|$))
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z_][\w\-.]*)
  | (?P<punct>[{}\[\],=])
''', re.S | re.X)
VALID_PATH_KEYS = {"comment", "policy", "capabilities", "allowed_parameters", "denied_parameters",
                   "required_parameters", "min_wrapping_ttl", "max_wrapping_ttl", "mfa_methods", "control_group"}
VALID_CAPABILITIES = {"deny", "create", "read", "update", "delete", "list", "sudo", "root", "patch"}
OLD_PATH_POLICIES = {"deny", "read", "write", "sudo"}


def hcl_tokens(text):
    toks, pos, line = [], 0, 1
    while pos < len(text):
        m = HCL_TOKEN.match(text, pos)
        if not m:
            raise HclError("At %d: illegal char %r" % (line, text[pos]))
        kind, value = m.lastgroup if m.lastgroup != "tag" else "heredoc", m.group()
        if kind == "string":
            try:
                toks.append(("string", json.loads(value), line))
            except ValueError:
                raise HclError("At %d: invalid string escape" % line)
        elif kind == "heredoc":
            toks.append(("string", value.split("\n", 1)[1].rsplit("\n", 1)[0], line))
        elif kind == "number":
            toks.append(("number", float(value) if "." in value or "e" in value.lower() else int(value), line))
        elif kind == "word":
            toks.append(("bool", value == "true", line) if value in ("true", "false") else ("word", value, line))
        elif kind == "punct":
            toks.append((value, value, line))
        line += value.count("\n")
        pos = m.end()
    toks.append(("eof", None, line))
    return toks


def hcl_items(toks, pos, closer):
    """key [labels...] (= value | { items }), until `closer`; returns (Obj, pos at closer)."""
    items = Obj()
    while toks[pos][0] != closer:
        kind, key, line = toks[pos]
        if kind not in ("word", "string"):
            raise HclError("At %d: expected: IDENT | STRING got: %s" % (line, kind))
        pos += 1
        labels = []
        while toks[pos][0] in ("word", "string"):
            labels.append(toks[pos][1])
            pos += 1
        if toks[pos][0] == "=":
            value, pos = hcl_value(toks, pos + 1)
        elif toks[pos][0] == "{":
            value, pos = hcl_items(toks, pos + 1, "}")
            pos += 1
        else:
            raise HclError("At %d: key '%s' expected start of object ('{') or assignment ('=')" % (line, key))
        items.append((key, labels, value, line))
        if toks[pos][0] == ",":
            pos += 1
    return items, pos


def hcl_value(toks, pos):
    kind, value, line = toks[pos]
    if kind in ("string", "number", "bool"):
        return value, pos + 1
    if kind == "{":
        obj, pos = hcl_items(toks, pos + 1, "}")
        return obj, pos + 1
    if kind == "[":
        out, pos = [], pos + 1
        while toks[pos][0] != "]":
            item, pos = hcl_value(toks, pos)
            out.append(item)
            if toks[pos][0] == ",":
                pos += 1
            elif toks[pos][0] != "]":
                raise HclError("At %d: expected ',' or ']' in list" % toks[pos][2])
        return out, pos + 1
    raise HclError("At %d: Unknown token: %s" % (line, kind))


def json_to_obj(v):
    # The HCL parser also reads JSON; turn it into the same shape.
    if isinstance(v, dict):
        return Obj((k, [], json_to_obj(x), 1) for k, x in v.items())
    if isinstance(v, list):
        return [json_to_obj(x) for x in v]
    return v


def parse_hcl(text):
    if text.lstrip().startswith("{"):
        try:
            return json_to_obj(json.loads(text))
        except ValueError as e:
            raise HclError(str(e))
    items, _ = hcl_items(hcl_tokens(text), 0, "eof")
    return items


def path_blocks(labels, value, line):
    """`path "x" {...}`, `path = {"x" = {...}}` and JSON's {"path": {"x": {...}}} alike."""
    if labels:
        if len(labels) > 1:
            raise HclError('invalid key "%s" on line %d' % (labels[1], line))
        return [(labels[0], value, line)]
    blocks = []
    for v in value if isinstance(value, list) and not isinstance(value, Obj) else [value]:
        if not isinstance(v, Obj):
            raise HclError("At %d: path must be an object" % line)
        blocks += [(k, rules, ln) for k, _, rules, ln in v]
    return blocks


def check_path_rules(path, rules, line):
    if not isinstance(rules, Obj):
        raise HclError('path "%s": rules must be an object (line %d)' % (path, line))
    if "+*" in path:
        raise HclError("path \"%s\": invalid use of wildcards ('+*' is forbidden)" % path)
    for key, _, value, ln in rules:
        if key not in VALID_PATH_KEYS:
            raise HclError('path "%s": invalid key "%s" on line %d' % (path, key, ln))
        if key == "capabilities":
            caps = value if isinstance(value, list) else None
            if caps is None or not all(isinstance(c, str) for c in caps):
                raise HclError('path "%s": capabilities must be a list of strings' % path)
            for cap in caps:
                if cap not in VALID_CAPABILITIES - {"root"}:
                    raise HclError('path "%s": invalid capability "%s"' % (path, cap))
        if key == "policy" and value not in OLD_PATH_POLICIES:
            raise HclError('path "%s": invalid policy "%s"' % (path, value))


def check_policy(text):
    """ParseACLPolicy's checks; 400 `failed to parse policy: ...` on any problem."""
    try:
        items = parse_hcl(text)
        if not isinstance(items, Obj):
            raise HclError("does not contain a root object")
        for key, labels, value, line in items:
            if key not in ("name", "path"):
                raise HclError('invalid key "%s" on line %d' % (key, line))
            if key == "path":
                for path, rules, ln in path_blocks(labels, value, line):
                    check_path_rules(path, rules, ln)
    except HclError as e:
        fail(400, "failed to parse policy: %s" % e)


def policy_text(body, *fields):
    text = next((body[f] for f in fields if body.get(f)), "")
    if not isinstance(text, str) or not text:
        fail(400, "'policy' parameter not supplied or empty")
    try:
        # Vault accepts the policy base64-encoded too.
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        return text


def policy_names():
    return sorted(S["policies"]) + ["root"]


def policy_one(op, name, body, text_field="policy"):
    name = name.lower()
    if op == "read":
        if name != "root" and name not in S["policies"]:
            fail(404)
        return ok({"name": name, text_field: S["policies"].get(name, "")}, top_level=True)
    if op == "update":
        text = policy_text(body, "policy", text_field)
        check_policy(text)
        if name == "root":
            fail(400, "cannot update root policy")
        S["policies"][name] = text
        return NO_CONTENT
    allow(op, "delete")
    if name in ("root", "default"):
        fail(400, "cannot delete %s policy" % name)
    S["policies"].pop(name, None)
    return NO_CONTENT


def sys_backend(op, rest, body):
    if rest == "mounts":
        allow(op, "read")
        return mount_table(S["mounts"])
    if rest == "auth":
        allow(op, "read")
        return mount_table(S["auth"])
    for prefix, table, tune_prefix, enable, disable in (
            ("mounts/", S["mounts"], "", enable_secrets, disable_secrets),
            ("auth/", S["auth"], "auth/", enable_auth, disable_auth)):
        if rest.startswith(prefix) and len(rest) > len(prefix):
            tail = rest[len(prefix):]
            if tail.endswith("/tune"):
                return tune(op, table, tail[:-5], body, tune_prefix)
            allow(op, "update", "delete")
            return enable(tail, body) if op == "update" else disable(tail)
    return sys_policies(op, rest, body)


def sys_policies(op, rest, body):
    if rest in ("policies/acl", "policies/acl/"):
        allow(op, "list")
        return ok({"keys": policy_names()}, top_level=True)
    if rest.startswith("policies/acl/"):
        return policy_one(op, rest[len("policies/acl/"):], body)
    if rest in ("policy", "policy/"):
        allow(op, "read", "list")
        return ok({"keys": policy_names(), "policies": policy_names()}, top_level=True)
    if rest.startswith("policy/"):
        return policy_one(op, rest[len("policy/"):], body, text_field="rules")
    if rest == "seal":
        allow(op, "update")
        seal()
        return NO_CONTENT
    fail(404, "unsupported path")


def seal():
    S.update(sealed=True, progress=[], nonce="")


# ---------------------------------------------------------------- AppRole

APPROLE_OWN = {"bind_secret_id": as_bool, "secret_id_bound_cidrs": as_list, "secret_id_num_uses": as_int,
               "secret_id_ttl": as_duration, "local_secret_ids": as_bool}
APPROLE_SCHEMA = dict(TOKEN_FIELDS, **APPROLE_OWN)
APPROLE_ALIASES = {"policies": "token_policies", "period": "token_period", "bound_cidr_list": "secret_id_bound_cidrs"}
APPROLE_DEFAULTS = dict(TOKEN_DEFAULTS, bind_secret_id=True, secret_id_bound_cidrs=[], secret_id_num_uses=0,
                        secret_id_ttl=0, local_secret_ids=False)


def approle_backend(op, mount, rest, body):
    if rest == "login":
        allow(op, "update")
        return approle_login(mount, body)
    if rest in ("role", "role/"):
        allow(op, "list")
        return list_keys(S["roles"][mount])
    m = re.fullmatch(r"role/(%s)(/role-id|/secret-id/?)?" % NAME_AT, rest, re.ASCII)
    if not m:
        fail(404, "unsupported path")
    name, sub = m.group(1).lower(), (m.group(2) or "").strip("/")
    if sub == "role-id":
        return approle_role_id(op, mount, name, body)
    if sub == "secret-id":
        return approle_secret_id(op, mount, name, body)
    return approle_role(op, mount, name, body)


def approle_role(op, mount, name, body):
    roles = S["roles"][mount]
    if op == "read":
        if name not in roles:
            fail(404)
        return ok(role_view(roles[name], APPROLE_ALIASES))
    if op == "delete":
        roles.pop(name, None)
        for sid in [s for s, rec in S["secret_ids"][mount].items() if rec["role"] == name]:
            del S["secret_ids"][mount][sid]
        return NO_CONTENT
    allow(op, "update")
    fields, legacy = parse_fields(body, APPROLE_SCHEMA, APPROLE_ALIASES)
    role = merge_role(roles.get(name), APPROLE_DEFAULTS, fields, legacy, APPROLE_ALIASES)
    validate_approle(role)
    role["_role_id"] = role.get("_role_id") or str(uuid.uuid4())
    if "role_id" in body:
        role["_role_id"] = unique_role_id(mount, name, as_str("role_id", body["role_id"]))
    roles[name] = role
    return NO_CONTENT


def validate_approle(role):
    if not role["bind_secret_id"] and not role["secret_id_bound_cidrs"] and not role["token_bound_cidrs"]:
        fail(400, "at least one constraint should be enabled on the role")
    if role["secret_id_num_uses"] < 0:
        fail(400, "secret_id_num_uses cannot be negative")
    if role["token_max_ttl"] and role["token_ttl"] > role["token_max_ttl"]:
        fail(400, "token_ttl should not be greater than token_max_ttl")


def unique_role_id(mount, name, role_id):
    if not role_id:
        fail(400, "missing role_id")
    for other, role in S["roles"][mount].items():
        if other != name and role["_role_id"] == role_id:
            fail(400, "role_id already in use")
    return role_id


def approle_role_id(op, mount, name, body):
    role = S["roles"][mount].get(name)
    if op == "read":
        if role is None:
            fail(404)
        return ok({"role_id": role["_role_id"]})
    allow(op, "update")
    if role is None:
        fail(400, 'role "%s" does not exist' % name)
    role["_role_id"] = unique_role_id(mount, name, as_str("role_id", body.get("role_id", "")))
    return NO_CONTENT


def approle_secret_id(op, mount, name, body):
    role = S["roles"][mount].get(name)
    store = S["secret_ids"][mount]
    if op == "list":
        return list_keys({rec["accessor"]: 1 for rec in store.values() if rec["role"] == name})
    allow(op, "update")
    if role is None:
        fail(400, 'role "%s" does not exist' % name)
    ttl = as_duration("ttl", body["ttl"]) if "ttl" in body else role["secret_id_ttl"]
    uses = as_int("num_uses", body["num_uses"]) if "num_uses" in body else role["secret_id_num_uses"]
    metadata = body.get("metadata") or "{}"
    try:
        metadata = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    except (ValueError, TypeError) as e:
        fail(400, "failed to parse metadata: %s" % e)
    secret_id, accessor = str(uuid.uuid4()), str(uuid.uuid4())
    store[secret_id] = {"role": name, "accessor": accessor, "expires": time.time() + ttl if ttl else None,
                        "uses_left": uses or None, "ttl": ttl, "num_uses": uses, "metadata": metadata,
                        "created": now_iso()}
    return ok({"secret_id": secret_id, "secret_id_accessor": accessor, "secret_id_ttl": ttl,
               "secret_id_num_uses": uses})


def approle_login(mount, body):
    role_id = body.get("role_id")
    if not isinstance(role_id, str) or not role_id:
        fail(400, "missing role_id")
    roles = S["roles"][mount]
    name = next((n for n, r in roles.items() if r["_role_id"] == role_id), None)
    if name is None:
        fail(400, INVALID_LOGIN)
    if roles[name]["bind_secret_id"]:
        spend_secret_id(mount, name, body.get("secret_id"))
    return ok(None, auth=issue_token(mount, name, roles[name]))


def spend_secret_id(mount, role_name, secret_id):
    if not isinstance(secret_id, str) or not secret_id:
        fail(400, "missing secret_id")
    store = S["secret_ids"][mount]
    rec = store.get(secret_id)
    if rec and rec["expires"] and time.time() >= rec["expires"]:
        del store[secret_id]  # Vault cleans up expired secret IDs it meets
        rec = None
    if rec is None or rec["role"] != role_name:
        fail(400, INVALID_LOGIN)
    if rec["uses_left"]:
        rec["uses_left"] -= 1
        if rec["uses_left"] == 0:
            del store[secret_id]


def list_keys(mapping):
    # An empty list is a 404 in Vault.
    if not mapping:
        fail(404)
    return ok({"keys": sorted(mapping)})


# ---------------------------------------------------------------- Kubernetes auth

K8S_OWN = {"bound_service_account_names": as_list, "bound_service_account_namespaces": as_list,
           "audience": as_str, "alias_name_source": as_str}
K8S_SCHEMA = dict(TOKEN_FIELDS, **K8S_OWN)
K8S_ALIASES = {"policies": "token_policies", "num_uses": "token_num_uses", "ttl": "token_ttl",
               "max_ttl": "token_max_ttl", "period": "token_period", "bound_cidrs": "token_bound_cidrs"}
K8S_DEFAULTS = dict(TOKEN_DEFAULTS, bound_service_account_names=[], bound_service_account_namespaces=[],
                    audience="", alias_name_source="serviceaccount_uid")


def k8s_backend(op, mount, rest, body):
    if rest == "config":
        return k8s_config(op, mount, body)
    if rest == "login":
        allow(op, "update")
        fail(501, "stand-in: kubernetes login is not modelled")
    if rest in ("role", "role/"):
        allow(op, "list")
        return list_keys(S["roles"][mount])
    m = re.fullmatch(r"role/(%s)" % NAME, rest, re.ASCII)
    if not m:
        fail(404, "unsupported path")
    return k8s_role(op, mount, m.group(1).lower(), body)


def check_jwt(jwt):
    """jwt.ParseUnverified: three base64url segments, header and claims JSON.
    The plugin returns this error bare, so Vault answers 500."""
    segments = jwt.split(".")
    if len(segments) != 3:
        fail(500, "token contains an invalid number of segments")
    for seg in segments[:2]:
        try:
            if not isinstance(json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))), dict):
                raise ValueError
        except (ValueError, binascii.Error):
            fail(500, "token is malformed: could not decode JWT segment")


def check_pem_key(pem):
    m = re.search(r"-----BEGIN (PUBLIC KEY|RSA PUBLIC KEY|CERTIFICATE)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END", pem)
    try:
        if m and base64.b64decode("".join(m.group(2).split()), validate=True):
            return
    except (binascii.Error, ValueError):
        pass
    fail(400, "data does not contain any valid RSA or ECDSA public keys")


def k8s_config(op, mount, body):
    if op == "read":
        config = S["k8s_config"].get(mount)
        if config is None:
            fail(404)
        # Vault never returns token_reviewer_jwt.
        return ok({k: v for k, v in config.items() if k != "token_reviewer_jwt"})
    allow(op, "update")
    host = body.get("kubernetes_host")
    if not isinstance(host, str) or not host:
        fail(400, "no host provided")
    jwt = as_str("token_reviewer_jwt", body.get("token_reviewer_jwt") or "")
    if jwt:
        check_jwt(jwt)
    pem_keys = as_list("pem_keys", body.get("pem_keys", []))
    for pem in pem_keys:
        check_pem_key(pem)
    # A write replaces the whole config: fields left out are reset.
    S["k8s_config"][mount] = {
        "kubernetes_host": host, "kubernetes_ca_cert": as_str("kubernetes_ca_cert", body.get("kubernetes_ca_cert") or ""),
        "token_reviewer_jwt": jwt, "pem_keys": pem_keys, "issuer": as_str("issuer", body.get("issuer") or ""),
        "disable_iss_validation": as_bool("disable_iss_validation", body.get("disable_iss_validation", True)),
        "disable_local_ca_jwt": as_bool("disable_local_ca_jwt", body.get("disable_local_ca_jwt", False))}
    return NO_CONTENT


def k8s_role(op, mount, name, body):
    roles = S["roles"][mount]
    if op == "read":
        if name not in roles:
            fail(404)
        view = role_view(roles[name], K8S_ALIASES)
        if not view["audience"]:
            del view["audience"]
        return ok(view)
    if op == "delete":
        roles.pop(name, None)
        return NO_CONTENT
    allow(op, "update")
    fields, legacy = parse_fields(body, K8S_SCHEMA, K8S_ALIASES)
    role = merge_role(roles.get(name), K8S_DEFAULTS, fields, legacy, K8S_ALIASES)
    validate_k8s_role(role)
    roles[name] = role
    return NO_CONTENT


def validate_k8s_role(role):
    if role["token_max_ttl"] and role["token_ttl"] > role["token_max_ttl"]:
        fail(400, "token ttl should not be greater than token max ttl")
    for field in ("bound_service_account_names", "bound_service_account_namespaces"):
        if not role[field]:
            fail(400, '"%s" can not be empty' % field)
        if len(role[field]) > 1 and "*" in role[field]:
            fail(400, 'can not mix "*" with values')
    if role["alias_name_source"] not in ("serviceaccount_uid", "serviceaccount_name"):
        fail(400, 'invalid alias_name_source "%s"' % role["alias_name_source"])


# ---------------------------------------------------------------- KV

def new_kv2_record(data, stamp):
    return {"versions": {1: {"data": data, "created_time": stamp, "deletion_time": "", "destroyed": False}},
            "current_version": 1, "oldest_version": 0, "created_time": stamp, "updated_time": stamp,
            "max_versions": 0, "cas_required": False, "delete_version_after": "0s", "custom_metadata": None}


def empty_kv2_record():
    rec = new_kv2_record(None, now_iso())
    rec.update(versions={}, current_version=0)
    return rec


def list_children(keys, prefix):
    """Immediate children of prefix, folders with a trailing slash (storage List)."""
    prefix = prefix + "/" if prefix and not prefix.endswith("/") else prefix
    out = {}
    for key in keys:
        if key.startswith(prefix) and key != prefix:
            rest = key[len(prefix):]
            out[rest.split("/", 1)[0] + "/" if "/" in rest else rest] = 1
    return list_keys(out)


def kv1_backend(op, mount, key, body):
    store = S["kv"][mount]
    if op == "list":
        return list_children(store, key)
    if op == "read":
        if key not in store:
            fail(404)
        return ok(copy.deepcopy(store[key]), lease=SYSTEM_TTL)
    if op == "delete":
        store.pop(key, None)
        return NO_CONTENT
    allow(op, "update")
    if not key or key.endswith("/"):
        fail(400, "cannot write to a path ending in '/'")
    if not body:
        fail(400, "missing data fields")
    store[key] = body
    return NO_CONTENT


def kv2_settings(mount):
    return S["mounts"][mount].setdefault("kv_config", {"max_versions": 0, "cas_required": False,
                                                       "delete_version_after": "0s"})


def kv2_backend(op, mount, rest, body, q, headers):
    head, slash, key = rest.partition("/")
    if rest == "config":
        return kv2_config(op, mount, body)
    if head == "metadata":
        return kv2_metadata(op, mount, key, body)
    if head in ("data", "delete", "undelete", "destroy") and slash:
        if not key:
            fail(400, "missing path")
        handler = {"data": kv2_data, "delete": kv2_delete, "undelete": kv2_undelete, "destroy": kv2_destroy}[head]
        return handler(op, mount, key, body, q, headers)
    # Vault's answer to v1-style paths on a v2 mount: 404 with a warning and no "errors".
    verb = {"read": "get", "update": "put", "delete": "delete", "list": "list", "patch": "patch"}.get(op, op)
    return ok(None, warnings=[KV2_INVALID_PATH % verb], status=404)


def version_meta(rec, n):
    v = rec["versions"][n]
    return {"created_time": v["created_time"], "custom_metadata": rec["custom_metadata"],
            "deletion_time": v["deletion_time"], "destroyed": v["destroyed"], "version": n}


def kv2_data(op, mount, key, body, q, headers):
    store = S["kv"][mount]
    rec = store.get(key)
    if op == "read":
        return kv2_read(rec, q)
    if op == "delete":
        if rec and rec["current_version"] in rec["versions"]:
            rec["versions"][rec["current_version"]]["deletion_time"] = now_iso()
        return NO_CONTENT
    if op == "patch":
        return kv2_patch(mount, key, rec, body, headers)
    allow(op, "update")
    if "data" not in body:
        fail(400, "no data provided")
    if not isinstance(body["data"], dict):
        bad_field("data", body["data"], "expected a map")
    check_cas(mount, rec, body)
    return kv2_write(mount, key, rec, body["data"])


def kv2_read(rec, q):
    version = as_int("version", q.get("version", ["0"])[0]) if rec else 0
    if rec is None or rec["current_version"] == 0:
        fail(404)
    version = version or rec["current_version"]
    if version not in rec["versions"]:
        fail(404)
    meta = version_meta(rec, version)
    v = rec["versions"][version]
    if v["deletion_time"] or v["destroyed"]:
        return ok({"data": None, "metadata": meta}, status=404)
    return ok({"data": copy.deepcopy(v["data"]), "metadata": meta})


def check_cas(mount, rec, body):
    options = body.get("options") or {}
    if not isinstance(options, dict):
        bad_field("options", options, "expected a map")
    current = rec["current_version"] if rec else 0
    required = (rec and rec["cas_required"]) or kv2_settings(mount)["cas_required"]
    if "cas" not in options:
        if required:
            fail(400, "check-and-set parameter required for this call")
        return
    if as_int("cas", options["cas"]) != current:
        fail(400, "check-and-set parameter did not match the current version")


def kv2_write(mount, key, rec, data):
    stamp = now_iso()
    if rec is None:
        rec = S["kv"][mount][key] = empty_kv2_record()
    n = rec["current_version"] + 1
    rec["versions"][n] = {"data": data, "created_time": stamp, "deletion_time": "", "destroyed": False}
    rec.update(current_version=n, updated_time=stamp)
    prune_versions(mount, rec)
    return ok(version_meta(rec, n))


def prune_versions(mount, rec):
    # Only max_versions versions are kept (the key's, else the mount's, else 10).
    limit = rec["max_versions"] or kv2_settings(mount)["max_versions"] or 10
    while len(rec["versions"]) > limit:
        del rec["versions"][min(rec["versions"])]
    rec["oldest_version"] = min(rec["versions"]) if rec["versions"] else 0


def merge_patch(target, patch):
    """RFC 7386: null removes a key, objects merge, anything else replaces."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = v
    return out


def kv2_patch(mount, key, rec, body, headers):
    if (headers.get("Content-Type") or "").split(";")[0].strip() != "application/merge-patch+json":
        fail(415, "PATCH requires Content-Type application/merge-patch+json")
    if "data" not in body or not isinstance(body["data"], dict):
        fail(400, "no data provided")
    live = rec and rec["versions"].get(rec["current_version"])
    if not live or live["deletion_time"] or live["destroyed"]:
        fail(404)
    check_cas(mount, rec, body)
    return kv2_write(mount, key, rec, merge_patch(live["data"], body["data"]))


def kv2_versions(body):
    versions = body.get("versions")
    if isinstance(versions, (str, int)) and not isinstance(versions, bool):
        versions = as_list("versions", str(versions))
    if not versions:
        fail(400, "no version number provided")
    return [as_int("versions", v) for v in versions]


def kv2_delete(op, mount, key, body, q, headers):
    allow(op, "update")
    rec = S["kv"][mount].get(key)
    for n in kv2_versions(body):
        if rec and n in rec["versions"] and not rec["versions"][n]["deletion_time"]:
            rec["versions"][n]["deletion_time"] = now_iso()
    return NO_CONTENT


def kv2_undelete(op, mount, key, body, q, headers):
    allow(op, "update")
    rec = S["kv"][mount].get(key)
    for n in kv2_versions(body):
        if rec and n in rec["versions"] and not rec["versions"][n]["destroyed"]:
            rec["versions"][n]["deletion_time"] = ""
    return NO_CONTENT


def kv2_destroy(op, mount, key, body, q, headers):
    allow(op, "update")
    rec = S["kv"][mount].get(key)
    for n in kv2_versions(body):
        if rec and n in rec["versions"]:
            rec["versions"][n].update(destroyed=True, data=None)
    return NO_CONTENT


def kv2_metadata(op, mount, key, body):
    store = S["kv"][mount]
    if op == "list":
        return list_children(store, key)
    if op == "delete":
        store.pop(key, None)
        return NO_CONTENT
    if not key:
        fail(400, "missing path")
    if op == "read":
        if key not in store:
            fail(404)
        return ok(metadata_view(store[key]))
    allow(op, "update")
    rec = store.get(key) or empty_kv2_record()
    apply_kv2_settings(rec, body)
    rec["custom_metadata"] = string_map("custom_metadata", body["custom_metadata"]) \
        if "custom_metadata" in body else rec["custom_metadata"]
    store[key] = rec
    prune_versions(mount, rec)
    return NO_CONTENT


def apply_kv2_settings(target, body):
    if "max_versions" in body:
        target["max_versions"] = as_int("max_versions", body["max_versions"])
    if "cas_required" in body:
        target["cas_required"] = as_bool("cas_required", body["cas_required"])
    if "delete_version_after" in body:
        target["delete_version_after"] = go_duration(as_duration("delete_version_after", body["delete_version_after"]))


def metadata_view(rec):
    return {"cas_required": rec["cas_required"], "created_time": rec["created_time"],
            "current_version": rec["current_version"], "custom_metadata": rec["custom_metadata"],
            "delete_version_after": rec["delete_version_after"], "max_versions": rec["max_versions"],
            "oldest_version": rec["oldest_version"], "updated_time": rec["updated_time"],
            "versions": {str(n): {"created_time": v["created_time"], "deletion_time": v["deletion_time"],
                                  "destroyed": v["destroyed"]} for n, v in sorted(rec["versions"].items())}}


def kv2_config(op, mount, body):
    settings = kv2_settings(mount)
    if op == "read":
        return ok(dict(settings))
    allow(op, "update")
    apply_kv2_settings(settings, body)
    return NO_CONTENT


# ---------------------------------------------------------------- request routing

def operation(method, q):
    if method == "LIST" or (method == "GET" and q.get("list", [""])[0].lower() in ("1", "t", "true")):
        return "list"
    return {"GET": "read", "HEAD": "read", "POST": "update", "PUT": "update", "DELETE": "delete",
            "PATCH": "patch"}.get(method, "unknown")


def is_login(path):
    # AppRole and Kubernetes logins are Vault's unauthenticated paths.
    if not path.startswith("auth/"):
        return False
    mount, rest = match_mount(S["auth"], path[5:])
    return mount is not None and rest == "login" and S["auth"][mount]["type"] in ("approle", "kubernetes")


def logical(method, path, q, body, headers):
    """Every /v1 path but the raw handlers: seal check, then token, then route."""
    if not S["initialized"] or S["sealed"]:
        fail(503, "Vault is sealed")
    token = token_of(headers)
    info = None if is_login(path) else live_token(token)
    op = operation(method, q)
    if path == "sys" or path.startswith("sys/"):
        return sys_backend(op, path[4:], body)
    if path.startswith("auth/"):
        return auth_route(op, path, body, token, info)
    mount, rest = match_mount(S["mounts"], path)
    if mount is None:
        fail(404, 'no handler for route "%s". route entry not found.' % path)
    entry = S["mounts"][mount]
    if entry["type"] not in ("kv", "generic"):
        fail(501, 'stand-in: secrets engine type "%s" is not modelled' % entry["type"])
    if kv_version(entry) == "2":
        return kv2_backend(op, mount, rest, body, q, headers)
    return kv1_backend(op, mount, rest, body)


def auth_route(op, path, body, token, info):
    mount, rest = match_mount(S["auth"], path[5:])
    if mount is None:
        fail(404, 'no handler for route "%s". route entry not found.' % path)
    kind = S["auth"][mount]["type"]
    if kind == "token":
        return token_backend(op, rest, token, info)
    if kind == "approle":
        return approle_backend(op, mount, rest, body)
    if kind == "kubernetes":
        return k8s_backend(op, mount, rest, body)
    fail(501, 'stand-in: auth method type "%s" is not modelled' % kind)


def parse_body(method, raw):
    """JSON object bodies for writes; Vault ignores bodies on reads and deletes."""
    if method not in ("POST", "PUT", "PATCH") or not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        fail(400, "failed to parse JSON input: %s" % e)
    if not isinstance(body, dict):
        fail(400, "failed to parse JSON input: json: cannot unmarshal %s into Go value of type "
                  "map[string]interface {}" % type(body).__name__)
    return body


def dispatch(method, path, query, raw, headers):
    """(status, body) for one /v1 request; body None means no body."""
    if not path.startswith("/v1/"):
        fail(404)
    rel = unquote(path[4:])
    q = parse_qs(query, keep_blank_values=True)
    body = parse_body(method, raw)
    if rel in RAW_HANDLERS:
        return RAW_HANDLERS[rel](method, q, body)
    return logical(method, rel, q, body, headers)


def dump():
    d = copy.deepcopy({k: v for k, v in S.items() if k not in ("unseal_keys", "progress")})
    d["unseal_keys_hex"] = [k.hex() for k in S["unseal_keys"]]
    d["unseal_progress"] = len(S["progress"])
    return d


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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

    def serve(self, method):
        url = urlparse(self.path)
        raw = self.read_body()
        if url.path.startswith("/_standin/"):
            return self.control(method, url.path)
        with LOCK:
            try:
                status, body = dispatch(method, url.path, url.query, raw, self.headers)
            except Reply as r:
                status, body = r.status, r.body
            except Exception as e:  # a stand-in bug: say so, keep serving
                status, body = 500, {"errors": ["stand-in internal error: %r" % e]}
            LOG.append({"method": method, "path": url.path, "query": url.query, "status": status,
                        "time": time.time()})
            data = None if body is None else json.dumps(body).encode()
        self.respond(method, status, data)

    def respond(self, method, status, data):
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if data is None:
            # 204: no body, and (as HTTP wants) no Content-Length either.
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def control(self, method, path):
        """The test's side door: no auth, not logged."""
        with LOCK:
            if path == "/_standin/requests" and method == "GET":
                data = json.dumps(LOG)
            elif path == "/_standin/dump" and method == "GET":
                data = json.dumps(dump())
            elif path == "/_standin/reset-log" and method == "POST":
                LOG.clear()
                data = "{}"
            elif path == "/_standin/seal" and method == "POST":
                seal()
                data = "{}"
            elif path in ("/_standin/requests", "/_standin/dump", "/_standin/reset-log", "/_standin/seal"):
                return self.respond(method, 405, b'{"errors": ["method not allowed"]}')
            else:
                return self.respond(method, 404, b'{"errors": ["no such control endpoint"]}')
        self.respond(method, 200, data.encode())

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

    def do_LIST(self):
        self.serve("LIST")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--port", type=int, default=0)
    ARGS = p.parse_args()
    reset_store()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    server.serve_forever()
