//! What unauthenticated peers may cost the broker: connections per source address, and audit lines.
//!
//! The broker faces the network. Before evidence has verified, a peer is anyone: 3,671 junk TLS connections
//! in 10 s used to write 3,671 audit lines (about 10 GiB a day), and a full disk turns every answer into a
//! refusal. So refusals of peers whose evidence did not verify are counted per source address and written as
//! one summary line per address per interval; decisions about verified evidence (grants, policy refusals)
//! are always written in full. And one address may hold only so many of the broker's connections, so that a
//! single slow client cannot take them all.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// Distinct addresses tracked per interval; refusals from further addresses are counted under `other`.
pub(crate) const MAX_TRACKED_PEERS: usize = 4096;
/// Distinct reasons kept per address and interval (the first ones seen), for diagnosis.
pub(crate) const MAX_REASONS: usize = 8;

/// One line of the audit log that summarises, for one source address and one interval, the refusals of
/// peers whose evidence did not verify (or that never sent any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// When the summary was written (RFC 3339, UTC).
    pub time: String,
    /// Always `unverified_refusals`: tells a summary line from a decision line.
    pub summary: String,
    /// The source address (no port), or `other` once [`MAX_TRACKED_PEERS`] addresses were seen.
    pub peer: String,
    /// First refusal of the interval (RFC 3339).
    pub first: String,
    /// Last refusal of the interval (RFC 3339).
    pub last: String,
    /// How many refusals.
    pub count: u64,
    /// How many of each code (`BadRequest`, `Replay`, `EvidenceRejected`, `Connection`, `PerSourceLimit`, …).
    pub codes: BTreeMap<String, u64>,
    /// The first distinct reasons (at most [`MAX_REASONS`]).
    pub reasons: Vec<String>,
}

#[derive(Default)]
struct Tally {
    first: String,
    last: String,
    count: u64,
    codes: BTreeMap<String, u64>,
    reasons: Vec<String>,
}

#[derive(Default)]
struct State {
    open: HashMap<IpAddr, usize>,
    tallies: BTreeMap<String, Tally>,
}

/// Per-address connection counts and refusal tallies. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct PeerBook {
    state: Arc<Mutex<State>>,
    max_per_source: usize,
}

/// A connection counted against its source address; released when dropped.
pub(crate) struct OpenConnection {
    book: PeerBook,
    ip: IpAddr,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut state = self.book.lock();
        if let Some(n) = state.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                state.open.remove(&self.ip);
            }
        }
    }
}

impl PeerBook {
    pub(crate) fn new(max_per_source: usize) -> Self {
        PeerBook {
            state: Arc::new(Mutex::new(State::default())),
            max_per_source: max_per_source.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters only: a panic while held cannot leave them unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or refuses it (`None`) when that address already holds
    /// `max_per_source` connections.
    pub(crate) fn open(&self, ip: IpAddr) -> Option<OpenConnection> {
        let ip = source_of(ip);
        let mut state = self.lock();
        let n = state.open.entry(ip).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(OpenConnection {
            book: self.clone(),
            ip,
        })
    }

    /// Counts one refusal of an unverified peer.
    pub(crate) fn refused(&self, ip: IpAddr, code: &str, reason: &str) {
        let now = now_rfc3339();
        let mut state = self.lock();
        let key = ip.to_string();
        let key = if state.tallies.contains_key(&key) || state.tallies.len() < MAX_TRACKED_PEERS {
            key
        } else {
            "other".to_owned()
        };
        let tally = state.tallies.entry(key).or_default();
        if tally.count == 0 {
            tally.first.clone_from(&now);
        }
        tally.last = now;
        tally.count += 1;
        *tally.codes.entry(code.to_owned()).or_insert(0) += 1;
        if tally.reasons.len() < MAX_REASONS && !tally.reasons.iter().any(|r| r == reason) {
            tally.reasons.push(reason.to_owned());
        }
    }

    /// The summaries of the interval that ends now, one per address; the tallies start again from zero.
    pub(crate) fn take_summaries(&self) -> Vec<AuditSummary> {
        let tallies = std::mem::take(&mut self.lock().tallies);
        let time = now_rfc3339();
        tallies
            .into_iter()
            .map(|(peer, t)| AuditSummary {
                time: time.clone(),
                summary: "unverified_refusals".to_owned(),
                peer,
                first: t.first,
                last: t.last,
                count: t.count,
                codes: t.codes,
                reasons: t.reasons,
            })
            .collect()
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_address_and_released() {
        let book = PeerBook::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = book.open(a).unwrap();
        let _second = book.open(a).unwrap();
        assert!(book.open(a).is_none());
        // Another address is unaffected.
        let _other = book.open(b).unwrap();
        drop(first);
        assert!(book.open(a).is_some());
    }

    #[test]
    fn refusals_are_summarised_per_address_with_bounded_reasons() {
        let book = PeerBook::new(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..1000 {
            book.refused(a, "BadRequest", &format!("protocol: junk {}", i % 20));
        }
        book.refused("192.0.2.9".parse().unwrap(), "Replay", "claims.nonce: …");
        let lines = book.take_summaries();
        assert_eq!(lines.len(), 2);
        let s = lines.iter().find(|l| l.peer == "192.0.2.1").unwrap();
        assert_eq!(s.count, 1000);
        assert_eq!(s.codes.get("BadRequest"), Some(&1000));
        assert_eq!(s.reasons.len(), MAX_REASONS);
        assert!(book.take_summaries().is_empty(), "tallies restart");
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let book = PeerBook::new(1);
        for i in 0..(MAX_TRACKED_PEERS as u32 + 100) {
            book.refused(IpAddr::from(i.to_be_bytes()), "Connection", "handshake");
        }
        let lines = book.take_summaries();
        assert_eq!(lines.len(), MAX_TRACKED_PEERS + 1);
        let other = lines.iter().find(|l| l.peer == "other").unwrap();
        assert_eq!(other.count, 100);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let book = PeerBook::new(1);
        let _a = book.open("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(book.open("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(book.open("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = book.open("192.0.2.7".parse().unwrap()).unwrap();
        assert!(book.open("::ffff:192.0.2.7".parse().unwrap()).is_none());
    }
}
