//! Unit tests of the simulated platform: every report goes through the production verifier, and every
//! certificate is compared with AMD's real ones from `../shared/vectors/snp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use der::{Decode, Encode, Tagged};
use x509_cert::Certificate;

use super::*;
use cloister_attestation::snp::report::{AttestationReport, ReportError, SigningKey};
use cloister_attestation::snp::roots;
use cloister_attestation::snp::verify::{verify, VerifyOptions};
use cloister_attestation::Error as VerifyError;
use cloister_attestation::Policy;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/snp");

/// 2026-01-01T00:00:00Z: every simulated certificate of the tests is issued then.
const ISSUED_AT: i64 = 1_767_225_600;
const AT: i64 = ISSUED_AT + 3600;

/// A fresh, unique scratch directory (not created).
fn scratch(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "cloister-sim-unit-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// One platform per product, with a VLEK, made once per test run. The state directory is removed
/// once the platform is loaded (the keys stay in memory).
fn platform(product: Product) -> &'static SimPlatform {
    static P: [OnceLock<SimPlatform>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = match product {
        Product::Milan => 0,
        Product::Genoa => 1,
        Product::Turin => 2,
    };
    P[i].get_or_init(|| {
        let dir = scratch(product.name());
        let mut config = SimConfig::new(product, ISSUED_AT);
        config.vlek = true;
        let p = SimPlatform::init(&dir, &config, &SystemRandom::new()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        p
    })
}

fn options<'a>(root: Option<&'a AmdCertificate>) -> VerifyOptions<'a> {
    VerifyOptions {
        at_unix: AT,
        crls: &[],
        simulated_root: root,
    }
}

fn request(key: SimSigningKey) -> ReportRequest {
    ReportRequest {
        report_data: core::array::from_fn(|i| i as u8),
        vmpl: 2,
        policy: 0x3_0000 | (1 << 20) | 0x0102, // single socket, ABI 1.2
        host_data: [0x11; 32],
        measurement: simulated_launch_measurement(b"enclave", b"config"),
        family_id: [0x22; 16],
        image_id: [0x33; 16],
        guest_svn: 7,
        id_key_digest: Some([0x44; 48]),
        author_key_digest: Some([0x55; 48]),
        signing_key: key,
        version: None,
    }
}

#[test]
fn every_product_and_key_round_trips_through_the_production_verifier() {
    for product in Product::ALL {
        let p = platform(product);
        for key in [SimSigningKey::Vcek, SimSigningKey::Vlek] {
            let req = request(key);
            let raw = p.report(&req).unwrap();
            let chain = p.cert_chain(key).unwrap();
            // VMPL 2 is outside the baseline: the baseline refuses it, a policy allowing it accepts.
            let err =
                verify(&raw, &chain, &Policy::baseline(), &options(Some(p.root()))).unwrap_err();
            assert!(err.to_string().starts_with("policy: vmpls"), "{err}");
            let vmpl2 = Policy::from_toml("vmpls = [2]").unwrap();
            let v = verify(&raw, &chain, &vmpl2, &options(Some(p.root())))
                .unwrap_or_else(|e| panic!("{product} {key:?}: {e}"));
            assert!(v.is_simulated());
            assert_eq!(v.product(), product);
            let r = v.report();
            let expected_version = if product == Product::Turin { 5 } else { 3 };
            assert_eq!(r.version, expected_version);
            assert_eq!(r.report_data, req.report_data);
            assert_eq!(r.vmpl, 2);
            assert_eq!(r.policy.0, req.policy);
            assert!(r.policy.single_socket() && !r.policy.debug());
            assert_eq!((r.policy.abi_major(), r.policy.abi_minor()), (1, 2));
            assert_eq!(r.host_data, req.host_data);
            assert_eq!(r.measurement, req.measurement);
            assert_eq!(r.family_id, req.family_id);
            assert_eq!(r.image_id, req.image_id);
            assert_eq!(r.guest_svn, 7);
            assert_eq!(r.id_key_digest, [0x44; 48]);
            assert_eq!(r.author_key_digest, [0x55; 48]);
            assert!(r.author_key_en && !r.mask_chip_key);
            assert_eq!(r.report_id_ma, [0xFF; 32]);
            assert_ne!(r.report_id, [0; 32]);
            assert_eq!(r.cpuid_product(), Some(product));
            for tcb in [r.current_tcb, r.reported_tcb, r.committed_tcb, r.launch_tcb] {
                assert_eq!(tcb, p.tcb());
            }
            assert_eq!(r.current_version, r.committed_version);
            match key {
                SimSigningKey::Vcek => {
                    assert_eq!(v.signing_key(), SigningKey::Vcek);
                    assert_eq!(r.chip_id, p.chip_id());
                    if product == Product::Turin {
                        assert!(r.chip_id[8..].iter().all(|&b| b == 0));
                    }
                }
                SimSigningKey::Vlek => {
                    assert_eq!(v.signing_key(), SigningKey::Vlek);
                    assert_eq!(r.chip_id, [0; 64]);
                    assert_eq!(v.leaf_extensions().csp_id.as_deref(), Some(SIM_CSP_ID));
                }
            }
            // Byte-exact: decode → encode is the identity, and a second report differs only in
            // REPORT_ID and the signature.
            assert_eq!(
                AttestationReport::from_bytes(&raw)
                    .unwrap()
                    .to_bytes()
                    .unwrap(),
                raw
            );
            let again = p.report(&req).unwrap();
            assert_ne!(again[0x140..0x160], raw[0x140..0x160]);
            assert_eq!(again[..0x140], raw[..0x140]);
            assert_eq!(again[0x160..0x2A0], raw[0x160..0x2A0]);
        }
    }
}

