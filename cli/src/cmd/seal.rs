//! `cloister seal`: the model owner seals an ONNX model under a fresh key and files the key in the
//! key broker's keystore; `cloister seal --inspect` shows a sealed model's header.
//!
//! Exit codes: 0 sealed (or inspected); 1 the model was refused (not ONNX, unsupported by tract,
//! external data) or the file to inspect is not a valid sealed model; 2 usage or I/O error (including a
//! key that already exists for this model: keys are never overwritten).
//!
//! stdout: after sealing, exactly one line, `sha384:<hex>` (the digest that policies and enclave
//! configurations pin), so that `DIGEST=$(cloister seal ...)` works. Everything else goes to stderr.

use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_cli::seal_check::{self, ModelCheckError};
use cloister_models::{
    read_header, seal_file, Cipher, Error as ModelsError, Keystore, KeystoreError, ModelDigest,
    ModelKey, Phase, SealedHeader, DEFAULT_CHUNK_SIZE, MAGIC,
};
use indicatif::{ProgressBar, ProgressStyle};
use ring::rand::SystemRandom;
use serde::Serialize;

use super::{exit, Failure};

/// Models at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Arguments of `cloister seal`.
#[derive(clap::Args)]
#[command(
    about = "Seal an ONNX model under a fresh key and store the key in the key broker's keystore",
    long_about = "Seal an ONNX model under a fresh key and store the key in the key broker's keystore.\n\n\
        The model is checked first: it must parse as ONNX, keep all its weights inside the file, use only \
        operators tract implements, and load and optimise in tract, as the enclave will. A fresh 256-bit \
        key is drawn from the system RNG; the sealed model (AES-256-GCM, STREAM construction, see \
        docs/sealed-format.md) can be stored anywhere, the host included. The key is written to \
        KEYSTORE/<digest>.key (directory 0700, file 0600; created if missing) and is never overwritten.\n\n\
        With --llm DIR instead of --model, seals an LLM: DIR holds model.onnx (a decoder in the Hugging Face \
        layout with past_key_values inputs), tokenizer.json, chat_template.jinja and generation.json \
        (scripts/fetch-llm.sh writes them); they are sealed as one bundle, so the digest covers the tokenizer \
        and the chat template as well as the weights, and the bundle is loaded as the enclave will (decoder \
        with tract's KV cache, tokenizer, template) before anything is sealed. The enclave serves it on \
        POST /v1/chat/completions.\n\n\
        The last line of stdout is the model digest, sha384:<hex>: pin it in the owner's policy \
        (model_digests) and in the enclave configuration ([[models]] digest).\n\n\
        With --signature FILE --signer-identity ID --signer-issuer URL --trusted-root FILE, the bundle is \
        a keyless (Sigstore) one: its certificate must chain to a certificate authority of the trusted root, \
        name that identity and issuer, and be valid when the transparency log (whose inclusion proof and \
        signed timestamp are checked offline against the trusted root) recorded the signature.\n\n\
        With --signature FILE --signer-key PEM, the model's OpenSSF model-signing bundle (as the reference \
        `model_signing` package writes it) is verified against the producer's key, every file is checked \
        against its signed digest (the first that differs is named), and the bundle is sealed with the \
        model: the digest then covers both, and an enclave whose [[models]] entry lists signer_keys refuses \
        a model without a valid signature by one of them.\n\n\
        With --inspect FILE, prints the header of a sealed model (no key needed, none shown).\n\n\
        Exit codes: 0 done; 1 model refused, or not a valid sealed model; 2 usage or I/O error.",
    after_help = "Examples:\n  cloister seal --model model.onnx --out model.sealed --keystore keys/\n  \
        cloister seal --llm .cache/llm --out smollm2.sealed --keystore keys/\n  \
        cloister seal --inspect model.sealed --json"
)]
pub(crate) struct Args {
    /// The plaintext ONNX model to seal.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["inspect", "llm"], conflicts_with = "llm")]
    model: Option<PathBuf>,
    /// An LLM directory to seal as one bundle: model.onnx, tokenizer.json, chat_template.jinja,
    /// generation.json. Default name: the `model` of generation.json.
    #[arg(long, value_name = "DIR")]
    llm: Option<PathBuf>,
    /// Where to write the sealed model (must not exist).
    #[arg(long, value_name = "FILE", required_unless_present = "inspect")]
    out: Option<PathBuf>,
    /// The key broker's keystore directory (created with mode 0700 if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "inspect")]
    keystore: Option<PathBuf>,
    /// Model name recorded in the header (1..=255 bytes of UTF-8, no control characters).
    /// Default: the model file's stem.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// An OpenSSF model-signing bundle over the model (`model_signing sign key`, or a directory signature
    /// for --llm): checked here against --signer-key, then sealed with the model, so that the enclave
    /// checks it again before loading (docs/provenance.md).
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// The producer's public key (PEM, ECDSA P-256 or P-384) that must have made --signature; repeat to
    /// accept any of several.
    #[arg(long, value_name = "PEM", requires = "signature")]
    signer_key: Vec<PathBuf>,
    /// A keyless signer allowed to have made --signature: its certificate identity (an e-mail address or
    /// a URI), with --signer-issuer; repeat the pair to accept several. Needs --trusted-root.
    #[arg(long, value_name = "IDENTITY", requires_all = ["signature", "signer_issuer", "trusted_root"])]
    signer_identity: Vec<String>,
    /// The OIDC issuer of the --signer-identity at the same position.
    #[arg(long, value_name = "URL", requires = "signer_identity")]
    signer_issuer: Vec<String>,
    /// Sigstore's trusted_root.json (certificate authorities and transparency logs) that keyless
    /// signatures are checked against, offline.
    #[arg(long, value_name = "FILE", requires = "signer_identity")]
    trusted_root: Option<PathBuf>,
    /// Print the header of a sealed model instead of sealing.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["model", "llm", "out", "keystore", "name", "signature"]
    )]
    inspect: Option<PathBuf>,
    /// With --inspect: print one JSON object on stdout.
    #[arg(long, requires = "inspect")]
    json: bool,
}

