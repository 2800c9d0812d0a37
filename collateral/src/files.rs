//! Loading certificate chains, CRLs and policies from files (the snpguest directory layout).

use std::path::{Path, PathBuf};

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::{CertChain, Policy};

use crate::Error;

/// Reads a whole file, mapping errors to [`Error::Read`].
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM or DER certificate.
pub fn read_certificate(path: &Path) -> Result<AmdCertificate, Error> {
    AmdCertificate::from_pem_or_der(&read(path)?).map_err(|source| Error::Certificate {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Reads a PEM or DER CRL.
pub fn read_crl(path: &Path) -> Result<AmdCrl, Error> {
    AmdCrl::from_pem_or_der(&read(path)?).map_err(|source| Error::Certificate {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Reads a TOML policy. Relative `simulated_root`, `crl` and `crls` paths are resolved against the policy
/// file's directory, so that a policy and its files can be moved together.
pub fn read_policy(path: &Path) -> Result<Policy, Error> {
    let text = String::from_utf8_lossy(&read(path)?).into_owned();
    let mut policy = Policy::from_toml(&text).map_err(|source| Error::Policy {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for file in [&mut policy.simulated_root, &mut policy.crl]
        .into_iter()
        .flatten()
        .chain(policy.crls.iter_mut().flatten())
    {
        if file.is_relative() {
            *file = base.join(&*file);
        }
    }
    Ok(policy)
}

/// The files a policy names, loaded: the simulated root to trust (optional) and the CRLs to apply.
pub fn read_policy_files(policy: &Policy) -> Result<(Option<AmdCertificate>, Vec<AmdCrl>), Error> {
    let simulated_root = policy
        .simulated_root
        .as_deref()
        .map(read_certificate)
        .transpose()?;
    let crls = policy
        .crl_paths()
        .map(|p| read_crl(p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((simulated_root, crls))
}

/// Loads the one certificate among `names` in `dir`. Several present is accepted only if they hold the
/// same certificate (a PEM and a DER copy); otherwise which one would be verified would be a guess.
fn one_of(dir: &Path, names: &[&str]) -> Result<Option<AmdCertificate>, Error> {
    let mut found: Option<(PathBuf, AmdCertificate)> = None;
    for path in names.iter().map(|n| dir.join(n)).filter(|p| p.exists()) {
        let cert = read_certificate(&path)?;
        match &found {
            None => found = Some((path, cert)),
            Some((first, c)) if c.der() != cert.der() => {
                return Err(Error::Layout {
                    dir: dir.to_path_buf(),
                    detail: format!(
                        "{} and {} are different certificates: keep exactly one",
                        first.display(),
                        path.display()
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, c)| c))
}

/// Loads a chain from a directory in the snpguest layout: `ark.pem`, `ask.pem` or `asvk.pem`, and
/// `vcek.pem|vcek.der` or `vlek.pem|vlek.der`. Absent ARK/ASK mean "use the embedded AMD ones".
pub fn read_cert_dir(dir: &Path) -> Result<CertChain, Error> {
    if !dir.is_dir() {
        return Err(Error::Read {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    Ok(CertChain {
        ark: one_of(dir, &["ark.pem", "ark.der"])?,
        intermediate: one_of(dir, &["ask.pem", "ask.der", "asvk.pem", "asvk.der"])?,
        leaf: one_of(dir, &["vcek.pem", "vcek.der", "vlek.pem", "vlek.der"])?,
    })
}
