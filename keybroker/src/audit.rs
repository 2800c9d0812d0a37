//! The audit log: one JSON line per decision about verified evidence, and per-address summaries of the rest.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cloister_attestation::evidence::{Evidence, Platform};
use cloister_attestation::snp::report::AttestationReport;
use cloister_proto::key_release::RefusalCode;
use serde::{Deserialize, Serialize};

use crate::config::GROUP_OTHER;
pub use crate::peers::AuditSummary;
use crate::Error;

/// The append-only audit log.
pub(crate) struct AuditLog {
    pub(crate) path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let err = |reason: String| Error::AuditLog {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .append(true) // O_APPEND: every line goes to the end, nothing is overwritten
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        if meta.mode() & GROUP_OTHER != 0 {
            return Err(err(format!(
                "has mode {:04o}; it records every key release and must not be accessible to group or others (chmod 600)",
                meta.mode() & 0o7777
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one line (one `write` of the whole line, then fdatasync).
    pub(crate) fn append(&self, record: &AuditRecord) -> io::Result<()> {
        self.append_json(record)
    }

    /// Appends any serializable value as one line.
    pub(crate) fn append_json<T: Serialize>(&self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("audit log lock poisoned"))?;
        let mut f: &File = &file;
        f.write_all(&line)?;
        f.sync_data()
    }
}

/// One line of the audit log. Only public values: never key bytes.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When the decision was made (RFC 3339, UTC).
    pub time: String,
    /// The TCP peer (for a relayed enclave: the relay).
    pub peer: String,
    /// `granted`, `committed` (a durable-state commit: no key released) or `refused`.
    pub decision: String,
    /// The refusal code sent (`BadRequest`, `UnknownModel`, `EvidenceRejected`, `PolicyRejected`,
    /// `Replay`, `Internal`); absent when granted.
    pub code: Option<String>,
    /// The precise reason (the verifier's `field: expected …, found …`); absent when granted.
    pub reason: Option<String>,
    /// The requested model (`sha384:<hex>`), if the request got that far.
    pub model_digest: Option<String>,
    /// The nonce of this exchange (hex), if one was issued.
    pub nonce: Option<String>,
    /// True if the report, its chain, the policy and the binding were all verified; when false, the
    /// report fields below are what the (unauthenticated) report says, for diagnosis only.
    pub evidence_verified: bool,
    /// MEASUREMENT (hex).
    pub measurement: Option<String>,
    /// CHIP_ID (hex).
    pub chip_id: Option<String>,
    /// Product (`Milan`, `Genoa`, `Turin`).
    pub product: Option<String>,
    /// REPORTED_TCB, e.g. `bootloader=4/tee=0/snp=22/microcode=213`.
    pub reported_tcb: Option<String>,
    /// Whether the report chains to a simulated root (when unverified: what the evidence claims).
    pub simulated: Option<bool>,
    /// The enclave's X25519 public key the model key was wrapped to (hex), when granted.
    pub enclave_key: Option<String>,
    /// Public id of the released key (`cloister seal --inspect` shows the same), when granted.
    pub key_id: Option<String>,
    /// The policy file that decided (the model's own, or the broker's default).
    pub policy: Option<String>,
    /// The durable-state operation: `open <label> at v<N>` or `commit <label> v<N>`.
    pub state: Option<String>,
    /// The evidence was genuine, fresh and bound, and the policy refused it: a decision about a real
    /// enclave, written in full like a grant (not part of the line).
    #[serde(skip)]
    pub policy_decision: bool,
    /// The peer's address, for the per-address summaries (not part of the line; `peer` is).
    #[serde(skip)]
    pub(crate) source: Option<IpAddr>,
}

impl AuditRecord {
    pub(crate) fn new(peer: SocketAddr, now_unix: i64) -> Self {
        let time = time::OffsetDateTime::from_unix_timestamp(now_unix)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            time,
            peer: peer.to_string(),
            decision: "refused".to_owned(),
            code: None,
            reason: None,
            model_digest: None,
            nonce: None,
            evidence_verified: false,
            measurement: None,
            chip_id: None,
            product: None,
            reported_tcb: None,
            simulated: None,
            enclave_key: None,
            key_id: None,
            policy: None,
            state: None,
            policy_decision: false,
            source: Some(peer.ip()),
        }
    }

    /// Whether this decision is written as its own line: a grant, or any decision about evidence that
    /// verified (everything else is summarised per address).
    pub(crate) fn is_about_verified_evidence(&self) -> bool {
        self.decision == "granted" || self.evidence_verified || self.policy_decision
    }

    pub(crate) fn refuse(&mut self, code: RefusalCode, reason: impl Into<String>) {
        self.decision = "refused".to_owned();
        self.code = Some(format!("{code:?}"));
        self.reason = Some(reason.into());
    }

    /// Report fields as the (not yet, or not) verified report states them.
    pub(crate) fn claimed_report(&mut self, evidence: &Evidence) {
        self.simulated = Some(evidence.platform == Platform::SnpSimulated);
        if let Ok(r) = AttestationReport::from_bytes(&evidence.report) {
            self.fill_report(&r);
            self.product = r.cpuid_product().map(|p| p.name().to_owned());
        }
    }

    pub(crate) fn fill_report(&mut self, r: &AttestationReport) {
        self.measurement = Some(hex::encode(r.measurement));
        self.chip_id = Some(hex::encode(r.chip_id));
        self.reported_tcb = Some(r.reported_tcb.to_string());
    }
}
