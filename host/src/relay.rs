//! The public relay: client TCP connections forwarded byte for byte to the current enclave.
//!
//! The relay never parses what it forwards. Clients run TLS 1.3 end to end with the enclave and
//! attest it inside that session, bound to the session's exporter (docs/architecture.md,
//! "Serving"); the host sees ciphertext only. A relay that terminated TLS itself would be
//! detected by every client, which is why this one cannot do anything but copy.
//!
//! Each client connection is connected to the enclave address current at accept time; a
//! connection accepted while no enclave is up (or whose enclave refuses it) is closed at once
//! rather than left waiting. Connections in flight when the enclave restarts end with it.
//! At most [`DEFAULT_MAX_CONNECTIONS`] connections are relayed at once; further clients wait in
//! the listen backlog. Both legs use TCP_NODELAY: requests are small and latency-bound.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::record::{Recorder, Tap};
use crate::supervisor::EnclaveAddr;

/// Default bound on concurrently relayed connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Bound on connecting to the enclave (it is on this machine; this is generous).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Copy buffer per direction: fits a full TLS record (16 KiB plus overhead).
const BUFFER: usize = 32 * 1024;

/// The relay's listener and what it needs per connection.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    target: EnclaveAddr,
    recorder: Option<Recorder>,
    max_connections: usize,
}

impl Relay {
    /// A relay accepting on `listener` and forwarding to `target`, recording into `recorder`.
    pub fn new(listener: TcpListener, target: EnclaveAddr, recorder: Option<Recorder>) -> Self {
        Self {
            listener,
            target,
            recorder,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Changes the bound on concurrent connections (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The public address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and relays until the task is dropped.
    pub async fn run(self) {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return; // The semaphore is never closed.
            };
            let (client, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let target = self.target.current();
            let recorder = self.recorder.clone();
            tokio::spawn(async move {
                match relay_one(client, target, recorder).await {
                    Ok((up, down)) => tracing::debug!(%peer, up, down, "relay: connection closed"),
                    Err(e) => tracing::debug!(%peer, error = %e, "relay: connection ended"),
                }
                drop(permit);
            });
        }
    }
}

/// Relays one client connection to `target` until either side closes; returns the bytes copied
/// client → enclave and enclave → client. With no target the client is closed at once.
pub async fn relay_one(
    client: TcpStream,
    target: Option<SocketAddr>,
    recorder: Option<Recorder>,
) -> io::Result<(u64, u64)> {
    let Some(target) = target else {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "no enclave is up; closing the client connection",
        ));
    };
    client.set_nodelay(true)?;
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to the enclave timed out",
            )
        })??;
    upstream.set_nodelay(true)?;
    let mut upstream = upstream;
    // Taping the client leg records each relayed byte exactly once: client → enclave bytes as
    // they are read from the client, enclave → client bytes as they are written to it.
    let mut client = Tap::new(client, recorder);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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

    async fn relay_to(target: Option<SocketAddr>, recorder: Option<Recorder>) -> SocketAddr {
        let relay = Relay::new(listener().await, EnclaveAddr::fixed(target), recorder);
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
            let relay = Relay::new(listener().await, target, None).with_max_connections(4);
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
}
