//! `cloister`: the one command a person types. One module per subcommand under `cmd/`; `main` parses the
//! command line, runs the subcommand, prints the error chain and maps outcomes to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Cloister: confidential ML inference on AMD SEV-SNP.
#[derive(Parser)]
#[command(
    name = "cloister",
    version,
    about = "Cloister: confidential ML inference on AMD SEV-SNP. Verify attestation, seal models, run the key broker, attest and infer.",
    long_about = "Cloister: confidential ML inference on AMD SEV-SNP.\n\nModel owners seal ONNX weights (seal) and release keys only to attested enclaves (keybroker); clients attest the enclave inside their own TLS session before sending inputs (infer); verify checks a single report against AMD's roots and a policy; sim and demo run everything on a simulated AMD secure processor for development.\n\nExit codes: 0 success; 1 rejected or refused (the reason is on stderr); 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an SEV-SNP attestation report against AMD's roots and a policy.
    Verify(cmd::verify::Args),
    // Help texts (short and long) are on the Args structs: a doc comment here would replace them.
    Seal(cmd::seal::Args),
    Keybroker(cmd::keybroker::Args),
    /// Attest an enclave inside a TLS session, then run inference on it.
    Infer(cmd::infer::Args),
    /// Run the whole flow on the simulated platform: seal, key broker, host, enclave, attest, infer.
    Demo(cmd::demo::Args),
    Sim(cmd::sim::Args),
    Measure(cmd::measure::Args),
    Fetch(cmd::fetch::Args),
    Receipt(cmd::records::ReceiptArgs),
    Bench(cmd::bench::Args),
    Chat(cmd::chat::Args),
    Proxy(cmd::proxy::Args),
    Audit(cmd::records::AuditArgs),
    Initdata(cmd::initdata::Args),
    Sign(cmd::sign::Args),
    Log(cmd::log::Args),
}

/// mimalloc, as in the enclave: the in-process comparison of `bench --chat --llm` runs the same engine with the
/// same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `cloister verify --json` promises one JSON object on stdout whatever the outcome, usage
            // errors included.
            let args: Vec<String> = std::env::args().collect();
            let is_usage_error = !matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            if is_usage_error
                && args.get(1).map(String::as_str) == Some("verify")
                && args.iter().any(|a| a == "--json")
            {
                let rendered = e.to_string();
                let first = rendered.lines().next().unwrap_or_default();
                cmd::verify::print_usage_error_json(first.trim_start_matches("error: "));
            }
            e.exit();
        }
    };
    match cli.command {
        Command::Verify(args) => cmd::verify::run(args),
        Command::Seal(args) => cmd::seal::run(args),
        Command::Keybroker(args) => cmd::keybroker::run(args),
        Command::Infer(args) => cmd::infer::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Measure(args) => cmd::measure::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Receipt(args) => cmd::records::run_receipt(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Audit(args) => cmd::records::run_audit(args),
        Command::Initdata(args) => cmd::initdata::run(args),
        Command::Sign(args) => cmd::sign::run(args),
        Command::Log(args) => cmd::log::run(args),
    }
}
