//! One way to wait for something outside: ask a probe every so often until
//! it says done, fails, or the limit passes. A timeout names what was
//! awaited and the last state the probe saw, so the user can tell a slow
//! rollout from a stuck one ("last seen: 0/1 replicas available").

use std::time::{Duration, Instant};

/// What a probe found this time.
pub enum Poll<T> {
    Done(T),
    /// Not yet; the words say what was seen instead.
    Pending(String),
}

/// The limit passed before the probe said done.
#[derive(Debug, thiserror::Error)]
#[error(
    "timed out after {} waiting for {what}; last seen: {last}{}",
    humantime::format_duration(*after),
    hint.as_ref().map(|h| format!(" (hint: {h})")).unwrap_or_default()
)]
pub struct TimedOut {
    pub what: String,
    pub after: Duration,
    pub last: String,
    pub hint: Option<String>,
}

impl From<TimedOut> for String {
    fn from(t: TimedOut) -> String {
        t.to_string()
    }
}

/// A wait being set up: what for, how long, how often, and a hint for the
/// timeout message.
pub struct Wait {
    what: String,
    limit: Duration,
    interval: Duration,
    hint: Option<String>,
    deadline: Option<Instant>,
}

impl Wait {
    pub fn for_(what: impl Into<String>, limit: Duration) -> Wait {
        Wait {
            what: what.into(),
            limit,
            interval: Duration::from_millis(500),
            hint: None,
            deadline: None,
        }
    }

    /// How long to sleep between probes (default 500ms).
    pub fn every(mut self, interval: Duration) -> Wait {
        self.interval = interval;
        self
    }

    /// End at `deadline` instead of `limit` from now: one limit shared by
    /// several waits in turn (the message still states the limit).
    pub fn by(mut self, deadline: Instant) -> Wait {
        self.deadline = Some(deadline);
        self
    }

    /// What the user might check when the wait times out.
    pub fn hint(mut self, hint: impl Into<String>) -> Wait {
        self.hint = Some(hint.into());
        self
    }

    /// Probe until done. A probe's error ends the wait at once (it is not
    /// something more time will fix); the last sleep is cut to the deadline,
    /// and the probe always runs at least once.
    ///
    /// The probe is a closure returning a future (not an async closure,
    /// whose futures the compiler cannot yet prove `Send` for the engine's
    /// tasks): capture references with `move || async move { … }`.
    pub async fn until<T, E, F, Fut>(self, mut probe: F) -> Result<T, E>
    where
        E: From<TimedOut>,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Poll<T>, E>>,
    {
        let deadline = self.deadline.unwrap_or_else(|| Instant::now() + self.limit);
        loop {
            let last = match probe().await? {
                Poll::Done(v) => return Ok(v),
                Poll::Pending(seen) => seen,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(TimedOut {
                    what: self.what,
                    after: self.limit,
                    last,
                    hint: self.hint,
                }
                .into());
            }
            tokio::time::sleep(self.interval.min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn done_returns_the_value_and_errors_end_the_wait_at_once() {
        let mut n = 0;
        let v: Result<u32, String> = Wait::for_("three probes", Duration::from_secs(5))
            .every(Duration::from_millis(1))
            .until(|| {
                n += 1;
                let n = n;
                async move {
                    Ok(if n == 3 {
                        Poll::Done(n)
                    } else {
                        Poll::Pending(format!("probe {n}"))
                    })
                }
            })
            .await;
        assert_eq!(v, Ok(3));
        let started = Instant::now();
        let e: Result<(), String> = Wait::for_("nothing", Duration::from_secs(5))
            .until(|| async { Err("refused".to_string()) })
            .await;
        assert_eq!(e, Err("refused".to_string()));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_timeout_names_what_was_awaited_the_last_state_and_the_hint() {
        let mut n = 0;
        let e: Result<(), String> = Wait::for_("node a to be Ready", Duration::from_millis(50))
            .every(Duration::from_millis(10))
            .hint("is the kubelet running?")
            .until(|| {
                n += 1;
                let n = n;
                async move { Ok(Poll::Pending(format!("Ready=False (probe {n})"))) }
            })
            .await;
        let e = e.unwrap_err();
        assert!(
            e.starts_with("timed out after 50ms waiting for node a to be Ready; last seen: Ready=False (probe "),
            "{e}"
        );
        assert!(e.ends_with(") (hint: is the kubelet running?)"), "{e}");
        assert!(n >= 3, "probed until the limit, not once: {n}");
    }
}
