//! The steps of [`Deployment::start`](crate::Deployment::start), one function each, in the order it runs
//! them: the platform, the model owner's sealed model and broker, the enclave's measured configuration and
//! the measurement it implies, the policies, and the host's arguments.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cloister_attestation::policy::WorkloadIdentity;
use cloister_attestation::snp::Product;
use cloister_keybroker::{generate_tls_identity, BrokerConfig, KeyBroker};
use cloister_models::{Keystore, ModelDigest, ModelKey, DEFAULT_CHUNK_SIZE};
use cloister_sim::{simulated_launch_measurement, SimConfig, SimPlatform};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{
    build_initrd, step, write, DeploymentError, DeploymentOptions, HostBackend, VM_HOST_ADDR,
    VM_SIM_DIR,
};

/// The simulated platform: its state directory and the root certificate (`ark.pem`) policies name.
pub(crate) fn simulated_platform(
    dir: &Path,
    product: Product,
    rng: &SystemRandom,
) -> Result<(PathBuf, PathBuf), DeploymentError> {
    let sim_dir = dir.join("sim");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sim = SimPlatform::init(&sim_dir, &SimConfig::new(product, now - 60), rng)
        .map_err(step("create the simulated platform"))?;
    let sim_root = sim.certs_dir().join("ark.pem");
    Ok((sim_dir, sim_root))
}

/// What the model owner sealed: the keystore holding the model key, the sealed model and its digest.
pub(crate) struct SealedModel {
    pub(crate) keystore_dir: PathBuf,
    pub(crate) sealed_model: PathBuf,
    pub(crate) model_digest: ModelDigest,
}

/// The model owner seals the model under a fresh key and stores that key in a new keystore.
pub(crate) fn seal_model(
    options: &DeploymentOptions,
    rng: &SystemRandom,
) -> Result<SealedModel, DeploymentError> {
    let dir = &options.workdir;
    let keystore_dir = dir.join("owner/keystore");
    std::fs::create_dir_all(dir.join("owner")).map_err(step("create the owner directory"))?;
    let keystore = Keystore::create(&keystore_dir).map_err(step("create the keystore"))?;
    let key = ModelKey::generate(rng).map_err(step("draw a model key"))?;
    let sealed_model = dir
        .join("host")
        .join(format!("{}.sealed", options.model_name));
    std::fs::create_dir_all(dir.join("host")).map_err(step("create the host directory"))?;
    let header = cloister_models::seal_file(
        &options.model_path,
        &sealed_model,
        &key,
        &options.model_name,
        DEFAULT_CHUNK_SIZE,
        rng,
        &mut |_| {},
    )
    .map_err(step("seal the model"))?;
    let model_digest = *header.digest();
    keystore
        .put(&model_digest, &key)
        .map_err(step("store the model key"))?;
    drop(key);
    Ok(SealedModel {
        keystore_dir,
        sealed_model,
        model_digest,
    })
}

/// The key broker's TLS identity and its bound (not yet serving) listener.
pub(crate) struct BrokerIdentity {
    /// The broker's certificate (PEM).
    pub(crate) cert: PathBuf,
    pub(crate) listener: TcpListener,
    pub(crate) addr: SocketAddr,
}

/// Creates the broker's TLS identity in `owner` and binds its listener on the loopback.
pub(crate) async fn broker_identity(owner: &Path) -> Result<BrokerIdentity, DeploymentError> {
    let cert = owner.join("broker.crt.pem");
    let tls_key = owner.join("broker.key.pem");
    generate_tls_identity(&cert, &tls_key).map_err(step("create the broker's TLS identity"))?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(step("bind the key broker"))?;
    let addr = listener.local_addr().map_err(step("bind the key broker"))?;
    Ok(BrokerIdentity {
        cert,
        listener,
        addr,
    })
}

