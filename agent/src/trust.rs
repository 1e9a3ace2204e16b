//! The device's checks on model metadata and downloaded model files.
//!
//! Model delivery follows The Update Framework's threat model: the release key (Ed25519, kept
//! offline by the fleet's release managers) signs each model's metadata, and the device pins the
//! release public key. Before installing a model the device checks, in this order, each with its
//! own error:
//!
//! 1. the signature over the metadata's canonical bytes verifies against a pinned key
//!    ([`AgentError::BadSignature`]) — nothing below is trusted before this;
//! 2. the metadata has not expired at the device's clock ([`AgentError::MetadataExpired`]) — a
//!    freeze attack cannot keep serving old metadata forever;
//! 3. the version is not below the device's floor ([`AgentError::BelowFloor`]) — no rollback
//!    to a signed but superseded model;
//! 4. the downloaded file's length and SHA-256 match the signed ones
//!    ([`AgentError::LengthMismatch`], [`AgentError::HashMismatch`]).
//!
//! The signed bytes are the protocol's canonical encoding
//! ([`sextant_proto::ModelMetadata::canonical_bytes`]). [`check_signed_metadata`] takes the
//! decoded [`SignedModelMetadata`], re-encodes it, verifies the signature over those bytes and
//! returns the [`MetadataClaims`] taken from the *same* value — so the fields acted on are always
//! the fields that were verified. [`check_metadata`] is the same check over raw bytes and
//! separately supplied claims, for callers outside the protocol (tools, tests).

use ring::signature::{ED25519, UnparsedPublicKey};
use sextant_proto::{ModelMetadata, SignedModelMetadata};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};
use crate::fsutil::hex;

/// An Ed25519 public key the device trusts for model metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedKey(pub [u8; 32]);

/// The signed fields the device acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataClaims {
    /// Release number.
    pub version: u64,
    /// Exact file length in bytes.
    pub length: u64,
    /// SHA-256 of the file.
    pub sha256: [u8; 32],
    /// Unix seconds after which the metadata is refused.
    pub expires_at_s: u64,
}

impl From<&ModelMetadata> for MetadataClaims {
    fn from(m: &ModelMetadata) -> Self {
        MetadataClaims {
            version: m.version.0,
            length: m.length,
            sha256: m.sha256.0,
            expires_at_s: m.expires_at_s,
        }
    }
}

/// Checks 1–3 of the module docs on metadata as received from the backend, plus its
/// self-consistency (`floor <= version`, issued before it expires); returns the verified claims
/// to check the download against with [`check_blob`] or [`check_blob_digest`].
pub fn check_signed_metadata(
    signed: &SignedModelMetadata,
    pinned: &[PinnedKey],
    now_s: u64,
    floor: u64,
) -> Result<MetadataClaims> {
    let m = &signed.metadata;
    let claims = MetadataClaims::from(m);
    check_metadata(
        &m.canonical_bytes(),
        &signed.signature.0,
        &claims,
        pinned,
        now_s,
        floor,
    )?;
    if m.floor > m.version {
        return Err(AgentError::InconsistentMetadata("floor above version"));
    }
    if m.issued_at_s > m.expires_at_s {
        return Err(AgentError::InconsistentMetadata(
            "expires before it was issued",
        ));
    }
    Ok(claims)
}

