//! `casbin-check` (tests/casbin, built by .ci/install.d/47-casbin-check.sh):
//! the real casbin library with Argo CD 2.4's RBAC model and glob matching,
//! answering whether a signed-in user may do something under a policy.csv.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub fn binary() -> Option<PathBuf> {
    super::controlplane::tool("casbin-check")
}

/// Skip (outside CI, with a message) or fail (in CI) without the checker.
pub fn skip_unless_available() -> bool {
    if binary().is_some() {
        return false;
    }
    let why = "casbin-check is not installed (bash .ci/run builds it: .ci/install.d/47-casbin-check.sh)";
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    true
}

/// One question: may `sub`, in `groups`, do `act` on `res` `obj`?
pub struct Ask<'a> {
    pub sub: &'a str,
    pub groups: &'a [&'a str],
    pub res: &'a str,
    pub act: &'a str,
    pub obj: &'a str,
}

/// Argo CD's answers to `questions` under `policy` (policy.csv) and
/// `default_role` (policy.default), in order. Panics when the checker
/// refuses the policy (as Argo CD would refuse to load it).
pub fn answers(policy: &str, default_role: &str, questions: &[Ask]) -> Vec<bool> {
    try_answers(policy, default_role, questions).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`answers`], or the checker's complaint about the policy.
pub fn try_answers(policy: &str, default_role: &str, questions: &[Ask]) -> Result<Vec<bool>, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.csv");
    std::fs::write(&file, policy).unwrap();
    let mut child = Command::new(binary().expect("casbin-check"))
        .arg("-policy")
        .arg(&file)
        .arg("-default")
        .arg(default_role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("casbin-check starts");
    let mut input = String::new();
    for q in questions {
        input
            .push_str(&json!({"sub": q.sub, "groups": q.groups, "res": q.res, "act": q.act, "obj": q.obj}).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    // The checker may refuse the policy before reading a question.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .collect();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    assert_eq!(lines.len(), questions.len(), "one answer per question: {lines:?}");
    Ok(lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["allowed"].as_bool().unwrap()
        })
        .collect())
}
