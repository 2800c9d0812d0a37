//! `cloister receipt verify` and `cloister audit verify`: the enclave's signed records, checked offline.
//!
//! Exit codes: 0 the record verified; 1 it did not (the reason names the field or line); 2 usage or I/O.
//! With `--json`, one object on stdout whatever the outcome.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_attestation::evidence::{verify_recorded_evidence, Evidence};
use cloister_attestation::{Policy, VerifyOptions};
use cloister_collateral::files as chain_files;
use cloister_governance::audit::verify_log;
use cloister_governance::receipt::{verify_receipt, CborSerializable, CoseSign1};
use cloister_governance::ReceiptFile;
use cloister_kserve::{InferRequest, InferResponse};
use serde_json::json;

use super::{Failure, EXIT_OK};

/// Arguments of `cloister receipt`.
#[derive(clap::Args)]
#[command(
    about = "Check an inference receipt offline: the evidence, the enclave's signature, the request and response it names",
    long_about = "Check an inference receipt (cloister infer --receipt FILE) offline: the evidence it carries against the policy, the receipt's signature by the key that evidence attests, that it names this evidence and session and an attested model, and, when given, that the request and response are the ones it names.\n\nExit codes: 0 verified; 1 rejected (the reason names the field); 2 usage or I/O error."
)]
pub(crate) struct ReceiptArgs {
    #[command(subcommand)]
    what: ReceiptWhat,
}

#[derive(clap::Subcommand)]
enum ReceiptWhat {
    /// Verify a receipt file.
    Verify {
        /// The receipt file (from `cloister infer --receipt`).
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
        /// The policy the evidence must satisfy (TOML, as for `cloister verify`). It must pin the workload
        /// (`workload_identity` and its pins, or `allow_any_workload = true`): a receipt from evidence that
        /// any code on a genuine AMD platform could produce proves nothing about the answer.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The v2 request body (JSON) the receipt must name.
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
        /// The v2 response body (JSON, as `cloister infer --json` prints it) the receipt must name.
        #[arg(long, value_name = "FILE")]
        response: Option<PathBuf>,
        /// Instant at which the certificates must be valid, RFC 3339. Default: the receipt's time.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `cloister audit`.
#[derive(clap::Args)]
#[command(
    about = "Check an enclave's audit log: hash chain, signed checkpoints, nothing dropped, reordered or unsigned",
    long_about = "Check an enclave's audit log (cloister-host --audit-log FILE) against the evidence of that enclave: every line in order (seq, the previous line's SHA-256), every checkpoint signed by the record key the evidence attests, no line after the last signed one. Reports the first broken link, missing or reordered line, or unsigned tail.\n\nExit codes: 0 verified; 1 rejected (the reason names the line); 2 usage or I/O error."
)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    what: AuditWhat,
}

