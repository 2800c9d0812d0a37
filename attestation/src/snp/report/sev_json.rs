//! SEV-SNP evidence as Confidential Containers' attestation agent returns it (`GET /aa/evidence`): JSON in
//! which the report is the `sev` crate's serde form, field by field, every byte array a JSON array of
//! integers, and the certificates a list of `{"cert_type": "VCEK", "data": [...]}`.
//!
//! ```json
//! {"attestation_report": {"version": 3, "guest_svn": 0, "policy": 196608, "family_id": [0, ...], ...,
//!   "current_tcb": {"fmc": null, "bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}, ...,
//!   "signature": {"r": [...72], "s": [...72]}},
//!  "cert_chain": [{"cert_type": "VCEK", "data": [48, 130, ...]}] | null}
//! ```
//!
//! The signature covers the report's bytes, so the JSON is turned back into exactly those bytes (named
//! offsets of the parent module, reserved bytes zero) and then decoded by [`AttestationReport::from_bytes`]
//! like any other report: a JSON that does not round-trip to the signed bytes fails at signature
//! verification, never passes. Unknown keys are ignored (newer `sev` versions add fields; a new signed field
//! that this code dropped would break the signature, not weaken it). `launch_mit_vector` and
//! `current_mit_vector` may be absent (older `sev`), `null` or numbers.

use serde::Deserialize;

use super::{
    AttestationReport, ReportError, TcbVersion, OFF_AUTHOR_KEY_DIGEST, OFF_CHIP_ID,
    OFF_COMMITTED_BUILD, OFF_COMMITTED_TCB, OFF_CPUID_FAM_ID, OFF_CURRENT_BUILD,
    OFF_CURRENT_MIT_VECTOR, OFF_CURRENT_TCB, OFF_FAMILY_ID, OFF_GUEST_SVN, OFF_HOST_DATA,
    OFF_ID_KEY_DIGEST, OFF_IMAGE_ID, OFF_KEY_INFO, OFF_LAUNCH_MIT_VECTOR, OFF_LAUNCH_TCB,
    OFF_MEASUREMENT, OFF_PLATFORM_INFO, OFF_POLICY, OFF_REPORTED_TCB, OFF_REPORT_DATA,
    OFF_REPORT_ID, OFF_REPORT_ID_MA, OFF_SIGNATURE, OFF_SIGNATURE_ALGO, OFF_VERSION, OFF_VMPL,
    REPORT_LEN, SIGNATURE_COMPONENT_LEN,
};

/// Largest evidence document accepted (a report and three certificates as JSON integers are ~25 KB).
pub const MAX_SEV_JSON_LEN: usize = 256 * 1024;

/// One certificate of the evidence's `cert_chain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SevJsonCert {
    /// `cert_type`: "ARK", "ASK", "VCEK", "VLEK", "CRL", "Empty", or the GUID of an `{"OTHER": …}` entry.
    pub cert_type: String,
    /// The DER bytes.
    pub data: Vec<u8>,
}

/// The evidence, with the report as its 1184 signed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SevJsonEvidence {
    /// The report's bytes, as the AMD-SP signed them.
    pub report: Vec<u8>,
    /// The report decoded.
    pub decoded: AttestationReport,
    /// The certificates that came with it (none when `cert_chain` is `null`).
    pub certificates: Vec<SevJsonCert>,
}

#[derive(Deserialize)]
struct Document {
    attestation_report: Report,
    cert_chain: Option<Vec<Cert>>,
}

#[derive(Deserialize)]
struct Cert {
    cert_type: CertType,
    data: Vec<u8>,
}

#[derive(Deserialize)]
enum CertType {
    #[serde(rename = "OTHER")]
    Other(String),
    #[serde(untagged)]
    Named(String),
}

