//! Content-addressed model files: `blobs/sha256/ab/cdef…`, written through a temporary file,
//! fsync, rename and directory fsync, and verified against their name on every read.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Result, StoreError, io_err};

/// The blob store rooted at a directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

impl BlobStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let base = root.join("sha256");
        std::fs::create_dir_all(&base).map_err(io_err("create blob directory", &base))?;
        std::fs::create_dir_all(root.join("tmp")).map_err(io_err("create blob directory", root))?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    /// The path of the blob named `sha256`.
    pub fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        let h = hex(sha256);
        self.root.join("sha256").join(&h[..2]).join(&h[2..])
    }

    /// Whether the blob exists.
    pub fn contains(&self, sha256: &[u8; 32]) -> bool {
        self.path(sha256).is_file()
    }

    /// Stores `bytes` under their SHA-256 and returns it. Idempotent; atomic (a crash leaves
    /// either no blob or the whole blob).
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32]> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        let dest = self.path(&sha);
        if dest.is_file() {
            return Ok(sha);
        }
        let tmpdir = self.root.join("tmp");
        let tmp = tmpdir.join(format!("{}.{}.tmp", hex(&sha), std::process::id()));
        let mut f = File::create(&tmp).map_err(io_err("create temporary blob", &tmp))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_err("write temporary blob", &tmp))?;
        drop(f);
        let dir = dest.parent().unwrap_or(&self.root);
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err("create blob directory", dir))?;
            sync_dir(&self.root.join("sha256"))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io_err("install blob", &dest))?;
        sync_dir(dir)?;
        Ok(sha)
    }

    /// Reads a blob, verifying that its bytes hash to its name.
    pub fn get(&self, sha256: &[u8; 32]) -> Result<Vec<u8>> {
        let p = self.path(sha256);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("blob {}", hex(sha256))));
            }
            Err(e) => return Err(io_err("read blob", &p)(e)),
        };
        let actual: [u8; 32] = Sha256::digest(&bytes).into();
        if actual != *sha256 {
            return Err(StoreError::BlobCorrupt {
                expected: hex(sha256),
                actual: hex(&actual),
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_verify() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let sha = s.put(b"model").unwrap();
        assert_eq!(s.put(b"model").unwrap(), sha);
        let p = s.path(&sha);
        let h = hex(&sha);
        assert!(p.ends_with(format!("sha256/{}/{}", &h[..2], &h[2..])));
        assert_eq!(s.get(&sha).unwrap(), b"model");
        std::fs::write(&p, b"mode1").unwrap();
        assert!(matches!(s.get(&sha), Err(StoreError::BlobCorrupt { .. })));
        assert!(matches!(s.get(&[0; 32]), Err(StoreError::NotFound(_))));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
