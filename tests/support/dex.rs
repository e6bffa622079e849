//! The real Dex (v2.32.0, built from its Go module by
//! `.ci/install.d/46-dex.sh`) for one test, on the config the installer
//! renders (`render_dex_config`, the function the Dex step calls), with
//! its GitLab connector pointed at the GitLab stand-in's OAuth endpoints,
//! and id_tokens obtained through the real login flow: GitLab sign-in,
//! GitLab's authorization page, Dex's callback (Dex exchanges the code and
//! reads `/api/v4/user` and `/oauth/userinfo`), Dex's code sent to the
//! client's redirect URI, and the client's code exchange at Dex's `/token`.
//!
//! What differs from the installed Dex, and why:
//! * `web`: HTTPS on `127.0.0.N:443` with a certificate for `dex.<domain>`
//!   from a test CA (`ca.rs`), instead of plain HTTP behind Traefik's TLS:
//!   the issuer `https://dex.<domain>` has no port, so whoever checks it
//!   must reach it at 443, and the address is leased (as the SSH hosts'
//!   are) so tests in parallel each have their own;
//! * `storage`: memory by default; or Dex's `kubernetes` storage with a
//!   `kubeConfigFile` (the installed Dex uses `inCluster`) — with the token
//!   of the `dex` ServiceAccount the installer binds, that tests its
//!   ClusterRole too;
//! * `expiry.idTokens` when a test asks for short-lived tokens (the
//!   installer keeps Dex's default, 24h).
//!
//! The issuer's name resolves to the leased address only where a test
//! says so: its own HTTP calls (`resolve`) and processes started through
//! [`private_hosts`], which run in a mount namespace of their own with
//! /etc/hosts bind-mounted over by a copy that adds the line — the
//! machine's /etc/hosts is never touched.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nautes_install::components::endpoints;
use nautes_install::components::gitlab::DEX_APP_SCOPES;
use nautes_install::components::stack::runtime::{render_dex_config, DexConfig, DexStaticClient};
use nautes_install::components::stack::sign_in;
use nautes_install::components::stack::tenant_clients::TenantClient;
use nautes_install::components::vault_oidc;
use nautes_install::secret::Secret;
use serde_json::{json, Value};

use super::gitlab::GitlabStandin;

/// Where the dex binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    super::controlplane::tool("dex")
}

