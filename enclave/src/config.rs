//! The enclave's **measured configuration** (`docs/architecture.md`, "Enclave launch").
//!
//! The file's exact bytes are measured: their SHA-384 is the `config_digest` of every claim the enclave
//! makes, and (simulated platform) an input of the launch measurement; on SNP hardware it is carried in
//! HOST_DATA. So everything that decides *what the enclave trusts* lives here: the firmware backend, the
//! pinned key broker and the model digests. Launch arguments only say where bytes flow.
//!
//! Parsing is strict (`deny_unknown_fields`, no default firmware, no fallback): a typo must not silently
//! change what the enclave trusts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

use cloister_attestation::evidence::Sha384;
use cloister_models::ModelDigest;
use cloister_provenance::keyless::{KeylessPolicy, SignerIdentity, TrustedRoot};
use cloister_provenance::{SignerKey, Trust};
use ring::digest::{digest, SHA384};
use serde::Deserialize;

mod backend;
mod governance;
pub use governance::{AuditConfig, Budget, BudgetsConfig, ClientsConfig, StateConfig};

/// Upper bound on the number of models in one configuration (the claims carry at most this many digests).
pub const MAX_MODELS: usize = cloister_attestation::evidence::MAX_MODEL_DIGESTS;

/// Why a configuration is rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML does not parse or does not have the expected fields (toml's message names the key).
    #[error("configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file is not UTF-8.
    #[error("configuration: not UTF-8")]
    NotUtf8,
    /// `sim_dir` is missing with `firmware = "simulated"`.
    #[error("configuration: `sim_dir` is required with firmware = \"simulated\"")]
    MissingSimDir,
    /// `sim_dir` is given with a hardware firmware.
    #[error("configuration: `sim_dir` is only allowed with firmware = \"simulated\", or \"azure-vtpm\" with `tpm_swtpm` (firmware is \"{firmware}\")")]
    UnexpectedSimDir {
        /// The configured firmware.
        firmware: &'static str,
    },
    /// A hardware-only key (`vcek_cache`, `vmpl`) is given with `firmware = "simulated"`.
    #[error(
        "configuration: `{key}` is only allowed with firmware = \"configfs-tsm\" or \"sev-guest\""
    )]
    HardwareOnly {
        /// The key.
        key: &'static str,
    },
    /// `vmpl` is not 0..=3.
    #[error("configuration: vmpl must be 0, 1, 2 or 3 (found {0})")]
    Vmpl(u32),
    /// `firmware = "sev-guest"` without `vcek_cache` and with `collateral = "off"`: no certificate source.
    #[error("configuration: firmware = \"sev-guest\" takes no certificates from the host's certificate table, \
             and collateral = \"off\": set `vcek_cache` (a directory with the VCEK or VLEK, snpguest layout) \
             or collateral = \"host\" (the VCEK fetched through the host's /collateral service)")]
    SevGuestNeedsVcekCache,
    /// A key of the `azure-vtpm` backend with another backend, or one it does not take.
    #[error("configuration: {0}")]
    Azure(&'static str),
    /// A key of the `coco-aa` backend with another backend, or one it does not take.
    #[error("configuration: {0}")]
    CocoAa(&'static str),
    /// A governance section (`[clients]`, `[budgets]`, `[audit]`, a model's hardening) is invalid.
    #[error("configuration: {0}")]
    Governance(&'static str),
    /// `sim_withhold_certificates` with a hardware firmware.
    #[error(
        "configuration: `sim_withhold_certificates` is only allowed with firmware = \"simulated\""
    )]
    SimulatedOnly,
    /// `key_broker.address` is not `host:port`.
    #[error("configuration: key_broker.address must be HOST:PORT")]
    BrokerAddress,
    /// `key_broker.certificate_sha256` is not 64 hex digits.
    #[error("configuration: key_broker.certificate_sha256 must be 64 hex digits (SHA-256 of the broker's DER certificate)")]
    CertificatePin,
    /// No `[[models]]`.
    #[error("configuration: at least one [[models]] entry is required")]
    NoModels,
    /// Too many `[[models]]`.
    #[error("configuration: at most {MAX_MODELS} [[models]] entries are allowed")]
    TooManyModels,
    /// A model name is empty, too long or has characters outside `[A-Za-z0-9._-]` (it is part of URLs).
    #[error("configuration: models[{index}].name must be 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    ModelName {
        /// Index in `[[models]]`.
        index: usize,
    },
    /// Two models share a name.
    #[error("configuration: model name `{name}` appears twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Two models share a digest.
    #[error("configuration: model digest {digest} appears twice")]
    DuplicateDigest {
        /// The digest.
        digest: ModelDigest,
    },
    /// A digest is not `sha384:` followed by 96 lowercase hex digits.
    #[error("configuration: models[{index}].digest must be \"sha384:\" followed by 96 lowercase hex digits")]
    ModelDigest {
        /// Index in `[[models]]`.
        index: usize,
    },
    /// A `signer_keys` entry is not a P-256 or P-384 public key in PEM.
    #[error("configuration: models[{index}].signer_keys: {reason}")]
    SignerKey {
        /// Index in `[[models]]`.
        index: usize,
        /// Why the key was refused.
        reason: String,
    },
    /// `sigstore_trusted_root` is not a usable Sigstore trusted root.
    #[error("configuration: sigstore_trusted_root: {0}")]
    TrustedRoot(String),
    /// A limit is zero.
    #[error("configuration: limits.{field} must be at least 1")]
    ZeroLimit {
        /// The field.
        field: &'static str,
    },
}

