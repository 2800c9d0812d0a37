//! `/state/{label}/{version}`: the enclave's sealed governance state, kept by the host (`--state-dir`).
//!
//! The enclave seals its governance state (client budgets, the audit chain's head) with AES-256-GCM under a
//! key the host never sees, and hands the ciphertext here so that it survives enclave restarts; at restart
//! it asks for it back (docs/architecture.md, "State store"):
//!
//! - `PUT /state/{label}/{version}`, body the sealed blob → `204`; `400` malformed label, version or body
//!   (empty); `409` that version is stored with different bytes (or is older than every version kept);
//!   `413` over [`MAX_STATE_BYTES`]; `405` another method.
//! - `GET /state/{label}/{version}` → `200` and the bytes, `404` if not stored.
//! - `GET /state/{label}/latest` → `200`, the highest stored version's bytes and
//!   `Cloister-State-Version: N`; `404` if none.
//!
//! Trust: the host is an adversary and this store gives it nothing new. It sees ciphertext only; it can
//! withhold, drop, or serve an older blob, which the enclave detects (the blob is authenticated, and the
//! key broker keeps a counter and the digest of the latest committed blob: rollback protection lives
//! there, not here). What this module defends is the host's own file system against its one client (the
//! enclave, or whatever else on this machine speaks to the loopback port): every input is parsed
//! strictly, labels are a charset without `/` or `.` (so a label is one directory name, never a path),
//! bodies are capped before they are buffered, and no symlink below `--state-dir` is followed:
//!
//! - entries are opened with O_NOFOLLOW and must be regular files no larger than [`MAX_STATE_BYTES`];
//! - a label directory is checked with lstat before each use and must be a real directory;
//! - writes go to a new temporary file (random name, O_CREAT|O_EXCL|O_NOFOLLOW, so nothing already in the
//!   directory is opened for writing), fsynced, renamed over the entry, then the directory is fsynced: a
//!   reader never sees half a blob, and a stored blob survives a crash of the host.
//!
//! The three highest versions of each label are kept: the enclave may crash after storing version N+1
//! and before committing it to the key broker, and then needs version N back.
//!
//! Beyond the contract: a PUT body slower than 30 s gets `408`, and a store that fails (disk full, a
//! symlink or a FIFO planted in it) gets `500`; the detail goes to the host's log only.
//!
//! What remains: one who can write into `--state-dir` (the host's operator, who is the adversary anyway)
//! can delete, replace or withhold entries — the enclave and the key broker catch that — and can race a
//! PUT by swapping a label directory for a symlink between its check and the rename.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::num::NonZeroU64;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hyper::Method;
use ring::rand::{SecureRandom as _, SystemRandom};

mod http;
#[cfg(test)]
mod tests;

pub use self::http::respond;

/// Path prefix of state requests.
pub const PREFIX: &str = "/state/";

/// The largest sealed state accepted or read back. Budgets and a chain head seal to a few KiB; the cap
/// bounds what one request can make the host buffer (times the blob service's connection limit).
pub const MAX_STATE_BYTES: usize = 4 * 1024 * 1024;

/// The response header of `GET /state/{label}/latest` that names the version served.
pub const VERSION_HEADER: &str = "cloister-state-version";

/// Longest label.
const MAX_LABEL_LEN: usize = 64;

/// Versions kept per label: the latest, and two the enclave may fall back to after a crash between
/// storing a version and committing it to the key broker.
const KEPT_VERSIONS: usize = 3;

/// How long a client may take to send a PUT body. 4 MiB on loopback takes milliseconds; without a bound a
/// client could hold a connection slot (and up to 4 MiB) forever.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at a fresh temporary name: with 128 random bits a collision means someone squats names.
const TEMP_NAME_ATTEMPTS: u32 = 4;

/// Prefix of temporary files; no entry name starts with a dot.
const TEMP_PREFIX: &str = ".tmp-";

/// Suffix of entries: `{version:020}.sealed`.
const ENTRY_SUFFIX: &str = ".sealed";

/// Digits of an entry's version: u64::MAX has 20, so zero-padding to 20 sorts names by version.
const VERSION_DIGITS: usize = 20;

/// What the routes answer on a host started without `--state-dir`.
const NO_STORE: &str = "this host keeps no enclave state (it was started without --state-dir)\n";

