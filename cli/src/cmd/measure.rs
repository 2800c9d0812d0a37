//! `cloister measure`: the launch measurement a verifier should expect, computed from what is launched.
//!
//! - SEV-SNP: from OVMF, kernel, initrd, command line, vCPU count and model, VMM and guest features, as
//!   sev-snp-measure computes it (same flags, same result; `docs/measurement.md`). With `--id-key` it also
//!   writes an ID block and its ID_AUTH_INFO (base64, the form QEMU's `id-block=`/`id-auth=` take), so the
//!   AMD-SP refuses to launch anything else and reports carry the key digests a policy can pin.
//! - `--simulated`: the measurement of the simulated platform, from the enclave binary and its measured
//!   configuration (`cloister_devnet::sim::simulated_launch_measurement`).
//!
//! Output: the digest as lower-case hex on the last line of stdout (key digests before it).
//! Exit codes: 0 done; 2 usage or I/O error, or inputs that cannot be measured.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use cloister_attestation::snp::measurement::id_block::{self, IdBlockFields, SigningKey};
use cloister_attestation::snp::measurement::{self as measure, LaunchInput, VmmType};

use super::{exit, Failure};

/// Arguments of `cloister measure`.
#[derive(clap::Args)]
#[command(
    about = "Compute the expected launch measurement of an SEV-SNP guest (or of a simulated enclave)",
    long_about = "Compute the expected launch measurement (MEASUREMENT of the attestation report) of an \
SEV-SNP guest from the files the host launches, exactly as sev-snp-measure does: OVMF (an AmdSev build for \
direct kernel boot), kernel, initrd and command line (hashed into OVMF's SEV hashes table), vCPU count and \
model, VMM type (it sets the initial registers) and guest features. The digest is printed as lower-case hex \
on the last line of stdout.\n\nWith --id-key (and usually --author-key) it also writes an ID block and its \
ID_AUTH_INFO, base64-encoded as QEMU's sev-snp-guest id-block= and id-auth= take them; pass \
author-key-enabled=on with an author key. Keys are P-384 PEM private keys (PKCS#8 or SEC1).\n\nWith \
--simulated it prints the measurement the simulated platform reports for an enclave binary and its measured \
configuration. See docs/measurement.md."
)]
pub(crate) struct Args {
    /// Number of guest vCPUs.
    #[arg(long, value_name = "N", required_unless_present = "simulated")]
    vcpus: Option<u32>,
    /// QEMU vCPU model (EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome[-v1..v3], EPYC-Milan[-v1,-v2],
    /// EPYC-Genoa[-v1], EPYC-Turin). Required with --vmm-type QEMU, which puts its CPUID signature in RDX.
    #[arg(long, value_name = "CPUTYPE")]
    vcpu_type: Option<String>,
    /// The vCPU signature (CPUID Fn0000_0001_EAX) instead of --vcpu-type, e.g. 0xa10f10.
    #[arg(long, value_name = "VALUE", value_parser = parse_u32, conflicts_with = "vcpu_type")]
    vcpu_sig: Option<u32>,
    /// The VMM: QEMU, ec2 or gce.
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    vmm_type: String,
    /// SEV_FEATURES of the VMSAs, hexadecimal (0x1: SNP active).
    #[arg(long, value_name = "VALUE", default_value = "0x1", value_parser = parse_u64)]
    guest_features: u64,
    /// The OVMF firmware image.
    #[arg(long, value_name = "FILE", required_unless_present = "simulated")]
    ovmf: Option<PathBuf>,
    /// The kernel (direct boot; measured through OVMF's SEV hashes table).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initrd (with --kernel).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line (with --kernel).
    #[arg(long, value_name = "STR", requires = "kernel")]
    append: Option<String>,

    /// Write an ID block signed with this P-384 private key (PEM); needs --id-block-out and --id-auth-out.
    #[arg(long, value_name = "FILE", requires_all = ["id_block_out", "id_auth_out"])]
    id_key: Option<PathBuf>,
    /// The author key that signs the ID key (PEM, P-384). Launch with author-key-enabled=on.
    #[arg(long, value_name = "FILE", requires = "id_key")]
    author_key: Option<PathBuf>,
    /// Where to write the ID block (base64 of its 96 bytes).
    #[arg(long, value_name = "FILE", requires = "id_key")]
    id_block_out: Option<PathBuf>,
    /// Where to write ID_AUTH_INFO (base64 of its 4096 bytes).
    #[arg(long, value_name = "FILE", requires = "id_key")]
    id_auth_out: Option<PathBuf>,
    /// ID block POLICY: must equal the guest policy the VMM launches with (QEMU's default 0x30000).
    #[arg(long, value_name = "VALUE", default_value = "0x30000", value_parser = parse_u64)]
    policy: u64,
    /// ID block FAMILY_ID (32 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_id, requires = "id_key")]
    family_id: Option<[u8; 16]>,
    /// ID block IMAGE_ID (32 hex digits).
    #[arg(long, value_name = "HEX", value_parser = parse_id, requires = "id_key")]
    image_id: Option<[u8; 16]>,
    /// ID block GUEST_SVN.
    #[arg(long, value_name = "N", default_value_t = 0)]
    guest_svn: u32,

