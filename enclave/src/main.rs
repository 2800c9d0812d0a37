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
use cloister_enclave::blobs::BlobService;
use cloister_enclave::config::Config;
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
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Address to accept TLS connections on (the host relays its public port here); port 0 picks one.
    /// The address actually bound is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    listen: String,

    /// The host's blob service, e.g. http://127.0.0.1:7000 (untrusted: every blob is authenticated).
    #[arg(long, value_name = "URL")]
    blobs: String,

    /// Log level on stderr: error, warn, info, debug or trace. Logs never contain inputs, outputs, keys
    /// or model bytes.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log: tracing::Level,

    /// Exit when standard input reaches end of file. The host's sim launcher passes this and holds the
    /// pipe: if the host dies (even by SIGKILL), its enclave does not outlive it.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log)
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
    match runtime.block_on(run(args)) {
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

async fn run(args: Args) -> anyhow::Result<()> {
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
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
            // Not eprintln!: stderr is usually a pipe to the host that just died, and eprintln!
            // panics when the write fails, which would end this thread instead of the process.
            let _ = writeln!(
                std::io::stderr(),
                "cloister-enclave: standard input closed (the host is gone): exiting"
            );
            std::process::exit(0);
        });
    }
    let config_bytes = std::fs::read(&args.config)
        .with_context(|| format!("cannot read the configuration {}", args.config.display()))?;
    let config = Config::from_bytes(&config_bytes)
        .with_context(|| format!("invalid configuration {}", args.config.display()))?;
    let blobs = BlobService::parse(&args.blobs).context("invalid --blobs")?;
    let broker = BrokerClient::new(&config.key_broker).context("invalid key_broker")?;
    let firmware = firmware::open(&config.firmware, &config_bytes).with_context(|| {
        format!(
            "cannot open the firmware backend \"{}\"",
            config.firmware.name()
        )
    })?;
    tracing::info!(
        firmware = config.firmware.name(),
        config_digest = %hex::encode(config.digest.0),
        models = config.models.len(),
        "configuration loaded"
    );

    let tls = server::tls_config().context("cannot set up TLS")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "cloister-enclave: listening on {addr}")
            .and_then(|()| out.flush())
            .context("cannot write to stdout")?;
    }

    let enclave = Arc::new(Enclave::new(&config, firmware));
    tokio::spawn(runtime::provision(
        Arc::clone(&enclave),
        broker,
        blobs,
        RetryPolicy::default(),
    ));
    server::serve(listener, tls, enclave).await;
    Ok(())
}
