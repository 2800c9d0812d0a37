//! Test doubles and helpers: a firmware double, an in-process server, a TLS + HTTP/1.1 client that
//! computes the exporter on its own side of the connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use cloister_attestation::evidence::{CertChainDer, Platform, TLS_EXPORTER_LABEL};
use cloister_attestation::snp::Product;
use cloister_enclave::config::Config;
use cloister_enclave::firmware::{Firmware, FirmwareError};
use cloister_enclave::runtime::Enclave;
use cloister_enclave::server;
use cloister_models::ModelDigest;
use cloister_sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Offset of REPORT_DATA in an SNP report (SNP ABI, ATTESTATION_REPORT 0x50..0x90).
pub const REPORT_DATA_OFFSET: usize = 0x50;

/// The simulated AMD-SP the tests' firmware double signs with: one per test binary (its RSA-4096 keys
/// take a few seconds to make).
pub fn test_platform() -> &'static SimPlatform {
    static P: OnceLock<SimPlatform> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("enclave-sim-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        SimPlatform::init(
            &dir.join("platform"),
            &SimConfig::new(Product::Genoa, now - 3600),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap()
    })
}

/// A firmware double: genuine simulated reports (signed by [`test_platform`], measurement zero) for the
/// REPORT_DATA asked, and a record of every request.
#[derive(Default)]
pub struct FakeFirmware {
    pub seen: Mutex<Vec<[u8; 64]>>,
}

impl Firmware for FakeFirmware {
    fn platform(&self) -> Platform {
        Platform::SnpSimulated
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
        self.seen.lock().unwrap().push(*report_data);
        let report = test_platform()
            .report(&ReportRequest {
                report_data: *report_data,
                ..ReportRequest::default()
            })
            .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
        let chain = test_platform()
            .certificate_chain(SimSigningKey::Vcek)
            .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
        Ok((report.to_vec(), chain))
    }
}

/// The bytes of `models/sample/<rel>`; `None` (with a loud message) when the sample is missing, a
/// failure when CI requires every test to run.
pub fn sample(rel: &str) -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/sample")
        .join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            let msg = format!("SKIPPED: sample model {} unavailable: {e}", path.display());
            if std::env::var_os("CLOISTER_REQUIRE_ALL_TESTS").is_some() {
                panic!("{msg} (CLOISTER_REQUIRE_ALL_TESTS is set)");
            }
            eprintln!("{msg}");
            None
        }
    }
}

/// A measured configuration (simulated firmware) for the given models.
pub fn config_text(
    models: &[(&str, ModelDigest)],
    broker: &str,
    pin: &[u8; 32],
    limits: &str,
) -> String {
    let mut text = format!(
        "firmware = \"simulated\"\nsim_dir = \"/nonexistent\"\n\n[key_broker]\naddress = \"{broker}\"\n\
         certificate_sha256 = \"{}\"\n",
        hex::encode(pin)
    );
    for (name, digest) in models {
        text.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\ndigest = \"{digest}\"\n"
        ));
    }
    if !limits.is_empty() {
        text.push_str(&format!("\n[limits]\n{limits}\n"));
    }
    text
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub enclave: Arc<Enclave>,
    pub config: Config,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the server of `config_text` with `firmware`; no model loaded.
pub async fn start_server(config_text: &str, firmware: Arc<dyn Firmware>) -> TestServer {
    let config = Config::from_bytes(config_text.as_bytes()).unwrap();
    let enclave = Arc::new(Enclave::new(&config, firmware).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server::tls_config(&config.clients, &config.client_pins).unwrap();
    let task = tokio::spawn(server::serve(listener, tls, Arc::clone(&enclave)));
    TestServer {
        addr,
        enclave,
        config,
        task,
    }
}

/// The client side of the tests: any server certificate (the enclave is authenticated by attestation), the
/// handshake signature checked, as the client's attested session does.
pub fn client_config() -> Arc<ClientConfig> {
    Arc::new(cloister_proto::session_attestation::client_tls_config(None).unwrap())
}

/// A TLS stream to `addr`, and its exporter computed on the client side.
pub async fn tls_connect(addr: SocketAddr) -> (TlsStream<TcpStream>, [u8; 32]) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(client_config())
        .connect(ServerName::try_from("enclave").unwrap(), tcp)
        .await
        .unwrap();
    let exporter = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .unwrap();
    (tls, exporter)
}

/// One keep-alive HTTP/1.1 connection over TLS.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    pub exporter: [u8; 32],
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (tls, exporter) = tls_connect(addr).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender, exporter }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "enclave");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, &[], vec![]).await
    }

    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json".into())],
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub async fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cond()
}
