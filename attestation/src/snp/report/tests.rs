//! The report codec against the real reports: byte-exact round trips, every reserved field, fuzzed shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

pub(crate) fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp")
}

fn sets() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(vectors_dir())
        .expect("vectors dir ../shared/vectors/snp")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    assert!(
        v.len() >= 8,
        "expected the 8 vector sets, found {}",
        v.len()
    );
    v
}

fn hexs(v: &serde_json::Value) -> String {
    v.as_str().unwrap().to_string()
}
fn num(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().unwrap(),
        serde_json::Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
        }
        _ => panic!("not a number: {v}"),
    }
}
fn tcb_json(t: &TcbVersion, j: &serde_json::Value) {
    assert_eq!(u64::from(t.bootloader), num(&j["bootloader"]));
    assert_eq!(u64::from(t.tee), num(&j["tee"]));
    assert_eq!(u64::from(t.snp), num(&j["snp"]));
    assert_eq!(u64::from(t.microcode), num(&j["microcode"]));
    assert_eq!(t.fmc.map(u64::from), j.get("fmc").map(num));
    assert_eq!(t.encode(), num(&j["raw"]));
}

#[test]
fn every_vector_report_decodes_to_its_verification_json() {
    for set in sets() {
        let raw = std::fs::read(set.join("report.bin")).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(set.join("verification.json")).unwrap()).unwrap();
        let j = &v["report"];
        let r = AttestationReport::from_bytes(&raw)
            .unwrap_or_else(|e| panic!("{}: {e}", set.display()));
        assert_eq!(u64::from(r.version), num(&j["version"]));
        assert_eq!(u64::from(r.guest_svn), num(&j["guest_svn"]));
        assert_eq!(r.policy.0, num(&j["policy"]));
        let pd = &j["policy_decoded"];
        assert_eq!(r.policy.debug(), pd["debug"].as_bool().unwrap());
        assert_eq!(r.policy.smt(), pd["smt"].as_bool().unwrap());
        assert_eq!(r.policy.migrate_ma(), pd["migrate_ma"].as_bool().unwrap());
        assert_eq!(
            r.policy.single_socket(),
            pd["single_socket"].as_bool().unwrap()
        );
        assert_eq!(u64::from(r.policy.abi_major()), num(&pd["abi_major"]));
        assert_eq!(u64::from(r.policy.abi_minor()), num(&pd["abi_minor"]));
        assert_eq!(hex::encode(r.family_id), hexs(&j["family_id"]));
        assert_eq!(hex::encode(r.image_id), hexs(&j["image_id"]));
        assert_eq!(u64::from(r.vmpl), num(&j["vmpl"]));
        assert_eq!(u64::from(r.signature_algo), num(&j["signature_algo"]));
        tcb_json(&r.current_tcb, &j["current_tcb"]);
        tcb_json(&r.reported_tcb, &j["reported_tcb"]);
        tcb_json(&r.committed_tcb, &j["committed_tcb"]);
        tcb_json(&r.launch_tcb, &j["launch_tcb"]);
        assert_eq!(r.platform_info.0, num(&j["platform_info"]));
        assert_eq!(u64::from(r.author_key_en), num(&j["author_key_en"]));
        assert_eq!(u64::from(r.mask_chip_key), num(&j["mask_chip_key"]));
        assert_eq!(
            r.signing_key.name(),
            hexs(&j["signing_key_name"]).to_lowercase()
        );
        assert_eq!(hex::encode(r.report_data), hexs(&j["report_data"]));
        assert_eq!(hex::encode(r.measurement), hexs(&j["measurement"]));
        assert_eq!(hex::encode(r.host_data), hexs(&j["host_data"]));
        assert_eq!(hex::encode(r.id_key_digest), hexs(&j["id_key_digest"]));
        assert_eq!(
            hex::encode(r.author_key_digest),
            hexs(&j["author_key_digest"])
        );
        assert_eq!(hex::encode(r.report_id), hexs(&j["report_id"]));
        assert_eq!(hex::encode(r.report_id_ma), hexs(&j["report_id_ma"]));
        assert_eq!(hex::encode(r.chip_id), hexs(&j["chip_id"]));
        let cpuid = r.cpuid.unwrap_or(Cpuid {
            family: 0,
            model: 0,
            stepping: 0,
        });
        assert_eq!(u64::from(cpuid.family), num(&j["cpuid_fam_id"]));
        assert_eq!(u64::from(cpuid.model), num(&j["cpuid_mod_id"]));
        assert_eq!(u64::from(cpuid.stepping), num(&j["cpuid_step"]));
        assert_eq!(r.current_version.to_string(), hexs(&j["current_version"]));
        assert_eq!(
            r.committed_version.to_string(),
            hexs(&j["committed_version"])
        );
        assert_eq!(
            r.launch_mit_vector.unwrap_or(0),
            num(&j["launch_mit_vector"])
        );
        assert_eq!(
            r.current_mit_vector.unwrap_or(0),
            num(&j["current_mit_vector"])
        );
        // sig_r / sig_s in the JSON are the big-endian 48-byte scalars.
        let fixed = r.signature_p384_fixed().unwrap();
        assert_eq!(hex::encode(&fixed[..48]), hexs(&j["sig_r"]));
        assert_eq!(hex::encode(&fixed[48..]), hexs(&j["sig_s"]));
        // Byte-exact round trip.
        assert_eq!(r.to_bytes().unwrap().as_slice(), raw.as_slice());
    }
}

