//! Manifests as data: parsing multi-document YAML into objects, naming
//! objects, the order kinds are applied in, and telling whether a live
//! object already holds everything a manifest says.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which object: enough to address it and to name it in messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The reference of a manifest, which must have apiVersion, kind and metadata.name.
    pub fn of(object: &Value) -> Result<ObjectRef, String> {
        let text = |path: &[&str]| {
            let mut v = object;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
        };
        let kind = text(&["kind"]).ok_or("an object has no kind")?;
        let name = text(&["metadata", "name"]).ok_or_else(|| format!("a {kind} has no metadata.name"))?;
        let api_version = text(&["apiVersion"]).ok_or_else(|| format!("{kind} {name} has no apiVersion"))?;
        Ok(ObjectRef {
            api_version,
            kind,
            namespace: text(&["metadata", "namespace"]),
            name,
        })
    }

    pub fn group(&self) -> &str {
        self.api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Every object in a stream of YAML documents; empty documents are skipped
/// and `List` kinds are flattened, as kubectl does. `source` names the
/// stream in errors.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| format!("{source}: document {}: {e}", i + 1))?;
        match value {
            Value::Null => {}
            Value::Object(ref map)
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                let items = map.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                out.extend(items);
            }
            Value::Object(_) => out.push(value),
            other => return Err(format!("{source}: document {} is not an object but {other}", i + 1)),
        }
    }
    Ok(out)
}

/// The kind of object, in the order kinds are sent (apply.rs says what is
/// waited for between them) and deleted in reverse: custom resources
/// before their definitions, webhooks before the workloads behind them,
/// contents before their namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Definitions,
    Namespaces,
    Workloads,
    Webhooks,
    CustomResources,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Definitions,
        Phase::Namespaces,
        Phase::Workloads,
        Phase::Webhooks,
        Phase::CustomResources,
    ];

    pub fn of(r: &ObjectRef) -> Phase {
        match (r.group(), r.kind.as_str()) {
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Phase::Definitions,
            ("", "Namespace") => Phase::Namespaces,
            ("admissionregistration.k8s.io", _) | ("apiregistration.k8s.io", _) => Phase::Webhooks,
            (g, _) if is_builtin_group(g) => Phase::Workloads,
            _ => Phase::CustomResources,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Definitions => "custom resource definitions",
            Phase::Namespaces => "namespaces",
            Phase::Workloads => "built-in objects",
            Phase::Webhooks => "webhooks and API services",
            Phase::CustomResources => "custom resources",
        }
    }
}

/// Groups every conformant cluster serves without any CRD.
fn is_builtin_group(group: &str) -> bool {
    group.is_empty()
        || matches!(
            group,
            "apps"
                | "batch"
                | "autoscaling"
                | "policy"
                | "rbac.authorization.k8s.io"
                | "networking.k8s.io"
                | "storage.k8s.io"
                | "scheduling.k8s.io"
                | "coordination.k8s.io"
                | "discovery.k8s.io"
                | "node.k8s.io"
                | "certificates.k8s.io"
                | "flowcontrol.apiserver.k8s.io"
        )
}

/// True when `live` already holds every field `desired` sets, with the same
/// value: [`first_difference`] finds none.
pub fn contains(live: &Value, desired: &Value) -> bool {
    first_difference(live, desired).is_none()
}

/// The path of the first field `desired` sets that `live` does not hold
/// with the same value (`spec.template.spec.containers[0].image`), or
/// `None`. Lists must have the same length and match element by element
/// (the server adds defaults inside elements, never new elements); fields
/// only on the live side (defaults, status, metadata the server keeps) are
/// ignored. A null asks for nothing: controller-gen writes
/// `creationTimestamp: null` into every CRD it generates, and Helm charts
/// leave keys empty (`annotations:`), yet the server keeps its own value
/// or none. A field the live object lacks counts as held when the manifest
/// gives it its zero value (`false`, `0`, `""`, `[]`, `{}`): Kubernetes' types
/// leave such values out of what they return (`omitempty`), so a real
/// apiserver never shows e.g. a CRD's `preserveUnknownFields: false` back.
/// Used to skip writes that would change nothing, and to say why one is sent.
pub fn first_difference(live: &Value, desired: &Value) -> Option<String> {
    match (live, desired) {
        (_, Value::Null) => None,
        (Value::Object(l), Value::Object(d)) => d.iter().find_map(|(k, dv)| {
            let below = match l.get(k) {
                Some(lv) => first_difference(lv, dv),
                None if is_omitted_when_empty(dv) => None,
                None => Some(String::new()),
            };
            below.map(|rest| join_path(k, &rest))
        }),
        (Value::Array(l), Value::Array(d)) if l.len() == d.len() => l
            .iter()
            .zip(d)
            .enumerate()
            .find_map(|(i, (lv, dv))| first_difference(lv, dv).map(|rest| format!("[{i}]{}", dotted(&rest)))),
        // The server stores numbers it may print differently (1 vs 1.0).
        (Value::Number(l), Value::Number(d)) if l.as_f64() == d.as_f64() => None,
        (l, d) if l == d => None,
        _ => Some(String::new()),
    }
}