#[test]
fn other_report_versions() {
    let genoa = platform(Product::Genoa);
    for version in [2, 3, 4, 5] {
        let req = ReportRequest {
            version: Some(version),
            ..ReportRequest::default()
        };
        let raw = genoa.report(&req).unwrap();
        let chain = genoa.cert_chain(SimSigningKey::Vcek).unwrap();
        let v = verify(
            &raw,
            &chain,
            &Policy::baseline(),
            &options(Some(genoa.root())),
        )
        .unwrap();
        assert_eq!(v.report().version, version);
        assert_eq!(v.report().cpuid.is_some(), version >= 3);
        assert_eq!(v.report().launch_mit_vector.is_some(), version >= 5);
    }
    let turin = platform(Product::Turin);
    for version in [2, 6] {
        let req = ReportRequest {
            version: Some(version),
            ..ReportRequest::default()
        };
        assert!(matches!(
            turin.report(&req),
            Err(SimError::ReportVersion { .. })
        ));
    }
    let req = ReportRequest {
        version: Some(4),
        ..ReportRequest::default()
    };
    let raw = turin.report(&req).unwrap();
    let chain = turin.cert_chain(SimSigningKey::Vcek).unwrap();
    verify(
        &raw,
        &chain,
        &Policy::baseline(),
        &options(Some(turin.root())),
    )
    .unwrap();
}

#[test]
fn invalid_requests_are_errors() {
    let p = platform(Product::Genoa);
    let bad_vmpl = ReportRequest {
        vmpl: 4,
        ..ReportRequest::default()
    };
    assert!(matches!(p.report(&bad_vmpl), Err(SimError::Vmpl(4))));
    let no_bit_17 = ReportRequest {
        policy: 0x1_0000,
        ..ReportRequest::default()
    };
    assert!(matches!(
        p.report(&no_bit_17),
        Err(SimError::Report(ReportError::PolicyReservedBitClear { .. }))
    ));
    let reserved = ReportRequest {
        policy: 0x3_0000 | (1 << 40),
        ..ReportRequest::default()
    };
    assert!(matches!(
        p.report(&reserved),
        Err(SimError::Report(ReportError::ReservedNotZero { .. }))
    ));
}

#[test]
fn without_the_simulated_root_a_report_is_rejected_at_the_root() {
    let p = platform(Product::Genoa);
    let raw = p.report(&ReportRequest::default()).unwrap();
    let chain = p.cert_chain(SimSigningKey::Vcek).unwrap();
    let err = verify(&raw, &chain, &Policy::baseline(), &options(None)).unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("root:"), "{msg}");
    assert!(msg.contains("simulated root"), "{msg}");
    // Nor does another simulated platform's root vouch for it.
    let other = platform(Product::Milan);
    let err = verify(
        &raw,
        &chain,
        &Policy::baseline(),
        &options(Some(other.root())),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err}");
    // And the chain without its ARK falls back to AMD's embedded ARK, which did not sign the ASK.
    let mut no_ark = chain;
    no_ark.ark = None;
    let err = verify(&raw, &no_ark, &Policy::baseline(), &options(Some(p.root()))).unwrap_err();
    assert!(matches!(err, VerifyError::Certificate(_)), "{err}");
}

