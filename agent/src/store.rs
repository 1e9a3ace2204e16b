//! The device's content-addressed model store.
//!
//! # Layout
//!
//! ```text
//! <root>/blobs/sha256/ab/cdef…      complete models, named by the SHA-256 of their bytes
//! <root>/partial/<sha256>.part     a download in progress
//! <root>/partial/<sha256>.ckpt     its last durable checkpoint: offset and SHA-256 of the prefix
//! <root>/state                     active / last-known-good pointers (checksummed, atomic)
//! ```
//!
//! # Downloads that resume
//!
//! [`ModelStore::begin_download`] opens (or resumes) the `.part` file for a digest and length the
//! caller has already checked against signed metadata. [`Download::checkpoint`] fsyncs the part
//! file and then atomically records `(offset, sha256(prefix))`. After a cut — a lost connection
//! or a killed process — the next `begin_download` truncates the part file to the checkpoint,
//! re-hashes the prefix and compares it with the recorded digest: a match resumes at that offset
//! (ask the server for the rest), a mismatch starts over. Bytes after the last checkpoint are
//! never trusted. [`Download::finish`] checks length and digest, fsyncs, renames the file into
//! `blobs/` and fsyncs the directory: a model is either wholly installed or not at all.
//!
//! # Activation and local rollback
//!
//! [`ModelStore::activate`] verifies the blob's bytes, records the new model as active *on
//! trial* (keeping the previous active model as last known good), runs the caller's self-check
//! (load it with the runtime, localise a reference frame), then either confirms it or rolls back
//! to the last known good model. A crash during the self-check — a model that kills the process
//! when loaded — leaves the trial flag set, and the next [`ModelStore::open`] rolls back. The
//! agent can also roll back later on its own ([`ModelStore::rollback`]), e.g. when the local
//! failure rate spikes. The last known good model's blob is kept until another model has passed
//! its self-check; [`ModelStore::collect_garbage`] deletes every other blob.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use crate::fsutil::{self, hex};

const STATE_VERSION: u8 = 1;

/// A model the store knows: its release version and content digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Release number (from the signed metadata).
    pub version: u64,
    /// SHA-256 of the model file.
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    active: Option<ModelRef>,
    last_known_good: Option<ModelRef>,
    last_refused: Option<ModelRef>,
    trial: bool,
}

impl State {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![STATE_VERSION, u8::from(self.trial)];
        for m in [self.active, self.last_known_good, self.last_refused] {
            match m {
                Some(m) => {
                    v.push(1);
                    v.extend_from_slice(&m.version.to_le_bytes());
                    v.extend_from_slice(&m.sha256);
                }
                None => v.extend_from_slice(&[0; 41]),
            }
        }
        v
    }

    fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason| AgentError::CorruptState {
            path: path.to_path_buf(),
            reason,
        };
        if b.len() != 2 + 3 * 41 || b[0] != STATE_VERSION {
            return Err(bad("unknown model store state"));
        }
        let slot = |i: usize| -> Option<ModelRef> {
            let s = &b[2 + 41 * i..2 + 41 * (i + 1)];
            (s[0] == 1).then(|| {
                let mut v = [0u8; 8];
                v.copy_from_slice(&s[1..9]);
                let mut sha = [0u8; 32];
                sha.copy_from_slice(&s[9..41]);
                ModelRef {
                    version: u64::from_le_bytes(v),
                    sha256: sha,
                }
            })
        };
        Ok(State {
            trial: b[1] != 0,
            active: slot(0),
            last_known_good: slot(1),
            last_refused: slot(2),
        })
    }
}

/// The on-device model store. See the module docs.
#[derive(Debug)]
pub struct ModelStore {
    root: PathBuf,
    state: State,
    rolled_back_at_open: Option<ModelRef>,
}