/// Which firmware interface produces attestation reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirmwareConfig {
    /// The simulated AMD-SP of `cloister sim`, whose state lives in `sim_dir`.
    Simulated {
        /// The simulated platform's state directory.
        sim_dir: PathBuf,
        /// `sim_withhold_certificates` (default false): the simulated firmware returns reports without
        /// certificates, as a real host without a certificate table does (today's upstream KVM), so that the
        /// collateral path is exercised on the simulated platform.
        withhold_certificates: bool,
    },
    /// Linux configfs-tsm (`/sys/kernel/config/tsm/report`).
    ConfigfsTsm(HardwareOptions),
    /// The `/dev/sev-guest` ioctl interface.
    SevGuest(HardwareOptions),
    /// An Azure confidential VM's paravisor vTPM.
    AzureVtpm(AzureOptions),
    /// Confidential Containers' attestation agent, through its REST API in the pod VM.
    CocoAa(CocoAaOptions),
}

/// The attestation agent's REST address in a CoCo pod VM (guest-components' api-server-rest).
pub const DEFAULT_AA_URL: &str = "http://127.0.0.1:8006";

/// Options of the `coco-aa` backend (the firmware module `coco_aa`). Here, with the configuration that holds
/// them, so that the configuration does not depend on the firmware code that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CocoAaOptions {
    /// `aa_url` (default [`DEFAULT_AA_URL`]): `http://HOST:PORT`, the agent's REST API.
    pub url: String,
    /// `vcek_cache`: where the VCEK comes from when the agent's evidence has none.
    pub vcek_cache: Option<PathBuf>,
}

/// Options of the `azure-vtpm` backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureOptions {
    /// `tpm_device` (default `/dev/tpmrm0`): the vTPM.
    pub tpm_device: PathBuf,
    /// `tpm_swtpm` + `sim_dir` (INSECURE, simulator builds only): the simulated Azure CVM, with swtpm at this
    /// `HOST:PORT` as the vTPM and the simulated AMD-SP in `sim_dir` as the paravisor's.
    pub simulated: Option<(String, PathBuf)>,
}

