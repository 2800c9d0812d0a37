//! Issue 11's acceptance, as a user runs it: `cloister verify --fetch` and `cloister fetch` against a KDS
//! stand-in on loopback that serves the real certificates of `../shared/vectors/snp` at AMD's exact paths,
//! then again with the stand-in gone (the cache answers).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{cloister, vectors_dir};

#[path = "../../../collateral/tests/support/kds_standin.rs"]
mod standin;

use standin::{routes_for, Behaviour, KdsStandIn};

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn verify_json(args: &[&str]) -> (i32, Value, String) {
    let o = cloister(args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    (o.status.code().unwrap(), v, text(&o))
}

/// (set, product, instant inside every certificate's validity and the CRL's currency, whether AMD's CRL for
/// the product is among the vectors)
const CASES: [(&str, &str, &str, bool); 4] = [
    (
        "oak_milan_vcek_v3_containers",
        "Milan",
        "2025-07-01T00:00:00Z",
        true,
    ),
    ("oak_genoa_vcek_v5", "Genoa", "2025-09-01T00:00:00Z", true),
    ("oak_turin_vcek_v5", "Turin", "2025-09-01T00:00:00Z", false),
    (
        "trustee_milan_vlek_v3",
        "Milan",
        "2025-07-01T00:00:00Z",
        true,
    ),
];

fn args<'a>(report: &'a str, kds: &'a str, cache: &'a str, at: &'a str) -> Vec<&'a str> {
    vec![
        "verify",
        "--report",
        report,
        "--fetch",
        "--kds-url",
        kds,
        "--cache",
        cache,
        "--at",
        at,
        "--json",
    ]
}

#[test]
fn verify_fetches_what_is_missing_from_amds_paths_then_verifies_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    for (set, product, at, has_crl) in CASES {
        let dir = vectors_dir().join(set);
        let report = dir.join("report.bin");
        let report = report.to_str().unwrap();
        let mut kds = KdsStandIn::start(routes_for(set, product), Behaviour::default());
        let url = kds.url();
        let mut a = args(report, &url, cache_dir, at);
        // A VLEK comes with its report, as it does from a guest: only its ASVK chain and CRL are fetched.
        let leaf_dir = tempfile::tempdir().unwrap();
        if set.contains("vlek") {
            std::fs::copy(dir.join("vlek.der"), leaf_dir.path().join("vlek.der")).unwrap();
            a.extend(["--certs", leaf_dir.path().to_str().unwrap()]);
        }
        if has_crl {
            a.extend(["--crl", "auto"]);
        }
        // This guest ran at VMPL 1 on provisional firmware: genuine, and refused by the baseline policy,
        // so its policy says what it accepts (the collateral is what is tested here).
        let policy = leaf_dir.path().join("policy.toml");
        if set.contains("vlek") {
            std::fs::write(&policy, "vmpls = [1]\npermit_provisional_firmware = true\n").unwrap();
            a.extend(["--policy", policy.to_str().unwrap()]);
        }
        let (code, v, out) = verify_json(&a);
        assert_eq!(code, 0, "{set}: {out}");
        assert_eq!(v["verified"], true, "{set}: {out}");
        assert_eq!(v["product"], product, "{set}");
        let asked = kds.requests();
        let tree = if set.contains("vlek") { "vlek" } else { "vcek" };
        assert!(
            asked.contains(&format!("/{tree}/v1/{product}/cert_chain")),
            "{set}: {asked:?}"
        );
        assert_eq!(
            asked.contains(&format!("/{tree}/v1/{product}/crl")),
            has_crl,
            "{set}: {asked:?}"
        );
        let vcek_requests = asked.iter().filter(|p| p.contains('?')).count();
        assert_eq!(
            vcek_requests,
            usize::from(tree == "vcek"),
            "{set}: {asked:?}"
        );

        // The stand-in is gone: the same command verifies from the cache.
        kds.stop();
        let (code, v, out) = verify_json(&a);
        assert_eq!(code, 0, "{set} offline: {out}");
        assert_eq!(v["verified"], true, "{set} offline");
    }
}

