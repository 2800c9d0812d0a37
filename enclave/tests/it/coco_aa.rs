//! The `coco-aa` backend against a stand-in for Confidential Containers' attestation agent: an HTTP server
//! that does what guest-components' api-server-rest + SNP attester do (URL-safe base64 runtime data,
//! zero-padded to 64 bytes into REPORT_DATA, VMPL 0, evidence as the `sev` crate's JSON), with reports from
//! the simulated AMD-SP. Also the agent misbehaving: another REPORT_DATA, an error status, garbage.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use cloister_attestation::snp::report::sev_json::to_sev_json;
use cloister_attestation::snp::report::AttestationReport;
use cloister_enclave::firmware::coco_aa::{CocoAa, CocoAaOptions};
use cloister_enclave::firmware::{Firmware, FirmwareError};
use cloister_sim::{ReportRequest, SimSigningKey};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::common::test_platform;

#[derive(Clone, Copy)]
enum Agent {
    Honest,
    /// Reports for REPORT_DATA other than the one asked (an agent that hashes the runtime data).
    Hashing,
    Failing,
    Garbage,
}

fn answer(agent: Agent, query: &str) -> Response<Full<Bytes>> {
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if param("encoding").as_deref() != Some("base64") {
        return reply(
            StatusCode::BAD_REQUEST,
            b"this test's agent wants encoding=base64".to_vec(),
        );
    }
    let Some(data) = param("runtime_data").and_then(|d| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(d)
            .ok()
    }) else {
        return reply(StatusCode::BAD_REQUEST, b"bad runtime_data".to_vec());
    };
    let mut report_data = [0u8; 64];
    match agent {
        Agent::Honest => {
            report_data[..data.len().min(64)].copy_from_slice(&data[..data.len().min(64)])
        }
        Agent::Hashing => report_data[..48]
            .copy_from_slice(ring::digest::digest(&ring::digest::SHA384, &data).as_ref()),
        Agent::Failing => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                b"get evidence failed".to_vec(),
            )
        }
        Agent::Garbage => return reply(StatusCode::OK, b"{\"attestation_report\": 1}".to_vec()),
    }
    let report = test_platform()
        .report(&ReportRequest {
            report_data,
            ..ReportRequest::default()
        })
        .unwrap();
    let chain = test_platform()
        .certificate_chain(SimSigningKey::Vcek)
        .unwrap();
    let json = to_sev_json(
        &report,
        &[
            ("VCEK", &chain.leaf),
            ("ASK", &chain.intermediate),
            ("ARK", &chain.ark),
        ],
    )
    .unwrap();
    reply(StatusCode::OK, json.into_bytes())
}

/// Serves the stand-in on a loopback port; returns `http://127.0.0.1:PORT`.
async fn agent(kind: Agent) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let ok = req.uri().path() == "/aa/evidence";
                        let query = req.uri().query().unwrap_or_default().to_owned();
                        async move {
                            Ok::<_, Infallible>(if ok {
                                answer(kind, &query)
                            } else {
                                Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            })
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    url
}

fn backend(url: String) -> Arc<CocoAa> {
    Arc::new(
        CocoAa::open(&CocoAaOptions {
            url,
            vcek_cache: None,
        })
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_come_through_the_agent_with_exactly_our_report_data() {
    let firmware = backend(agent(Agent::Honest).await);
    let report_data: [u8; 64] = std::array::from_fn(|i| i as u8 ^ 0xa5);
    // From an async task (as at startup) and from a blocking thread (as the attester calls it).
    let direct = firmware.attest(&report_data).unwrap();
    let f = Arc::clone(&firmware);
    let blocking = tokio::task::spawn_blocking(move || f.attest(&report_data))
        .await
        .unwrap()
        .unwrap();
    for (report, chain) in [direct, blocking] {
        let decoded = AttestationReport::from_bytes(&report).unwrap();
        assert_eq!(decoded.report_data, report_data);
        let expected = test_platform()
            .certificate_chain(SimSigningKey::Vcek)
            .unwrap();
        assert_eq!(chain.leaf, expected.leaf);
        // The rebuilt bytes carry the AMD-SP's signature: the report verifies against the simulated root.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let verified = cloister_attestation::snp::verify::verify(
            &report,
            &test_platform().cert_chain(SimSigningKey::Vcek).unwrap(),
            &cloister_attestation::policy::Policy::baseline(),
            &cloister_attestation::snp::verify::VerifyOptions {
                at_unix: now,
                crls: &[],
                simulated_root: Some(test_platform().root()),
            },
        );
        assert!(verified.is_ok(), "{:?}", verified.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_agent_gives_no_report() {
    let report_data = [9u8; 64];
    let err = backend(agent(Agent::Hashing).await)
        .attest(&report_data)
        .unwrap_err();
    assert!(matches!(err, FirmwareError::ReportDataMismatch), "{err}");
    let err = backend(agent(Agent::Failing).await)
        .attest(&report_data)
        .unwrap_err();
    assert!(
        err.to_string().contains("HTTP 500") && err.to_string().contains("get evidence failed"),
        "{err}"
    );
    let err = backend(agent(Agent::Garbage).await)
        .attest(&report_data)
        .unwrap_err();
    assert!(matches!(err, FirmwareError::BadReport(_)), "{err}");
    let err = backend("http://127.0.0.1:1".into())
        .attest(&report_data)
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    for bad in [
        "https://127.0.0.1:8006",
        "127.0.0.1:8006",
        "http://host",
        "http://u@h:1",
    ] {
        assert!(
            CocoAa::open(&CocoAaOptions {
                url: bad.into(),
                vcek_cache: None
            })
            .is_err(),
            "{bad}"
        );
    }
}
