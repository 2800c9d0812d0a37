//! Where the enclave's audit log goes: the enclave writes each line to its stdout prefixed
//! `cloister-audit `; the host appends it, without the prefix, to `--audit-log FILE` (mode 0600).
//!
//! The host is untrusted and that is fine: every line names the SHA-256 of the one before it, and the
//! enclave signs a checkpoint every N lines and a `stop` at shutdown, so the host can store or lose lines but
//! not forge, reorder or drop them without `cloister audit verify` finding it. Without `--audit-log` the lines
//! are forwarded to stderr like the enclave's other output, with a warning at start.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The enclave's prefix of audit lines on its stdout.
pub const PREFIX: &[u8] = b"cloister-audit ";

static SINK: OnceLock<Mutex<File>> = OnceLock::new();

/// Opens (appends to, creating 0600) the audit log of this host process. Once per process.
pub fn open(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    SINK.set(Mutex::new(file))
        .map_err(|_| std::io::Error::other("the audit log is already open"))
}

/// If `line` is an audit line and a log is open, appends it there and returns true.
pub fn take(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(PREFIX) else {
        return false;
    };
    let Some(sink) = SINK.get() else {
        return false;
    };
    let mut file = sink.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(e) = file
        .write_all(rest)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.flush())
    {
        tracing::error!("cannot append to the audit log: {e}");
    }
    true
}
