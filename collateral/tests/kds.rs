//! The KDS client against a stand-in serving the real certificates of `../shared/vectors/snp` at AMD's exact
//! paths: fetch, cache, single flight, rate limits, budgets, poisoning, CRLs, bundles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kds_standin.rs"]
mod standin;

#[path = "kds/cache_files.rs"]
mod cache_files;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::Product;
use cloister_collateral::{Bundle, Collateral, Error, Item, KeyTree, RetryPolicy, Sources};
use standin::{routes_for, vectors, Behaviour, KdsStandIn};

fn report(set: &str) -> AttestationReport {
    AttestationReport::from_bytes(&std::fs::read(vectors().join(set).join("report.bin")).unwrap())
        .unwrap()
}

fn vcek_der(set: &str) -> Vec<u8> {
    std::fs::read(vectors().join(set).join("vcek.der")).unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        budget: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        max_unreachable_attempts: 3,
    }
}

fn client(url: Option<String>, cache: Option<&std::path::Path>) -> Collateral {
    Collateral::new(Sources {
        kds_url: url,
        cache_dir: cache.map(std::path::Path::to_path_buf),
        retry: fast_retry(),
        ..Sources::default()
    })
    .unwrap()
}

#[tokio::test]
async fn vceks_are_fetched_at_amds_exact_paths_and_served_from_the_cache_once_the_kds_is_gone() {
    let cache = tempfile::tempdir().unwrap();
    for (set, product) in [
        ("oak_genoa_vcek_v5", Product::Genoa),
        ("oak_milan_vcek_v3_containers", Product::Milan),
        ("oak_turin_vcek_v5", Product::Turin),
        ("virtee-sev_milan_vcek_v2", Product::Milan),
    ] {
        let mut kds = KdsStandIn::start(routes_for(set, product.name()), Behaviour::default());
        let c = client(Some(kds.url()), Some(cache.path()));
        let vcek = c.vcek(&report(set), product).await.unwrap();
        assert_eq!(vcek.der(), vcek_der(set), "{set}");
        assert_eq!(c.upstream_requests(), 1, "{set}: one request, for the VCEK");
        // The stand-in answers only exact URLs: the request above was AMD's path, byte for byte.
        assert_eq!(kds.requests().len(), 1);
        kds.stop();

        // A new client (a new process) with the KDS gone: the store answers.
        let offline = client(Some(kds.url()), Some(cache.path()));
        let again = offline.vcek(&report(set), product).await.unwrap();
        assert_eq!(again.der(), vcek_der(set));
        assert_eq!(offline.upstream_requests(), 0, "{set}");
    }
    // Trustee's layout: vcek/{hwid}/{tcb}_vcek.der.
    let r = report("oak_turin_vcek_v5");
    let turin = cache
        .path()
        .join("vcek")
        .join(hex::encode(&r.chip_id[..8]))
        .join("bl01_tee00_snp02_ucode71_fmc00_vcek.der");
    assert_eq!(std::fs::read(turin).unwrap(), vcek_der("oak_turin_vcek_v5"));
}

