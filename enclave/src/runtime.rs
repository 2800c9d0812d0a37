//! The enclave's state (the served models, readiness, limits) and its provisioning: for each model of
//! the measured configuration, key release → sealed blob → open → load into tract → plaintext zeroized.
//!
//! Retries (the enclave never gives up while it lives; the host can restart it anyway):
//! - the key broker or the blob service cannot be reached, or the exchange breaks: retry with exponential
//!   backoff ([`RetryPolicy::initial`] doubling up to [`RetryPolicy::max`]);
//! - the broker **refuses** (policy, evidence, unknown model): the model stays not ready
//!   (`/v2/health/ready` answers 503) and the enclave asks again every [`RetryPolicy::after_refusal`]
//!   (30 s by default): a refusal is usually fixed by the model owner changing the policy or keystore, not by
//!   hammering the broker. Each refusal is logged with its code;
//! - the blob service serves a wrong, truncated or tampered blob: retry with backoff, keeping the released key
//!   in memory (zeroized on drop) rather than asking the broker again;
//! - tract cannot load the authenticated model: permanent for this process (logged; not ready).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use cloister_attestation::evidence::{ModelSigner, Sha384};
use cloister_models::{ModelDigest, ModelKey, Plaintext};
use cloister_proto::key_release::{RefusalCode, StateAnchor, StateRequest};
use cloister_provenance::Trust;
use tokio::sync::Semaphore;

use crate::blobs::BlobService;
use crate::config::{Config, Limits, MemoryBudget as BudgetSetting};
use crate::firmware::{self, Attester};
use crate::inference::llm::{Llm, LlmBundle, BUNDLE_MAGIC};
use crate::inference::LoadedModel;
use crate::key_release::{refusal_text, Answer, BrokerClient, KeyReleaseError};
use crate::pool::{default_budget_bytes, InferencePool, MemoryBudget};
use crate::provenance::{self, Provenance};

/// At most this many `POST /v2/attestation` are signed at once (each is a firmware call).
pub const MAX_CONCURRENT_ATTESTATIONS: usize = 8;

/// The durable state's instance label unless the host says otherwise (`--state-label`).
pub const DEFAULT_STATE_LABEL: &str = "default";

/// Where a model is in its provisioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelStatus {
    /// Asking the key broker (or waiting to ask again after a failure to reach it).
    AwaitingKey,
    /// The broker refused; the enclave will ask again later.
    Refused(RefusalCode),
    /// Key released; fetching and opening the sealed blob.
    Fetching,
    /// Loading into tract.
    Loading,
    /// Serving.
    Ready,
    /// tract could not load the model: this process will not serve it.
    Failed,
}

