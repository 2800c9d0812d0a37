//! Unit tests of the state store: routes, the store on disk (symlinks included), and HTTP through the
//! real blob service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::blobs::{BlobIndex, BlobServer};

fn label(s: &str) -> Label {
    Label::parse(s).unwrap()
}

fn v(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n).unwrap()
}

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("state")).unwrap();
    (dir, store)
}

#[test]
fn route_table() {
    let put = |path: &str| route(&Method::PUT, path);
    let get = |path: &str| route(&Method::GET, path);
    assert_eq!(
        put("/state/governance/1"),
        StateRoute::Put {
            label: label("governance"),
            version: v(1)
        }
    );
    assert_eq!(
        get("/state/a-0/18446744073709551615"),
        StateRoute::Get {
            label: label("a-0"),
            version: v(u64::MAX)
        }
    );
    assert_eq!(
        get("/state/0/latest"),
        StateRoute::Latest { label: label("0") }
    );
    let longest = "a".repeat(64);
    assert!(matches!(
        get(&format!("/state/{longest}/7")),
        StateRoute::Get { .. }
    ));
    let too_long = "a".repeat(65);
    let bad_labels = [
        "", "-a", "A", "a/b", "../x", "..", ".", "a.b", "a_b", "é", &too_long,
    ];
    for bad in bad_labels {
        assert_eq!(
            put(&format!("/state/{bad}/1")),
            StateRoute::Malformed,
            "{bad:?}"
        );
        assert!(Label::parse(bad).is_none(), "{bad:?}");
    }
    let bad_versions = [
        "",
        "0",
        "01",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1.0",
        "0x1",
        "1/",
        "1/2",
        "LATEST",
        "latest/",
        "18446744073709551616",
        "99999999999999999999999",
    ];
    for bad in bad_versions {
        assert_eq!(
            put(&format!("/state/a/{bad}")),
            StateRoute::Malformed,
            "{bad:?}"
        );
        assert_eq!(
            get(&format!("/state/a/{bad}")),
            StateRoute::Malformed,
            "{bad:?}"
        );
    }
    for bad in ["/state/", "/state/a", "/state//1", "/statea/1", "/other"] {
        assert_eq!(get(bad), StateRoute::Malformed, "{bad:?}");
    }
    assert_eq!(
        route(&Method::DELETE, "/state/a/1"),
        StateRoute::MethodNotAllowed { allow: "GET, PUT" }
    );
    assert_eq!(
        route(&Method::HEAD, "/state/a/1"),
        StateRoute::MethodNotAllowed { allow: "GET, PUT" }
    );
    assert_eq!(
        put("/state/a/latest"),
        StateRoute::MethodNotAllowed { allow: "GET" }
    );
    assert_eq!(parse_version("1"), Some(v(1)));
    assert_eq!(parse_version("18446744073709551615"), Some(v(u64::MAX)));
    assert_eq!(entry_version("00000000000000000007.sealed"), Some(v(7)));
    for bad in [
        "7.sealed",
        "00000000000000000000.sealed",
        "0000000000000000000a.sealed",
    ] {
        assert_eq!(entry_version(bad), None, "{bad}");
    }
}

