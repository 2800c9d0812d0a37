//! A complete Cloister deployment on one machine with the simulated platform: what `cloister demo` runs,
//! and what the end-to-end tests start, step by step as the three parties would do it.
//!
//! 1. Platform: a simulated AMD-SP (`cloister sim init`).
//! 2. Model owner: seals the model (fresh key into the keystore), pins the broker's TLS certificate and the
//!    enclave's expected measurement, and runs the key broker with a policy that names them.
//! 3. Host (untrusted): `cloister-host` launches `cloister-enclave` with the measured configuration and
//!    the sealed blob, and relays client connections.
//! 4. Client: a policy that pins the same measurement, the model digest and the simulated root.
//!
//! The expected measurement is computed here from the enclave binary and its configuration with
//! [`cloister_sim::simulated_launch_measurement`], exactly as the simulated firmware
//! computes it at launch: a changed binary or configuration changes it.
//!
//! By default the host runs the enclave as a child process ([`HostBackend::Sim`]). For the VM tests,
//! [`HostBackend::QemuTcgInsecure`] has the host boot it in a QEMU VM without SEV (the simulated
//! firmware inside, its state in the initrd): the same binary and configuration, so the same
//! measurement, reached over QEMU user networking (the guest sees the host as 10.0.2.2).

/// The simulated AMD-SP (`cloister-sim`), for the CLI's `sim` and `measure --simulated` commands: the only
/// way the `cloister` binary reaches the report forger, so that its verify path visibly does not (CI checks
/// that no `verify` module of the CLI names `cloister_devnet` or `cloister_sim`).
pub use cloister_sim as sim;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cloister_attestation::policy::WorkloadIdentity;
use cloister_attestation::snp::Product;
use cloister_models::ModelDigest;
use ring::rand::SystemRandom;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use cloister_session::{
    AttestedSession, ClientIdentity, SessionConfig, SessionConfigBuilder, SessionError,
};

mod setup;

/// Why a deployment could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// A step failed; `step` says which.
    #[error("{step}: {detail}")]
    Step {
        /// The step (e.g. "seal the model").
        step: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The enclave did not become ready in time.
    #[error("the enclave did not become ready within {0:?}: {1}")]
    NotReady(Duration, String),
}

fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> DeploymentError {
    move |e| DeploymentError::Step {
        step,
        detail: e.to_string(),
    }
}

/// What to deploy and how.
#[derive(Clone, Debug)]
pub struct DeploymentOptions {
    /// A fresh directory for all state (platform, keystore, policies, logs).
    pub workdir: PathBuf,
    /// Directory holding the `cloister-host` and `cloister-enclave` binaries.
    pub bin_dir: PathBuf,
    /// The plaintext ONNX model to seal and serve.
    pub model_path: PathBuf,
    /// The name the model is served under.
    pub model_name: String,
    /// Simulated product.
    pub product: Product,
    /// Measurement the model owner's policy pins; `None` pins the correct one. (Tests set a wrong one.)
    pub owner_measurement_override: Option<[u8; 48]>,
    /// Record every byte the host relays and serves into this file.
    pub record: Option<PathBuf>,
    /// How the host launches the enclave (default: a child process).
    pub backend: HostBackend,
    /// TOML inserted into the enclave's measured configuration before its `[key_broker]` table: top-level
    /// keys (`log_level = "trace"`) and whole tables (`[limits]`). Empty by default.
    pub enclave_config_extra: String,
    /// More `cloister-host` arguments (e.g. `--kds-url`, `--collateral-cache`). Empty by default.
    pub host_args: Vec<OsString>,
    /// The firmware lines of the enclave's configuration, replacing `firmware = "simulated"` and `sim_dir`
    /// (e.g. the simulated Azure CVM: `firmware = "azure-vtpm"`, `sim_dir`, `tpm_swtpm`). Sim backend only.
    pub enclave_firmware: Option<String>,
    /// TOML appended to the model owner's and the client's policies (e.g. a `[tpm]` section).
    pub policy_extra: String,
    /// TOML added to the model's `[[models]]` table (e.g. `top_k = 2`).
    pub model_config_extra: String,
    /// The client certificate the deployment's own sessions present (`[clients]` of the enclave).
    pub client_identity: Option<std::sync::Arc<ClientIdentity>>,
    /// Sim backend: deliver the configuration as a Confidential Containers initdata document (sha384), as on
    /// Kubernetes: the launch measures the enclave alone, HOST_DATA is the document's digest, and both
    /// policies pin `host_data`.
    pub initdata: bool,
    /// The policies' `workload_identity`; `None`: `initdata` with [`DeploymentOptions::initdata`], else
    /// `measurement` (the simulated launch measures the enclave and, without initdata, its configuration).
    /// The simulated Azure CVM sets `Tpm` (with a `[tpm]` pin in `policy_extra`).
    pub workload_identity: Option<WorkloadIdentity>,
}

