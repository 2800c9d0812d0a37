//! The QEMU backends: `snp-qemu`, the enclave in an AMD SEV-SNP confidential VM, and
//! `qemu-tcg-insecure`, the same VM without SEV under software emulation (TCG), for tests only.
//!
//! The VM boots directly (`-kernel`/`-initrd`/`-append`) into the initramfs that
//! `scripts/build-initrd.sh` builds: `cloister-enclave`, its measured configuration, a busybox
//! `/init` and the kernel modules it needs. Under SNP, `kernel-hashes=on` makes QEMU put the
//! SHA-256 of the kernel, the initrd and the command line into a table the AmdSev OVMF build
//! checks before it boots them, and the table is part of the launch measurement: the measurement
//! covers OVMF, kernel, initrd (hence the enclave and its configuration) and command line. HOST_DATA
//! carries SHA-256 of the configuration file too, so a verifier can pin it directly
//! (`docs/snp-qemu.md`).
//!
//! Trust: the host builds the command line and could build any other; nothing here is trusted.
//! A wrong kernel, initrd, command line, policy or OVMF gives a different measurement (or a
//! different HOST_DATA), which the model owner's key broker and the clients refuse. The host
//! must only get the command line *right* so that honest launches are accepted.
//!
//! Networking is QEMU user mode (slirp): the guest is 10.0.2.15, the host is reachable as
//! 10.0.2.2 (its loopback: the blob service and a key broker listening on 127.0.0.1 are
//! reachable), and a free loopback port of the host is forwarded to the enclave's listening port
//! in the guest ([`GUEST_PORT`]). The guest's serial console is QEMU's stdout: the launcher reads
//! the enclave's announcement there and forwards every other line to stderr.
//!
//! The argument builder [`qemu_args`] is pure; [`QemuLauncher`] runs QEMU and implements
//! [`Launcher`], so the supervisor restarts a VM that stops exactly as it restarts a process.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{ChildStdout, Command};

use crate::launcher::{
    abandon, parse_announcement, ChildInstance, LaunchError, Launcher, DEFAULT_START_TIMEOUT,
    FORWARD_PREFIX,
};

/// The port the enclave listens on inside the guest (`cloister.listen=0.0.0.0:4433`).
pub const GUEST_PORT: u16 = 4433;

/// The host as the guest sees it under QEMU user networking: connections to it reach the host's
/// loopback interface.
pub const HOST_FROM_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Prefix of QEMU's own stderr lines on the host's stderr.
pub const QEMU_FORWARD_PREFIX: &str = "[qemu] ";

/// The QEMU program looked up in `PATH` by default.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// Guest memory by default, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;

/// vCPUs by default. The vCPU count is part of the SNP launch measurement (one VMSA per vCPU).
pub const DEFAULT_VCPUS: u32 = 1;

/// vCPU model by default under SNP (also an input of the measurement: it sets the VMSA's
/// family/model/stepping).
pub const DEFAULT_SNP_CPU: &str = "EPYC-v4";

/// vCPU model by default under TCG.
pub const DEFAULT_TCG_CPU: &str = "max";

/// SNP guest policy bits (SEV-SNP firmware ABI, "Guest Policy").
pub mod policy {
    /// Bit 16: SMT is allowed.
    pub const SMT: u64 = 1 << 16;
    /// Bit 17: reserved, must be one.
    pub const RESERVED_MUST_BE_ONE: u64 = 1 << 17;
    /// Bit 18: association with a migration agent is allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Bit 19: debugging is allowed (the host can decrypt guest memory). Verifiers reject it
    /// unless their policy says `allow_debug = true`.
    pub const DEBUG: u64 = 1 << 19;
    /// QEMU's default and ours: SMT allowed, no debug, no migration agent, ABI 0.0.
    pub const DEFAULT: u64 = SMT | RESERVED_MUST_BE_ONE;
}

/// Default C-bit position (Milan, Genoa, Turin).
pub const DEFAULT_CBITPOS: u32 = 51;

/// Default number of physical address bits lost to memory encryption.
pub const DEFAULT_REDUCED_PHYS_BITS: u32 = 1;

