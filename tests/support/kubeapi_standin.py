#!/usr/bin/env python3
"""STAND-IN for a Kubernetes API server (none can be installed here). It
models the documented behaviour nautes-install relies on and rejects what
the real API rejects:

* `Authorization: Bearer <token>` required (401 Status otherwise);
* discovery: /version (1.27), /api, /api/v1, /apis, /apis/<group>,
  /apis/<group>/<version> for the built-in kinds (BUILTIN: core v1 Namespace,
  Node, ConfigMap, Secret, Service, Pod, ServiceAccount; apps/v1; batch/v1
  Job; rbac; apiextensions CRDs; networking.k8s.io/v1 Ingress, IngressClass,
  NetworkPolicy; admissionregistration.k8s.io/v1 Mutating/Validating-
  WebhookConfiguration; policy/v1 PodDisruptionBudget; autoscaling/v2
  HorizontalPodAutoscaler; scheduling.k8s.io/v1 PriorityClass;
  coordination.k8s.io/v1 Lease; apiregistration.k8s.io/v1 APIService;
  storage.k8s.io/v1 StorageClass), each with its namespaced flag, 1.27's
  shortNames and categories, and the verbs the stand-in serves (not
  deletecollection), plus every CRD once it is Established (after
  --crd-delay seconds); before that its kinds are 404, as on a real server;
  deleting a CRD deletes all its custom objects and its kinds leave discovery.
  As on 1.25+/1.26+, policy/v1beta1 (PodSecurityPolicy) and autoscaling/
  v2beta1 and v2beta2 are not served: discovery does not list them and any
  request for them is 404. Not served although a real 1.27 serves them:
  autoscaling/v1 (the stand-in cannot convert between versions) and the
  built-in kinds not listed above (PersistentVolumeClaim, Endpoints, Event,
  ReplicaSet, CronJob, ...). Built-in objects are neither defaulted nor
  validated (Secrets aside, see below);
* a cluster starts with namespaces default, kube-system, kube-public and
  kube-node-lease (Active); deleting default, kube-system or kube-public is
  403 `namespaces "<name>" is forbidden: this namespace may not be deleted`
  (NamespaceLifecycle admission). What else a real cluster starts with is
  not there: the `kubernetes` Service, each namespace's `default`
  ServiceAccount and kube-root-ca.crt ConfigMap, the namespace label
  kubernetes.io/metadata.name, the system ClusterRoles (e.g.
  system:auth-delegator; bindings to them are stored all the same) and the
  system PriorityClasses;
* admission webhooks: Mutating/ValidatingWebhookConfigurations are stored
  and nothing else. A real API server calls every matching webhook on each
  write, and one with failurePolicy: Fail (cert-manager's, Tekton's, the
  External Secrets and Vault charts') rejects matching objects until its
  Service has a ready pod and its caBundle is filled in (cainjector): that
  is not modelled, nor are conversion webhooks of CRDs;
* Services of type NodePort/LoadBalancer get a nodePort for each port that
  names none (kept across updates, else a random free one in 30000-32767);
* Secrets: stringData is merged into data (base64, over data's entry of the
  same key) on create, update, merge patch and apply, and never stored or
  returned. As on a real server an apply's ownership stays on the
  stringData paths, so a key dropped from an applied stringData stays in
  data (kubernetes/kubernetes#108008);
* namespaced and cluster-scoped CRUD; namespaced objects need their
  namespace (404); body kind/name must match the URL (400);
* server-side apply: PATCH `application/apply-patch+yaml` with `fieldManager`
  (400 without); fields are owned per manager (leaf paths); applying a field
  another manager owns with a different value is 409 Conflict naming the
  fields and manager, unless `force=true` (ownership moves); fields a manager
  stops applying are removed; an applied empty map (`data: {}`) owns no
  entries, so other managers' entries in it stay; a no-op apply changes
  nothing (no new resourceVersion); merge patches too; other patch types 415;
* every change (clients' and the controller's) gets a new resourceVersion and
  is recorded as a watch event; generation moves on spec changes only; a
  write that changes nothing is no change; PUT with a stale resourceVersion
  is 409;
* lists and watches filter with `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`,
  `!k`) and `fieldSelector` (`metadata.name`, `metadata.namespace`; others 400);
* watch: GET on a collection with `watch=true|1` streams chunked JSON lines
  `{"type": ADDED|MODIFIED|DELETED, "object": ...}`; without
  `resourceVersion` (or "0") the current objects come first as ADDED, with
  one only the events after it; an object leaving/entering the label
  selector is DELETED/ADDED; the stream ends after `timeoutSeconds`
  (default 30) or when its kind's CRD is deleted;
* namespace deletion: DELETE sets deletionTimestamp and phase Terminating;
  after --ns-delete-delay seconds the contents and then the namespace are
  deleted; while Terminating, new objects in it are 403 Forbidden (updates
  are allowed) and deleting it again is 409;
* a controller marks Deployments/StatefulSets/DaemonSets rolled out and Jobs
  complete (after --ready-delay), CRDs Established, Namespaces Active; a
  Deployment that has not become available yet shows observedGeneration and
  Available=False/MinimumReplicasUnavailable, Progressing=True/
  ReplicaSetUpdated (zero counts are omitted, as the real API's omitempty
  fields are), written once per generation;
  External Secrets' cert-controller and the Vault agent injector become
  ready only once their webhook configuration exists (see
  awaits_webhook_configuration);
* HNC (hnc.x-k8s.io/v1alpha2), only while the CRD subnamespaceanchors.hnc.x-k8s.io
  is Established and Deployment hnc-system/hnc-controller-manager is
  available: a SubnamespaceAnchor C in namespace P creates namespace C
  (annotation hnc.x-k8s.io/subnamespace-of: P, tree depth labels) and gets
  status.status Ok, or Conflict when C exists and is not P's subnamespace;
  deleting the anchor deletes namespace C; its webhooks refuse (403) deleting
  an anchor whose subnamespace has anchors of its own unless C's
  HierarchyConfiguration `hierarchy` sets spec.allowCascadingDeletion, and
  refuse (422) a HierarchyConfiguration not named `hierarchy`;
* the service account token controller (kube-controller-manager, >= 1.24: it
  fills token Secrets clients create, it never creates them), about
  --token-delay seconds (default 0.1; up to one 50 ms tick more) after it
  last saw the Secret or its ServiceAccount change, deciding on the state it
  sees then. For a Secret of type kubernetes.io/service-account-token whose
  annotation kubernetes.io/service-account.name names a ServiceAccount in its
  namespace (and whose kubernetes.io/service-account.uid annotation, if set,
  is that ServiceAccount's uid) it writes, in one update (new
  resourceVersion, MODIFIED event): data.ca.crt = the cluster CA (the PEM of
  --ca-file; without it a fixed self-signed placeholder whose subject says
  STAND-IN and whose key was discarded) whenever it differs; data.namespace
  when empty; data.token when empty: a legacy JWT (header alg RS256 + kid,
  payload iss kubernetes/serviceaccount, sub
  system:serviceaccount:<ns>:<sa>, kubernetes.io/serviceaccount/{namespace,
  secret.name, service-account.name, service-account.uid}; the signature
  is random bytes, nothing can verify it); and both annotations. As on a
  real cluster a token a client wrote is kept (the controller only fills an
  empty one) while a different ca.crt is overwritten. The fields it changes
  become its own (manager kube-controller-manager, operation Update): a
  client's apply that leaves out data keeps them; one that sets them to
  other values is a 409 conflict unless forced. When the ServiceAccount is
  missing (including: created only after the Secret, as the controller
  saw the Secret first), is deleted later, or has another uid than the
  annotation, the controller deletes the Secret (DELETED event). Such a
  Secret without the name annotation is 422, and a Secret's type cannot
  change (422). RBAC (Role/ClusterRole/bindings) and ServiceAccounts are
  plain stored objects: the stand-in authenticates only --token and
  enforces no RBAC, so the minted tokens are not accepted as credentials;
* cert-manager's issuers/clusterissuers controllers (cert-manager.io, any
  served version), only while Deployment cert-manager/cert-manager is
  Available: about --issuer-delay seconds (default 0.1; up to one 50 ms tick
  more) after it last saw the issuer's spec/generation, its CA Secret or the
  Deployment's availability change, it writes status.conditions = [Ready]
  (reason, message, lastTransitionTime (kept while status stays),
  observedGeneration) through the status subresource as field manager
  cert-manager-issuers / cert-manager-clusterissuers (operation Update,
  subresource status): one MODIFIED event, no new generation, nothing when
  only timestamps would change. Only CA issuers are modelled: spec.ca.
  secretName names a Secret in the issuer's namespace (for a ClusterIssuer in
  the cluster resource namespace, cert-manager). Ready True/KeyPairVerified
  "Signing CA verified" when its data["tls.crt"] is base64 PEM with a
  CERTIFICATE block and data["tls.key"] one with a ...PRIVATE KEY block;
  else Ready False/ErrGetKeyPair, "Error getting keypair for CA issuer: "
  + `secrets "<name>" not found`, `no data for "tls.crt" in secret
  '<ns>/<name>'` or `error decoding certificate PEM block` (`private key`
  for tls.key), as cert-manager's CA Setup words them; ErrInvalidKeyPair
  "...: certificate is not a CA" when the certificate parses as X.509 DER
  and has no basicConstraints cA=TRUE. A body that is not DER at all is
  taken as a CA (there is no X.509 parser here; a real cert-manager would
  refuse it), keys are not parsed or matched to the certificate, and
  nothing is ever issued: Certificates, CertificateRequests, ACME, the
  webhook and cainjector are not modelled. Other issuer types get Ready
  False, reason StandInNotModelled. When cert-manager goes, statuses stay;
* Argo CD's application controller (argoproj.io Applications), in each
  namespace where StatefulSet argocd-application-controller is ready (it
  only sees its own namespace's Applications, AppProjects and repository
  Secrets): about --argocd-delay seconds (default 0.1; up to one 50 ms tick
  more) after it last saw the Application's spec or annotations, a
  repository Secret or AppProject there, or the StatefulSet's readiness
  change, it writes the status as field manager argocd-application-
  controller (operation Update; Applications have no status subresource, so
  each status write is also a new generation), one MODIFIED event, nothing
  when only timestamps would change. In order:
  - spec.project (empty: "default", which always exists) naming no
    AppProject there: sync.status Unknown, health.status Unknown, conditions
    [InvalidSpecError "Application referencing project <p> which does not
    exist"] (the rest of the status is left as it was);
  - a source (spec.source, or each of spec.sources) whose repoURL no Secret
    there labelled argocd.argoproj.io/secret-type=repository has as its
    base64 data.url (compared as Argo CD's NormalizeGitURL does: case, a
    .git suffix and git@host: vs ssh://git@host/ ignored; the stand-in also
    ignores a trailing slash): sync Unknown (with comparedTo), health Unknown,
    conditions [ComparisonError "rpc error: code = Unknown desc = repository
    not accessible: repository not found"], reconciledAt. There is no git
    here, so "registered" stands for "accessible": a real Argo CD also reads
    public repositories nobody registered, and it picks up a newly added
    repository Secret only at its next refresh (timeout.reconciliation,
    default 180 s, or a refresh annotation), not promptly as this one does;
    it may also report health Healthy rather than Unknown for an
    Application with no live resources;
  - otherwise sync Synced with sync.revision (sync.revisions for sources) a
    made-up commit, sha1 of "<normalised repoURL>@<targetRevision or HEAD>",
    and comparedTo; health Healthy; no conditions; reconciledAt; and
    operationState phase Succeeded (message "successfully synced (all tasks
    run)", syncResult.revision, startedAt/finishedAt), written anew only when
    the revision changes. TEST HOOK, not Argo CD's: annotation
    standin.nautes.io/health: <Status> (Degraded, Progressing, Missing, ...)
    makes health {status: <Status>, message: "stand-in: forced <Status>"}.
  Nothing is synced: no manifests are rendered or applied, no resources
  tracked (status.resources/summary absent), syncPolicy, sync windows,
  hooks, project source/destination permissions, clusters and repo-creds
  templates are ignored, and Argo CD's API server is not modelled;
* vcluster: once StatefulSet <ns>/<name> is ready and registered through
  /_standin/vcluster, Secret vc-<name> (config, certificate-authority,
  client-certificate, client-key) appears, and again if deleted;
* test controls (no auth): GET /_standin/requests, the ordered log of every
  API request; POST /_standin/reset-log clears it;
  POST /_standin/never-ready {"kind","name"} keeps one from becoming ready;
  POST /_standin/slow-ready {"kind","name","seconds"} makes it ready that long
  after its latest generation was first seen;
  POST /_standin/fail {"method","path_contains","status","count"} fails the
  next `count` matching requests with a Status (429 with Retry-After: 0),
  changing nothing;
  POST /_standin/vcluster {"namespace","name","kubeconfig"} registers the
  kubeconfig a vcluster's secret carries.

Run: kubeapi_standin.py --port-file F --token T [--crd-delay S] [--ready-delay S] [--ns-delete-delay S]
     [--token-delay S] [--issuer-delay S] [--argocd-delay S] [--ca-file PEM] [--port P]
"""
import argparse, base64, bisect, hashlib, json, os, random, threading, time
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
    ("networking.k8s.io", "v1"): {"ingresses": ("Ingress", True), "ingressclasses": ("IngressClass", False),
                                  "networkpolicies": ("NetworkPolicy", True)},
    ("admissionregistration.k8s.io", "v1"): {
        "mutatingwebhookconfigurations": ("MutatingWebhookConfiguration", False),
        "validatingwebhookconfigurations": ("ValidatingWebhookConfiguration", False)},
    # Kubernetes 1.25 stopped serving policy/v1beta1 (PodSecurityPolicy, the
    # old PodDisruptionBudget) and 1.26 autoscaling/v2beta1 and v2beta2: they
    # are deliberately absent, so a request for them is 404 as on 1.27.
    ("policy", "v1"): {"poddisruptionbudgets": ("PodDisruptionBudget", True)},
    ("autoscaling", "v2"): {"horizontalpodautoscalers": ("HorizontalPodAutoscaler", True)},
    ("scheduling.k8s.io", "v1"): {"priorityclasses": ("PriorityClass", False)},
    ("coordination.k8s.io", "v1"): {"leases": ("Lease", True)},
    ("apiregistration.k8s.io", "v1"): {"apiservices": ("APIService", False)},
    ("storage.k8s.io", "v1"): {"storageclasses": ("StorageClass", False)},
}
# Discovery extras of the built-in kinds, as a 1.27 server lists them: (group, plural) -> names.
SHORT_NAMES = {("", "namespaces"): ["ns"], ("", "nodes"): ["no"], ("", "configmaps"): ["cm"],
               ("", "services"): ["svc"], ("", "pods"): ["po"], ("", "serviceaccounts"): ["sa"],
               ("apps", "deployments"): ["deploy"], ("apps", "statefulsets"): ["sts"], ("apps", "daemonsets"): ["ds"],
               ("apiextensions.k8s.io", "customresourcedefinitions"): ["crd", "crds"],
               ("networking.k8s.io", "ingresses"): ["ing"], ("networking.k8s.io", "networkpolicies"): ["netpol"],
               ("policy", "poddisruptionbudgets"): ["pdb"], ("autoscaling", "horizontalpodautoscalers"): ["hpa"],
               ("scheduling.k8s.io", "priorityclasses"): ["pc"], ("storage.k8s.io", "storageclasses"): ["sc"]}
