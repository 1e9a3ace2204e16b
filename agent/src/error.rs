//! The agent's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the agent's storage, queue and trust checks.
///
/// Each refusal a caller may want to act on has its own variant (a full disk, a torn or corrupt
/// record, each metadata check), so callers match on kinds rather than parse messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// An I/O operation failed; `what` says which, `path` where.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. `"append to segment"`.
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The disk is full (ENOSPC, EDQUOT, or a write that made no progress). Nothing already stored
    /// was lost; the operation that hit it had no effect.
    #[error("disk full while trying to {what} {}", path.display())]
    DiskFull {
        /// The operation, e.g. `"append to segment"`.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
    },
    /// A state file (queue cursor, model-store pointers) failed its checksum or could not be parsed.
    #[error("state file {} is corrupt: {reason}", path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// A record in a sealed (non-tail) queue segment failed its checksum; the records after it in
    /// that segment were discarded and counted in the queue's `corrupt` counter.
    #[error("queue segment {} is corrupt at offset {offset}", path.display())]
    CorruptRecord {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
    },
    /// A record payload is larger than the queue accepts.
    #[error("record of {len} bytes exceeds the queue's limit of {max} bytes")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A stored blob's bytes no longer hash to its name (bit rot, tampering, a torn write).
    #[error("blob {expected} is corrupt: its bytes hash to {actual}")]
    BlobCorrupt {
        /// The digest the blob is stored under (hex).
        expected: String,
        /// What its bytes hash to now (hex).
        actual: String,
    },
    /// A blob the caller asked for is not in the store.
    #[error("blob {0} is not in the store")]
    BlobMissing(String),
    /// A download received more bytes than the metadata's length.
    #[error("download of {sha256} overran its expected length of {expected} bytes")]
    DownloadOverrun {
        /// The blob's digest (hex).
        sha256: String,
        /// The expected length.
        expected: u64,
    },
    /// A newly activated model failed to load or failed its self-check; the store rolled back to
    /// the last known good model (if there was one).
    #[error("model {sha256} failed its self-check ({reason}); rolled back to {}", rolled_back_to.as_deref().unwrap_or("no model"))]
    SelfCheckFailed {
        /// The refused model's digest (hex).
        sha256: String,
        /// What the self-check reported.
        reason: String,
        /// The digest of the model now active again, if any.
        rolled_back_to: Option<String>,
    },
    /// Metadata refused: the Ed25519 signature does not verify against the pinned release key.
    #[error("model metadata signature does not verify against the pinned release key")]
    BadSignature,
    /// Metadata refused: it expired at `expires_at_s`, before `now_s`.
    #[error("model metadata expired at {expires_at_s} (now {now_s})")]
    MetadataExpired {
        /// Expiry (Unix seconds).
        expires_at_s: u64,
        /// The device's clock (Unix seconds).
        now_s: u64,
    },
    /// Metadata refused: its version is below the device's floor (a rollback attack or a stale mirror).
    #[error("model version {version} is below the floor {floor}")]
    BelowFloor {
        /// Offered version.
        version: u64,
        /// The device's floor.
        floor: u64,
    },
    /// Metadata refused: signed, but not self-consistent (floor above version, or expiring before
    /// it was issued).
    #[error("model metadata is inconsistent: {0}")]
    InconsistentMetadata(&'static str),
    /// Download refused: its length differs from the signed length.
    #[error("model length {actual} differs from the signed length {expected}")]
    LengthMismatch {
        /// Signed length.
        expected: u64,
        /// Downloaded length.
        actual: u64,
    },
    /// Download refused: its SHA-256 differs from the signed digest.
    #[error("model sha256 {actual} differs from the signed digest {expected}")]
    HashMismatch {
        /// Signed digest (hex).
        expected: String,
        /// Downloaded digest (hex).
        actual: String,
    },
    /// The TLS or QUIC configuration could not be built (certificate, key, trust root).
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection to the backend failed or was lost.
    #[error("network: {0}")]
    Network(String),
    /// The protocol state machine refused an operation or the peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] sextant_proto::ProtoError),
}

impl AgentError {
    /// Wraps an I/O error, turning "no space" conditions into [`AgentError::DiskFull`].
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            AgentError::DiskFull { what, path }
        } else {
            AgentError::Io { what, path, source }
        }
    }
}

/// Whether an I/O error means the disk (or quota) is full. A write that returns `Ok(0)` is
/// reported by `write_all` as `WriteZero`, which we treat the same way.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::WriteZero
    ) || e.raw_os_error() == Some(28)
}

/// Result alias for the agent.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