/// Length of SNP's HOST_DATA (SNP ABI, SNP_LAUNCH_FINISH).
pub const HOST_DATA_LEN: usize = 32;

/// Length of an SNP ID block (SNP ABI, SNP_LAUNCH_FINISH).
pub const ID_BLOCK_LEN: usize = 96;

/// Length of an SNP ID authentication information structure (SNP ABI, SNP_LAUNCH_FINISH).
pub const ID_AUTH_LEN: usize = 4096;

/// HOST_DATA of a Cloister VM: SHA-256 of the exact bytes of the enclave's measured
/// configuration (so `sha256sum enclave.toml` gives what a verifier pins).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostData(pub [u8; HOST_DATA_LEN]);

impl HostData {
    /// SHA-256 of the configuration file's bytes.
    pub fn of_config(config: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, config);
        let mut out = [0u8; HOST_DATA_LEN];
        out.copy_from_slice(digest.as_ref());
        HostData(out)
    }
}

impl fmt::Debug for HostData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostData(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// An ID block and its authentication information, checked by the AMD-SP at SNP_LAUNCH_FINISH
/// (the measurement in the block must equal the launch digest, and its signature must verify).
#[derive(Clone, PartialEq, Eq)]
pub struct IdBlock {
    block: Vec<u8>,
    auth: Vec<u8>,
    author_key_enabled: bool,
}

/// An ID block or ID auth of the wrong size.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IdBlockError {
    /// The file is neither the raw structure nor its base64.
    #[error("{what} must be {expected} bytes, raw or base64 (found {found} bytes)")]
    Length {
        /// "the ID block" or "the ID auth".
        what: &'static str,
        /// The length the SNP ABI fixes.
        expected: usize,
        /// The length found (raw bytes, or decoded base64).
        found: usize,
    },
}

impl IdBlock {
    /// An ID block (96 bytes) and ID auth (4096 bytes), each given raw or as base64 text (what
    /// sev-snp-measure and snpguest write); `author_key_enabled` says the auth carries an author
    /// key.
    pub fn new(block: &[u8], auth: &[u8], author_key_enabled: bool) -> Result<Self, IdBlockError> {
        Ok(IdBlock {
            block: raw_or_base64(block, ID_BLOCK_LEN, "the ID block")?,
            auth: raw_or_base64(auth, ID_AUTH_LEN, "the ID auth")?,
            author_key_enabled,
        })
    }
}

impl fmt::Debug for IdBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdBlock")
            .field("author_key_enabled", &self.author_key_enabled)
            .finish_non_exhaustive()
    }
}

fn raw_or_base64(
    bytes: &[u8],
    expected: usize,
    what: &'static str,
) -> Result<Vec<u8>, IdBlockError> {
    if bytes.len() == expected {
        return Ok(bytes.to_vec());
    }
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match base64::engine::general_purpose::STANDARD.decode(&text) {
        Ok(decoded) if decoded.len() == expected => Ok(decoded),
        Ok(decoded) => Err(IdBlockError::Length {
            what,
            expected,
            found: decoded.len(),
        }),
        Err(_) => Err(IdBlockError::Length {
            what,
            expected,
            found: bytes.len(),
        }),
    }
}

/// The SEV-SNP parameters of a launch (QEMU's `sev-snp-guest` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpLaunch {
    /// The AmdSev build of OVMF (`-bios`); it verifies the kernel hashes.
    pub ovmf: PathBuf,
    /// The guest policy.
    pub policy: u64,
    /// The C-bit position.
    pub cbitpos: u32,
    /// Physical address bits lost to memory encryption.
    pub reduced_phys_bits: u32,
    /// HOST_DATA, if any.
    pub host_data: Option<HostData>,
    /// ID block and auth, if any.
    pub id: Option<IdBlock>,
}

/// How the guest is isolated from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// An SEV-SNP confidential VM under KVM.
    Snp(SnpLaunch),
    /// INSECURE, for tests only: no SEV at all, TCG software emulation. The host can read and
    /// change everything in the guest; only the simulated firmware makes sense inside, and no
    /// verifier accepts it without the simulated root.
    InsecureTcg {
        /// Firmware (`-bios`); QEMU's default (SeaBIOS) if `None`.
        bios: Option<PathBuf>,
    },
}

