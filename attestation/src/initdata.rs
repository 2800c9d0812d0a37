//! Confidential Containers initdata: the per-deployment document a Kata pod VM receives through the pod
//! annotation `io.katacontainers.config.hypervisor.cc_init_data`, and the HOST_DATA it yields.
//!
//! ```toml
//! version = "0.1.0"
//! algorithm = "sha384"          # sha256 | sha384 | sha512
//!
//! [data]
//! "cloister-enclave.toml" = '''...the enclave's configuration...'''
//! "aa.toml" = '''...'''          # optional, for the attestation agent, etc.
//! ```
//!
//! The runtime digests the document's bytes exactly as given (no canonical form: one changed byte, even
//! whitespace, is another document) with its `algorithm`, and fits the digest to SEV-SNP's 32-byte
//! HOST_DATA: a longer digest is cut to its first 32 bytes, a shorter one padded with zeros
//! (docs/kubernetes.md cites Kata's and Trustee's sources for the rule). HOST_DATA is chosen by whoever
//! launches the VM, so it proves nothing alone; it is what lets a verifier who pins it (beside the launch
//! measurement) know which configuration the guest was given, and it lets the guest check that the document
//! it reads is the one the launch bound.
//!
//! Pure: no I/O. The gzip + base64 annotation encoding lives in the client, which writes it.

use std::collections::BTreeMap;

use ring::digest::{digest, SHA256, SHA384, SHA512};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The initdata format version this module reads and writes.
pub const INITDATA_VERSION: &str = "0.1.0";

/// The key of `[data]` that holds Cloister's enclave configuration.
pub const ENCLAVE_CONFIG_KEY: &str = "cloister-enclave.toml";

/// The pod annotation whose value is base64(gzip(document)).
pub const ANNOTATION: &str = "io.katacontainers.config.hypervisor.cc_init_data";

/// Largest initdata document accepted (Kata's agent bounds it similarly; a configuration is a few KiB).
pub const MAX_INITDATA_LEN: usize = 1024 * 1024;

/// The digest algorithm named by the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitDataAlgorithm {
    /// SHA-256 (32 bytes: HOST_DATA as is).
    Sha256,
    /// SHA-384 (48 bytes: the first 32 go into HOST_DATA).
    Sha384,
    /// SHA-512 (64 bytes: the first 32 go into HOST_DATA).
    Sha512,
}

impl InitDataAlgorithm {
    /// The name used in the document.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Digest of `bytes` with this algorithm.
    pub fn digest(self, bytes: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha256 => &SHA256,
            Self::Sha384 => &SHA384,
            Self::Sha512 => &SHA512,
        };
        digest(alg, bytes).as_ref().to_vec()
    }
}

impl std::str::FromStr for InitDataAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            other => Err(Error::InitData(format!(
                "algorithm {other:?} is not one of sha256, sha384, sha512"
            ))),
        }
    }
}

/// A parsed initdata document, with the exact bytes it was read from.
#[derive(Clone, Debug)]
pub struct InitData {
    algorithm: InitDataAlgorithm,
    data: BTreeMap<String, String>,
    bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    version: String,
    algorithm: InitDataAlgorithm,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

impl InitData {
    /// Builds a document holding `entries` (`[data]` key → file contents), serialised once: its bytes are
    /// what gets digested and what the annotation carries.
    pub fn new(
        algorithm: InitDataAlgorithm,
        entries: BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let doc = Document {
            version: INITDATA_VERSION.to_owned(),
            algorithm,
            data: entries,
        };
        let text = toml::to_string(&doc)
            .map_err(|e| Error::InitData(format!("cannot serialise the document: {e}")))?;
        Self::parse(text.as_bytes())
    }

