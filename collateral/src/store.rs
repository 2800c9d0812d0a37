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
//! back is verified again before use: the directory may be shared with other tools. Writes are atomic
//! (a temporary file, then a rename), so a reader never sees half a certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cloister_attestation::snp::Product;

use crate::kds::{KeyTree, VcekId};
use crate::Error;

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
        match read_opt(&self.vcek_path(id))? {
            Some(der) => Ok(Some(der)),
            None => read_opt(&self.root.join("vcek").join(id.hwid()).join("vcek.der")),
        }
    }

    /// Stores a verified VCEK.
    pub fn put_vcek(&self, id: &VcekId, der: &[u8]) -> Result<(), Error> {
        write_atomic(&self.vcek_path(id), der)
    }

    /// The stored chain.
    pub fn get_chain(&self, tree: KeyTree, product: Product) -> Result<Option<Vec<u8>>, Error> {
        read_opt(&self.chain_path(tree, product))
    }

    /// Stores a verified chain.
    pub fn put_chain(&self, tree: KeyTree, product: Product, pem: &[u8]) -> Result<(), Error> {
        write_atomic(&self.chain_path(tree, product), pem)
    }

    /// The stored CRL.
    pub fn get_crl(&self, tree: KeyTree, product: Product) -> Result<Option<Vec<u8>>, Error> {
        read_opt(&self.crl_path(tree, product))
    }

    /// Stores a verified CRL.
    pub fn put_crl(&self, tree: KeyTree, product: Product, der: &[u8]) -> Result<(), Error> {
        write_atomic(&self.crl_path(tree, product), der)
    }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a reader never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)
}