/// One model of the measured configuration.
pub struct ModelSlot {
    name: String,
    digest: ModelDigest,
    max_batch: Option<u64>,
    top_k: Option<u32>,
    round_decimals: Option<u8>,
    loaded: OnceLock<Arc<LoadedModel>>,
    /// An LLM bundle (`cloister seal --llm`), served on `/v1/chat/completions` instead of `/v2/.../infer`.
    llm: OnceLock<Arc<Llm>>,
    /// Producers whose signature the model must carry (`signer_keys`, `signer_identities`); empty: none
    /// required.
    signers: Trust,
    /// What the model's verified signature established, once loaded.
    provenance: OnceLock<Provenance>,
    status: Mutex<ModelStatus>,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ModelSlot {
    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured digest.
    pub fn digest(&self) -> &ModelDigest {
        &self.digest
    }

    /// The configured `max_batch`.
    pub fn max_batch(&self) -> Option<u64> {
        self.max_batch
    }

    /// The verified signer and signed root digest of the loaded model, when its configuration required a
    /// signature.
    pub fn provenance(&self) -> Option<Provenance> {
        self.provenance.get().copied()
    }

    /// The configured output hardening: `top_k` and `round_decimals`.
    pub fn hardening(&self) -> (Option<u32>, Option<u8>) {
        (self.top_k, self.round_decimals)
    }

    /// The loaded model, once ready.
    pub fn model(&self) -> Option<&Arc<LoadedModel>> {
        self.loaded.get()
    }

    /// The loaded LLM, once ready (a slot serves a tensor model or an LLM, by what its sealed plaintext is).
    pub fn llm(&self) -> Option<&Arc<Llm>> {
        self.llm.get()
    }

    /// Whether the slot serves (a tensor model or an LLM).
    pub fn is_loaded(&self) -> bool {
        self.loaded.get().is_some() || self.llm.get().is_some()
    }

    /// Where provisioning is.
    pub fn status(&self) -> ModelStatus {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_status(&self, status: ModelStatus) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

/// The enclave: its firmware, its measured configuration's digest, its models and limits.
pub struct Enclave {
    attester: Attester,
    governance: crate::governance::Governance,
    metrics: crate::metrics::Metrics,
    config_digest: Sha384,
    limits: Limits,
    models: Vec<ModelSlot>,
    inference_permits: Arc<Semaphore>,
    attestation_permits: Arc<Semaphore>,
    pool: InferencePool,
    memory: MemoryBudget,
    /// `[state]`: the instance label when the governance state is durable (`crate::state`).
    state_label: Option<String>,
    state_every: Duration,
    durable: OnceLock<Arc<crate::state::Durable>>,
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("config_digest", &self.config_digest)
            .field("limits", &self.limits)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// [`Enclave::install`] was given a name that is not configured, or a model that is already loaded.
#[derive(Debug, thiserror::Error)]
#[error("model `{0}` is not configured or already loaded")]
pub struct InstallError(pub String);

impl Enclave {
    /// The enclave of a validated configuration; no model loaded yet. Starts the inference threads.
    pub fn new(config: &Config, attester: impl Into<Attester>) -> Result<Self, crate::Error> {
        let pool = InferencePool::new(
            usize::try_from(config.limits.inference_threads).unwrap_or(usize::MAX),
        )
        .map_err(crate::Error::Threads)?;
        let memory = MemoryBudget::new(match config.limits.memory_budget {
            BudgetSetting::Auto => default_budget_bytes(),
            BudgetSetting::Bytes(b) => b,
        });
        let governance = crate::governance::Governance::new(config)?;
        let durable = config.state.is_durable(&config.budgets);
        if durable {
            // Until the durable state is resumed (with the first model's key), budgets would start from
            // zero: budgeted requests wait for it, whichever model is ready first.
            governance
                .budgets()
                .set_not_durable(Some("the durable state is not resumed yet".into()));
        }
        let mut attester = attester.into();
        attester.set_receipt_key(governance.signer().public_key());
        Ok(Enclave {
            attester,
            governance,
            metrics: crate::metrics::Metrics::default(),
            config_digest: config.digest,
            limits: config.limits,
            models: config
                .models
                .iter()
                .map(|m| ModelSlot {
                    name: m.name.clone(),
                    digest: m.digest,
                    max_batch: m.max_batch,
                    top_k: m.top_k,
                    round_decimals: m.round_decimals,
                    loaded: OnceLock::new(),
                    llm: OnceLock::new(),
                    signers: m.signers.clone(),
                    provenance: OnceLock::new(),
                    status: Mutex::new(ModelStatus::AwaitingKey),
                })
                .collect(),
            inference_permits: Arc::new(Semaphore::new(
                usize::try_from(config.limits.max_concurrent_requests).unwrap_or(usize::MAX),
            )),
            attestation_permits: Arc::new(Semaphore::new(MAX_CONCURRENT_ATTESTATIONS)),
            pool,
            memory,
            state_label: durable.then(|| DEFAULT_STATE_LABEL.to_owned()),
            state_every: Duration::from_secs(config.state.commit_every_secs),
            durable: OnceLock::new(),
        })
    }

    /// The instance label of the durable state (`--state-label`, chosen by the host: a new label is a
    /// new instance with empty state, which costs a key release the broker counts). No effect when the
    /// configuration keeps no durable state.
    pub fn with_state_label(mut self, label: String) -> Self {
        if self.state_label.is_some() {
            self.state_label = Some(label);
        }
        self
    }

    /// What the durable state needs of this enclave.
    pub fn state_parts(&self) -> crate::state::EnclaveParts<'_> {
        crate::state::EnclaveParts {
            governance: &self.governance,
            attester: &self.attester,
            config_digest: self.config_digest,
        }
    }

    /// The durable state, once resumed.
    pub fn durable(&self) -> Option<&Arc<crate::state::Durable>> {
        self.durable.get()
    }

    /// The metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Receipts, audit log, budgets.
    pub fn governance(&self) -> &crate::governance::Governance {
        &self.governance
    }

    /// The firmware, with the collateral path that completes its certificates.
    pub fn attester(&self) -> &Attester {
        &self.attester
    }

    /// SHA-384 of the measured configuration.
    pub fn config_digest(&self) -> Sha384 {
        self.config_digest
    }

    /// The request limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The configured models.
    pub fn models(&self) -> &[ModelSlot] {
        &self.models
    }

    /// The model named `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSlot> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The digests every claim of this enclave lists: the configured models, in configuration order.
    pub fn model_digests(&self) -> Vec<Sha384> {
        self.models
            .iter()
            .map(|m| Sha384(*m.digest.as_bytes()))
            .collect()
    }

    /// The verified signatures of the loaded models, for the claims (`model_signers`): one per model
    /// whose signature this enclave checked at load, in configuration order.
    pub fn model_signers(&self) -> Vec<ModelSigner> {
        self.models
            .iter()
            .filter_map(|m| {
                m.provenance().map(|p| ModelSigner {
                    model_digest: Sha384(*m.digest.as_bytes()),
                    signer: p.signer.0,
                    root_digest: p.root_digest,
                })
            })
            .collect()
    }

    /// Ready when every configured model is loaded.
    pub fn is_ready(&self) -> bool {
        self.models.iter().all(ModelSlot::is_loaded)
    }

    /// Permits for concurrent inferences (`limits.max_concurrent_requests`).
    pub(crate) fn inference_permits(&self) -> &Arc<Semaphore> {
        &self.inference_permits
    }

    /// The threads that run tract.
    pub fn pool(&self) -> &InferencePool {
        &self.pool
    }

    /// The memory budget runs are admitted against.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// Permits for concurrent attestations.
    pub(crate) fn attestation_permits(&self) -> &Arc<Semaphore> {
        &self.attestation_permits
    }

    /// Makes a loaded model servable. Provisioning calls this after the digest of the plaintext was
    /// checked; tests call it to serve a model without a key broker.
    pub fn install(&self, name: &str, model: LoadedModel) -> Result<(), InstallError> {
        let slot = self
            .model(name)
            .ok_or_else(|| InstallError(name.to_owned()))?;
        if slot.is_loaded() {
            return Err(InstallError(name.to_owned()));
        }
        slot.loaded
            .set(Arc::new(model))
            .map_err(|_| InstallError(name.to_owned()))?;
        slot.set_status(ModelStatus::Ready);
        Ok(())
    }

    /// [`Enclave::install`] for an LLM.
    pub fn install_llm(&self, name: &str, llm: Llm) -> Result<(), InstallError> {
        let slot = self
            .model(name)
            .ok_or_else(|| InstallError(name.to_owned()))?;
        if slot.is_loaded() {
            return Err(InstallError(name.to_owned()));
        }
        slot.llm
            .set(Arc::new(llm))
            .map_err(|_| InstallError(name.to_owned()))?;
        slot.set_status(ModelStatus::Ready);
        Ok(())
    }
}

/// Retry timing of provisioning (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay after a failure to reach the broker or the blob service.
    pub initial: Duration,
    /// Longest delay between such attempts.
    pub max: Duration,
    /// Delay before asking again after a refusal.
    pub after_refusal: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            after_refusal: Duration::from_secs(30),
        }
    }
}

