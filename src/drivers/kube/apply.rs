//! The apply engine: one set of objects (a component's manifests) made true
//! on a cluster with server-side apply. It writes only what differs, prunes
//! what the set no longer renders, and deletes a set in reverse.
//!
//! The order is Helm's `--wait` and `kubectl apply` + `rollout status`:
//! send everything, then wait. Waiting between kinds deadlocks real
//! releases whose controllers become ready only once a webhook
//! configuration of the same release exists (External Secrets'
//! cert-controller, the Vault agent injector). The rule:
//!
//! 1. CustomResourceDefinitions, then wait until they are Established:
//!    nothing is sent of a kind the cluster does not serve yet.
//! 2. Namespaces: everything namespaced needs its namespace.
//! 3. Every other object, webhook configurations and APIServices included,
//!    built-in kinds before custom resources, without waiting.
//! 4. Except what the set's *own* webhooks must admit (a rule matching its
//!    group and resource for create or update, failurePolicy not Ignore,
//!    clientConfig.service a Service of this set), or of a kind only an
//!    APIService of this set serves: those are sent after everything sent
//!    so far is ready, so their webhook or API has a backend to answer.
//!    Webhooks of other sets are the step order's business (a set that
//!    needs another's webhook depends on that set's step, which ends ready);
//!    webhooks of nobody's set are not ours to wait for.
//! 5. Wait until every object with a readiness rule (readiness.rs) is ready.
//!
//! A failure in a stage stops the apply there, with every problem of that
//! stage. Deletion runs the kinds in reverse (see [`Phase`]).
//!
//! Fields others own are not applied: `status` and the empty `caBundle`
//! placeholders controllers fill in (see `drop_fields_others_own`). Fields
//! only on the live side (server defaults, status, what controllers add)
//! never count as a difference.
//!
//! Every object we apply carries two labels (managed-by, set) and the hash
//! of its manifest. One LIST per kind then tells us the live state of the
//! whole set: an object whose live form already holds every field of its
//! manifest (hash included, so a removed field shows as a change) needs no
//! write; a labelled object the set no longer renders is pruned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::objects::{first_difference, ObjectRef, Phase};
use super::readiness::{evaluate, is_waited, Readiness};
use super::{with_retries, KubeClient, KubeError, Served};
use crate::util::hex;
use crate::wait::{Poll, Wait};

/// The field manager our applies are recorded under.
pub const FIELD_MANAGER: &str = "nautes-install";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const SET_LABEL: &str = "install.nautes.io/set";
pub const HASH_ANNOTATION: &str = "install.nautes.io/manifest-sha256";

pub struct ApplyOptions<'a> {
    /// Names the set in labels: letters, digits, `-`, `_`, `.`; at most 63.
    pub set: String,
    /// Namespace for namespaced objects that name none.
    pub default_namespace: Option<String>,
    /// Take over fields another field manager owns instead of failing.
    pub force_conflicts: bool,
    /// For each readiness wait and each deletion.
    pub timeout: Duration,
    /// What the set held after its last successful apply (from the state
    /// file): objects of kinds no longer rendered at all are found through it.
    pub previous: Vec<ObjectRef>,
    pub concurrency: usize,
    pub progress: &'a (dyn Fn(String) + Sync),
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Every object of the set, in apply order.
    pub objects: Vec<ObjectRef>,
    /// Objects written (created or changed).
    pub written: usize,
    /// Objects that already matched.
    pub unchanged: usize,
    pub pruned: Vec<ObjectRef>,
}

