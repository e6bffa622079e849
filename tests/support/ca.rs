//! Certificates for tests, made by the real `openssl` in one way: a CA
//! (`<stem>.key`, `<stem>.crt`) and leaf certificates it signs with the
//! extensions a test needs. The files land in the directory given, under
//! the stems given, so each test lays out its own PKI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(dir: &Path, stem: &str, ext: &str) -> String {
    dir.join(format!("{stem}.{ext}"))
        .to_str()
        .expect("a UTF-8 path")
        .to_string()
}

/// A self-signed P-256 CA named `cn`, valid for `days`: returns the paths
/// of its key and certificate.
pub fn make_ca(dir: &Path, stem: &str, cn: &str, days: u32) -> (PathBuf, PathBuf) {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        &days.to_string(),
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &path(dir, stem, "key"),
        "-out",
        &path(dir, stem, "crt"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    (dir.join(format!("{stem}.key")), dir.join(format!("{stem}.crt")))
}

/// A P-256 certificate named `cn` with the extension lines `extensions`
/// (e.g. `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth`),
/// signed by the CA at `ca_stem` in the same directory.
pub fn make_leaf(dir: &Path, stem: &str, cn: &str, extensions: &str, ca_stem: &str, days: u32) -> (PathBuf, PathBuf) {
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &path(dir, stem, "key"),
        "-out",
        &path(dir, stem, "csr"),
    ]);
    std::fs::write(dir.join(format!("{stem}.ext")), extensions).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path(dir, stem, "csr"),
        "-CA",
        &path(dir, ca_stem, "crt"),
        "-CAkey",
        &path(dir, ca_stem, "key"),
        "-CAcreateserial",
        "-days",
        &days.to_string(),
        "-extfile",
        &path(dir, stem, "ext"),
        "-out",
        &path(dir, stem, "crt"),
    ]);
    (dir.join(format!("{stem}.key")), dir.join(format!("{stem}.crt")))
}