/// Provisions every configured model, one after the other; returns when each is ready or failed for good.
pub async fn provision(
    enclave: Arc<Enclave>,
    broker: BrokerClient,
    blobs: BlobService,
    retry: RetryPolicy,
) {
    // The first evidence fetches the endorsement key certificate when the firmware has none: done once
    // here, it is not paid for inside a key release's deadlines, and a missing certificate shows up at once.
    let warm_up = firmware::claims([0; 32], [0; 32], None, Vec::new(), enclave.config_digest);
    match enclave.attester.evidence(warm_up).await {
        Ok(_) => tracing::info!("attestation ready: the report's certificate chain is complete"),
        Err(e) => tracing::warn!("attestation is not ready yet: {}", error_chain(&e)),
    }
    for index in 0..enclave.models.len() {
        provision_one(&enclave, index, &broker, &blobs, retry).await;
    }
    if enclave.is_ready() {
        tracing::info!("ready: every model is loaded");
    }
}

async fn provision_one(
    enclave: &Arc<Enclave>,
    index: usize,
    broker: &BrokerClient,
    blobs: &BlobService,
    retry: RetryPolicy,
) {
    let slot = &enclave.models[index];

    // 1. Key release. Each step's time goes into its log line: cold start is measured in them. The first
    //    model's release also opens the durable state: the broker says which state blob is the latest.
    let (key, anchor) = release_key(enclave, index, broker, retry).await;

    // 1b. The durable state, resumed at the broker's anchor while the key that derives its key is here.
    //     A state that cannot be resumed (missing, older than anchored, altered) stops this enclave from
    //     serving: budgets and the audit chain would start over.
    if let (Some(anchor), Some(label)) = (anchor, &enclave.state_label) {
        if !resume_durable_state(enclave, slot, broker, blobs, label, &key, anchor).await {
            return;
        }
    }

    // 2. Sealed blob, opened against the digest the key was released for.
    let plaintext = fetch_and_open(slot, blobs, key, retry).await;

    // 3. tract, once, optimised; the plaintext is zeroized as soon as tract has its own copy.
    load_and_install(enclave, slot, plaintext).await;
}

