//! Vault's HTTP API: seal status, init, unseal, and reads and writes of
//! configuration paths. TLS is verified against the CA we are given (or the
//! system roots); tokens and keys travel only in headers and bodies, never
//! in messages. Knows nothing of Nautes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    /// Unseal threshold.
    #[serde(default)]
    pub t: u32,
    #[serde(default)]
    pub progress: u32,
}

/// `sys/leader`: whether this server (or, for a standby, the one it
/// forwards to) is active, so requests that need the active node can be served.
#[derive(Debug, Clone, Deserialize)]
pub struct Leader {
    #[serde(default)]
    pub ha_enabled: bool,
    #[serde(default)]
    pub is_self: bool,
    #[serde(default)]
    pub leader_address: String,
}

impl Leader {
    /// Without HA there is no election; with it, some node must have won one.
    pub fn has_active(&self) -> bool {
        !self.ha_enabled || self.is_self || !self.leader_address.is_empty()
    }
}

/// What `sys/init` returned; every value is secret.
pub struct InitResult {
    /// As Vault returned them: hex, or PGP-encrypted when PGP keys were given.
    pub keys: Vec<Secret>,
    pub root_token: Secret,
}

pub struct Vault {
    base: String,
    client: reqwest::Client,
}

impl Vault {
    /// `ca_pem`: the only CA trusted for this Vault; `None` uses the system roots.
    pub fn new(url: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Vault, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("the Vault CA is not PEM: {e}"))?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Vault {
            base: url.trim_end_matches('/').to_string(),
            client,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// One request; `Ok(None)` for 404 and 204. Errors carry Vault's own messages.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&Value>,
    ) -> Result<Option<Value>, String> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{method} {url}: {e}"))?;
        match status {
            StatusCode::NOT_FOUND | StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{method} {url}: the answer is not JSON: {e}")),
            s => {
                let errors = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["errors"].as_array().cloned())
                    .map(|e| {
                        e.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                Err(format!("{method} {url}: HTTP {}: {errors}", s.as_u16()))
            }
        }
    }

    pub async fn seal_status(&self) -> Result<SealStatus, String> {
        let v = self
            .call(Method::GET, "sys/seal-status", None, None)
            .await?
            .ok_or_else(|| format!("{}: no seal status", self.base))?;
        serde_json::from_value(v).map_err(|e| format!("{}: unexpected seal status: {e}", self.base))
    }

    pub async fn init(&self, shares: u32, threshold: u32, pgp_keys: &[String]) -> Result<InitResult, String> {
        let mut body = json!({ "secret_shares": shares, "secret_threshold": threshold });
        if !pgp_keys.is_empty() {
            body["pgp_keys"] = json!(pgp_keys);
        }
        let v = self
            .call(Method::PUT, "sys/init", None, Some(&body))
            .await?
            .ok_or("sys/init returned nothing")?;
        let keys = v["keys"]
            .as_array()
            .ok_or("sys/init returned no keys")?
            .iter()
            .filter_map(|k| k.as_str().map(Secret::new))
            .collect();
        let root_token = Secret::new(v["root_token"].as_str().ok_or("sys/init returned no root token")?);
        Ok(InitResult { keys, root_token })
    }

    pub async fn unseal(&self, key: &Secret) -> Result<SealStatus, String> {
        let v = self
            .call(Method::PUT, "sys/unseal", None, Some(&json!({ "key": key.expose() })))
            .await?
            .ok_or("sys/unseal returned nothing")?;
        serde_json::from_value(v).map_err(|e| format!("unexpected unseal answer: {e}"))
    }

    pub async fn leader(&self) -> Result<Leader, String> {
        let v = self
            .call(Method::GET, "sys/leader", None, None)
            .await?
            .ok_or_else(|| format!("{}: no leader status", self.base))?;
        serde_json::from_value(v).map_err(|e| format!("{}: unexpected leader status: {e}", self.base))
    }

    pub async fn read(&self, path: &str, token: &Secret) -> Result<Option<Value>, String> {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn write(&self, path: &str, token: &Secret, body: &Value) -> Result<Option<Value>, String> {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &Secret) -> Result<(), String> {
        self.call(Method::DELETE, path, Some(token), None).await.map(|_| ())
    }

    /// Stream a raft snapshot (`sys/storage/raft/snapshot`, which needs a
    /// root or `sudo` token) into `out` as it arrives, never whole in
    /// memory; the service keeps running. Returns the bytes written.
    pub async fn snapshot(&self, token: &Secret, out: &mut impl std::io::Write) -> Result<u64, String> {
        let url = format!("{}/v1/sys/storage/raft/snapshot", self.base);
        let mut resp = self
            .client
            .get(&url)
            .header("X-Vault-Token", token.expose())
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(http_error("GET", &url, resp).await);
        }
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            out.write_all(&chunk)
                .map_err(|e| format!("GET {url}: writing the snapshot: {e}"))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Replace all of Vault's data with a raft snapshot read from `file`
    /// (`snapshot-force`: also one taken from another cluster, after which
    /// Vault seals itself and opens only with that cluster's keys).
    pub async fn restore_snapshot(&self, token: &Secret, file: tokio::fs::File) -> Result<(), String> {
        let url = format!("{}/v1/sys/storage/raft/snapshot-force", self.base);
        // A length, not chunked encoding: proxies in front of Vault may not take chunks.
        let len = file.metadata().await.map_err(|e| format!("POST {url}: {e}"))?.len();
        let resp = self
            .client
            .post(&url)
            .header("X-Vault-Token", token.expose())
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file))
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(http_error("POST", &url, resp).await)
        }
    }

    /// The keys under `path` (Vault's LIST); empty when there are none,
    /// which Vault answers with 404.
    pub async fn list(&self, path: &str, token: &Secret) -> Result<Vec<String>, String> {
        let list = Method::from_bytes(b"LIST").map_err(|e| e.to_string())?;
        Ok(self
            .call(list, path, Some(token), None)
            .await?
            .and_then(|v| v["data"]["keys"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect())
    }
}

/// An error answer, with Vault's own messages.
async fn http_error(method: &str, url: &str, resp: reqwest::Response) -> String {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let errors = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["errors"].as_array().cloned())
        .map(|e| e.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    format!("{method} {url}: HTTP {status}: {errors}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ha_server_is_usable_once_some_node_is_active() {
        let leader = |v: Value| serde_json::from_value::<Leader>(v).unwrap().has_active();
        // Unsealed, but no node has won raft's election yet; then this one did.
        assert!(!leader(
            json!({"ha_enabled": true, "is_self": false, "leader_address": ""})
        ));
        assert!(leader(
            json!({"ha_enabled": true, "is_self": true, "leader_address": "https://10.0.0.5:8200"})
        ));
        // A standby forwards to the active node.
        assert!(leader(
            json!({"ha_enabled": true, "is_self": false, "leader_address": "https://10.0.0.6:8200"})
        ));
        assert!(leader(json!({"ha_enabled": false})));
    }
}
