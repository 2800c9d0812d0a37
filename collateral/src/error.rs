//! The one error of the collateral crate.

use std::path::PathBuf;

use crate::crl_version::CrlVersion;

/// Errors of the collateral crate: reading files, and fetching from a KDS. All are usage or I/O errors for
/// the caller (exit 2 in the CLI) except [`Error::Untrusted`] and [`Error::CrlRollback`], refusals of what a
/// source served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file could not be written (the cache, a bundle).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file (or, for a temporary file that could not be created, its directory).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path that must name a regular file names something else. Refused before reading: a FIFO nobody
    /// writes to would block the reader forever, and a device such as `/dev/zero` never ends.
    #[error("{path} is a {kind}, not a regular file: refused")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// A symlink inside the collateral cache, where none is followed: the cache directory may be shared with
    /// other users and tools, and a link planted there would make the reader read, or a writer write,
    /// wherever it points.
    #[error("{path} is a symlink inside the collateral cache, which follows none: refused")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A file larger than what it can hold allows (a certificate, a CRL, a policy, a bundle).
    #[error("{path} is {size} bytes, more than the {cap} bytes allowed: refused")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (for a file that grew while it was read: the bytes read, one more than `cap`).
        size: u64,
        /// The limit.
        cap: u64,
    },
    /// A CRL older than one already held for the same key tree and product: revocations cannot be rolled
    /// back by serving (or caching) an older genuine CRL. The held one is kept.
    #[error(
        "refused the CRL {what} served: it is {offered}, older than {held} already held, which is kept"
    )]
    CrlRollback {
        /// The URL or KDS path.
        what: String,
        /// The CRL held.
        held: CrlVersion,
        /// The CRL refused.
        offered: CrlVersion,
    },
    /// A certificate or CRL file could not be parsed.
    #[error("{path}: {source}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why (boxed: certificate errors carry names and values).
        source: Box<cloister_attestation::snp::certs::CertError>,
    },
    /// The certificate directory is ambiguous (e.g. both ask.pem and asvk.pem, or vcek.pem and vcek.der).
    #[error("{dir}: {detail}")]
    Layout {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The policy file is invalid.
    #[error("{path}: {source}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// Why (boxed: the verifier's error carries names and values).
        source: Box<cloister_attestation::Error>,
    },
    /// A KDS URL or a report that cannot be looked up.
    #[error("{0}")]
    Kds(String),
    /// The KDS has no such item (HTTP 404): not retried.
    #[error("{url}: not found (HTTP 404)")]
    NotFound {
        /// The URL.
        url: String,
    },
    /// The KDS answered with an error that retrying does not fix.
    #[error("{url}: HTTP {status}")]
    Http {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The retry budget ran out.
    #[error(
        "gave up on {url} after {attempts} attempt(s) in {seconds} s; last: {last}. AMD's KDS allows about one \
         VCEK per 10 s per address: retry later, share a cache (--cache), or use an offline bundle (--collateral)"
    )]
    GaveUp {
        /// The URL.
        url: String,
        /// Requests sent.
        attempts: u32,
        /// Time spent.
        seconds: u64,
        /// The last answer or failure.
        last: String,
    },
    /// What a source served did not verify against AMD's roots: refused, nothing kept.
    #[error("refused what {what} served: {reason}; nothing was cached")]
    Untrusted {
        /// The URL or KDS path.
        what: String,
        /// Why.
        reason: String,
    },
    /// Not in the cache or bundle, and no KDS to ask.
    #[error("{what} is not in the cache or the bundle, and no KDS URL is set (--kds-url)")]
    Offline {
        /// The KDS path.
        what: String,
    },
    /// An offline bundle is malformed.
    #[error("collateral bundle {path}: {detail}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl Error {
    /// Whether this is a refusal of served collateral (as opposed to a usage, I/O or network error).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Untrusted { .. } | Error::CrlRollback { .. })
    }
}

/// What a path that should be a regular file is instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A character device (`/dev/zero`, a terminal).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// Anything else that is not a regular file.
    Other,
}

impl FileKind {
    /// The kind of a file that is not a regular file (nor a symlink).
    pub(crate) fn of(file_type: std::fs::FileType) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt as _;
            if file_type.is_fifo() {
                return FileKind::Fifo;
            }
            if file_type.is_char_device() {
                return FileKind::CharDevice;
            }
            if file_type.is_block_device() {
                return FileKind::BlockDevice;
            }
            if file_type.is_socket() {
                return FileKind::Socket;
            }
        }
        if file_type.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "directory",
            FileKind::Fifo => "FIFO",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
            FileKind::Socket => "socket",
            FileKind::Other => "special file",
        })
    }
}
