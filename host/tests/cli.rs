//! The `cloister-host` binary with a fake enclave (a shell script): command line, announcement,
//! relay, blob service, recording, restarts, signals and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const HOST: &str = env!("CARGO_BIN_EXE_cloister-host");
const LIMIT: Duration = Duration::from_secs(10);

/// One executable fake enclave for every test, written once: it runs the shell script in the
/// environment variable FAKE_ENCLAVE with the enclave's arguments. (Writing one executable per
/// test would race with concurrent forks: ETXTBSY.)
fn fake_enclave() -> &'static Path {
    static PATH: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PATH
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fake-enclave");
            std::fs::write(
                &path,
                "#!/bin/sh\nexec /bin/sh -c \"$FAKE_ENCLAVE\" fake-enclave \"$@\"\n",
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            (dir, path)
        })
        .1
}

/// A file with a valid sealed-model header whose digest is `[digest_byte; 48]`, and filler.
fn fake_sealed(digest_byte: u8, plaintext_len: u64) -> Vec<u8> {
    let chunk = 4096u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"CLSTRSEAL");
    out.extend_from_slice(&1u16.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&(chunk as u32).to_be_bytes());
    out.extend_from_slice(&plaintext_len.to_be_bytes());
    out.extend_from_slice(&[digest_byte; 48]);
    out.extend_from_slice(&[7u8; 16]);
    out.extend_from_slice(&[9u8; 7]);
    out.push(4);
    out.extend_from_slice(b"test");
    let chunks = plaintext_len.div_ceil(chunk).max(1);
    let total = out.len() as u64 + plaintext_len + 16 * chunks;
    while (out.len() as u64) < total {
        out.push((out.len() % 251) as u8);
    }
    out
}