/// Asks the key broker for the key of model `index` until it releases it: backoff while the broker cannot
/// be reached, [`RetryPolicy::after_refusal`] after a refusal. For the first model with a durable state,
/// the request also opens that state, and the answer carries its anchor.
async fn release_key(
    enclave: &Enclave,
    index: usize,
    broker: &BrokerClient,
    retry: RetryPolicy,
) -> (Arc<ModelKey>, Option<StateAnchor>) {
    let slot = &enclave.models[index];
    let name = slot.name.as_str();
    let digest = slot.digest;
    let state_request = match (index, &enclave.state_label) {
        (0, Some(label)) => Some(StateRequest::Open {
            label: label.clone(),
        }),
        _ => None,
    };
    let started = std::time::Instant::now();
    let mut backoff = retry.initial;
    loop {
        slot.set_status(ModelStatus::AwaitingKey);
        let answer = broker
            .exchange(
                enclave.attester.clone(),
                &digest,
                enclave.config_digest,
                state_request.clone(),
            )
            .await;
        match answer {
            Ok(Answer::Released { key, anchor }) => {
                tracing::info!(
                    model = name,
                    %digest,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "model key released"
                );
                break (Arc::new(key), anchor);
            }
            Ok(Answer::Committed(_)) => {
                tracing::warn!(
                    model = name,
                    "the key broker answered a key request as a commit"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max);
            }
            Err(KeyReleaseError::Refused(code)) => {
                slot.set_status(ModelStatus::Refused(code));
                tracing::warn!(
                    model = name,
                    %digest,
                    code = ?code,
                    retry_in_s = retry.after_refusal.as_secs_f64(),
                    "key broker refused: {}; not ready",
                    refusal_text(code)
                );
                backoff = retry.initial;
                tokio::time::sleep(retry.after_refusal).await;
            }
            Err(e) => {
                tracing::warn!(
                    model = name,
                    retry_in_s = backoff.as_secs_f64(),
                    "key release failed: {}",
                    error_chain(&e)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max);
            }
        }
    }
}

/// Resumes the durable state `label` at `anchor` with `key`, and starts committing it periodically.
/// Returns false (the model marked failed) when it cannot be resumed.
async fn resume_durable_state(
    enclave: &Arc<Enclave>,
    slot: &ModelSlot,
    broker: &BrokerClient,
    blobs: &BlobService,
    label: &str,
    key: &ModelKey,
    anchor: StateAnchor,
) -> bool {
    match crate::state::Durable::resume(
        enclave.state_parts(),
        blobs,
        label.to_owned(),
        slot.digest,
        key,
        anchor,
        enclave.state_every,
    )
    .await
    {
        Ok(durable) => {
            tracing::info!(label = %label, version = anchor.version, "durable state resumed");
            let durable = Arc::new(durable);
            let _ = enclave.durable.set(Arc::clone(&durable));
            spawn_state_commits(durable, enclave, broker, blobs);
            true
        }
        Err(e) => {
            slot.set_status(ModelStatus::Failed);
            tracing::error!(
                label = %label,
                "cannot resume the durable state: {}; not serving",
                error_chain(&e)
            );
            false
        }
    }
}