impl ModelStore {
    /// Opens (creating if needed) the store at `root`. If the process died while a model was on
    /// trial, rolls back to the last known good model now (see
    /// [`ModelStore::rolled_back_at_open`]).
    pub fn open(root: &Path) -> Result<Self> {
        fsutil::ensure_dir(&root.join("blobs").join("sha256"))?;
        fsutil::ensure_dir(&root.join("partial"))?;
        let state_path = root.join("state");
        let state = match fsutil::read_state_file(&state_path)? {
            Some(b) => State::decode(&b, &state_path)?,
            None => State::default(),
        };
        let mut store = ModelStore {
            root: root.to_path_buf(),
            state,
            rolled_back_at_open: None,
        };
        if store.state.trial {
            let failed = store.state.active;
            tracing::warn!(
                ?failed,
                "model was on trial when the agent stopped; rolling back"
            );
            store.state = State {
                active: store.state.last_known_good,
                last_known_good: store.state.last_known_good,
                last_refused: failed,
                trial: false,
            };
            store.persist()?;
            store.rolled_back_at_open = failed;
        }
        Ok(store)
    }

    fn persist(&self) -> Result<()> {
        fsutil::write_state_file(&self.root.join("state"), &self.state.encode())
    }

    /// The model the runtime should run, if any.
    pub fn active(&self) -> Option<ModelRef> {
        self.state.active
    }

    /// The model to fall back to.
    pub fn last_known_good(&self) -> Option<ModelRef> {
        self.state.last_known_good
    }

    /// The last model refused by a self-check or rolled back, so sync does not fetch it again.
    pub fn last_refused(&self) -> Option<ModelRef> {
        self.state.last_refused
    }

    /// The model that was on trial when the previous process died and was rolled back by `open`.
    pub fn rolled_back_at_open(&self) -> Option<ModelRef> {
        self.rolled_back_at_open
    }

    /// Where the blob with digest `sha256` lives (whether or not it exists).
    pub fn blob_path(&self, sha256: &[u8; 32]) -> PathBuf {
        let h = hex(sha256);
        self.root
            .join("blobs")
            .join("sha256")
            .join(&h[..2])
            .join(&h[2..])
    }

    /// Whether the blob is installed.
    pub fn has_blob(&self, sha256: &[u8; 32]) -> bool {
        self.blob_path(sha256).is_file()
    }

