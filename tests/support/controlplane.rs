//! A real Kubernetes control plane for one test: etcd (Debian's 3.4.23),
//! kube-apiserver, kube-controller-manager and kube-scheduler (built from
//! k8s.io/kubernetes by .ci/install.d/45-controlplane.sh) and kwok playing
//! the kubelets of fake nodes, all on 127.0.0.1 in a temp dir.
//!
//! One control plane per test, not one per test binary: tests create CRDs,
//! nodes, webhooks and other cluster-scoped objects and tear namespaces down,
//! so sharing one would make them order-dependent. It costs ~3.5 s to start
//! (etcd + apiserver to /readyz) and ~300 MB while it runs.
//!
//! Three identities, all static tokens in system:masters: `admin` is the one
//! the installer gets (its requests are what `requests()` returns, read from
//! the apiserver's audit log), `test` is the test's own hand (`request`,
//! `get`), `controllers` runs the controllers, kwok and the stand-ins.
#![allow(dead_code)]

/// Shared with the platform support, which always comes with a control plane.
use super::ca;

use std::cell::Cell;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::port_file::free_port;

const TOOLS: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
];

/// Where a tool is: on PATH, or where .ci/install.d put it.
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/opt/nautes-ci/bin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Why a control plane cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| tool(t).is_none()).collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "{} not installed (bash .ci/run installs and builds them)",
            missing.join(", ")
        ))
    }
}