fn dotted(rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        rest.to_string()
    } else {
        format!(".{rest}")
    }
}

fn join_path(key: &str, rest: &str) -> String {
    format!("{key}{}", dotted(rest))
}

/// A value an `omitempty` field is never returned with.
fn is_omitted_when_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_is_named_by_its_path_and_nulls_ask_for_nothing() {
        let live = json!({"metadata": {"name": "x", "creationTimestamp": "2026-12-05T00:00:00Z"},
                          "spec": {"containers": [{"name": "a", "image": "one"}], "replicas": 1}});
        // controller-gen's `creationTimestamp: null` and a chart's empty `annotations:`.
        let same = json!({"metadata": {"name": "x", "creationTimestamp": null, "annotations": null},
                          "spec": {"containers": [{"name": "a"}], "replicas": 1.0}});
        assert_eq!(first_difference(&live, &same), None);
        assert!(contains(&live, &same));
        let changed = json!({"spec": {"containers": [{"name": "a", "image": "two"}]}});
        assert_eq!(
            first_difference(&live, &changed).as_deref(),
            Some("spec.containers[0].image")
        );
        let added = json!({"metadata": {"labels": {"a": "b"}}});
        assert_eq!(first_difference(&live, &added).as_deref(), Some("metadata.labels"));
        let longer = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(first_difference(&live, &longer).as_deref(), Some("spec.containers"));
    }

    #[test]
    fn parses_streams_skipping_empty_documents_and_flattening_lists() {
        let text = "---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n";
        let objects = parse_documents(text, "t").unwrap();
        let names: Vec<String> = objects.iter().map(|o| ObjectRef::of(o).unwrap().to_string()).collect();
        assert_eq!(names, ["ConfigMap a", "Secret b"]);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_named() {
        let err = parse_documents("---\n- a\n", "chart x").unwrap_err();
        assert!(err.starts_with("chart x: document 1"), "{err}");
    }

    #[test]
    fn phases_put_definitions_first_and_custom_resources_last() {
        let r = |api: &str, kind: &str| ObjectRef {
            api_version: api.into(),
            kind: kind.into(),
            namespace: None,
            name: "x".into(),
        };
        assert_eq!(
            Phase::of(&r("apiextensions.k8s.io/v1", "CustomResourceDefinition")),
            Phase::Definitions
        );
        assert_eq!(Phase::of(&r("v1", "Namespace")), Phase::Namespaces);
        assert_eq!(Phase::of(&r("apps/v1", "Deployment")), Phase::Workloads);
        assert_eq!(
            Phase::of(&r("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")),
            Phase::Webhooks
        );
        assert_eq!(
            Phase::of(&r("hnc.x-k8s.io/v1alpha2", "SubnamespaceAnchor")),
            Phase::CustomResources
        );
    }

    #[test]
    fn containment_ignores_server_additions_but_not_changes() {
        let live = json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]}, "status": {}});
        assert!(contains(&live, &json!({"spec": {"ports": [{"port": 80}]}})));
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}})
        ));
        assert!(!contains(&live, &json!({"spec": {"paused": true}})));
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }

    #[test]
    fn zero_values_the_server_leaves_out_are_held_but_others_are_not() {
        let live = json!({"spec": {"group": "tekton.dev"}});
        assert!(contains(
            &live,
            &json!({"spec": {"preserveUnknownFields": false, "group": "tekton.dev"}})
        ));
        assert!(contains(
            &live,
            &json!({"spec": {"names": {}, "versions": [], "x": "", "n": 0}})
        ));
        assert!(!contains(&live, &json!({"spec": {"preserveUnknownFields": true}})));
        assert!(!contains(&live, &json!({"spec": {"replicas": 1}})));
    }
}
