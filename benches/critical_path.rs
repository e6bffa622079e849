//! Apply wall time against the DAG's critical path (issue 15): a generated
//! plan of 500 steps of one kind, each sleeping a known 5–40 ms and needing
//! 0–3 random earlier steps (both seeded, so every run plans the same DAG),
//! applied by the real engine with a fresh state file at concurrency 4, 16
//! and 64. Per concurrency it prints the wall time, the critical path (the
//! longest chain of sleeps), wall / critical path, the lower bound
//! max(critical path, total sleep / concurrency) and wall / bound. Neither
//! bound is reachable by any scheduler when both are close, so it also
//! prints `greedy`: the same list scheduling the executor does (plan order,
//! up to the concurrency), simulated with zero overhead, and wall / greedy,
//! which is what the engine itself adds; `gap` is how long, on average and
//! at worst, a step waited between its last need ending and its own sleep
//! starting (it includes waiting for a free slot, so it measures the
//! engine's own latency only where slots are plenty, at 64). The state file
//! goes where `tempfile` puts it (`TMPDIR`), so `TMPDIR=/dev/shm` shows the
//! run without the disk's fsync latency. No timing is asserted; that every
//! step ran exactly once and never before its needs finished is.
//! Run: `cargo bench --bench critical_path`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use nautes_install::engine::events::{OutputMode, Reporter};
use nautes_install::engine::{Engine, Handler, Registry, RunEnv, Services, StepContext, StepError};
use nautes_install::plan::diff::{diff, Selection};
use nautes_install::plan::{Plan, Step, StepSpec};
use nautes_install::state::{State, StateStore};

const SEED: u64 = 0x15_c0ffee;

#[derive(Serialize, Deserialize)]
struct Sleep {
    ms: u64,
}

impl StepSpec for Sleep {
    const KIND: &'static str = "bench-sleep";
}

/// When each step's sleep began and ended, every time it ran.
type Spans = Arc<Mutex<HashMap<String, Vec<(Instant, Instant)>>>>;

struct Sleeper {
    spans: Spans,
}

#[async_trait]
impl Handler for Sleeper {
    type Spec = Sleep;

    async fn apply(&self, ctx: &StepContext, spec: &Sleep) -> Result<Value, StepError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(spec.ms)).await;
        let end = Instant::now();
        self.spans
            .lock()
            .unwrap()
            .entry(ctx.step_id.clone())
            .or_default()
            .push((start, end));
        Ok(Value::Null)
    }

    async fn destroy(&self, _: &StepContext, _: &Sleep, _: &Value) -> Result<(), StepError> {
        Ok(())
    }
}

/// SplitMix64: small, deterministic, good enough to draw a DAG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Step `i`'s sleep in ms and the indices of the earlier steps it needs.
fn generate(n: usize) -> Vec<(u64, Vec<usize>)> {
    let mut rng = Rng(SEED);
    (0..n)
        .map(|i| {
            let ms = rng.range(5, 40);
            let mut needs = Vec::new();
            if i > 0 {
                for _ in 0..rng.range(0, 3) {
                    let n = rng.range(0, i as u64 - 1) as usize;
                    if !needs.contains(&n) {
                        needs.push(n);
                    }
                }
            }
            (ms, needs)
        })
        .collect()
}

fn id(i: usize) -> String {
    format!("sleep/{i:03}")
}

