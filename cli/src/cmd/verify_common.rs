//! What `cloister verify` shares between bare SNP reports (`verify`) and Azure evidence (`verify_azure`):
//! the arguments, the inputs they load (policy, instant, CRLs, simulated root, collateral), and the one
//! JSON verdict with its exit code. Neither flow depends on the other: `verify` dispatches, both use this.

use std::path::PathBuf;
use std::process::ExitCode;

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::view::ReportView;
use cloister_attestation::snp::Product;
use cloister_attestation::{CertChain, Policy};
use cloister_collateral::files as chain_files;
use cloister_collateral::KeyTree;
use std::collections::BTreeMap;

use cloister_attestation::azure::hcl::VmConfiguration;
use serde::Serialize;

use super::collateral::{product_of, KdsArgs};
use super::{Failure, EXIT_USAGE};

/// Arguments of `cloister verify`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The 1184-byte attestation report (raw binary).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["azure_evidence", "hcl_report"],
        conflicts_with_all = ["azure_evidence", "hcl_report"]
    )]
    pub(crate) report: Option<PathBuf>,
    /// Azure confidential VM evidence in Trustee's az-snp-vtpm JSON (v0, v1 or v2): the paravisor's HCL
    /// report, the vTPM quote and the VCEK. The JSON object gains `azure` (docs/evidence.md, "Azure").
    #[arg(long, value_name = "FILE", conflicts_with = "hcl_report")]
    pub(crate) azure_evidence: Option<PathBuf>,
    /// Azure evidence in parts: the HCL report (vTPM NV index 0x01400001, raw) ...
    #[arg(long, value_name = "FILE", requires = "tpm_quote")]
    pub(crate) hcl_report: Option<PathBuf>,
    /// ... and the quote (JSON {signature, message, pcrs} in hex, as Trustee writes it).
    #[arg(long, value_name = "FILE", requires = "hcl_report")]
    pub(crate) tpm_quote: Option<PathBuf>,
    /// Azure: the VCEK as PEM (optionally followed by the ASK and the ARK), when the evidence has none.
    #[arg(long, value_name = "FILE")]
    pub(crate) vcek: Option<PathBuf>,
    /// Azure: the report data the quote must carry (its extraData; v2 evidence: also the HCL report's
    /// user-data), hex. Without it the quote's report data is shown, not checked.
    #[arg(long, value_name = "HEX")]
    pub(crate) report_data: Option<String>,
    /// Directory with the chain in the snpguest layout: ark.pem, ask.pem or asvk.pem, vcek.pem|vcek.der or
    /// vlek.pem|vlek.der. ARK and ASK/ASVK may be omitted (AMD's embedded ones are used); an ARK given must
    /// be AMD's, byte for byte.
    #[arg(long, value_name = "DIR")]
    pub(crate) certs: Option<PathBuf>,
    /// TOML policy. Without one, the baseline applies: genuine, no debug, no migration agent, no CXL, VMPL 0,
    /// no provisional firmware, REPORTED_TCB not above CURRENT_TCB (README, "Policy").
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Instant at which certificates must be valid, RFC 3339 (e.g. 2025-01-01T00:00:00Z). Default: now.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) at: Option<String>,
    /// An ARK-signed CRL (DER or PEM); the ASK/ASVK and leaf must not be revoked. Repeat for CRLs of other
    /// products or signing keys: each applies to the chains its ARK signs. Replaces the policy's CRLs.
    /// `auto`: the current CRL of the report's product and signing key, from the bundle, the cache or the
    /// KDS (a file named auto: ./auto).
    #[arg(long, value_name = "FILE|auto")]
    pub(crate) crl: Vec<PathBuf>,
    /// Fetch the certificates --certs does not give: the VCEK (by the report's CHIP_ID and REPORTED_TCB)
    /// and the ASK or ASVK chain, from the bundle, the cache or the KDS, verified before use. A VLEK is not
    /// fetched: it comes with its report.
    #[arg(long)]
    pub(crate) fetch: bool,
    /// The product, for fetching for a version 2 report (later ones name it in their CPUID fields).
    #[arg(long, value_name = "PRODUCT")]
    pub(crate) product: Option<String>,
    /// An offline bundle (`cloister fetch bundle`): certificates and CRLs looked up there first.
    #[arg(long, value_name = "FILE")]
    pub(crate) collateral: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) kds: KdsArgs,
    /// Trust this simulated ARK (from `cloister sim init`) in addition to AMD's roots. For development only.
    #[arg(long, value_name = "FILE")]
    pub(crate) sim_root: Option<PathBuf>,
    /// Print one JSON object on stdout, whatever the outcome.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize)]
