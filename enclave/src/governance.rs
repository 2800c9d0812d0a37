//! Governance inside the enclave: the record-signing key (receipts, audit checkpoints), the audit log,
//! client budgets, client certificate pins, and output hardening. All of it configured in the measured
//! configuration, so a verifier who pins the configuration knows these rules were applied.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cloister_governance::audit::{AuditWriter, STDOUT_PREFIX};
use cloister_governance::RecordSigner;
use cloister_kserve::TensorData;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::config::{Budget, BudgetsConfig, Config};
use crate::inference::NamedTensor;

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
    /// The audit chain's last line: its sequence number and SHA-256 (what the next line's `prev` names).
    audit_head: Arc<Mutex<(u64, [u8; 32])>>,
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
        let audit_head = Arc::new(Mutex::new((0u64, [0u8; 32])));
        let head = Arc::clone(&audit_head);
        let audit = AuditWriter::start(
            Arc::clone(&signer),
            config.audit.checkpoint_every,
            &format!("sha384:{}", hex::encode(config.digest.0)),
            Box::new(move |line| {
                // The sink sees every line in chain order: remember the last one for the durable state.
                let seq = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["seq"].as_u64())
                    .unwrap_or(0);
                let mut digest = [0u8; 32];
                digest.copy_from_slice(
                    ring::digest::digest(&ring::digest::SHA256, line.as_bytes()).as_ref(),
                );
                *head.lock().unwrap_or_else(PoisonError::into_inner) = (seq, digest);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{STDOUT_PREFIX}{line}").and_then(|()| out.flush());
            }),
            Box::new(unix_now),
        );
        Ok(Governance {
            signer,
            audit,
            budgets: Budgets::new(config.budgets),
            audit_head,
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
            tracing::info!(previous_seq = seq, previous_line = %line_sha256, "audit chain resumed");
        }
    }

    /// The audit chain's last line: its sequence number and SHA-256 (hex).
    pub fn audit_head(&self) -> (u64, String) {
        let (seq, digest) = *self
            .audit_head
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (seq, hex::encode(digest))
    }
}

/// A request refused by a budget: why, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// Which budget (`per-client requests_per_minute`, …).
    pub reason: String,
    /// Seconds until it would be admitted.
    pub retry_after: u64,
}

#[derive(Debug)]
struct Account {
    tokens: f64,
    refilled: Instant,
    day: u64,
    requests: u64,
    elements: u64,
}

impl Account {
    fn new(limit: &Budget) -> Self {
        Account {
            tokens: f64::from(limit.requests_per_minute.unwrap_or(0)),
            refilled: Instant::now(),
            day: unix_now() / 86_400,
            requests: 0,
            elements: 0,
        }
    }

    fn roll(&mut self, limit: &Budget, now: Instant, today: u64) {
        if let Some(rpm) = limit.requests_per_minute {
            let rate = f64::from(rpm) / 60.0;
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(f64::from(rpm));
            self.refilled = now;
        }
        if today != self.day {
            self.day = today;
            self.requests = 0;
            self.elements = 0;
        }
    }

    fn check_request(&self, limit: &Budget, scope: &str) -> Result<(), OverBudget> {
        if let Some(rpm) = limit.requests_per_minute {
            if self.tokens < 1.0 {
                let rate = f64::from(rpm) / 60.0;
                return Err(OverBudget {
                    reason: format!("{scope} requests_per_minute ({rpm})"),
                    retry_after: ((1.0 - self.tokens) / rate).ceil().max(1.0) as u64,
                });
            }
        }
        if let Some(day) = limit.requests_per_day {
            if self.requests >= day {
                return Err(OverBudget {
                    reason: format!("{scope} requests_per_day ({day})"),
                    retry_after: seconds_to_midnight(),
                });
            }
        }
        Ok(())
    }
}

fn seconds_to_midnight() -> u64 {
    86_400 - unix_now() % 86_400
}

/// One budget account as the durable state keeps it (`crate::state`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccountState {
    /// Tokens left in the minute bucket when saved.
    pub tokens: f64,
    /// The UTC day (days since the epoch) the daily counts are for.
    pub day: u64,
    /// Requests that day.
    pub requests: u64,
    /// Input elements that day.
    pub elements: u64,
}

/// Every budget account, as the durable state keeps them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BudgetsState {
    /// Unix seconds when saved (the minute buckets refill from then).
    pub saved_at: u64,
    /// The global account.
    pub global: Option<AccountState>,
    /// Each client's account.
    pub clients: Vec<(String, AccountState)>,
}