/// A label value made of the set name: what labels allow.
pub fn set_label_value(set: &str) -> String {
    let cleaned: String = set
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= 63 {
        return trimmed.to_string();
    }
    // Long names keep a readable prefix and a hash suffix, so they stay unique.
    let digest = hex(&Sha256::digest(set.as_bytes()))[..12].to_string();
    format!(
        "{}-{digest}",
        trimmed[..50].trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// The label HNC marks its propagated copies with (the namespace of the
/// source). A copy keeps the source's other labels (HNC 1.0's `canonical`),
/// ours included, but it is HNC's: listed as the set's, a RoleBinding in a
/// tenant root would be pruned from every subnamespace on every run and put
/// back by HNC.
const HNC_INHERITED_FROM: &str = "hnc.x-k8s.io/inherited-from";

fn selector(set: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={FIELD_MANAGER},{SET_LABEL}={},!{HNC_INHERITED_FROM}",
        set_label_value(set)
    )
}

/// One object to apply, with its addressing resolved.
#[derive(Clone)]
struct Prepared {
    r: ObjectRef,
    manifest: Value,
}

/// Add our labels and the manifest hash; settle the namespace.
fn prepare(mut manifest: Value, set: &str, default_namespace: Option<&str>) -> Result<Prepared, String> {
    let mut r = ObjectRef::of(&manifest)?;
    if r.namespace.is_none() && Phase::of(&r) != Phase::Namespaces {
        // Whether the kind is namespaced is only known from discovery; the
        // namespace is dropped again for cluster-scoped kinds when applied.
        r.namespace = default_namespace.map(str::to_string);
    }
    drop_fields_others_own(&mut manifest);
    let hash = hex(&Sha256::digest(serde_json::to_vec(&manifest).unwrap_or_default()));
    let meta = manifest
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{r}: metadata is not a map"))?;
    // Charts often render an empty `labels:`/`annotations:`, which YAML reads
    // as null; the API server takes null as empty, and so do we.
    for key in ["labels", "annotations"] {
        if meta.get(key).is_some_and(Value::is_null) {
            meta.remove(key);
        }
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    let labels = labels
        .as_object_mut()
        .ok_or_else(|| format!("{r}: metadata.labels is not a map"))?;
    labels.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    labels.insert(SET_LABEL.into(), set_label_value(set).into());
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    annotations
        .as_object_mut()
        .ok_or_else(|| format!("{r}: metadata.annotations is not a map"))?
        .insert(HASH_ANNOTATION.into(), hash.into());
    Ok(Prepared { r, manifest })
}

/// Leave out what the API server or a controller owns, so it is neither
/// applied nor compared: `status` (the server ignores it on the main
/// resource; controller-gen's CRD files carry an empty one that never
/// matches the live one) and an empty `caBundle` in webhook client
/// configurations, CRD conversion webhooks and APIServices (a placeholder
/// the release's controller fills in: as another field manager, so
/// applying our "" would conflict with it, or with force wipe its CA). A
/// caBundle a manifest sets is applied: then it is the manifest's.
fn drop_fields_others_own(manifest: &mut Value) {
    let Some(object) = manifest.as_object_mut() else {
        return;
    };
    object.remove("status");
    let drop_empty = |config: &mut Value| {
        if let Some(config) = config.as_object_mut() {
            if config.get("caBundle").and_then(Value::as_str) == Some("") {
                config.remove("caBundle");
            }
        }
    };
    if let Some(hooks) = object.get_mut("webhooks").and_then(Value::as_array_mut) {
        for hook in hooks {
            drop_empty(&mut hook["clientConfig"]);
        }
    }
    if let Some(spec) = object.get_mut("spec").filter(|s| s.is_object()) {
        if let Some(conversion) = spec.pointer_mut("/conversion/webhook/clientConfig") {
            drop_empty(conversion);
        }
        // APIService: spec.caBundle.
        drop_empty(spec);
    }
}

/// Look up how to address a kind, with a message that says what is missing.
async fn served_or_explain(client: &KubeClient, r: &ObjectRef) -> Result<Served, String> {
    match client.served(&r.api_version, &r.kind).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(format!(
            "{r}: the cluster does not serve kind {} in {} (is its CustomResourceDefinition installed and established?)",
            r.kind, r.api_version
        )),
        Err(e) => Err(format!("{r}: discovery failed: {e}")),
    }
}

/// Apply `objects` as one set, in the stages the module doc describes.
/// Fails with every problem found in the first stage that has any; later
/// stages are not attempted then.
pub async fn apply_set(
    client: &KubeClient,
    objects: Vec<Value>,
    opts: &ApplyOptions<'_>,
) -> Result<ApplyReport, String> {
    let mut by_phase: BTreeMap<Phase, Vec<Prepared>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for manifest in objects {
        let p = prepare(manifest, &opts.set, opts.default_namespace.as_deref())?;
        if !seen.insert(p.r.clone()) {
            return Err(format!("{} is rendered twice in set {}", p.r, opts.set));
        }
        by_phase.entry(Phase::of(&p.r)).or_default().push(p);
    }
    let mut take = |phase| by_phase.remove(&phase).unwrap_or_default();
    let definitions = take(Phase::Definitions);
    let namespaces = take(Phase::Namespaces);
    let mut builtin = take(Phase::Workloads);
    builtin.extend(take(Phase::Webhooks));
    let custom = take(Phase::CustomResources);
    let gates = Gates::of(builtin.iter());

    let mut run = Run {
        client,
        opts,
        listing: Listing::default(),
        report: ApplyReport::default(),
        applied: Vec::new(),
        waited: BTreeSet::new(),
    };
    // Custom resources need their kind served: definitions are waited for here.
    let stage = Stage::Definitions;
    let resolved = resolved_or_fail(stage, resolve(client, definitions, |_| false).await)?;
    let any_definitions = !resolved.is_empty();
    run.apply(stage, resolved).await?;
    run.wait(stage).await?;
    if any_definitions {
        client.forget_discovery().await;
    }

    let stage = Stage::Namespaces;
    let resolved = resolved_or_fail(stage, resolve(client, namespaces, |_| false).await)?;
    run.apply(stage, resolved).await?;

    // Everything else is sent without waiting, webhook configurations with
    // the rest: the controllers behind them may need them to become ready.
    // Only what the set's own webhooks must admit waits for their backends.
    let mut gated = Vec::new();
    let mut deferred = Vec::new();
    for (stage, objects) in [(Stage::Objects, builtin), (Stage::CustomResources, custom)] {
        let (resolved, unserved) = resolve(client, objects, |r| gates.serves(r)).await;
        let resolved = fail_if_any(stage, (resolved, unserved.problems))?;
        deferred.extend(unserved.deferred);
        let (g, now): (Vec<_>, Vec<_>) = resolved.into_iter().partition(|(p, s)| gates.admits(p, s));
        gated.extend(g);
        run.apply(stage, now).await?;
    }
    if !gated.is_empty() || !deferred.is_empty() {
        run.wait(Stage::Backends).await?;
        let stage = Stage::Admitted;
        if !deferred.is_empty() {
            // The set's API services answer now; let discovery see their kinds.
            client.forget_discovery().await;
            let (served, unserved) = resolve(client, deferred, |_| false).await;
            gated.extend(fail_if_any(stage, (served, unserved.problems))?);
        }
        run.apply(stage, gated).await?;
    }
    run.wait(Stage::Ready).await?;

    let current: BTreeSet<ObjectRef> = run.report.objects.iter().cloned().collect();
    run.report.pruned = prune(client, opts, &mut run.listing, &current).await?;
    Ok(run.report)
}

/// The stages of an apply, for progress and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Definitions,
    Namespaces,
    Objects,
    CustomResources,
    Backends,
    Admitted,
    Ready,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Definitions => "custom resource definitions",
            Stage::Namespaces => "namespaces",
            Stage::Objects => "built-in objects, webhooks and API services",
            Stage::CustomResources => "custom resources",
            Stage::Backends => "objects of the set before what its own webhooks and API services admit or serve",
            Stage::Admitted => "objects the set's webhooks admit or API services serve",
            Stage::Ready => "objects of the set",
        }
    }
}