#[test]
fn without_a_leaf_or_a_kds_the_failure_is_clear_and_a_foreign_vcek_is_a_rejection() {
    let set = "oak_genoa_vcek_v5";
    let report = vectors_dir().join(set).join("report.bin");
    let report = report.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    // No KDS at all: exit 2, naming the URL.
    let dead = KdsStandIn::start(HashMap::new(), Behaviour::default());
    let url = dead.url();
    drop(dead);
    let (code, v, out) = verify_json(&args(report, &url, cache_dir, "2025-09-01T00:00:00Z"));
    assert_eq!(code, 2, "{out}");
    assert!(v["reason"].as_str().unwrap().contains(&url), "{out}");
    // A KDS that serves another chip's VCEK at this chip's path: exit 1, nothing cached.
    let mut routes = routes_for(set, "Genoa");
    let path = routes.keys().find(|k| k.contains('?')).cloned().unwrap();
    routes.insert(
        path,
        std::fs::read(vectors_dir().join("trustee_azure-cvm_genoa_vcek_v3/vcek.der")).unwrap(),
    );
    let kds = KdsStandIn::start(routes, Behaviour::default());
    let (code, v, out) = verify_json(&args(report, &kds.url(), cache_dir, "2025-09-01T00:00:00Z"));
    assert_eq!(code, 1, "{out}");
    assert!(v["reason"].as_str().unwrap().contains("hwID"), "{out}");
    assert!(!cache.path().join("vcek").exists(), "nothing cached");
    // A v2 report does not name its product: --product is asked for.
    let v2 = vectors_dir().join("virtee-sev_milan_vcek_v2/report.bin");
    let (code, v, out) = verify_json(&args(
        v2.to_str().unwrap(),
        &kds.url(),
        cache_dir,
        "2025-01-01T00:00:00Z",
    ));
    assert_eq!(code, 2, "{out}");
    assert!(v["reason"].as_str().unwrap().contains("--product"), "{out}");
}

#[test]
fn fetch_writes_snpguest_files_and_an_offline_bundle_that_verifies_without_a_network() {
    let out_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let mut routes = routes_for("oak_genoa_vcek_v5", "Genoa");
    routes.extend(routes_for("oak_milan_vcek_v3_containers", "Milan"));
    let mut kds = KdsStandIn::start(routes, Behaviour::default());
    let url = kds.url();
    let genoa = vectors_dir().join("oak_genoa_vcek_v5");
    let genoa_report = genoa.join("report.bin");
    let genoa_report = genoa_report.to_str().unwrap();
    let certs = out_dir.path().join("certs");
    let certs_s = certs.to_str().unwrap();
    let common = ["--kds-url", url.as_str(), "--cache", cache_dir];

    let run = |args: &[&str]| {
        let o = cloister(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        o
    };
    let mut a = vec!["fetch", "vcek", "--report", genoa_report, "--out", certs_s];
    a.extend(common);
    run(&a);
    let mut a = vec!["fetch", "ca", "--product", "Genoa", "--out", certs_s];
    a.extend(common);
    run(&a);
    let crl = out_dir.path().join("genoa.crl");
    let mut a = vec![
        "fetch",
        "crl",
        "--product",
        "Genoa",
        "--out",
        crl.to_str().unwrap(),
    ];
    a.extend(common);
    run(&a);
    // snpguest's layout, byte for byte what AMD serves.
    assert_eq!(
        std::fs::read(certs.join("vcek.der")).unwrap(),
        std::fs::read(genoa.join("vcek.der")).unwrap()
    );
    assert_pem_eq(&certs.join("ask.pem"), &genoa.join("ask.pem"));
    assert_pem_eq(&certs.join("ark.pem"), &genoa.join("ark.pem"));
    assert_eq!(
        std::fs::read(&crl).unwrap(),
        std::fs::read(vectors_dir().join("openpcc_azure_genoa_vcek_v3_with_crls/crl_genoa.der"))
            .unwrap()
    );
    // The files verify with plain --certs/--crl.
    let o = cloister(&[
        "verify",
        "--report",
        genoa_report,
        "--certs",
        certs_s,
        "--crl",
        crl.to_str().unwrap(),
        "--at",
        "2025-09-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // One bundle for two reports; then verify with the bundle, no KDS, and an empty cache.
    let bundle = out_dir.path().join("collateral.json");
    let milan = vectors_dir().join("oak_milan_vcek_v3_containers/report.bin");
    let mut a = vec![
        "fetch",
        "bundle",
        "--report",
        genoa_report,
        milan.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ];
    a.extend(common);
    let o = run(&a);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(6 entries)"),
        "{}",
        text(&o)
    );
    kds.stop();
    let empty = tempfile::tempdir().unwrap();
    for (report, at) in [
        (genoa.join("report.bin"), "2025-09-01T00:00:00Z"),
        (milan, "2025-07-01T00:00:00Z"),
    ] {
        let o = cloister(&[
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--collateral",
            bundle.to_str().unwrap(),
            "--crl",
            "auto",
            "--kds-url",
            &url,
            "--cache",
            empty.path().to_str().unwrap(),
            "--at",
            at,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    // Bad product names and VLEK reports are usage errors.
    let o = cloister(&["fetch", "ca", "--product", "Naples", "--out", certs_s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let vlek = vectors_dir().join("trustee_milan_vlek_v3/report.bin");
    let mut a = vec![
        "fetch",
        "vcek",
        "--report",
        vlek.to_str().unwrap(),
        "--out",
        certs_s,
    ];
    a.extend(common);
    let o = cloister(&a);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VLEK"),
        "{}",
        text(&o)
    );
}

fn assert_pem_eq(a: &Path, b: &Path) {
    let der = |p: &Path| {
        cloister_attestation::snp::certs::AmdCertificate::from_pem(&std::fs::read(p).unwrap())
            .unwrap()
            .der()
            .to_vec()
    };
    assert_eq!(der(a), der(b), "{} vs {}", a.display(), b.display());
}
