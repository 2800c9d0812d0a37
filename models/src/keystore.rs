//! The model owner's keystore: one key file per model in a private directory
//! (docs/sealed-format.md §5).
//!
//! Layout: `<dir>/` mode 0700; `<dir>/<96 hex digits of the digest>.key` mode 0600, created with
//! `O_CREAT | O_EXCL` and never overwritten. Key file version 1 (89 bytes):
//! `"CLSTRKEY"` (8) || version `0x01` (1) || model digest (48) || key (32). The digest inside the
//! file makes a renamed or copied file an error instead of the wrong key.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::digest::{ModelDigest, DIGEST_LEN};
use crate::error::{Error, KeyFileProblem, KeystoreError};
use crate::key::{ModelKey, KEY_LEN};

const KEY_FILE_MAGIC: &[u8; 8] = b"CLSTRKEY";
const KEY_FILE_VERSION: u8 = 1;
const KEY_FILE_LEN: usize = KEY_FILE_MAGIC.len() + 1 + DIGEST_LEN + KEY_LEN;
const KEY_FILE_SUFFIX: &str = ".key";
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Group and other permission bits: must be clear on the directory and on every key file.
const GROUP_OTHER: u32 = 0o077;

/// A directory of model keys, one file per model digest.
#[derive(Debug)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// Creates a new, empty keystore directory with mode 0700 (its parent must exist). Fails if
    /// the directory exists.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeystoreError::DirectoryExists {
                        path: dir.to_owned(),
                    }
                } else {
                    io_error(dir, source)
                }
            })?;
        // The umask can only remove bits; set the mode explicitly anyway so that it is exactly 0700.
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| io_error(dir, e))?;
        Self::open(dir)
    }

    /// Opens an existing keystore directory; refuses one that group or others can access.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let meta = fs::metadata(dir).map_err(|e| io_error(dir, e))?;
        if !meta.is_dir() {
            return Err(KeystoreError::NotADirectory {
                path: dir.to_owned(),
            }
            .into());
        }
        check_mode(dir, meta.mode())?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The keystore directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `key` for the model `digest`. Fails with [`KeystoreError::KeyExists`] if a key for
    /// this model is already stored: keys are never overwritten.
    pub fn put(&self, digest: &ModelDigest, key: &ModelKey) -> Result<(), Error> {
        let path = self.path_of(digest);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT | O_EXCL: never follows or replaces an existing file
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeystoreError::KeyExists { digest: *digest }
                } else {
                    io_error(&path, source)
                }
            })?;
        let mut contents = Zeroizing::new([0u8; KEY_FILE_LEN]);
        encode_key_file(digest, key, &mut contents);
        let written = file
            .set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .and_then(|()| file.write_all(&contents[..]))
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            // Best effort: do not leave a partial key file behind.
            let _ = fs::remove_file(&path);
            return Err(io_error(&path, source).into());
        }
        // Make the new directory entry durable too.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&self.dir, e))?;
        Ok(())
    }

    /// Loads the key for the model `digest`. Refuses a key file that is not a regular file (e.g. a
    /// symbolic link), that group or others can access, or that is malformed.
    pub fn get(&self, digest: &ModelDigest) -> Result<ModelKey, Error> {
        let path = self.path_of(digest);
        let link_meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::KeyNotFound { digest: *digest }.into())
            }
            Err(e) => return Err(io_error(&path, e).into()),
        };
        if !link_meta.file_type().is_file() {
            return Err(KeystoreError::NotARegularFile { path }.into());
        }
        let mut file = File::open(&path).map_err(|e| io_error(&path, e))?;
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        // The file opened must be the one inspected (not swapped for a link in between).
        if !meta.is_file() || meta.dev() != link_meta.dev() || meta.ino() != link_meta.ino() {
            return Err(KeystoreError::NotARegularFile { path }.into());
        }
        check_mode(&path, meta.mode())?;
        let expected = KEY_FILE_LEN as u64;
        if meta.len() != expected {
            let problem = KeyFileProblem::BadLength {
                found: meta.len(),
                expected,
            };
            return Err(KeystoreError::MalformedKeyFile { path, problem }.into());
        }
        // Read one byte more than expected to notice a file that grew since fstat.
        let mut contents = Zeroizing::new([0u8; KEY_FILE_LEN + 1]);
        let mut filled = 0;
        loop {
            match file.read(&mut contents[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    if filled == contents.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(&path, e).into()),
            }
        }
        if filled != KEY_FILE_LEN {
            let problem = KeyFileProblem::BadLength {
                found: filled as u64,
                expected,
            };
            return Err(KeystoreError::MalformedKeyFile { path, problem }.into());
        }
        decode_key_file(digest, &contents[..KEY_FILE_LEN])
            .map_err(|problem| KeystoreError::MalformedKeyFile { path, problem }.into())
    }

    /// The digests of all models with a key in the store, sorted. Files whose names are not
    /// `<96 lowercase hex digits>.key` are ignored.
    pub fn list(&self) -> Result<Vec<ModelDigest>, Error> {
        let mut digests = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(KEY_FILE_SUFFIX)) else {
                continue;
            };
            if let Ok(digest) = ModelDigest::from_hex(hex) {
                digests.push(digest);
            }
        }
        digests.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(digests)
    }

    fn path_of(&self, digest: &ModelDigest) -> PathBuf {
        self.dir
            .join(format!("{}{KEY_FILE_SUFFIX}", digest.to_hex()))
    }
}

