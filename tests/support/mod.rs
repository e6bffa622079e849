//! What the tests share: the real tools and stand-ins they start, and the
//! clients they talk to them with. Both test binaries (`tests/fast`,
//! `tests/e2e`) and the benches that need a control plane or hosts include
//! this one module; each file allows dead code because no one binary uses
//! all of it.

pub mod archive;
pub mod ca;
pub mod casbin;
pub mod cli;
pub mod controlplane;
pub mod dex;
pub mod gitlab;
pub mod hosts;
pub mod http;
pub mod inventory;
pub mod platform;
pub mod port_file;
pub mod registries;
pub mod standin_controllers;
pub mod vault;
