//! What has been done: per step, its status, fingerprint, inputs and
//! outputs. Kept as versioned JSON in the workdir, replaced atomically so a
//! crash at any moment leaves either the old or the new file, never a torn
//! one; between two such writes, changes are appended to its journal
//! ([`journal`]) and folded in at the end of a run.
//! Where it is kept is a [`StateBackend`]: the workdir's file (local, the
//! default) or Secrets in a cluster a team shares ([`kubernetes`]).

pub mod journal;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::util::write_atomic;

/// Bumped when the file's meaning changes; older binaries refuse newer files.
pub const STATE_VERSION: u32 = 1;
const MAX_RUN_HISTORY: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Done,
    Failed,
    Destroying,
    /// Stopped by Ctrl-C / SIGTERM while running; the next run redoes it.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: String,
    pub description: String,
    pub needs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    pub spec: Value,
    #[serde(default)]
    pub settings: Value,
    pub fingerprint: String,
    pub status: StepStatus,
    /// Changes every time the step is applied; dependents record the value
    /// they saw so a re-applied dependency re-runs them even after a crash.
    pub revision: u64,
    #[serde(default)]
    pub needs_revisions: BTreeMap<String, u64>,
    #[serde(default)]
    pub outputs: Value,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub result: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Last revision handed out.
    pub revision: u64,
    pub steps: BTreeMap<String, StepRecord>,
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    /// Step ids of the last plan applied, in plan order: `status` lists
    /// them all, including those that have not run yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    /// Creates in other systems, recorded before their request (see intents.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intents: BTreeMap<String, StepIntents>,
    /// The last journal line this state includes (see [`journal`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            revision: 0,
            steps: BTreeMap::new(),
            runs: Vec::new(),
            planned: Vec::new(),
            intents: BTreeMap::new(),
            journal: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state file {path} is not valid: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("state file {path} was written by a newer nautes-install (state version {found}, this one reads {STATE_VERSION})")]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// A backend other than a file: `place` says which cluster and object.
    #[error("state in {place}: {message}")]
    Remote { place: String, message: String },
}

/// Where the state is kept. `write` gets the whole state as JSON and returns
/// once it is durable; the store calls it one write at a time.
#[async_trait::async_trait]
pub trait StateBackend: Send + Sync {
    /// Where the state lives, for messages (`state file /x/state.json`).
    fn describe(&self) -> String;
    /// The stored state, or an empty one if none was ever written.
    async fn load(&self) -> Result<State, StateError>;
    async fn write(&self, bytes: Vec<u8>) -> Result<(), StateError>;
    /// Append one journal line and return once it is written, after every
    /// line before it (durable once `sync` returns); `false`: this backend
    /// keeps no journal (every change is a `write`, durable when it returns).
    async fn append(&self, _line: Vec<u8>) -> Result<bool, StateError> {
        Ok(false)
    }
    /// Wait until every line appended so far is durable.
    async fn sync(&self) -> Result<(), StateError> {
        Ok(())
    }
    /// The file holding the state, for a backend that is one.
    fn local_path(&self) -> Option<&Path> {
        None
    }
}

/// `<workdir>/state.json`, replaced atomically (temp file, fsync, rename),
/// and its journal beside it.
pub struct LocalBackend {
    pub path: PathBuf,
    journal: journal::JournalFile,
}

impl LocalBackend {
    pub fn new(path: PathBuf) -> LocalBackend {
        LocalBackend {
            journal: journal::JournalFile::new(journal::path_of(&path)),
            path,
        }
    }

    fn journal_error(&self, source: std::io::Error) -> StateError {
        StateError::Write {
            path: journal::path_of(&self.path),
            source,
        }
    }
}

