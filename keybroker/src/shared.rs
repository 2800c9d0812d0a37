//! What every connection of the broker shares: the owner's policy, CRLs and keystore, the audit log, the
//! nonce book, the per-address accounting, the RNG and the clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::Policy;
use cloister_collateral::Collateral;
use cloister_models::Keystore;
use cloister_proto::key_release::Clock;
use ring::rand::SystemRandom;

use crate::audit::AuditLog;
use crate::config::Limits;
use crate::nonces::IssuedNonces;
use crate::peers::PeerBook;

/// A policy and the files it names, loaded.
pub(crate) struct LoadedPolicy {
    /// The file, for the audit log.
    pub(crate) name: String,
    pub(crate) policy: Policy,
    pub(crate) simulated_root: Option<AmdCertificate>,
    /// The CRLs the policy names (`crl`, `crls`), applied to every evidence it decides.
    pub(crate) crls: Vec<AmdCrl>,
}

pub(crate) struct Inner {
    /// The owner's policy: it decides for every model without its own.
    pub(crate) policy: LoadedPolicy,
    /// Per-model policies (`[models."sha384:…"]`), by model digest.
    pub(crate) model_policies: std::collections::HashMap<[u8; 48], LoadedPolicy>,
    pub(crate) keystore: Keystore,
    pub(crate) audit: AuditLog,
    pub(crate) nonces: Mutex<IssuedNonces>,
    pub(crate) rng: SystemRandom,
    /// The verification and audit clock (injected: tests pin it).
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cert_sha256: [u8; 32],
    pub(crate) limits: Limits,
    pub(crate) peers: PeerBook,
    /// Where a VCEK evidence does not carry comes from, if anywhere.
    pub(crate) collateral: Option<Collateral>,
    /// Collateral fetches in flight for unverified peers: bounded, since any peer can send evidence without
    /// a VCEK and with a CHIP_ID of its choosing.
    pub(crate) collateral_fetches: tokio::sync::Semaphore,
    /// The enclaves' durable-state anchors.
    pub(crate) anchors: crate::anchors::Anchors,
    /// Key releases per model and hour.
    pub(crate) releases: crate::anchors::ReleaseLimiter,
}

impl Inner {
    /// The policy that decides for the model `digest`.
    pub(crate) fn policy_for(&self, digest: &[u8; 48]) -> &LoadedPolicy {
        self.model_policies.get(digest).unwrap_or(&self.policy)
    }

    /// The current instant of the injected clock.
    pub(crate) fn now_unix(&self) -> i64 {
        self.clock.now_unix()
    }

    /// A refusal of a peer whose evidence did not verify (or that sent none): counted for the interval's
    /// summary, or written at once when summaries are off.
    pub(crate) fn refused_unverified(&self, peer: SocketAddr, code: &str, reason: &str) {
        if self.limits.audit_summary_secs == 0 {
            eprintln!("cloister keybroker: {peer}: {code}: {reason}");
        } else {
            self.peers.refused(peer.ip(), code, reason);
        }
    }
}

/// Writes the summary lines of the interval that just ended.
pub(crate) async fn write_summaries(inner: &Arc<Inner>) {
    let lines = inner.peers.take_summaries();
    if lines.is_empty() {
        return;
    }
    let inner = inner.clone();
    let written = tokio::task::spawn_blocking(move || {
        lines
            .iter()
            .try_for_each(|line| inner.audit.append_json(line))
            .map_err(|e| (inner.audit.path.clone(), e))
    })
    .await;
    if let Ok(Err((path, e))) = written {
        eprintln!(
            "cloister keybroker: cannot write the audit log {}: {e}",
            path.display()
        );
    }
}
