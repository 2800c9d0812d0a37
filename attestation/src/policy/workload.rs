//! `workload_identity`: what identifies the workload on the platform a policy is for, and which pins that
//! requires before keys are released or answers trusted (issue 21: a policy that pinned only a platform's
//! shared measurement — Azure's paravisor, a Kata pod VM — released keys to every workload on it).
//!
//! | `workload_identity` | platform | required pins |
//! |---|---|---|
//! | `"measurement"` | bare SNP: QEMU direct boot with kernel hashes, the simulated platform | `measurements`, `id_key_digests` or `author_key_digests` (and `host_data` when a report's HOST_DATA is not zero) |
//! | `"initdata"` | Kata / Confidential Containers | `host_data` and the pod VM's `measurements` (or ID / author key) |
//! | `"tpm"` | Azure CVM (paravisor + vTPM) | `tpm.pcrs` |

use std::fmt;

use serde::Deserialize;

use super::{violation, Policy, PolicyViolation, TpmPolicy};

/// What identifies the workload (what code runs, with what configuration) on the platform a policy is for.
///
/// The launch measurement means different things on different platforms: on bare SNP with QEMU direct boot
/// (kernel hashes) or the simulated platform it covers our code; on Kata / Confidential Containers it covers
/// the pod VM (firmware, kernel, agent), identical for every pod of a runtime class; on an Azure CVM it covers
/// the paravisor, identical for every Azure CVM. A policy that pins only a shared measurement releases keys
/// to every workload that runs on it. The policy author says which platform it is for, and the pins that
/// identify a workload there are required ([`Policy::require_workload_pin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadIdentity {
    /// MEASUREMENT covers the code: `measurements`, `id_key_digests` or `author_key_digests` pins it.
    /// Evidence whose HOST_DATA is not zero must also match a `host_data` pin: the launcher bound data there
    /// that the measurement does not cover.
    Measurement,
    /// Kata / CoCo initdata: `host_data` (the initdata digest, which carries the enclave configuration and the
    /// agent policy that binds the container image) and the pod VM's measurement (`measurements`,
    /// `id_key_digests` or `author_key_digests`) are both required.
    Initdata,
    /// Azure CVM: `tpm.pcrs` (the boot chain the vTPM measured) is required; MEASUREMENT is the paravisor's.
    Tpm,
}

impl WorkloadIdentity {
    /// The TOML value.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadIdentity::Measurement => "measurement",
            WorkloadIdentity::Initdata => "initdata",
            WorkloadIdentity::Tpm => "tpm",
        }
    }
}

impl fmt::Display for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy fields that pin the code itself where MEASUREMENT covers it, in the order messages list them.
///
/// `host_data` is not one: the host chooses HOST_DATA when it launches the guest, so a policy pinning only it
/// would accept any image the host launches with that value. It binds configuration *beside* a pin of the
/// code (`workload_identity = "initdata"` requires both).
pub const WORKLOAD_PINS: [&str; 3] = ["measurements", "id_key_digests", "author_key_digests"];

const ANY_WORKLOAD_HINT: &str =
    "or `allow_any_workload = true` to accept any code, which releases keys and \
     data to whatever runs on a genuine AMD platform";

/// A policy that would release keys or data to any workload: which pin is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoWorkloadPin {
    /// `workload_identity` is absent: the pins cannot be judged without knowing the platform.
    #[error(
        "workload_identity: not set; say what identifies the workload: \"measurement\" (bare SNP, MEASUREMENT \
         covers the code: pin measurements, id_key_digests or author_key_digests), \"initdata\" (Kata / \
         Confidential Containers: pin host_data and the pod VM's measurements) or \"tpm\" (Azure CVM: pin \
         tpm.pcrs) ({})",
        ANY_WORKLOAD_HINT
    )]
    Undeclared,
    /// The declared identity's pin is absent.
    #[error(
        "workload_identity = \"{identity}\": {missing} ({})",
        ANY_WORKLOAD_HINT
    )]
    Missing {
        /// The declared identity.
        identity: WorkloadIdentity,
        /// What is missing, in words that name the policy fields.
        missing: &'static str,
    },
}