#[async_trait::async_trait]
impl StateBackend for LocalBackend {
    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }

    fn local_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    async fn load(&self) -> Result<State, StateError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || State::load(&path))
            .await
            .map_err(|join| StateError::Read {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            })?
    }

    async fn append(&self, line: Vec<u8>) -> Result<bool, StateError> {
        self.journal
            .append(line)
            .await
            .map(|()| true)
            .map_err(|e| self.journal_error(e))
    }

    async fn sync(&self) -> Result<(), StateError> {
        self.journal.sync().await.map_err(|e| self.journal_error(e))
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), StateError> {
        let path = self.path.clone();
        // The full state includes the journal (its `journal` field says up
        // to which line): once it is in place the journal can go.
        let res = tokio::task::spawn_blocking(move || {
            write_atomic(&path, &bytes, 0o600)?;
            match std::fs::remove_file(journal::path_of(&path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await;
        match res {
            Ok(Ok(())) => {
                self.journal.folded();
                Ok(())
            }
            Ok(Err(source)) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
            Err(join) => Err(StateError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }
}

impl State {
    /// Parse a stored state (file or Secret), refusing newer versions;
    /// `place` names where it came from.
    pub fn parse(bytes: &[u8], place: &str) -> Result<State, String> {
        let probe: Value = serde_json::from_slice(bytes).map_err(|e| format!("{place} is not valid: {e}"))?;
        let found = probe.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
        if found > STATE_VERSION {
            return Err(format!(
                "{place} was written by a newer nautes-install (state version {found}, this one reads {STATE_VERSION})"
            ));
        }
        serde_json::from_value(probe).map_err(|e| format!("{place} is not valid: {e}"))
    }
}

impl StepRecord {
    /// Ordering edges as recorded (for teardown order).
    pub fn ordering(&self) -> Vec<String> {
        self.needs.iter().chain(self.after.iter()).cloned().collect()
    }
}

impl State {
    pub fn load(path: &Path) -> Result<State, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let probe: Value = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.into(),
            message: e.to_string(),
        })?;
        let found = probe.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
        if found > STATE_VERSION {
            return Err(StateError::TooNew {
                path: path.into(),
                found,
            });
        }
        let mut state: State = serde_json::from_value(probe).map_err(|e| StateError::Corrupt {
            path: path.into(),
            message: e.to_string(),
        })?;
        let journal_path = journal::path_of(path);
        match std::fs::read(&journal_path) {
            Ok(bytes) => {
                journal::replay(&mut state, &bytes, &journal_path.display().to_string()).map_err(|message| {
                    StateError::Corrupt {
                        path: journal_path,
                        message,
                    }
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Read {
                    path: journal_path,
                    source,
                })
            }
        }
        Ok(state)
    }

    pub fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    pub fn push_run(&mut self, run: RunRecord) {
        self.runs.push(run);
        if self.runs.len() > MAX_RUN_HISTORY {
            let extra = self.runs.len() - MAX_RUN_HISTORY;
            self.runs.drain(..extra);
        }
    }
}

/// The state shared by concurrently running steps. Writes are coalesced:
/// while one write is in flight, later changes wait and go out together.
/// With a backend that keeps a journal, a write after the first is one
/// appended line of what changed; `compact` (at the end of a run) writes it
/// whole. `update` returns once its change is durable; `record` and `flush`
/// once it is written, in order, to the journal (a killed process loses
/// none of it; the journal's `fdatasync` follows in the background, and the
/// full write at the end makes everything durable). See README "State".
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    backend: Arc<dyn StateBackend>,
    state: std::sync::Mutex<(State, u64)>,
    written: Mutex<Written>,
}

/// What is durable.
#[derive(Default)]
struct Written {
    /// The store's change counter it includes.
    version: u64,
    /// The state as it is durable, once written whole in this process:
    /// journal lines are the differences from it.
    last: Option<State>,
    /// Journal lines since the last full write.
    lines: usize,
}

/// Journal lines after which the next write is a full one, so loading
/// never replays an unbounded journal.
const MAX_JOURNAL_LINES: usize = 4096;

impl StateStore {
    /// A store writing the local file at `path`.
    pub fn new(path: PathBuf, state: State) -> StateStore {
        StateStore::with_backend(Arc::new(LocalBackend::new(path)), state)
    }

    pub fn with_backend(backend: Arc<dyn StateBackend>, state: State) -> StateStore {
        StateStore {
            inner: Arc::new(StoreInner {
                backend,
                state: std::sync::Mutex::new((state, 0)),
                written: Mutex::new(Written::default()),
            }),
        }
    }

    pub fn describe(&self) -> String {
        self.inner.backend.describe()
    }

    /// The state file (empty for a backend that is not a file).
    pub fn path(&self) -> &Path {
        self.inner.backend.local_path().unwrap_or(Path::new(""))
    }

    /// Read the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard.0)
    }

    /// Change the state and wait until the change is durable (for a record
    /// that must survive a power loss before what it guards is done: an
    /// intent before a create that cannot be found again by name).
    pub async fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, StateError> {
        let (result, version) = self.change(f);
        self.flush_to(version).await?;
        self.inner.backend.sync().await?;
        Ok(result)
    }

    /// Change the state and wait until the change is written after every
    /// earlier one (a killed process loses none of them), not until it is
    /// synced to disk: a step's own record, which the step's idempotence
    /// covers should a power loss take it.
    pub async fn record<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, StateError> {
        let (result, version) = self.change(f);
        self.flush_to(version).await?;
        Ok(result)
    }

    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> (R, u64) {
        let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut guard.0);
        guard.1 += 1;
        (r, guard.1)
    }

    /// Change the state in memory only: the change is written with the
    /// next `update`, `record` or `flush`, so it can share that write.
    pub fn stage<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut guard.0);
        guard.1 += 1;
        r
    }

    /// Write every change so far, as `record` does (nothing is written if
    /// none is pending).
    pub async fn flush(&self) -> Result<(), StateError> {
        let version = self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).1;
        self.flush_to(version).await
    }

    /// Make every change durable as one full write, folding in the journal
    /// (nothing is written if everything is durable and no line is pending).
    pub async fn compact(&self) -> Result<(), StateError> {
        let mut written = self.inner.written.lock().await;
        let version = self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).1;
        // A journal on disk that this store has not folded in yet (one a
        // crashed run left, replayed when the state was loaded) goes too.
        let left_over = written.last.is_none()
            && self
                .inner
                .backend
                .local_path()
                .is_some_and(|p| journal::path_of(p).exists());
        if written.version >= version && written.lines == 0 && !left_over {
            return Ok(());
        }
        self.write_whole(&mut written).await
    }

    async fn flush_to(&self, version: u64) -> Result<(), StateError> {
        let mut written = self.inner.written.lock().await;
        if written.version >= version {
            return Ok(());
        }
        if written.lines < MAX_JOURNAL_LINES {
            if let Some(last) = &written.last {
                // What changed since the last durable state, found under the
                // state's lock (a comparison; only changed records are copied).
                let (delta, snapshot_version) = {
                    let guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    (journal::delta(last, &guard.0, last.journal + 1), guard.1)
                };
                let Some(delta) = delta else {
                    written.version = snapshot_version;
                    return Ok(());
                };
                if self.inner.backend.append(journal::encode(&delta)).await? {
                    if let Some(last) = written.last.as_mut() {
                        journal::apply(last, delta);
                    }
                    written.lines += 1;
                    written.version = snapshot_version;
                    return Ok(());
                }
            }
        }
        self.write_whole(&mut written).await
    }

    /// Write the whole state (what `written` is guarded by is ours).
    async fn write_whole(&self, written: &mut Written) -> Result<(), StateError> {
        // A copy, serialized off the async threads: the state's lock is
        // held only to copy it, so steps that stage their end or read their
        // needs' outputs are not held up by the serialization.
        let (mut snapshot, snapshot_version) = {
            let guard = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            (guard.0.clone(), guard.1)
        };
        // It includes every journal line written so far.
        snapshot.journal = written.last.as_ref().map_or(snapshot.journal, |l| l.journal);
        let serialized =
            tokio::task::spawn_blocking(move || serde_json::to_vec_pretty(&snapshot).map(|b| (b, snapshot)))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        let (bytes, snapshot) = serialized.map_err(|e| StateError::Remote {
            place: self.inner.backend.describe(),
            message: format!("cannot be serialized: {e}"),
        })?;
        self.inner.backend.write(bytes).await?;
        written.version = snapshot_version;
        written.last = Some(snapshot);
        written.lines = 0;
        Ok(())
    }
}