fn encode_key_file(digest: &ModelDigest, key: &ModelKey, out: &mut [u8; KEY_FILE_LEN]) {
    let (magic, rest) = out.split_at_mut(KEY_FILE_MAGIC.len());
    magic.copy_from_slice(KEY_FILE_MAGIC);
    rest[0] = KEY_FILE_VERSION;
    rest[1..1 + DIGEST_LEN].copy_from_slice(digest.as_bytes());
    // Why expose: the keystore is where the owner keeps the key; the buffer is zeroized by the caller.
    rest[1 + DIGEST_LEN..].copy_from_slice(key.expose_secret());
}

fn decode_key_file(digest: &ModelDigest, contents: &[u8]) -> Result<ModelKey, KeyFileProblem> {
    let (magic, rest) = contents.split_at(KEY_FILE_MAGIC.len());
    if magic != KEY_FILE_MAGIC {
        return Err(KeyFileProblem::BadMagic);
    }
    if rest[0] != KEY_FILE_VERSION {
        return Err(KeyFileProblem::UnsupportedVersion { found: rest[0] });
    }
    let stored = ModelDigest::from_bytes(
        rest[1..1 + DIGEST_LEN]
            .try_into()
            .map_err(|_| KeyFileProblem::BadMagic)?,
    );
    if !stored.ct_eq(digest) {
        return Err(KeyFileProblem::DigestMismatch);
    }
    let key_bytes: &[u8; KEY_LEN] =
        rest[1 + DIGEST_LEN..]
            .try_into()
            .map_err(|_| KeyFileProblem::BadLength {
                found: contents.len() as u64,
                expected: KEY_FILE_LEN as u64,
            })?;
    Ok(ModelKey::from_bytes(key_bytes))
}

