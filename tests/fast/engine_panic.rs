//! A step that panics is a bug in that step: it must fail alone, with a
//! message naming it, while the steps beside it finish and shared state
//! (the state store, the run's services) stays usable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tracing::Instrument;

use nautes_install::engine::events::{OutputMode, Reporter};
use nautes_install::engine::{Engine, Registry, RunEnv, Services, StepContext, StepError, StepHandler};
use nautes_install::plan::diff::{diff, Selection};
use nautes_install::plan::{Plan, Step};
use nautes_install::state::{State, StateStore, StepStatus};

struct Boom;

#[async_trait]
impl StepHandler for Boom {
    fn kind(&self) -> &'static str {
        "boom"
    }

    async fn apply(&self, ctx: &StepContext, _: &Value) -> Result<Value, StepError> {
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Panics while holding the services' lock, which poisons it.
            let _: Arc<u32> = ctx.services.get_or_insert_with(|| panic!("kaboom"));
            Ok(Value::Null)
        }
        .instrument(tracing::info_span!("inner", step = %ctx.step_id))
        .await
    }

    async fn destroy(&self, _: &StepContext, _: &Value, _: &Value) -> Result<(), StepError> {
        Ok(())
    }
}

struct Fine;

#[async_trait]
impl StepHandler for Fine {
    fn kind(&self) -> &'static str {
        "fine"
    }

    async fn apply(&self, ctx: &StepContext, _: &Value) -> Result<Value, StepError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The lock the other step poisoned still serves.
        let n = ctx.services.get_or_insert_with(|| 7u64);
        Ok(json!({ "n": *n }))
    }

    async fn destroy(&self, _: &StepContext, _: &Value, _: &Value) -> Result<(), StepError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_fails_alone_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    registry.register(Arc::new(Boom));
    registry.register(Arc::new(Fine));
    let plan = Plan::from_steps(vec![
        Step::new("boom", "boom", "panics", json!({})),
        Step::new("after-boom", "fine", "needs boom", json!({})).needs(["boom"]),
        Step::new("sibling", "fine", "beside boom", json!({})),
        Step::new("after-sibling", "fine", "needs sibling", json!({})).needs(["sibling"]),
    ])
    .unwrap();
    let store = StateStore::new(dir.path().join("state.json"), State::default());
    let (_stop_tx, stop) = tokio::sync::watch::channel(0u8);
    let engine = Engine {
        registry,
        store: store.clone(),
        reporter: Arc::new(Reporter::new(OutputMode::Text, true)),
        concurrency: 4,
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
    let d = diff(&plan, &State::default(), &Selection::default()).unwrap();
    let summary = engine.apply(&plan, &d).await.expect("the run itself does not fail");
    assert_eq!(summary.applied, 2, "{summary:?}");
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    let (id, message) = &summary.failed[0];
    assert_eq!(id, "boom");
    assert_eq!(message, "internal error in step boom: kaboom");
    assert_eq!(summary.blocked, vec![("after-boom".to_string(), "boom".to_string())]);

    let on_disk = State::load(store.path()).unwrap();
    assert_eq!(
        on_disk.steps["boom"].status,
        StepStatus::Failed,
        "recorded, not left running"
    );
    assert_eq!(
        on_disk.steps["boom"].last_error.as_deref(),
        Some("internal error in step boom: kaboom")
    );
    assert_eq!(on_disk.steps["sibling"].status, StepStatus::Done);
    assert_eq!(on_disk.steps["after-sibling"].outputs, json!({ "n": 7 }));
    // The store still takes writes.
    store.update(|st| st.next_revision()).await.unwrap();
}