/// Everything that goes into one QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// SNP or (tests) nothing.
    pub isolation: Isolation,
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// The initramfs from `scripts/build-initrd.sh`.
    pub initrd: PathBuf,
    /// The kernel command line (see [`kernel_cmdline`]); measured under SNP.
    pub cmdline: String,
    /// The vCPU model (`-cpu`, may carry `,feature` suffixes).
    pub cpu: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The host loopback port forwarded to `guest_port`.
    pub host_port: u16,
    /// The enclave's port in the guest.
    pub guest_port: u16,
    /// A file that receives a copy of the serial console (appended), if any.
    pub serial_log: Option<PathBuf>,
}

/// The kernel command line of a Cloister VM. Under SNP it is measured (kernel-hashes), so it
/// holds only what must be fixed for a deployment: the console, what to do on panic, and the
/// enclave's launch arguments, which `/init` reads (`scripts/build-initrd.sh`): its listening
/// address in the guest and the URL of the host's blob service (`http://10.0.2.2:PORT`). `extra`
/// (`--qemu-append`) is appended.
pub fn kernel_cmdline(guest_port: u16, blobs_port: u16, extra: &str) -> String {
    let mut cmdline = format!(
        "console=ttyS0 panic=-1 quiet cloister.listen=0.0.0.0:{guest_port} \
         cloister.blobs=http://{HOST_FROM_GUEST}:{blobs_port}"
    );
    let extra = extra.trim();
    if !extra.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    cmdline
}

/// QEMU's arguments (without the program) for `config`. Pure.
///
/// SNP (the security-relevant choices):
/// - `-machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off` with
///   `-object memory-backend-memfd,id=ram1,size=…,share=true,prealloc=false` and `-accel kvm`:
///   guest memory is private memfd memory that KVM converts for SNP;
/// - `-object sev-snp-guest,id=sev0,cbitpos=…,reduced-phys-bits=…,policy=0x…,kernel-hashes=on`
///   `[,host-data=…][,id-block=…,id-auth=…[,author-key-enabled=on]]`;
/// - `-bios` the AmdSev OVMF, `-kernel`/`-initrd`/`-append`: direct boot, all three hashed.
///
/// Both: `-nodefaults` (no default devices: no VGA, no default NIC, no option ROMs), serial console
/// on stdio (and in `serial_log`), `-no-reboot` (a guest reboot or poweroff ends QEMU, and the
/// supervisor decides), user networking with one forwarded port, and a modern-only virtio-net
/// with `iommu_platform=on` (an SNP guest's virtio devices must use the DMA API, i.e. bounce
/// buffers in shared memory) and no option ROM.
pub fn qemu_args(config: &QemuConfig) -> Vec<OsString> {
    let mut args = Args::default();
    args.plain(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    let memory = format!("{}M", config.memory_mib);
    match &config.isolation {
        Isolation::Snp(snp) => {
            args.opt(
                "-machine",
                "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
            );
            args.opt("-accel", "kvm");
            args.opt("-cpu", &config.cpu);
            args.opt("-smp", &config.vcpus.to_string());
            args.opt("-m", &memory);
            args.opt(
                "-object",
                &format!("memory-backend-memfd,id=ram1,size={memory},share=true,prealloc=false"),
            );
            args.opt("-object", &sev_snp_guest(snp));
            args.opt_os("-bios", snp.ovmf.as_os_str());
        }
        Isolation::InsecureTcg { bios } => {
            args.opt("-machine", "q35");
            args.opt("-accel", "tcg");
            args.opt("-cpu", &config.cpu);
            args.opt("-smp", &config.vcpus.to_string());
            args.opt("-m", &memory);
            if let Some(bios) = bios {
                args.opt_os("-bios", bios.as_os_str());
            }
        }
    }
    // -kernel, -initrd and -append take their value verbatim (no QEMU option parsing).
    args.opt_os("-kernel", config.kernel.as_os_str());
    args.opt_os("-initrd", config.initrd.as_os_str());
    args.opt("-append", &config.cmdline);
    args.opt(
        "-netdev",
        &format!(
            "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:{}-:{}",
            config.host_port, config.guest_port
        ),
    );
    args.opt(
        "-device",
        "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=on,romfile=",
    );
    let mut chardev = OsString::from("stdio,id=serial0,signal=off");
    if let Some(log) = &config.serial_log {
        chardev.push(",logfile=");
        chardev.push(escape_commas(log.as_os_str()));
        chardev.push(",logappend=on");
    }
    args.opt_os("-chardev", &chardev);
    args.opt("-serial", "chardev:serial0");
    args.0
}

fn sev_snp_guest(snp: &SnpLaunch) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut object = format!(
        "sev-snp-guest,id=sev0,cbitpos={},reduced-phys-bits={},policy={:#x},kernel-hashes=on",
        snp.cbitpos, snp.reduced_phys_bits, snp.policy
    );
    // Base64 never contains a comma, so these values need no QEMU escaping.
    if let Some(host_data) = &snp.host_data {
        object.push_str(",host-data=");
        object.push_str(&b64(&host_data.0));
    }
    if let Some(id) = &snp.id {
        object.push_str(",id-block=");
        object.push_str(&b64(&id.block));
        object.push_str(",id-auth=");
        object.push_str(&b64(&id.auth));
        if id.author_key_enabled {
            object.push_str(",author-key-enabled=on");
        }
    }
    object
}

