//! `cloister proxy`: plain OIP v2 on loopback for clients that cannot attest, forwarded over attested
//! sessions (`cloister_session::proxy`).
//!
//! Exit codes: 2 usage (a non-loopback address without `--allow-remote`, an unreadable policy, a port in use,
//! a malformed `--allow-host`/`--allow-origin`);
//! otherwise it serves until killed. An enclave that does not satisfy the policy is not an exit: the proxy keeps
//! answering 503 with the reason, forwarding nothing, and attests again on each request.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;

use cloister_session::proxy::{
    serve, AllowedHost, AllowedOrigin, Proxy, ServeOptions, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
};

use super::{exit, runtime, Failure};

/// Arguments of `cloister proxy`.
#[derive(clap::Args)]
#[command(
    about = "Serve plain OIP v2 on loopback for any KServe/Triton client, forwarding over attested sessions",
    long_about = "Serve the Open Inference Protocol v2 (HTTP/1.1, JSON and the binary tensor extension) on a loopback address for clients that cannot attest an enclave (tritonclient, the KServe client, curl, perf_analyzer), and OpenAI's chat API (GET /v1/models, POST /v1/chat/completions, streamed or not) for the official openai clients pointed at http://LISTEN/v1, and forward each request over a pool of TLS sessions to the enclave, each attested against the policy before anything is forwarded on it. Answers come back unchanged, with the receipt header when the enclave sends one; a chat completion streams through as the enclave generates it, and a client that disconnects stops the generation. When the enclave does not satisfy the policy, every request gets 503 with the reason and no byte is forwarded.\n\nThe hop from your client to the proxy is plaintext: keep it on this machine (loopback). --allow-remote listens elsewhere, and says why that is dangerous.\n\nBrowsers on this machine can reach loopback too, so requests are checked before anything is forwarded: a Host header that does not name this proxy (its listen address, localhost or 127.0.0.1/[::1] with its port, or an --allow-host name) gets 421 (DNS rebinding); a request with an Origin header not given with --allow-origin, or marked Sec-Fetch-Site: cross-site/same-site, gets 403 (cross-site requests). Clients that are not browsers (curl, tritonclient) send neither and pass. At most --max-connections client connections are served at once; more get 503 and are closed."
)]
pub(crate) struct Args {
    /// Where to serve plain HTTP, e.g. 127.0.0.1:8000.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    #[command(flatten)]
    session: super::session_args::SessionArgs,
    /// Upstream sessions at most (each attested); more concurrent requests wait for one.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_sessions: usize,
    /// DANGEROUS: listen on a non-loopback address. Clients would send inputs in plaintext over the network
    /// to the proxy; only the proxy's hop to the enclave is attested and encrypted.
    #[arg(long)]
    allow_remote: bool,
    /// Also answer requests whose Host header is NAME (repeatable): a service name clients reach the proxy by,
    /// or this machine's address or name for clients elsewhere under --allow-remote. Without :PORT, the listen
    /// port; a Host without a port means port 80. By default only the listen address, and localhost, 127.0.0.1
    /// and [::1] with its port, are answered; any other Host gets 421 (it is how a web page that re-points its
    /// own name at this machine, DNS rebinding, would arrive).
    #[arg(long = "allow-host", value_name = "NAME[:PORT]")]
    allow_host: Vec<AllowedHost>,
    /// Let web pages from ORIGIN call the proxy from a browser (repeatable): scheme://host[:port] exactly as
    /// the browser sends it in Origin, e.g. http://localhost:3000. Their requests pass and answers carry CORS
    /// headers for that origin only. Without it, any request with an Origin header, or marked by the browser as
    /// cross-site or same-site, gets 403 and nothing is forwarded. `null` (sandboxed frames, file: pages) is
    /// allowed only when given literally; avoid it: any site can send it.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origin: Vec<AllowedOrigin>,
    /// Client connections served at once; more get 503 and are closed at once. A connection that sends no
    /// complete request header for 30 s (idle keep-alive included) is closed, so slow clients cannot hold the
    /// cap. The default sits well above what local clients open and below the usual 1024 open-file limit.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(DEFAULT_MAX_CONNECTIONS).unwrap_or(NonZeroUsize::MIN))]
    max_connections: NonZeroUsize,
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
    let trust = args.session.trust()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let proxy = Arc::new(Proxy::new(
        &args.session.endpoint,
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
        "cloister proxy: serving OIP v2 and OpenAI /v1 on http://{} for {}",
        listener
            .local_addr()
            .map_err(|e| Failure::Usage(e.to_string()))?,
        args.session.endpoint
    );
    let options = ServeOptions {
        allow_hosts: args.allow_host.clone(),
        allow_origins: args.allow_origin.clone(),
        max_connections: args.max_connections.get(),
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
    };
    serve(listener, proxy, options)
        .await
        .map_err(|e| Failure::Usage(format!("cannot serve on {}: {e}", args.listen)))
}
