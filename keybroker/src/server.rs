//! The broker's listener: connections bounded in total and per source address, each served by
//! [`crate::exchange`]; summaries written per interval.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloister_collateral::{files, Collateral, RetryPolicy, Sources};
use cloister_models::Keystore;
use cloister_proto::key_release::{Clock, SystemClock};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::config::{certificate_sha256, load_tls_identity, BrokerConfig};
use crate::exchange::handle_connection;
use crate::nonces::IssuedNonces;
use crate::peers::PeerBook;
use crate::shared::{write_summaries, Inner, LoadedPolicy};
use crate::Error;

/// How long in-flight connections may finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Collateral fetches in flight at once, across all peers.
const MAX_COLLATERAL_FETCHES: usize = 4;

/// A key broker ready to serve: policy, keystore, TLS identity and audit log loaded.
pub struct KeyBroker {
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    any_workload: bool,
}

impl std::fmt::Debug for KeyBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBroker")
            .field("certificate_sha256", &hex::encode(self.inner.cert_sha256))
            .field("keystore", &self.inner.keystore.dir())
            .finish_non_exhaustive()
    }
}

/// Loads a policy and its files; a policy that pins no workload is refused unless it says
/// `allow_any_workload = true` (returned, for the warning).
fn load_policy(path: &std::path::Path) -> Result<(LoadedPolicy, bool), Error> {
    let policy = files::read_policy(path)?;
    // The broker has no release-log proofs to check: a policy asking for them is refused, not half-applied.
    policy
        .refuse_release_log("the key broker")
        .map_err(|reason| Error::Config {
            path: path.to_path_buf(),
            reason,
        })?;
    // A key for any code is not a policy: refuse to start unless the owner said so explicitly.
    let any_workload = policy
        .require_workload_pin()
        .map_err(|source| Error::NoWorkloadPin {
            path: path.to_path_buf(),
            source,
        })?;
    let (simulated_root, crls) = files::read_policy_files(&policy)?;
    Ok((
        LoadedPolicy {
            name: path.display().to_string(),
            policy,
            simulated_root,
            crls,
        },
        any_workload,
    ))
}

impl KeyBroker {
    /// Loads everything the broker needs; fails early and precisely on any missing or unsafe file.
    pub fn new(config: BrokerConfig) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// [`KeyBroker::new`] with an injected clock (the instant evidence is verified at, and audit times).
    pub fn with_clock(config: BrokerConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let (policy, mut any_workload) = load_policy(&config.policy)?;
        let mut model_policies = std::collections::HashMap::new();
        for (digest, path) in &config.model_policies {
            let (loaded, any) = load_policy(path)?;
            any_workload |= any;
            model_policies.insert(*digest.as_bytes(), loaded);
        }
        let simulated_root = policy.simulated_root.clone();
        let keystore = Keystore::open(&config.keystore).map_err(Error::Keystore)?;
        // A per-model policy for a digest the keystore holds no key for decides nothing, and the model it was
        // meant for (a typo away) would be decided by the default policy: residency silently lost. Refuse.
        if !config.model_policies.is_empty() {
            let held: std::collections::HashSet<_> = keystore
                .list()
                .map_err(Error::Keystore)?
                .into_iter()
                .collect();
            if let Some((digest, path)) = config
                .model_policies
                .iter()
                .find(|(digest, _)| !held.contains(digest))
            {
                return Err(Error::ModelPolicyWithoutKey {
                    digest: digest.to_string(),
                    policy: path.clone(),
                    keystore: config.keystore.clone(),
                });
            }
        }
        let (cert, key) = load_tls_identity(&config.tls_certificate, &config.tls_key)?;
        let cert_sha256 = certificate_sha256(cert.as_ref());
        let tls_config = cloister_proto::tls::server_builder()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
            .map_err(|e| Error::Tls {
                path: config.tls_key.clone(),
                reason: format!(
                    "unusable with the certificate {}: {e}",
                    config.tls_certificate.display()
                ),
            })?;
        let audit = AuditLog::open(&config.audit_log)?;
        let anchors_path = config.state_anchors.clone().unwrap_or_else(|| {
            config
                .audit_log
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("state-anchors.json")
        });
        let anchors = crate::anchors::Anchors::open(&anchors_path)?;
        let collateral = config
            .collateral
            .as_ref()
            .map(|c| {
                Collateral::new(Sources {
                    kds_url: c.kds_url.clone(),
                    cache_dir: c.cache.clone(),
                    bundle: c.bundle.clone(),
                    simulated_root: simulated_root.clone(),
                    // A peer waits for this inside its connection's deadline: short, not AMD's minutes.
                    retry: RetryPolicy {
                        budget: Duration::from_secs(20),
                        request_timeout: Duration::from_secs(10),
                        ..RetryPolicy::default()
                    },
                })
            })
            .transpose()?;
        let limits = config.limits;
        let releases = crate::anchors::ReleaseLimiter::new(limits.releases_per_model_per_hour);
        Ok(Self {
            inner: Arc::new(Inner {
                policy,
                model_policies,
                keystore,
                audit,
                nonces: Mutex::new(IssuedNonces::new(limits.remembered_nonces)),
                rng: SystemRandom::new(),
                clock,
                cert_sha256,
                peers: PeerBook::new(limits.max_connections_per_source),
                limits,
                collateral,
                collateral_fetches: Semaphore::new(MAX_COLLATERAL_FETCHES),
                anchors,
                releases,
            }),
            acceptor: TlsAcceptor::from(Arc::new(tls_config)),
            any_workload,
        })
    }