#[test]
fn put_get_latest_round_trip() {
    let (_dir, store) = store();
    let l = label("governance");
    assert_eq!(store.get(&l, v(1)).unwrap(), None);
    assert_eq!(store.latest(&l).unwrap(), None);
    assert_eq!(store.put(&l, v(1), b"one").unwrap(), PutOutcome::Stored);
    assert_eq!(store.put(&l, v(2), b"two").unwrap(), PutOutcome::Stored);
    assert_eq!(store.get(&l, v(1)).unwrap().unwrap(), b"one");
    assert_eq!(store.get(&l, v(2)).unwrap().unwrap(), b"two");
    assert_eq!(store.get(&l, v(3)).unwrap(), None);
    assert_eq!(store.latest(&l).unwrap().unwrap(), (v(2), b"two".to_vec()));
    // Labels are separate.
    assert_eq!(store.latest(&label("other")).unwrap(), None);
    let path = store.root().join("governance/00000000000000000002.sealed");
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&store.root().join("governance")), 0o700);
    assert_eq!(mode(store.root()), 0o700);
    // No temporary file is left behind.
    assert_eq!(
        fs::read_dir(store.root().join("governance"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn same_bytes_are_idempotent_and_different_bytes_conflict() {
    let (_dir, store) = store();
    let l = label("governance");
    assert_eq!(store.put(&l, v(5), b"sealed").unwrap(), PutOutcome::Stored);
    assert_eq!(
        store.put(&l, v(5), b"sealed").unwrap(),
        PutOutcome::Unchanged
    );
    let err = store.put(&l, v(5), b"other").unwrap_err();
    assert!(
        matches!(err, StateError::Conflict { version: 5, .. }),
        "{err}"
    );
    assert_eq!(store.get(&l, v(5)).unwrap().unwrap(), b"sealed");
    assert!(matches!(store.put(&l, v(6), b""), Err(StateError::Empty)));
}

#[test]
fn only_three_versions_are_kept() {
    let (_dir, store) = store();
    let l = label("governance");
    for n in 1..=5u64 {
        store.put(&l, v(n), n.to_string().as_bytes()).unwrap();
    }
    for n in 1..=2 {
        assert_eq!(store.get(&l, v(n)).unwrap(), None, "version {n}");
    }
    for n in 3..=5u64 {
        assert_eq!(
            store.get(&l, v(n)).unwrap().unwrap(),
            n.to_string().as_bytes()
        );
    }
    assert_eq!(
        versions(&store.root().join("governance")).unwrap(),
        [v(5), v(4), v(3)]
    );
    // A version older than every one kept would be deleted at once: refused, not "stored".
    let err = store.put(&l, v(2), b"late").unwrap_err();
    assert!(
        matches!(err, StateError::Superseded { oldest_kept: 3, .. }),
        "{err}"
    );
    // A gap is fine, and the oldest goes.
    store.put(&l, v(100), b"100").unwrap();
    assert_eq!(store.latest(&l).unwrap().unwrap().0, v(100));
    assert_eq!(store.get(&l, v(3)).unwrap(), None);
    // u64::MAX sorts last, not first (zero-padded names).
    store.put(&l, v(u64::MAX), b"max").unwrap();
    assert_eq!(
        store.latest(&l).unwrap().unwrap(),
        (v(u64::MAX), b"max".to_vec())
    );
}

#[test]
fn oversized_blobs_are_refused() {
    let (_dir, store) = store();
    let l = label("governance");
    let big = vec![7u8; MAX_STATE_BYTES + 1];
    assert!(matches!(
        store.put(&l, v(1), &big),
        Err(StateError::TooLarge { .. })
    ));
    store.put(&l, v(1), &big[..MAX_STATE_BYTES]).unwrap();
    // An entry grown on disk past the cap is refused on read.
    let path = store.root().join("governance/00000000000000000002.sealed");
    fs::write(&path, &big).unwrap();
    assert!(matches!(
        store.get(&l, v(2)),
        Err(StateError::FileTooLarge { .. })
    ));
    assert!(matches!(
        store.latest(&l),
        Err(StateError::FileTooLarge { .. })
    ));
}

#[tokio::test]
async fn oversized_bodies_get_413_with_or_without_content_length() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let big = Bytes::from(vec![1u8; MAX_STATE_BYTES + 1]);
    // No Content-Length (as with chunked encoding): Limited stops the body at the cap.
    let req = Request::put("/state/a/1")
        .body(Full::new(big.clone()))
        .unwrap();
    let resp = respond(Some(Arc::clone(&store)), req).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A Content-Length over the cap is refused from the header alone.
    let req = Request::put("/state/a/1")
        .header(CONTENT_LENGTH, big.len())
        .body(Full::new(big))
        .unwrap();
    let resp = respond(Some(Arc::clone(&store)), req).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(store.latest(&label("a")).unwrap(), None);
    // Exactly the cap is fine; an empty body is not.
    let req = Request::put("/state/a/1")
        .body(Full::new(Bytes::from(vec![1u8; MAX_STATE_BYTES])))
        .unwrap();
    let resp = respond(Some(Arc::clone(&store)), req).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let req = Request::put("/state/a/2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = respond(Some(store), req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn a_symlinked_entry_is_not_followed_on_read() {
    let (dir, store) = store();
    let l = label("governance");
    store.put(&l, v(1), b"one").unwrap();
    let target = dir.path().join("secret");
    fs::write(&target, b"not state").unwrap();
    let entry = store.root().join("governance/00000000000000000002.sealed");
    std::os::unix::fs::symlink(&target, &entry).unwrap();
    let err = store.get(&l, v(2)).unwrap_err();
    assert!(matches!(err, StateError::Symlink { .. }), "{err}");
    let err = store.latest(&l).unwrap_err();
    assert!(matches!(err, StateError::Symlink { .. }), "{err}");
    // A PUT of that version refuses too, and leaves the target alone.
    let err = store.put(&l, v(2), b"two").unwrap_err();
    assert!(matches!(err, StateError::Symlink { .. }), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"not state");
    // A FIFO is refused without blocking.
    let fifo = store.root().join("governance/00000000000000000003.sealed");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let err = store.get(&l, v(3)).unwrap_err();
        assert!(matches!(err, StateError::NotARegularFile { .. }), "{err}");
    }
}

#[test]
fn symlinks_in_the_store_never_redirect_writes() {
    let (dir, store) = store();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"keep me").unwrap();

    // A label directory that is a symlink: refused for reads and writes, nothing lands outside.
    std::os::unix::fs::symlink(&outside, store.root().join("linked")).unwrap();
    let l = label("linked");
    assert!(matches!(
        store.put(&l, v(1), b"x"),
        Err(StateError::Symlink { .. })
    ));
    assert!(matches!(
        store.get(&l, v(1)),
        Err(StateError::Symlink { .. })
    ));
    assert!(matches!(store.latest(&l), Err(StateError::Symlink { .. })));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

    // Symlinks inside a label directory: at versions that pruning deletes, and at stray names.
    let l = label("governance");
    store.put(&l, v(10), b"ten").unwrap();
    let labeldir = store.root().join("governance");
    for n in [1u64, 2] {
        let name = format!("{n:020}.sealed");
        std::os::unix::fs::symlink(&victim, labeldir.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(&victim, labeldir.join(".tmp-stray")).unwrap();
    std::os::unix::fs::symlink(&outside, labeldir.join("subdir")).unwrap();
    for n in 11..=13u64 {
        store.put(&l, v(n), n.to_string().as_bytes()).unwrap();
    }
    // Pruning removed the links (and version 10), never their target.
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert!(fs::symlink_metadata(labeldir.join(format!("{:020}.sealed", 1))).is_err());
    assert_eq!(store.latest(&l).unwrap().unwrap(), (v(13), b"13".to_vec()));

    // Reopening sweeps temporary names (the link itself, not its target).
    let reopened = StateStore::open(store.root()).unwrap();
    assert!(fs::symlink_metadata(labeldir.join(".tmp-stray")).is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    assert_eq!(reopened.latest(&l).unwrap().unwrap().0, v(13));
}

/// One raw HTTP/1.1 request; returns the status, the header block (lowercased) and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await.unwrap();
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&resp[..end])
        .unwrap()
        .to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, resp[end + 4..].to_vec())
}

#[tokio::test]
async fn http_routes_through_the_blob_service() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let (_dir, store) = store();
        let server = BlobServer::bind(BlobIndex::default(), None)
            .await
            .unwrap()
            .with_state(Some(Arc::new(store)));
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve());

        let sealed: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (status, _, _) = http(addr, "PUT", "/state/governance/1", &sealed).await;
        assert_eq!(status, 204);
        let (status, _, _) = http(addr, "PUT", "/state/governance/1", &sealed).await;
        assert_eq!(status, 204, "same bytes again");
        let (status, _, _) = http(addr, "PUT", "/state/governance/1", b"other").await;
        assert_eq!(status, 409);
        let (status, _, _) = http(addr, "PUT", "/state/governance/2", b"second").await;
        assert_eq!(status, 204);

        let (status, head, body) = http(addr, "GET", "/state/governance/1", b"").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(body == sealed, "served bytes differ from the stored ones");

        let (status, head, body) = http(addr, "GET", "/state/governance/latest", b"").await;
        assert_eq!(status, 200);
        assert!(head.contains("\r\ncloister-state-version: 2\r\n"), "{head}");
        assert_eq!(body, b"second");

        for path in ["/state/governance/3", "/state/nothing/latest"] {
            assert_eq!(http(addr, "GET", path, b"").await.0, 404, "{path}");
        }
        for path in [
            "/state/Governance/1",
            "/state/governance/01",
            "/state/governance",
        ] {
            assert_eq!(http(addr, "GET", path, b"").await.0, 400, "{path}");
        }
        let (status, head, _) = http(addr, "DELETE", "/state/governance/1", b"").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, put"), "{head}");
        assert_eq!(
            http(addr, "PUT", "/state/governance/latest", b"x").await.0,
            405
        );
        let (status, _, _) = http(addr, "PUT", "/state/governance/3", b"").await;
        assert_eq!(status, 400, "empty body");

        // 413 from the Content-Length alone, before any of the body is sent.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /state/governance/3 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_STATE_BYTES + 1
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut resp = [0u8; 12];
        stream.read_exact(&mut resp).await.unwrap();
        assert_eq!(&resp, b"HTTP/1.1 413");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_a_state_dir_the_routes_answer_404() {
    let server = BlobServer::bind(BlobIndex::default(), None).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve());
    for (method, path) in [
        ("PUT", "/state/governance/1"),
        ("GET", "/state/governance/latest"),
    ] {
        let (status, _, body) = http(addr, method, path, b"x").await;
        assert_eq!(status, 404, "{method} {path}");
        assert!(String::from_utf8_lossy(&body).contains("keeps no enclave state"));
    }
}