/// A state label: 1 to 64 characters of `[a-z0-9-]`, not starting with `-`.
///
/// Why so narrow: the label becomes a directory name under `--state-dir`. Without `/` and `.` it can
/// name neither a path nor `.`/`..` nor a temporary file; without a leading `-` it is never mistaken for
/// an option by tools an operator points at the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    /// The label, if `s` is a valid one.
    pub fn parse(s: &str) -> Option<Self> {
        let valid = (1..=MAX_LABEL_LEN).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| Self(s.to_owned()))
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version: decimal, 1 to u64::MAX, no sign, no leading zero (one spelling per number, so two paths
/// never name the same entry).
pub fn parse_version(s: &str) -> Option<NonZeroU64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits are left: the parse fails on overflow alone.
    s.parse::<u64>().ok().and_then(NonZeroU64::new)
}

/// What a request under [`PREFIX`] asks for (sans-IO: from the method and path alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRoute {
    /// `PUT /state/{label}/{version}`.
    Put {
        /// The label.
        label: Label,
        /// The version.
        version: NonZeroU64,
    },
    /// `GET /state/{label}/{version}`.
    Get {
        /// The label.
        label: Label,
        /// The version.
        version: NonZeroU64,
    },
    /// `GET /state/{label}/latest`.
    Latest {
        /// The label.
        label: Label,
    },
    /// A path that is not `/state/{label}/{version|latest}` with a valid label and version: `400`.
    Malformed,
    /// A valid path with a method it does not take: `405`, with this `Allow`.
    MethodNotAllowed {
        /// The methods the path takes.
        allow: &'static str,
    },
}

/// Routes a request under [`PREFIX`].
pub fn route(method: &Method, path: &str) -> StateRoute {
    let Some((label, tail)) = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('/'))
    else {
        return StateRoute::Malformed;
    };
    let Some(label) = Label::parse(label) else {
        return StateRoute::Malformed;
    };
    if tail == "latest" {
        return if *method == Method::GET {
            StateRoute::Latest { label }
        } else {
            StateRoute::MethodNotAllowed { allow: "GET" }
        };
    }
    let Some(version) = parse_version(tail) else {
        return StateRoute::Malformed;
    };
    match *method {
        Method::PUT => StateRoute::Put { label, version },
        Method::GET => StateRoute::Get { label, version },
        _ => StateRoute::MethodNotAllowed { allow: "GET, PUT" },
    }
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file or directory of the store could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or directory of the store could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A symlink where the store expects a file or a directory: it follows none.
    #[error("{} is a symlink; the state store follows none", path.display())]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a directory where the store expects one.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a regular file (a FIFO, a device, a directory) where an entry should be.
    #[error("{} is not a regular file", path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A stored entry larger than anything this store writes.
    #[error("{} is {len} bytes, over the {MAX_STATE_BYTES}-byte limit", path.display())]
    FileTooLarge {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A blob to store over [`MAX_STATE_BYTES`].
    #[error("the sealed state is {len} bytes, over the {MAX_STATE_BYTES}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// An empty blob to store: no sealed state is empty (an AEAD tag alone is 16 bytes).
    #[error("the sealed state is empty")]
    Empty,
    /// The version is already stored with other bytes: a version, once stored, never changes.
    #[error("{label} version {version} is already stored with different bytes")]
    Conflict {
        /// The label.
        label: Label,
        /// The version.
        version: u64,
    },
    /// The version is older than every version kept: it would be deleted as soon as written.
    #[error(
        "{label} version {version} is older than the {KEPT_VERSIONS} versions kept \
         (oldest {oldest_kept})"
    )]
    Superseded {
        /// The label.
        label: Label,
        /// The version.
        version: u64,
        /// The oldest version kept.
        oldest_kept: u64,
    },
}

/// What a successful [`StateStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob was written.
    Stored,
    /// The same bytes were already stored under this version (a retried PUT).
    Unchanged,
}

/// The state store: `{root}/{label}/{version:020}.sealed`.
#[derive(Debug)]
pub struct StateStore {
    root: PathBuf,
    /// Serializes operations: a PUT's check for an existing version, its write and its pruning must not
    /// interleave with another PUT (two different blobs could both be told 204), nor with a read that
    /// lists versions and then opens one. Every operation is a few small file operations.
    lock: Mutex<()>,
}

