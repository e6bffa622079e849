//! Process exit codes. Scripts depend on these; change them only with a
//! note in the README.

/// Everything asked for was done (or there was nothing to do).
pub const OK: u8 = 0;
/// A step failed (or could not start because something it needs failed).
pub const STEP_FAILED: u8 = 1;
/// Wrong command-line usage (also clap's own code).
pub const USAGE: u8 = 2;
/// The inventory has errors.
pub const INVALID_INVENTORY: u8 = 3;
/// Another run holds the workdir lock.
pub const LOCKED: u8 = 4;
/// The steps cannot be ordered (a dependency cycle).
pub const PLAN_FAILED: u8 = 5;
/// The state file cannot be read or written.
pub const STATE_ERROR: u8 = 6;
/// A backup archive is missing, unreadable, damaged or altered, or the
/// passphrase is not the one it was made with; nothing was restored.
pub const ARCHIVE: u8 = 7;
/// Stopped by Ctrl-C / SIGTERM before finishing.
pub const INTERRUPTED: u8 = 130;
