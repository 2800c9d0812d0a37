//! The public relay: client TCP connections forwarded byte for byte to the current enclave.
//!
//! The relay never changes or decrypts what it forwards. Clients run TLS 1.3 end to end with the
//! enclave and attest it inside that session, bound to the session's exporter
//! (docs/architecture.md, "Serving"); the host sees ciphertext only. A relay that terminated TLS
//! itself would be detected by every client, which is why this one cannot do anything but copy.
//!
//! It does bound what one client can hold ([`RelayLimits`]): at most `max_per_source` connections
//! per source address, and a handshake deadline. The deadline reads only the TLS record layer's
//! cleartext headers (content type, version, length) of the client's bytes: a connection whose
//! client has not sent an application-data record (in TLS 1.3, its encrypted Finished and what
//! follows) within the deadline is closed, and bytes that are not TLS records are closed at once.
//! Refusals are counted and logged once per interval, not per connection.
//!
//! Each client connection is connected to the enclave address current at accept time; a
//! connection accepted while no enclave is up (or whose enclave refuses it) is closed at once
//! rather than left waiting. Connections in flight when the enclave restarts end with it.
//! At most [`DEFAULT_MAX_CONNECTIONS`] connections are relayed at once; further clients wait in
//! the listen backlog. Both legs use TCP_NODELAY: requests are small and latency-bound.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::record::{Recorder, Tap};
use crate::supervisor::EnclaveAddr;

/// Default bound on concurrently relayed connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default bound on connections from one source address.
pub const DEFAULT_MAX_PER_SOURCE: usize = 64;
/// Default time a client has to complete its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often refusal counts are written to the host's log (when there were any).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What one client may hold of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Connections relayed at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one source address may hold; more are closed at accept.
    pub max_per_source: usize,
    /// Time from accept until the client has sent an application-data record; `None`: no deadline
    /// and no record-layer check (tests of raw byte relaying).
    pub handshake_timeout: Option<Duration>,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

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
    limits: RelayLimits,
}

impl Relay {
    /// A relay accepting on `listener` and forwarding to `target`, recording into `recorder`,
    /// with the default [`RelayLimits`].
    pub fn new(listener: TcpListener, target: EnclaveAddr, recorder: Option<Recorder>) -> Self {
        Self {
            listener,
            target,
            recorder,
            limits: RelayLimits::default(),
        }
    }

    /// Changes the bound on concurrent connections (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = max.max(1);
        self
    }

    /// Changes every limit (bounds of at least 1).
    pub fn with_limits(mut self, limits: RelayLimits) -> Self {
        self.limits = RelayLimits {
            max_connections: limits.max_connections.max(1),
            max_per_source: limits.max_per_source.max(1),
            handshake_timeout: limits.handshake_timeout,
        };
        self
    }

    /// The public address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and relays until the task is dropped.
    pub async fn run(self) {
        let limit = Arc::new(Semaphore::new(self.limits.max_connections));
        let sources = Sources::new(self.limits.max_per_source);
        let counts = Arc::new(Counts::default());
        let _reporter = ReportOnDrop(tokio::spawn(report(Arc::clone(&counts), self.limits)));
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
            let Some(source) = sources.open(peer.ip()) else {
                crate::metrics::metrics().connection("over_limit");
                counts.over_limit.fetch_add(1, Ordering::Relaxed);
                counts.note_address(peer.ip());
                drop(client);
                continue;
            };
            let target = self.target.current();
            let recorder = self.recorder.clone();
            let handshake = self.limits.handshake_timeout;
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                let m = crate::metrics::metrics();
                match relay_one_with(client, target, recorder, handshake).await {
                    Ok((up, down)) => {
                        m.connection("accepted");
                        m.relayed(up, down);
                        tracing::debug!(%peer, up, down, "relay: connection closed");
                    }
                    Err(e) => {
                        match e.kind() {
                            io::ErrorKind::TimedOut if e.to_string().contains("handshake") => {
                                m.connection("slow_handshake");
                                counts.slow_handshakes.fetch_add(1, Ordering::Relaxed);
                                counts.note_address(peer.ip());
                            }
                            io::ErrorKind::InvalidData => {
                                m.connection("not_tls");
                                counts.not_tls.fetch_add(1, Ordering::Relaxed);
                                counts.note_address(peer.ip());
                            }
                            _ => {}
                        }
                        tracing::debug!(%peer, error = %e, "relay: connection ended");
                    }
                }
                drop(source);
                drop(permit);
            });
        }
    }
}

/// Connections per source address.
#[derive(Clone)]
struct Sources {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

struct SourceGuard {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Sources {
    fn new(max: usize) -> Self {
        Sources {
            open: Arc::new(Mutex::new(HashMap::new())),
            max,
        }
    }

