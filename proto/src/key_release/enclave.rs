//! The enclave's side of one key release, sans-IO: the first frame out, then bytes from the broker in;
//! what to attest and the released key out.
//!
//! ```text
//! start()                         -> KeyRequest bytes                   ExpectChallenge
//! Challenge{nonce}                -> NeedEvidence{nonce, enclave_key}   NeedEvidence
//! attest(evidence)                -> Attest bytes                       ExpectAnswer
//! Granted{…} | Refused{code}      -> Released(key) | Refused(code)      Done
//! ```
//! The X25519 key pair is drawn (from the injected RNG) when the challenge arrives and consumed by the
//! unwrap: it never outlives the exchange.

use cloister_attestation::evidence::{Evidence, Sha384};
use cloister_models::ModelKey;
use ring::rand::SecureRandom;

use super::{
    BrokerToEnclave, EnclaveKeyPair, EnclaveToBroker, FrameReader, RefusalCode, PROTOCOL_VERSION,
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
    /// The broker released the key (authenticated by the unwrap).
    Released(ModelKey),
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
}

impl std::fmt::Debug for EnclaveExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveExchange")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl EnclaveExchange {
    /// Starts a release of the key of `model_digest`: the exchange, and the framed `KeyRequest` to send.
    pub fn start(model_digest: Sha384) -> Result<(Self, Vec<u8>), Error> {
        let first = frame::encode(&EnclaveToBroker::KeyRequest {
            version: PROTOCOL_VERSION,
            model_digest,
        })?;
        Ok((
            EnclaveExchange {
                frames: FrameReader::new(),
                state: State::ExpectChallenge,
                digest: model_digest,
            },
            first,
        ))
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
                },
            ) => Ok(Some(EnclaveEvent::Released(pair.unwrap(
                &nonce,
                &self.digest,
                &broker_public,
                &wrapped_key,
            )?))),
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
