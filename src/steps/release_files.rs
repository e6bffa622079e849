//! The step that makes a component's files available and verified before any
//! host is touched: from the air-gap bundle (every file checked against the
//! bundle's checksums) or downloaded from the pinned release (checked against
//! the sha256 the project publishes), cached in the workdir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::artifacts::Bundle;
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::{ArtifactMode, Diagnostic, Loaded};
use crate::plan::{Step, StepSpec};
use crate::util::hex;
use crate::util::sha256_file;

pub const KIND: &str = "artifacts";
pub const K3S_BINARY: &str = "k3s";
pub const K3S_INSTALL: &str = "install.sh";
pub const K3S_IMAGES: &str = "k3s-airgap-images-amd64.tar.zst";
const UPSTREAM: &str = "https://github.com";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSpec {
    /// Name the component uses (`k3s`, `install.sh`).
    pub name: String,
    pub required: bool,
    /// Path inside the bundle (air-gap).
    pub bundle_path: String,
    /// Where to download from (online) and where its published sum is.
    pub url: String,
    pub sums_url: Option<String>,
    /// Name of the file in the published sums list.
    pub sums_name: Option<String>,
    /// Expected sha256 when known at plan time (from the bundle's list).
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactsSpec {
    pub component: String,
    pub version: String,
    pub mode: ArtifactMode,
    pub bundle: Option<PathBuf>,
    pub files: Vec<FileSpec>,
}

impl StepSpec for ArtifactsSpec {
    const KIND: &'static str = KIND;
}

/// A verified local file, as the step outputs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalFile {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

pub fn k3s_step_id(version: &str) -> String {
    step_id("k3s", version)
}

fn bundle_root(loaded: &Loaded) -> Option<PathBuf> {
    let b = loaded.inventory.artifacts.bundle.as_ref()?;
    let p = loaded.resolve(b);
    Some(std::path::absolute(&p).unwrap_or(p))
}

/// The K3s files for `version`, as a step; errors name what the bundle lacks.
pub fn k3s_step(loaded: &Loaded, version: &str, path: &str) -> Result<Step, Diagnostic> {
    let a = &loaded.inventory.artifacts;
    // Upstream URLs: files_step sends them through the mirror.
    let mut files = k3s_files(None, version);
    for f in &mut files {
        f.required = f.name != K3S_IMAGES || a.mode == ArtifactMode::Airgap;
    }
    if a.mode != ArtifactMode::Airgap {
        files.retain(|f| f.name != K3S_IMAGES);
    }
    files_step(loaded, "k3s", "K3s", version, files, path)
}

pub fn step_id(component: &str, version: &str) -> String {
    format!("artifacts/{component}/{version}")
}

/// A step that makes `files` of `component` available: from the bundle in
/// air-gap mode (checked now, so a missing file is an inventory error at
/// `path`), downloaded otherwise.
pub fn files_step(
    loaded: &Loaded,
    component: &str,
    title: &str,
    version: &str,
    mut files: Vec<FileSpec>,
    path: &str,
) -> Result<Step, Diagnostic> {
    let a = &loaded.inventory.artifacts;
    let bundle = bundle_root(loaded);
    if a.mode == ArtifactMode::Airgap {
        let Some(root) = &bundle else {
            return Err(Diagnostic::error("artifacts.bundle", "air-gap mode needs a bundle"));
        };
        let opened = Bundle::open(root).map_err(|e| {
            Diagnostic::error("artifacts.bundle", e.to_string())
                .with_hint("build the bundle with `nautes-install bundle fetch` on a connected machine")
                .at(loaded.spans.value("artifacts.bundle"))
        })?;
        let mut missing = Vec::new();
        for f in &mut files {
            f.sha256 = opened.checksums.get(&f.bundle_path).cloned();
            if f.sha256.is_none() && f.required {
                missing.push(f.bundle_path.clone());
            }
        }
        // Optional files are used only if the bundle has them.
        files.retain(|f| f.required || f.sha256.is_some());
        if !missing.is_empty() {
            return Err(Diagnostic::error(
                path,
                format!("the bundle has no {title} {version}: missing {}", missing.join(", ")),
            )
            .with_hint(format!(
                "add them to {} and list them in checksums.sha256",
                root.display()
            ))
            .at(loaded.spans.value(path)));
        }
    }
    for f in &mut files {
        f.url = mirrored(a.download_mirror.as_deref(), &f.url);
        f.sums_url = f.sums_url.as_deref().map(|u| mirrored(a.download_mirror.as_deref(), u));
    }
    let spec = ArtifactsSpec {
        component: component.into(),
        version: version.to_string(),
        mode: a.mode,
        bundle: if a.mode == ArtifactMode::Airgap { bundle } else { None },
        files,
    };
    Ok(Step::of(
        step_id(component, version),
        format!("{title} {version} files"),
        &spec,
    ))
}

/// One file fetched from a pinned URL, or found at `bundle_path` in the bundle.
pub fn pinned_file(name: &str, bundle_path: String, url: String, sha256: Option<&str>) -> FileSpec {
    FileSpec {
        name: name.into(),
        required: true,
        bundle_path,
        url,
        sums_url: None,
        sums_name: None,
        sha256: sha256.map(str::to_string),
    }
}

/// GitHub, where most releases are published. URLs are planned against
/// upstream; `files_step` sends them through the inventory's mirror.
pub const GITHUB: &str = UPSTREAM;

/// Where `url` is downloaded from with `artifacts.downloadMirror` set: a
/// GitHub URL at the mirror's root (`<mirror>/<owner>/<repo>/releases/...`,
/// as a proxy of github.com serves it), any other host under its name
/// (`<mirror>/charts.loft.sh/charts/...`), so one mirror covers every
/// upstream file: charts and manifests as well as binaries.
pub fn mirrored(mirror: Option<&str>, url: &str) -> String {
    let Some(mirror) = mirror.map(|m| m.trim_end_matches('/')) else {
        return url.to_string();
    };
    if let Some(path) = url
        .strip_prefix(UPSTREAM)
        .filter(|p| p.is_empty() || p.starts_with('/'))
    {
        return format!("{mirror}{path}");
    }
    match url.split_once("://") {
        Some((_, rest)) => format!("{mirror}/{rest}"),
        None => url.to_string(),
    }
}

/// Every K3s file of `version` with where it comes from online; the images
/// tarball is marked optional (only air-gapped nodes need it).
pub fn k3s_files(download_mirror: Option<&str>, version: &str) -> Vec<FileSpec> {
    let mirror = mirrored(download_mirror, UPSTREAM);
    let release = format!("{mirror}/k3s-io/k3s/releases/download/{}", url_escape(version));
    let sums = format!("{release}/sha256sum-amd64.txt");
    vec![
        FileSpec {
            name: K3S_BINARY.into(),
            required: true,
            bundle_path: format!("k3s/{version}/{K3S_BINARY}"),
            url: format!("{release}/k3s"),
            sums_url: Some(sums.clone()),
            sums_name: Some("k3s".into()),
            sha256: None,
        },
        FileSpec {
            name: K3S_INSTALL.into(),
            required: true,
            bundle_path: format!("k3s/{version}/{K3S_INSTALL}"),
            // The install script is not in the release's sums list; the tag pins it.
            url: format!("{mirror}/k3s-io/k3s/raw/{}/install.sh", url_escape(version)),
            sums_url: None,
            sums_name: None,
            sha256: None,
        },
        FileSpec {
            name: K3S_IMAGES.into(),
            required: false,
            bundle_path: format!("k3s/{version}/{K3S_IMAGES}"),
            url: format!("{release}/{K3S_IMAGES}"),
            sums_url: Some(sums),
            sums_name: Some(K3S_IMAGES.into()),
            sha256: None,
        },
    ]
}

fn url_escape(s: &str) -> String {
    s.replace('+', "%2B")
}

/// The verified files from an artifacts step's outputs, by name.
pub fn files_from_outputs(outputs: &Value) -> Result<BTreeMap<String, LocalFile>, StepError> {
    serde_json::from_value(outputs.get("files").cloned().unwrap_or(Value::Null))
        .map_err(|e| StepError::new(format!("artifacts step outputs are malformed: {e}")))
}

pub struct ArtifactsHandler;

#[async_trait]
impl Handler for ArtifactsHandler {
    type Spec = ArtifactsSpec;

    async fn apply(&self, ctx: &StepContext, spec: &ArtifactsSpec) -> Result<Value, StepError> {
        let files = match (&spec.mode, &spec.bundle) {
            (ArtifactMode::Airgap, Some(root)) => from_bundle(root, spec).await?,
            (ArtifactMode::Airgap, None) => return Err(StepError::new("air-gap mode without a bundle")),
            (ArtifactMode::Online, _) => download(ctx, spec).await?,
        };
        Ok(json!({ "files": files }))
    }

    async fn destroy(&self, _ctx: &StepContext, _spec: &ArtifactsSpec, _outputs: &Value) -> Result<(), StepError> {
        // Cached downloads are kept: they are the user's, and re-fetching is costly.
        Ok(())
    }
}

async fn from_bundle(root: &Path, spec: &ArtifactsSpec) -> Result<BTreeMap<String, LocalFile>, StepError> {
    let root = root.to_path_buf();
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || {
        let bundle = Bundle::open(&root).map_err(|e| StepError::new(e.to_string()))?;
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for f in &spec.files {
            match bundle.get(&f.bundle_path) {
                Ok(v) if f.sha256.as_deref().is_some_and(|s| s != v.sha256) => problems.push(format!(
                    "`{}` changed since the plan (sha256 {}, planned {})",
                    f.bundle_path,
                    v.sha256,
                    f.sha256.as_deref().unwrap_or("")
                )),
                Ok(v) => {
                    out.insert(
                        f.name.clone(),
                        LocalFile {
                            path: v.path,
                            sha256: v.sha256,
                            size: v.size,
                        },
                    );
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(StepError::new(problems.join("; ")))
        }
    })
    .await
    .map_err(|e| StepError::new(format!("internal error: {e}")))?
}

async fn download(ctx: &StepContext, spec: &ArtifactsSpec) -> Result<BTreeMap<String, LocalFile>, StepError> {
    let timeout = ctx.limits.download;
    let cache = ctx.workdir.join("cache").join(&spec.component).join(&spec.version);
    download_into(spec, &cache, timeout, &|m| ctx.progress(m)).await
}

/// Download `spec`'s files into `dir` (skipping ones already there with the
/// published sum), verifying each against its published sha256.
pub async fn download_into(
    spec: &ArtifactsSpec,
    cache: &Path,
    timeout: std::time::Duration,
    progress: &(dyn Fn(String) + Sync),
) -> Result<BTreeMap<String, LocalFile>, StepError> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(timeout)
        .build()
        .map_err(|e| StepError::new(format!("cannot build an HTTP client: {e}")))?;
    std::fs::create_dir_all(cache).map_err(|e| StepError::new(format!("cannot create {}: {e}", cache.display())))?;
    let mut sums_cache: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for f in &spec.files {
        let expected = match (&f.sums_url, &f.sums_name) {
            (Some(url), Some(name)) => {
                if !sums_cache.contains_key(url) {
                    let text = fetch_text(&client, url).await?;
                    sums_cache.insert(url.clone(), parse_sums(&text));
                }
                Some(
                    sums_cache[url]
                        .get(name)
                        .cloned()
                        .ok_or_else(|| StepError::new(format!("{url} lists no sha256 for `{name}`")))?,
                )
            }
            _ => f.sha256.clone(),
        };
        let dest = cache.join(&f.name);
        if let (Some(want), Ok(have)) = (&expected, sha256_file(&dest)) {
            if &have == want {
                let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
                out.insert(
                    f.name.clone(),
                    LocalFile {
                        path: dest,
                        sha256: have,
                        size,
                    },
                );
                continue;
            }
        }
        progress(format!("downloading {}", f.url));
        let (sha, size) = fetch_file(&client, &f.url, &dest).await?;
        if let Some(want) = &expected {
            if &sha != want {
                let _ = std::fs::remove_file(&dest);
                return Err(StepError::new(format!(
                    "{} does not match its published sha256 (got {sha}, expected {want}); the download was discarded",
                    f.url
                )));
            }
        }
        out.insert(
            f.name.clone(),
            LocalFile {
                path: dest,
                sha256: sha,
                size,
            },
        );
    }
    Ok(out)
}

fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (sum, name) = l.split_once(char::is_whitespace)?;
            Some((
                name.trim().trim_start_matches('*').to_string(),
                sum.to_ascii_lowercase(),
            ))
        })
        .collect()
}

