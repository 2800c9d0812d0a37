//! The one error of the collateral crate.

use std::path::PathBuf;

/// Errors of the collateral crate: reading files, and fetching from a KDS. All are usage or I/O errors for
/// the caller (exit 2 in the CLI) except [`Error::Untrusted`], a refusal of what a source served.
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
        matches!(self, Error::Untrusted { .. })
    }
}
