//! The kubeconfig users and later steps get: K3s writes one pointing at
//! 127.0.0.1 with names `default`; we point it at the reachable endpoint
//! and name cluster, user and context after the inventory's cluster so
//! several kubeconfigs merge cleanly.

use serde_yaml::Value;

pub fn rewrite(original: &str, cluster: &str, endpoint: &str) -> Result<String, String> {
    let mut doc: Value =
        serde_yaml::from_str(original).map_err(|e| format!("the node's kubeconfig is not YAML: {e}"))?;
    let rename = |v: &mut Value, key: &str| {
        if let Some(Value::String(s)) = v.get_mut(key) {
            if s == "default" {
                *s = cluster.to_string();
            }
        }
    };
    let list = |doc: &mut Value, key: &str| -> Result<Vec<Value>, String> {
        match doc.get(key) {
            Some(Value::Sequence(s)) => Ok(s.clone()),
            _ => Err(format!("the node's kubeconfig has no `{key}` list")),
        }
    };
    let mut clusters = list(&mut doc, "clusters")?;
    for c in &mut clusters {
        rename(c, "name");
        match c.get_mut("cluster") {
            Some(Value::Mapping(m)) => {
                m.insert(Value::from("server"), Value::from(endpoint));
                // An http endpoint (a test or a plain proxy) cannot use the CA.
                if endpoint.starts_with("http://") {
                    m.remove("certificate-authority-data");
                }
            }
            _ => return Err("a cluster entry in the node's kubeconfig has no `cluster` mapping".into()),
        }
    }
    let mut users = list(&mut doc, "users")?;
    for u in &mut users {
        rename(u, "name");
    }
    let mut contexts = list(&mut doc, "contexts")?;
    for c in &mut contexts {
        rename(c, "name");
        if let Some(inner) = c.get_mut("context") {
            rename(inner, "cluster");
            rename(inner, "user");
        }
    }
    if let Value::Mapping(m) = &mut doc {
        m.insert(Value::from("clusters"), Value::Sequence(clusters));
        m.insert(Value::from("users"), Value::Sequence(users));
        m.insert(Value::from("contexts"), Value::Sequence(contexts));
        if m.get("current-context").and_then(Value::as_str) == Some("default") {
            m.insert(Value::from("current-context"), Value::from(cluster));
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn points_at_the_endpoint_and_renames_defaults() {
        let k3s = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\nusers:\n- name: default\n  user:\n    client-key-data: S0VZ\n";
        let out = super::rewrite(k3s, "main", "https://10.0.0.1:6443").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://10.0.0.1:6443");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], "QUJD");
        assert_eq!(v["current-context"], "main");
        assert_eq!(v["contexts"][0]["context"]["user"], "main");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ", "credentials kept");
        assert!(super::rewrite("clusters: 3", "x", "y").is_err());
    }
}