/// The longest chain of `durations` through the DAG (needs are earlier).
fn critical_path(dag: &[(u64, Vec<usize>)], durations: &[f64]) -> (f64, usize) {
    let mut finish: Vec<(f64, usize)> = Vec::with_capacity(dag.len());
    for (i, (_, needs)) in dag.iter().enumerate() {
        let (before, depth) = needs
            .iter()
            .map(|&n| finish[n])
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        finish.push((before + durations[i], depth + 1));
    }
    finish.into_iter().fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The executor's policy without its costs: whenever a slot is free, start
/// the first ready step in plan order. Returns the makespan in ms.
fn greedy(dag: &[(u64, Vec<usize>)], order: &[usize], concurrency: usize) -> f64 {
    let mut end: Vec<Option<f64>> = vec![None; dag.len()];
    let mut started = vec![false; dag.len()];
    let mut running: Vec<(f64, usize)> = Vec::new();
    let mut now = 0.0;
    loop {
        for &i in order {
            if running.len() >= concurrency {
                break;
            }
            if !started[i] && dag[i].1.iter().all(|&n| end[n].is_some()) {
                started[i] = true;
                running.push((now + dag[i].0 as f64, i));
            }
        }
        let Some(pos) = (0..running.len()).min_by(|&a, &b| running[a].0.total_cmp(&running[b].0)) else {
            return now;
        };
        let (t, i) = running.swap_remove(pos);
        now = t;
        end[i] = Some(t);
        // Everything ending at the same instant frees its slot together.
        while let Some(pos) = running.iter().position(|r| r.0 <= now) {
            let (_, j) = running.swap_remove(pos);
            end[j] = Some(now);
        }
    }
}

struct Figures {
    wall: Duration,
    /// Critical path over the measured sleeps (timer overshoot included).
    measured_cp: f64,
    gap_mean: f64,
    gap_max: f64,
}

async fn run(plan: &Plan, dag: &[(u64, Vec<usize>)], concurrency: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let spans: Spans = Arc::default();
    let mut registry = Registry::default();
    registry.add(Sleeper { spans: spans.clone() });
    let store = StateStore::new(dir.path().join("state.json"), State::default());
    let (_stop_tx, stop) = tokio::sync::watch::channel(0u8);
    let engine = Engine {
        registry,
        store,
        reporter: Arc::new(Reporter::new(OutputMode::Text, true)),
        concurrency,
        stop,
        env: RunEnv {
            base_dir: dir.path().into(),
            workdir: dir.path().into(),
            outputs_dir: dir.path().join("outputs"),
            limits: Default::default(),
            services: Arc::new(Services::default()),
            full_teardown: false,
        },
    };
    let d = diff(plan, &State::default(), &Selection::default()).expect("diff");
    let begun = Instant::now();
    let summary = engine.apply(plan, &d).await.expect("apply");
    let wall = begun.elapsed();
    assert!(summary.ok(), "{summary:?}");
    assert_eq!(summary.applied, dag.len(), "{summary:?}");

    let spans = spans.lock().unwrap();
    let mut once = Vec::with_capacity(dag.len());
    for i in 0..dag.len() {
        match spans.get(&id(i)).map(Vec::as_slice) {
            Some([span]) => once.push(*span),
            other => panic!("{} ran {} times, not once", id(i), other.map_or(0, <[_]>::len)),
        }
    }
    assert_eq!(spans.len(), dag.len(), "only planned steps ran");
    let mut gaps = Vec::new();
    for (i, (_, needs)) in dag.iter().enumerate() {
        let (start, _) = once[i];
        for &n in needs {
            assert!(
                once[n].1 <= start,
                "{} started before its need {} finished",
                id(i),
                id(n)
            );
        }
        if let Some(ready) = needs.iter().map(|&n| once[n].1).max() {
            gaps.push((start - ready).as_secs_f64() * 1e3);
        }
    }
    let measured: Vec<f64> = once.iter().map(|(s, e)| (*e - *s).as_secs_f64() * 1e3).collect();
    Figures {
        wall,
        measured_cp: critical_path(dag, &measured).0,
        gap_mean: gaps.iter().sum::<f64>() / gaps.len().max(1) as f64,
        gap_max: gaps.iter().copied().fold(0.0, f64::max),
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a
    // small smoke run is enough there.
    let full = std::env::args().any(|a| a == "--bench");
    let (n, levels): (usize, &[usize]) = if full { (500, &[4, 16, 64]) } else { (40, &[4]) };
    let dag = generate(n);
    let steps = dag
        .iter()
        .enumerate()
        .map(|(i, (ms, needs))| {
            Step::of(id(i), format!("sleep {ms} ms"), &Sleep { ms: *ms }).needs(needs.iter().map(|&n| id(n)))
        })
        .collect();
    let plan = Plan::from_steps(steps).expect("generated plan");
    // The DAG's indices in the plan's order: the order the executor scans.
    let by_id: HashMap<String, usize> = (0..n).map(|i| (id(i), i)).collect();
    let order: Vec<usize> = plan.steps.iter().map(|s| by_id[&s.id]).collect();
    let spec: Vec<f64> = dag.iter().map(|(ms, _)| *ms as f64).collect();
    let (cp, depth) = critical_path(&dag, &spec);
    let work: f64 = spec.iter().sum();
    let edges: usize = dag.iter().map(|(_, needs)| needs.len()).sum();
    println!(
        "{n} steps, {edges} needs, total sleep {:.0} ms, critical path {cp:.0} ms over {depth} steps",
        work
    );
    println!(
        "{:>5} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>14}",
        "conc",
        "wall ms",
        "cp ms",
        "wall/cp",
        "bound ms",
        "w/bound",
        "greedy ms",
        "w/greedy",
        "meas cp",
        "gap mean/max"
    );
    for &c in levels {
        let f = run(&plan, &dag, c).await;
        let wall = f.wall.as_secs_f64() * 1e3;
        let bound = cp.max(work / c as f64);
        let ideal = greedy(&dag, &order, c);
        println!(
            "{c:>5} {wall:>9.0} {cp:>8.0} {:>8.2} {bound:>9.0} {:>8.2} {ideal:>9.0} {:>8.2} {:>9.0} {:>6.1}/{:<7.1}",
            wall / cp,
            wall / bound,
            wall / ideal,
            f.measured_cp,
            f.gap_mean,
            f.gap_max,
        );
    }
}
