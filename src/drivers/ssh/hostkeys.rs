//! Host keys: SHA256 fingerprints as `ssh-keygen -l` shows them, the key a
//! known_hosts file holds for a host, and the key a host offers now — so a
//! changed key can be reported with both fingerprints side by side.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// `SHA256:<base64 without padding>` of a key blob given in base64.
pub fn fingerprint(key_base64: &str) -> Option<String> {
    let blob = STANDARD.decode(key_base64.trim()).ok()?;
    Some(format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob))))
}

/// How known_hosts names a host: plain for port 22, `[addr]:port` otherwise.
pub fn known_hosts_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// (key type, fingerprint) of every key `known_hosts` holds for the host.
/// Hashed entries (`|1|...`) are matched with their HMAC, as ssh does.
pub fn known_keys(known_hosts: &Path, address: &str, port: u16) -> Vec<(String, String)> {
    let name = known_hosts_name(address, port);
    let Ok(text) = std::fs::read_to_string(known_hosts) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let mut hosts = parts.next()?;
            if hosts.starts_with('@') {
                // Markers (@cert-authority, @revoked) are not plain host keys.
                return None;
            }
            if hosts.starts_with('#') {
                return None;
            }
            let key_type = parts.next()?;
            let key = parts.next()?;
            let matches = if let Some(hashed) = hosts.strip_prefix("|1|") {
                hashed_matches(hashed, &name)
            } else {
                hosts = hosts.trim();
                hosts.split(',').any(|h| h == name)
            };
            if matches {
                Some((key_type.to_string(), fingerprint(key)?))
            } else {
                None
            }
        })
        .collect()
}

fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    hmac_sha1(&salt, name.as_bytes()) == hash.as_slice()
}

/// HMAC-SHA1 is what known_hosts hashing uses (the format's choice, not ours).
fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Keys the host offers now, via `ssh-keyscan` (type, fingerprint).
pub async fn offered_keys(address: &str, port: u16) -> Vec<(String, String)> {
    let out = tokio::process::Command::new("ssh-keyscan")
        .args(["-T", "5", "-p", &port.to_string(), address])
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let _host = p.next()?;
            let ty = p.next()?;
            Some((ty.to_string(), fingerprint(p.next()?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_ssh_keygen_format() {
        // Key blob "AAAAC3NzaC1lZDI1NTE5AAAAI" + 32 zero bytes, computed independently.
        let blob = [&b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"[..], &[0u8; 32]].concat();
        let fp = fingerprint(&STANDARD.encode(&blob)).unwrap();
        assert!(fp.starts_with("SHA256:") && !fp.ends_with('='));
        assert_eq!(fp.len(), "SHA256:".len() + 43);
    }

    #[test]
    fn hmac_sha1_known_answer() {
        // RFC 2202 test case 2.
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(crate::util::hex(&mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn finds_plain_and_bracketed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let key = STANDARD.encode(b"key-one");
        std::fs::write(
            &kh,
            format!("[127.0.0.5]:2222 ssh-ed25519 {key}\n10.0.0.1,host ssh-rsa {key}\n"),
        )
        .unwrap();
        assert_eq!(known_keys(&kh, "127.0.0.5", 2222).len(), 1);
        assert_eq!(known_keys(&kh, "10.0.0.1", 22)[0].0, "ssh-rsa");
        assert!(known_keys(&kh, "127.0.0.5", 22).is_empty());
    }
}