    /// Reads a blob and verifies that its bytes still hash to its name.
    pub fn read_blob(&self, sha256: &[u8; 32]) -> Result<Vec<u8>> {
        let p = self.blob_path(sha256);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AgentError::BlobMissing(hex(sha256)));
            }
            Err(e) => return Err(AgentError::io("read blob", p, e)),
        };
        let actual: [u8; 32] = Sha256::digest(&bytes).into();
        if actual != *sha256 {
            return Err(AgentError::BlobCorrupt {
                expected: hex(sha256),
                actual: hex(&actual),
            });
        }
        Ok(bytes)
    }

    fn part_paths(&self, sha256: &[u8; 32]) -> (PathBuf, PathBuf) {
        let h = hex(sha256);
        let dir = self.root.join("partial");
        (dir.join(format!("{h}.part")), dir.join(format!("{h}.ckpt")))
    }

    /// Starts or resumes the download of a blob of `length` bytes with digest `sha256` (both
    /// from verified metadata). Resumes from the last checkpoint if its prefix still hashes to
    /// the recorded digest, else starts from zero.
    pub fn begin_download(&self, sha256: [u8; 32], length: u64) -> Result<Download> {
        let (part, ckpt) = self.part_paths(&sha256);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| AgentError::io("open partial download", &part, e))?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        let checkpoint = match fsutil::read_state_file(&ckpt) {
            Ok(c) => c,
            Err(AgentError::CorruptState { .. }) => None,
            Err(e) => return Err(e),
        };
        if let Some(c) = checkpoint.filter(|c| c.len() == 48) {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[..8]);
            let off = u64::from_le_bytes(w);
            w.copy_from_slice(&c[8..16]);
            let len = u64::from_le_bytes(w);
            let file_len = file
                .metadata()
                .map_err(|e| AgentError::io("stat partial download", &part, e))?
                .len();
            if len == length && off <= length && off <= file_len {
                let mut h = Sha256::new();
                let mut take = (&mut file).take(off);
                std::io::copy(&mut take, &mut h)
                    .map_err(|e| AgentError::io("re-hash partial download", &part, e))?;
                if h.clone().finalize().as_slice() == &c[16..48] {
                    hasher = h;
                    offset = off;
                } else {
                    tracing::warn!(part = %part.display(), "partial download prefix does not match its checkpoint; restarting");
                }
            }
        }
        file.set_len(offset)
            .and_then(|()| file.seek(SeekFrom::Start(offset)).map(|_| ()))
            .map_err(|e| AgentError::io("truncate partial download", &part, e))?;
        Ok(Download {
            sha256,
            length,
            offset,
            file,
            hasher,
            part,
            ckpt,
            blob: self.blob_path(&sha256),
        })
    }

    /// Installs a whole blob from memory (temp file, fsync, rename, directory fsync); returns
    /// its digest.
    pub fn install_bytes(&self, bytes: &[u8]) -> Result<[u8; 32]> {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        if self.has_blob(&sha) {
            return Ok(sha);
        }
        let mut d = self.begin_download(sha, bytes.len() as u64)?;
        d.write(bytes)?;
        d.finish()
    }

    /// Makes `model` active after `self_check` accepts its (verified) bytes; see the module
    /// docs. On refusal rolls back to the last known good model and returns
    /// [`AgentError::SelfCheckFailed`]. A missing or corrupt blob is refused before anything
    /// changes.
    pub fn activate(
        &mut self,
        model: ModelRef,
        self_check: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<()> {
        if self.state.active == Some(model) && !self.state.trial {
            return Ok(());
        }
        let bytes = self.read_blob(&model.sha256)?;
        let good = if self.state.trial {
            self.state.last_known_good
        } else {
            self.state.active.or(self.state.last_known_good)
        };
        self.state = State {
            active: Some(model),
            last_known_good: good,
            last_refused: self.state.last_refused,
            trial: true,
        };
        self.persist()?;
        match self_check(&bytes) {
            Ok(()) => {
                self.state.trial = false;
                self.persist()
            }
            Err(reason) => {
                self.state = State {
                    active: good,
                    last_known_good: good,
                    last_refused: Some(model),
                    trial: false,
                };
                self.persist()?;
                Err(AgentError::SelfCheckFailed {
                    sha256: hex(&model.sha256),
                    reason,
                    rolled_back_to: good.map(|g| hex(&g.sha256)),
                })
            }
        }
    }

    /// Rolls back to the last known good model (e.g. the local failure rate spiked); returns the
    /// model now active. A no-op when there is nothing to roll back to.
    pub fn rollback(&mut self) -> Result<Option<ModelRef>> {
        let Some(good) = self.state.last_known_good else {
            return Ok(self.state.active);
        };
        if self.state.active != Some(good) {
            self.state = State {
                active: Some(good),
                last_known_good: Some(good),
                last_refused: self.state.active,
                trial: false,
            };
            self.persist()?;
        }
        Ok(Some(good))
    }

    /// Deletes every blob other than the active and last known good ones; returns how many.
    /// Call it after an activation settles, not while a downloaded model awaits activation
    /// (that blob is neither active nor last known good yet, and would be deleted).
    pub fn collect_garbage(&self) -> Result<usize> {
        self.collect_garbage_except(&[])
    }

    /// [`ModelStore::collect_garbage`], also keeping the blobs named in `also_keep` (e.g. a
    /// shadow candidate).
    pub fn collect_garbage_except(&self, also_keep: &[[u8; 32]]) -> Result<usize> {
        let keep: Vec<PathBuf> = [self.state.active, self.state.last_known_good]
            .into_iter()
            .flatten()
            .map(|m| m.sha256)
            .chain(also_keep.iter().copied())
            .map(|sha| self.blob_path(&sha))
            .collect();
        let base = self.root.join("blobs").join("sha256");
        let mut n = 0;
        let rd = std::fs::read_dir(&base).map_err(|e| AgentError::io("list blobs", &base, e))?;
        for sub in rd {
            let sub = sub
                .map_err(|e| AgentError::io("list blobs", &base, e))?
                .path();
            let Ok(files) = std::fs::read_dir(&sub) else {
                continue;
            };
            for f in files {
                let p = f.map_err(|e| AgentError::io("list blobs", &sub, e))?.path();
                if !keep.contains(&p) {
                    std::fs::remove_file(&p).map_err(|e| AgentError::io("delete blob", &p, e))?;
                    n += 1;
                }
            }
            fsutil::sync_dir(&sub)?;
        }
        Ok(n)
    }
}

