//! The launch measurement of a simulated launch.
//!
//! On SEV-SNP hardware the AMD-SP measures the pages the hypervisor loads into the guest (firmware,
//! kernel, initrd, command line, VMSAs) and reports the digest as MEASUREMENT. A simulated launch has
//! no guest memory to measure, so the measurement is computed from what is launched, with the same
//! property that matters: a changed binary or a changed measured configuration changes the
//! measurement, and a verifier can compute the expected value itself and pin it.
//!
//! ```text
//! MEASUREMENT = SHA-384( "cloister-sim-launch-v1"          (22 bytes, ASCII, no terminator)
//!                        || SHA-384(enclave binary)        (48 bytes)
//!                        || SHA-384(measured config file)  (48 bytes) )
//! ```
//!
//! Both inputs are hashed first, so the concatenation is unambiguous (fixed-length fields after a
//! fixed domain separator). No file I/O here: the enclave hashes its own executable's bytes, the
//! client hashes the binary and configuration it expects.

use ring::digest::{digest, Context, SHA384};

/// Domain separator of the simulated launch measurement.
pub const SIM_LAUNCH_DOMAIN: &[u8] = b"cloister-sim-launch-v1";

/// The MEASUREMENT a simulated platform reports for a launch of `enclave_binary` with the measured
/// configuration `measured_config` (the exact bytes of the configuration file). See the module
/// documentation for the formula.
pub fn simulated_launch_measurement(enclave_binary: &[u8], measured_config: &[u8]) -> [u8; 48] {
    let mut ctx = Context::new(&SHA384);
    ctx.update(SIM_LAUNCH_DOMAIN);
    ctx.update(digest(&SHA384, enclave_binary).as_ref());
    ctx.update(digest(&SHA384, measured_config).as_ref());
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
