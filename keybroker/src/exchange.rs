//! One connection: the TLS handshake, then the sans-IO [`BrokerConnection`] fed with the bytes that arrive,
//! and the decisions only the owner can make — verify the evidence against the policy, find the key,
//! grant or refuse — each recorded before it is sent.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloister_attestation::evidence::{verify_evidence, EnclaveKey, Sha384, VerifiedEvidence};
use cloister_attestation::{Error as EvidenceError, Policy, VerifyOptions};
use cloister_models::{Error as ModelsError, KeystoreError, ModelDigest};
use cloister_proto::key_release::{
    AttestToVerify, BrokerConnection, BrokerEvent, RefusalCode, StateRequest,
};
use cloister_proto::Error as ProtoError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditRecord;
use crate::shared::{Inner, LoadedPolicy};

/// Why a connection ended early (stderr only; decisions go to the audit log).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("TLS handshake: {0}")]
    Handshake(io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Proto(#[from] ProtoError),
    #[error("TLS exporter: {0}")]
    Exporter(rustls::Error),
    #[error("the system random number generator failed")]
    Rng,
    #[error("audit log: {0}")]
    Audit(io::Error),
    #[error("internal: {0}")]
    Internal(String),
}

struct Deadline {
    end: Instant,
}

impl Deadline {
    /// Runs `fut` for at most `per_op`, and never past the connection's deadline.
    async fn run<T>(
        &self,
        per_op: Duration,
        what: &'static str,
        fut: impl Future<Output = T>,
    ) -> Result<T, ConnError> {
        let limit = (Instant::now() + per_op).min(self.end);
        tokio::time::timeout_at(limit, fut)
            .await
            .map_err(|_| ConnError::Timeout(what))
    }
}

pub(crate) async fn handle_connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), ConnError> {
    let limits = &inner.limits;
    let deadline = Deadline {
        end: Instant::now() + Duration::from_secs(limits.connection_timeout_secs),
    };
    let read_timeout = Duration::from_secs(limits.read_timeout_secs);
    let _ = tcp.set_nodelay(true);
    let mut tls = deadline
        .run(
            Duration::from_secs(limits.handshake_timeout_secs),
            "in the TLS handshake",
            acceptor.accept(tcp),
        )
        .await?
        .map_err(ConnError::Handshake)?;
    // RFC 8446 §7.5: this connection's exporter; the evidence must carry the same value.
    let exporter = cloister_proto::tls::exporter(tls.get_ref().1).map_err(ConnError::Exporter)?;

    let mut conn = BrokerConnection::new(exporter, limits.max_requests_per_connection);
    let result = serve(&inner, &mut tls, &mut conn, peer, &deadline, read_timeout).await;
    // Best effort close_notify; the peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
    result
}

async fn serve(
    inner: &Arc<Inner>,
    tls: &mut TlsStream<TcpStream>,
    conn: &mut BrokerConnection,
    peer: SocketAddr,
    deadline: &Deadline,
    read_timeout: Duration,
) -> Result<(), ConnError> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut record = AuditRecord::new(peer, inner.now_unix());
    while !conn.is_closed() {
        let read = deadline
            .run(read_timeout, "waiting for a message", tls.read(&mut buf))
            .await?;
        let n = match read {
            Ok(n) => n,
            // A peer that closes without TLS close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(ConnError::Proto(ProtoError::Io(e))),
        };
        if n == 0 {
            // Between exchanges this is the normal end; in the middle of one, a broken exchange.
            let idle = conn.is_idle();
            conn.end_of_stream();
            return if idle {
                Ok(())
            } else {
                Err(ConnError::Proto(ProtoError::UnexpectedEof))
            };
        }
        let events = conn
            .receive(&buf[..n], &inner.rng, &*inner.clock)
            .map_err(|_| ConnError::Rng)?;
        for event in events {
            match event {
                BrokerEvent::Challenge {
                    frame,
                    nonce,
                    requested,
                } => {
                    record = AuditRecord::new(peer, inner.now_unix());
                    record.model_digest = Some(sha384_text(&requested));
                    // Single use: a nonce the RNG repeated is never used.
                    let fresh = inner
                        .nonces
                        .lock()
                        .map_err(|_| ConnError::Internal("nonce set lock poisoned".into()))?
                        .insert(nonce);
                    if !fresh {
                        return Err(ConnError::Rng);
                    }
                    record.nonce = Some(hex::encode(nonce));
                    send(tls, deadline, &frame).await?;
                }
                BrokerEvent::Refuse {
                    frame,
                    code,
                    reason,
                    requested,
                } => {
                    if let Some(r) = requested {
                        record.model_digest = Some(sha384_text(&r));
                    }
                    record.refuse(code, reason);
                    answer(
                        inner,
                        tls,
                        deadline,
                        std::mem::replace(&mut record, AuditRecord::new(peer, inner.now_unix())),
                        frame,
                    )
                    .await?;
                }
                BrokerEvent::Verify(mut pending) => {
                    complete_chain(inner, &mut pending).await;
                    // Signature checks are CPU work: off the async workers, with the machine.
                    let decide_inner = inner.clone();
                    let mut taken = std::mem::replace(conn, BrokerConnection::new([0; 32], 1));
                    let mut this =
                        std::mem::replace(&mut record, AuditRecord::new(peer, inner.now_unix()));
                    let (back, this, frame) = tokio::task::spawn_blocking(move || {
                        let frame = decide(&decide_inner, &mut taken, &mut this, &pending);
                        (taken, this, frame)
                    })
                    .await
                    .map_err(|e| ConnError::Internal(format!("decision task: {e}")))?;
                    *conn = back;
                    let frame = frame.map_err(ConnError::Proto)?;
                    answer(inner, tls, deadline, this, frame).await?;
                }
                BrokerEvent::Closed => return Ok(()),
                _ => return Err(ConnError::Internal("unknown broker event".into())),
            }
        }
    }
    Ok(())
}