CATEGORIES = {("", "pods"): ["all"], ("", "services"): ["all"], ("apps", "deployments"): ["all"],
              ("apps", "statefulsets"): ["all"], ("apps", "daemonsets"): ["all"], ("batch", "jobs"): ["all"],
              ("autoscaling", "horizontalpodautoscalers"): ["all"],
              ("apiextensions.k8s.io", "customresourcedefinitions"): ["api-extensions"],
              ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): ["api-extensions"],
              ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): ["api-extensions"],
              ("apiregistration.k8s.io", "apiservices"): ["api-extensions"]}
# What the stand-in serves on every kind (no deletecollection: DELETE on a collection is not modelled).
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
# Namespaces a cluster starts with; the first three NamespaceLifecycle admission never lets go.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
IMMORTAL_NAMESPACES = {"default", "kube-system", "kube-public"}
LOCK = threading.RLock()
COND = threading.Condition(LOCK)  # watchers wait on it; record() wakes them
STORE = {}     # (group, version, resource, ns, name) -> object; stored objects are never mutated, only replaced
MANAGED = {}   # same key -> {manager: set(paths)}
TRACK = {}     # same key -> {"gen", "since", "wrote"}: controller bookkeeping, kept out of the objects
EVENTS = []    # (resourceVersion, "ADDED"|"MODIFIED"|"DELETED", key, deep copy of the object), in rv order
LOG = []
NEVER_READY = set()
SLOW = {}      # (kind, name) -> seconds to become ready
FAILS = []     # armed failures: {"method", "path_contains", "status", "count"}
VCLUSTERS = {}  # (namespace, name) -> kubeconfig text its secret carries
NS_DELETE_AT = {}  # Terminating namespace -> when its contents go
HNC_ORPHANS = []   # (parent, child) of deleted anchors whose subnamespace HNC still has to delete
TOKEN_SEEN = {}  # service account token Secret -> ((its rv, its ServiceAccount's rv or None), when first seen so)
UPDATE_MANAGERS = {"kube-controller-manager", "cert-manager-issuers", "cert-manager-clusterissuers",
                   "argocd-application-controller"}  # managers whose fields come from updates, not applies
