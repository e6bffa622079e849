//! When an applied object counts as ready, read from its status the way
//! `kubectl rollout status` and `kubectl wait` read it. A pending object
//! says why, so a timeout can show the last thing the cluster reported.

use serde_json::Value;

/// An annotation on a manifest naming a condition to wait for, for kinds we
/// know nothing about: `install.nautes.io/wait-for: Ready`.
pub const WAIT_FOR_ANNOTATION: &str = "install.nautes.io/wait-for";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet; the text is the latest condition or counters.
    Pending(String),
    /// Will not become ready without a change (a failed Job).
    Failed(String),
}

/// Whether this kind is waited for at all. Everything else is ready once the
/// API accepted it.
pub fn is_waited(kind: &str, object: &Value) -> bool {
    matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CustomResourceDefinition" | "APIService"
    ) || wait_condition(object).is_some()
}

fn wait_condition(object: &Value) -> Option<&str> {
    object["metadata"]["annotations"][WAIT_FOR_ANNOTATION].as_str()
}

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind))
}

fn is_true(status: &Value, kind: &str) -> bool {
    condition(status, kind).is_some_and(|c| c["status"].as_str() == Some("True"))
}

/// "Available=False (MinimumReplicasUnavailable: Deployment does not have ...)"
fn describe_conditions(status: &Value) -> Option<String> {
    let conditions = status["conditions"].as_array()?;
    let failing: Vec<String> = conditions
        .iter()
        .filter(|c| c["status"].as_str() != Some("True"))
        .map(|c| {
            let mut s = format!(
                "{}={}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?")
            );
            match (c["reason"].as_str(), c["message"].as_str()) {
                (Some(r), Some(m)) => s.push_str(&format!(" ({r}: {m})")),
                (Some(r), None) => s.push_str(&format!(" ({r})")),
                (None, Some(m)) => s.push_str(&format!(" ({m})")),
                (None, None) => {}
            }
            s
        })
        .collect();
    (!failing.is_empty()).then(|| failing.join("; "))
}

fn pending(status: &Value, counters: String) -> Readiness {
    match describe_conditions(status) {
        Some(c) => Readiness::Pending(format!("{counters}; {c}")),
        None => Readiness::Pending(counters),
    }
}

/// Whether the rollout of the current generation has been observed.
fn observed(object: &Value) -> bool {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    object["status"]["observedGeneration"].as_i64().unwrap_or(-1) >= generation
}

pub fn evaluate(kind: &str, object: &Value) -> Readiness {
    let status = &object["status"];
    if let Some(wanted) = wait_condition(object) {
        return if is_true(status, wanted) {
            Readiness::Ready
        } else {
            pending(status, format!("waiting for condition {wanted}"))
        };
    }
    let desired = object["spec"]["replicas"].as_i64().unwrap_or(1);
    match kind {
        "Deployment" => {
            let (updated, available) = (int(status, "updatedReplicas"), int(status, "availableReplicas"));
            if observed(object) && updated >= desired && available >= desired {
                Readiness::Ready
            } else if condition(status, "Progressing").and_then(|c| c["reason"].as_str())
                == Some("ProgressDeadlineExceeded")
            {
                Readiness::Failed(describe_conditions(status).unwrap_or_else(|| "progress deadline exceeded".into()))
            } else {
                pending(
                    status,
                    format!("{available}/{desired} replicas available, {updated} updated"),
                )
            }
        }
        "StatefulSet" => {
            let (ready, updated) = (int(status, "readyReplicas"), int(status, "updatedReplicas"));
            if observed(object) && ready >= desired && updated >= desired {
                Readiness::Ready
            } else {
                pending(status, format!("{ready}/{desired} replicas ready, {updated} updated"))
            }
        }
        "DaemonSet" => {
            let wanted = int(status, "desiredNumberScheduled");
            let (ready, updated) = (int(status, "numberReady"), int(status, "updatedNumberScheduled"));
            if observed(object) && wanted > 0 && ready >= wanted && updated >= wanted {
                Readiness::Ready
            } else {
                pending(status, format!("{ready}/{wanted} pods ready, {updated} updated"))
            }
        }
        "Job" => {
            if is_true(status, "Complete") {
                Readiness::Ready
            } else if is_true(status, "Failed") {
                let why = condition(status, "Failed")
                    .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
                    .unwrap_or("failed");
                Readiness::Failed(format!("job failed: {why}"))
            } else {
                pending(status, format!("{} succeeded", int(status, "succeeded")))
            }
        }
        "CustomResourceDefinition" => {
            if is_true(status, "Established") {
                Readiness::Ready
            } else {
                pending(status, "not established yet".into())
            }
        }
        "APIService" => {
            if is_true(status, "Available") {
                Readiness::Ready
            } else {
                pending(status, "not available yet".into())
            }
        }
        _ => Readiness::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_ready_only_when_its_generation_is_rolled_out() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(matches!(evaluate("Deployment", &d), Readiness::Pending(_)));
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(evaluate("Deployment", &d), Readiness::Ready);
    }

    #[test]
    fn pending_shows_the_failing_condition() {
        let d = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no pods"}]}});
        let Readiness::Pending(text) = evaluate("Deployment", &d) else {
            panic!()
        };
        assert!(
            text.contains("Available=False (MinimumReplicasUnavailable: no pods)"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_job_fails_and_a_custom_condition_is_honoured() {
        let j = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}});
        assert!(matches!(evaluate("Job", &j), Readiness::Failed(m) if m.contains("BackoffLimitExceeded")));
        let c = json!({"metadata": {"annotations": {WAIT_FOR_ANNOTATION: "Ready"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(is_waited("Widget", &c));
        assert_eq!(evaluate("Widget", &c), Readiness::Ready);
        assert!(!is_waited("ConfigMap", &json!({})));
    }
}
