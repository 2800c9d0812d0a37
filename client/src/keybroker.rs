//! The model owner's key broker: releases a model key only to an enclave whose evidence satisfies the
//! owner's policy, is fresh (a nonce the broker just drew), bound to this TLS connection (its RFC 8446
//! §7.5 exporter) and names the requested model.
//!
//! The protocol is the "Key release" section of `docs/architecture.md`:
//!
//! ```text
//! enclave → broker  KeyRequest { version: 1, model_digest }
//! broker  → enclave Challenge  { nonce }                         32 bytes from the system RNG, single use
//! enclave → broker  Attest     { evidence }                      claims: nonce, exporter, X25519 key, [digest]
//! broker  → enclave Granted    { broker_public, wrapped_key }  | Refused { code }
//! ```
//!
//! `Refused { UnknownModel }` is only ever sent to evidence that verified: an unauthenticated peer cannot
//! learn which models the broker holds keys for.
//!
//! ```text
//! ```
//!
//! Several exchanges may follow one another on one connection (one per model); each draws its own nonce.
//!
//! Trust assumptions:
//! - Every byte from the network may come from an attacker (the host relays the enclave's connection):
//!   frames are bounded (`proto::frame`), every read has a timeout, a connection has an overall deadline,
//!   and concurrent connections are bounded, so a silent or slow peer holds at most one slot for a while.
//! - The policy, the simulated root (if any), the keystore and the TLS identity are the owner's own files.
//!   The simulated root comes only from the policy, never from the evidence.
//! - Keys: read from the keystore for one grant, wrapped, and dropped (zeroized). They are never logged.
//!
//! Every decision about verified evidence (a grant, or a policy refusal of genuine, fresh evidence) is one
//! JSON line in an append-only audit log, written *before* the answer is sent: a key is never released
//! without its audit line (if the line cannot be written, the answer is `Refused { Internal }`). Refusals of
//! peers whose evidence did not verify, and their broken connections, are counted per source address and
//! written as one summary line per address per interval ([`peers`]): unauthenticated peers cannot grow the
//! log without bound. The wire carries only the coarse [`RefusalCode`]; the precise reason (the verifier's
//! "field: expected …, found …") stays in the log.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloister_attestation::evidence::{
    verify_evidence, EnclaveKey, Evidence, EvidenceError, ExpectedSession, Platform, Sha384,
    TLS_EXPORTER_LABEL,
};
use cloister_attestation::policy::NoWorkloadPin;
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::{Policy, VerifyError, VerifyOptions};
use cloister_models::{Error as ModelsError, Keystore, KeystoreError, ModelDigest};
use cloister_proto::key_release::{
    wrap_model_key, BrokerToEnclave, EnclaveToBroker, RefusalCode, PROTOCOL_VERSION,
};
use cloister_proto::{frame, Error as ProtoError};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::chain_files;

mod peers;

pub use peers::AuditSummary;
use peers::PeerBook;

/// Subject alternative name of a generated broker certificate (the enclave pins the certificate's
/// SHA-256, not a name).
pub const CERTIFICATE_NAME: &str = "cloister-keybroker";

/// Group and other permission bits: must be clear on the TLS key and the audit log.
const GROUP_OTHER: u32 = 0o077;