STATUS_MANAGERS = {"cert-manager-issuers", "cert-manager-clusterissuers"}  # they write through the status subresource
SETTLED = {}  # object an issuer/Argo CD controller watches -> [its inputs as last seen, since when, acted on them]
VERSION = [0]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
HNC = "hnc.x-k8s.io"
CRD = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
SECRETS = ("", "v1", "secrets")
SA_TOKEN = "kubernetes.io/service-account-token"
SA_NAME, SA_UID = "kubernetes.io/service-account.name", "kubernetes.io/service-account.uid"
TOKEN_MANAGER = "kube-controller-manager"
CERT_MANAGER = "cert-manager.io"
CERT_MANAGER_DEPLOYMENT = ("apps", "v1", "deployments", "cert-manager", "cert-manager")
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"  # cert-manager's --cluster-resource-namespace default
ISSUER_MANAGERS = {"issuers": "cert-manager-issuers", "clusterissuers": "cert-manager-clusterissuers"}
KEYPAIR_ERROR = "Error getting keypair for CA issuer: "
ARGO = "argoproj.io"
ARGO_MANAGER = "argocd-application-controller"
ARGO_SECRET_TYPE = "argocd.argoproj.io/secret-type"
HEALTH_HOOK = "standin.nautes.io/health"  # test hook: the health Argo CD reports for an Application
# The cluster CA without --ca-file: a real, parseable self-signed certificate
# whose subject marks it as the stand-in's; its private key was thrown away.
PLACEHOLDER_CA = """-----BEGIN CERTIFICATE-----
MIIB4jCCAYmgAwIBAgIBATAKBggqhkjOPQQDAjBYMRswGQYDVQQKDBJrdWJlYXBp
X3N0YW5kaW4ucHkxOTA3BgNVBAMMMFNUQU5ELUlOIGNsdXN0ZXIgQ0EgLSBwbGFj
ZWhvbGRlciwga2V5IGRpc2NhcmRlZDAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEw
MTAwMDAwMFowWDEbMBkGA1UECgwSa3ViZWFwaV9zdGFuZGluLnB5MTkwNwYDVQQD
DDBTVEFORC1JTiBjbHVzdGVyIENBIC0gcGxhY2Vob2xkZXIsIGtleSBkaXNjYXJk
ZWQwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQfFYIUNmPrQr3yg4J97URh77M4
2WRGcEPNiYBfEg/oxCfXNlprU/uV3cnZ5Gp7MnLjfbE5Nu/VpQxE2106md5To0Iw
QDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQUDvDb
rtyor8aGGn8yYGHO5z1tg8IwCgYIKoZIzj0EAwIDRwAwRAIgSnokbWXRWcCtocMZ
5moe9kKIUr0Xoh0NBQKbQdbSnPgCICqoWvzjiyUNfWNj4snCnas2gYUO/+BHRHig
RozSzuKL
-----END CERTIFICATE-----
"""
ROOT_CA = [PLACEHOLDER_CA.encode()]  # --ca-file's PEM instead, when given
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}


def status(code, reason, message, details=None):
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    if details:
        body["details"] = details
    return code, body


def clone(obj):
    return json.loads(json.dumps(obj))


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ns_key(name):
    return ("", "v1", "namespaces", None, name)


def established(crd):
    conds = (crd or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds)


def terminating(ns):
    return bool(STORE.get(ns_key(ns), {}).get("metadata", {}).get("deletionTimestamp"))


def resources():
    """Every served group/version -> {plural: (kind, namespaced)}."""
    out = {k: dict(v) for k, v in BUILTIN.items()}
    for key, crd in STORE.items():
        if key[:3] != CRD or not established(crd):
            continue
        spec = crd.get("spec", {})
        for v in spec.get("versions", []):
            if v.get("served", True):
                out.setdefault((spec.get("group"), v["name"]), {})[spec["names"]["plural"]] = (
                    spec["names"]["kind"], spec.get("scope", "Namespaced") == "Namespaced")
    return out


def api_resource(g, v, plural, kind, namespaced):
    """One entry of an APIResourceList: shortNames and categories as the
    built-in kind's (or the CRD's spec.names) has them, none when empty."""
    out = {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": VERBS}
    short, cats = SHORT_NAMES.get((g, plural)), CATEGORIES.get((g, plural))
    if (g, v) not in BUILTIN:
        names = (STORE.get(CRD + (None, "%s.%s" % (plural, g))) or {}).get("spec", {}).get("names", {})
        out["singularName"] = names.get("singular") or kind.lower()
        short, cats = names.get("shortNames"), names.get("categories")
    if short:
        out["shortNames"] = list(short)
    if cats:
        out["categories"] = list(cats)
    return out


def api_group(g, versions):
    """An APIGroup as /apis and /apis/<group> show it; the first version is the preferred one."""
    vs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in versions]
    return {"name": g, "versions": vs, "preferredVersion": vs[0]}


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


def parse_selector(text, fields):
    """Selector terms as (key, op, value); op is "=", "!=", "exists" or "!exists".
    Raises ValueError with the real API's wording for what it would refuse."""
    terms = []
    for term in [t.strip() for t in text.split(",") if t.strip()]:
        if "(" in term:
            raise ValueError("set-based selectors are not supported by this stand-in: %s" % term)
        if "!=" in term:
            k, _, v = term.partition("!=")
            op = "!="
        elif "=" in term:
            k, _, v = term.partition("==") if "==" in term else term.partition("=")
            op = "="
        elif not fields:
            k, v, op = term.lstrip("!"), None, "!exists" if term.startswith("!") else "exists"
        else:
            raise ValueError("invalid field selector: %s" % term)
        k = k.strip()
        if fields and k not in ("metadata.name", "metadata.namespace"):
            raise ValueError("field label not supported: %s" % k)
        terms.append((k, op, v if v is None else v.strip()))
    return terms


def matches(obj, labels, fields):
    meta = obj.get("metadata", {})
    have = meta.get("labels", {})
    for k, op, v in labels:
        if (op == "=" and have.get(k) != v or op == "!=" and have.get(k) == v
                or op == "exists" and k not in have or op == "!exists" and k in have):
            return False
    for k, op, v in fields:
        # A cluster-scoped object's namespace is "" for field selectors.
        if (meta.get(k.split(".", 1)[1], "") == v) != (op == "="):
            return False
    return True


def next_rv():
    VERSION[0] += 1
    return str(VERSION[0])


def record(kind, key, obj):
    """Every change is a watch event, in resourceVersion order."""
    EVENTS.append((int(obj["metadata"]["resourceVersion"]), kind, key, clone(obj)))
    COND.notify_all()


def without_rv(obj):
    out = dict(obj, metadata=dict(obj.get("metadata", {})))
    out["metadata"].pop("resourceVersion", None)
    return out


def managed_fields(key):
    """metadata.managedFields: one entry per manager (no fieldsV1 detail)."""
    out = []
    for m in sorted(MANAGED.get(key, {})):
        entry = {"manager": m, "operation": "Update" if m in UPDATE_MANAGERS else "Apply", "fieldsType": "FieldsV1"}
        if m in STATUS_MANAGERS:
            entry["subresource"] = "status"
        out.append(entry)
    return out


