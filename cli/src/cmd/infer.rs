//! `cloister infer`: attest the enclave inside this TLS session, then (and only then) run inference.
//!
//! Exit codes: 0 inference done; 1 the enclave was not trusted (nothing was sent) or inference failed;
//! 2 usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use cloister_cli::magika::{Analysis, MagikaConfig, Prediction};
use cloister_kserve::{InferRequest, InferResponse, InferTensor, TensorData};
use cloister_session::AttestedSession;

use super::{exit, runtime, Failure};

/// Arguments of `cloister infer`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["input", "file"])))]
pub(crate) struct Args {
    #[command(flatten)]
    session: super::session_args::SessionArgs,
    /// Name of the model to use (as the enclave serves it).
    #[arg(long, value_name = "NAME")]
    model: String,
    /// An Open Inference Protocol v2 request body (JSON `inputs` with `name`, `shape`, `datatype`, `data`).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Classify this file with the Magika sample model (features are computed here, on the client).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Print the v2 response body on stdout (and the verified claims on stderr).
    #[arg(long)]
    json: bool,
    /// Send tensors with the binary tensor extension instead of JSON.
    #[arg(long)]
    binary: bool,
    /// Save the inference's signed receipt, with the session's evidence, to FILE (JSON); `cloister receipt
    /// verify --receipt FILE` checks it offline.
    #[arg(long, value_name = "FILE")]
    receipt: Option<PathBuf>,
}

/// Runs `cloister infer`.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(infer(&args)));
    exit(result, "refused")
}

/// What the client verified, for people.
pub(crate) fn describe_session(session: &AttestedSession) -> Vec<String> {
    let ev = session.evidence();
    let report = ev.report();
    let r = report.report();
    let root = if report.is_simulated() {
        "a SIMULATED root, trusted because the policy names it"
    } else {
        "AMD's root"
    };
    let mut lines = vec![
        format!(
            "attested: {} {} report v{} signed by the {} chaining to {root}",
            report.product(),
            if report.is_simulated() {
                "simulated SEV-SNP"
            } else {
                "SEV-SNP"
            },
            r.version,
            report.signing_key().name().to_uppercase(),
        ),
        format!("  measurement:   {}", hex::encode(r.measurement)),
        format!("  reported TCB:  {}", r.reported_tcb),
        format!(
            "  debug: {}  vmpl: {}  policy: holds",
            r.policy.debug(),
            r.vmpl
        ),
        format!(
            "  config digest: sha384:{}",
            hex::encode(ev.claims().config_digest.0)
        ),
    ];
    for d in &ev.claims().model_digests {
        lines.push(format!("  model digest:  sha384:{}", hex::encode(d.0)));
        if let Some(s) = ev.claims().signer_of(&d.0) {
            lines.push(format!(
                "    signed by:   sha256:{} (signature verified by the enclave at load)",
                hex::encode(s.signer)
            ));
        }
    }
    lines.push("  bound to: this TLS session (exporter) and a fresh nonce".into());
    lines
}

async fn infer(args: &Args) -> Result<(), Failure> {
    let trust = args.session.trust()?;
    // Read local inputs before connecting, so that an I/O error is a usage error, not a refusal.
    let request_body = match &args.input {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let file_bytes = match &args.file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let request = match &request_body {
        Some(body) => Some(
            InferRequest::decode(body, None)
                .map_err(|e| Failure::Usage(format!("--input: not a v2 request: {e}")))?,
        ),
        None => None,
    };

    let mut session = AttestedSession::connect(&args.session.endpoint, &trust).await?;
    let description = describe_session(&session);
    let print_claims = |to_stderr: bool| {
        for line in &description {
            if to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    };
    let meta = session.attested_model(&args.model).await?;

    if let Some(request) = request {
        // The model was checked just above (attested_model): no second metadata round trip.
        let response = session
            .infer_attested(&args.model, &request, args.binary)
            .await?;
        save_receipt(args, &session)?;
        if args.json {
            print_claims(true);
            print_json(&response)?;
        } else {
            print_claims(false);
            print_outputs(&response);
        }
        return Ok(());
    }

    let Some(bytes) = file_bytes else {
        return Err(Failure::Usage(
            "one of --input or --file is required".into(),
        ));
    };
    let config = MagikaConfig::embedded().map_err(|e| Failure::Usage(e.to_string()))?;
    let features = match config.analyze(&bytes) {
        Analysis::Decided(prediction) => {
            // Too small for the model: decided locally, nothing sent (as the magika package does).
            print_claims(args.json);
            print_prediction(args, &prediction, None)?;
            return Ok(());
        }
        Analysis::NeedsModel(features) => features,
    };
    let input = meta
        .inputs
        .first()
        .ok_or_else(|| Failure::Refused("the model has no inputs".into()))?;
    let [rows, cols] = config.input_shape();
    let request = InferRequest {
        inputs: vec![InferTensor::new(
            input.name.clone(),
            vec![rows as u64, cols as u64],
            TensorData::Int32(features),
        )],
        ..InferRequest::default()
    };
    let response = session
        .infer_attested(&args.model, &request, args.binary)
        .await?;
    let scores = match response.outputs.first().and_then(|o| o.data.as_ref()) {
        Some(TensorData::Fp32(v)) => v,
        _ => {
            return Err(Failure::Refused(
                "the model's first output is not FP32 scores: is this the Magika model?".into(),
            ))
        }
    };
    let prediction = config
        .decode(scores)
        .map_err(|e| Failure::Refused(format!("cannot decode the model output: {e}")))?;
    save_receipt(args, &session)?;
    print_claims(args.json);
    print_prediction(args, &prediction, Some(&response))?;
    Ok(())
}

/// Writes the last inference's receipt file (`--receipt`).
fn save_receipt(args: &Args, session: &AttestedSession) -> Result<(), Failure> {
    let Some(path) = &args.receipt else {
        return Ok(());
    };
    let file = session
        .receipt_file()
        .ok_or_else(|| Failure::Refused("the enclave sent no receipt with its answer".into()))?;
    std::fs::write(path, file.to_json())
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("receipt saved to {}", path.display());
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string(value).map_err(|e| Failure::Usage(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn print_outputs(response: &InferResponse) {
    for out in &response.outputs {
        let preview = match &out.data {
            Some(data) => {
                let text = serde_json::to_string(data).unwrap_or_default();
                if text.len() > 120 {
                    format!("{}…", &text[..text.floor_char_boundary(120)])
                } else {
                    text
                }
            }
            None => "(no data)".into(),
        };
        println!(
            "output {} {} {:?}: {preview}",
            out.name, out.datatype, out.shape
        );
    }
}

fn print_prediction(
    args: &Args,
    prediction: &Prediction,
    response: Option<&InferResponse>,
) -> Result<(), Failure> {
    let path = args
        .file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if args.json {
        match response {
            Some(r) => print_json(r),
            None => print_json(&serde_json::json!({
                "label": prediction.label(),
                "score": prediction.score,
                "decided_without_model": true,
            })),
        }
    } else {
        println!(
            "{path}: {} ({}, {}) score {:.3}",
            prediction.label(),
            prediction.output.description,
            prediction.output.group,
            prediction.score
        );
        Ok(())
    }
}