fn digest_hex(byte: u8) -> String {
    format!("sha384:{}", hex(&[byte; 48]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    sealed: PathBuf,
    sealed_bytes: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "firmware = \"simulated\"\n").unwrap();
    let sealed = dir.path().join("model.sealed");
    let sealed_bytes = fake_sealed(0x5a, 100_000);
    std::fs::write(&sealed, &sealed_bytes).unwrap();
    Setup {
        dir,
        config,
        sealed,
        sealed_bytes,
    }
}

fn host(setup: &Setup, script: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(HOST);
    cmd.arg("--enclave-bin")
        .arg(fake_enclave())
        .arg("--enclave-config")
        .arg(&setup.config)
        .arg("--sealed-model")
        .arg(&setup.sealed)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("FAKE_ENCLAVE", script)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(LIMIT, cmd.output())
        .await
        .expect("cloister-host did not finish")
        .unwrap()
}

/// Reads the host's one stdout line and returns the relay address.
async fn announced(child: &mut Child) -> (SocketAddr, BufReader<tokio::process::ChildStdout>) {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(LIMIT, stdout.read_line(&mut line))
        .await
        .expect("no announcement")
        .unwrap();
    let addr = line
        .strip_prefix("cloister-host: listening on ")
        .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
        .trim_end()
        .parse()
        .unwrap();
    (addr, stdout)
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn help_and_usage_errors() {
    let out = output({
        let mut c = Command::new(HOST);
        c.arg("--help");
        c
    })
    .await;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "untrusted",
        "cannot read model keys",
        "--restart-max",
        "--record",
        "snp-qemu",
        "qemu-tcg-insecure",
        "--qemu-kernel",
        "--snp-policy",
        "--state-dir",
        "ciphertext only",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }

    let s = setup();
    let out = output(host(&s, "exit 0", &["--backend", "qemu"])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown backend `qemu`"), "{err}");

    // The VM backends boot the enclave from the initrd, and need their own flags.
    let out = output(host(&s, "exit 0", &["--backend", "snp-qemu"])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: --enclave-bin does not apply to --backend snp-qemu"),
        "{err}"
    );
    let mut cmd = Command::new(HOST);
    cmd.args(["--backend", "snp-qemu", "--enclave-config"])
        .arg(&s.config)
        .arg("--sealed-model")
        .arg(&s.sealed)
        .args(["--listen", "127.0.0.1:0", "--qemu-kernel"])
        .arg(&s.config)
        .arg("--qemu-initrd")
        .arg(&s.config);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: --backend snp-qemu needs --qemu-bios"),
        "{err}"
    );
    let out = output(host(&s, "exit 0", &["--qemu-kernel", "/x"])).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: --qemu-kernel does not apply to --backend sim"),
        "{err}"
    );

    let mut cmd = Command::new(HOST);
    cmd.args(["--enclave-bin", "/nonexistent", "--enclave-config"])
        .arg(&s.config)
        .arg("--sealed-model")
        .arg(&s.sealed)
        .args(["--listen", "127.0.0.1:0"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: --enclave-bin /nonexistent: not a file"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_sealed_model_is_a_runtime_error_with_its_chain() {
    let s = setup();
    std::fs::write(&s.sealed, b"CLSTRSEAL\x00\x09 not really").unwrap();
    let out = output(host(&s, "exit 0", &[])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: cannot index the sealed models"),
        "{err}"
    );
    assert!(
        err.contains("  because: ") && err.contains("model.sealed"),
        "{err}"
    );
}

#[tokio::test]
async fn serves_relays_records_and_stops_cleanly() {
    let s = setup();
    let echo = echo_server().await;
    let args = s.dir.path().join("args");
    let pid_file = s.dir.path().join("pid");
    let record = s.dir.path().join("record");
    // The fake enclave notes its arguments and pid, announces the echo server's address as its
    // own, and keeps running.
    let script = format!(
        "echo \"$@\" > '{}'; echo $$ > '{}'; echo 'some log' >&2; \
         echo 'cloister-enclave: listening on {echo}'; exec sleep 60",
        args.display(),
        pid_file.display()
    );
    let mut child = host(&s, &script, &["--record", record.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (relay, mut stdout) = announced(&mut child).await;

    // The enclave was launched with the contract's arguments.
    let args = std::fs::read_to_string(&args).unwrap();
    let words: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(words[..2], ["--config", s.config.to_str().unwrap()]);
    assert_eq!(words[2..4], ["--listen", "127.0.0.1:0"]);
    assert_eq!(words[4], "--blobs");
    let blobs: SocketAddr = words[5].strip_prefix("http://").unwrap().parse().unwrap();
    assert!(blobs.ip().is_loopback());

    tokio::time::timeout(LIMIT, async {
        // Relay: bytes come back unchanged (a TLS handshake record: the relay closes what is not TLS).
        let hello = [&[22u8, 3, 1, 0, 18][..], b"client-hello-bytes"].concat();
        let mut conn = TcpStream::connect(relay).await.unwrap();
        conn.write_all(&hello).await.unwrap();
        let mut got = vec![0u8; hello.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hello);
        drop(conn);

        // Blob service: the sealed file, byte for byte.
        let mut conn = TcpStream::connect(blobs).await.unwrap();
        let req = format!(
            "GET /blobs/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            digest_hex(0x5a)
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp).await.unwrap();
        assert!(resp.starts_with(b"HTTP/1.1 200 "));
        assert!(resp.ends_with(&s.sealed_bytes));
    })
    .await
    .unwrap();

    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(alive(&pid));
    sigterm(&child);
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!alive(&pid), "the enclave outlived the host");

    // Exactly one stdout line.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("[enclave] some log\n"), "{stderr}");

    // The recording holds what was relayed (both ways) and the blob served.
    let recorded = std::fs::read(&record).unwrap();
    let count = |needle: &[u8]| {
        recorded
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    };
    assert_eq!(count(b"client-hello-bytes"), 2);
    assert_eq!(count(&s.sealed_bytes), 1);
}

#[tokio::test]
async fn restarts_the_enclave_then_gives_up() {
    let s = setup();
    let launches = s.dir.path().join("launches");
    let script = format!(
        "echo x >> '{}'; echo 'cloister-enclave: listening on 127.0.0.1:9'; sleep 0.1; exit 7",
        launches.display()
    );
    let mut child = host(&s, &script, &["--restart-max", "2"]).spawn().unwrap();
    let (_relay, _stdout) = announced(&mut child).await;
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        std::fs::read_to_string(&launches).unwrap().lines().count(),
        3,
        "{err}"
    );
    assert_eq!(
        err.matches("enclave stopped; restarting").count(),
        2,
        "{err}"
    );
    assert!(err.contains("exit status: 7"), "{err}");
    assert!(err.contains("error: enclave supervision failed"), "{err}");
    assert!(
        err.contains("because: the enclave stopped after 2 consecutive restart(s)"),
        "{err}"
    );
}

/// `--backend qemu-tcg-insecure` with a fake QEMU (a script): the QEMU command line, the serial
/// console announcement, the relay's address, and QEMU dying with a killed host.
#[tokio::test]
async fn qemu_backend_runs_qemu_and_ties_it_to_the_host() {
    let s = setup();
    let args = s.dir.path().join("qemu-args");
    let pid_file = s.dir.path().join("qemu-pid");
    let kernel = s.dir.path().join("vmlinuz");
    let initrd = s.dir.path().join("initrd");
    std::fs::write(&kernel, b"k").unwrap();
    std::fs::write(&initrd, b"i").unwrap();
    let script = format!(
        "printf '%s\\n' \"$@\" > '{}'; echo $$ > '{}'; printf '\\033c\\033[2JSeaBIOS\\r\\n'; \
         echo 'cloister-enclave: listening on 0.0.0.0:4433'; exec sleep 60",
        args.display(),
        pid_file.display()
    );
    let mut cmd = Command::new(HOST);
    cmd.args(["--backend", "qemu-tcg-insecure", "--enclave-config"])
        .arg(&s.config)
        .arg("--sealed-model")
        .arg(&s.sealed)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--blobs-port",
            "0",
            "--qemu-binary",
        ])
        .arg(fake_enclave())
        .arg("--qemu-kernel")
        .arg(&kernel)
        .arg("--qemu-initrd")
        .arg(&initrd)
        .args(["--qemu-append", "foo=bar", "--qemu-memory-mib", "512"])
        .env("FAKE_ENCLAVE", &script)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let (_relay, _stdout) = announced(&mut child).await;
    let recorded = std::fs::read_to_string(&args).unwrap();
    let words: Vec<&str> = recorded.lines().collect();
    let value = |flag: &str| {
        let i = words
            .iter()
            .position(|w| *w == flag)
            .unwrap_or_else(|| panic!("no {flag}: {words:?}"));
        words[i + 1]
    };
    assert_eq!(value("-accel"), "tcg");
    assert_eq!(value("-machine"), "q35");
    assert_eq!(value("-m"), "512M");
    assert_eq!(value("-kernel"), kernel.to_str().unwrap());
    assert_eq!(value("-initrd"), initrd.to_str().unwrap());
    let append = value("-append");
    assert!(
        append.starts_with("console=ttyS0 panic=-1 quiet cloister.listen=0.0.0.0:4433 cloister.blobs=http://10.0.2.2:")
            && append.ends_with(" foo=bar"),
        "{append}"
    );
    assert!(!recorded.contains("sev"), "{recorded}");
    assert!(value("-netdev").starts_with("user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:"));

    // SIGKILL the host: QEMU (here the fake) must not outlive it.
    let qemu_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(alive(&qemu_pid));
    std::process::Command::new("kill")
        .args(["-KILL", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(LIMIT, child.wait()).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let status =
            std::fs::read_to_string(format!("/proc/{qemu_pid}/status")).unwrap_or_default();
        if status.is_empty() || status.contains("State:\tZ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "QEMU outlived a killed host");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("[enclave] SeaBIOS\n"), "{stderr}");
    assert!(
        stderr.contains("qemu-tcg-insecure: the VM has NO memory encryption"),
        "{stderr}"
    );
}