fn check_mode(path: &Path, mode: u32) -> Result<(), KeystoreError> {
    if mode & GROUP_OTHER != 0 {
        return Err(KeystoreError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> KeystoreError {
    KeystoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn store() -> (tempfile::TempDir, Keystore) {
        let tmp = tempfile::tempdir().unwrap();
        let ks = Keystore::create(tmp.path().join("keys")).unwrap();
        (tmp, ks)
    }

    #[test]
    fn put_get_list_with_private_permissions() {
        let (_tmp, ks) = store();
        assert_eq!(mode_of(ks.dir()), 0o700);
        let rng = SystemRandom::new();
        let (d1, d2) = (ModelDigest::of(b"one"), ModelDigest::of(b"two"));
        let (k1, k2) = (
            ModelKey::generate(&rng).unwrap(),
            ModelKey::generate(&rng).unwrap(),
        );
        ks.put(&d1, &k1).unwrap();
        ks.put(&d2, &k2).unwrap();
        let path = ks.path_of(&d1);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), KEY_FILE_LEN);
        assert_eq!(ks.get(&d1).unwrap().expose_secret(), k1.expose_secret());
        assert_eq!(ks.get(&d2).unwrap().expose_secret(), k2.expose_secret());
        fs::write(ks.dir().join("README"), b"ignored").unwrap();
        let mut expected = vec![d1, d2];
        expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(ks.list().unwrap(), expected);
        // Reopen.
        let again = Keystore::open(ks.dir()).unwrap();
        assert_eq!(again.get(&d1).unwrap().key_id(), k1.key_id());
    }

    #[test]
    fn never_overwrites() {
        let (_tmp, ks) = store();
        let d = ModelDigest::of(b"m");
        ks.put(&d, &ModelKey::from_bytes(&[1; KEY_LEN])).unwrap();
        let err = ks
            .put(&d, &ModelKey::from_bytes(&[2; KEY_LEN]))
            .unwrap_err();
        assert!(matches!(err, Error::Keystore(KeystoreError::KeyExists { digest }) if digest == d));
        assert_eq!(ks.get(&d).unwrap().expose_secret(), &[1; KEY_LEN]);
        // Not even through a dangling symlink planted under the key's name.
        let d2 = ModelDigest::of(b"n");
        std::os::unix::fs::symlink(ks.dir().join("elsewhere"), ks.path_of(&d2)).unwrap();
        let err = ks
            .put(&d2, &ModelKey::from_bytes(&[3; KEY_LEN]))
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Keystore(KeystoreError::KeyExists { .. })
        ));
        assert!(!ks.dir().join("elsewhere").exists());
    }

    #[test]
    fn create_refuses_existing_directory() {
        let (_tmp, ks) = store();
        let err = Keystore::create(ks.dir()).unwrap_err();
        assert!(matches!(
            err,
            Error::Keystore(KeystoreError::DirectoryExists { .. })
        ));
    }

    #[test]
    fn refuses_loose_permissions() {
        let (_tmp, ks) = store();
        let d = ModelDigest::of(b"m");
        ks.put(&d, &ModelKey::from_bytes(&[1; KEY_LEN])).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            fs::set_permissions(ks.path_of(&d), fs::Permissions::from_mode(mode)).unwrap();
            let err = ks.get(&d).unwrap_err();
            assert!(
                matches!(err, Error::Keystore(KeystoreError::InsecurePermissions { mode: m, .. }) if m == mode),
                "{mode:o}: {err:?}"
            );
        }
        fs::set_permissions(ks.path_of(&d), fs::Permissions::from_mode(0o400)).unwrap();
        assert!(ks.get(&d).is_ok());

        fs::set_permissions(ks.dir(), fs::Permissions::from_mode(0o750)).unwrap();
        let err = Keystore::open(ks.dir()).unwrap_err();
        assert!(matches!(
            err,
            Error::Keystore(KeystoreError::InsecurePermissions { mode: 0o750, .. })
        ));
    }

    #[test]
    fn refuses_malformed_files() {
        let (_tmp, ks) = store();
        let d = ModelDigest::of(b"m");
        let path = ks.path_of(&d);
        let write = |bytes: &[u8]| {
            let _ = fs::remove_file(&path);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(bytes)
                .unwrap();
        };
        let mut good = [0u8; KEY_FILE_LEN];
        encode_key_file(&d, &ModelKey::from_bytes(&[9; KEY_LEN]), &mut good);
        write(&good);
        assert!(ks.get(&d).is_ok());

        let problem = |ks: &Keystore| match ks.get(&d) {
            Err(Error::Keystore(KeystoreError::MalformedKeyFile { problem, .. })) => problem,
            other => panic!("{other:?}"),
        };
        write(&[9; KEY_LEN]); // a raw 32-byte key is not accepted
        assert_eq!(
            problem(&ks),
            KeyFileProblem::BadLength {
                found: 32,
                expected: KEY_FILE_LEN as u64
            }
        );
        write(&[&good[..], b"x"].concat());
        assert!(matches!(
            problem(&ks),
            KeyFileProblem::BadLength { found: 90, .. }
        ));
        let mut bad = good;
        bad[0] = b'X';
        write(&bad);
        assert_eq!(problem(&ks), KeyFileProblem::BadMagic);
        let mut bad = good;
        bad[8] = 2;
        write(&bad);
        assert_eq!(
            problem(&ks),
            KeyFileProblem::UnsupportedVersion { found: 2 }
        );
        // A key file renamed to another model's name.
        let mut other = [0u8; KEY_FILE_LEN];
        encode_key_file(
            &ModelDigest::of(b"other"),
            &ModelKey::from_bytes(&[9; KEY_LEN]),
            &mut other,
        );
        write(&other);
        assert_eq!(problem(&ks), KeyFileProblem::DigestMismatch);
    }

    #[test]
    fn refuses_symlinks_and_missing_keys() {
        let (tmp, ks) = store();
        let d = ModelDigest::of(b"m");
        assert!(matches!(
            ks.get(&d),
            Err(Error::Keystore(KeystoreError::KeyNotFound { .. }))
        ));
        let target = tmp.path().join("target.key");
        let mut good = [0u8; KEY_FILE_LEN];
        encode_key_file(&d, &ModelKey::from_bytes(&[9; KEY_LEN]), &mut good);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .unwrap()
            .write_all(&good)
            .unwrap();
        std::os::unix::fs::symlink(&target, ks.path_of(&d)).unwrap();
        assert!(matches!(
            ks.get(&d),
            Err(Error::Keystore(KeystoreError::NotARegularFile { .. }))
        ));
    }

    #[test]
    fn open_refuses_non_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            Keystore::open(&file),
            Err(Error::Keystore(KeystoreError::NotADirectory { .. }))
        ));
        assert!(matches!(
            Keystore::open(tmp.path().join("missing")),
            Err(Error::Keystore(KeystoreError::Io { .. }))
        ));
    }

    #[test]
    fn errors_print_no_key_bytes() {
        let (_tmp, ks) = store();
        let d = ModelDigest::of(b"m");
        ks.put(&d, &ModelKey::from_bytes(&[0xEE; KEY_LEN])).unwrap();
        let err = ks
            .put(&d, &ModelKey::from_bytes(&[0xEE; KEY_LEN]))
            .unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.to_lowercase().contains(&"ee".repeat(16)), "{text}");
        }
    }
}
