//! `cloister measure` against the reference tool: every vector of `tests/data/measure/vectors.json` was
//! computed by sev-snp-measure (command recorded beside it), the ID block of `id_block.json` by its
//! snp-create-id-block. Vectors on Debian's OVMF (`ovmf` package) skip loudly when that exact file is
//! not installed, and fail instead when CLOISTER_REQUIRE_ALL_TESTS is set (CI).

use std::path::{Path, PathBuf};

use base64::Engine;
use cloister_attestation::snp::measurement::id_block::{self, offsets, IdBlockFields, SigningKey};
use ring::digest::{digest, SHA256};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

use crate::common::{cloister, json_file};

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/measure")
}

fn skip_or_fail(msg: &str) {
    if std::env::var_os("CLOISTER_REQUIRE_ALL_TESTS").is_some() {
        panic!("{msg} (CLOISTER_REQUIRE_ALL_TESTS is set)");
    }
    eprintln!("SKIPPED: {msg}");
}

/// Splits a command as Python's `shlex.join` writes it (words, or single-quoted words).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn sha256_file(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(digest(&SHA256, &b)))
}

/// Is Debian's OVMF the one the vectors were made with? Says why not.
fn debian_ovmf_matches(vectors: &serde_json::Value) -> Result<(), String> {
    let want = vectors["inputs_sha256"]["@DEBIAN_OVMF@"].as_str().unwrap();
    match sha256_file(Path::new(DEBIAN_OVMF)) {
        None => Err(format!(
            "{DEBIAN_OVMF} is missing (apt-get install ovmf): the vectors on Debian's OVMF did not run"
        )),
        Some(got) if got != want => Err(format!(
            "{DEBIAN_OVMF} has SHA-256 {got}, the vectors were made with {want} (ovmf \
             2022.11-6+deb12u2): regenerate tests/data/measure/vectors.json"
        )),
        Some(_) => Ok(()),
    }
}

/// The cloister arguments of a recorded sev-snp-measure command (`--mode snp` dropped, paths resolved).
fn cloister_args(command: &str) -> Vec<String> {
    let words = shell_words(command);
    assert_eq!(
        &words[..3],
        ["sev-snp-measure", "--mode", "snp"],
        "{command}"
    );
    let data = data_dir().display().to_string();
    let mut args = vec!["measure".to_owned()];
    args.extend(words[3..].iter().map(|w| {
        w.replace("@DEBIAN_OVMF@", DEBIAN_OVMF)
            .replace("@DATA@", &data)
    }));
    args
}

fn run_measure(args: &[String]) -> (String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cloister(&refs);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout.lines().last().unwrap_or("").to_owned(), stderr)
}

#[test]
fn measure_matches_sev_snp_measure_vectors() {
    let vectors = json_file(&data_dir().join("vectors.json"));
    // The committed inputs are the ones the vectors were made with.
    for name in ["synthetic-amdsev-ovmf.fd", "kernel.bin", "initrd.bin"] {
        assert_eq!(
            sha256_file(&data_dir().join(name)).as_deref(),
            vectors["inputs_sha256"][name].as_str(),
            "{name}"
        );
    }
    let debian = debian_ovmf_matches(&vectors);
    if let Err(msg) = &debian {
        skip_or_fail(msg);
    }
    let (mut ran, mut ec2) = (0, 0);
    for v in vectors["vectors"].as_array().unwrap() {
        let command = v["command"].as_str().unwrap();
        if command.contains("@DEBIAN_OVMF@") && debian.is_err() {
            continue;
        }
        let (digest, _) = run_measure(&cloister_args(command));
        assert_eq!(digest, v["measurement"].as_str().unwrap(), "{command}");
        ran += 1;
        ec2 += usize::from(command.contains("--vmm-type ec2"));
    }
    eprintln!("{ran} sev-snp-measure vectors matched ({ec2} of them EC2)");
    assert!(ran >= 25 && ec2 >= 6, "too few vectors ran: {ran}");
}