async fn send(
    tls: &mut TlsStream<TcpStream>,
    deadline: &Deadline,
    bytes: &[u8],
) -> Result<(), ConnError> {
    deadline
        .run(Duration::from_secs(10), "sending", async {
            tls.write_all(bytes).await?;
            tls.flush().await
        })
        .await?
        .map_err(|e| ConnError::Proto(ProtoError::Io(e)))
}

/// Records the decision, then sends `frame`. Decisions about verified evidence are written in full,
/// before the answer: a grant whose line cannot be written becomes `Refused { Internal }`. Refusals of
/// unverified peers are counted for the per-address summary (see `peers`).
async fn answer(
    inner: &Inner,
    tls: &mut TlsStream<TcpStream>,
    deadline: &Deadline,
    mut record: AuditRecord,
    frame: Vec<u8>,
) -> Result<(), ConnError> {
    if !record.is_about_verified_evidence() && inner.limits.audit_summary_secs > 0 {
        let source = record
            .source
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        inner.peers.refused(
            source,
            record.code.as_deref().unwrap_or("Refused"),
            record.reason.as_deref().unwrap_or(""),
        );
        return send(tls, deadline, &frame).await;
    }
    if let Err(e) = inner.audit.append(&record) {
        eprintln!(
            "cloister keybroker: cannot write the audit log {}: {e}",
            inner.audit.path.display()
        );
        record.enclave_key = None;
        record.key_id = None;
        record.refuse(
            RefusalCode::Internal,
            format!("the audit log could not be written: {e}"),
        );
        let _ = inner.audit.append(&record);
        // Tell the enclave, then give up on this connection.
        if let Ok(refused) =
            cloister_proto::frame::encode(&cloister_proto::key_release::BrokerToEnclave::Refused {
                code: RefusalCode::Internal,
            })
        {
            let _ = send(tls, deadline, &refused).await;
        }
        return Err(ConnError::Audit(e));
    }
    send(tls, deadline, &frame).await
}

fn sha384_text(d: &Sha384) -> String {
    format!("sha384:{}", hex::encode(d.0))
}

/// Fetches the VCEK of evidence that carries none, when the broker has collateral sources. Only for
/// evidence that answers this exchange's nonce and is bound to this connection (cheap checks that keep
/// strangers from making the broker fetch for CHIP_IDs of their choosing), and at most
/// `MAX_COLLATERAL_FETCHES` at once. A failure leaves the chain as it was: verification then refuses
/// it, and the reason is logged here.
async fn complete_chain(inner: &Inner, pending: &mut AttestToVerify) {
    let Some(collateral) = &inner.collateral else {
        return;
    };
    let evidence = &mut pending.evidence;
    if !evidence.cert_chain.leaf.is_empty()
        || !cloister_attestation::ct_eq(&evidence.claims.nonce, &pending.nonce)
        || !cloister_attestation::ct_eq(&evidence.claims.tls_exporter, &pending.exporter)
    {
        return;
    }
    let Ok(_permit) = inner.collateral_fetches.try_acquire() else {
        eprintln!(
            "cloister keybroker: collateral: too many fetches in flight; not fetching a VCEK"
        );
        return;
    };
    let Ok(snp) = evidence.snp_report().map(<[u8]>::to_vec) else {
        return;
    };
    if let Err(e) = collateral.complete(&snp, &mut evidence.cert_chain).await {
        eprintln!(
            "cloister keybroker: collateral: the evidence carries no VCEK and none was had: {e}"
        );
    }
}

