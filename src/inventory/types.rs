//! The inventory as the user writes it. Every struct denies unknown fields so
//! a typo is an error with a location, never a silently ignored setting.
//! Sections are plain structs (no internally tagged enums) because those lose
//! the field path on errors, and the path is how we point at the user's line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

pub const API_VERSION: &str = "install.nautes.io/v1alpha1";
pub const KIND: &str = "Inventory";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Always `install.nautes.io/v1alpha1` for this release.
    pub api_version: String,
    /// Always `Inventory`.
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub settings: Settings,
    /// Defaults for every host; a host's own fields win.
    #[serde(default)]
    pub ssh: SshDefaults,
    #[serde(default)]
    pub artifacts: Artifacts,
    /// Cloud hosts created with Terraform before anything else.
    #[serde(default)]
    pub infrastructure: Infrastructure,
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// Kubernetes host clusters: bootstrapped with K3s or Kubespray, or brought by the user.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// vclusters (tenant management clusters) running on host clusters.
    #[serde(default)]
    pub virtual_clusters: Vec<VirtualCluster>,
    /// Tenants and their HNC namespace trees.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    #[serde(default)]
    pub components: Components,
    #[serde(default)]
    pub pki: Pki,
    #[serde(default)]
    pub outputs: Outputs,
    /// Where the state and the run lock live: this machine's workdir
    /// (default) or a Kubernetes cluster a team shares.
    #[serde(default)]
    pub state: StateBackendSettings,
    /// User commands run before/after chosen steps.
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Name of this installation (DNS-1123 label).
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Base DNS domain for platform endpoints (e.g. `nautes.example.com`).
    #[serde(default)]
    pub domain: Option<String>,
    /// Steps run at once; the CLI's `--concurrency` wins.
    #[serde(default)]
    pub concurrency: Option<usize>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Before an `apply` that changes or removes anything already installed
    /// (an upgrade, a config change, a teardown of removed parts), write a
    /// backup archive to `<workdir>/backups/`, as `nautes-install backup`
    /// would, encrypted with this passphrase.
    #[serde(default)]
    pub backup_before_upgrade: Option<BackupBeforeUpgrade>,
}

/// `settings.backupBeforeUpgrade`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupBeforeUpgrade {
    /// The archive's passphrase, as a secret reference.
    pub passphrase: SecretRef,
}

