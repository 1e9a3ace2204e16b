//! File-system building blocks: checksummed state files written atomically, directory fsync,
//! and the small [`Disk`] trait through which the telemetry queue appends (so tests can inject
//! short writes and a full disk).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{AgentError, Result};

/// Magic at the start of every state file (`SXS1`).
const STATE_MAGIC: [u8; 4] = *b"SXS1";

/// Fsyncs a directory, making the creation, rename or deletion of its entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AgentError::io("fsync directory", dir, e))
}

/// Writes `payload` as a checksummed state file at `path`, atomically: a temporary file in the
/// same directory is written and fsynced, renamed over `path`, and the directory is fsynced. A
/// crash leaves either the old file or the new one, never a mix.
///
/// Layout: magic `SXS1`, payload length (u32 LE), payload, CRC32C of everything before it (u32 LE).
pub fn write_state_file(path: &Path, payload: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(path);
    let len =
        u32::try_from(payload.len()).map_err(|_| AgentError::InvalidConfig("state too large"))?;
    let mut buf = Vec::with_capacity(payload.len() + 12);
    buf.extend_from_slice(&STATE_MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let mut f = File::create(&tmp).map_err(|e| AgentError::io("create state file", &tmp, e))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_all())
        .map_err(|e| AgentError::io("write state file", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| AgentError::io("rename state file", path, e))?;
    sync_dir(dir)
}

/// Reads a state file written by [`write_state_file`]; `Ok(None)` if it does not exist, and
/// [`AgentError::CorruptState`] if its magic, length or checksum is wrong.
pub fn read_state_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf)
                .map_err(|e| AgentError::io("read state file", path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AgentError::io("open state file", path, e)),
    }
    let corrupt = |reason| AgentError::CorruptState {
        path: path.to_path_buf(),
        reason,
    };
    if buf.len() < 12 || buf[..4] != STATE_MAGIC {
        return Err(corrupt("bad magic or too short"));
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if buf.len() != 12 + len {
        return Err(corrupt("length does not match"));
    }
    let (body, crc) = buf.split_at(8 + len);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != want {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(body[8..].to_vec()))
}

/// The sibling temporary path used while writing `path` atomically.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates a directory (and parents) if needed.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io("create directory", dir, e))
}

/// A file the queue appends to: the three operations an append needs.
pub trait AppendFile: Send {
    /// Writes some prefix of `buf` at the end of the file, like [`Write::write`]: it may write
    /// fewer bytes than asked (a short write) or fail.
    fn append(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Makes the written data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (used to remove a partly written record after a failed write).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// How the queue opens files for appending. Production uses [`RealDisk`]; fault tests use
/// [`FaultyDisk`]. Reading goes straight to the file system.
pub trait Disk: Send {
    /// Opens (creating if needed) `path` for appending.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

struct RealFile(File);

impl AppendFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Disk for RealDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
}

/// A fault-injecting disk over the real file system, for tests: it accepts `budget` more bytes
/// in total, then fails every write with ENOSPC. With `short_writes`, each write writes at most
/// half of what it is asked (at least one byte), so callers must loop correctly.
#[derive(Debug, Clone)]
pub struct FaultyDisk {
    budget: Arc<AtomicU64>,
    short_writes: bool,
}

impl FaultyDisk {
    /// A disk that accepts `budget` bytes before it reports a full disk.
    pub fn new(budget: u64, short_writes: bool) -> Self {
        Self {
            budget: Arc::new(AtomicU64::new(budget)),
            short_writes,
        }
    }

    /// Sets the remaining byte budget (e.g. to "free space" after a full-disk test).
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }
}

struct FaultyFile {
    file: File,
    budget: Arc<AtomicU64>,
    short_writes: bool,
}

impl AppendFile for FaultyFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.budget.load(Ordering::SeqCst);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let mut n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if self.short_writes && n > 1 {
            n /= 2;
        }
        let written = self.file.write(&buf[..n])?;
        self.budget.fetch_sub(written as u64, Ordering::SeqCst);
        Ok(written)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Disk for FaultyDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(FaultyFile {
            file,
            budget: Arc::clone(&self.budget),
            short_writes: self.short_writes,
        }))
    }
}

/// Hex encoding of bytes (lower case).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        assert_eq!(read_state_file(&p).unwrap(), None);
        write_state_file(&p, b"hello").unwrap();
        assert_eq!(read_state_file(&p).unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(!tmp_path(&p).exists());
        let mut bytes = std::fs::read(&p).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x40;
            std::fs::write(&p, &bytes).unwrap();
            assert!(
                matches!(read_state_file(&p), Err(AgentError::CorruptState { .. })),
                "flip at {i} not detected"
            );
            bytes[i] ^= 0x40;
        }
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_state_file(&p).is_err());
    }
}
