//! `cloister-enclave`: the inference enclave.
//!
//! Startup: read the measured configuration (and its digest) → open the firmware it names → bind the TLS
//! listener and print `cloister-enclave: listening on ADDR` on stdout → in the background, for each model:
//! key release, sealed blob, open, load into tract, zeroize → ready. Health, attestation and metadata are
//! served from the start (`/v2/health/ready` answers 503 until every model is loaded).
//!
//! Exit status: 0 never (the server runs until killed), 1 on a fatal startup error, 2 on bad usage.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use cloister_attestation::initdata::{InitData, ENCLAVE_CONFIG_KEY};
use cloister_collateral::{Collateral, RetryPolicy as CollateralRetry, Sources};
use cloister_enclave::blobs::BlobService;
use cloister_enclave::config::{CollateralSource, Config, LogLevel};
use cloister_enclave::firmware::Attester;
use cloister_enclave::key_release::BrokerClient;
use cloister_enclave::runtime::{self, Enclave, RetryPolicy};
use cloister_enclave::{firmware, server};

/// The Cloister inference enclave: releases its model key by attestation, decrypts and loads the sealed
/// model, and serves the Open Inference Protocol v2 to clients that attest it inside their own TLS session.
#[derive(Parser, Debug)]
#[command(name = "cloister-enclave", version, about, long_about = None)]
struct Args {
    /// The measured configuration (TOML): firmware backend, pinned key broker, model digests, limits.
    /// Its SHA-384 is the config_digest of every claim; changing a byte changes what verifiers see.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "config_from_initdata"
    )]
    config: Option<PathBuf>,

    /// Read the configuration from a Confidential Containers initdata document (its `[data]` entry
    /// "cloister-enclave.toml") instead of --config, and refuse to start unless the document's digest,
    /// fitted to 32 bytes, equals the HOST_DATA of this guest's attestation report: the document may come
    /// through an untrusted path (a ConfigMap), HOST_DATA is what the launch bound. Without a value:
    /// /run/confidential-containers/initdata/initdata.toml, where Kata's agent writes it in the guest.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "config",
        num_args = 0..=1,
        default_missing_value = DEFAULT_INITDATA_PATH
    )]
    config_from_initdata: Option<PathBuf>,

    /// Address to accept TLS connections on (the host relays its public port here); port 0 picks one.
    /// The address actually bound is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    listen: String,

    /// Where sealed models come from: the host's blob service (http://127.0.0.1:7000) or any HTTP(S) server
    /// holding them as <URL>/blobs/sha384:<hex> (https://store.example.com/models). Untrusted: every blob is
    /// authenticated and digest-checked; https is verified against public roots.
    #[arg(long, value_name = "URL")]
    blobs: String,

    /// No longer accepted: the log level is `log_level` in the measured configuration (stderr reaches the
    /// host, so what may be logged is decided by what verifiers attest, not by a launch argument).
    #[arg(long, value_name = "LEVEL", hide = true)]
    log: Option<String>,

    /// The instance label of the durable governance state (budgets, the audit chain's head; only when the
    /// configuration keeps one): which of the host's stored states is this instance's. Chosen by the host:
    /// a new label starts with empty state, which costs a key release the broker counts
    /// (releases_per_model_per_hour). 1 to 64 of [a-z0-9-].
    #[arg(long, value_name = "LABEL", default_value = "default")]
    state_label: String,

    /// Exit when standard input reaches end of file. The host's sim launcher passes this and holds the
    /// pipe: if the host dies (even by SIGKILL), its enclave does not outlive it.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

/// Where Kata's agent writes the initdata document inside the pod VM.
const DEFAULT_INITDATA_PATH: &str = "/run/confidential-containers/initdata/initdata.toml";

/// The crates whose logs follow `log_level`; every other target (tract, which prints graphs and tensor
/// values at `trace`; hyper; rustls) is capped at `warn`, whatever the level.
const OWN_TARGETS: [&str; 6] = [
    "cloister_enclave",
    "cloister_inference",
    "cloister_kserve",
    "cloister_models",
    "cloister_proto",
    "cloister_attestation",
];

/// The stderr filter for `level`: Cloister's own crates at `level`, everything else at `warn` at most.
fn log_filter(level: LogLevel) -> tracing_subscriber::EnvFilter {
    let own = level.tracing_level().as_str().to_ascii_lowercase();
    let third_party = if level == LogLevel::Error {
        "error"
    } else {
        "warn"
    };
    let directives: Vec<String> = std::iter::once(third_party.to_owned())
        .chain(OWN_TARGETS.iter().map(|t| format!("{t}={own}")))
        .collect();
    tracing_subscriber::EnvFilter::builder().parse_lossy(directives.join(","))
}

