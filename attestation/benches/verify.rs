//! Verification cost of a real report with its chain (DESIGN §8: ≤ 2 ms cold, ≤ 0.5 ms with the chain
//! cached). Plain `std::time::Instant`, best of several rounds, one thread.
//!
//! Run: `cargo bench -p cloister-attestation --bench verify`

#![allow(clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::verify::ChainCache;
use cloister_attestation::{verify, CertChain, Policy, VerifyOptions};

fn time_per_op(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(start.elapsed().as_secs_f64() / iters as f64);
    }
    best
}

fn main() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp/oak_genoa_vcek_v5");
    let report = std::fs::read(dir.join("report.bin")).expect("vector report");
    let ark = std::fs::read(dir.join("ark.pem")).expect("ark");
    let ask = std::fs::read(dir.join("ask.pem")).expect("ask");
    let vcek = std::fs::read(dir.join("vcek.der")).expect("vcek");
    let policy = Policy::baseline();
    let options = VerifyOptions {
        at_unix: 1_756_684_800, // 2025-09-01, inside the certificates' validity
        crls: &[],
        simulated_root: None,
    };

    // Cold: parse the three certificates from bytes, verify the chain (3 RSA-4096 PSS signatures) and the
    // report (ECDSA P-384), apply the policy.
    let cold = time_per_op(5, 50, || {
        let chain = CertChain {
            ark: Some(AmdCertificate::from_pem(&ark).expect("ark")),
            intermediate: Some(AmdCertificate::from_pem(&ask).expect("ask")),
            leaf: Some(AmdCertificate::from_der(&vcek).expect("vcek")),
        };
        black_box(verify(&report, &chain, &policy, &options).expect("verifies"));
    });

    // Cached: the chain was verified before (same DER bytes); only the report signature, the binding of
    // the leaf to the report, validity and the policy are checked.
    let chain = CertChain {
        ark: Some(AmdCertificate::from_pem(&ark).expect("ark")),
        intermediate: Some(AmdCertificate::from_pem(&ask).expect("ask")),
        leaf: Some(AmdCertificate::from_der(&vcek).expect("vcek")),
    };
    let cache = ChainCache::new(16);
    let cached = time_per_op(5, 200, || {
        black_box(
            cloister_attestation::snp::verify::verify_cached(
                &report, &chain, &policy, &options, &cache,
            )
            .expect("verifies"),
        );
    });

    println!("verify real Genoa report + chain, cold (parse + 3x RSA-PSS + ECDSA P-384): {:8.1} us  (target <= 2000 us)", cold * 1e6);
    println!("verify real Genoa report, chain cached (ECDSA P-384 + checks):           {:8.1} us  (target <=  500 us)", cached * 1e6);
}