/// Every wait the installer makes has a limit, and every limit is here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Establishing an SSH connection (default 30s).
    #[serde(default)]
    pub ssh_connect: Option<HumanDuration>,
    /// One remote or local command (default 10m).
    #[serde(default)]
    pub command: Option<HumanDuration>,
    /// One hook (default 10m).
    #[serde(default)]
    pub hook: Option<HumanDuration>,
    /// A node becoming Ready (default 10m).
    #[serde(default)]
    pub node_ready: Option<HumanDuration>,
    /// A workload rolling out / an object becoming ready (default 10m).
    #[serde(default)]
    pub rollout: Option<HumanDuration>,
    /// One HTTP request to a platform API (default 30s).
    #[serde(default)]
    pub http: Option<HumanDuration>,
    /// One Terraform command (default 30m).
    #[serde(default)]
    pub terraform: Option<HumanDuration>,
    /// One ansible-playbook run (default 60m).
    #[serde(default)]
    pub ansible: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SudoMode {
    /// Connect as root or need no privilege.
    None,
    /// `sudo -n`.
    Passwordless,
    /// `sudo -S` with `sudoPassword` fed on stdin.
    Password,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshDefaults {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Private key; when absent, ssh-agent and ~/.ssh/config decide.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// known_hosts used to verify host keys (default: `<workdir>/known_hosts`).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// An ssh_config file to use instead of ~/.ssh/config.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    #[serde(default)]
    pub sudo: Option<SudoMode>,
    #[serde(default)]
    pub sudo_password: Option<SecretRef>,
    /// Name of a host in `hosts` to jump through.
    #[serde(default)]
    pub bastion: Option<String>,
}

/// Where a secret comes from. Exactly one of `env` or `file`; the value itself
/// never appears in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file holding the secret (must not be readable by group/others).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactMode {
    /// Binaries, images and charts from their pinned public URLs, verified by sha256.
    #[default]
    Online,
    /// Everything from a local bundle directory, verified against its checksums file.
    Airgap,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Artifacts {
    #[serde(default)]
    pub mode: ArtifactMode,
    /// Bundle directory (required in air-gap mode).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// Private registry mirrors: registry host -> list of endpoints.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// CA certificate that signs the private registries.
    #[serde(default)]
    pub registry_ca_file: Option<PathBuf>,
    /// Base URL that mirrors upstream release downloads (online mode), e.g. an
    /// internal proxy of `https://github.com`; default: upstream. GitHub
    /// paths are at its root, other hosts' under their name
    /// (`<mirror>/charts.loft.sh/charts/vcluster-0.10.1.tgz`).
    #[serde(default)]
    pub download_mirror: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Infrastructure {
    #[serde(default)]
    pub terraform: TerraformSettings,
    #[serde(default)]
    pub modules: Vec<TerraformModule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerraformSettings {
    /// `terraform` or `tofu` (or a path); default: whichever is on PATH.
    #[serde(default)]
    pub binary: Option<String>,
    /// Terraform CLI config (filesystem mirror / plugin cache for air-gap).
    #[serde(default)]
    pub cli_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerraformModule {
    pub name: String,
    /// Directory of the Terraform module.
    pub source: PathBuf,
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
    /// Variables whose values are secrets, resolved at run time.
    #[serde(default)]
    pub secret_variables: BTreeMap<String, SecretRef>,
    /// Names of the hosts this module outputs (in `nautes_hosts`), so clusters
    /// can refer to them before they exist.
    #[serde(default)]
    pub provides: Vec<String>,
    /// Settings for the hosts this module creates (what you would write on
    /// a host under `hosts`), e.g. the key of the cloud key pair.
    #[serde(default)]
    pub host_defaults: TerraformHostDefaults,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerraformHostDefaults {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    #[serde(default)]
    pub sudo: Option<SudoMode>,
    #[serde(default)]
    pub sudo_password: Option<SecretRef>,
    /// Name of a host in `hosts` to jump through (cloud hosts behind a bastion).
    #[serde(default)]
    pub bastion: Option<String>,
    /// Preflight rules to waive on these hosts.
    #[serde(default)]
    pub waive: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OsOverride {
    /// os-release ID to assume (e.g. `debian`, `rhel`).
    pub id: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    /// DNS-1123 label; also used as the node name.
    pub name: String,
    /// IP address or DNS name to reach the host over SSH.
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    #[serde(default)]
    pub sudo: Option<SudoMode>,
    #[serde(default)]
    pub sudo_password: Option<SecretRef>,
    /// Name of another host to jump through.
    #[serde(default)]
    pub bastion: Option<String>,
    /// Address other nodes use to reach this one, when it differs from `address`.
    #[serde(default)]
    pub internal_address: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Skip OS detection for an uncommon distribution.
    #[serde(default)]
    pub os: Option<OsOverride>,
    /// Preflight rules to waive on this host (e.g. `swap`, `memory`).
    #[serde(default)]
    pub waive: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterType {
    K3s,
    Kubespray,
    /// An existing cluster reached through a kubeconfig.
    External,
}

/// What a cluster is for (the catalog places runtime releases by it).
pub use crate::catalog::ClusterUsage;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type")]
    pub cluster_type: ClusterType,
    /// Settings for `type: k3s`.
    #[serde(default)]
    pub k3s: Option<K3sCluster>,
    /// Settings for `type: kubespray`.
    #[serde(default)]
    pub kubespray: Option<KubesprayCluster>,
    /// Settings for `type: external`.
    #[serde(default)]
    pub external: Option<ExternalCluster>,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub usage: Vec<ClusterUsage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    /// Pod network (default 10.42.0.0/16).
    #[serde(default)]
    pub pod_cidr: Option<String>,
    /// Service network (default 10.43.0.0/16).
    #[serde(default)]
    pub service_cidr: Option<String>,
    /// Cluster DNS service IP (must lie inside the service CIDR).
    #[serde(default)]
    pub cluster_dns: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K3sCluster {
    /// K3s release, e.g. `v1.27.4+k3s1`.
    pub version: String,
    /// Server hosts; the first initialises the cluster. Several servers use embedded etcd.
    pub servers: Vec<String>,
    #[serde(default)]
    pub agents: Vec<String>,
    /// Reachable API endpoint (load balancer or VIP) written into the kubeconfig.
    #[serde(default)]
    pub api_endpoint: Option<String>,
    #[serde(default)]
    pub tls_san: Vec<String>,
    /// Cluster join token; generated once and kept in the outputs when absent.
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub flannel_backend: Option<String>,
    /// Packaged components to disable (e.g. `traefik`).
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Cordon and drain each node before replacing its binary on upgrade.
    #[serde(default)]
    pub drain_on_upgrade: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubesprayCluster {
    /// Kubespray release, e.g. `v2.23.1`.
    pub version: String,
    /// Kubernetes version Kubespray installs.
    #[serde(default)]
    pub kube_version: Option<String>,
    /// Kubespray checkout (default: from the bundle in air-gap mode).
    #[serde(default)]
    pub path: Option<PathBuf>,
    pub control_plane: Vec<String>,
    #[serde(default)]
    pub workers: Vec<String>,
    /// etcd members (default: the control plane).
    #[serde(default)]
    pub etcd: Vec<String>,
    #[serde(default)]
    pub network_plugin: Option<String>,
    /// Extra group_vars passed to Kubespray.
    #[serde(default)]
    pub extra_vars: serde_json::Map<String, serde_json::Value>,
    /// Reachable API endpoint (load balancer or VIP) written into the kubeconfig.
    #[serde(default)]
    pub api_endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalCluster {
    pub kubeconfig: PathBuf,
    #[serde(default)]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExposeType {
    #[default]
    NodePort,
    Ingress,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expose {
    #[serde(default, rename = "type")]
    pub expose_type: ExposeType,
    /// NodePort for the vcluster API (30000-32767).
    #[serde(default)]
    pub node_port: Option<u16>,
    /// Ingress host name for the vcluster API.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualCluster {
    pub name: String,
    /// Name of the cluster in `clusters` it runs on.
    pub host_cluster: String,
    /// Namespace on the host cluster (default `vcluster-<name>`).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub expose: Expose,
    #[serde(default)]
    pub usage: Vec<ClusterUsage>,
    /// Chart values merged over the ones rendered from this entry.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    pub name: String,
    /// Cluster or virtual cluster holding the tenant's namespaces.
    pub cluster: String,
    /// HNC namespace tree: each root is a full namespace, children are subnamespaces.
    #[serde(default)]
    pub namespaces: Vec<NamespaceNode>,
    /// The data-loss guard: removing what this tenant owns is refused while
    /// it holds data (namespaces running workloads, Harbor projects with
    /// repositories, Nexus repositories with components, a GitLab group with
    /// projects, Vault secrets under the tenant's path) unless this is true
    /// in the run before the removal. `allowDeleteWithWorkloads` is its
    /// former name.
    #[serde(default, alias = "allowDeleteWithWorkloads")]
    pub allow_data_loss: bool,
    /// Who may do what in this tenant: groups as the identity source
    /// (GitLab, through Dex) reports them, each with one role. The installer
    /// turns them into grants on the tenant's namespaces, Argo CD project and
    /// Vault policies; a group removed here loses exactly its grants.
    #[serde(default)]
    pub groups: Vec<TenantGroup>,
    /// Harbor instances this tenant owns (removed with it).
    #[serde(default)]
    pub harbor_instances: Vec<super::registries::HarborInstance>,
    /// Its projects, per Harbor instance.
    #[serde(default)]
    pub harbor: Vec<super::registries::TenantHarbor>,
    /// Its repositories on the shared Nexus.
    #[serde(default)]
    pub nexus: Option<super::registries::TenantNexus>,
    /// A SonarQube pipeline token (`sonarqube: {}`).
    #[serde(default)]
    pub sonarqube: Option<super::registries::TenantSonarqube>,
    /// Its own GitLab group (`gitlab: {group: acme}`), created through the
    /// API and removed with the tenant.
    #[serde(default)]
    pub gitlab: Option<super::registries::TenantGitlab>,
    /// Its applications' sign-in through Dex (ids `<tenant>.<name>`),
    /// removed with the tenant.
    #[serde(default)]
    pub dex_clients: Vec<super::tenant_sign_in::TenantDexClient>,
}

/// One group of a tenant and the role its members have there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantGroup {
    /// The group's name as Dex puts it in the `groups` claim (for GitLab,
    /// the group's full path, e.g. `acme/dev`).
    pub name: String,
    pub role: TenantRole,
}

/// What a tenant group may do in the tenant's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantRole {
    /// Everything in the tenant's namespaces, its Argo CD project and its
    /// Vault paths, including granting access to others.
    Admin,
    /// Deploy and change workloads and read their secrets; no grants.
    Developer,
    /// Read what runs; no secrets.
    Viewer,
}

impl TenantRole {
    pub const ALL: [TenantRole; 3] = [TenantRole::Admin, TenantRole::Developer, TenantRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantRole::Admin => "admin",
            TenantRole::Developer => "developer",
            TenantRole::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceNode {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub children: Vec<NamespaceNode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// In a cluster from `clusters` or `virtualClusters`.
    #[default]
    Cluster,
    /// On a dedicated host from `hosts` (Vault, GitLab).
    Host,
    /// Already running; reached through `external`.
    External,
}

/// Which server `components.vault` installs or expects: HashiCorp Vault or
/// OpenBao, its open-source fork with the same HTTP API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VaultDistribution {
    /// HashiCorp Vault.
    #[default]
    Vault,
    /// OpenBao.
    Openbao,
}

impl VaultDistribution {
    /// As people call it in messages.
    pub fn title(self) -> &'static str {
        match self {
            VaultDistribution::Vault => "Vault",
            VaultDistribution::Openbao => "OpenBao",
        }
    }

    /// The server releases `components.vault.version` may name.
    pub fn releases(self) -> crate::versions::Known {
        match self {
            VaultDistribution::Vault => crate::versions::VAULT_SERVER,
            VaultDistribution::Openbao => crate::versions::OPENBAO_SERVER,
        }
    }
}

impl Component {
    /// The Vault distribution this component names (meaningful for `vault` only).
    pub fn vault_distribution(&self) -> VaultDistribution {
        self.distribution.unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalService {
    pub url: String,
    /// Admin credential for the service.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// CA that signs the service's TLS certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Version to install; default from the pinned version table.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub placement: Placement,
    /// Target cluster or virtual cluster (placement `cluster`).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Target host (placement `host`).
    #[serde(default)]
    pub host: Option<String>,
    /// Existing service (placement `external`).
    #[serde(default)]
    pub external: Option<ExternalService>,
    /// Vault only: which server speaks its API (default `vault`).
    #[serde(default)]
    pub distribution: Option<VaultDistribution>,
    /// Overrides merged over the rendered values / configuration.
    #[serde(default)]
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Take back fields of our objects that another field manager (kubectl
    /// edit, a controller) changed, instead of stopping with a conflict.
    #[serde(default)]
    pub force_conflicts: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// `components`: each configured component by its inventory key. The keys
/// are the catalog's (`crate::catalog::COMPONENTS`), not fields of this
/// type, so a component is declared in one place; validation refuses a key
/// the catalog does not know (with its line), and the JSON schema lists the
/// catalog's keys (see the `JsonSchema` impl below).
///
/// A key with no value (`dex:`) is as good as absent, as it always was.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Components(BTreeMap<String, Option<Component>>);

impl Components {
    /// Every configured component with its inventory key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Component)> {
        self.0.iter().filter_map(|(k, c)| c.as_ref().map(|c| (k.as_str(), c)))
    }

    /// Every key written under `components`, with a value or not.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The component configured under `key`, enabled or not.
    pub fn get(&self, key: &str) -> Option<&Component> {
        self.0.get(key).and_then(Option::as_ref)
    }

    /// The component configured under `key`, if it is not disabled.
    pub fn enabled_one(&self, key: &str) -> Option<&Component> {
        self.get(key).filter(|c| c.enabled)
    }

    /// Whether `key` is configured and not disabled.
    pub fn enabled(&self, key: &str) -> bool {
        self.enabled_one(key).is_some()
    }
}

impl JsonSchema for Components {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Components".into()
    }

    /// One optional property per catalog component, described by its entry;
    /// no other key.
    fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let component = gen.subschema_for::<Component>();
        let properties: serde_json::Map<String, serde_json::Value> = crate::catalog::COMPONENTS
            .iter()
            .map(|c| {
                let described = serde_json::json!({
                    "description": c.about,
                    "anyOf": [component, {"type": "null"}],
                    "default": null,
                });
                (c.key.to_string(), described)
            })
            .collect();
        schemars::json_schema!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The certificates we issue (ingress wildcard, GitLab and Vault hosts,
/// vault-proxy clients) and the CA that signs them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pki {
    /// Your own CA instead of one we generate.
    #[serde(default)]
    pub ca: Option<UserCa>,
    /// Validity of the certificates we issue (default 365d).
    #[serde(default)]
    pub validity: Option<HumanDuration>,
    /// Validity of a CA we generate (default 3650d).
    #[serde(default)]
    pub ca_validity: Option<HumanDuration>,
    /// Re-issue a certificate this long before it expires (default 30d).
    #[serde(default)]
    pub renew_before: Option<HumanDuration>,
}

impl Pki {
    const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
    const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * 86_400);
    const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

    /// Validity of the certificates we issue, default applied.
    pub fn validity(&self) -> Duration {
        self.validity.map_or(Self::DEFAULT_VALIDITY, |d| d.get())
    }

    /// Validity of a CA we generate, default applied.
    pub fn ca_validity(&self) -> Duration {
        self.ca_validity.map_or(Self::DEFAULT_CA_VALIDITY, |d| d.get())
    }

    /// How long before expiry a certificate is re-issued, default applied.
    pub fn renew_before(&self) -> Duration {
        self.renew_before.map_or(Self::DEFAULT_RENEW_BEFORE, |d| d.get())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCa {
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: SecretRef,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outputs {
    /// Where kubeconfigs, credentials and the CA are written (default
    /// `<workdir>/outputs`; a relative path is relative to the inventory file).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StateBackendKind {
    /// `<workdir>/state.json` and an OS file lock (one machine).
    #[default]
    Local,
    /// Secrets and a Lease in a namespace of a cluster (shared by a team).
    Kubernetes,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateBackendSettings {
    #[serde(default)]
    pub backend: StateBackendKind,
    /// Required with `backend: kubernetes`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesStateBackend>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesStateBackend {
    /// A cluster that already exists (not one this inventory installs).
    pub kubeconfig: PathBuf,
    #[serde(default)]
    pub context: Option<String>,
    /// Namespace holding the state Secrets and the lock Lease (must exist).
    pub namespace: String,
    /// Name of the state Secret and the Lease (default
    /// `nautes-install-<metadata.name>`).
    #[serde(default)]
    pub name: Option<String>,
    /// How long the lock outlives a run that stopped renewing it (default 30s).
    #[serde(default)]
    pub lease_duration: Option<HumanDuration>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    pub name: String,
    /// Shell command (`sh -c`) run when the hook's step applies.
    pub run: String,
    /// Shell command run when the hook's step is torn down.
    #[serde(default)]
    pub destroy: Option<String>,
    /// Step ids (or patterns with `*`) this hook runs before.
    #[serde(default)]
    pub before: Vec<String>,
    /// Step ids (or patterns with `*`) this hook runs after.
    #[serde(default)]
    pub after: Vec<String>,
    /// Where to run: `local` (default) or the name of a host.
    #[serde(default)]
    pub on: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: `settings.timeouts.hook`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}
