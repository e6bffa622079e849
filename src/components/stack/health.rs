//! The last step: the platform answers. Every Argo CD Application on the
//! management cluster is Synced and Healthy, every endpoint (GitLab, Vault,
//! Dex's issuer discovery, Argo CD, the Nautes API server) answers over TLS
//! verified against our CA (or the CA given for an external service), and
//! every virtual cluster's API answers. Ingress endpoints are reached at the
//! ingress address, so this works before DNS for the domain exists. It then
//! writes the summary of URLs and where credentials are.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ingress_cluster, management_cluster, traefik_ports};
use crate::catalog;
use crate::components::endpoints;
use crate::components::{certificates as pki, gitlab, vault};
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::{ClusterType, Loaded};
use crate::plan::diff::REFRESH_AFTER;
use crate::plan::{Step, StepSpec};
use crate::steps::hosts;
use crate::steps::kube_target::{self, client, KubeTarget};
use crate::steps::manifests::rollout_timeout;
use crate::util::unix_now;
use crate::wait::{Poll, Wait};

pub const KIND: &str = "platform-health";
pub const STEP_ID: &str = "health";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Expect {
    /// Any HTTP answer below 500: the service is up and its TLS checks out.
    Answers,
    /// 2xx.
    Ok,
    /// Vault's sys/health: 200 (active) or 429 (standby).
    VaultUnsealed,
    /// OpenID discovery whose `issuer` is this.
    Issuer(String),
    /// 2xx with a JSON body whose `status` is this.
    Status(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    pub expect: Expect,
    /// Trust only this CA; `None` with `pkiCa` trusts ours, else system roots.
    pub ca_file: Option<PathBuf>,
    pub pki_ca: bool,
    /// "address:port" the URL's host is reached at (the ingress).
    pub resolve: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    pub management: Option<KubeTarget>,
    pub endpoints: Vec<Endpoint>,
    pub virtual_clusters: Vec<KubeTarget>,
    /// What the installed components hand their users, as their catalog
    /// entries declare it: the step's outputs carry it to `outputs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<ComponentOutput>,
}

/// One of a component's outputs: a URL, or a credential file's name under
/// the outputs directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentOutput {
    pub component: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl StepSpec for HealthSpec {
    const KIND: &'static str = KIND;
}

/// Where ingress traffic arrives: `components.traefik.values.ingressAddress`,
/// else the first server of a K3s ingress cluster.
fn ingress_address(loaded: &Loaded) -> Option<String> {
    let inv = &loaded.inventory;
    if let Some(a) = inv
        .components
        .get(catalog::TRAEFIK.key)
        .and_then(|t| t.values.get("ingressAddress"))
        .and_then(Value::as_str)
    {
        return Some(a.to_string());
    }
    let cluster = ingress_cluster(loaded)?;
    let c = inv.clusters.iter().find(|c| c.name == cluster)?;
    match (c.cluster_type, &c.k3s) {
        (ClusterType::K3s, Some(k)) => k
            .servers
            .first()
            .and_then(|s| hosts::find(loaded, s))
            .map(|h| h.address.clone()),
        _ => None,
    }
}

/// A service behind the ingress: `https://<host>.<domain>:<websecure>`,
/// reached at the ingress address, trusted through our CA.
pub fn ingress_endpoint(
    loaded: &Loaded,
    pki_here: bool,
    name: &str,
    host: &str,
    path: &str,
    expect: Expect,
) -> Endpoint {
    let domain = loaded.inventory.settings.domain.clone().unwrap_or_default();
    let (_, websecure) = traefik_ports(loaded);
    Endpoint {
        name: name.into(),
        url: format!("https://{host}.{domain}:{websecure}{path}"),
        expect,
        ca_file: None,
        pki_ca: pki_here,
        resolve: ingress_address(loaded).map(|a| format!("{a}:{websecure}")),
    }
}

/// The host name of the Nautes API server under the domain.
pub fn nautes_api_host(loaded: &Loaded) -> String {
    loaded
        .inventory
        .components
        .get(catalog::NAUTES.key)
        .and_then(|n| n.values.get("apiHost"))
        .and_then(Value::as_str)
        .unwrap_or(endpoints::NAUTES_API.label())
        .to_string()
}

pub fn plan(loaded: &Loaded, all: &[Step], stack_steps: &[String]) -> Step {
    let inv = &loaded.inventory;
    let domain = inv.settings.domain.clone().unwrap_or_default();
    let pki_here = all.iter().any(|s| s.id == pki::STEP_ID);
    let ingress = |name: &str, host: &str, path: &str, expect: Expect| {
        ingress_endpoint(loaded, pki_here, name, host, path, expect)
    };
    let mut endpoints = Vec::new();
    let mut needs: Vec<String> = stack_steps.to_vec();
    if let Some(step) = all.iter().find(|s| s.id == gitlab::STEP_ID) {
        // Planned in this run by gitlab::plan, so it holds a GitlabSpec.
        let gitlab: gitlab::GitlabSpec =
            crate::engine::decode(&step.spec).expect("the GitLab step planned in this run holds a GitlabSpec");
        endpoints.push(Endpoint {
            name: "GitLab".into(),
            url: format!("{}/api/v4/version", gitlab.url),
            expect: Expect::Answers,
            pki_ca: gitlab.ca_file.is_none() && gitlab.host.is_some(),
            ca_file: gitlab.ca_file,
            resolve: None,
        });
        needs.push(gitlab::STEP_ID.into());
    }
    if let Some(v) = vault::target(loaded) {
        endpoints.push(Endpoint {
            name: "Vault".into(),
            url: format!("{}/v1/sys/health", v.url),
            expect: Expect::VaultUnsealed,
            pki_ca: v.ca_file.is_none() && v.host_step.is_some(),
            ca_file: v.ca_file.clone(),
            resolve: None,
        });
        needs.push(vault::STEP_ID.into());
    }
    let has = |slug: &str| stack_steps.iter().any(|s| s.starts_with(&format!("stack/{slug}/")));
    let host_of = |c: &catalog::Component, subdomain: catalog::Subdomain| match c.key {
        // The one host name the inventory may change (`values.apiHost`).
        k if k == catalog::NAUTES.key => nautes_api_host(loaded),
        _ => subdomain.label().to_string(),
    };
    // What each installed component's catalog entry lists as its outputs.
    let mut outputs = Vec::new();
    for c in catalog::COMPONENTS.iter().filter(|c| has(c.slug)) {
        for (name, at) in c.outputs() {
            let (url, file) = match (at, c.subdomain) {
                (catalog::OutputAt::Url(path), Some(s)) => {
                    (Some(ingress("", &host_of(c, s), path, Expect::Answers).url), None)
                }
                (catalog::OutputAt::File(f), _) => (None, Some(f.to_string())),
                (catalog::OutputAt::Url(_), None) => continue, // the catalog's tests rule it out
            };
            outputs.push(ComponentOutput {
                component: c.key.into(),
                name: name.into(),
                url,
                file,
            });
        }
    }
    // Each web-facing component its catalog entry gives a health endpoint.
    for c in catalog::COMPONENTS {
        let (Some(check), Some(subdomain)) = (&c.health, c.subdomain) else {
            continue;
        };
        if !has(c.slug) {
            continue;
        }
        let host = host_of(c, subdomain);
        let expect = match check.expect {
            catalog::Expect::Answers => Expect::Answers,
            catalog::Expect::Ok => Expect::Ok,
            catalog::Expect::Issuer => Expect::Issuer(subdomain.url(&domain)),
            catalog::Expect::Status(want) => Expect::Status(want.to_string()),
        };
        endpoints.push(ingress(check.name, &host, check.path, expect));
    }
    if pki_here {
        needs.push(pki::STEP_ID.into());
    }
    let virtual_clusters: Vec<KubeTarget> = inv
        .virtual_clusters
        .iter()
        .filter_map(|v| kube_target::target(loaded, &v.name))
        .collect();
    for v in &virtual_clusters {
        needs.extend(v.needs());
    }
    let management = has("argocd")
        .then(|| {
            let argocd = inv.components.get(catalog::ARGOCD.key).and_then(|c| c.cluster.clone());
            argocd
                .or_else(|| management_cluster(loaded))
                .and_then(|m| kube_target::target(loaded, &m))
        })
        .flatten();
    let spec = HealthSpec {
        management,
        endpoints,
        virtual_clusters,
        outputs,
    };
    Step::of(
        STEP_ID,
        "the platform answers: applications healthy, endpoints up",
        &spec,
    )
    .needs(needs)
}

/// One attempt at an endpoint: `Ok(())` when it answered as expected.
async fn probe(client: &reqwest::Client, e: &Endpoint) -> Result<(), String> {
    let resp = client.get(&e.url).send().await.map_err(|err| {
        // reqwest's Display hides the TLS reason in the source chain.
        let mut msg = err.to_string();
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })?;
    let status = resp.status().as_u16();
    match &e.expect {
        Expect::Answers if status < 500 => Ok(()),
        Expect::Ok if (200..300).contains(&status) => Ok(()),
        Expect::VaultUnsealed if status == 200 || status == 429 => Ok(()),
        Expect::VaultUnsealed => Err(match status {
            503 => "Vault is sealed".to_string(),
            501 => "Vault is not initialised".to_string(),
            s => format!("HTTP {s}"),
        }),
        Expect::Issuer(want) if (200..300).contains(&status) => {
            let v: Value = resp.json().await.map_err(|e| format!("discovery is not JSON: {e}"))?;
            if v["issuer"].as_str() == Some(want.as_str()) {
                Ok(())
            } else {
                Err(format!("issuer is {} instead of {want}", v["issuer"]))
            }
        }
        Expect::Status(want) if (200..300).contains(&status) => {
            let v: Value = resp.json().await.map_err(|e| format!("the answer is not JSON: {e}"))?;
            if v["status"].as_str() == Some(want.as_str()) {
                Ok(())
            } else {
                let got = v["status"].as_str().map(str::to_string);
                Err(format!(
                    "status is {} instead of {want}",
                    got.unwrap_or_else(|| v["status"].to_string())
                ))
            }
        }
        _ => Err(format!("HTTP {status}")),
    }
}

pub(super) async fn http_client(ctx: &StepContext, e: &Endpoint) -> Result<reqwest::Client, StepError> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5));
    let ca = match (&e.ca_file, e.pki_ca) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => ctx
            .needs_outputs
            .get(pki::STEP_ID)
            .and_then(|o| o["ca"]["cert"].as_str())
            .map(PathBuf::from),
        _ => None,
    };
    if let Some(path) = ca {
        let pem = std::fs::read(&path).map_err(|err| StepError::new(format!("{}: {err}", path.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|err| StepError::new(err.to_string()))?;
        b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
    }
    if let Some(addr) = &e.resolve {
        let host = reqwest::Url::parse(&e.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let sock = tokio::net::lookup_host(addr.as_str())
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| StepError::new(format!("the ingress address {addr} does not resolve")))?;
        b = b.resolve(&host, sock);
    }
    b.build().map_err(|err| StepError::new(err.to_string()))
}

/// Applications not yet Synced and Healthy, described; empty when all are.
async fn unhealthy_applications(client: &crate::drivers::kube::KubeClient) -> Result<Vec<String>, StepError> {
    let Some(apps) = client
        .list("argoproj.io/v1alpha1", "Application", Some("argocd"))
        .await
        .map_err(|e| StepError::new(e.to_string()))?
    else {
        return Ok(vec!["Argo CD's Application kind is not served".into()]);
    };
    Ok(apps
        .iter()
        .filter_map(|a| {
            let status = a.data.get("status").cloned().unwrap_or_default();
            let sync = status["sync"]["status"].as_str().unwrap_or("Unknown");
            let health = status["health"]["status"].as_str().unwrap_or("Unknown");
            if sync == "Synced" && health == "Healthy" {
                return None;
            }
            let conditions: Vec<String> = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["type"].as_str().unwrap_or("?"),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let name = a.metadata.name.clone().unwrap_or_default();
            let mut line = format!("Application {name}: {sync}/{health}");
            if let Some(m) = status["health"]["message"].as_str() {
                line.push_str(&format!(" ({m})"));
            }
            if !conditions.is_empty() {
                line.push_str(&format!("; {}", conditions.join("; ")));
            }
            Some(line)
        })
        .collect())
}

pub struct HealthHandler;

#[async_trait]
impl Handler for HealthHandler {
    type Spec = HealthSpec;

    async fn apply(&self, ctx: &StepContext, spec: &HealthSpec) -> Result<Value, StepError> {
        let limit = rollout_timeout(ctx);
        let started = Instant::now();
        let mut clients = Vec::new();
        for e in &spec.endpoints {
            clients.push(http_client(ctx, e).await?);
        }
        let management = match &spec.management {
            Some(t) => Some(client(ctx, t).await?),
            None => None,
        };
        let (clients, management) = (&clients, &management);
        // The limit counts from before the clients were made, as it always has.
        Wait::for_(
            "the platform to be healthy (endpoints, virtual clusters, Argo CD Applications)",
            limit,
        )
        .by(started + limit)
        .every(Duration::from_secs(2))
        .until(move || async move {
            let mut problems = Vec::new();
            for (e, c) in spec.endpoints.iter().zip(clients) {
                if let Err(why) = probe(c, e).await {
                    problems.push(format!("{} ({}): {why}", e.name, e.url));
                }
            }
            for t in &spec.virtual_clusters {
                let c = client(ctx, t).await?;
                if let Err(e) = c.server_version().await {
                    problems.push(format!("virtual cluster {}: {e}", t.cluster()));
                }
            }
            if let Some(m) = management {
                problems.extend(unhealthy_applications(m).await?);
            }
            if problems.is_empty() {
                return Ok(Poll::Done(()));
            }
            ctx.progress(format!("waiting: {}", problems[0]));
            let count = match problems.len() {
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            };
            Ok::<_, StepError>(Poll::Pending(format!("{count}:\n  {}", problems.join("\n  "))))
        })
        .await?;
        let summary = summary(ctx, spec);
        let path = ctx.outputs_dir.join("summary.txt");
        std::fs::create_dir_all(&ctx.outputs_dir).map_err(|e| StepError::new(e.to_string()))?;
        std::fs::write(&path, &summary).map_err(|e| StepError::new(format!("{}: {e}", path.display())))?;
        ctx.notice(format!("the platform is up; summary in {}\n{summary}", path.display()));
        Ok(json!({
            "endpoints": spec.endpoints.iter().map(|e| json!({"name": e.name, "url": e.url})).collect::<Vec<_>>(),
            "summary": path,
            "components": spec.outputs.iter().map(|o| match &o.file {
                Some(f) => json!({"component": o.component, "name": o.name, "file": ctx.outputs_dir.join(f)}),
                None => json!({"component": o.component, "name": o.name, "url": o.url}),
            }).collect::<Vec<_>>(),
            // Health is a fact about now: checked on every run.
            REFRESH_AFTER: unix_now(),
        }))
    }

    async fn destroy(&self, _ctx: &StepContext, _spec: &HealthSpec, _outputs: &Value) -> Result<(), StepError> {
        Ok(())
    }
}

/// URLs and where the credentials are; no secret in it.
fn summary(ctx: &StepContext, spec: &HealthSpec) -> String {
    let mut out = String::from("Endpoints:\n");
    for e in &spec.endpoints {
        out.push_str(&format!("  {:<18} {}\n", e.name, e.url));
    }
    out.push_str(&format!(
        "Credentials and certificates: under {} (`nautes-install outputs` lists them)\n",
        ctx.outputs_dir.display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP server answering every request with 200 and `body`.
    async fn serve(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{addr}/api/system/status")
    }

    /// SonarQube answers 200 while it starts: only `status: UP` is healthy.
    #[tokio::test]
    async fn a_status_endpoint_is_healthy_only_with_the_status_it_expects() {
        let client = reqwest::Client::new();
        let endpoint = |url: String| Endpoint {
            name: "SonarQube".into(),
            url,
            expect: Expect::Status("UP".into()),
            ca_file: None,
            pki_ca: false,
            resolve: None,
        };
        let up = serve(r#"{"id":"x","version":"9.5.0","status":"UP"}"#).await;
        assert_eq!(probe(&client, &endpoint(up)).await, Ok(()));
        let starting = serve(r#"{"id":"x","version":"9.5.0","status":"STARTING"}"#).await;
        let err = probe(&client, &endpoint(starting)).await.unwrap_err();
        assert!(err.contains("STARTING instead of UP"), "{err}");
    }

    /// Each component the example installs lists, in the health step, the
    /// outputs its catalog entry declares (its Dex client secret among
    /// them), at its host under the domain; `outputs` shows them from there.
    #[test]
    fn the_health_step_carries_each_installed_components_catalog_outputs() {
        let root = env!("CARGO_MANIFEST_DIR");
        let path = std::path::Path::new(root).join("inventories/single-node-k3s.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = crate::inventory::load_str(&path, &text).unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let steps = crate::components::plan_steps(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let health = steps.iter().find(|s| s.id == STEP_ID).unwrap();
        let spec: HealthSpec = crate::engine::decode(&health.spec).unwrap();
        let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = spec
            .outputs
            .iter()
            .map(|o| {
                (
                    o.component.as_str(),
                    o.name.as_str(),
                    o.url.as_deref(),
                    o.file.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("dex", "issuer", Some("https://dex.nautes.example.com:30443"), None),
                (
                    "argocd",
                    "web UI",
                    Some("https://argocd.nautes.example.com:30443/"),
                    None
                ),
                ("argocd", "Dex client secret", None, Some("argocd/dex-client-secret")),
                (
                    "nautes",
                    "API server",
                    Some("https://api.nautes.example.com:30443/"),
                    None
                ),
                (
                    "harbor",
                    "web UI",
                    Some("https://harbor.nautes.example.com:30443/"),
                    None
                ),
                ("harbor", "Dex client secret", None, Some("harbor/dex-client-secret")),
                ("nexus", "web UI", Some("https://nexus.nautes.example.com:30443/"), None),
                (
                    "sonarqube",
                    "web UI",
                    Some("https://sonarqube.nautes.example.com:30443/"),
                    None
                ),
            ]
        );
    }
}
