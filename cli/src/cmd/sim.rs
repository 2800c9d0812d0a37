//! `cloister sim`: a SIMULATED AMD SEV-SNP platform for development and tests.
//!
//! `sim init` creates a state directory with a simulated key hierarchy (ARK, ASK, VCEK; ASVK and VLEK
//! with `--vlek`); `sim report` writes a signed, byte-exact attestation report. `cloister verify` accepts
//! such a report only when told to trust the simulated root (`--sim-root DIR/certs/ark.pem`, or
//! `simulated_root` in the policy). See docs/simulation.md.
//!
//! Exit codes: 0 done; 2 usage, I/O or platform error (with the cause on stderr).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use cloister_attestation::snp::report::TcbVersion;
use cloister_attestation::snp::Product;
use cloister_devnet::sim::{
    default_tcb, ReportRequest, SimConfig, SimPlatform, SimSigningKey, SystemRandom,
};

use super::{exit, Failure};

/// Arguments of `cloister sim`.
#[derive(clap::Args)]
#[command(
    about = "Create and use a SIMULATED SEV-SNP platform (development and tests; no hardware protection)",
    long_about = "Create and use a SIMULATED SEV-SNP platform: a software AMD secure processor whose \
reports are byte-exact and signed like AMD's, under a simulated root that no verifier trusts unless told \
to (cloister verify --sim-root DIR/certs/ark.pem). It proves nothing about hardware: see docs/simulation.md."
)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Create a simulated platform in a new (or empty) directory.
    #[command(
        long_about = "Create a simulated platform in a new (or empty) directory: simulated ARK \
and ASK (RSA-4096, RSASSA-PSS SHA-384, subject names saying SIMULATED), a VCEK for a random chip id \
(ECDSA P-384, AMD's extensions), and with --vlek an ASVK and a VLEK. Private keys go to DIR/keys (mode \
0600), certificates to DIR/certs (ark.pem, ask.pem, vcek.pem) and, with --vlek, DIR/certs-vlek (ark.pem, \
asvk.pem, vlek.pem). A directory that already holds a platform is never overwritten."
    )]
    Init(InitArgs),
    /// Write a signed attestation report of the simulated platform.
    #[command(
        long_about = "Write a signed attestation report (1184 bytes) of the simulated platform: \
version 3 on Milan and Genoa, 5 on Turin; CHIP_ID and every TCB field as the VCEK says; a random \
REPORT_ID. Verify it with: cloister verify --report FILE --certs DIR/certs --sim-root DIR/certs/ark.pem \
(with --vlek: --certs DIR/certs-vlek)."
    )]
    Report(ReportArgs),
}

/// Product names as typed on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ProductArg {
    #[value(name = "Milan")]
    Milan,
    #[value(name = "Genoa")]
    Genoa,
    #[value(name = "Turin")]
    Turin,
}

impl From<ProductArg> for Product {
    fn from(p: ProductArg) -> Self {
        match p {
            ProductArg::Milan => Product::Milan,
            ProductArg::Genoa => Product::Genoa,
            ProductArg::Turin => Product::Turin,
        }
    }
}

#[derive(clap::Args)]
struct InitArgs {
    /// The state directory to create (or an empty directory).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The simulated product line.
    #[arg(long, value_enum, ignore_case = true, default_value = "Genoa")]
    product: ProductArg,
    /// The platform TCB: bootloader=N,tee=N,snp=N,microcode=N, plus fmc=N on Turin (required there,
    /// refused elsewhere). Default: a recent TCB of the product.
    #[arg(long, value_name = "bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]", value_parser = parse_tcb)]
    tcb: Option<TcbArg>,
    /// Also create an ASVK and a VLEK (chain in DIR/certs-vlek).
    #[arg(long)]
    vlek: bool,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The state directory made by `cloister sim init`.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where to write the 1184-byte report (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// REPORT_DATA: 64 bytes as 128 hex digits. Default: zeros.
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<64>)]
    report_data: Option<[u8; 64]>,
    /// MEASUREMENT: 48 bytes as 96 hex digits. Default: zeros.
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<48>)]
    measurement: Option<[u8; 48]>,
    /// HOST_DATA: 32 bytes as 64 hex digits. Default: zeros.
    #[arg(long, value_name = "HEX", value_parser = parse_hex::<32>)]
    host_data: Option<[u8; 32]>,
    /// VMPL of the request, 0 to 3.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3))]
    vmpl: u32,
    /// Guest POLICY in hex (bit 17 must be set; bit 19 allows debugging).
    #[arg(long, value_name = "HEX", default_value = "0x30000", value_parser = parse_policy)]
    policy: u64,
    /// Sign with the VLEK instead of the VCEK (the platform must have been made with --vlek).
    #[arg(long)]
    vlek: bool,
}

