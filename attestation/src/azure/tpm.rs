//! TPM 2.0 quotes: TPMS_ATTEST (what the AK signs) and TPMT_SIGNATURE, parsed strictly (big-endian, TPM 2.0
//! Library Part 2), and the checks a verifier makes on them.
//!
//! ```text
//! TPMS_ATTEST  magic u32 = 0xFF544347 (TPM_GENERATED_VALUE) | type u16 = 0x8018 (TPM_ST_ATTEST_QUOTE)
//!              qualifiedSigner TPM2B_NAME | extraData TPM2B_DATA (the nonce, ≤ 64 bytes)
//!              clockInfo { clock u64, resetCount u32, restartCount u32, safe u8 } | firmwareVersion u64
//!              TPMS_QUOTE_INFO { pcrSelect TPML_PCR_SELECTION, pcrDigest TPM2B_DIGEST }
//! TPML_PCR_SELECTION  count u32, then { hash u16, sizeofSelect u8, pcrSelect[sizeofSelect] } per bank;
//!                     bit i of byte j selects PCR 8j+i
//! TPMT_SIGNATURE      sigAlg u16 (RSASSA 0x0014 | RSAPSS 0x0016), hash u16 (SHA-256 0x000B), TPM2B sig
//! ```
//!
//! pcrDigest is the hash (SHA-256 here) of the selected PCR values concatenated in selection order; the
//! verifier recomputes it from the values the evidence carries, so a value changed in transit shows.

use ring::signature::{
    RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};

use super::hcl::RsaPublicKey;
use super::AzureError;

/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_RSASSA.
pub const ALG_RSASSA: u16 = 0x0014;
/// TPM_ALG_RSAPSS.
pub const ALG_RSAPSS: u16 = 0x0016;
/// PCRs of a bank.
pub const PCR_COUNT: usize = 24;
/// Longest TPMS_ATTEST accepted.
pub const MAX_ATTEST_LEN: usize = 1024;

/// A parsed TPMS_ATTEST of type quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// extraData (the qualifying data: the verifier's nonce or report data).
    pub extra_data: Vec<u8>,
    /// The SHA-256 bank's selected PCR indices, ascending.
    pub selected: Vec<u8>,
    /// pcrDigest.
    pub pcr_digest: Vec<u8>,
    /// clockInfo.resetCount (for display).
    pub reset_count: u32,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AzureError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| {
                AzureError::new(
                    "quote",
                    format!(
                        "TPMS_ATTEST ends inside {what} (at byte {}, {} bytes)",
                        self.at,
                        self.b.len()
                    ),
                )
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, AzureError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, AzureError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, AzureError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn tpm2b(&mut self, max: usize, what: &str) -> Result<&'a [u8], AzureError> {
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(AzureError::new(
                "quote",
                format!("{what} is {n} bytes; at most {max}"),
            ));
        }
        self.take(n, what)
    }
}