/// Runs `cloister seal`.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = match &args.inspect {
        Some(file) => inspect(file, args.json),
        None => seal(&args),
    };
    exit(result, "refused")
}

fn required<'a>(v: &'a Option<PathBuf>, flag: &str) -> Result<&'a Path, Failure> {
    v.as_deref()
        .ok_or_else(|| Failure::Usage(format!("{flag} is required")))
}

fn seal(args: &Args) -> Result<(), Failure> {
    if let Some(dir) = &args.llm {
        return seal_llm(args, dir);
    }
    let model = required(&args.model, "--model")?;
    let out = required(&args.out, "--out")?;
    let keystore_dir = required(&args.keystore, "--keystore")?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => model
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "cannot derive a model name from {}: pass --name",
                    model.display()
                ))
            })?,
    };
    if out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists; refusing to overwrite it (choose another --out or remove it)",
            out.display()
        )));
    }

    // 1. Check the model, as the enclave will load it.
    let bytes = fs::read(model)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", model.display())))?;
    let digest = ModelDigest::of(&bytes);
    let summary = seal_check::check_model(&bytes).map_err(|e| refused_model(model, &e))?;
    let plaintext_len = bytes.len() as u64;
    let file_name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.onnx");
    let signed = signed_plaintext(args, &[(file_name, &bytes)], &bytes)?;
    drop(bytes); // sealing streams from the file
    eprintln!(
        "model: {} ({} bytes, opset {}, {} nodes, inputs [{}], outputs [{}]): tract loads and optimises it ({})",
        model.display(),
        plaintext_len,
        summary.opset,
        summary.nodes,
        summary.inputs.join(", "),
        summary.outputs.join(", "),
        summary.planning,
    );

    match signed {
        Some(container) => seal_via_temp(&container, out, keystore_dir, &name),
        None => seal_checked(model, out, keystore_dir, &name, &digest, plaintext_len),
    }
}

