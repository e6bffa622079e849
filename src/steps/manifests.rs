//! The generic Kubernetes step: render a component's object set from its
//! sources (objects built in code, an upstream release manifest, a Helm
//! chart rendered with `helm template`) and apply it with the apply engine.
//! HNC, vcluster and the tenant namespaces are built on it.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::kube_target::{client, KubeTarget};
use super::release_files::files_from_outputs;
use crate::drivers::helm;
use crate::drivers::kube::apply::{apply_set, delete_objects, diff_set, ApplyOptions, ApplyReport, LiveCache};
use crate::drivers::kube::objects::parse_documents;
use crate::drivers::kube::{KubeClient, ObjectRef};
use crate::engine::{Change, Difference, Handler, Rendered, StepContext, StepError};

pub const KIND: &str = "kube-apply";

/// Where objects come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Source {
    /// Objects built from the inventory.
    Objects { objects: Vec<Value> },
    /// A manifest file from an artifacts step (upstream release, verified).
    Manifest { artifacts: String, file: String },
    /// A chart from an artifacts step, rendered by `helm template`.
    Chart {
        artifacts: String,
        file: String,
        release: String,
        namespace: String,
        values: Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplySpec {
    pub target: KubeTarget,
    /// Names the object set in labels and in the state file.
    pub set: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub force_conflicts: bool,
    pub sources: Vec<Source>,
    /// The release's readiness rule, written where the release is declared
    /// (the stack catalog, HNC's plan): workloads (kind, name in
    /// `namespace`) whose rollout means it is ready; each must be among the
    /// rendered objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready: Vec<(String, String)>,
}

impl crate::plan::StepSpec for ApplySpec {
    const KIND: &'static str = KIND;
}

impl ApplySpec {
    /// Steps this one reads outputs of.
    pub fn needs(&self) -> Vec<String> {
        let mut needs = self.target.needs();
        for s in &self.sources {
            if let Source::Manifest { artifacts, .. } | Source::Chart { artifacts, .. } = s {
                needs.push(artifacts.clone());
            }
        }
        needs
    }
}

fn local_file(ctx: &StepContext, artifacts: &str, file: &str) -> Result<PathBuf, StepError> {
    let outputs = ctx
        .needs_outputs
        .get(artifacts)
        .ok_or_else(|| StepError::new(format!("step {artifacts} has not provided its files")))?;
    let files = files_from_outputs(outputs)?;
    files
        .get(file)
        .map(|f| f.path.clone())
        .ok_or_else(|| StepError::new(format!("step {artifacts} provided no `{file}`")))
}

/// Every object the sources render, in source order.
pub async fn render_objects(ctx: &StepContext, sources: &[Source]) -> Result<Vec<Value>, StepError> {
    let mut out = Vec::new();
    for source in sources {
        match source {
            Source::Objects { objects } => out.extend(objects.iter().cloned()),
            Source::Manifest { artifacts, file } => {
                let path = local_file(ctx, artifacts, file)?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| StepError::new(format!("cannot read {}: {e}", path.display())))?;
                out.extend(parse_documents(&text, &path.display().to_string()).map_err(StepError::new)?);
            }
            Source::Chart {
                artifacts,
                file,
                release,
                namespace,
                values,
            } => {
                let chart = local_file(ctx, artifacts, file)?;
                let values_yaml =
                    serde_yaml::to_string(values).map_err(|e| StepError::new(format!("values of {release}: {e}")))?;
                let text = helm::template(&helm::Template {
                    binary: helm::binary(),
                    release,
                    chart: &chart,
                    namespace,
                    values_yaml,
                    home: &ctx.workdir.join("helm"),
                    timeout: ctx.limits.command,
                })
                .await
                .map_err(StepError::new)?;
                out.extend(parse_documents(&text, &format!("chart {}", chart.display())).map_err(StepError::new)?);
            }
        }
    }
    Ok(out)
}

/// The workloads the release's readiness rule names must be in what it
/// renders: a release that renamed one would otherwise be taken as ready
/// without the thing that makes it so.
pub fn check_readiness_rule(spec: &ApplySpec, objects: &[Value]) -> Result<(), StepError> {
    let namespace = spec.namespace.as_deref();
    let missing: Vec<String> = spec
        .ready
        .iter()
        .filter(|(kind, name)| {
            !objects.iter().any(|o| {
                o["kind"] == kind.as_str()
                    && o["metadata"]["name"] == name.as_str()
                    && o["metadata"]["namespace"].as_str().or(namespace) == namespace
            })
        })
        .map(|(kind, name)| format!("{kind} {name}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StepError::new(format!(
        "{} renders no {}, which its readiness rule waits for; the rule where the release is declared needs updating for this version",
        spec.set,
        missing.join(", ")
    )))
}

