//! The crate's error type and the stable numeric error codes carried on the wire.

use serde::{Deserialize, Serialize};

use crate::message::ExchangeKind;
use crate::version::VersionRange;

/// Everything that can go wrong in this crate: decoding untrusted bytes, encoding, and a peer
/// breaking the protocol as seen by a session state machine.
///
/// Each variant maps to the [`ErrorCode`] sent to the peer when the error is the peer's fault
/// (see [`ProtoError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A length prefix announced a frame larger than the configured cap. Nothing was allocated
    /// for it; the byte stream cannot be resynchronised, so the decoder stays failed.
    #[error("frame of {len} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        /// Announced (or, when encoding, produced) body length.
        len: u64,
        /// The cap in force.
        max: u32,
    },
    /// The stream ended inside a frame: `have` bytes of a `need`-byte frame (prefix included)
    /// had arrived.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    TruncatedFrame {
        /// Bytes buffered when the stream ended.
        have: u64,
        /// Bytes the frame needed (4 while the prefix itself was incomplete).
        need: u64,
    },
    /// A frame body ended before its CBOR item was complete.
    #[error("CBOR body truncated")]
    TruncatedCbor,
    /// A frame body is not well-formed CBOR (syntax error at `offset`).
    #[error("CBOR syntax error at body offset {offset}")]
    InvalidCbor {
        /// Byte offset of the error inside the body.
        offset: u64,
    },
    /// A frame body is well-formed CBOR but not a message of this protocol version.
    #[error("message does not match the schema: {reason}")]
    Schema {
        /// What the deserialiser objected to.
        reason: String,
    },
    /// A frame body holds bytes after its single CBOR item.
    #[error("{extra} trailing bytes after the CBOR item")]
    TrailingBytes {
        /// How many bytes followed the item.
        extra: u64,
    },
    /// Nesting deeper than the decoder allows.
    #[error("CBOR nested too deeply")]
    TooDeep,
    /// Serialising a value failed (a bug or an unencodable value, never peer input).
    #[error("encoding failed: {reason}")]
    Encode {
        /// The serialiser's message.
        reason: String,
    },
    /// A field value is outside its documented domain.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The two sides' version ranges do not overlap.
    #[error("no common protocol version: ours {ours}, theirs {theirs}")]
    NoCommonVersion {
        /// Our supported range.
        ours: VersionRange,
        /// The peer's offered range.
        theirs: VersionRange,
    },
    /// An envelope carried a protocol version other than the negotiated one.
    #[error("envelope version {got}, negotiated {expected}")]
    WrongVersion {
        /// The negotiated version.
        expected: u16,
        /// The version in the envelope.
        got: u16,
    },
    /// A message arrived that is not allowed in the receiving state.
    #[error("unexpected {message} message in state {state}")]
    UnexpectedMessage {
        /// Name of the state (or exchange phase) that refused it.
        state: &'static str,
        /// Name of the message.
        message: &'static str,
    },
    /// A local call was made in a state that does not allow it (a driver bug, not peer input).
    #[error("{operation} not allowed in state {state}")]
    InvalidState {
        /// What was attempted.
        operation: &'static str,
        /// The state that refused it.
        state: &'static str,
    },
    /// A call or message named an exchange this side does not know (or has already closed).
    #[error("unknown exchange {0}")]
    UnknownExchange(u64),
    /// A call was made on an exchange of the wrong kind.
    #[error("exchange {exchange} is a {actual:?} exchange, not {wanted:?}")]
    WrongExchangeKind {
        /// The exchange.
        exchange: u64,
        /// Its kind.
        actual: ExchangeKind,
        /// The kind the call needed.
        wanted: ExchangeKind,
    },
    /// A model chunk did not continue the range where the previous one ended.
    #[error("chunk at offset {got}, expected {expected}")]
    ChunkOutOfOrder {
        /// The next offset the receiver expected.
        expected: u64,
        /// The offset in the chunk.
        got: u64,
    },
    /// Chunk data ran past the end of the requested range (or, on the server, the data handed to
    /// the state machine did).
    #[error("chunk data runs past the end of the range ({end} > {limit})")]
    RangeOverrun {
        /// Where the data would end.
        end: u64,
        /// Where the range ends.
        limit: u64,
    },
    /// A chunk, metadata or range named a different model than the exchange is about.
    #[error("message is about model {got}, exchange is about {expected}")]
    ModelMismatch {
        /// The model the exchange is about.
        expected: u64,
        /// The model the message named.
        got: u64,
    },
    /// A telemetry record named a device other than the session's.
    #[error("record for device {got:?} in a session of device {expected:?}")]
    DeviceMismatch {
        /// The session's device.
        expected: String,
        /// The record's device.
        got: String,
    },
    /// A telemetry acknowledgement named a batch or sequence numbers that were not sent.
    #[error("acknowledgement does not match the batch: {reason}")]
    BadAck {
        /// What did not match.
        reason: String,
    },
    /// Canonical metadata bytes could not be parsed.
    #[error("bad canonical metadata bytes: {reason}")]
    BadCanonicalMetadata {
        /// What was wrong.
        reason: &'static str,
    },
    /// Model metadata is past its expiry.
    #[error("metadata for model {version} expired at {expires_at_s}, now {now_s}")]
    MetadataExpired {
        /// The model.
        version: u64,
        /// Expiry (Unix seconds).
        expires_at_s: u64,
        /// The time it was checked at (Unix seconds).
        now_s: u64,
    },
    /// Model metadata names a version below the device's floor (a rollback attack, or a stale
    /// server).
    #[error("model {version} is below the floor {floor}")]
    BelowFloor {
        /// The offered version.
        version: u64,
        /// The device's floor.
        floor: u64,
    },
    /// The peer finished its side of a stream before the exchange was complete.
    #[error("stream ended in state {state} before the exchange completed")]
    StreamEnded {
        /// The state the exchange was in.
        state: &'static str,
    },
    /// A telemetry batch held more records than the session allows.
    #[error("batch of {records} records exceeds the limit of {max}")]
    BatchTooLarge {
        /// Records in the batch.
        records: u64,
        /// The session's limit.
        max: u32,
    },
    /// A peer's exchange saw no progress before its deadline.
    #[error("exchange {0} timed out")]
    TimedOut(u64),
}

