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

/// A loopback port free now, for a server of a test's that takes its port
/// as a flag (etcd, kube-apiserver, OpenBao).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A port in Kubernetes' NodePort range (30000-32767) that is free now, for
/// a stand-in that must answer where a NodePort would.
pub fn free_node_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
    for i in 0..2000u64 {
        let port = 30000 + ((seed.wrapping_mul(2654435761).wrapping_add(i * 7919)) % 2767) as u16;
        // Traefik's default web NodePort: a stand-in for websecure there
        // would make the installer ask for one port twice (CI hit it once).
        if port == 30080 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 30000-32767");
}
