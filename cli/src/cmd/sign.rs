//! `cloister sign`: a model producer signs a model (OpenSSF model signing, key-based), for producers
//! without other tooling (library: `cloister_publisher::sign`).
//!
//! stdout: one line, the signer id `sha256:<hex>` (what `model_signers` in a client policy and
//! `cloister seal` name). Exit codes: 0 signed (or key generated); 2 usage, key or file error.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_provenance::Curve;
use cloister_publisher::sign::{sign_model, ProducerKey};

use super::{exit, Failure};

/// Arguments of `cloister sign`.
#[derive(clap::Args)]
#[command(
    about = "Sign a model with a producer key (OpenSSF model signing), or make a producer key",
    long_about = "Sign a model with a producer's ECDSA key, in the OpenSSF model-signing format: a Sigstore \
        bundle (v0.3 JSON) whose DSSE envelope signs an in-toto statement listing every file of the model \
        with its SHA-256 and the root digest over them. It is what `model_signing sign key` writes, and the \
        reference `model_signing verify key` accepts it; `cloister seal --signature` and the enclave check it \
        against the producer's public key (docs/provenance.md).\n\n\
        MODEL is one file or a directory (every regular file under it, sorted, except .git, .gitattributes, \
        .github, .gitignore and the signature itself; symlinks are refused). The bundle is verified before \
        it is written.\n\n\
        With --generate-key KEY, writes a new private key (PKCS#8 PEM, mode 0600, never overwriting) and its \
        public half at KEY.pub (give that to model owners: `cloister seal --signer-key`, enclave \
        `signer_keys`).\n\n\
        stdout: the signer id, sha256:<hex> of the public key (DER SubjectPublicKeyInfo), as client policies \
        (`model_signers`) and receipts name it.\n\n\
        Exit codes: 0 done; 2 usage, key or file error.",
    after_help = "Examples:\n  cloister sign --generate-key producer.key\n  \
        cloister sign model/ --key producer.key --signature model.sig\n  \
        cloister seal --llm model/ --signature model.sig --signer-key producer.key.pub --out m.sealed --keystore keys/"
)]
pub(crate) struct Args {
    /// The model to sign: one file, or a directory.
    #[arg(value_name = "MODEL", required_unless_present = "generate_key", requires_all = ["key", "signature"])]
    model: Option<PathBuf>,
    /// The producer's private key (PKCS#8 PEM, ECDSA P-256 or P-384).
    #[arg(long, value_name = "FILE", conflicts_with = "generate_key")]
    key: Option<PathBuf>,
    /// Where to write the signature bundle (must not exist).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// Make a new producer key at FILE (and its public key at FILE.pub) instead of signing.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "signature"])]
    generate_key: Option<PathBuf>,
    /// The curve of a new key.
    #[arg(long, value_enum, default_value = "p256", requires = "generate_key")]
    curve: CurveArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CurveArg {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
}

/// Errors of the publishing side: files and keys are usage errors; a refusal by the verifier (of the
/// bundle just made, or of a log that does not check out) is a refusal.
impl From<cloister_publisher::Error> for Failure {
    fn from(e: cloister_publisher::Error) -> Self {
        use cloister_publisher::Error as E;
        match e {
            e @ (E::Log { .. } | E::Provenance(_)) => Failure::refused(e),
            other => Failure::usage(other),
        }
    }
}

/// Creates `path` with mode 0600 and writes `bytes`; never overwrites.
pub(crate) fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

pub(crate) fn run(args: Args) -> ExitCode {
    exit(run_inner(args), "refused")
}

fn run_inner(args: Args) -> Result<(), Failure> {
    if let Some(key_path) = &args.generate_key {
        let curve = match args.curve {
            CurveArg::P256 => Curve::P256,
            CurveArg::P384 => Curve::P384,
        };
        let (pem, key) = ProducerKey::generate(curve)?;
        let public_path = PathBuf::from(format!("{}.pub", key_path.display()));
        if public_path.exists() {
            return Err(Failure::Usage(format!(
                "{} exists; keys are never overwritten",
                public_path.display()
            )));
        }
        create_new(key_path, pem.as_bytes(), 0o600)?;
        create_new(&public_path, key.public().pem().as_bytes(), 0o644)?;
        eprintln!(
            "cloister sign: new producer key {} (public key {})",
            key_path.display(),
            public_path.display()
        );
        println!("{}", key.signer_id());
        return Ok(());
    }
    let (Some(model), Some(key_path), Some(out)) = (&args.model, &args.key, &args.signature) else {
        return Err(Failure::Usage(
            "MODEL, --key and --signature are required to sign".into(),
        ));
    };
    let key = ProducerKey::from_pem_file(key_path)?;
    let bundle = sign_model(model, &key, Some(out))?;
    create_new(out, &bundle, 0o644)?;
    eprintln!(
        "cloister sign: signed {} -> {} (signer {})",
        model.display(),
        out.display(),
        key.signer_id()
    );
    println!("{}", key.signer_id());
    Ok(())
}
