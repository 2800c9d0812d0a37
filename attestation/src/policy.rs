//! The verification policy: what a relying party accepts, as data.
//!
//! A policy is TOML with `deny_unknown_fields` (a misspelt knob is an error, never silently ignored).
//! Every field is optional. An absent field does not constrain, except for the **baseline**, which is at least
//! as strict as go-sev-guest's zero-value `validate.Options` and which each knob below relaxes only when set:
//! - no DEBUG (POLICY bit 19; `allow_debug`): the host can read a debuggable guest's memory;
//! - no migration agent (bit 18; `allow_migration_agent`): an MA can export the guest's memory;
//! - no CXL-attached guest memory (bit 21; `allow_cxl`);
//! - VMPL 0 only (`vmpls`): a report requested from a less privileged VMPL speaks for less than the guest;
//! - no provisional firmware: COMMITTED_TCB = CURRENT_TCB and the committed version = the current one
//!   (`permit_provisional_firmware`): a provisional firmware can be rolled back;
//! - REPORTED_TCB ≤ CURRENT_TCB in every component (always): a platform cannot report a TCB newer than
//!   the one it runs;
//! - `minimum_tcb` bounds LAUNCH_TCB too, unless `minimum_launch_tcb` says otherwise.
//!
//! SMT (bit 16) is allowed by default, unlike go-sev-guest: every cloud runs SNP guests with it
//! (`allow_smt = false` refuses it).
//!
//! The knobs cover go-sev-guest's `validate.Options` (report data, host data, image/family id, report ids,
//! measurement, chip id, minimum build/version, minimum TCB and launch TCB, provisional firmware, platform
//! info, author/ID key requirements and digests, guest policy bits, minimum guest SVN, VMPL, key type)
//! plus Cloister's own (allowed products, allowed model digests, simulated root).
//!
//! Every violation names the field, the expected and the found value.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::snp::report::{
    AttestationReport, FirmwareVersion, GuestPolicy, PlatformInfo, SigningKey, TcbVersion,
};
use crate::snp::Product;

mod tpm;
mod values;
mod workload;

pub use tpm::{PcrBank, TpmPolicy};
pub use values::{DurationText, HexBytes, ModelDigestPin, ProductName, SignerPin, VersionPin};
pub use workload::{NoWorkloadPin, WorkloadIdentity, WORKLOAD_PINS};

/// A failed policy check: which field, what the policy expected, what the report holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}, found {found}")]
pub struct PolicyViolation {
    /// The policy field (or report field) that failed, e.g. `measurement` or `minimum_tcb.snp`.
    pub field: &'static str,
    /// What the policy requires.
    pub expected: String,
    /// What the report says.
    pub found: String,
}

/// Which endorsement key may have signed the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRequirement {
    /// Only a VCEK (per-chip key).
    Vcek,
    /// Only a VLEK (cloud provider's loaded key).
    Vlek,
    /// Either.
    Either,
}

/// Minimum SVNs per TCB component; absent components do not constrain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MinimumTcb {
    /// Minimum FMC SVN (Turin). A report without FMC fails a policy that sets it.
    pub fmc: Option<u8>,
    /// Minimum bootloader SVN.
    pub bootloader: Option<u8>,
    /// Minimum TEE (PSP OS) SVN.
    pub tee: Option<u8>,
    /// Minimum SNP firmware SVN.
    pub snp: Option<u8>,
    /// Minimum microcode SVN.
    pub microcode: Option<u8>,
}

/// Required values of PLATFORM_INFO bits; absent bits do not constrain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformRequirements {
    /// Required SMT_EN.
    pub smt_enabled: Option<bool>,
    /// Required TSME_EN.
    pub tsme_enabled: Option<bool>,
    /// Required ECC_EN.
    pub ecc_enabled: Option<bool>,
    /// Required RAPL_DIS.
    pub rapl_disabled: Option<bool>,
    /// Required CIPHERTEXT_HIDING_EN.
    pub ciphertext_hiding_enabled: Option<bool>,
    /// Required ALIAS_CHECK_COMPLETE.
    pub alias_check_complete: Option<bool>,
}

