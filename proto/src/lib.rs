//! The wire protocol shared by the Sextant agent (device) and backend, sans-IO.
//!
//! This crate holds everything about the exchange between a device and the backend except the
//! IO: message types, their CBOR encoding, length-prefixed framing with a size cap, version
//! negotiation, and the client and server state machines. It never reads a clock, touches a
//! socket or draws an unseeded random number, so the whole exchange — including cuts, retries
//! and resumed downloads — is tested in memory (see `tests/pair.rs`). The agent and backend
//! are thin tokio + quinn loops around [`Client`] and [`Server`], in the manner of
//! `quinn`/`quinn-proto`.
//!
//! # Design note
//!
//! **Transport mapping.** One QUIC connection (TLS 1.3, mutual authentication, ALPN
//! `sextant/1`) is one session. Every *exchange* — one request and its response — runs on its
//! own client-opened bidirectional stream: the client writes its request and finishes its send
//! side; the server writes its response frames and finishes. Four kinds exist
//! ([`ExchangeKind`]):
//!
//! | exchange | client sends | server answers |
//! | --- | --- | --- |
//! | handshake (first, exactly once) | `Hello` | `Welcome`, or `Error` (`VERSION_UNSUPPORTED`, `UNAUTHENTICATED`) |
//! | sync | `SyncRequest` | `Assignment`, then one `ModelMetadata` per model it names |
//! | download | `ChunkRequest { model, offset, len }` | `ModelChunk`s covering the range in order |
//! | telemetry | `TelemetryBatch` | `TelemetryAck` |
//!
//! Any exchange may instead end with an `Error` carrying a stable [`ErrorCode`]. Separate
//! streams mean a large download never delays telemetry or a sync (no head-of-line blocking),
//! and a failure stays local to its exchange: a reset stream fails one exchange, not the
//! session. Only the handshake is ordered before the others (the client opens nothing else until
//! [`ClientEvent::Connected`]).
//!
//! **Frames.** Each message travels as a `u32` big-endian length and a CBOR body (an
//! [`Envelope`]: protocol version + [`Message`]). Bodies are capped (default 1 MiB,
//! [`DEFAULT_MAX_FRAME_LEN`]); model chunks (default 256 KiB) stay under the cap. The
//! [`FrameDecoder`] takes bytes in any pieces, refuses an oversized prefix before buffering its
//! body, and reports truncated or malformed CBOR as typed [`ProtoError`]s.
//!
//! **Versions.** `Hello` offers a range; the server picks the highest version both speak and
//! says so in `Welcome`, or refuses with `VERSION_UNSUPPORTED` and its own range. Afterwards
//! every envelope carries the negotiated version and receivers refuse others. The envelope,
//! `Hello`, `Welcome` and `Error` are frozen so any two versions can negotiate (rules in
//! [`message`]).
//!
//! **Resumable downloads.** The device learns each model's length and hash from signed
//! metadata (sync exchange), so a download is a request for `offset..length`: after a cut the
//! agent asks again from the number of bytes it has already made durable. The server needs no
//! per-device download state.
//!
//! **Telemetry exactly once.** Records carry `(device, sequence)`; the server acknowledges the
//! sequence numbers it has stored (newly or before). The agent deletes only acknowledged records
//! and retries the rest, and the backend's unique key makes retries harmless.
//!
//! **Signed metadata.** The release key signs [`ModelMetadata::canonical_bytes`], a fixed
//! hand-written layout, never the CBOR; the agent verifies Ed25519 over those bytes and then
//! [`ModelMetadata::check`]s expiry and its rollback floor.
//!
//! # Driver loop
//!
//! The agent's loop around a [`Client`] (the backend's around a [`Server`] is the mirror image;
//! `now` is the driver's monotonic clock as a [`Time`]):
//!
//! ```text
//! connect (quinn, mTLS) ; client = Client::new(config, now)
//! loop {
//!     while let Some(t) = client.poll_transmit() {
//!         stream(t.exchange)            // open_bi() the first time an id is seen
//!             .write_all(&t.data); if t.fin { finish() }
//!     }
//!     while let Some(ev) = client.poll_event() { act on it: store chunks, verify and install
//!         metadata, delete acked records, start the next exchange (start_sync, ...) }
//!     select! {
//!         bytes = any stream's read() => client.handle_data(now, id, &bytes)  // Err: reset stream
//!         end of a stream           => client.handle_stream_end(id)
//!         stream reset              => client.handle_reset(id)
//!         connection lost           => client.handle_connection_lost()
//!         sleep_until(client.poll_timeout()) => client.handle_timeout(now)
//!     }
//! }
//! ```
//!
//! # Example
//!
//! A client and a server wired back to back in memory:
//!
//! ```
//! use sextant_proto::*;
//!
//! let cfg = ClientConfig::new(
//!     DeviceId::new("dev-1")?,
//!     Label::new("pixel-8")?,
//!     Label::new("1.4.0")?,
//!     Label::new("0.1.0")?,
//! );
//! let mut client = Client::new(cfg, Time(0))?;
//! let mut server = Server::new(ServerConfig::default());
//!
//! let hello = client.poll_transmit().expect("hello is queued at once");
//! server.handle_data(hello.exchange, &hello.data)?;
//! let Some(ServerEvent::Hello { exchange, version, .. }) = server.poll_event() else {
//!     panic!("expected a hello event")
//! };
//! assert_eq!(version, PROTOCOL_VERSION);
//! server.accept(exchange)?; // after checking the device against its certificate
//!
//! let welcome = server.poll_transmit().expect("welcome");
//! client.handle_data(Time(1), welcome.exchange, &welcome.data)?;
//! assert!(matches!(client.poll_event(), Some(ClientEvent::Connected(_))));
//! # Ok::<(), ProtoError>(())
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod encoded;
pub mod error;
pub mod message;
pub mod metadata;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod types;
pub mod version;

pub use client::{Client, ClientConfig, ClientEvent, DEFAULT_EXCHANGE_TIMEOUT_MS};
pub use codec::{
    CHUNK_OVERHEAD, DEFAULT_CHUNK_LEN, DEFAULT_MAX_FRAME_LEN, FrameDecoder, PREFIX_LEN,
    decode_body, encode_body, encode_frame,
};
pub use encoded::{EncodedRecord, check_item, encode_batch_frame};
pub use error::{ErrorCode, ProtoError};
pub use message::{
    Assignment, ChunkRequest, Cohort, Envelope, ErrorMsg, ExchangeKind, Hello, Message, ModelChunk,
    RolloutInfo, RolloutStage, SyncRequest, Welcome,
};
pub use metadata::{ModelMetadata, SignedModelMetadata};
pub use server::{DEFAULT_MAX_BATCH_RECORDS, Server, ServerConfig, ServerEvent};
pub use session::{ExchangeFailure, ExchangeId, Transmit};
pub use telemetry::{
    ComputeBackend, DropCounters, FailureReason, LocalizationEvent, Outcome, PoseSource,
    RecordBody, SeqRange, ShadowReport, SliceKeys, StageTimings, TelemetryAck, TelemetryBatch,
    TelemetryRecord,
};
pub use types::{
    Bytes, CoarseRegion, DeviceId, KeyId, Label, ModelVersion, Sha256Digest, Signature, Time,
};
pub use version::{PROTOCOL_VERSION, SUPPORTED_VERSIONS, VersionRange};
