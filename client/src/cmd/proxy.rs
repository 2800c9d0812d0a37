//! `cloister proxy`: plain OIP v2 on loopback for clients that cannot attest, forwarded over attested
//! sessions (`cloister_client::proxy`).
//!
//! Exit codes: 2 usage (a non-loopback address without `--allow-remote`, an unreadable policy, a port in use);
//! otherwise it serves until killed. An enclave that does not satisfy the policy is not an exit: the proxy keeps
//! answering 503 with the reason, forwarding nothing, and attests again on each request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cloister_client::proxy::{serve, Proxy};
use cloister_client::session::SessionPolicy;

use super::{exit, runtime, Failure};

/// Arguments of `cloister proxy`.
#[derive(clap::Args)]
#[command(
    about = "Serve plain OIP v2 on loopback for any KServe/Triton client, forwarding over attested sessions",
    long_about = "Serve the Open Inference Protocol v2 (HTTP/1.1, JSON and the binary tensor extension) on a loopback address for clients that cannot attest an enclave (tritonclient, the KServe client, curl, perf_analyzer), and forward each request over a pool of TLS sessions to the enclave, each attested against the policy before anything is forwarded on it. Answers come back unchanged, with the receipt header when the enclave sends one. When the enclave does not satisfy the policy, every request gets 503 with the reason and no byte is forwarded.\n\nThe hop from your client to the proxy is plaintext: keep it on this machine (loopback). --allow-remote listens elsewhere, and says why that is dangerous."
)]
pub(crate) struct Args {
    /// Where to serve plain HTTP, e.g. 127.0.0.1:8000.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The enclave (the host's relay), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: String,
    /// The client's policy (TOML): what every upstream session's evidence must satisfy.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Upstream sessions at most (each attested); more concurrent requests wait for one.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_sessions: usize,
    /// DANGEROUS: listen on a non-loopback address. Clients would send inputs in plaintext over the network
    /// to the proxy; only the proxy's hop to the enclave is attested and encrypted.
    #[arg(long)]
    allow_remote: bool,
}

/// Runs `cloister proxy`.
pub(crate) fn run(args: Args) -> ExitCode {
    exit(
        runtime().and_then(|rt| rt.block_on(proxy(&args))),
        "proxy failed",
    )
}

async fn proxy(args: &Args) -> Result<(), Failure> {
    if !args.listen.ip().is_loopback() {
        if !args.allow_remote {
            return Err(Failure::Usage(format!(
                "{} is not a loopback address: clients would send their inputs in plaintext over the network \
                 to this proxy (only its hop to the enclave is attested and encrypted). Use 127.0.0.1, or \
                 --allow-remote if a trusted network carries that hop",
                args.listen
            )));
        }
        eprintln!(
            "WARNING: listening on {} (not loopback): inputs and outputs cross the network in PLAINTEXT between \
             your clients and this proxy; only the proxy's hop to the enclave is attested and encrypted.",
            args.listen
        );
    }
    let trust =
        SessionPolicy::from_file(&args.policy).map_err(|e| Failure::Usage(e.to_string()))?;
    match trust.policy.require_workload_pin() {
        Ok(false) => {}
        Ok(true) => super::warn_any_workload(&args.policy),
        Err(e) => return Err(Failure::Usage(format!("{}: {e}", args.policy.display()))),
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let proxy = Arc::new(Proxy::new(
        &args.endpoint,
        trust,
        args.max_sessions,
        Box::new(|session| {
            eprintln!("cloister proxy: upstream session attested:");
            for line in super::infer::describe_session(session) {
                eprintln!("  {line}");
            }
        }),
    ));
    if let Err(e) = proxy.attest().await {
        eprintln!(
            "cloister proxy: WARNING: the enclave does not satisfy the policy (or cannot be reached) yet; \
             requests get 503 and nothing is forwarded until it does: {e}"
        );
    }
    println!(
        "cloister proxy: serving OIP v2 on http://{} for {}",
        listener
            .local_addr()
            .map_err(|e| Failure::Usage(e.to_string()))?,
        args.endpoint
    );
    serve(listener, proxy).await;
    Ok(())
}
