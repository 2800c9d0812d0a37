//! Which firmware backend the configuration selects, and the keys each backend takes or refuses
//! (`firmware`, `sim_dir`, `vcek_cache`, `vmpl`, `tpm_*`, `aa_url`, `collateral`).

use std::path::PathBuf;

use super::{
    AzureOptions, CocoAaOptions, CollateralSource, ConfigError, FirmwareConfig, HardwareOptions,
    RawConfig, RawFirmware, DEFAULT_AA_URL,
};

/// The keys (and `collateral` source) of one backend, `azure-vtpm` or `coco-aa`, are refused with any other.
pub(super) fn check_backend_only_keys(
    raw: &RawConfig,
    collateral: CollateralSource,
) -> Result<(), ConfigError> {
    let azure = matches!(raw.firmware, RawFirmware::AzureVtpm);
    if !azure && (raw.tpm_device.is_some() || raw.tpm_swtpm.is_some()) {
        return Err(ConfigError::Azure(
            "`tpm_device` and `tpm_swtpm` are only allowed with firmware = \"azure-vtpm\"",
        ));
    }
    if !azure && collateral == CollateralSource::Thim {
        return Err(ConfigError::Azure(
            "collateral = \"thim\" (Azure's endpoint) is only allowed with firmware = \"azure-vtpm\"",
        ));
    }
    let coco = matches!(raw.firmware, RawFirmware::CocoAa);
    if !coco && raw.aa_url.is_some() {
        return Err(ConfigError::CocoAa(
            "`aa_url` is only allowed with firmware = \"coco-aa\"",
        ));
    }
    Ok(())
}

/// The firmware backend, with the keys each backend takes (and refuses).
pub(super) fn firmware_config(
    raw: &RawConfig,
    collateral: CollateralSource,
) -> Result<FirmwareConfig, ConfigError> {
    Ok(match (raw.firmware, raw.sim_dir.clone()) {
        (RawFirmware::CocoAa, None) => coco_aa_firmware(raw)?,
        (RawFirmware::AzureVtpm, sim_dir) => azure_firmware(raw, sim_dir)?,
        (RawFirmware::Simulated, sim_dir) => simulated_firmware(raw, sim_dir)?,
        (_, None) if raw.sim_withhold_certificates.is_some() => {
            return Err(ConfigError::SimulatedOnly)
        }
        (RawFirmware::ConfigfsTsm, None) => FirmwareConfig::ConfigfsTsm(hardware_options(raw)?),
        (RawFirmware::SevGuest, None) => {
            let options = hardware_options(raw)?;
            if options.vcek_cache.is_none() && collateral == CollateralSource::Off {
                return Err(ConfigError::SevGuestNeedsVcekCache);
            }
            FirmwareConfig::SevGuest(options)
        }
        (other, Some(_)) => {
            return Err(ConfigError::UnexpectedSimDir {
                firmware: match other {
                    RawFirmware::ConfigfsTsm => "configfs-tsm",
                    RawFirmware::CocoAa => "coco-aa",
                    _ => "sev-guest",
                },
            })
        }
    })
}

/// `vcek_cache` and `vmpl` (0..=3) of the hardware backends.
fn hardware_options(raw: &RawConfig) -> Result<HardwareOptions, ConfigError> {
    let vmpl = raw.vmpl.unwrap_or(0);
    if vmpl > 3 {
        return Err(ConfigError::Vmpl(vmpl));
    }
    Ok(HardwareOptions {
        vcek_cache: raw.vcek_cache.clone(),
        vmpl,
    })
}

/// `firmware = "coco-aa"` (without `sim_dir`).
fn coco_aa_firmware(raw: &RawConfig) -> Result<FirmwareConfig, ConfigError> {
    if raw.vmpl.is_some_and(|v| v != 0) {
        return Err(ConfigError::CocoAa(
            "firmware = \"coco-aa\" reports at VMPL 0 (the agent asks for VMPL 0)",
        ));
    }
    Ok(FirmwareConfig::CocoAa(CocoAaOptions {
        url: raw
            .aa_url
            .clone()
            .unwrap_or_else(|| DEFAULT_AA_URL.to_owned()),
        vcek_cache: raw.vcek_cache.clone(),
    }))
}

/// `firmware = "azure-vtpm"`: a vTPM device, or the simulated Azure CVM (`tpm_swtpm` with `sim_dir`).
fn azure_firmware(
    raw: &RawConfig,
    sim_dir: Option<PathBuf>,
) -> Result<FirmwareConfig, ConfigError> {
    if raw.vcek_cache.is_some() || raw.vmpl.is_some() || raw.sim_withhold_certificates.is_some() {
        return Err(ConfigError::Azure(
            "firmware = \"azure-vtpm\" takes `tpm_device`, or `tpm_swtpm` with `sim_dir`: not \
             `vcek_cache`, `vmpl` or `sim_withhold_certificates` (the VCEK comes from `collateral`)",
        ));
    }
    let simulated = match (raw.tpm_swtpm.clone(), sim_dir) {
        (Some(swtpm), Some(dir)) => Some((swtpm, dir)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Azure(
                "`tpm_swtpm` and `sim_dir` go together (the simulated Azure CVM)",
            ))
        }
    };
    if simulated.is_some() && raw.tpm_device.is_some() {
        return Err(ConfigError::Azure(
            "`tpm_device` and `tpm_swtpm` name two vTPMs: keep one",
        ));
    }
    Ok(FirmwareConfig::AzureVtpm(AzureOptions {
        tpm_device: raw
            .tpm_device
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/tpmrm0")),
        simulated,
    }))
}

/// `firmware = "simulated"`: `sim_dir` required, the hardware-only keys refused.
fn simulated_firmware(
    raw: &RawConfig,
    sim_dir: Option<PathBuf>,
) -> Result<FirmwareConfig, ConfigError> {
    if raw.vcek_cache.is_some() {
        return Err(ConfigError::HardwareOnly { key: "vcek_cache" });
    }
    if raw.vmpl.is_some() {
        return Err(ConfigError::HardwareOnly { key: "vmpl" });
    }
    Ok(FirmwareConfig::Simulated {
        sim_dir: sim_dir.ok_or(ConfigError::MissingSimDir)?,
        withhold_certificates: raw.sim_withhold_certificates.unwrap_or(false),
    })
}
