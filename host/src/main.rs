//! `cloister-host`: parses the command line into a validated [`Config`], runs the host, prints the
//! error chain and maps outcomes to exit codes (0 clean shutdown, 1 runtime failure, 2 usage).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cloister_host::supervisor::RestartPolicy;
use cloister_host::{Backend, Config, QemuSettings};

const TRUST_MODEL: &str = "\
Launches the Cloister enclave, serves it the sealed models it asks for, and relays client \
connections to it byte for byte.

Trust model: this program and the machine it runs on are untrusted. The host can refuse service \
(stop, delay or drop connections, withhold blobs), but it cannot read model keys, weights, inputs \
or outputs: sealed models are AEAD-encrypted and only an attested enclave is released their keys; \
clients speak TLS 1.3 end to end with the enclave and verify its attestation, bound to their own \
session, before they send any input. The host links no decryption code and never sees anything \
but ciphertext.

On stdout it prints exactly one line, `cloister-host: listening on <ADDR>`, once the relay is \
listening and the first enclave is up. Logs go to stderr (RUST_LOG sets the level); the \
enclave's own output is forwarded there prefixed `[enclave] `. SIGINT/SIGTERM stop the enclave \
and exit 0.

Backends: `sim` runs --enclave-bin as a child process with the simulated platform (development). \
`snp-qemu` boots an AMD SEV-SNP confidential VM: QEMU/KVM, the AmdSev OVMF (--qemu-bios), direct \
boot of --qemu-kernel and --qemu-initrd (scripts/build-initrd.sh) with kernel hashes, so the \
launch measurement covers firmware, kernel, initrd (the enclave and its configuration) and command \
line; HOST_DATA is the SHA-256 of --enclave-config. The VM serial console is forwarded as \
`[enclave] `, QEMU's own messages as `[qemu] `. `qemu-tcg-insecure` boots the same VM WITHOUT SEV \
under software emulation: no memory encryption, no attestation hardware; for tests only. See \
docs/snp-qemu.md.";

/// Cloister host: launches and supervises the enclave, serves sealed blobs, relays clients.
#[derive(Parser, Debug)]
#[command(name = "cloister-host", version, about, long_about = TRUST_MODEL)]
struct Args {
    /// The enclave program (`cloister-enclave`). Backend sim only (required there).
    #[arg(long, value_name = "PATH")]
    enclave_bin: Option<PathBuf>,

    /// The enclave's measured configuration (TOML), passed to it unchanged as `--config` (sim); for
    /// snp-qemu the VM reads its copy from the initrd and HOST_DATA is this file's SHA-256.
    #[arg(long, value_name = "FILE")]
    enclave_config: PathBuf,

    /// --enclave-config is a Confidential Containers initdata document (`cloister initdata`), not a bare
    /// configuration (sim only): the enclave reads its configuration from it and checks it against
    /// HOST_DATA, which the simulated launch sets to the document's digest as Kata does from a pod's
    /// initdata annotation.
    #[arg(long)]
    initdata: bool,

    /// A sealed model to serve, indexed by the digest in its header; repeat for several.
    #[arg(long = "sealed-model", value_name = "PATH", required = true)]
    sealed_models: Vec<PathBuf>,

    /// Public address of the relay, IP:PORT (port 0 picks a free port; see the stdout line).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,

    /// How to launch the enclave: `sim` (a child process on this machine, simulated platform),
    /// `snp-qemu` (an SEV-SNP VM), or `qemu-tcg-insecure` (the VM without SEV, tests only).
    #[arg(long, value_name = "BACKEND", default_value = "sim")]
    backend: Backend,

    /// Loopback port of the blob service (default: any free port). The VM backends put it on the
    /// kernel command line, which SNP measures: fix it to keep the measurement stable.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    blobs_port: u16,

    /// QEMU backends: the QEMU program [default: qemu-system-x86_64].
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_binary: Option<PathBuf>,

    /// QEMU backends: the guest kernel (bzImage), booted directly.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_kernel: Option<PathBuf>,