#[derive(Deserialize, Clone, Copy)]
struct Tcb {
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

#[derive(Deserialize)]
struct Version {
    major: u8,
    minor: u8,
    build: u8,
}

#[derive(Deserialize)]
struct Signature {
    r: Vec<u8>,
    s: Vec<u8>,
}

#[derive(Deserialize)]
struct Report {
    version: u32,
    guest_svn: u32,
    policy: u64,
    family_id: Vec<u8>,
    image_id: Vec<u8>,
    vmpl: u32,
    sig_algo: u32,
    current_tcb: Tcb,
    plat_info: u64,
    key_info: u32,
    report_data: Vec<u8>,
    measurement: Vec<u8>,
    host_data: Vec<u8>,
    id_key_digest: Vec<u8>,
    author_key_digest: Vec<u8>,
    report_id: Vec<u8>,
    report_id_ma: Vec<u8>,
    reported_tcb: Tcb,
    cpuid_fam_id: Option<u8>,
    cpuid_mod_id: Option<u8>,
    cpuid_step: Option<u8>,
    chip_id: Vec<u8>,
    committed_tcb: Tcb,
    current: Version,
    committed: Version,
    launch_tcb: Tcb,
    #[serde(default)]
    launch_mit_vector: Option<u64>,
    #[serde(default)]
    current_mit_vector: Option<u64>,
    signature: Signature,
}

fn bad(what: String) -> ReportError {
    ReportError::SevJson(what)
}

/// Parses the attestation agent's SNP evidence and rebuilds the report's signed bytes.
pub fn parse_sev_json(json: &[u8]) -> Result<SevJsonEvidence, ReportError> {
    if json.len() > MAX_SEV_JSON_LEN {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_SEV_JSON_LEN} accepted",
            json.len()
        )));
    }
    let doc: Document =
        serde_json::from_slice(json).map_err(|e| bad(format!("not SNP evidence JSON: {e}")))?;
    let b = doc.attestation_report.signed_bytes()?;
    let decoded = AttestationReport::from_bytes(&b)?;
    let certificates = doc
        .cert_chain
        .unwrap_or_default()
        .into_iter()
        .map(|c| SevJsonCert {
            cert_type: match c.cert_type {
                CertType::Other(guid) | CertType::Named(guid) => guid,
            },
            data: c.data,
        })
        .collect();
    Ok(SevJsonEvidence {
        report: b.to_vec(),
        decoded,
        certificates,
    })
}

/// The report's bytes being rebuilt: zero (the reserved bytes stay so) until the fields are put.
struct ReportBytes([u8; REPORT_LEN]);

impl ReportBytes {
    /// Writes `bytes` at `off`; a field of the wrong length is an error naming it, never truncated or padded.
    fn put(
        &mut self,
        off: usize,
        bytes: &[u8],
        field: &'static str,
        len: usize,
    ) -> Result<(), ReportError> {
        if bytes.len() != len {
            return Err(bad(format!(
                "{field}: {} bytes, expected {len}",
                bytes.len()
            )));
        }
        self.0[off..off + len].copy_from_slice(bytes);
        Ok(())
    }
}

impl Report {
    /// The report's bytes as the AMD-SP signed them: every field at its SNP ABI offset, in the order of the
    /// layout (the first field of the wrong length is the error).
    fn signed_bytes(&self) -> Result<[u8; REPORT_LEN], ReportError> {
        let mut b = ReportBytes([0u8; REPORT_LEN]);
        self.put_guest_fields(&mut b)?;
        self.put_tcbs(&mut b)?;
        self.put_platform_and_digests(&mut b)?;
        self.put_chip_and_firmware(&mut b)?;
        self.put_signature(&mut b)?;
        Ok(b.0)
    }

    /// VERSION through SIGNATURE_ALGO: what the guest owner set at launch.
    fn put_guest_fields(&self, b: &mut ReportBytes) -> Result<(), ReportError> {
        b.put(OFF_VERSION, &self.version.to_le_bytes(), "version", 4)?;
        b.put(OFF_GUEST_SVN, &self.guest_svn.to_le_bytes(), "guest_svn", 4)?;
        b.put(OFF_POLICY, &self.policy.to_le_bytes(), "policy", 8)?;
        b.put(OFF_FAMILY_ID, &self.family_id, "family_id", 16)?;
        b.put(OFF_IMAGE_ID, &self.image_id, "image_id", 16)?;
        b.put(OFF_VMPL, &self.vmpl.to_le_bytes(), "vmpl", 4)?;
        b.put(
            OFF_SIGNATURE_ALGO,
            &self.sig_algo.to_le_bytes(),
            "sig_algo",
            4,
        )
    }

