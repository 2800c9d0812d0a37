//! The Azure verifier against Trustee's real evidence (`../shared/vectors/azure-snp-vtpm`): every file gives
//! what expected.json says, and each negative fails for its stated reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::policy::Policy;
use crate::snp::certs::AmdCertificate;
use crate::snp::verify::{CertChain, VerifyOptions};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/azure-snp-vtpm"
);
/// Inside every certificate's validity (the VCEKs date from January 2025; the chain from 2020/2022).
const AT: i64 = 1_740_000_000; // 2025-02-19

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap()
}

fn options() -> VerifyOptions<'static> {
    VerifyOptions {
        at_unix: AT,
        crls: &[],
        simulated_root: None,
    }
}

fn verify_file(name: &str, report_data: &[u8]) -> Result<VerifiedAzure, crate::Error> {
    let evidence = AzureEvidence::from_json(&read(name)).unwrap();
    verify_azure(
        &evidence,
        &CertChain::default(),
        &Policy::baseline(),
        &options(),
        Some(report_data),
    )
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&read("expected.json")).unwrap()
}

#[test]
fn every_evidence_file_verifies_and_gives_the_expected_fields() {
    let want = expected();
    for (name, format) in [
        ("evidence-v0.json", Format::V0),
        ("evidence-v1.json", Format::V1),
        ("evidence-v2.json", Format::V2),
    ] {
        let e = &want[name];
        let rd = hex::decode(e["report_data_hex"].as_str().unwrap()).unwrap();
        assert_eq!(
            AzureEvidence::from_json(&read(name)).unwrap().format,
            format
        );
        let v = verify_file(name, &rd).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(v.report().product().name(), e["product"].as_str().unwrap());
        assert_eq!(
            hex::encode(v.facts().pcrs[&0]),
            e["pcr00"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(v.facts().report_data, rd);
        assert_eq!(v.facts().pcrs.len(), 24);
        assert!(v.facts().vm_configuration.secure_boot);
    }
}

fn parts(hcl: Vec<u8>, quote: &[u8]) -> AzureEvidence {
    AzureEvidence::from_parts(hcl, quote, None).unwrap()
}

fn pem_chain() -> CertChain {
    let certs = AmdCertificate::all_from_pem(&read("vcek.pem")).unwrap();
    CertChain {
        leaf: Some(certs[0].clone()),
        intermediate: Some(certs[1].clone()),
        ark: Some(certs[2].clone()),
    }
}

fn verify_parts(
    hcl: Vec<u8>,
    quote: &[u8],
    report_data: &[u8],
) -> Result<VerifiedAzure, crate::Error> {
    let options = VerifyOptions {
        at_unix: 1_700_000_000, // 2023-11: the vcek.pem VCEK dates from May 2023
        ..options()
    };
    // This older Azure host ran provisional firmware (COMMITTED_TCB below CURRENT_TCB): genuine, and refused
    // by the baseline, so this policy says it accepts that.
    let policy = Policy::from_toml("permit_provisional_firmware = true").unwrap();
    verify_azure(
        &parts(hcl, quote),
        &pem_chain(),
        &policy,
        &options,
        Some(report_data),
    )
}

#[test]
fn the_hcl_report_the_pem_chain_and_the_bare_quote_verify() {
    let v = verify_parts(
        read("hcl-report.bin"),
        &read("tpm-quote-v1.json"),
        b"challenge",
    )
    .unwrap();
    // A version 2 SNP report: the product comes from the VCEK.
    assert_eq!(v.report().product().name(), "Milan");
    assert_eq!(v.report().report().version, 2);
}

fn reason(r: Result<VerifiedAzure, crate::Error>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn each_negative_fails_for_its_stated_reason() {
    let quote = read("tpm-quote-v1.json");
    let mut hcl = read("hcl-report.bin");
    hcl[0x06E0] = hcl[0x06E0].wrapping_add(1);
    let r = reason(verify_parts(hcl, &quote, b"challenge"));
    assert!(r.starts_with("hcl_var_data:"), "{r}");

    let mut hcl = read("hcl-report.bin");
    hcl[0x0540] = 0;
    let r = reason(verify_parts(hcl, &quote, b"challenge"));
    assert!(r.starts_with("hcl_ak:") && r.contains("HCLAkPub"), "{r}");

    let mut hcl = read("hcl-report.bin");
    hcl[0x01A6] = 0;
    let r = reason(verify_parts(hcl, &quote, b"challenge"));
    // The SNP report is invalid: its signature no longer verifies (or the VCEK's SNP SPL differs).
    assert!(
        r.starts_with("report_signature:") || r.starts_with("reported_tcb."),
        "{r}"
    );

    let mut q: serde_json::Value = serde_json::from_slice(&quote).unwrap();
    let sig = q["signature"].as_str().unwrap();
    let mut bytes = hex::decode(sig).unwrap();
    bytes[0] ^= 1;
    q["signature"] = hex::encode(bytes).into();
    let r = reason(verify_parts(
        read("hcl-report.bin"),
        &serde_json::to_vec(&q).unwrap(),
        b"challenge",
    ));
    assert!(r.starts_with("quote_signature:"), "{r}");

    let r = reason(verify_parts(read("hcl-report.bin"), &quote, b"egnellahc"));
    assert!(r.starts_with("quote_nonce:"), "{r}");

    let r = reason(verify_file(
        "evidence-v2.json",
        &hex::decode("123abc").unwrap(),
    ));
    assert!(r.starts_with("user_data:"), "{r}");
}

#[test]
fn the_pcr_digest_and_the_policy_are_checked() {
    let name = "evidence-v1.json";
    let mut e = AzureEvidence::from_json(&read(name)).unwrap();
    e.quote.pcrs[7][0] ^= 1;
    let r = reason(verify_azure(
        &e,
        &CertChain::default(),
        &Policy::baseline(),
        &options(),
        Some(b"challenge"),
    ));
    assert!(r.starts_with("pcr_digest:"), "{r}");

    let pcr0 = expected()[name]["pcr00"].as_str().unwrap().to_owned();
    let good = Policy::from_toml(&format!(
        "[tpm]\npcrs = {{ 0 = \"{pcr0}\" }}\nrequire_secure_boot = true\nrequire_tpm = true\n"
    ))
    .unwrap();
    let e = AzureEvidence::from_json(&read(name)).unwrap();
    verify_azure(
        &e,
        &CertChain::default(),
        &good,
        &options(),
        Some(b"challenge"),
    )
    .unwrap();
    let wrong = Policy::from_toml(&format!(
        "[tpm]\npcrs = {{ 0 = \"{}\" }}\n",
        "00".repeat(32)
    ))
    .unwrap();
    let r = reason(verify_azure(
        &e,
        &CertChain::default(),
        &wrong,
        &options(),
        Some(b"challenge"),
    ));
    assert!(
        r.starts_with("policy: pcr_policy:") && r.contains("PCR 0"),
        "{r}"
    );
    assert!(Policy::from_toml("[tpm]\npcrs = { 24 = \"00\" }").is_err());
    assert!(Policy::from_toml("[tpm]\npcr_bank = \"sha1\"").is_err());
    // The paravisor's measurement is pinned like any SNP measurement.
    let m = Policy::from_toml(&format!("measurements = [\"{}\"]", "11".repeat(48))).unwrap();
    let r = reason(verify_azure(
        &e,
        &CertChain::default(),
        &m,
        &options(),
        Some(b"challenge"),
    ));
    assert!(r.starts_with("policy: measurement"), "{r}");
}

#[test]
fn malformed_inputs_are_errors_not_panics() {
    for bad in [
        &b""[..],
        b"{}",
        b"[]",
        b"{\"version\":3}",
        b"{\"version\":1,\"tpm_quote\":{}}",
    ] {
        assert!(AzureEvidence::from_json(bad).is_err());
    }
    let hcl = read("hcl-report.bin");
    for cut in [0, 4, 100, 0x4C0, 0x4D3, 0x4D4, 0x500] {
        let _ = hcl::HclReport::parse(&hcl[..cut]).and_then(|h| h.claims());
    }
    assert!(hcl::HclReport::parse(&hcl[..0x4D3]).is_err());
    let e = AzureEvidence::from_json(&read("evidence-v1.json")).unwrap();
    for cut in 0..e.quote.message.len() {
        assert!(tpm::QuoteInfo::parse(&e.quote.message[..cut]).is_err());
    }
    let mut long = e.quote.message;
    long.push(0);
    assert!(tpm::QuoteInfo::parse(&long).is_err());
}
