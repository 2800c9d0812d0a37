//! The one place where a command's failure becomes its message on stderr and its exit code.
//!
//! Exit codes (README, "Commands"): **0** success; **1** the command ran and the answer is no — evidence
//! rejected, a key or data refused, a step of the flow failed (the reason on stderr); **2** the command could
//! not run as asked — usage, configuration, a local file, the local environment.
//!
//! Every command returns `Result<(), Failure>` and ends with [`exit`]; libraries' errors map here, once:
//! a verification failure is a refusal wherever it happens, a file that cannot be read is a usage error
//! wherever it happens.

use std::fmt::Display;
use std::process::ExitCode;

use cloister_session::SessionError;

/// Exit code: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: rejected or refused, or the flow failed.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit code: usage, configuration or local I/O error.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Why a command stopped.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Exit 1: the answer is no, or the work itself failed.
    Refused(String),
    /// Exit 2: the command could not run as asked.
    Usage(String),
}

impl Failure {
    /// A usage, configuration or local I/O error.
    pub(crate) fn usage(e: impl Display) -> Self {
        Failure::Usage(e.to_string())
    }

    /// A refusal, or a failure of the work itself.
    pub(crate) fn refused(e: impl Display) -> Self {
        Failure::Refused(e.to_string())
    }

    /// The exit code.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Usage(_) => EXIT_USAGE,
        }
    }

    /// The message, without its prefix.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Usage(m) => m,
        }
    }
}

/// An `anyhow` chain: the error then one `  because: …` line per cause.
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        text.push_str("\n  because: ");
        text.push_str(&cause.to_string());
    }
    text
}

/// Errors with context (measure, sim, keybroker's startup) are about files, flags and configuration.
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Usage(chain(&e))
    }
}

/// A collateral or policy file that cannot be read, or a KDS that cannot be reached, is a usage error;
/// collateral that was served but did not verify is a refusal.
impl From<cloister_collateral::Error> for Failure {
    fn from(e: cloister_collateral::Error) -> Self {
        if e.is_refusal() {
            Failure::refused(e)
        } else {
            Failure::usage(e)
        }
    }
}

/// A verification failure is a refusal.
impl From<cloister_attestation::Error> for Failure {
    fn from(e: cloister_attestation::Error) -> Self {
        Failure::refused(e)
    }
}

/// A session's local problems (its policy file, a policy that pins nothing) are usage errors; everything
/// that happened with the peer (unreachable, evidence rejected, model not attested) is a refusal.
impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Input(e) => Failure::usage(e),
            e @ SessionError::NoWorkloadPin(_) => Failure::usage(e),
            other => Failure::refused(other),
        }
    }
}

/// The library's one error, by what it is about.
impl From<cloister_cli::Error> for Failure {
    fn from(e: cloister_cli::Error) -> Self {
        use cloister_cli::Error as E;
        match e {
            E::Session(e) => e.into(),
            E::Collateral(e) => e.into(),
            other => Failure::refused(other),
        }
    }
}

/// A multi-threaded tokio runtime, or a usage error (the local environment cannot run one).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the async runtime: {e}")))
}

/// Ends a command: prints a failure on stderr (`error: …` for usage errors, `<refusal>: …` for refusals,
/// where `refusal` is the command's word: "rejected", "refused", "demo failed") and returns its exit code.
pub(crate) fn exit(result: Result<(), Failure>, refusal: &str) -> ExitCode {
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            match &f {
                Failure::Usage(m) => eprintln!("error: {m}"),
                Failure::Refused(m) => eprintln!("{refusal}: {m}"),
            }
            ExitCode::from(f.code())
        }
    }
}
