//! Client budgets (`[budgets]`): per-client and global accounts, each with a token bucket for requests,
//! daily request and input-element counts, and token buckets for the control endpoints
//! (`POST /v2/attestation`: a firmware report each; `GET /metrics`). Their state is what the durable state
//! (`crate::state`) seals across restarts.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::unix_now;
use crate::config::{Budget, BudgetsConfig};

/// A request refused by a budget: why, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// Which budget (`per-client requests_per_minute`, …).
    pub reason: String,
    /// Seconds until it would be admitted.
    pub retry_after: u64,
}

/// The control endpoints a budget bounds besides inference: each answer costs the enclave work (a
/// firmware report; rendering every metric) and used to be free for any client to ask for without limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// `POST /v2/attestation`.
    Attestation,
    /// `GET /metrics`.
    Metrics,
}

impl Control {
    /// The budget key.
    pub fn name(self) -> &'static str {
        match self {
            Control::Attestation => "attestations_per_minute",
            Control::Metrics => "metrics_per_minute",
        }
    }

    /// The endpoint, as the audit log's tallies name it.
    pub fn endpoint(self) -> &'static str {
        match self {
            Control::Attestation => "POST /v2/attestation",
            Control::Metrics => "GET /metrics",
        }
    }

    fn limit(self, budget: &Budget) -> Option<u32> {
        match self {
            Control::Attestation => budget.attestations_per_minute,
            Control::Metrics => budget.metrics_per_minute,
        }
    }

    fn index(self) -> usize {
        match self {
            Control::Attestation => 0,
            Control::Metrics => 1,
        }
    }
}

/// A token bucket of `per_minute`, bursts up to that many.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(per_minute: Option<u32>) -> Self {
        Bucket {
            tokens: f64::from(per_minute.unwrap_or(0)),
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self, per_minute: u32, now: Instant) {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.refilled = now;
    }

    fn check(&self, per_minute: u32, reason: String) -> Result<(), OverBudget> {
        if self.tokens >= 1.0 {
            return Ok(());
        }
        let rate = f64::from(per_minute) / 60.0;
        Err(OverBudget {
            reason,
            retry_after: ((1.0 - self.tokens) / rate).ceil().max(1.0) as u64,
        })
    }
}

#[derive(Debug)]
struct Account {
    tokens: f64,
    refilled: Instant,
    day: u64,
    requests: u64,
    elements: u64,
    control: [Bucket; 2],
}

impl Account {
    fn new(limit: &Budget) -> Self {
        Account {
            tokens: f64::from(limit.requests_per_minute.unwrap_or(0)),
            refilled: Instant::now(),
            day: unix_now() / 86_400,
            requests: 0,
            elements: 0,
            control: [
                Bucket::full(limit.attestations_per_minute),
                Bucket::full(limit.metrics_per_minute),
            ],
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
            // Control buckets are per minute and not part of the durable state: a restart (which the
            // broker rate-limits) refills them.
            control: [
                Bucket::full(limit.attestations_per_minute),
                Bucket::full(limit.metrics_per_minute),
            ],
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
    pub(crate) fn new(config: BudgetsConfig) -> Self {
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

    /// Admits one call of a control endpoint by `client` (a token from both its account's and the global
    /// bucket), or says which budget refuses it.
    pub fn admit_control(&self, client: &str, control: Control) -> Result<(), OverBudget> {
        let (per, glob) = (
            control.limit(&self.config.per_client),
            control.limit(&self.config.global),
        );
        if per.is_none() && glob.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let i = control.index();
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let account = clients
            .entry(client.to_owned())
            .or_insert_with(|| Account::new(&self.config.per_client));
        for (acc, limit, scope) in [
            (&mut *global, glob, "global"),
            (&mut *account, per, "per-client"),
        ] {
            if let Some(limit) = limit {
                acc.control[i].refill(limit, now);
                acc.control[i].check(limit, format!("{scope} {} ({limit})", control.name()))?;
            }
        }
        for (acc, limit) in [(&mut *global, glob), (&mut *account, per)] {
            if limit.is_some() {
                acc.control[i].tokens -= 1.0;
            }
        }
        Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Issue 21, item 4: what a restart restores is what was spent, not a fresh budget.
    #[test]
    fn budgets_survive_a_snapshot_and_restore() {
        let config = BudgetsConfig {
            per_client: Budget {
                requests_per_minute: Some(3),
                requests_per_day: Some(5),
                ..Budget::default()
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

    /// Issue 21, item 6: attestations and metrics scrapes are budgeted per client.
    #[test]
    fn control_endpoints_have_their_own_buckets() {
        let config = BudgetsConfig {
            per_client: Budget {
                attestations_per_minute: Some(2),
                ..Budget::default()
            },
            global: Budget {
                metrics_per_minute: Some(1),
                ..Budget::default()
            },
        };
        let b = Budgets::new(config);
        b.admit_control("a", Control::Attestation).unwrap();
        b.admit_control("a", Control::Attestation).unwrap();
        let over = b.admit_control("a", Control::Attestation).unwrap_err();
        assert_eq!(over.reason, "per-client attestations_per_minute (2)");
        assert_eq!(over.retry_after, 30);
        b.admit_control("b", Control::Attestation).unwrap();
        b.admit_control("a", Control::Metrics).unwrap();
        let over = b.admit_control("b", Control::Metrics).unwrap_err();
        assert_eq!(over.reason, "global metrics_per_minute (1)");
        // Inference is not charged by either, and no request budget is configured.
        assert!(!b.is_limited());
        assert_eq!(b.admit("a").unwrap(), None);
    }

    #[test]
    fn budgets_refuse_then_refill() {
        let config = BudgetsConfig {
            per_client: Budget {
                requests_per_minute: Some(60),
                requests_per_day: Some(1000),
                input_elements_per_day: Some(100),
                ..Budget::default()
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