    /// True when the owner's policy says `allow_any_workload = true` and pins no workload identity: keys
    /// go to any code on a genuine platform. `cloister keybroker` prints a warning at every start.
    pub fn accepts_any_workload(&self) -> bool {
        self.any_workload
    }

    /// SHA-256 of the broker's DER certificate: what the enclave configuration pins.
    pub fn certificate_sha256(&self) -> [u8; 32] {
        self.inner.cert_sha256
    }

    /// Binds a TCP listener on `addr` (port 0: any free port).
    pub async fn bind(self, addr: SocketAddr) -> Result<BoundBroker, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(BoundBroker {
            broker: self,
            listener,
        })
    }

    /// Serves on `listener` until the future is dropped. Accept errors (e.g. out of file descriptors)
    /// are reported on stderr and retried after a short pause: they never stop the broker.
    pub async fn serve(self, listener: TcpListener) -> Result<(), Error> {
        self.serve_until(listener, std::future::pending()).await
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets connections in
    /// progress finish for a few seconds, and returns.
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let slots = Arc::new(Semaphore::new(self.inner.limits.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        let local = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let summaries = (self.inner.limits.audit_summary_secs > 0).then(|| {
            let inner = self.inner.clone();
            let every = Duration::from_secs(self.inner.limits.audit_summary_secs);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    write_summaries(&inner).await;
                }
            })
        });
        tokio::pin!(shutdown);
        loop {
            // Reap finished connections so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed
                },
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning, keep serving.
                    eprintln!("cloister keybroker: accept on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(open) = self.inner.peers.open(peer.ip()) else {
                self.inner.refused_unverified(
                    peer,
                    "PerSourceLimit",
                    &format!(
                        "connection closed: this address already holds {} connections",
                        self.inner.limits.max_connections_per_source
                    ),
                );
                continue;
            };
            let inner = self.inner.clone();
            let acceptor = self.acceptor.clone();
            tasks.spawn(async move {
                if let Err(e) = handle_connection(inner.clone(), acceptor, tcp, peer).await {
                    inner.refused_unverified(peer, "Connection", &e.to_string());
                }
                drop(open);
                drop(permit);
            });
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tasks.abort_all();
        }
        if let Some(task) = summaries {
            task.abort();
        }
        write_summaries(&self.inner).await;
        Ok(())
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A [`KeyBroker`] with its listening socket.
#[derive(Debug)]
pub struct BoundBroker {
    broker: KeyBroker,
    listener: TcpListener,
}

impl BoundBroker {
    /// The address actually bound (with the port chosen by the system for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Listen {
            addr: "listener".to_owned(),
            source,
        })
    }

    /// SHA-256 of the broker's DER certificate.
    pub fn certificate_sha256(&self) -> [u8; 32] {
        self.broker.certificate_sha256()
    }

    /// See [`KeyBroker::serve`].
    pub async fn serve(self) -> Result<(), Error> {
        self.broker.serve(self.listener).await
    }

    /// See [`KeyBroker::serve_until`].
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.broker.serve_until(self.listener, shutdown).await
    }
}
