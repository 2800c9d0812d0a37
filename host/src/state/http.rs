//! The HTTP side of the state store: a request under [`PREFIX`](super::PREFIX) becomes a store
//! operation and its answer.

use std::num::NonZeroU64;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::{
    route, Label, StateError, StateRoute, StateStore, BODY_TIMEOUT, MAX_STATE_BYTES, NO_STORE,
    VERSION_HEADER,
};
use crate::body::BlobBody;

/// Answers one request under [`PREFIX`](super::PREFIX); `store` is `None` without `--state-dir`.
///
/// The method, path and body come from the untrusted side of the loopback port; nothing is buffered
/// beyond [`MAX_STATE_BYTES`], and the response says little (details go to the host's log).
pub async fn respond<B>(store: Option<Arc<StateStore>>, req: Request<B>) -> Response<BlobBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(store) = store else {
        return text(StatusCode::NOT_FOUND, NO_STORE);
    };
    match route(req.method(), req.uri().path()) {
        StateRoute::Malformed => text(
            StatusCode::BAD_REQUEST,
            "malformed state path: expected /state/{label}/{version|latest}, label 1-64 of [a-z0-9-] \
             not starting with -, version 1..=18446744073709551615 in decimal without leading zeros\n",
        ),
        StateRoute::MethodNotAllowed { allow } => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            resp
        }
        StateRoute::Put { label, version } => {
            let bytes = match read_body(req).await {
                Ok(bytes) => bytes,
                Err(resp) => return resp,
            };
            // Label, version and size only: the bytes are ciphertext, but logs are no place for them.
            let size = bytes.len();
            let (l, v) = (label.clone(), version);
            match blocking(move || store.put(&l, v, &bytes)).await {
                Ok(outcome) => {
                    tracing::debug!(%label, version, size, ?outcome, "state store: PUT");
                    let mut resp = Response::new(BlobBody::empty());
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    resp
                }
                Err(e) => failed(&label, &e),
            }
        }
        StateRoute::Get { label, version } => {
            let l = label.clone();
            match blocking(move || store.get(&l, version)).await {
                Ok(Some(bytes)) => octets(bytes, None),
                Ok(None) => text(StatusCode::NOT_FOUND, "this version is not stored\n"),
                Err(e) => failed(&label, &e),
            }
        }
        StateRoute::Latest { label } => {
            let l = label.clone();
            match blocking(move || store.latest(&l)).await {
                Ok(Some((version, bytes))) => octets(bytes, Some(version)),
                Ok(None) => text(StatusCode::NOT_FOUND, "no state is stored under this label\n"),
                Err(e) => failed(&label, &e),
            }
        }
    }
}

/// The request body, at most [`MAX_STATE_BYTES`]: a larger `Content-Length` is refused before any of
/// the body is read, and [`Limited`] stops a chunked (or lying) body at the cap.
async fn read_body<B>(req: Request<B>) -> Result<Bytes, Response<BlobBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(value) = req.headers().get(CONTENT_LENGTH) {
        match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            None => return Err(text(StatusCode::BAD_REQUEST, "malformed Content-Length\n")),
            Some(len) if len > MAX_STATE_BYTES as u64 => return Err(too_large()),
            Some(_) => {}
        }
    }
    let body = Limited::new(req.into_body(), MAX_STATE_BYTES).collect();
    match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the body took too long\n",
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(text(
            StatusCode::BAD_REQUEST,
            "the body could not be read\n",
        )),
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            if bytes.is_empty() {
                return Err(text(StatusCode::BAD_REQUEST, "empty body\n"));
            }
            Ok(bytes)
        }
    }
}

/// Runs a store operation off the async workers (it does blocking file I/O and fsyncs).
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(op).await {
        Ok(result) => result.map_err(Failure::Store),
        Err(e) => Err(Failure::Task(e)),
    }
}

/// Why a store operation produced no answer.
#[derive(Debug)]
enum Failure {
    Store(StateError),
    Task(tokio::task::JoinError),
}

/// The response to a failed operation: the refusals the contract names, else `500` (details logged).
fn failed(label: &Label, failure: &Failure) -> Response<BlobBody> {
    match failure {
        Failure::Store(e @ (StateError::Conflict { .. } | StateError::Superseded { .. })) => {
            tracing::warn!(%label, "state store: {e}");
            text(
                StatusCode::CONFLICT,
                "this version is stored with different bytes, or is older than every version kept\n",
            )
        }
        Failure::Store(StateError::Empty) => text(StatusCode::BAD_REQUEST, "empty body\n"),
        Failure::Store(StateError::TooLarge { .. }) => too_large(),
        Failure::Store(e) => {
            let chain = error_chain(e);
            tracing::error!(%label, error = %chain, "state store: failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the state store failed\n",
            )
        }
        Failure::Task(e) => {
            tracing::error!(%label, error = %e, "state store: the operation panicked or was cancelled");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the state store failed\n",
            )
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn too_large() -> Response<BlobBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the sealed state is over the 4 MiB limit\n",
    )
}

/// `200` with the bytes, and the version header for `latest`.
fn octets(bytes: Vec<u8>, version: Option<NonZeroU64>) -> Response<BlobBody> {
    let len = bytes.len();
    let mut resp = Response::new(BlobBody::bytes(bytes));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(version) = version {
        headers.insert(
            HeaderName::from_static(VERSION_HEADER),
            HeaderValue::from(version.get()),
        );
    }
    resp
}

fn text(status: StatusCode, msg: &'static str) -> Response<BlobBody> {
    let mut resp = Response::new(BlobBody::bytes(Bytes::from_static(msg.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
