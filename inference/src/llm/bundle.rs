//! The LLM bundle: the files of one LLM (weights, tokenizer, chat template, generation config) in one byte
//! string, which is what `cloister seal` seals. One sealed blob, one digest: a client's model pin covers the
//! tokenizer and the template as well as the weights (a swapped template can change every answer).
//!
//! Layout (all integers little-endian; every length checked against what is left; nothing may follow):
//!
//! | offset | size | field                                                         |
//! |--------|------|---------------------------------------------------------------|
//! | 0      | 8    | magic `CLLMBND1`                                              |
//! | 8      | 4    | entry count, exactly 4                                        |
//! | 12     | …    | entries, in the order of [`ENTRY_NAMES`]                       |
//!
//! Each entry: name length (u16), name (UTF-8), data length (u64), data. The names and their order are fixed,
//! so that a set of files has exactly one bundle (and one digest).

use std::fmt;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::Error;

/// The first eight bytes of a bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"CLLMBND1";
/// The entries, in bundle order.
pub const ENTRY_NAMES: [&str; 4] = [
    "model.onnx",
    "tokenizer.json",
    "chat_template.jinja",
    "generation.json",
];
const MAGIC_LEN: usize = BUNDLE_MAGIC.len();
const COUNT_OFFSET: usize = MAGIC_LEN;
const ENTRIES_OFFSET: usize = COUNT_OFFSET + 4;
const _: () = assert!(ENTRIES_OFFSET == 12);

/// What a bundle's `generation.json` must say (other fields are the export's notes and are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationConfig {
    /// The model's name, as `/v1/models` lists it.
    pub model: String,
    /// The token that ends an assistant turn.
    pub eos_token: String,
    /// Positions the model was trained on.
    pub context_length: usize,
}

/// A parsed bundle, borrowing the plaintext (whose owner wipes it: the enclave's `Plaintext`, or the
/// `Zeroizing` buffer [`LlmBundle::build`] returns). Never printed.
pub struct LlmBundle<'a> {
    bytes: &'a [u8],
    /// Byte ranges of the entries, in [`ENTRY_NAMES`] order.
    ranges: [(usize, usize); 4],
    config: GenerationConfig,
}