/// What the set's own admission webhooks and API services stand in front
/// of. Only those whose backend Service is in the set count: another set's
/// webhook is that set's step's to wait for (steps order the sets), and one
/// outside any set is not ours to wait for.
#[derive(Default)]
struct Gates {
    /// Rules of webhooks that refuse what they cannot be asked about
    /// (failurePolicy Fail, the v1 default).
    rules: Vec<Rule>,
    /// group/version the set's APIServices serve.
    api_services: BTreeSet<String>,
}

struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    operations: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

impl Gates {
    fn of<'a>(objects: impl Iterator<Item = &'a Prepared> + Clone) -> Gates {
        let services: BTreeSet<(Option<String>, String)> = objects
            .clone()
            .filter(|p| p.r.api_version == "v1" && p.r.kind == "Service")
            .map(|p| (p.r.namespace.clone(), p.r.name.clone()))
            .collect();
        let ours = |service: &Value| {
            service["name"].as_str().is_some_and(|name| {
                services.contains(&(service["namespace"].as_str().map(str::to_string), name.to_string()))
            })
        };
        let mut gates = Gates::default();
        for p in objects {
            match (p.r.group(), p.r.kind.as_str()) {
                ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => {
                    for hook in p.manifest["webhooks"].as_array().into_iter().flatten() {
                        if hook["failurePolicy"].as_str() == Some("Ignore") || !ours(&hook["clientConfig"]["service"]) {
                            continue;
                        }
                        for rule in hook["rules"].as_array().into_iter().flatten() {
                            gates.rules.push(Rule {
                                groups: strings(&rule["apiGroups"]),
                                resources: strings(&rule["resources"]),
                                operations: strings(&rule["operations"]),
                            });
                        }
                    }
                }
                ("apiregistration.k8s.io", "APIService") if ours(&p.manifest["spec"]["service"]) => {
                    let spec = &p.manifest["spec"];
                    if let (Some(g), Some(v)) = (spec["group"].as_str(), spec["version"].as_str()) {
                        gates.api_services.insert(if g.is_empty() {
                            v.to_string()
                        } else {
                            format!("{g}/{v}")
                        });
                    }
                }
                _ => {}
            }
        }
        gates
    }

    /// Whether one of the set's webhooks must admit creating or updating
    /// this object. Selectors are not evaluated: a webhook that might admit
    /// it is waited for.
    fn admits(&self, p: &Prepared, served: &Served) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        let group = p.r.group();
        // The API server never calls webhooks about webhook configurations.
        if group == "admissionregistration.k8s.io" {
            return false;
        }
        let plural = served.resource.plural.as_str();
        self.rules.iter().any(|rule| {
            any(&rule.groups, group)
                && rule.resources.iter().any(|r| r == "*" || r == "*/*" || r == plural)
                && (any(&rule.operations, "CREATE") || any(&rule.operations, "UPDATE"))
        })
    }

    /// Whether the kind is one the set's own API services will serve.
    fn serves(&self, r: &ObjectRef) -> bool {
        self.api_services.contains(&r.api_version)
    }
}

/// Objects whose kind is not served (yet).
#[derive(Default)]
struct Unserved {
    /// Served only once an API service of the set answers: sent after it.
    deferred: Vec<Prepared>,
    problems: Vec<String>,
}

