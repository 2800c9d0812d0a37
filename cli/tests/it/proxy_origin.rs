//! Issue 21 item 9: `cloister proxy` from a browser. The Host check (DNS rebinding), the Origin check
//! (cross-site requests) and the connection cap, against a proxy whose "enclave" is a bare TCP listener: the
//! checks come before any upstream use, so that listener must see no connection for a refused request.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cloister_session::proxy::{serve, Proxy, ServeOptions};
use cloister_session::SessionConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy on a free loopback port in front of a listener that plays the enclave: it counts the connections
/// it gets and closes each at once (the proxy then answers 502).
struct Fixture {
    addr: String,
    port: u16,
    upstream: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A policy file that any workload satisfies: a request that passes the checks goes on to open a session to
/// the fake enclave (which a test can see), instead of stopping at the policy.
fn any_workload_policy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_any_workload = true\n").unwrap();
    (dir, policy)
}

/// The fake enclave: its endpoint, the count of connections it got, its task.
async fn fake_enclave() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let enclave = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = enclave.local_addr().unwrap().to_string();
    let upstream = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&upstream);
    let fake = tokio::spawn(async move {
        while let Ok((stream, _)) = enclave.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (endpoint, upstream, fake)
}

async fn start(options: ServeOptions) -> Fixture {
    let (dir, policy) = any_workload_policy();
    let trust = SessionConfig::builder_from_file(&policy)
        .unwrap()
        .build()
        .unwrap();
    let (endpoint, upstream, fake) = fake_enclave().await;
    let proxy = Arc::new(Proxy::new(&endpoint, trust, 2, Box::new(|_| {})));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let _ = serve(listener, proxy, options).await;
    });
    Fixture {
        addr: format!("127.0.0.1:{port}"),
        port,
        upstream,
        _dir: dir,
        tasks: vec![fake, served],
    }
}

impl Fixture {
    /// How many connections the proxy opened to the "enclave" (anything forwarded, or attempted). The proxy
    /// answers a forwarded request only after that connection failed, so the count is final by then.
    fn upstream_connections(&self) -> usize {
        self.upstream.load(Ordering::SeqCst)
    }
}

