//! `cloister demo`: the whole flow on the simulated platform, on this machine, in under a minute.
//!
//! Creates a temporary simulated AMD-SP, seals the Magika sample model, starts the model owner's key
//! broker and `cloister-host` (which launches `cloister-enclave`), attests the enclave from a client,
//! classifies a few files through the attested session, shows that a client pinning another measurement
//! refuses to send anything, and shuts everything down. Exits non-zero if any step fails.
//!
//! `--serve` keeps a simulated deployment (Magika, or `--model FILE`) up instead, without the demo's budget,
//! and prints what `cloister infer`, `cloister proxy` and `cloister bench` need, until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cloister_cli::magika::{Analysis, MagikaConfig};
use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_kserve::{InferRequest, InferResponse, InferTensor, TensorData};
use cloister_session::{AttestedSession, SessionConfig};

use super::{exit, runtime, Failure};

mod serve;
use serve::serve;

/// The Magika sample model, embedded so that the demo runs from any directory with nothing but the binary
/// and its siblings (`cloister-host`, `cloister-enclave`).
const MAGIKA_ONNX: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/sample/magika/model.onnx"
));

/// Arguments of `cloister demo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Keep all state (platform, keystore, policies, logs, audit log) in this new directory instead of a
    /// temporary one that is deleted at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Do not run the demo's client: keep the simulated deployment serving (no per-client budget) and print its
    /// endpoint, the client's policy and example `cloister infer|proxy|bench` commands; Ctrl-C stops it and
    /// checks the enclave's audit log.
    #[arg(long, conflicts_with = "files")]
    serve: bool,
    /// With --serve: the ONNX model to seal and serve instead of Magika.
    #[arg(long, value_name = "FILE", requires = "serve")]
    model: Option<PathBuf>,
    /// With --serve: seal and serve the LLM in DIR instead of Magika (model.onnx, tokenizer.json,
    /// chat_template.jinja, generation.json: scripts/fetch-llm.sh writes them to .cache/llm, the default), for
    /// `cloister chat` and OpenAI's API through `cloister proxy`.
    #[arg(
        long,
        value_name = "DIR",
        requires = "serve",
        conflicts_with = "model",
        num_args = 0..=1,
        default_missing_value = ".cache/llm"
    )]
    llm: Option<PathBuf>,
    /// With --serve: the name the model is served under (default: the file's stem, or `magika`).
    #[arg(long, value_name = "NAME", requires = "serve")]
    model_name: Option<String>,
    /// Files to classify (default: a few built-in samples).
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Built-in samples: (name, bytes).
fn samples() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "hello.py".into(),
            b"#!/usr/bin/env python3\n\"\"\"Greet the world.\"\"\"\nimport sys\n\n\ndef main(argv):\n    for name in argv[1:]:\n        print(f\"hello, {name}\")\n    return 0\n\n\nif __name__ == \"__main__\":\n    sys.exit(main(sys.argv))\n"
                .to_vec(),
        ),
        (
            "report.json".into(),
            br#"{"enclave": {"measurement": "c577290", "tcb": {"bootloader": 10, "tee": 0, "snp": 25, "microcode": 84}}, "models": [{"name": "magika", "digest": "sha384:..."}], "verified": true, "reasons": []}"#
                .to_vec(),
        ),
        (
            "index.html".into(),
            b"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n  <title>Cloister: confidential inference</title>\n  <link rel=\"stylesheet\" href=\"/static/site.css\">\n</head>\n<body>\n  <header><nav><a href=\"/\">Home</a> <a href=\"/docs/\">Docs</a></nav></header>\n  <main>\n    <h1>Confidential inference</h1>\n    <p>The host never sees your data: <em>attest first</em>, then send.</p>\n    <ul>\n      <li><a href=\"/docs/threat-model.html\">Threat model</a></li>\n      <li><a href=\"/docs/evidence.html\">Evidence</a></li>\n    </ul>\n  </main>\n  <script src=\"/static/app.js\"></script>\n</body>\n</html>\n"
                .to_vec(),
        ),
        (
            "main.rs".into(),
            b"use std::io::{self, Read};\n\nfn main() -> io::Result<()> {\n    let mut input = String::new();\n    io::stdin().read_to_string(&mut input)?;\n    let words = input.split_whitespace().count();\n    println!(\"{words} words\");\n    Ok(())\n}\n"
                .to_vec(),
        ),
    ]
}

/// Runs `cloister demo`.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(demo(&args)).map_err(Failure::Refused));
    exit(result, "demo failed")
}

fn say(start: Instant, text: &str) {
    println!("[{:>5.1}s] {text}", start.elapsed().as_secs_f64());
}

