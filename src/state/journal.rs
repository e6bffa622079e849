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
//! ignored; a bad line followed by good ones is corruption and refused.

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

/// Append `line` to the journal at `path` and make it durable (the
/// directory too when the journal is new, so the file is not lost).
pub fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(line)?;
    f.sync_data()?;
    if new {
        if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            dir.sync_all()?;
        }
    }
    Ok(())
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
        // Garbage before a good line is not a torn tail: refused.
        let mut bad = b"{\"seq\": 9\n".to_vec();
        bad.extend_from_slice(&journal);
        std::fs::write(path_of(&path), &bad).unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1 is not a state record"), "{err}");
    }
}
