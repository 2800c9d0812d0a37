//! AMD's URL formats and Trustee's cache keys, on the real reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloister_attestation::snp::report::AttestationReport;

use super::*;

fn report(set: &str) -> AttestationReport {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/snp")
        .join(set)
        .join("report.bin");
    AttestationReport::from_bytes(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn genoa_and_milan_use_the_whole_chip_id_and_two_digit_spls() {
    let r = report("oak_genoa_vcek_v5"); // bl=10 tee=0 snp=25 ucode=84
    let id = VcekId::of(&r, product_of(&r).unwrap()).unwrap();
    assert_eq!(id.hwid().len(), 128);
    assert_eq!(id.hwid(), hex::encode(r.chip_id));
    assert_eq!(
        id.path(),
        format!(
            "/vcek/v1/Genoa/{}?blSPL=10&teeSPL=00&snpSPL=25&ucodeSPL=84",
            hex::encode(r.chip_id)
        )
    );
    assert_eq!(id.tcb_prefix(), "bl10_tee00_snp25_ucode84");
    let m = report("oak_milan_vcek_v3_containers"); // bl=4 tee=0 snp=24 ucode=219
    let id = VcekId::of(&m, product_of(&m).unwrap()).unwrap();
    assert!(id.path().starts_with("/vcek/v1/Milan/"));
    assert!(id
        .path()
        .ends_with("?blSPL=04&teeSPL=00&snpSPL=24&ucodeSPL=219"));
}

#[test]
fn turin_uses_eight_bytes_of_chip_id_and_fmc_first() {
    let r = report("oak_turin_vcek_v5"); // fmc=0 bl=1 tee=0 snp=2 ucode=71
    let id = VcekId::of(&r, Product::Turin).unwrap();
    assert_eq!(id.hwid(), hex::encode(&r.chip_id[..8]));
    assert_eq!(
        id.path(),
        format!(
            "/vcek/v1/Turin/{}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71",
            hex::encode(&r.chip_id[..8])
        )
    );
    // Trustee's store puts FMC last.
    assert_eq!(id.tcb_prefix(), "bl01_tee00_snp02_ucode71_fmc00");
}

#[test]
fn vlek_reports_and_masked_chip_ids_are_not_looked_up() {
    let r = report("trustee_milan_vlek_v3");
    let err = VcekId::of(&r, Product::Milan).unwrap_err().to_string();
    assert!(err.contains("VLEK"), "{err}");
    let mut masked = report("oak_genoa_vcek_v5");
    masked.chip_id = [0; 64];
    assert!(VcekId::of(&masked, Product::Genoa).is_err());
    let mut turin = report("oak_turin_vcek_v5");
    turin.chip_id[40] = 1;
    assert!(VcekId::of(&turin, Product::Turin).is_err());
}

#[test]
fn chain_and_crl_paths_and_base_urls() {
    assert_eq!(
        chain_path(KeyTree::Vcek, Product::Genoa),
        "/vcek/v1/Genoa/cert_chain"
    );
    assert_eq!(
        chain_path(KeyTree::Vlek, Product::Milan),
        "/vlek/v1/Milan/cert_chain"
    );
    assert_eq!(
        crl_path(KeyTree::Vlek, Product::Turin),
        "/vlek/v1/Turin/crl"
    );
    assert_eq!(
        base_url("https://kdsintf.amd.com/").unwrap(),
        DEFAULT_KDS_URL
    );
    assert_eq!(
        base_url("http://127.0.0.1:7000/collateral").unwrap(),
        "http://127.0.0.1:7000/collateral"
    );
    for bad in ["ftp://x", "kdsintf.amd.com", "http://x/?a=b", "not a url"] {
        assert!(base_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn paths_parse_back_only_in_their_canonical_spelling() {
    for set in [
        "oak_genoa_vcek_v5",
        "oak_turin_vcek_v5",
        "oak_milan_vcek_v3_containers",
    ] {
        let r = report(set);
        let item = Item::Vcek(VcekId::of(&r, product_of(&r).unwrap()).unwrap());
        assert_eq!(Item::from_path(&item.path()), Some(item), "{set}");
    }
    for item in [
        Item::Chain(KeyTree::Vlek, Product::Turin),
        Item::Crl(KeyTree::Vcek, Product::Milan),
    ] {
        assert_eq!(Item::from_path(&item.path()), Some(item));
    }
    let r = report("oak_turin_vcek_v5");
    let short = hex::encode(&r.chip_id[..8]);
    let long = hex::encode(r.chip_id);
    for bad in [
        format!("/vcek/v1/Turin/{long}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!("/vcek/v1/Turin/{short}?blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!("/vcek/v1/Turin/{short}?fmcSPL=0&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!("/vcek/v1/Turin/{short}?blSPL=01&fmcSPL=00&teeSPL=00&snpSPL=02&ucodeSPL=71"),
        format!(
            "/vcek/v1/Turin/{}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71",
            short.to_uppercase()
        ),
        "/vcek/v1/turin/cert_chain".into(),
        "/vlek/v1/Milan/cert_chain?x=1".into(),
        "/vcek/v2/Milan/crl".into(),
        "/vcek/v1/Milan/crl/".into(),
        "vcek/v1/Milan/crl".into(),
        format!("/vlek/v1/Turin/{short}?fmcSPL=00&blSPL=01&teeSPL=00&snpSPL=02&ucodeSPL=71"),
    ] {
        assert_eq!(Item::from_path(&bad), None, "{bad}");
    }
}