/// How to address each object: the namespace settled by discovery. Objects
/// whose kind is not served are problems, unless `later` says they will be.
async fn resolve(
    client: &KubeClient,
    prepared: Vec<Prepared>,
    later: impl Fn(&ObjectRef) -> bool,
) -> (Vec<(Prepared, Served)>, Unserved) {
    let mut resolved = Vec::new();
    let mut unserved = Unserved::default();
    for p in prepared {
        let served = match served_or_explain(client, &p.r).await {
            Ok(served) => served,
            Err(_) if later(&p.r) => {
                unserved.deferred.push(p);
                continue;
            }
            Err(e) => {
                unserved.problems.push(e);
                continue;
            }
        };
        match settle(p, served) {
            Ok(x) => resolved.push(x),
            Err(e) => unserved.problems.push(e),
        }
    }
    (resolved, unserved)
}

/// The object's namespace as its kind has it: dropped for cluster-scoped
/// kinds, required for namespaced ones.
fn settle(mut p: Prepared, served: Served) -> Result<(Prepared, Served), String> {
    if !served.namespaced {
        p.r.namespace = None;
        if let Some(meta) = p.manifest["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
    } else if p.r.namespace.is_none() {
        return Err(format!("{}: namespaced kind but no namespace given", p.r));
    }
    Ok((p, served))
}

/// How a live object stands against its prepared manifest: what decides
/// whether apply writes it, and what drift reports.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Comparison {
    Missing,
    /// The path of the first field the live object does not hold.
    Differs(String),
    Holds,
}

fn compare(live: Option<&Value>, p: &Prepared) -> Comparison {
    match live {
        None => Comparison::Missing,
        Some(current) => match first_difference(current, &p.manifest) {
            Some(field) => Comparison::Differs(field),
            None => Comparison::Holds,
        },
    }
}

/// What differs between a set's live objects and what [`apply_set`] would
/// make of `objects`, read with the same LISTs (one per kind, by the set's
/// label) and the same comparison; nothing is written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetDrift {
    /// Rendered objects the cluster does not have (their kind may not be served).
    pub missing: Vec<ObjectRef>,
    /// Objects whose live form lacks a field of the manifest, with its path.
    pub changed: Vec<(ObjectRef, String)>,
    /// Objects of the set the manifests no longer render: apply would prune them.
    pub extra: Vec<ObjectRef>,
}

impl SetDrift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.extra.is_empty()
    }
}

/// Compare `objects`, prepared as [`apply_set`] prepares them, with the live
/// set; `previous` is what the set held after its last apply, so kinds it
/// no longer renders are still looked at for leftovers.
pub async fn diff_set(
    client: &KubeClient,
    objects: Vec<Value>,
    set: &str,
    default_namespace: Option<&str>,
    previous: &[ObjectRef],
    shared: Option<&LiveCache>,
) -> Result<SetDrift, String> {
    let mut drift = SetDrift::default();
    let mut resolved = Vec::new();
    let mut seen = BTreeSet::new();
    for manifest in objects {
        let p = prepare(manifest, set, default_namespace)?;
        if !seen.insert(p.r.clone()) {
            return Err(format!("{} is rendered twice in set {set}", p.r));
        }
        match client.served(&p.r.api_version, &p.r.kind).await {
            Ok(Some(served)) => resolved.push(settle(p, served)?),
            // Its definition is missing too (and reported as such, if it is ours).
            Ok(None) => drift.missing.push(p.r),
            Err(e) => return Err(format!("{}: discovery failed: {e}", p.r)),
        }
    }
    let mut kinds: Vec<Served> = resolved.iter().map(|(_, s)| s.clone()).collect();
    let current: BTreeSet<ObjectRef> = resolved.iter().map(|(p, _)| p.r.clone()).collect();
    for r in previous {
        if let Ok(Some(s)) = client.served(&r.api_version, &r.kind).await {
            kinds.push(s);
        }
    }
    let mut listing = Listing::default();
    match shared {
        Some(cache) => listing.include_from(cache, client, kinds.iter(), set).await?,
        None => listing.include(client, kinds.iter(), set).await?,
    }
    for (p, _) in &resolved {
        match compare(listing.live.get(&p.r), p) {
            Comparison::Missing => drift.missing.push(p.r.clone()),
            Comparison::Differs(field) => drift.changed.push((p.r.clone(), field)),
            Comparison::Holds => {}
        }
    }
    drift.extra = listing.live.keys().filter(|r| !current.contains(r)).cloned().collect();
    Ok(drift)
}

/// One apply of a set: what it has sent so far and what it has waited for.
struct Run<'a, 'o> {
    client: &'a KubeClient,
    opts: &'a ApplyOptions<'o>,
    listing: Listing,
    report: ApplyReport,
    /// Every object applied, with the object the API returned (or the live one).
    applied: Vec<(Prepared, Served, Value)>,
    /// Objects already found ready.
    waited: BTreeSet<ObjectRef>,
}

