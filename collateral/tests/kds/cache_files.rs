//! The on-disk cache and user-named files as an attacker who can write into a shared cache directory (or
//! hand a verifier a FIFO or a device) would use them: planted symlinks, FIFOs, `/dev/zero`, oversized
//! entries, and an older genuine CRL put back in place of a newer one.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cloister_attestation::snp::Product;
use cloister_collateral::error::FileKind;
use cloister_collateral::store::Store;
use cloister_collateral::{files, Collateral, Error, KeyTree, Sources, VcekId};
use cloister_sim::{SimConfig, SimPlatform, SystemRandom};

use super::standin::{vectors, Behaviour, KdsStandIn};
use super::{fast_retry, report};

/// Runs `f` on its own thread and fails the test if it has not returned within `limit`: a read that hangs on
/// a FIFO fails here instead of hanging the test run.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?} (hung)"))
}

fn symlink(target: &Path, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn victim_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()[..])
        .chars()
        .take(40)
        .collect()
}

fn is_regular_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_file())
        .unwrap_or(false)
}

/// The KDS chain body of Milan (ASK then ARK, PEM) and AMD's Milan CRL, as the vectors hold them.
fn milan_chain_and_crl() -> (Vec<u8>, Vec<u8>) {
    let dir = vectors().join("oak_milan_vcek_v3_containers");
    let mut chain = std::fs::read(dir.join("ask.pem")).unwrap();
    chain.extend(std::fs::read(dir.join("ark.pem")).unwrap());
    let crl = std::fs::read(
        vectors()
            .join("openpcc_azure_genoa_vcek_v3_with_crls")
            .join("crl_milan.der"),
    )
    .unwrap();
    (chain, crl)
}

#[test]
fn a_planted_symlink_at_a_temp_name_is_not_followed() {
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let store = Store::open(cache.path()).unwrap();
    let (chain, crl) = milan_chain_and_crl();

    // Symlinks to the victim at every temporary name a writer of this process could pick.
    let chain_path = store.chain_path(KeyTree::Vcek, Product::Milan);
    let dir = chain_path.parent().unwrap().to_path_buf();
    for n in 0..2000 {
        symlink(
            &victim,
            &dir.join(format!(".tmp-{}-{n}", std::process::id())),
        );
    }
    store
        .put_chain(KeyTree::Vcek, Product::Milan, &chain)
        .unwrap();
    assert_eq!(victim_text(&victim), "precious", "the victim was written");
    assert!(is_regular_file(&chain_path));
    assert_eq!(
        store.get_chain(KeyTree::Vcek, Product::Milan).unwrap(),
        Some(chain)
    );

    // A symlink at the entry's own path is replaced by the rename, not written through.
    let crl_path = store.crl_path(KeyTree::Vcek, Product::Milan);
    symlink(&victim, &crl_path);
    store.put_crl(KeyTree::Vcek, Product::Milan, &crl).unwrap();
    assert_eq!(victim_text(&victim), "precious", "the victim was written");
    assert!(is_regular_file(&crl_path), "the symlink was replaced");
    assert_eq!(std::fs::read(&crl_path).unwrap(), crl);

    // No temporary file is left behind: only the planted links and the two entries.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(&format!(".tmp-{}-", std::process::id())))
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["cert_chain.pem", "crl.der"]);
}