#[derive(clap::Subcommand)]
enum AuditWhat {
    /// Verify an audit log.
    Verify {
        /// The log (JSON lines, as the host stored them).
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
        /// The enclave's evidence: a receipt file, or raw evidence bytes.
        #[arg(long, value_name = "FILE")]
        evidence: PathBuf,
        /// The policy the evidence must satisfy (required; it must pin the workload, as for `cloister
        /// receipt verify`: a log signed by a key that any code could have attested proves nothing).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Trust this simulated ARK (simulated platform; development only).
        #[arg(long, value_name = "FILE")]
        sim_root: Option<PathBuf>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// The policy and the simulated root (the policy's `simulated_root`, or `--sim-root`).
fn trust(
    policy: Option<&Path>,
    sim_root: Option<&Path>,
) -> Result<
    (
        Policy,
        Option<cloister_attestation::snp::certs::AmdCertificate>,
        Vec<cloister_attestation::snp::crl::AmdCrl>,
    ),
    Failure,
> {
    // A record is only as good as the evidence of the key that signed it: under a policy that pins no
    // workload, any code on a genuine AMD platform could have attested a key and signed a receipt for a
    // made-up answer, or a log of made-up requests. Same rule as the key broker and client sessions.
    let path = policy.ok_or_else(|| {
        Failure::Usage(
            "--policy FILE is required: the evidence must satisfy a policy that pins the workload"
                .into(),
        )
    })?;
    let policy = chain_files::read_policy(path)?;
    policy
        .refuse_release_log("cloister receipt/audit verify")
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    match policy.require_workload_pin() {
        Ok(false) => {}
        Ok(true) => super::warn_any_workload(path),
        Err(e) => return Err(Failure::Usage(format!("{}: {e}", path.display()))),
    }
    let (policy_root, crls) = chain_files::read_policy_files(&policy)?;
    let root = match sim_root {
        Some(p) => Some(chain_files::read_certificate(p)?),
        None => policy_root,
    };
    Ok((policy, root, crls))
}

fn finish(json: bool, result: Result<serde_json::Value, Failure>) -> ExitCode {
    match result {
        Ok(mut v) => {
            v["verified"] = true.into();
            if json {
                println!("{v}");
            }
            ExitCode::from(EXIT_OK)
        }
        Err(f) => {
            let word = match f {
                Failure::Refused(_) => "rejected",
                Failure::Usage(_) => "error",
            };
            eprintln!("{word}: {}", f.message());
            if json {
                println!("{}", json!({"verified": false, "reason": f.message()}));
            }
            ExitCode::from(f.code())
        }
    }
}

fn refused(e: cloister_governance::Error) -> Failure {
    Failure::Refused(e.to_string())
}

/// Runs `cloister receipt`.
pub(crate) fn run_receipt(args: ReceiptArgs) -> ExitCode {
    let ReceiptWhat::Verify {
        receipt,
        policy,
        request,
        response,
        at,
        json,
    } = args.what;
    let result = (|| {
        // The policy first: a policy that pins no workload makes any receipt meaningless.
        let (policy, root, crls) = trust(Some(&policy), None)?;
        let file = ReceiptFile::from_json(&chain_files::read(&receipt)?).map_err(refused)?;
        let request = request
            .map(|p| -> Result<InferRequest, Failure> {
                InferRequest::decode(&chain_files::read(&p)?, None)
                    .map_err(|e| Failure::Usage(format!("{}: not a v2 request: {e}", p.display())))
            })
            .transpose()?;
        let response = response
            .map(|p| -> Result<InferResponse, Failure> {
                InferResponse::decode(&chain_files::read(&p)?, None)
                    .map_err(|e| Failure::Usage(format!("{}: not a v2 response: {e}", p.display())))
            })
            .transpose()?;
        // Default instant: when the receipt was made (read without trusting it yet; the signature is
        // checked below, and a wrong time only moves the instant the certificates are checked at).
        let at_unix = match &at {
            Some(s) => super::parse_rfc3339(s).map_err(Failure::Usage)?,
            None => unverified_time(&file).unwrap_or_else(super::now_unix),
        };
        let options = VerifyOptions {
            at_unix,
            crls: &crls,
            simulated_root: root.as_ref(),
        };
        let verified = verify_receipt(
            &file,
            &policy,
            &options,
            request.as_ref().map(|r| r.inputs.as_slice()),
            response.as_ref().map(|r| r.outputs.as_slice()),
        )
        .map_err(refused)?;
        let p = &verified.payload;
        if !json {
            println!(
                "verified: receipt #{} of session {} — model {} (sha384:{}), at {} (unix)",
                p.seq,
                hex::encode(p.session),
                p.model,
                hex::encode(p.model_digest),
                p.time
            );
            println!(
                "  request: {}{}",
                hex::encode(p.request),
                if verified.request_checked {
                    " (matches the given request)"
                } else {
                    ""
                }
            );
            println!(
                "  response: {}{}",
                hex::encode(p.response),
                if verified.response_checked {
                    " (matches the given response)"
                } else {
                    ""
                }
            );
            if let Some(prov) = &p.provenance {
                println!(
                    "  model signed by sha256:{} (root digest sha256:{}), verified by the enclave at load",
                    hex::encode(prov.signer),
                    hex::encode(prov.root_digest)
                );
            }
            println!("  signed by the enclave whose evidence satisfies the policy");
        }
        Ok(json!({
            "model": p.model,
            "model_digest": format!("sha384:{}", hex::encode(p.model_digest)),
            "time": p.time,
            "session": hex::encode(p.session),
            "seq": p.seq,
            "request": hex::encode(p.request),
            "response": hex::encode(p.response),
            "request_checked": verified.request_checked,
            "response_checked": verified.response_checked,
            "model_signer": p.provenance.map(|v| format!("sha256:{}", hex::encode(v.signer))),
            "signed_root": p.provenance.map(|v| format!("sha256:{}", hex::encode(v.root_digest))),
        }))
    })();
    finish(json, result)
}

fn unverified_time(file: &ReceiptFile) -> Option<i64> {
    let sign1 = CoseSign1::from_slice(&file.receipt.0).ok()?;
    let payload = cloister_governance::ReceiptPayload::from_cbor(sign1.payload.as_deref()?).ok()?;
    i64::try_from(payload.time).ok()
}

/// Runs `cloister audit`.
pub(crate) fn run_audit(args: AuditArgs) -> ExitCode {
    let AuditWhat::Verify {
        log,
        evidence,
        policy,
        sim_root,
        json,
    } = args.what;
    let result = (|| {
        let (policy, root, crls) = trust(policy.as_deref(), sim_root.as_deref())?;
        let bytes = chain_files::read(&evidence)?;
        // A receipt file carries the evidence; otherwise the file is the evidence.
        let evidence_bytes = match ReceiptFile::from_json(&bytes) {
            Ok(f) => f.evidence,
            Err(_) => bytes,
        };
        let ev = Evidence::from_bytes(&evidence_bytes)
            .map_err(|e| Failure::Refused(format!("evidence: {e}")))?;
        let options = VerifyOptions {
            at_unix: super::now_unix(),
            crls: &crls,
            simulated_root: root.as_ref(),
        };
        let verified = verify_recorded_evidence(&ev, &policy, &options)
            .map_err(|e| Failure::Refused(format!("evidence: {e}")))?;
        let key =
            verified.claims().receipt_key.clone().ok_or_else(|| {
                Failure::Refused("evidence: its claims carry no receipt_key".into())
            })?;
        let text = String::from_utf8(chain_files::read(&log)?)
            .map_err(|_| Failure::Refused(format!("{}: not UTF-8", log.display())))?;
        let report = verify_log(&text, &key).map_err(refused)?;
        if !json {
            println!(
                "verified: {} lines ({} requests), {} signed checkpoint(s){}",
                report.lines,
                report.requests,
                report.checkpoints,
                if report.stopped {
                    ", sealed by the enclave's stop"
                } else {
                    "; no stop yet: lines after the last checkpoint may still come"
                }
            );
            if report.other_chains > 0 {
                println!(
                    "  {} chain(s) of other enclave instances in the file (other keys: not checked against this evidence)",
                    report.other_chains
                );
            }
        }
        Ok(serde_json::to_value(&report).unwrap_or_default())
    })();
    finish(json, result)
}
