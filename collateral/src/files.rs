//! Loading certificate chains, CRLs and policies from files (the snpguest directory layout), and the one
//! way this crate reads a file.
//!
//! Every read goes through one reader (`read_regular`, behind [`read`] and [`read_limited`]): the path must
//! name a regular file (a FIFO, a device, a directory or a socket is refused before a byte is read: a FIFO
//! nobody writes to blocks a reader forever, `/dev/zero` never ends), and at most a cap is read (a larger
//! file is refused, not truncated). Caps are per purpose: a certificate or CRL 1 MiB, a policy 1 MiB, a
//! cache entry what the KDS may send for it, a bundle 64 MiB, anything else 1 GiB.
//!
//! Symlinks: a file the user names (`--policy`, `--certs`, a CRL a policy names) may be one — an
//! `/etc/alternatives`-style link is ordinary, and the user chose the path — so the link is followed and
//! what it points to must be a regular file. Inside the collateral cache none is followed
//! ([`crate::store`]): that directory may be shared with other users and tools, and a link planted there
//! would redirect our reads and writes.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::{CertChain, Policy};

use crate::error::FileKind;
use crate::Error;

/// Largest certificate or CRL file read. AMD's CRLs are 1–2 KB, a PEM chain about 3 KB and a VCEK about
/// 1.3 KB; the KDS client accepts at most 1 MiB for a CRL. Anything larger is not one of them.
pub const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;

/// Largest policy file read: a policy is a few KB of TOML (measurements, TCB minimums, file names).
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Largest file [`read`] reads: it serves any file a user names (reports, evidence, receipts, inference
/// requests of up to 64 MiB, audit logs). Not a tight bound; it turns a path named by mistake (a disk image)
/// into an error instead of exhausting memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Whether a symlink as the last component of a path is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Symlinks {
    /// Followed: a path the user named.
    Follow,
    /// Refused ([`Error::Symlink`]): a path inside the shared cache.
    Refuse,
}

/// Reads a whole regular file of at most [`MAX_FILE_BYTES`], following symlinks (a FIFO, a device or a
/// directory is refused: [`Error::NotARegularFile`]; a larger file: [`Error::TooLarge`]).
pub fn read(path: &Path) -> Result<Vec<u8>, Error> {
    read_limited(path, MAX_FILE_BYTES)
}

/// Reads a whole regular file of at most `cap` bytes, following symlinks: [`read`] with another cap.
pub fn read_limited(path: &Path, cap: u64) -> Result<Vec<u8>, Error> {
    read_regular(path, cap, Symlinks::Follow)
}

/// The one file reader: `path` must be a regular file (after following a final symlink only with
/// [`Symlinks::Follow`]) of at most `cap` bytes. A missing file is [`Error::Read`] with the I/O error's
/// kind `NotFound`.
pub(crate) fn read_regular(path: &Path, cap: u64, symlinks: Symlinks) -> Result<Vec<u8>, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // Look before opening: opening a device can have effects of its own (a tape rewinds, a watchdog arms).
    let seen = match symlinks {
        Symlinks::Follow => std::fs::metadata(path),
        Symlinks::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(read_error)?;
    check_regular(path, &seen)?;
    let file = open_for_reading(path, symlinks)
        .map_err(|source| opening_failed(path, symlinks, source))?;
    // What was opened is what counts: the path may have been replaced since it was looked at.
    let opened = file.metadata().map_err(read_error)?;
    check_regular(path, &opened)?;
    let too_large = |size| Error::TooLarge {
        path: path.to_path_buf(),
        size,
        cap,
    };
    if opened.len() > cap {
        return Err(too_large(opened.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    // One byte more than the cap: a file that grew since its size was taken is refused, not truncated.
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > cap {
        return Err(too_large(read));
    }
    Ok(bytes)
}

fn check_regular(path: &Path, metadata: &std::fs::Metadata) -> Result<(), Error> {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        Ok(())
    } else if file_type.is_symlink() {
        Err(Error::Symlink {
            path: path.to_path_buf(),
        })
    } else {
        Err(Error::NotARegularFile {
            path: path.to_path_buf(),
            kind: FileKind::of(file_type),
        })
    }
}

/// Opens for reading. O_NONBLOCK: a FIFO swapped in after the look above opens at once (and is then
/// refused) instead of blocking until a writer comes; reads of a regular file ignore the flag. O_NOFOLLOW
/// with [`Symlinks::Refuse`]: a final symlink fails the open (ELOOP) instead of being followed.
#[cfg(unix)]
fn open_for_reading(path: &Path, symlinks: Symlinks) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut flags = libc::O_NONBLOCK;
    if symlinks == Symlinks::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

#[cfg(not(unix))]
fn open_for_reading(path: &Path, _symlinks: Symlinks) -> std::io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

fn opening_failed(path: &Path, symlinks: Symlinks, source: std::io::Error) -> Error {
    if symlinks == Symlinks::Refuse && is_symlink_loop(&source) {
        return Error::Symlink {
            path: path.to_path_buf(),
        };
    }
    Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether an open with O_NOFOLLOW failed because the last component is a symlink (Linux: ELOOP).
#[cfg(unix)]
fn is_symlink_loop(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_symlink_loop(_error: &std::io::Error) -> bool {
    false
}

/// Reads a PEM or DER certificate.
pub fn read_certificate(path: &Path) -> Result<AmdCertificate, Error> {
    AmdCertificate::from_pem_or_der(&read_limited(path, MAX_CERT_FILE_BYTES)?).map_err(|source| {
        Error::Certificate {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    })
}

/// Reads a PEM or DER CRL.
pub fn read_crl(path: &Path) -> Result<AmdCrl, Error> {
    AmdCrl::from_pem_or_der(&read_limited(path, MAX_CERT_FILE_BYTES)?).map_err(|source| {
        Error::Certificate {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    })
}

/// Reads a TOML policy. Relative `simulated_root`, `crl`, `crls` and `release_log.proofs` paths are resolved against the policy
/// file's directory, so that a policy and its files can be moved together.
pub fn read_policy(path: &Path) -> Result<Policy, Error> {
    let text = String::from_utf8_lossy(&read_limited(path, MAX_POLICY_BYTES)?).into_owned();
    let mut policy = Policy::from_toml(&text).map_err(|source| Error::Policy {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(log) = policy.release_log.as_mut() {
        if log.proofs.is_relative() {
            log.proofs = base.join(&log.proofs);
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_is_followed_for_user_files_and_refused_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"abc").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_regular(&link, 3, Symlinks::Follow).unwrap(), b"abc");
        let err = read_regular(&link, 3, Symlinks::Refuse).unwrap_err();
        assert!(
            matches!(&err, Error::Symlink { path } if *path == link),
            "{err}"
        );
        // A dangling link is refused as a link in the cache, and is a missing file elsewhere.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("absent"), &dangling).unwrap();
        assert!(matches!(
            read_regular(&dangling, 3, Symlinks::Refuse),
            Err(Error::Symlink { .. })
        ));
        assert!(matches!(
            read_regular(&dangling, 3, Symlinks::Follow),
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn the_cap_is_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(read_limited(&path, 4).unwrap(), b"abcd");
        let err = read_limited(&path, 3).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: 4,
                    cap: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            read_limited(&path, 0)
                .map_err(|e| e.to_string())
                .unwrap_err(),
            format!(
                "{} is 4 bytes, more than the 0 bytes allowed: refused",
                path.display()
            )
        );
    }
}