pub(crate) struct JsonOutcome {
    pub(crate) verified: bool,
    pub(crate) reason: Option<String>,
    pub(crate) product: Option<&'static str>,
    pub(crate) signing_key: Option<&'static str>,
    pub(crate) simulated: bool,
    pub(crate) report: Option<ReportView>,
    /// Azure evidence only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) azure: Option<AzureJson>,
    /// What the verdict does not cover (e.g. a policy that pins no workload); also on stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) warnings: Vec<String>,
}

/// Prints the `--json` object for a command line that did not parse (exit code 2 follows).
pub(crate) fn print_usage_error_json(reason: &str) {
    let out = JsonOutcome {
        verified: false,
        reason: Some(format!("usage: {reason}")),
        product: None,
        signing_key: None,
        simulated: false,
        report: None,
        azure: None,
        warnings: Vec::new(),
    };
    if let Ok(s) = serde_json::to_string(&out) {
        println!("{s}");
    }
}

/// What a verification needs, loaded from the command line.
pub(crate) struct Inputs {
    pub(crate) raw_report: Vec<u8>,
    pub(crate) chain: CertChain,
    pub(crate) policy: Policy,
    pub(crate) at_unix: i64,
    pub(crate) crls: Vec<cloister_attestation::snp::crl::AmdCrl>,
    pub(crate) sim_root: Option<AmdCertificate>,
    /// Printed on stderr already; for the JSON object.
    pub(crate) warnings: Vec<String>,
}

/// `cloister verify` answers "is this genuine, and does the policy hold" for any policy, but a verdict under
/// a policy that does not pin the workload says nothing about which code ran: say so (issue 21, item 1).
fn workload_warnings(args: &Args, policy: &Policy) -> Vec<String> {
    let warning = match (&args.policy, policy.require_workload_pin()) {
        (_, Ok(false)) => return Vec::new(),
        (Some(p), Ok(true)) => format!(
            "{} sets allow_any_workload = true: the verdict does not say which code ran",
            p.display()
        ),
        (Some(p), Err(e)) => format!(
            "{}: {e} — the key broker, client sessions and the receipt and audit verifiers refuse this \
             policy; this verdict does not say which code ran",
            p.display()
        ),
        (None, _) => "no --policy: only genuineness and the baseline were checked; the verdict does not \
                      say which code ran"
            .to_owned(),
    };
    eprintln!("warning: {warning}");
    vec![warning]
}

/// The policy, instant, CRLs and simulated root of the command line, and `chain` completed from the
/// collateral sources when asked (`raw_report` is the SNP report whose VCEK is wanted).
pub(crate) fn load_with(
    args: &Args,
    raw_report: Vec<u8>,
    chain: CertChain,
) -> Result<Inputs, Failure> {
    let policy = match &args.policy {
        Some(p) => chain_files::read_policy(p)?,
        None => Policy::baseline(),
    };
    policy
        .refuse_release_log("cloister verify")
        .map_err(Failure::Usage)?;
    let at_unix = match &args.at {
        Some(s) => super::parse_rfc3339(s).map_err(Failure::Usage)?,
        None => super::now_unix(),
    };
    // --crl, else the CRLs the policy names.
    let crl_auto = args.crl.iter().any(|p| p.as_os_str() == "auto");
    let crl_paths: Vec<PathBuf> = if args.crl.is_empty() {
        policy.crl_paths().cloned().collect()
    } else {
        args.crl
            .iter()
            .filter(|p| p.as_os_str() != "auto")
            .cloned()
            .collect()
    };
    let mut crls = crl_paths
        .iter()
        .map(|p| chain_files::read_crl(p))
        .collect::<Result<Vec<_>, _>>()?;
    // The simulated root comes from the command line or from the policy; both are the relying party's own
    // choice, never the evidence's.
    let sim_root_path = args.sim_root.clone().or(policy.simulated_root.clone());
    let sim_root = sim_root_path
        .as_deref()
        .map(chain_files::read_certificate)
        .transpose()?;
    let mut chain = chain;
    if args.fetch || crl_auto || args.collateral.is_some() {
        let wanted = Wanted {
            crl: crl_auto,
            at_unix,
        };
        complete(
            args,
            &raw_report,
            &mut chain,
            &mut crls,
            wanted,
            sim_root.as_ref(),
        )?;
    }
    let warnings = workload_warnings(args, &policy);
    Ok(Inputs {
        raw_report,
        chain,
        warnings,
        policy,
        at_unix,
        crls,
        sim_root,
    })
}

