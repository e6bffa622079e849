//! Helm, client side only: `helm template` renders a chart to manifests,
//! which the apply engine then applies like any other. Helm never talks to
//! the cluster, so there is one way objects reach it and one record of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

pub struct Template<'a> {
    pub binary: PathBuf,
    pub release: &'a str,
    /// A chart directory or packaged `.tgz`.
    pub chart: &'a Path,
    pub namespace: &'a str,
    /// Values as YAML; may hold secrets, so it is written 0600 and removed.
    pub values_yaml: String,
    /// Helm's cache/config/data live here, not in the user's home.
    pub home: &'a Path,
    pub timeout: Duration,
}

/// The `helm` to run: `NAUTES_HELM` if set, else `helm` from PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("NAUTES_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"))
}

/// Render the chart; the manifests as one YAML stream.
pub async fn template(t: &Template<'_>) -> Result<String, String> {
    std::fs::create_dir_all(t.home).map_err(|e| format!("cannot create {}: {e}", t.home.display()))?;
    let values = t.home.join(format!("values-{}-{}.yaml", t.release, std::process::id()));
    crate::secret::write_private(&values, &crate::secret::Secret::new(t.values_yaml.clone()))
        .map_err(|e| format!("cannot write {}: {e}", values.display()))?;
    let mut cmd = Command::new(&t.binary);
    cmd.arg("template")
        .arg(t.release)
        .arg(t.chart)
        .args(["--namespace", t.namespace, "--include-crds", "--values"])
        .arg(&values)
        .env("HELM_CACHE_HOME", t.home.join("cache"))
        .env("HELM_CONFIG_HOME", t.home.join("config"))
        .env("HELM_DATA_HOME", t.home.join("data"))
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(t.timeout, cmd.output()).await;
    let _ = std::fs::remove_file(&values);
    let output = match output {
        Err(_) => {
            return Err(format!(
                "helm template of {} took longer than {:?}",
                t.chart.display(),
                t.timeout
            ))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "`{}` not found: Helm 3 is needed to render chart {} (install it, or set NAUTES_HELM to its path)",
                t.binary.display(),
                t.chart.display()
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", t.binary.display())),
        Ok(Ok(o)) => o,
    };
    if !output.status.success() {
        return Err(format!(
            "helm template of {} failed ({}): {}",
            t.chart.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("helm template of {} printed non-UTF-8", t.chart.display()))
}
