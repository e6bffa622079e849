//! How long a step may wait for each kind of thing, with every default
//! applied: the engine hands these to steps and knows nothing of where they
//! came from (the inventory's `settings.timeouts`, turned into limits by the
//! command that starts the run).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Establishing an SSH connection, retries included.
    pub ssh_connect: Duration,
    /// One remote or local command (Helm's included).
    pub command: Duration,
    /// A node becoming Ready.
    pub node_ready: Duration,
    /// A workload rolling out / an object becoming ready.
    pub rollout: Duration,
    /// One HTTP request to a platform API.
    pub http: Duration,
    /// One download of a release file: large image tarballs take longer
    /// than an API call unless the user set `http` themselves.
    pub download: Duration,
    /// One Terraform command.
    pub terraform: Duration,
    /// One ansible-playbook run.
    pub ansible: Duration,
}

const MINUTE: u64 = 60;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            ssh_connect: Duration::from_secs(30),
            command: Duration::from_secs(10 * MINUTE),
            node_ready: Duration::from_secs(10 * MINUTE),
            rollout: Duration::from_secs(10 * MINUTE),
            http: Duration::from_secs(30),
            download: Duration::from_secs(10 * MINUTE),
            terraform: Duration::from_secs(30 * MINUTE),
            ansible: Duration::from_secs(60 * MINUTE),
        }
    }
}
