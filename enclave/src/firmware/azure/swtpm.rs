//! INSECURE, for development and tests: swtpm (Debian's `swtpm` package) as the vTPM of a simulated Azure
//! CVM, started on loopback and provisioned the way Azure's paravisor provisions its vTPM: an RSA-2048
//! restricted signing key (RSASSA-SHA256) created under the endorsement hierarchy and persisted at
//! 0x81000003.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tpm::{SwtpmTransport, Tpm, TpmError};
use super::AK_HANDLE;

/// A running swtpm; killed when dropped.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    address: String,
}

impl Swtpm {
    /// Whether the `swtpm` program is on the PATH.
    pub fn available() -> bool {
        Command::new("swtpm")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts swtpm with its state in `state_dir`, on free loopback ports, and waits until it answers.
    pub fn start(state_dir: &Path) -> std::io::Result<Self> {
        let free = || -> std::io::Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let (port, ctrl) = (free()?, free()?);
        std::fs::create_dir_all(state_dir)?;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state_dir.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
            ])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut swtpm = Swtpm {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&swtpm.address).is_err() {
            if let Some(status) = swtpm.child.try_wait()? {
                return Err(std::io::Error::other(format!("swtpm exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("swtpm did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(swtpm)
    }

    /// `HOST:PORT` of its TPM command socket (`tpm_swtpm` in the enclave's configuration).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A TPM client on it.
    pub fn tpm(&self) -> Tpm<SwtpmTransport> {
        Tpm::new(SwtpmTransport::new(&self.address))
    }

    /// Provisions it like Azure's paravisor: the AK at 0x81000003.
    pub fn provision(&self) -> Result<(), TpmError> {
        let mut tpm = self.tpm();
        let handle = tpm.create_primary_ak()?;
        tpm.evict_control(handle, AK_HANDLE)?;
        tpm.flush(handle)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