impl Account {
    fn state(&self) -> AccountState {
        AccountState {
            tokens: self.tokens,
            day: self.day,
            requests: self.requests,
            elements: self.elements,
        }
    }

    fn restored(state: &AccountState, limit: &Budget, elapsed_secs: u64) -> Self {
        let cap = f64::from(limit.requests_per_minute.unwrap_or(0));
        let rate = cap / 60.0;
        Account {
            tokens: (state.tokens.max(0.0) + elapsed_secs as f64 * rate).min(cap),
            refilled: Instant::now(),
            day: state.day,
            requests: state.requests,
            elements: state.elements,
        }
    }
}

/// Per-client and global budgets (`[budgets]`). Clients are their certificate's `sha256:…` or `anonymous`
/// (all anonymous clients share one account): a bounded set, since certificates are pinned.
#[derive(Debug)]
pub struct Budgets {
    config: BudgetsConfig,
    global: Mutex<Account>,
    clients: Mutex<HashMap<String, Account>>,
    /// Spending recorded since start (the durable state commits when it moved).
    changes: std::sync::atomic::AtomicU64,
    /// Why the budgets cannot be made durable right now, if so: budgeted requests are refused until a
    /// commit succeeds (spending that a restart would forget is spending without a budget).
    not_durable: Mutex<Option<String>>,
}

impl Budgets {
    fn new(config: BudgetsConfig) -> Self {
        Budgets {
            config,
            global: Mutex::new(Account::new(&config.global)),
            clients: Mutex::new(HashMap::new()),
            changes: std::sync::atomic::AtomicU64::new(0),
            not_durable: Mutex::new(None),
        }
    }