    fn open(&self, ip: IpAddr) -> Option<SourceGuard> {
        let ip = source_of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            open: Arc::clone(&self.open),
            ip,
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Refusals since the last report.
#[derive(Default)]
struct Counts {
    over_limit: AtomicU64,
    slow_handshakes: AtomicU64,
    not_tls: AtomicU64,
    /// Refusals per address (bounded: at most 1024 addresses per interval are named).
    addresses: Mutex<HashMap<IpAddr, u64>>,
}

impl Counts {
    fn note_address(&self, ip: IpAddr) {
        let mut a = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if a.len() < 1024 || a.contains_key(&ip) {
            *a.entry(ip).or_insert(0) += 1;
        }
    }
}

struct ReportOnDrop(tokio::task::JoinHandle<()>);

impl Drop for ReportOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes the refusal counts to the host's log every [`REPORT_EVERY`] when there were any: one
/// line per interval, whatever the number of refused connections.
async fn report(counts: Arc<Counts>, limits: RelayLimits) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let over = counts.over_limit.swap(0, Ordering::Relaxed);
        let slow = counts.slow_handshakes.swap(0, Ordering::Relaxed);
        let junk = counts.not_tls.swap(0, Ordering::Relaxed);
        let addresses = std::mem::take(
            &mut *counts
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if over + slow + junk == 0 {
            continue;
        }
        let mut top: Vec<(IpAddr, u64)> = addresses.into_iter().collect();
        top.sort_by_key(|t| std::cmp::Reverse(t.1));
        let named: Vec<String> = top
            .iter()
            .take(5)
            .map(|(ip, n)| format!("{ip} ({n})"))
            .collect();
        tracing::warn!(
            over_per_source_limit = over,
            per_source_limit = limits.max_per_source,
            handshake_not_finished = slow,
            handshake_timeout_secs = limits.handshake_timeout.map_or(0, |d| d.as_secs()),
            not_tls = junk,
            addresses = top.len(),
            top = %named.join(", "),
            "relay: refused connections in the last {} s",
            REPORT_EVERY.as_secs()
        );
    }
}

/// Relays one client connection to `target` until either side closes; returns the bytes copied
/// client → enclave and enclave → client. With no target the client is closed at once. No
/// handshake deadline (see [`relay_one_with`]).
pub async fn relay_one(
    client: TcpStream,
    target: Option<SocketAddr>,
    recorder: Option<Recorder>,
) -> io::Result<(u64, u64)> {
    relay_one_with(client, target, recorder, None).await
}

/// [`relay_one`] with a handshake deadline: unless the client has sent a TLS application-data
/// record within `handshake_timeout`, the connection is closed (`TimedOut`); bytes that are not
/// TLS records close it at once (`InvalidData`).
pub async fn relay_one_with(
    client: TcpStream,
    target: Option<SocketAddr>,
    recorder: Option<Recorder>,
    handshake_timeout: Option<Duration>,
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
    let client = Tap::new(client, recorder);
    let Some(deadline) = handshake_timeout else {
        let mut client = client;
        return tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            BUFFER,
            BUFFER,
        )
        .await;
    };
    let mut client = RecordWatch::new(client);
    let state = client.state();
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER);
    tokio::pin!(copy);
    tokio::select! {
        done = &mut copy => return done,
        () = tokio::time::sleep(deadline) => {}
    }
    if state.load(Ordering::Relaxed) != HANDSHAKE_DONE {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client did not finish its TLS handshake within {} s",
                deadline.as_secs_f32()
            ),
        ));
    }
    copy.await
}

const HANDSHAKING: u8 = 0;
const HANDSHAKE_DONE: u8 = 1;

/// TLS record layer (RFC 8446 §5.1): content types a client may send, and the largest record.
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const RECORD_HEADER: usize = 5;
const MAX_RECORD: usize = (1 << 14) + 256;

/// Reads the client's bytes through, following the TLS record headers until the first
/// application-data record (then it only passes bytes). Changes nothing.
struct RecordWatch<S> {
    inner: S,
    state: Arc<AtomicU8>,
    header: [u8; RECORD_HEADER],
    have: usize,
    skip: usize,
}

impl<S> RecordWatch<S> {
    fn new(inner: S) -> Self {
        RecordWatch {
            inner,
            state: Arc::new(AtomicU8::new(HANDSHAKING)),
            header: [0; RECORD_HEADER],
            have: 0,
            skip: 0,
        }
    }

    fn state(&self) -> Arc<AtomicU8> {
        Arc::clone(&self.state)
    }

    /// Follows the record layer over `bytes`; an error when they are not TLS records.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() && self.state.load(Ordering::Relaxed) == HANDSHAKING {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (RECORD_HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < RECORD_HEADER {
                break;
            }
            self.have = 0;
            let [content, major, _minor, hi, lo] = self.header;
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let known = matches!(
                content,
                CONTENT_CHANGE_CIPHER_SPEC
                    | CONTENT_ALERT
                    | CONTENT_HANDSHAKE
                    | CONTENT_APPLICATION_DATA
            );
            if !known || major != 3 || len > MAX_RECORD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the client sent bytes that are not TLS records",
                ));
            }
            if content == CONTENT_APPLICATION_DATA {
                self.state.store(HANDSHAKE_DONE, Ordering::Relaxed);
            }
            self.skip = len;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.state.load(Ordering::Relaxed) == HANDSHAKE_DONE {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(this.scan(&buf.filled()[before..]))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The source a connection is counted against: an IPv4 address, or the /64 network of an IPv6 address
/// (one subscriber usually holds a whole /64, so counting single IPv6 addresses would give one peer
/// 2^64 "sources"). IPv4-mapped IPv6 addresses count as their IPv4 address.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests;
