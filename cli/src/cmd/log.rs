//! `cloister log`: the release operator's append-only release log (library: `cloister_publisher::log`;
//! formats: `cloister_provenance::{tlog, release}`, docs/provenance.md).
//!
//! Exit codes: 0 done; 1 the log does not check out (a checkpoint that does not verify, entries that
//! differ from it, an old checkpoint it is not consistent with); 2 usage, key or file error.

use std::path::PathBuf;
use std::process::ExitCode;

use cloister_provenance::release::ReleaseEntry;
use cloister_provenance::SignerId;
use cloister_publisher::log::{LogKey, ReleaseLog};
use ring::digest::{digest, SHA256};

use super::{exit, Failure};

/// Arguments of `cloister log`.
#[derive(clap::Args)]
#[command(
    about = "Keep the append-only release log: enclave measurements, models, broker policies",
    long_about = "Keep the append-only release log (transparency): every release of the enclave (its launch \
        measurement), every model (its sealed digest and signer) and every key-broker policy is an entry of \
        an RFC 6962 Merkle tree, and after each append the log's Ed25519 key signs a checkpoint (C2SP \
        tlog-checkpoint, the format Rekor and the Go checksum database use).\n\n\
        Clients require inclusion: a policy with\n\n\
        \x20 [release_log]\n\
        \x20 key = \"<the verifier key `log init` prints>\"\n\
        \x20 proofs = \"release-proofs.json\"   # `cloister log prove`, relative to the policy\n\n\
        makes `cloister infer`, `chat`, `proxy` and `bench` refuse an enclave whose measurement, or a model \
        (with its attested signer) that is not in the log, before anything is sent. Anyone holding an older \
        checkpoint checks that the log only grew: `cloister log verify --old FILE`.\n\n\
        Exit codes: 0 done; 1 the log does not check out; 2 usage, key or file error.",
    after_help = "Examples:\n  cloister log init --dir releases --origin example.com/cloister-releases --key-out release-log.key\n  \
        cloister log append --dir releases --key release-log.key --enclave <96 hex digits> --label v1.4.0\n  \
        cloister log append --dir releases --key release-log.key --model sha384:… --signer sha256:…\n  \
        cloister log append --dir releases --key release-log.key --broker-policy owner-policy.toml\n  \
        cloister log prove --dir releases --out release-proofs.json\n  \
        cloister log verify --dir releases --old checkpoint.2026-11-01"
)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(clap::Subcommand)]
enum LogCommand {
    /// Create a log and its signing key; prints the verifier key clients pin.
    Init {
        /// The log directory (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The log's name: the checkpoints' origin and the key's name (a schemeless URL by convention).
        #[arg(long, value_name = "NAME")]
        origin: String,
        /// Where to write the log's private key (PKCS#8 PEM, mode 0600, never overwritten). Keep it apart
        /// from the log: whoever holds it can sign checkpoints.
        #[arg(long, value_name = "FILE")]
        key_out: PathBuf,
    },
    /// Append one entry and sign the new checkpoint; prints the entry's index.
    Append {
        /// The log directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The log's private key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// An enclave release: its launch measurement (96 hex digits, `cloister measure` prints it).
        #[arg(long, value_name = "HEX", group = "entry")]
        enclave: Option<String>,
        /// A model release: its sealed digest, sha384:<hex> (`cloister seal` prints it).
        #[arg(long, value_name = "DIGEST", group = "entry")]
        model: Option<String>,
        /// The model's signer, sha256:<hex> (`cloister seal --signature` and `cloister sign` print it).
        #[arg(long, value_name = "ID", requires = "model")]
        signer: Option<String>,
        /// A key-broker policy release: the policy file (its SHA-256 is logged).
        #[arg(long, value_name = "FILE", group = "entry")]
        broker_policy: Option<PathBuf>,
        /// A label for the entry (a version, a name).
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
    },
    /// Write the inclusion proofs of every entry against the current checkpoint (the file clients'
    /// `[release_log] proofs` names).
    Prove {
        /// The log directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Where to write the proofs (JSON; replaced).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check the log: checkpoint signature, entries against it, and with --old, that the log only grew
    /// since an older checkpoint (consistency proof).
    Verify {
        /// The log directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// An older checkpoint of this log (a file holding the signed note).
        #[arg(long, value_name = "FILE")]
        old: Option<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> ExitCode {
    exit(run_inner(args), "refused")
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

fn run_inner(args: Args) -> Result<(), Failure> {
    match args.command {
        LogCommand::Init {
            dir,
            origin,
            key_out,
        } => {
            let verifier = ReleaseLog::init(&dir, &origin, &key_out)?;
            eprintln!(
                "cloister log: created {} (key {}); clients pin the verifier key:",
                dir.display(),
                key_out.display()
            );
            println!("{verifier}");
        }
        LogCommand::Append {
            dir,
            key,
            enclave,
            model,
            signer,
            broker_policy,
            label,
        } => {
            let mut log = ReleaseLog::open(&dir)?;
            let key = LogKey::from_pem_file(&key, log.verifier().name())?;
            let entry = if let Some(measurement) = enclave {
                ReleaseEntry::Enclave {
                    measurement: measurement.to_ascii_lowercase(),
                    label,
                }
            } else if let Some(digest) = model {
                if let Some(s) = &signer {
                    SignerId::parse(s).ok_or_else(|| {
                        Failure::Usage(format!(
                            "--signer {s:?}: expected sha256:<64 lowercase hex digits>"
                        ))
                    })?;
                }
                ReleaseEntry::Model {
                    digest,
                    signer,
                    label,
                }
            } else if let Some(policy) = broker_policy {
                ReleaseEntry::BrokerPolicy {
                    digest: format!("sha256:{}", hex::encode(digest(&SHA256, &read(&policy)?))),
                    label,
                }
            } else {
                return Err(Failure::Usage(
                    "one of --enclave, --model or --broker-policy is required".into(),
                ));
            };
            entry.to_leaf().map_err(Failure::usage)?;
            let index = log.append(&entry, &key)?;
            eprintln!(
                "cloister log: {entry} at index {index}; checkpoint now covers {} entries",
                log.checkpoint().0.size
            );
            println!("{index}");
        }
        LogCommand::Prove { dir, out } => {
            let log = ReleaseLog::open(&dir)?;
            let proofs = log.proofs(|_| true);
            let json = serde_json::to_vec_pretty(&proofs).map_err(Failure::usage)?;
            std::fs::write(&out, json)
                .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
            eprintln!(
                "cloister log: {} proofs against the checkpoint of {} entries -> {}",
                proofs.entries.len(),
                log.checkpoint().0.size,
                out.display()
            );
        }
        LogCommand::Verify { dir, old } => {
            let log = ReleaseLog::open(&dir)?;
            let (cp, _) = log.checkpoint();
            println!(
                "release log {}: {} entries, root {}, checkpoint verified under {}",
                cp.origin,
                cp.size,
                hex::encode(cp.root),
                log.verifier()
            );
            if let Some(old) = old {
                let note = String::from_utf8(read(&old)?)
                    .map_err(|_| Failure::Usage(format!("{}: not UTF-8", old.display())))?;
                let old_size = log.check_consistency(&note)?;
                println!(
                    "consistent with {} ({old_size} entries): the log only grew",
                    old.display()
                );
            }
        }
    }
    Ok(())
}