/// Where the enclave gets the endorsement key certificate the firmware did not give (`collateral = …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum CollateralSource {
    /// `"host"` (default): fetched through the host's `/collateral` service (a KDS mirror: the host fetches
    /// from AMD's KDS and caches). The host is untrusted and that is fine: the enclave verifies what it gets
    /// against AMD's root, the report's CHIP_ID and its REPORTED_TCB before it puts it in evidence.
    #[default]
    #[serde(rename = "host")]
    Host,
    /// `"off"`: only the firmware's own certificates (the host's table, `vcek_cache`); none is an error.
    #[serde(rename = "off")]
    Off,
    /// `"thim"` (Azure): Azure's Trusted Hardware Identity Management endpoint in the VM
    /// (`http://169.254.169.254/metadata/THIM/amd/certification`), verified the same way.
    #[serde(rename = "thim")]
    Thim,
}

/// Options of the hardware firmware backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HardwareOptions {
    /// `vcek_cache`: a directory with the endorsement key certificate (`vcek.pem|der` or `vlek.pem|der`) and
    /// optionally `ark.pem` and `ask.pem`/`asvk.pem` (the snpguest layout). Used when the host's certificate
    /// table has no certificate for the key that signed the report.
    pub vcek_cache: Option<PathBuf>,
    /// `vmpl` (default 0): the VMPL the reports are requested for (configfs-tsm `privlevel`).
    pub vmpl: u32,
}

impl FirmwareConfig {
    /// The configuration's name of the backend.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Simulated { .. } => "simulated",
            Self::ConfigfsTsm(_) => "configfs-tsm",
            Self::SevGuest(_) => "sev-guest",
            Self::AzureVtpm(_) => "azure-vtpm",
            Self::CocoAa(_) => "coco-aa",
        }
    }
}

/// The pinned key broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyBrokerConfig {
    /// `host:port`.
    pub address: String,
    /// The host part of `address` (without brackets for IPv6).
    pub host: String,
    /// The port.
    pub port: u16,
    /// SHA-256 of the broker's DER certificate.
    pub certificate_sha256: [u8; 32],
}

/// One model the enclave serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// The name in URLs (`/v2/models/{name}`).
    pub name: String,
    /// SHA-384 of the plaintext ONNX model.
    pub digest: ModelDigest,
    /// Largest batch (axis 0 of the inputs whose axis 0 is symbolic) a request may have; `None`: bounded
    /// by the element and memory limits only.
    pub max_batch: Option<u64>,
    /// Output hardening against model extraction: keep the `top_k` largest values of each row of a
    /// floating-point output (the others become 0).
    pub top_k: Option<u32>,
    /// Output hardening: round floating-point outputs to this many decimals.
    pub round_decimals: Option<u8>,
    /// Provenance: when not empty, the model must be a signed model (`cloister seal --signature`) whose
    /// OpenSSF model-signing bundle verifies under one of these keys (`signer_keys`), and whose files match the signed
    /// digests; the enclave checks both before loading (docs/provenance.md). Part of the measured
    /// configuration, so a client that pins the configuration pins the signers too. Keyless signers
    /// (`signer_identities`, checked against the top-level `sigstore_trusted_root`) are allowed the same way.
    pub signers: Trust,
}

/// Request limits (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes (413 above).
    pub max_body_bytes: u64,
    /// Largest tensor of a request or a response, in elements (413 above); also bounds the product of a
    /// request's symbolic dimensions (batch × sequence …, a zero counting as one).
    pub max_tensor_elements: u64,
    /// Largest response body, in bytes, as estimated from the plan before running (413 above).
    pub max_response_bytes: u64,
    /// Most inference requests admitted at once, queued or running (503 above). The permit is taken before
    /// the body is read, so this also bounds the memory held by request bodies.
    pub max_concurrent_requests: u32,
    /// Threads that run tract (prepare and run). 0: one per core the enclave sees.
    pub inference_threads: u32,
    /// Memory that runs in progress may use together, by their plan's estimate: a request waits for its
    /// share (up to `max_queue_wait_secs`, then 503), and one that can never fit is refused (413).
    pub memory_budget: MemoryBudget,
    /// How long a request may wait for memory or an inference thread before it is refused with 503.
    pub max_queue_wait_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_tensor_elements: 16 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            max_concurrent_requests: 64,
            inference_threads: 0,
            memory_budget: MemoryBudget::Auto,
            max_queue_wait_secs: 30,
        }
    }
}