/// With `--signature`: verifies the bundle against `--signer-key` and the model's `files` against the
/// signed digests, and returns the signed-model container (bundle, then `model`) to seal.
fn signed_plaintext(
    args: &Args,
    files: &[(&str, &[u8])],
    model: &[u8],
) -> Result<Option<Vec<u8>>, Failure> {
    use cloister_provenance::keyless::{KeylessPolicy, SignerIdentity, TrustedRoot};
    use cloister_provenance::{verify_bundle_with, SignedModel, SignerKey, Trust};
    let Some(sig_path) = &args.signature else {
        return Ok(None);
    };
    if args.signer_key.is_empty() && args.signer_identity.is_empty() {
        return Err(Failure::Usage(
            "--signature needs --signer-key (the producer's public key, PEM) or --signer-identity with \
             --signer-issuer and --trusted-root (a keyless signer) to check it against"
                .into(),
        ));
    }
    if args.signer_identity.len() != args.signer_issuer.len() {
        return Err(Failure::Usage(format!(
            "{} --signer-identity but {} --signer-issuer: give one issuer per identity",
            args.signer_identity.len(),
            args.signer_issuer.len()
        )));
    }
    let keyless = match &args.trusted_root {
        None => None,
        Some(path) => {
            let json = fs::read(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            let root = TrustedRoot::from_json(&json)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            Some(KeylessPolicy {
                root,
                identities: args
                    .signer_identity
                    .iter()
                    .zip(&args.signer_issuer)
                    .map(|(identity, issuer)| SignerIdentity {
                        identity: identity.clone(),
                        issuer: issuer.clone(),
                    })
                    .collect(),
            })
        }
    };
    let mut keys = Vec::with_capacity(args.signer_key.len());
    for path in &args.signer_key {
        let pem = fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        keys.push(
            SignerKey::from_pem(&pem)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?,
        );
    }
    let bundle = fs::read(sig_path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", sig_path.display())))?;
    let trust = Trust { keys, keyless };
    let manifest = verify_bundle_with(&bundle, &trust)
        .and_then(|m| m.check_files(files).map(|()| m))
        .map_err(|e| Failure::Refused(format!("{}: {e}", sig_path.display())))?;
    let signer = match manifest.identity() {
        Some(identity) => format!("{} = {identity}", manifest.signer()),
        None => manifest.signer().to_string(),
    };
    eprintln!(
        "signature: {} verifies: signer {signer}, root digest sha256:{}, {} file{} as signed",
        sig_path.display(),
        hex::encode(manifest.root_digest()),
        manifest.files().len(),
        if manifest.files().len() == 1 { "" } else { "s" },
    );
    SignedModel::build(&bundle, model)
        .map(Some)
        .map_err(|e| Failure::Refused(format!("{}: {e}", sig_path.display())))
}

/// Seals bytes held in memory: written next to `--out` (mode 0600) only for the time of sealing, which
/// streams from a file, and removed on every path.
fn seal_via_temp(
    plaintext: &[u8],
    out: &Path,
    keystore_dir: &Path,
    name: &str,
) -> Result<(), Failure> {
    let digest = ModelDigest::of(plaintext);
    let mut temp_name = out.as_os_str().to_owned();
    temp_name.push(".bundle-partial");
    let temp = PathBuf::from(temp_name);
    let sealed = write_private(&temp, plaintext)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", temp.display())))
        .and_then(|()| {
            seal_checked(
                &temp,
                out,
                keystore_dir,
                name,
                &digest,
                plaintext.len() as u64,
            )
        });
    let _ = fs::remove_file(&temp);
    sealed
}

/// Steps 2-4 of sealing a checked plaintext file: keystore, seal under a fresh key, file the key; prints the
/// digest line.
fn seal_checked(
    model: &Path,
    out: &Path,
    keystore_dir: &Path,
    name: &str,
    digest: &ModelDigest,
    plaintext_len: u64,
) -> Result<(), Failure> {
    // 2. The keystore: open or create, and refuse early if this model already has a key.
    let keystore = open_or_create_keystore(keystore_dir)?;
    match keystore.get(digest) {
        Ok(_existing) => return Err(key_exists(&keystore, digest)),
        Err(ModelsError::Keystore(KeystoreError::KeyNotFound { .. })) => {}
        Err(e) => return Err(Failure::Usage(models_error(&e))),
    }

    // 3. Seal under a fresh key.
    let rng = SystemRandom::new();
    let key = ModelKey::generate(&rng).map_err(|e| Failure::Usage(models_error(&e)))?;
    let bar = progress_bar(plaintext_len);
    let mut on_progress = |p: cloister_models::Progress| {
        let msg = match p.phase {
            Phase::Hashing => "hashing",
            Phase::Sealing => "sealing",
            _ => "working",
        };
        bar.set_message(msg);
        bar.set_length(p.total);
        bar.set_position(p.done);
    };
    let header = seal_file(
        model,
        out,
        &key,
        name,
        DEFAULT_CHUNK_SIZE,
        &rng,
        &mut on_progress,
    );
    bar.finish_and_clear();
    let header = header.map_err(|e| match e {
        ModelsError::Io(io) => Failure::Usage(format!(
            "cannot seal {} to {}: {io}",
            model.display(),
            out.display()
        )),
        other => Failure::Usage(models_error(&other)),
    })?;
    if !header.digest().ct_eq(digest) {
        let _ = fs::remove_file(out);
        return Err(Failure::Usage(format!(
            "{} changed between the checks and sealing; nothing was stored, try again",
            model.display()
        )));
    }

    // 4. File the key. On failure the sealed output is useless: remove it.
    if let Err(e) = keystore.put(digest, &key) {
        let _ = fs::remove_file(out);
        return Err(match e {
            ModelsError::Keystore(KeystoreError::KeyExists { .. }) => key_exists(&keystore, digest),
            other => Failure::Usage(models_error(&other)),
        });
    }
    drop(key);

    eprintln!(
        "sealed: {} -> {} ({} bytes, {} chunk{} of {} bytes, key id {})",
        header.name(),
        out.display(),
        header.sealed_len(),
        header.chunk_count(),
        if header.chunk_count() == 1 { "" } else { "s" },
        header.chunk_size(),
        header.key_id(),
    );
    eprintln!(
        "key: stored in {}/{}.key",
        keystore.dir().display(),
        digest.to_hex()
    );
    println!("{digest}");
    Ok(())
}

/// `cloister seal --llm DIR`: the four files as one bundle, loaded as the enclave will, then sealed like a
/// model. The bundle is written next to `--out` (mode 0600) only for the time of sealing, which streams from
/// a file, and removed on every path.
fn seal_llm(args: &Args, dir: &Path) -> Result<(), Failure> {
    use cloister_inference::llm::{Llm, LlmBundle, ENTRY_NAMES};
    let out = required(&args.out, "--out")?;
    let keystore_dir = required(&args.keystore, "--keystore")?;
    if out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists; refusing to overwrite it (choose another --out or remove it)",
            out.display()
        )));
    }
    let mut files = Vec::with_capacity(ENTRY_NAMES.len());
    for name in ENTRY_NAMES {
        let path = dir.join(name);
        files.push(fs::read(&path).map_err(|e| {
            Failure::Usage(format!(
                "cannot read {}: {e} (an LLM directory holds {}; scripts/fetch-llm.sh writes one)",
                path.display(),
                ENTRY_NAMES.join(", ")
            ))
        })?);
    }
    let bundle = LlmBundle::build(&files[0], &files[1], &files[2], &files[3]);
    let named: Vec<(&str, &[u8])> = ENTRY_NAMES
        .iter()
        .copied()
        .zip(files.iter().map(Vec::as_slice))
        .collect();
    let signed = signed_plaintext(args, &named, &bundle)?;
    drop(named);
    drop(files);
    let started = std::time::Instant::now();
    let parsed = LlmBundle::parse(&bundle)
        .map_err(|e| Failure::Refused(format!("{}: {e}", dir.display())))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => parsed.config().model.clone(),
    };
    let llm = Llm::from_bundle(&parsed)
        .map_err(|e| Failure::Refused(format!("{}: {e}", dir.display())))?;
    eprintln!(
        "llm: {} ({} bytes as a bundle, vocabulary {}, context {} tokens, {} KV-cache bytes a token): tract          loads it with its KV cache, the tokenizer and the chat template render a prompt ({:.1} s)",
        dir.display(),
        bundle.len(),
        llm.decoder().vocabulary(),
        llm.context_length(),
        llm.decoder().kv_bytes_per_token(),
        started.elapsed().as_secs_f64()
    );
    drop(llm);
    seal_via_temp(
        signed.as_deref().unwrap_or(&bundle),
        out,
        keystore_dir,
        &name,
    )
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn refused_model(model: &Path, e: &ModelCheckError) -> Failure {
    Failure::Refused(format!("{}: {e}", model.display()))
}

