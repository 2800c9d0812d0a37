//! The enclave's metrics: counts and timings only (never inputs, outputs, digests of them, or client
//! identities), in Prometheus text exposition at `GET /metrics` on the enclave's endpoint.
//!
//! ```text
//! cloister_enclave_requests_total{model,status}          inference requests answered, by HTTP status
//! cloister_enclave_request_duration_seconds{model}        from arrival to answer (histogram)
//! cloister_enclave_budget_rejections_total                 requests refused by a budget (429)
//! cloister_enclave_attestations_total                      evidence served
//! cloister_enclave_plan_cache_total{model,result}          per-shape plans: hit or miss
//! cloister_enclave_models_ready                            models loaded and serving
//! ```

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelStatus {
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabel {
    model: String,
    result: String,
}

/// The enclave's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<ModelStatus, Counter>,
    durations: Family<ModelLabel, Histogram>,
    budget_rejections: Counter,
    attestations: Counter,
    plans: Family<PlanLabel, Counter>,
    ready: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<ModelStatus, Counter>::default();
        let durations = Family::<ModelLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let budget_rejections = Counter::default();
        let attestations = Counter::default();
        let plans = Family::<PlanLabel, Counter>::default();
        let ready = Gauge::default();
        let mut registry = Registry::with_prefix("cloister_enclave");
        registry.register(
            "requests",
            "Inference requests answered, by model and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from an inference request's arrival to its answer",
            durations.clone(),
        );
        registry.register(
            "budget_rejections",
            "Inference requests refused by a client or global budget",
            budget_rejections.clone(),
        );
        registry.register(
            "attestations",
            "Evidence served to clients",
            attestations.clone(),
        );
        registry.register(
            "plan_cache",
            "Per-shape plans taken from the cache (hit) or made for a request (miss)",
            plans.clone(),
        );
        registry.register("models_ready", "Models loaded and serving", ready.clone());
        Metrics {
            registry: Mutex::new(registry),
            requests,
            durations,
            budget_rejections,
            attestations,
            plans,
            ready,
        }
    }
}

impl Metrics {
    /// One inference request answered.
    pub fn request(&self, model: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&ModelStatus {
                model: model.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .observe(took.as_secs_f64());
        if status == 429 {
            self.budget_rejections.inc();
        }
    }

    /// Evidence served.
    pub fn attestation(&self) {
        self.attestations.inc();
    }

    /// A per-shape plan lookup.
    pub fn plan(&self, model: &str, hit: bool) {
        self.plans
            .get_or_create(&PlanLabel {
                model: model.to_owned(),
                result: if hit { "hit" } else { "miss" }.to_owned(),
            })
            .inc();
    }

    /// Models ready.
    pub fn set_ready(&self, n: usize) {
        self.ready.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = encode(&mut out, &registry);
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