    /// The four TCB versions, each encoded in the layout its `fmc` implies (Turin's with an FMC, or the
    /// older one).
    fn put_tcbs(&self, b: &mut ReportBytes) -> Result<(), ReportError> {
        for (off, tcb, field) in [
            (OFF_CURRENT_TCB, self.current_tcb, "current_tcb"),
            (OFF_REPORTED_TCB, self.reported_tcb, "reported_tcb"),
            (OFF_COMMITTED_TCB, self.committed_tcb, "committed_tcb"),
            (OFF_LAUNCH_TCB, self.launch_tcb, "launch_tcb"),
        ] {
            let raw = TcbVersion {
                fmc: tcb.fmc,
                bootloader: tcb.bootloader,
                tee: tcb.tee,
                snp: tcb.snp,
                microcode: tcb.microcode,
            }
            .encode();
            b.put(off, &raw.to_le_bytes(), field, 8)?;
        }
        Ok(())
    }

    /// PLATFORM_INFO, KEY_INFO, REPORT_DATA, MEASUREMENT, HOST_DATA, the key digests and the report ids.
    fn put_platform_and_digests(&self, b: &mut ReportBytes) -> Result<(), ReportError> {
        b.put(
            OFF_PLATFORM_INFO,
            &self.plat_info.to_le_bytes(),
            "plat_info",
            8,
        )?;
        b.put(OFF_KEY_INFO, &self.key_info.to_le_bytes(), "key_info", 4)?;
        b.put(OFF_REPORT_DATA, &self.report_data, "report_data", 64)?;
        b.put(OFF_MEASUREMENT, &self.measurement, "measurement", 48)?;
        b.put(OFF_HOST_DATA, &self.host_data, "host_data", 32)?;
        b.put(OFF_ID_KEY_DIGEST, &self.id_key_digest, "id_key_digest", 48)?;
        b.put(
            OFF_AUTHOR_KEY_DIGEST,
            &self.author_key_digest,
            "author_key_digest",
            48,
        )?;
        b.put(OFF_REPORT_ID, &self.report_id, "report_id", 32)?;
        b.put(OFF_REPORT_ID_MA, &self.report_id_ma, "report_id_ma", 32)
    }

    /// CPUID (all three fields or none), CHIP_ID, the current and committed firmware versions, and the
    /// mitigation vectors when present.
    fn put_chip_and_firmware(&self, b: &mut ReportBytes) -> Result<(), ReportError> {
        match (self.cpuid_fam_id, self.cpuid_mod_id, self.cpuid_step) {
            (Some(f), Some(m), Some(s)) => b.put(OFF_CPUID_FAM_ID, &[f, m, s], "cpuid", 3)?,
            (None, None, None) => {}
            _ => {
                return Err(bad(
                    "cpuid_fam_id, cpuid_mod_id, cpuid_step: all or none".into()
                ))
            }
        }
        b.put(OFF_CHIP_ID, &self.chip_id, "chip_id", 64)?;
        let version = |v: &Version| [v.build, v.minor, v.major];
        b.put(OFF_CURRENT_BUILD, &version(&self.current), "current", 3)?;
        b.put(
            OFF_COMMITTED_BUILD,
            &version(&self.committed),
            "committed",
            3,
        )?;
        if let Some(v) = self.launch_mit_vector {
            b.put(
                OFF_LAUNCH_MIT_VECTOR,
                &v.to_le_bytes(),
                "launch_mit_vector",
                8,
            )?;
        }
        if let Some(v) = self.current_mit_vector {
            b.put(
                OFF_CURRENT_MIT_VECTOR,
                &v.to_le_bytes(),
                "current_mit_vector",
                8,
            )?;
        }
        Ok(())
    }

    /// SIGNATURE: R then S, each as the report stores it (little-endian, zero-padded).
    fn put_signature(&self, b: &mut ReportBytes) -> Result<(), ReportError> {
        b.put(
            OFF_SIGNATURE,
            &self.signature.r,
            "signature.r",
            SIGNATURE_COMPONENT_LEN,
        )?;
        b.put(
            OFF_SIGNATURE + SIGNATURE_COMPONENT_LEN,
            &self.signature.s,
            "signature.s",
            SIGNATURE_COMPONENT_LEN,
        )
    }
}

