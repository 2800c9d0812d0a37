//! `POST /v2/models/{name}/infer`: decode, admit against the memory budget, run on the inference pool,
//! encode. Every bound a request meets on the way is here, in the order it meets them.

use cloister_governance::audit::RequestRecord;
use cloister_governance::digest::{tensors_digest, Side};
use cloister_governance::receipt::RECEIPT_HEADER;

use super::*;
use crate::governance::{harden, OverBudget};

/// What the audit log records of a request, filled as the request goes.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) input_elements: u64,
    pub(super) output_elements: u64,
    pub(super) budget: Option<String>,
}

/// An inference under the enclave's governance: the client's budget first (429 with `Retry-After` when
/// over), then [`infer`]; every outcome is one audit line.
pub(super) async fn governed_infer(
    ctx: &Connection,
    slot: &ModelSlot,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let started = Instant::now();
    let governance = ctx.enclave.governance();
    let mut stats = Stats::default();
    let admitted = admit_client(ctx);
    let result = match admitted {
        Err(e) => Err(e),
        Ok(state) => {
            stats.budget = state;
            infer(ctx, slot, req, &mut stats).await
        }
    };
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    // A served request is a line of its own (the work was done); a refusal is counted and written in the
    // next tally line, so that refusals, which cost a client nothing, cannot grow the log line by line.
    if status == StatusCode::OK {
        governance.audit().record(RequestRecord {
            session: ctx.session_hex(),
            client: ctx.client.clone(),
            model: slot.name().to_owned(),
            model_digest: slot.digest().to_string(),
            input_elements: stats.input_elements,
            output_elements: stats.output_elements,
            latency_ms: started.elapsed().as_millis() as u64,
            outcome: "ok".into(),
            budget: stats.budget,
        });
    } else {
        governance.count(
            &ctx.client,
            &format!("infer {}", slot.name()),
            &format!("refused:{}", status.as_u16()),
        );
    }
    ctx.enclave
        .metrics()
        .request(slot.name(), status.as_u16(), started.elapsed());
    result
}

/// The client's request budget: its state for the audit line, or 429 when over (503 while budgets cannot be
/// made durable).
pub(super) fn admit_client(ctx: &Connection) -> Result<Option<String>, ApiError> {
    let budgets = ctx.enclave.governance().budgets();
    match budgets.durability_problem() {
        Some(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("budgets cannot be made durable now ({why}); try again later"),
        )),
        None => budgets
            .admit(&ctx.client)
            .map_err(|over| over_budget(&over)),
    }
}

pub(super) fn over_budget(over: &OverBudget) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "over budget: {} (retry after {} s)",
            over.reason, over.retry_after
        ),
    );
    e.retry_after = Some(over.retry_after);
    e
}

