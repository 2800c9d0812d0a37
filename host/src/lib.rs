//! Cloister host library: launcher, supervisor, relay and blob service. Untrusted by design.
//!
//! Who runs it: the operator of the machine that hosts the enclave. Secrets it may hold: none — only
//! ciphertext, sealed blobs and public headers pass through it.
//!
//! `cloister-host` runs on the machine that hosts the enclave, and that machine is an adversary
//! (see `docs/architecture.md` and the design's threat model): it can refuse service, delay,
//! drop or reorder bytes, but it never holds a key, a plaintext weight, an input or an output.
//! It therefore links no decryption code: it depends on `cloister-models` without the `sealing`
//! feature, only to read the public header of a sealed blob.
//!
//! The pieces:
//! - [`blobs`]: the loopback HTTP service the enclave fetches sealed models from, by digest;
//! - [`collateral`]: on the same service, a KDS mirror the enclave fetches its VCEK from;
//! - [`state`]: on the same service, `--state-dir`, where the enclave keeps its sealed governance state;
//! - [`launcher`]: how the enclave is started ([`launcher::Launcher`]; the `sim` backend);
//! - [`qemu`]: the `snp-qemu` backend (an SEV-SNP VM) and its insecure TCG variant for tests;
//! - [`supervisor`]: keeps one enclave up, restarting it with backoff, and publishes its address;
//! - [`relay`]: the public port, copying client bytes to the current enclave and back;
//! - [`record`]: `--record`, a raw copy of every byte the host handles, for audits and tests.
//!
//! [`run`] wires them together.
#![forbid(unsafe_code)]

pub mod audit;
pub mod blobs;
pub mod body;
pub mod collateral;
pub mod config;
pub mod launcher;
pub mod metrics;
pub mod qemu;
pub mod record;
pub mod relay;
pub mod state;
pub mod supervisor;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

pub use crate::config::{Backend, CollateralSettings, Config, ConfigError, QemuSettings};

use crate::blobs::{BlobIndex, BlobServer, IndexError};
use crate::launcher::{LaunchError, Launcher, SimLauncher};
use crate::qemu::{
    HostData, IdBlock, IdBlockError, Isolation, QemuConfig, QemuLauncher, SnpLaunch,
};
use crate::record::Recorder;
use crate::relay::Relay;
use crate::state::{StateError, StateStore};
use crate::supervisor::{Supervisor, SupervisorError};

/// The line printed on stdout once the relay listens and the first enclave is up.
pub const ANNOUNCEMENT_PREFIX: &str = "cloister-host: listening on ";