/// Facts established about the report before the policy is applied; handed to [`Policy::check`].
///
/// Defined here, with the policy that consumes it, so that the verifier depends on the policy and not the
/// other way round.
pub struct ChainFacts<'a> {
    /// The decoded report.
    pub report: &'a AttestationReport,
    /// Product of the trusted root.
    pub product: Product,
    /// VCEK or VLEK.
    pub signing_key: SigningKey,
    /// Whether the root is a simulated one.
    pub simulated: bool,
}

/// A relying party's verification policy. See the module documentation.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Allowed products ("Milan", "Genoa", "Turin").
    pub products: Option<BTreeSet<ProductName>>,
    /// Allowed launch measurements (48-byte hex).
    pub measurements: Option<BTreeSet<HexBytes<48>>>,
    /// Minimum REPORTED_TCB per component (the TCB the signing key was derived for).
    pub minimum_tcb: Option<MinimumTcb>,
    /// Minimum LAUNCH_TCB per component.
    pub minimum_launch_tcb: Option<MinimumTcb>,
    /// Accept guests whose policy allows debugging. Default false: rejected.
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept guests that may be associated with a migration agent (POLICY bit 18). Default false.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Accept guests whose memory may live in CXL-attached memory (POLICY bit 21). Default false.
    #[serde(default)]
    pub allow_cxl: bool,
    /// Require POLICY bit 22 (memory encryption with AES-256-XTS).
    #[serde(default)]
    pub require_aes_256_xts: bool,
    /// Require POLICY bit 23 (RAPL disabled: closes power side channels).
    #[serde(default)]
    pub require_rapl_disabled: bool,
    /// Require POLICY bit 24 (ciphertext hiding enabled for DRAM).
    #[serde(default)]
    pub require_ciphertext_hiding: bool,
    /// Require POLICY bit 25 (guest page swapping disabled).
    #[serde(default)]
    pub require_page_swap_disabled: bool,
    /// Accept guests whose policy allows SMT (POLICY bit 16). Absent: allowed (clouds run SNP with SMT).
    pub allow_smt: Option<bool>,
    /// Require the SINGLE_SOCKET policy bit.
    pub require_single_socket: Option<bool>,
    /// Minimum ABI version (`major.minor`) in the guest policy.
    pub minimum_abi: Option<VersionPin>,
    /// Minimum firmware version (`major.minor.build`) in CURRENT_* (and COMMITTED_*).
    pub minimum_firmware: Option<VersionPin>,
    /// When false (the default), COMMITTED_TCB must equal CURRENT_TCB and the committed version the current
    /// one (no provisional firmware).
    #[serde(default)]
    pub permit_provisional_firmware: bool,
    /// Minimum GUEST_SVN.
    pub minimum_guest_svn: Option<u32>,
    /// Allowed VMPLs. Absent: VMPL 0 only.
    pub vmpls: Option<BTreeSet<u32>>,
    /// Expected HOST_DATA (32-byte hex).
    pub host_data: Option<HexBytes<32>>,
    /// Expected REPORT_DATA (64-byte hex); for one-off checks. Sessions bind REPORT_DATA to claims instead.
    pub report_data: Option<HexBytes<64>>,
    /// Allowed ID key digests (SHA-384 of the ID public key).
    pub id_key_digests: Option<BTreeSet<HexBytes<48>>>,
    /// Require that the guest was launched with an ID block (ID_KEY_DIGEST not all zero).
    pub require_id_block: Option<bool>,
    /// Allowed author key digests; setting this also requires AUTHOR_KEY_EN.
    pub author_key_digests: Option<BTreeSet<HexBytes<48>>>,
    /// Require an author key (AUTHOR_KEY_EN set).
    pub require_author_key: Option<bool>,
    /// Expected FAMILY_ID (16-byte hex).
    pub family_id: Option<HexBytes<16>>,
    /// Expected IMAGE_ID (16-byte hex).
    pub image_id: Option<HexBytes<16>>,
    /// Allowed CHIP_IDs (64-byte hex).
    pub chip_ids: Option<BTreeSet<HexBytes<64>>>,
    /// Expected REPORT_ID (32-byte hex).
    pub report_id: Option<HexBytes<32>>,
    /// Expected REPORT_ID_MA (32-byte hex).
    pub report_id_ma: Option<HexBytes<32>>,
    /// Required PLATFORM_INFO bits.
    pub platform: Option<PlatformRequirements>,
    /// Which endorsement key may sign: "vcek", "vlek" or "either". Absent: either.
    pub signing_key: Option<KeyRequirement>,
    /// Allowed model digests (`sha384:<hex>`); checked against evidence claims by session code.
    pub model_digests: Option<BTreeSet<ModelDigestPin>>,
    /// Allowed model producers (`sha256:<hex>` of the producer's public key): a model is also allowed
    /// when the claims say the enclave verified its signature by one of them at load
    /// (`claims.model_signers`, docs/provenance.md). With `model_digests` too, a model passes when
    /// either allows it; with neither, any model does.
    pub model_signers: Option<BTreeSet<SignerPin>>,
    /// Allowed configuration digests (`sha384:<hex>`, SHA-384 of the enclave's measured configuration file,
    /// the `config_digest` of its claims). Where the launch measurement does not cover the configuration
    /// (cloud firmware-only measurements), this is how the configuration is pinned.
    pub config_digests: Option<BTreeSet<ModelDigestPin>>,
    /// What identifies the workload on the platform this policy is for: `"measurement"` (bare SNP where
    /// MEASUREMENT covers the code), `"initdata"` (Kata / Confidential Containers: MEASUREMENT is the pod
    /// VM's, shared by every pod of the runtime class; HOST_DATA binds the workload) or `"tpm"` (Azure CVM:
    /// MEASUREMENT is the paravisor's, shared by every Azure CVM; the PCRs bind the workload). Required by the
    /// key broker and by everything that trusts answers ([`Policy::require_workload_pin`]): the same
    /// `measurements` pin identifies code on one platform and nobody in particular on another, so the policy
    /// must say which it means.
    pub workload_identity: Option<WorkloadIdentity>,
    /// Accept evidence from any workload: a policy that pins no workload identity (see
    /// [`Policy::require_workload_pin`]) is refused by the key broker, client sessions and the offline
    /// verifiers unless this is true, and then a warning is printed at every start.
    #[serde(default)]
    pub allow_any_workload: bool,
    /// Path of a simulated ARK to trust (simulated platform only). Absent: simulated evidence is rejected.
    pub simulated_root: Option<PathBuf>,
    /// Require the enclave's measurement and every model used to appear in a release log
    /// (docs/provenance.md): inclusion proofs checked offline against the log's pinned key. Enforced by
    /// attested sessions (`infer`, `chat`, `proxy`, `bench`), which load the proof file; verifiers that do
    /// not load it refuse a policy that sets it ([`Policy::refuse_release_log`]) rather than ignore it.
    pub release_log: Option<ReleaseLogRequirement>,
    /// Path of an ARK-signed CRL (DER or PEM) to apply: it must be signed by the chain's ARK, be current at
    /// the verification instant, and not revoke the ASK/ASVK. Absent: no revocation check. Same as a
    /// one-element `crls`.
    pub crl: Option<PathBuf>,
    /// How long past its nextUpdate a CRL is still accepted: a duration such as `"7d"`, `"12h"`, `"0s"`
    /// (default 7 days). Past it the chain is rejected with the reason (`crl: … stale …`).
    pub crl_max_staleness: Option<DurationText>,
    /// Paths of ARK-signed CRLs (AMD publishes one per product and signing key: `/vcek/v1/{product}/crl`
    /// and `/vlek/v1/{product}/crl`). Each applies to the chains its ARK signs; a chain whose ARK signed
    /// none of them is rejected, since revocation checking was asked for.
    pub crls: Option<Vec<PathBuf>>,
    /// `[tpm]`: what a vTPM quote must show (Azure): PCR values, the paravisor's VM configuration.
    pub tpm: Option<TpmPolicy>,
}

