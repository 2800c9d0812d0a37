//! The host's metrics (`--metrics ADDR`, Prometheus text exposition at `GET /metrics`): counts only — the
//! host sees ciphertext and sealed blobs, and these count them.
//!
//! ```text
//! cloister_host_relay_connections_total{outcome}   accepted | over_limit | slow_handshake | not_tls
//! cloister_host_relay_bytes_total{direction}       to_enclave | to_client
//! cloister_host_enclave_restarts_total             enclave launches after the first
//! cloister_host_enclave_up                         1 while an enclave is up
//! cloister_host_blob_requests_total{status}        sealed blobs served, by HTTP status
//! cloister_host_collateral_requests_total{status}  /collateral answers, by HTTP status
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex, PoisonError};

use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

/// The host's metrics; one set per process ([`metrics`]).
pub struct HostMetrics {
    registry: Mutex<Registry>,
    connections: Family<Outcome, Counter>,
    bytes: Family<Direction, Counter>,
    restarts: Counter,
    up: Gauge,
    blobs: Family<Status, Counter>,
    collateral: Family<Status, Counter>,
}

impl std::fmt::Debug for HostMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMetrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<HostMetrics> = LazyLock::new(|| {
    let connections = Family::<Outcome, Counter>::default();
    let bytes = Family::<Direction, Counter>::default();
    let restarts = Counter::default();
    let up = Gauge::default();
    let blobs = Family::<Status, Counter>::default();
    let collateral = Family::<Status, Counter>::default();
    let mut r = Registry::with_prefix("cloister_host");
    r.register(
        "relay_connections",
        "Client connections, by what became of them",
        connections.clone(),
    );
    r.register("relay_bytes", "Bytes relayed, by direction", bytes.clone());
    r.register(
        "enclave_restarts",
        "Enclave launches after the first",
        restarts.clone(),
    );
    r.register("enclave_up", "1 while an enclave is up", up.clone());
    r.register(
        "blob_requests",
        "Sealed-blob requests answered, by HTTP status",
        blobs.clone(),
    );
    r.register(
        "collateral_requests",
        "Collateral (KDS mirror) requests answered, by HTTP status",
        collateral.clone(),
    );
    HostMetrics {
        registry: Mutex::new(r),
        connections,
        bytes,
        restarts,
        up,
        blobs,
        collateral,
    }
});

/// The process's metrics.
pub fn metrics() -> &'static HostMetrics {
    &METRICS
}

impl HostMetrics {
    /// A client connection's outcome.
    pub fn connection(&self, outcome: &str) {
        self.connections
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Bytes relayed.
    pub fn relayed(&self, to_enclave: u64, to_client: u64) {
        for (d, n) in [("to_enclave", to_enclave), ("to_client", to_client)] {
            self.bytes
                .get_or_create(&Direction {
                    direction: d.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// An enclave (re)started; `first` for the first launch.
    pub fn enclave_started(&self, first: bool) {
        if !first {
            self.restarts.inc();
        }
        self.up.set(1);
    }

    /// The enclave stopped.
    pub fn enclave_stopped(&self) {
        self.up.set(0);
    }

    /// A blob request answered.
    pub fn blob(&self, status: u16) {
        self.blobs
            .get_or_create(&Status {
                status: status.to_string(),
            })
            .inc();
    }

    /// A collateral request answered.
    pub fn collateral(&self, status: u16) {
        self.collateral
            .get_or_create(&Status {
                status: status.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = encode(&mut out, &r);
        to_prometheus_text(&out)
    }
}

/// prometheus-client writes OpenMetrics text, where a counter's `# HELP`/`# TYPE` name lacks the `_total` its
/// samples carry and the exposition ends with `# EOF`. Prometheus' text format 0.0.4 (what `promtool check
/// metrics` and most scrapers read) names the family as its samples: this renames the counters' metadata
/// lines and drops the `# EOF`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Serves `GET /metrics` (and nothing else) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let (status, body) = if req.uri().path() == "/metrics" {
                        (StatusCode::OK, metrics().render())
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            "not found: GET /metrics\n".to_owned(),
                        )
                    };
                    let mut resp = Response::new(crate::body::BlobBody::bytes(body));
                    *resp.status_mut() = status;
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
