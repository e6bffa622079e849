//! What a run tells the person (or program) watching it. Every event goes to
//! the run log; on a terminal it drives progress bars, otherwise it prints a
//! plain line, and with `--output json` one JSON object per line on stdout.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        command: String,
        total: usize,
        to_run: usize,
    },
    StepSkipped {
        id: String,
        reason: String,
    },
    StepStarted {
        id: String,
        description: String,
        action: Action,
    },
    /// A line of progress from inside a step (e.g. "uploaded 40%").
    StepProgress {
        id: String,
        message: String,
    },
    StepFinished {
        id: String,
        action: Action,
        elapsed_ms: u64,
    },
    StepFailed {
        id: String,
        action: Action,
        error: String,
        elapsed_ms: u64,
    },
    StepBlocked {
        id: String,
        blocked_by: String,
    },
    /// Cut short by Ctrl-C / SIGTERM; recorded so the next run redoes it.
    StepInterrupted {
        id: String,
        action: Action,
    },
    Notice {
        message: String,
    },
    RunFinished {
        ok: bool,
        applied: usize,
        destroyed: usize,
        failed: usize,
        blocked: usize,
        unchanged: usize,
        /// Planned for this run but never started (it was stopped first).
        not_started: usize,
        /// Not chosen with --only / --from and never applied.
        not_selected: usize,
        /// Running when the run was stopped.
        aborted: usize,
        /// Each skipped step and the failed step it needed.
        skipped: Vec<Skipped>,
        interrupted: bool,
        elapsed_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub id: String,
    pub because: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Apply,
    Destroy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Text,
    Json,
}

enum Sink {
    Json,
    Plain,
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
        running: Mutex<HashMap<String, ProgressBar>>,
    },
    Quiet,
}

pub struct Reporter {
    sink: Sink,
    started: Instant,
}

impl Reporter {
    /// Bars only when a person is watching a terminal; quiet keeps errors only.
    pub fn new(mode: OutputMode, quiet: bool) -> Reporter {
        let sink = match mode {
            OutputMode::Json => Sink::Json,
            OutputMode::Text if quiet => Sink::Quiet,
            OutputMode::Text if std::io::stderr().is_terminal() => {
                let multi = MultiProgress::new();
                let overall = multi.add(ProgressBar::new(0));
                overall.set_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                Sink::Bars {
                    multi,
                    overall,
                    running: Mutex::new(HashMap::new()),
                }
            }
            OutputMode::Text => Sink::Plain,
        };
        Reporter {
            sink,
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn emit(&self, event: Event) {
        log_event(&event);
        match &self.sink {
            Sink::Json => {
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            Sink::Plain => {
                if let Some(line) = plain_line(&event) {
                    eprintln!("{line}");
                }
            }
            Sink::Quiet => {
                if let Event::StepFailed { .. } = event {
                    if let Some(line) = plain_line(&event) {
                        eprintln!("{line}");
                    }
                }
            }
            Sink::Bars {
                multi,
                overall,
                running,
            } => self.bars(multi, overall, running, &event),
        }
    }

    fn bars(
        &self,
        multi: &MultiProgress,
        overall: &ProgressBar,
        running: &Mutex<HashMap<String, ProgressBar>>,
        event: &Event,
    ) {
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::RunStarted { to_run, .. } => overall.set_length(*to_run as u64),
            Event::StepStarted {
                id,
                description,
                action,
            } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} [{elapsed}] {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                let verb = if *action == Action::Destroy { "destroy" } else { "apply" };
                bar.set_prefix(format!("{verb} {id}"));
                bar.set_message(description.clone());
                bar.enable_steady_tick(Duration::from_millis(200));
                running.insert(id.clone(), bar);
            }
            Event::StepProgress { id, message } => {
                if let Some(bar) = running.get(id) {
                    bar.set_message(message.clone());
                }
            }
            Event::StepFinished { id, .. } | Event::StepFailed { id, .. } => {
                if let Some(bar) = running.remove(id) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                overall.inc(1);
                if let Some(line) = plain_line(event) {
                    let _ = multi.println(line);
                }
            }
            Event::RunFinished { .. } => {
                overall.finish_and_clear();
                if let Some(line) = plain_line(event) {
                    let _ = multi.println(line);
                }
            }
            other => {
                if let Some(line) = plain_line(other) {
                    let _ = multi.println(line);
                }
            }
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn plain_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            command, total, to_run, ..
        } => format!("{command}: {to_run} of {total} steps to run"),
        Event::StepSkipped { .. } | Event::StepProgress { .. } => return None,
        Event::StepStarted { id, action, .. } => format!("{} {id} ...", verb(*action)),
        Event::StepFinished { id, action, elapsed_ms } => {
            format!("{} {id} done ({})", verb(*action), secs(*elapsed_ms))
        }
        Event::StepFailed {
            id,
            action,
            error,
            elapsed_ms,
        } => {
            format!("{} {id} FAILED after {}: {error}", verb(*action), secs(*elapsed_ms))
        }
        Event::StepBlocked { id, blocked_by } => {
            format!("skip {id}: it needs {blocked_by}, which failed")
        }
        Event::StepInterrupted { id, action } => {
            format!("{} {id} interrupted; it runs again next time", verb(*action))
        }
        Event::Notice { message } => message.clone(),
        Event::RunFinished {
            ok,
            applied,
            destroyed,
            failed,
            unchanged,
            not_started,
            not_selected,
            aborted,
            skipped,
            interrupted,
            elapsed_ms,
            ..
        } => {
            let head = if *interrupted {
                "interrupted"
            } else if *ok {
                "finished"
            } else {
                "FAILED"
            };
            let mut parts = Vec::new();
            if *applied > 0 || *destroyed == 0 {
                parts.push(format!("{applied} done"));
            }
            if *destroyed > 0 {
                parts.push(format!("{destroyed} destroyed"));
            }
            parts.push(format!("{unchanged} unchanged"));
            parts.push(format!("{failed} failed"));
            // Grouped by the failed step that stopped them, in first-seen order.
            let mut because: Vec<(&str, usize)> = Vec::new();
            for s in skipped {
                match because.iter_mut().find(|(b, _)| *b == s.because) {
                    Some((_, n)) => *n += 1,
                    None => because.push((&s.because, 1)),
                }
            }
            for (b, n) in because {
                parts.push(format!("{n} skipped because {b} failed"));
            }
            if *aborted > 0 {
                parts.push(format!("{aborted} interrupted"));
            }
            if *not_started > 0 || *interrupted {
                parts.push(format!("{not_started} not started"));
            }
            if *not_selected > 0 {
                parts.push(format!("{not_selected} not selected and never applied"));
            }
            format!("{head} in {}: {}", secs(*elapsed_ms), parts.join(", "))
        }
    })
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Apply => "apply",
        Action::Destroy => "destroy",
    }
}

fn log_event(event: &Event) {
    match event {
        Event::StepFailed { id, error, .. } => tracing::error!(step = %id, "step failed: {error}"),
        other => {
            if let Ok(json) = serde_json::to_string(other) {
                tracing::info!(target: "nautes_install::events", "{json}");
            }
        }
    }
}