impl Run<'_, '_> {
    /// Send what differs from the live objects, all at once (bounded).
    async fn apply(&mut self, stage: Stage, resolved: Vec<(Prepared, Served)>) -> Result<(), String> {
        if resolved.is_empty() {
            return Ok(());
        }
        let (client, opts) = (self.client, self.opts);
        self.listing
            .include(client, resolved.iter().map(|(_, s)| s), &opts.set)
            .await?;
        (opts.progress)(format!("applying {} {}", resolved.len(), stage.label()));
        let order: Vec<ObjectRef> = resolved.iter().map(|(p, _)| p.r.clone()).collect();
        // Owned items: the futures must not borrow from the stream's items.
        let live = &self.listing.live;
        let force = opts.force_conflicts;
        let results: Vec<Result<(Prepared, Served, bool, Value), String>> = stream::iter(resolved)
            .map(|(p, served)| async move {
                match compare(live.get(&p.r), &p) {
                    Comparison::Holds => {
                        let current = live.get(&p.r).cloned().unwrap_or(Value::Null);
                        return Ok((p, served, false, current));
                    }
                    Comparison::Differs(field) => tracing::debug!("{}: {field} differs from the live object", p.r),
                    Comparison::Missing => {}
                }
                let written = server_side_apply(client, &served, &p, force).await?;
                Ok((p, served, true, written))
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let mut problems = Vec::new();
        let mut done = Vec::new();
        for r in results {
            match r {
                Ok((p, served, wrote, object)) => {
                    if wrote {
                        self.report.written += 1;
                    } else {
                        self.report.unchanged += 1;
                    }
                    done.push((p, served, object));
                }
                Err(e) => problems.push(e),
            }
        }
        fail_if_any(stage, (Vec::<()>::new(), problems))?;
        self.report.objects.extend(order);
        self.applied.extend(done);
        Ok(())
    }

    /// Wait until everything applied so far that has a readiness rule is ready.
    async fn wait(&mut self, stage: Stage) -> Result<(), String> {
        // Owned items: the futures must not borrow from the stream's items.
        let waited: Vec<(ObjectRef, Served, Value)> = self
            .applied
            .iter()
            .filter(|(p, _, _)| !self.waited.contains(&p.r) && is_waited(&p.r.kind, &p.manifest))
            .map(|(p, served, known)| (p.r.clone(), served.clone(), known.clone()))
            .collect();
        if waited.is_empty() {
            return Ok(());
        }
        let (client, opts) = (self.client, self.opts);
        (opts.progress)(format!("waiting for {} {} to be ready", waited.len(), stage.label()));
        let deadline = Instant::now() + opts.timeout;
        let timeout = opts.timeout;
        let results: Vec<Result<ObjectRef, String>> = stream::iter(waited)
            .map(|(r, served, known)| async move {
                wait_ready(client, &served, &r, Some(known), deadline, timeout).await?;
                Ok(r)
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let (ready, problems): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        self.waited.extend(ready.into_iter().filter_map(Result::ok));
        fail_if_any(
            stage,
            (Vec::<()>::new(), problems.into_iter().filter_map(Result::err).collect()),
        )?;
        Ok(())
    }
}

fn resolved_or_fail(
    stage: Stage,
    (resolved, unserved): (Vec<(Prepared, Served)>, Unserved),
) -> Result<Vec<(Prepared, Served)>, String> {
    // Nothing is deferred for stages whose `later` says no.
    fail_if_any(stage, (resolved, unserved.problems))
}

/// The items, unless there are problems: then all of them, sorted.
fn fail_if_any<T>(stage: Stage, (items, mut problems): (Vec<T>, Vec<String>)) -> Result<Vec<T>, String> {
    if problems.is_empty() {
        return Ok(items);
    }
    problems.sort();
    Err(format!("{} failed:\n  - {}", stage.label(), problems.join("\n  - ")))
}

/// The set's live objects, read with one LIST per kind; a kind listed once
/// in a run is not listed again (pruning reuses what the phases read).
#[derive(Default)]
struct Listing {
    listed: BTreeSet<String>,
    live: BTreeMap<ObjectRef, Value>,
}

impl Listing {
    async fn include<'a>(
        &mut self,
        client: &KubeClient,
        kinds: impl Iterator<Item = &'a Served>,
        set: &str,
    ) -> Result<(), String> {
        let params = ListParams::default().labels(&selector(set));
        for served in kinds {
            let key = format!("{}/{}", served.resource.api_version, served.resource.plural);
            if !self.listed.insert(key) {
                continue;
            }
            let api = client.api(served, None);
            let list = with_retries(|| api.list(&params))
                .await
                .map_err(|e| format!("listing {} of set {set}: {e}", served.resource.plural))?;
            for item in list.items {
                let r = ObjectRef {
                    api_version: served.resource.api_version.clone(),
                    kind: served.resource.kind.clone(),
                    namespace: item.metadata.namespace.clone(),
                    name: item.metadata.name.clone().unwrap_or_default(),
                };
                let mut live = serde_json::to_value(&item).unwrap_or(Value::Null);
                // A real apiserver leaves apiVersion and kind out of list
                // items; put them back, or every manifest would look changed.
                if let Some(obj) = live.as_object_mut() {
                    obj.insert("apiVersion".into(), served.resource.api_version.clone().into());
                    obj.insert("kind".into(), served.resource.kind.clone().into());
                }
                self.live.insert(r, live);
            }
        }
        Ok(())
    }
}

/// Every set's live objects of a kind on one cluster, listed once (by our
/// managed-by label, any set) for all the sets a run reads: a drift of the
/// whole platform reads each kind once per cluster, not once per set. Only
/// for readers: a run that writes must see its own writes.
#[derive(Default)]
pub struct LiveCache {
    #[allow(clippy::type_complexity)]
    lists:
        std::sync::Mutex<BTreeMap<(String, String), std::sync::Arc<tokio::sync::OnceCell<Result<Vec<Value>, String>>>>>,
}

impl LiveCache {
    /// The live objects of `served` on `client`'s cluster carrying our label.
    async fn objects(&self, client: &KubeClient, served: &Served) -> Result<Vec<Value>, String> {
        let key = (
            client.server.clone(),
            format!("{}/{}", served.resource.api_version, served.resource.plural),
        );
        let cell = self
            .lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={FIELD_MANAGER},{SET_LABEL}"));
            let api = client.api(served, None);
            let list = with_retries(|| api.list(&params))
                .await
                .map_err(|e| format!("listing {}: {e}", served.resource.plural))?;
            Ok(list
                .items
                .iter()
                .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
                .collect())
        })
        .await
        .clone()
    }
}

impl Listing {
    /// [`Listing::include`] through a run's [`LiveCache`]: the same objects,
    /// picked from the kind's one LIST by the set's label.
    async fn include_from<'a>(
        &mut self,
        cache: &LiveCache,
        client: &KubeClient,
        kinds: impl Iterator<Item = &'a Served>,
        set: &str,
    ) -> Result<(), String> {
        let value = set_label_value(set);
        for served in kinds {
            let key = format!("{}/{}", served.resource.api_version, served.resource.plural);
            if !self.listed.insert(key) {
                continue;
            }
            let items = cache
                .objects(client, served)
                .await
                .map_err(|e| format!("{e} (set {set})"))?;
            for mut live in items {
                if live["metadata"]["labels"][SET_LABEL].as_str() != Some(value.as_str()) {
                    continue;
                }
                let r = ObjectRef {
                    api_version: served.resource.api_version.clone(),
                    kind: served.resource.kind.clone(),
                    namespace: live["metadata"]["namespace"].as_str().map(str::to_string),
                    name: live["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                };
                if let Some(obj) = live.as_object_mut() {
                    obj.insert("apiVersion".into(), served.resource.api_version.clone().into());
                    obj.insert("kind".into(), served.resource.kind.clone().into());
                }
                self.live.insert(r, live);
            }
        }
        Ok(())
    }
}

async fn server_side_apply(client: &KubeClient, served: &Served, p: &Prepared, force: bool) -> Result<Value, String> {
    let api = client.api(served, p.r.namespace.as_deref());
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    let patch = Patch::Apply(&p.manifest);
    match with_retries(|| api.patch(&p.r.name, &params, &patch)).await {
        Ok(obj) => Ok(serde_json::to_value(obj).unwrap_or(Value::Null)),
        Err(KubeError::Api { code: 409, message, .. }) => Err(format!(
            "{}: {message}. Another field manager changed fields nautes-install manages; undo that change, \
             or set `forceConflicts: true` on this component to take the fields back",
            p.r
        )),
        Err(e) => Err(format!("{}: {e}", p.r)),
    }
}

/// Wait until the object is ready, by watching it. The error names the
/// object and the last condition it reported.
async fn wait_ready(
    client: &KubeClient,
    served: &Served,
    r: &ObjectRef,
    mut known: Option<Value>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let api = client.api(served, r.namespace.as_deref());
    let mut last;
    loop {
        let current = match known.take() {
            Some(v) => v,
            None => match client.get(served, r).await {
                Ok(Some(obj)) => serde_json::to_value(obj).unwrap_or(Value::Null),
                Ok(None) => return Err(format!("{r} disappeared while waiting for it to be ready")),
                Err(e) => return Err(format!("{r}: {e}")),
            },
        };
        match evaluate(&r.kind, &current) {
            Readiness::Ready => return Ok(()),
            Readiness::Failed(why) => return Err(format!("{r} will not become ready: {why}")),
            Readiness::Pending(why) => last = why,
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "timed out after {} waiting for {r} to be ready; last seen: {last}",
                humantime::format_duration(timeout)
            ));
        }
        let rv = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", r.name))
            // Short watches: a quiet stream must end before the client's read timeout.
            .timeout(remaining.as_secs().clamp(1, 25) as u32);
        let watched = tokio::time::timeout(remaining, async {
            let events = api.watch(&params, &rv).await?;
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.try_next().await? {
                match event {
                    WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                        let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
                        match evaluate(&r.kind, &v) {
                            Readiness::Pending(why) => last = why,
                            _ => return Ok::<Option<Value>, kube::Error>(Some(v)),
                        }
                    }
                    WatchEvent::Deleted(_) => return Ok(None),
                    // Expired resourceVersion (410) and the like: read afresh.
                    WatchEvent::Error(_) => break,
                    WatchEvent::Bookmark(_) => {}
                }
            }
            Ok(None)
        })
        .await;
        match watched {
            Ok(Ok(Some(v))) => known = Some(v),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::debug!("watch of {r} ended: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(_elapsed) => {}
        }
    }
}