/// Skip (outside CI, with a message) or fail (in CI) when Dex cannot run
/// here: it needs its binary, and root for port 443 and the mount
/// namespaces of [`private_hosts`]. Returns true to skip.
pub fn skip_unless_available() -> bool {
    let why = if binary().is_none() {
        Some("dex not installed (bash .ci/run builds it: .ci/install.d/46-dex.sh)".to_string())
    } else {
        super::hosts::unavailable()
    };
    match why {
        None => false,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

/// How a test wants its Dex.
pub struct DexOptions {
    /// `settings.domain`: the issuer is `https://dex.<domain>`.
    pub domain: String,
    /// The ids of the static clients (`sign_in`), as the planner would
    /// list them; all of them by default.
    pub clients: Vec<String>,
    /// Dex's `expiry.idTokens` (e.g. "3s"); Dex's default (24h) if None.
    pub id_token_expiry: Option<String>,
    /// A kubeconfig for Dex's kubernetes storage; memory storage if None.
    pub kubeconfig: Option<PathBuf>,
    /// A CA (key, certificate) to sign Dex's serving certificate with; a
    /// new one if None.
    pub ca: Option<(PathBuf, PathBuf)>,
    /// Vault's address, for Vault's client (`vault` in `clients`): its UI
    /// callback is under it.
    pub vault_url: Option<String>,
    /// Dex's OAuth application in GitLab as the installer's GitLab step
    /// made it (client id, secret); if None, one is made here with the
    /// step's redirect URI and scopes.
    pub gitlab_app: Option<(String, String)>,
    /// Redirect URIs by client id for clients planned at URLs of their own
    /// (the Dex step's `redirectUris`, e.g. each Harbor instance's).
    pub redirect_uris: BTreeMap<String, Vec<String>>,
    /// Tenants' own clients, as the installer planned them, with the
    /// secret it kept for each.
    pub tenant_clients: Vec<(TenantClient, String)>,
}

impl DexOptions {
    pub fn new(domain: &str) -> DexOptions {
        DexOptions {
            domain: domain.to_string(),
            clients: sign_in::clients()
                .map(|c| c.id.to_string())
                .chain(sign_in::PUBLIC_CLIENTS.iter().map(|c| c.id.to_string()))
                .collect(),
            id_token_expiry: None,
            kubeconfig: None,
            ca: None,
            vault_url: None,
            gitlab_app: None,
            redirect_uris: BTreeMap::new(),
            tenant_clients: Vec::new(),
        }
    }
}

pub struct Dex {
    pub domain: String,
    /// The leased loopback address Dex listens on (port 443).
    pub address: String,
    dir: tempfile::TempDir,
    child: Child,
    lease: PathBuf,
    /// Confidential clients' secrets, by client id.
    secrets: BTreeMap<String, String>,
    ca_cert: PathBuf,
    gitlab_url: String,
    gitlab_port: u16,
    /// The config Dex runs with (secrets included: never print it).
    config: Value,
}

/// A random hex secret.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Start Dex on `dir`'s config.yaml, appending to its dex.log.
fn spawn(bin: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dex.log"))
        .unwrap();
    Command::new(bin)
        .arg("serve")
        .arg(dir.join("config.yaml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start dex")
}

impl Dex {
    /// Dex for `https://dex.<domain>` with every client, memory storage.
    pub fn start(gitlab: &GitlabStandin, domain: &str) -> Dex {
        Self::start_with(gitlab, DexOptions::new(domain))
    }

    pub fn start_with(gitlab: &GitlabStandin, opts: DexOptions) -> Dex {
        let bin = binary().expect("dex is installed (skip_unless_available first)");
        let dir = tempfile::Builder::new().prefix("dex").tempdir().unwrap();
        let d = dir.path();
        let (address, lease) = super::hosts::lease_address();
        let host = endpoints::DEX.host(&opts.domain);
        let (ca_key, ca_cert) = match &opts.ca {
            Some(ca) => ca.clone(),
            None => super::ca::make_ca(d, "ca", "test CA of Dex", 2),
        };
        std::fs::copy(&ca_key, d.join("signer.key")).unwrap();
        std::fs::copy(&ca_cert, d.join("signer.crt")).unwrap();
        super::ca::make_leaf(
            d,
            "serving",
            &host,
            &format!(
                "subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            ),
            "signer",
            2,
        );

        // Dex's application in GitLab: the one the installer made, or one
        // made as the GitLab step makes it (name aside): the connector's
        // redirect URI, Dex's scopes, confidential.
        let (app_id, app_secret) = match &opts.gitlab_app {
            Some((id, secret)) => (Secret::new(id.as_str()), Secret::new(secret.as_str())),
            None => {
                let admin = gitlab.root_oauth_token();
                let (status, _, app) = gitlab.call_bearer(
                    "POST",
                    "/api/v4/applications",
                    &admin,
                    Some(
                        &json!({"name": "nautes-dex", "redirect_uri": endpoints::dex_callback(&opts.domain),
                                 "scopes": DEX_APP_SCOPES, "confidential": true}),
                    ),
                );
                assert_eq!(status, 201, "creating Dex's GitLab application: {}", app["message"]);
                (
                    Secret::new(app["application_id"].as_str().unwrap()),
                    Secret::new(app["secret"].as_str().unwrap()),
                )
            }
        };

        let mut secrets = BTreeMap::new();
        let mut clients = Vec::new();
        for id in &opts.clients {
            if let Some(public) = sign_in::public_by_id(id) {
                clients.push(DexStaticClient::Public(public));
            } else if id == vault_oidc::CLIENT_ID {
                let secret = random_hex();
                secrets.insert(id.clone(), secret.clone());
                let url = opts.vault_url.as_deref().expect("Vault's client needs vault_url");
                clients.push(DexStaticClient::Vault {
                    secret: Secret::new(secret),
                    redirect_uris: vault_oidc::redirect_uris(url),
                });
            } else {
                let client = sign_in::by_id(id).unwrap_or_else(|| panic!("no Dex client `{id}`"));
                let secret = random_hex();
                secrets.insert(id.clone(), secret.clone());
                match opts.redirect_uris.get(id) {
                    Some(uris) => clients.push(DexStaticClient::AtUrls(client, Secret::new(secret), uris.clone())),
                    None => clients.push(DexStaticClient::Confidential(client, Secret::new(secret))),
                }
            }
        }
        for (client, secret) in &opts.tenant_clients {
            secrets.insert(client.id(), secret.clone());
            clients.push(DexStaticClient::Tenant(client.clone(), Secret::new(secret.as_str())));
        }
        let gitlab_url = gitlab.url();
        let mut config = render_dex_config(&DexConfig {
            domain: &opts.domain,
            gitlab_url: &gitlab_url,
            gitlab_client_id: &app_id,
            gitlab_client_secret: &app_secret,
            clients: &clients,
        });
        // The differences from the installed Dex (see the module's comment).
        config["web"] = json!({"https": format!("{address}:443"),
                               "tlsCert": d.join("serving.crt"), "tlsKey": d.join("serving.key")});
        config["storage"] = match &opts.kubeconfig {
            Some(kc) => json!({"type": "kubernetes", "config": {"kubeConfigFile": kc}}),
            None => json!({"type": "memory"}),
        };
        if let Some(expiry) = &opts.id_token_expiry {
            config["expiry"] = json!({"idTokens": expiry});
        }
        let config_path = d.join("config.yaml");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&config_path)
                .unwrap();
            std::io::Write::write_all(&mut f, serde_yaml::to_string(&config).unwrap().as_bytes()).unwrap();
        }
        // The machine's hosts plus ours, for processes that must find Dex.
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write(d.join("hosts"), format!("{hosts}\n{address} {host}\n")).unwrap();

        let child = spawn(&bin, d);
        let mut dex = Dex {
            domain: opts.domain,
            address,
            child,
            lease,
            secrets,
            ca_cert: d.join("signer.crt"),
            gitlab_url,
            gitlab_port: gitlab.port,
            config,
            dir,
        };
        dex.wait_ready();
        dex
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut restarts = 0;
        loop {
            let url = format!("{}/.well-known/openid-configuration", self.issuer());
            if let Ok((200, _, body)) = self.send(self.get(&url)) {
                let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                assert_eq!(
                    doc["issuer"],
                    json!(self.issuer()),
                    "Dex's discovery names another issuer"
                );
                // Ready to sign once its first key is stored (with kubernetes
                // storage, once the CRDs it made at start are served).
                let keys = format!("{}/keys", self.issuer());
                if let Ok((200, _, body)) = self.send(self.get(&keys)) {
                    let jwks: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if jwks["keys"].as_array().is_some_and(|k| !k.is_empty()) {
                        return;
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // With kubernetes storage Dex makes its CRDs at start and
                // exits when one is not served yet (a loaded apiserver is
                // still establishing it); its Deployment's pod is then
                // restarted by the kubelet, and so is it here, a few times.
                let kubernetes = self.config["storage"]["type"] == "kubernetes";
                if kubernetes && restarts < 5 {
                    restarts += 1;
                    std::thread::sleep(Duration::from_secs(1));
                    self.child = spawn(&binary().expect("dex"), self.dir.path());
                    continue;
                }
                panic!("dex exited ({status}) while starting:\n{}", self.log_tail());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "dex not ready after 60 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of Dex's log, for a failure message (Dex logs no secrets).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("dex.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn issuer(&self) -> String {
        endpoints::dex_issuer(&self.domain)
    }

    pub fn host(&self) -> String {
        endpoints::DEX.host(&self.domain)
    }

    /// The CA that signed Dex's serving certificate.
    pub fn ca_path(&self) -> &Path {
        &self.ca_cert
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca_cert).unwrap()
    }

    /// The /etc/hosts that processes started by [`private_hosts`] see:
    /// the machine's, and `dex.<domain>` at Dex's address.
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// A confidential client's secret (as the client and Dex share it).
    pub fn client_secret(&self, client: &str) -> Option<String> {
        self.secrets.get(client).cloned()
    }

    /// The config Dex runs with (it holds secrets: never print it).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// An HTTP client that finds Dex at its address, trusts Dex's CA (and
    /// nothing else over TLS), and follows no redirect: a browser whose
    /// every step the test makes itself.
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&self.host(), SocketAddr::new(self.address.parse().unwrap(), 443))
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    fn get(&self, url: &str) -> Req {
        Req {
            method: "GET",
            url: url.to_string(),
            headers: vec![],
            form: None,
        }
    }

    /// One request on a thread and runtime of its own (tests are sync):
    /// status, headers (lower-case names), body.
    fn send(&self, req: Req) -> Result<(u16, BTreeMap<String, String>, String), String> {
        let client = self.client();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
                    let mut r = client.request(method, &req.url);
                    for (k, v) in &req.headers {
                        r = r.header(k.as_str(), v.as_str());
                    }
                    if let Some(form) = &req.form {
                        r = r
                            .header("Content-Type", "application/x-www-form-urlencoded")
                            .body(form_encode(form));
                    }
                    let resp = r.send().await.map_err(|e| format!("{e:?}"))?;
                    let status = resp.status().as_u16();
                    let headers = resp
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    Ok((status, headers, resp.text().await.map_err(|e| e.to_string())?))
                })
            })
            .join()
            .unwrap()
        })
    }

    /// Make `user` a GitLab user (the stand-in's) in exactly `groups`
    /// (full paths), with a password for the sign-in form; returns it.
    pub fn gitlab_user(&self, user: &str, groups: &[&str]) -> String {
        let password = format!("pw-{}", random_hex());
        let body = json!({"username": user, "name": format!("User {user}"), "email": format!("{user}@example.com"),
                          "password": password, "groups": groups});
        let (status, reply) = self.send_json(&format!("{}/_standin/add-user", self.gitlab_url), &body);
        assert_eq!(status, 200, "add-user: {reply}");
        password
    }

    fn send_json(&self, url: &str, body: &Value) -> (u16, String) {
        let client = self.client();
        let body = body.to_string();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let resp = client
                        .post(url)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
                    let status = resp.status().as_u16();
                    (status, resp.text().await.unwrap_or_default())
                })
            })
            .join()
            .unwrap()
        })
    }

    /// An id_token for `user`, a GitLab user in exactly `groups`, issued to
    /// `client` (a `sign_in` client id) through the whole login: see
    /// [`Login`] for the steps.
    pub fn id_token(&self, client: &str, user: &str, groups: &[&str]) -> String {
        self.login(client, user, groups).id_token
    }

    /// The whole login, its answers kept for tests that check them.
    pub fn login(&self, client: &str, user: &str, groups: &[&str]) -> Login {
        // 2. The client sends the browser to Dex's authorization endpoint.
        let planned = self.config["staticClients"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == client)
            .and_then(|c| c["redirectURIs"][0].as_str())
            .map(str::to_string);
        let redirect_uri = match (sign_in::by_id(client), planned) {
            // The first URI Dex was configured with for it.
            (Some(_), Some(uri)) => uri,
            (Some(c), None) => c.redirect_uri(&self.domain),
            // `vault login -method=oidc`'s listener.
            (None, _) if client == vault_oidc::CLIENT_ID => vault_oidc::CLI_REDIRECT_URI.to_string(),
            // A tenant's application (`<tenant>.<name>`): its first callback.
            (None, Some(uri)) if client.contains('.') => uri,
            // What `kubectl oidc-login` listens on by default.
            (None, _) => "http://localhost:8000".to_string(),
        };
        let state = random_hex();
        let auth = format!(
            "{}/auth?{}",
            self.issuer(),
            form_encode(&[
                ("client_id", client),
                ("redirect_uri", &redirect_uri),
                ("response_type", "code"),
                ("scope", "openid profile email groups"),
                ("state", &state),
            ])
        );
        let back = self.authorize(&auth, &redirect_uri, user, groups);
        let get = |k: &str| back.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("state").as_deref(),
            Some(state.as_str()),
            "Dex returned another state"
        );
        let code = get("code").unwrap_or_else(|| panic!("no code for the client (error {:?})", get("error")));
        self.exchange(client, &redirect_uri, &code)
    }

    /// The browser's part of a login: `user` (made a GitLab user in
    /// exactly `groups`) signs in to GitLab, follows `auth` (Dex's
    /// authorization URL, as a client made it) through GitLab's
    /// authorization and Dex's callback until Dex sends it to
    /// `redirect_uri`; the query Dex sends there (code and state).
    pub fn authorize(&self, auth: &str, redirect_uri: &str, user: &str, groups: &[&str]) -> Vec<(String, String)> {
        let password = self.gitlab_user(user, groups);
        // 1. The user signs in to GitLab (its sign-in form; the session cookie).
        let (status, headers, _) = self
            .send(Req::form(
                "POST",
                &format!("{}/users/sign_in", self.gitlab_url),
                &[("user[login]", user), ("user[password]", &password)],
            ))
            .unwrap();
        let cookie = headers
            .get("set-cookie")
            .and_then(|c| c.split(';').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("GitLab's sign-in set no session (status {status})"));

        // Dex (one connector) on to /auth/gitlab, and from there to GitLab.
        let mut url = auth.to_string();
        let mut hops = 0;
        while !url.starts_with(&self.gitlab_url) {
            let (status, headers, body) = self.send(self.get(&url)).unwrap();
            url = location(&url, status, &headers, &body, "Dex's authorization");
            hops += 1;
            assert!(hops < 5, "Dex never sent the browser to GitLab");
        }
        // 3. GitLab: the signed-in user authorizes Dex's application (its
        //    page's form posts the request's fields back), then GitLab
        //    sends the browser to Dex's callback with a code.
        let mut req = self.get(&url);
        req.headers.push(("Cookie".into(), cookie.clone()));
        let (status, headers, body) = self.send(req).unwrap();
        let callback = if status == 200 {
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
            let fields = form_decode(query);
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut post = Req::form("POST", &format!("{}/oauth/authorize", self.gitlab_url), &fields);
            post.headers.push(("Cookie".into(), cookie));
            let (status, headers, body) = self.send(post).unwrap();
            location(&url, status, &headers, &body, "GitLab's authorization")
        } else {
            location(&url, status, &headers, &body, "GitLab's authorization")
        };
        assert!(
            callback.starts_with(&endpoints::dex_callback(&self.domain)),
            "GitLab sent the browser elsewhere than Dex's callback"
        );
        // 4. Dex's callback (Dex exchanges GitLab's code, reads the user and
        //    its groups), then its approval, to the client's redirect URI.
        let mut url = callback;
        let mut hops = 0;
        while !url.starts_with(redirect_uri) {
            let (status, headers, body) = self.send(self.get(&url)).unwrap();
            assert!(
                (300..400).contains(&status),
                "Dex answered {status} on its way back to the client: {}\n{}",
                body.chars().take(400).collect::<String>(),
                self.log_tail()
            );
            url = location(&url, status, &headers, &body, "Dex's callback");
            hops += 1;
            assert!(hops < 5, "Dex never sent the browser back to the client");
        }
        form_decode(url.split_once('?').map(|(_, q)| q).unwrap_or(""))
    }

    /// 5. The client exchanges the code at Dex's token endpoint.
    fn exchange(&self, client: &str, redirect_uri: &str, code: &str) -> Login {
        let mut token = Req::form(
            "POST",
            &format!("{}/token", self.issuer()),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("client_id", client),
            ],
        );
        if let Some(secret) = self.secrets.get(client) {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}"));
            token.headers.push(("Authorization".into(), format!("Basic {basic}")));
        }
        let (status, _, body) = self.send(token).unwrap();
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "Dex's token endpoint: {}", reply["error"]);
        let id_token = reply["id_token"].as_str().expect("an id_token").to_string();
        Login {
            claims: claims(&id_token),
            id_token,
        }
    }
}

