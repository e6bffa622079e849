//! The local state's journal: between two full writes of `state.json`,
//! each durable change is one line appended to `state.json.journal` — the
//! step records that changed (or went), and the top-level fields that did —
//! made durable with one `fdatasync`, however many steps' changes it
//! carries (the store's group commit). Rewriting the whole file (every
//! record serialized, written, fsynced, renamed, its directory fsynced) for
//! each step's start was the engine's largest cost on a plan's critical
//! path (see benches/critical_path.rs).
//!
//! A full write folds the journal in: `state.json` records the sequence
//! number of the last line it includes (`journal`), and the journal is
//! removed after it. Loading replays the lines after that number, so a
//! crash between the rename and the removal replays nothing twice. A crash
//! while appending leaves at most the last line torn: a last line that does
//! not end in a newline or does not parse was never acknowledged and is
//! ignored; a bad line followed by good ones is corruption and refused,
//! unless it starts with zeros: blocks a power loss kept from the disk (lines
//! are acknowledged once written, and synced in the background: see
//! [`JournalFile`]), after which nothing is replayed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RunRecord, State, StepIntents, StepRecord};

/// Where the journal of the state file at `state` is kept.
pub fn path_of(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    state.with_file_name(name)
}

/// One appended line: what changed since the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub seq: u64,
    pub revision: u64,
    /// Step records written whole; `None`: the step was removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, Option<StepRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intents: Option<BTreeMap<String, StepIntents>>,
}

/// What differs from `before` in `after`, as line `seq`; `None` if nothing does.
pub fn delta(before: &State, after: &State, seq: u64) -> Option<Delta> {
    let mut steps = BTreeMap::new();
    for (id, rec) in &after.steps {
        if before.steps.get(id) != Some(rec) {
            steps.insert(id.clone(), Some(rec.clone()));
        }
    }
    for id in before.steps.keys() {
        if !after.steps.contains_key(id) {
            steps.insert(id.clone(), None);
        }
    }
    let changed = |same: bool| !same;
    let d = Delta {
        seq,
        revision: after.revision,
        steps,
        runs: changed(before.runs == after.runs).then(|| after.runs.clone()),
        planned: changed(before.planned == after.planned).then(|| after.planned.clone()),
        intents: changed(before.intents == after.intents).then(|| after.intents.clone()),
    };
    let empty = d.steps.is_empty()
        && d.runs.is_none()
        && d.planned.is_none()
        && d.intents.is_none()
        && before.revision == after.revision;
    (!empty).then_some(d)
}

/// Apply one line to `state`.
pub fn apply(state: &mut State, d: Delta) {
    state.revision = d.revision;
    for (id, rec) in d.steps {
        match rec {
            Some(r) => {
                state.steps.insert(id, r);
            }
            None => {
                state.steps.remove(&id);
            }
        }
    }
    if let Some(runs) = d.runs {
        state.runs = runs;
    }
    if let Some(planned) = d.planned {
        state.planned = planned;
    }
    if let Some(intents) = d.intents {
        state.intents = intents;
    }
    state.journal = d.seq;
}

/// The line for `d`, newline included.
pub fn encode(d: &Delta) -> Vec<u8> {
    let mut line = serde_json::to_vec(d).expect("a state delta serializes");
    line.push(b'\n');
    line
}

/// Replay the journal's `bytes` over `state` (the lines after
/// `state.journal`); `place` names the journal for errors.
pub fn replay(state: &mut State, bytes: &[u8], place: &str) -> Result<(), String> {
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, after, whole) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        let parsed = if whole {
            serde_json::from_slice::<Delta>(line).ok()
        } else {
            None
        };
        match parsed {
            Some(d) => {
                if d.seq > state.journal {
                    apply(state, d);
                }
            }
            // The last line, torn by a crash while it was appended: never acknowledged.
            None if after.iter().all(|b| *b == b'\n' || *b == 0) => return Ok(()),
            // Blocks the disk never got (zeros), after a power loss took lines
            // not yet synced: what survived is the lines before them (a later
            // sync covers every earlier line, so nothing after them is older).
            None if line.first() == Some(&0) => return Ok(()),
            None => {
                return Err(format!(
                    "{place}: line {line_no} is not a state record, and more follow it"
                ))
            }
        }
        rest = after;
    }
    Ok(())
}

/// The journal file of one store. A line is appended in order and
/// `append` returns once it is written to the file (in the page cache: a
/// killed process loses nothing written); `fdatasync` runs in the
/// background, one for however many lines were appended while the previous
/// one ran (group commit), and `sync` waits until every line appended so
/// far is on disk. Since the file is only appended to, a later
/// `fdatasync` covers every earlier line. A failed write or sync is
/// sticky: every later `append` and `sync` returns it.
pub struct JournalFile {
    path: PathBuf,
    inner: std::sync::Arc<Syncing>,
}

