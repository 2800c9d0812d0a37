//! Which certificates go with a hardware report: the host's certificate table first, then the VCEK
//! cache directory of the measured configuration; with neither, the chain comes back without a leaf, for
//! the collateral path ([`super::Attester`]) to complete or refuse.
//!
//! Nothing here decides trust: the verifier checks the chain against AMD's embedded roots (an empty ARK or
//! ASK/ASVK in [`CertChainDer`] means "use the embedded one"). What this module guarantees is that the
//! leaf matches the key the report says signed it (VCEK or VLEK) and that every certificate parses, so a
//! confused host or a stale cache shows up as an error here, at the source, rather than as a puzzling
//! rejection at every verifier.

use std::path::{Path, PathBuf};

use cloister_attestation::evidence::CertChainDer;
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::SigningKey;

use super::cert_table::{self, CertTable};
use super::FirmwareError;

/// Where the leaf certificate of a chain came from (for logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainSource {
    /// The certificate table the host attached to the extended report.
    HostTable,
    /// The configured VCEK cache directory.
    Cache(PathBuf),
    /// Neither has the leaf: why (the chain returned has no leaf).
    Missing(String),
}

/// The chain for a report signed by `key`: the leaf (VCEK or VLEK) from `table` if it has one, else from
/// `cache`; the ARK and ASK/ASVK from the same place when present there (else empty: the verifier uses
/// its embedded AMD certificates). Neither having the leaf is [`ChainSource::Missing`], with an empty chain.
pub fn select(
    key: SigningKey,
    table: &CertTable,
    cache: Option<&Path>,
) -> Result<(CertChainDer, ChainSource), FirmwareError> {
    let (leaf_guid, leaf_names, name) = match key {
        SigningKey::Vcek => (cert_table::VCEK, ["vcek.pem", "vcek.der"], "VCEK"),
        SigningKey::Vlek => (cert_table::VLEK, ["vlek.pem", "vlek.der"], "VLEK"),
        SigningKey::None => return Err(FirmwareError::UnsignedReport),
    };
    if let Some(leaf) = table.get(leaf_guid) {
        let chain = CertChainDer {
            ark: table
                .get(cert_table::ARK)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            intermediate: table
                .get(cert_table::ASK)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            leaf: leaf.to_vec(),
        };
        check_parses(&chain, "the host's certificate table")?;
        return Ok((chain, ChainSource::HostTable));
    }
    let missing = |detail: String| Ok((CertChainDer::default(), ChainSource::Missing(detail)));
    let Some(dir) = cache else {
        return missing(if table.is_empty() {
            format!("no {name}: the host attached no certificate table and no `vcek_cache` is configured")
        } else {
            format!(
                "no {name}: the host's certificate table has only {} and no `vcek_cache` is configured",
                table
                    .entries
                    .iter()
                    .map(|e| cert_table::describe(e.guid))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    };
    let Some(leaf) = one_of(dir, &leaf_names)? else {
        return missing(format!(
            "no {name}: the host's certificate table has none and {} has neither {} nor {}",
            dir.display(),
            leaf_names[0],
            leaf_names[1]
        ));
    };
    let intermediate_names: &[&str] = match key {
        SigningKey::Vlek => &["asvk.pem", "asvk.der", "ask.pem", "ask.der"],
        _ => &["ask.pem", "ask.der"],
    };
    let chain = CertChainDer {
        ark: one_of(dir, &["ark.pem", "ark.der"])?.unwrap_or_default(),
        intermediate: one_of(dir, intermediate_names)?.unwrap_or_default(),
        leaf,
    };
    check_parses(&chain, "the VCEK cache")?;
    Ok((chain, ChainSource::Cache(dir.to_path_buf())))
}

/// Every non-empty certificate of `chain` must parse as an AMD certificate.
fn check_parses(chain: &CertChainDer, source: &'static str) -> Result<(), FirmwareError> {
    for (what, der) in [
        ("ARK", &chain.ark),
        ("ASK/ASVK", &chain.intermediate),
        ("leaf", &chain.leaf),
    ] {
        if !der.is_empty() {
            AmdCertificate::from_der(der).map_err(|e| FirmwareError::BadCertificate {
                what,
                source_name: source,
                detail: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// The DER of the one certificate among `names` in `dir` (PEM or DER files). Several present must hold
/// the same certificate; which one would be sent would otherwise be a guess.
fn one_of(dir: &Path, names: &[&str]) -> Result<Option<Vec<u8>>, FirmwareError> {
    let mut found: Option<(PathBuf, Vec<u8>)> = None;
    for path in names.iter().map(|n| dir.join(n)) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(FirmwareError::CertCache {
                    path,
                    detail: source.to_string(),
                })
            }
        };
        let cert =
            AmdCertificate::from_pem_or_der(&bytes).map_err(|e| FirmwareError::CertCache {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        let der = cert.der().to_vec();
        match &found {
            None => found = Some((path, der)),
            Some((first, d)) if *d != der => {
                return Err(FirmwareError::CertCache {
                    path,
                    detail: format!(
                        "differs from {}: keep exactly one certificate per role",
                        first.display()
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, d)| d))
}
