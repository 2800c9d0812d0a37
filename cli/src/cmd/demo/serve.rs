//! `cloister demo --serve`: a simulated deployment that stays up for `cloister infer`, `proxy` and `bench`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloister_cli::magika::{Analysis, MagikaConfig};
use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_kserve::{InferRequest, InferTensor, TensorData};

use super::{say, Args, MAGIKA_ONNX};

/// Starts the deployment, prints how to use it, serves until Ctrl-C or SIGTERM, then stops and checks the
/// enclave's audit log.
pub(super) async fn serve(args: &Args, workdir: &Path, start: Instant) -> Result<(), String> {
    let (model_path, name) = match (&args.model, &args.llm) {
        (_, Some(dir)) => llm_bundle(dir, workdir, args.model_name.as_deref())?,
        (Some(path), None) => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .to_owned();
            (path.clone(), args.model_name.clone().unwrap_or(stem))
        }
        (None, None) => {
            let path = workdir.join("magika.onnx");
            std::fs::write(&path, MAGIKA_ONNX).map_err(|e| e.to_string())?;
            (path, args.model_name.clone().unwrap_or("magika".into()))
        }
    };
    say(
        start,
        "Cloister on the SIMULATED SEV-SNP platform (nothing here is secure hardware), serving until Ctrl-C",
    );
    let mut options =
        DeploymentOptions::new(workdir, &model_path, &name).map_err(|e| e.to_string())?;
    let enclave_audit = workdir.join("enclave-audit.jsonl");
    options.host_args = vec!["--audit-log".into(), enclave_audit.clone().into()];
    let deployment = Deployment::start(&options)
        .await
        .map_err(|e| e.to_string())?;
    // An LLM takes longer to load (540 MB of weights for SmolLM2, optimized by tract).
    let ready_within = Duration::from_secs(if args.llm.is_some() { 600 } else { 120 });
    let session = match deployment.wait_ready(ready_within).await {
        Ok(s) => s,
        Err(e) => {
            deployment.stop().await;
            return Err(e.to_string());
        }
    };
    say(start, "enclave ready; attested from here:");
    for line in super::super::infer::describe_session(&session) {
        println!("          {line}");
    }
    let receipt_key = session.evidence().claims().receipt_key.clone();
    drop(session);

    let request = if args.model.is_none() && args.llm.is_none() {
        let path = workdir.join("request.json");
        std::fs::write(&path, magika_request()?).map_err(|e| e.to_string())?;
        Some(path)
    } else {
        None
    };
    let endpoint = &deployment.endpoint;
    let policy = deployment.client_policy.display().to_string();
    println!("endpoint: {endpoint}");
    println!("policy: {policy}");
    println!("model: {name}");
    if let Some(r) = &request {
        println!("request: {}", r.display());
    }
    let input = request
        .as_ref()
        .map_or("REQUEST.json".to_owned(), |r| r.display().to_string());
    println!("try:");
    if args.llm.is_some() {
        println!("  cloister chat --endpoint {endpoint} --policy {policy} --model {name} \"What is the capital of France?\"");
        println!("  cloister proxy --endpoint {endpoint} --policy {policy}    # then, with the openai package:");
        println!("    python3 -c 'import openai; c = openai.OpenAI(base_url=\"http://127.0.0.1:8000/v1\", api_key=\"-\"); print(c.chat.completions.create(model=\"{name}\", messages=[{{\"role\": \"user\", \"content\": \"Hi\"}}]).choices[0].message.content)'");
        wait_for_stop().await;
        say(start, "stopping host, enclave and key broker");
        deployment.stop().await;
        return verify_audit(start, receipt_key, &enclave_audit);
    }
    println!(
        "  cloister infer --endpoint {endpoint} --policy {policy} --model {name} --input {input}"
    );
    println!("  cloister bench --endpoint {endpoint} --policy {policy} --model {name} --input {input} --concurrency 2 --duration 10 --binary");
    println!("  cloister proxy --endpoint {endpoint} --policy {policy}    # then: curl http://127.0.0.1:8000/v2/models/{name}");
    wait_for_stop().await;
    say(start, "stopping host, enclave and key broker");
    deployment.stop().await;
    verify_audit(start, receipt_key, &enclave_audit)
}

/// Checks the enclave's audit log against the receipt key of its evidence, and says so.
fn verify_audit(
    start: Instant,
    receipt_key: Option<Vec<u8>>,
    enclave_audit: &Path,
) -> Result<(), String> {
    if let Some(key) = receipt_key {
        let log = std::fs::read_to_string(enclave_audit)
            .map_err(|e| format!("the enclave's audit log: {e}"))?;
        let report = cloister_governance::audit::verify_log(&log, &key)
            .map_err(|e| format!("the enclave's audit log does not verify: {e}"))?;
        say(
            start,
            &format!(
                "enclave audit log: {} requests, {} signed checkpoints: verified",
                report.requests, report.checkpoints
            ),
        );
    }
    Ok(())
}

/// The LLM directory as one bundle file in `workdir` (what `cloister seal --llm` seals), and its name: `name`,
/// else the `model` of its generation.json.
fn llm_bundle(dir: &Path, workdir: &Path, name: Option<&str>) -> Result<(PathBuf, String), String> {
    use cloister_inference::llm::{LlmBundle, ENTRY_NAMES};
    let mut files = Vec::with_capacity(ENTRY_NAMES.len());
    for entry in ENTRY_NAMES {
        let path = dir.join(entry);
        files.push(std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read {}: {e}. The LLM is generated, never committed: run scripts/fetch-llm.sh (it writes \
                 .cache/llm), or pass --llm DIR",
                path.display()
            )
        })?);
    }
    let bundle = LlmBundle::build(&files[0], &files[1], &files[2], &files[3]);
    drop(files);
    let parsed = LlmBundle::parse(&bundle).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = name.map_or_else(|| parsed.config().model.clone(), str::to_owned);
    let path = workdir.join("llm.bundle");
    std::fs::write(&path, &*bundle).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, name))
}

/// A Magika request (features of a small Python file), in the Open Inference Protocol's JSON.
fn magika_request() -> Result<Vec<u8>, String> {
    let config = MagikaConfig::embedded().map_err(|e| e.to_string())?;
    let sample = super::samples()
        .into_iter()
        .find_map(|(_, bytes)| match config.analyze(&bytes) {
            Analysis::NeedsModel(features) => Some(features),
            Analysis::Decided(_) => None,
        })
        .ok_or("no built-in sample needs the model")?;
    let [rows, cols] = config.input_shape();
    let request = InferRequest {
        inputs: vec![InferTensor::new(
            cloister_cli::magika::INPUT_NAME.to_owned(),
            vec![rows as u64, cols as u64],
            TensorData::Int32(sample),
        )],
        ..InferRequest::default()
    };
    serde_json::to_vec(&request).map_err(|e| e.to_string())
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
