//! The collateral flags several commands share (`--kds-url`, `--cache`, `--collateral`), and the client they
//! make (`cloister_collateral::Collateral`: memory → bundle → cache → KDS, everything verified against AMD's
//! roots before it is used or kept).

use std::path::PathBuf;

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::Product;
use cloister_collateral::{Collateral, RetryPolicy, Sources, DEFAULT_KDS_URL};

use super::Failure;

/// Where AMD collateral is fetched from and cached.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct KdsArgs {
    /// AMD's Key Distribution Service, or a mirror serving AMD's paths (/vcek/v1/…, /vlek/v1/…). What it
    /// serves is verified against AMD's embedded roots before it is used or cached.
    #[arg(long, value_name = "URL", default_value = DEFAULT_KDS_URL)]
    pub(crate) kds_url: String,
    /// Collateral cache in Trustee's layout (vcek/{hwid}/{tcb}_vcek.der, {vcek|vlek}/{product}/…), shared with
    /// `cloister-host --collateral-cache` and other tools [default: $XDG_CACHE_HOME/cloister/collateral, or
    /// ~/.cache/cloister/collateral].
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
}

impl KdsArgs {
    /// The cache directory: `--cache`, else the user's cache directory (if there is a home to put it in).
    fn cache_dir(&self) -> Option<PathBuf> {
        self.cache.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("cloister").join("collateral"))
        })
    }

    /// A collateral client over these flags; with `network` false, the KDS is not asked (cache and bundle
    /// only).
    pub(crate) fn client(
        &self,
        network: bool,
        bundle: Option<PathBuf>,
        simulated_root: Option<AmdCertificate>,
    ) -> Result<Collateral, Failure> {
        Ok(Collateral::new(Sources {
            kds_url: network.then(|| self.kds_url.clone()),
            cache_dir: self.cache_dir(),
            bundle,
            simulated_root,
            retry: RetryPolicy::default(),
        })?)
    }
}

/// The product of a report: its CPUID (report version 3 and later), else `--product`; both given must agree.
pub(crate) fn product_of(
    report: &AttestationReport,
    given: Option<&str>,
) -> Result<Product, Failure> {
    let given = given
        .map(|name| {
            Product::from_name(name).ok_or_else(|| {
                Failure::Usage(format!(
                    "--product {name:?}: expected Milan, Genoa or Turin"
                ))
            })
        })
        .transpose()?;
    match (report.cpuid_product(), given) {
        (Some(p), Some(g)) if p != g => Err(Failure::Usage(format!(
            "--product {g} contradicts the report, whose CPUID says {p}"
        ))),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Err(Failure::Usage(format!(
            "a version {} report does not name its product (no CPUID fields): pass --product Milan|Genoa|Turin",
            report.version
        ))),
    }
}