/// An inference, as a pipeline: each step owns one bound and returns what the next one needs.
pub(super) async fn infer(
    ctx: &Connection,
    slot: &ModelSlot,
    req: Request<Incoming>,
    stats: &mut Stats,
) -> Result<Resp, ApiError> {
    let enclave = &*ctx.enclave;
    let model = loaded(slot)?;
    let limits = *enclave.limits();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limits.max_queue_wait_secs);
    let (permit, mut grant, request) = receive(enclave, req, deadline).await?;
    let model_outputs = model.outputs();
    let available: Vec<&str> = model_outputs.iter().map(|o| o.name.as_str()).collect();
    let selection = request
        .select_outputs(&available)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let InferRequest { id, inputs, .. } = request;
    let (request_digest, inputs) = charge_inputs(ctx, inputs, stats)?;
    let prepared = prepare(enclave, slot, &model, inputs, deadline).await?;
    let footprint = prepared.footprint();
    let response_bytes = response_estimate(
        model_outputs,
        footprint,
        &selection.names,
        &selection.binary,
    );
    if response_bytes > limits.max_response_bytes {
        return Err(too_large(format!(
            "the response to this request would be about {response_bytes} bytes; the limit is {}",
            limits.max_response_bytes
        )));
    }
    enclave
        .memory()
        .grow(&mut grant, footprint.peak_bytes, deadline)
        .await
        .map_err(pool_error)?;
    // The grant travels with the run and comes back with its outputs: if the client goes away while tract
    // runs, the memory stays reserved until the run ends (dropped on the inference thread), not until the
    // waiting future is cancelled.
    let run_model = Arc::clone(&model);
    let (outputs, grant) = enclave
        .pool()
        .run(deadline, move || (run_model.run_prepared(prepared), grant))
        .await
        .map_err(pool_error)?;
    let wire = wire_outputs(
        slot,
        outputs.map_err(inference_error)?,
        &selection.names,
        &limits,
    )?;
    stats.output_elements = wire
        .iter()
        .map(|t| t.data.as_ref().map_or(0, |d| d.len() as u64))
        .sum();
    let receipt = ctx.receipt(slot, request_digest, tensors_digest(Side::Response, &wire))?;
    let response = InferResponse {
        model_name: slot.name().to_owned(),
        model_version: Some(MODEL_VERSION.to_owned()),
        id,
        parameters: None,
        outputs: wire,
    };
    respond(response, &selection.binary, &limits, receipt, grant, permit)
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
}

/// Step 1: a permit (before the body is read, so that it also bounds the memory held by bodies), the body,
/// a memory reservation for its decoded tensors, and the decoded request.
async fn receive(
    enclave: &Enclave,
    req: Request<Incoming>,
    deadline: tokio::time::Instant,
) -> Result<(tokio::sync::OwnedSemaphorePermit, MemoryGrant, InferRequest), ApiError> {
    let limits = *enclave.limits();
    let Ok(permit) = Arc::clone(enclave.inference_permits()).try_acquire_owned() else {
        return Err(busy(&format!(
            "too many concurrent inference requests (limit {})",
            limits.max_concurrent_requests
        )));
    };
    let json_len = match req.headers().get(INFERENCE_HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Inference-Header-Content-Length must be an integer")
                })?,
        ),
    };
    let body = read_body(req, limits.max_body_bytes).await?;
    // Decoded tensors can be larger than the body that carried them (JSON `0,` is two bytes and becomes an
    // eight-byte INT64 or FP64): that much is reserved from the budget before decoding, so that requests
    // waiting for admission are inside the budget too. The reservation grows into the run's grant later.
    let grant = enclave
        .memory()
        .admit(
            (body.len() as u64).saturating_mul(MAX_DECODE_GROWTH),
            deadline,
        )
        .await
        .map_err(pool_error)?;
    let decode_limits = DecodeLimits {
        max_tensor_elements: limits.max_tensor_elements,
    };
    let request =
        InferRequest::decode_with(&body, json_len, &decode_limits).map_err(decode_error)?;
    Ok((permit, grant, request))
}

/// Step 2: what the receipt names and the budget counts (the inputs as the client sent them), charged to
/// the client's input-element budget; then the engine's tensors.
fn charge_inputs(
    ctx: &Connection,
    inputs: Vec<InferTensor>,
    stats: &mut Stats,
) -> Result<([u8; 32], Vec<NamedTensor>), ApiError> {
    let request_digest = tensors_digest(Side::Request, &inputs);
    stats.input_elements = inputs
        .iter()
        .map(|t| t.data.as_ref().map_or(0, |d| d.len() as u64))
        .sum();
    ctx.enclave
        .governance()
        .budgets()
        .charge_elements(&ctx.client, stats.input_elements)
        .map_err(|over| over_budget(&over))?;
    let inputs = inputs
        .into_iter()
        .map(engine_tensor)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((request_digest, inputs))
}