/// QEMU option values separate `key=value` pairs with commas; a literal comma is doubled.
fn escape_commas(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn plain(&mut self, flags: &[&str]) {
        self.0.extend(flags.iter().map(OsString::from));
    }

    fn opt(&mut self, flag: &str, value: &str) {
        self.0.push(flag.into());
        self.0.push(value.into());
    }

    fn opt_os(&mut self, flag: &str, value: &OsStr) {
        self.0.push(flag.into());
        self.0.push(value.to_owned());
    }
}

/// The QEMU backends' launcher.
///
/// Each launch picks a free loopback port, runs QEMU with [`qemu_args`] (under `setpriv
/// --pdeathsig KILL`, so that QEMU dies with the host even when the host is killed), reads the
/// serial console until the enclave announces its listening address, checks that it is the
/// guest port, and publishes `127.0.0.1:<forwarded port>`. Serial lines (control characters
/// removed) go to stderr prefixed `[enclave] `, QEMU's own stderr prefixed `[qemu] `. QEMU is
/// killed if its [`QemuInstance`] is dropped.
#[derive(Debug, Clone)]
pub struct QemuLauncher {
    qemu: PathBuf,
    template: QemuConfig,
    wrapper: Option<(PathBuf, Vec<OsString>)>,
    start_timeout: Duration,
}

/// The wrapper that ties QEMU's life to the host's (util-linux, essential on Debian).
const PDEATHSIG_WRAPPER: (&str, &[&str]) = ("setpriv", &["--pdeathsig", "KILL", "--"]);