fn key_exists(keystore: &Keystore, digest: &ModelDigest) -> Failure {
    Failure::Usage(format!(
        "the keystore {} already holds a key for {digest}; keys are never overwritten. \
         The existing sealed blob of this model (sealed with that key) is still valid: keep using it. \
         To re-seal under a new key, first move {}/{}.key out of the keystore (and retire every blob \
         sealed with it)",
        keystore.dir().display(),
        keystore.dir().display(),
        digest.to_hex()
    ))
}

fn open_or_create_keystore(dir: &Path) -> Result<Keystore, Failure> {
    if dir.exists() {
        return Keystore::open(dir).map_err(|e| Failure::Usage(models_error(&e)));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", parent.display())))?;
    }
    Keystore::create(dir).map_err(|e| Failure::Usage(models_error(&e)))
}

/// The error with its sources (the models crate keeps I/O details in `source`).
fn models_error(e: &ModelsError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.ends_with(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

fn progress_bar(len: u64) -> ProgressBar {
    if len < PROGRESS_THRESHOLD || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:8} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Serialize)]
struct InspectJson<'a> {
    magic: String,
    format_version: u16,
    name: &'a str,
    digest: String,
    plaintext_len: u64,
    chunk_size: u32,
    chunk_count: u64,
    key_id: String,
    cipher: &'static str,
    sealed_len: u64,
    file_len: u64,
}

