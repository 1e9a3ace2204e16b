//! The messages of protocol version 1 and the envelope every frame carries.
//!
//! Schema rules (what may change within a protocol version and what needs a new one):
//! - Field and variant names are the wire schema (CBOR maps keyed by name); renaming one is a new
//!   protocol version.
//! - Decoders ignore unknown map keys, so a new *optional* field (`Option`, absent when `None`)
//!   may be added within a version; old peers skip it.
//! - A new message or enum variant needs a new protocol version (old decoders refuse it).
//! - [`Envelope`], [`Hello`], [`Welcome`] and [`ErrorMsg`] are frozen across all versions, so two
//!   peers can always negotiate and refuse with a code.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::metadata::SignedModelMetadata;
use crate::telemetry::{ComputeBackend, TelemetryAck, TelemetryBatch};
use crate::types::{Bytes, DeviceId, Label, ModelVersion};
use crate::version::VersionRange;

/// What every frame body holds: the protocol version the message is written in, and the
/// message.
///
/// Before negotiation, a `Hello` travels with the client's highest offered version and the
/// server's answer (`Welcome`, or an `Error` refusing the versions) with the version chosen (or
/// the server's highest). After it, every envelope carries the negotiated version and a receiver
/// refuses any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of `msg`.
    pub v: u16,
    /// The message.
    pub msg: Message,
}

/// Every message of the protocol. Externally tagged: `{"hello": {...}}` and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Client → server, first message of the handshake exchange.
    Hello(Hello),
    /// Server → client: the handshake succeeded.
    Welcome(Welcome),
    /// Client → server, opens a sync exchange.
    SyncRequest(SyncRequest),
    /// Server → client: which model to run and which to shadow.
    Assignment(Assignment),
    /// Server → client, after an `Assignment`: signed metadata of an assigned model.
    ModelMetadata(SignedModelMetadata),
    /// Client → server, opens a download exchange for a byte range of a model.
    ChunkRequest(ChunkRequest),
    /// Server → client: consecutive pieces of the requested range.
    ModelChunk(ModelChunk),
    /// Client → server, opens a telemetry exchange.
    TelemetryBatch(TelemetryBatch),
    /// Server → client: the batch is durably stored.
    TelemetryAck(TelemetryAck),
    /// Either direction: the exchange (or, on the handshake exchange, the session) failed.
    Error(ErrorMsg),
}

impl Message {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::SyncRequest(_) => "sync_request",
            Message::Assignment(_) => "assignment",
            Message::ModelMetadata(_) => "model_metadata",
            Message::ChunkRequest(_) => "chunk_request",
            Message::ModelChunk(_) => "model_chunk",
            Message::TelemetryBatch(_) => "telemetry_batch",
            Message::TelemetryAck(_) => "telemetry_ack",
            Message::Error(_) => "error",
        }
    }
}

/// The kinds of exchange; each runs on its own bidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// `Hello` → `Welcome` | `Error`. The first exchange of every session.
    Handshake,
    /// `SyncRequest` → `Assignment`, `ModelMetadata`* | `Error`.
    Sync,
    /// `ChunkRequest` → `ModelChunk`* | `Error`.
    Download,
    /// `TelemetryBatch` → `TelemetryAck` | `Error`.
    Telemetry,
}

/// The client's opening message: versions it speaks and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the client speaks.
    pub versions: VersionRange,
    /// The device; the server checks it against the TLS client certificate.
    pub device: DeviceId,
    /// Device class, e.g. `pixel-8`.
    pub device_class: Label,
    /// App version.
    pub app_version: Label,
    /// Runtime (this workspace's) version.
    pub runtime_version: Label,
    /// Compute backends the device can run models on.
    pub backends: Vec<ComputeBackend>,
    /// Largest frame body the client accepts; the server sends nothing larger.
    pub max_frame_len: u32,
}

/// The server's acceptance: the chosen version and the session's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated protocol version (highest both speak).
    pub version: u16,
    /// Largest frame body the server accepts (and sends), in bytes.
    pub max_frame_len: u32,
    /// Size of the model chunks the server sends, in bytes.
    pub chunk_len: u32,
    /// Most records the server accepts in one telemetry batch.
    pub max_batch_records: u32,
}

/// Opens a sync exchange: what the device runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The active model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ModelVersion>,
    /// The model being shadowed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadowing: Option<ModelVersion>,
    /// The device's rollback floor.
    pub floor: ModelVersion,
    /// Set when the device rolled back on its own since the last sync: the version it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<ModelVersion>,
}

/// A rollout stage as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStage {
    /// The candidate runs only in shadow.
    Shadow,
    /// The candidate is active on this share of the fleet, in per mille (10 = 1%).
    Canary {
        /// Share of the fleet on the candidate, in per mille.
        permille: u16,
    },
    /// The candidate is active everywhere but the holdback group.
    Full,
}

/// Which arm of a rollout the device is in (a stable hash of rollout and device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cohort {
    /// Runs the candidate.
    Treatment,
    /// Runs the current model and serves as the comparison.
    Control,
    /// Kept on the old model for the whole rollout.
    Holdback,
}

/// The rollout that decided an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// Rollout identifier.
    pub id: u64,
    /// Its current stage.
    pub stage: RolloutStage,
    /// This device's arm.
    pub cohort: Cohort,
}

/// What the device should run. Followed on the same exchange by one `ModelMetadata` for
/// `model`, then one for `shadow` if it is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The model version to run.
    pub model: ModelVersion,
    /// The candidate to run in shadow, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelVersion>,
    /// The rollout behind this assignment, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutInfo>,
    /// When to sync again, in seconds.
    pub resync_after_s: u32,
}

impl Assignment {
    /// The versions whose metadata follows the assignment, in order.
    pub fn metadata_versions(&self) -> Vec<ModelVersion> {
        let mut v = vec![self.model];
        if let Some(s) = self.shadow.filter(|s| *s != self.model) {
            v.push(s);
        }
        v
    }
}

/// Opens a download exchange: bytes `offset .. offset + len` of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The model.
    pub model: ModelVersion,
    /// First byte wanted (the resume point after a cut).
    pub offset: u64,
    /// Number of bytes wanted (at least 1; the range must lie inside the file).
    pub len: u64,
}

/// A piece of a model file. Chunks of one exchange are consecutive and cover the range exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelChunk {
    /// The model.
    pub model: ModelVersion,
    /// Offset of `data[0]` in the file.
    pub offset: u64,
    /// The bytes (at most the session's `chunk_len`, never empty).
    pub data: Bytes,
}

/// A failure report with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Stable numeric code.
    pub code: ErrorCode,
    /// Human-readable detail (for logs; never parsed).
    pub message: String,
    /// With `VERSION_UNSUPPORTED`: the versions the sender speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<VersionRange>,
    /// With retryable codes: the earliest sensible retry, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u32>,
}

impl ErrorMsg {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorMsg {
            code,
            message: message.into(),
            supported: None,
            retry_after_s: None,
        }
    }
}