#[test]
fn truncated_negative_vectors_are_rejected_at_parse_time() {
    for set in sets() {
        let raw = std::fs::read(set.join("negative/report_truncated_1183.bin")).unwrap();
        assert_eq!(
            AttestationReport::from_bytes(&raw),
            Err(ReportError::Length {
                expected: REPORT_LEN,
                found: 1183
            })
        );
    }
}

#[test]
fn rejects_bad_version_reserved_and_signing_key() {
    let raw = std::fs::read(vectors_dir().join("oak_genoa_vcek_v5/report.bin")).unwrap();
    let mut m = raw.clone();
    m[0] = 6;
    assert_eq!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::UnsupportedVersion { found: 6 })
    );
    m[0] = 1;
    assert!(AttestationReport::from_bytes(&m).is_err());
    let mut m = raw.clone();
    m[0x4C] = 1;
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::ReservedNotZero { offset: 0x4C, .. })
    ));
    let mut m = raw.clone();
    m[0x210] = 1;
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::ReservedNotZero { offset: 0x208, .. })
    ));
    let mut m = raw.clone();
    m[REPORT_LEN - 1] = 1;
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::ReservedNotZero { .. })
    ));
    let mut m = raw.clone();
    m[0x48] = 3 << 2; // SIGNING_KEY = 3: reserved
    assert_eq!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::UnknownSigningKey { found: 3 })
    );
    let mut m = raw.clone();
    m[0x0A] &= !0x02; // clear POLICY bit 17
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::PolicyReservedBitClear { .. })
    ));
    let mut m = raw;
    m[0x3A] = 1; // CURRENT_TCB reserved byte 2 (legacy layout)
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::TcbReservedNotZero {
            field: "CURRENT_TCB",
            ..
        })
    ));
}

#[test]
fn v2_reserved_cpuid_area_must_be_zero() {
    let raw = std::fs::read(vectors_dir().join("go-sev-guest_milan_vcek_v2/report.bin")).unwrap();
    let mut m = raw;
    m[OFF_CPUID_FAM_ID] = 0x19;
    assert!(matches!(
        AttestationReport::from_bytes(&m),
        Err(ReportError::ReservedNotZero { offset: 0x188, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// decode never panics, and encode(decode(x)) == x whenever decode accepts x.
    #[test]
    fn decode_encode_is_identity(seed in 0usize..8, edits in proptest::collection::vec((0usize..REPORT_LEN, any::<u8>()), 0..6)) {
        let set = &sets()[seed];
        let mut raw = std::fs::read(set.join("report.bin")).unwrap();
        for (i, v) in edits { raw[i] = v; }
        if let Ok(r) = AttestationReport::from_bytes(&raw) {
            let encoded = r.to_bytes().unwrap();
            prop_assert_eq!(encoded.as_slice(), raw.as_slice());
        }
    }

    #[test]
    fn decode_never_panics_on_random_bytes(raw in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let _ = AttestationReport::from_bytes(&raw);
    }
}
