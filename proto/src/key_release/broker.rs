//! The broker's side of one connection, sans-IO: bytes from the enclave in; bytes to send, evidence to
//! verify and refusals to record out. Several exchanges may follow one another on a connection (one per
//! model), each with its own nonce.
//!
//! ```text
//! ExpectKeyRequest --KeyRequest v2--> Challenge{fresh nonce}        --> ExpectAttest
//! ExpectAttest     --Attest-------->  Verify(AttestToVerify)       --> AwaitingDecision
//! AwaitingDecision --grant/commit/refuse--> Send(Granted | Committed | Refused) --> ExpectKeyRequest (or Closed)
//! anything else                    --> Refused{BadRequest} and Closed
//! ```
//! `grant` answers a request without a state operation or with `Open` (the anchor rides along);
//! `commit` answers `Commit` and releases no key: each answer is possible only for its kind of request.
//! ```text
//! ```

use cloister_attestation::evidence::{Evidence, ExpectedSession, Sha384, VerifiedEvidence};
use cloister_models::ModelKey;
use ring::rand::SecureRandom;

use super::{
    is_valid_state_label, wrap_model_key, BrokerToEnclave, Clock, EnclaveToBroker, FrameReader,
    RefusalCode, StateAnchor, StateRequest, PROTOCOL_VERSION,
};
use crate::{frame, Error};

/// What the broker must do next.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerEvent {
    /// Send this framed `Challenge`; `nonce` is single use (the broker may keep it to tell a replay from
    /// a nonce it never issued).
    Challenge {
        /// The framed message.
        frame: Vec<u8>,
        /// The fresh nonce it carries.
        nonce: [u8; 32],
        /// The model whose key is requested.
        requested: Sha384,
    },
    /// Verify this evidence against the owner's policy, then answer with
    /// [`BrokerConnection::grant`] or [`BrokerConnection::refuse`].
    Verify(Box<AttestToVerify>),
    /// Record this refusal, send `frame`, then close the connection.
    Refuse {
        /// The framed `Refused`.
        frame: Vec<u8>,
        /// The code sent.
        code: RefusalCode,
        /// The precise reason, for the broker's audit log only.
        reason: String,
        /// The requested model, if the request got that far.
        requested: Option<Sha384>,
    },
    /// The enclave closed cleanly between exchanges: not a decision.
    Closed,
}

/// An `Attest` to verify: the evidence, and what this exchange expects it to say.
#[derive(Debug)]
pub struct AttestToVerify {
    /// The evidence as received (untrusted).
    pub evidence: Evidence,
    /// The nonce this exchange issued.
    pub nonce: [u8; 32],
    /// The exporter of this connection.
    pub exporter: [u8; 32],
    /// The model whose key was requested.
    pub requested: Sha384,
    /// The verification instant (the injected clock, read when the evidence arrived).
    pub at_unix: i64,
    /// The durable-state operation of this exchange, if any.
    pub state: Option<StateRequest>,
}

impl AttestToVerify {
    /// The session the evidence must be bound to.
    pub fn expected(&self) -> ExpectedSession<'_> {
        ExpectedSession {
            nonce: &self.nonce,
            tls_exporter: &self.exporter,
        }
    }
}

#[derive(Debug)]
enum State {
    ExpectKeyRequest,
    ExpectAttest {
        nonce: [u8; 32],
        requested: Sha384,
        state: Option<StateRequest>,
    },
    AwaitingDecision {
        nonce: [u8; 32],
        requested: Sha384,
        commit: bool,
    },
    Closed,
}

/// The broker's side of one TLS connection.
#[derive(Debug)]
pub struct BrokerConnection {
    frames: FrameReader,
    state: State,
    exporter: [u8; 32],
    exchanges_left: usize,
}

impl BrokerConnection {
    /// A connection whose TLS exporter is `exporter`, serving at most `max_exchanges` key requests.
    pub fn new(exporter: [u8; 32], max_exchanges: usize) -> Self {
        BrokerConnection {
            frames: FrameReader::new(),
            state: State::ExpectKeyRequest,
            exporter,
            exchanges_left: max_exchanges.max(1),
        }
    }

