//! The device's persisted memory of refused model releases, so that a restart does not fetch a
//! known-bad release again.
//!
//! Two kinds of refusal, matched differently:
//!
//! - [`RefusalKind::Content`]: the bytes were refused (wrong length or SHA-256, or the model failed
//!   to load or its self-check). Keyed by `(version, sha256)`: whatever metadata names those
//!   bytes again, they stay refused. A publisher recovers by releasing a new version.
//! - [`RefusalKind::Metadata`]: the signed metadata was refused before any download (bad or
//!   unpinned signature, expired, below the floor, inconsistent). Keyed by `(version, sha256,
//!   fingerprint)`, the fingerprint being the SHA-256 of the canonical metadata bytes and the
//!   signature: metadata re-signed later (say with a fresh expiry) is a different fingerprint
//!   and is checked afresh, while the same refused metadata is not looked at again.
//!
//! On disk: one checksummed state file (`refused.state`, written atomically through
//! [`crate::fsutil::write_state_file`]) holding at most [`MAX_REFUSALS`] entries, oldest
//! dropped first. A damaged file is logged and treated as empty: forgetting a refusal costs at
//! most one more download, which is then verified and refused again — nothing is trusted because
//! of this file.

use std::path::{Path, PathBuf};

use sextant_proto::SignedModelMetadata;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::fsutil;

/// Most refusals remembered.
pub const MAX_REFUSALS: usize = 64;

const VERSION: u8 = 1;
const ENTRY: usize = 1 + 8 + 32 + 32;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The bytes (length, hash, load, self-check).
    Content,
    /// The signed metadata (signature, key, expiry, floor, consistency).
    Metadata,
}

/// One remembered refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind.
    pub kind: RefusalKind,
    /// Model version.
    pub version: u64,
    /// The SHA-256 the metadata named.
    pub sha256: [u8; 32],
    /// [`fingerprint`] of the metadata (all zeros for content refusals).
    pub fingerprint: [u8; 32],
}

/// The SHA-256 of a signed metadata's canonical bytes, key id and signature.
pub fn fingerprint(signed: &SignedModelMetadata) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(signed.metadata.canonical_bytes());
    h.update(signed.key_id.0);
    h.update(signed.signature.0);
    h.finalize().into()
}

/// The refusals of one device, persisted in a state file.
#[derive(Debug)]
pub struct Refusals {
    path: PathBuf,
    entries: Vec<Refusal>,
}

impl Refusals {
    /// Loads `path` (missing: empty; damaged: logged and empty).
    pub fn open(path: &Path) -> Refusals {
        let entries = match fsutil::read_state_file(path) {
            Ok(Some(b)) => decode(&b).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "refusal list unreadable; starting empty");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "refusal list damaged; starting empty");
                Vec::new()
            }
        };
        Refusals {
            path: path.to_path_buf(),
            entries,
        }
    }

    /// Whether this signed metadata (or the bytes it names) was refused before.
    pub fn is_refused(&self, signed: &SignedModelMetadata) -> bool {
        let (v, sha) = (signed.metadata.version.0, signed.metadata.sha256.0);
        let mut fp = None;
        self.entries.iter().any(|r| {
            r.version == v
                && r.sha256 == sha
                && match r.kind {
                    RefusalKind::Content => true,
                    RefusalKind::Metadata => {
                        *fp.get_or_insert_with(|| fingerprint(signed)) == r.fingerprint
                    }
                }
        })
    }

    /// Whether the bytes `(version, sha256)` were refused.
    pub fn is_content_refused(&self, version: u64, sha256: &[u8; 32]) -> bool {
        self.entries
            .iter()
            .any(|r| r.kind == RefusalKind::Content && r.version == version && r.sha256 == *sha256)
    }

    /// Remembers a refusal and makes it durable (a failure to persist is returned; the refusal
    /// is still remembered in memory).
    pub fn insert(&mut self, kind: RefusalKind, signed: &SignedModelMetadata) -> Result<()> {
        let r = Refusal {
            kind,
            version: signed.metadata.version.0,
            sha256: signed.metadata.sha256.0,
            fingerprint: match kind {
                RefusalKind::Content => [0; 32],
                RefusalKind::Metadata => fingerprint(signed),
            },
        };
        self.insert_entry(r)
    }

    /// Remembers that the bytes `(version, sha256)` were refused.
    pub fn insert_content(&mut self, version: u64, sha256: [u8; 32]) -> Result<()> {
        self.insert_entry(Refusal {
            kind: RefusalKind::Content,
            version,
            sha256,
            fingerprint: [0; 32],
        })
    }

    fn insert_entry(&mut self, r: Refusal) -> Result<()> {
        if self.entries.contains(&r) {
            return Ok(());
        }
        self.entries.push(r);
        if self.entries.len() > MAX_REFUSALS {
            let extra = self.entries.len() - MAX_REFUSALS;
            self.entries.drain(..extra);
        }
        fsutil::write_state_file(&self.path, &encode(&self.entries))
    }

    /// The remembered refusals, oldest first.
    pub fn entries(&self) -> &[Refusal] {
        &self.entries
    }
}

