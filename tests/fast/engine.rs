//! The engine through the real binary, with hooks as steps: ordering,
//! parallelism, failure isolation, resume after SIGKILL, lock contention,
//! destroy order, and a state file that is never left torn.

use crate::support::cli;
use crate::support::inventory::InventoryBuilder;

use std::time::Duration;

use cli::{code, sigkill, stderr, stdout, wait_for, Scratch};

/// An inventory of hooks only (added with `.hook` and `.logging`).
fn hooks() -> InventoryBuilder {
    InventoryBuilder::new()
}

trait LoggingHook {
    /// A hook `name` that appends its name to `log` (so runs can be counted
    /// and ordered), and to `destroyed` when torn down.
    fn logging(self, name: &str, after: &[&str]) -> Self;
}

impl LoggingHook for InventoryBuilder {
    fn logging(self, name: &str, after: &[&str]) -> Self {
        self.hook(
            name,
            &format!("echo {name} >> log"),
            after,
            Some(&format!("echo {name} >> destroyed")),
        )
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

fn plan_json(s: &Scratch) -> serde_json::Value {
    let out = s
        .command(&["--output", "json", "plan", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("plan prints JSON")
}

fn reasons(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn plan_orders_steps_and_explains_changes_after_an_edit() {
    let s = Scratch::new();
    let body = |b_cmd: &str| {
        hooks()
            .logging("c", &["b"])
            .hook("b", b_cmd, &["a"], None)
            .logging("a", &[])
            .logging("d", &[])
    };
    s.write(&body("echo b >> log"));
    let first = reasons(&plan_json(&s));
    let ids: Vec<&str> = first.iter().map(|(id, _)| id.as_str()).collect();
    let pos = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert!(
        pos("hook/a") < pos("hook/b") && pos("hook/b") < pos("hook/c"),
        "{ids:?}"
    );
    assert!(first.iter().all(|(_, r)| r == "new"), "{first:?}");

    let out = s.run("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&s.read("log")).len(), 4);
    assert!(reasons(&plan_json(&s)).iter().all(|(_, r)| r == "unchanged"));

    // Editing b re-runs b (inputs) and c (dependency) and nothing else.
    s.write(&body("echo b2 >> log"));
    let after_edit: std::collections::BTreeMap<_, _> = reasons(&plan_json(&s)).into_iter().collect();
    assert_eq!(after_edit["hook/a"], "unchanged");
    assert_eq!(after_edit["hook/b"], "inputs_changed");
    assert_eq!(after_edit["hook/c"], "dependency_changed");
    assert_eq!(after_edit["hook/d"], "unchanged");
    let text = s.command(&["plan", "-i", "inventory.yaml"]).output().unwrap();
    let text = stdout(&text);
    assert!(text.contains("~ hook/c  dependency changed: hook/b"), "{text}");
    assert!(
        text.contains("~ hook/b  inputs changed: run"),
        "names the field: {text}"
    );
    assert!(!text.contains("needs:"), "needs only on request: {text}");
    let verbose = s.command(&["-v", "plan", "-i", "inventory.yaml"]).output().unwrap();
    assert!(stdout(&verbose).contains("needs: hook/a"), "{}", stdout(&verbose));
    let json = plan_json(&s);
    let b = json["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "hook/b")
        .unwrap();
    assert_eq!(b["fields"], serde_json::json!(["run"]));
    assert_eq!(b["needs"], serde_json::json!(["hook/a"]));
    assert!(text.contains("Plan: 2 to apply, 0 to destroy, 2 unchanged."), "{text}");

    assert_eq!(code(&s.run("apply", &[])), 0);
    let log = lines(&s.read("log"));
    assert_eq!(&log[4..], ["b2", "c"], "only b and c re-ran, in order");
}

#[test]
fn independent_steps_overlap_and_concurrency_one_serialises_them() {
    for (concurrency, expect_overlap) in [("4", true), ("1", false)] {
        let s = Scratch::new();
        let mut body = hooks();
        for name in ["p1", "p2", "p3"] {
            // Each records when it started and ended; a barrier-free check of overlap.
            let run = format!("date +%s%N > {name}.start; sleep 1; date +%s%N > {name}.end");
            body = body.hook(name, &run, &[], None);
        }
        s.write(&body);
        let out = s.run("apply", &["--concurrency", concurrency]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let t = |f: &str| s.read(f).trim().parse::<u128>().unwrap();
        let starts: Vec<u128> = ["p1", "p2", "p3"].iter().map(|n| t(&format!("{n}.start"))).collect();
        let ends: Vec<u128> = ["p1", "p2", "p3"].iter().map(|n| t(&format!("{n}.end"))).collect();
        let all_overlap = starts.iter().max() < ends.iter().min();
        let mut spans: Vec<(u128, u128)> = starts.into_iter().zip(ends).collect();
        spans.sort();
        let any_overlap = spans.windows(2).any(|w| w[1].0 < w[0].1);
        if expect_overlap {
            assert!(
                all_overlap,
                "with concurrency {concurrency} all three should run at once: {spans:?}"
            );
        } else {
            assert!(!any_overlap, "with concurrency 1 no two may overlap: {spans:?}");
        }
    }
}

#[test]
fn a_failure_blocks_dependents_lets_siblings_finish_and_is_retried() {
    let s = Scratch::new();
    let body = |fail: bool| {
        let bad = if fail {
            "echo boom >&2; exit 3"
        } else {
            "echo bad >> log"
        };
        hooks().hook("bad", bad, &[], None).logging("after-bad", &["bad"]).hook(
            "sibling",
            "sleep 0.3; echo sibling >> log",
            &[],
            None,
        )
    };
    s.write(&body(true));
    let out = s.run("apply", &[]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("hook `bad` (apply) ended with exit status 3"), "{err}");
    assert!(err.contains("boom"), "stderr tail is quoted: {err}");
    assert!(
        err.contains("skip hook/after-bad: it needs hook/bad, which failed"),
        "{err}"
    );
    assert!(
        err.contains("1 done, 0 unchanged, 1 failed, 1 skipped because hook/bad failed"),
        "{err}"
    );
    assert_eq!(
        lines(&s.read("log")),
        ["sibling"],
        "the sibling finished, the dependent never ran"
    );
    assert_eq!(s.step_status("hook/bad").as_deref(), Some("failed"));

    s.write(&body(false));
    let out = s.run("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        lines(&s.read("log")),
        ["sibling", "bad", "after-bad"],
        "sibling not redone"
    );
}

#[test]
fn an_apply_killed_mid_step_resumes_without_redoing_finished_steps() {
    let s = Scratch::new();
    s.write(
        &hooks()
            .logging("first", &[])
            // The slow step leaves its pid so the test can clean up the orphan.
            .hook(
                "slow",
                "echo slow >> log; if [ ! -e resume ]; then echo $$ > slow.pid; exec sleep 60; fi",
                &["first"],
                None,
            )
            .logging("last", &["slow"])
            .logging("other", &[]),
    );
    let mut child = s.spawn("apply", &["--concurrency", "1"]);
    wait_for("the slow step to start", Duration::from_secs(20), || {
        s.path().join("slow.pid").exists()
    });
    sigkill(child.id());
    let _ = child.wait();
    if let Ok(pid) = s.read("slow.pid").trim().parse::<u32>() {
        sigkill(pid);
    }
    assert_eq!(s.step_status("hook/first").as_deref(), Some("done"));
    assert_eq!(
        s.step_status("hook/slow").as_deref(),
        Some("running"),
        "the kill left the step recorded as running"
    );

    let plan = reasons(&plan_json(&s));
    assert!(plan.contains(&("hook/slow".into(), "interrupted".into())), "{plan:?}");
    assert!(plan.contains(&("hook/first".into(), "unchanged".into())), "{plan:?}");

    std::fs::write(s.path().join("resume"), "").unwrap();
    let out = s.run("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ended without releasing the workdir"),
        "stale lock noticed: {err}"
    );
    let log = lines(&s.read("log"));
    assert_eq!(
        log.iter().filter(|l| *l == "first").count(),
        1,
        "first is not redone: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "slow").count(),
        2,
        "slow is re-run: {log:?}"
    );
    assert_eq!(log.iter().filter(|l| *l == "last").count(), 1, "{log:?}");
    assert_eq!(log.iter().filter(|l| *l == "other").count(), 1, "{log:?}");
    let state = s.state();
    assert_eq!(state["steps"]["hook/slow"]["attempts"], 2);
    assert_eq!(state["steps"]["hook/first"]["attempts"], 1);
}

#[test]
fn a_second_apply_is_refused_while_the_first_holds_the_lock() {
    let s = Scratch::new();
    s.write(&hooks().hook(
        "hold",
        "touch holding; while [ ! -e release ]; do sleep 0.05; done",
        &[],
        None,
    ));
    let mut first = s.spawn("apply", &[]);
    wait_for("the first apply to hold the lock", Duration::from_secs(20), || {
        s.path().join("holding").exists()
    });
    let second = s.run("apply", &[]);
    assert_eq!(code(&second), 4);
    let err = stderr(&second);
    assert!(
        err.contains(&format!("pid {}", first.id())),
        "names the holder's pid: {err}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(err.contains(host.trim()), "names the holder's host: {err}");
    assert!(err.contains("since 20"), "names the start time: {err}");
    std::fs::write(s.path().join("release"), "").unwrap();
    assert!(first.wait().unwrap().success());
    assert_eq!(code(&s.run("apply", &[])), 0, "free again once the first exits");
}

#[test]
fn destroy_walks_recorded_steps_in_reverse_dependency_order() {
    let s = Scratch::new();
    s.write(
        &hooks()
            .logging("base", &[])
            .logging("middle", &["base"])
            .logging("top", &["middle"]),
    );
    assert_eq!(code(&s.run("apply", &[])), 0);
    let plan = s
        .command(&["--output", "json", "plan", "-i", "inventory.yaml", "--destroy"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["destroy"],
        serde_json::json!(["hook/top", "hook/middle", "hook/base"])
    );

    let refused = s.run("destroy", &[]);
    assert_eq!(code(&refused), 2, "no terminal and no --yes: refused");
    assert!(s.read("destroyed").is_empty());

    let out = s
        .command(&["--yes", "destroy", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&s.read("destroyed")), ["top", "middle", "base"]);
    assert_eq!(
        s.state()["steps"],
        serde_json::json!({}),
        "each step is forgotten once torn down"
    );
    let again = s
        .command(&["--yes", "destroy", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&again), 0, "destroying nothing is fine");
}

#[test]
fn a_step_removed_from_the_inventory_is_torn_down_on_apply() {
    let s = Scratch::new();
    s.write(&hooks().logging("keep", &[]).logging("drop", &[]));
    assert_eq!(code(&s.run("apply", &[])), 0);
    s.write(&hooks().logging("keep", &[]));
    let plan = plan_json(&s);
    assert_eq!(plan["removals"][0]["id"], "hook/drop");
    let out = s.command(&["--yes", "apply", "-i", "inventory.yaml"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&s.read("destroyed")), ["drop"]);
    assert!(s.state()["steps"].get("hook/drop").is_none());
    // The first apply ran both at once (any order); the second ran neither.
    let mut log = lines(&s.read("log"));
    log.sort();
    assert_eq!(log, ["drop", "keep"], "keep was not re-run");
}

#[test]
fn only_and_from_choose_steps_with_what_they_need() {
    let s = Scratch::new();
    s.write(
        &hooks()
            .logging("a", &[])
            .logging("b", &["a"])
            .logging("c", &["b"])
            .logging("x", &[]),
    );
    let out = s.run("apply", &["--only", "hook/b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        lines(&s.read("log")),
        ["a", "b"],
        "--only runs b and its unfinished need a"
    );

    let out = s.run("apply", &["--from", "hook/b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        lines(&s.read("log")),
        ["a", "b", "b", "c"],
        "--from re-runs b and its dependents, not a or x"
    );

    let bad = s.run("apply", &["--only", "hook/nope"]);
    assert_eq!(code(&bad), 2);
    assert!(stderr(&bad).contains("no such step: hook/nope"));
}

#[test]
fn json_output_is_one_event_per_line() {
    let s = Scratch::new();
    s.write(&hooks().logging("a", &[]).logging("b", &["a"]));
    let out = s
        .command(&["--output", "json", "apply", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "step_finished").count(), 2);
    assert_eq!(events.last().unwrap()["applied"], 2);
}

#[test]
fn the_run_log_captures_hook_output() {
    let s = Scratch::new();
    s.write(&hooks().hook("talk", "echo hello-from-hook; echo warn-from-hook >&2", &[], None));
    assert_eq!(code(&s.run("apply", &[])), 0);
    let logs: Vec<_> = std::fs::read_dir(s.workdir().join("logs")).unwrap().collect();
    assert_eq!(logs.len(), 1);
    let text = std::fs::read_to_string(logs[0].as_ref().unwrap().path()).unwrap();
    assert!(
        text.contains("hello-from-hook") && text.contains("warn-from-hook"),
        "{text}"
    );
}

#[test]
fn the_state_file_is_never_left_torn_by_a_kill() {
    let s = Scratch::new();
    let body = (0..30).fold(hooks(), |b, i| b.hook(&format!("h{i}"), "true", &[], None));
    s.write(&body);
    let state_path = s.workdir().join("state.json");
    for round in 0..12u64 {
        let mut child = s.spawn("apply", &[]);
        std::thread::sleep(Duration::from_millis(15 + round * 9));
        sigkill(child.id());
        let _ = child.wait();
        if let Ok(text) = std::fs::read_to_string(&state_path) {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("round {round}: state.json is torn: {e}\n{text}"));
        }
    }
    let out = s.run("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(s.state()["steps"].as_object().unwrap().len(), 30);
}

#[test]
fn status_shows_a_running_step_as_running_with_the_holders_pid_and_the_rest_in_plan_order() {
    let s = Scratch::new();
    s.write(
        &hooks()
            .logging("first", &[])
            .hook(
                "slow",
                "touch holding; while [ ! -e release ]; do sleep 0.05; done",
                &["first"],
                None,
            )
            .logging("last", &["slow"]),
    );
    let mut child = s.spawn("apply", &["--concurrency", "1"]);
    wait_for("the slow step to run", Duration::from_secs(20), || {
        s.path().join("holding").exists()
    });
    let out = s.command(&["status"]).output().unwrap();
    std::fs::write(s.path().join("release"), "").unwrap();
    let text = stdout(&out);
    let pid = child.id();
    assert!(text.contains(&format!("Running now: pid {pid}")), "{text}");
    let row = |id: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id}: {text}"))
            .to_string()
    };
    assert!(row("hook/first ").contains("done"), "{text}");
    assert!(row("hook/slow ").contains(&format!("running (pid {pid})")), "{text}");
    assert!(row("hook/last ").contains("pending"), "{text}");
    let at = |id: &str| text.find(id).unwrap();
    assert!(
        at("hook/first") < at("hook/slow") && at("hook/slow") < at("hook/last"),
        "{text}"
    );
    assert!(
        text.contains(&format!("running (pid {pid})")) && !text.contains("did not finish"),
        "{text}"
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn summaries_count_steps_exactly() {
    let s = Scratch::new();
    s.write(
        &hooks()
            .logging("a", &[])
            .logging("b", &[])
            .logging("c", &[])
            .logging("d", &[]),
    );
    let out = s.run("apply", &["--only", "hook/a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1 done, 0 unchanged, 0 failed, 3 not selected and never applied"),
        "steps that never ran are not 'unchanged': {err}"
    );
    let out = s.run("apply", &[]);
    let err = stderr(&out);
    assert!(err.contains("3 done, 1 unchanged, 0 failed"), "{err}");

    // Stopped while the first of four runs one at a time: one interrupted, three not started.
    let s = Scratch::new();
    s.write(
        &hooks()
            .hook("w", "touch holding; exec sleep 60", &[], None)
            .logging("x", &["w"])
            .logging("y", &["w"])
            .logging("z", &["w"]),
    );
    let mut child = s.spawn("apply", &["--concurrency", "1"]);
    wait_for("the first step to run", Duration::from_secs(20), || {
        s.path().join("holding").exists()
    });
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("0 done, 0 unchanged, 0 failed, 1 interrupted, 3 not started"),
        "{err}"
    );
    assert_eq!(s.step_status("hook/w").as_deref(), Some("interrupted"));
}

#[test]
fn each_steps_log_lines_sit_in_its_own_span_only() {
    let s = Scratch::new();
    let talk = "for i in 1 2 3 4 5 6; do echo \"out-$NAUTES_STEP\"; sleep 0.05; done";
    let body = ["p1", "p2", "p3", "p4", "p5", "p6"]
        .iter()
        .fold(hooks(), |b, name| b.hook(name, talk, &[], None));
    s.write(&body);
    let out = s.run("apply", &["--concurrency", "6"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let logs: Vec<_> = std::fs::read_dir(s.workdir().join("logs")).unwrap().flatten().collect();
    let text = std::fs::read_to_string(logs[0].path()).unwrap();
    let mut seen = 0;
    for line in text.lines() {
        if let Some(at) = line.find("out-hook/") {
            seen += 1;
            let id = line[at + 4..].split_whitespace().next().unwrap();
            assert_eq!(line.matches("step{").count(), 1, "one span per line: {line}");
            assert!(line.contains(&format!("step{{id={id} ")), "under its own step: {line}");
        }
    }
    assert_eq!(seen, 36, "{text}");
}

#[test]
fn a_steps_end_is_in_the_state_file_before_its_dependent_begins_and_while_others_still_run() {
    let s = Scratch::new();
    let state = s.workdir().join("state.json");
    // The state file and its journal (what is durable is both, see
    // `state::journal`), read back below as the binary reads them.
    let copy = format!(
        "mkdir seen_by_b && cp '{0}' seen_by_b/state.json && {{ cp '{0}.journal' seen_by_b/ 2>/dev/null || true; }}",
        state.display()
    );
    s.write(
        &hooks()
            .logging("a", &[])
            // What `b` finds on disk when its own work begins.
            .hook("b", &copy, &["a"], None)
            // Runs beside the others until the test lets it go, so `a` and `b`
            // end while a step is still running and nothing else starts.
            .hook(
                "long",
                "i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
                &[],
                None,
            ),
    );
    let mut child = s.spawn("apply", &["--concurrency", "2"]);
    wait_for(
        "b's end in the state file while `long` runs",
        Duration::from_secs(20),
        || state.exists() && s.step_status("hook/b").as_deref() == Some("done"),
    );
    assert_eq!(s.step_status("hook/long").as_deref(), Some("running"));
    std::fs::write(s.path().join("go"), "").unwrap();
    assert!(child.wait().unwrap().success());
    let seen = nautes_install::state::State::load(&s.path().join("seen_by_b/state.json")).unwrap();
    let seen = serde_json::to_value(seen).unwrap();
    assert_eq!(
        seen["steps"]["hook/a"]["status"], "done",
        "b began before a's end was written"
    );
    assert_eq!(seen["steps"]["hook/b"]["status"], "running");
}
