//! The QEMU command lines (validated by QEMU itself where it is installed) and the VM launcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::launcher::{Instance, Stopped};

fn strings(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_str().unwrap().to_owned())
        .collect()
}

/// The value following `flag`, for each occurrence.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

fn snp() -> SnpLaunch {
    SnpLaunch {
        ovmf: "/fw/OVMF.amdsev.fd".into(),
        policy: policy::DEFAULT,
        cbitpos: DEFAULT_CBITPOS,
        reduced_phys_bits: DEFAULT_REDUCED_PHYS_BITS,
        host_data: None,
        id: None,
    }
}

fn config(isolation: Isolation) -> QemuConfig {
    QemuConfig {
        isolation,
        kernel: "/k/vmlinuz".into(),
        initrd: "/k/initrd.gz".into(),
        cmdline: kernel_cmdline(GUEST_PORT, 7000, ""),
        cpu: DEFAULT_SNP_CPU.into(),
        vcpus: 2,
        memory_mib: 2048,
        host_port: 40000,
        guest_port: GUEST_PORT,
        serial_log: None,
    }
}

#[test]
fn kernel_command_line() {
    assert_eq!(
        kernel_cmdline(4433, 7000, ""),
        "console=ttyS0 panic=-1 quiet cloister.listen=0.0.0.0:4433 \
         cloister.blobs=http://10.0.2.2:7000"
    );
    assert_eq!(
        kernel_cmdline(1, 2, "  mitigations=auto  "),
        "console=ttyS0 panic=-1 quiet cloister.listen=0.0.0.0:1 \
         cloister.blobs=http://10.0.2.2:2 mitigations=auto"
    );
}

#[test]
fn snp_command_line() {
    let args = strings(&qemu_args(&config(Isolation::Snp(snp()))));
    let expected = [
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-machine",
        "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
        "-accel",
        "kvm",
        "-cpu",
        "EPYC-v4",
        "-smp",
        "2",
        "-m",
        "2048M",
        "-object",
        "memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false",
        "-object",
        "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on",
        "-bios",
        "/fw/OVMF.amdsev.fd",
        "-kernel",
        "/k/vmlinuz",
        "-initrd",
        "/k/initrd.gz",
        "-append",
        "console=ttyS0 panic=-1 quiet cloister.listen=0.0.0.0:4433 cloister.blobs=http://10.0.2.2:7000",
        "-netdev",
        "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40000-:4433",
        "-device",
        "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on,romfile=",
        "-chardev",
        "stdio,id=serial0,signal=off",
        "-serial",
        "chardev:serial0",
    ];
    assert_eq!(args, expected);
}

#[test]
fn snp_policy_cbit_and_phys_bits_are_passed() {
    let mut launch = snp();
    launch.policy = policy::RESERVED_MUST_BE_ONE | policy::DEBUG;
    launch.cbitpos = 47;
    launch.reduced_phys_bits = 5;
    let args = strings(&qemu_args(&config(Isolation::Snp(launch))));
    assert_eq!(
        values(&args, "-object")[1],
        "sev-snp-guest,id=sev0,cbitpos=47,reduced-phys-bits=5,policy=0xa0000,kernel-hashes=on"
    );
}

#[test]
fn host_data_is_base64_of_sha256_of_the_config() {
    let host_data = HostData::of_config(b"abc");
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    assert_eq!(
        format!("{host_data:?}"),
        "HostData(ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad)"
    );
    let mut launch = snp();
    launch.host_data = Some(host_data);
    let args = strings(&qemu_args(&config(Isolation::Snp(launch))));
    let object = values(&args, "-object")[1];
    assert!(
        object
            .ends_with(",kernel-hashes=on,host-data=ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="),
        "{object}"
    );
}

#[test]
fn id_block_and_auth_raw_or_base64() {
    let block = [0x11u8; ID_BLOCK_LEN];
    let auth = [0x22u8; ID_AUTH_LEN];
    let raw = IdBlock::new(&block, &auth, false).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let text = IdBlock::new(
        format!("{}\n", b64(&block)).as_bytes(),
        b64(&auth).as_bytes(),
        false,
    )
    .unwrap();
    assert_eq!(raw, text);
    assert!(matches!(
        IdBlock::new(&block[..95], &auth, false),
        Err(IdBlockError::Length {
            expected: 96,
            found: 95,
            ..
        })
    ));
    assert!(matches!(
        IdBlock::new(&block, b64(&auth[..100]).as_bytes(), false),
        Err(IdBlockError::Length {
            expected: 4096,
            found: 100,
            ..
        })
    ));

    for author in [false, true] {
        let mut launch = snp();
        launch.host_data = Some(HostData([0; 32]));
        launch.id = Some(IdBlock::new(&block, &auth, author).unwrap());
        let args = strings(&qemu_args(&config(Isolation::Snp(launch))));
        let object = values(&args, "-object")[1].to_owned();
        let expected = format!(
            ",host-data={},id-block={},id-auth={}",
            b64(&[0; 32]),
            b64(&block),
            b64(&auth)
        );
        let expected = if author {
            format!("{expected},author-key-enabled=on")
        } else {
            expected
        };
        assert!(object.ends_with(&expected), "{object}");
    }
}

