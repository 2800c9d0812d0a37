//! The relay: bytes unchanged both ways, recordings, closing, per-source caps and handshake deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::net::Ipv4Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(10);

async fn listener() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
}

/// An echo server; returns its address.
async fn echo() -> SocketAddr {
    let l = listener().await;
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

/// Raw bytes, no TLS: these tests relay arbitrary patterns, so the record-layer deadline is off.
const RAW: RelayLimits = RelayLimits {
    max_connections: DEFAULT_MAX_CONNECTIONS,
    max_per_source: DEFAULT_MAX_PER_SOURCE,
    handshake_timeout: None,
};

async fn relay_to(target: Option<SocketAddr>, recorder: Option<Recorder>) -> SocketAddr {
    let relay = Relay::new(listener().await, EnclaveAddr::fixed(target), recorder).with_limits(RAW);
    let addr = relay.local_addr().unwrap();
    tokio::spawn(relay.run());
    addr
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn relays_bytes_unchanged_both_ways() {
    tokio::time::timeout(LIMIT, async {
        let relay = relay_to(Some(echo().await), None).await;
        let mut conn = TcpStream::connect(relay).await.unwrap();
        let data = pattern(1 << 20, 7);
        let (mut r, mut w) = conn.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let ((), n) = tokio::join!(send, recv);
        assert_eq!(n.unwrap(), data.len());
        assert!(back == data, "echoed bytes differ");
        // Several connections, interleaved.
        let mut a = TcpStream::connect(relay).await.unwrap();
        let mut b = TcpStream::connect(relay).await.unwrap();
        for i in 0..20u8 {
            a.write_all(&[i; 3]).await.unwrap();
            b.write_all(&[!i; 5]).await.unwrap();
            let mut got_a = [0u8; 3];
            let mut got_b = [0u8; 5];
            a.read_exact(&mut got_a).await.unwrap();
            b.read_exact(&mut got_b).await.unwrap();
            assert_eq!((got_a, got_b), ([i; 3], [!i; 5]));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn records_exactly_the_relayed_bytes() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        let recorder = Recorder::open(&path).unwrap();
        let request = pattern(100_000, 3);
        let response = pattern(70_000, 11);
        // A backend that reads the whole request, then answers: the order on the wire is
        // then fixed, so the recording must be exactly request ++ response.
        let backend = listener().await;
        let backend_addr = backend.local_addr().unwrap();
        let expected_request = request.clone();
        let answer = response.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert!(got == expected_request, "backend got different bytes");
            s.write_all(&answer).await.unwrap();
        });
        let relay = relay_to(Some(backend_addr), Some(recorder.clone())).await;
        let mut conn = TcpStream::connect(relay).await.unwrap();
        conn.write_all(&request).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).await.unwrap();
        assert!(back == response, "client got different bytes");
        server.await.unwrap();
        recorder.flush().await.unwrap();
        let recorded = std::fs::read(&path).unwrap();
        assert_eq!(recorded.len(), request.len() + response.len());
        assert!(
            recorded == [request, response].concat(),
            "recording differs"
        );
    })
    .await
    .unwrap();
}

/// The client sees EOF (or a reset) promptly: it is not left hanging.
async fn assert_closed(relay: SocketAddr) {
    let mut conn = TcpStream::connect(relay).await.unwrap();
    let _ = conn.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("relay left the client hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn closes_clients_when_no_enclave_is_up() {
    tokio::time::timeout(LIMIT, async {
        assert_closed(relay_to(None, None).await).await;
        // An address where nothing listens any more.
        let gone = listener().await.local_addr().unwrap();
        assert_closed(relay_to(Some(gone), None).await).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn closes_the_client_when_the_enclave_closes() {
    tokio::time::timeout(LIMIT, async {
        let backend = listener().await;
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            s.write_all(b"bye").await.unwrap();
            // Dropped: the enclave side closes.
        });
        let relay = relay_to(Some(backend_addr), None).await;
        let mut conn = TcpStream::connect(relay).await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn follows_the_current_address() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let target = EnclaveAddr::from_receiver(rx);
        let relay = Relay::new(listener().await, target, None)
            .with_limits(RAW)
            .with_max_connections(4);
        let addr = relay.local_addr().unwrap();
        tokio::spawn(relay.run());
        assert_closed(addr).await;
        tx.send_replace(Some(echo().await));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    })
    .await
    .unwrap();
}

async fn relay_with(limits: RelayLimits) -> SocketAddr {
    let relay = Relay::new(
        listener().await,
        EnclaveAddr::fixed(Some(echo().await)),
        None,
    )
    .with_limits(limits);
    let addr = relay.local_addr().unwrap();
    tokio::spawn(relay.run());
    addr
}

/// Issue 9, item 10: one address cannot take every relay slot.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    tokio::time::timeout(LIMIT, async {
        let addr = relay_with(RelayLimits {
            max_per_source: 2,
            ..RAW
        })
        .await;
        let mut held = vec![];
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            c.read_exact(&mut one).await.unwrap();
            held.push(c);
        }
        // The third from the same address is closed at accept.
        assert_closed(addr).await;
        // One leaves: the address is served again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"y").await.unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"y");
    })
    .await
    .unwrap();
}

/// A TLS record header: content type, version 3.3, length.
fn record(content: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap().to_be_bytes();
    [&[content, 3, 3, len[0], len[1]][..], payload].concat()
}

/// Issue 9, item 10: a client must finish its TLS handshake (send an application-data record)
/// within the deadline; bytes that are not TLS records are closed at once.
#[tokio::test]
async fn slow_handshakes_and_non_tls_bytes_are_closed() {
    tokio::time::timeout(LIMIT, async {
        let addr = relay_with(RelayLimits {
            handshake_timeout: Some(Duration::from_millis(400)),
            ..RelayLimits::default()
        })
        .await;
        // A ClientHello-like record, then silence: closed after the deadline.
        let start = std::time::Instant::now();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&record(CONTENT_HANDSHAKE, &[1; 40]))
            .await
            .unwrap();
        let mut echoed = vec![0u8; 45];
        slow.read_exact(&mut echoed).await.unwrap();
        let mut buf = [0u8; 8];
        let end = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("closed by the deadline");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        assert!(start.elapsed() >= Duration::from_millis(350));

        // A handshake finished in time (an application-data record): relayed beyond the deadline.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        let bytes = [
            record(CONTENT_HANDSHAKE, &[2; 10]),
            record(CONTENT_CHANGE_CIPHER_SPEC, &[1]),
            record(CONTENT_APPLICATION_DATA, &[3; 20]),
        ]
        .concat();
        ok.write_all(&bytes).await.unwrap();
        let mut back = vec![0u8; bytes.len()];
        ok.read_exact(&mut back).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        ok.write_all(b"after the deadline").await.unwrap();
        let mut back = [0u8; 18];
        ok.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"after the deadline");

        // Not TLS at all: closed at once, nothing relayed.
        let mut junk = TcpStream::connect(addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        assert!(start.elapsed() < Duration::from_millis(350));
    })
    .await
    .unwrap();
}

#[test]
fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
    let sources = Sources::new(1);
    let _a = sources.open("2001:db8:1:2::1".parse().unwrap()).unwrap();
    assert!(sources
        .open("2001:db8:1:2:ffff::9".parse().unwrap())
        .is_none());
    assert!(sources.open("2001:db8:1:3::1".parse().unwrap()).is_some());
    let _v4 = sources.open("192.0.2.7".parse().unwrap()).unwrap();
    assert!(sources.open("::ffff:192.0.2.7".parse().unwrap()).is_none());
}
