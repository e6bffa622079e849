//! The apply engine: one set of objects (a component's manifests) made true
//! on a cluster with server-side apply, in phases (definitions, namespaces,
//! built-in objects, webhooks, custom resources), each phase waiting for
//! what the next needs. It writes only what differs, prunes what the set no
//! longer renders, and deletes a set in reverse.
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

use super::objects::{contains, ObjectRef, Phase};
use super::readiness::{evaluate, is_waited, Readiness};
use super::{with_retries, KubeClient, KubeError, Served};

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn selector(set: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={FIELD_MANAGER},{SET_LABEL}={}",
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

/// Apply `objects` as one set. Fails with every problem found in the first
/// phase that has any; later phases are not attempted then.
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
    let mut report = ApplyReport::default();
    let mut listing = Listing::default();
    for phase in Phase::ALL {
        let Some(prepared) = by_phase.remove(&phase) else {
            continue;
        };
        apply_phase(client, phase, prepared, opts, &mut listing, &mut report).await?;
    }
    let current: BTreeSet<ObjectRef> = report.objects.iter().cloned().collect();
    report.pruned = prune(client, opts, &mut listing, &current).await?;
    Ok(report)
}

async fn apply_phase(
    client: &KubeClient,
    phase: Phase,
    prepared: Vec<Prepared>,
    opts: &ApplyOptions<'_>,
    listing: &mut Listing,
    report: &mut ApplyReport,
) -> Result<(), String> {
    // Resolve every kind first: nothing of a kind the cluster does not serve is attempted.
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    for mut p in prepared {
        match served_or_explain(client, &p.r).await {
            Ok(served) => {
                if !served.namespaced {
                    p.r.namespace = None;
                    if let Some(meta) = p.manifest["metadata"].as_object_mut() {
                        meta.remove("namespace");
                    }
                } else if p.r.namespace.is_none() {
                    problems.push(format!("{}: namespaced kind but no namespace given", p.r));
                    continue;
                }
                resolved.push((p, served));
            }
            Err(e) => problems.push(e),
        }
    }
    fail_if_any(phase, std::mem::take(&mut problems))?;
    listing
        .include(client, resolved.iter().map(|(_, s)| s), &opts.set)
        .await?;
    (opts.progress)(format!("applying {} {}", resolved.len(), phase.label()));

    // Owned items: the futures must not borrow from the stream's items.
    let live = &listing.live;
    let force = opts.force_conflicts;
    let results: Vec<Result<(ObjectRef, bool, Value), String>> = stream::iter(resolved.clone())
        .map(|(p, served)| async move {
            if let Some(current) = live.get(&p.r) {
                if contains(current, &p.manifest) {
                    return Ok((p.r.clone(), false, current.clone()));
                }
            }
            let written = server_side_apply(client, &served, &p, force).await?;
            Ok((p.r, true, written))
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut applied = BTreeMap::new();
    for r in results {
        match r {
            Ok((r, wrote, object)) => {
                if wrote {
                    report.written += 1;
                } else {
                    report.unchanged += 1;
                }
                applied.insert(r, object);
            }
            Err(e) => problems.push(e),
        }
    }
    fail_if_any(phase, problems)?;
    report.objects.extend(resolved.iter().map(|(p, _)| p.r.clone()));

    let waited: Vec<(Prepared, Served)> = resolved
        .into_iter()
        .filter(|(p, _)| is_waited(&p.r.kind, &p.manifest))
        .collect();
    if !waited.is_empty() {
        (opts.progress)(format!("waiting for {} {} to be ready", waited.len(), phase.label()));
        let deadline = Instant::now() + opts.timeout;
        let applied = &applied;
        let timeout = opts.timeout;
        let results: Vec<Result<(), String>> = stream::iter(waited)
            .map(|(p, served)| async move {
                let known = applied.get(&p.r).cloned();
                wait_ready(client, &served, &p.r, known, deadline, timeout).await
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        fail_if_any(phase, results.into_iter().filter_map(Result::err).collect())?;
    }
    if phase == Phase::Definitions {
        // New kinds are served now; let discovery see them.
        client.forget_discovery().await;
    }
    Ok(())
}

fn fail_if_any(phase: Phase, mut problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort();
    Err(format!("{} failed:\n  - {}", phase.label(), problems.join("\n  - ")))
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
    loop {
        match client.get(&served, r).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() >= deadline => {
                return Err(format!(
                    "{r} still exists {} after it was deleted (finalizers or contents still being removed?)",
                    humantime::format_duration(timeout)
                ))
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => return Err(format!("{r}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