async fn demo(args: &Args) -> Result<(), String> {
    let start = Instant::now();
    let temp;
    let workdir = match &args.keep {
        Some(dir) => {
            if dir.exists() {
                return Err(format!(
                    "{} already exists: --keep wants a new directory",
                    dir.display()
                ));
            }
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    // The files to classify, read up front: a missing file is an error before anything starts.
    let inputs = read_inputs(&args.files)?;

    std::fs::create_dir_all(&workdir).map_err(|e| e.to_string())?;
    if args.serve {
        return serve(args, &workdir, start).await;
    }
    let model_path = workdir.join("magika.onnx");
    std::fs::write(&model_path, MAGIKA_ONNX).map_err(|e| e.to_string())?;

    say(
        start,
        "Cloister demo on the SIMULATED SEV-SNP platform (nothing here is secure hardware)",
    );
    let mut options =
        DeploymentOptions::new(&workdir, &model_path, "magika").map_err(|e| e.to_string())?;
    // Governance, in the measured configuration: a per-client budget the demo will hit on purpose, and the
    // enclave's audit log, stored by the host.
    let budget = (inputs.len() + 3).max(8);
    options.enclave_config_extra = format!(
        "[audit]\ncheckpoint_every = 4\n\n[budgets.per_client]\nrequests_per_minute = {budget}\n"
    );
    let enclave_audit = workdir.join("enclave-audit.jsonl");
    options.host_args = vec!["--audit-log".into(), enclave_audit.clone().into()];
    let deployment = Deployment::start(&options)
        .await
        .map_err(|e| e.to_string())?;
    say_deployment(&deployment, start);

    let result = run_client(&deployment, &inputs, start).await;
    say(start, "shutting down host, enclave and key broker");
    let audit = std::fs::read_to_string(&deployment.audit_log).unwrap_or_default();
    deployment.stop().await;
    let receipt_key = result?;
    let grants = audit.lines().filter(|l| l.contains("\"granted\"")).count();
    say(
        start,
        &format!("key broker audit log: {grants} key release(s) granted"),
    );
    let log = std::fs::read_to_string(&enclave_audit)
        .map_err(|e| format!("the enclave's audit log: {e}"))?;
    let report = cloister_governance::audit::verify_log(&log, &receipt_key)
        .map_err(|e| format!("the enclave's audit log does not verify: {e}"))?;
    say(
        start,
        &format!(
            "enclave audit log (stored by the host): {} lines, {} requests, {} signed checkpoints{}: verified",
            report.lines,
            report.requests,
            report.checkpoints,
            if report.stopped { ", sealed at shutdown" } else { "" }
        ),
    );
    if let Some(dir) = &args.keep {
        say(start, &format!("state kept in {}", dir.display()));
    }
    say(start, "done");
    Ok(())
}

/// The files to classify (`files`, or the built-in samples when there are none): (name, bytes).
fn read_inputs(files: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>, String> {
    Ok(if files.is_empty() {
        samples()
    } else {
        files
            .iter()
            .map(|p| {
                std::fs::read(p)
                    .map(|b| (p.display().to_string(), b))
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
            })
            .collect::<Result<_, _>>()?
    })
}

/// Prints what each party set up: the platform, the model owner's sealed model and broker, the host.
fn say_deployment(deployment: &Deployment, start: Instant) {
    say(
        start,
        &format!(
            "platform: simulated Genoa AMD-SP in {}",
            deployment.sim_dir.display()
        ),
    );
    say(
        start,
        &format!(
            "model owner: sealed Magika ({}), key in the keystore",
            deployment.model_digest
        ),
    );
    say(
        start,
        &format!(
            "model owner: key broker pins measurement {}",
            hex::encode(deployment.measurement)
        ),
    );
    say(
        start,
        &format!(
            "host: cloister-host relays on {} and launched cloister-enclave",
            deployment.endpoint
        ),
    );
}

/// Runs the client side; returns the enclave's record key (from its attested claims), to check its audit log.
async fn run_client(
    deployment: &Deployment,
    inputs: &[(String, Vec<u8>)],
    start: Instant,
) -> Result<Vec<u8>, String> {
    let mut session = deployment
        .wait_ready(Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    say(
        start,
        "enclave: attested by the key broker, model key released, model loaded",
    );
    say(
        start,
        "client: attested the enclave inside its own TLS session:",
    );
    for line in super::infer::describe_session(&session) {
        println!("          {line}");
    }
    let last = classify(&mut session, deployment, inputs, start).await?;

    // The last answer's receipt, checked offline as an auditor would: the evidence under the client's
    // policy, the enclave's signature, and the request and response it names.
    if let (Some((request, response)), Some(file)) = (&last, session.receipt_file()) {
        verify_receipt_offline(deployment, &file, request, response, start)?;
    }

    // The budget (measured configuration: requests per minute per client): spent on purpose.
    let request = last
        .as_ref()
        .map(|(r, _)| r.clone())
        .ok_or("no input reached the model")?;
    spend_budget(&mut session, deployment, &request, start).await?;

    // What a client that expects another build sees: a refusal before any input is sent.
    check_other_measurement_refused(deployment, start).await?;
    session
        .evidence()
        .claims()
        .receipt_key
        .clone()
        .ok_or_else(|| "the enclave's claims carry no record key".to_owned())
}

/// Classifies each input (through the attested session when Magika needs its model) and prints the
/// prediction; returns the last request the model answered, with its answer.
async fn classify(
    session: &mut AttestedSession,
    deployment: &Deployment,
    inputs: &[(String, Vec<u8>)],
    start: Instant,
) -> Result<Option<(InferRequest, InferResponse)>, String> {
    let meta = session
        .attested_model(&deployment.model_name)
        .await
        .map_err(|e| e.to_string())?;
    let config = MagikaConfig::embedded().map_err(|e| e.to_string())?;
    let input_name = meta
        .inputs
        .first()
        .map(|i| i.name.clone())
        .ok_or("the model has no inputs")?;
    let mut last: Option<(InferRequest, InferResponse)> = None;
    for (name, bytes) in inputs {
        let prediction = match config.analyze(bytes) {
            Analysis::Decided(p) => *p,
            Analysis::NeedsModel(features) => {
                let [rows, cols] = config.input_shape();
                let request = InferRequest {
                    inputs: vec![InferTensor::new(
                        input_name.clone(),
                        vec![rows as u64, cols as u64],
                        TensorData::Int32(features),
                    )],
                    ..InferRequest::default()
                };
                let response = session
                    .infer_attested(&deployment.model_name, &request, true)
                    .await
                    .map_err(|e| e.to_string())?;
                let scores = match response.outputs.first().and_then(|o| o.data.as_ref()) {
                    Some(TensorData::Fp32(v)) => v.clone(),
                    _ => return Err("unexpected model output".into()),
                };
                let decoded = config.decode(&scores).map_err(|e| e.to_string())?;
                last = Some((request, response));
                decoded
            }
        };
        say(
            start,
            &format!(
                "client: {name}: {} ({}) score {:.3}",
                prediction.label(),
                prediction.output.description,
                prediction.score
            ),
        );
    }
    Ok(last)
}

/// Verifies a receipt offline under the client's policy, against the request and response it names.
fn verify_receipt_offline(
    deployment: &Deployment,
    file: &cloister_governance::ReceiptFile,
    request: &InferRequest,
    response: &InferResponse,
    start: Instant,
) -> Result<(), String> {
    let trust = deployment.session_config().map_err(|e| e.to_string())?;
    let v = cloister_governance::receipt::verify_receipt(
        file,
        trust.policy(),
        &trust.verify_options(super::now_unix()),
        Some(&request.inputs),
        Some(&response.outputs),
    )
    .map_err(|e| format!("the receipt does not verify: {e}"))?;
    say(
        start,
        &format!(
            "receipt #{} verified offline: signed by the attested enclave, names model {} and this request and response",
            v.payload.seq, v.payload.model
        ),
    );
    Ok(())
}

/// Sends `request` until the per-client budget answers 429 (at most 64 times).
async fn spend_budget(
    session: &mut AttestedSession,
    deployment: &Deployment,
    request: &InferRequest,
    start: Instant,
) -> Result<(), String> {
    let mut hit = None;
    for _ in 0..64 {
        match session
            .infer_attested(&deployment.model_name, request, true)
            .await
        {
            Ok(_) => {}
            Err(cloister_session::SessionError::Status { status, message })
                if status.as_u16() == 429 =>
            {
                hit = Some(message);
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let message = hit.ok_or("the per-client budget was never hit")?;
    say(start, &format!("client: budget hit, HTTP 429: {message}"));
    Ok(())
}

/// A client whose policy pins another measurement must refuse the enclave.
async fn check_other_measurement_refused(
    deployment: &Deployment,
    start: Instant,
) -> Result<(), String> {
    let trust = SessionConfig::builder_from_file(&deployment.client_policy)
        .map_err(|e| e.to_string())?
        .with_policy(|p| {
            p.measurements = Some(std::collections::BTreeSet::from([
                cloister_attestation::policy::HexBytes([0u8; 48]),
            ]));
        })
        .build()
        .map_err(|e| e.to_string())?;
    match AttestedSession::connect(&deployment.endpoint, &trust).await {
        Ok(_) => Err("a client pinning another measurement was not refused".into()),
        Err(e) => {
            say(
                start,
                &format!("client pinning another measurement refuses to send anything: {e}"),
            );
            Ok(())
        }
    }
}
