//! Issue 11 end to end on the simulated platform: the enclave's firmware gives no certificates (as on
//! today's KVM, which dropped the extended-report certificate table), so the enclave asks the host's
//! `/collateral` service; the host fetches from a KDS stand-in (serving the simulator's certificates at AMD's
//! exact paths), verifies and caches; the evidence carries the VCEK, and the client verifies it with no
//! certificates of its own (only the simulated root it chose to trust).

use std::ffi::OsString;
use std::path::Path;

use cloister_attestation::snp::certs::AmdCertificate;

use crate::e2e::{deploy, mlp, mlp_input, READY};

#[path = "../../collateral/tests/support/kds_standin.rs"]
mod standin;

use standin::{vcek_path, Behaviour, KdsStandIn};

/// What the stand-in serves: the simulator's VCEK at AMD's path for its hwID and SPLs, and its chain. Read
/// at each request: the simulator's state exists only once the deployment has made it.
fn simulator_kds(certs: &Path, path: &str) -> Option<Vec<u8>> {
    let read = |name: &str| std::fs::read(certs.join(name)).ok();
    let vcek = AmdCertificate::from_pem(&read("vcek.pem")?).ok()?;
    let ext = vcek.amd_extensions().ok()?;
    let product = ext.product_name.split('-').next()?.to_owned();
    let mut chip_id = ext.hw_id.clone()?;
    chip_id.resize(64, 0);
    let want = vcek_path(
        &product,
        &chip_id,
        [ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl],
        ext.fmc_spl,
    );
    if path == want {
        return Some(vcek.der().to_vec());
    }
    if path == format!("/vcek/v1/{product}/cert_chain") {
        let mut chain = read("ask.pem")?;
        chain.extend(read("ark.pem")?);
        return Some(chain);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_without_certificates_gets_its_vcek_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("sim/certs");
    let served = certs.clone();
    let kds = KdsStandIn::start_with(
        Box::new(move |path| simulator_kds(&served, path)),
        Behaviour::default(),
    );
    let cache = dir.path().join("host-collateral");
    let host_args: Vec<OsString> = vec![
        "--kds-url".into(),
        kds.url().into(),
        "--collateral-cache".into(),
        cache.clone().into(),
        "--collateral-sim-root".into(),
        certs.join("ark.pem").into(),
    ];
    let d = deploy(dir.path(), &mlp(), "mlp", |o| {
        o.enclave_config_extra = "sim_withhold_certificates = true\n".into();
        o.host_args = host_args;
    })
    .await;
    // The client's policy names the simulated root and nothing else: the chain comes with the evidence.
    let mut session = d.wait_ready(READY).await.expect("ready");
    let out = session.infer("mlp", &mlp_input(), false).await.unwrap();
    assert_eq!(out.outputs.len(), 1);

    // The host fetched the VCEK and the chain once each (the enclave's key release and the client's
    // attestation were served from memory), and cached them in Trustee's layout.
    let asked = kds.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked
            .iter()
            .any(|p| p.starts_with("/vcek/v1/") && p.contains("?blSPL=")),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|p| p.ends_with("/cert_chain")),
        "{asked:?}"
    );
    let stored: Vec<_> = walk(&cache);
    assert!(
        stored.iter().any(|p| p.ends_with("_vcek.der")),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|p| p.ends_with("cert_chain.pem")),
        "{stored:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("host.log")).unwrap();
    assert!(log.contains("collateral: serving"), "{log}");
    d.stop().await;
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