/// How long in-flight connections may finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting the broker (configuration, files). Per-connection problems are not errors of the
/// broker: they end that connection and are reported on stderr or in the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration file is unreadable or invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The policy or its simulated root could not be loaded.
    #[error(transparent)]
    Policy(#[from] chain_files::InputError),
    /// The keystore could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[source] ModelsError),
    /// The TLS certificate or key is missing, unreadable, or unusable.
    #[error("{path}: {reason}")]
    Tls {
        /// The file (certificate or key).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The audit log cannot be opened for appending, or is readable by others.
    #[error("audit log {path}: {reason}")]
    AuditLog {
        /// The log file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Binding or accepting on the listening socket failed.
    #[error("listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The system RNG failed.
    #[error("the system random number generator failed")]
    Rng,
    /// The owner's policy pins no workload identity: the broker would release keys to any code.
    #[error("{path}: {source}")]
    NoWorkloadPin {
        /// The policy file.
        path: PathBuf,
        /// Which pins are missing.
        source: NoWorkloadPin,
    },
}

/// Timeouts and bounds of the server. Every field has a default (see [`Limits::default`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Seconds a TLS handshake may take.
    pub handshake_timeout_secs: u64,
    /// Seconds the broker waits for each message (a whole frame) from the peer.
    pub read_timeout_secs: u64,
    /// Seconds a connection may stay open in total, whatever it does.
    pub connection_timeout_secs: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Key requests on one connection.
    pub max_requests_per_connection: usize,
    /// Issued nonces remembered to tell a replay from a never-issued nonce (oldest forgotten first).
    /// A forgotten nonce is still refused: only the nonce of the exchange in progress is ever accepted.
    pub remembered_nonces: usize,
    /// Connections one source address may hold at once; more are closed at accept (and counted).
    pub max_connections_per_source: usize,
    /// Seconds between summary lines for refusals of unverified peers (one line per source address and
    /// interval). 0: every such refusal gets its own line (for debugging a deployment; not for a broker
    /// that faces the Internet).
    pub audit_summary_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout_secs: 10,
            read_timeout_secs: 10,
            connection_timeout_secs: 60,
            max_connections: 64,
            max_requests_per_connection: 16,
            remembered_nonces: 100_000,
            max_connections_per_source: 16,
            audit_summary_secs: 60,
        }
    }
}

/// The broker's configuration file (TOML, unknown fields rejected). Relative paths are resolved against
/// the directory of the configuration file.
///
/// ```toml
/// listen = "127.0.0.1:7443"
/// keystore = "keys"                     # from `cloister seal --keystore`
/// policy = "owner-policy.toml"          # the model owner's attestation policy
/// tls_certificate = "broker.crt.pem"    # its SHA-256 (DER) is pinned by the enclave configuration
/// tls_key = "broker.key.pem"            # PKCS#8 PEM, mode 0600
/// audit_log = "audit.log"               # append-only, one JSON line per decision, mode 0600
///
/// [limits]                              # optional; defaults shown
/// handshake_timeout_secs = 10
/// read_timeout_secs = 10
/// connection_timeout_secs = 60
/// max_connections = 64
/// max_requests_per_connection = 16
/// remembered_nonces = 100000
/// max_connections_per_source = 16
/// audit_summary_secs = 60
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: SocketAddr,
    keystore: PathBuf,
    policy: PathBuf,
    tls_certificate: PathBuf,
    tls_key: PathBuf,
    audit_log: PathBuf,
    #[serde(default)]
    limits: Limits,
}

/// What a [`KeyBroker`] is built from: file locations (the owner's files) and limits.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Where `cloister keybroker` listens (library users pass an address to [`KeyBroker::bind`]).
    pub listen: SocketAddr,
    /// The keystore directory (`cloister seal --keystore`).
    pub keystore: PathBuf,
    /// The model owner's policy (TOML). A relative `simulated_root` in it is resolved against the
    /// policy file's directory; simulated evidence is refused unless it is set.
    pub policy: PathBuf,
    /// The broker's certificate (PEM).
    pub tls_certificate: PathBuf,
    /// The broker's private key (PKCS#8 PEM, no group/other permissions).
    pub tls_key: PathBuf,
    /// The audit log (created 0600 if missing, appended to).
    pub audit_log: PathBuf,
    /// Timeouts and bounds.
    pub limits: Limits,
}

impl BrokerConfig {
    /// Reads a configuration file; relative paths are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Self, BrokerError> {
        let config_error = |reason: String| BrokerError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            fs::read_to_string(path).map_err(|e| config_error(format!("cannot read: {e}")))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        Ok(Self {
            listen: file.listen,
            keystore: resolve(file.keystore),
            policy: resolve(file.policy),
            tls_certificate: resolve(file.tls_certificate),
            tls_key: resolve(file.tls_key),
            audit_log: resolve(file.audit_log),
            limits: file.limits,
        })
    }
}

