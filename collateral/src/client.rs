//! The collateral client: VCEKs, chains and CRLs from, in order, memory, an offline bundle, the on-disk
//! store, and a KDS (AMD's, a mirror, or the host's `/collateral` service).
//!
//! ```text
//! get(item) ── memory ─ hit ──────────────────────────────────────────────────────────────▶ bytes
//!     │ miss: one flight per path (concurrent callers wait for it, then read memory)
//!     ├─ bundle, store ─ verified & current ─▶ memory ─────────────────────────────────────▶ bytes
//!     └─ KDS GET base+path ── 200 ─ verified ─▶ store, memory ─────────────────────────────▶ bytes
//!            │ 429/503: wait Retry-After (or backoff 1 s, 2 s, 4 s … ≤ max), while the budget lasts
//!            │ 404: not found (no retry)      transport error / other 5xx: backoff, while the budget lasts
//!            └ budget spent: Error::GaveUp naming the URL, the attempts and the last answer
//! ```
//!
//! Nothing is kept that did not verify ([`crate::verify`]): a bad answer is an error naming the URL and the
//! reason, and neither memory nor the store changes. What is read back from the store or a bundle is
//! verified again (the directory may be shared); a store entry that is a symlink, not a regular file or
//! oversized ([`crate::store`]) is ignored like one that does not verify, and replaced by a verified one.
//! A CRL is current until its nextUpdate; after that it is refetched, and if that fails the stale one is
//! returned with the reason, for the verifier's `crl_max_staleness` to judge.
//!
//! CRLs never go back ([`CrlVersion`]: cRLNumber, else thisUpdate). Of the CRLs held (memory, bundle,
//! store) the newest verified one is used, whatever the others' nextUpdate says; a fetched CRL older than
//! it is refused ([`Error::CrlRollback`]) and the held one kept; a fetched CRL never replaces a newer
//! verified one another process stored meanwhile. Memory keeps the newest CRL this client has seen for
//! its lifetime, so deleting or replacing the cache file mid-run does not roll it back either. (A new
//! process starts from what the bundle and the store hold: one who can replace the store's file before it
//! starts can hand it an older genuine CRL, still current by its dates; AMD's nextUpdate, and the policy's
//! `crl_max_staleness`, bound how old.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cloister_attestation::evidence::CertChainDer;
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::roots;
use cloister_attestation::snp::Product;

use crate::bundle::Bundle;
use crate::kds::{self, Item, KeyTree, VcekId};
use crate::store::Store;
use crate::verify::{self, IssuerChain};
use crate::Error;

// Defined in its own module (so that `crate::error` need not depend on this one), still public here.
pub use crate::crl_version::CrlVersion;

/// How hard to try a KDS before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time one item may take, waits included.
    pub budget: Duration,
    /// Time one HTTP request may take.
    pub request_timeout: Duration,
    /// First wait after a failure without `Retry-After`; doubled each time.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (a longer `Retry-After` than the budget allows ends the attempts).
    pub max_backoff: Duration,
    /// Attempts when the server cannot be reached at all (no answer, a refused connection): a KDS that
    /// answers "later" is waited for, one that is not there is not.
    pub max_unreachable_attempts: u32,
}

impl Default for RetryPolicy {
    /// Two minutes per item: AMD's KDS allows about one VCEK per 10 s per address and answers 429 with a
    /// `Retry-After` beyond that; a verifier behind a busy NAT may need several of those windows.
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_unreachable_attempts: 3,
        }
    }
}

/// Where collateral may come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// A KDS base URL (`https://kdsintf.amd.com`, a mirror, `{blobs}/collateral`); `None`: no network.
    pub kds_url: Option<String>,
    /// The on-disk store (Trustee's layout), read and filled.
    pub cache_dir: Option<PathBuf>,
    /// An offline bundle, read only.
    pub bundle: Option<PathBuf>,
    /// A simulated ARK to trust besides AMD's (simulated platform only).
    pub simulated_root: Option<AmdCertificate>,
    /// Retries.
    pub retry: RetryPolicy,
}

