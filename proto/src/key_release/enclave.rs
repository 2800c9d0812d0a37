//! The enclave's side of one key release, sans-IO: the first frame out, then bytes from the broker in;
//! what to attest and the released key out.
//!
//! ```text
//! start(digest, state)            -> KeyRequest bytes                   ExpectChallenge
//! Challenge{nonce}                -> NeedEvidence{nonce, enclave_key}   NeedEvidence
//! attest(evidence)                -> Attest bytes                       ExpectAnswer
//! Granted{…} | Refused{code}      -> Released{key, anchor} | Refused    Done   (no state, or Open)
//! Committed{anchor} | Refused     -> Committed(anchor) | Refused        Done   (Commit)
//! ```
//! A `Granted` answering a `Commit`, a `Committed` answering anything else, an `Open` answered without
//! an anchor, or an anchor other than the committed version are protocol errors.
//! The X25519 key pair is drawn (from the injected RNG) when the challenge arrives and consumed by the
//! unwrap: it never outlives the exchange.

use cloister_attestation::evidence::{Evidence, Sha384};
use cloister_models::ModelKey;
use ring::rand::SecureRandom;

use super::{
    BrokerToEnclave, EnclaveKeyPair, EnclaveToBroker, FrameReader, RefusalCode, StateAnchor,
    StateRequest, PROTOCOL_VERSION,
};
use crate::{frame, Error};

/// What the enclave must do next.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnclaveEvent {
    /// Make evidence whose claims carry this nonce, this connection's exporter, this X25519 public key and
    /// the model's digest, then call [`EnclaveExchange::attest`].
    NeedEvidence {
        /// The broker's nonce.
        nonce: [u8; 32],
        /// The public half of the exchange's X25519 key.
        enclave_public: [u8; 32],
    },
    /// The broker released the key (authenticated by the unwrap), with the instance's state anchor when
    /// the exchange opened a state.
    Released {
        /// The model key.
        key: ModelKey,
        /// The anchor (with [`StateRequest::Open`]).
        anchor: Option<StateAnchor>,
    },
    /// The broker recorded a state commit.
    Committed(StateAnchor),
    /// The broker refused.
    Refused(RefusalCode),
}

enum State {
    ExpectChallenge,
    NeedEvidence {
        nonce: [u8; 32],
        pair: EnclaveKeyPair,
    },
    ExpectAnswer {
        nonce: [u8; 32],
        pair: EnclaveKeyPair,
    },
    Done,
}

/// One key release, enclave side.
pub struct EnclaveExchange {
    frames: FrameReader,
    state: State,
    digest: Sha384,
    request: Option<StateRequest>,
}

impl std::fmt::Debug for EnclaveExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveExchange")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl EnclaveExchange {
    /// Starts a release of the key of `model_digest` (or, with [`StateRequest::Commit`], a state commit
    /// attested under that model's policy): the exchange, and the framed `KeyRequest` to send.
    pub fn start(
        model_digest: Sha384,
        state: Option<StateRequest>,
    ) -> Result<(Self, Vec<u8>), Error> {
        let first = frame::encode(&EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION,
            model_digest,
            state: state.clone(),
        })?;
        Ok((
            EnclaveExchange {
                frames: FrameReader::new(),
                state: State::ExpectChallenge,
                digest: model_digest,
                request: state,
            },
            first,
        ))
    }

    /// The answer to a `Commit`: the anchor must now be the committed version and digest.
    fn committed(&self, anchor: StateAnchor) -> Result<EnclaveEvent, Error> {
        match &self.request {
            Some(StateRequest::Commit {
                version, digest, ..
            }) if anchor.version == *version && anchor.digest == Some(*digest) => {
                Ok(EnclaveEvent::Committed(anchor))
            }
            Some(StateRequest::Commit { .. }) => Err(Error::UnexpectedMessage {
                expected: "Committed with the version and digest committed",
            }),
            _ => Err(Error::UnexpectedMessage {
                expected: "Granted or Refused",
            }),
        }
    }

    /// Bytes received from the broker; `Some` once they complete a message.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Option<EnclaveEvent>, Error> {
        self.frames.push(bytes)?;
        let Some(payload) = self.frames.next_payload() else {
            return Ok(None);
        };
        let msg: BrokerToEnclave = frame::decode(&payload, "broker message")?;
        match (std::mem::replace(&mut self.state, State::Done), msg) {
            (State::ExpectChallenge, BrokerToEnclave::Challenge { nonce }) => {
                let pair = EnclaveKeyPair::generate(rng)?;
                let enclave_public = pair.public();
                self.state = State::NeedEvidence { nonce, pair };
                Ok(Some(EnclaveEvent::NeedEvidence {
                    nonce,
                    enclave_public,
                }))
            }
            (
                State::ExpectAnswer { nonce, pair },
                BrokerToEnclave::Granted {
                    broker_public,
                    wrapped_key,
                    anchor,
                },
            ) => {
                match (&self.request, &anchor) {
                    (None, None) | (Some(StateRequest::Open { .. }), Some(_)) => {}
                    _ => {
                        return Err(Error::UnexpectedMessage {
                            expected: "Granted with an anchor exactly when a state was opened",
                        })
                    }
                }
                let key = pair.unwrap(&nonce, &self.digest, &broker_public, &wrapped_key)?;
                Ok(Some(EnclaveEvent::Released { key, anchor }))
            }
            (State::ExpectAnswer { .. }, BrokerToEnclave::Committed { anchor }) => {
                self.committed(anchor).map(Some)
            }
            (
                State::ExpectChallenge | State::ExpectAnswer { .. },
                BrokerToEnclave::Refused { code },
            ) => Ok(Some(EnclaveEvent::Refused(code))),
            (State::ExpectChallenge, _) => Err(Error::UnexpectedMessage {
                expected: "Challenge",
            }),
            _ => Err(Error::UnexpectedMessage {
                expected: "Granted or Refused",
            }),
        }
    }

    /// The evidence for the challenge: returns the framed `Attest` to send.
    pub fn attest(&mut self, evidence: Evidence) -> Result<Vec<u8>, Error> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::NeedEvidence { nonce, pair } => {
                self.state = State::ExpectAnswer { nonce, pair };
                frame::encode(&EnclaveToBroker::Attest { evidence })
            }
            _ => Err(Error::UnexpectedMessage {
                expected: "a challenge to attest to",
            }),
        }
    }

    /// The model whose key this exchange asks for.
    pub fn model_digest(&self) -> &Sha384 {
        &self.digest
    }
}