/// The coarse code for a verification failure.
fn refusal_code(e: &EvidenceError) -> RefusalCode {
    match e {
        EvidenceError::Policy(_) => RefusalCode::PolicyRejected,
        EvidenceError::NonceMismatch { .. } => RefusalCode::Replay,
        _ => RefusalCode::EvidenceRejected,
    }
}

/// A refusal decided by one step of [`decide`]: the code sent to the enclave, and the reason recorded.
struct Refusal {
    code: RefusalCode,
    reason: String,
}

impl Refusal {
    fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// Verifies the evidence for this exchange and, if everything holds, grants through the machine (which
/// wraps the key to the verified enclave key). Returns the frame to send; `record` says why.
fn decide(
    inner: &Inner,
    conn: &mut BrokerConnection,
    record: &mut AuditRecord,
    pending: &AttestToVerify,
) -> Result<Vec<u8>, ProtoError> {
    record.claimed_report(&pending.evidence);
    match decide_steps(inner, conn, record, pending) {
        Ok(frame) => Ok(frame),
        // A refusal of evidence that did not verify (or an internal failure) ends the connection: a peer gets
        // one full verification per connection for unverified input, not `max_exchanges`. A decision about
        // verified evidence (genuine and fresh, refused by the policy; an unknown model) leaves it open for
        // the next request.
        Err(Refusal { code, reason }) => {
            let close = !(record.evidence_verified || record.policy_decision)
                || code == RefusalCode::Internal;
            record.refuse(code, reason);
            conn.refuse(code, close)
        }
    }
}

/// The steps of [`decide`], in their order (fail closed: the first refusal is the one recorded and sent).
fn decide_steps(
    inner: &Inner,
    conn: &mut BrokerConnection,
    record: &mut AuditRecord,
    pending: &AttestToVerify,
) -> Result<Vec<u8>, Refusal> {
    // Freshness first: it is cheap, and a wrong nonce is refused whatever else the evidence says.
    check_nonce(inner, pending)?;

    // Residency: the requested model's own policy decides, if it has one.
    let decides = inner.policy_for(&pending.requested.0);
    let verified = verify_for_request(decides, record, pending)?;
    let enclave_public = check_made_for_request(&verified, &decides.policy, &pending.requested)?;

    // A durable-state commit releases no key: it moves the instance's anchor by one version.
    if let Some(StateRequest::Commit {
        label,
        version,
        digest,
    }) = &pending.state
    {
        return commit_state(inner, conn, record, &verified, label, *version, *digest);
    }
    release_key(inner, conn, record, pending, &verified, enclave_public)
}

/// The evidence answers this exchange's nonce. A wrong one is a replay, or a nonce this broker never issued;
/// the reason says which, from the history of issued nonces.
fn check_nonce(inner: &Inner, pending: &AttestToVerify) -> Result<(), Refusal> {
    let nonce = &pending.nonce;
    let claimed = &pending.evidence.claims.nonce;
    if cloister_attestation::ct_eq(claimed, nonce) {
        return Ok(());
    }
    let history = match inner.nonces.lock() {
        Ok(n) if n.contains(claimed) => {
            "replayed: that nonce was issued earlier, for another exchange, and is used up"
        }
        Ok(_) => "this broker never issued that nonce (or has forgotten it)",
        Err(_) => "nonce history unavailable",
    };
    Err(Refusal::new(
        RefusalCode::Replay,
        format!(
            "claims.nonce: expected {}, found {} ({history})",
            hex::encode(nonce),
            hex::encode(claimed)
        ),
    ))
}

/// Verifies the evidence against the policy that `decides` for the requested model, and records what the
/// verified report says. A failure records whether it was a policy decision (which keeps the connection
/// open) or evidence that did not verify.
fn verify_for_request(
    decides: &LoadedPolicy,
    record: &mut AuditRecord,
    pending: &AttestToVerify,
) -> Result<VerifiedEvidence, Refusal> {
    record.policy = Some(decides.name.clone());
    let options = VerifyOptions {
        at_unix: pending.at_unix,
        crls: &decides.crls,
        simulated_root: decides.simulated_root.as_ref(),
    };
    let verified = match verify_evidence(
        &pending.evidence,
        &decides.policy,
        &options,
        &pending.expected(),
    ) {
        Ok(v) => v,
        Err(e) => {
            record.policy_decision = e.is_policy_decision();
            return Err(Refusal::new(refusal_code(&e), e.to_string()));
        }
    };
    record.evidence_verified = true;
    let report = verified.report();
    record.fill_report(report.report());
    record.product = Some(report.product().name().to_owned());
    record.simulated = Some(report.is_simulated());
    Ok(verified)
}

/// The evidence must be made for this request: the requested digest among its claims, allowed by the
/// policy, and an enclave key to wrap to. Returns that key.
fn check_made_for_request(
    verified: &VerifiedEvidence,
    policy: &Policy,
    requested: &Sha384,
) -> Result<[u8; 32], Refusal> {
    let claims = verified.claims();
    if !claims
        .model_digests
        .iter()
        .any(|d| cloister_attestation::ct_eq(&d.0, &requested.0))
    {
        let found: Vec<String> = claims.model_digests.iter().map(sha384_text).collect();
        return Err(Refusal::new(
            RefusalCode::EvidenceRejected,
            format!(
                "claims.model_digests: expected to contain {} (the requested model), found [{}]",
                sha384_text(requested),
                found.join(", ")
            ),
        ));
    }
    if let Err(v) = policy.check_model_digest(&requested.0) {
        return Err(Refusal::new(RefusalCode::PolicyRejected, v.to_string()));
    }
    match &claims.enclave_key {
        Some(EnclaveKey::X25519(pk)) => Ok(*pk),
        None => Err(Refusal::new(
            RefusalCode::EvidenceRejected,
            "claims.enclave_key: expected an X25519 public key, found none",
        )),
    }
}

/// A durable-state commit: moves the instance's anchor from `version - 1` to `version`, or refuses with the
/// version the anchor is at. Releases no key.
fn commit_state(
    inner: &Inner,
    conn: &mut BrokerConnection,
    record: &mut AuditRecord,
    verified: &VerifiedEvidence,
    label: &str,
    version: u64,
    digest: Sha384,
) -> Result<Vec<u8>, Refusal> {
    record.state = Some(format!("commit {label} v{version}"));
    let id = crate::anchors::state_id(verified, label);
    match inner.anchors.commit(&id, label, version, digest) {
        Ok(Ok(anchor)) => match conn.commit(verified, anchor) {
            Ok(frame) => {
                record.decision = "committed".to_owned();
                Ok(frame)
            }
            Err(e) => Err(Refusal::new(RefusalCode::Internal, e.to_string())),
        },
        Ok(Err(conflict)) => Err(Refusal::new(
            RefusalCode::StateConflict,
            format!(
                "state: commit of {label} v{version}, but the anchor is at v{} (expected v{})",
                conflict.current,
                conflict.current.saturating_add(1)
            ),
        )),
        Err(e) => Err(Refusal::new(
            RefusalCode::Internal,
            format!("state anchors: cannot write: {e}"),
        )),
    }
}

/// Releases the model key to verified evidence: looks it up, counts the release, and grants it wrapped to
/// `enclave_public` (with the instance's anchor when the request opens a state).
fn release_key(
    inner: &Inner,
    conn: &mut BrokerConnection,
    record: &mut AuditRecord,
    pending: &AttestToVerify,
    verified: &VerifiedEvidence,
    enclave_public: [u8; 32],
) -> Result<Vec<u8>, Refusal> {
    let requested = &pending.requested;
    // Only now, to verified evidence: whether this broker holds the key.
    let digest = ModelDigest::from_bytes(requested.0);
    let key = match inner.keystore.get(&digest) {
        Ok(k) => k,
        Err(ModelsError::Keystore(KeystoreError::KeyNotFound { .. })) => {
            return Err(Refusal::new(
                RefusalCode::UnknownModel,
                format!("model_digest: no key for {digest} in the keystore"),
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                RefusalCode::Internal,
                format!("keystore: {e}"),
            ))
        }
    };
    // The machine wraps to the verified enclave key (wrap_model_key takes the VerifiedEvidence).
    // Each release is an enclave start: bounded per model, so that a host cannot restart an enclave (or
    // start one under a fresh state label, with fresh budgets) without limit. Counted only for a key that is
    // about to be released (not for an unknown model, nor a commit).
    if let Err(per_hour) = inner.releases.admit(&requested.0, pending.at_unix) {
        return Err(Refusal::new(
            RefusalCode::RateLimited,
            format!(
                "releases_per_model_per_hour: {per_hour} releases of {} in the last hour",
                sha384_text(requested)
            ),
        ));
    }

    let anchor = match &pending.state {
        Some(StateRequest::Open { label }) => {
            let anchor = inner
                .anchors
                .get(&crate::anchors::state_id(verified, label));
            record.state = Some(format!("open {label} at v{}", anchor.version));
            Some(anchor)
        }
        _ => None,
    };
    match conn.grant(verified, &key, anchor, &inner.rng) {
        Ok(frame) => {
            record.decision = "granted".to_owned();
            record.enclave_key = Some(hex::encode(enclave_public));
            record.key_id = Some(key.key_id().to_string());
            Ok(frame)
        }
        Err(e) => Err(Refusal::new(
            RefusalCode::EvidenceRejected,
            format!("claims.enclave_key: cannot wrap to it ({e})"),
        )),
    }
}
