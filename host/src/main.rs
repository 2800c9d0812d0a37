//! `cloister-host`: parses the command line into a validated [`Config`], runs the host, prints the
//! error chain and maps outcomes to exit codes (0 clean shutdown, 1 runtime failure, 2 usage).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cloister_host::supervisor::RestartPolicy;
use cloister_host::{Backend, Config};

const TRUST_MODEL: &str = "\
Launches the Cloister enclave, serves it the sealed models it asks for, and relays client \
connections to it byte for byte.

Trust model: this program and the machine it runs on are untrusted. The host can refuse service \
(stop, delay or drop connections, withhold blobs), but it cannot read model keys, weights, inputs \
or outputs: sealed models are AEAD-encrypted and only an attested enclave is released their keys; \
clients speak TLS 1.3 end to end with the enclave and verify its attestation, bound to their own \
session, before they send any input. The host links no decryption code and never sees anything \
but ciphertext.

On stdout it prints exactly one line, `cloister-host: listening on <ADDR>`, once the relay is \
listening and the first enclave is up. Logs go to stderr (RUST_LOG sets the level); the \
enclave's own output is forwarded there prefixed `[enclave] `. SIGINT/SIGTERM stop the enclave \
and exit 0.";

/// Cloister host: launches and supervises the enclave, serves sealed blobs, relays clients.
#[derive(Parser, Debug)]
#[command(name = "cloister-host", version, about, long_about = TRUST_MODEL)]
struct Args {
    /// The enclave program (`cloister-enclave`).
    #[arg(long, value_name = "PATH")]
    enclave_bin: PathBuf,

    /// The enclave's measured configuration (TOML), passed to it unchanged as `--config`.
    #[arg(long, value_name = "FILE")]
    enclave_config: PathBuf,

    /// A sealed model to serve, indexed by the digest in its header; repeat for several.
    #[arg(long = "sealed-model", value_name = "PATH", required = true)]
    sealed_models: Vec<PathBuf>,

    /// Public address of the relay, IP:PORT (port 0 picks a free port; see the stdout line).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// How to launch the enclave: `sim` (a child process on this machine, simulated platform).
    #[arg(long, value_name = "BACKEND", default_value = "sim")]
    backend: Backend,

    /// Append every byte the host relays or serves to FILE (raw). For audits and tests: it holds
    /// only what the host sees anyway, i.e. ciphertext and sealed blobs.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,

    /// Give up (exit 1) when the enclave stops N+1 times in a row (a run of 30 s resets the
    /// count). Default: restart forever, with backoff from 200 ms up to 5 s.
    #[arg(long, value_name = "N")]
    restart_max: Option<u32>,
}

impl Args {
    fn into_config(self) -> Config {
        Config {
            enclave_bin: self.enclave_bin,
            enclave_config: self.enclave_config,
            sealed_models: self.sealed_models,
            listen: self.listen,
            backend: self.backend,
            record: self.record,
            restart: RestartPolicy {
                max_restarts: self.restart_max,
                ..RestartPolicy::default()
            },
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse(); // Usage errors exit 2, --help and --version 0.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = args.into_config();
    if let Err(e) = config.validate() {
        print_error(&e);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cloister_host::run(config));
    // Dropping the runtime drops the supervisor's child handle, which kills the enclave if it
    // is still running (kill_on_drop).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// `error: ...` then one `  because: ...` line per cause.
fn print_error(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  because: {cause}");
        source = cause.source();
    }
}