/// Commits the durable state every `durable.every()`, for as long as the enclave lives.
fn spawn_state_commits(
    durable: Arc<crate::state::Durable>,
    enclave: &Arc<Enclave>,
    broker: &BrokerClient,
    blobs: &BlobService,
) {
    let (enclave, broker, blobs) = (Arc::clone(enclave), broker.clone(), blobs.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(durable.every()).await;
            durable
                .commit_logged(enclave.state_parts(), &broker, &blobs)
                .await;
        }
    });
}

/// Fetches the sealed blob and opens it with `key` against the slot's digest, with backoff until it
/// succeeds; the key is dropped (zeroized) once the blob is open.
async fn fetch_and_open(
    slot: &ModelSlot,
    blobs: &BlobService,
    key: Arc<ModelKey>,
    retry: RetryPolicy,
) -> Plaintext {
    let name = slot.name.as_str();
    slot.set_status(ModelStatus::Fetching);
    let started = std::time::Instant::now();
    let mut backoff = retry.initial;
    let plaintext: Plaintext = loop {
        match blobs.fetch_and_open(&slot.digest, Arc::clone(&key)).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(
                    model = name,
                    retry_in_s = backoff.as_secs_f64(),
                    "sealed model: {}",
                    error_chain(&e)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(retry.max);
            }
        }
    };
    // The key has done its job: this was the last reference, so it is zeroized here.
    drop(key);
    tracing::info!(
        model = name,
        bytes = plaintext.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "sealed model fetched and opened"
    );
    plaintext
}

/// Loads the plaintext into tract on a blocking thread (zeroizing it there) and installs the model; a
/// model tract cannot load marks the slot failed.
async fn load_and_install(enclave: &Enclave, slot: &ModelSlot, plaintext: Plaintext) {
    let name = slot.name.as_str();
    let digest = slot.digest;
    slot.set_status(ModelStatus::Loading);
    let len = plaintext.len();
    let started = std::time::Instant::now();
    // Provenance first: a signed model is checked against the configured signers before tract parses it.
    // What the plaintext is (an ONNX model, or an LLM bundle) is part of what its digest pins.
    let signers = slot.signers.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let served = match provenance::check(plaintext.as_bytes(), &signers) {
            Err(e) => Err(LoadFailure::Provenance(e)),
            Ok((model, verified)) => {
                let served = if model.starts_with(&BUNDLE_MAGIC) {
                    LlmBundle::parse(model)
                        .and_then(|b| Llm::from_bundle(&b))
                        .map(|llm| Served::Llm(Box::new(llm)))
                } else {
                    LoadedModel::load(model).map(Served::Tensor)
                };
                served.map(|s| (s, verified)).map_err(LoadFailure::Model)
            }
        };
        drop(plaintext); // zeroizes the plaintext buffer
        served
    })
    .await;
    match loaded {
        Ok(Ok((served, verified))) => {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if let Some(p) = verified {
                tracing::info!(
                    model = name,
                    signer = %p.signer,
                    root_digest = %hex::encode(p.root_digest),
                    "model signature verified"
                );
                let _ = slot.provenance.set(p);
            }
            let installed = match served {
                Served::Tensor(model) => {
                    tracing::info!(model = name, %digest, bytes = len, planning = ?model.planning(), ms, "model loaded");
                    enclave.install(name, model)
                }
                Served::Llm(llm) => {
                    tracing::info!(
                        model = name,
                        %digest,
                        bytes = len,
                        context = llm.context_length(),
                        kv_bytes_per_token = llm.decoder().kv_bytes_per_token(),
                        ms,
                        "LLM loaded"
                    );
                    enclave.install_llm(name, *llm)
                }
            };
            if installed.is_err() {
                tracing::error!(model = name, "model was already installed");
            }
        }
        Ok(Err(e)) => {
            slot.set_status(ModelStatus::Failed);
            // Only the top-level message (stage): tract's own error chain can print constants of the graph,
            // i.e. weights, and logs leave the enclave.
            tracing::error!(model = name, "cannot load the model: {e}");
        }
        Err(_) => {
            slot.set_status(ModelStatus::Failed);
            tracing::error!(model = name, "the model-loading task failed");
        }
    }
}

/// Why a plaintext did not load.
#[derive(Debug, thiserror::Error)]
enum LoadFailure {
    #[error(transparent)]
    Provenance(provenance::ProvenanceError),
    #[error(transparent)]
    Model(crate::inference::Error),
}

/// What a sealed plaintext loads as.
enum Served {
    Tensor(LoadedModel),
    Llm(Box<Llm>),
}

/// `error: cause: cause…`, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
