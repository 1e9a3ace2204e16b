//! The model registry: publishing a model file with signed metadata, and assignments.
//!
//! [`publish`] stores the ONNX file as a content-addressed blob, builds the metadata the device
//! checks (family, version, length, SHA-256, issue and expiry time, rollback floor), signs its
//! canonical bytes ([`ModelMetadata::canonical_bytes`]) with the Ed25519 release key and
//! registers the version. Publishing the same bytes under the same version again is a no-op;
//! other bytes under a published version are refused. [`assign`] sets what one device, or the
//! whole fleet (`*`), runs. Both work on a data directory directly (SQLite in WAL mode), so they
//! can run while `sextant backend serve` uses the same directory: the server reads assignments
//! and models per request.

use sextant_proto::SignedModelMetadata;
use sextant_proto::{KeyId, Label, ModelMetadata, ModelVersion, Sha256Digest, Signature};
use sha2::{Digest, Sha256};

use crate::error::{BackendError, Result};
use crate::pki::ReleaseKey;
use crate::store::{Assignment, DEFAULT_ASSIGNMENT, DataDir, ModelRecord, Storage};

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    /// The model file's bytes.
    pub bytes: &'a [u8],
    /// Model family (a label, e.g. `descriptor`).
    pub family: &'a str,
    /// Release number (≥ 1).
    pub version: u64,
    /// Rollback floor the device adopts after installing it (≤ `version`).
    pub floor: u64,
    /// Signing time (Unix seconds).
    pub issued_at_s: u64,
    /// Expiry (Unix seconds); after it devices refuse the metadata.
    pub expires_at_s: u64,
}

/// The release key's id as the protocol names it: the first 8 bytes of the SHA-256 of its
/// public key.
pub fn key_id(public_key: &[u8; 32]) -> [u8; 8] {
    let d = Sha256::digest(public_key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// Builds and signs the metadata for `req` without storing anything.
pub fn sign_metadata(key: &ReleaseKey, req: &PublishRequest<'_>) -> Result<SignedModelMetadata> {
    if req.version == 0 {
        return Err(BackendError::Invalid("model versions start at 1".into()));
    }
    if req.floor > req.version {
        return Err(BackendError::Invalid(format!(
            "floor {} is above the version {}",
            req.floor, req.version
        )));
    }
    if req.expires_at_s <= req.issued_at_s {
        return Err(BackendError::Invalid(
            "metadata must expire after it is issued".into(),
        ));
    }
    let metadata = ModelMetadata {
        family: Label::new(req.family)?,
        version: ModelVersion(req.version),
        length: req.bytes.len() as u64,
        sha256: Sha256Digest(Sha256::digest(req.bytes).into()),
        issued_at_s: req.issued_at_s,
        expires_at_s: req.expires_at_s,
        floor: ModelVersion(req.floor),
    };
    let signature = key.sign(&metadata.canonical_bytes());
    Ok(SignedModelMetadata {
        metadata,
        key_id: KeyId(key_id(&key.public_key())),
        signature: Signature(signature),
    })
}

/// Stores the blob and registers signed metadata for it (see the module docs); returns the
/// metadata as devices will receive it.
pub fn publish(
    data: &mut DataDir,
    key: &ReleaseKey,
    req: &PublishRequest<'_>,
) -> Result<SignedModelMetadata> {
    let signed = sign_metadata(key, req)?;
    register(data, req.bytes, &signed)?;
    Ok(signed)
}

/// Stores `bytes` and registers `signed` as-is (no check that it matches the bytes or verifies:
/// the device does that). [`publish`] is the normal way in; this one exists so that tests and
/// operators can stage exactly the record a device will see.
pub fn register(data: &mut DataDir, bytes: &[u8], signed: &SignedModelMetadata) -> Result<()> {
    let sha = data.blobs.put(bytes)?;
    data.db.put_model(&ModelRecord {
        version: signed.metadata.version.0,
        sha256: sha,
        length: bytes.len() as u64,
        metadata: signed.metadata.canonical_bytes(),
        signature: signed.signature.0.to_vec(),
        key_id: signed.key_id.0,
    })?;
    Ok(())
}

/// The signed metadata of a registered model, as sent to devices.
pub fn signed_metadata(record: &ModelRecord) -> Result<SignedModelMetadata> {
    let metadata = ModelMetadata::from_canonical_bytes(&record.metadata)?;
    let signature: [u8; 64] = record
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| BackendError::Invalid("stored signature is not 64 bytes".into()))?;
    Ok(SignedModelMetadata {
        metadata,
        key_id: KeyId(record.key_id),
        signature: Signature(signature),
    })
}

/// Sets what `device` (or, with `None`, every device without its own assignment) runs.
pub fn assign(
    data: &mut DataDir,
    device: Option<&str>,
    model: u64,
    shadow: Option<u64>,
    now_ms: i64,
) -> Result<()> {
    data.db.set_assignment(&Assignment {
        device_id: device.unwrap_or(DEFAULT_ASSIGNMENT).to_owned(),
        model_version: model,
        shadow_version: shadow,
        assigned_at_ms: now_ms,
    })?;
    Ok(())
}
