//! `[tpm]`: what a policy requires of a vTPM quote (Azure confidential VMs). On Azure the SNP MEASUREMENT is
//! the paravisor's; the workload's identity is in the PCRs its boot chain extended (firmware, boot loader,
//! the kernel or UKI that holds the enclave), so a policy for Azure pins PCRs.
//!
//! ```toml
//! [tpm]
//! pcr_bank = "sha256"                 # the only bank Azure's vTPM quotes (and the default)
//! pcrs = { 4 = "…32-byte hex…", 11 = "…" }
//! require_secure_boot = true          # the paravisor's vm-configuration
//! require_tpm = true
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::values::HexBytes;
use super::{violation, Policy, PolicyViolation};
use crate::azure::AzureFacts;

/// A PCR bank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum PcrBank {
    /// SHA-256.
    #[default]
    #[serde(rename = "sha256")]
    Sha256,
}

/// PCR index (0..=23) → required value.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PcrValues(pub BTreeMap<u8, HexBytes<32>>);

impl<'de> Deserialize<'de> for PcrValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, HexBytes<32>>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let i =
                k.parse::<u8>().ok().filter(|i| *i < 24).ok_or_else(|| {
                    serde::de::Error::custom(format!("PCR {k:?}: expected 0 to 23"))
                })?;
            out.insert(i, v);
        }
        Ok(PcrValues(out))
    }
}

/// The `[tpm]` section.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TpmPolicy {
    /// The bank the PCR values are in (SHA-256).
    #[serde(default)]
    pub pcr_bank: PcrBank,
    /// Required PCR values.
    #[serde(default)]
    pub pcrs: PcrValues,
    /// The paravisor must report Secure Boot on.
    #[serde(default)]
    pub require_secure_boot: bool,
    /// The paravisor must report the TPM enabled.
    #[serde(default)]
    pub require_tpm: bool,
}

impl TpmPolicy {
    /// Whether PCRs are pinned (a workload identity on Azure).
    pub fn pins_pcrs(&self) -> bool {
        !self.pcrs.0.is_empty()
    }
}

impl Policy {
    /// Applies `[tpm]` to what a vTPM quote established. Every mismatch names the PCR (`pcr_policy`) or the
    /// configuration key (`vm_configuration.…`).
    pub fn check_tpm(&self, facts: &AzureFacts) -> Result<(), PolicyViolation> {
        let Some(tpm) = &self.tpm else {
            return Ok(());
        };
        for (i, want) in &tpm.pcrs.0 {
            match facts.pcrs.get(i) {
                None => {
                    return Err(violation(
                        "pcr_policy",
                        format!("PCR {i} = {}", hex::encode(want.0)),
                        format!("PCR {i} is not in the quote"),
                    ))
                }
                Some(got) if !crate::ct_eq(got, &want.0) => {
                    return Err(violation(
                        "pcr_policy",
                        format!("PCR {i} = {}", hex::encode(want.0)),
                        hex::encode(got),
                    ))
                }
                Some(_) => {}
            }
        }
        let vm = &facts.vm_configuration;
        if tpm.require_secure_boot && !vm.secure_boot {
            return Err(violation("vm_configuration.secure-boot", true, false));
        }
        if tpm.require_tpm && !vm.tpm_enabled {
            return Err(violation("vm_configuration.tpm-enabled", true, false));
        }
        Ok(())
    }

    /// For evidence without a vTPM quote (bare SNP): a policy that pins PCRs cannot be satisfied.
    pub fn check_no_tpm(&self) -> Result<(), PolicyViolation> {
        match &self.tpm {
            Some(t) if t.pins_pcrs() || t.require_secure_boot || t.require_tpm => Err(violation(
                "pcr_policy",
                "a vTPM quote (the policy has a [tpm] section)",
                "evidence without one",
            )),
            _ => Ok(()),
        }
    }
}
