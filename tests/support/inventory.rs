//! One way for tests to write an inventory: an `InventoryBuilder` that
//! grows the document as data and prints it as YAML, so a test names what
//! it varies (a host, a hook, a timeout) instead of pasting a page of
//! indented text, and a typo in a key is a compile-time method name or a
//! visible path, not a silent indentation slip.
#![allow(dead_code)]

use serde_json::{json, Map, Value};

/// An inventory under construction, starting from the header every test
/// shares (`metadata.name: test`, as `cli::HEADER`).
#[derive(Debug, Clone)]
pub struct InventoryBuilder {
    doc: Map<String, Value>,
}

impl Default for InventoryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl InventoryBuilder {
    pub fn new() -> InventoryBuilder {
        let doc = json!({
            "apiVersion": "install.nautes.io/v1alpha1",
            "kind": "Inventory",
            "metadata": {"name": "test"},
        });
        InventoryBuilder {
            doc: doc.as_object().expect("a mapping").clone(),
        }
    }

    /// Set the value at a dotted path (`settings.timeouts.sshConnect`),
    /// making the mappings on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a path");
        let mut map = &mut self.doc;
        for key in keys {
            map = map
                .entry(key)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap_or_else(|| panic!("{path}: `{key}` is not a mapping"));
        }
        map.insert(last.to_string(), value.into());
        self
    }

    /// Append `item` to the list at `path`.
    fn push(mut self, path: &str, item: Value) -> Self {
        let list = self.doc.entry(path).or_insert_with(|| json!([]));
        list.as_array_mut()
            .unwrap_or_else(|| panic!("`{path}` is not a list"))
            .push(item);
        self
    }

    pub fn domain(self, domain: &str) -> Self {
        self.set("settings.domain", domain)
    }

    /// A host, with any further fields of its own (`{"port": 2222}`).
    pub fn host(self, name: &str, address: &str, fields: Value) -> Self {
        let mut host = json!({"name": name, "address": address});
        merge(&mut host, fields);
        self.push("hosts", host)
    }

    /// A K3s cluster of `servers` at `version`.
    pub fn k3s_cluster(self, name: &str, version: &str, servers: &[&str]) -> Self {
        self.push(
            "clusters",
            json!({"name": name, "type": "k3s", "k3s": {"version": version, "servers": servers}}),
        )
    }

    /// `components.<key>` as given (`json!({})` for the defaults).
    pub fn component(self, key: &str, value: Value) -> Self {
        self.set(&format!("components.{key}"), value)
    }

    /// A tenant on `cluster` whose tree is one root namespace per name.
    pub fn tenant(self, name: &str, cluster: &str, namespaces: &[&str]) -> Self {
        let roots: Vec<Value> = namespaces.iter().map(|n| json!({"name": n})).collect();
        self.push(
            "tenants",
            json!({"name": name, "cluster": cluster, "namespaces": roots}),
        )
    }

    /// A hook running `run`, after the hooks named in `after` (by hook
    /// name), undone with `destroy`.
    pub fn hook(self, name: &str, run: &str, after: &[&str], destroy: Option<&str>) -> Self {
        let mut hook = json!({"name": name, "run": run});
        if !after.is_empty() {
            let ids: Vec<String> = after.iter().map(|a| format!("hook/{a}")).collect();
            hook["after"] = json!(ids);
        }
        if let Some(d) = destroy {
            hook["destroy"] = json!(d);
        }
        self.push("hooks", hook)
    }

    /// The inventory as YAML text.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.doc).expect("an inventory serializes")
    }
}

/// `extra`'s keys over `base`'s (mappings only).
fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
}