impl StateStore {
    /// The store at `root`, created (mode 0700) if missing. `root` itself may be a symlink: the operator
    /// named it. Temporary files left by a crash are removed.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| StateError::Write {
                path: root.to_owned(),
                source,
            })?;
        let metadata = fs::metadata(root).map_err(|source| StateError::Read {
            path: root.to_owned(),
            source,
        })?;
        if !metadata.is_dir() {
            return Err(StateError::NotADirectory {
                path: root.to_owned(),
            });
        }
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %root.display(),
                "--state-dir is accessible to other users (expected mode 0700); it holds ciphertext \
                 only, but others could delete or replace it"
            );
        }
        let store = Self {
            root: root.to_owned(),
            lock: Mutex::new(()),
        };
        store.sweep_temporaries();
        Ok(store)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `bytes` as `label` version `version`, unless that version is already stored (the same
    /// bytes: [`PutOutcome::Unchanged`]; other bytes: [`StateError::Conflict`]) or is older than the three
    /// kept ([`StateError::Superseded`]: it would be deleted at once). Then deletes all but the three
    /// highest versions.
    pub fn put(
        &self,
        label: &Label,
        version: NonZeroU64,
        bytes: &[u8],
    ) -> Result<PutOutcome, StateError> {
        if bytes.is_empty() {
            return Err(StateError::Empty);
        }
        if bytes.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge { len: bytes.len() });
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = self
            .label_dir(label, true)?
            .ok_or_else(|| StateError::Read {
                path: self.root.join(label.as_str()),
                source: io::ErrorKind::NotFound.into(),
            })?;
        let path = entry_path(&dir, version);
        if let Some(existing) = read_entry(&path)? {
            return if existing == bytes {
                Ok(PutOutcome::Unchanged)
            } else {
                Err(StateError::Conflict {
                    label: label.clone(),
                    version: version.get(),
                })
            };
        }
        let versions = versions(&dir)?;
        if let Some(&oldest_kept) = versions.get(KEPT_VERSIONS - 1) {
            if version < oldest_kept {
                return Err(StateError::Superseded {
                    label: label.clone(),
                    version: version.get(),
                    oldest_kept: oldest_kept.get(),
                });
            }
        }
        write_atomic(&dir, &path, bytes)?;
        prune(&dir, version, versions);
        Ok(PutOutcome::Stored)
    }

    /// The bytes of `label` version `version`, if stored.
    pub fn get(&self, label: &Label, version: NonZeroU64) -> Result<Option<Vec<u8>>, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        match self.label_dir(label, false)? {
            Some(dir) => read_entry(&entry_path(&dir, version)),
            None => Ok(None),
        }
    }

    /// The highest stored version of `label` and its bytes, if any. A highest entry that cannot be read
    /// is an error, not a reason to serve an older one.
    pub fn latest(&self, label: &Label) -> Result<Option<(NonZeroU64, Vec<u8>)>, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(dir) = self.label_dir(label, false)? else {
            return Ok(None);
        };
        let Some(&version) = versions(&dir)?.first() else {
            return Ok(None);
        };
        Ok(read_entry(&entry_path(&dir, version))?.map(|bytes| (version, bytes)))
    }

    /// `{root}/{label}` if it is a real directory (lstat: a symlink there is refused, or it would
    /// redirect reads and writes elsewhere); when missing, created 0700 with `create`, else `None`.
    fn label_dir(&self, label: &Label, create: bool) -> Result<Option<PathBuf>, StateError> {
        let path = self.root.join(label.as_str());
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => Ok(Some(path)),
            Ok(m) if m.file_type().is_symlink() => Err(StateError::Symlink { path }),
            Ok(_) => Err(StateError::NotADirectory { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let created = fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .and_then(|()| sync_dir(&self.root));
                match created {
                    Ok(()) => Ok(Some(path)),
                    Err(source) => Err(StateError::Write { path, source }),
                }
            }
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Removes temporary files a crashed write left in the label directories.
    fn sweep_temporaries(&self) {
        let Ok(labels) = fs::read_dir(&self.root) else {
            return;
        };
        for label in labels.flatten() {
            // DirEntry::file_type does not follow symlinks: a linked directory is not swept.
            let is_dir = label.file_type().is_ok_and(|t| t.is_dir());
            let valid = label.file_name().to_str().and_then(Label::parse).is_some();
            if !(is_dir && valid) {
                continue;
            }
            let Ok(entries) = fs::read_dir(label.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let is_temp = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX));
                // remove_file removes a symlink itself, never its target.
                if is_temp && fs::remove_file(entry.path()).is_ok() {
                    tracing::info!(
                        path = %entry.path().display(),
                        "state store: removed a leftover temporary file"
                    );
                }
            }
        }
    }
}