/// The real vectors' negative mutations (`negative/README.md` of each set), applied to simulated
/// reports: each is rejected for the same reason.
#[test]
fn negative_mutations_of_the_real_vectors_fail_for_the_same_reason() {
    for product in Product::ALL {
        let p = platform(product);
        let other_product = if product == Product::Milan {
            Product::Genoa
        } else {
            Product::Milan
        };
        for key in [SimSigningKey::Vcek, SimSigningKey::Vlek] {
            let raw = p.report(&request(key)).unwrap();
            let chain = p.cert_chain(key).unwrap();
            let run = |raw: &[u8], chain: &CertChain| {
                verify(raw, chain, &Policy::baseline(), &options(Some(p.root()))).unwrap_err()
            };
            // report_measurement_flipped.bin: byte 0x90 ^= 1 → report signature invalid.
            let mut m = raw;
            m[0x90] ^= 1;
            assert!(matches!(
                run(&m, &chain),
                VerifyError::ReportSignature { .. }
            ));
            // report_signature_flipped.bin: byte 0x2A0 ^= 1 → report signature invalid.
            let mut m = raw;
            m[0x2A0] ^= 1;
            assert!(matches!(
                run(&m, &chain),
                VerifyError::ReportSignature { .. }
            ));
            // report_truncated_1183.bin → parse error.
            assert!(matches!(
                run(&raw[..1183], &chain),
                VerifyError::Report(ReportError::Length { found: 1183, .. })
            ));
            // other_chip_vcek.der / other_chip_vlek.der: validly signed by the same intermediate, but
            // not the key that signed → report signature invalid.
            let other_leaf = match key {
                SimSigningKey::Vcek => p.issue_vcek_for_other_chip(&[0xAB; 64]).unwrap(),
                SimSigningKey::Vlek => p.issue_vlek_for_other_key().unwrap(),
            };
            let mut swapped = chain.clone();
            swapped.leaf = Some(AmdCertificate::from_der(&other_leaf).unwrap());
            assert!(matches!(
                run(&raw, &swapped),
                VerifyError::ReportSignature { .. }
            ));
            // ask_other_product.pem: the intermediate of another product → chain signature invalid.
            let mut swapped = chain.clone();
            swapped.intermediate = platform(other_product)
                .cert_chain(key)
                .unwrap()
                .intermediate;
            let err = run(&raw, &swapped);
            assert!(
                matches!(
                    err,
                    VerifyError::Certificate(CertError::BadSignature { .. })
                ),
                "{err}"
            );
            assert!(err.to_string().starts_with("certificate"), "{err}");
        }
    }
}

#[test]
fn a_vcek_for_another_chip_is_caught_by_hwid_when_its_key_signed() {
    // The hwID check is the last line: a VCEK whose key signed the report but whose hwID names another
    // chip. Made by re-issuing the platform's own VCEK key under another chip id.
    let p = platform(Product::Genoa);
    let raw = p.report(&ReportRequest::default()).unwrap();
    let mut st = p.state.clone();
    st.chip_id = [0xCD; 64];
    use ring::signature::KeyPair;
    let der = x509::issue_leaf(
        &st,
        CertRole::Vcek,
        p.vcek_key.public_key().as_ref(),
        &p.ask,
        &p.ask_key,
        &p.rng,
    )
    .unwrap();
    let mut chain = p.cert_chain(SimSigningKey::Vcek).unwrap();
    chain.leaf = Some(AmdCertificate::from_der(&der).unwrap());
    let err = verify(&raw, &chain, &Policy::baseline(), &options(Some(p.root()))).unwrap_err();
    assert!(matches!(err, VerifyError::HwIdMismatch { .. }), "{err}");
}