/// Objects the set held after its last apply, from the step's previous outputs.
pub fn previous_objects(outputs: &Value) -> Vec<ObjectRef> {
    serde_json::from_value(outputs.get("objects").cloned().unwrap_or(Value::Null)).unwrap_or_default()
}

pub fn rollout_timeout(ctx: &StepContext) -> Duration {
    ctx.limits.rollout
}

/// Apply `objects` as the set `set` on `client`, pruning what the previous
/// apply (`previous`) held and this one does not.
pub async fn apply_objects(
    ctx: &StepContext,
    client: &KubeClient,
    set: &str,
    namespace: Option<&str>,
    force_conflicts: bool,
    objects: Vec<Value>,
    previous: Vec<ObjectRef>,
) -> Result<ApplyReport, StepError> {
    let progress = |m: String| ctx.progress(m);
    let opts = ApplyOptions {
        set: set.to_string(),
        default_namespace: namespace.map(str::to_string),
        force_conflicts,
        timeout: rollout_timeout(ctx),
        previous,
        concurrency: 8,
        progress: &progress,
    };
    let report = apply_set(client, objects, &opts)
        .await
        .map_err(|e| StepError::new(format!("{set} on {}: {e}", client.server)))?;
    tracing::info!(
        "{set}: {} objects, {} written, {} unchanged, {} pruned",
        report.objects.len(),
        report.written,
        report.unchanged,
        report.pruned.len()
    );
    Ok(report)
}

/// What differs between the live set and `objects` as [`apply_objects`]
/// would apply them (`previous`: what the set held after its last apply).
/// A run that only reads (drift) shares one [`LiveCache`] among its steps.
pub async fn drift_objects(
    ctx: &StepContext,
    client: &KubeClient,
    set: &str,
    namespace: Option<&str>,
    objects: Vec<Value>,
    previous: &[ObjectRef],
) -> Result<Vec<Difference>, StepError> {
    let cache = ctx.services.get::<LiveCache>();
    let drift = diff_set(client, objects, set, namespace, previous, cache.as_deref())
        .await
        .map_err(|e| StepError::new(format!("{set} on {}: {e}", client.server)))?;
    let of = |r: &ObjectRef, change, field| Difference {
        object: r.to_string(),
        change,
        field,
    };
    let mut out: Vec<Difference> = drift.missing.iter().map(|r| of(r, Change::Missing, None)).collect();
    out.extend(
        drift
            .changed
            .iter()
            .map(|(r, field)| of(r, Change::Changed, Some(field.clone()))),
    );
    out.extend(drift.extra.iter().map(|r| of(r, Change::Extra, None)));
    Ok(out)
}

/// [`drift_objects`] for the set `spec` describes.
pub async fn drift_spec(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &ApplySpec,
    objects: Vec<Value>,
) -> Result<Vec<Difference>, StepError> {
    let previous = previous_objects(&ctx.previous_outputs);
    drift_objects(ctx, client, &spec.set, spec.namespace.as_deref(), objects, &previous).await
}

pub fn report_outputs(report: &ApplyReport) -> Value {
    json!({
        "objects": report.objects,
        "written": report.written,
        "unchanged": report.unchanged,
        "pruned": report.pruned.len(),
    })
}

/// Apply `objects` as the set `spec` describes, pruning what its last apply
/// held and this one does not; the step's outputs.
pub async fn apply_spec(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &ApplySpec,
    objects: Vec<Value>,
) -> Result<Value, StepError> {
    let report = apply_objects(
        ctx,
        client,
        &spec.set,
        spec.namespace.as_deref(),
        spec.force_conflicts,
        objects,
        previous_objects(&ctx.previous_outputs),
    )
    .await?;
    Ok(report_outputs(&report))
}

