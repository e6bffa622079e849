//! One module per outside tool or protocol. A driver knows nothing of Nautes:
//! it takes plain values (addresses, paths, commands) and returns plain results.

pub mod ansible;
pub mod gitlab;
pub mod harbor;
pub mod helm;
pub mod kube;
pub mod nexus;
pub mod rest;
pub mod sonarqube;
pub mod ssh;
pub mod terraform;
pub mod vault;
