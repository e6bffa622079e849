//! A value that must never reach logs, progress output, error messages or
//! the state file: tokens, passwords, unseal keys, private keys.

use std::fmt;

/// Holds a secret string. `Debug` and `Display` print `<redacted>`; the value
/// is only reachable through [`Secret::expose`], which makes every use of it
/// easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plain value. Call only where the value is handed to the outside
    /// world (a request header, a file written 0600, a child's stdin).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Write a secret to a file only its owner can read, atomically.
pub fn write_private(path: &std::path::Path, secret: &Secret) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    crate::util::write_atomic(path, secret.expose().as_bytes(), 0o600)
}

/// A fresh random token (hex of 32 bytes from the kernel's CSPRNG).
pub fn random_token() -> std::io::Result<Secret> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(Secret::new(crate::util::hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-token");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-token");
    }
}
