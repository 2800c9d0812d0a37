//! `cloister fetch`: AMD collateral from the KDS (or a mirror) into files in snpguest's layout, the shared
//! cache, or one offline bundle.
//!
//! ```text
//! cloister fetch vcek   --report FILE --out DIR            DIR/vcek.der
//! cloister fetch ca     --product P [--vlek] --out DIR     DIR/ark.pem, DIR/ask.pem (or asvk.pem)
//! cloister fetch crl    --product P [--vlek] --out FILE    FILE (DER)
//! cloister fetch bundle --report FILE... --out FILE        one JSON file for `--collateral FILE`
//! ```
//!
//! Everything is verified against AMD's embedded roots before it is written or cached (the network is
//! untrusted). Exit codes: 0 written; 1 what the KDS served did not verify; 2 usage, I/O or network errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::Product;
use cloister_collateral::{Bundle, Collateral, Item, KeyTree, VcekId};

use super::collateral::{product_of, KdsArgs};
use super::{exit, runtime, Failure};

/// Arguments of `cloister fetch`.
#[derive(clap::Args)]
#[command(
    about = "Fetch AMD collateral (VCEKs, CA chains, CRLs) from AMD's KDS into files, the cache, or an offline bundle",
    long_about = "Fetch AMD collateral (VCEKs, CA chains, CRLs) from AMD's Key Distribution Service (or a mirror) into files in snpguest's layout, the shared cache, or one offline bundle.\n\nEverything is verified against AMD's embedded roots before it is written or cached. AMD rate-limits the KDS (about one VCEK per 10 s per address): HTTP 429 and 503 are retried after Retry-After, within a budget, and the cache answers repeated requests.\n\nExit codes: 0 written; 1 what the KDS served did not verify; 2 usage, I/O or network errors."
)]
pub(crate) struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The VCEK that signed a report: DIR/vcek.der.
    Vcek {
        /// The attestation report (1184 bytes, raw).
        #[arg(long, value_name = "FILE")]
        report: PathBuf,
        /// Directory to write vcek.der into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The product, for version 2 reports (later ones name it in their CPUID fields).
        #[arg(long, value_name = "PRODUCT")]
        product: Option<String>,
        #[command(flatten)]
        kds: KdsArgs,
    },
    /// The CA chain of a product: DIR/ark.pem and DIR/ask.pem (with --vlek: DIR/asvk.pem).
    Ca {
        /// Milan, Genoa or Turin.
        #[arg(long, value_name = "PRODUCT")]
        product: String,
        /// The VLEK chain (ASVK) instead of the VCEK chain (ASK).
        #[arg(long)]
        vlek: bool,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        kds: KdsArgs,
    },
    /// The current CRL of a product (DER), signed by its ARK.
    Crl {
        /// Milan, Genoa or Turin.
        #[arg(long, value_name = "PRODUCT")]
        product: String,
        /// The VLEK CRL instead of the VCEK CRL.
        #[arg(long)]
        vlek: bool,
        /// File to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        kds: KdsArgs,
    },
    /// Everything some reports need (chains, VCEKs, current CRLs) in one file, for `--collateral FILE`.
    Bundle {
        /// Attestation reports (raw); repeat the flag or list several.
        #[arg(long, value_name = "FILE", required = true, num_args = 1..)]
        report: Vec<PathBuf>,
        /// The bundle file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The product of version 2 reports.
        #[arg(long, value_name = "PRODUCT")]
        product: Option<String>,
        /// Leave the CRLs out.
        #[arg(long)]
        no_crl: bool,
        #[command(flatten)]
        kds: KdsArgs,
    },
}

/// Runs `cloister fetch`.
pub(crate) fn run(args: Args) -> ExitCode {
    exit(fetch(args), "refused")
}