#[test]
fn a_symlinked_cache_subdirectory_is_refused_but_a_symlinked_root_is_followed() {
    let (chain, _) = milan_chain_and_crl();

    // The root the user named may be a symlink (a cache on another volume).
    let real = tempfile::tempdir().unwrap();
    let links = tempfile::tempdir().unwrap();
    let root = links.path().join("cache");
    symlink(real.path(), &root);
    let store = Store::open(&root).unwrap();
    store
        .put_chain(KeyTree::Vcek, Product::Milan, &chain)
        .unwrap();
    assert_eq!(
        std::fs::read(real.path().join("vcek/Milan/cert_chain.pem")).unwrap(),
        chain
    );
    assert_eq!(
        store.get_chain(KeyTree::Vcek, Product::Milan).unwrap(),
        Some(chain.clone())
    );

    // A directory inside the store that is a symlink was not made by a writer of the store: neither written
    // through nor read through.
    let cache = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("cert_chain.pem"), &chain).unwrap();
    symlink(elsewhere.path(), &cache.path().join("vcek").join("Milan"));
    let store = Store::open(cache.path()).unwrap();
    let err = store
        .put_chain(KeyTree::Vcek, Product::Milan, b"other")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Symlink { path } if path.ends_with("vcek/Milan")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(elsewhere.path().join("cert_chain.pem")).unwrap(),
        chain,
        "nothing written through the link"
    );
    let err = store.get_chain(KeyTree::Vcek, Product::Milan).unwrap_err();
    assert!(matches!(err, Error::Symlink { .. }), "{err}");
}

