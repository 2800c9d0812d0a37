//! The on-disk collateral cache, shared by every component, in Trustee's offline-store layout so that a
//! store filled by one tool serves the other:
//!
//! ```text
//! {root}/vcek/{hwid}/{blNN_teeNN_snpNN_ucodeNN[_fmcNN]}_vcek.der   a VCEK (DER)
//! {root}/vcek/{hwid}/vcek.der                                      Trustee's TCB-less fallback (read only)
//! {root}/{vcek|vlek}/{Product}/cert_chain.pem                      the KDS body: ASK (or ASVK), then ARK
//! {root}/{vcek|vlek}/{Product}/crl.der                             the current CRL
//! ```
//!
//! Only verified collateral is written here (the client verifies before it stores), and whatever is read
//! back is verified again before use: the directory may be shared with other tools and users, so it is
//! treated as written by an adversary. Hence:
//!
//! - **No symlink below the root is followed**, neither an entry (opened with O_NOFOLLOW) nor one of the
//!   two directories under the root (checked with lstat before each read and write): a link planted there
//!   would make a reader read, or a writer replace, a file elsewhere. The root itself may be a symlink: the
//!   user (or the operator's configuration) named it, as for any other path given on the command line.
//! - **Entries are regular files of bounded size**: a FIFO, a device or a directory is refused without
//!   blocking, and an entry larger than the KDS may send for it (VCEK 16 KiB, chain 64 KiB, CRL 1 MiB:
//!   [`Item::max_body`]) is refused: nothing larger was written by a writer of this store.
//! - **Writes are atomic and create a new file**: a temporary file with a random name (16 random bytes) is
//!   created with O_CREAT|O_EXCL|O_NOFOLLOW (so a file or link already at that name is never opened),
//!   written, fsynced, then renamed over the entry. rename(2) replaces a symlink at the entry's path instead
//!   of following it. A reader never sees half a certificate.
//! - **CRLs never go back**: the client does not store a CRL older (cRLNumber, else thisUpdate) than a
//!   verified one already stored ([`crate::client`]); the store itself cannot judge (it holds no roots).
//!
//! What remains: one who can write into the store can delete or replace entries (they are verified again,
//! so this stops attestation at worst, which such a writer could do anyway by filling the disk), and can
//! race a writer by swapping one of the two subdirectories for a symlink between the check and the
//! rename (the rename then lands a verified entry under its fixed name in the link's target).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use cloister_attestation::snp::Product;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::files::{self, Symlinks};
use crate::kds::{Item, KeyTree, VcekId};
use crate::Error;

/// Attempts at a fresh temporary name: with 128 random bits a collision means someone is squatting names;
/// a few retries ride out chance, more would only loop under attack.
const TEMP_NAME_ATTEMPTS: u32 = 4;

/// A collateral store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (its directories are created when something is first stored).
    pub fn open(root: &Path) -> Result<Self, Error> {
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the VCEK `id` lives.
    pub fn vcek_path(&self, id: &VcekId) -> PathBuf {
        self.root
            .join("vcek")
            .join(id.hwid())
            .join(format!("{}_vcek.der", id.tcb_prefix()))
    }

    /// Where the chain of `tree` for `product` lives.
    pub fn chain_path(&self, tree: KeyTree, product: Product) -> PathBuf {
        self.root
            .join(tree.path_name())
            .join(product.name())
            .join("cert_chain.pem")
    }

    /// Where the CRL of `tree` for `product` lives.
    pub fn crl_path(&self, tree: KeyTree, product: Product) -> PathBuf {
        self.root
            .join(tree.path_name())
            .join(product.name())
            .join("crl.der")
    }

    /// The stored VCEK `id`, or Trustee's TCB-less `vcek.der` of the chip (the caller checks that its TCB
    /// is the report's).
    pub fn get_vcek(&self, id: &VcekId) -> Result<Option<Vec<u8>>, Error> {
        let cap = vcek_cap(id);
        match self.read_entry(&self.vcek_path(id), cap)? {
            Some(der) => Ok(Some(der)),
            None => self.read_entry(
                &self.root.join("vcek").join(id.hwid()).join("vcek.der"),
                cap,
            ),
        }
    }

    /// Stores a verified VCEK.
    pub fn put_vcek(&self, id: &VcekId, der: &[u8]) -> Result<(), Error> {
        self.write_entry(&self.vcek_path(id), der)
    }

    /// The stored chain.
    pub fn get_chain(&self, tree: KeyTree, product: Product) -> Result<Option<Vec<u8>>, Error> {
        let cap = cap_of(&Item::Chain(tree, product));
        self.read_entry(&self.chain_path(tree, product), cap)
    }

    /// Stores a verified chain.
    pub fn put_chain(&self, tree: KeyTree, product: Product, pem: &[u8]) -> Result<(), Error> {
        self.write_entry(&self.chain_path(tree, product), pem)
    }

    /// The stored CRL.
    pub fn get_crl(&self, tree: KeyTree, product: Product) -> Result<Option<Vec<u8>>, Error> {
        let cap = cap_of(&Item::Crl(tree, product));
        self.read_entry(&self.crl_path(tree, product), cap)
    }

    /// Stores a verified CRL. Replaces whatever is stored: the caller checks that it is not older than a
    /// verified stored one (as [`crate::Collateral`] does).
    pub fn put_crl(&self, tree: KeyTree, product: Product, der: &[u8]) -> Result<(), Error> {
        self.write_entry(&self.crl_path(tree, product), der)
    }

    /// The entry at `path` (below the root), `None` when it or one of its directories is absent; a
    /// symlink, a file that is not regular or one larger than `cap` is an error.
    fn read_entry(&self, path: &Path, cap: u64) -> Result<Option<Vec<u8>>, Error> {
        if !self.directories_of(path, false)? {
            return Ok(None);
        }
        match files::read_regular(path, cap, Symlinks::Refuse) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the entry at `path` (below the root), creating its directories.
    fn write_entry(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        self.directories_of(path, true)?;
        write_atomic(path, bytes)
    }

    /// Checks that the directories between the root and the entry `path` are directories, not symlinks
    /// (creating them when `create`): whether they all exist. The root is created but not checked: the
    /// user named it, and it may be a link to where the cache really is.
    fn directories_of(&self, path: &Path, create: bool) -> Result<bool, Error> {
        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Write { path, source }
        };
        if create {
            std::fs::create_dir_all(&self.root).map_err(write_error(&self.root))?;
        }
        let below = path
            .parent()
            .and_then(|dir| dir.strip_prefix(&self.root).ok())
            .unwrap_or(Path::new(""));
        let mut dir = self.root.clone();
        for component in below.components() {
            dir.push(component);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => return Err(Error::Symlink { path: dir }),
                // Something else than a directory: the open or create below fails and says so.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        // Another writer made it meanwhile: check what is there now.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            let m = std::fs::symlink_metadata(&dir).map_err(write_error(&dir))?;
                            if m.file_type().is_symlink() {
                                return Err(Error::Symlink { path: dir });
                            }
                        }
                        Err(source) => return Err(Error::Write { path: dir, source }),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(source) => return Err(Error::Read { path: dir, source }),
            }
        }
        Ok(true)
    }
}