def store(key, obj, old, ns):
    """Write a client's object as the API server does. An update that changes
    nothing is not written (the real storage skips it), so no new
    resourceVersion and no event; the old object comes back."""
    meta = obj.setdefault("metadata", {})
    meta["name"] = key[4]
    if ns is not None:
        meta["namespace"] = ns
    gen = 1
    if old is not None:
        for k in ("uid", "creationTimestamp"):
            if k in old.get("metadata", {}):
                meta.setdefault(k, old["metadata"][k])
        if "deletionTimestamp" in old.get("metadata", {}):
            # Once set it cannot be taken back.
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        if "status" in old and "status" not in obj:
            obj["status"] = old["status"]
        gen = old.get("metadata", {}).get("generation", 0)
        gen += old.get("spec") != obj.get("spec")
    meta["generation"] = max(gen, 1)
    meta["managedFields"] = managed_fields(key)
    if key[:3] == ns_key("")[:3]:
        obj["status"] = dict(obj.get("status") or {}, phase="Terminating" if meta.get("deletionTimestamp") else "Active")
    if old is not None and without_rv(obj) == without_rv(old):
        return old
    meta["resourceVersion"] = next_rv()
    meta.setdefault("uid", "uid-%s" % meta["resourceVersion"])
    meta.setdefault("creationTimestamp", now_iso())
    STORE[key] = obj
    if old is None or TRACK.get(key, {}).get("gen") != meta["generation"]:
        TRACK[key] = {"gen": meta["generation"], "since": time.time(), "wrote": None}
    record("ADDED" if old is None else "MODIFIED", key, obj)
    return obj


def write_status(key, new_status, manager=None, bump_generation=False):
    """A controller's status write: a new object (stored ones are shared with
    readers), a new resourceVersion and a MODIFIED event; a new generation
    only with bump_generation (a CRD without the status subresource). Writing
    the same status again is no change. With `manager` the status fields it
    writes become that manager's (managedFields)."""
    old = STORE[key]
    if old.get("status") == new_status:
        return
    obj = clone(old)
    obj["status"] = new_status
    if manager:
        MANAGED.setdefault(key, {})[manager] = {("status",) + p for p in leaf_paths(new_status)}
        obj["metadata"]["managedFields"] = managed_fields(key)
    if bump_generation:
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
    obj["metadata"]["resourceVersion"] = next_rv()
    STORE[key] = obj
    record("MODIFIED", key, obj)


def remove(key):
    """Delete one object for good. The DELETED event carries its final state
    at the deletion's resourceVersion, as a real watch does."""
    obj = clone(STORE.pop(key))
    MANAGED.pop(key, None)
    TRACK.pop(key, None)
    obj["metadata"]["resourceVersion"] = next_rv()
    record("DELETED", key, obj)
    if key[0] == HNC and key[2] == "subnamespaceanchors":
        HNC_ORPHANS.append((key[3], key[4]))
    return obj


def remove_crd(key):
    """A CRD takes its custom objects with it, in every version."""
    spec = STORE[key].get("spec", {})
    for k in [k for k in STORE if k[0] == spec.get("group") and k[2] == spec.get("names", {}).get("plural")]:
        remove(k)
    return remove(key)


def begin_ns_delete(name):
    """Namespaces are deleted in two steps: first Terminating (this), then,
    once their contents are gone, for good (purge_namespace)."""
    key = ns_key(name)
    obj = clone(STORE[key])
    obj["metadata"]["deletionTimestamp"] = now_iso()
    obj["status"] = dict(obj.get("status") or {}, phase="Terminating")
    obj["metadata"]["resourceVersion"] = next_rv()
    STORE[key] = obj
    record("MODIFIED", key, obj)
    NS_DELETE_AT[name] = time.time() + ARGS.ns_delete_delay
    return obj


def purge_namespace(name):
    NS_DELETE_AT.pop(name, None)
    for k in [k for k in STORE if k[3] == name]:
        remove(k)
    if ns_key(name) in STORE:
        remove(ns_key(name))


def hnc_active():
    """HNC acts (and its webhooks answer) only once its CRD is served and its manager runs."""
    crd = STORE.get(CRD + (None, "subnamespaceanchors.hnc.x-k8s.io"))
    manager = STORE.get(("apps", "v1", "deployments", "hnc-system", "hnc-controller-manager"))
    return established(crd) and (manager or {}).get("status", {}).get("availableReplicas", 0) >= 1


def subnamespace_of(ns_obj):
    return (ns_obj or {}).get("metadata", {}).get("annotations", {}).get(HNC + "/subnamespace-of")


def cascading_allowed(ns):
    for k, o in STORE.items():
        if k[0] == HNC and k[2] == "hierarchyconfigurations" and k[3] == ns and k[4] == "hierarchy":
            return o.get("spec", {}).get("allowCascadingDeletion") is True
    return False


def admit(method, creating, g, resource, ns, name):
    """What admission (built-in plugins and HNC's webhooks) refuses; None if allowed."""
    if method == "DELETE" and g == "" and resource == "namespaces" and name in IMMORTAL_NAMESPACES:
        # NamespaceLifecycle's immortal namespaces.
        return status(403, "Forbidden", 'namespaces "%s" is forbidden: this namespace may not be deleted' % name,
                      {"name": name, "kind": "namespaces"})
    if creating and ns is not None and terminating(ns):
        return status(403, "Forbidden", '%s "%s" is forbidden: unable to create new content in namespace %s because it is being terminated'
                      % (resource, name, ns), {"name": name, "kind": resource})
    if g != HNC or not hnc_active():
        return None
    if resource == "hierarchyconfigurations" and method != "DELETE" and name != "hierarchy":
        return status(422, "Invalid", 'admission webhook "hierarchyconfigurations.hnc.x-k8s.io" denied the request: '
                      'HierarchyConfiguration "%s" is invalid: metadata.name: the only permitted name is "hierarchy"' % name)
    if resource == "subnamespaceanchors" and method == "DELETE":
        child = STORE.get(ns_key(name))
        has_children = any(k[0] == HNC and k[2] == "subnamespaceanchors" and k[3] == name for k in STORE)
        if subnamespace_of(child) == ns and has_children and not cascading_allowed(name):
            return status(403, "Forbidden", 'admission webhook "subnamespaceanchors.hnc.x-k8s.io" denied the request: '
                          'cannot delete anchor "%s": subnamespace "%s" has child subnamespaces; set allowCascadingDeletion' % (name, name))
    return None


def allocate_node_ports(key, obj):
    """A NodePort/LoadBalancer Service's ports without a nodePort get one, as
    the API server's allocator does: the one the stored Service has for that
    port (an update keeps it), else a free one in 30000-32767."""
    spec = obj.get("spec") or {}
    if spec.get("type") not in ("NodePort", "LoadBalancer"):
        return
    old = {(p.get("name"), p.get("port")): p.get("nodePort")
           for p in ((STORE.get(key) or {}).get("spec") or {}).get("ports") or []}
    used = {p.get("nodePort") for k, o in STORE.items() if k[:3] == ("", "v1", "services") and k != key
            for p in (o.get("spec") or {}).get("ports") or []}
    for p in spec.get("ports") or []:
        if p.get("nodePort"):
            continue
        port = old.get((p.get("name"), p.get("port")))
        while not port or port in used:
            port = random.randint(30000, 32767)
        p["nodePort"] = port
        used.add(port)


def convert(key, obj):
    """What decoding a v1 Secret does before anything else sees it: each
    stringData entry goes into data base64-encoded (over a data entry of the
    same key) and stringData itself is never stored or returned. Mutates
    `obj`; a status (400) if a stringData value is no string, else None.
    Services get their node ports here (allocate_node_ports)."""
    if key[:3] == ("", "v1", "services") and isinstance(obj, dict):
        allocate_node_ports(key, obj)
    if key[:3] != SECRETS or not isinstance(obj, dict) or "stringData" not in obj:
        return None
    string_data = obj.pop("stringData") or {}
    if not isinstance(string_data, dict) or not all(isinstance(v, str) for v in string_data.values()):
        return status(400, "BadRequest", "Secret in version \"v1\" cannot be handled as a Secret: "
                      "json: cannot unmarshal into Go struct field Secret.stringData of type string")
    if string_data:
        obj["data"] = dict(obj.get("data") or {})
        for k, v in string_data.items():
            obj["data"][k] = base64.b64encode(v.encode()).decode()
    return None


def validate(key, obj, old):
    """What the API's validation refuses in a Secret (422); None if valid."""
    if key[:3] != SECRETS:
        return None
    name = key[4]
    kind, new_type = "Secret", obj.get("type") or "Opaque"
    if old is not None and (old.get("type") or "Opaque") != new_type:
        return status(422, "Invalid", '%s "%s" is invalid: type: Invalid value: "%s": field is immutable' % (kind, name, new_type),
                      {"name": name, "kind": kind, "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: \"%s\": field is immutable" % new_type, "field": "type"}]})
    if new_type == SA_TOKEN and not (obj.get("metadata", {}).get("annotations") or {}).get(SA_NAME):
        field = "metadata.annotations[%s]" % SA_NAME
        return status(422, "Invalid", '%s "%s" is invalid: %s: Required value' % (kind, name, field),
                      {"name": name, "kind": kind, "causes": [{"reason": "FieldValueRequired", "message": "Required value", "field": field}]})
    return None