    /// How many times spending was recorded since start.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Says why the budgets are not durable now (`None`: they are again).
    pub fn set_not_durable(&self, why: Option<String>) {
        *self
            .not_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Why budgeted requests are refused now, if they are (see [`Budgets::set_not_durable`]).
    pub fn durability_problem(&self) -> Option<String> {
        if !self.is_limited() {
            return None;
        }
        self.not_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every account, as of now, for the durable state.
    pub fn snapshot(&self) -> BudgetsState {
        let now = Instant::now();
        let today = unix_now() / 86_400;
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        global.roll(&self.config.global, now, today);
        let mut out: Vec<(String, AccountState)> = clients
            .iter_mut()
            .map(|(client, account)| {
                account.roll(&self.config.per_client, now, today);
                (client.clone(), account.state())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        BudgetsState {
            saved_at: unix_now(),
            global: Some(global.state()),
            clients: out,
        }
    }

    /// Replaces every account with a saved state (a restart resuming its sealed state). The minute buckets
    /// refill for the time since it was saved; the daily counts carry over within the same UTC day.
    pub fn restore(&self, state: &BudgetsState) {
        let elapsed = unix_now().saturating_sub(state.saved_at);
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = &state.global {
            *global = Account::restored(g, &self.config.global, elapsed);
        }
        clients.clear();
        for (client, account) in &state.clients {
            clients.insert(
                client.clone(),
                Account::restored(account, &self.config.per_client, elapsed),
            );
        }
    }

    /// Whether any budget is configured.
    pub fn is_limited(&self) -> bool {
        self.config.per_client.is_limited() || self.config.global.is_limited()
    }

    /// Admits one request of `client` (consuming a token and a daily request of both accounts), or says
    /// which budget refuses it. Returns the client's state for the audit log.
    pub fn admit(&self, client: &str) -> Result<Option<String>, OverBudget> {
        if !self.is_limited() {
            return Ok(None);
        }
        let now = Instant::now();
        let today = unix_now() / 86_400;
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let account = clients
            .entry(client.to_owned())
            .or_insert_with(|| Account::new(&self.config.per_client));
        global.roll(&self.config.global, now, today);
        account.roll(&self.config.per_client, now, today);
        global.check_request(&self.config.global, "global")?;
        account.check_request(&self.config.per_client, "per-client")?;
        for acc in [&mut *global, &mut *account] {
            acc.tokens -= 1.0;
            acc.requests += 1;
        }
        self.changed();
        Ok(Some(state(&self.config.per_client, account)))
    }

    /// Charges `elements` input elements to `client`'s and the global daily budget, or refuses them.
    pub fn charge_elements(&self, client: &str, elements: u64) -> Result<(), OverBudget> {
        let (per, glob) = (
            self.config.per_client.input_elements_per_day,
            self.config.global.input_elements_per_day,
        );
        if per.is_none() && glob.is_none() {
            return Ok(());
        }
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let account = clients
            .entry(client.to_owned())
            .or_insert_with(|| Account::new(&self.config.per_client));
        for (acc, limit, scope) in [(&*global, glob, "global"), (&*account, per, "per-client")] {
            if let Some(limit) = limit {
                if acc.elements.saturating_add(elements) > limit {
                    return Err(OverBudget {
                        reason: format!("{scope} input_elements_per_day ({limit})"),
                        retry_after: seconds_to_midnight(),
                    });
                }
            }
        }
        global.elements = global.elements.saturating_add(elements);
        account.elements = account.elements.saturating_add(elements);
        self.changed();
        Ok(())
    }
}

fn state(limit: &Budget, a: &Account) -> String {
    let mut parts = Vec::new();
    if let Some(rpm) = limit.requests_per_minute {
        parts.push(format!(
            "minute {:.0}/{rpm} left",
            a.tokens.max(0.0).floor()
        ));
    }
    if let Some(day) = limit.requests_per_day {
        parts.push(format!("day {}/{day} used", a.requests));
    }
    if let Some(e) = limit.input_elements_per_day {
        parts.push(format!("elements {}/{e} used", a.elements));
    }
    parts.join(", ")
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

/// Client certificates by SHA-256 pin (`[clients]`). The certificate's chain and names are not checked:
/// the pin is the identity. Its possession is proven by the TLS 1.3 CertificateVerify signature, checked
/// with the provider's algorithms.
#[derive(Debug)]
pub struct PinnedClients {
    pins: Vec<[u8; 32]>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClients {
    /// A verifier for `pins`; `mandatory`: connections without a certificate are refused.
    pub fn new(pins: Vec<[u8; 32]>, mandatory: bool) -> Self {
        PinnedClients {
            pins,
            mandatory,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

/// `sha256:<hex>` of a certificate.
pub fn client_id(cert: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, cert))
    )
}

impl ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if self
            .pins
            .iter()
            .any(|p| cloister_attestation::ct_eq(p, digest.as_ref()))
        {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The server speaks TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
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

    /// Issue 21, item 4: what a restart restores is what was spent, not a fresh budget.
    #[test]
    fn budgets_survive_a_snapshot_and_restore() {
        let config = BudgetsConfig {
            per_client: Budget {
                requests_per_minute: Some(3),
                requests_per_day: Some(5),
                input_elements_per_day: None,
            },
            global: Budget::default(),
        };
        let before = Budgets::new(config);
        for _ in 0..3 {
            before.admit("a").unwrap();
        }
        assert!(before.admit("a").is_err());
        assert_eq!(before.changes(), 3);
        let saved = before.snapshot();
        // A restarted enclave that restores the state: still over budget for the minute, and the day
        // counts three requests.
        let after = Budgets::new(config);
        after.restore(&saved);
        assert!(after.admit("a").is_err());
        let state = after.snapshot();
        let (_, a) = state.clients.iter().find(|(c, _)| c == "a").unwrap();
        assert_eq!(a.requests, 3);
        // Without it, a fresh start: the budget is back (what the host's kill used to buy).
        assert!(Budgets::new(config).admit("a").is_ok());
        // Not durable: budgeted requests are refused until it is again.
        after.set_not_durable(Some("the host keeps no state".into()));
        assert!(after.durability_problem().is_some());
        after.set_not_durable(None);
        assert!(after.durability_problem().is_none());
    }

    #[test]
    fn budgets_refuse_then_refill() {
        let config = BudgetsConfig {
            per_client: Budget {
                requests_per_minute: Some(60),
                requests_per_day: Some(1000),
                input_elements_per_day: Some(100),
            },
            global: Budget::default(),
        };
        let b = Budgets::new(config);
        for _ in 0..60 {
            b.admit("a").unwrap();
        }
        let over = b.admit("a").unwrap_err();
        assert!(over.reason.contains("requests_per_minute"), "{over:?}");
        assert_eq!(over.retry_after, 1);
        // Another client is unaffected.
        b.admit("b").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        b.admit("a").unwrap();
        b.charge_elements("a", 100).unwrap();
        assert!(b.charge_elements("a", 1).is_err());
        b.charge_elements("b", 1).unwrap();
    }
}