/// Creates a P-384 self-signed certificate and its PKCS#8 key as PEM files, unless both exist.
///
/// Never overwrites: if only one of the two files exists, that is an error (a certificate without its
/// key, or the reverse, cannot be completed). The key file is created with mode 0600. Returns true if
/// the files were created.
pub fn generate_tls_identity(certificate: &Path, key: &Path) -> Result<bool, BrokerError> {
    match (certificate.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) => {
            return Err(BrokerError::Tls {
                path: key.to_path_buf(),
                reason: format!(
                    "missing, but the certificate {} exists; refusing to replace it: restore the key or \
                     remove the certificate (and update the pin in the enclave configuration)",
                    certificate.display()
                ),
            })
        }
        (false, true) => {
            return Err(BrokerError::Tls {
                path: certificate.to_path_buf(),
                reason: format!(
                    "missing, but the key {} exists; refusing to replace it: restore the certificate or \
                     remove the key",
                    key.display()
                ),
            })
        }
        (false, false) => {}
    }
    let tls_err = |path: &Path, reason: String| BrokerError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| tls_err(key, format!("cannot generate a P-384 key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(vec![CERTIFICATE_NAME.to_owned()])
        .map_err(|e| tls_err(certificate, e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Cloister key broker");
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| tls_err(certificate, format!("cannot self-sign: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(key_pair.serialize_pem());
    write_new(key, key_pem.as_bytes(), 0o600).map_err(|e| tls_err(key, e.to_string()))?;
    if let Err(e) = write_new(certificate, cert.pem().as_bytes(), 0o644) {
        let _ = fs::remove_file(key);
        return Err(tls_err(certificate, e.to_string()));
    }
    Ok(true)
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_all());
    if r.is_err() {
        drop(f);
        let _ = fs::remove_file(path);
    }
    r
}

/// SHA-256 of a DER certificate, the pin of the enclave configuration (`certificate_sha256`).
pub fn certificate_sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, der).as_ref());
    out
}

/// A key broker ready to serve: policy, keystore, TLS identity and audit log loaded.
pub struct KeyBroker {
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    any_workload: bool,
}

impl std::fmt::Debug for KeyBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBroker")
            .field("certificate_sha256", &hex::encode(self.inner.cert_sha256))
            .field("keystore", &self.inner.keystore.dir())
            .finish_non_exhaustive()
    }
}

struct Inner {
    policy: Policy,
    simulated_root: Option<AmdCertificate>,
    /// The CRLs the owner's policy names (`crl`, `crls`), applied to every evidence.
    crls: Vec<AmdCrl>,
    keystore: Keystore,
    audit: AuditLog,
    nonces: Mutex<IssuedNonces>,
    rng: SystemRandom,
    cert_sha256: [u8; 32],
    limits: Limits,
    peers: PeerBook,
}

impl KeyBroker {
    /// Loads everything the broker needs; fails early and precisely on any missing or unsafe file.
    pub fn new(config: BrokerConfig) -> Result<Self, BrokerError> {
        let policy = chain_files::read_policy(&config.policy)?;
        // A key for any code is not a policy: refuse to start unless the owner said so explicitly.
        let any_workload =
            policy
                .require_workload_pin()
                .map_err(|source| BrokerError::NoWorkloadPin {
                    path: config.policy.clone(),
                    source,
                })?;
        let (simulated_root, crls) = chain_files::read_policy_files(&policy)?;
        let keystore = Keystore::open(&config.keystore).map_err(BrokerError::Keystore)?;
        let (cert, key) = load_tls_identity(&config.tls_certificate, &config.tls_key)?;
        let cert_sha256 = certificate_sha256(cert.as_ref());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
            .map_err(|e| BrokerError::Tls {
                path: config.tls_key.clone(),
                reason: format!(
                    "unusable with the certificate {}: {e}",
                    config.tls_certificate.display()
                ),
            })?;
        let audit = AuditLog::open(&config.audit_log)?;
        let limits = config.limits;
        Ok(Self {
            inner: Arc::new(Inner {
                policy,
                simulated_root,
                crls,
                keystore,
                audit,
                nonces: Mutex::new(IssuedNonces::new(limits.remembered_nonces)),
                rng: SystemRandom::new(),
                cert_sha256,
                peers: PeerBook::new(limits.max_connections_per_source),
                limits,
            }),
            acceptor: TlsAcceptor::from(Arc::new(tls_config)),
            any_workload,
        })
    }

    /// True when the owner's policy says `allow_any_workload = true` and pins no workload identity: keys
    /// go to any code on a genuine platform. `cloister keybroker` prints a warning at every start.
    pub fn accepts_any_workload(&self) -> bool {
        self.any_workload
    }

    /// SHA-256 of the broker's DER certificate: what the enclave configuration pins.
    pub fn certificate_sha256(&self) -> [u8; 32] {
        self.inner.cert_sha256
    }