async fn fetch_text(client: &reqwest::Client, url: &str) -> Result<String, StepError> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| StepError::new(format!("GET {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(StepError::new(format!("GET {url}: HTTP {}", resp.status())));
    }
    resp.text().await.map_err(|e| StepError::new(format!("GET {url}: {e}")))
}

/// Stream `url` into `dest` (via a temp file), hashing on the way.
async fn fetch_file(client: &reqwest::Client, url: &str, dest: &Path) -> Result<(String, u64), StepError> {
    use tokio::io::AsyncWriteExt;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| StepError::new(format!("GET {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(StepError::new(format!("GET {url}: HTTP {}", resp.status())));
    }
    let tmp = dest.with_extension("part");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| StepError::new(format!("cannot write {}: {e}", tmp.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StepError::new(format!("GET {url}: {e}")))?
    {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", tmp.display())))?;
    }
    file.sync_all()
        .await
        .map_err(|e| StepError::new(format!("cannot write {}: {e}", tmp.display())))?;
    drop(file);
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| StepError::new(format!("cannot move {} into place: {e}", dest.display())))?;
    Ok((hex(&hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_urls_keep_github_paths_at_the_root_and_other_hosts_by_name() {
        let m = Some("https://m.example/gh/");
        assert_eq!(
            mirrored(m, "https://github.com/k3s-io/k3s/releases/download/v1/k3s"),
            "https://m.example/gh/k3s-io/k3s/releases/download/v1/k3s"
        );
        assert_eq!(
            mirrored(m, "https://charts.loft.sh/charts/vcluster-0.10.1.tgz"),
            "https://m.example/gh/charts.loft.sh/charts/vcluster-0.10.1.tgz"
        );
        // github.com.evil.example is not GitHub.
        assert_eq!(
            mirrored(m, "https://github.com.evil.example/x"),
            "https://m.example/gh/github.com.evil.example/x"
        );
        assert_eq!(mirrored(None, "https://charts.loft.sh/x"), "https://charts.loft.sh/x");
        // GitHub itself (a base others append to) is the mirror's root.
        assert_eq!(mirrored(m, GITHUB), "https://m.example/gh");
    }

    #[test]
    fn sums_lists_parse_both_styles() {
        let m = super::parse_sums("abc  k3s\nDEF *k3s-airgap-images-amd64.tar.zst\n");
        assert_eq!(m["k3s"], "abc");
        assert_eq!(m["k3s-airgap-images-amd64.tar.zst"], "def");
    }
}