impl Policy {
    /// Whether the policy pins the code itself ([`WORKLOAD_PINS`]).
    fn pins_code(&self) -> bool {
        self.measurements.as_ref().is_some_and(|s| !s.is_empty())
            || self.id_key_digests.as_ref().is_some_and(|s| !s.is_empty())
            || self
                .author_key_digests
                .as_ref()
                .is_some_and(|s| !s.is_empty())
    }

    /// Whether the policy pins the workload the way its [`WorkloadIdentity`] requires.
    pub fn pins_workload(&self) -> bool {
        self.missing_workload_pin().is_none()
    }

    fn missing_workload_pin(&self) -> Option<NoWorkloadPin> {
        let identity = match self.workload_identity {
            None => return Some(NoWorkloadPin::Undeclared),
            Some(identity) => identity,
        };
        let missing = match identity {
            WorkloadIdentity::Measurement if !self.pins_code() => {
                "pin measurements, id_key_digests or author_key_digests"
            }
            WorkloadIdentity::Initdata if self.host_data.is_none() => {
                "pin host_data (the initdata digest, from `cloister initdata`): the pod VM's measurement is \
                 shared by every pod of its runtime class"
            }
            WorkloadIdentity::Initdata if !self.pins_code() => {
                "pin the pod VM's measurements (or id_key_digests / author_key_digests) beside host_data: \
                 HOST_DATA is chosen by whoever launches the VM"
            }
            WorkloadIdentity::Tpm if !self.tpm.as_ref().is_some_and(TpmPolicy::pins_pcrs) => {
                "pin tpm.pcrs (the PCRs that cover the workload's boot chain): MEASUREMENT is the Azure \
                 paravisor's, the same on every Azure CVM"
            }
            _ => return None,
        };
        Some(NoWorkloadPin::Missing { identity, missing })
    }

    /// For code that releases keys or trusts answers (the key broker, client sessions, `cloister proxy`,
    /// `cloister receipt verify`, `cloister audit verify`): the policy must pin the workload as its
    /// `workload_identity` requires, or say explicitly (`allow_any_workload = true`) that any code will do.
    /// Returns whether the escape hatch is in use, so that the caller can print its warning.
    pub fn require_workload_pin(&self) -> Result<bool, NoWorkloadPin> {
        match (self.missing_workload_pin(), self.allow_any_workload) {
            (None, _) => Ok(false),
            (Some(_), true) => Ok(true),
            (Some(missing), false) => Err(missing),
        }
    }

    /// Checks evidence of one kind against the declared `workload_identity` (absent: nothing to check; the
    /// callers that release keys or trust answers have refused such a policy already): Azure vTPM evidence
    /// only under `"tpm"`, bare SNP evidence never under `"tpm"`, and under `"measurement"` a non-zero
    /// HOST_DATA only when `host_data` pins it (the launcher bound data there that the measurement does not
    /// cover: Kata's initdata, `snp-qemu`'s configuration digest).
    pub fn check_workload_identity(
        &self,
        azure: bool,
        host_data: &[u8; 32],
    ) -> Result<(), PolicyViolation> {
        let Some(identity) = self.workload_identity else {
            return Ok(());
        };
        match identity {
            WorkloadIdentity::Tpm if !azure => Err(violation(
                "workload_identity",
                "\"tpm\": Azure vTPM evidence",
                "bare SEV-SNP evidence",
            )),
            WorkloadIdentity::Measurement | WorkloadIdentity::Initdata if azure => Err(violation(
                "workload_identity",
                format!("\"{identity}\": bare SEV-SNP evidence"),
                "Azure vTPM evidence (MEASUREMENT is the paravisor's; set workload_identity = \"tpm\" and pin tpm.pcrs)",
            )),
            WorkloadIdentity::Measurement
                if self.host_data.is_none() && host_data.iter().any(|&b| b != 0) =>
            {
                Err(violation(
                    "host_data",
                    "a host_data pin: this report's HOST_DATA is not zero, so its launcher bound data the \
                     measurement does not cover",
                    hex::encode(host_data),
                ))
            }
            _ => Ok(()),
        }
    }
}
