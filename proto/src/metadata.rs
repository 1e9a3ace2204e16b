//! Signed model metadata and its canonical byte encoding.
//!
//! The release key signs [`ModelMetadata::canonical_bytes`], never the CBOR that carries the
//! metadata: CBOR has several valid encodings of one value, the canonical form has exactly one,
//! and it is written by hand here so that neither serde nor ciborium can change it. The agent
//! decodes the CBOR message, recomputes the canonical bytes from the decoded fields and verifies
//! the Ed25519 signature over them with the pinned key. This crate does no cryptography.
//!
//! Canonical form, version 1 (all integers big-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 24 | domain tag `b"sextant-model-metadata\0"` (23 bytes), then format byte `0x01` |
//! | 1 + n | `family`: length `n` (1..=64) then its ASCII bytes |
//! | 8 | `version` |
//! | 8 | `length` (model file size in bytes) |
//! | 32 | `sha256` of the model file |
//! | 8 | `issued_at_s` (Unix seconds) |
//! | 8 | `expires_at_s` (Unix seconds) |
//! | 8 | `floor` (after installing this model, refuse anything below this version) |

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::types::{KeyId, Label, MAX_LABEL_LEN, ModelVersion, Sha256Digest, Signature};

/// Domain-separation prefix of the canonical encoding (includes the format byte).
pub const CANONICAL_PREFIX: &[u8; 24] = b"sextant-model-metadata\0\x01";

/// What the release key vouches for about one model file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Model family, e.g. `descriptor`.
    pub family: Label,
    /// Release number; must not be below the device's floor.
    pub version: ModelVersion,
    /// Exact file length in bytes.
    pub length: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
    /// When the metadata was signed (Unix seconds).
    pub issued_at_s: u64,
    /// After this instant (Unix seconds) the metadata is refused; the registry re-signs
    /// metadata of live models before it expires (a freeze attack then cannot pin old models).
    pub expires_at_s: u64,
    /// The lowest version a device may run after installing this one; at most `version`.
    pub floor: ModelVersion,
}