def take_failure(method, path):
    """The first armed failure this request matches, used up by one."""
    for rule in FAILS:
        if rule["count"] > 0 and rule.get("method", method).upper() == method and rule.get("path_contains", "") in path:
            rule["count"] -= 1
            FAILS[:] = [r for r in FAILS if r["count"] > 0]
            code = int(rule.get("status", 500))
            messages = {429: "Too many requests, please try again later.",
                        503: "the server is currently unable to handle the request"}
            code, body = status(code, REASONS.get(code, "Unknown"), messages.get(code, "Internal error occurred: injected by the stand-in"))
            headers = {}
            if code == 429:
                headers["Retry-After"] = "0"
                body["details"] = {"retryAfterSeconds": 0}
            return code, body, headers
    return None


class Watch:
    """A watch request that passed routing. Built under LOCK; the handler then
    streams it without the lock: events() takes it (through COND) only to
    read new events, and COND.wait releases it while idle."""

    def __init__(self, g, v, resource, ns, labels, fields, since, timeout):
        self.scope = (g, v, resource)
        self.ns, self.labels, self.fields = ns, labels, fields
        self.deadline = time.time() + timeout
        self.first = []
        if since is None:
            # No resourceVersion (or "0"): the current state first, as ADDED.
            self.first = [{"type": "ADDED", "object": o} for k, o in sorted(STORE.items(), key=lambda kv: str(kv[0]))
                          if self.in_scope(k) and matches(o, labels, fields)]
            self.pos = len(EVENTS)
        else:
            self.pos = bisect.bisect_right(EVENTS, since, key=lambda e: e[0])

    def in_scope(self, key):
        return key[:3] == self.scope and (self.ns is None or key[3] == self.ns)

    def previous(self, i, key):
        for rv, kind, k, obj in reversed(EVENTS[:i]):
            if k == key:
                return None if kind == "DELETED" else obj
        return None

    def translate(self, i):
        """The event as this watcher sees it: an object that starts or stops
        matching the label selector is ADDED or DELETED for it."""
        rv, kind, key, obj = EVENTS[i]
        if not self.in_scope(key):
            return None
        now = matches(obj, self.labels, self.fields)
        if kind != "MODIFIED" or not self.labels:
            return {"type": kind, "object": obj} if now else None
        was = self.previous(i, key)
        was = was is not None and matches(was, self.labels, self.fields)
        if now or was:
            return {"type": "MODIFIED" if now and was else "ADDED" if now else "DELETED", "object": obj}
        return None

    def events(self):
        yield from self.first
        while True:
            with COND:
                while self.pos >= len(EVENTS):
                    left = self.deadline - time.time()
                    if left <= 0:
                        break
                    COND.wait(left)
                batch = [e for e in (self.translate(i) for i in range(self.pos, len(EVENTS))) if e]
                self.pos = len(EVENTS)
                # A watch on a custom kind ends when its CRD goes.
                gone = self.scope[2] not in resources().get(self.scope[:2], {})
            yield from batch
            if gone or time.time() >= self.deadline:
                return


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, data, headers=None):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/_standin/"):
            return self.control(method, url.path, raw)
        headers = {}
        with LOCK:
            injected = take_failure(method, url.path)
            if injected:
                code, body, headers = injected
            else:
                code, body = self.route(method, url.path, q, raw)
            LOG.append({"method": method, "path": url.path, "query": url.query,
                        "content_type": self.headers.get("Content-Type", ""), "status": code, "time": time.time()})
            # Serialised under the lock: no writer can change what is being sent.
            data = None if isinstance(body, Watch) else json.dumps(body).encode()
        if data is None:
            return self.stream(body)
        self.send(code, data, headers)

    def control(self, method, path, raw):
        """The test's side door: no auth, not logged."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self.send(400, b'{"error": "body must be JSON"}')
        with LOCK:
            if path == "/_standin/requests":
                return self.send(200, json.dumps(LOG).encode())
            if method != "POST":
                return self.send(405, b"{}")
            try:
                found = self.control_post(path, body)
            except (ValueError, TypeError, AttributeError) as e:
                return self.send(400, json.dumps({"error": str(e)}).encode())
        self.send(200 if found else 404, b"{}")

    def control_post(self, path, body):
        if path == "/_standin/reset-log":
            LOG.clear()
        elif path == "/_standin/never-ready":
            NEVER_READY.add((body["kind"], body["name"]))
        elif path == "/_standin/slow-ready":
            SLOW[(body["kind"], body["name"])] = float(body["seconds"])
        elif path == "/_standin/fail":
            rule = {"path_contains": str(body.get("path_contains", "")), "status": int(body.get("status", 500)),
                    "count": int(body.get("count", 1))}
            if body.get("method"):  # absent: any method
                rule["method"] = body["method"].upper()
            FAILS.append(rule)
        elif path == "/_standin/vcluster":
            VCLUSTERS[(body["namespace"], body["name"])] = str(body["kubeconfig"])
        else:
            return False
        return True

    def stream(self, watch):
        """A watch response: each event one JSON line in its own chunk, then the zero chunk."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in watch.events():
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            self.close_connection = True

    def route(self, method, path, q, raw):
        if self.headers.get("Authorization") != "Bearer " + ARGS.token:
            return status(401, "Unauthorized", "Unauthorized")
        if path == "/version":
            return 200, {"major": "1", "minor": "27", "gitVersion": "v1.27.4-standin", "platform": "linux/amd64"}
        served = resources()
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups = {}
        for (g, v) in served:
            if g:
                groups.setdefault(g, []).append(v)
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1",
                         "groups": [api_group(g, vs) for g, vs in sorted(groups.items())]}
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["apis"] and len(parts) == 2:
            if parts[1] not in groups:
                return status(404, "NotFound", "the server could not find the requested resource")
            return 200, dict(api_group(parts[1], groups[parts[1]]), kind="APIGroup", apiVersion="v1")
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
                         "resources": [api_resource(g, v, r, k, ns) for r, (k, ns) in sorted(kinds.items())]}
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
        if ns is not None and ns_key(ns) not in STORE:
            return status(404, "NotFound", 'namespaces "%s" not found' % ns)
        key = (g, v, resource, ns, name)
        if method == "GET" and name is None:
            return self.collection(g, v, resource, ns, kind, api_version, q)
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
            denied = admit(method, True, g, resource, ns, name) or convert(key, body) or validate(key, body, None)
            return denied or (201, store(key, body, None, ns))
        if not name or method not in ("PUT", "PATCH", "DELETE"):
            return status(405, "MethodNotAllowed", "%s is not allowed here" % method)
        if method in ("PUT", "DELETE") and key not in STORE:
            return status(404, "NotFound", '%s "%s" not found' % (resource, name))
        # Of the writes to a missing object only an apply creates it.
        creating = (method == "PATCH" and subresource is None and key not in STORE
                    and self.headers.get("Content-Type", "") == "application/apply-patch+yaml")
        denied = admit(method, creating, g, resource, ns, name)
        if denied:
            return denied
        if method == "PUT":
            rv = (body or {}).get("metadata", {}).get("resourceVersion")
            if rv and rv != STORE[key]["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again")
            return convert(key, body) or validate(key, body, STORE[key]) or (200, store(key, body, STORE[key], ns))
        if method == "PATCH":
            return self.patch(key, body, subresource, kind, api_version, q, ns)
        return self.delete(key)

    def collection(self, g, v, resource, ns, kind, api_version, q):
        """GET on a collection: a list, or a watch when asked for one."""
        try:
            labels = parse_selector((q.get("labelSelector") or [""])[0], False)
            fields = parse_selector((q.get("fieldSelector") or [""])[0], True)
        except ValueError as e:
            return status(400, "BadRequest", str(e))
        if (q.get("watch") or [""])[0] in ("true", "1"):
            rv = (q.get("resourceVersion") or [""])[0]
            try:
                since = None if rv in ("", "0") else int(rv)
                timeout = int((q.get("timeoutSeconds") or ["30"])[0])
            except ValueError:
                return status(400, "BadRequest", "resourceVersion and timeoutSeconds must be integers")
            return 200, Watch(g, v, resource, ns, labels, fields, since, timeout)
        items = [o for k, o in sorted(STORE.items(), key=lambda kv: str(kv[0]))
                 if k[:3] == (g, v, resource) and (ns is None or k[3] == ns) and matches(o, labels, fields)]
        return 200, {"apiVersion": api_version, "kind": kind + "List", "metadata": {"resourceVersion": str(VERSION[0])}, "items": items}

    def patch(self, key, body, subresource, kind, api_version, q, ns):
        resource, name = key[2], key[4]
        ctype = self.headers.get("Content-Type", "")
        if body is None:
            return status(400, "BadRequest", "empty patch")
        if subresource == "status":
            # Status is written by controllers/kubelets through its own subresource.
            if key not in STORE:
                return status(404, "NotFound", '%s "%s" not found' % (resource, name))
            if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                return status(415, "UnsupportedMediaType", "unsupported patch type %r" % ctype)
            obj = clone(STORE[key])
            merge(obj.setdefault("status", {}), body.get("status", {}))
            return 200, store(key, obj, STORE[key], ns)
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
            merged = merge(clone(STORE[key]), body)
            return (convert(key, merged) or validate(key, merged, STORE[key])
                    or (200, store(key, merged, STORE[key], ns)))
        return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")

    def delete(self, key):
        name = key[4]
        if key[:3] == ns_key("")[:3]:
            if terminating(name):
                return status(409, "Conflict", 'Operation cannot be fulfilled on namespaces "%s": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.' % name)
            return 200, begin_ns_delete(name)
        if key[:3] == CRD:
            return 200, remove_crd(key)
        return 200, remove(key)

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
            return status(409, "Conflict", msg, {"causes": causes})
        new = clone(live or {})
        for p in managers.get(manager, set()) - set(mine):
            if not any(p in paths for m, paths in managers.items() if m != manager):
                del_path(new, p)
        for p, v in mine.items():
            if v == {} and isinstance(get_path(new, p), dict):
                continue  # an empty map owns nothing: other managers' entries stay
            set_path(new, p, v)
        new["apiVersion"], new["kind"] = body["apiVersion"], body["kind"]
        new.setdefault("metadata", {})["name"] = key[4]
        # Ownership stays on the stringData paths the manager applied, which
        # the stored Secret never has (kubernetes/kubernetes#108008).
        denied = convert(key, new) or validate(key, new, live)
        if denied:
            return denied
        for m, paths in managers.items():
            if m != manager:
                paths.difference_update(mine)
        managers[manager] = set(mine)
        if live is not None and new == live:
            return 200, live
        return (200 if live else 201), store(key, new, live, ns)


