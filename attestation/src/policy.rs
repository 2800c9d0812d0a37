//! The verification policy: what a relying party accepts, as data.
//!
//! A policy is TOML with `deny_unknown_fields` (a misspelt knob is an error, never silently ignored).
//! Every field is optional and an absent field does not constrain, with one baseline exception: guests
//! launched with the DEBUG policy bit are rejected unless `allow_debug = true`, because a debuggable guest's
//! memory is readable by the host and its attestation proves nothing about confidentiality.
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

use serde::{Deserialize, Deserializer};

use crate::snp::report::{FirmwareVersion, SigningKey, TcbVersion};
use crate::snp::verify::ChainFacts;
use crate::snp::Product;

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

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML, an unknown field, or a value of the wrong shape.
    #[error("policy: {0}")]
    Parse(#[from] toml::de::Error),
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

/// Fixed-size bytes written as hex in TOML (an optional `0x` prefix is accepted).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(into = "String")]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> From<HexBytes<N>> for String {
    fn from(h: HexBytes<N>) -> String {
        hex::encode(h.0)
    }
}
impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl<const N: usize> std::str::FromStr for HexBytes<N> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        let v = hex::decode(s).map_err(|e| format!("invalid hex {s:?}: {e}"))?;
        let arr: [u8; N] = v
            .try_into()
            .map_err(|v: Vec<u8>| format!("expected {N} bytes of hex, found {}", v.len()))?;
        Ok(HexBytes(arr))
    }
}
impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A SHA-384 model digest as written in policies: `sha384:<96 hex digits>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelDigestPin(pub [u8; 48]);

impl fmt::Debug for ModelDigestPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha384:{}", hex::encode(self.0))
    }
}
impl fmt::Display for ModelDigestPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha384:{}", hex::encode(self.0))
    }
}
impl std::str::FromStr for ModelDigestPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hexpart = s
            .strip_prefix("sha384:")
            .ok_or_else(|| format!("model digest {s:?} must start with \"sha384:\""))?;
        Ok(ModelDigestPin(hexpart.parse::<HexBytes<48>>()?.0))
    }
}
impl<'de> Deserialize<'de> for ModelDigestPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
impl serde::Serialize for ModelDigestPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A firmware version written `major.minor` or `major.minor.build`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct VersionPin {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build (0 when omitted).
    pub build: u8,
}
impl<'de> Deserialize<'de> for VersionPin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parts: Vec<&str> = s.split('.').collect();
        let parse = |p: &str| {
            p.parse::<u8>()
                .map_err(|e| serde::de::Error::custom(format!("version {s:?}: {e}")))
        };
        match parts.as_slice() {
            [maj, min] => Ok(VersionPin {
                major: parse(maj)?,
                minor: parse(min)?,
                build: 0,
            }),
            [maj, min, b] => Ok(VersionPin {
                major: parse(maj)?,
                minor: parse(min)?,
                build: parse(b)?,
            }),
            _ => Err(serde::de::Error::custom(format!(
                "version {s:?}: expected MAJOR.MINOR or MAJOR.MINOR.BUILD"
            ))),
        }
    }
}
impl serde::Serialize for VersionPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!(
            "{}.{}.{}",
            self.major, self.minor, self.build
        ))
    }
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
    /// Accept guests that may be associated with a migration agent. Absent: not constrained.
    pub allow_migration_agent: Option<bool>,
    /// Accept guests whose policy allows SMT. Absent: not constrained.
    pub allow_smt: Option<bool>,
    /// Require the SINGLE_SOCKET policy bit.
    pub require_single_socket: Option<bool>,
    /// Minimum ABI version (`major.minor`) in the guest policy.
    pub minimum_abi: Option<VersionPin>,
    /// Minimum firmware version (`major.minor.build`) in CURRENT_* (and COMMITTED_*).
    pub minimum_firmware: Option<VersionPin>,
    /// When false, COMMITTED_TCB must equal CURRENT_TCB and the committed version the current one
    /// (no provisional firmware). Absent: not constrained.
    pub permit_provisional_firmware: Option<bool>,
    /// Minimum GUEST_SVN.
    pub minimum_guest_svn: Option<u32>,
    /// Allowed VMPLs.
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
    /// Path of a simulated ARK to trust (simulated platform only). Absent: simulated evidence is rejected.
    pub simulated_root: Option<PathBuf>,
    /// Path of an ARK-signed CRL (DER or PEM) to apply: it must be signed by the chain's ARK, be current at
    /// the verification instant, and not revoke the ASK/ASVK. Absent: no revocation check.
    pub crl: Option<PathBuf>,
}

/// A product name in a policy, validated at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProductName(pub Product);

impl<'de> Deserialize<'de> for ProductName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Product::from_name(&s).map(ProductName).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown product {s:?}: expected Milan, Genoa or Turin"
            ))
        })
    }
}
impl serde::Serialize for ProductName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

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

impl Policy {
    /// Parses a TOML policy. Unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        Ok(toml::from_str(text)?)
    }

    /// The baseline policy: every field absent, so only the baseline holds (no debug guests).
    pub fn baseline() -> Self {
        Self::default()
    }

    /// Applies the policy to facts the verifier has established. Called by
    /// [`crate::snp::verify::verify`]; the first failed check is returned.
    pub fn check(&self, facts: &ChainFacts<'_>) -> Result<(), PolicyViolation> {
        let r = facts.report;
        let gp = r.policy;

        // Baseline: a debuggable guest proves nothing about confidentiality.
        if gp.debug() && !self.allow_debug {
            return Err(violation(
                "allow_debug",
                "policy.debug = false",
                "policy.debug = true",
            ));
        }
        if let Some(products) = &self.products {
            if !products.contains(&ProductName(facts.product)) {
                let names: Vec<&str> = products.iter().map(|p| p.0.name()).collect();
                return Err(violation("products", names.join(", "), facts.product));
            }
        }
        match (self.signing_key, facts.signing_key) {
            (Some(KeyRequirement::Vcek), SigningKey::Vcek)
            | (Some(KeyRequirement::Vlek), SigningKey::Vlek)
            | (Some(KeyRequirement::Either) | None, _) => {}
            (Some(want), got) => {
                return Err(violation(
                    "signing_key",
                    format!("{want:?}").to_lowercase(),
                    got.name(),
                ))
            }
        }
        expect_in("measurements", &self.measurements, &r.measurement)?;
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
        if let Some(min) = &self.minimum_launch_tcb {
            check_min_tcb(
                [
                    "minimum_launch_tcb.fmc",
                    "minimum_launch_tcb.bootloader",
                    "minimum_launch_tcb.tee",
                    "minimum_launch_tcb.snp",
                    "minimum_launch_tcb.microcode",
                ],
                min,
                &r.launch_tcb,
            )?;
        }
        if self.allow_migration_agent == Some(false) && gp.migrate_ma() {
            return Err(violation(
                "allow_migration_agent",
                "policy.migrate_ma = false",
                "true",
            ));
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
        if self.permit_provisional_firmware == Some(false) {
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
        if let Some(min) = self.minimum_guest_svn {
            if r.guest_svn < min {
                return Err(violation(
                    "minimum_guest_svn",
                    format!(">= {min}"),
                    r.guest_svn,
                ));
            }
        }
        if let Some(vmpls) = &self.vmpls {
            if !vmpls.contains(&r.vmpl) {
                return Err(violation("vmpls", format!("{vmpls:?}"), r.vmpl));
            }
        }
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
        )?;
        if let Some(p) = &self.platform {
            let pi = r.platform_info;
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
        // model_digests and simulated_root are enforced where their inputs exist: evidence claims
        // (crate::evidence) and the trust-root selection (the caller loads the simulated root file).
        Ok(())
    }

    /// Checks that `digest` is allowed by `model_digests` (absent: any model).
    pub fn check_model_digest(&self, digest: &[u8; 48]) -> Result<(), PolicyViolation> {
        match &self.model_digests {
            Some(set) if !set.contains(&ModelDigestPin(*digest)) => Err(violation(
                "model_digests",
                list(set),
                ModelDigestPin(*digest),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::snp::report::AttestationReport;

    fn report(set: &str) -> AttestationReport {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/snp")
            .join(set)
            .join("report.bin");
        AttestationReport::from_bytes(&std::fs::read(p).unwrap()).unwrap()
    }

    fn check(policy: &str, set: &str) -> Result<(), PolicyViolation> {
        let r = report(set);
        let product = r.cpuid_product().unwrap_or(Product::Milan);
        let facts = ChainFacts {
            report: &r,
            product,
            signing_key: r.signing_key,
            simulated: false,
        };
        Policy::from_toml(policy).unwrap().check(&facts)
    }

    const GENOA: &str = "oak_genoa_vcek_v5"; // bl=10 tee=0 snp=25 ucode=84, vmpl 0, policy 0x30000
    const TURIN: &str = "oak_turin_vcek_v5"; // fmc=0 bl=1 tee=0 snp=2 ucode=71
    const VLEK: &str = "trustee_milan_vlek_v3"; // vmpl 1, VLEK
    const DEBUG: &str = "go-sev-guest_milan_vcek_v2"; // debug bit set

    fn rejects(policy: &str, set: &str, field: &str) {
        let err = check(policy, set).expect_err(policy);
        assert_eq!(err.field, field, "{policy}: {err}");
    }

    #[test]
    fn empty_policy_is_the_baseline_that_rejects_only_debug() {
        for set in [GENOA, TURIN, VLEK] {
            check("", set).unwrap();
        }
        rejects("", DEBUG, "allow_debug");
        check("allow_debug = true", DEBUG).unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_errors() {
        assert!(Policy::from_toml("alow_debug = true").is_err());
        assert!(Policy::from_toml("products = [\"Naples\"]").is_err());
        assert!(Policy::from_toml("measurements = [\"abcd\"]").is_err());
        assert!(Policy::from_toml("[minimum_tcb]\nsnpp = 1").is_err());
        assert!(Policy::from_toml("model_digests = [\"sha256:00\"]").is_err());
        assert!(Policy::from_toml("minimum_abi = \"1\"").is_err());
    }

    #[test]
    fn products() {
        check("products = [\"Genoa\"]", GENOA).unwrap();
        check("products = [\"Siena\"]", GENOA).unwrap();
        rejects("products = [\"Milan\", \"Turin\"]", GENOA, "products");
    }

    #[test]
    fn measurements() {
        let m = "c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc";
        check(&format!("measurements = [\"{m}\"]"), GENOA).unwrap();
        let other = format!("measurements = [\"{}\"]", "00".repeat(48));
        rejects(&other, GENOA, "measurements");
        let err = check(&other, GENOA).unwrap_err();
        assert!(err.found == m && err.expected.contains(&"00".repeat(48)));
    }

    #[test]
    fn minimum_tcb_per_component() {
        check(
            "[minimum_tcb]\nbootloader = 10\ntee = 0\nsnp = 25\nmicrocode = 84",
            GENOA,
        )
        .unwrap();
        rejects(
            "[minimum_tcb]\nbootloader = 11",
            GENOA,
            "minimum_tcb.bootloader",
        );
        rejects("[minimum_tcb]\ntee = 1", GENOA, "minimum_tcb.tee");
        rejects("[minimum_tcb]\nsnp = 26", GENOA, "minimum_tcb.snp");
        rejects(
            "[minimum_tcb]\nmicrocode = 85",
            GENOA,
            "minimum_tcb.microcode",
        );
        check("[minimum_tcb]\nfmc = 0", TURIN).unwrap();
        rejects("[minimum_tcb]\nfmc = 1", TURIN, "minimum_tcb.fmc");
        // Genoa has no FMC: a policy that demands one cannot be met.
        rejects("[minimum_tcb]\nfmc = 0", GENOA, "minimum_tcb.fmc");
        check("[minimum_launch_tcb]\nsnp = 25", GENOA).unwrap();
        rejects(
            "[minimum_launch_tcb]\nsnp = 26",
            GENOA,
            "minimum_launch_tcb.snp",
        );
        let err = check("[minimum_tcb]\nsnp = 26", GENOA).unwrap_err();
        assert_eq!((err.expected.as_str(), err.found.as_str()), (">= 26", "25"));
    }

    #[test]
    fn guest_policy_bits() {
        // GENOA policy 0x30000: SMT allowed, no MA, no debug, not single socket, ABI 0.0.
        check("allow_smt = true", GENOA).unwrap();
        rejects("allow_smt = false", GENOA, "allow_smt");
        check("allow_migration_agent = false", GENOA).unwrap();
        rejects(
            "require_single_socket = true",
            GENOA,
            "require_single_socket",
        );
        check("minimum_abi = \"0.0\"", GENOA).unwrap();
        rejects("minimum_abi = \"1.51\"", GENOA, "minimum_abi");
    }

    #[test]
    fn vmpl_guest_svn_and_key_type() {
        check("vmpls = [0]", GENOA).unwrap();
        rejects("vmpls = [0]", VLEK, "vmpls");
        check("vmpls = [1]", VLEK).unwrap();
        check("minimum_guest_svn = 0", GENOA).unwrap();
        rejects("minimum_guest_svn = 1", GENOA, "minimum_guest_svn");
        check("signing_key = \"vcek\"", GENOA).unwrap();
        rejects("signing_key = \"vlek\"", GENOA, "signing_key");
        check("signing_key = \"vlek\"", VLEK).unwrap();
        rejects("signing_key = \"vcek\"", VLEK, "signing_key");
        check("signing_key = \"either\"", VLEK).unwrap();
    }

    #[test]
    fn exact_fields_and_allow_lists() {
        check(&format!("host_data = \"{}\"", "00".repeat(32)), GENOA).unwrap();
        rejects(
            &format!("host_data = \"{}\"", "01".repeat(32)),
            GENOA,
            "host_data",
        );
        rejects(
            &format!("family_id = \"{}\"", "01".repeat(16)),
            GENOA,
            "family_id",
        );
        rejects(
            &format!("image_id = \"{}\"", "01".repeat(16)),
            GENOA,
            "image_id",
        );
        rejects(
            &format!("report_data = \"{}\"", "01".repeat(64)),
            GENOA,
            "report_data",
        );
        rejects(
            &format!("report_id = \"{}\"", "01".repeat(32)),
            GENOA,
            "report_id",
        );
        check(&format!("report_id_ma = \"0x{}\"", "ff".repeat(32)), GENOA).unwrap();
        rejects(
            &format!("id_key_digests = [\"{}\"]", "01".repeat(48)),
            GENOA,
            "id_key_digests",
        );
        check(
            &format!("id_key_digests = [\"{}\"]", "00".repeat(48)),
            GENOA,
        )
        .unwrap();
        let chip = hex::encode(report(GENOA).chip_id);
        check(&format!("chip_ids = [\"{chip}\"]"), GENOA).unwrap();
        rejects(
            &format!("chip_ids = [\"{}\"]", "01".repeat(64)),
            GENOA,
            "chip_ids",
        );
        rejects("require_author_key = true", GENOA, "require_author_key");
        rejects("require_id_block = true", GENOA, "require_id_block");
        check("require_id_block = false", GENOA).unwrap();
        rejects(
            &format!("author_key_digests = [\"{}\"]", "00".repeat(48)),
            GENOA,
            "require_author_key",
        );
    }

    #[test]
    fn firmware_versions_and_provisional_firmware() {
        // GENOA: current = committed = 1.55.43.
        check("minimum_firmware = \"1.55.43\"", GENOA).unwrap();
        rejects(
            "minimum_firmware = \"1.55.44\"",
            GENOA,
            "minimum_firmware (current)",
        );
        check("permit_provisional_firmware = false", GENOA).unwrap();
        // VLEK set: committed TCB (ucode 219) differs from current (ucode 220).
        rejects(
            "permit_provisional_firmware = false",
            VLEK,
            "permit_provisional_firmware (committed_tcb)",
        );
        check("permit_provisional_firmware = true", VLEK).unwrap();
    }

    #[test]
    fn platform_info_bits() {
        // GENOA platform_info 0x25: SMT, ECC, alias check complete; no TSME.
        check(
            "[platform]\nsmt_enabled = true\necc_enabled = true\ntsme_enabled = false\nalias_check_complete = true",
            GENOA,
        )
        .unwrap();
        rejects(
            "[platform]\ntsme_enabled = true",
            GENOA,
            "platform.tsme_enabled",
        );
        rejects(
            "[platform]\nciphertext_hiding_enabled = true",
            GENOA,
            "platform.ciphertext_hiding_enabled",
        );
        rejects(
            "[platform]\nrapl_disabled = true",
            GENOA,
            "platform.rapl_disabled",
        );
    }

    #[test]
    fn model_digests() {
        let d = [7u8; 48];
        let p =
            Policy::from_toml(&format!("model_digests = [\"sha384:{}\"]", hex::encode(d))).unwrap();
        p.check_model_digest(&d).unwrap();
        assert_eq!(
            p.check_model_digest(&[8; 48]).unwrap_err().field,
            "model_digests"
        );
        Policy::baseline().check_model_digest(&[8; 48]).unwrap();
    }
}