fn encode(entries: &[Refusal]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + entries.len() * ENTRY);
    v.push(VERSION);
    for r in entries {
        v.push(match r.kind {
            RefusalKind::Content => 0,
            RefusalKind::Metadata => 1,
        });
        v.extend_from_slice(&r.version.to_le_bytes());
        v.extend_from_slice(&r.sha256);
        v.extend_from_slice(&r.fingerprint);
    }
    v
}

fn decode(b: &[u8]) -> Option<Vec<Refusal>> {
    let (&ver, rest) = b.split_first()?;
    if ver != VERSION || !rest.len().is_multiple_of(ENTRY) {
        return None;
    }
    rest.chunks_exact(ENTRY)
        .map(|c| {
            let kind = match c[0] {
                0 => RefusalKind::Content,
                1 => RefusalKind::Metadata,
                _ => return None,
            };
            Some(Refusal {
                kind,
                version: u64::from_le_bytes(c[1..9].try_into().ok()?),
                sha256: c[9..41].try_into().ok()?,
                fingerprint: c[41..73].try_into().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_proto::{KeyId, Label, ModelMetadata, ModelVersion, Sha256Digest, Signature};

    fn signed(version: u64, sha: u8, sig: u8) -> SignedModelMetadata {
        SignedModelMetadata {
            metadata: ModelMetadata {
                family: Label::new("descriptor").unwrap(),
                version: ModelVersion(version),
                length: 10,
                sha256: Sha256Digest([sha; 32]),
                issued_at_s: 1,
                expires_at_s: 2,
                floor: ModelVersion(version),
            },
            key_id: KeyId([0; 8]),
            signature: Signature([sig; 64]),
        }
    }

    #[test]
    fn survives_reopen_and_matches_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("refused.state");
        let mut r = Refusals::open(&p);
        r.insert(RefusalKind::Content, &signed(3, 1, 1)).unwrap();
        r.insert(RefusalKind::Metadata, &signed(4, 2, 1)).unwrap();
        let r = Refusals::open(&p);
        assert_eq!(r.entries().len(), 2);
        // Content: any metadata naming the same bytes.
        assert!(r.is_refused(&signed(3, 1, 9)));
        assert!(r.is_content_refused(3, &[1; 32]));
        // Metadata: only the same signed metadata; re-signed metadata is checked afresh.
        assert!(r.is_refused(&signed(4, 2, 1)));
        assert!(!r.is_refused(&signed(4, 2, 7)));
        assert!(!r.is_content_refused(4, &[2; 32]));
        assert!(!r.is_refused(&signed(5, 1, 1)));
    }

    #[test]
    fn capped_and_damage_tolerant() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("refused.state");
        let mut r = Refusals::open(&p);
        for v in 0..(MAX_REFUSALS as u64 + 5) {
            r.insert_content(v, [7; 32]).unwrap();
        }
        let r = Refusals::open(&p);
        assert_eq!(r.entries().len(), MAX_REFUSALS);
        assert_eq!(r.entries()[0].version, 5);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(Refusals::open(&p).entries().is_empty());
    }
}
