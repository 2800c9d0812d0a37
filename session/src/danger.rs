//! What weakens a session's verification, for development: reachable only through
//! [`SessionConfigBuilder::dangerous`](crate::SessionConfigBuilder::dangerous), and constructible nowhere else.

use cloister_attestation::snp::certs::AmdCertificate;

use crate::SessionConfigBuilder;

/// A [`SessionConfigBuilder`] whose next call weakens verification.
#[must_use]
#[derive(Debug)]
pub struct DangerousSessionConfigBuilder {
    pub(crate) builder: SessionConfigBuilder,
}

impl DangerousSessionConfigBuilder {
    /// INSECURE: also trust evidence chaining to `root`, a simulated AMD root (`cloister sim`). Anyone with
    /// the simulator's state directory can forge evidence under it.
    pub fn trust_simulated_root(mut self, root: AmdCertificate) -> SessionConfigBuilder {
        self.builder.set_simulated_root(root);
        self.builder
    }
}