impl QuoteInfo {
    /// Parses TPMS_ATTEST: magic, type quote, bounded sizes, exactly one PCR bank (SHA-256), no trailing
    /// bytes.
    pub fn parse(message: &[u8]) -> Result<Self, AzureError> {
        let bad = |detail: String| AzureError::new("quote", detail);
        if message.len() > MAX_ATTEST_LEN {
            return Err(bad(format!(
                "TPMS_ATTEST is {} bytes; at most {MAX_ATTEST_LEN}",
                message.len()
            )));
        }
        let mut r = Reader { b: message, at: 0 };
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return Err(bad(format!(
                "magic {magic:#010x}, expected {TPM_GENERATED:#010x} (TPM_GENERATED_VALUE)"
            )));
        }
        let kind = r.u16("type")?;
        if kind != ST_ATTEST_QUOTE {
            return Err(bad(format!(
                "type {kind:#06x}, expected {ST_ATTEST_QUOTE:#06x} (a quote)"
            )));
        }
        r.tpm2b(2 + 64, "qualifiedSigner")?;
        let extra_data = r.tpm2b(64, "extraData")?.to_vec();
        r.take(8, "clock")?;
        let reset_count = r.u32("resetCount")?;
        r.take(4 + 1, "restartCount and safe")?;
        r.take(8, "firmwareVersion")?;
        let banks = r.u32("the PCR selection count")?;
        if banks != 1 {
            return Err(bad(format!(
                "{banks} PCR banks selected; expected exactly one (SHA-256)"
            )));
        }
        let hash = r.u16("the PCR bank's hash")?;
        if hash != ALG_SHA256 {
            return Err(bad(format!(
                "the PCR bank is algorithm {hash:#06x}, expected SHA-256 ({ALG_SHA256:#06x})"
            )));
        }
        let size = usize::from(r.u8("sizeofSelect")?);
        if size > PCR_COUNT / 8 {
            return Err(bad(format!(
                "sizeofSelect {size}; a bank has {PCR_COUNT} PCRs"
            )));
        }
        let bitmap = r.take(size, "pcrSelect")?;
        let selected = (0..size * 8)
            .filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
            .map(|i| i as u8)
            .collect();
        let pcr_digest = r.tpm2b(64, "pcrDigest")?.to_vec();
        if r.at != message.len() {
            return Err(bad(format!(
                "{} bytes after TPMS_ATTEST",
                message.len() - r.at
            )));
        }
        Ok(QuoteInfo {
            extra_data,
            selected,
            pcr_digest,
            reset_count,
        })
    }

    /// Checks the PCR values against pcrDigest: one 32-byte value per selected PCR, in selection order.
    pub fn check_pcrs(&self, pcrs: &[[u8; 32]]) -> Result<(), AzureError> {
        if pcrs.len() != self.selected.len() {
            return Err(AzureError::new(
                "pcr_digest",
                format!(
                    "the quote selects {} PCRs; the evidence carries {} values",
                    self.selected.len(),
                    pcrs.len()
                ),
            ));
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for v in pcrs {
            ctx.update(v);
        }
        let got = ctx.finish();
        if !crate::ct_eq(got.as_ref(), &self.pcr_digest) {
            return Err(AzureError::new(
                "pcr_digest",
                format!(
                    "SHA-256 of the PCR values is {}, the quote's pcrDigest is {}",
                    hex::encode(got.as_ref()),
                    hex::encode(&self.pcr_digest)
                ),
            ));
        }
        Ok(())
    }
}

/// Verifies the quote's signature with the AK: `signature` is either the bare RSA signature (Trustee's
/// evidence; RSASSA-PKCS1-v1_5 with SHA-256, the Azure AK's scheme) or a TPMT_SIGNATURE (Cloister's evidence:
/// RSASSA or RSA-PSS, SHA-256), told apart by length (a bare signature is exactly the modulus length).
pub fn verify_signature(
    ak: &RsaPublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), AzureError> {
    let bad = |detail: String| AzureError::new("quote_signature", detail);
    let (alg, sig) = if signature.len() == ak.n.len() {
        (ALG_RSASSA, signature)
    } else {
        let mut r = Reader {
            b: signature,
            at: 0,
        };
        let alg = r.u16("sigAlg").map_err(|e| bad(e.detail))?;
        let hash = r.u16("hash").map_err(|e| bad(e.detail))?;
        let sig = r.tpm2b(512, "signature").map_err(|e| bad(e.detail))?;
        if r.at != signature.len() {
            return Err(bad("bytes after TPMT_SIGNATURE".into()));
        }
        if hash != ALG_SHA256 {
            return Err(bad(format!("hash {hash:#06x}, expected SHA-256")));
        }
        (alg, sig)
    };
    let algorithm = match alg {
        ALG_RSASSA => &RSA_PKCS1_2048_8192_SHA256,
        ALG_RSAPSS => &RSA_PSS_2048_8192_SHA256,
        other => {
            return Err(bad(format!(
                "sigAlg {other:#06x}, expected RSASSA or RSAPSS"
            )))
        }
    };
    RsaPublicKeyComponents { n: &ak.n, e: &ak.e }
        .verify(algorithm, message, sig)
        .map_err(|_| {
            bad(format!(
                "the quote's signature does not verify with HCLAkPub (SHA-256 {})",
                hex::encode(ak.sha256())
            ))
        })
}