def rolled_out_status(obj, gen):
    kind = obj["kind"]
    replicas = obj.get("spec", {}).get("replicas", 1)
    st = {k: v for k, v in obj.get("status", {}).items() if k != "unavailableReplicas"}
    st["observedGeneration"] = gen
    if kind in ("Deployment", "StatefulSet"):
        st.update({"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas})
    if kind == "Deployment":
        st["conditions"] = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                             "message": "Deployment has minimum availability."},
                            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
    elif kind == "StatefulSet":
        st["currentReplicas"] = replicas  # StatefulSets have no conditions
    elif kind == "DaemonSet":
        st.update({"desiredNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1})
    elif kind == "Job":
        st.update({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    return st


def unavailable_status(obj, gen):
    """What the deployment controller shows while no pod is ready. Counts that
    are 0 (readyReplicas, availableReplicas) are absent: the real API omits them."""
    replicas = obj.get("spec", {}).get("replicas", 1)
    now = now_iso()
    st = {"observedGeneration": gen, "conditions": [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
         "message": "Deployment does not have minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
         "message": 'ReplicaSet "%s-standin" is progressing.' % obj["metadata"]["name"], "lastUpdateTime": now, "lastTransitionTime": now}]}
    if replicas:
        st.update({"replicas": replicas, "updatedReplicas": replicas, "unavailableReplicas": replicas})
    return st


def awaits_webhook_configuration(obj):
    """Controllers whose readiness probe fails until a webhook configuration
    they patch exists, read from their pod template as the real binaries read
    their flags: External Secrets 0.5.7's cert-controller (`certcontroller`;
    /readyz fails until it has injected its CA into a ValidatingWebhook-
    Configuration labelled external-secrets.io/component=webhook) and the
    Vault agent injector, vault-k8s 1.0.0 (AGENT_INJECT_TLS_AUTO names the
    MutatingWebhookConfiguration; its certificate, and so its HTTPS
    /health/ready, comes only once that exists)."""
    for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        if (c.get("args") or [None])[0] == "certcontroller":
            return not any(k[:3] == ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")
                           and (o["metadata"].get("labels") or {}).get("external-secrets.io/component") == "webhook"
                           for k, o in STORE.items())
        for e in c.get("env") or []:
            if e.get("name") == "AGENT_INJECT_TLS_AUTO":
                return ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", None, e.get("value")) not in STORE
    return False


def reconcile_workload(key, obj, now):
    track = TRACK.get(key)
    if track is None or track["wrote"] == "ready":
        return
    ident = (obj["kind"], obj["metadata"].get("name"))
    if (ident not in NEVER_READY and now - track["since"] >= SLOW.get(ident, ARGS.ready_delay)
            and not awaits_webhook_configuration(obj)):
        write_status(key, rolled_out_status(obj, track["gen"]))
        track["wrote"] = "ready"
    elif obj["kind"] == "Deployment" and track["wrote"] is None and not obj.get("status", {}).get("availableReplicas"):
        # Once per generation, so a waiting Deployment does not churn resourceVersions.
        write_status(key, unavailable_status(obj, track["gen"]))
        track["wrote"] = "waiting"


def reconcile_crd(key, obj, now):
    track = TRACK.get(key)
    if obj.get("status", {}).get("conditions") or track is None or now - track["since"] < ARGS.crd_delay:
        return
    write_status(key, {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}],
                       "acceptedNames": obj.get("spec", {}).get("names", {})})


def create_subnamespace(parent, child):
    """HNC's subnamespace: marked as the parent's, with the tree labels of every ancestor."""
    labels = {"%s.tree.%s/depth" % (child, HNC): "0", "%s.tree.%s/depth" % (parent, HNC): "1"}
    suffix = ".tree.%s/depth" % HNC
    for k, v in STORE[ns_key(parent)].get("metadata", {}).get("labels", {}).items():
        if k.endswith(suffix) and k != parent + suffix and v.isdigit():
            labels[k] = str(int(v) + 1)
    store(ns_key(child), {"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": child, "labels": labels, "annotations": {HNC + "/subnamespace-of": parent}}},
          None, None)


def reconcile_hnc():
    if not hnc_active():
        return
    orphans = HNC_ORPHANS[:]
    del HNC_ORPHANS[:]
    for parent, child in orphans:
        # The anchor is gone (and not back): its subnamespace goes too.
        still = any(k[0] == HNC and k[2] == "subnamespaceanchors" and k[3:] == (parent, child) for k in STORE)
        if not still and subnamespace_of(STORE.get(ns_key(child))) == parent and not terminating(child):
            begin_ns_delete(child)
    for key in [k for k in STORE if k[0] == HNC and k[2] == "subnamespaceanchors"]:
        parent, child = key[3], key[4]
        if terminating(parent):
            continue
        if ns_key(child) not in STORE:
            create_subnamespace(parent, child)
        state = "Ok" if subnamespace_of(STORE[ns_key(child)]) == parent else "Conflict"
        if STORE[key].get("status", {}).get("status") != state:
            write_status(key, dict(STORE[key].get("status", {}), status=state))


def reconcile_vclusters():
    placeholder = base64.b64encode(b"-----BEGIN STAND-IN-----\nbm90IGEgcmVhbCBrZXk=\n-----END STAND-IN-----\n").decode()
    for (ns, name), kubeconfig in VCLUSTERS.items():
        sts = STORE.get(("apps", "v1", "statefulsets", ns, name))
        if sts is None or terminating(ns):
            continue
        if sts.get("status", {}).get("readyReplicas", 0) < max(sts.get("spec", {}).get("replicas", 1), 1):
            continue
        key = ("", "v1", "secrets", ns, "vc-" + name)
        if key not in STORE:
            store(key, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "vc-" + name},
                        "data": {"config": base64.b64encode(kubeconfig.encode()).decode(),
                                 "certificate-authority": placeholder, "client-certificate": placeholder,
                                 "client-key": placeholder}}, None, ns)


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data if isinstance(data, bytes) else data.encode()).rstrip(b"=").decode()


def root_ca():
    """The cluster CA (PEM bytes), read once at start-up."""
    return ROOT_CA[0]