/// The text of the enclave's measured configuration: its firmware, the pinned broker, the model.
pub(crate) fn enclave_config_text(
    options: &DeploymentOptions,
    sim_dir: &Path,
    broker: &BrokerIdentity,
    model_digest: &ModelDigest,
) -> Result<String, DeploymentError> {
    let broker_addr = broker.addr;
    let cert_der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&broker.cert)
            .map_err(step("read the broker certificate"))?
    };
    // In a VM the state directory is the initrd's copy, and the broker (listening on this
    // machine's loopback) is reached through QEMU user networking.
    let (enclave_sim_dir, broker_seen_by_enclave) = match &options.backend {
        HostBackend::Sim => (sim_dir.display().to_string(), broker_addr.to_string()),
        HostBackend::QemuTcgInsecure(_) => (
            VM_SIM_DIR.to_string(),
            format!("{VM_HOST_ADDR}:{}", broker_addr.port()),
        ),
    };
    let firmware = options
        .enclave_firmware
        .clone()
        .unwrap_or_else(|| format!("firmware = \"simulated\"\nsim_dir = \"{enclave_sim_dir}\"\n"));
    Ok(format!(
        "# Measured configuration of cloister-enclave (its SHA-384 is in every claim).\n\
         {firmware}\
         {}\n\
         [key_broker]\n\
         address = \"{broker_seen_by_enclave}\"\n\
         certificate_sha256 = \"{}\"\n\n\
         [[models]]\n\
         name = \"{}\"\n\
         digest = \"{model_digest}\"\n{}",
        options.enclave_config_extra,
        hex::encode(cloister_keybroker::certificate_sha256(&cert_der)),
        options.model_name,
        options.model_config_extra,
    ))
}

/// With initdata: the document the host hands to the enclave, and the HOST_DATA its launch gets.
pub(crate) type InitdataFile = (PathBuf, [u8; 32]);

/// The measurement the simulated firmware reports for this enclave binary and configuration and, with
/// [`DeploymentOptions::initdata`], the initdata document written for the host and its HOST_DATA.
pub(crate) fn launch_measurement(
    options: &DeploymentOptions,
    enclave_bin: &Path,
    config_text: &str,
) -> Result<([u8; 48], Option<InitdataFile>), DeploymentError> {
    let dir = &options.workdir;
    let enclave_bytes = std::fs::read(enclave_bin).map_err(step("read the enclave binary"))?;
    // With initdata the launch measures the enclave alone and HOST_DATA binds the configuration.
    let (measurement, initdata) = if options.initdata {
        let doc = cloister_attestation::initdata::InitData::new(
            cloister_attestation::initdata::InitDataAlgorithm::Sha384,
            [(
                cloister_attestation::initdata::ENCLAVE_CONFIG_KEY.to_owned(),
                config_text.to_owned(),
            )]
            .into(),
        )
        .map_err(step("write the initdata document"))?;
        let path = dir.join("host/initdata.toml");
        std::fs::write(&path, doc.as_bytes()).map_err(step("write the initdata document"))?;
        let measurement = simulated_launch_measurement(&enclave_bytes, b"");
        (measurement, Some((path, doc.snp_host_data())))
    } else {
        let measurement = simulated_launch_measurement(&enclave_bytes, config_text.as_bytes());
        (measurement, None)
    };
    drop(enclave_bytes);
    Ok((measurement, initdata))
}

/// What both policies pin besides the measurement.
pub(crate) struct PolicyPins<'a> {
    pub(crate) identity: WorkloadIdentity,
    pub(crate) model_digest: &'a ModelDigest,
    pub(crate) sim_root: &'a Path,
    /// `host_data = "…"` with initdata, else empty.
    pub(crate) host_data_pin: String,
    pub(crate) policy_extra: &'a str,
}

impl<'a> PolicyPins<'a> {
    /// The pins of `options`, with `initdata` (the document and its HOST_DATA) if the launch has one.
    pub(crate) fn new(
        options: &'a DeploymentOptions,
        model_digest: &'a ModelDigest,
        sim_root: &'a Path,
        initdata: Option<&InitdataFile>,
    ) -> Self {
        let host_data_pin = initdata
            .map(|(_, h)| format!("host_data = \"{}\"\n", hex::encode(h)))
            .unwrap_or_default();
        let identity = options.workload_identity.unwrap_or(if initdata.is_some() {
            WorkloadIdentity::Initdata
        } else {
            WorkloadIdentity::Measurement
        });
        PolicyPins {
            identity,
            model_digest,
            sim_root,
            host_data_pin,
            policy_extra: &options.policy_extra,
        }
    }

    /// The model owner's policy, pinning `measurement`.
    pub(crate) fn owner_policy(&self, measurement: &[u8; 48]) -> String {
        let PolicyPins {
            identity,
            model_digest,
            sim_root,
            host_data_pin,
            policy_extra,
        } = self;
        format!(
            "# Model owner: release the key only to this enclave build and configuration.\n\
             workload_identity = \"{identity}\"\n\
             measurements = [\"{}\"]\n\
             model_digests = [\"{model_digest}\"]\n\
             vmpls = [0]\n\
             simulated_root = \"{}\"\n{host_data_pin}{}",
            hex::encode(measurement),
            sim_root.display(),
            policy_extra
        )
    }