/// The largest entry read for `item`: what the KDS client accepts for it. A writer of this store wrote only
/// what it fetched (or what Trustee's fetched from the same KDS), so nothing larger is genuine.
fn cap_of(item: &Item) -> u64 {
    u64::try_from(item.max_body()).unwrap_or(u64::MAX)
}

fn vcek_cap(id: &VcekId) -> u64 {
    cap_of(&Item::Vcek(*id))
}

/// Writes `bytes` to `path` through a new temporary file in the same directory and a rename, so that a
/// reader never sees half a file and nothing already in the directory is opened for writing.
///
/// The temporary file has a random name and is created with O_EXCL and O_NOFOLLOW: a file or a symlink
/// someone put at a name we might pick is never opened (it makes creation fail; another name is drawn).
/// Its mode is 0644 (before the umask): collateral is public (AMD's certificates and CRLs, verified before
/// they are written), and the cache is meant to be shared with other tools and users, who must be able to
/// read it; only the owner may write. rename(2) replaces what is at `path`, a symlink included, without
/// following it. The directory is not fsynced: an entry lost in a crash is fetched again.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let (tmp, mut file) = create_temporary(dir)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(source) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        // The temporary file is ours (created new above): removing it cannot remove anything else. If that
        // fails too, the error that matters is the one returned.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// A new, empty file `dir/.tmp-{32 hex digits}`, and its path.
fn create_temporary(dir: &Path) -> Result<(PathBuf, File), Error> {
    let rng = SystemRandom::new();
    let mut last = None;
    for _ in 0..TEMP_NAME_ATTEMPTS {
        let mut name = [0u8; 16];
        rng.fill(&mut name).map_err(|_| Error::Write {
            path: dir.to_path_buf(),
            source: std::io::Error::other("the system random number generator failed"),
        })?;
        let tmp = dir.join(format!(".tmp-{}", hex::encode(name)));
        match create_new(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => return Err(Error::Write { path: tmp, source }),
        }
    }
    Err(Error::Write {
        path: dir.to_path_buf(),
        source: last.unwrap_or_else(|| std::io::Error::other("no temporary name was free")),
    })
}

#[cfg(unix)]
fn create_new(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(not(unix))]
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_random_and_never_reuse_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_temporary(dir.path()).unwrap();
        let (b, _) = create_temporary(dir.path()).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".tmp-") && name.len() == 5 + 32, "{name}");
        // create_new never opens what is there, a dangling symlink included.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("absent"), &link).unwrap();
        assert_eq!(
            create_new(&link).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn written_entries_are_readable_by_others_and_writable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        write_atomic(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        // Rewriting replaces the entry.
        write_atomic(&path, b"y").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"y");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the entry's path: rename(2) cannot replace it.
        let path = dir.path().join("entry");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"").unwrap();
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