/// mimalloc, not glibc's malloc: see the dependency's note in Cargo.toml (inference threads and large buffers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.log.is_some() {
        eprintln!(
            "cloister-enclave: error: --log is no longer accepted: the log level is `log_level` in the \
             measured configuration (error, warn, info, debug or trace)"
        );
        return ExitCode::from(2);
    }
    // The configuration is read before logging starts: its `log_level` decides what may be logged.
    let (config_bytes, config, initdata) = match read_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloister-enclave: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(log_filter(config.log_level))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloister-enclave: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config_bytes, config, initdata)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloister-enclave: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The configuration's bytes and meaning, and the initdata document it came from (if it did).
fn read_config(args: &Args) -> anyhow::Result<(Vec<u8>, Config, Option<InitData>)> {
    let (path, config_bytes, initdata) = match (&args.config, &args.config_from_initdata) {
        (Some(path), None) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the configuration {}", path.display()))?;
            (path, bytes, None)
        }
        (None, Some(path)) => {
            let doc = std::fs::read(path)
                .with_context(|| format!("cannot read the initdata document {}", path.display()))?;
            let doc = InitData::parse(&doc)
                .with_context(|| format!("invalid initdata document {}", path.display()))?;
            let bytes = doc
                .entry(ENCLAVE_CONFIG_KEY)
                .with_context(|| {
                    format!(
                        "the initdata document {} has no [data] entry \"{ENCLAVE_CONFIG_KEY}\"",
                        path.display()
                    )
                })?
                .as_bytes()
                .to_vec();
            (path, bytes, Some(doc))
        }
        _ => anyhow::bail!("give exactly one of --config and --config-from-initdata"),
    };
    let config = Config::from_bytes(&config_bytes)
        .with_context(|| format!("invalid configuration {}", path.display()))?;
    Ok((config_bytes, config, initdata))
}

/// Refuses to go on unless this guest's HOST_DATA is the initdata document's digest: the check that makes a
/// configuration read from an untrusted path the one the launch bound (and that verifiers pin).
fn check_host_data(firmware: &dyn firmware::Firmware, initdata: &InitData) -> anyhow::Result<()> {
    let (report, _) = firmware
        .attest(&[0; 64])
        .context("cannot get a report to read HOST_DATA")?;
    let report = cloister_attestation::snp::report::AttestationReport::from_bytes(&report)
        .context("cannot parse this guest's report to read HOST_DATA")?;
    let expected = initdata.snp_host_data();
    anyhow::ensure!(
        report.host_data == expected,
        "the initdata document does not match this guest's HOST_DATA: its {} digest fitted to 32 bytes is \
         {}, HOST_DATA is {} (the pod was launched with another initdata annotation, or the document was \
         changed on its way into the container)",
        initdata.algorithm().name(),
        hex::encode(expected),
        hex::encode(report.host_data)
    );
    tracing::info!(
        host_data = %hex::encode(expected),
        "configuration from initdata: its digest equals HOST_DATA"
    );
    Ok(())
}

/// What a stop needs to commit the durable state one last time.
type Running = std::sync::OnceLock<(Arc<Enclave>, BrokerClient, BlobService)>;

/// Commits the durable state one last time (bounded: the host waits a few seconds for the stop).
async fn final_commit(running: &Running) {
    if let Some((enclave, broker, blobs)) = running.get() {
        if let Some(durable) = enclave.durable() {
            let commit = durable.commit_logged(enclave.state_parts(), broker, blobs);
            if tokio::time::timeout(std::time::Duration::from_secs(2), commit)
                .await
                .is_err()
            {
                tracing::warn!("the last state commit did not finish in time");
            }
        }
    }
}

/// Seals the audit log (its signed `stop`) and exits: the host is gone or asked the enclave to stop.
fn seal_and_exit(running: &Running, why: &str) -> ! {
    let enclave = running.get().map(|(e, _, _)| e);
    if let Some(e) = enclave {
        e.governance().flush_tallies();
        e.governance().audit().stop();
    }
    // Not eprintln!: stderr may be a pipe to a host that is gone; eprintln! would panic on the write.
    let _ = writeln!(std::io::stderr(), "cloister-enclave: {why}: exiting");
    std::process::exit(0);
}

