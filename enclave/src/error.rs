//! The crate's one error: every concern's error (configuration, firmware, key release, blobs, server,
//! admission) is a variant of it, so that the binary has one type to report.

use crate::blobs::BlobError;
use crate::config::ConfigError;
use crate::firmware::FirmwareError;
use crate::key_release::KeyReleaseError;
use crate::pool::PoolError;
use crate::runtime::InstallError;
use crate::server::ServerError;

/// The crate's one error (see the module documentation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The measured configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The firmware backend failed (or is missing).
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    /// Key release failed or was refused.
    #[error(transparent)]
    KeyRelease(#[from] KeyReleaseError),
    /// A sealed blob could not be fetched or opened.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The TLS server could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A request could not be admitted or run.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// A model could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The inference threads could not be started.
    #[error("cannot start the inference threads")]
    Threads(#[source] std::io::Error),
    /// The record-signing key or the audit log could not be set up.
    #[error("governance: {0}")]
    Governance(String),
}
