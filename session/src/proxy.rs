//! The attesting proxy behind `cloister proxy`: plain HTTP/1.1 Open Inference Protocol v2 on a loopback
//! address, for clients that cannot attest (tritonclient, the KServe client, curl, perf_analyzer), forwarded
//! over a pool of attested sessions to the enclave.
//!
//! ```text
//! client ──HTTP/1.1 (loopback)──▶ proxy ──TLS 1.3, evidence verified in-session──▶ host relay ─▶ enclave
//! ```
//!
//! Every upstream connection is attested before anything is forwarded on it (`AttestedSession::connect`:
//! the policy must hold, the evidence must be bound to that TLS session); a model's digest is checked against
//! the evidence before its first inference on a session. When attestation fails, the proxy answers 503 with
//! the reason and forwards no byte. Answers come back unchanged: status, body, `Content-Type`,
//! `Inference-Header-Content-Length` and the receipt header.
//!
//! Before any of that, who is asking is checked (`admission`): loopback keeps other machines out but not the
//! web pages of a browser on this one, so a `Host` that does not name this proxy (DNS rebinding) gets 421, and
//! a browser request from another origin gets 403, with nothing forwarded and no session attested. Client
//! connections are capped (503 beyond the cap) and must send their headers within a timeout.
//!
//! Routes: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/{m}`, `GET /v2/models/{m}/ready`,
//! `POST /v2/models/{m}/infer`, and OpenAI's `GET /v1/models` and `POST /v1/chat/completions` (the model named
//! in the body is checked against the evidence first, like an inference's); anything else is 404 (nothing is
//! forwarded that was not asked for). A chat completion's answer is passed on as it arrives (server-sent
//! events stream through); its upstream session goes back to the pool when the answer has been read to its end,
//! and is closed if the client leaves before, which stops the generation in the enclave.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::{AttestedSession, SessionConfig, SessionError};

mod admission;

use admission::Gate;
pub use admission::{AdmissionError, AllowedHost, AllowedOrigin};

/// Largest request body forwarded.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Called with each newly attested session (to print what was verified).
pub type OnAttested = Box<dyn Fn(&AttestedSession) + Send + Sync>;

/// A pool of attested sessions to one enclave.
pub struct Proxy {
    endpoint: String,
    trust: Arc<SessionConfig>,
    idle: Mutex<Vec<Upstream>>,
    sessions: Arc<Semaphore>,
    on_attested: OnAttested,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

struct Upstream {
    session: AttestedSession,
    /// Models whose digest this session checked against its evidence.
    models: HashSet<String>,
}

impl Proxy {
    /// A proxy to `endpoint` under `trust`, with at most `max_sessions` upstream sessions at once (more
    /// concurrent requests wait for one).
    pub fn new(
        endpoint: &str,
        trust: Arc<SessionConfig>,
        max_sessions: usize,
        on_attested: OnAttested,
    ) -> Self {
        Proxy {
            endpoint: endpoint.to_owned(),
            trust,
            idle: Mutex::new(Vec::new()),
            sessions: Arc::new(Semaphore::new(max_sessions.max(1))),
            on_attested,
        }
    }

    /// Attests one session now (and keeps it): what `cloister proxy` does at start.
    pub async fn attest(&self) -> Result<(), SessionError> {
        let session = AttestedSession::connect(&self.endpoint, &self.trust).await?;
        (self.on_attested)(&session);
        self.put(Upstream {
            session,
            models: HashSet::new(),
        });
        Ok(())
    }

    fn take(&self) -> Option<Upstream> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put(&self, upstream: Upstream) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(upstream);
    }