    /// The client's policy, pinning `measurement`.
    pub(crate) fn client_policy(&self, measurement: &[u8; 48]) -> String {
        let PolicyPins {
            identity,
            model_digest,
            sim_root,
            host_data_pin,
            policy_extra,
        } = self;
        format!(
            "# Client: send inputs only to this enclave build, serving this model.\n\
             workload_identity = \"{identity}\"\n\
             measurements = [\"{}\"]\n\
             model_digests = [\"{model_digest}\"]\n\
             simulated_root = \"{}\"\n{host_data_pin}{}",
            hex::encode(measurement),
            sim_root.display(),
            policy_extra
        )
    }
}

/// Writes the broker's configuration in `owner` (next to the owner's policy, keystore and TLS identity)
/// and starts the broker on `listener` in this process; returns the task and the audit log's path.
pub(crate) fn start_key_broker(
    owner: &Path,
    listener: TcpListener,
    broker_addr: SocketAddr,
) -> Result<(JoinHandle<()>, PathBuf), DeploymentError> {
    let audit_log = owner.join("audit.log");
    let broker_config = owner.join("keybroker.toml");
    write(
        &broker_config,
        &format!(
            "listen = \"{broker_addr}\"\nkeystore = \"keystore\"\npolicy = \"owner-policy.toml\"\n\
             tls_certificate = \"broker.crt.pem\"\ntls_key = \"broker.key.pem\"\naudit_log = \"audit.log\"\n"
        ),
    )?;
    let broker = KeyBroker::new(
        BrokerConfig::from_file(&broker_config).map_err(step("load the broker configuration"))?,
    )
    .map_err(step("start the key broker"))?;
    let broker = tokio::spawn(async move {
        if let Err(e) = broker.serve(listener).await {
            eprintln!("key broker stopped: {e}");
        }
    });
    Ok((broker, audit_log))
}

/// The host's arguments that choose how it launches the enclave; for a VM, builds its initrd and returns
/// it with the serial console's log.
pub(crate) async fn backend_args(
    options: &DeploymentOptions,
    enclave_bin: &Path,
    enclave_config: &Path,
    sim_dir: &Path,
) -> Result<(Vec<OsString>, Option<PathBuf>, Option<PathBuf>), DeploymentError> {
    let dir = &options.workdir;
    let mut args: Vec<OsString> = Vec::new();
    let (mut initrd, mut serial_log) = (None, None);
    match &options.backend {
        HostBackend::Sim => {
            args.extend(["--enclave-bin".into(), enclave_bin.to_path_buf().into()]);
        }
        HostBackend::QemuTcgInsecure(vm) => {
            let image = dir.join("host/initrd.gz");
            build_initrd(vm, enclave_bin, enclave_config, sim_dir, &image).await?;
            let log = dir.join("serial.log");
            args.extend([
                "--backend".into(),
                "qemu-tcg-insecure".into(),
                "--qemu-kernel".into(),
                vm.kernel.clone().into(),
                "--qemu-initrd".into(),
                image.clone().into(),
                "--qemu-serial-log".into(),
                log.clone().into(),
            ]);
            args.extend(vm.host_args.iter().cloned());
            initrd = Some(image);
            serial_log = Some(log);
        }
    }
    Ok((args, initrd, serial_log))
}

/// Appends the host's arguments that say what it serves (configuration or initdata, sealed model) and
/// where (relay address, state directory, recording), then the options' own.
pub(crate) fn serving_args(
    args: &mut Vec<OsString>,
    options: &DeploymentOptions,
    enclave_config: &Path,
    sealed_model: &Path,
    initdata: Option<&InitdataFile>,
) {
    let dir = &options.workdir;
    match initdata {
        Some((document, _)) => args.extend([
            "--enclave-config".into(),
            document.clone().into(),
            "--initdata".into(),
        ]),
        None => args.extend([
            "--enclave-config".into(),
            enclave_config.to_path_buf().into(),
        ]),
    }
    args.extend([
        "--sealed-model".into(),
        sealed_model.to_path_buf().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        // The enclave's sealed governance state (budgets, the audit chain's head) across restarts.
        "--state-dir".into(),
        dir.join("host/state").into(),
    ]);
    if let Some(record) = &options.record {
        args.extend(["--record".into(), record.clone().into()]);
    }
    args.extend(options.host_args.iter().cloned());
}