/// A CRL, and why it may be stale.
#[derive(Clone, Debug)]
pub struct CrlFetch {
    /// The CRL, verified, scoped to its key tree.
    pub crl: AmdCrl,
    /// Set when the CRL is past its nextUpdate and refetching it failed: why.
    pub refresh_failed: Option<String>,
}

/// The collateral client. Cheap to share (`Arc`); every method may be called concurrently.
pub struct Collateral {
    base: Option<String>,
    store: Option<Store>,
    bundle: Option<Bundle>,
    simulated_root: Option<AmdCertificate>,
    retry: RetryPolicy,
    /// Verified bodies by KDS path.
    memory: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// One gate per path: the single flight.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    upstream: AtomicU64,
}

impl std::fmt::Debug for Collateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collateral")
            .field("kds_url", &self.base)
            .field("store", &self.store.as_ref().map(Store::root))
            .field("bundle", &self.bundle.is_some())
            .field("simulated_root", &self.simulated_root.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a body came from (for the stale-CRL path).
enum Local {
    Fresh(Arc<Vec<u8>>),
    Stale(Arc<Vec<u8>>),
    None,
}

impl Collateral {
    /// A client over `sources`: validates the URL, opens the store, reads the bundle.
    pub fn new(sources: Sources) -> Result<Self, Error> {
        Ok(Collateral {
            base: sources.kds_url.as_deref().map(kds::base_url).transpose()?,
            store: sources.cache_dir.as_deref().map(Store::open).transpose()?,
            bundle: sources.bundle.as_deref().map(Bundle::read).transpose()?,
            simulated_root: sources.simulated_root,
            retry: sources.retry,
            memory: Mutex::default(),
            flights: Mutex::default(),
            upstream: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far (every attempt counts).
    pub fn upstream_requests(&self) -> u64 {
        self.upstream.load(Ordering::Relaxed)
    }

    /// The KDS base URL, if any.
    pub fn kds_url(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// The chain of `tree` for `product`, verified.
    pub async fn chain(&self, tree: KeyTree, product: Product) -> Result<IssuerChain, Error> {
        let item = Item::Chain(tree, product);
        let bytes = self.get(&item).await?.0;
        verify::chain(&bytes, tree, product, self.simulated_root.as_ref())
            .map_err(|reason| self.untrusted(&item, reason))
    }

    /// The VCEK that signed `report` (a VCEK-signed report of `product`), verified against it.
    pub async fn vcek(
        &self,
        report: &AttestationReport,
        product: Product,
    ) -> Result<AmdCertificate, Error> {
        let id = VcekId::of(report, product)?;
        let bytes = self.get(&Item::Vcek(id)).await?.0;
        let issuers = self.vcek_issuers(product).await?;
        let issuers: Vec<&AmdCertificate> = issuers.iter().collect();
        verify::vcek(&bytes, &id, &issuers)
            .map_err(|reason| self.untrusted(&Item::Vcek(id), reason))
    }

    /// The CRL of `tree` for `product`: current now if it can be had; else the newest held, with the reason.
    pub async fn crl(&self, tree: KeyTree, product: Product) -> Result<CrlFetch, Error> {
        self.crl_at(tree, product, now_unix()).await
    }

    /// [`Collateral::crl`], current at `at_unix` (the instant a verifier verifies at): a held CRL whose
    /// nextUpdate is not before it is used without asking the KDS.
    pub async fn crl_at(
        &self,
        tree: KeyTree,
        product: Product,
        at_unix: i64,
    ) -> Result<CrlFetch, Error> {
        let item = Item::Crl(tree, product);
        let (bytes, refresh_failed) = self.get_at(&item, at_unix).await?;
        let crl = verify::crl(&bytes, tree, product, self.simulated_root.as_ref())
            .map_err(|reason| self.untrusted(&item, reason))?;
        Ok(CrlFetch {
            crl,
            refresh_failed,
        })
    }

    /// The verified body of the item at the KDS path `path` (for a mirror: the host's `/collateral`
    /// service). `None` when `path` names nothing the KDS serves.
    pub async fn by_path(&self, path: &str) -> Option<Result<Vec<u8>, Error>> {
        let item = Item::from_path(path)?;
        Some(self.get(&item).await.map(|(b, _)| b.as_ref().clone()))
    }

    /// Completes the chain of evidence whose leaf is absent: the VCEK of `raw_report` (by its CHIP_ID and
    /// REPORTED_TCB; the product from its CPUID fields), and with a trusted simulated root the simulated ASK
    /// and ARK too. A chain with a leaf is left alone: evidence normally carries its VCEK, and the verifier
    /// checks whatever it carries. Errors say why the leaf cannot be had (a VLEK, a version 2 report).
    pub async fn complete(&self, raw_report: &[u8], chain: &mut CertChainDer) -> Result<(), Error> {
        if !chain.leaf.is_empty() {
            return Ok(());
        }
        let report = AttestationReport::from_bytes(raw_report)
            .map_err(|e| Error::Kds(format!("the report does not parse: {e}")))?;
        let product = kds::product_of(&report).ok_or_else(|| {
            Error::Kds(format!(
                "the evidence carries no VCEK, and a version {} report does not name its product",
                report.version
            ))
        })?;
        chain.leaf = self.vcek(&report, product).await?.der().to_vec();
        if self.simulated_root.is_some() && chain.intermediate.is_empty() {
            let issuers = self.chain(KeyTree::Vcek, product).await?;
            chain.intermediate = issuers.intermediate.der().to_vec();
            chain.ark = issuers.ark.der().to_vec();
        }
        Ok(())
    }

    /// Who may have issued a VCEK of `product`: AMD's ASK, and the simulated chain's when one is trusted.
    async fn vcek_issuers(&self, product: Product) -> Result<Vec<AmdCertificate>, Error> {
        let mut issuers = vec![roots::embedded(product).ask.clone()];
        if self.simulated_root.is_some() {
            issuers.push(self.chain(KeyTree::Vcek, product).await?.intermediate);
        }
        Ok(issuers)
    }

    fn untrusted(&self, item: &Item, reason: String) -> Error {
        Error::Untrusted {
            what: item.path(),
            reason,
        }
    }

    async fn get(&self, item: &Item) -> Result<(Arc<Vec<u8>>, Option<String>), Error> {
        self.get_at(item, now_unix()).await
    }

    /// The verified body of `item` (a CRL: current at `at`), and for a stale CRL why it could not be
    /// refreshed.
    async fn get_at(&self, item: &Item, at: i64) -> Result<(Arc<Vec<u8>>, Option<String>), Error> {
        let path = item.path();
        if let Some(bytes) = self.remembered(&path) {
            if is_current(item, &bytes, at) {
                return Ok((bytes, None));
            }
        }
        let gate = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(flights.entry(path.clone()).or_default())
        };
        let _flight = gate.lock().await;
        // Another caller's flight may have filled it while this one waited.
        let remembered = self.remembered(&path);
        if let Some(bytes) = &remembered {
            if is_current(item, bytes, at) {
                return Ok((Arc::clone(bytes), None));
            }
        }
        // Only a CRL gets here with something remembered: the newest this client has seen, now stale.
        let held = match self.local(item, at, remembered).await? {
            Local::Fresh(bytes) => {
                self.remember(item, &bytes);
                return Ok((bytes, None));
            }
            Local::Stale(bytes) => Some(bytes),
            Local::None => None,
        };
        match self.fetch_verified(item, held.as_deref()).await {
            Ok(bytes) => {
                let (bytes, refresh_failed) = self.keep(item, bytes, at).await?;
                self.remember(item, &bytes);
                Ok((bytes, refresh_failed))
            }
            Err(e) => match held {
                // A CRL past its nextUpdate is still the newest known: the verifier's policy judges it.
                Some(held) => {
                    self.remember(item, &held);
                    Ok((held, Some(e.to_string())))
                }
                None => Err(e),
            },
        }
    }

    fn remembered(&self, path: &str) -> Option<Arc<Vec<u8>>> {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned()
    }

    /// Remembers `bytes` as `item` (verified). A CRL never replaces a newer one: memory is the high-water
    /// mark of the client's lifetime.
    fn remember(&self, item: &Item, bytes: &Arc<Vec<u8>>) {
        let path = item.path();
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Item::Crl(..), Some(held)) = (item, memory.get(&path)) {
            if let (Some(held), Some(new)) = (CrlVersion::of_der(held), CrlVersion::of_der(bytes)) {
                if new.is_older_than(&held) {
                    return;
                }
            }
        }
        memory.insert(path, Arc::clone(bytes));
    }

    /// The bundle's copy, else the store's, verified; a copy that does not verify is ignored (and will be
    /// replaced by a verified one). For a CRL: the newest verified copy among these and `floor` (the newest
    /// this client has seen), current or not.
    async fn local(
        &self,
        item: &Item,
        at: i64,
        floor: Option<Arc<Vec<u8>>>,
    ) -> Result<Local, Error> {
        let mut candidates = Vec::new();
        if let Some(bundle) = &self.bundle {
            candidates.extend(bundle.get(&item.path()).map(<[u8]>::to_vec));
        }
        if let Some(store) = &self.store {
            match store.get(item) {
                Ok(bytes) => candidates.extend(bytes),
                // Planted in a shared directory, or garbage: ignored like an entry that does not verify
                // (storing a verified one replaces it; a symlinked directory makes that store fail).
                Err(
                    Error::Symlink { .. } | Error::NotARegularFile { .. } | Error::TooLarge { .. },
                ) => {}
                Err(e) => return Err(e),
            }
        }
        if !matches!(item, Item::Crl(..)) {
            for bytes in candidates {
                if self.check(item, &bytes).await.is_ok() {
                    return Ok(Local::Fresh(Arc::new(bytes)));
                }
            }
            return Ok(Local::None);
        }
        let mut newest = floor.and_then(|b| CrlVersion::of_der(&b).map(|v| (b, v)));
        for bytes in candidates {
            if self.check(item, &bytes).await.is_err() {
                continue;
            }
            let Some(version) = CrlVersion::of_der(&bytes) else {
                continue;
            };
            if newest
                .as_ref()
                .is_none_or(|(_, n)| n.is_older_than(&version))
            {
                newest = Some((Arc::new(bytes), version));
            }
        }
        Ok(match newest {
            Some((bytes, _)) if is_current(item, &bytes, at) => Local::Fresh(bytes),
            Some((bytes, _)) => Local::Stale(bytes),
            None => Local::None,
        })
    }

    /// Stores the verified, fetched `bytes` of `item` and returns what to use. A CRL does not replace a newer
    /// verified one in the store (another process may have stored it since this one looked): that one is
    /// used instead, and if it is not current at `at` either, the refusal is the reason.
    async fn keep(
        &self,
        item: &Item,
        bytes: Vec<u8>,
        at: i64,
    ) -> Result<(Arc<Vec<u8>>, Option<String>), Error> {
        let Some(store) = &self.store else {
            return Ok((Arc::new(bytes), None));
        };
        if matches!(item, Item::Crl(..)) {
            // A stored copy that cannot be read or does not verify is replaced below.
            if let Ok(Some(stored)) = store.get(item) {
                if self.check(item, &stored).await.is_ok() {
                    if let (Some(held), Some(offered)) =
                        (CrlVersion::of_der(&stored), CrlVersion::of_der(&bytes))
                    {
                        if offered.is_older_than(&held) {
                            let stored = Arc::new(stored);
                            let reason = (!is_current(item, &stored, at)).then(|| {
                                Error::CrlRollback {
                                    what: item.path(),
                                    held,
                                    offered,
                                }
                                .to_string()
                            });
                            return Ok((stored, reason));
                        }
                    }
                }
            }
        }
        store.put(item, &bytes)?;
        Ok((Arc::new(bytes), None))
    }

    /// Verifies `bytes` as `item`.
    async fn check(&self, item: &Item, bytes: &[u8]) -> Result<(), String> {
        let sim = self.simulated_root.as_ref();
        match item {
            Item::Chain(tree, product) => verify::chain(bytes, *tree, *product, sim).map(drop),
            Item::Crl(tree, product) => verify::crl(bytes, *tree, *product, sim).map(drop),
            Item::Vcek(id) => {
                let issuers = Box::pin(self.vcek_issuers(id.product))
                    .await
                    .map_err(|e| format!("its issuer: {e}"))?;
                let issuers: Vec<&AmdCertificate> = issuers.iter().collect();
                verify::vcek(bytes, id, &issuers).map(drop)
            }
        }
    }

    /// Fetches `item` from the KDS and verifies it; for a CRL, refuses one older than `held`.
    async fn fetch_verified(&self, item: &Item, held: Option<&Vec<u8>>) -> Result<Vec<u8>, Error> {
        let Some(base) = &self.base else {
            return Err(Error::Offline { what: item.path() });
        };
        let url = format!("{base}{}", item.path());
        let body = self.fetch(&url, item.max_body()).await?;
        self.check(item, &body)
            .await
            .map_err(|reason| Error::Untrusted {
                what: url.clone(),
                reason,
            })?;
        if let Some(held) = held {
            if let (Some(held), Some(offered)) =
                (CrlVersion::of_der(held), CrlVersion::of_der(&body))
            {
                if offered.is_older_than(&held) {
                    return Err(Error::CrlRollback {
                        what: url,
                        held,
                        offered,
                    });
                }
            }
        }
        Ok(body)
    }

    /// GET with retries: 429/503 wait `Retry-After` (or the backoff), transport errors and other 5xx back
    /// off, 404 and other 4xx end at once; everything within the budget.
    async fn fetch(&self, url: &str, max_body: usize) -> Result<Vec<u8>, Error> {
        let policy = self.retry;
        let started = tokio::time::Instant::now();
        let deadline = started + policy.budget;
        let mut backoff = policy.initial_backoff;
        let mut attempts = 0u32;
        let mut unreachable = 0u32;
        loop {
            attempts += 1;
            self.upstream.fetch_add(1, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = crate::http::get(url, policy.request_timeout.min(left), max_body).await;
            let (last, wait) = match outcome {
                Ok(r) if r.status == 200 => return Ok(r.body.to_vec()),
                Ok(r) if r.status == 404 => return Err(Error::NotFound { url: url.into() }),
                Ok(r) if r.status == 429 || r.status == 503 => (
                    format!(
                        "HTTP {}{}",
                        r.status,
                        r.retry_after
                            .map(|d| format!(" (Retry-After {} s)", d.as_secs()))
                            .unwrap_or_default()
                    ),
                    r.retry_after.unwrap_or(backoff),
                ),
                Ok(r) if r.status >= 500 => (format!("HTTP {}", r.status), backoff),
                Ok(r) => {
                    return Err(Error::Http {
                        url: url.into(),
                        status: r.status,
                    })
                }
                Err(e) => {
                    unreachable += 1;
                    (e, backoff)
                }
            };
            if tokio::time::Instant::now() + wait >= deadline
                || unreachable >= policy.max_unreachable_attempts
            {
                return Err(Error::GaveUp {
                    url: url.into(),
                    attempts,
                    seconds: started.elapsed().as_secs(),
                    last,
                });
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        }
    }
}

impl Store {
    /// The stored body of `item`.
    fn get(&self, item: &Item) -> Result<Option<Vec<u8>>, Error> {
        match item {
            Item::Vcek(id) => self.get_vcek(id),
            Item::Chain(tree, product) => self.get_chain(*tree, *product),
            Item::Crl(tree, product) => self.get_crl(*tree, *product),
        }
    }

    /// Stores the verified body of `item`.
    fn put(&self, item: &Item, bytes: &[u8]) -> Result<(), Error> {
        match item {
            Item::Vcek(id) => self.put_vcek(id, bytes),
            Item::Chain(tree, product) => self.put_chain(*tree, *product, bytes),
            Item::Crl(tree, product) => self.put_crl(*tree, *product, bytes),
        }
    }
}

/// Whether held bytes may be used without asking the KDS: always, except a CRL past its nextUpdate at `at`.
fn is_current(item: &Item, bytes: &[u8], at: i64) -> bool {
    match item {
        Item::Crl(..) => AmdCrl::from_der(bytes)
            .is_ok_and(|crl| crl.next_update_unix().is_none_or(|next| at <= next)),
        _ => true,
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