/// Step 3: admission before tract allocates anything for this request: the request is checked against the
/// model and its cost read off the plan. Shapes seen before prepare by lookups (microseconds), here; new
/// shapes may plan for milliseconds, on an inference thread. A panic is caught here as there.
async fn prepare(
    enclave: &Enclave,
    slot: &ModelSlot,
    model: &Arc<LoadedModel>,
    inputs: Vec<NamedTensor>,
    deadline: tokio::time::Instant,
) -> Result<crate::inference::PreparedRun, ApiError> {
    let limits = enclave.limits();
    let run_limits = RunLimits {
        max_tensor_elements: limits.max_tensor_elements,
        max_batch: slot.max_batch(),
    };
    let prepared = if model.prepare_is_cached(&inputs) {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.prepare(inputs, &run_limits)
        }))
        .map_err(|_| PoolError::Failed)
    } else {
        let prepare_model = Arc::clone(model);
        enclave
            .pool()
            .run(deadline, move || prepare_model.prepare(inputs, &run_limits))
            .await
    }
    .map_err(pool_error)?
    .map_err(inference_error)?;
    if let Some(hit) = prepared.plan_cached() {
        enclave.metrics().plan(slot.name(), hit);
    }
    Ok(prepared)
}

/// Step 4: the outputs as the response carries them: hardened (`top_k`, `round_decimals`), in the selected
/// order, each within the element limit (a size the plan could not tell in advance is checked here).
fn wire_outputs(
    slot: &ModelSlot,
    mut outputs: Vec<NamedTensor>,
    selected: &[String],
    limits: &crate::config::Limits,
) -> Result<Vec<InferTensor>, ApiError> {
    let (top_k, decimals) = slot.hardening();
    if top_k.is_some() || decimals.is_some() {
        for t in &mut outputs {
            harden(t, top_k, decimals);
        }
    }
    let mut by_name: Vec<Option<NamedTensor>> = outputs.into_iter().map(Some).collect();
    let mut wire = Vec::with_capacity(selected.len());
    for name in selected {
        let tensor = by_name
            .iter_mut()
            .find(|t| t.as_ref().is_some_and(|t| &t.name == name))
            .and_then(Option::take)
            .ok_or_else(|| {
                tracing::error!("tract did not return a declared output");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
            })?;
        let elements = tensor.data.len() as u64;
        if elements > limits.max_tensor_elements {
            return Err(too_large(format!(
                "output `{}` has {elements} elements; the limit is {}",
                truncate(name, 64),
                limits.max_tensor_elements
            )));
        }
        wire.push(wire_tensor(tensor));
    }
    Ok(wire)
}