/// Delete what the set no longer renders: its labelled objects found live
/// and what the previous apply recorded.
async fn prune(
    client: &KubeClient,
    opts: &ApplyOptions<'_>,
    listing: &mut Listing,
    current: &BTreeSet<ObjectRef>,
) -> Result<Vec<ObjectRef>, String> {
    let mut candidates: BTreeSet<ObjectRef> = opts.previous.iter().filter(|r| !current.contains(r)).cloned().collect();
    // Kinds of the set now and before: labelled leftovers of any of them go too.
    let mut kinds = BTreeSet::new();
    for r in current.iter().chain(opts.previous.iter()) {
        kinds.insert((r.api_version.clone(), r.kind.clone()));
    }
    let mut served = Vec::new();
    for (api_version, kind) in &kinds {
        if let Ok(Some(s)) = client.served(api_version, kind).await {
            served.push(s);
        }
    }
    listing.include(client, served.iter(), &opts.set).await?;
    candidates.extend(listing.live.keys().filter(|r| !current.contains(r)).cloned());
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    (opts.progress)(format!("pruning {} objects no longer rendered", candidates.len()));
    let pruned: Vec<ObjectRef> = candidates.into_iter().collect();
    delete_objects(client, &pruned, Some(&opts.set), opts.timeout, opts.concurrency).await?;
    Ok(pruned)
}

