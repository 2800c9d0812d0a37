//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod bench_chat;
pub(crate) mod chat;
pub(crate) mod collateral;
pub(crate) mod demo;
pub(crate) mod failure;
pub(crate) mod fetch;
pub(crate) mod infer;
pub(crate) mod initdata;
pub(crate) mod keybroker;
pub(crate) mod log;
pub(crate) mod measure;
pub(crate) mod proxy;
pub(crate) mod records;
pub(crate) mod seal;
pub(crate) mod session_args;
pub(crate) mod sign;
pub(crate) mod sim;
pub(crate) mod verify;
pub(crate) mod verify_azure;
pub(crate) mod verify_common;

pub(crate) use failure::{exit, runtime, Failure, EXIT_OK, EXIT_USAGE};

/// Parses an RFC 3339 instant into Unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("invalid RFC 3339 time {s:?}: {e}"))
}

/// The current time in Unix seconds.
pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The warning `cloister keybroker` and `cloister infer` print at every start when a policy accepts any
/// workload (`allow_any_workload = true`).
pub(crate) fn warn_any_workload(policy: &std::path::Path) {
    eprintln!(
        "WARNING: {} sets allow_any_workload = true and does not pin the workload as its \
         workload_identity requires: keys and data go to ANY code that runs on a genuine AMD SEV-SNP \
         platform.",
        policy.display()
    );
}