/// How the host of a [`Deployment`] launches the enclave.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum HostBackend {
    /// `cloister-host --backend sim`: `cloister-enclave` as a child process.
    #[default]
    Sim,
    /// INSECURE, for tests only: `cloister-host --backend qemu-tcg-insecure`, a QEMU VM without
    /// SEV under software emulation, booted from an initrd built by `scripts/build-initrd.sh` with
    /// the enclave, its configuration and the simulated platform's state.
    QemuTcgInsecure(VmOptions),
}

/// What a VM deployment needs besides the binaries.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Its modules directory, `/lib/modules/<version>`.
    pub kernel_modules: PathBuf,
    /// `scripts/build-initrd.sh`.
    pub build_initrd: PathBuf,
    /// More `cloister-host` arguments (e.g. `--qemu-binary`, `--qemu-memory-mib`).
    pub host_args: Vec<OsString>,
}

/// Where the enclave's state lives inside the VM's initrd (`scripts/build-initrd.sh --sim-dir`).
pub const VM_SIM_DIR: &str = "/cloister/sim";

/// The host as a QEMU user-networking guest sees it.
pub const VM_HOST_ADDR: &str = "10.0.2.2";

impl DeploymentOptions {
    /// Options for `model_path` served as `model_name`, binaries next to the current executable.
    pub fn new(
        workdir: &Path,
        model_path: &Path,
        model_name: &str,
    ) -> Result<Self, DeploymentError> {
        Ok(DeploymentOptions {
            workdir: workdir.to_path_buf(),
            bin_dir: sibling_bin_dir()?,
            model_path: model_path.to_path_buf(),
            model_name: model_name.to_string(),
            product: Product::Genoa,
            owner_measurement_override: None,
            record: None,
            backend: HostBackend::Sim,
            enclave_config_extra: String::new(),
            host_args: Vec::new(),
            enclave_firmware: None,
            policy_extra: String::new(),
            model_config_extra: String::new(),
            client_identity: None,
            initdata: false,
            workload_identity: None,
        })
    }
}

/// The directory of the running executable (where cargo puts `cloister-host` and `cloister-enclave`).
pub fn sibling_bin_dir() -> Result<PathBuf, DeploymentError> {
    let exe = std::env::current_exe().map_err(step("locate the cloister binaries"))?;
    let dir = exe.parent().ok_or_else(|| DeploymentError::Step {
        step: "locate the cloister binaries",
        detail: "the executable has no parent directory".into(),
    })?;
    // Test binaries live in target/<profile>/deps; the binaries one level up.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, DeploymentError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DeploymentError::Step {
            step: "locate the cloister binaries",
            detail: format!(
                "{} not found: build the whole workspace first (cargo build --release --workspace)",
                path.display()
            ),
        })
    }
}

/// A running deployment. Dropping it kills the host (and with it the enclave) and stops the broker.
pub struct Deployment {
    /// The simulated platform.
    pub sim_dir: PathBuf,
    /// SHA-384 of the plaintext model.
    pub model_digest: ModelDigest,
    /// The model's name.
    pub model_name: String,
    /// The measurement the simulated firmware reports for this enclave binary and configuration.
    pub measurement: [u8; 48],
    /// The enclave's measured configuration file.
    pub enclave_config: PathBuf,
    /// The sealed model (as stored on the host).
    pub sealed_model: PathBuf,
    /// The keystore.
    pub keystore: PathBuf,
    /// The broker's audit log.
    pub audit_log: PathBuf,
    /// The client's policy file (pins measurement, model digest, simulated root).
    pub client_policy: PathBuf,
    /// The host's public relay endpoint, `127.0.0.1:PORT`.
    pub endpoint: String,
    /// The host's log (its stderr, with the enclave's output prefixed `[enclave] `).
    pub host_log: PathBuf,
    /// VM backends: the initrd the host boots.
    pub initrd: Option<PathBuf>,
    /// VM backends: the guest's serial console.
    pub serial_log: Option<PathBuf>,
    /// The client certificate this deployment's sessions present.
    pub client_identity: Option<std::sync::Arc<ClientIdentity>>,
    /// When `cloister-host` was spawned: the start of a cold-start measurement.
    pub host_started: Instant,
    /// With [`DeploymentOptions::initdata`]: the initdata document the host hands to the enclave, and the
    /// HOST_DATA its launch gets.
    pub initdata: Option<(PathBuf, [u8; 32])>,
    host: Option<Child>,
    broker: JoinHandle<()>,
    host_command: HostCommand,
}