/// Step 5: the encoded response, within `max_response_bytes`, with its receipt header. The memory grant and
/// the request permit are released when hyper drops the body, after the last byte went out: a slow reader
/// holds its response inside the budget, not beside it.
fn respond(
    response: InferResponse,
    binary: &HashSet<String>,
    limits: &crate::config::Limits,
    receipt: Option<cloister_governance::Receipt>,
    grant: MemoryGrant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Resp, ApiError> {
    let encoded = response
        .encode(&|o| binary.contains(&o.name))
        .map_err(|e| {
            tracing::error!("response does not encode: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
        })?;
    drop(response);
    if encoded.bytes.len() as u64 > limits.max_response_bytes {
        return Err(too_large(format!(
            "the response to this request is {} bytes; the limit is {}",
            encoded.bytes.len(),
            limits.max_response_bytes
        )));
    }
    let content_type = encoded.content_type();
    let body = Bytes::from_owner(HeldBody {
        bytes: encoded.bytes,
        _grant: grant,
        _permit: permit,
    });
    let mut resp = bytes_response(StatusCode::OK, content_type, body, encoded.json_len);
    if let Some(value) = receipt.and_then(|r| HeaderValue::from_str(&r.to_header()).ok()) {
        resp.headers_mut().insert(RECEIPT_HEADER, value);
    }
    Ok(resp)
}

/// How much larger decoded tensors can be than the request body that carried them: JSON `0,` (two bytes)
/// decodes to an eight-byte INT64 or FP64; binary data decodes one to one.
const MAX_DECODE_GROWTH: u64 = 4;

/// A response body that holds the request's memory grant and permit until hyper drops it.
struct HeldBody {
    bytes: Vec<u8>,
    _grant: MemoryGrant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Upper bound on the response body of a request, from the output sizes the plan knows: raw bytes for binary
/// outputs, the longest JSON text per element otherwise, plus a fixed allowance per tensor for its name,
/// shape and punctuation. Outputs whose size the plan cannot tell count as zero here and are checked after the
/// run.
fn response_estimate(
    specs: &[TensorSpec],
    footprint: &Footprint,
    selected: &[String],
    binary: &HashSet<String>,
) -> u64 {
    const PER_TENSOR: u64 = 512;
    let mut total: u64 = PER_TENSOR;
    for out in &footprint.outputs {
        let Some(spec) = specs.get(out.index) else {
            continue;
        };
        if !selected.contains(&spec.name) {
            continue;
        }
        let per_element = if binary.contains(&spec.name) {
            spec.datatype.element_size()
        } else {
            spec.datatype.max_json_element_len()
        } as u64;
        let elements = out.elements.unwrap_or(0);
        total = total
            .saturating_add(PER_TENSOR)
            .saturating_add(elements.saturating_mul(per_element));
    }
    total
}

/// Maps a request decoding error: a tensor over the element limit is 413, anything else 400.
fn decode_error(e: KserveError) -> ApiError {
    match &e {
        KserveError::Tensor {
            problem: TensorProblem::ShapeTooLarge { .. },
            ..
        } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// Maps an admission failure: busy is 503 (with `Retry-After`), never fitting is 413.
pub(super) fn pool_error(e: PoolError) -> ApiError {
    match e {
        PoolError::Busy(_) => busy(&e.to_string()),
        PoolError::NeverFits { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        _ => {
            tracing::error!("inference thread failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
        }
    }
}

/// A request tensor for the engine. The decoder has bounded its shape and checked its element count.
fn engine_tensor(t: InferTensor) -> Result<NamedTensor, ApiError> {
    let shape = t
        .shape
        .iter()
        .map(|d| usize::try_from(*d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "input `{}` has a dimension too large for this platform",
                truncate(&t.name, 64)
            ))
        })?;
    let data = match t.data {
        Some(data) => data,
        // InferRequest::decode guarantees data; defend anyway.
        None => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has no data",
                truncate(&t.name, 64)
            )))
        }
    };
    Ok(NamedTensor {
        name: t.name,
        datatype: data.datatype(),
        shape,
        data,
    })
}

fn wire_tensor(t: NamedTensor) -> InferTensor {
    let shape = t.shape.iter().map(|d| *d as u64).collect();
    InferTensor::new(t.name, shape, t.data)
}

/// Maps an engine error: problems with the request are 400 with the engine's precise message (names,
/// datatypes, shapes: never values); failures of the model are 500 with a generic message, logged without
/// tract's chain (which can print tensor contents).
fn inference_error(e: InferenceError) -> ApiError {
    use InferenceError as I;
    match &e {
        I::UnknownInput { .. }
        | I::DuplicateInput { .. }
        | I::MissingInput { .. }
        | I::InconsistentDatatype { .. }
        | I::DatatypeMismatch { .. }
        | I::RankMismatch { .. }
        | I::DimMismatch { .. }
        | I::SymbolMismatch { .. }
        | I::ShapeOverflow { .. }
        | I::ElementCount { .. }
        | I::BatchTooLarge { .. } => ApiError::bad_request(e.to_string()),
        I::SymbolVolume { .. } | I::OutputTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        I::Run { .. } => {
            tracing::info!("tract rejected a request at run time");
            ApiError::bad_request("the model cannot run on these inputs (tract rejected them)")
        }
        _ => {
            tracing::error!("inference failed: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
        }
    }
}
