//! What a client trusts and presents, built once and shared by its sessions (as rustls' `ClientConfig` is):
//! [`SessionConfig::builder`] → [`SessionConfigBuilder`] → [`SessionConfigBuilder::build`].
//!
//! The builder refuses, at `build`, a policy that pins no workload identity (inputs would go to whatever
//! code runs on a genuine AMD platform) unless the policy says `allow_any_workload = true`. What weakens
//! verification is reachable only through [`SessionConfigBuilder::dangerous`], whose builder nobody outside
//! this crate can construct.

use std::sync::Arc;

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_collateral::files as chain_files;
use cloister_collateral::{Collateral, Error as InputError};
use cloister_provenance::release::{ReleaseProofs, VerifiedReleases, MAX_PROOFS_LEN};
use cloister_provenance::tlog::NoteVerifier;

use crate::SessionError;

/// A TLS client certificate chain and its private key (`[clients]` of the enclave's configuration).
pub struct ClientIdentity {
    certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Reads a PEM certificate (chain, leaf first) and a PEM private key.
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let certificates = rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if certificates.is_empty() {
            return Err(format!("{}: no certificate", cert.display()));
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(ClientIdentity { certificates, key })
    }
}

/// What every session of a client trusts and presents. Made by [`SessionConfig::builder`].
pub struct SessionConfig {
    policy: Policy,
    simulated_root: Option<AmdCertificate>,
    crls: Vec<AmdCrl>,
    collateral: Option<Arc<Collateral>>,
    tls: Arc<rustls::ClientConfig>,
    /// The release log's proven entries, when the policy requires the log (`[release_log]`).
    releases: Option<VerifiedReleases>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("simulated_root", &self.simulated_root.is_some())
            .field("crls", &self.crls.len())
            .field("collateral", &self.collateral.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionConfig {
    /// A builder trusting what `policy` accepts, on the AMD roots only.
    pub fn builder(policy: Policy) -> SessionConfigBuilder {
        SessionConfigBuilder {
            policy,
            simulated_root: None,
            crls: Vec::new(),
            collateral: None,
            identity: None,
        }
    }

    /// A builder from a policy file, with the CRLs it names (`crl`, `crls`) and, when it names one
    /// (`simulated_root`), the simulated root: a policy file that names a simulated root is the user's
    /// explicit choice to trust the software AMD-SP that made it (development only; `cloister infer` says so).
    pub fn builder_from_file(path: &std::path::Path) -> Result<SessionConfigBuilder, InputError> {
        let policy = chain_files::read_policy(path)?;
        let (simulated_root, crls) = chain_files::read_policy_files(&policy)?;
        let builder = SessionConfig::builder(policy).with_crls(crls);
        Ok(match simulated_root {
            Some(root) => builder.dangerous().trust_simulated_root(root),
            None => builder,
        })
    }

    /// The verification policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The simulated root this configuration trusts, if any.
    pub fn simulated_root(&self) -> Option<&AmdCertificate> {
        self.simulated_root.as_ref()
    }

    /// How evidence is verified at `at_unix` under this configuration (the roots and CRLs): for a record
    /// checked offline (a receipt) under the same trust as the session that got it.
    pub fn verify_options(&self, at_unix: i64) -> VerifyOptions<'_> {
        VerifyOptions {
            at_unix,
            crls: &self.crls,
            simulated_root: self.simulated_root.as_ref(),
        }
    }

    pub(crate) fn collateral(&self) -> Option<&Collateral> {
        self.collateral.as_deref()
    }

    /// The release-log entries the policy's proof file proved, when it requires the log.
    pub fn releases(&self) -> Option<&VerifiedReleases> {
        self.releases.as_ref()
    }

    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }
}

/// Builds a [`SessionConfig`].
#[must_use]
pub struct SessionConfigBuilder {
    policy: Policy,
    simulated_root: Option<AmdCertificate>,
    crls: Vec<AmdCrl>,
    collateral: Option<Arc<Collateral>>,
    identity: Option<Arc<ClientIdentity>>,
}

impl std::fmt::Debug for SessionConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfigBuilder")
            .field("simulated_root", &self.simulated_root.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionConfigBuilder {
    /// ARK-signed CRLs to apply (on top of the policy's own).
    pub fn with_crls(mut self, crls: Vec<AmdCrl>) -> Self {
        self.crls.extend(crls);
        self
    }

    /// Where a VCEK the evidence does not carry is fetched from (and verified, as the rest of the chain
    /// is). Without it, evidence without its VCEK is refused.
    pub fn with_collateral(mut self, collateral: Arc<Collateral>) -> Self {
        self.collateral = Some(collateral);
        self
    }

    /// A TLS client certificate to present inside the session.
    pub fn with_client_identity(mut self, identity: Arc<ClientIdentity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Changes the policy (a stricter pin, say) before building.
    pub fn with_policy(mut self, change: impl FnOnce(&mut Policy)) -> Self {
        change(&mut self.policy);
        self
    }

    /// The policy as it stands.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The simulated root trusted so far (a collateral source needs it to verify what it fetches).
    pub fn simulated_root(&self) -> Option<&AmdCertificate> {
        self.simulated_root.as_ref()
    }

    /// What weakens verification: development only.
    pub fn dangerous(self) -> crate::danger::DangerousSessionConfigBuilder {
        crate::danger::DangerousSessionConfigBuilder { builder: self }
    }

    /// The configuration; refused when the policy pins no workload identity and does not say
    /// `allow_any_workload = true` ([`SessionError::NoWorkloadPin`]), when the client certificate does
    /// not fit TLS, or when the policy requires a release log and its proof file does not verify under the
    /// pinned log key ([`SessionError::ReleaseLog`]).
    pub fn build(self) -> Result<Arc<SessionConfig>, SessionError> {
        self.policy.require_workload_pin()?;
        let releases = self
            .policy
            .release_log
            .as_ref()
            .map(load_release_proofs)
            .transpose()?;
        let identity = self
            .identity
            .as_deref()
            .map(|id| (id.certificates.clone(), id.key.clone_key()));
        let tls = cloister_proto::session_attestation::client_tls_config(identity)
            .map_err(|e| SessionError::Tls(format!("client configuration: {e}")))?;
        Ok(Arc::new(SessionConfig {
            policy: self.policy,
            simulated_root: self.simulated_root,
            crls: self.crls,
            collateral: self.collateral,
            tls: Arc::new(tls),
            releases,
        }))
    }

    pub(crate) fn set_simulated_root(&mut self, root: AmdCertificate) {
        self.simulated_root = Some(root);
    }
}

/// Reads and verifies the proof file a `[release_log]` names: the checkpoint under the pinned key, every
/// inclusion proof against it. Done once per configuration; each session then only looks entries up.
fn load_release_proofs(
    requirement: &cloister_attestation::policy::ReleaseLogRequirement,
) -> Result<VerifiedReleases, SessionError> {
    let path = &requirement.proofs;
    let fail = |why: String| SessionError::ReleaseLog(format!("{}: {why}", path.display()));
    let key = NoteVerifier::parse(&requirement.key).map_err(|e| fail(e.to_string()))?;
    let len = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if len > MAX_PROOFS_LEN as u64 {
        return Err(fail(format!("{len} bytes, over {MAX_PROOFS_LEN}")));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    ReleaseProofs::verify(&bytes, &key).map_err(|e| fail(e.to_string()))
}
