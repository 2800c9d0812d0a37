//! `cloister initdata`: the Confidential Containers initdata document that carries an enclave configuration
//! into a Kata pod VM, its pod annotation, and the HOST_DATA it yields (`docs/kubernetes.md`).
//!
//! Exit codes: 0 written; 2 usage or I/O error (an input that is not TOML, an output that exists).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use cloister_attestation::initdata::{InitData, InitDataAlgorithm, ANNOTATION, ENCLAVE_CONFIG_KEY};
use serde::Serialize;

use super::{exit, Failure};

/// Arguments of `cloister initdata`.
#[derive(clap::Args)]
#[command(
    about = "Write a Confidential Containers initdata document holding an enclave configuration; print its pod annotation and HOST_DATA",
    long_about = "Write a Confidential Containers initdata document (version 0.1.0) whose [data] holds the \
        enclave configuration under \"cloister-enclave.toml\" (and, when given, aa.toml, cdh.toml and \
        policy.rego for the pod's guest components), then print:\n\n  \
        host_data: the SEV-SNP HOST_DATA a Kata runtime sets for it: the document's digest with its \
        algorithm, cut to 32 bytes (sha256 as is) — pin it as host_data in client and key-broker policies;\n  \
        annotation: the value of the pod annotation io.katacontainers.config.hypervisor.cc_init_data: \
        base64 of the gzipped document.\n\n\
        The digest is over the document's bytes exactly as written: any edit (even whitespace) is another \
        HOST_DATA. The enclave, started with --config-from-initdata, refuses to run unless the document it \
        reads has this digest in its report's HOST_DATA.\n\n\
        Exit codes: 0 written; 2 usage or I/O error.",
    after_help = "Example:\n  cloister initdata --enclave-config enclave.toml --out initdata.toml\n  \
        python3 deploy/kubernetes/render.py --values deploy/kubernetes/values.toml --out rendered/"
)]
pub(crate) struct Args {
    /// The enclave's configuration (TOML), carried byte for byte.
    #[arg(long, value_name = "FILE")]
    enclave_config: PathBuf,
    /// The digest algorithm named in the document: sha256, sha384 or sha512.
    #[arg(long, value_name = "ALG", default_value = "sha384")]
    algorithm: InitDataAlgorithm,
    /// The attestation agent's configuration, carried as [data] "aa.toml".
    #[arg(long, value_name = "FILE")]
    aa_toml: Option<PathBuf>,
    /// The confidential data hub's configuration, carried as [data] "cdh.toml".
    #[arg(long, value_name = "FILE")]
    cdh_toml: Option<PathBuf>,
    /// The Kata agent policy, carried as [data] "policy.rego".
    #[arg(long, value_name = "FILE")]
    policy_rego: Option<PathBuf>,
    /// Where to write the document (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print one JSON object instead of the text lines.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Written<'a> {
    path: String,
    algorithm: &'static str,
    digest: String,
    host_data: String,
    annotation_key: &'static str,
    annotation: &'a str,
    data_keys: Vec<&'a str>,
}

/// Runs `cloister initdata`.
pub(crate) fn run(args: Args) -> ExitCode {
    exit(write(&args), "refused")
}

fn read_text(path: &Path, what: &str) -> Result<String, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("cannot read {what} {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("{what} {} is not UTF-8", path.display())))
}

fn write(args: &Args) -> Result<(), Failure> {
    let config = read_text(&args.enclave_config, "the enclave configuration")?;
    // Caught here rather than at the pod's start: the enclave would refuse a configuration that is not TOML.
    toml::from_str::<toml::Table>(&config).map_err(|e| {
        Failure::usage(format!(
            "the enclave configuration {} is not TOML: {e}",
            args.enclave_config.display()
        ))
    })?;
    let mut entries = BTreeMap::from([(ENCLAVE_CONFIG_KEY.to_owned(), config)]);
    for (path, key) in [
        (&args.aa_toml, "aa.toml"),
        (&args.cdh_toml, "cdh.toml"),
        (&args.policy_rego, "policy.rego"),
    ] {
        if let Some(path) = path {
            entries.insert(key.to_owned(), read_text(path, key)?);
        }
    }
    let doc = InitData::new(args.algorithm, entries).map_err(Failure::usage)?;
    let annotation = annotation(doc.as_bytes()).map_err(Failure::usage)?;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.out)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", args.out.display())))?;
    file.write_all(doc.as_bytes())
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", args.out.display())))?;

    if args.policy_rego.is_none() {
        // On Kata the container image is not in the launch measurement: only an agent policy inside the
        // document binds it. Without one, whoever launches pods can run another image under this HOST_DATA.
        eprintln!(
            "WARNING: no Kata agent policy (--policy-rego): this document binds the enclave's configuration \
             but not the container image that reads it; the host can start another image with the same \
             HOST_DATA, and policies pinning it would accept that pod's evidence (docs/kubernetes.md)."
        );
    }
    let written = Written {
        path: args.out.display().to_string(),
        algorithm: doc.algorithm().name(),
        digest: hex::encode(doc.digest()),
        host_data: hex::encode(doc.snp_host_data()),
        annotation_key: ANNOTATION,
        annotation: &annotation,
        data_keys: doc.keys().collect(),
    };
    if args.json {
        let text = serde_json::to_string(&written).map_err(Failure::usage)?;
        println!("{text}");
    } else {
        println!(
            "initdata: {} ({} bytes, {})",
            written.path,
            doc.as_bytes().len(),
            written.algorithm
        );
        println!("digest: {}", written.digest);
        println!("host_data: {}", written.host_data);
        println!("annotation: {ANNOTATION}: {annotation}");
    }
    Ok(())
}

/// The pod annotation's value: base64 (standard alphabet, padded, one line) of the gzipped document, as
/// Kata decodes it. The gzip header carries no file name and time zero, so the value is reproducible.
pub(crate) fn annotation(document: &[u8]) -> std::io::Result<String> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(document)?;
    let compressed = gz.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}