impl ModelMetadata {
    /// The exact bytes the release key signs (see the module doc for the layout).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let family = self.family.as_str().as_bytes();
        let mut out = Vec::with_capacity(CANONICAL_PREFIX.len() + 1 + family.len() + 72);
        out.extend_from_slice(CANONICAL_PREFIX);
        // A Label is at most MAX_LABEL_LEN (64) bytes, so its length fits a u8.
        out.push(family.len().min(MAX_LABEL_LEN) as u8);
        out.extend_from_slice(family);
        out.extend_from_slice(&self.version.0.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.sha256.0);
        out.extend_from_slice(&self.issued_at_s.to_be_bytes());
        out.extend_from_slice(&self.expires_at_s.to_be_bytes());
        out.extend_from_slice(&self.floor.0.to_be_bytes());
        out
    }

    /// Parses canonical bytes strictly: the prefix, every field, and no trailing bytes.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader(bytes);
        if r.take(CANONICAL_PREFIX.len())? != CANONICAL_PREFIX {
            return Err(ProtoError::BadCanonicalMetadata {
                reason: "wrong prefix or format version",
            });
        }
        let n = usize::from(r.take(1)?[0]);
        let family = std::str::from_utf8(r.take(n)?)
            .ok()
            .and_then(|s| Label::new(s).ok())
            .ok_or(ProtoError::BadCanonicalMetadata {
                reason: "family is not a valid label",
            })?;
        let version = ModelVersion(r.u64()?);
        let length = r.u64()?;
        let mut sha = [0u8; 32];
        sha.copy_from_slice(r.take(32)?);
        let issued_at_s = r.u64()?;
        let expires_at_s = r.u64()?;
        let floor = ModelVersion(r.u64()?);
        if !r.0.is_empty() {
            return Err(ProtoError::BadCanonicalMetadata {
                reason: "trailing bytes",
            });
        }
        Ok(ModelMetadata {
            family,
            version,
            length,
            sha256: Sha256Digest(sha),
            issued_at_s,
            expires_at_s,
            floor,
        })
    }

    /// The checks a device makes besides the signature, length and hash: the metadata is
    /// self-consistent (`floor <= version`, issued before it expires), not expired at `now_s`
    /// (Unix seconds from the device's clock), and `version` is not below the device's `floor`.
    pub fn check(&self, now_s: u64, floor: ModelVersion) -> Result<(), ProtoError> {
        if self.floor > self.version {
            return Err(ProtoError::InvalidField {
                field: "floor",
                reason: format!("floor {} above version {}", self.floor, self.version),
            });
        }
        if self.issued_at_s > self.expires_at_s {
            return Err(ProtoError::InvalidField {
                field: "expires_at_s",
                reason: "expires before it was issued".into(),
            });
        }
        if now_s >= self.expires_at_s {
            return Err(ProtoError::MetadataExpired {
                version: self.version.0,
                expires_at_s: self.expires_at_s,
                now_s,
            });
        }
        if self.version < floor {
            return Err(ProtoError::BelowFloor {
                version: self.version.0,
                floor: floor.0,
            });
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::BadCanonicalMetadata {
                reason: "truncated",
            });
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, ProtoError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

/// Model metadata with the release key's signature over its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedModelMetadata {
    /// The signed fields.
    pub metadata: ModelMetadata,
    /// Which release key signed (lets the device pick among pinned keys during rotation).
    pub key_id: KeyId,
    /// Ed25519 signature over `metadata.canonical_bytes()`.
    pub signature: Signature,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelMetadata {
        ModelMetadata {
            family: Label::new("descriptor").unwrap(),
            version: ModelVersion(7),
            length: 0x0102_0304,
            sha256: Sha256Digest([0xab; 32]),
            issued_at_s: 1_700_000_000,
            expires_at_s: 1_700_604_800,
            floor: ModelVersion(5),
        }
    }

    /// Pins the canonical layout: changing it invalidates every signature in the field.
    #[test]
    fn canonical_bytes_golden() {
        let b = sample().canonical_bytes();
        let mut want = Vec::new();
        want.extend_from_slice(b"sextant-model-metadata\0\x01");
        want.push(10);
        want.extend_from_slice(b"descriptor");
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        want.extend_from_slice(&1_700_604_800u64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(b, want);
        assert_eq!(b.len(), 24 + 1 + 10 + 8 + 8 + 32 + 8 + 8 + 8);
    }

    #[test]
    fn canonical_bytes_parse_back_and_refuse_damage() {
        let m = sample();
        let b = m.canonical_bytes();
        assert_eq!(ModelMetadata::from_canonical_bytes(&b), Ok(m));
        for cut in 0..b.len() {
            assert!(
                ModelMetadata::from_canonical_bytes(&b[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut long = b.clone();
        long.push(0);
        assert!(ModelMetadata::from_canonical_bytes(&long).is_err());
        let mut wrong_format = b;
        wrong_format[23] = 2;
        assert!(ModelMetadata::from_canonical_bytes(&wrong_format).is_err());
    }

    #[test]
    fn check_refuses_expired_and_below_floor() {
        let m = sample();
        assert_eq!(m.check(1_700_000_001, ModelVersion(7)), Ok(()));
        assert!(matches!(
            m.check(1_700_604_800, ModelVersion(0)),
            Err(ProtoError::MetadataExpired { .. })
        ));
        assert_eq!(
            m.check(1_700_000_001, ModelVersion(8)),
            Err(ProtoError::BelowFloor {
                version: 7,
                floor: 8
            })
        );
        let mut bad = sample();
        bad.floor = ModelVersion(9);
        assert!(bad.check(1_700_000_001, ModelVersion(0)).is_err());
    }
}