struct Syncing {
    /// The journal's directory (synced once when the journal is new).
    dir: PathBuf,
    state: std::sync::Mutex<SyncState>,
    /// Lines known durable, and a write or sync error.
    done: tokio::sync::watch::Sender<(u64, Option<String>)>,
}

#[derive(Default)]
struct SyncState {
    /// The open journal, once this store appended to it.
    file: Option<std::sync::Arc<std::fs::File>>,
    /// The journal was created by this store: its directory entry must be
    /// made durable too.
    dir_pending: bool,
    appended: u64,
    synced: u64,
    syncing: bool,
    error: Option<String>,
}

impl JournalFile {
    pub fn new(path: PathBuf) -> JournalFile {
        JournalFile {
            path: path.clone(),
            inner: std::sync::Arc::new(Syncing {
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                state: Default::default(),
                done: tokio::sync::watch::channel((0, None)).0,
            }),
        }
    }

    fn failed(&self) -> Option<std::io::Error> {
        let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.error.clone().map(std::io::Error::other)
    }

    /// Append `line` and return once it is written to the file (not yet
    /// synced: see [`JournalFile::sync`]).
    pub async fn append(&self, line: Vec<u8>) -> std::io::Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let open = self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).file.clone();
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::os::unix::fs::OpenOptionsExt;
            let (file, new) = match open {
                Some(f) => (f, false),
                None => {
                    let new = !path.exists();
                    let f = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o600)
                        .open(&path)?;
                    (std::sync::Arc::new(f), new)
                }
            };
            (&*file).write_all(&line)?;
            Ok((file, new))
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let (file, new) = match written {
            Ok(w) => w,
            Err(e) => {
                // A line may be torn: nothing more may follow it.
                st.error.get_or_insert_with(|| e.to_string());
                self.inner.done.send_replace((st.synced, st.error.clone()));
                return Err(e);
            }
        };
        st.file = Some(file);
        st.dir_pending |= new;
        st.appended += 1;
        if !st.syncing {
            st.syncing = true;
            tokio::spawn(sync_in_background(self.inner.clone()));
        }
        Ok(())
    }

    /// Wait until every line appended so far is durable.
    pub async fn sync(&self) -> std::io::Result<()> {
        let target = self.inner.state.lock().unwrap_or_else(|p| p.into_inner()).appended;
        let mut done = self.inner.done.subscribe();
        let seen = done
            .wait_for(|(synced, error)| *synced >= target || error.is_some())
            .await
            .map(|v| v.1.clone())
            .unwrap_or_else(|_| Some("the journal's syncing stopped".into()));
        match seen {
            Some(e) => Err(std::io::Error::other(e)),
            None => Ok(()),
        }
    }

    /// The journal was folded into a full write (durable itself) and
    /// removed: every line so far is covered, the next one starts a new file.
    pub fn folded(&self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.file = None;
        st.dir_pending = false;
        st.synced = st.appended;
        self.inner.done.send_replace((st.synced, st.error.clone()));
    }
}