#[test]
fn insecure_tcg_command_line_has_no_sev() {
    let mut c = config(Isolation::InsecureTcg { bios: None });
    c.cpu = DEFAULT_TCG_CPU.into();
    c.vcpus = 1;
    c.memory_mib = 512;
    let args = strings(&qemu_args(&c));
    assert_eq!(values(&args, "-machine"), ["q35"]);
    assert_eq!(values(&args, "-accel"), ["tcg"]);
    assert_eq!(values(&args, "-cpu"), ["max"]);
    assert_eq!(values(&args, "-smp"), ["1"]);
    assert_eq!(values(&args, "-m"), ["512M"]);
    assert!(values(&args, "-object").is_empty());
    assert!(values(&args, "-bios").is_empty());
    assert!(!args.iter().any(|a| a.contains("sev")), "{args:?}");
    assert_eq!(values(&args, "-kernel"), ["/k/vmlinuz"]);
    assert_eq!(values(&args, "-initrd"), ["/k/initrd.gz"]);

    let c = config(Isolation::InsecureTcg {
        bios: Some("/usr/share/ovmf/OVMF.fd".into()),
    });
    let args = strings(&qemu_args(&c));
    assert_eq!(values(&args, "-bios"), ["/usr/share/ovmf/OVMF.fd"]);
}

#[test]
fn serial_log_path_commas_are_escaped_and_paths_are_verbatim() {
    let mut c = config(Isolation::Snp(snp()));
    c.serial_log = Some("/tmp/a,b/serial.log".into());
    c.kernel = "/k,1/vmlinuz".into();
    c.cpu = "EPYC-v4,+avx512f".into();
    c.cmdline = "console=ttyS0 a=b,c".into();
    let args = strings(&qemu_args(&c));
    assert_eq!(
        values(&args, "-chardev"),
        ["stdio,id=serial0,signal=off,logfile=/tmp/a,,b/serial.log,logappend=on"]
    );
    assert_eq!(values(&args, "-kernel"), ["/k,1/vmlinuz"]);
    assert_eq!(values(&args, "-cpu"), ["EPYC-v4,+avx512f"]);
    assert_eq!(values(&args, "-append"), ["console=ttyS0 a=b,c"]);
    assert_eq!(
        escape_commas(OsStr::from_bytes(b"\xff,\xfe")),
        OsStr::from_bytes(b"\xff,,\xfe")
    );
}

#[test]
fn host_and_guest_ports_are_forwarded_on_loopback_only() {
    let mut c = config(Isolation::InsecureTcg { bios: None });
    c.host_port = 5;
    c.guest_port = 6;
    let args = strings(&qemu_args(&c));
    assert_eq!(
        values(&args, "-netdev"),
        ["user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:5-:6"]
    );
}

#[test]
fn sanitize_strips_escapes_and_controls() {
    assert_eq!(
        sanitize(b"\x1bc\x1b[?7l\x1b[2Jcloister-enclave: listening on 0.0.0.0:4433\r\n"),
        b"cloister-enclave: listening on 0.0.0.0:4433"
    );
    assert_eq!(sanitize(b"a\tb\x07c\x7f\x1b"), b"a\tbc");
    assert_eq!(sanitize(b"\x1b[31mred\x1b[0m"), b"red");
    assert_eq!(sanitize("é ok".as_bytes()), "é ok".as_bytes());
}

fn fake(script: &str) -> QemuLauncher {
    let c = config(Isolation::InsecureTcg { bios: None });
    QemuLauncher::new(Path::new("qemu-system-x86_64"), c)
        .with_wrapper(Some((
            Path::new("/bin/sh"),
            &["-c".into(), script.into(), "fake-qemu".into()],
        )))
        .with_start_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn launcher_runs_qemu_reads_the_serial_console_and_maps_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    // $0 is "fake-qemu", $1 the QEMU program, then its arguments.
    let script = format!(
        "printf '%s\\n' \"$@\" > '{}'; printf '\\033c\\033[2Jbooting\\r\\n'; \
         echo 'cloister-enclave: listening on 0.0.0.0:4433'; exec sleep 30",
        args_file.display()
    );
    let mut launcher = fake(&script);
    let mut instance = tokio::time::timeout(Duration::from_secs(10), launcher.launch())
        .await
        .unwrap()
        .unwrap();
    let addr = instance.addr();
    assert!(addr.ip().is_loopback());
    let recorded = std::fs::read_to_string(&args_file).unwrap();
    let recorded: Vec<&str> = recorded.lines().collect();
    assert_eq!(recorded[0], "qemu-system-x86_64");
    let expected = strings(&qemu_args(&launcher.config_for(addr.port())));
    assert_eq!(recorded[1..], expected);
    assert!(expected.iter().any(|a| a
        == &format!(
            "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:{}-:4433",
            addr.port()
        )));
    tokio::time::timeout(Duration::from_secs(5), instance.terminate())
        .await
        .unwrap();
    let stopped = instance.stopped().await;
    assert!(
        matches!(stopped, Stopped::Exited(s) if !s.success()),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn launcher_errors() {
    let run = |script: &'static str| async move {
        let mut launcher = fake(script).with_start_timeout(Duration::from_millis(500));
        tokio::time::timeout(Duration::from_secs(10), launcher.launch())
            .await
            .unwrap()
            .unwrap_err()
    };
    let e = run("echo 'qemu-system-x86_64: KVM required' >&2; exit 1").await;
    assert!(
        matches!(&e, LaunchError::ExitedEarly(s) if s.code() == Some(1)),
        "{e:?}"
    );
    let e = run("exec sleep 30").await;
    assert!(matches!(e, LaunchError::Timeout(_)), "{e:?}");
    let e = run("echo 'cloister-enclave: listening on 0.0.0.0:9999'; exec sleep 30").await;
    assert!(
        matches!(
            e,
            LaunchError::UnexpectedAddress {
                expected_port: 4433,
                ..
            }
        ),
        "{e:?}"
    );
    let mut missing = QemuLauncher::new(
        Path::new("/nonexistent/qemu"),
        config(Isolation::InsecureTcg { bios: None }),
    )
    .with_wrapper(None);
    let e = missing.launch().await.unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
}