fn fetch(args: Args) -> Result<(), Failure> {
    let rt = runtime()?;
    match args.what {
        What::Vcek {
            report,
            out,
            product,
            kds,
        } => {
            let report = read_report(&report)?;
            let product = product_of(&report, product.as_deref())?;
            let client = kds.client(true, None, None)?;
            let vcek = rt.block_on(client.vcek(&report, product))?;
            let path = out.join("vcek.der");
            write(&path, vcek.der())?;
            println!(
                "wrote {} (VCEK of {product} chip {}, TCB {})",
                path.display(),
                VcekId::of(&report, product)?.hwid(),
                report.reported_tcb
            );
        }
        What::Ca {
            product,
            vlek,
            out,
            kds,
        } => {
            let product = parse_product(&product)?;
            let tree = tree(vlek);
            let client = kds.client(true, None, None)?;
            let chain = rt.block_on(client.chain(tree, product))?;
            let intermediate = match tree {
                KeyTree::Vcek => "ask.pem",
                KeyTree::Vlek => "asvk.pem",
            };
            for (name, cert) in [("ark.pem", &chain.ark), (intermediate, &chain.intermediate)] {
                let path = out.join(name);
                write(&path, pem(cert)?.as_bytes())?;
                println!("wrote {} ({})", path.display(), cert.subject_common_name());
            }
        }
        What::Crl {
            product,
            vlek,
            out,
            kds,
        } => {
            let product = parse_product(&product)?;
            let client = kds.client(true, None, None)?;
            let fetched = rt.block_on(client.crl(tree(vlek), product))?;
            if let Some(why) = &fetched.refresh_failed {
                eprintln!(
                    "WARNING: this CRL is past its nextUpdate and could not be refreshed ({why}); \
                     verifiers judge it by their policy's crl_max_staleness"
                );
            }
            write(&out, fetched.crl.der())?;
            println!(
                "wrote {} (CRL of {}, thisUpdate {}, {} revoked)",
                out.display(),
                fetched.crl.issuer_common_name(),
                fetched.crl.this_update_unix(),
                fetched.crl.revoked_serials().len()
            );
        }
        What::Bundle {
            report,
            out,
            product,
            no_crl,
            kds,
        } => {
            let client = kds.client(true, None, None)?;
            let mut bundle = Bundle::default();
            for file in &report {
                let r = read_report(file)?;
                let product = product_of(&r, product.as_deref())?;
                rt.block_on(add_to_bundle(&client, &mut bundle, &r, product, !no_crl))
                    .map_err(|f| match f {
                        Failure::Usage(m) => Failure::Usage(format!("{}: {m}", file.display())),
                        Failure::Refused(m) => Failure::Refused(format!("{}: {m}", file.display())),
                    })?;
            }
            bundle.write(&out)?;
            println!(
                "wrote {} ({} entries):",
                out.display(),
                bundle.paths().count()
            );
            for path in bundle.paths() {
                println!("  {path}");
            }
        }
    }
    Ok(())
}

/// Adds what verifying `report` needs: its chain, its VCEK (a VLEK travels with its report), its CRL.
async fn add_to_bundle(
    client: &Collateral,
    bundle: &mut Bundle,
    report: &AttestationReport,
    product: Product,
    crl: bool,
) -> Result<(), Failure> {
    let tree = KeyTree::of(report)
        .ok_or_else(|| Failure::Usage("the report is not signed (signing key: none)".into()))?;
    let chain = client.chain(tree, product).await?;
    let mut pem_chain = pem(&chain.intermediate)?;
    pem_chain.push_str(&pem(&chain.ark)?);
    bundle.insert(&Item::Chain(tree, product), pem_chain.into_bytes());
    if tree == KeyTree::Vcek {
        let vcek = client.vcek(report, product).await?;
        bundle.insert(
            &Item::Vcek(VcekId::of(report, product)?),
            vcek.der().to_vec(),
        );
    }
    if crl {
        let fetched = client.crl(tree, product).await?;
        if let Some(why) = &fetched.refresh_failed {
            eprintln!(
                "WARNING: the {} CRL of {product} is past its nextUpdate and could not be refreshed: {why}",
                tree.path_name()
            );
        }
        bundle.insert(&Item::Crl(tree, product), fetched.crl.der().to_vec());
    }
    Ok(())
}

fn tree(vlek: bool) -> KeyTree {
    if vlek {
        KeyTree::Vlek
    } else {
        KeyTree::Vcek
    }
}

fn parse_product(name: &str) -> Result<Product, Failure> {
    Product::from_name(name).ok_or_else(|| {
        Failure::Usage(format!(
            "--product {name:?}: expected Milan, Genoa or Turin"
        ))
    })
}

fn read_report(path: &Path) -> Result<AttestationReport, Failure> {
    let bytes = cloister_collateral::files::read(path)?;
    AttestationReport::from_bytes(&bytes).map_err(|e| {
        Failure::Usage(format!(
            "{}: not an attestation report: {e}",
            path.display()
        ))
    })
}

fn pem(cert: &AmdCertificate) -> Result<String, Failure> {
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, cert.der())
        .map_err(|e| Failure::Usage(format!("cannot encode PEM: {e}")))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, bytes)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
}