/// Skip (outside CI, with a message) or fail (in CI) when the control plane
/// cannot run. Returns true to skip.
pub fn skip_unless_available() -> bool {
    match unavailable() {
        None => false,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

/// What a test adds to the apiserver: flags as `name=value` (K3s's
/// `kube-apiserver-arg` form), and a private /etc/hosts with files
/// bind-mounted (file or directory, path it appears at) for it alone.
#[derive(Default)]
pub struct ApiserverExtras {
    pub args: Vec<String>,
    pub hosts: Option<PathBuf>,
    pub binds: Vec<(PathBuf, PathBuf)>,
}

pub struct ControlPlane {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The Service range the apiserver was started with.
    pub service_cidr: String,
    pub token: String,
    test_token: String,
    controllers_token: String,
    children: Vec<(String, Child)>,
    audit_from: Cell<u64>,
    marker: Cell<u32>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, with openssl.
fn make_pki(dir: &Path) {
    let d = dir.to_str().unwrap();
    ca::make_ca(dir, "ca", "test cluster CA", 2);
    ca::make_leaf(
        dir,
        "serving",
        "kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
        "ca",
        2,
    );
    // The service-account signing key: the token controller and TokenRequest
    // sign with it, TokenReview verifies with its public half.
    run(Command::new("openssl").args(["genrsa", "-out", &format!("{d}/sa.key"), "2048"]));
    run(Command::new("openssl").args([
        "rsa",
        "-in",
        &format!("{d}/sa.key"),
        "-pubout",
        "-out",
        &format!("{d}/sa.pub"),
    ]));
}

/// Record every request once it is answered (watches when they start), with
/// no bodies: enough to count requests and writes per client.
const AUDIT_POLICY: &str =
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

impl ControlPlane {
    /// A control plane with one fake node (`kwok-node-0`) ready for pods.
    pub fn start() -> ControlPlane {
        Self::start_with_nodes(&["kwok-node-0"])
    }

    /// A control plane with these fake nodes (none: nodes come from the test).
    pub fn start_with_nodes(nodes: &[&str]) -> ControlPlane {
        Self::start_full(nodes, None, &ApiserverExtras::default())
    }

    /// One fake node, the apiserver on this port (where a NodePort would be).
    pub fn start_at(port: u16) -> ControlPlane {
        Self::start_full(&["kwok-node-0"], Some(port), &ApiserverExtras::default())
    }

    /// One fake node, the apiserver with `extras` (e.g. the OIDC flags the
    /// installer renders, and a private /etc/hosts naming Dex).
    pub fn start_with_apiserver(extras: &ApiserverExtras) -> ControlPlane {
        Self::start_full(&["kwok-node-0"], None, extras)
    }

    /// Both: on this port, with `extras` (a virtual cluster's API that signs users in).
    pub fn start_at_with_apiserver(port: u16, extras: &ApiserverExtras) -> ControlPlane {
        Self::start_full(&["kwok-node-0"], Some(port), extras)
    }

    fn start_full(nodes: &[&str], port: Option<u16>, extras: &ApiserverExtras) -> ControlPlane {
        if let Some(why) = unavailable() {
            panic!("{why}");
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_pki(d);
        let token = format!("admin-{:016x}", rand_u64());
        let test_token = format!("test-{:016x}", rand_u64());
        let controllers_token = format!("controllers-{:016x}", rand_u64());
        std::fs::write(
            d.join("tokens.csv"),
            format!(
                "{token},admin,uid-admin,system:masters\n{test_token},test,uid-test,system:masters\n\
                 {controllers_token},controllers,uid-controllers,system:masters\n"
            ),
        )
        .unwrap();
        std::fs::write(d.join("audit.yaml"), AUDIT_POLICY).unwrap();
        std::fs::write(d.join("audit.log"), "").unwrap();

        let mut cp = ControlPlane {
            port: 0,
            // On loopback: the webhook stand-in (standin_controllers.py)
            // serves a webhook Service on its ClusterIP, where the apiserver
            // calls it. A random /16 per control plane keeps parallel tests apart.
            service_cidr: format!("127.{}.0.0/16", 100 + rand_u64() % 100),
            token,
            test_token,
            controllers_token: controllers_token.clone(),
            children: Vec::new(),
            audit_from: Cell::new(0),
            marker: Cell::new(0),
            dir,
        };
        let started = Instant::now();
        let etcd_port = free_port();
        let etcd_peer = free_port();
        cp.spawn(
            "etcd",
            &[
                "--data-dir",
                &cp.path("etcd"),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{etcd_peer}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{etcd_peer}"),
                // A test's data dies with it; fsync would only cost time.
                "--unsafe-no-fsync",
            ],
        );
        cp.port = port.unwrap_or_else(free_port);
        let port = cp.port.to_string();
        let extra_args: Vec<String> = extras.args.iter().map(|a| format!("--{a}")).collect();
        let mut apiserver = match &extras.hosts {
            Some(hosts) => super::dex::private_hosts(&tool("kube-apiserver").unwrap(), hosts, &extras.binds),
            None => Command::new(tool("kube-apiserver").unwrap()),
        };
        apiserver.args(&extra_args);
        cp.spawn_command(
            "kube-apiserver",
            apiserver,
            &[
                "--etcd-servers",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                &port,
                "--tls-cert-file",
                &cp.path("serving.crt"),
                "--tls-private-key-file",
                &cp.path("serving.key"),
                "--client-ca-file",
                &cp.path("ca.crt"),
                "--token-auth-file",
                &cp.path("tokens.csv"),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                &cp.path("sa.pub"),
                "--service-account-signing-key-file",
                &cp.path("sa.key"),
                "--service-cluster-ip-range",
                &cp.service_cidr.clone(),
                "--authorization-mode",
                "Node,RBAC",
                "--audit-log-path",
                &cp.path("audit.log"),
                "--audit-policy-file",
                &cp.path("audit.yaml"),
                "--audit-log-maxsize",
                "0",
            ],
        );
        cp.wait_ready(started);
        std::fs::write(
            cp.dir.path().join("controllers.kubeconfig"),
            cp.kubeconfig_for(&controllers_token),
        )
        .unwrap();
        let kc = cp.path("controllers.kubeconfig");
        // What the controller-manager and the scheduler share: our identity
        // for everything, no serving port of their own, no leader election.
        let component = |extra: &[&str]| -> Vec<String> {
            let shared = [
                "--kubeconfig",
                &kc,
                "--authentication-kubeconfig",
                &kc,
                "--authorization-kubeconfig",
                &kc,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "0",
                "--leader-elect=false",
            ];
            shared.iter().chain(extra).map(|a| a.to_string()).collect()
        };
        let kcm = component(&[
            "--service-account-private-key-file",
            &cp.path("sa.key"),
            "--root-ca-file",
            &cp.path("ca.crt"),
            "--use-service-account-credentials=false",
            // Nodes the K3s and Kubespray stand-ins register report Ready
            // once and never heartbeat (nothing keeps running): keep them
            // Ready for the life of a test instead of the default 40 s.
            "--node-monitor-grace-period=1h",
            "--node-startup-grace-period=1h",
            // No cloud, no node IPAM (kwok gives pods their IPs).
            "--controllers",
            "*,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller,-node-ipam-controller",
        ]);
        let kcm: Vec<&str> = kcm.iter().map(String::as_str).collect();
        cp.spawn("kube-controller-manager", &kcm);
        let scheduler = component(&[]);
        let scheduler: Vec<&str> = scheduler.iter().map(String::as_str).collect();
        cp.spawn("kube-scheduler", &scheduler);
        cp.spawn(
            "kwok",
            &[
                "--kubeconfig",
                &kc,
                "--manage-nodes-with-annotation-selector",
                "kwok.x-k8s.io/node=fake",
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/kwok_stages.yaml"),
                "--server-address",
                "",
            ],
        );
        for node in nodes {
            cp.add_node(node);
        }
        cp
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        self.spawn_command(name, Command::new(tool(name).unwrap()), args)
    }

    fn spawn_command(&mut self, name: &str, mut cmd: Command, args: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Which of the control plane's processes still run, and the tail of
    /// the log of any that stopped and of the apiserver: for the message of
    /// a test that could not reach the API (a CI run once lost the
    /// apiserver right after it was ready, with nothing to show why).
    pub fn report(&self) -> String {
        let mut out = format!("control plane at {}:\n", self.url());
        for (name, child) in &self.children {
            let alive = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .map(|stat| {
                    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                    !matches!(state, Some(Some('Z' | 'X')))
                })
                .unwrap_or(false);
            out.push_str(&format!(
                "  {name} (pid {}): {}\n",
                child.id(),
                if alive { "running" } else { "EXITED" }
            ));
            if !alive || name == "kube-apiserver" {
                out.push_str(&format!("  --- {name}.log (tail) ---\n{}\n", self.log_tail(name)));
            }
        }
        out
    }

    /// The tail of one component's log, for a failure message.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait_ready(&mut self, started: Instant) {
        loop {
            if let Ok((200, body)) = self.raw_as(&self.test_token.clone(), "GET", "/readyz", "", None) {
                if body.trim() == "ok" {
                    return;
                }
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| child.try_wait().ok().flatten().map(|s| (name.clone(), s)));
            if let Some((name, status)) = exited {
                panic!("{name} exited ({status}) while starting:\n{}", self.log_tail(&name));
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "kube-apiserver not ready after 60 s:\n{}",
                self.log_tail("kube-apiserver")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The token the controllers and the stand-ins act with.
    pub fn controllers_token(&self) -> String {
        self.controllers_token.clone()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The cluster CA's PEM (it signed the apiserver's serving certificate).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    /// The cluster CA's PEM, base64 (as kubeconfigs carry it).
    pub fn ca_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem())
    }

    /// Where the cluster CA's PEM file is.
    pub fn ca_path(&self) -> String {
        self.path("ca.crt")
    }

    /// The env file the K3s stand-in reads on a test host: where the API is,
    /// the admin token (K3s's k3s.yaml is an admin kubeconfig) and the CA.
    pub fn env_file(&self) -> String {
        format!(
            "API_URL={}\nAPI_TOKEN={}\nAPI_CA_B64={}\n",
            self.url(),
            self.token,
            self.ca_b64()
        )
    }

    /// The public key service-account tokens are verified with.
    pub fn sa_public_key_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sa.pub")).unwrap()
    }

    fn kubeconfig_for(&self, token: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n\
             current-context: test\n",
            self.url()
        )
    }

    /// The installer's kubeconfig (user `admin`).
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_for(&self.token)
    }

    /// A kubeconfig file for the test's own tools (kubectl), user `test`.
    pub fn test_kubeconfig_file(&self) -> String {
        let path = self.dir.path().join("test.kubeconfig");
        if !path.exists() {
            std::fs::write(&path, self.kubeconfig_for(&self.test_token)).unwrap();
        }
        path.to_str().unwrap().to_string()
    }

    /// kubectl as the test's hand (another field manager than the installer).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(tool("kubectl").unwrap())
            .arg("--kubeconfig")
            .arg(self.test_kubeconfig_file())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn raw_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<String>,
    ) -> Result<(u16, String), String> {
        let mut call = super::http::Call::new(method, format!("{}{path}", self.url()))
            .header("Authorization", format!("Bearer {token}"))
            .trust(self.ca_pem());
        if let Some(b) = body {
            call = call.header("Content-Type", content_type).body(b);
        }
        call.send()
    }

    /// GET a path as the test; the JSON body (a Status on errors).
    pub fn get(&self, path: &str) -> Value {
        self.request("GET", path, "", &Value::Null).1
    }

    /// Any request as the test: (HTTP status, JSON body).
    pub fn request(&self, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        let body = (!body.is_null()).then(|| body.to_string());
        let (code, text) = self
            .raw_as(&self.test_token, method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Create or update an object as the test (server-side apply, manager `test`).
    pub fn apply_as_test(&self, object: &Value) {
        let out = self.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "test",
                "-f",
                "-",
            ],
            Some(&object.to_string()),
        );
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fake node kwok keeps Ready (pods scheduled on it become Running).
    pub fn add_node(&self, name: &str) {
        self.apply_as_test(&json!({
            "apiVersion": "v1", "kind": "Node",
            // The labels a kubelet puts on its node: releases select on them.
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                   "kubernetes.io/arch": "amd64", "type": "kwok"},
                         "annotations": {"kwok.x-k8s.io/node": "fake"}}
        }));
    }

    /// Wait until every request made so far is in the audit log: a marker
    /// request of the test's goes through the whole chain after them.
    fn sync_audit(&self) {
        let n = self.marker.get() + 1;
        self.marker.set(n);
        let path = format!("/api/v1/namespaces/audit-marker-{n}");
        self.get(&path);
        let started = Instant::now();
        while !std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .contains(&path)
        {
            assert!(started.elapsed() < Duration::from_secs(10), "audit log never caught up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The installer's requests (user `admin`) since the start or the last
    /// `reset_log`, in the order they were answered: method, path, status.
    pub fn requests(&self) -> Vec<Value> {
        self.requests_of("admin")
    }

    /// One user's requests (`admin`: the installer, `test`: the test's own
    /// and its kubectl), as `requests` gives them; the audit markers left out.
    pub fn requests_of(&self, user: &str) -> Vec<Value> {
        self.sync_audit();
        let mut f = std::fs::File::open(self.dir.path().join("audit.log")).unwrap();
        f.seek(SeekFrom::Start(self.audit_from.get())).unwrap();
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(|e| e["user"]["username"] == user)
            .filter(|e| !e["requestURI"].as_str().unwrap_or("").contains("/audit-marker-"))
            .filter(|e| match e["verb"].as_str() {
                // A watch is logged when it starts, and again when it ends.
                Some("watch") => e["stage"] == "ResponseStarted",
                _ => e["stage"] == "ResponseComplete",
            })
            .map(|e| {
                let uri = e["requestURI"].as_str().unwrap_or("");
                let method = match e["verb"].as_str().unwrap_or("") {
                    "create" => "POST",
                    "update" => "PUT",
                    "patch" => "PATCH",
                    "delete" | "deletecollection" => "DELETE",
                    _ => "GET",
                };
                json!({
                    "time": epoch_seconds(e["requestReceivedTimestamp"].as_str().unwrap_or("")),
                    "method": method,
                    "path": uri.split('?').next().unwrap_or(uri),
                    "query": uri.split_once('?').map(|(_, q)| q).unwrap_or(""),
                    "verb": e["verb"],
                    "status": e["responseStatus"]["code"],
                })
            })
            .collect()
    }

    pub fn reset_log(&self) {
        self.sync_audit();
        let len = std::fs::metadata(self.dir.path().join("audit.log")).unwrap().len();
        self.audit_from.set(len);
    }

    /// The installer's requests that change something (everything but reads).
    pub fn writes(&self) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r["method"] != "GET").collect()
    }

    /// The writes not made by the stand-in controllers (whose requests'
    /// paths carry `_standin`): what the installer wrote.
    pub fn installer_writes(&self) -> Vec<Value> {
        self.writes()
            .into_iter()
            .filter(|r| !r["path"].as_str().unwrap_or("").contains("_standin"))
            .collect()
    }

    /// Start the stand-in controllers of tests/support/standin_controllers.py
    /// (a comma list of: webhooks, cert-manager, argocd, webhook-gated)
    /// against this cluster.
    pub fn start_standin_controllers(&mut self, controllers: &str) {
        let dir = self.path("standins");
        let log = std::fs::File::create(self.dir.path().join("standin-controllers.log")).unwrap();
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/standin_controllers.py"
            ))
            .args([
                "--api",
                &self.url(),
                "--token",
                &self.controllers_token,
                "--ca-file",
                &self.path("ca.crt"),
            ])
            .args(["--dir", &dir, "--controllers", controllers])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3");
        self.children.push(("standin-controllers".into(), child));
    }

    /// Make the next `count` writes of ConfigMap `name` fail with a 500 from
    /// the apiserver: a webhook with failurePolicy Fail whose backend fails.
    pub fn fail_configmap_writes(&mut self, name: &str, count: u32) {
        let port_file = self.dir.path().join("fault-webhook.port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/fault_webhook.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--cert", &self.path("serving.crt"), "--key", &self.path("serving.key")])
            .args([
                "--port-file",
                port_file.to_str().unwrap(),
                "--kind",
                "ConfigMap",
                "--name",
                name,
            ])
            .args(["--count", &count.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        self.children.push(("fault-webhook".into(), child));
        let port = super::port_file::wait_for_port(&port_file, "fault webhook");
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
        self.apply_as_test(&json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "test-faults"},
            "webhooks": [{
                "name": "faults.test.local", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 5,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/"), "caBundle": ca},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                           "resources": ["configmaps"]}]
            }]
        }));
        // The apiserver picks webhook configurations up from a watch: wait
        // until it calls ours (the webhook always fails the probe's name).
        let probe = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fault-webhook-probe"}});
        let started = Instant::now();
        while self
            .request(
                "POST",
                "/api/v1/namespaces/default/configmaps?dryRun=All",
                "application/json",
                &probe,
            )
            .0
            != 500
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the fault webhook never became active"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn node_names(&self) -> Vec<String> {
        self.get("/api/v1/nodes")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-12-02T06:00:00.123456Z`),
/// comparable with the Python stand-ins' `time.time()`.
fn epoch_seconds(t: &str) -> f64 {
    let num = |a: usize, b: usize| t.get(a..b).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let frac = t
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| r.trim_end_matches('Z'))
        .and_then(|r| format!("0.{r}").parse::<f64>().ok())
        .unwrap_or(0.0);
    (days * 86400 + num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19)) as f64 + frac
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Clients first, the datastore last.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