#[test]
fn the_stand_in_answers_only_exact_urls() {
    let kds = KdsStandIn::start(
        routes_for("oak_turin_vcek_v5", "Turin"),
        Behaviour::default(),
    );
    let r = report("oak_turin_vcek_v5");
    let short = hex::encode(&r.chip_id[..8]);
    let long = hex::encode(r.chip_id);
    let good = format!("/vcek/v1/Turin/{short}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(kds.url().trim_start_matches("http://")).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let first = get(&good);
    assert!(first.contains("200"), "{good}: {first}");
    for bad in [
        format!("/vcek/v1/Turin/{long}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!("/vcek/v1/Turin/{short}?blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!("/vcek/v1/Turin/{short}?fmcSPL=0&blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=71"),
        format!("/vcek/v1/turin/{short}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
    ] {
        assert!(get(&bad).contains("404"), "{bad}");
    }
}

#[tokio::test]
async fn twenty_concurrent_requests_for_one_vcek_make_one_upstream_request() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(
        routes_for(set, "Genoa"),
        Behaviour {
            delay: Duration::from_millis(300),
            ..Behaviour::default()
        },
    );
    let cache = tempfile::tempdir().unwrap();
    let c = Arc::new(client(Some(kds.url()), Some(cache.path())));
    let r = Arc::new(report(set));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, r) = (Arc::clone(&c), Arc::clone(&r));
            tokio::spawn(async move { c.vcek(&r, Product::Genoa).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().der(), vcek_der(set));
    }
    assert_eq!(kds.requests().len(), 1, "{:?}", kds.requests());
    assert_eq!(c.upstream_requests(), 1);
    println!(
        "single flight: 20 concurrent requests, {} upstream request(s)",
        kds.requests().len()
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(
        routes_for(set, "Genoa"),
        Behaviour {
            throttle_first: 2,
            retry_after: Some(1),
            ..Behaviour::default()
        },
    );
    let c = client(Some(kds.url()), None);
    let started = Instant::now();
    let vcek = c.vcek(&report(set), Product::Genoa).await.unwrap();
    assert_eq!(vcek.der(), vcek_der(set));
    assert_eq!(kds.requests().len(), 3);
    // Two waits of Retry-After: 1 s each (not the 100 ms backoff).
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_retry_after_the_backoff_doubles() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(
        routes_for(set, "Genoa"),
        Behaviour {
            throttle_first: 3,
            ..Behaviour::default()
        },
    );
    let c = client(Some(kds.url()), None);
    let started = Instant::now();
    c.vcek(&report(set), Product::Genoa).await.unwrap();
    // 100 + 200 + 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(kds.requests().len(), 4);
}

#[tokio::test]
async fn a_spent_budget_is_an_error_naming_the_url() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(
        routes_for(set, "Genoa"),
        Behaviour {
            throttle_first: u32::MAX,
            retry_after: Some(1),
            ..Behaviour::default()
        },
    );
    let c = Collateral::new(Sources {
        kds_url: Some(kds.url()),
        retry: RetryPolicy {
            budget: Duration::from_millis(2500),
            ..fast_retry()
        },
        ..Sources::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = c.vcek(&report(set), Product::Genoa).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{text}");
    assert!(
        text.contains(&kds.url()) && text.contains("/vcek/v1/Genoa/"),
        "{text}"
    );
    assert!(text.contains("HTTP 429 (Retry-After 1 s)"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A 404 is final at once.
    let none = KdsStandIn::start(Default::default(), Behaviour::default());
    let c = client(Some(none.url()), None);
    let err = c.vcek(&report(set), Product::Genoa).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(none.requests().len(), 1);
}

#[tokio::test]
async fn another_chips_vcek_or_a_foreign_root_is_refused_and_nothing_is_cached() {
    let set = "oak_genoa_vcek_v5";
    // The path of this chip, the VCEK of another Genoa chip (a real one, from another machine).
    let mut routes = routes_for(set, "Genoa");
    let path = routes.keys().find(|k| k.contains('?')).cloned().unwrap();
    routes.insert(path, vcek_der("trustee_azure-cvm_genoa_vcek_v3"));
    let kds = KdsStandIn::start(routes, Behaviour::default());
    let cache = tempfile::tempdir().unwrap();
    let c = client(Some(kds.url()), Some(cache.path()));
    let err = c.vcek(&report(set), Product::Genoa).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
    let text = err.to_string();
    assert!(text.contains("hwID") || text.contains("SPL"), "{text}");
    assert!(text.contains("nothing was cached"), "{text}");
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        0,
        "cache untouched"
    );

    // A chain whose ARK is self-signed but not AMD's (here: Milan's ARK offered as Genoa's, and a
    // simulated root).
    let mut routes = routes_for(set, "Genoa");
    let milan = vectors().join("oak_milan_vcek_v3_containers");
    let mut chain = std::fs::read(milan.join("ask.pem")).unwrap();
    chain.extend(std::fs::read(milan.join("ark.pem")).unwrap());
    routes.insert("/vcek/v1/Genoa/cert_chain".into(), chain);
    let kds = KdsStandIn::start(routes, Behaviour::default());
    let c = client(Some(kds.url()), Some(cache.path()));
    let err = c.chain(KeyTree::Vcek, Product::Genoa).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
    assert!(err.to_string().contains("not AMD's ARK-Genoa"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn chains_and_crls_are_verified_and_a_stale_crl_is_refetched_or_returned_with_the_reason() {
    let cache = tempfile::tempdir().unwrap();
    let mut kds = KdsStandIn::start(
        routes_for("oak_milan_vcek_v3_containers", "Milan"),
        Behaviour::default(),
    );
    let c = client(Some(kds.url()), Some(cache.path()));
    let chain = c.chain(KeyTree::Vcek, Product::Milan).await.unwrap();
    assert_eq!(chain.intermediate.subject_common_name(), "SEV-Milan");
    let vlek_chain_missing = c.chain(KeyTree::Vlek, Product::Milan).await.unwrap_err();
    assert!(matches!(vlek_chain_missing, Error::NotFound { .. }));
    let crl = c.crl(KeyTree::Vcek, Product::Milan).await.unwrap();
    assert_eq!(crl.crl.issuer_common_name(), "ARK-Milan");
    assert!(crl.refresh_failed.is_none());
    assert!(cache.path().join("vcek/Milan/crl.der").exists());
    assert!(cache.path().join("vcek/Milan/cert_chain.pem").exists());
    // The vectors' CRL is past its nextUpdate (May 2026): each call asks the KDS again ...
    let before = kds.requests().len();
    c.crl(KeyTree::Vcek, Product::Milan).await.unwrap();
    assert_eq!(kds.requests().len(), before + 1);
    // ... and with the KDS gone, the newest held CRL comes back with the reason.
    kds.stop();
    let stale = client(Some(kds.url()), Some(cache.path()))
        .crl(KeyTree::Vcek, Product::Milan)
        .await
        .unwrap();
    assert!(stale.refresh_failed.is_some());
    assert_eq!(stale.crl.issuer_common_name(), "ARK-Milan");
}

#[tokio::test]
async fn a_bundle_serves_offline_and_a_tampered_entry_is_refused() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(routes_for(set, "Genoa"), Behaviour::default());
    let online = client(Some(kds.url()), None);
    let r = report(set);
    let vcek = online.vcek(&r, Product::Genoa).await.unwrap();
    let id = cloister_collateral::VcekId::of(&r, Product::Genoa).unwrap();
    let mut bundle = Bundle::default();
    bundle.insert(&Item::Vcek(id), vcek.der().to_vec());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    bundle.write(&file).unwrap();
    let offline = Collateral::new(Sources {
        bundle: Some(file.clone()),
        ..Sources::default()
    })
    .unwrap();
    assert_eq!(
        offline.vcek(&r, Product::Genoa).await.unwrap().der(),
        vcek.der()
    );
    // Not in the bundle, no KDS: a clear error.
    let err = offline
        .chain(KeyTree::Vcek, Product::Turin)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Offline { .. }), "{err}");
    assert!(err.to_string().contains("--kds-url"), "{err}");
    // Another chip's VCEK under this chip's path: not used.
    let mut tampered = Bundle::default();
    tampered.insert(&Item::Vcek(id), vcek_der("trustee_azure-cvm_genoa_vcek_v3"));
    tampered.write(&file).unwrap();
    let offline = Collateral::new(Sources {
        bundle: Some(file.clone()),
        ..Sources::default()
    })
    .unwrap();
    assert!(offline.vcek(&r, Product::Genoa).await.is_err());
    // Garbage is a parse error naming the file.
    std::fs::write(&file, b"{\"format\":\"other\",\"entries\":{}}").unwrap();
    let err = Bundle::read(&file).unwrap_err().to_string();
    assert!(
        err.contains("bundle.json") && err.contains("format"),
        "{err}"
    );
}

#[tokio::test]
async fn thim_answers_are_read_and_garbage_is_an_error() {
    let vcek_pem = std::fs::read_to_string(vectors().join("oak_genoa_vcek_v5/vcek.pem")).unwrap();
    let body = serde_json::json!({
        "vcekCert": vcek_pem,
        "certificateChain": "",
        "tcbm": "5419000000000010",
        "cacheControl": "86400"
    });
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        "/metadata/THIM/amd/certification".to_owned(),
        serde_json::to_vec(&body).unwrap(),
    );
    routes.insert("/garbage".to_owned(), b"{\"vcekCert\": 3}".to_vec());
    let thim = KdsStandIn::start(routes, Behaviour::default());
    let cert = cloister_collateral::thim::fetch_vcek(&format!(
        "{}/metadata/THIM/amd/certification",
        thim.url()
    ))
    .await
    .unwrap();
    assert_eq!(cert.der(), vcek_der("oak_genoa_vcek_v5"));
    assert!(
        cloister_collateral::thim::fetch_vcek(&format!("{}/garbage", thim.url()))
            .await
            .is_err()
    );
    assert!(
        cloister_collateral::thim::fetch_vcek(&format!("{}/none", thim.url()))
            .await
            .is_err()
    );
}