/// How to start one more `cloister-host` for the same enclave configuration and sealed model.
#[derive(Clone, Debug)]
struct HostCommand {
    host_bin: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
}

/// Another host (and its enclave) of a fleet: [`Deployment::start_another_host`].
#[derive(Debug)]
pub struct ExtraHost {
    /// Its public relay endpoint, `127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its log.
    pub host_log: PathBuf,
    child: Child,
}

impl ExtraHost {
    /// The host's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it as [`Deployment::stop`] stops the first.
    pub async fn stop(mut self) {
        terminate(&mut self.child).await;
    }
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("endpoint", &self.endpoint)
            .field("model_digest", &self.model_digest)
            .finish_non_exhaustive()
    }
}

fn write(path: &Path, text: &str) -> Result<(), DeploymentError> {
    std::fs::write(path, text).map_err(|e| DeploymentError::Step {
        step: "write configuration",
        detail: format!("{}: {e}", path.display()),
    })
}

impl Deployment {
    /// Sets everything up and starts the broker (in this process) and the host (a child process, which
    /// launches the enclave). Returns once the host relays; the enclave may still be fetching its key.
    pub async fn start(options: &DeploymentOptions) -> Result<Deployment, DeploymentError> {
        let dir = &options.workdir;
        std::fs::create_dir_all(dir).map_err(step("create the work directory"))?;
        let host_bin = binary(&options.bin_dir, "cloister-host")?;
        let enclave_bin = binary(&options.bin_dir, "cloister-enclave")?;
        let rng = SystemRandom::new();

        // 1. The platform.
        let (sim_dir, sim_root) = setup::simulated_platform(dir, options.product, &rng)?;

        // 2. The model owner: seal, keystore, broker identity.
        let setup::SealedModel {
            keystore_dir,
            sealed_model,
            model_digest,
        } = setup::seal_model(options, &rng)?;
        let owner = dir.join("owner");
        let broker_identity = setup::broker_identity(&owner).await?;

        // 3. The enclave's measured configuration, and the measurement it implies.
        let enclave_config = dir.join("host/enclave.toml");
        let config_text =
            setup::enclave_config_text(options, &sim_dir, &broker_identity, &model_digest)?;
        write(&enclave_config, &config_text)?;
        let (measurement, initdata) =
            setup::launch_measurement(options, &enclave_bin, &config_text)?;
        let pins = setup::PolicyPins::new(options, &model_digest, &sim_root, initdata.as_ref());

        // The owner's policy: this measurement, this model, the simulated root.
        let owner_measurement = options.owner_measurement_override.unwrap_or(measurement);
        let owner_policy = owner.join("owner-policy.toml");
        write(&owner_policy, &pins.owner_policy(&owner_measurement))?;
        let (broker, audit_log) =
            setup::start_key_broker(&owner, broker_identity.listener, broker_identity.addr)?;

        // 4. The client's policy.
        let client_policy = dir.join("client-policy.toml");
        write(&client_policy, &pins.client_policy(&measurement))?;

        // 5. The host.
        let (mut args, initrd, serial_log) =
            setup::backend_args(options, &enclave_bin, &enclave_config, &sim_dir).await?;
        setup::serving_args(
            &mut args,
            options,
            &enclave_config,
            &sealed_model,
            initdata.as_ref(),
        );
        let host_command = HostCommand {
            host_bin,
            args,
            dir: dir.clone(),
        };
        let host_started = Instant::now();
        let (host, endpoint) = host_command.spawn(&dir.join("host.log")).await?;

        Ok(Deployment {
            sim_dir,
            model_digest,
            model_name: options.model_name.clone(),
            measurement,
            enclave_config,
            sealed_model,
            keystore: keystore_dir,
            audit_log,
            client_policy,
            endpoint,
            host_log: dir.join("host.log"),
            initrd,
            serial_log,
            client_identity: options.client_identity.clone(),
            host_started,
            initdata,
            host: Some(host),
            broker,
            host_command,
        })
    }

    /// What the client trusts and presents: its policy (with the simulated root it names) and its
    /// certificate, if the deployment has one.
    pub fn session_config_builder(&self) -> Result<SessionConfigBuilder, SessionError> {
        let builder = SessionConfig::builder_from_file(&self.client_policy)?;
        Ok(match &self.client_identity {
            Some(id) => builder.with_client_identity(std::sync::Arc::clone(id)),
            None => builder,
        })
    }