/// The default `crl_max_staleness`: 7 days past nextUpdate.
pub const DEFAULT_CRL_MAX_STALENESS_SECS: i64 = 7 * 24 * 3600;

fn violation(
    field: &'static str,
    expected: impl fmt::Display,
    found: impl fmt::Display,
) -> PolicyViolation {
    PolicyViolation {
        field,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

fn list<T: fmt::Debug>(set: &BTreeSet<T>) -> String {
    let items: Vec<String> = set.iter().map(|x| format!("{x:?}")).collect();
    format!("one of [{}]", items.join(", "))
}

fn check_min_tcb(
    fields: [&'static str; 5],
    min: &MinimumTcb,
    tcb: &TcbVersion,
) -> Result<(), PolicyViolation> {
    let comps = [
        (fields[0], min.fmc, tcb.fmc),
        (fields[1], min.bootloader, Some(tcb.bootloader)),
        (fields[2], min.tee, Some(tcb.tee)),
        (fields[3], min.snp, Some(tcb.snp)),
        (fields[4], min.microcode, Some(tcb.microcode)),
    ];
    for (field, want, got) in comps {
        if let Some(want) = want {
            match got {
                Some(got) if got >= want => {}
                Some(got) => return Err(violation(field, format!(">= {want}"), got)),
                None => {
                    return Err(violation(
                        field,
                        format!(">= {want}"),
                        "no such component in this product's TCB",
                    ))
                }
            }
        }
    }
    Ok(())
}

/// REPORTED_TCB ≤ CURRENT_TCB in every component (`reported_tcb.<component>`).
fn check_not_above(reported: &TcbVersion, current: &TcbVersion) -> Result<(), PolicyViolation> {
    let comps = [
        ("reported_tcb.fmc", reported.fmc, current.fmc),
        (
            "reported_tcb.bootloader",
            Some(reported.bootloader),
            Some(current.bootloader),
        ),
        ("reported_tcb.tee", Some(reported.tee), Some(current.tee)),
        ("reported_tcb.snp", Some(reported.snp), Some(current.snp)),
        (
            "reported_tcb.microcode",
            Some(reported.microcode),
            Some(current.microcode),
        ),
    ];
    for (field, got, limit) in comps {
        if let (Some(got), Some(limit)) = (got, limit) {
            if got > limit {
                return Err(violation(field, format!("<= current_tcb {limit}"), got));
            }
        }
    }
    Ok(())
}

fn version_of(v: FirmwareVersion) -> VersionPin {
    VersionPin {
        major: v.major,
        minor: v.minor,
        build: v.build,
    }
}

fn expect_eq<const N: usize>(
    field: &'static str,
    want: &Option<HexBytes<N>>,
    got: &[u8; N],
) -> Result<(), PolicyViolation> {
    match want {
        Some(w) if &w.0 != got => Err(violation(field, hex::encode(w.0), hex::encode(got))),
        _ => Ok(()),
    }
}

fn expect_in<const N: usize>(
    field: &'static str,
    allowed: &Option<BTreeSet<HexBytes<N>>>,
    got: &[u8; N],
) -> Result<(), PolicyViolation> {
    match allowed {
        Some(set) if !set.contains(&HexBytes(*got)) => {
            Err(violation(field, list(set), hex::encode(got)))
        }
        _ => Ok(()),
    }
}

/// `[release_log]`: which log, and where its proofs are.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLogRequirement {
    /// The log's verifier key, `<name>+<hash>+<base64 key>` (C2SP signed-note form; `cloister log init`
    /// prints it and writes it to the log's `log.vkey`).
    pub key: String,
    /// The proof file (`cloister log prove`), relative to the policy file's directory.
    pub proofs: PathBuf,
}

impl Policy {
    /// For verifiers that do not load release-log proofs (the key broker, `cloister verify`, `cloister
    /// receipt verify`): a policy that requires the log is refused, never applied without it.
    pub fn refuse_release_log(&self, verifier: &str) -> Result<(), String> {
        match &self.release_log {
            None => Ok(()),
            Some(_) => Err(format!(
                "release_log: {verifier} does not check release-log inclusion (attested sessions do: \
                 cloister infer, chat, proxy, bench); remove [release_log] from this policy rather than \
                 have it ignored"
            )),
        }
    }

    /// Parses a TOML policy. Unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<Self, crate::Error> {
        Ok(toml::from_str(text)?)
    }

    /// The baseline policy: every field absent, so only the baseline holds (no debug guests).
    pub fn baseline() -> Self {
        Self::default()
    }

    /// Applies the policy to facts the verifier has established. Called by
    /// [`crate::snp::verify::verify`]; the first failed check is returned.
    ///
    /// The steps run in a fixed order, and each step keeps the order of its own checks: the first failure
    /// is the reason reported, so reordering them would change the reasons users and tests see.
    pub fn check(&self, facts: &ChainFacts<'_>) -> Result<(), PolicyViolation> {
        let r = facts.report;
        self.check_debug(r.policy)?;
        self.check_product(facts.product)?;
        self.check_signing_key(facts.signing_key)?;
        expect_in("measurements", &self.measurements, &r.measurement)?;
        self.check_tcbs(r)?;
        self.check_guest_policy_bits(r.policy)?;
        self.check_firmware(r)?;
        self.check_guest_svn_and_vmpl(r)?;
        self.check_identity_fields(r)?;
        self.check_platform_info(r.platform_info)?;
        // model_digests and simulated_root are enforced where their inputs exist: evidence claims
        // (crate::evidence) and the trust-root selection (the caller loads the simulated root file).
        Ok(())
    }

    /// The baseline's first check, DEBUG (POLICY bit 19) refused unless `allow_debug`.
    fn check_debug(&self, gp: GuestPolicy) -> Result<(), PolicyViolation> {
        // Baseline: a debuggable guest proves nothing about confidentiality.
        if gp.debug() && !self.allow_debug {
            return Err(violation(
                "allow_debug",
                "policy.debug = false",
                "policy.debug = true",
            ));
        }
        Ok(())
    }

    /// `products`: the product of the trusted root is one the policy allows.
    fn check_product(&self, product: Product) -> Result<(), PolicyViolation> {
        if let Some(products) = &self.products {
            if !products.contains(&ProductName(product)) {
                let names: Vec<&str> = products.iter().map(|p| p.0.name()).collect();
                return Err(violation("products", names.join(", "), product));
            }
        }
        Ok(())
    }

    /// `signing_key`: a VCEK or a VLEK as the policy requires (absent: either).
    fn check_signing_key(&self, signing_key: SigningKey) -> Result<(), PolicyViolation> {
        match (self.signing_key, signing_key) {
            (Some(KeyRequirement::Vcek), SigningKey::Vcek)
            | (Some(KeyRequirement::Vlek), SigningKey::Vlek)
            | (Some(KeyRequirement::Either) | None, _) => Ok(()),
            (Some(want), got) => Err(violation(
                "signing_key",
                format!("{want:?}").to_lowercase(),
                got.name(),
            )),
        }
    }

    /// The TCBs: `minimum_tcb` on REPORTED_TCB, REPORTED_TCB ≤ CURRENT_TCB (always), then the minimum of
    /// LAUNCH_TCB.
    fn check_tcbs(&self, r: &AttestationReport) -> Result<(), PolicyViolation> {
        if let Some(min) = &self.minimum_tcb {
            check_min_tcb(
                [
                    "minimum_tcb.fmc",
                    "minimum_tcb.bootloader",
                    "minimum_tcb.tee",
                    "minimum_tcb.snp",
                    "minimum_tcb.microcode",
                ],
                min,
                &r.reported_tcb,
            )?;
        }
        // The platform cannot report a TCB newer than the one it runs (go-sev-guest checks the same).
        check_not_above(&r.reported_tcb, &r.current_tcb)?;
        // `minimum_tcb` bounds LAUNCH_TCB too, unless `minimum_launch_tcb` says otherwise: a guest launched
        // on older firmware was measured under that firmware's rules.
        let launch = match (&self.minimum_launch_tcb, &self.minimum_tcb) {
            (Some(min), _) => Some((
                min,
                [
                    "minimum_launch_tcb.fmc",
                    "minimum_launch_tcb.bootloader",
                    "minimum_launch_tcb.tee",
                    "minimum_launch_tcb.snp",
                    "minimum_launch_tcb.microcode",
                ],
            )),
            (None, Some(min)) => Some((
                min,
                [
                    "minimum_tcb.fmc (launch_tcb)",
                    "minimum_tcb.bootloader (launch_tcb)",
                    "minimum_tcb.tee (launch_tcb)",
                    "minimum_tcb.snp (launch_tcb)",
                    "minimum_tcb.microcode (launch_tcb)",
                ],
            )),
            (None, None) => None,
        };
        if let Some((min, fields)) = launch {
            check_min_tcb(fields, min, &r.launch_tcb)?;
        }
        Ok(())
    }

    /// The guest POLICY bits: the baseline's refusals (migration agent, CXL), the bits the policy requires,
    /// SMT, single socket, and the minimum ABI.
    fn check_guest_policy_bits(&self, gp: GuestPolicy) -> Result<(), PolicyViolation> {
        if !self.allow_migration_agent && gp.migrate_ma() {
            return Err(violation(
                "allow_migration_agent",
                "policy.migrate_ma = false",
                "true",
            ));
        }
        if !self.allow_cxl && gp.cxl_allow() {
            return Err(violation("allow_cxl", "policy.cxl_allow = false", "true"));
        }
        for (field, required, got) in [
            (
                "require_aes_256_xts",
                self.require_aes_256_xts,
                gp.mem_aes_256_xts(),
            ),
            (
                "require_rapl_disabled",
                self.require_rapl_disabled,
                gp.rapl_dis(),
            ),
            (
                "require_ciphertext_hiding",
                self.require_ciphertext_hiding,
                gp.ciphertext_hiding(),
            ),
            (
                "require_page_swap_disabled",
                self.require_page_swap_disabled,
                gp.page_swap_disable(),
            ),
        ] {
            if required && !got {
                return Err(violation(field, "the POLICY bit set", "clear"));
            }
        }
        if self.allow_smt == Some(false) && gp.smt() {
            return Err(violation("allow_smt", "policy.smt = false", "true"));
        }
        if self.require_single_socket == Some(true) && !gp.single_socket() {
            return Err(violation(
                "require_single_socket",
                "policy.single_socket = true",
                "false",
            ));
        }
        if let Some(min) = self.minimum_abi {
            let got = (gp.abi_major(), gp.abi_minor());
            if got < (min.major, min.minor) {
                return Err(violation(
                    "minimum_abi",
                    format!(">= {}.{}", min.major, min.minor),
                    format!("{}.{}", got.0, got.1),
                ));
            }
        }
        Ok(())
    }

    /// The firmware: `minimum_firmware` on the current and committed versions, then (baseline) no
    /// provisional firmware, which could be rolled back.
    fn check_firmware(&self, r: &AttestationReport) -> Result<(), PolicyViolation> {
        if let Some(min) = self.minimum_firmware {
            for (field, v) in [
                ("minimum_firmware (current)", r.current_version),
                ("minimum_firmware (committed)", r.committed_version),
            ] {
                if version_of(v) < min {
                    return Err(violation(
                        field,
                        format!(">= {}.{}.{}", min.major, min.minor, min.build),
                        v,
                    ));
                }
            }
        }
        if !self.permit_provisional_firmware {
            if r.committed_tcb != r.current_tcb {
                return Err(violation(
                    "permit_provisional_firmware (committed_tcb)",
                    format!("= current_tcb {}", r.current_tcb),
                    r.committed_tcb,
                ));
            }
            if r.committed_version != r.current_version {
                return Err(violation(
                    "permit_provisional_firmware (committed_version)",
                    format!("= current_version {}", r.current_version),
                    r.committed_version,
                ));
            }
        }
        Ok(())
    }

    /// `minimum_guest_svn`, then `vmpls` (baseline: VMPL 0 only; a report requested from a less privileged
    /// VMPL speaks for less than the guest).
    fn check_guest_svn_and_vmpl(&self, r: &AttestationReport) -> Result<(), PolicyViolation> {
        if let Some(min) = self.minimum_guest_svn {
            if r.guest_svn < min {
                return Err(violation(
                    "minimum_guest_svn",
                    format!(">= {min}"),
                    r.guest_svn,
                ));
            }
        }
        match &self.vmpls {
            Some(vmpls) if !vmpls.contains(&r.vmpl) => {
                Err(violation("vmpls", format!("{vmpls:?}"), r.vmpl))
            }
            None if r.vmpl != 0 => Err(violation("vmpls", "[0] (the baseline)", r.vmpl)),
            _ => Ok(()),
        }
    }

    /// The pinned identity fields: HOST_DATA, REPORT_DATA, FAMILY_ID, IMAGE_ID, the report ids, the ID
    /// block and ID key, the CHIP_ID, and the author key.
    fn check_identity_fields(&self, r: &AttestationReport) -> Result<(), PolicyViolation> {
        expect_eq("host_data", &self.host_data, &r.host_data)?;
        expect_eq("report_data", &self.report_data, &r.report_data)?;
        expect_eq("family_id", &self.family_id, &r.family_id)?;
        expect_eq("image_id", &self.image_id, &r.image_id)?;
        expect_eq("report_id", &self.report_id, &r.report_id)?;
        expect_eq("report_id_ma", &self.report_id_ma, &r.report_id_ma)?;
        if self.require_id_block == Some(true) && r.id_key_digest.iter().all(|&b| b == 0) {
            return Err(violation(
                "require_id_block",
                "an ID block (ID_KEY_DIGEST not zero)",
                "no ID block (ID_KEY_DIGEST all zero)",
            ));
        }
        expect_in("id_key_digests", &self.id_key_digests, &r.id_key_digest)?;
        expect_in("chip_ids", &self.chip_ids, &r.chip_id)?;
        let need_author =
            self.require_author_key == Some(true) || self.author_key_digests.is_some();
        if need_author && !r.author_key_en {
            return Err(violation("require_author_key", "AUTHOR_KEY_EN = 1", "0"));
        }
        expect_in(
            "author_key_digests",
            &self.author_key_digests,
            &r.author_key_digest,
        )
    }

    /// `platform`: the PLATFORM_INFO bits the policy names.
    fn check_platform_info(&self, pi: PlatformInfo) -> Result<(), PolicyViolation> {
        if let Some(p) = &self.platform {
            let bits = [
                ("platform.smt_enabled", p.smt_enabled, pi.smt_enabled()),
                ("platform.tsme_enabled", p.tsme_enabled, pi.tsme_enabled()),
                ("platform.ecc_enabled", p.ecc_enabled, pi.ecc_enabled()),
                (
                    "platform.rapl_disabled",
                    p.rapl_disabled,
                    pi.rapl_disabled(),
                ),
                (
                    "platform.ciphertext_hiding_enabled",
                    p.ciphertext_hiding_enabled,
                    pi.ciphertext_hiding_enabled(),
                ),
                (
                    "platform.alias_check_complete",
                    p.alias_check_complete,
                    pi.alias_check_complete(),
                ),
            ];
            for (field, want, got) in bits {
                if let Some(want) = want {
                    if want != got {
                        return Err(violation(field, want, got));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that `digest` is allowed by `config_digests` (absent: any configuration).
    pub fn check_config_digest(&self, digest: &[u8; 48]) -> Result<(), PolicyViolation> {
        match &self.config_digests {
            Some(set) if !set.contains(&ModelDigestPin(*digest)) => Err(violation(
                "config_digests",
                list(set),
                ModelDigestPin(*digest),
            )),
            _ => Ok(()),
        }
    }

    /// The staleness tolerated past a CRL's nextUpdate, in seconds (`crl_max_staleness`, default 7 days).
    pub fn crl_grace_secs(&self) -> i64 {
        self.crl_max_staleness
            .map_or(DEFAULT_CRL_MAX_STALENESS_SECS, |d| d.0)
    }

    /// Every CRL path the policy names (`crl`, then `crls`).
    pub fn crl_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.crl.iter().chain(self.crls.iter().flatten())
    }

    /// Checks that a model is allowed by its digest alone (no verified signer known): by `model_digests`,
    /// or by nothing pinned at all. A policy that pins only `model_signers` refuses it.
    pub fn check_model_digest(&self, digest: &[u8; 48]) -> Result<(), PolicyViolation> {
        self.check_model(digest, None)
    }

    /// Checks that a model is allowed: its digest is in `model_digests`, or `signer` (the producer the
    /// enclave verified, from the claims) is in `model_signers`. Absent both: any model.
    pub fn check_model(
        &self,
        digest: &[u8; 48],
        signer: Option<&[u8; 32]>,
    ) -> Result<(), PolicyViolation> {
        let (digests, signers) = (&self.model_digests, &self.model_signers);
        let by_digest = digests
            .as_ref()
            .is_some_and(|set| set.contains(&ModelDigestPin(*digest)));
        let by_signer =
            matches!((signers, signer), (Some(set), Some(id)) if set.contains(&SignerPin(*id)));
        let found = match signer {
            Some(id) => format!("{} signed by {}", ModelDigestPin(*digest), SignerPin(*id)),
            None => format!("{} (no verified signer)", ModelDigestPin(*digest)),
        };
        match (digests, signers) {
            _ if by_digest || by_signer => Ok(()),
            (None, None) => Ok(()),
            (Some(d), None) => Err(violation("model_digests", list(d), ModelDigestPin(*digest))),
            (None, Some(s)) => Err(violation(
                "model_signers",
                format!("signed by {}", list(s)),
                found,
            )),
            (Some(d), Some(s)) => Err(violation(
                "model_digests/model_signers",
                format!("{} or signed by {}", list(d), list(s)),
                found,
            )),
        }
    }
}

#[cfg(test)]
mod tests;