impl fmt::Debug for LlmBundle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmBundle")
            .field("bytes", &self.bytes.len())
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl<'a> LlmBundle<'a> {
    /// Writes a bundle from the four files (what `cloister seal --llm` does before sealing).
    pub fn build(
        model_onnx: &[u8],
        tokenizer_json: &[u8],
        chat_template: &[u8],
        generation_json: &[u8],
    ) -> Zeroizing<Vec<u8>> {
        let files = [model_onnx, tokenizer_json, chat_template, generation_json];
        let total: usize = files.iter().map(|f| f.len() + 32).sum::<usize>() + ENTRIES_OFFSET;
        let mut out = Zeroizing::new(Vec::with_capacity(total));
        out.extend_from_slice(&BUNDLE_MAGIC);
        out.extend_from_slice(&4u32.to_le_bytes());
        for (name, data) in ENTRY_NAMES.iter().zip(files) {
            // Names are the four constants above: far below u16::MAX.
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a bundle (model-owner input: every length checked, the names and order fixed, nothing after
    /// the last entry), and `generation.json`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let bad = |what: String| Error::Bundle(what);
        if bytes.get(..MAGIC_LEN) != Some(&BUNDLE_MAGIC[..]) {
            return Err(bad(
                "it does not start with CLLMBND1 (not an LLM bundle)".into()
            ));
        }
        let count =
            read_u32(bytes, COUNT_OFFSET).ok_or_else(|| bad("truncated entry count".into()))?;
        if count as usize != ENTRY_NAMES.len() {
            return Err(bad(format!(
                "{count} entries, expected {}",
                ENTRY_NAMES.len()
            )));
        }
        let mut at = ENTRIES_OFFSET;
        let mut ranges = [(0, 0); 4];
        for (ix, want) in ENTRY_NAMES.iter().enumerate() {
            let name_len = read_u16(bytes, at)
                .ok_or_else(|| bad(format!("entry {ix}: truncated name length")))?;
            at += 2;
            let name = bytes
                .get(at..at + usize::from(name_len))
                .ok_or_else(|| bad(format!("entry {ix}: truncated name")))?;
            if name != want.as_bytes() {
                return Err(bad(format!(
                    "entry {ix} is `{}`, expected `{want}`",
                    String::from_utf8_lossy(&name[..name.len().min(64)])
                )));
            }
            at += usize::from(name_len);
            let len =
                read_u64(bytes, at).ok_or_else(|| bad(format!("`{want}`: truncated length")))?;
            at += 8;
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| at.checked_add(len))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| {
                    bad(format!(
                        "`{want}` claims {len} bytes, {} are left",
                        bytes.len() - at
                    ))
                })?;
            ranges[ix] = (at, end);
            at = end;
        }
        if at != bytes.len() {
            return Err(bad(format!(
                "{} bytes after the last entry",
                bytes.len() - at
            )));
        }
        let (s, e) = ranges[3];
        let config: GenerationConfig = serde_json::from_slice(&bytes[s..e])
            .map_err(|e| bad(format!("generation.json: {e}")))?;
        let (s, e) = ranges[2];
        std::str::from_utf8(&bytes[s..e])
            .map_err(|_| bad("chat_template.jinja is not UTF-8".into()))?;
        Ok(LlmBundle {
            bytes,
            ranges,
            config,
        })
    }

    fn entry(&self, ix: usize) -> &'a [u8] {
        let (s, e) = self.ranges[ix];
        &self.bytes[s..e]
    }

    /// The ONNX decoder.
    pub fn model_onnx(&self) -> &'a [u8] {
        self.entry(0)
    }

    /// `tokenizer.json`.
    pub fn tokenizer_json(&self) -> &'a [u8] {
        self.entry(1)
    }

    /// The chat template (checked UTF-8 at parse).
    pub fn chat_template(&self) -> &'a str {
        std::str::from_utf8(self.entry(2)).unwrap_or_default()
    }

    /// `generation.json`, as sealed.
    pub fn generation_json(&self) -> &'a [u8] {
        self.entry(3)
    }

    /// `generation.json`, parsed.
    pub fn config(&self) -> &GenerationConfig {
        &self.config
    }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GEN: &[u8] = br#"{"model":"m","eos_token":"<e>","context_length":64,"extra":1}"#;

    #[test]
    fn a_bundle_round_trips() {
        let b = LlmBundle::build(b"onnx", b"{}", b"tmpl", GEN);
        let p = LlmBundle::parse(&b).unwrap();
        assert_eq!(p.model_onnx(), b"onnx");
        assert_eq!(p.tokenizer_json(), b"{}");
        assert_eq!(p.chat_template(), "tmpl");
        assert_eq!(p.config().context_length, 64);
        assert!(!format!("{p:?}").contains("onnx\""));
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_are_refused() {
        let b = LlmBundle::build(b"onnx", b"{}", b"tmpl", GEN);
        for len in 0..b.len() {
            assert!(
                LlmBundle::parse(&b[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        let mut longer = b.to_vec();
        longer.push(0);
        let err = LlmBundle::parse(&longer).unwrap_err();
        assert!(
            err.to_string().contains("1 bytes after the last entry"),
            "{err}"
        );
    }

    #[test]
    fn names_order_lengths_and_config_are_checked() {
        let mut b = LlmBundle::build(b"onnx", b"{}", b"tmpl", GEN).to_vec();
        b[14] = b'M';
        let err = LlmBundle::parse(&b).unwrap_err();
        assert!(err.to_string().contains("entry 0 is `Model.onnx`"), "{err}");

        let mut b = LlmBundle::build(b"onnx", b"{}", b"tmpl", GEN).to_vec();
        b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = LlmBundle::parse(&b).unwrap_err();
        assert!(err.to_string().contains("`model.onnx` claims"), "{err}");

        let b = LlmBundle::build(b"onnx", b"{}", b"tmpl", br#"{"model":"m"}"#);
        let err = LlmBundle::parse(&b).unwrap_err();
        assert!(err.to_string().contains("generation.json"), "{err}");

        let b = LlmBundle::build(b"onnx", b"{}", &[0xff, 0xfe], GEN);
        assert!(LlmBundle::parse(&b).is_err());
    }
}
