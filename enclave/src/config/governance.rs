//! The governance sections of the measured configuration: the audit log's checkpoints, which clients may
//! connect, and their budgets. Measured: a verifier who pins the configuration digest knows these rules were
//! applied.
//!
//! ```toml
//! [audit]
//! checkpoint_every = 100            # a signed checkpoint every N lines (and a signed stop at shutdown)
//! tally_every_secs = 60             # refusals and control calls: one counted line per client and kind
//!
//! [clients]
//! require_certificate = true        # TLS client certificates inside the attested session
//! certificate_sha256 = ["…64 hex…"] # SHA-256 of each allowed client certificate (DER)
//! allow_anonymous = false           # clients without a certificate; default: only when none are pinned
//!
//! [budgets.per_client]              # each client (certificate), or all anonymous clients together
//! requests_per_minute = 60          # token bucket: 60 per minute, bursts of up to 60
//! requests_per_day = 10000
//! input_elements_per_day = 100000000
//! attestations_per_minute = 60      # POST /v2/attestation (a firmware report each)
//! metrics_per_minute = 60           # GET /metrics
//! [budgets.global]                  # all clients together; same keys
//! requests_per_minute = 6000
//!
//! [state]                           # durable governance state (budgets, the audit chain's head)
//! durable = true                    # default: true when a budget is set
//! commit_every_secs = 10            # how much spending a crash may forget, at most
//! ```

use serde::Deserialize;

/// `[audit]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A signed checkpoint every this many lines (at least 1).
    pub checkpoint_every: u32,
    /// Seconds between tally lines (refused requests, attestations and metrics scrapes, counted per
    /// client, endpoint and outcome); also written at shutdown. At least 1.
    pub tally_every_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 100,
            tally_every_secs: 60,
        }
    }
}

/// `[clients]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// Connections without an allowed client certificate are refused in the handshake.
    pub require_certificate: bool,
    /// SHA-256 (hex) of each allowed client certificate's DER.
    pub certificate_sha256: Vec<String>,
    /// Serve clients without a certificate (all of them sharing one `anonymous` budget account). Absent:
    /// only when no certificate is pinned. With pins, anonymous access is off unless set: otherwise a pinned
    /// client over its budget would drop its certificate and go on spending the anonymous account (issue
    /// 21, item 5). Setting it with pins accepts exactly that.
    pub allow_anonymous: Option<bool>,
}

impl ClientsConfig {
    /// Whether connections without a client certificate are served.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or(self.certificate_sha256.is_empty())
    }
}

/// One budget: any of the three limits (absent: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Requests per minute (token bucket, bursts up to this many).
    pub requests_per_minute: Option<u32>,
    /// Requests per UTC day.
    pub requests_per_day: Option<u64>,
    /// Input tensor elements per UTC day.
    pub input_elements_per_day: Option<u64>,
    /// `POST /v2/attestation` per minute (token bucket): each one costs a firmware report.
    pub attestations_per_minute: Option<u32>,
    /// `GET /metrics` per minute (token bucket).
    pub metrics_per_minute: Option<u32>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.requests_per_day.is_some()
            || self.input_elements_per_day.is_some()
    }
}

/// `[budgets]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// Each client's own budget.
    pub per_client: Budget,
    /// All clients together.
    pub global: Budget,
}

/// `[state]`: the durable governance state (`crate::state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Seal the budgets and the audit chain's head, store them at the host, anchor them at the key broker.
    /// Absent: on when any budget is set (budgets that a restart resets are no budgets).
    pub durable: Option<bool>,
    /// Seconds between commits (and so the most spending a crash can forget).
    pub commit_every_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            durable: None,
            commit_every_secs: 10,
        }
    }
}

impl StateConfig {
    /// Whether the state is durable under `budgets`.
    pub fn is_durable(&self, budgets: &BudgetsConfig) -> bool {
        self.durable
            .unwrap_or(budgets.per_client.is_limited() || budgets.global.is_limited())
    }
}

/// Parses the certificate pins (64 hex digits each).
pub(crate) fn parse_pins(pins: &[String]) -> Option<Vec<[u8; 32]>> {
    pins.iter()
        .map(|p| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(p, &mut out).ok().map(|()| out)
        })
        .collect()
}
