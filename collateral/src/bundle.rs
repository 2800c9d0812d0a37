//! The offline bundle: every piece of collateral a set of reports needs, in one file, for verifiers that
//! cannot reach a KDS (`cloister fetch bundle` writes it, `--collateral FILE` reads it).
//!
//! ```json
//! { "format": "cloister-collateral-v1",
//!   "entries": { "/vcek/v1/Genoa/cert_chain": "<base64 of the KDS body>",
//!                "/vcek/v1/Genoa/<hwid>?blSPL=10&teeSPL=00&snpSPL=25&ucodeSPL=84": "<base64 DER>",
//!                "/vcek/v1/Genoa/crl": "<base64 DER>" } }
//! ```
//!
//! Keys are KDS paths exactly as the KDS serves them (`cloister_collateral::kds::Item::path`); values are the
//! KDS bodies, base64 (standard alphabet, padded). A bundle is as untrusted as the network it replaces: the
//! client verifies every entry before use, exactly as it verifies a KDS answer.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;

use crate::kds::Item;
use crate::Error;

/// The `format` value of this version.
pub const FORMAT: &str = "cloister-collateral-v1";

/// Largest bundle read (a few KB per report; this allows thousands).
pub const MAX_BUNDLE_BYTES: u64 = 64 * 1024 * 1024;

/// A bundle in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    entries: BTreeMap<String, Vec<u8>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    entries: BTreeMap<String, String>,
}

impl Bundle {
    /// Reads and parses a bundle: the format must be this one, every key a KDS path, every value base64.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bad = |detail: String| Error::Bundle {
            path: path.to_path_buf(),
            detail,
        };
        // A regular file of at most MAX_BUNDLE_BYTES (Error::TooLarge, Error::NotARegularFile otherwise).
        let text = crate::files::read_limited(path, MAX_BUNDLE_BYTES)?;
        Self::parse(&text).map_err(bad)
    }

    /// Parses bundle bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.format != FORMAT {
            return Err(format!("format is {:?}, expected {FORMAT:?}", file.format));
        }
        let mut entries = BTreeMap::new();
        for (key, value) in file.entries {
            if Item::from_path(&key).is_none() {
                return Err(format!("entry {key:?} is not a KDS path"));
            }
            let body = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .map_err(|e| format!("entry {key:?}: not base64: {e}"))?;
            entries.insert(key, body);
        }
        Ok(Bundle { entries })
    }

    /// The body stored for a KDS path.
    pub fn get(&self, kds_path: &str) -> Option<&[u8]> {
        self.entries.get(kds_path).map(Vec::as_slice)
    }

    /// Adds (or replaces) the body of `item`.
    pub fn insert(&mut self, item: &Item, body: Vec<u8>) {
        self.entries.insert(item.path(), body);
    }

    /// The KDS paths held, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The bundle as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let file = File {
            format: FORMAT.to_owned(),
            entries: self
                .entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v),
                    )
                })
                .collect(),
        };
        // A map of strings always serializes.
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Writes the bundle to `path` (atomically).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        crate::store::write_atomic(path, &self.to_json())
    }
}