/// `fdatasync` the journal until no line is left unsynced (each round
/// covers every line appended before it began).
async fn sync_in_background(inner: std::sync::Arc<Syncing>) {
    loop {
        let (file, dir, target) = {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.synced >= st.appended || st.error.is_some() {
                st.syncing = false;
                return;
            }
            let dir = std::mem::take(&mut st.dir_pending);
            (st.file.clone(), dir, st.appended)
        };
        let dir = dir.then(|| inner.dir.clone());
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(f) = file {
                f.sync_data()?;
            }
            if let Some(dir) = dir {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(()) => st.synced = st.synced.max(target),
            Err(e) => {
                st.error.get_or_insert_with(|| format!("fdatasync: {e}"));
            }
        }
        inner.done.send_replace((st.synced, st.error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateStore, StepStatus};
    use serde_json::json;

    fn record(kind: &str, status: StepStatus) -> StepRecord {
        StepRecord {
            kind: kind.into(),
            description: format!("a {kind} step"),
            needs: vec!["a".into()],
            after: Vec::new(),
            spec: json!({"x": kind}),
            settings: serde_json::Value::Null,
            fingerprint: "f".into(),
            status,
            revision: 1,
            needs_revisions: BTreeMap::new(),
            outputs: json!({"out": 1}),
            started_at: None,
            finished_at: None,
            attempts: 1,
            last_error: None,
        }
    }

    /// A store that wrote a full state, then two journal lines: the state
    /// after each, and the journal's bytes.
    async fn journaled() -> (tempfile::TempDir, Vec<State>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = StateStore::new(path.clone(), State::default());
        let mut states = Vec::new();
        store
            .update(|s| {
                s.steps.insert("a".into(), record("a", StepStatus::Done));
                s.planned = vec!["a".into(), "b".into()];
            })
            .await
            .unwrap();
        states.push(store.read(Clone::clone));
        store
            .update(|s| {
                s.steps.insert("b".into(), record("b", StepStatus::Running));
                s.next_revision();
            })
            .await
            .unwrap();
        states.push(store.read(Clone::clone));
        store
            .update(|s| {
                s.steps.get_mut("b").unwrap().status = StepStatus::Done;
                s.steps.remove("a");
                s.next_revision();
            })
            .await
            .unwrap();
        states.push(store.read(Clone::clone));
        let journal = std::fs::read(path_of(&path)).unwrap();
        (dir, states, journal)
    }

    fn same(a: &State, b: &State) -> bool {
        // `journal` is where the file stands, not what it says.
        serde_json::to_value(&a.steps).unwrap() == serde_json::to_value(&b.steps).unwrap()
            && a.revision == b.revision
            && a.planned == b.planned
    }

    #[tokio::test]
    async fn loading_replays_the_journal_and_a_full_write_folds_it_in() {
        let (dir, states, journal) = journaled().await;
        let path = dir.path().join("state.json");
        assert_eq!(
            journal.iter().filter(|b| **b == b'\n').count(),
            2,
            "two steps' changes, two lines"
        );
        // state.json alone is the first state; with the journal, the last.
        let file: State = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(same(&file, &states[0]));
        assert!(same(&State::load(&path).unwrap(), &states[2]));
        // A full write (the end of a run) folds it in and removes it.
        let store = StateStore::new(path.clone(), State::load(&path).unwrap());
        store.compact().await.unwrap();
        assert!(!path_of(&path).exists());
        assert!(same(&State::load(&path).unwrap(), &states[2]));
        // A later change, folded in too: the file is past the old lines.
        store
            .update(|s| s.steps.get_mut("b").unwrap().status = StepStatus::Failed)
            .await
            .unwrap();
        store.compact().await.unwrap();
        let latest = store.read(Clone::clone);
        // A crash after the rename but before the removal leaves old lines
        // beside a newer file: none is replayed over it.
        std::fs::write(path_of(&path), &journal).unwrap();
        let loaded = State::load(&path).unwrap();
        assert_eq!(loaded.steps["b"].status, StepStatus::Failed);
        assert!(same(&loaded, &latest));
    }

    /// A crash while the last line was appended leaves any prefix of it:
    /// each loads as the state before it, never an error or a half record.
    #[tokio::test]
    async fn a_torn_last_line_is_ignored_at_every_byte() {
        let (dir, states, journal) = journaled().await;
        let path = dir.path().join("state.json");
        let last_start = journal[..journal.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        for cut in last_start..journal.len() {
            std::fs::write(path_of(&path), &journal[..cut]).unwrap();
            let loaded = State::load(&path).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert!(same(&loaded, &states[1]), "cut at {cut} of {}", journal.len());
        }
        std::fs::write(path_of(&path), &journal).unwrap();
        assert!(same(&State::load(&path).unwrap(), &states[2]));
        // Lines the disk never got after a power loss read as zeros, and
        // lines synced later may follow them: what loads is the state before.
        let mut hole = vec![0u8; last_start];
        hole.extend_from_slice(&journal[last_start..]);
        hole.extend_from_slice(&journal[last_start..]);
        std::fs::write(path_of(&path), &hole).unwrap();
        assert!(same(&State::load(&path).unwrap(), &states[0]));
        // Garbage before a good line is not a torn tail: refused.
        let mut bad = b"{\"seq\": 9\n".to_vec();
        bad.extend_from_slice(&journal);
        std::fs::write(path_of(&path), &bad).unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1 is not a state record"), "{err}");
    }

    /// A step's record is in the journal (as the next process, or this one
    /// after a kill, reads it) when `record` returns, before any sync; an
    /// `update` returns only once its line and every earlier one is synced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_is_in_the_file_when_it_returns_and_an_update_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = StateStore::new(path.clone(), State::default());
        store.update(|s| s.revision = 1).await.unwrap(); // the first write: whole
        for i in 0..20u64 {
            store
                .record(|s| {
                    s.steps.insert(format!("s{i}"), record("hook", StepStatus::Running));
                })
                .await
                .unwrap();
            let loaded = State::load(&path).unwrap();
            assert!(loaded.steps.contains_key(&format!("s{i}")), "line {i} not written yet");
        }
        let journal = JournalFile::new(path_of(&path));
        journal.append(b"{}\n".to_vec()).await.unwrap();
        journal.sync().await.unwrap();
        let st = journal.inner.state.lock().unwrap();
        assert_eq!((st.appended, st.synced), (1, 1));
    }

    /// A line that could not be written may be torn: nothing may follow
    /// it, so the error stays, for every later append and sync.
    #[tokio::test]
    async fn a_failed_append_fails_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("gone");
        let journal = JournalFile::new(journal_dir.join("state.json.journal"));
        assert!(journal.append(b"{}\n".to_vec()).await.is_err());
        std::fs::create_dir(&journal_dir).unwrap();
        assert!(journal.append(b"{}\n".to_vec()).await.is_err());
        assert!(journal.sync().await.is_err());
        assert!(!journal_dir.join("state.json.journal").exists());
    }
}
