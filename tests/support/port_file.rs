//! How the Python stand-ins tell a test where they listen: each starts on a
//! free port and writes it to the file given with `--port-file`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// The port written to `port_file`, waiting up to 10 s for `what` to start.
pub fn wait_for_port(port_file: &Path, what: &str) -> u16 {
    let start = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            return p;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}