/// `memory_budget`: `"auto"` (the default: half of the memory the enclave sees, its cgroup limit or the
/// VM's memory, whichever is smaller), a number of bytes, or a string such as `"6GiB"` or `"512MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBudget {
    /// Half of the visible memory, read at startup.
    Auto,
    /// Exactly this many bytes.
    Bytes(u64),
}

impl<'de> Deserialize<'de> for MemoryBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0) => Err(serde::de::Error::custom(
                "memory_budget must be at least 1 byte",
            )),
            Raw::Number(n) => Ok(MemoryBudget::Bytes(n)),
            Raw::Text(t) if t == "auto" => Ok(MemoryBudget::Auto),
            Raw::Text(t) => parse_size(&t).map(MemoryBudget::Bytes).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "memory_budget {t:?}: expected \"auto\", a number of bytes, or a size such as \"512MiB\" or \"6GiB\""
                ))
            }),
        }
    }
}

/// `"512MiB"`, `"6GiB"`, `"1TiB"`, `"4096KiB"`, or a plain number of bytes; at least 1 byte.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor).filter(|&b| b > 0)
}

/// The stderr log level (`log_level`), part of the measured configuration: the host reads stderr, so what
/// the enclave may say there is decided by what verifiers attest, not by a launch argument. Whatever the
/// level, third-party crates (tract prints graphs and tensor values at `trace`) are capped at `warn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default.
    Info,
    /// Per-request lines (method, path, status, time).
    Debug,
    /// Everything Cloister logs.
    Trace,
}

impl LogLevel {
    /// The `tracing` level.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
            Self::Debug => tracing::Level::DEBUG,
            Self::Trace => tracing::Level::TRACE,
        }
    }
}