    /// [`Deployment::session_config_builder`], built.
    pub fn session_config(&self) -> Result<std::sync::Arc<SessionConfig>, SessionError> {
        self.session_config_builder()?.build()
    }

    /// Opens an attested session with the client's policy.
    pub async fn session(&self) -> Result<AttestedSession, SessionError> {
        AttestedSession::connect(&self.endpoint, &*self.session_config()?).await
    }

    /// Waits until the enclave is attested (by the client's policy) and ready to serve its model.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<AttestedSession, DeploymentError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            match self.session().await {
                Ok(mut session) => match session.ready().await {
                    Ok(true) => return Ok(session),
                    Ok(false) => last = "attested, but the model is not loaded yet".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(DeploymentError::NotReady(timeout, last))
    }

    /// The process id of the host.
    pub fn host_pid(&self) -> Option<u32> {
        self.host.as_ref().and_then(Child::id)
    }

    /// Stops the host with SIGTERM (it stops the enclave, then exits) and the broker.
    pub async fn stop(mut self) {
        if let Some(mut host) = self.host.take() {
            terminate(&mut host).await;
        }
        self.broker.abort();
    }
}

impl HostCommand {
    /// Spawns `cloister-host` with its stderr in `log`; returns it and its relay's endpoint once it
    /// announces it.
    async fn spawn(&self, log: &Path) -> Result<(Child, String), DeploymentError> {
        let mut cmd = Command::new(&self.host_bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(log).map_err(step("create the host's log"))?,
            ))
            .kill_on_drop(true);
        let mut host = cmd.spawn().map_err(step("start cloister-host"))?;
        let stdout = host.stdout.take().ok_or_else(|| DeploymentError::Step {
            step: "start cloister-host",
            detail: "no stdout".into(),
        })?;
        let mut lines = BufReader::new(stdout).lines();
        let announce = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .map_err(|_| DeploymentError::Step {
                step: "start cloister-host",
                detail: format!(
                    "no 'listening on' line within 120 s (see {})",
                    log.display()
                ),
            })?
            .map_err(step("start cloister-host"))?
            .ok_or_else(|| DeploymentError::Step {
                step: "start cloister-host",
                detail: format!(
                    "cloister-host exited before listening (see {})",
                    log.display()
                ),
            })?;
        let endpoint = announce
            .strip_prefix("cloister-host: listening on ")
            .ok_or_else(|| DeploymentError::Step {
                step: "start cloister-host",
                detail: format!("unexpected first line {announce:?}"),
            })?
            .trim()
            .to_string();
        // Keep draining the host's stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((host, endpoint))
    }
}

impl Deployment {
    /// Starts one more host with the same enclave configuration, sealed model and broker: a fleet of
    /// identical enclaves (as replicas of one Kubernetes Deployment are). Its log is `host-N.log`.
    pub async fn start_another_host(&self, n: usize) -> Result<ExtraHost, DeploymentError> {
        let host_log = self.host_command.dir.join(format!("host-{n}.log"));
        let (child, endpoint) = self.host_command.spawn(&host_log).await?;
        Ok(ExtraHost {
            endpoint,
            host_log,
            child,
        })
    }
}

/// Runs `scripts/build-initrd.sh` for a VM deployment: the enclave binary unchanged (so the
/// simulated measurement is the one computed above), its configuration, the simulated platform.
async fn build_initrd(
    vm: &VmOptions,
    enclave_bin: &Path,
    config: &Path,
    sim_dir: &Path,
    output: &Path,
) -> Result<(), DeploymentError> {
    let out = Command::new("bash")
        .arg(&vm.build_initrd)
        .arg("--enclave")
        .arg(enclave_bin)
        .arg("--config")
        .arg(config)
        .arg("--kernel-modules")
        .arg(&vm.kernel_modules)
        .arg("--sim-dir")
        .arg(sim_dir)
        .arg("--output")
        .arg(output)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(step("build the initrd"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DeploymentError::Step {
            step: "build the initrd",
            detail: format!(
                "{} failed ({}): {}",
                vm.build_initrd.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// SIGTERM, then SIGKILL after 5 s. tokio's `Child` only sends SIGKILL, which would leave the host no
/// chance to stop the enclave; `kill(1)` avoids unsafe code for one signal.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.broker.abort();
        if let Some(host) = &self.host {
            if let Some(pid) = host.id() {
                // Best effort in a destructor: ask the host to stop its enclave; `kill_on_drop` then
                // reaps the host itself.
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}
