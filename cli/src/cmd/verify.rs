//! `cloister verify`: is this report genuine AMD SEV-SNP evidence, and does it satisfy the policy?
//!
//! Exit codes: 0 genuine and the policy holds; 1 rejected (reason on stderr); 2 usage or I/O error.
//! With `--json`, exactly one JSON object is printed on stdout whatever the outcome.

use std::process::ExitCode;

use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::view::ReportView;
use cloister_attestation::snp::Product;
use cloister_attestation::{verify, CertChain, VerifyOptions};
use cloister_collateral::files as chain_files;

use super::{Failure, EXIT_OK};

use super::verify_common::{failed, finish, load_with, Inputs, JsonOutcome};
pub(crate) use super::verify_common::{print_usage_error_json, Args};

fn load(args: &Args) -> Result<Inputs, Failure> {
    let report_path = args
        .report
        .as_deref()
        .ok_or_else(|| Failure::Usage("--report FILE is required".into()))?;
    let raw_report = chain_files::read(report_path)?;
    let chain = match &args.certs {
        Some(dir) => chain_files::read_cert_dir(dir)?,
        None => CertChain::default(),
    };
    load_with(args, raw_report, chain)
}

/// Runs `cloister verify`.
pub(crate) fn run(args: Args) -> ExitCode {
    if args.azure_evidence.is_some() || args.hcl_report.is_some() {
        return super::verify_azure::run(&args);
    }
    let mut out = JsonOutcome {
        verified: false,
        reason: None,
        product: None,
        signing_key: None,
        simulated: false,
        report: None,
        azure: None,
        warnings: Vec::new(),
    };
    let result = load(&args).and_then(|inputs| {
        // Fill in what can be shown even if verification fails: the decoded report is display-only.
        if let Ok(r) = AttestationReport::from_bytes(&inputs.raw_report) {
            out.report = Some(ReportView::from(&r));
            out.signing_key = Some(r.signing_key.name());
            out.product = r.cpuid_product().map(Product::name);
        }
        let options = VerifyOptions {
            at_unix: inputs.at_unix,
            crls: &inputs.crls,
            simulated_root: inputs.sim_root.as_ref(),
        };
        out.warnings.clone_from(&inputs.warnings);
        let verified = verify(&inputs.raw_report, &inputs.chain, &inputs.policy, &options)?;
        inputs
            .policy
            .check_workload_identity(false, &verified.report().host_data)
            .map_err(|v| Failure::from(cloister_attestation::Error::from(v)))?;
        Ok(verified)
    });
    let code = match result {
        Ok(verified) => {
            out.verified = true;
            out.product = Some(verified.product().name());
            out.signing_key = Some(verified.signing_key().name());
            out.simulated = verified.is_simulated();
            if !args.json {
                let r = verified.report();
                println!(
                    "verified: {} {} report v{} signed by {}{}",
                    verified.product(),
                    if verified.is_simulated() {
                        "SIMULATED"
                    } else {
                        "SEV-SNP"
                    },
                    r.version,
                    verified.signing_key().name().to_uppercase(),
                    if verified.is_simulated() {
                        " (simulated root, trusted on request)"
                    } else {
                        " chaining to AMD's root"
                    },
                );
                println!("  measurement:  {}", hex::encode(r.measurement));
                println!("  report_data:  {}", hex::encode(r.report_data));
                println!("  reported_tcb: {}", r.reported_tcb);
                println!("  vmpl: {}  debug: {}", r.vmpl, r.policy.debug());
                println!("  policy: holds");
            }
            EXIT_OK
        }
        Err(failure) => failed(&mut out, &failure),
    };
    finish(&out, args.json, code)
}