    /// A place under `--max-sessions` and an attested upstream session (an idle one, or a new one attested now)
    /// on which `model`, if given, is checked against the evidence.
    async fn upstream(
        &self,
        model: Option<&str>,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Upstream), SessionError> {
        let permit = Arc::clone(&self.sessions)
            .acquire_owned()
            .await
            .map_err(|_| SessionError::Http("the proxy is shutting down".into()))?;
        let mut upstream = match self.take() {
            Some(u) => u,
            None => {
                let session = AttestedSession::connect(&self.endpoint, &self.trust).await?;
                (self.on_attested)(&session);
                Upstream {
                    session,
                    models: HashSet::new(),
                }
            }
        };
        if let Some(m) = model {
            if !upstream.models.contains(m) {
                upstream.session.attested_model(m).await?;
                upstream.models.insert(m.to_owned());
            }
        }
        Ok((permit, upstream))
    }

    /// Forwards one request; `model` is the model an inference is for (checked against the evidence).
    async fn forward(
        &self,
        method: Method,
        path: &str,
        model: Option<&str>,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<crate::Reply, SessionError> {
        let (_permit, mut upstream) = self.upstream(model).await?;
        let reply = upstream.session.forward(method, path, &headers, body).await;
        // A session whose connection failed is dropped; the next request attests a new one.
        if !matches!(reply, Err(SessionError::Http(_) | SessionError::Tls(_))) {
            self.put(upstream);
        }
        reply
    }
}

impl Proxy {
    /// Forwards a request whose answer is passed on as it arrives ([`Passing`]), after checking that `model`
    /// is attested on the session.
    async fn forward_streaming(
        self: Arc<Self>,
        method: Method,
        path: &str,
        model: &str,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<Response<ProxyBody>, SessionError> {
        let (permit, mut upstream) = self.upstream(Some(model)).await?;
        let response = upstream
            .session
            .send_streaming(method, path, &headers, body)
            .await?;
        let (parts, inner) = response.into_parts();
        let mut r = Response::new(
            Passing {
                inner,
                upstream: Some(upstream),
                proxy: Arc::clone(&self),
                _permit: permit,
            }
            .boxed(),
        );
        *r.status_mut() = parts.status;
        for name in [
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::RETRY_AFTER,
            header::HeaderName::from_static(cloister_governance::receipt::RECEIPT_HEADER),
        ] {
            if let Some(v) = parts.headers.get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        Ok(r)
    }
}

/// Every answer of the proxy: a buffer, or a chat completion's body as it arrives.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// What a path asks for: the upstream path, and the model of an inference.
fn route(method: &Method, path: &str) -> Option<(String, Option<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let valid = crate::is_valid_model_name;
    match (method, segments.as_slice()) {
        (&Method::GET, ["v2", "health", "live" | "ready"]) => Some((path.to_owned(), None)),
        (&Method::GET, ["v2", "models", m] | ["v2", "models", m, "ready"]) if valid(m) => {
            Some((path.to_owned(), None))
        }
        (&Method::POST, ["v2", "models", m, "infer"]) if valid(m) => {
            Some((path.to_owned(), Some((*m).to_owned())))
        }
        (&Method::GET, ["v1", "models"]) | (&Method::POST, ["v1", "chat", "completions"]) => {
            Some((path.to_owned(), None))
        }
        _ => None,
    }
}

/// Headers a browser page allowed by `--allow-origin` may read from an answer (`Access-Control-Expose-Headers`):
/// the binary tensor extension's and the receipt's.
const EXPOSED_HEADERS: &str = "inference-header-content-length, cloister-receipt";

/// How long a request body may take to arrive once its headers have (64 MiB on loopback takes well under a
/// second): a client that trickles a body would otherwise hold a connection, and a place under the cap, for ever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks who is asking (`admission`), then answers: a CORS preflight for an allowed origin, or the forwarded
/// request. Nothing reaches the enclave, and no session is attested, for a refused request.
async fn handle(proxy: &Arc<Proxy>, gate: &Gate, req: Request<Incoming>) -> Response<ProxyBody> {
    let origin = match gate.check(&req) {
        Ok(origin) => origin,
        Err(refusal) => {
            let mut r = error(refusal.status(), &refusal.message());
            // A refused client (a page probing under many names, say) keeps no connection, and no place
            // under the cap.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let mut r = match origin {
        Some(_) if req.method() == Method::OPTIONS => preflight(),
        _ => forward_request(proxy, req).await,
    };
    // CORS headers only for an allowed origin: without them a browser lets no other page read an answer.
    if let Some(origin) = origin {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    r
}

/// The answer to a CORS preflight from an allowed origin: the methods and request headers the routes use.
fn preflight() -> Response<ProxyBody> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, inference-header-content-length"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

async fn forward_request(proxy: &Arc<Proxy>, req: Request<Incoming>) -> Response<ProxyBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some((upstream_path, model)) = route(&method, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not an endpoint this proxy forwards (health, model metadata and readiness, infer, \
             /v1/models, /v1/chat/completions)",
        );
    };
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    for name in [
        "content-type",
        cloister_kserve::INFERENCE_HEADER_CONTENT_LENGTH,
    ] {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            headers.push((name, v.to_owned()));
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body: {e} (at most {MAX_BODY} bytes)"),
            )
        }
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request body took longer than {BODY_READ_TIMEOUT:?} to arrive"),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    if upstream_path == CHAT_PATH {
        // The model is named in the body: checked against the evidence before the conversation is sent.
        let model = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
        let Some(model) = model.filter(|m| crate::is_valid_model_name(m)) else {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object whose `model` is a model name",
            );
        };
        return match Arc::clone(proxy)
            .forward_streaming(method, &upstream_path, &model, headers, body)
            .await
        {
            Ok(r) => r,
            Err(e) => session_error(&e, true),
        };
    }
    match proxy
        .forward(method, &upstream_path, model.as_deref(), headers, body)
        .await
    {
        Ok(reply) => {
            let mut r = Response::new(full(reply.body));
            *r.status_mut() = reply.status;
            let h = r.headers_mut();
            let mut set = |name: &'static str, value: Option<String>| {
                if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    h.insert(name, v);
                }
            };
            set("content-type", reply.content_type);
            set(
                cloister_kserve::INFERENCE_HEADER_CONTENT_LENGTH,
                reply.json_len.map(|n| n.to_string()),
            );
            set(cloister_governance::receipt::RECEIPT_HEADER, reply.receipt);
            r
        }
        Err(e) => session_error(&e, upstream_path.starts_with("/v1/")),
    }
}

