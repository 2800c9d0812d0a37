//! Nonces the broker issued: tells a replayed nonce from a made-up one in the audit log.

use std::collections::{HashSet, VecDeque};

/// Nonces the broker issued, oldest first, bounded: tells a replayed nonce from a made-up one in the
/// audit log. Acceptance never depends on it (only the current exchange's nonce is accepted).
pub(crate) struct IssuedNonces {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl IssuedNonces {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nonce`; false if it was already recorded (the RNG repeated itself: never use it).
    pub(crate) fn insert(&mut self, nonce: [u8; 32]) -> bool {
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub(crate) fn contains(&self, nonce: &[u8; 32]) -> bool {
        self.set.contains(nonce)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn issued_nonces_are_bounded_and_remembered() {
        let mut n = IssuedNonces::new(2);
        assert!(n.insert([1; 32]));
        assert!(!n.insert([1; 32]));
        assert!(n.insert([2; 32]));
        assert!(n.insert([3; 32]));
        assert!(!n.contains(&[1; 32]));
        assert!(n.contains(&[2; 32]) && n.contains(&[3; 32]));
        assert_eq!(n.order.len(), 2);
    }
}
