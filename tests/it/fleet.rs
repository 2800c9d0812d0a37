//! A fleet on the simulated platform, as replicas of one Kubernetes Deployment: three enclaves with one
//! configuration (delivered as initdata) behind three hosts, one key broker; clients attest each one they
//! reach; killing one leaves the others serving.

use cloister_session::{AttestedSession, SessionConfig};
use tokio::time::{sleep, Duration, Instant};

use crate::e2e::{deploy, mlp, mlp_input, READY};

/// Attests `endpoint` until it says ready (or [`READY`] passes).
pub(crate) async fn ready_session(endpoint: &str, trust: &SessionConfig) -> AttestedSession {
    let deadline = Instant::now() + READY;
    loop {
        if let Ok(mut s) = AttestedSession::connect(endpoint, trust).await {
            if s.ready().await.unwrap_or(false) {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{endpoint} never became ready");
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_broker_one_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(&dir.path().join("run"), &mlp(), "mlp", |o| {
        o.initdata = true
    })
    .await;
    let second = d.start_another_host(2).await.unwrap();
    let third = d.start_another_host(3).await.unwrap();
    let trust = d.session_config().unwrap();

    let endpoints = [
        d.endpoint.clone(),
        second.endpoint.clone(),
        third.endpoint.clone(),
    ];
    let mut answers = Vec::new();
    let mut keys = Vec::new();
    for endpoint in &endpoints {
        let mut session = ready_session(endpoint, &trust).await;
        // Each replica is its own attested enclave (its own record key), with one configuration.
        keys.push(session.evidence().claims().receipt_key.clone().unwrap());
        answers.push(
            session
                .infer("mlp", &mlp_input(), false)
                .await
                .unwrap()
                .outputs,
        );
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "replicas disagree"
    );
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 3, "three distinct enclaves");

    // One key release per replica start, all granted by the one broker.
    let audit = std::fs::read_to_string(&d.audit_log).unwrap();
    let grants = audit.lines().filter(|l| l.contains("\"granted\"")).count();
    assert_eq!(grants, 3, "{audit}");

    // Kill the second replica's host outright: its enclave goes with it; the others keep serving.
    let killed = second.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap();
    sleep(Duration::from_millis(500)).await;
    assert!(
        AttestedSession::connect(&second.endpoint, &trust)
            .await
            .is_err(),
        "the killed replica still answers"
    );
    for endpoint in [&d.endpoint, &third.endpoint] {
        let mut session = AttestedSession::connect(endpoint, &trust).await.unwrap();
        session.infer("mlp", &mlp_input(), false).await.unwrap();
    }
    third.stop().await;
    d.stop().await;
}