impl QemuLauncher {
    /// A launcher that runs `qemu` with `template`; `template.host_port` is replaced by a free
    /// port at each launch.
    pub fn new(qemu: &Path, template: QemuConfig) -> Self {
        Self {
            qemu: qemu.to_owned(),
            template,
            wrapper: Some((
                PathBuf::from(PDEATHSIG_WRAPPER.0),
                PDEATHSIG_WRAPPER.1.iter().map(OsString::from).collect(),
            )),
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    /// Runs `program prefix_args... QEMU ARGS...` instead of `setpriv --pdeathsig KILL -- QEMU
    /// ARGS...` (a test double: `sh -c SCRIPT`), or QEMU directly with `None`.
    pub fn with_wrapper(mut self, wrapper: Option<(&Path, &[OsString])>) -> Self {
        self.wrapper = wrapper.map(|(program, args)| (program.to_owned(), args.to_vec()));
        self
    }

    /// How long the VM may take to boot and announce the enclave's address (default
    /// [`DEFAULT_START_TIMEOUT`]).
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The configuration a launch on `host_port` uses.
    pub fn config_for(&self, host_port: u16) -> QemuConfig {
        QemuConfig {
            host_port,
            ..self.template.clone()
        }
    }

    async fn launch_vm(&self) -> Result<QemuInstance, LaunchError> {
        let host_port = free_loopback_port().map_err(LaunchError::Io)?;
        let config = self.config_for(host_port);
        let mut command = match &self.wrapper {
            Some((program, prefix)) => {
                let mut command = Command::new(program);
                command.args(prefix).arg(&self.qemu);
                command
            }
            None => Command::new(&self.qemu),
        };
        let program = self
            .wrapper
            .as_ref()
            .map_or(&self.qemu, |(program, _)| program)
            .clone();
        let mut child = command
            .args(qemu_args(&config))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LaunchError::Spawn { program, source })?;
        let pid = child.id();
        tracing::info!(pid, qemu = %self.qemu.display(), host_port, "VM started");
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, QEMU_FORWARD_PREFIX));
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(LaunchError::NoAnnouncement);
        };
        let mut serial = BufReader::new(stdout);
        let announced = tokio::time::timeout(self.start_timeout, read_announcement(&mut serial));
        let outcome = match announced.await {
            Ok(Ok(addr)) if addr.port() == config.guest_port => Ok(addr),
            Ok(Ok(addr)) => Err(LaunchError::UnexpectedAddress {
                announced: addr,
                expected_port: config.guest_port,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LaunchError::Timeout(self.start_timeout)),
        };
        match outcome {
            Ok(guest) => {
                tokio::spawn(forward_lines(serial, FORWARD_PREFIX));
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, host_port));
                tracing::info!(pid, %guest, %addr, "enclave in the VM is listening");
                Ok(ChildInstance::new(child, addr, "QEMU"))
            }
            Err(e) => Err(abandon(child, "QEMU", e, Duration::from_secs(5)).await),
        }
    }
}

impl Launcher for QemuLauncher {
    type Instance = QemuInstance;

    fn launch(&mut self) -> impl Future<Output = Result<QemuInstance, LaunchError>> + Send {
        self.launch_vm()
    }
}

/// A running VM.
pub type QemuInstance = ChildInstance;

/// A loopback port that was free a moment ago (QEMU binds it for the forward; if another
/// process takes it first, QEMU fails to start and the supervisor retries with another).
fn free_loopback_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Reads serial lines until the announcement; forwards the others.
async fn read_announcement(serial: &mut BufReader<ChildStdout>) -> Result<SocketAddr, LaunchError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = serial
            .read_until(b'\n', &mut line)
            .await
            .map_err(LaunchError::Io)?;
        if n == 0 {
            return Err(LaunchError::NoAnnouncement);
        }
        let clean = sanitize(&line);
        let text = String::from_utf8_lossy(&clean);
        match parse_announcement(&text) {
            Some(Ok(addr)) => return Ok(addr),
            Some(Err(source)) => {
                return Err(LaunchError::BadAnnouncement {
                    line: text.trim_end().to_owned(),
                    source,
                })
            }
            None => forward(FORWARD_PREFIX, &clean),
        }
    }
}

async fn forward_lines<R: AsyncRead + Unpin>(reader: R, prefix: &'static str) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => forward(prefix, &sanitize(&line)),
        }
    }
}

fn forward(prefix: &str, line: &[u8]) {
    if line.is_empty() || crate::audit::take(line) {
        return;
    }
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(prefix.as_bytes())
        .and_then(|()| err.write_all(line))
        .and_then(|()| err.write_all(b"\n"));
}

/// A serial console line without its line ending, terminal escape sequences (the firmware
/// clears the screen) and other control characters, so that forwarding it cannot drive the
/// operator's terminal.
pub fn sanitize(line: &[u8]) -> Vec<u8> {
    const ESC: u8 = 0x1b;
    let mut out = Vec::with_capacity(line.len());
    let mut bytes = line.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            ESC => {
                // CSI: parameters and intermediates, then one final byte in 0x40..=0x7e.
                // Anything else is a two-byte sequence (ESC c, ESC 7, ...) or a lone ESC.
                if bytes.next() == Some(b'[') {
                    for c in bytes.by_ref() {
                        if (0x40..=0x7e).contains(&c) {
                            break;
                        }
                    }
                }
            }
            b'\t' => out.push(b),
            0x00..=0x1f | 0x7f => {}
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests;
