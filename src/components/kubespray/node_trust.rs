//! A Kubespray node's operating system trusts our CA, so containerd can
//! pull from the Harbor installed in a cluster (served with our CA at the
//! ingress). Kubespray 2.23's containerd templates take no per-registry CA
//! (its hosts.toml has `skip_verify` only, and config.toml's registry
//! configs only `insecure_skip_verify`), so the CA goes where containerd —
//! a Go program, reading the system's bundle — finds it: Debian/Ubuntu's
//! `update-ca-certificates` or RHEL's `update-ca-trust`.
//!
//! Go reads the system bundle once per process: a containerd that was
//! running before the CA arrived must be restarted to see it (its
//! containers keep running through a restart).

use crate::engine::StepError;
use crate::steps::remote::{run_checked, Remote};

/// The file name our CA gets in the trust store's source directory.
const NAME: &str = "nautes-ca.crt";

/// What laying our CA down did on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The node already trusted exactly this CA.
    Unchanged,
    /// Newly trusted; containerd was not running (it will start with it).
    Added,
    /// Newly trusted while containerd was running: restart it once the
    /// playbook is done.
    AddedWhileContainerdRan,
}

/// Make `node` trust `ca_pem` (one round trip; nothing written when it
/// already does).
pub async fn trust(node: &dyn Remote, ca_pem: &str) -> Result<Trust, StepError> {
    let out = run_checked(node, &script(ca_pem)).await?;
    match out.stdout.trim() {
        "unchanged" => Ok(Trust::Unchanged),
        "added" => Ok(Trust::Added),
        "added-running" => Ok(Trust::AddedWhileContainerdRan),
        other => Err(StepError::new(format!(
            "laying our CA into {}'s trust store answered `{other}`, not added/unchanged",
            node.host()
        ))),
    }
}

/// Restart containerd on a node whose trust changed under it.
pub async fn restart_containerd(node: &dyn Remote) -> Result<(), StepError> {
    run_checked(node, "systemctl restart containerd").await.map(|_| ())
}

/// The shell that finds the distribution's trust store, compares and
/// updates it. The PEM is public (a CA certificate), so it may travel in
/// the command.
fn script(ca_pem: &str) -> String {
    format!(
        r#"set -e
if command -v update-ca-certificates >/dev/null 2>&1; then dir=/usr/local/share/ca-certificates; update=update-ca-certificates
elif command -v update-ca-trust >/dev/null 2>&1; then dir=/etc/pki/ca-trust/source/anchors; update="update-ca-trust extract"
else echo "neither update-ca-certificates nor update-ca-trust is installed: containerd cannot be made to trust Harbor's certificate (install the ca-certificates package)" >&2; exit 3
fi
new=$(mktemp)
trap 'rm -f "$new"' EXIT
cat > "$new" <<'NAUTES_CA_PEM'
{pem}
NAUTES_CA_PEM
if cmp -s "$new" "$dir/{NAME}"; then echo unchanged; exit 0; fi
mkdir -p "$dir"
install -m 0644 "$new" "$dir/{NAME}"
$update >/dev/null
if systemctl is-active --quiet containerd 2>/dev/null; then echo added-running; else echo added; fi
"#,
        pem = ca_pem.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_carries_the_pem_whole_and_names_the_store_of_each_family() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let s = script(pem);
        assert!(s.contains(
            "<<'NAUTES_CA_PEM'\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\nNAUTES_CA_PEM\n"
        ));
        assert!(s.contains("/usr/local/share/ca-certificates") && s.contains("/etc/pki/ca-trust/source/anchors"));
        assert!(s.contains("cmp -s \"$new\" \"$dir/nautes-ca.crt\""));
    }
}