/// The attestation agent's JSON for a report and its certificates (`cert_type`, DER): the `sev` crate's
/// serde form, written from the SNP ABI layout. The inverse of [`parse_sev_json`]; for tests, and for tools
/// that hand Cloister's evidence to verifiers that read the agent's format.
pub fn to_sev_json(report: &[u8], certs: &[(&str, &[u8])]) -> Result<String, ReportError> {
    let r = AttestationReport::from_bytes(report)?;
    let tcb = |t: TcbVersion| {
        serde_json::json!({"fmc": t.fmc, "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp,
            "microcode": t.microcode})
    };
    let at = |off: usize, len: usize| report[off..off + len].to_vec();
    let u64_at = |off: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&report[off..off + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |off: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&report[off..off + 4]);
        u32::from_le_bytes(w)
    };
    let cpuid = r.cpuid;
    let json = serde_json::json!({
        "attestation_report": {
            "version": r.version, "guest_svn": r.guest_svn, "policy": u64_at(OFF_POLICY),
            "family_id": r.family_id, "image_id": r.image_id, "vmpl": r.vmpl,
            "sig_algo": r.signature_algo, "current_tcb": tcb(r.current_tcb),
            "plat_info": u64_at(OFF_PLATFORM_INFO), "key_info": u32_at(OFF_KEY_INFO),
            "report_data": at(OFF_REPORT_DATA, 64), "measurement": at(OFF_MEASUREMENT, 48),
            "host_data": r.host_data, "id_key_digest": at(OFF_ID_KEY_DIGEST, 48),
            "author_key_digest": at(OFF_AUTHOR_KEY_DIGEST, 48), "report_id": r.report_id,
            "report_id_ma": r.report_id_ma, "reported_tcb": tcb(r.reported_tcb),
            "cpuid_fam_id": cpuid.map(|c| c.family), "cpuid_mod_id": cpuid.map(|c| c.model),
            "cpuid_step": cpuid.map(|c| c.stepping), "chip_id": at(OFF_CHIP_ID, 64),
            "committed_tcb": tcb(r.committed_tcb),
            "current": {"major": r.current_version.major, "minor": r.current_version.minor,
                "build": r.current_version.build},
            "committed": {"major": r.committed_version.major, "minor": r.committed_version.minor,
                "build": r.committed_version.build},
            "launch_tcb": tcb(r.launch_tcb), "launch_mit_vector": r.launch_mit_vector,
            "current_mit_vector": r.current_mit_vector,
            "signature": {"r": r.signature_r.to_vec(), "s": r.signature_s.to_vec()}
        },
        "cert_chain": certs.iter().map(|(t, d)| serde_json::json!({"cert_type": t, "data": d}))
            .collect::<Vec<_>>(),
    });
    Ok(json.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every real report of the vectors (v2 without CPUID, v3, v5 with mitigation vectors, Turin with
    /// FMC) comes back byte for byte from the agent's JSON form.
    #[test]
    fn real_reports_round_trip_through_the_agents_json() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("vectors dir ../shared/vectors/snp") {
            let path = entry.unwrap().path().join("report.bin");
            let Ok(report) = std::fs::read(&path) else {
                continue;
            };
            let json = to_sev_json(&report, &[("VCEK", b"der"), ("ASK", b"x")]).unwrap();
            let parsed = parse_sev_json(json.as_bytes()).unwrap();
            assert_eq!(parsed.report, report, "{}", path.display());
            assert_eq!(parsed.certificates[0].cert_type, "VCEK");
            assert_eq!(parsed.certificates[0].data, b"der");
            seen += 1;
        }
        assert!(seen >= 6, "only {seen} vector reports");
    }

    #[test]
    fn malformed_evidence_is_refused_with_the_field() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/snp/oak_genoa_vcek_v5/report.bin");
        let report = std::fs::read(dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&to_sev_json(&report, &[]).unwrap()).unwrap();
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut j = json.clone();
            edit(&mut j);
            parse_sev_json(j.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        let e = with(&|j| j["attestation_report"]["measurement"] = serde_json::json!([1, 2, 3]));
        assert!(e.contains("measurement: 3 bytes, expected 48"), "{e}");
        let e = with(&|j| {
            j["attestation_report"]
                .as_object_mut()
                .unwrap()
                .remove("host_data");
        });
        assert!(e.contains("host_data"), "{e}");
        let e = with(&|j| j["attestation_report"]["chip_id"][0] = serde_json::json!(256));
        assert!(e.contains("not SNP evidence JSON"), "{e}");
        let e = with(&|j| j["attestation_report"]["version"] = serde_json::json!(9));
        assert!(e.contains("VERSION"), "{e}");
        assert!(parse_sev_json(b"{}").is_err());
        assert!(parse_sev_json(&vec![b' '; MAX_SEV_JSON_LEN + 1]).is_err());
    }
}