#[test]
fn crl_signed_by_the_simulated_ark_revokes_the_ask() {
    let p = platform(Product::Genoa);
    let raw = p.report(&ReportRequest::default()).unwrap();
    let chain = p.cert_chain(SimSigningKey::Vcek).unwrap();
    let ask_serial = p
        .certificate(CertRole::Ask)
        .unwrap()
        .serial_number()
        .to_vec();
    let run_with = |crl_der: &[u8], at: i64, policy: &Policy| {
        let crl = cloister_attestation::snp::crl::AmdCrl::from_der(crl_der).unwrap();
        let opts = VerifyOptions {
            at_unix: at,
            crls: std::slice::from_ref(&crl),
            simulated_root: Some(p.root()),
        };
        verify(&raw, &chain, policy, &opts)
    };
    let run = |crl_der: &[u8], at: i64| run_with(crl_der, at, &Policy::baseline());
    let revoking = p
        .issue_crl(&[&ask_serial], ISSUED_AT, ISSUED_AT + 86_400)
        .unwrap();
    let err = run(&revoking, AT).unwrap_err();
    assert!(matches!(err, VerifyError::Revoked { .. }), "{err}");
    assert!(err.to_string().starts_with("crl"), "{err}");
    let empty = p.issue_crl(&[], ISSUED_AT, ISSUED_AT + 86_400).unwrap();
    run(&empty, AT).unwrap();
    let unrelated = p
        .issue_crl(&[&[0x7f, 0x00, 0x01]], ISSUED_AT, ISSUED_AT + 86_400)
        .unwrap();
    run(&unrelated, AT).unwrap();
    // Past nextUpdate: tolerated for `crl_max_staleness` (default 7 days), then refused with the reason.
    let next_update = ISSUED_AT + 86_400;
    run(&empty, next_update + 1).unwrap();
    run(&empty, next_update + 7 * 86_400).unwrap();
    let err = run(&empty, next_update + 7 * 86_400 + 1).unwrap_err();
    assert!(err.to_string().starts_with("crl"), "{err}");
    assert!(err.to_string().contains("crl_max_staleness"), "{err}");
    let strict = Policy::from_toml("crl_max_staleness = \"0s\"").unwrap();
    let err = run_with(&empty, next_update + 1, &strict).unwrap_err();
    assert!(err.to_string().contains("stale"), "{err}");
    let day = Policy::from_toml("crl_max_staleness = \"1d\"").unwrap();
    run_with(&empty, next_update + 86_400, &day).unwrap();
    run_with(&empty, next_update + 86_401, &day).unwrap_err();
    // Another platform's CRL is not signed by this ARK.
    let other = platform(Product::Milan)
        .issue_crl(&[], ISSUED_AT, ISSUED_AT + 86_400)
        .unwrap();
    let err = run(&other, AT).unwrap_err();
    assert!(err.to_string().starts_with("crl"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The certificate profile, compared with AMD's.

fn x509(der: &[u8]) -> Certificate {
    Certificate::from_der(der).unwrap()
}

fn real(set: &str, file: &str) -> Certificate {
    let bytes = std::fs::read(format!("{VECTORS}/{set}/{file}")).unwrap();
    let der = if bytes.starts_with(b"-----") {
        pem_rfc7468::decode_vec(&bytes).unwrap().1
    } else {
        bytes
    };
    x509(&der)
}

/// (OID, critical) of each extension, in order.
fn extension_profile(c: &Certificate) -> Vec<(String, bool)> {
    c.tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|e| (e.extn_id.to_string(), e.critical))
        .collect()
}

/// (attribute OID, DER tag) of each RDN of a Name.
fn name_profile(n: &x509_cert::name::Name) -> Vec<(String, der::Tag)> {
    n.0.iter()
        .flat_map(|rdn| rdn.0.iter())
        .map(|a| (a.oid.to_string(), a.value.tag()))
        .collect()
}

fn years(c: &Certificate) -> u64 {
    let v = &c.tbs_certificate.validity;
    let days =
        (v.not_after.to_unix_duration() - v.not_before.to_unix_duration()).as_secs() / 86_400;
    (days + 1) / 365
}

fn alg_der(c: &Certificate) -> Vec<u8> {
    c.signature_algorithm.to_der().unwrap()
}

/// Compares a simulated certificate with AMD's certificate of the same role: same extensions in the
/// same order with the same criticality, same Name attribute types and string types, same signature
/// AlgorithmIdentifier bytes, same validity length, same serial style, same key type and size.
fn same_profile(role: &str, sim: &Certificate, amd: &Certificate) {
    assert_eq!(
        extension_profile(sim),
        extension_profile(amd),
        "{role}: extensions"
    );
    assert_eq!(
        name_profile(&sim.tbs_certificate.subject),
        name_profile(&amd.tbs_certificate.subject),
        "{role}: subject attributes"
    );
    assert_eq!(alg_der(sim), alg_der(amd), "{role}: signature algorithm");
    assert_eq!(
        sim.tbs_certificate.signature.to_der().unwrap(),
        amd.tbs_certificate.signature.to_der().unwrap()
    );
    assert_eq!(years(sim), years(amd), "{role}: validity");
    assert_eq!(sim.tbs_certificate.version, amd.tbs_certificate.version);
    let spki = |c: &Certificate| {
        let k = &c.tbs_certificate.subject_public_key_info;
        (
            k.algorithm.to_der().unwrap(),
            k.subject_public_key.raw_bytes().len(),
        )
    };
    assert_eq!(spki(sim), spki(amd), "{role}: key type and size");
}

#[test]
fn certificates_follow_amds_profile_and_say_simulated() {
    let vcek_sets = [
        (Product::Milan, "oak_milan_vcek_v3_containers"),
        (Product::Genoa, "oak_genoa_vcek_v5"),
        (Product::Turin, "oak_turin_vcek_v5"),
    ];
    for (product, set) in vcek_sets {
        let p = platform(product);
        let amd = roots::embedded(product);
        let ark = x509(p.root().der());
        let ask = x509(p.certificate(CertRole::Ask).unwrap().der());
        let asvk = x509(p.certificate(CertRole::Asvk).unwrap().der());
        let vcek = x509(p.certificate(CertRole::Vcek).unwrap().der());
        same_profile("ARK", &ark, &x509(amd.ark.der()));
        same_profile("ASK", &ask, &x509(amd.ask.der()));
        same_profile("ASVK", &asvk, &x509(amd.asvk.as_ref().unwrap().der()));
        same_profile("VCEK", &vcek, &real(set, "vcek.der"));

        // Serials: AMD's ARK serial exactly (0x010000, 0x020000, 0x030000); the ASK and ASVK serials
        // in the same style; VCEK serial 0.
        assert_eq!(p.root().serial_number(), amd.ark.serial_number());
        let g = p.root().serial_number()[0];
        assert_eq!(
            p.certificate(CertRole::Ask).unwrap().serial_number(),
            [g, 0, 1]
        );
        assert_eq!(
            p.certificate(CertRole::Asvk).unwrap().serial_number(),
            [g, 1, 1]
        );
        assert_eq!(p.certificate(CertRole::Vcek).unwrap().serial_number(), [0]);

        // The names say SIMULATED; the roles keep AMD's common names (the verifier checks them).
        let ark_cn = p.root().subject_common_name();
        assert_eq!(ark_cn, format!("ARK-{product} SIMULATED"));
        for role in [
            CertRole::Ask,
            CertRole::Asvk,
            CertRole::Vcek,
            CertRole::Vlek,
        ] {
            let c = p.certificate(role).unwrap();
            c.check_role(role, product).unwrap();
            let subject = x509(c.der()).tbs_certificate.subject.to_string();
            assert!(subject.contains(SIM_ORGANIZATION), "{role}: {subject}");
        }

        // AMD extensions parse with the production code and carry the platform's values.
        let ext = p
            .certificate(CertRole::Vcek)
            .unwrap()
            .amd_extensions()
            .unwrap();
        let real_ext = AmdCertificate::from_der(&real(set, "vcek.der").to_der().unwrap())
            .unwrap()
            .amd_extensions()
            .unwrap();
        assert_eq!(ext.struct_version, real_ext.struct_version);
        assert_eq!(ext.product_name, real_ext.product_name);
        assert_eq!(
            ext.hw_id.as_ref().map(Vec::len),
            real_ext.hw_id.as_ref().map(Vec::len)
        );
        assert_eq!(ext.fmc_spl.is_some(), real_ext.fmc_spl.is_some());
        let tcb = p.tcb();
        assert_eq!(
            (
                ext.bl_spl,
                ext.tee_spl,
                ext.snp_spl,
                ext.ucode_spl,
                ext.fmc_spl
            ),
            (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc)
        );
    }
    // The only real VLEK: Milan.
    let p = platform(Product::Milan);
    let vlek = x509(p.certificate(CertRole::Vlek).unwrap().der());
    same_profile("VLEK", &vlek, &real("trustee_milan_vlek_v3", "vlek.der"));
}

#[test]
fn crl_follows_amds_profile() {
    let p = platform(Product::Genoa);
    let sim = p
        .issue_crl(&[&[2, 0, 1]], ISSUED_AT, ISSUED_AT + 86_400)
        .unwrap();
    let amd = std::fs::read(format!(
        "{VECTORS}/openpcc_azure_genoa_vcek_v3_with_crls/crl_genoa.der"
    ))
    .unwrap();
    let parse = |der: &[u8]| x509_cert::crl::CertificateList::from_der(der).unwrap();
    let (sim, amd) = (parse(&sim), parse(&amd));
    assert_eq!(
        sim.signature_algorithm.to_der().unwrap(),
        amd.signature_algorithm.to_der().unwrap()
    );
    let exts = |c: &x509_cert::crl::CertificateList| {
        c.tbs_cert_list
            .crl_extensions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| (e.extn_id, e.critical))
            .collect::<Vec<_>>()
    };
    assert_eq!(exts(&sim), exts(&amd));
    assert_eq!(sim.tbs_cert_list.version, amd.tbs_cert_list.version);
}

// ---------------------------------------------------------------------------------------------
// The state directory.

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_writes_the_layout_with_private_permissions_and_never_overwrites() {
    let dir = scratch("layout");
    let config = SimConfig::new(Product::Milan, ISSUED_AT);
    let p = SimPlatform::init(&dir, &config, &SystemRandom::new()).unwrap();
    assert!(!p.has_vlek());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEYS_DIR)), 0o700);
    for key in ["ark", "ask", "vcek"] {
        let path = dir.join(KEYS_DIR).join(format!("{key}.pkcs8.der"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for cert in ["ark.pem", "ask.pem", "vcek.pem"] {
        assert!(dir.join(CERTS_DIR).join(cert).is_file());
    }
    assert!(!dir.join(VLEK_CERTS_DIR).exists());
    assert!(p.vlek_certs_dir().is_none());

    // Reopening gives the same platform.
    let reopened = SimPlatform::open(&dir).unwrap();
    assert_eq!(reopened.chip_id(), p.chip_id());
    assert_eq!(reopened.root(), p.root());
    assert_eq!(reopened.tcb(), p.tcb());
    assert_eq!(reopened.issued_at_unix(), ISSUED_AT);

    // A VLEK report from a platform without a VLEK is an error.
    let req = ReportRequest {
        signing_key: SimSigningKey::Vlek,
        ..ReportRequest::default()
    };
    assert!(matches!(p.report(&req), Err(SimError::NoVlek)));
    assert!(matches!(
        p.certificate_chain(SimSigningKey::Vlek),
        Err(SimError::NoVlek)
    ));
    let der_chain = p.certificate_chain(SimSigningKey::Vcek).unwrap();
    assert_eq!(der_chain.ark, p.root().der());

    // init twice: an error, and nothing changed.
    let before = snapshot(&dir);
    let err = SimPlatform::init(&dir, &config, &SystemRandom::new()).unwrap_err();
    assert!(matches!(err, SimError::AlreadyInitialized { .. }), "{err}");
    assert_eq!(snapshot(&dir), before);

    // A private key readable by others is refused.
    let ark_key = dir.join(KEYS_DIR).join("ark.pkcs8.der");
    std::fs::set_permissions(&ark_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SimPlatform::open(&dir).unwrap_err();
    assert!(
        matches!(err, SimError::KeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_refuses_bad_directories_and_configurations_before_generating_keys() {
    let rng = SystemRandom::new();
    // A non-empty directory that is not a platform.
    let dir = scratch("nonempty");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("something"), b"x").unwrap();
    let err =
        SimPlatform::init(&dir, &SimConfig::new(Product::Genoa, ISSUED_AT), &rng).unwrap_err();
    assert!(matches!(err, SimError::DirectoryNotEmpty { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // open() of something that is not a platform.
    let err = SimPlatform::open(&scratch("missing")).unwrap_err();
    assert!(matches!(err, SimError::NotInitialized { .. }), "{err}");

    // TCB layout must match the product; Turin chip ids are 8 bytes.
    let dir = scratch("bad");
    let mut turin = SimConfig::new(Product::Turin, ISSUED_AT);
    turin.tcb.fmc = None;
    assert!(matches!(
        SimPlatform::init(&dir, &turin, &rng),
        Err(SimError::TcbLayout { .. })
    ));
    let mut genoa = SimConfig::new(Product::Genoa, ISSUED_AT);
    genoa.tcb.fmc = Some(1);
    assert!(matches!(
        SimPlatform::init(&dir, &genoa, &rng),
        Err(SimError::TcbLayout { .. })
    ));
    let mut turin = SimConfig::new(Product::Turin, ISSUED_AT);
    turin.chip_id = Some([1; 64]);
    assert!(matches!(
        SimPlatform::init(&dir, &turin, &rng),
        Err(SimError::ChipIdLayout)
    ));
    assert!(
        !dir.exists(),
        "nothing may be created for a refused configuration"
    );
}

#[test]
fn platform_file_round_trips_and_rejects_garbage() {
    for product in Product::ALL {
        let st = platform(product).state.clone();
        let path = Path::new("platform.toml");
        let text = state::platform_toml(path, &st).unwrap();
        assert!(text.contains("SIMULATED"));
        assert_eq!(
            state::parse_platform_file(path, text.as_bytes()).unwrap(),
            st
        );
        let unknown = format!("extra = 1\n{text}");
        assert!(state::parse_platform_file(path, unknown.as_bytes()).is_err());
        let unknown_tcb = format!("{text}\nextra = 1\n");
        assert!(state::parse_platform_file(path, unknown_tcb.as_bytes()).is_err());
        let short_chip = text.replace(&hex::encode(st.chip_id), "00");
        assert!(state::parse_platform_file(path, short_chip.as_bytes()).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The launch measurement.

#[test]
fn launch_measurement_formula() {
    // SHA-384("cloister-sim-launch-v1" || SHA-384("") || SHA-384("")), computed independently (Python
    // hashlib).
    assert_eq!(
        hex::encode(simulated_launch_measurement(b"", b"")),
        "409dedf2cc2c8a093b40754600e30c3435f94be01e64e1d20384a9917de975ddcdc2646807f912104177da989e2d1686"
    );
    assert_eq!(
        hex::encode(simulated_launch_measurement(b"enclave", b"config")),
        "c31204c3eef5bb24a8998f2797b0187e16ce33218b5a8a58b16686e5d8c3cfab210ae95db33593b8b04361ff4cded1d0"
    );
    let base = simulated_launch_measurement(b"enclave", b"config");
    assert_ne!(simulated_launch_measurement(b"enclavE", b"config"), base);
    assert_ne!(simulated_launch_measurement(b"enclave", b"config "), base);
    // Moving bytes between binary and configuration changes the measurement.
    assert_ne!(simulated_launch_measurement(b"enclaveconfig", b""), base);
}

/// A version 2 report cannot come from Turin (Turin firmware writes v3+, with CPUID and the FMC-aware TCB
/// layout). Signed by a Turin VCEK anyway, with the Milan/Genoa TCB layout of v2 whose values happen to
/// match the certificate's SPLs, it must still be rejected.
#[test]
fn a_version_2_report_signed_by_a_turin_key_is_rejected() {
    let turin = platform(Product::Turin);
    let raw = turin
        .report(&ReportRequest {
            version: Some(3),
            ..ReportRequest::default()
        })
        .unwrap();
    let mut r = AttestationReport::from_bytes(&raw).unwrap();
    r.version = 2;
    r.cpuid = None;
    for tcb in [
        &mut r.current_tcb,
        &mut r.reported_tcb,
        &mut r.committed_tcb,
        &mut r.launch_tcb,
    ] {
        tcb.fmc = None;
    }
    r.signature_r = [0; 72];
    r.signature_s = [0; 72];
    let unsigned = r.to_bytes().unwrap();
    let signature = turin
        .vcek_key
        .sign(
            &SystemRandom::new(),
            &unsigned[..cloister_attestation::snp::report::SIGNED_LEN],
        )
        .unwrap();
    let (sig_r, sig_s) = signature.as_ref().split_at(48);
    for (field, big_endian) in [(&mut r.signature_r, sig_r), (&mut r.signature_s, sig_s)] {
        for (o, b) in field.iter_mut().zip(big_endian.iter().rev()) {
            *o = *b;
        }
    }
    let forged = r.to_bytes().unwrap();
    let chain = turin.cert_chain(SimSigningKey::Vcek).unwrap();
    let err = verify(
        &forged,
        &chain,
        &Policy::baseline(),
        &options(Some(turin.root())),
    )
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Product(m) if m.contains("version 2")),
        "{err}"
    );
}