impl ProtoError {
    /// The wire code to send to the peer when this error is reported to it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            ProtoError::TruncatedFrame { .. }
            | ProtoError::TruncatedCbor
            | ProtoError::InvalidCbor { .. }
            | ProtoError::Schema { .. }
            | ProtoError::TrailingBytes { .. }
            | ProtoError::TooDeep
            | ProtoError::InvalidField { .. } => ErrorCode::MALFORMED,
            ProtoError::NoCommonVersion { .. } | ProtoError::WrongVersion { .. } => {
                ErrorCode::VERSION_UNSUPPORTED
            }
            ProtoError::UnexpectedMessage { .. }
            | ProtoError::UnknownExchange(_)
            | ProtoError::WrongExchangeKind { .. }
            | ProtoError::ChunkOutOfOrder { .. }
            | ProtoError::ModelMismatch { .. }
            | ProtoError::BadAck { .. }
            | ProtoError::StreamEnded { .. } => ErrorCode::UNEXPECTED_MESSAGE,
            ProtoError::BatchTooLarge { .. } => ErrorCode::BATCH_TOO_LARGE,
            ProtoError::RangeOverrun { .. } => ErrorCode::RANGE_INVALID,
            ProtoError::DeviceMismatch { .. } => ErrorCode::DEVICE_MISMATCH,
            ProtoError::BadCanonicalMetadata { .. }
            | ProtoError::MetadataExpired { .. }
            | ProtoError::BelowFloor { .. } => ErrorCode::METADATA_REJECTED,
            ProtoError::TimedOut(_) => ErrorCode::TIMED_OUT,
            ProtoError::Encode { .. } | ProtoError::InvalidState { .. } => ErrorCode::INTERNAL,
        }
    }
}