/// The write-ahead records of creates in systems that do not forget (see
/// `engine::intents` for how steps use them).
/// One create, from before its request until what it made is removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Unique to this create; the object carries it, so it can be found
    /// even when the answer naming it never arrived.
    pub marker: String,
    /// What the step needs to look for it later (non-secret: a user id,
    /// the highest id that existed before, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub about: Value,
    /// What the create answered (an id), once it was heard; `None` while
    /// the answer may be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<Value>,
    pub at: String,
}

impl Intent {
    /// The id the create answered, if it was heard.
    pub fn made_id(&self) -> Option<u64> {
        self.made.as_ref().and_then(Value::as_u64)
    }
}

/// Per step: what name -> the creates not yet undone.
pub type StepIntents = BTreeMap<String, Vec<Intent>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_newer_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(State::load(&p).unwrap().steps.is_empty());
        std::fs::write(&p, r#"{"version": 99, "revision": 0, "steps": {}}"#).unwrap();
        assert!(matches!(State::load(&p), Err(StateError::TooNew { found: 99, .. })));
        std::fs::write(&p, "{\"version\": 1, \"rev").unwrap();
        assert!(matches!(State::load(&p), Err(StateError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn concurrent_updates_all_reach_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let store = StateStore::new(p.clone(), State::default());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.update(|st| st.next_revision()).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(State::load(&p).unwrap().revision, 20);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