    /// Print the measurement of the SIMULATED platform for --enclave-bin and --config instead.
    #[arg(long, requires_all = ["enclave_bin", "config"], conflicts_with_all = ["vcpus", "ovmf", "kernel", "id_key", "vcpu_type", "vcpu_sig"])]
    simulated: bool,
    /// The cloister-enclave binary (with --simulated).
    #[arg(long, value_name = "FILE", requires = "simulated")]
    enclave_bin: Option<PathBuf>,
    /// The enclave's measured configuration file (with --simulated).
    #[arg(long, value_name = "FILE", requires = "simulated")]
    config: Option<PathBuf>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a number (decimal, or hexadecimal with 0x)"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_u64(s)?).map_err(|_| format!("{s:?} does not fit 32 bits"))
}

fn parse_id(s: &str) -> Result<[u8; 16], String> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).map_err(|_| format!("{s:?} is not 32 hex digits"))?;
    Ok(out)
}

pub(crate) fn run(args: Args) -> ExitCode {
    exit(measure_cmd(&args).map_err(Failure::from), "refused")
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn measure_cmd(a: &Args) -> anyhow::Result<()> {
    if a.simulated {
        let (Some(bin), Some(config)) = (&a.enclave_bin, &a.config) else {
            bail!("--simulated needs --enclave-bin and --config");
        };
        let m = cloister_devnet::sim::simulated_launch_measurement(&read(bin)?, &read(config)?);
        eprintln!(
            "SIMULATED platform measurement (no hardware protection; see docs/simulation.md)"
        );
        println!("{}", hex::encode(m));
        return Ok(());
    }

    let (Some(vcpus), Some(ovmf_path)) = (a.vcpus, &a.ovmf) else {
        bail!("--vcpus and --ovmf are required");
    };
    let vmm = VmmType::from_name(&a.vmm_type)
        .with_context(|| format!("unknown --vmm-type {:?} (QEMU, ec2 or gce)", a.vmm_type))?;
    let vcpu_sig = match (&a.vcpu_type, a.vcpu_sig) {
        (Some(t), _) => measure::vcpu_sig_of(t).with_context(|| {
            let names: Vec<&str> = measure::VCPU_TYPES.iter().map(|(n, _)| *n).collect();
            format!("unknown --vcpu-type {t:?} (one of {})", names.join(", "))
        })?,
        (None, Some(sig)) => sig,
        // Only QEMU puts the signature into the VMSA (EC2 and GCE use 0x600), as in sev-snp-measure.
        (None, None) if vmm == VmmType::Qemu => {
            bail!("--vcpu-type (or --vcpu-sig) is required with --vmm-type QEMU")
        }
        (None, None) => 0,
    };

    let ovmf = read(ovmf_path)?;
    let kernel = a.kernel.as_deref().map(read).transpose()?;
    let initrd = a.initrd.as_deref().map(read).transpose()?;
    let ld = measure::snp_launch_digest(&LaunchInput {
        vcpus,
        vcpu_sig,
        vmm,
        guest_features: a.guest_features,
        ovmf: &ovmf,
        kernel: kernel.as_deref(),
        initrd: initrd.as_deref(),
        append: a.append.as_deref(),
    })
    .with_context(|| format!("cannot measure {}", ovmf_path.display()))?;

    if let Some(id_key_path) = &a.id_key {
        write_id_block(a, id_key_path, &ld)?;
    }
    println!("{}", hex::encode(ld));
    Ok(())
}

fn write_id_block(a: &Args, id_key_path: &Path, ld: &[u8; 48]) -> anyhow::Result<()> {
    let rng = ring::rand::SystemRandom::new();
    use base64::Engine;
    let (Some(block_out), Some(auth_out)) = (&a.id_block_out, &a.id_auth_out) else {
        bail!("--id-key needs --id-block-out and --id-auth-out");
    };
    let id_key = SigningKey::from_pem_or_der(&read(id_key_path)?, "ID", &rng)
        .with_context(|| format!("{}", id_key_path.display()))?;
    let author = match &a.author_key {
        Some(p) => Some(
            SigningKey::from_pem_or_der(&read(p)?, "author", &rng)
                .with_context(|| format!("{}", p.display()))?,
        ),
        None => None,
    };
    let fields = IdBlockFields {
        family_id: a.family_id.unwrap_or_default(),
        image_id: a.image_id.unwrap_or_default(),
        guest_svn: a.guest_svn,
        policy: a.policy,
    };
    let block = id_block::id_block(ld, &fields);
    let auth = id_block::id_auth(&block, &id_key, author.as_ref(), &rng)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    std::fs::write(block_out, b64.encode(block))
        .with_context(|| format!("cannot write {}", block_out.display()))?;
    std::fs::write(auth_out, b64.encode(auth))
        .with_context(|| format!("cannot write {}", auth_out.display()))?;
    eprintln!(
        "wrote {} (ID block, policy {:#x}) and {} (ID_AUTH_INFO)",
        block_out.display(),
        a.policy,
        auth_out.display()
    );
    println!("id-key-digest: {}", hex::encode(id_key.digest()));
    if let Some(author) = &author {
        println!("author-key-digest: {}", hex::encode(author.digest()));
    }
    Ok(())
}