/// What a login gave the client.
pub struct Login {
    pub id_token: String,
    /// The id_token's payload (its signature is for whoever verifies it).
    pub claims: Value,
}

/// The payload of a JWT, decoded (not verified).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

struct Req {
    method: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    form: Option<Vec<(String, String)>>,
}

impl Req {
    fn form(method: &'static str, url: &str, fields: &[(&str, &str)]) -> Req {
        Req {
            method,
            url: url.to_string(),
            headers: vec![],
            form: Some(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        }
    }
}

/// The absolute Location of a redirect (relative ones against `base`).
fn location(base: &str, status: u16, headers: &BTreeMap<String, String>, body: &str, what: &str) -> String {
    let loc = headers.get("location").unwrap_or_else(|| {
        panic!(
            "{what}: expected a redirect, got {status}: {}",
            body.chars().take(400).collect::<String>()
        )
    });
    reqwest::Url::parse(base).unwrap().join(loc).unwrap().to_string()
}

fn form_encode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k.as_ref()), escape(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_decode(query: &str) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(&format!("http://x/?{query}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `program` run in a mount namespace of its own where /etc/hosts is
/// `hosts` (e.g. [`Dex::hosts_file`]) and each (file, path) of `binds` is
/// bind-mounted at path (an existing file there): the caller adds the
/// program's arguments. The process keeps the pid of the returned command
/// (`unshare` and `sh` exec it), so killing the child kills the program.
pub fn private_hosts(program: &Path, hosts: &Path, binds: &[(PathBuf, PathBuf)]) -> Command {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let mut script = format!("mount --bind {} /etc/hosts", quote(hosts));
    for (file, at) in binds {
        script.push_str(&format!(" && mount --bind {} {}", quote(file), quote(at)));
    }
    script.push_str(" && exec \"$0\" \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(program);
    cmd
}

impl Drop for Dex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.lease);
    }
}
