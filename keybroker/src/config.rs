//! The broker's configuration file and TLS identity (the owner's own files).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Subject alternative name of a generated broker certificate (the enclave pins the certificate's
/// SHA-256, not a name).
pub const CERTIFICATE_NAME: &str = "cloister-keybroker";

/// Group and other permission bits: must be clear on the TLS key and the audit log.
pub(crate) const GROUP_OTHER: u32 = 0o077;

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
    /// Key releases per model in any hour (each enclave start is one; durable-state commits are not
    /// counted). Bounds how often a host can restart an enclave, or start one under a new state label
    /// with empty budgets.
    pub releases_per_model_per_hour: u32,
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
            releases_per_model_per_hour: 60,
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
/// releases_per_model_per_hour = 60
///
/// state_anchors = "state-anchors.json"  # optional (default shown): the enclaves' durable-state anchors
///
/// [models."sha384:…"]                   # optional: this model's own policy (residency: its chips, products,
/// policy = "eu-hardware.toml"           # TCB, signing key); other models use `policy`
///
/// [collateral]                          # optional: for evidence that carries no VCEK (Cloister's does)
/// kds_url = "https://kdsintf.amd.com"   # AMD's KDS or a mirror; absent: no network
/// cache = "collateral"                  # Trustee's layout, shared with `cloister fetch --cache`
/// bundle = "collateral.json"            # an offline bundle (`cloister fetch bundle`)
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
    state_anchors: Option<PathBuf>,
    #[serde(default)]
    limits: Limits,
    collateral: Option<CollateralConfig>,
    #[serde(default)]
    models: std::collections::BTreeMap<String, ModelPolicyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPolicyFile {
    policy: PathBuf,
}

/// Where the broker gets a VCEK that evidence does not carry (`[collateral]`). Everything fetched is
/// verified against AMD's roots before use. Absent: such evidence is refused (no VCEK to check it with).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CollateralConfig {
    /// AMD's KDS or a mirror; `None`: cache and bundle only.
    pub kds_url: Option<String>,
    /// The on-disk cache (relative: to the configuration file).
    pub cache: Option<PathBuf>,
    /// An offline bundle (relative: to the configuration file).
    pub bundle: Option<PathBuf>,
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
    /// The enclaves' durable-state anchors (`crate::anchors`); `None`: `state-anchors.json` beside the
    /// audit log.
    pub state_anchors: Option<PathBuf>,
    /// Timeouts and bounds.
    pub limits: Limits,
    /// Where a VCEK evidence does not carry comes from; `None`: nowhere.
    pub collateral: Option<CollateralConfig>,
    /// Per-model policies (`[models."sha384:…"] policy = …`): the policy that decides for that model
    /// instead of `policy`.
    pub model_policies: Vec<(cloister_models::ModelDigest, PathBuf)>,
}

impl BrokerConfig {
    /// Reads a configuration file; relative paths are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let config_error = |reason: String| Error::Config {
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
            state_anchors: file.state_anchors.map(resolve),
            limits: file.limits,
            collateral: file.collateral.map(|c| CollateralConfig {
                kds_url: c.kds_url,
                cache: c.cache.map(resolve),
                bundle: c.bundle.map(resolve),
            }),
            model_policies: file
                .models
                .into_iter()
                .map(|(digest, m)| {
                    digest
                        .parse::<cloister_models::ModelDigest>()
                        .map(|d| (d, resolve(m.policy)))
                        .map_err(|_| {
                            config_error(format!(
                                "[models.{digest:?}]: the key must be a model digest, sha384:<96 hex digits>"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Creates a P-384 self-signed certificate and its PKCS#8 key as PEM files, unless both exist.
///
/// Never overwrites: if only one of the two files exists, that is an error (a certificate without its
/// key, or the reverse, cannot be completed). The key file is created with mode 0600. Returns true if
/// the files were created.
pub fn generate_tls_identity(certificate: &Path, key: &Path) -> Result<bool, Error> {
    match (certificate.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) => {
            return Err(Error::Tls {
                path: key.to_path_buf(),
                reason: format!(
                    "missing, but the certificate {} exists; refusing to replace it: restore the key or \
                     remove the certificate (and update the pin in the enclave configuration)",
                    certificate.display()
                ),
            })
        }
        (false, true) => {
            return Err(Error::Tls {
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
    let tls_err = |path: &Path, reason: String| Error::Tls {
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

pub(crate) fn load_tls_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
    let tls_err = |path: &Path, reason: String| Error::Tls {
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

#[cfg(test)]
mod tests;