/// What `--crl auto` asks for: a CRL current at the verification instant.
#[derive(Clone, Copy)]
struct Wanted {
    crl: bool,
    at_unix: i64,
}

/// Completes `chain` and `crls` from the collateral sources: the bundle and the cache always, the KDS with
/// `--fetch` or `--crl auto`. A report that does not parse is left to the verifier, which says why.
fn complete(
    args: &Args,
    raw_report: &[u8],
    chain: &mut CertChain,
    crls: &mut Vec<cloister_attestation::snp::crl::AmdCrl>,
    wanted: Wanted,
    sim_root: Option<&AmdCertificate>,
) -> Result<(), Failure> {
    let Wanted {
        crl: crl_auto,
        at_unix,
    } = wanted;
    let Ok(report) = AttestationReport::from_bytes(raw_report) else {
        return Ok(());
    };
    let Some(tree) = KeyTree::of(&report) else {
        return Ok(());
    };
    // The product: the leaf's productName when a leaf was given, else the report's CPUID or --product.
    let from_leaf = chain
        .leaf
        .as_ref()
        .and_then(|l| l.amd_extensions().ok())
        .and_then(|e| Product::from_name(&e.product_name));
    let product = match from_leaf {
        Some(p) => p,
        None => product_of(&report, args.product.as_deref())?,
    };
    let network = args.fetch || crl_auto;
    let client = args
        .kds
        .client(network, args.collateral.clone(), sim_root.cloned())?;
    let rt = super::runtime()?;
    rt.block_on(async {
        if chain.leaf.is_none() {
            if tree == KeyTree::Vlek {
                return Err(Failure::Usage(
                    "the report is signed by a VLEK, which the KDS serves only to the cloud provider: give \
                     the VLEK that came with the report (--certs DIR with vlek.der)"
                        .into(),
                ));
            }
            chain.leaf = Some(client.vcek(&report, product).await?);
        }
        if chain.intermediate.is_none() {
            let fetched = client.chain(tree, product).await?;
            chain.intermediate = Some(fetched.intermediate);
            chain.ark.get_or_insert(fetched.ark);
        }
        if crl_auto {
            let fetched = client.crl_at(tree, product, at_unix).await?;
            if let Some(why) = &fetched.refresh_failed {
                eprintln!(
                    "warning: the {} CRL of {product} is past its nextUpdate and could not be refreshed \
                     ({why}); the policy's crl_max_staleness decides",
                    tree.path_name()
                );
            }
            crls.push(fetched.crl);
        }
        Ok(())
    })
}

/// A failed verification (bare or Azure): the reason on stderr and in the JSON object; its exit code.
pub(crate) fn failed(out: &mut JsonOutcome, failure: &Failure) -> u8 {
    let word = match failure {
        Failure::Refused(_) => "rejected",
        Failure::Usage(_) => "error",
    };
    eprintln!("{word}: {}", failure.message());
    out.reason = Some(failure.message().to_owned());
    failure.code()
}

/// Ends `cloister verify`: with `--json`, the one JSON object on stdout whatever the outcome.
pub(crate) fn finish(out: &JsonOutcome, json: bool, code: u8) -> ExitCode {
    if json {
        match serde_json::to_string(out) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode JSON: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    ExitCode::from(code)
}

/// The `azure` object of `--json`.
#[derive(Serialize)]
pub(crate) struct AzureJson {
    /// The quote's extraData, hex.
    pub(crate) report_data: String,
    /// PCR index ("0" … "23") → SHA-256 bank value, hex.
    pub(crate) pcrs: BTreeMap<String, String>,
    /// The paravisor's VM configuration.
    pub(crate) vm_configuration: VmConfiguration,
    /// SHA-256 of HCLAkPub (modulus then exponent), hex.
    pub(crate) ak_public_sha256: String,
}