/// A stable numeric error code, as carried in [`crate::ErrorMsg`].
///
/// Codes never change meaning and are never reused. Unknown codes (from a newer peer) decode
/// fine and keep their number, so an old agent can still log them. Ranges: `1xx` framing and
/// protocol, `2xx` identity, `3xx` models, `4xx` telemetry, `5xx` server state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// No protocol version in common; the error carries the server's range.
    pub const VERSION_UNSUPPORTED: ErrorCode = ErrorCode(100);
    /// A frame could not be decoded (truncated, bad CBOR, wrong schema, bad field value).
    pub const MALFORMED: ErrorCode = ErrorCode(101);
    /// A frame exceeded the size cap.
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(102);
    /// A message not allowed in the current state of the exchange or session.
    pub const UNEXPECTED_MESSAGE: ErrorCode = ErrorCode(103);
    /// The peer gave up waiting for progress on an exchange.
    pub const TIMED_OUT: ErrorCode = ErrorCode(104);
    /// The device identity is unknown, revoked or does not match its client certificate.
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode(200);
    /// A telemetry record names a device other than the session's.
    pub const DEVICE_MISMATCH: ErrorCode = ErrorCode(201);
    /// The requested model version does not exist (or is not offered to this device).
    pub const UNKNOWN_MODEL: ErrorCode = ErrorCode(300);
    /// The requested byte range lies outside the model.
    pub const RANGE_INVALID: ErrorCode = ErrorCode(301);
    /// Model metadata failed a check (expired, below floor, unparsable canonical bytes).
    pub const METADATA_REJECTED: ErrorCode = ErrorCode(302);
    /// A telemetry batch holds more records than the session allows.
    pub const BATCH_TOO_LARGE: ErrorCode = ErrorCode(400);
    /// A telemetry batch could not be stored; retry it later.
    pub const STORAGE_UNAVAILABLE: ErrorCode = ErrorCode(401);
    /// The server is overloaded; retry after the given delay.
    pub const OVERLOADED: ErrorCode = ErrorCode(500);
    /// The server failed internally.
    pub const INTERNAL: ErrorCode = ErrorCode(501);

    /// The code's symbolic name, or `"UNKNOWN"` for a code this version does not know.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::VERSION_UNSUPPORTED => "VERSION_UNSUPPORTED",
            ErrorCode::MALFORMED => "MALFORMED",
            ErrorCode::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            ErrorCode::UNEXPECTED_MESSAGE => "UNEXPECTED_MESSAGE",
            ErrorCode::TIMED_OUT => "TIMED_OUT",
            ErrorCode::UNAUTHENTICATED => "UNAUTHENTICATED",
            ErrorCode::DEVICE_MISMATCH => "DEVICE_MISMATCH",
            ErrorCode::UNKNOWN_MODEL => "UNKNOWN_MODEL",
            ErrorCode::RANGE_INVALID => "RANGE_INVALID",
            ErrorCode::METADATA_REJECTED => "METADATA_REJECTED",
            ErrorCode::BATCH_TOO_LARGE => "BATCH_TOO_LARGE",
            ErrorCode::STORAGE_UNAVAILABLE => "STORAGE_UNAVAILABLE",
            ErrorCode::OVERLOADED => "OVERLOADED",
            ErrorCode::INTERNAL => "INTERNAL",
            _ => "UNKNOWN",
        }
    }

    /// Whether the same request may succeed if retried later (on this or a new connection).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::TIMED_OUT
                | ErrorCode::STORAGE_UNAVAILABLE
                | ErrorCode::OVERLOADED
                | ErrorCode::INTERNAL
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}