/// `{dir}/{version:020}.sealed`.
fn entry_path(dir: &Path, version: NonZeroU64) -> PathBuf {
    dir.join(format!(
        "{:0width$}{ENTRY_SUFFIX}",
        version,
        width = VERSION_DIGITS
    ))
}

/// The version of an entry name, if it is one (`{20 digits}.sealed`, not zero).
fn entry_version(name: &str) -> Option<NonZeroU64> {
    let digits = name.strip_suffix(ENTRY_SUFFIX)?;
    if digits.len() != VERSION_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().and_then(NonZeroU64::new)
}

/// The versions stored in `dir`, highest first. Other names (temporary files, strays) are ignored.
fn versions(dir: &Path) -> Result<Vec<NonZeroU64>, StateError> {
    let read = |source| StateError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut versions = Vec::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        if let Some(version) = entry
            .map_err(read)?
            .file_name()
            .to_str()
            .and_then(entry_version)
        {
            versions.push(version);
        }
    }
    versions.sort_unstable_by(|a, b| b.cmp(a));
    Ok(versions)
}

/// An entry's bytes, `None` if there is none. O_NOFOLLOW: a symlink at the entry fails the open (ELOOP)
/// instead of being followed; O_NONBLOCK: a FIFO put there opens at once and is refused instead of
/// blocking the reader. The length is checked on the open file and the read is capped, so a file that
/// grows meanwhile cannot make the host buffer more than the cap.
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let read = |source| StateError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StateError::Symlink {
                path: path.to_owned(),
            })
        }
        Err(source) => return Err(read(source)),
    };
    let metadata = file.metadata().map_err(read)?;
    if !metadata.is_file() {
        return Err(StateError::NotARegularFile {
            path: path.to_owned(),
        });
    }
    let cap = MAX_STATE_BYTES as u64;
    let too_large = |len| StateError::FileTooLarge {
        path: path.to_owned(),
        len,
    };
    if metadata.len() > cap {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() > MAX_STATE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` in `dir` through a new temporary file and a rename, then fsyncs `dir`.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let (tmp, mut file) = create_temporary(dir)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    // rename(2) replaces whatever is at `path` without following it (the caller found nothing there).
    if let Err(source) = written.and_then(|()| fs::rename(&tmp, path)) {
        // The temporary file is ours (created new): removing it removes nothing else.
        let _ = fs::remove_file(&tmp);
        return Err(StateError::Write {
            path: path.to_owned(),
            source,
        });
    }
    sync_dir(dir).map_err(|source| StateError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// A new, empty file `{dir}/.tmp-{32 hex digits}` (mode 0600), and its path. O_CREAT|O_EXCL|O_NOFOLLOW:
/// a file or a symlink already at the name is never opened; creation fails and another name is drawn.
fn create_temporary(dir: &Path) -> Result<(PathBuf, File), StateError> {
    let rng = SystemRandom::new();
    let mut last = None;
    for _ in 0..TEMP_NAME_ATTEMPTS {
        let mut name = [0u8; 16];
        rng.fill(&mut name).map_err(|_| StateError::Write {
            path: dir.to_owned(),
            source: io::Error::other("the system random number generator failed"),
        })?;
        let tmp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(name)));
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp);
        match created {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(StateError::Write { path: tmp, source }),
        }
    }
    Err(StateError::Write {
        path: dir.to_owned(),
        source: last.unwrap_or_else(|| io::Error::other("no temporary name was free")),
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes all but the [`KEPT_VERSIONS`] highest versions, `before` being the list read before `added`
/// was written. A failure is logged, not returned: the blob is stored, and the next PUT tries again.
fn prune(dir: &Path, added: NonZeroU64, mut before: Vec<NonZeroU64>) {
    before.push(added);
    before.sort_unstable_by(|a, b| b.cmp(a));
    for &old in before.iter().skip(KEPT_VERSIONS) {
        let path = entry_path(dir, old);
        // remove_file on a symlink removes the link, never its target.
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "state store: cannot delete an old version"
            );
        }
    }
}
