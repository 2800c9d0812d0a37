//! `cloister keybroker`: the model owner's key broker, a TLS 1.3 server that releases model keys to
//! attested enclaves (library: `cloister_cli::keybroker`).
//!
//! stdout: exactly one line once listening,
//! `cloister keybroker: listening on <ADDR> certificate_sha256=<hex>` (tests and `cloister demo` parse
//! it). Connection problems go to stderr; decisions go to the audit log.
//!
//! Exit codes: 0 stopped by SIGINT/SIGTERM; 2 configuration, file or socket error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use cloister_keybroker::{generate_tls_identity, BrokerConfig, KeyBroker};

use super::{exit, Failure};

/// Arguments of `cloister keybroker`.
#[derive(clap::Args)]
#[command(
    about = "Run the model owner's key broker: release model keys to attested enclaves",
    long_about = "Run the model owner's key broker: a TLS 1.3 server that releases a model key only to an \
        enclave whose attestation evidence satisfies the owner's policy, answers this broker's fresh \
        nonce, is bound to this TLS connection (its exporter), and names the requested model. \
        The key is wrapped to the enclave's ephemeral X25519 key (docs/architecture.md, \"Key release\"). \
        Every decision is appended to the audit log as one JSON line, with the precise reason of a refusal; \
        the enclave only gets a coarse refusal code.\n\n\
        Configuration (TOML, unknown fields rejected, relative paths resolved against the file's directory):\n\n\
        \x20 listen = \"127.0.0.1:7443\"\n\
        \x20 keystore = \"keys\"                    # the directory given to `cloister seal --keystore`\n\
        \x20 policy = \"owner-policy.toml\"         # attestation policy (workload_identity and its pins, TCB,\n\
        \x20                                      # model_digests, simulated_root for the simulated platform)\n\
        \x20 tls_certificate = \"broker.crt.pem\"   # self-signed; the enclave pins its SHA-256\n\
        \x20 tls_key = \"broker.key.pem\"           # PKCS#8 PEM, mode 0600\n\
        \x20 audit_log = \"audit.log\"              # created 0600, appended to\n\
        \x20 state_anchors = \"state-anchors.json\"  # optional (default: beside audit_log): the enclaves'\n\
        \x20                                      # durable-state anchors (their rollback counter)\n\
        \x20 [limits]                             # optional: handshake_timeout_secs = 10, read_timeout_secs = 10,\n\
        \x20                                      # connection_timeout_secs = 60, max_connections = 64,\n\
        \x20                                      # max_requests_per_connection = 16, remembered_nonces = 100000,\n\
        \x20                                      # releases_per_model_per_hour = 60 (each enclave start is one)\n\
        \x20 [models.\"sha384:…\"]                  # optional: that model's own policy (residency); its digest\n\
        \x20 policy = \"eu-hardware.toml\"          # must have a key in the keystore\n\n\
        Once listening, prints one line on stdout:\n\
        \x20 cloister keybroker: listening on <ADDR> certificate_sha256=<hex>\n\
        where <hex> is the SHA-256 of the DER certificate, the value of `certificate_sha256` in the \
        enclave configuration's [key_broker] table. Runs until SIGINT or SIGTERM.\n\n\
        Exit codes: 0 stopped by a signal; 2 configuration, file or socket error.",
    after_help = "Example:\n  cloister keybroker --config broker.toml --generate-tls"
)]
pub(crate) struct Args {
    /// The broker's configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Create the TLS certificate (P-384, self-signed) and key files named in the configuration if
    /// both are missing. Existing files are never overwritten.
    #[arg(long)]
    generate_tls: bool,
}

/// Runs `cloister keybroker`.
pub(crate) fn run(args: Args) -> ExitCode {
    exit(serve(&args).map_err(Failure::from), "refused")
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let config = BrokerConfig::from_file(&args.config)?;
    if args.generate_tls && generate_tls_identity(&config.tls_certificate, &config.tls_key)? {
        eprintln!(
            "cloister keybroker: created {} and {}",
            config.tls_certificate.display(),
            config.tls_key.display()
        );
    }
    let listen = config.listen;
    let policy_path = config.policy.clone();
    let broker = KeyBroker::new(config)?;
    if broker.accepts_any_workload() {
        super::warn_any_workload(&policy_path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let bound = broker.bind(listen).await?;
        let addr = bound.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "cloister keybroker: listening on {addr} certificate_sha256={}",
            hex::encode(bound.certificate_sha256())
        )?;
        out.flush()?;
        drop(out);
        bound.serve_until(shutdown_signal()).await?;
        eprintln!("cloister keybroker: stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, fall back to Ctrl-C only.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