/// A download in progress (see the module docs).
#[derive(Debug)]
pub struct Download {
    sha256: [u8; 32],
    length: u64,
    offset: u64,
    file: File,
    hasher: Sha256,
    part: PathBuf,
    ckpt: PathBuf,
    blob: PathBuf,
}

impl Download {
    /// Bytes already held: request the rest of the file from here.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The expected total length.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Appends the next chunk. Refuses bytes beyond the expected length.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.offset + chunk.len() as u64 > self.length {
            return Err(AgentError::DownloadOverrun {
                sha256: hex(&self.sha256),
                expected: self.length,
            });
        }
        self.file
            .write_all(chunk)
            .map_err(|e| AgentError::io("write partial download", &self.part, e))?;
        self.hasher.update(chunk);
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Makes the bytes so far durable and records a resumable checkpoint.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| AgentError::io("fsync partial download", &self.part, e))?;
        let mut c = Vec::with_capacity(48);
        c.extend_from_slice(&self.offset.to_le_bytes());
        c.extend_from_slice(&self.length.to_le_bytes());
        c.extend_from_slice(&self.hasher.clone().finalize());
        fsutil::write_state_file(&self.ckpt, &c)
    }

    /// Verifies length and digest and installs the blob atomically; returns its digest. On a
    /// mismatch the partial file is deleted (the bytes were wrong, resuming cannot help) and
    /// [`AgentError::LengthMismatch`] or [`AgentError::HashMismatch`] is returned.
    pub fn finish(mut self) -> Result<[u8; 32]> {
        let actual: [u8; 32] = self.hasher.clone().finalize().into();
        let err = if self.offset != self.length {
            Some(AgentError::LengthMismatch {
                expected: self.length,
                actual: self.offset,
            })
        } else if actual != self.sha256 {
            Some(AgentError::HashMismatch {
                expected: hex(&self.sha256),
                actual: hex(&actual),
            })
        } else {
            None
        };
        if let Some(e) = err {
            if self.offset == self.length {
                let _ = std::fs::remove_file(&self.part);
                let _ = std::fs::remove_file(&self.ckpt);
            }
            return Err(e);
        }
        self.file
            .flush()
            .and_then(|()| self.file.sync_all())
            .map_err(|e| AgentError::io("fsync download", &self.part, e))?;
        let dir = self.blob.parent().unwrap_or(Path::new("."));
        let created = !dir.exists();
        fsutil::ensure_dir(dir)?;
        if created && let Some(up) = dir.parent() {
            fsutil::sync_dir(up)?;
        }
        std::fs::rename(&self.part, &self.blob)
            .map_err(|e| AgentError::io("install blob", &self.blob, e))?;
        fsutil::sync_dir(dir)?;
        if let Some(partial) = self.part.parent() {
            let _ = std::fs::remove_file(&self.ckpt);
            fsutil::sync_dir(partial)?;
        }
        Ok(self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codec_round_trips() {
        let s = State {
            active: Some(ModelRef {
                version: 3,
                sha256: [7; 32],
            }),
            last_known_good: None,
            last_refused: Some(ModelRef {
                version: 4,
                sha256: [9; 32],
            }),
            trial: true,
        };
        assert_eq!(State::decode(&s.encode(), Path::new("s")).unwrap(), s);
    }
}
