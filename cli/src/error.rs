//! The crate's one error: sessions, deployments, model checks, the Magika features and the collateral read
//! from files, as variants. The `cloister` command turns it into a message and an exit code in one place
//! (`cmd::failure`).

use cloister_devnet::DeploymentError;
use cloister_session::SessionError;

use crate::magika::MagikaError;
use crate::seal_check::ModelCheckError;

/// The crate's one error (see the module documentation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An attested session could not be opened or used.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A deployment (demo, tests) could not be started.
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    /// A model cannot be sealed (the engine would not load it).
    #[error(transparent)]
    ModelCheck(#[from] ModelCheckError),
    /// The Magika configuration or features failed.
    #[error(transparent)]
    Magika(#[from] MagikaError),
    /// A policy, certificate or CRL file could not be read.
    #[error(transparent)]
    Collateral(#[from] cloister_collateral::Error),
    /// Verification failed.
    #[error(transparent)]
    Attestation(#[from] cloister_attestation::Error),
}