/// How long the enclave gets to stop at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the host stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sealed model could not be indexed.
    #[error("cannot index the sealed models")]
    Index(#[from] IndexError),
    /// The recording file could not be opened or written.
    #[error("recording to {} failed", path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The blob service could not listen.
    #[error("cannot start the blob service")]
    Blobs(#[source] io::Error),
    /// The relay could not listen.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    /// The announcement could not be written.
    #[error("cannot write to stdout")]
    Stdout(#[source] io::Error),
    /// The enclave could not be kept running.
    #[error("enclave supervision failed")]
    Supervisor(#[from] SupervisorError),
    /// The supervisor task ended abnormally.
    #[error("the supervisor task failed: {0}")]
    Task(String),
    /// A file the VM launch needs could not be read.
    #[error("cannot read {flag} {}", path.display())]
    Read {
        /// The command-line flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The ID block or ID auth is malformed.
    #[error("invalid --snp-id-block/--snp-id-auth")]
    IdBlock(#[from] IdBlockError),
    /// The configuration cannot work (a usage error).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The enclave could not be launched.
    #[error("cannot launch the enclave")]
    Launch(#[from] LaunchError),
    /// The collateral service's sources are unusable (a bad URL, an unreadable bundle or root).
    #[error("cannot set up the collateral service")]
    Collateral(#[from] cloister_collateral::Error),
    /// The `--state-dir` store could not be opened.
    #[error("cannot open the enclave state store (--state-dir)")]
    State(#[from] StateError),
}

/// The collateral client of the `/collateral` service.
fn collateral_client(
    settings: &CollateralSettings,
) -> Result<std::sync::Arc<cloister_collateral::Collateral>, Error> {
    let simulated_root = settings
        .simulated_root
        .as_deref()
        .map(cloister_collateral::files::read_certificate)
        .transpose()?;
    Ok(std::sync::Arc::new(cloister_collateral::Collateral::new(
        cloister_collateral::Sources {
            kds_url: settings.kds_url.clone(),
            cache_dir: settings.cache.clone(),
            bundle: settings.bundle.clone(),
            simulated_root,
            retry: cloister_collateral::RetryPolicy::default(),
        },
    )?))
}

/// Runs the host until SIGINT/SIGTERM (then `Ok`) or a failure.
pub async fn run(config: Config) -> Result<(), Error> {
    // Handlers first: a signal during startup must still stop the enclave.
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;

    let index = BlobIndex::build(&config.sealed_models)?;
    for (digest, blob) in index.iter() {
        tracing::info!(%digest, name = blob.name(), path = %blob.path().display(), bytes = blob.len(), "serving sealed model");
    }
    let recorder = open_recorder(&config)?;
    open_audit_log(&config)?;
    let _metrics = start_metrics(&config).await?;
    let collateral = collateral_client(&config.collateral)?;
    let state = open_state_store(&config)?;
    let blob_server = BlobServer::bind_port(index, recorder.clone(), config.blobs_port)
        .await
        .map_err(Error::Blobs)?
        .with_collateral(Some(collateral))
        .with_state(state);
    let blobs_url = blob_server.url().map_err(Error::Blobs)?;
    tracing::info!(url = %blobs_url, "blob service listening");
    let (listener, public) = bind_relay(&config).await?;

    let blobs_port = blob_server.local_addr().map_err(Error::Blobs)?.port();
    let _blobs = AbortOnDrop(tokio::spawn(blob_server.serve()));
    let shutdown = async {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let outcome = match (config.backend, &config.enclave_bin) {
        (Backend::Sim, Some(enclave_bin)) => {
            let launcher = sim_launcher(&config, enclave_bin, &blobs_url)?;
            supervise(
                launcher,
                &config,
                listener,
                public,
                recorder.clone(),
                shutdown,
            )
            .await
        }
        (Backend::Sim, None) => Err(Error::Task("--enclave-bin is missing".into())),
        (_, _) => {
            let launcher = qemu_launcher(&config, blobs_port)?;
            supervise(
                launcher,
                &config,
                listener,
                public,
                recorder.clone(),
                shutdown,
            )
            .await
        }
    };
    finish_recording(recorder.as_ref(), &config, outcome).await
}

/// `--record`: the recorder of every byte the host relays or serves, if asked for.
fn open_recorder(config: &Config) -> Result<Option<Recorder>, Error> {
    match &config.record {
        Some(path) => {
            let recorder = Recorder::open(path).map_err(|source| Error::Record {
                path: path.clone(),
                source,
            })?;
            tracing::info!(path = %path.display(), "recording every byte the host relays or serves");
            Ok(Some(recorder))
        }
        None => Ok(None),
    }
}

/// `--audit-log`: where the enclave's audit lines are stored; without it they only go to stderr.
fn open_audit_log(config: &Config) -> Result<(), Error> {
    match &config.audit_log {
        Some(path) => audit::open(path).map_err(|source| Error::Record {
            path: path.clone(),
            source,
        })?,
        None => tracing::warn!(
            "no --audit-log: the enclave's audit lines are forwarded to stderr, not stored"
        ),
    }
    Ok(())
}

/// `--metrics`: serves the metrics in the background, until the returned guard is dropped.
async fn start_metrics(config: &Config) -> Result<Option<AbortOnDrop<()>>, Error> {
    match config.metrics {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| Error::Listen { addr, source })?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            Ok(Some(AbortOnDrop(tokio::spawn(metrics::serve(listener)))))
        }
        None => Ok(None),
    }
}

/// `--state-dir`: the store of the enclave's sealed state (ciphertext only), if asked for.
fn open_state_store(config: &Config) -> Result<Option<std::sync::Arc<StateStore>>, Error> {
    match &config.state_dir {
        Some(dir) => {
            let store = StateStore::open(dir)?;
            tracing::info!(path = %dir.display(), "keeping the enclave's sealed state (ciphertext only)");
            Ok(Some(std::sync::Arc::new(store)))
        }
        None => {
            tracing::info!("no --state-dir: the host keeps no enclave state across restarts");
            Ok(None)
        }
    }
}

/// The relay's public listener, and the address it is bound to.
async fn bind_relay(config: &Config) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let public = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    Ok((listener, public))
}

/// The `sim` backend's launcher; with `--initdata`, the enclave configuration is an initdata document.
fn sim_launcher(
    config: &Config,
    enclave_bin: &std::path::Path,
    blobs_url: &str,
) -> Result<SimLauncher, Error> {
    let mut launcher = SimLauncher::new(enclave_bin, &config.enclave_config, blobs_url);
    if config.initdata {
        let bytes = std::fs::read(&config.enclave_config).map_err(|source| Error::Read {
            flag: "--enclave-config",
            path: config.enclave_config.clone(),
            source,
        })?;
        let document = cloister_attestation::initdata::InitData::parse(&bytes)
            .map_err(|e| Error::Task(format!("--enclave-config with --initdata: {e}")))?;
        launcher = launcher.with_initdata(&document);
    }
    Ok(launcher)
}

/// Flushes the recording, if there is one, after the run ended with `outcome`.
async fn finish_recording(
    recorder: Option<&Recorder>,
    config: &Config,
    outcome: Result<(), Error>,
) -> Result<(), Error> {
    if let (Some(recorder), Some(path)) = (recorder, &config.record) {
        let flushed = recorder.flush().await.map_err(|source| Error::Record {
            path: path.clone(),
            source,
        });
        // The run's own error comes first; a failed recording turns success into failure.
        outcome?;
        flushed?;
        return Ok(());
    }
    outcome
}

/// The QEMU launcher for a validated configuration of a QEMU backend.
fn qemu_launcher(config: &Config, blobs_port: u16) -> Result<QemuLauncher, Error> {
    let q = &config.qemu;
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| Error::Read {
            flag,
            path: path.clone(),
            source,
        })
    };
    let missing = |flag: &str| Error::Task(format!("{flag} is missing"));
    let snp = config.backend == Backend::SnpQemu;
    let isolation = if snp {
        let host_data = HostData::of_config(&read("--enclave-config", &config.enclave_config)?);
        let id = match (&q.snp_id_block, &q.snp_id_auth) {
            (Some(block), Some(auth)) => Some(IdBlock::new(
                &read("--snp-id-block", block)?,
                &read("--snp-id-auth", auth)?,
                q.snp_author_key_enabled,
            )?),
            _ => None,
        };
        let policy = q.snp_policy.unwrap_or(qemu::policy::DEFAULT);
        if policy & qemu::policy::DEBUG != 0 {
            tracing::warn!(
                policy = format_args!("{policy:#x}"),
                "the SNP policy allows debugging: the host can read the guest's memory, and \
                 verifiers reject such reports unless their policy allows debug"
            );
        }
        tracing::info!(
            ?host_data,
            "HOST_DATA = SHA-256 of the enclave configuration"
        );
        Isolation::Snp(SnpLaunch {
            ovmf: q.bios.clone().ok_or_else(|| missing("--qemu-bios"))?,
            policy,
            cbitpos: q.snp_cbitpos.unwrap_or(qemu::DEFAULT_CBITPOS),
            reduced_phys_bits: q
                .snp_reduced_phys_bits
                .unwrap_or(qemu::DEFAULT_REDUCED_PHYS_BITS),
            host_data: Some(host_data),
            id,
        })
    } else {
        tracing::warn!(
            "backend qemu-tcg-insecure: the VM has NO memory encryption and NO attestation \
             hardware; for tests only"
        );
        Isolation::InsecureTcg {
            bios: q.bios.clone(),
        }
    };
    let cmdline = qemu::kernel_cmdline(
        qemu::GUEST_PORT,
        blobs_port,
        q.append.as_deref().unwrap_or(""),
    );
    tracing::info!(%cmdline, "kernel command line (measured under SNP)");
    let template = QemuConfig {
        isolation,
        kernel: q.kernel.clone().ok_or_else(|| missing("--qemu-kernel"))?,
        initrd: q.initrd.clone().ok_or_else(|| missing("--qemu-initrd"))?,
        cmdline,
        cpu: q.cpu.clone().unwrap_or_else(|| {
            if snp {
                qemu::DEFAULT_SNP_CPU
            } else {
                qemu::DEFAULT_TCG_CPU
            }
            .to_owned()
        }),
        vcpus: q.vcpus.unwrap_or(qemu::DEFAULT_VCPUS),
        memory_mib: q.memory_mib.unwrap_or(qemu::DEFAULT_MEMORY_MIB),
        host_port: 0,
        guest_port: qemu::GUEST_PORT,
        serial_log: q.serial_log.clone(),
    };
    let binary = q
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(qemu::DEFAULT_QEMU));
    let mut launcher = QemuLauncher::new(&binary, template);
    if let Some(timeout) = q.start_timeout {
        launcher = launcher.with_start_timeout(timeout);
    }
    Ok(launcher)
}

/// Aborts a background task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise<L: Launcher>(
    launcher: L,
    config: &Config,
    listener: TcpListener,
    public: SocketAddr,
    recorder: Option<Recorder>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    let (supervisor, mut enclave) = Supervisor::new(launcher, config.restart);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut task = tokio::spawn(supervisor.run(async {
        let _ = stopped.await;
    }));
    let finished =
        |joined: Result<Result<(), SupervisorError>, tokio::task::JoinError>| match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Supervisor(e)),
            Err(e) => Err(Error::Task(e.to_string())),
        };

    // Phase 1: wait for the first enclave before announcing anything.
    tokio::select! {
        () = &mut shutdown => return stop_supervisor(stop, task).await,
        joined = &mut task => return finished(joined),
        up = enclave.wait_up() => {
            if up.is_none() {
                return finished(task.await);
            }
        }
    }
    let _relay = AbortOnDrop(tokio::spawn(
        Relay::new(listener, enclave, recorder)
            .with_limits(config.relay)
            .run(),
    ));
    announce(public).map_err(Error::Stdout)?;
    tracing::info!(%public, "relay listening");

    // Phase 2: serve until a signal or until the supervisor gives up.
    tokio::select! {
        () = &mut shutdown => stop_supervisor(stop, task).await,
        joined = &mut task => finished(joined),
    }
}

async fn stop_supervisor(
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), SupervisorError>>,
) -> Result<(), Error> {
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await {
        Ok(Ok(result)) => result.map_err(Error::Supervisor),
        Ok(Err(e)) => Err(Error::Task(e.to_string())),
        Err(_) => Err(Error::Task("the enclave did not stop in time".into())),
    }
}

fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{ANNOUNCEMENT_PREFIX}{addr}")?;
    out.flush()
}