def legacy_token(sa, secret_name):
    """A legacy service account token as the controller signs it (go-jose
    sorts the claims); the signature is random: nothing verifies it here."""
    ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
    kid = b64url(hashlib.sha256(b"kubeapi_standin.py service account signing key").digest())
    header = {"alg": "RS256", "kid": kid}
    claims = {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:%s:%s" % (ns, name),
              "kubernetes.io/serviceaccount/namespace": ns,
              "kubernetes.io/serviceaccount/secret.name": secret_name,
              "kubernetes.io/serviceaccount/service-account.name": name,
              "kubernetes.io/serviceaccount/service-account.uid": sa["metadata"]["uid"]}
    compact = lambda o: b64url(json.dumps(o, sort_keys=True, separators=(",", ":")))
    return "%s.%s.%s" % (compact(header), compact(claims), b64url(os.urandom(256)))


def token_service_account(secret):
    """The ServiceAccount a token Secret belongs to, None when there is none
    (or it has another uid than the Secret's uid annotation)."""
    ann = secret.get("metadata", {}).get("annotations") or {}
    sa = STORE.get(("", "v1", "serviceaccounts", secret["metadata"]["namespace"], ann.get(SA_NAME)))
    if sa is None or ann.get(SA_UID) and ann[SA_UID] != sa["metadata"].get("uid"):
        return None
    return sa


def populate_token(key, secret, sa):
    """generateTokenIfNeeded: one update, only when the CA differs or the
    namespace or token is empty; the fields it changes become the controller's."""
    obj = clone(secret)
    data = obj["data"] = dict(obj.get("data") or {})
    ca, wrote = b64(root_ca()), False
    if data.get("ca.crt") != ca:
        data["ca.crt"], wrote = ca, True
    if not data.get("namespace"):
        data["namespace"], wrote = b64(key[3]), True
    if not data.get("token"):
        data["token"], wrote = b64(legacy_token(sa, key[4])), True
    if not wrote:
        return
    ann = obj["metadata"]["annotations"] = dict(obj["metadata"].get("annotations") or {})
    ann[SA_NAME], ann[SA_UID] = sa["metadata"]["name"], sa["metadata"]["uid"]
    changed = {p for p, v in owned(obj).items() if get_path(secret, p) != v}
    managers = MANAGED.setdefault(key, {})
    for m in list(managers):
        managers[m].difference_update(changed)
        if not managers[m] and m != TOKEN_MANAGER:
            managers.pop(m)
    managers.setdefault(TOKEN_MANAGER, set()).update(changed)
    store(key, obj, secret, key[3])


def reconcile_sa_tokens(now):
    """The service account token controller. It acts on what it saw once
    that has stood for --token-delay: a token Secret without its
    ServiceAccount is deleted, one with it filled."""
    seen_now = set()
    for key, secret in list(STORE.items()):
        if key[:3] != SECRETS or secret.get("type") != SA_TOKEN or key not in STORE:
            continue
        seen_now.add(key)
        sa = token_service_account(secret)
        seen = (secret["metadata"]["resourceVersion"], sa and sa["metadata"]["resourceVersion"])
        if key not in TOKEN_SEEN or TOKEN_SEEN[key][0] != seen:
            TOKEN_SEEN[key] = (seen, now)
        elif now - TOKEN_SEEN[key][1] >= ARGS.token_delay:
            if sa is None:
                remove(key)
            else:
                populate_token(key, secret, sa)
    for key in [k for k in TOKEN_SEEN if k not in seen_now]:
        TOKEN_SEEN.pop(key)


def settled(key, seen, now, delay):
    """The issuer and Argo CD controllers act once on inputs (`seen`) that
    have stood unchanged for `delay`; a change starts the wait again."""
    entry = SETTLED.get(key)
    if entry is None or entry[0] != seen:
        SETTLED[key] = [seen, now, False]
        return False
    if entry[2] or now - entry[1] < delay:
        return False
    entry[2] = True
    return True


def fingerprint(*parts):
    return json.dumps(parts, sort_keys=True)


def untimed(obj):
    """A status without its timestamps: what decides whether it changed."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items()
                if k not in ("lastTransitionTime", "reconciledAt", "startedAt", "finishedAt")}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def keep_times(conditions, old):
    """lastTransitionTime moves only when a condition's status (cert-manager)
    or message (Argo CD) changes."""
    for c in conditions:
        for o in old or []:
            if o.get("type") == c["type"] and o.get("status") == c.get("status") and o.get("message") == c.get("message"):
                c["lastTransitionTime"] = o.get("lastTransitionTime", c["lastTransitionTime"])
    return conditions


def available(deployment):
    conds = (deployment or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conds)


def sts_ready(sts):
    if sts is None:
        return False
    return sts.get("status", {}).get("readyReplicas", 0) >= max(sts.get("spec", {}).get("replicas", 1), 1)


def pem_blocks(data, label):
    """The DER bodies of the PEM blocks of type `label` (encoding/pem's
    Decode, leniently: any block whose type ends with `label`)."""
    text = data.decode("ascii", "replace")
    out = []
    while True:
        start = text.find("-----BEGIN ")
        if start < 0:
            return out
        head_end = text.find("-----", start + 11)
        if head_end < 0:
            return out
        kind = text[start + 11:head_end]
        end = text.find("-----END %s-----" % kind, head_end)
        if end < 0:
            return out
        if kind.endswith(label):
            try:
                out.append(base64.b64decode("".join(text[head_end + 5:end].split()), validate=True))
            except ValueError:
                pass  # a body that is not base64 is no block
        text = text[end + 14 + len(kind):]


def der_items(der, pos, end):
    """The DER TLVs from pos to end: (tag, value start, value end)."""
    while pos < end:
        if pos + 2 > end:
            raise ValueError("truncated")
        tag, n = der[pos], der[pos + 1]
        pos += 2
        if n & 0x80:
            k = n & 0x7F
            if not 0 < k <= 4 or pos + k > end:
                raise ValueError("bad length")
            n, pos = int.from_bytes(der[pos:pos + k], "big"), pos + k
        if pos + n > end:
            raise ValueError("truncated")
        yield tag, pos, pos + n
        pos += n


def certificate_is_ca(der):
    """crypto/x509's IsCA: a basicConstraints extension with cA TRUE. None
    when `der` does not parse as a certificate at all."""
    try:
        (tag, s, e), = der_items(der, 0, len(der))
        parts = list(der_items(der, s, e))
        if tag != 0x30 or len(parts) != 3 or parts[0][0] != 0x30:
            return None
        for tag, s, e in der_items(der, parts[0][1], parts[0][2]):
            if tag != 0xA3:  # [3] extensions
                continue
            (_, s, e), = der_items(der, s, e)
            for _, xs, xe in der_items(der, s, e):
                ext = list(der_items(der, xs, xe))
                if der[ext[0][1]:ext[0][2]] == b"\x55\x1d\x13":  # 2.5.29.19 basicConstraints
                    (_, bs, be), = der_items(der, ext[-1][1], ext[-1][2])
                    inner = list(der_items(der, bs, be))
                    return bool(inner) and inner[0][0] == 0x01 and der[inner[0][1]:inner[0][2]] != b"\x00"
        return False
    except (ValueError, IndexError):
        return None


def ca_keypair_problem(ns, name):
    """cert-manager's CA issuer Setup on Secret ns/name: None when the CA
    verifies, else (reason, the error as the controller words it)."""
    secret = STORE.get(SECRETS + (ns, name))
    if secret is None:
        return "ErrGetKeyPair", 'secrets "%s" not found' % name
    data = secret.get("data") or {}
    for field, label, what in (("tls.crt", "CERTIFICATE", "certificate"), ("tls.key", "PRIVATE KEY", "private key")):
        if field not in data:
            return "ErrGetKeyPair", "no data for \"%s\" in secret '%s/%s'" % (field, ns, name)
        try:
            raw = base64.b64decode(data[field] or "", validate=True)
        except ValueError:
            raw = b""
        if not pem_blocks(raw, label):
            return "ErrGetKeyPair", "error decoding %s PEM block" % what
    # Only a body that parses as a certificate can be told not to be a CA.
    if certificate_is_ca(pem_blocks(base64.b64decode(data["tls.crt"]), "CERTIFICATE")[0]) is False:
        return "ErrInvalidKeyPair", "certificate is not a CA"
    return None


def issuer_status(key, issuer):
    """The issuers/clusterissuers controller's status.conditions for an issuer."""
    spec = issuer.get("spec") or {}
    secret_name = (spec.get("ca") or {}).get("secretName")
    if secret_name:
        problem = ca_keypair_problem(key[3] or CLUSTER_RESOURCE_NAMESPACE, secret_name)
        status, reason, message = ("True", "KeyPairVerified", "Signing CA verified") if problem is None else (
            "False", problem[0], KEYPAIR_ERROR + problem[1])
    else:
        status, reason, message = "False", "StandInNotModelled", "stand-in: only CA issuers (spec.ca.secretName) are modelled"
    old = (issuer.get("status") or {}).get("conditions")
    cond = {"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": now_iso(), "observedGeneration": issuer["metadata"].get("generation", 1)}
    for o in old or []:
        if o.get("type") == "Ready" and o.get("status") == status:
            cond["lastTransitionTime"] = o.get("lastTransitionTime", cond["lastTransitionTime"])
    return dict(issuer.get("status") or {}, conditions=[cond])