    /// Whether the connection is over (after a refusal, the last exchange, or a protocol error).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Between exchanges, with no partial message buffered: an end of stream now is a clean close.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::ExpectKeyRequest) && !self.frames.is_mid_frame()
    }

    /// Bytes received from the enclave. Returns what they cause, in order; nonces come from `rng`, the
    /// verification instant from `clock`.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        rng: &dyn SecureRandom,
        clock: &dyn Clock,
    ) -> Result<Vec<BrokerEvent>, Error> {
        let mut events = vec![];
        if let Err(e) = self.frames.push(bytes) {
            events.push(self.bad_request(format!("protocol: {e}"), None));
            return Ok(events);
        }
        while !self.is_closed() {
            let Some(payload) = self.frames.next_payload() else {
                break;
            };
            let event = self.on_payload(&payload, rng, clock)?;
            let stop = matches!(event, BrokerEvent::Refuse { .. } | BrokerEvent::Verify(_));
            events.push(event);
            if stop {
                break;
            }
        }
        Ok(events)
    }

    /// The enclave closed its side. Between exchanges this is the normal end; in the middle of one it is
    /// a broken exchange (no decision is recorded for it).
    pub fn end_of_stream(&mut self) -> BrokerEvent {
        self.state = State::Closed;
        BrokerEvent::Closed
    }

    fn on_payload(
        &mut self,
        payload: &[u8],
        rng: &dyn SecureRandom,
        clock: &dyn Clock,
    ) -> Result<BrokerEvent, Error> {
        let msg = match frame::decode::<EnclaveToBroker>(payload, "enclave message") {
            Ok(m) => m,
            Err(e) => return Ok(self.bad_request(format!("protocol: {e}"), self.requested())),
        };
        match (std::mem::replace(&mut self.state, State::Closed), msg) {
            (
                State::ExpectKeyRequest,
                EnclaveToBroker::KeyRequest {
                    version,
                    model_digest,
                    state,
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    return Ok(self.bad_request(
                        format!("version: expected {PROTOCOL_VERSION}, found {version}"),
                        Some(model_digest),
                    ));
                }
                // The label names a file at the host and a record here: strict before anything else.
                if let Some(label) = state.as_ref().map(StateRequest::label) {
                    if !is_valid_state_label(label) {
                        return Ok(self.bad_request(
                            "state: the instance label must be 1 to 64 of [a-z0-9-], not starting with -"
                                .into(),
                            Some(model_digest),
                        ));
                    }
                }
                if matches!(state, Some(StateRequest::Commit { version: 0, .. })) {
                    return Ok(self.bad_request(
                        "state: a commit's version starts at 1".into(),
                        Some(model_digest),
                    ));
                }
                let mut nonce = [0u8; 32];
                rng.fill(&mut nonce)
                    .map_err(|_| Error::KeyWrap("the system RNG failed"))?;
                self.state = State::ExpectAttest {
                    nonce,
                    requested: model_digest,
                    state,
                };
                Ok(BrokerEvent::Challenge {
                    frame: frame::encode(&BrokerToEnclave::Challenge { nonce })?,
                    nonce,
                    requested: model_digest,
                })
            }
            (
                State::ExpectAttest {
                    nonce,
                    requested,
                    state,
                },
                EnclaveToBroker::Attest { evidence },
            ) => {
                self.state = State::AwaitingDecision {
                    nonce,
                    requested,
                    commit: matches!(state, Some(StateRequest::Commit { .. })),
                };
                Ok(BrokerEvent::Verify(Box::new(AttestToVerify {
                    evidence,
                    nonce,
                    exporter: self.exporter,
                    requested,
                    at_unix: clock.now_unix(),
                    state,
                })))
            }
            (State::ExpectKeyRequest, EnclaveToBroker::Attest { .. }) => Ok(self.bad_request(
                "protocol: expected KeyRequest, received Attest".into(),
                None,
            )),
            (State::ExpectAttest { requested, .. }, EnclaveToBroker::KeyRequest { .. }) => Ok(self
                .bad_request(
                    "protocol: expected Attest, received KeyRequest".into(),
                    Some(requested),
                )),
            (State::AwaitingDecision { requested, .. }, _) => Ok(self.bad_request(
                "protocol: a message arrived before the previous one was answered".into(),
                Some(requested),
            )),
            (State::Closed, _) => Ok(BrokerEvent::Closed),
        }
    }

    fn requested(&self) -> Option<Sha384> {
        match &self.state {
            State::ExpectAttest { requested, .. } | State::AwaitingDecision { requested, .. } => {
                Some(*requested)
            }
            _ => None,
        }
    }

    fn bad_request(&mut self, reason: String, requested: Option<Sha384>) -> BrokerEvent {
        self.state = State::Closed;
        BrokerEvent::Refuse {
            frame: frame::encode(&BrokerToEnclave::Refused {
                code: RefusalCode::BadRequest,
            })
            .unwrap_or_default(),
            code: RefusalCode::BadRequest,
            reason,
            requested,
        }
    }

    /// Grants the pending exchange: wraps `key` to the enclave of `verified`, which must be the evidence of
    /// this exchange (its nonce), with the instance's `anchor` when the request opened a state. Returns the
    /// framed `Granted`. A `Commit` request is never granted a key.
    pub fn grant(
        &mut self,
        verified: &VerifiedEvidence,
        key: &ModelKey,
        anchor: Option<StateAnchor>,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, Error> {
        let State::AwaitingDecision {
            nonce,
            requested,
            commit: false,
        } = self.state
        else {
            return Err(Error::UnexpectedMessage {
                expected: "a pending key request (not a state commit) to grant",
            });
        };
        self.check_binding(verified, &nonce)?;
        let (broker_public, wrapped_key) = wrap_model_key(key, verified, &requested, rng)?;
        self.next_exchange();
        frame::encode(&BrokerToEnclave::Granted {
            broker_public,
            wrapped_key,
            anchor,
        })
    }

    /// Answers a pending `Commit` whose evidence is `verified` (this exchange's): the anchor as the broker
    /// recorded it. Returns the framed `Committed`.
    pub fn commit(
        &mut self,
        verified: &VerifiedEvidence,
        anchor: StateAnchor,
    ) -> Result<Vec<u8>, Error> {
        let State::AwaitingDecision {
            nonce,
            commit: true,
            ..
        } = self.state
        else {
            return Err(Error::UnexpectedMessage {
                expected: "a pending state commit",
            });
        };
        self.check_binding(verified, &nonce)?;
        self.next_exchange();
        frame::encode(&BrokerToEnclave::Committed { anchor })
    }

    fn check_binding(&self, verified: &VerifiedEvidence, nonce: &[u8; 32]) -> Result<(), Error> {
        if !cloister_attestation::ct_eq(&verified.claims().nonce, nonce) {
            return Err(Error::KeyWrap(
                "the verified evidence is not this exchange's (another nonce)",
            ));
        }
        // Defence in depth: verification bound the evidence to an exporter; it must be this connection's.
        if !cloister_attestation::ct_eq(&verified.claims().tls_exporter, &self.exporter) {
            return Err(Error::KeyWrap(
                "the verified evidence is bound to another TLS connection (exporter)",
            ));
        }
        Ok(())
    }

    /// Refuses the pending exchange with `code`. Returns the framed `Refused`. The connection stays open for
    /// the next exchange when the refusal is a decision about verified evidence; `close` ends it.
    pub fn refuse(&mut self, code: RefusalCode, close: bool) -> Result<Vec<u8>, Error> {
        if !matches!(self.state, State::AwaitingDecision { .. }) {
            return Err(Error::UnexpectedMessage {
                expected: "a pending Attest to refuse",
            });
        }
        if close {
            self.state = State::Closed;
        } else {
            self.next_exchange();
        }
        frame::encode(&BrokerToEnclave::Refused { code })
    }

    fn next_exchange(&mut self) {
        self.exchanges_left = self.exchanges_left.saturating_sub(1);
        self.state = if self.exchanges_left == 0 {
            State::Closed
        } else {
            State::ExpectKeyRequest
        };
    }
}