/// Verifies an Ed25519 `signature` over `message` against any of the `pinned` keys.
pub fn verify_signature(message: &[u8], signature: &[u8], pinned: &[PinnedKey]) -> Result<()> {
    let ok = pinned.iter().any(|k| {
        UnparsedPublicKey::new(&ED25519, &k.0)
            .verify(message, signature)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(AgentError::BadSignature)
    }
}

/// Checks 1–3 of the module docs: signature, expiry at `now_s`, and version ≥ `floor`.
pub fn check_metadata(
    signed_bytes: &[u8],
    signature: &[u8],
    claims: &MetadataClaims,
    pinned: &[PinnedKey],
    now_s: u64,
    floor: u64,
) -> Result<()> {
    verify_signature(signed_bytes, signature, pinned)?;
    if now_s >= claims.expires_at_s {
        return Err(AgentError::MetadataExpired {
            expires_at_s: claims.expires_at_s,
            now_s,
        });
    }
    if claims.version < floor {
        return Err(AgentError::BelowFloor {
            version: claims.version,
            floor,
        });
    }
    Ok(())
}

/// Check 4 of the module docs on a downloaded file's bytes.
pub fn check_blob(claims: &MetadataClaims, blob: &[u8]) -> Result<()> {
    check_blob_digest(claims, blob.len() as u64, &Sha256::digest(blob).into())
}

/// Check 4 on a length and digest computed while streaming the download.
pub fn check_blob_digest(claims: &MetadataClaims, length: u64, sha256: &[u8; 32]) -> Result<()> {
    if length != claims.length {
        return Err(AgentError::LengthMismatch {
            expected: claims.length,
            actual: length,
        });
    }
    if *sha256 != claims.sha256 {
        return Err(AgentError::HashMismatch {
            expected: hex(&claims.sha256),
            actual: hex(sha256),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn keypair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn pinned(k: &Ed25519KeyPair) -> PinnedKey {
        PinnedKey(k.public_key().as_ref().try_into().unwrap())
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let key = keypair();
        let blob = b"model bytes".to_vec();
        let claims = MetadataClaims {
            version: 5,
            length: blob.len() as u64,
            sha256: Sha256::digest(&blob).into(),
            expires_at_s: 1000,
        };
        let msg = b"canonical metadata bytes";
        let sig = key.sign(msg);
        let pins = [pinned(&key)];
        check_metadata(msg, sig.as_ref(), &claims, &pins, 999, 5).unwrap();
        check_blob(&claims, &blob).unwrap();

        let other = [pinned(&keypair())];
        assert!(matches!(
            check_metadata(msg, sig.as_ref(), &claims, &other, 999, 5),
            Err(AgentError::BadSignature)
        ));
        let mut tampered = msg.to_vec();
        tampered[0] ^= 1;
        assert!(matches!(
            check_metadata(&tampered, sig.as_ref(), &claims, &pins, 999, 5),
            Err(AgentError::BadSignature)
        ));
        assert!(matches!(
            check_metadata(msg, &sig.as_ref()[..63], &claims, &pins, 999, 5),
            Err(AgentError::BadSignature)
        ));
        assert!(matches!(
            check_metadata(msg, sig.as_ref(), &claims, &pins, 1000, 5),
            Err(AgentError::MetadataExpired {
                expires_at_s: 1000,
                now_s: 1000
            })
        ));
        assert!(matches!(
            check_metadata(msg, sig.as_ref(), &claims, &pins, 999, 6),
            Err(AgentError::BelowFloor {
                version: 5,
                floor: 6
            })
        ));
        assert!(matches!(
            check_blob(&claims, &blob[1..]),
            Err(AgentError::LengthMismatch { .. })
        ));
        let mut flipped = blob.clone();
        flipped[3] ^= 0x80;
        assert!(matches!(
            check_blob(&claims, &flipped),
            Err(AgentError::HashMismatch { .. })
        ));
        // Rotation: any pinned key may sign.
        let both = [other[0], pins[0]];
        check_metadata(msg, sig.as_ref(), &claims, &both, 0, 0).unwrap();
    }

    #[test]
    fn signed_protocol_metadata_is_checked_over_its_canonical_bytes() {
        use sextant_proto::types::{KeyId, Label, ModelVersion, Sha256Digest, Signature};
        let key = keypair();
        let pins = [pinned(&key)];
        let blob = b"onnx bytes".to_vec();
        let meta = ModelMetadata {
            family: Label::new("descriptor").unwrap(),
            version: ModelVersion(7),
            length: blob.len() as u64,
            sha256: Sha256Digest(Sha256::digest(&blob).into()),
            issued_at_s: 100,
            expires_at_s: 200,
            floor: ModelVersion(5),
        };
        let sign = |m: &ModelMetadata| SignedModelMetadata {
            metadata: m.clone(),
            key_id: KeyId([0; 8]),
            signature: Signature(key.sign(&m.canonical_bytes()).as_ref().try_into().unwrap()),
        };
        let signed = sign(&meta);
        let claims = check_signed_metadata(&signed, &pins, 150, 7).unwrap();
        check_blob(&claims, &blob).unwrap();
        // Any field changed after signing breaks the signature.
        let mut tampered = signed.clone();
        tampered.metadata.version = ModelVersion(8);
        assert!(matches!(
            check_signed_metadata(&tampered, &pins, 150, 0),
            Err(AgentError::BadSignature)
        ));
        assert!(matches!(
            check_signed_metadata(&signed, &pins, 200, 0),
            Err(AgentError::MetadataExpired { .. })
        ));
        assert!(matches!(
            check_signed_metadata(&signed, &pins, 150, 8),
            Err(AgentError::BelowFloor {
                version: 7,
                floor: 8
            })
        ));
        let mut odd = meta.clone();
        odd.floor = ModelVersion(9);
        assert!(matches!(
            check_signed_metadata(&sign(&odd), &pins, 150, 0),
            Err(AgentError::InconsistentMetadata(_))
        ));
    }
}