def reconcile_issuers(now):
    """cert-manager's issuers and clusterissuers controllers, while Deployment
    cert-manager/cert-manager is Available."""
    running = available(STORE.get(CERT_MANAGER_DEPLOYMENT))
    for key, issuer in list(STORE.items()):
        if key[0] != CERT_MANAGER or key[2] not in ISSUER_MANAGERS:
            continue
        secret_name = ((issuer.get("spec") or {}).get("ca") or {}).get("secretName")
        secret = STORE.get(SECRETS + (key[3] or CLUSTER_RESOURCE_NAMESPACE, secret_name)) if secret_name else None
        seen = fingerprint(issuer.get("spec"), issuer["metadata"].get("generation"), running,
                           secret and secret["metadata"]["resourceVersion"])
        if settled(key, seen, now, ARGS.issuer_delay) and running:
            new = issuer_status(key, issuer)
            if untimed(new) != untimed(issuer.get("status")):
                write_status(key, new, ISSUER_MANAGERS[key[2]])


def normalize_git_url(url):
    """Argo CD's git.NormalizeGitURL (lowercase, scp-like SSH URLs as ssh://,
    no .git suffix); the stand-in also ignores a trailing slash."""
    url = (url or "").strip().lower()
    if "@" in url and not url.startswith("ssh://") and "://" not in url:
        url = "ssh://" + url.replace(":", "/", 1)
    url = url.rstrip("/")
    if url.endswith(".git"):
        url = url[:-4]
    url = url.rstrip("/")
    return url[len("ssh://"):] if url.startswith("ssh://") else url


def repository_secrets(ns):
    return [(k, o) for k, o in sorted(STORE.items(), key=lambda kv: str(kv[0]))
            if k[:4] == SECRETS + (ns,) and (o["metadata"].get("labels") or {}).get(ARGO_SECRET_TYPE) == "repository"]


def registered_urls(ns):
    urls = set()
    for _, secret in repository_secrets(ns):
        try:
            urls.add(normalize_git_url(base64.b64decode((secret.get("data") or {}).get("url") or "").decode()))
        except (ValueError, UnicodeDecodeError):
            pass
    return urls


def app_projects(ns):
    return [(k, o) for k, o in sorted(STORE.items(), key=lambda kv: str(kv[0]))
            if k[0] == ARGO and k[2] == "appprojects" and k[3] == ns]


def fake_revision(source):
    """The commit a source "resolves" to: 40 hex digits from its repoURL and targetRevision."""
    text = "%s@%s" % (normalize_git_url(source.get("repoURL")), source.get("targetRevision") or "HEAD")
    return hashlib.sha1(text.encode()).hexdigest()


def application_status(app):
    """What Argo CD's application controller writes into an Application's status."""
    old = app.get("status") or {}
    st = clone(old)
    spec = app.get("spec") or {}
    ns, now = app["metadata"]["namespace"], now_iso()
    project = spec.get("project") or "default"
    multi = bool(spec.get("sources"))
    sources = spec["sources"] if multi else [spec.get("source") or {}]
    compared = {"destination": spec.get("destination") or {}}
    compared["sources" if multi else "source"] = spec["sources"] if multi else spec.get("source") or {}

    def failed(kind, message):
        st["sync"] = dict(st.get("sync") or {}, status="Unknown")
        st["health"] = {"status": "Unknown"}
        st["conditions"] = keep_times([{"type": kind, "message": message, "lastTransitionTime": now}],
                                      old.get("conditions"))
        return st

    # refreshAppConditions first: a missing project is an InvalidSpecError.
    if project != "default" and not any(k[4] == project for k, _ in app_projects(ns)):
        return failed("InvalidSpecError", "Application referencing project %s which does not exist" % project)
    st["reconciledAt"] = now
    registered = registered_urls(ns)
    if any(normalize_git_url(s.get("repoURL")) not in registered for s in sources):
        st["sync"] = {"status": "Unknown", "comparedTo": compared}
        return failed("ComparisonError", "rpc error: code = Unknown desc = repository not accessible: repository not found")
    revisions = [fake_revision(s) for s in sources]
    sync = {"status": "Synced", "comparedTo": compared}
    sync.update({"revisions": revisions} if multi else {"revision": revisions[0]})
    st["sync"] = sync
    forced = (app["metadata"].get("annotations") or {}).get(HEALTH_HOOK)
    st["health"] = {"status": forced, "message": "stand-in: forced %s" % forced} if forced else {"status": "Healthy"}
    st.pop("conditions", None)
    op = st.get("operationState") or {}
    done = {"revisions": revisions} if multi else {"revision": revisions[0]}
    if op.get("phase") != "Succeeded" or op.get("syncResult", {}).get("revisions" if multi else "revision") != done.get(
            "revisions" if multi else "revision"):
        result = dict(done, **({"sources": spec["sources"]} if multi else {"source": spec.get("source") or {}}))
        st["operationState"] = {"phase": "Succeeded", "message": "successfully synced (all tasks run)",
                                "operation": {"sync": dict(done), "initiatedBy": {"automated": True}},
                                "syncResult": result, "startedAt": now, "finishedAt": now}
    return st


def reconcile_applications(now):
    """Argo CD's application controller, in each namespace where StatefulSet
    argocd-application-controller is ready, for the Applications there."""
    for key, app in list(STORE.items()):
        if key[0] != ARGO or key[2] != "applications":
            continue
        ns = key[3]
        running = sts_ready(STORE.get(("apps", "v1", "statefulsets", ns, "argocd-application-controller")))
        seen = fingerprint(app.get("spec"), app["metadata"].get("annotations"), running,
                           [(k[4], o["metadata"]["resourceVersion"]) for k, o in repository_secrets(ns)],
                           [(k[4], o["metadata"]["resourceVersion"]) for k, o in app_projects(ns)])
        if settled(key, seen, now, ARGS.argocd_delay) and running:
            new = application_status(app)
            if untimed(new) != untimed(app.get("status")):
                # No status subresource on Applications: a status write is a new generation.
                write_status(key, new, ARGO_MANAGER, bump_generation=True)


def controller():
    """What controllers on a real cluster would do, after a delay. All its
    writes go through write_status/store/remove, so each is a new
    resourceVersion and a watch event."""
    while True:
        time.sleep(0.05)
        now = time.time()
        with LOCK:
            for key, obj in list(STORE.items()):
                if key[:3] == CRD:
                    reconcile_crd(key, obj, now)
                elif obj.get("kind") in WORKLOADS:
                    reconcile_workload(key, obj, now)
            reconcile_hnc()
            reconcile_vclusters()
            reconcile_sa_tokens(now)
            reconcile_issuers(now)
            reconcile_applications(now)
            for key in [k for k in SETTLED if k not in STORE]:
                SETTLED.pop(key)
            for name, at in list(NS_DELETE_AT.items()):
                if now >= at:
                    purge_namespace(name)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--crd-delay", type=float, default=0.3)
    p.add_argument("--ready-delay", type=float, default=0.2)
    p.add_argument("--ns-delete-delay", type=float, default=0.2)
    p.add_argument("--token-delay", type=float, default=0.1)
    p.add_argument("--issuer-delay", type=float, default=0.1)
    p.add_argument("--argocd-delay", type=float, default=0.1)
    # The cluster CA the token controller puts in ca.crt (PEM); default: PLACEHOLDER_CA.
    p.add_argument("--ca-file")
    # A fixed port: a vcluster stand-in must answer at the NodePort it is exposed on.
    p.add_argument("--port", type=int, default=0)
    ARGS = p.parse_args()
    if ARGS.ca_file:
        with open(ARGS.ca_file, "rb") as f:
            ROOT_CA[0] = f.read()
    with LOCK:
        for name in SYSTEM_NAMESPACES:
            store(ns_key(name), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, None, None)
    threading.Thread(target=controller, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    server.serve_forever()
