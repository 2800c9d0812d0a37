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
//! Routes: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/{m}`, `GET /v2/models/{m}/ready`,
//! `POST /v2/models/{m}/infer`; anything else is 404 (nothing is forwarded that was not asked for).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::session::{AttestedSession, SessionError, SessionPolicy};

/// Largest request body forwarded.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Called with each newly attested session (to print what was verified).
pub type OnAttested = Box<dyn Fn(&AttestedSession) + Send + Sync>;

/// A pool of attested sessions to one enclave.
pub struct Proxy {
    endpoint: String,
    trust: SessionPolicy,
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
        trust: SessionPolicy,
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

    /// Forwards one request; `model` is the model an inference is for (checked against the evidence).
    async fn forward(
        &self,
        method: Method,
        path: &str,
        model: Option<&str>,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<crate::session::Reply, SessionError> {
        let _permit = Arc::clone(&self.sessions)
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
        let reply = upstream.session.forward(method, path, &headers, body).await;
        // A session whose connection failed is dropped; the next request attests a new one.
        if !matches!(reply, Err(SessionError::Http(_) | SessionError::Tls(_))) {
            self.put(upstream);
        }
        reply
    }
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// What a path asks for: the upstream path, and the model of an inference.
fn route(method: &Method, path: &str) -> Option<(String, Option<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let valid = crate::session::is_valid_model_name;
    match (method, segments.as_slice()) {
        (&Method::GET, ["v2", "health", "live" | "ready"]) => Some((path.to_owned(), None)),
        (&Method::GET, ["v2", "models", m] | ["v2", "models", m, "ready"]) if valid(m) => {
            Some((path.to_owned(), None))
        }
        (&Method::POST, ["v2", "models", m, "infer"]) if valid(m) => {
            Some((path.to_owned(), Some((*m).to_owned())))
        }
        _ => None,
    }
}

async fn handle(proxy: &Proxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some((upstream_path, model)) = route(&method, &path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not an endpoint this proxy forwards (health, model metadata and readiness, infer)",
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
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body: {e} (at most {MAX_BODY} bytes)"),
            )
        }
    };
    match proxy
        .forward(method, &upstream_path, model.as_deref(), headers, body)
        .await
    {
        Ok(reply) => {
            let mut r = Response::new(Full::new(reply.body));
            *r.status_mut() = reply.status;
            let h = r.headers_mut();
            let mut set = |name: &'static str, value: Option<String>| {
                if let Some(v) = value.and_then(|v| hyper::header::HeaderValue::from_str(&v).ok()) {
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
        Err(
            e @ (SessionError::Attestation(_)
            | SessionError::ModelNotAttested { .. }
            | SessionError::NoWorkloadPin(_)
            | SessionError::Collateral(_)),
        ) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the enclave does not satisfy this proxy's policy; nothing was forwarded: {e}"
            ),
        ),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("the attested enclave could not be reached: {e}"),
        ),
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(handle(&proxy, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
