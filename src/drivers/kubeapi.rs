//! A small Kubernetes API client for reads: enough to check a cluster
//! through its kubeconfig (server, CA, token or client certificate) exactly
//! as a user's kubectl would reach it. Knows nothing of Nautes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use crate::secret::Secret;

pub struct KubeApi {
    pub server: String,
    client: reqwest::Client,
    token: Option<Secret>,
}

fn field<'a>(v: &'a serde_yaml::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_yaml::Value::as_str)
}

fn named<'a>(doc: &'a serde_yaml::Value, list: &str, name: &str, inner: &str) -> Result<&'a serde_yaml::Value, String> {
    doc.get(list)
        .and_then(serde_yaml::Value::as_sequence)
        .and_then(|s| s.iter().find(|e| field(e, "name") == Some(name)))
        .and_then(|e| e.get(inner))
        .ok_or_else(|| format!("kubeconfig has no {list} entry named `{name}`"))
}

fn b64(v: &serde_yaml::Value, key: &str) -> Result<Option<Vec<u8>>, String> {
    field(v, key)
        .map(|s| {
            STANDARD
                .decode(s.trim())
                .map_err(|e| format!("kubeconfig `{key}` is not base64: {e}"))
        })
        .transpose()
}

impl KubeApi {
    /// From kubeconfig text, using `context` or the current context.
    pub fn from_kubeconfig(text: &str, context: Option<&str>, timeout: std::time::Duration) -> Result<KubeApi, String> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("kubeconfig is not YAML: {e}"))?;
        let ctx_name = match context {
            Some(c) => c.to_string(),
            None => field(&doc, "current-context")
                .ok_or("kubeconfig has no current-context")?
                .to_string(),
        };
        let ctx = named(&doc, "contexts", &ctx_name, "context")?;
        let cluster = named(
            &doc,
            "clusters",
            field(ctx, "cluster").ok_or("context names no cluster")?,
            "cluster",
        )?;
        let user = named(
            &doc,
            "users",
            field(ctx, "user").ok_or("context names no user")?,
            "user",
        )?;
        let server = field(cluster, "server")
            .ok_or("cluster has no server")?
            .trim_end_matches('/')
            .to_string();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(ca) = b64(cluster, "certificate-authority-data")? {
            let cert =
                reqwest::Certificate::from_pem(&ca).map_err(|e| format!("cluster CA is not a PEM certificate: {e}"))?;
            // Only the cluster's own CA vouches for it.
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (b64(user, "client-certificate-data")?, b64(user, "client-key-data")?) {
            let identity = reqwest::Identity::from_pem(&[cert, key].concat())
                .map_err(|e| format!("client certificate/key unusable: {e}"))?;
            builder = builder.identity(identity);
        }
        let token = field(user, "token").map(Secret::new);
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the API client: {e}"))?;
        Ok(KubeApi { server, client, token })
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.server);
        let mut req = self.client.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            let reason = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(format!("GET {url}: HTTP {status}: {reason}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
    }
}