    /// Binds a TCP listener on `addr` (port 0: any free port).
    pub async fn bind(self, addr: SocketAddr) -> Result<BoundBroker, BrokerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BrokerError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(BoundBroker {
            broker: self,
            listener,
        })
    }

    /// Serves on `listener` until the future is dropped. Accept errors (e.g. out of file descriptors)
    /// are reported on stderr and retried after a short pause: they never stop the broker.
    pub async fn serve(self, listener: TcpListener) -> Result<(), BrokerError> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets connections in
    /// progress finish for a few seconds, and returns.
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BrokerError> {
        let slots = Arc::new(Semaphore::new(self.inner.limits.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        let local = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let summaries = (self.inner.limits.audit_summary_secs > 0).then(|| {
            let inner = self.inner.clone();
            let every = Duration::from_secs(self.inner.limits.audit_summary_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    write_summaries(&inner).await;
                }
            })
        });
        tokio::pin!(shutdown);
        loop {
            // Reap finished connections so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning, keep serving.
                    eprintln!("cloister keybroker: accept on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(open) = self.inner.peers.open(peer.ip()) else {
                self.inner.refused_unverified(
                    peer,
                    "PerSourceLimit",
                    &format!(
                        "connection closed: this address already holds {} connections",
                        self.inner.limits.max_connections_per_source
                    ),
                );
                continue;
            };
            let inner = self.inner.clone();
            let acceptor = self.acceptor.clone();
            tasks.spawn(async move {
                if let Err(e) = handle_connection(inner.clone(), acceptor, tcp, peer).await {
                    inner.refused_unverified(peer, "Connection", &e.to_string());
                }
                drop(open);
                drop(permit);
            });
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tasks.abort_all();
        }
        if let Some(task) = summaries {
            task.abort();
        }
        write_summaries(&self.inner).await;
        Ok(())
    }
}

impl Inner {
    /// A refusal of a peer whose evidence did not verify (or that sent none): counted for the interval's
    /// summary, or written at once when summaries are off.
    fn refused_unverified(&self, peer: SocketAddr, code: &str, reason: &str) {
        if self.limits.audit_summary_secs == 0 {
            eprintln!("cloister keybroker: {peer}: {code}: {reason}");
        } else {
            self.peers.refused(peer.ip(), code, reason);
        }
    }
}

/// Writes the summary lines of the interval that just ended.
async fn write_summaries(inner: &Arc<Inner>) {
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

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A [`KeyBroker`] with its listening socket.
#[derive(Debug)]
pub struct BoundBroker {
    broker: KeyBroker,
    listener: TcpListener,
}

impl BoundBroker {
    /// The address actually bound (with the port chosen by the system for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, BrokerError> {
        self.listener
            .local_addr()
            .map_err(|source| BrokerError::Listen {
                addr: "listener".to_owned(),
                source,
            })
    }

    /// SHA-256 of the broker's DER certificate.
    pub fn certificate_sha256(&self) -> [u8; 32] {
        self.broker.certificate_sha256()
    }

    /// See [`KeyBroker::serve`].
    pub async fn serve(self) -> Result<(), BrokerError> {
        self.broker.serve(self.listener).await
    }

    /// See [`KeyBroker::serve_until`].
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        self.broker.serve_until(self.listener, shutdown).await
    }
}

fn load_tls_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), BrokerError> {
    let tls_err = |path: &Path, reason: String| BrokerError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let hint = "(create both with `cloister keybroker --generate-tls`)";
    let cert_pem =
        fs::read(cert_path).map_err(|e| tls_err(cert_path, format!("cannot read: {e} {hint}")))?;
    let mut certs = CertificateDer::pem_slice_iter(&cert_pem);
    let cert = match (certs.next(), certs.next()) {
        (Some(Ok(c)), None) => c,
        (None, _) => return Err(tls_err(cert_path, "no PEM certificate in the file".into())),
        (Some(Err(e)), _) => return Err(tls_err(cert_path, format!("bad PEM: {e}"))),
        (Some(Ok(_)), Some(_)) => return Err(tls_err(
            cert_path,
            "more than one certificate: the broker's certificate is self-signed, keep exactly one"
                .into(),
        )),
    };
    let meta = fs::metadata(key_path)
        .map_err(|e| tls_err(key_path, format!("cannot read: {e} {hint}")))?;
    if meta.mode() & GROUP_OTHER != 0 {
        return Err(tls_err(
            key_path,
            format!(
                "has mode {:04o}; the private key must not be accessible to group or others (chmod 600)",
                meta.mode() & 0o7777
            ),
        ));
    }
    let key_pem = zeroize::Zeroizing::new(
        fs::read(key_path).map_err(|e| tls_err(key_path, format!("cannot read: {e}")))?,
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_err(key_path, format!("no usable PEM private key: {e}")))?;
    Ok((cert, key))
}

