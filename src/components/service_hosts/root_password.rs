//! GitLab's initial root password: generated once, on the first install,
//! kept in a 0600 file among the outputs and reused on every later run (a
//! new one would not match what GitLab already holds).

use std::path::{Path, PathBuf};

use super::io_error;
use crate::engine::{StepContext, StepError};
use crate::secret::{random_token, write_private, Secret};

/// Where GitLab's initial root password is kept (0600).
pub(super) fn root_password_file(ctx: &StepContext) -> PathBuf {
    ctx.outputs_dir.join("gitlab").join("root-password")
}

/// The root password, generated on first use and kept for every later run.
pub(super) fn root_password(path: &Path) -> Result<Secret, StepError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StepError::new(format!(
            "cannot read GitLab's root password from {}: {e}",
            path.display()
        ))),
        _ => {
            let secret =
                random_token().map_err(|e| StepError::new(format!("cannot generate GitLab's root password: {e}")))?;
            write_private(path, &secret).map_err(|e| io_error(path, e))?;
            Ok(secret)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_password_is_generated_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gitlab/root-password");
        let first = root_password(&path).unwrap();
        assert_eq!(first.expose().len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(root_password(&path).unwrap(), first);
    }
}