#[test]
fn a_cache_entry_that_is_a_fifo_or_dev_zero_is_refused_quickly() {
    let limit = Duration::from_secs(2);
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();

    // The cached VCEK is a symlink to /dev/zero: an error, not a read until memory runs out.
    let id = VcekId::of(&report("oak_genoa_vcek_v5"), Product::Genoa).unwrap();
    symlink(Path::new("/dev/zero"), &store.vcek_path(&id));
    let s = store.clone();
    let err = within(limit, "a VCEK linked to /dev/zero", move || {
        s.get_vcek(&id).map(|b| b.map(|b| b.len()))
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::Symlink { path } if path.ends_with(store.vcek_path(&id).file_name().unwrap())),
        "{err}"
    );
    assert!(err.to_string().contains("symlink"), "{err}");

    // The cached chain is a FIFO nobody writes to: an error, not a read that waits forever.
    let chain_path = store.chain_path(KeyTree::Vcek, Product::Genoa);
    mkfifo(&chain_path);
    let err = within(limit, "a FIFO chain", move || {
        store
            .get_chain(KeyTree::Vcek, Product::Genoa)
            .map(|b| b.map(|b| b.len()))
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::NotARegularFile { path, kind: FileKind::Fifo } if path.ends_with("cert_chain.pem")),
        "{err}"
    );
    assert!(err.to_string().contains("FIFO"), "{err}");

    // The same for files a user names (`--policy`, `--crl`, certificates): a FIFO or a device is refused,
    // even through a symlink (which is otherwise allowed there).
    let user = tempfile::tempdir().unwrap();
    let fifo = user.path().join("policy.toml");
    mkfifo(&fifo);
    let zero = user.path().join("ark.pem");
    symlink(Path::new("/dev/zero"), &zero);
    let err = within(limit, "a FIFO policy", move || {
        files::read_policy(&fifo).map(drop)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("FIFO") && err.contains("policy.toml"), "{err}");
    let z = zero.clone();
    let err = within(limit, "a certificate linked to /dev/zero", move || {
        files::read_certificate(&z).map(drop)
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::NotARegularFile { path, kind: FileKind::CharDevice } if path.ends_with("ark.pem")),
        "{err}"
    );
    assert!(err.to_string().contains("character device"), "{err}");
    let err = within(limit, "any file linked to /dev/zero", move || {
        files::read(&zero).map(|b| b.len())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotARegularFile {
                kind: FileKind::CharDevice,
                ..
            }
        ),
        "{err}"
    );
    // A directory is not a file either.
    let err = files::read(user.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotARegularFile {
                kind: FileKind::Directory,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_oversized_cache_entry_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let write = |path: &Path, len: usize| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![b'A'; len]).unwrap();
    };

    // Each entry is bounded like the KDS answer it stands for: a VCEK 16 KiB, a chain 64 KiB, a CRL 1 MiB.
    let id = VcekId::of(&report("oak_genoa_vcek_v5"), Product::Genoa).unwrap();
    write(&store.vcek_path(&id), 16 * 1024 + 1);
    let err = store.get_vcek(&id).unwrap_err().to_string();
    assert!(err.contains("_vcek.der") && err.contains("16384"), "{err}");
    write(
        &store.chain_path(KeyTree::Vcek, Product::Genoa),
        64 * 1024 + 1,
    );
    let err = store
        .get_chain(KeyTree::Vcek, Product::Genoa)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cert_chain.pem") && err.contains("65536") && err.contains("65537"),
        "{err}"
    );
    write(
        &store.crl_path(KeyTree::Vcek, Product::Genoa),
        1024 * 1024 + 1,
    );
    let err = store.get_crl(KeyTree::Vcek, Product::Genoa).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { path, size: 1_048_577, cap: 1_048_576 } if path.ends_with("crl.der")),
        "{err}"
    );
    // At the limit is fine (what is read is verified later).
    write(&store.crl_path(KeyTree::Vcek, Product::Genoa), 1024 * 1024);
    assert_eq!(
        store
            .get_crl(KeyTree::Vcek, Product::Genoa)
            .unwrap()
            .map(|b| b.len()),
        Some(1024 * 1024)
    );

    // User-named certificates, CRLs and policies: 1 MiB.
    let user = tempfile::tempdir().unwrap();
    for name in ["ark.pem", "crl.der", "policy.toml"] {
        write(&user.path().join(name), 1024 * 1024 + 1);
    }
    for err in [
        files::read_certificate(&user.path().join("ark.pem")).map(drop),
        files::read_crl(&user.path().join("crl.der")).map(drop),
        files::read_policy(&user.path().join("policy.toml")).map(drop),
    ] {
        let err = err.unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: 1_048_577,
                    cap: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[tokio::test]
async fn the_client_ignores_a_planted_cache_entry_and_replaces_it_with_a_verified_one() {
    let set = "oak_genoa_vcek_v5";
    let kds = KdsStandIn::start(
        super::standin::routes_for(set, "Genoa"),
        Behaviour::default(),
    );
    let cache = tempfile::tempdir().unwrap();
    let store = Store::open(cache.path()).unwrap();
    let r = report(set);
    let id = VcekId::of(&r, Product::Genoa).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The VCEK entry links elsewhere; the chain entry is a FIFO.
    symlink(&victim, &store.vcek_path(&id));
    mkfifo(&store.chain_path(KeyTree::Vcek, Product::Genoa));
    let c = Collateral::new(Sources {
        kds_url: Some(kds.url()),
        cache_dir: Some(cache.path().to_path_buf()),
        retry: fast_retry(),
        ..Sources::default()
    })
    .unwrap();
    let vcek = c.vcek(&r, Product::Genoa).await.unwrap();
    c.chain(KeyTree::Vcek, Product::Genoa).await.unwrap();
    assert_eq!(victim_text(&victim), "precious");
    assert!(is_regular_file(&store.vcek_path(&id)));
    assert!(is_regular_file(
        &store.chain_path(KeyTree::Vcek, Product::Genoa)
    ));
    assert_eq!(store.get_vcek(&id).unwrap().unwrap(), vcek.der());
}

/// Where the stand-in's CRL answers come from, switchable while it runs.
fn crl_kds(
    served: &Arc<Mutex<Vec<u8>>>,
    before_answering: Option<(PathBuf, Vec<u8>)>,
) -> KdsStandIn {
    let served = Arc::clone(served);
    KdsStandIn::start_with(
        Box::new(move |path| {
            if path != "/vcek/v1/Genoa/crl" {
                return None;
            }
            if let Some((file, body)) = &before_answering {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, body).unwrap();
            }
            Some(served.lock().unwrap().clone())
        }),
        Behaviour::default(),
    )
}