/// A validated configuration, and the digest of the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The firmware backend.
    pub firmware: FirmwareConfig,
    /// Where a missing endorsement key certificate comes from.
    pub collateral: CollateralSource,
    /// The pinned key broker.
    pub key_broker: KeyBrokerConfig,
    /// The models, in configuration order.
    pub models: Vec<ModelConfig>,
    /// Request limits.
    pub limits: Limits,
    /// The stderr log level.
    pub log_level: LogLevel,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[clients]`.
    pub clients: ClientsConfig,
    /// `[budgets]`.
    pub budgets: BudgetsConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// The allowed client certificates (`[clients] certificate_sha256`, parsed).
    pub client_pins: Vec<[u8; 32]>,
    /// SHA-384 of the exact file bytes.
    pub digest: Sha384,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    firmware: RawFirmware,
    sim_dir: Option<PathBuf>,
    vcek_cache: Option<PathBuf>,
    vmpl: Option<u32>,
    sim_withhold_certificates: Option<bool>,
    tpm_device: Option<PathBuf>,
    tpm_swtpm: Option<String>,
    aa_url: Option<String>,
    collateral: Option<CollateralSource>,
    key_broker: RawKeyBroker,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    limits: Limits,
    log_level: Option<LogLevel>,
    #[serde(default)]
    audit: AuditConfig,
    #[serde(default)]
    clients: ClientsConfig,
    #[serde(default)]
    budgets: BudgetsConfig,
    #[serde(default)]
    state: StateConfig,
    /// Sigstore's trusted_root.json (inline, so it is measured with the rest): what keyless model
    /// signatures (`signer_identities`) are checked against.
    sigstore_trusted_root: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
enum RawFirmware {
    #[serde(rename = "simulated")]
    Simulated,
    #[serde(rename = "configfs-tsm")]
    ConfigfsTsm,
    #[serde(rename = "sev-guest")]
    SevGuest,
    #[serde(rename = "azure-vtpm")]
    AzureVtpm,
    #[serde(rename = "coco-aa")]
    CocoAa,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyBroker {
    address: String,
    certificate_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    digest: String,
    max_batch: Option<u64>,
    top_k: Option<u32>,
    round_decimals: Option<u8>,
    #[serde(default)]
    signer_keys: Vec<String>,
    #[serde(default)]
    signer_identities: Vec<SignerIdentity>,
}

impl Config {
    /// Parses and validates the configuration file's bytes; `digest` is SHA-384 of exactly these bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
        let mut d = [0u8; 48];
        d.copy_from_slice(digest(&SHA384, bytes).as_ref());
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
        let raw: RawConfig = toml::from_str(text)?;

        let collateral = raw.collateral.unwrap_or_default();
        backend::check_backend_only_keys(&raw, collateral)?;
        let firmware = backend::firmware_config(&raw, collateral)?;
        let key_broker = key_broker_config(&raw.key_broker)?;
        let trusted_root = raw
            .sigstore_trusted_root
            .as_deref()
            .map(|json| TrustedRoot::from_json(json.as_bytes()))
            .transpose()
            .map_err(|e| ConfigError::TrustedRoot(e.to_string()))?;
        let models = model_configs(raw.models, trusted_root.as_ref())?;
        let limits = raw.limits;
        check_limits(&limits)?;
        let client_pins = check_governance(&raw.clients, &raw.audit, &raw.state)?;
        Ok(Config {
            firmware,
            collateral,
            audit: raw.audit,
            clients: raw.clients,
            budgets: raw.budgets,
            state: raw.state,
            client_pins,
            key_broker,
            models,
            limits,
            log_level: raw.log_level.unwrap_or(LogLevel::Info),
            digest: Sha384(d),
        })
    }

    /// The digests of the served models, as claims carry them.
    pub fn model_digests(&self) -> Vec<Sha384> {
        self.models
            .iter()
            .map(|m| Sha384(*m.digest.as_bytes()))
            .collect()
    }
}

/// `[key_broker]`: `address` is `host:port`, `certificate_sha256` 64 hex digits.
fn key_broker_config(raw: &RawKeyBroker) -> Result<KeyBrokerConfig, ConfigError> {
    let (host, port) = split_host_port(&raw.address)?;
    let pin = raw.certificate_sha256.as_str();
    let mut certificate_sha256 = [0u8; 32];
    if pin.len() != 64 || hex::decode_to_slice(pin, &mut certificate_sha256).is_err() {
        return Err(ConfigError::CertificatePin);
    }
    Ok(KeyBrokerConfig {
        address: raw.address.clone(),
        host,
        port,
        certificate_sha256,
    })
}

/// `[[models]]`: 1 to [`MAX_MODELS`], each with a valid name and digest (both unique) and valid hardening.
fn model_configs(
    raw: Vec<RawModel>,
    trusted_root: Option<&TrustedRoot>,
) -> Result<Vec<ModelConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::NoModels);
    }
    if raw.len() > MAX_MODELS {
        return Err(ConfigError::TooManyModels);
    }
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    let mut models = Vec::with_capacity(raw.len());
    for (index, m) in raw.into_iter().enumerate() {
        if !valid_model_name(&m.name) {
            return Err(ConfigError::ModelName { index });
        }
        let digest =
            ModelDigest::from_str(&m.digest).map_err(|_| ConfigError::ModelDigest { index })?;
        if !names.insert(m.name.clone()) {
            return Err(ConfigError::DuplicateName { name: m.name });
        }
        if !digests.insert(digest) {
            return Err(ConfigError::DuplicateDigest { digest });
        }
        if m.max_batch == Some(0) {
            return Err(ConfigError::ZeroLimit {
                field: "max_batch (of a model)",
            });
        }
        if m.top_k == Some(0) {
            return Err(ConfigError::ZeroLimit {
                field: "top_k (of a model)",
            });
        }
        if m.round_decimals.is_some_and(|d| d > 9) {
            return Err(ConfigError::Governance(
                "round_decimals (of a model) must be 0 to 9",
            ));
        }
        let signer_keys = m
            .signer_keys
            .iter()
            .map(|pem| SignerKey::from_pem(pem))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::SignerKey {
                index,
                reason: e.to_string(),
            })?;
        let keyless = match (m.signer_identities.is_empty(), trusted_root) {
            (true, _) => None,
            (false, Some(root)) => Some(KeylessPolicy {
                root: root.clone(),
                identities: m.signer_identities,
            }),
            (false, None) => {
                return Err(ConfigError::SignerKey {
                    index,
                    reason: "signer_identities needs the top-level sigstore_trusted_root to check them against".into(),
                })
            }
        };
        models.push(ModelConfig {
            name: m.name,
            digest,
            max_batch: m.max_batch,
            top_k: m.top_k,
            round_decimals: m.round_decimals,
            signers: Trust {
                keys: signer_keys,
                keyless,
            },
        });
    }
    Ok(models)
}

/// `[limits]`: none of the bounds may be zero.
fn check_limits(limits: &Limits) -> Result<(), ConfigError> {
    for (field, zero) in [
        ("max_body_bytes", limits.max_body_bytes == 0),
        ("max_tensor_elements", limits.max_tensor_elements == 0),
        ("max_response_bytes", limits.max_response_bytes == 0),
        ("max_queue_wait_secs", limits.max_queue_wait_secs == 0),
        (
            "max_concurrent_requests",
            limits.max_concurrent_requests == 0,
        ),
    ] {
        if zero {
            return Err(ConfigError::ZeroLimit { field });
        }
    }
    Ok(())
}

/// `[clients]`, `[audit]` and `[state]`; returns the parsed client certificate pins.
fn check_governance(
    clients: &ClientsConfig,
    audit: &AuditConfig,
    state: &StateConfig,
) -> Result<Vec<[u8; 32]>, ConfigError> {
    let client_pins = governance::parse_pins(&clients.certificate_sha256).ok_or(
        ConfigError::Governance("[clients] certificate_sha256: expected 64 hex digits each"),
    )?;
    if clients.require_certificate && client_pins.is_empty() {
        return Err(ConfigError::Governance(
            "[clients] require_certificate = true needs certificate_sha256 (no client could connect)",
        ));
    }
    if clients.require_certificate && clients.allow_anonymous == Some(true) {
        return Err(ConfigError::Governance(
            "[clients] require_certificate = true and allow_anonymous = true contradict each other",
        ));
    }
    if audit.tally_every_secs == 0 {
        return Err(ConfigError::ZeroLimit {
            field: "[audit] tally_every_secs",
        });
    }
    if state.commit_every_secs == 0 {
        return Err(ConfigError::ZeroLimit {
            field: "[state] commit_every_secs",
        });
    }
    if audit.checkpoint_every == 0 {
        return Err(ConfigError::ZeroLimit {
            field: "[audit] checkpoint_every",
        });
    }
    Ok(client_pins)
}

fn valid_model_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// Splits `host:port` (`[v6]:port` for IPv6).
fn split_host_port(address: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or(ConfigError::BrokerAddress)?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or(ConfigError::BrokerAddress)?;
        if host.contains(':') {
            return Err(ConfigError::BrokerAddress);
        }
        (host, port)
    };
    let port: u16 = port.parse().map_err(|_| ConfigError::BrokerAddress)?;
    if host.is_empty() || port == 0 {
        return Err(ConfigError::BrokerAddress);
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests;