/// The path of OpenAI's chat completions.
const CHAT_PATH: &str = "/v1/chat/completions";

/// 503 when the enclave does not satisfy the policy (nothing was forwarded), 502 when it cannot be reached;
/// in OpenAI's error shape on its routes.
fn session_error(e: &SessionError, openai: bool) -> Response<ProxyBody> {
    let error = |status, message: &str| {
        if openai {
            openai_error(status, message)
        } else {
            error(status, message)
        }
    };
    match e {
        SessionError::Attestation(_)
        | SessionError::ModelNotAttested { .. }
        | SessionError::NoWorkloadPin(_)
        | SessionError::ReleaseLog(_)
        | SessionError::Collateral(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the enclave does not satisfy this proxy's policy; nothing was forwarded: {e}"
            ),
        ),
        _ => error(
            StatusCode::BAD_GATEWAY,
            &format!("the attested enclave could not be reached: {e}"),
        ),
    }
}

/// A refusal in OpenAI's error shape, for the `/v1` routes.
fn openai_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": null }
    });
    let mut r = error(status, "");
    *r.body_mut() = full(Bytes::from(body.to_string()));
    r
}

/// A chat completion's answer on its way to the client. Holds the upstream session, which goes back to the
/// pool once the answer has been read to its end; dropped before (the client left), it closes the connection
/// to the enclave, and the enclave stops generating.
struct Passing {
    inner: Incoming,
    upstream: Option<Upstream>,
    proxy: Arc<Proxy>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Body for Passing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                if let Some(upstream) = self.upstream.take() {
                    self.proxy.put(upstream);
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => self.upstream = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// Default of `--max-connections`. Local clients open a few connections each (tritonclient one, perf_analyzer
/// one per concurrent request), so 256 leaves room for many; and 256 sockets stay well below the usual soft
/// limit of 1024 open files, so the proxy never runs out of descriptors for its own upstream sessions.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default time a client connection may take to send a request's headers, idle keep-alive time included
/// (hyper's own default, which it applies only with a timer).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections over the cap being told so at once; past this many, further ones are closed without a word.
const MAX_PENDING_REFUSALS: usize = 32;

/// How long telling a connection over the cap may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer to a connection over the cap.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 77\r\nConnection: close\r\nRetry-After: 1\r\n\r\n\
{\"error\":\"too many connections to this proxy (--max-connections); try again\"}";

/// Who `serve` lets in (the `cloister proxy` flags of the same names).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Names answered to besides the listen address and loopback names (`--allow-host`).
    pub allow_hosts: Vec<AllowedHost>,
    /// Browser origins allowed (`--allow-origin`).
    pub allow_origins: Vec<AllowedOrigin>,
    /// Client connections open at once (`--max-connections`; 0 counts as 1); more get 503 and are closed.
    pub max_connections: usize,
    /// How long a client connection may take to send a request's headers, idle keep-alive time included.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `listener` until the task is dropped; fails only when the listener's own address cannot be read (the
/// Host check needs it).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    options: ServeOptions,
) -> std::io::Result<()> {
    let gate = Arc::new(Gate::new(
        listener.local_addr()?,
        &options.allow_hosts,
        &options.allow_origins,
    ));
    // Why a cap: every connection is a task, a socket and buffers (a request body up to MAX_BODY); without
    // one, any local process or web page could open connections until the proxy runs out of descriptors or
    // memory, and the data owner's own clients are refused.
    let places = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    let mut refused: u64 = 0;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            refused += 1;
            // Logged at powers of two: visible, but a flood cannot flood the log.
            if refused.is_power_of_two() {
                eprintln!(
                    "cloister proxy: {} connections open (--max-connections): refused one from {peer} with 503 \
                     ({refused} refused so far)",
                    options.max_connections.max(1)
                );
            }
            if let Ok(pending) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse(stream)).await;
                    drop(pending);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let gate = Arc::clone(&gate);
        let header_read_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                let gate = Arc::clone(&gate);
                async move { Ok::<_, Infallible>(handle(&proxy, &gate, req).await) }
            });
            // The header timeout (it needs a timer) also runs while a keep-alive connection waits for its next
            // request: an idle or slowloris connection gives its place back.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(place);
        });
    }
}