/// Delete objects in reverse phase order, waiting for each phase to be gone
/// before the next (custom resources before their definitions, contents
/// before namespaces). With `only_set`, an object is deleted only if it
/// still carries that set's label: what someone else now owns is left.
pub async fn delete_objects(
    client: &KubeClient,
    objects: &[ObjectRef],
    only_set: Option<&str>,
    timeout: Duration,
    concurrency: usize,
) -> Result<(), String> {
    let mut by_phase: BTreeMap<Phase, Vec<ObjectRef>> = BTreeMap::new();
    for r in objects {
        by_phase.entry(Phase::of(r)).or_default().push(r.clone());
    }
    for (_, refs) in by_phase.into_iter().rev() {
        let deadline = Instant::now() + timeout;
        let results: Vec<Result<(), String>> = stream::iter(refs)
            .map(|r| async move { delete_one(client, &r, only_set, deadline, timeout).await })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let problems: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if !problems.is_empty() {
            return Err(format!("deleting failed:\n  - {}", problems.join("\n  - ")));
        }
        client.forget_discovery().await;
    }
    Ok(())
}

async fn delete_one(
    client: &KubeClient,
    r: &ObjectRef,
    only_set: Option<&str>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    // A kind no longer served (its CRD went first) has no objects left.
    let Some(served) = client
        .served(&r.api_version, &r.kind)
        .await
        .map_err(|e| format!("{r}: {e}"))?
    else {
        return Ok(());
    };
    let Some(live) = client.get(&served, r).await.map_err(|e| format!("{r}: {e}"))? else {
        return Ok(());
    };
    if let Some(set) = only_set {
        if live.metadata.labels.as_ref().and_then(|l| l.get(SET_LABEL)) != Some(&set_label_value(set)) {
            tracing::info!("leaving {r}: it no longer carries the label of set {set}");
            return Ok(());
        }
    }
    if let (Some(set), true) = (only_set, r.api_version == "v1" && r.kind == "Namespace") {
        if let Some(other) = other_set_in_namespace(client, &r.name, set).await? {
            tracing::info!("leaving {r}: set {other} still has objects in it");
            return Ok(());
        }
    }
    let api = client.api(&served, r.namespace.as_deref());
    if live.metadata.deletion_timestamp.is_none() {
        let params = DeleteParams::background();
        match with_retries(|| api.delete(&r.name, &params)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(format!("{r}: {e}")),
        }
    }
    // Gone only when the API says so (namespaces and finalizers take time).
    let served = &served;
    Wait::for_(format!("{r} to be gone after it was deleted"), timeout)
        .by(deadline)
        .every(Duration::from_millis(250))
        .hint("finalizers or contents still being removed?")
        .until(move || async move {
            match client.get(served, r).await {
                Ok(None) => Ok(Poll::Done(())),
                Ok(Some(live)) => Ok(Poll::Pending(match live.metadata.finalizers {
                    Some(f) if !f.is_empty() => format!("still there, finalizers {}", f.join(", ")),
                    _ => "still there".to_string(),
                })),
                Err(e) => Err(format!("{r}: {e}")),
            }
        })
        .await
}

/// Kinds every release puts in its namespace; enough to tell that another
/// set lives there.
const RESIDENT_KINDS: [(&str, &str); 5] = [
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
];