fn cipher_name(c: Cipher) -> &'static str {
    match c {
        Cipher::Aes256Gcm => "AES-256-GCM",
        _ => "unknown",
    }
}

fn inspect(file: &Path, json: bool) -> Result<(), Failure> {
    let f = fs::File::open(file)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let file_len = f
        .metadata()
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?
        .len();
    let (header, _) = read_header(io::BufReader::new(f)).map_err(|e| match e {
        ModelsError::Io(io) => Failure::Usage(format!("cannot read {}: {io}", file.display())),
        other => Failure::Refused(format!(
            "{}: not a valid sealed model: {other}",
            file.display()
        )),
    })?;
    if json {
        let out = inspect_json(&header, file_len);
        let s = serde_json::to_string(&out)
            .map_err(|e| Failure::Usage(format!("cannot encode JSON: {e}")))?;
        println!("{s}");
    } else {
        print_header(&header, file_len);
    }
    Ok(())
}

fn inspect_json(header: &SealedHeader, file_len: u64) -> InspectJson<'_> {
    InspectJson {
        magic: String::from_utf8_lossy(MAGIC).into_owned(),
        format_version: header.format_version(),
        name: header.name(),
        digest: header.digest().to_string(),
        plaintext_len: header.plaintext_len(),
        chunk_size: header.chunk_size(),
        chunk_count: header.chunk_count(),
        key_id: header.key_id().to_string(),
        cipher: cipher_name(header.cipher()),
        sealed_len: header.sealed_len(),
        file_len,
    }
}

fn print_header(header: &SealedHeader, file_len: u64) {
    println!(
        "magic:          {} (format version {})",
        String::from_utf8_lossy(MAGIC),
        header.format_version()
    );
    println!("name:           {}", header.name());
    println!("digest:         {}", header.digest());
    println!("plaintext_len:  {} bytes", header.plaintext_len());
    println!(
        "chunk_size:     {} bytes ({} chunk{})",
        header.chunk_size(),
        header.chunk_count(),
        if header.chunk_count() == 1 { "" } else { "s" }
    );
    println!("key_id:         {}", header.key_id());
    println!("cipher:         {}", cipher_name(header.cipher()));
    let note = if file_len == header.sealed_len() {
        String::new()
    } else {
        format!(" (the file is {file_len} bytes: truncated or extended; opening it will fail)")
    };
    println!("sealed_len:     {} bytes{note}", header.sealed_len());
    println!("(header only: not authenticated until the model is opened with its key)");
}