    /// Parses a document strictly: UTF-8 TOML, `version = "0.1.0"`, a known `algorithm`, `[data]` of strings,
    /// nothing else, at most [`MAX_INITDATA_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_INITDATA_LEN {
            return Err(Error::InitData(format!(
                "{} bytes, more than the {MAX_INITDATA_LEN} accepted",
                bytes.len()
            )));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|e| Error::InitData(format!("not UTF-8: {e}")))?;
        let doc: Document = toml::from_str(text)
            .map_err(|e| Error::InitData(format!("not an initdata document: {e}")))?;
        if doc.version != INITDATA_VERSION {
            return Err(Error::InitData(format!(
                "version {:?}, expected {INITDATA_VERSION:?}",
                doc.version
            )));
        }
        Ok(Self {
            algorithm: doc.algorithm,
            data: doc.data,
            bytes: bytes.to_vec(),
        })
    }

    /// The document's bytes, exactly as read or written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest algorithm the document names.
    pub fn algorithm(&self) -> InitDataAlgorithm {
        self.algorithm
    }

    /// The `[data]` entry `key`.
    pub fn entry(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The `[data]` keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// The digest of the document's bytes with its algorithm.
    pub fn digest(&self) -> Vec<u8> {
        self.algorithm.digest(&self.bytes)
    }

    /// The SEV-SNP HOST_DATA a runtime sets for this document: [`Self::digest`] fitted to 32 bytes.
    pub fn snp_host_data(&self) -> [u8; 32] {
        fit_host_data(&self.digest())
    }
}

/// Fits a digest to SEV-SNP's 32-byte HOST_DATA as Kata does: the first 32 bytes of a longer digest, a
/// shorter one padded with zeros at the end.
pub fn fit_host_data(digest: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = digest.len().min(32);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entries() -> BTreeMap<String, String> {
        BTreeMap::from([(
            ENCLAVE_CONFIG_KEY.to_owned(),
            "firmware = \"configfs-tsm\"\n# a comment\n".to_owned(),
        )])
    }

    #[test]
    fn written_documents_parse_back_with_their_entries() {
        for alg in [
            InitDataAlgorithm::Sha256,
            InitDataAlgorithm::Sha384,
            InitDataAlgorithm::Sha512,
        ] {
            let doc = InitData::new(alg, entries()).unwrap();
            let again = InitData::parse(doc.as_bytes()).unwrap();
            assert_eq!(again.algorithm(), alg);
            assert_eq!(
                again.entry(ENCLAVE_CONFIG_KEY),
                entries().get(ENCLAVE_CONFIG_KEY).map(String::as_str)
            );
            assert_eq!(again.digest(), doc.digest());
        }
    }

    #[test]
    fn host_data_is_the_digest_of_the_bytes_fitted_to_32() {
        let doc = InitData::new(InitDataAlgorithm::Sha384, entries()).unwrap();
        let full = digest(&SHA384, doc.as_bytes());
        assert_eq!(doc.snp_host_data()[..], full.as_ref()[..32]);
        let doc = InitData::new(InitDataAlgorithm::Sha256, entries()).unwrap();
        assert_eq!(
            doc.snp_host_data()[..],
            digest(&SHA256, doc.as_bytes()).as_ref()[..]
        );
        assert_eq!(fit_host_data(&[7; 20])[..20], [7; 20]);
        assert_eq!(fit_host_data(&[7; 20])[20..], [0; 12]);
    }

    #[test]
    fn bytes_not_meaning_are_digested() {
        let doc = InitData::new(InitDataAlgorithm::Sha384, entries()).unwrap();
        let mut spaced = doc.as_bytes().to_vec();
        spaced.push(b'\n');
        let other = InitData::parse(&spaced).unwrap();
        assert_eq!(
            other.entry(ENCLAVE_CONFIG_KEY),
            doc.entry(ENCLAVE_CONFIG_KEY)
        );
        assert_ne!(other.snp_host_data(), doc.snp_host_data());
    }

    #[test]
    fn strict_parsing() {
        for (bad, why) in [
            ("version = \"0.2.0\"\nalgorithm = \"sha384\"\n", "version"),
            (
                "version = \"0.1.0\"\nalgorithm = \"md5\"\n",
                "unknown variant",
            ),
            (
                "version = \"0.1.0\"\nalgorithm = \"sha384\"\nextra = 1\n",
                "unknown field",
            ),
            (
                "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\nx = 1\n",
                "invalid type",
            ),
            ("algorithm = \"sha384\"\n", "version"),
        ] {
            let e = InitData::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(InitData::parse(&[0xff, 0xfe]).is_err());
        assert!(InitData::parse(&vec![b'#'; MAX_INITDATA_LEN + 1]).is_err());
    }
}