/// Tells a connection over the cap so (503, `Connection: close`), then reads what it sent for a moment before
/// closing: closing with unread bytes would reset the connection and could lose the answer.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(OVER_CAP).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_over_cap_answer_is_well_formed_and_browsers_may_read_what_clients_need() {
        let text = std::str::from_utf8(OVER_CAP).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
        for name in [
            cloister_kserve::INFERENCE_HEADER_CONTENT_LENGTH,
            cloister_governance::receipt::RECEIPT_HEADER,
        ] {
            assert!(EXPOSED_HEADERS.contains(name), "{name}");
        }
    }

    #[test]
    fn only_the_oip_endpoints_are_forwarded() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            route(&get, "/v2/health/ready"),
            Some(("/v2/health/ready".into(), None))
        );
        assert_eq!(
            route(&get, "/v2/models/magika/ready"),
            Some(("/v2/models/magika/ready".into(), None))
        );
        assert_eq!(
            route(&post, "/v2/models/magika/infer"),
            Some(("/v2/models/magika/infer".into(), Some("magika".into())))
        );
        for (method, path) in [
            (&get, "/v2/models/magika/infer"),
            (&post, "/v2/health/ready"),
            (&get, "/v2/repository/index"),
            (&post, "/v2/models/../infer"),
            (&post, "/v2/models/a%2fb/infer"),
            (&post, "/v2/models//infer"),
            (&get, "/v2/models/m/versions/1"),
            (&get, "/"),
        ] {
            assert_eq!(route(method, path), None, "{method} {path}");
        }
    }
}
