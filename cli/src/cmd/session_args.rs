//! The arguments every command that opens attested sessions shares (`infer`, `bench`, `proxy`): where the
//! enclave is, what its evidence must satisfy, where collateral the evidence does not carry comes from, and
//! the client certificate to present. One definition, so that the three commands take the same flags and
//! apply the same rules (issue 22, item 6: `bench` and `proxy` had no `--client-cert` and no KDS flags).

use std::path::PathBuf;
use std::sync::Arc;

use cloister_session::{ClientIdentity, SessionConfig};

use super::Failure;

/// `--endpoint`, `--policy`, `--collateral`, the KDS flags, `--client-cert`/`--client-key`.
#[derive(clap::Args)]
pub(crate) struct SessionArgs {
    /// The enclave's endpoint (usually the host's public relay port), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) endpoint: String,
    /// The client's policy (TOML): `workload_identity` and its pins, model digests, TCB, root. Nothing is
    /// sent unless the enclave's evidence satisfies it.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: PathBuf,
    /// An offline bundle (`cloister fetch bundle`): where a VCEK the evidence does not carry is looked up
    /// first. Evidence from Cloister's enclaves carries its VCEK; this is for enclaves that cannot.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    #[command(flatten)]
    kds: super::collateral::KdsArgs,
    /// Present this TLS client certificate (PEM) inside the attested session (`[clients]` of the enclave).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl SessionArgs {
    /// What every session of the command trusts and presents. A policy that does not pin the workload is a
    /// usage error (exit 2) unless it says `allow_any_workload = true`, which is printed as a warning.
    pub(crate) fn trust(&self) -> Result<Arc<SessionConfig>, Failure> {
        let mut builder = SessionConfig::builder_from_file(&self.policy)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        match builder.policy().require_workload_pin() {
            Ok(false) => {}
            Ok(true) => super::warn_any_workload(&self.policy),
            Err(e) => return Err(Failure::Usage(format!("{}: {e}", self.policy.display()))),
        }
        // Used only when the evidence carries no VCEK.
        let collateral = self.kds.client(
            true,
            self.collateral.clone(),
            builder.simulated_root().cloned(),
        )?;
        builder = builder.with_collateral(Arc::new(collateral));
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            builder = builder.with_client_identity(Arc::new(
                ClientIdentity::from_pem_files(cert, key).map_err(Failure::Usage)?,
            ));
        }
        builder
            .build()
            .map_err(|e| Failure::Usage(format!("{}: {e}", self.policy.display())))
    }
}
