//! Governance inside the enclave: the record-signing key (receipts, audit checkpoints), the audit log,
//! client budgets, client certificate pins, and output hardening. All of it configured in the measured
//! configuration, so a verifier who pins the configuration knows these rules were applied.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use cloister_governance::audit::{AuditWriter, TallyRecord, STDOUT_PREFIX};
use cloister_governance::RecordSigner;
use cloister_kserve::TensorData;

use crate::config::Config;

mod budgets;

use crate::inference::NamedTensor;
pub use budgets::{AccountState, Budgets, BudgetsState, Control, OverBudget};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The enclave's governance state.
pub struct Governance {
    signer: Arc<RecordSigner>,
    audit: AuditWriter,
    budgets: Budgets,
    /// Refusals and control calls, counted until the next tally lines.
    tallies: Mutex<Tallies>,
}

/// Refused requests and control calls (attestations, metrics scrapes), counted per client, endpoint and
/// outcome and written as one audit line per key and interval instead of one line per event (issue 21,
/// item 6: one client's refused requests wrote ~7,000 lines a second). The keys are bounded: clients are
/// pinned certificates or `anonymous`, endpoints and models are the configured ones, outcomes are statuses.
#[derive(Debug, Default)]
struct Tallies {
    since: u64,
    counts: std::collections::BTreeMap<(String, String, String), u64>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Governance {
    /// A fresh signing key, and the audit log started on stdout (`cloister-audit ` lines, which the host
    /// stores).
    pub fn new(config: &Config) -> Result<Self, crate::Error> {
        let signer = Arc::new(
            RecordSigner::generate().map_err(|e| crate::Error::Governance(e.to_string()))?,
        );
        let audit = AuditWriter::start(
            Arc::clone(&signer),
            config.audit.checkpoint_every,
            &format!("sha384:{}", hex::encode(config.digest.0)),
            Box::new(|line| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{STDOUT_PREFIX}{line}").and_then(|()| out.flush());
            }),
            Box::new(unix_now),
        );
        Ok(Governance {
            signer,
            audit,
            budgets: Budgets::new(config.budgets),
            tallies: Mutex::new(Tallies {
                since: unix_now(),
                ..Tallies::default()
            }),
        })
    }

    /// The record-signing key.
    pub fn signer(&self) -> &RecordSigner {
        &self.signer
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    /// The budgets.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A restart resumed the durable state `version`, whose audit chain ended at `head` (its last line's
    /// sequence number and SHA-256): the new chain's log says so, so that an auditor can join the runs and
    /// see that nothing of the previous run's log was cut.
    pub fn resumed(&self, version: u64, head: Option<&(u64, String)>) {
        tracing::info!(version, "governance state resumed");
        if let Some((seq, line_sha256)) = head {
            self.audit.resume(version, *seq, line_sha256);
        }
    }

    /// Counts one event for the next tally lines: `what` (`POST /v2/attestation`, `infer <model>`, …) by
    /// `client`, with `outcome` (`ok`, `refused:429`, …).
    pub fn count(&self, client: &str, what: &str, outcome: &str) {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        *tallies
            .counts
            .entry((client.to_owned(), what.to_owned(), outcome.to_owned()))
            .or_insert(0) += 1;
    }

    /// Counts a control call ([`Governance::count`]) that was `admitted` or refused by its budget.
    pub fn tally(&self, client: &str, what: &str, admitted: bool) {
        self.count(client, what, if admitted { "ok" } else { "refused:429" });
    }

    /// Writes one tally line per counted key since the last flush, and starts counting again.
    pub fn flush_tallies(&self) {
        let (since, counts) = {
            let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
            let since = std::mem::replace(&mut tallies.since, unix_now());
            (since, std::mem::take(&mut tallies.counts))
        };
        for ((client, what, outcome), count) in counts {
            self.audit.tally(TallyRecord {
                client,
                what,
                outcome,
                count,
                since,
            });
        }
    }

    /// The audit chain's last line: its sequence number and SHA-256 (hex).
    pub fn audit_head(&self) -> (u64, String) {
        let (seq, digest) = self.audit.head();
        (seq, hex::encode(digest))
    }
}

/// Output hardening against model extraction (a documented defence: Tramèr et al., "Stealing Machine
/// Learning Models via Prediction APIs", 2016, §8): in every floating-point output, keep the `top_k` largest
/// values of each row (the last axis; the others become 0), then round to `decimals`.
pub fn harden(tensor: &mut NamedTensor, top_k: Option<u32>, decimals: Option<u8>) {
    let row = tensor.shape.last().copied().unwrap_or(1).max(1);
    fn apply<T: Copy + PartialOrd + Default>(
        values: &mut [T],
        row: usize,
        k: Option<u32>,
        round: impl Fn(T) -> T,
    ) {
        if let Some(k) = k.map(|k| k as usize).filter(|k| *k < row) {
            for chunk in values.chunks_mut(row) {
                let mut sorted: Vec<T> = chunk.to_vec();
                sorted.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
                let threshold = sorted[k - 1];
                let mut kept = 0;
                for v in chunk.iter_mut() {
                    if *v >= threshold && kept < k {
                        kept += 1;
                    } else {
                        *v = T::default();
                    }
                }
            }
        }
        for v in values.iter_mut() {
            *v = round(*v);
        }
    }
    let scale = decimals.map(|d| 10f64.powi(i32::from(d)));
    match &mut tensor.data {
        TensorData::Fp32(v) => apply(v, row, top_k, |x| match scale {
            Some(s) => ((f64::from(x) * s).round() / s) as f32,
            None => x,
        }),
        TensorData::Fp64(v) => apply(v, row, top_k, |x| match scale {
            Some(s) => (x * s).round() / s,
            None => x,
        }),
        _ => {}
    }
}

/// `sha256:<hex>` of a client certificate: the client's identity in budgets, the audit log and receipts (the
/// pin is the identity; the handshake proved possession: `cloister_proto::tls::danger::PinnedClients`).
pub fn client_id(cert: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, cert))
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cloister_kserve::Datatype;

    #[test]
    fn top_k_and_rounding_keep_the_largest_values_rounded() {
        let mut t = NamedTensor {
            name: "p".into(),
            datatype: Datatype::Fp32,
            shape: vec![2, 4],
            data: TensorData::Fp32(vec![0.1234, 0.5678, 0.0111, 0.2977, 0.9, 0.05, 0.03, 0.02]),
        };
        harden(&mut t, Some(2), Some(2));
        let TensorData::Fp32(v) = &t.data else {
            unreachable!()
        };
        assert_eq!(v, &[0.0, 0.57, 0.0, 0.3, 0.9, 0.05, 0.0, 0.0]);
    }
}