async fn run(
    args: Args,
    config_bytes: Vec<u8>,
    config: Config,
    initdata: Option<InitData>,
) -> anyhow::Result<()> {
    #[cfg(feature = "insecure-simulator")]
    tracing::warn!(
        "this cloister-enclave was built with the `insecure-simulator` feature (a development build, as \
         `cargo build --workspace` makes it): it can forge reports under the simulated root. Production \
         enclaves are built with `cargo build --release -p cloister-enclave`"
    );
    let running: Arc<Running> = Arc::default();
    install_stop_handlers(&running, args.exit_on_stdin_eof)?;
    let blobs = BlobService::parse(&args.blobs).context("invalid --blobs")?;
    let broker = BrokerClient::new(&config.key_broker).context("invalid key_broker")?;
    let firmware = open_firmware(&config, &config_bytes, initdata.as_ref())?;
    tracing::info!(
        firmware = config.firmware.name(),
        config_digest = %hex::encode(config.digest.0),
        models = config.models.len(),
        "configuration loaded"
    );

    let tls =
        server::tls_config(&config.clients, &config.client_pins).context("cannot set up TLS")?;
    let listener = bind_and_announce(&args.listen).await?;
    let collateral = collateral_service(&config, &args.blobs, firmware.as_ref())?;
    let attester = if config.collateral == CollateralSource::Thim {
        Attester::with_thim(firmware, cloister_collateral::thim::DEFAULT_THIM_URL)
    } else {
        Attester::new(firmware, collateral)
    };
    anyhow::ensure!(
        cloister_proto::key_release::is_valid_state_label(&args.state_label),
        "--state-label must be 1 to 64 of [a-z0-9-], not starting with '-'"
    );
    let enclave =
        Arc::new(Enclave::new(&config, attester)?.with_state_label(args.state_label.clone()));
    let _ = running.set((Arc::clone(&enclave), broker.clone(), blobs.clone()));
    {
        // Tally lines every interval (refusals and control calls, counted, not logged one by one).
        let enclave = Arc::clone(&enclave);
        let every = std::time::Duration::from_secs(config.audit.tally_every_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                enclave.governance().flush_tallies();
            }
        });
    }
    tracing::info!(
        inference_threads = enclave.pool().size(),
        memory_budget = enclave.memory().bytes(),
        "inference admission"
    );
    tokio::spawn(runtime::provision(
        Arc::clone(&enclave),
        broker,
        blobs,
        RetryPolicy::default(),
    ));
    server::serve(listener, tls, enclave).await;
    Ok(())
}

/// SIGTERM (a supervisor) and SIGINT (Ctrl-C in a terminal reaches the whole foreground process group,
/// enclave included) both stop the enclave with a last commit and a signed `stop`: dying on the default
/// SIGINT action would leave the audit log with an unsigned tail. With `exit_on_stdin_eof`, so does the
/// end of standard input (the host's launcher holds the pipe: a dead host takes its enclave with it).
fn install_stop_handlers(running: &Arc<Running>, exit_on_stdin_eof: bool) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let running = Arc::clone(running);
        let mut stream =
            signal(kind).with_context(|| format!("cannot install the {name} handler"))?;
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                final_commit(&running).await;
                seal_and_exit(&running, name);
            }
        });
    }
    if exit_on_stdin_eof {
        let running = Arc::clone(running);
        let handle = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            // Read until end of file, then stop the process. Interrupted or would-block reads are
            // not the end (the pipe may be non-blocking); any other error means the pipe is gone.
            loop {
                match std::io::Read::read(&mut stdin, &mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    Err(_) => break,
                }
            }
            handle.block_on(final_commit(&running));
            seal_and_exit(
                &running,
                "standard input closed (the host is gone or stops it)",
            );
        });
    }
    Ok(())
}

/// Opens the firmware backend the configuration names and, for a configuration read from initdata, checks
/// that HOST_DATA binds it.
fn open_firmware(
    config: &Config,
    config_bytes: &[u8],
    initdata: Option<&InitData>,
) -> anyhow::Result<Arc<dyn firmware::Firmware>> {
    // What a launch measures besides the executable: the configuration when it is given as a file (the
    // simulator folds it into MEASUREMENT); nothing when it comes through initdata, which HOST_DATA binds
    // instead, as on Kata, where one pod-VM measurement serves every deployment.
    let measured_config: &[u8] = if initdata.is_some() {
        b""
    } else {
        config_bytes
    };
    let firmware = firmware::open(&config.firmware, measured_config).with_context(|| {
        format!(
            "cannot open the firmware backend \"{}\"",
            config.firmware.name()
        )
    })?;
    if let Some(initdata) = initdata {
        check_host_data(firmware.as_ref(), initdata)?;
    }
    Ok(firmware)
}

/// Binds the TLS listener and prints `cloister-enclave: listening on ADDR` on stdout (the host reads it).
async fn bind_and_announce(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "cloister-enclave: listening on {addr}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(listener)
}

/// The collateral service, when the configuration takes a missing VCEK from the host: through the host's
/// /collateral service (a KDS mirror), verified here. The host fetches from AMD with its own retries (a 429
/// may take minutes): one request waits for them.
fn collateral_service(
    config: &Config,
    blobs_url: &str,
    firmware: &dyn firmware::Firmware,
) -> anyhow::Result<Option<Arc<Collateral>>> {
    Ok(match config.collateral {
        CollateralSource::Off | CollateralSource::Thim => None,
        CollateralSource::Host => Some(Arc::new(
            Collateral::new(Sources {
                kds_url: Some(format!("{}/collateral", blobs_url.trim_end_matches('/'))),
                simulated_root: firmware.simulated_root(),
                retry: CollateralRetry {
                    budget: std::time::Duration::from_secs(300),
                    request_timeout: std::time::Duration::from_secs(150),
                    initial_backoff: std::time::Duration::from_secs(1),
                    max_backoff: std::time::Duration::from_secs(10),
                    max_unreachable_attempts: 5,
                },
                ..Sources::default()
            })
            .context("invalid --blobs for the collateral service")?,
        )),
    })
}