/// Delete what the set's last apply recorded. On a full teardown a cluster
/// whose kubeconfig is gone went first, and its objects with it.
pub async fn destroy_spec(ctx: &StepContext, spec: &ApplySpec, outputs: &Value) -> Result<(), StepError> {
    let client = match client(ctx, &spec.target).await {
        Ok(c) => c,
        Err(e) if ctx.full_teardown => {
            tracing::warn!("{}: {e}; nothing left to delete", spec.set);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    delete_recorded(ctx, &client, &spec.set, outputs).await
}

/// Delete what a set's last apply recorded, in reverse order.
pub async fn delete_recorded(
    ctx: &StepContext,
    client: &KubeClient,
    set: &str,
    outputs: &Value,
) -> Result<(), StepError> {
    let objects = previous_objects(outputs);
    ctx.progress(format!("deleting {} objects of {set}", objects.len()));
    delete_objects(client, &objects, Some(set), rollout_timeout(ctx), 8)
        .await
        .map_err(|e| StepError::new(format!("{set} on {}: {e}", client.server)))
}

/// Deep-merge `over` into `base`: maps merge, anything else replaces.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge_values(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Objects as one multi-document YAML stream, for `render`.
pub fn yaml_stream<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Result<String, StepError> {
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(o).map_err(|e| StepError::new(e.to_string()))?);
    }
    Ok(text)
}

pub struct ApplyHandler;

#[async_trait]
impl Handler for ApplyHandler {
    type Spec = ApplySpec;

    async fn apply(&self, ctx: &StepContext, spec: &ApplySpec) -> Result<Value, StepError> {
        let objects = render_objects(ctx, &spec.sources).await?;
        check_readiness_rule(spec, &objects)?;
        let client = client(ctx, &spec.target).await?;
        apply_spec(ctx, &client, spec, objects).await
    }

    async fn destroy(&self, ctx: &StepContext, spec: &ApplySpec, outputs: &Value) -> Result<(), StepError> {
        destroy_spec(ctx, spec, outputs).await
    }

    async fn drift(&self, ctx: &StepContext, spec: &ApplySpec) -> Result<Option<Vec<Difference>>, StepError> {
        let objects = render_objects(ctx, &spec.sources).await?;
        let client = client(ctx, &spec.target).await?;
        Ok(Some(drift_spec(ctx, &client, spec, objects).await?))
    }

    fn render(&self, spec: &ApplySpec) -> Result<Vec<Rendered>, StepError> {
        let mut out = Vec::new();
        for (i, source) in spec.sources.iter().enumerate() {
            if let Source::Objects { objects } = source {
                out.push(Rendered {
                    path: format!("manifests/{}/{i}.yaml", spec.set.replace('/', "__")),
                    contents: yaml_stream(objects)?,
                });
            }
        }
        Ok(out)
    }
}

/// The key paths of `values` a chart's `values.yaml` (`defaults`) does not
/// have: what `helm template` would silently ignore. Below an empty map in
/// the defaults (annotations, podLabels: free-form) any key is the chart's.
/// `documented` lists paths upstream documents only as comments.
#[cfg(test)]
pub(crate) fn unknown_value_keys(values: &Value, defaults: &Value, documented: &[&str]) -> Vec<String> {
    fn walk(values: &Value, defaults: &Value, path: &mut Vec<String>, documented: &[&str], out: &mut Vec<String>) {
        let (Some(values), Some(defaults)) = (values.as_object(), defaults.as_object()) else {
            return;
        };
        // Free-form: empty by default, or keyed by names with dots
        // (annotations with defaults), as tests/fixtures/chart-keys/derive.py sees them.
        if defaults.is_empty() || defaults.keys().any(|k| k.contains('.')) {
            return;
        }
        for (k, v) in values {
            path.push(k.clone());
            match defaults.get(k) {
                Some(d) => walk(v, d, path, documented, out),
                None if documented.contains(&path.join(".").as_str()) => {}
                None => out.push(path.join(".")),
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(values, defaults, &mut Vec::new(), documented, &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_value_keys_are_found_below_known_ones_but_not_in_free_form_maps() {
        let defaults = json!({"service": {"type": "ClusterIP", "annotations": {}}, "ports": {"web": {"port": 8000}}});
        let values = json!({"service": {"type": "NodePort", "nodePort": 1, "annotations": {"a": "b"}},
                            "ports": {"web": {"nodePort": 2}}, "extra": true});
        assert_eq!(
            unknown_value_keys(&values, &defaults, &["ports.web.nodePort"]),
            ["extra", "service.nodePort"]
        );
        let defaults = json!({"ingress": {"annotations": {"nginx.ingress.kubernetes.io/x": "0"}}});
        let values = json!({"ingress": {"annotations": {"traefik.ingress.kubernetes.io/y": "1"}}});
        assert!(unknown_value_keys(&values, &defaults, &[]).is_empty());
    }
}
