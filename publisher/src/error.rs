//! The crate's one error type.

use std::path::PathBuf;

/// Why signing or a release-log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A private key is not one this tool signs with.
    #[error("signing key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why (never key bytes).
        reason: String,
    },
    /// The model cannot be signed as it is laid out.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The release log on disk is inconsistent, or refuses the operation.
    #[error("release log {}: {reason}", dir.display())]
    Log {
        /// The log directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The verifier refused what was produced or presented.
    #[error(transparent)]
    Provenance(#[from] cloister_provenance::Error),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a PEM `PRIVATE KEY` (PKCS#8) file: its DER, wiped when dropped. The text read is wiped too. Errors
/// name the file and never hold key bytes.
pub(crate) fn read_pkcs8_pem(
    path: &std::path::Path,
    hint: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
    let bad = |reason: String| Error::Key {
        path: path.to_owned(),
        reason,
    };
    let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    let der = zeroize::Zeroizing::new(der);
    if label != "PRIVATE KEY" {
        return Err(bad(format!(
            "PEM label is {label:?}, expected \"PRIVATE KEY\"{hint}"
        )));
    }
    Ok(der)
}