/// One request on a fresh connection (`Connection: close`): the raw answer (head and body).
async fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    // A connection closed a moment ago may still hold its place under a small `--max-connections` (the
    // proxy's task releases it after the close we saw): try again on that one answer, briefly.
    for _ in 0..50 {
        let answer = send_once(addr, method, path, headers).await;
        if !answer.contains("(--max-connections)") {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_once(addr, method, path, headers).await
}

async fn send_once(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = b"{\"inputs\":[]}";
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    if method == "POST" {
        s.write_all(body).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the proxy answered")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A header's value in an answer (case-insensitive name), if present.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_foreign_host_header_is_refused_before_anything_is_forwarded() {
    let f = start(ServeOptions::default()).await;
    let evil = format!("evil.example:{}", f.port);
    let other_port = format!("127.0.0.1:{}", f.port.wrapping_add(1));
    for host in [evil.as_str(), other_port.as_str()] {
        for (method, path) in [("GET", "/v2/health/ready"), ("POST", "/v2/models/m/infer")] {
            let answer = send(&f.addr, method, path, &[("Host", host)]).await;
            assert_eq!(status(&answer), 421, "{host} {method} {path}: {answer}");
            assert!(answer.contains("nothing was forwarded"), "{answer}");
            assert!(
                header(&answer, "access-control-allow-origin").is_none(),
                "{answer}"
            );
        }
    }
    // HTTP/1.1 requires a Host.
    let answer = send(&f.addr, "GET", "/v2/health/ready", &[]).await;
    assert_eq!(status(&answer), 400, "{answer}");
    assert_eq!(
        f.upstream_connections(),
        0,
        "a refused request reached the enclave"
    );
}

#[tokio::test]
async fn a_cross_origin_request_is_refused_unless_allowed() {
    let f = start(ServeOptions::default()).await;
    let host = ("Host", f.addr.as_str());
    for headers in [
        vec![host, ("Origin", "http://evil.example")],
        vec![host, ("Origin", "null")],
        vec![host, ("Sec-Fetch-Site", "cross-site")],
        vec![
            host,
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ] {
        let answer = send(&f.addr, "POST", "/v2/models/m/infer", &headers).await;
        assert_eq!(status(&answer), 403, "{headers:?}: {answer}");
        assert!(answer.contains("nothing was forwarded"), "{answer}");
        assert!(
            header(&answer, "access-control-allow-origin").is_none(),
            "{answer}"
        );
    }
    // A preflight from a page that was not allowed.
    let answer = send(
        &f.addr,
        "OPTIONS",
        "/v2/models/m/infer",
        &[
            host,
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    )
    .await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(
        f.upstream_connections(),
        0,
        "a refused request reached the enclave"
    );

    // With --allow-origin, that origin passes the checks: a preflight is answered for it, and its requests get
    // CORS headers naming it (a 404 here: nothing to forward, no enclave needed).
    let allowed = start(ServeOptions {
        allow_origins: vec!["http://app.example:3000".parse().unwrap()],
        ..ServeOptions::default()
    })
    .await;
    let host = ("Host", allowed.addr.as_str());
    let origin = ("Origin", "http://app.example:3000");
    let answer = send(
        &allowed.addr,
        "OPTIONS",
        "/v2/models/m/infer",
        &[host, origin, ("Access-Control-Request-Method", "POST")],
    )
    .await;
    assert_eq!(status(&answer), 204, "{answer}");
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        Some("http://app.example:3000"),
        "{answer}"
    );
    assert_eq!(header(&answer, "vary"), Some("Origin"), "{answer}");
    let answer = send(
        &allowed.addr,
        "GET",
        "/v2/not-an-endpoint",
        &[host, origin, ("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    assert_eq!(status(&answer), 404, "{answer}");
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        Some("http://app.example:3000"),
        "{answer}"
    );
    // Another origin is still refused by that proxy.
    let answer = send(
        &allowed.addr,
        "GET",
        "/v2/health/ready",
        &[host, ("Origin", "http://app.example:3001")],
    )
    .await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(allowed.upstream_connections(), 0);
}

#[tokio::test]
async fn requests_without_origin_from_loopback_pass() {
    let f = start(ServeOptions::default()).await;
    let localhost = format!("localhost:{}", f.port);
    let v6 = format!("[::1]:{}", f.port);
    for (i, host) in [f.addr.as_str(), localhost.as_str(), v6.as_str()]
        .into_iter()
        .enumerate()
    {
        // The checks pass, so the proxy tries the enclave: the fake one drops the connection (502), but it
        // was contacted. No CORS headers for a client that is not a browser.
        let answer = send(&f.addr, "GET", "/v2/health/ready", &[("Host", host)]).await;
        assert_eq!(status(&answer), 502, "{host}: {answer}");
        assert!(
            header(&answer, "access-control-allow-origin").is_none(),
            "{answer}"
        );
        assert_eq!(f.upstream_connections(), i + 1, "{host}: not forwarded");
    }
    // The user's own navigation (Sec-Fetch-Site: none) is not a cross-site request.
    let answer = send(
        &f.addr,
        "GET",
        "/v2/not-an-endpoint",
        &[("Host", f.addr.as_str()), ("Sec-Fetch-Site", "none")],
    )
    .await;
    assert_eq!(status(&answer), 404, "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let f = start(ServeOptions {
        max_connections: 2,
        ..ServeOptions::default()
    })
    .await;
    let first = TcpStream::connect(&f.addr).await.unwrap();
    let _second = TcpStream::connect(&f.addr).await.unwrap();
    let mut third = TcpStream::connect(&f.addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut out))
        .await
        .expect("the connection beyond the cap was answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&out);
    assert_eq!(status(&answer), 503, "{answer}");
    assert_eq!(header(&answer, "connection"), Some("close"), "{answer}");

    // A closed connection frees its place.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = send(&f.addr, "GET", "/v2/nothing", &[("Host", f.addr.as_str())]).await;
        if status(&answer) == 404 {
            break;
        }
        assert_eq!(status(&answer), 503, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cap was not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_read_timeout() {
    let f = start(ServeOptions {
        header_read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    })
    .await;
    let mut idle = TcpStream::connect(&f.addr).await.unwrap();
    // A slowloris: half a request line, then nothing.
    idle.write_all(b"GET /v2/health/ready HT").await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "a connection that sends no header held its place"
    );
}

/// The flags of `cloister proxy` reach the checks: `--allow-host`, `--allow-origin`, `--max-connections`; bad
/// values are usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloister_proxy_flags_reach_the_checks() {
    let (_dir, policy) = any_workload_policy();
    let (endpoint, upstream, fake) = fake_enclave().await;
    let base = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cloister"));
        c.args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--endpoint",
            &endpoint,
            "--policy",
        ])
        .arg(&policy)
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
        c
    };
    for bad in [
        ["--max-connections", "0"],
        ["--allow-origin", "https://app.example/path"],
        ["--allow-host", "a b"],
    ] {
        let out = base(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }

    let mut child = base(&[
        "--allow-host",
        "proxy.test",
        "--allow-origin",
        "http://app.example",
        "--max-connections",
        "1",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let port = addr.rsplit_once(':').unwrap().1;
    let at_start = upstream.load(Ordering::SeqCst);

    let named = format!("proxy.test:{port}");
    let answer = send(&addr, "GET", "/v2/nothing", &[("Host", named.as_str())]).await;
    assert_eq!(status(&answer), 404, "{answer}");
    let evil = format!("evil.example:{port}");
    let answer = send(&addr, "GET", "/v2/health/ready", &[("Host", evil.as_str())]).await;
    assert_eq!(status(&answer), 421, "{answer}");
    let answer = send(
        &addr,
        "OPTIONS",
        "/v2/models/m/infer",
        &[("Host", addr.as_str()), ("Origin", "http://app.example")],
    )
    .await;
    assert_eq!(status(&answer), 204, "{answer}");
    let answer = send(
        &addr,
        "POST",
        "/v2/models/m/infer",
        &[("Host", addr.as_str()), ("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(
        upstream.load(Ordering::SeqCst),
        at_start,
        "something was forwarded"
    );

    // One connection at most: a second one, while the first is open, is refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut out))
        .await
        .expect("the second connection was refused")
        .unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&out)), 503);

    let _ = child.kill();
    let _ = child.wait();
    fake.abort();
}
