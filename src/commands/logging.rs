//! A log file per run in `<workdir>/logs/`, with per-step spans; `-v` also
//! copies log lines to stderr.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub fn run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{}", std::process::id())
}

/// Start logging to `<workdir>/logs/<run_id>.log`; returns the file's path.
pub fn init(workdir: &Path, run_id: &str, verbose: u8) -> std::io::Result<PathBuf> {
    let dir = workdir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{run_id}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .with_filter(LevelFilter::DEBUG);
    let stderr_level = match verbose {
        0 => LevelFilter::OFF,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(stderr_level);
    // A second init in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(path)
}
