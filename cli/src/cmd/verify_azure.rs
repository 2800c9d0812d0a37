//! `cloister verify --azure-evidence FILE` (or `--hcl-report FILE --tpm-quote FILE`): Azure confidential VM
//! evidence — the paravisor's HCL report, its SNP report and VCEK chain, the vTPM quote — verified as
//! `cloister_attestation::azure::verify_azure` does, with the same exit codes and JSON as bare SNP plus an
//! `azure` object.

use std::process::ExitCode;

use cloister_attestation::azure::hcl::HclReport;
use cloister_attestation::azure::{verify_azure, AzureEvidence};
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::view::ReportView;
use cloister_attestation::{CertChain, VerifyOptions};
use cloister_collateral::files as chain_files;

use super::verify_common::{failed, finish, load_with, Args, AzureJson, JsonOutcome};
use super::{Failure, EXIT_OK};

fn read_evidence(args: &Args) -> Result<AzureEvidence, Failure> {
    let refused = |e: cloister_attestation::azure::AzureError| Failure::Refused(e.to_string());
    match (&args.azure_evidence, &args.hcl_report, &args.tpm_quote) {
        (Some(file), _, _) => AzureEvidence::from_json(&chain_files::read(file)?).map_err(refused),
        (None, Some(hcl), Some(quote)) => {
            AzureEvidence::from_parts(chain_files::read(hcl)?, &chain_files::read(quote)?, None)
                .map_err(refused)
        }
        _ => Err(Failure::Usage(
            "--azure-evidence FILE, or --hcl-report FILE with --tpm-quote FILE".into(),
        )),
    }
}

/// The chain: `--certs DIR`, else `--vcek FILE` (VCEK[, ASK[, ARK]] as PEM), else the evidence's VCEK.
fn chain(args: &Args, evidence: &AzureEvidence) -> Result<CertChain, Failure> {
    if let Some(dir) = &args.certs {
        return Ok(chain_files::read_cert_dir(dir)?);
    }
    if let Some(file) = &args.vcek {
        let certs = AmdCertificate::all_from_pem(&chain_files::read(file)?)
            .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
        if certs.is_empty() || certs.len() > 3 {
            return Err(Failure::Usage(format!(
                "{}: expected the VCEK, optionally followed by the ASK and the ARK (PEM)",
                file.display()
            )));
        }
        let mut it = certs.into_iter();
        return Ok(CertChain {
            leaf: it.next(),
            intermediate: it.next(),
            ark: it.next(),
        });
    }
    let leaf = evidence
        .vcek
        .as_deref()
        .map(AmdCertificate::from_der)
        .transpose()
        .map_err(|e| Failure::Refused(format!("evidence: the VCEK: {e}")))?;
    Ok(CertChain {
        leaf,
        ..CertChain::default()
    })
}

fn report_data(args: &Args) -> Result<Option<Vec<u8>>, Failure> {
    args.report_data
        .as_deref()
        .map(|h| {
            hex::decode(h.trim_start_matches("0x"))
                .ok()
                .filter(|d| !d.is_empty() && d.len() <= 64)
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--report-data {h:?}: expected 1 to 64 bytes of hex"
                    ))
                })
        })
        .transpose()
}

/// Runs `cloister verify` on Azure evidence.
pub(crate) fn run(args: &Args) -> ExitCode {
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
    let result = (|| {
        let evidence = read_evidence(args)?;
        let expected = report_data(args)?;
        let snp = HclReport::parse(&evidence.hcl_report)
            .map(|h| h.snp_report.to_vec())
            .map_err(|e| Failure::Refused(e.to_string()))?;
        if let Ok(r) = AttestationReport::from_bytes(&snp) {
            out.report = Some(ReportView::from(&r));
            out.signing_key = Some(r.signing_key.name());
            out.product = r.cpuid_product().map(|p| p.name());
        }
        let inputs = load_with(args, snp, chain(args, &evidence)?)?;
        let options = VerifyOptions {
            at_unix: inputs.at_unix,
            crls: &inputs.crls,
            simulated_root: inputs.sim_root.as_ref(),
        };
        out.warnings.clone_from(&inputs.warnings);
        let verified = verify_azure(
            &evidence,
            &inputs.chain,
            &inputs.policy,
            &options,
            expected.as_deref(),
        )?;
        inputs
            .policy
            .check_workload_identity(true, &verified.report().report().host_data)
            .map_err(|v| Failure::from(cloister_attestation::Error::from(v)))?;
        Ok(verified)
    })();
    let code = match result {
        Ok(verified) => {
            let report = verified.report();
            let facts = verified.facts();
            out.verified = true;
            out.product = Some(report.product().name());
            out.signing_key = Some(report.signing_key().name());
            out.simulated = report.is_simulated();
            out.azure = Some(AzureJson {
                report_data: hex::encode(&facts.report_data),
                pcrs: facts
                    .pcrs
                    .iter()
                    .map(|(i, v)| (i.to_string(), hex::encode(v)))
                    .collect(),
                vm_configuration: facts.vm_configuration.clone(),
                ak_public_sha256: hex::encode(facts.ak_public_sha256),
            });
            if !args.json {
                let r = report.report();
                println!(
                    "verified: Azure confidential VM ({} {}), HCL report and vTPM quote",
                    report.product(),
                    if report.is_simulated() {
                        "SIMULATED"
                    } else {
                        "SEV-SNP"
                    }
                );
                println!("  paravisor measurement: {}", hex::encode(r.measurement));
                println!("  reported_tcb: {}", r.reported_tcb);
                println!(
                    "  quote report data: {}{}",
                    hex::encode(&facts.report_data),
                    if args.report_data.is_some() {
                        " (as expected)"
                    } else {
                        " (not checked: no --report-data)"
                    }
                );
                for (i, v) in &facts.pcrs {
                    println!("  pcr{i:02}: {}", hex::encode(v));
                }
                let vm = &facts.vm_configuration;
                println!(
                    "  secure boot: {}  tpm: {}  console: {}",
                    vm.secure_boot, vm.tpm_enabled, vm.console_enabled
                );
                println!("  policy: holds");
            }
            EXIT_OK
        }
        Err(failure) => failed(&mut out, &failure),
    };
    finish(&out, args.json, code)
}