/// virtee/sev 8.0.0's measurement module agrees with sev-snp-measure (and us) for QEMU, and not for EC2:
/// its EC2 VMSA still has RDX = 0 where sev-snp-measure (since April 2026) and EC2 put 0x600.
#[test]
fn sev_crate_agrees_for_qemu_and_differs_for_ec2() {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures, VMMType};

    let vectors = json_file(&data_dir().join("vectors.json"));
    let mut checked = 0;
    for v in vectors["vectors"].as_array().unwrap() {
        let command = v["command"].as_str().unwrap();
        if command.contains("@DEBIAN_OVMF@") || command.contains("gce") {
            continue; // the synthetic image suffices; sev 8.0.0 has no GCE type
        }
        let args = cloister_args(command);
        let get = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].clone())
        };
        let vmm = get("--vmm-type").unwrap();
        let digest = snp_calc_launch_digest(SnpMeasurementArgs {
            vcpus: get("--vcpus").unwrap().parse().unwrap(),
            vcpu_type: CpuType::try_from(get("--vcpu-type").unwrap().as_str()).unwrap(),
            ovmf_file: get("--ovmf").unwrap().into(),
            guest_features: GuestFeatures::default(),
            kernel_file: get("--kernel").map(PathBuf::from),
            initrd_file: get("--initrd").map(PathBuf::from),
            append: get("--append").as_deref(),
            ovmf_hash_str: None,
            vmm_type: Some(vmm.parse::<VMMType>().unwrap()),
        })
        .unwrap()
        .get_hex_ld();
        let reference = v["measurement"].as_str().unwrap();
        if vmm == "ec2" {
            assert_ne!(digest, reference, "sev's EC2 VMSA was fixed: {command}");
        } else {
            assert_eq!(digest, reference, "{command}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn id_block_matches_snp_create_id_block() {
    let v = json_file(&data_dir().join("id_block.json"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let ld: [u8; 48] = hex::decode(v["measurement"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let read_key = |name: &str, which| {
        SigningKey::from_pem_or_der(
            &std::fs::read(data_dir().join(name)).unwrap(),
            which,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
    };
    // id_key.pem is SEC1 ("EC PRIVATE KEY"), author_key.pem PKCS#8 ("PRIVATE KEY").
    let id_key = read_key("id_key.pem", "ID");
    let author = read_key("author_key.pem", "author");
    assert_eq!(
        hex::encode(id_key.digest()),
        v["id_key_digest"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(author.digest()),
        v["author_key_digest"].as_str().unwrap()
    );

    let block = id_block::id_block(&ld, &IdBlockFields::default());
    assert_eq!(b64.encode(block), v["id_block"].as_str().unwrap());

    // ECDSA signatures are randomised: every byte but the two signatures must be the reference's, and
    // both our signatures and the reference's must verify under the keys in the structure.
    let theirs = b64.decode(v["id_auth"].as_str().unwrap()).unwrap();
    let ours = id_block::id_auth(
        &block,
        &id_key,
        Some(&author),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    assert_eq!(theirs.len(), id_block::ID_AUTH_LEN);
    let sigs = [
        offsets::ID_BLOCK_SIG..offsets::ID_BLOCK_SIG + id_block::SIG_LEN,
        offsets::ID_KEY_SIG..offsets::ID_KEY_SIG + id_block::SIG_LEN,
    ];
    for i in 0..id_block::ID_AUTH_LEN {
        if !sigs.iter().any(|r| r.contains(&i)) {
            assert_eq!(ours[i], theirs[i], "ID_AUTH_INFO byte {i:#x}");
        }
    }
    for auth in [&ours[..], &theirs[..]] {
        check_id_auth(&block, auth);
    }
}

/// Verifies both signatures of an ID_AUTH_INFO the way the AMD-SP does.
fn check_id_auth(block: &[u8], auth: &[u8]) {
    let key = |at: usize| -> Vec<u8> {
        let k = &auth[at..at + id_block::PUBKEY_LEN];
        assert_eq!(&k[..4], &2u32.to_le_bytes(), "curve P-384");
        let mut point = vec![4u8];
        point.extend(k[4..4 + 48].iter().rev());
        point.extend(k[4 + 72..4 + 72 + 48].iter().rev());
        point
    };
    let sig = |at: usize| -> Vec<u8> {
        let s = &auth[at..at + id_block::SIG_LEN];
        assert!(s[48..72].iter().all(|b| *b == 0) && s[72 + 48..].iter().all(|b| *b == 0));
        let mut rs: Vec<u8> = s[..48].iter().rev().copied().collect();
        rs.extend(s[72..72 + 48].iter().rev());
        rs
    };
    let id_pub = key(offsets::ID_KEY);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &id_pub)
        .verify(block, &sig(offsets::ID_BLOCK_SIG))
        .expect("ID_BLOCK_SIG verifies under ID_KEY");
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &key(offsets::AUTHOR_KEY))
        .verify(
            &auth[offsets::ID_KEY..offsets::ID_KEY + id_block::PUBKEY_LEN],
            &sig(offsets::ID_KEY_SIG),
        )
        .expect("ID_KEY_SIG verifies under AUTHOR_KEY");
}

#[test]
fn measure_writes_id_block_and_auth_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir();
    let (block, auth) = (dir.path().join("id-block"), dir.path().join("id-auth"));
    let path = |p: &Path| p.display().to_string();
    let out = cloister(&[
        "measure",
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Genoa",
        "--vmm-type",
        "QEMU",
        "--ovmf",
        &path(&data.join("synthetic-amdsev-ovmf.fd")),
        "--kernel",
        &path(&data.join("kernel.bin")),
        "--id-key",
        &path(&data.join("id_key.pem")),
        "--author-key",
        &path(&data.join("author_key.pem")),
        "--id-block-out",
        &path(&block),
        "--id-auth-out",
        &path(&auth),
        "--family-id",
        "00112233445566778899aabbccddeeff",
        "--guest-svn",
        "7",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let ld = hex::decode(lines.last().unwrap()).unwrap();
    assert_eq!(ld.len(), 48);
    let ref_digests = json_file(&data.join("id_block.json"));
    assert_eq!(
        lines[0],
        format!(
            "id-key-digest: {}",
            ref_digests["id_key_digest"].as_str().unwrap()
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "author-key-digest: {}",
            ref_digests["author_key_digest"].as_str().unwrap()
        )
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let block = b64.decode(std::fs::read(&block).unwrap()).unwrap();
    let auth = b64.decode(std::fs::read(&auth).unwrap()).unwrap();
    assert_eq!(&block[..48], &ld[..]);
    assert_eq!(
        &block[0x30..0x40],
        &hex::decode("00112233445566778899aabbccddeeff").unwrap()[..]
    );
    assert_eq!(&block[0x50..0x54], &1u32.to_le_bytes());
    assert_eq!(&block[0x54..0x58], &7u32.to_le_bytes());
    assert_eq!(&block[0x58..0x60], &0x30000u64.to_le_bytes());
    check_id_auth(&block, &auth);
}

#[test]
fn measure_simulated_matches_the_simulated_platform() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, config) = (dir.path().join("enclave"), dir.path().join("enclave.toml"));
    std::fs::write(&bin, b"\x7fELF pretend enclave").unwrap();
    std::fs::write(&config, b"firmware = \"simulated\"\n").unwrap();
    let out = cloister(&[
        "measure",
        "--simulated",
        "--enclave-bin",
        &bin.display().to_string(),
        "--config",
        &config.display().to_string(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().last().unwrap(),
        hex::encode(cloister_sim::simulated_launch_measurement(
            b"\x7fELF pretend enclave",
            b"firmware = \"simulated\"\n"
        ))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIMULATED"));
}

#[test]
fn measure_usage_and_input_errors_exit_2() {
    let data = data_dir();
    let syn = data.join("synthetic-amdsev-ovmf.fd").display().to_string();
    let kernel = data.join("kernel.bin").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["measure", "--ovmf", &syn], "--vcpus"),
        (
            vec![
                "measure",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v9",
                "--ovmf",
                &syn,
            ],
            "unknown --vcpu-type",
        ),
        (
            vec!["measure", "--vcpus", "1", "--ovmf", &syn],
            "--vcpu-type (or --vcpu-sig) is required",
        ),
        (
            vec![
                "measure",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--vmm-type",
                "kvm",
                "--ovmf",
                &syn,
            ],
            "unknown --vmm-type",
        ),
        (
            vec![
                "measure",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
                "/nonexistent/ovmf.fd",
            ],
            "cannot read /nonexistent/ovmf.fd",
        ),
        (
            vec![
                "measure",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
                &kernel,
            ],
            "not a non-empty multiple of 4096",
        ),
        (
            vec![
                "measure",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
                &syn,
                "--initrd",
                &kernel,
            ],
            "--kernel",
        ),
        (
            vec!["measure", "--simulated", "--enclave-bin", &kernel],
            "--config",
        ),
    ];
    for (args, want) in cases {
        let out = cloister(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // A kernel with an OVMF build that has no kernel hashes section: refused, not silently unmeasured.
    if Path::new(DEBIAN_OVMF).exists() {
        let out = cloister(&[
            "measure",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-v4",
            "--ovmf",
            DEBIAN_OVMF,
            "--kernel",
            &kernel,
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no SNP_KERNEL_HASHES section"));
    }
}

/// The whole EC2 difference is RDX: sev 8.0.0's EC2 digest is what sev-snp-measure 0.0.13 computes with
/// its EC2 RDX patched back to 0 (the constant below; the patch is in docs/measurement.md), and
/// `cloister measure` gives sev-snp-measure's unpatched value.
#[test]
fn ec2_difference_is_exactly_rdx() {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures, VMMType};
    const SEV_SNP_MEASURE_EC2_RDX_0: &str = "671bd8480afdb5725189a4990df8f5e971c742db16b1a64aebe2b4ec51ed010d9ef71f7ab49b77dcf2e721536776a5f8";
    const SEV_SNP_MEASURE_EC2: &str = "464780769e9472ab3fad0300bb029be3a4105f67efcf3d9f7f3dde53fda4ab4dce52d6517ba08856ccb83e588a839c08";
    let ovmf = data_dir().join("synthetic-amdsev-ovmf.fd");
    let sev = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: 1,
        vcpu_type: CpuType::EpycV4,
        ovmf_file: ovmf.clone(),
        guest_features: GuestFeatures::default(),
        kernel_file: None,
        initrd_file: None,
        append: None,
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::EC2),
    })
    .unwrap()
    .get_hex_ld();
    assert_eq!(sev, SEV_SNP_MEASURE_EC2_RDX_0);
    let (ours, _) = run_measure(&cloister_args(&format!(
        "sev-snp-measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --vmm-type ec2 --ovmf {}",
        ovmf.display()
    )));
    assert_eq!(ours, SEV_SNP_MEASURE_EC2);
}