/// Nonces the broker issued, oldest first, bounded: tells a replayed nonce from a made-up one in the
/// audit log. Acceptance never depends on it (only the current exchange's nonce is accepted).
struct IssuedNonces {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl IssuedNonces {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nonce`; false if it was already recorded (the RNG repeated itself: never use it).
    fn insert(&mut self, nonce: [u8; 32]) -> bool {
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, nonce: &[u8; 32]) -> bool {
        self.set.contains(nonce)
    }
}

/// The append-only audit log.
struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    fn open(path: &Path) -> Result<Self, BrokerError> {
        let err = |reason: String| BrokerError::AuditLog {
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
    fn append(&self, record: &AuditRecord) -> io::Result<()> {
        self.append_json(record)
    }

    /// Appends any serializable value as one line.
    fn append_json<T: Serialize>(&self, record: &T) -> io::Result<()> {
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
    /// `granted` or `refused`.
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
    /// The evidence was genuine, fresh and bound, and the policy refused it: a decision about a real
    /// enclave, written in full like a grant (not part of the line).
    #[serde(skip)]
    pub policy_decision: bool,
    /// The peer's address, for the per-address summaries (not part of the line; `peer` is).
    #[serde(skip)]
    source: Option<std::net::IpAddr>,
}

impl AuditRecord {
    fn new(peer: SocketAddr) -> Self {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "unknown".to_owned());
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
            policy_decision: false,
            source: Some(peer.ip()),
        }
    }

    /// Whether this decision is written as its own line: a grant, or any decision about evidence that
    /// verified (everything else is summarised per address).
    fn is_about_verified_evidence(&self) -> bool {
        self.decision == "granted" || self.evidence_verified || self.policy_decision
    }

    fn refuse(&mut self, code: RefusalCode, reason: impl Into<String>) -> BrokerToEnclave {
        self.decision = "refused".to_owned();
        self.code = Some(format!("{code:?}"));
        self.reason = Some(reason.into());
        BrokerToEnclave::Refused { code }
    }

    /// Report fields as the (not yet, or not) verified report states them.
    fn claimed_report(&mut self, evidence: &Evidence) {
        self.simulated = Some(evidence.platform == Platform::SnpSimulated);
        if let Ok(r) = AttestationReport::from_bytes(&evidence.report) {
            self.fill_report(&r);
            self.product = r.cpuid_product().map(|p| p.name().to_owned());
        }
    }

    fn fill_report(&mut self, r: &AttestationReport) {
        self.measurement = Some(hex::encode(r.measurement));
        self.chip_id = Some(hex::encode(r.chip_id));
        self.reported_tcb = Some(r.reported_tcb.to_string());
    }
}

/// Why a connection ended early (stderr only; decisions go to the audit log).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("TLS exporter: {0}")]
    Exporter(rustls::Error),
    #[error("the system random number generator failed")]
    Rng,
    #[error("audit log: {0}")]
    Audit(io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

struct Deadline {
    end: Instant,
}

impl Deadline {
    /// Runs `fut` for at most `per_op`, and never past the connection's deadline.
    async fn run<T>(
        &self,
        per_op: Duration,
        what: &'static str,
        fut: impl Future<Output = T>,
    ) -> Result<T, ConnError> {
        let limit = (Instant::now() + per_op).min(self.end);
        tokio::time::timeout_at(limit, fut)
            .await
            .map_err(|_| ConnError::Timeout(what))
    }
}

async fn handle_connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), ConnError> {
    let limits = &inner.limits;
    let deadline = Deadline {
        end: Instant::now() + Duration::from_secs(limits.connection_timeout_secs),
    };
    let read_timeout = Duration::from_secs(limits.read_timeout_secs);
    let _ = tcp.set_nodelay(true);
    let mut tls = deadline
        .run(
            Duration::from_secs(limits.handshake_timeout_secs),
            "in the TLS handshake",
            acceptor.accept(tcp),
        )
        .await?
        .map_err(ConnError::Handshake)?;
    // RFC 8446 §7.5: this connection's exporter; the evidence must carry the same value.
    let exporter: [u8; 32] = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .map_err(ConnError::Exporter)?;

    let mut result = Ok(());
    for _ in 0..limits.max_requests_per_connection.max(1) {
        match exchange(&inner, &mut tls, peer, &exporter, &deadline, read_timeout).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // Best effort close_notify; the peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    result
}

enum Next {
    Continue,
    Close,
}

/// Sends `msg` after its audit line is written. A grant whose audit line cannot be written becomes
/// `Refused { Internal }` (and that is logged too, if the log recovers).
async fn answer(
    inner: &Inner,
    tls: &mut TlsStream<TcpStream>,
    deadline: &Deadline,
    mut record: AuditRecord,
    mut msg: BrokerToEnclave,
) -> Result<(), ConnError> {
    if !record.is_about_verified_evidence() && inner.limits.audit_summary_secs > 0 {
        // An unverified peer: counted, not written line by line (see `peers`).
        let source = record
            .source
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        inner.peers.refused(
            source,
            record.code.as_deref().unwrap_or("Refused"),
            record.reason.as_deref().unwrap_or(""),
        );
        deadline
            .run(Duration::from_secs(10), "sending", frame::write(tls, &msg))
            .await??;
        return Ok(());
    }
    if let Err(e) = inner.audit.append(&record) {
        eprintln!(
            "cloister keybroker: cannot write the audit log {}: {e}",
            inner.audit.path.display()
        );
        record.enclave_key = None;
        record.key_id = None;
        msg = record.refuse(
            RefusalCode::Internal,
            format!("the audit log could not be written: {e}"),
        );
        let _ = inner.audit.append(&record);
        // Tell the enclave, then give up on this connection.
        let _ = deadline
            .run(Duration::from_secs(5), "sending", frame::write(tls, &msg))
            .await;
        return Err(ConnError::Audit(e));
    }
    deadline
        .run(Duration::from_secs(10), "sending", frame::write(tls, &msg))
        .await??;
    Ok(())
}

/// One KeyRequest → Challenge → Attest → answer exchange.
async fn exchange(
    inner: &Arc<Inner>,
    tls: &mut TlsStream<TcpStream>,
    peer: SocketAddr,
    exporter: &[u8; 32],
    deadline: &Deadline,
    read_timeout: Duration,
) -> Result<Next, ConnError> {
    let mut record = AuditRecord::new(peer);
    // 1. KeyRequest.
    let request = deadline
        .run(
            read_timeout,
            "waiting for a KeyRequest",
            frame::read::<_, EnclaveToBroker>(tls, "KeyRequest"),
        )
        .await?;
    let (version, requested) = match request {
        Ok(EnclaveToBroker::KeyRequest {
            version,
            model_digest,
        }) => (version, model_digest),
        // The peer is done (or never started): not a decision.
        Err(ProtoError::UnexpectedEof) => return Ok(Next::Close),
        Ok(EnclaveToBroker::Attest { .. }) => {
            let msg = record.refuse(
                RefusalCode::BadRequest,
                "protocol: expected KeyRequest, received Attest",
            );
            answer(inner, tls, deadline, record, msg).await?;
            return Ok(Next::Close);
        }
        Err(e @ (ProtoError::Malformed { .. } | ProtoError::FrameTooLarge { .. })) => {
            let msg = record.refuse(RefusalCode::BadRequest, format!("protocol: {e}"));
            answer(inner, tls, deadline, record, msg).await?;
            return Ok(Next::Close);
        }
        Err(e) => return Err(e.into()),
    };
    record.model_digest = Some(sha384_text(&requested));
    if version != PROTOCOL_VERSION {
        let msg = record.refuse(
            RefusalCode::BadRequest,
            format!("version: expected {PROTOCOL_VERSION}, found {version}"),
        );
        answer(inner, tls, deadline, record, msg).await?;
        return Ok(Next::Close);
    }
    // Whether the broker holds a key for this digest is told only after the evidence verified (decide):
    // an unauthenticated peer must not learn which models this broker serves.

    // 2. Challenge with a fresh nonce (recorded as issued at once: it is single use).
    let mut nonce = [0u8; 32];
    inner.rng.fill(&mut nonce).map_err(|_| ConnError::Rng)?;
    let fresh = inner
        .nonces
        .lock()
        .map_err(|_| ConnError::Internal("nonce set lock poisoned".into()))?
        .insert(nonce);
    if !fresh {
        return Err(ConnError::Rng);
    }
    record.nonce = Some(hex::encode(nonce));
    deadline
        .run(
            Duration::from_secs(10),
            "sending the challenge",
            frame::write(tls, &BrokerToEnclave::Challenge { nonce }),
        )
        .await??;

    // 3. Attest.
    let attest = deadline
        .run(
            read_timeout,
            "waiting for Attest",
            frame::read::<_, EnclaveToBroker>(tls, "Attest"),
        )
        .await?;
    let evidence = match attest {
        Ok(EnclaveToBroker::Attest { evidence }) => evidence,
        Ok(EnclaveToBroker::KeyRequest { .. }) => {
            let msg = record.refuse(
                RefusalCode::BadRequest,
                "protocol: expected Attest, received KeyRequest",
            );
            answer(inner, tls, deadline, record, msg).await?;
            return Ok(Next::Close);
        }
        Err(e @ (ProtoError::Malformed { .. } | ProtoError::FrameTooLarge { .. })) => {
            let msg = record.refuse(RefusalCode::BadRequest, format!("protocol: {e}"));
            answer(inner, tls, deadline, record, msg).await?;
            return Ok(Next::Close);
        }
        Err(e) => return Err(e.into()),
    };

    // 4. Decide (signature checks are CPU work: off the async workers).
    let decide_inner = inner.clone();
    let exporter = *exporter;
    let (record, msg) = tokio::task::spawn_blocking(move || {
        let mut record = record;
        let msg = decide(
            &decide_inner,
            &mut record,
            &nonce,
            &exporter,
            &requested,
            &evidence,
        );
        (record, msg)
    })
    .await
    .map_err(|e| ConnError::Internal(format!("decision task: {e}")))?;
    answer(inner, tls, deadline, record, msg).await?;
    Ok(Next::Continue)
}

fn sha384_text(d: &Sha384) -> String {
    format!("sha384:{}", hex::encode(d.0))
}

/// The coarse code for a verification failure.
fn refusal_code(e: &EvidenceError) -> RefusalCode {
    match e {
        EvidenceError::Verify(VerifyError::Policy(_)) | EvidenceError::Policy(_) => {
            RefusalCode::PolicyRejected
        }
        EvidenceError::NonceMismatch { .. } => RefusalCode::Replay,
        _ => RefusalCode::EvidenceRejected,
    }
}

/// Verifies the evidence for this exchange and, if everything holds, wraps the key.
fn decide(
    inner: &Inner,
    record: &mut AuditRecord,
    nonce: &[u8; 32],
    exporter: &[u8; 32],
    requested: &Sha384,
    evidence: &Evidence,
) -> BrokerToEnclave {
    record.claimed_report(evidence);

    // Freshness first: it is cheap, and a wrong nonce is refused whatever else the evidence says.
    let claimed = &evidence.claims.nonce;
    if !cloister_attestation::ct_eq(claimed, nonce) {
        let history = match inner.nonces.lock() {
            Ok(n) if n.contains(claimed) => {
                "replayed: that nonce was issued earlier, for another exchange, and is used up"
            }
            Ok(_) => "this broker never issued that nonce (or has forgotten it)",
            Err(_) => "nonce history unavailable",
        };
        return record.refuse(
            RefusalCode::Replay,
            format!(
                "claims.nonce: expected {}, found {} ({history})",
                hex::encode(nonce),
                hex::encode(claimed)
            ),
        );
    }

    let options = VerifyOptions {
        at_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        crls: &inner.crls,
        simulated_root: inner.simulated_root.as_ref(),
    };
    let expected = ExpectedSession {
        nonce,
        tls_exporter: exporter,
    };
    let verified = match verify_evidence(evidence, &inner.policy, &options, &expected) {
        Ok(v) => v,
        Err(e) => {
            record.policy_decision = e.is_policy_decision();
            return record.refuse(refusal_code(&e), e.to_string());
        }
    };
    record.evidence_verified = true;
    let report = verified.report();
    record.fill_report(report.report());
    record.product = Some(report.product().name().to_owned());
    record.simulated = Some(report.is_simulated());
    let claims = verified.claims();

    // The evidence must be made for this request: the requested digest among its claims.
    if !claims
        .model_digests
        .iter()
        .any(|d| cloister_attestation::ct_eq(&d.0, &requested.0))
    {
        let found: Vec<String> = claims.model_digests.iter().map(sha384_text).collect();
        return record.refuse(
            RefusalCode::EvidenceRejected,
            format!(
                "claims.model_digests: expected to contain {} (the requested model), found [{}]",
                sha384_text(requested),
                found.join(", ")
            ),
        );
    }
    if let Err(v) = inner.policy.check_model_digest(&requested.0) {
        return record.refuse(RefusalCode::PolicyRejected, v.to_string());
    }
    let enclave_public = match &claims.enclave_key {
        Some(EnclaveKey::X25519(pk)) => *pk,
        None => {
            return record.refuse(
                RefusalCode::EvidenceRejected,
                "claims.enclave_key: expected an X25519 public key, found none",
            )
        }
    };

    let digest = ModelDigest::from_bytes(requested.0);
    let key = match inner.keystore.get(&digest) {
        Ok(k) => k,
        Err(ModelsError::Keystore(KeystoreError::KeyNotFound { .. })) => {
            return record.refuse(
                RefusalCode::UnknownModel,
                format!("model_digest: no key for {digest} in the keystore"),
            )
        }
        Err(e) => return record.refuse(RefusalCode::Internal, format!("keystore: {e}")),
    };
    // Why expose (inside wrap_model_key): wrapping to the attested enclave's key is the release.
    match wrap_model_key(&key, &enclave_public, nonce, requested, &inner.rng) {
        Ok((broker_public, wrapped_key)) => {
            record.decision = "granted".to_owned();
            record.enclave_key = Some(hex::encode(enclave_public));
            record.key_id = Some(key.key_id().to_string());
            BrokerToEnclave::Granted {
                broker_public,
                wrapped_key,
            }
        }
        Err(e) => record.refuse(
            RefusalCode::EvidenceRejected,
            format!("claims.enclave_key: cannot wrap to it ({e})"),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn issued_nonces_are_bounded_and_remembered() {
        let mut n = IssuedNonces::new(2);
        assert!(n.insert([1; 32]));
        assert!(!n.insert([1; 32]));
        assert!(n.insert([2; 32]));
        assert!(n.insert([3; 32]));
        assert!(!n.contains(&[1; 32]));
        assert!(n.contains(&[2; 32]) && n.contains(&[3; 32]));
        assert_eq!(n.order.len(), 2);
    }

    #[test]
    fn config_resolves_relative_paths_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broker.toml");
        fs::write(
            &p,
            "listen = \"127.0.0.1:7443\"\nkeystore = \"keys\"\npolicy = \"/abs/policy.toml\"\n\
             tls_certificate = \"c.pem\"\ntls_key = \"k.pem\"\naudit_log = \"audit.log\"\n\
             [limits]\nread_timeout_secs = 2\n",
        )
        .unwrap();
        let c = BrokerConfig::from_file(&p).unwrap();
        assert_eq!(c.keystore, dir.path().join("keys"));
        assert_eq!(c.policy, PathBuf::from("/abs/policy.toml"));
        assert_eq!(c.limits.read_timeout_secs, 2);
        assert_eq!(c.limits.max_connections, 64);
        fs::write(&p, "listen = \"127.0.0.1:7443\"\nkeystroe = \"keys\"\n").unwrap();
        let e = BrokerConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("keystroe"), "{e}");
    }

    #[test]
    fn tls_identity_is_generated_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        assert!(generate_tls_identity(&c, &k).unwrap());
        let before = fs::read(&c).unwrap();
        assert!(!generate_tls_identity(&c, &k).unwrap());
        assert_eq!(fs::read(&c).unwrap(), before);
        assert_eq!(fs::metadata(&k).unwrap().mode() & 0o777, 0o600);
        let (cert, _key) = load_tls_identity(&c, &k).unwrap();
        assert_eq!(certificate_sha256(cert.as_ref()).len(), 32);
        fs::remove_file(&k).unwrap();
        assert!(generate_tls_identity(&c, &k).is_err());
        assert!(!k.exists());
    }
}