    /// QEMU backends: the initramfs built by scripts/build-initrd.sh.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_initrd: Option<PathBuf>,

    /// QEMU backends: the firmware. snp-qemu: the AmdSev OVMF build (required). qemu-tcg-insecure:
    /// optional, QEMU's default BIOS otherwise.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_bios: Option<PathBuf>,

    /// QEMU backends: extra kernel parameters, appended to the command line (measured under SNP).
    #[arg(
        long,
        value_name = "PARAMS",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_append: Option<String>,

    /// QEMU backends: the vCPU model [default: EPYC-v4 for snp-qemu, max for qemu-tcg-insecure].
    /// Measured under SNP.
    #[arg(
        long,
        value_name = "MODEL",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_cpu: Option<String>,

    /// QEMU backends: vCPUs [default: 1]. Measured under SNP (one VMSA per vCPU).
    #[arg(
        long,
        value_name = "N",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_vcpus: Option<u32>,

    /// QEMU backends: guest memory in MiB [default: 1024].
    #[arg(
        long,
        value_name = "MIB",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_memory_mib: Option<u32>,

    /// QEMU backends: append the guest's serial console to FILE (it is also forwarded to stderr).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_serial_log: Option<PathBuf>,

    /// QEMU backends: seconds the VM may take to boot and announce the enclave [default: 120].
    #[arg(
        long,
        value_name = "SECS",
        help_heading = "VM (snp-qemu, qemu-tcg-insecure)"
    )]
    qemu_start_timeout: Option<u64>,

    /// snp-qemu: the SNP guest policy [default: 0x30000: SMT allowed, no debug, no migration
    /// agent]. Verifiers see it in the report.
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64, help_heading = "SEV-SNP (snp-qemu)")]
    snp_policy: Option<u64>,

    /// snp-qemu: the C-bit position [default: 51].
    #[arg(long, value_name = "N", help_heading = "SEV-SNP (snp-qemu)")]
    snp_cbitpos: Option<u32>,

    /// snp-qemu: physical address bits lost to memory encryption [default: 1].
    #[arg(long, value_name = "N", help_heading = "SEV-SNP (snp-qemu)")]
    snp_reduced_phys_bits: Option<u32>,

    /// snp-qemu: an ID block (96 bytes, raw or base64), checked by the AMD-SP at launch.
    #[arg(long, value_name = "FILE", help_heading = "SEV-SNP (snp-qemu)")]
    snp_id_block: Option<PathBuf>,

    /// snp-qemu: the ID block's authentication information (4096 bytes, raw or base64).
    #[arg(long, value_name = "FILE", help_heading = "SEV-SNP (snp-qemu)")]
    snp_id_auth: Option<PathBuf>,

    /// snp-qemu: the ID auth carries an author key.
    #[arg(long, help_heading = "SEV-SNP (snp-qemu)")]
    snp_author_key_enabled: bool,

    /// Append every byte the host relays or serves to FILE (raw). For audits and tests: it holds
    /// only what the host sees anyway, i.e. ciphertext and sealed blobs.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,

    /// Give up (exit 1) when the enclave stops N+1 times in a row (a run of 30 s resets the
    /// count). Default: restart forever, with backoff from 200 ms up to 5 s.
    #[arg(long, value_name = "N")]
    restart_max: Option<u32>,

    /// Relay: connections relayed at once; more clients wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = cloister_host::relay::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,

    /// Relay: connections one source address may hold at once; more are closed at accept and
    /// counted in the log (one line per 10 s).
    #[arg(long, value_name = "N", default_value_t = cloister_host::relay::DEFAULT_MAX_PER_SOURCE)]
    max_connections_per_source: usize,

    /// Relay: seconds a client has to finish its TLS handshake (send its first application-data
    /// record); slower connections, and bytes that are not TLS records, are closed and counted.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    handshake_timeout_secs: u64,

    /// Collateral: the KDS the `/collateral` service fetches VCEKs, chains and CRLs from for the enclave
    /// (AMD's, or a mirror); `off`: no network (cache and bundle only). What it fetches is verified
    /// before it is cached, and again by the enclave.
    #[arg(long, value_name = "URL", default_value = cloister_collateral::DEFAULT_KDS_URL, help_heading = "Collateral")]
    kds_url: String,

    /// Collateral: the on-disk cache, in Trustee's layout (shared with `cloister fetch --cache` and
    /// other tools). Default: memory only.
    #[arg(long, value_name = "DIR", help_heading = "Collateral")]
    collateral_cache: Option<PathBuf>,

    /// Collateral: an offline bundle (`cloister fetch bundle`), for hosts without access to the KDS.
    #[arg(long = "collateral", value_name = "FILE", help_heading = "Collateral")]
    collateral_bundle: Option<PathBuf>,

    /// Collateral: also accept this simulated ARK (from `cloister sim init`): development only.
    #[arg(long, value_name = "FILE", help_heading = "Collateral")]
    collateral_sim_root: Option<PathBuf>,

    /// Append the enclave's audit log (hash-chained JSON lines with signed checkpoints) to FILE, created
    /// 0600. `cloister audit verify --log FILE --evidence E` checks it. Without it the lines go to stderr.
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,

    /// Serve the host's metrics (Prometheus text exposition, counts only) on ADDR, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Keep the enclave's sealed governance state (client budgets, audit-chain head) in DIR (created 0700) so
    /// it survives enclave restarts; it holds ciphertext only. Without it the host keeps no enclave state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl Args {
    fn into_config(self) -> Config {
        Config {
            enclave_bin: self.enclave_bin,
            enclave_config: self.enclave_config,
            initdata: self.initdata,
            sealed_models: self.sealed_models,
            listen: self.listen,
            backend: self.backend,
            qemu: QemuSettings {
                binary: self.qemu_binary,
                kernel: self.qemu_kernel,
                initrd: self.qemu_initrd,
                bios: self.qemu_bios,
                append: self.qemu_append,
                cpu: self.qemu_cpu,
                vcpus: self.qemu_vcpus,
                memory_mib: self.qemu_memory_mib,
                serial_log: self.qemu_serial_log,
                start_timeout: self.qemu_start_timeout.map(std::time::Duration::from_secs),
                snp_policy: self.snp_policy,
                snp_cbitpos: self.snp_cbitpos,
                snp_reduced_phys_bits: self.snp_reduced_phys_bits,
                snp_id_block: self.snp_id_block,
                snp_id_auth: self.snp_id_auth,
                snp_author_key_enabled: self.snp_author_key_enabled,
            },
            blobs_port: self.blobs_port,
            record: self.record,
            restart: RestartPolicy {
                max_restarts: self.restart_max,
                ..RestartPolicy::default()
            },
            audit_log: self.audit_log,
            metrics: self.metrics,
            state_dir: self.state_dir,
            collateral: cloister_host::CollateralSettings {
                kds_url: (self.kds_url != "off").then_some(self.kds_url),
                cache: self.collateral_cache,
                bundle: self.collateral_bundle,
                simulated_root: self.collateral_sim_root,
            },
            relay: cloister_host::relay::RelayLimits {
                max_connections: self.max_connections.max(1),
                max_per_source: self.max_connections_per_source.max(1),
                handshake_timeout: Some(std::time::Duration::from_secs(
                    self.handshake_timeout_secs.max(1),
                )),
            },
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse(); // Usage errors exit 2, --help and --version 0.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = args.into_config();
    if let Err(e) = config.validate() {
        print_error(&e);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_error(&e);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cloister_host::run(config));
    // Dropping the runtime drops the supervisor's child handle, which kills the enclave if it
    // is still running (kill_on_drop).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// A number in hex (`0x30000`) or decimal.
fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e} (expected e.g. 0x30000)"))
}

/// `error: ...` then one `  because: ...` line per cause.
fn print_error(e: &dyn std::error::Error) {
    eprintln!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        eprintln!("  because: {cause}");
        source = cause.source();
    }
}