/// A TCB as given on the command line; checked against the product at `init`.
#[derive(Clone, Copy, Debug)]
struct TcbArg(TcbVersion);

fn parse_tcb(s: &str) -> Result<TcbArg, String> {
    let (mut bootloader, mut tee, mut snp, mut microcode, mut fmc) = (None, None, None, None, None);
    for part in s.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not component=N"))?;
        let value: u8 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key}={value}: expected a number 0..=255"))?;
        let slot = match key.trim() {
            "bootloader" => &mut bootloader,
            "tee" => &mut tee,
            "snp" => &mut snp,
            "microcode" => &mut microcode,
            "fmc" => &mut fmc,
            other => {
                return Err(format!(
                "unknown TCB component {other:?} (expected bootloader, tee, snp, microcode, fmc)"
            ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("TCB component {key:?} given twice"));
        }
    }
    let need =
        |v: Option<u8>, name: &str| v.ok_or_else(|| format!("TCB component {name} is missing"));
    Ok(TcbArg(TcbVersion {
        fmc,
        bootloader: need(bootloader, "bootloader")?,
        tee: need(tee, "tee")?,
        snp: need(snp, "snp")?,
        microcode: need(microcode, "microcode")?,
    }))
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(digits).map_err(|e| format!("not hex: {e}"))?;
    let found = bytes.len();
    bytes.try_into().map_err(|_| {
        format!(
            "expected {N} bytes ({} hex digits), found {found} bytes",
            2 * N
        )
    })
}

fn parse_policy(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?} is not a 64-bit hex number: {e}"))
}

/// Runs `cloister sim`.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = match args.command {
        SimCommand::Init(a) => init(&a),
        SimCommand::Report(a) => report(&a),
    };
    exit(result.map_err(Failure::from), "refused")
}

fn init(a: &InitArgs) -> anyhow::Result<()> {
    let product = Product::from(a.product);
    let tcb = a.tcb.map_or_else(|| default_tcb(product), |t| t.0);
    let config = SimConfig {
        product,
        tcb,
        vlek: a.vlek,
        chip_id: None,
        issued_at_unix: super::now_unix(),
    };
    let platform = SimPlatform::init(&a.dir, &config, &SystemRandom::new())
        .with_context(|| format!("cannot create a simulated platform in {}", a.dir.display()))?;
    let certs = platform.certs_dir();
    println!(
        "created a SIMULATED {} platform in {} (not AMD hardware: no protection)",
        platform.product(),
        a.dir.display()
    );
    println!("  chip id: {}", hex::encode(platform.chip_id()));
    println!("  tcb:     {}", platform.tcb());
    println!("  VCEK chain: {}", certs.display());
    if let Some(vlek) = platform.vlek_certs_dir() {
        println!("  VLEK chain: {}", vlek.display());
    }
    println!(
        "  verifiers reject its reports unless told: cloister verify ... --sim-root {}",
        certs.join("ark.pem").display()
    );
    Ok(())
}

fn report(a: &ReportArgs) -> anyhow::Result<()> {
    let platform = SimPlatform::open(&a.dir)
        .with_context(|| format!("cannot open the simulated platform in {}", a.dir.display()))?;
    let signing_key = if a.vlek {
        if !platform.has_vlek() {
            bail!(
                "the platform in {} has no VLEK: create one with `cloister sim init --vlek`",
                a.dir.display()
            );
        }
        SimSigningKey::Vlek
    } else {
        SimSigningKey::Vcek
    };
    let request = ReportRequest {
        report_data: a.report_data.unwrap_or([0; 64]),
        vmpl: a.vmpl,
        policy: a.policy,
        host_data: a.host_data.unwrap_or([0; 32]),
        measurement: a.measurement.unwrap_or([0; 48]),
        signing_key,
        ..ReportRequest::default()
    };
    let raw = platform
        .report(&request)
        .context("cannot make the report")?;
    write_report(&a.out, &raw)?;
    let certs = match signing_key {
        SimSigningKey::Vcek => platform.certs_dir(),
        SimSigningKey::Vlek => platform.vlek_certs_dir().unwrap_or_default(),
    };
    println!(
        "wrote a SIMULATED {} report signed by the {} to {}",
        platform.product(),
        if a.vlek { "VLEK" } else { "VCEK" },
        a.out.display()
    );
    println!(
        "  verify: cloister verify --report {} --certs {} --sim-root {}",
        a.out.display(),
        certs.display(),
        platform.certs_dir().join("ark.pem").display()
    );
    Ok(())
}

fn write_report(path: &Path, raw: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, raw).with_context(|| format!("cannot write {}", path.display()))
}
