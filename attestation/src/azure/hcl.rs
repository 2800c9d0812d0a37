//! The Azure HCL report: what the paravisor writes to vTPM NV index 0x01400001.
//!
//! ```text
//! offset  size  field                                   (little-endian u32s)
//! 0x000   4     signature  "HCLA"
//! 0x004   4     version    1 (legacy HCL) or 2 (OpenHCL): both accepted
//! 0x008   4     report_size
//! 0x00C   4     request_type (2 = AK certificate request)
//! 0x010   16    status, reserved
//! 0x020   1184  the SNP ATTESTATION_REPORT
//! 0x4C0   4     request data: data_size (= 20 [+ 4 for a v2 extension] + variable_data_size)
//! 0x4C4   4                   version
//! 0x4C8   4                   report_type (2 = SNP)
//! 0x4CC   4                   report_data_hash_type (1 = SHA-256)
//! 0x4D0   4                   variable_data_size
//! 0x4D4   n     variable data: the "runtime claims" JSON, hashed into REPORT_DATA[0..32]; then zero padding
//! ```
//!
//! The variable data starts at `0x4C0 + data_size − variable_data_size`, which is 0x4D4 for the version 1
//! request data the guest sees (OpenHCL's version 2 adds a 4-byte extension before it). Nothing is
//! re-serialised: the SHA-256 is over the raw bytes. Every offset and length is checked against the buffer.

use base64::Engine as _;
use serde::Deserialize;

use super::AzureError;
use crate::snp::report::REPORT_LEN;

/// "HCLA".
pub const SIGNATURE: [u8; 4] = *b"HCLA";
/// Offset of the SNP report.
pub const SNP_REPORT_OFFSET: usize = 0x20;
/// Offset of the request data (after the SNP report).
pub const REQUEST_DATA_OFFSET: usize = SNP_REPORT_OFFSET + REPORT_LEN;
/// Length of the request data's fixed fields.
pub const REQUEST_DATA_LEN: usize = 20;
/// The shortest HCL report: header, SNP report, request data.
pub const MIN_LEN: usize = REQUEST_DATA_OFFSET + REQUEST_DATA_LEN;
/// The longest accepted (OpenHCL's NV index is 2900 bytes).
pub const MAX_LEN: usize = 16 * 1024;
/// `report_type` of an SNP report.
pub const REPORT_TYPE_SNP: u32 = 2;
/// `report_data_hash_type` SHA-256.
pub const HASH_TYPE_SHA256: u32 = 1;
/// The longest `user-data` (the 64-byte NV index 0x01400002).
pub const MAX_USER_DATA: usize = 64;

const _: () = assert!(REQUEST_DATA_OFFSET == 0x4C0);
const _: () = assert!(MIN_LEN == 0x4D4);

/// A parsed HCL report, borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct HclReport<'a> {
    /// The header's version.
    pub version: u32,
    /// The SNP report (1184 bytes).
    pub snp_report: &'a [u8],
    /// The variable data (the runtime claims JSON), exactly the bytes REPORT_DATA hashes.
    pub var_data: &'a [u8],
}

fn u32_at(b: &[u8], offset: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[offset..offset + 4]);
    u32::from_le_bytes(w)
}

impl<'a> HclReport<'a> {
    /// Parses an HCL report (with any trailing zero padding of the NV index).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AzureError> {
        let bad = |detail: String| AzureError::new("hcl_report", detail);
        if bytes.len() < MIN_LEN || bytes.len() > MAX_LEN {
            return Err(bad(format!(
                "{} bytes; an HCL report is {MIN_LEN} to {MAX_LEN}",
                bytes.len()
            )));
        }
        if bytes[..4] != SIGNATURE {
            return Err(bad(format!(
                "signature is {}, expected \"HCLA\"",
                hex::encode(&bytes[..4])
            )));
        }
        let version = u32_at(bytes, 4);
        if !(1..=2).contains(&version) {
            return Err(bad(format!("version {version}, expected 1 or 2")));
        }
        let r = REQUEST_DATA_OFFSET;
        let (data_size, report_type, hash_type, var_size) = (
            u32_at(bytes, r) as usize,
            u32_at(bytes, r + 8),
            u32_at(bytes, r + 12),
            u32_at(bytes, r + 16) as usize,
        );
        if report_type != REPORT_TYPE_SNP {
            return Err(bad(format!(
                "report_type {report_type}, expected {REPORT_TYPE_SNP} (SNP)"
            )));
        }
        if hash_type != HASH_TYPE_SHA256 {
            return Err(bad(format!(
                "report_data_hash_type {hash_type}, expected {HASH_TYPE_SHA256} (SHA-256)"
            )));
        }
        let start = data_size
            .checked_sub(var_size)
            .filter(|head| *head >= REQUEST_DATA_LEN)
            .map(|head| r + head)
            .ok_or_else(|| {
                bad(format!(
                    "request data_size {data_size} does not hold its {REQUEST_DATA_LEN}-byte header and \
                     {var_size} bytes of variable data"
                ))
            })?;
        let var_data = start
            .checked_add(var_size)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                bad(format!(
                    "variable data ({var_size} bytes at {start:#x}) runs past the end ({} bytes)",
                    bytes.len()
                ))
            })?;
        Ok(HclReport {
            version,
            snp_report: &bytes[SNP_REPORT_OFFSET..REQUEST_DATA_OFFSET],
            var_data,
        })
    }

    /// SHA-256 of the variable data (what REPORT_DATA[0..32] must be).
    pub fn var_data_sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, self.var_data).as_ref());
        out
    }

    /// The runtime claims of the variable data.
    pub fn claims(&self) -> Result<RuntimeClaims, AzureError> {
        RuntimeClaims::parse(self.var_data)
    }
}