#[tokio::test]
async fn an_older_genuine_crl_does_not_replace_a_newer_one() {
    const T: i64 = 1_750_000_000;
    let sim_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let sim = SimPlatform::init(
        &sim_dir.path().join("platform"),
        &SimConfig::new(Product::Genoa, T - 86_400),
        &SystemRandom::new(),
    )
    .unwrap();
    eprintln!("simulated platform in {:?}", started.elapsed());
    let ark = files::read_certificate(&sim.certs_dir().join("ark.pem")).unwrap();
    // Two genuine CRLs of one ARK (the simulator numbers a CRL by its thisUpdate). The older one stays
    // current long after the newer one's nextUpdate: only its number says it is older.
    let newer = sim.issue_crl(&[], T + 200, T + 300).unwrap();
    let older = sim.issue_crl(&[], T + 100, T + 100_000).unwrap();
    let (n_newer, n_older) = ((T + 200).to_string(), (T + 100).to_string());

    let served = Arc::new(Mutex::new(newer.clone()));
    let kds = crl_kds(&served, None);
    let cache = tempfile::tempdir().unwrap();
    let sources = |url: String, cache: &Path| Sources {
        kds_url: Some(url),
        cache_dir: Some(cache.to_path_buf()),
        simulated_root: Some(ark.clone()),
        retry: fast_retry(),
        ..Sources::default()
    };
    let c = Collateral::new(sources(kds.url(), cache.path())).unwrap();
    let store = Store::open(cache.path()).unwrap();
    let crl_path = store.crl_path(KeyTree::Vcek, Product::Genoa);
    let stored = || store.get_crl(KeyTree::Vcek, Product::Genoa).unwrap();

    // The newer CRL is fetched and cached.
    let got = c
        .crl_at(KeyTree::Vcek, Product::Genoa, T + 250)
        .await
        .unwrap();
    assert_eq!(got.crl.der(), newer);
    assert_eq!(stored().as_ref(), Some(&newer));

    // The mirror rolls back: past the newer CRL's nextUpdate the client asks again and gets the older one.
    // Refused, both numbers named; the newer one is kept (stale, with the reason, for the policy to judge).
    *served.lock().unwrap() = older.clone();
    let got = c
        .crl_at(KeyTree::Vcek, Product::Genoa, T + 400)
        .await
        .unwrap();
    assert_eq!(got.crl.der(), newer);
    let why = got.refresh_failed.expect("the refusal is the reason");
    assert!(why.contains(&n_newer) && why.contains(&n_older), "{why}");
    assert_eq!(stored().as_ref(), Some(&newer));

    // Someone puts the older (genuine, still current) CRL in the cache file mid-run: not taken.
    std::fs::write(&crl_path, &older).unwrap();
    let got = c
        .crl_at(KeyTree::Vcek, Product::Genoa, T + 400)
        .await
        .unwrap();
    assert_eq!(
        got.crl.der(),
        newer,
        "the older CRL from the cache was used"
    );

    // Someone deletes the cache file mid-run while the mirror serves the older one: the client remembers
    // the highest CRL it has seen.
    std::fs::remove_file(&crl_path).unwrap();
    let got = c
        .crl_at(KeyTree::Vcek, Product::Genoa, T + 400)
        .await
        .unwrap();
    assert_eq!(
        got.crl.der(),
        newer,
        "the older CRL from the mirror was used"
    );
    assert!(got.refresh_failed.is_some());
    assert_ne!(stored().as_ref(), Some(&older), "the older CRL was cached");

    // Another process caches the newer CRL while this one fetches the older one: the cached newer one stays,
    // and is the one returned.
    let cache2 = tempfile::tempdir().unwrap();
    let path2 = Store::open(cache2.path())
        .unwrap()
        .crl_path(KeyTree::Vcek, Product::Genoa);
    let kds2 = crl_kds(&served, Some((path2.clone(), newer.clone())));
    let c2 = Collateral::new(sources(kds2.url(), cache2.path())).unwrap();
    let got = c2
        .crl_at(KeyTree::Vcek, Product::Genoa, T + 250)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&path2).unwrap(),
        newer,
        "the newer CRL was overwritten"
    );
    assert_eq!(got.crl.der(), newer);
}