/// Another of our sets that still has objects in `namespace`, if any. A
/// namespace one set claimed while another lives in it (as the Tekton
/// Dashboard once claimed Tekton's) must outlive the claimant.
async fn other_set_in_namespace(client: &KubeClient, namespace: &str, set: &str) -> Result<Option<String>, String> {
    let params = ListParams::default()
        .labels(&format!(
            "{MANAGED_BY_LABEL}={FIELD_MANAGER},{SET_LABEL}!={}",
            set_label_value(set)
        ))
        .limit(1);
    for (api_version, kind) in RESIDENT_KINDS {
        let Ok(Some(served)) = client.served(api_version, kind).await else {
            continue;
        };
        let api = client.api(&served, Some(namespace));
        let list = with_retries(|| api.list(&params))
            .await
            .map_err(|e| format!("listing {} in namespace {namespace}: {e}", served.resource.plural))?;
        if let Some(item) = list.items.first() {
            let other = item.metadata.labels.as_ref().and_then(|l| l.get(SET_LABEL)).cloned();
            return Ok(other);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(group: &str, plural: &str) -> Served {
        Served {
            resource: kube::api::ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: if group.is_empty() {
                    "v1".into()
                } else {
                    format!("{group}/v1")
                },
                kind: "K".into(),
                plural: plural.into(),
            },
            namespaced: true,
        }
    }

    fn webhook(service: &str, policy: &str, groups: Value, resources: Value) -> Prepared {
        let m = serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "w"}, "webhooks": [{"name": "w.x", "failurePolicy": policy,
            "clientConfig": {"service": {"namespace": "ns", "name": service}},
            "rules": [{"apiGroups": groups, "resources": resources, "operations": ["CREATE"]}]}]});
        prepare(m, "s", Some("ns")).unwrap()
    }

    #[test]
    fn only_the_sets_own_failing_webhooks_gate_what_they_match() {
        let svc = prepare(
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": "ns"}}),
            "s",
            Some("ns"),
        )
        .unwrap();
        let cm = prepare(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            "s",
            Some("ns"),
        )
        .unwrap();
        let everything = webhook("hook", "Fail", serde_json::json!(["*"]), serde_json::json!(["*"]));
        let gates = Gates::of([svc.clone(), everything.clone()].iter());
        assert!(gates.admits(&cm, &served("", "configmaps")));
        // Webhook configurations are never sent to webhooks.
        assert!(!gates.admits(
            &everything,
            &served("admissionregistration.k8s.io", "validatingwebhookconfigurations")
        ));
        let pods_only = webhook("hook", "Fail", serde_json::json!([""]), serde_json::json!(["pods"]));
        assert!(!Gates::of([svc.clone(), pods_only].iter()).admits(&cm, &served("", "configmaps")));
        let ignored = webhook("hook", "Ignore", serde_json::json!(["*"]), serde_json::json!(["*"]));
        assert!(!Gates::of([svc.clone(), ignored].iter()).admits(&cm, &served("", "configmaps")));
        let elsewhere = webhook(
            "someone-elses",
            "Fail",
            serde_json::json!(["*"]),
            serde_json::json!(["*"]),
        );
        assert!(!Gates::of([svc, elsewhere].iter()).admits(&cm, &served("", "configmaps")));
    }

    #[test]
    fn status_and_empty_ca_bundles_are_left_out_but_a_set_ca_bundle_is_kept() {
        let m = serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "w"}, "status": {"x": 1},
            "webhooks": [{"name": "a", "clientConfig": {"caBundle": ""}}, {"name": "b", "clientConfig": {"caBundle": "Q0E="}}]});
        let p = prepare(m, "s", None).unwrap();
        assert!(p.manifest.get("status").is_none());
        assert!(p.manifest["webhooks"][0]["clientConfig"].get("caBundle").is_none());
        assert_eq!(p.manifest["webhooks"][1]["clientConfig"]["caBundle"], "Q0E=");
        let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "x"}, "spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": ""}}}}});
        let p = prepare(crd, "s", None).unwrap();
        assert!(p.manifest["spec"]["conversion"]["webhook"]["clientConfig"]
            .get("caBundle")
            .is_none());
    }

    #[test]
    fn set_names_become_valid_label_values() {
        assert_eq!(set_label_value("hnc/host"), "hnc.host");
        assert_eq!(set_label_value("tenant/acme/namespaces"), "tenant.acme.namespaces");
        let long = "x".repeat(100);
        let v = set_label_value(&long);
        assert!(v.len() <= 63 && v.starts_with("xxxx"), "{v}");
        assert_ne!(set_label_value(&long), set_label_value(&"x".repeat(101)));
    }

    #[test]
    fn prepare_labels_and_hashes_and_the_hash_follows_the_manifest() {
        let m =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
        let a = prepare(m.clone(), "s", Some("ns")).unwrap();
        assert_eq!(a.r.namespace.as_deref(), Some("ns"));
        assert_eq!(a.manifest["metadata"]["labels"][SET_LABEL], "s");
        let mut changed = m;
        changed["data"]["k"] = "2".into();
        let b = prepare(changed, "s", Some("ns")).unwrap();
        assert_ne!(
            a.manifest["metadata"]["annotations"][HASH_ANNOTATION],
            b.manifest["metadata"]["annotations"][HASH_ANNOTATION]
        );
    }

    #[test]
    fn empty_labels_and_annotations_from_a_chart_are_taken_as_empty() {
        let m = serde_json::json!({"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "a", "labels": null, "annotations": null}});
        let p = prepare(m, "s", Some("ns")).unwrap();
        assert_eq!(p.manifest["metadata"]["labels"][SET_LABEL], "s");
        assert!(p.manifest["metadata"]["annotations"][HASH_ANNOTATION].is_string());
    }
}