/// An RSA public key (big-endian modulus and exponent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaPublicKey {
    /// Modulus.
    pub n: Vec<u8>,
    /// Public exponent.
    pub e: Vec<u8>,
}

impl RsaPublicKey {
    /// SHA-256 over `n` then `e` (big-endian, as in the JWK): a fingerprint for messages and JSON.
    pub fn sha256(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.n);
        ctx.update(&self.e);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// The VM configuration the paravisor reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VmConfiguration {
    /// `secure-boot`.
    pub secure_boot: bool,
    /// `tpm-enabled`.
    pub tpm_enabled: bool,
    /// `console-enabled`.
    pub console_enabled: bool,
    /// `vmUniqueId`.
    pub vm_unique_id: String,
}

/// What the variable data says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeClaims {
    /// `HCLAkPub`: the vTPM's attestation key.
    pub ak: RsaPublicKey,
    /// `vm-configuration`.
    pub vm_configuration: VmConfiguration,
    /// `user-data`, decoded (the 64 bytes of NV index 0x01400002 when the report was made); `None` if absent.
    pub user_data: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct RawClaims {
    keys: Vec<RawJwk>,
    #[serde(rename = "vm-configuration")]
    vm_configuration: RawVmConfiguration,
    #[serde(rename = "user-data", default)]
    user_data: Option<String>,
}

#[derive(Deserialize)]
struct RawJwk {
    kid: String,
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct RawVmConfiguration {
    #[serde(rename = "secure-boot")]
    secure_boot: bool,
    #[serde(rename = "tpm-enabled")]
    tpm_enabled: bool,
    #[serde(rename = "console-enabled")]
    console_enabled: bool,
    #[serde(rename = "vmUniqueId")]
    vm_unique_id: String,
}

impl RuntimeClaims {
    /// Parses the runtime claims JSON. Unknown members are allowed (OpenHCL adds several); the ones read
    /// here are required. The AK must be an RSA key of 2048 to 4096 bits.
    pub fn parse(var_data: &[u8]) -> Result<Self, AzureError> {
        let ak_err =
            |detail: String| AzureError::new("hcl_ak", format!("HCLAkPub unusable: {detail}"));
        let raw: RawClaims = serde_json::from_slice(var_data).map_err(|e| {
            ak_err(format!(
                "the variable data is not the runtime claims JSON: {e}"
            ))
        })?;
        let mut aks = raw.keys.iter().filter(|k| k.kid == "HCLAkPub");
        let jwk = aks
            .next()
            .ok_or_else(|| ak_err("no key with kid \"HCLAkPub\"".into()))?;
        if aks.next().is_some() {
            return Err(ak_err("two keys with kid \"HCLAkPub\"".into()));
        }
        if jwk.kty != "RSA" {
            return Err(ak_err(format!("kty is {:?}, expected \"RSA\"", jwk.kty)));
        }
        let b64 = |name: &str, v: &Option<String>| -> Result<Vec<u8>, AzureError> {
            let text = v.as_deref().ok_or_else(|| ak_err(format!("no {name}")))?;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|e| ak_err(format!("{name} is not base64url: {e}")))?;
            // Big-endian unsigned: leading zeros carry nothing.
            let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
            Ok(bytes[first..].to_vec())
        };
        let n = b64("n", &jwk.n)?;
        let e = b64("e", &jwk.e)?;
        if !(256..=512).contains(&n.len()) || e.is_empty() || e.len() > 4 {
            return Err(ak_err(format!(
                "a {}-bit modulus with a {}-byte exponent (expected 2048 to 4096 bits)",
                n.len() * 8,
                e.len()
            )));
        }
        let user_data = raw
            .user_data
            .filter(|s| !s.is_empty())
            .map(|s| {
                hex::decode(s.to_ascii_lowercase())
                    .ok()
                    .filter(|d| d.len() <= MAX_USER_DATA)
                    .ok_or_else(|| {
                        AzureError::new(
                            "user_data",
                            format!("user-data is not hex of at most {MAX_USER_DATA} bytes"),
                        )
                    })
            })
            .transpose()?;
        let v = raw.vm_configuration;
        Ok(RuntimeClaims {
            ak: RsaPublicKey { n, e },
            vm_configuration: VmConfiguration {
                secure_boot: v.secure_boot,
                tpm_enabled: v.tpm_enabled,
                console_enabled: v.console_enabled,
                vm_unique_id: v.vm_unique_id,
            },
            user_data,
        })
    }
}
